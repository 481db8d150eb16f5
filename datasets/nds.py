"""NDS (Radosavovic et al., "On Network Design Spaces for Visual Recognition", ICCV 2019): the `nds_data` release.

The release (``data.zip`` of facebookresearch/nds, https://dl.fbaipublicfiles.com/nds/data.zip, folder
``nds_data/``) holds one JSON file per design space and sweep, put at
``<data_dir>/nds/<family>.json`` (for example ``nds/DARTS.json``, ``nds/DARTS_in.json``, ``nds/ResNeXt-A.json``).
A file is a list of trained models; a few files are a dict ``{"top": [...], "mid": [...]}`` whose lists are
joined, ``top`` first. Each model record holds

- ``net``: the network. Cell spaces (Amoeba, DARTS, ENAS, NASNet, PNAS and their sweeps): ``genotype``
  (``normal``/``reduce`` = lists of ``[op, input]`` pairs, two per node; ``normal_concat``/``reduce_concat``),
  ``width`` (channels of the first cell), ``depth`` (number of cells), ``aux`` (auxiliary head), ``drop_prob``.
  ResNet-like spaces (ResNet, ResNet-B, ResNeXt-A/B, Vanilla): ``block_type`` (``res_basic_block``,
  ``res_bottleneck_block``, ``double_plain_block``), per stage ``ds`` (depths), ``ws`` (widths), ``ss`` (strides),
  ``bot_muls`` (bottleneck multipliers) and ``num_gs`` (number of groups), and ``stem_type``/``stem_w``;
- ``optim`` (``base_lr``, ``wd``, ``max_ep``, ...), ``params``, ``flops``, timing fields, ``min_test_top1``,
  ``rng_seed``, and per-epoch curves ``train_ep_top1``, ``test_ep_top1`` (top-1 *error*, %), ``train_ep_loss``.

This module reads every family file, validates every record (a malformed one is an error naming the file and the
record index), derives the ground truth (final test accuracy = 100 - last ``test_ep_top1``, as the proxy papers
use it, plus the accuracy after a few early epochs as an early-stopping baseline) and builds the networks as
pycls (the code NDS trained with) defines them: DARTS-style cell networks from the genotype with the CIFAR or
ImageNet stem and reduction cells at 1/3 and 2/3 of the depth, and ResNet/ResNeXt/Vanilla networks from the
stage widths, depths, strides, bottleneck multipliers and groups.

Search-space keys: every family is its own space ``nds:<family>`` (``proxybench run --space nds --family DARTS``
is ``--space nds:DARTS``): NDS results are always reported per design space. Architecture key:
``"<family>:<index>"`` where ``index`` is the record's position in the file (``top`` then ``mid``); a bare index
is accepted too. Tasks: CIFAR-10 families score on ``cifar10`` images; the ImageNet families (``*_in``) score
on ``ImageNet16-120`` images (16x16 down-sampled ImageNet; the suite has no full-resolution ImageNet loader),
with the network's ImageNet stem and 1,000-class head unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from proxybench.datasets import Space, files, kernels
from proxybench.datasets.errors import ArchError, DataFileError, did_you_mean

# Every sweep file of the release (the list NNI's NDS converter reads; the paper's figures use a subset).
FAMILY_NAMES = (
    "Amoeba", "Amoeba_in", "DARTS", "DARTS_fix-w-d", "DARTS_in", "DARTS_lr-wd", "DARTS_lr-wd_in",
    "ENAS", "ENAS_fix-w-d", "ENAS_in", "NASNet", "NASNet_in", "PNAS", "PNAS_fix-w-d", "PNAS_in",
    "ResNeXt-A", "ResNeXt-A_in", "ResNeXt-B", "ResNeXt-B_in", "ResNet", "ResNet-B", "ResNet_lr-wd",
    "ResNet_lr-wd_in", "ResNet_reruns", "ResNet_rng1", "ResNet_rng2", "ResNet_rng3",
    "Vanilla", "Vanilla_lr-wd", "Vanilla_lr-wd_in", "Vanilla_reruns", "Vanilla_rng1", "Vanilla_rng2", "Vanilla_rng3",
)
CELL_SPACES = ("Amoeba", "DARTS", "ENAS", "NASNet", "PNAS")

# The op set of each cell space (NDS paper, Table 1 and section 5; op names as in pycls' NAS operations).
# Used to generate test files and to document; a real file is read whatever ops of OPS it uses.
CELL_OPS = {
    "DARTS": ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "avg_pool_3x3",
              "max_pool_3x3"),
    "ENAS": ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3"),
    "PNAS": ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "conv_7x1_1x7", "dil_conv_3x3",
             "avg_pool_3x3", "max_pool_3x3"),
    "Amoeba": ("skip_connect", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "conv_7x1_1x7", "dil_sep_conv_3x3",
               "avg_pool_3x3", "max_pool_3x3"),
    "NASNet": ("skip_connect", "conv_1x1", "conv_3x3", "conv_3x1_1x3", "conv_7x1_1x7", "dil_conv_3x3",
               "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5",
               "max_pool_7x7"),
}
CELL_NODES = {"DARTS": 4, "ENAS": 5, "PNAS": 5, "Amoeba": 5, "NASNet": 5}

BLOCK_TYPES = ("res_basic_block", "res_bottleneck_block", "double_plain_block", "vanilla_block")
STEM_TYPES = ("res_stem_cifar", "res_stem_in", "simple_stem_in")
# Used only when a ResNet-like record has no stem fields (the release's records are expected to carry them).
DEFAULT_STEM = {"cifar10": ("res_stem_cifar", 16), "imagenet": ("res_stem_in", 64)}

DATASET_TASK = {"cifar10": "cifar10", "imagenet": "ImageNet16-120"}
NUM_CLASSES = {"cifar10": 10, "imagenet": 1000}
RESOLUTION = {"cifar10": 32, "ImageNet16-120": 16}
EARLY_EPOCHS = (1, 5, 10, 25, 50)

NDS_SOURCE = ("NDS: `data.zip` from https://dl.fbaipublicfiles.com/nds/data.zip (linked from the facebookresearch/nds "
              "README); unzip it and put its JSON files (folder nds_data/) at <data_dir>/nds/<family>.json")
NDS_FORMAT = ("JSON list of model records (or a dict {top, mid} of two lists); each record has net "
              "(genotype/width/depth/aux or block_type/ds/ws/ss/bot_muls/num_gs/stem_*), optim, params, flops, "
              "min_test_top1 and per-epoch test_ep_top1/train_ep_top1 (top-1 error, %)")


@dataclass(frozen=True)
class Family:
    """One sweep file: its name, base design space, dataset and kind of network."""

    name: str
    base: str     # "DARTS", "ResNeXt-A", "Vanilla", ...
    dataset: str  # "cifar10" or "imagenet"
    kind: str     # "cell" or "anynet"

    @property
    def key(self) -> str:
        return f"nds/{self.name}.json"

    @property
    def task(self) -> str:
        return DATASET_TASK[self.dataset]


def _family(name: str) -> Family:
    dataset = "imagenet" if name.endswith("_in") else "cifar10"
    base = name.split("_")[0]
    return Family(name, base, dataset, "cell" if base in CELL_SPACES else "anynet")


FAMILIES: dict[str, Family] = {n: _family(n) for n in FAMILY_NAMES}

for _f in FAMILIES.values():
    files.register_file(files.DataFile(
        _f.key, _f.key, f"nds:{_f.name}", (_f.task,),
        f"NDS {_f.name}: trained {'ImageNet' if _f.dataset == 'imagenet' else 'CIFAR-10'} models of the "
        f"{_f.base} design space (networks, per-epoch error curves, params, flops)",
        NDS_FORMAT, NDS_SOURCE, {}, required=False))


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ArchError(f"unknown NDS family {name!r}{did_you_mean(name, FAMILIES)}; families: "
                        f"{', '.join(FAMILIES)}") from None


# ---------------------------------------------------------------------------------------------- records

class NDSRecordError(DataFileError):
    """A record of an NDS family file does not have the official schema."""


def _bad(path, index: int | None, problem: str) -> NDSRecordError:
    where = f"record {index}" if index is not None else "top level"
    return NDSRecordError(f"malformed NDS file {path}, {where}: {problem}\n  expected: {NDS_FORMAT}\n"
                          f"  get the release: {NDS_SOURCE}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_genotype(g) -> None:
    """Raise ValueError unless ``g`` is a cell genotype: two ``[op, input]`` pairs per node, inputs of node i
    among the two cell inputs and nodes before i, concat indices among the cell's states, ops known."""
    if not isinstance(g, dict):
        raise ValueError(f"genotype must be a dict, got {type(g).__name__}")
    for part in ("normal", "reduce"):
        ops, concat = g.get(part), g.get(f"{part}_concat")
        if not isinstance(ops, list) or not ops or len(ops) % 2:
            raise ValueError(f"genotype.{part} must be a non-empty list of [op, input] pairs, two per node")
        steps = len(ops) // 2
        for j, pair in enumerate(ops):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
                    and _is_int(pair[1])):
                raise ValueError(f"genotype.{part}[{j}] must be [op name, input index], got {pair!r}")
            if pair[0] not in OPS:
                raise ValueError(f"genotype.{part}[{j}]: unknown op {pair[0]!r}{did_you_mean(pair[0], OPS)}")
            if not 0 <= pair[1] < 2 + j // 2:
                raise ValueError(f"genotype.{part}[{j}]: input {pair[1]} out of range for node {j // 2} "
                                 f"(0..{1 + j // 2})")
        if (not isinstance(concat, list) or not concat or not all(_is_int(c) for c in concat)
                or not all(0 <= c < 2 + steps for c in concat)):
            raise ValueError(f"genotype.{part}_concat must be a non-empty list of state indices in 0..{1 + steps}, "
                             f"got {concat!r}")


def _validate_cell_net(net: dict, imagenet: bool = False) -> None:
    if "genotype" not in net:
        raise ValueError("net has no 'genotype' (a cell design space)")
    validate_genotype(net["genotype"])
    w = net.get("width")
    # the ImageNet stem halves the width and the first cell factor-reduces it: it must be even there
    if not _is_int(w) or w < 1 or (imagenet and (w < 2 or w % 2)):
        raise ValueError(f"net.width must be a positive {'even ' if imagenet else ''}integer, got {w!r}")
    if not _is_int(net.get("depth")) or net["depth"] < 1:
        raise ValueError(f"net.depth must be a positive integer, got {net.get('depth')!r}")


def _stage_list(net: dict, key: str, n: int | None, kind=_is_int) -> list:
    v = net.get(key)
    if not isinstance(v, list) or not v or not all(kind(x) for x in v):
        raise ValueError(f"net.{key} must be a non-empty list of {'integers' if kind is _is_int else 'numbers'}, "
                         f"got {v!r}")
    if n is not None and len(v) != n:
        raise ValueError(f"net.{key} has {len(v)} stages, net.ds has {n}")
    return v


def _validate_anynet(net: dict, imagenet: bool = False) -> None:
    bt = net.get("block_type")
    if bt not in BLOCK_TYPES:
        raise ValueError(f"net.block_type must be one of {', '.join(BLOCK_TYPES)}, got {bt!r}")
    ds = _stage_list(net, "ds", None)
    n = len(ds)
    ws, ss = _stage_list(net, "ws", n), _stage_list(net, "ss", n)
    if min(ds) < 1 or min(ws) < 1 or min(ss) < 1:
        raise ValueError("net.ds, net.ws and net.ss must be positive")
    if bt == "res_bottleneck_block":
        bms, gs = _stage_list(net, "bot_muls", n, _is_num), _stage_list(net, "num_gs", n)
        for i, (w, bm, g) in enumerate(zip(ws, bms, gs, strict=True)):
            wb = int(round(w * bm))
            if wb < 1 or g < 1 or wb % g:
                raise ValueError(f"stage {i}: bottleneck width round({w} x {bm}) = {wb} is not a positive multiple "
                                 f"of num_gs = {g}")
    st = net.get("stem_type")
    if st is not None and st not in STEM_TYPES:
        raise ValueError(f"net.stem_type must be one of {', '.join(STEM_TYPES)}, got {st!r}")
    if net.get("stem_w") is not None and (not _is_int(net["stem_w"]) or net["stem_w"] < 1):
        raise ValueError(f"net.stem_w must be a positive integer, got {net['stem_w']!r}")


def validate_record(rec, family: Family) -> None:
    """Raise ValueError unless ``rec`` is a model record of ``family``'s file in the official schema."""
    if not isinstance(rec, dict):
        raise ValueError(f"a record must be a JSON object, got {type(rec).__name__}")
    net = rec.get("net")
    if not isinstance(net, dict):
        raise ValueError("missing or non-object 'net'")
    (_validate_cell_net if family.kind == "cell" else _validate_anynet)(net, family.dataset == "imagenet")
    curve = rec.get("test_ep_top1")
    if not isinstance(curve, list) or not curve or not all(_is_num(x) or x is None for x in curve):
        raise ValueError("'test_ep_top1' must be a non-empty list of per-epoch top-1 errors (%)")
    if not _is_num(rec.get("params")) or rec["params"] < 0:
        raise ValueError(f"'params' must be a non-negative number, got {rec.get('params')!r}")
    for k in ("flops", "min_test_top1"):
        if k in rec and rec[k] is not None and not _is_num(rec[k]):
            raise ValueError(f"{k!r} must be a number, got {rec[k]!r}")
    for k in ("train_ep_top1", "train_ep_loss"):
        if k in rec and not isinstance(rec[k], list):
            raise ValueError(f"{k!r} must be a list")
    if "optim" in rec and not isinstance(rec["optim"], dict):
        raise ValueError("'optim' must be an object")


def read_records(path, family: Family) -> list[dict]:
    """The validated records of one family file (``top`` then ``mid`` for the dict layout)."""
    path = Path(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise _bad(path, None, f"not readable as JSON ({e})") from None
    if isinstance(data, dict):
        if not ("top" in data and "mid" in data and isinstance(data["top"], list) and isinstance(data["mid"], list)):
            raise _bad(path, None, f"a dict must have list fields 'top' and 'mid', got keys {sorted(data)[:5]}")
        data = data["top"] + data["mid"]
    if not isinstance(data, list) or not data:
        raise _bad(path, None, "expected a non-empty list of model records")
    for i, rec in enumerate(data):
        try:
            validate_record(rec, family)
        except ValueError as e:
            raise _bad(path, i, str(e)) from None
    return data


def _acc(err) -> float:
    return float("nan") if err is None or not math.isfinite(err) else 100.0 - float(err)


def records_table(records: list[dict], family: Family) -> pd.DataFrame:
    """One row per record: key, ground truth (accuracies in %), complexity, schedule, and the net as JSON."""
    rows = []
    for i, rec in enumerate(records):
        curve = rec["test_ep_top1"]
        finite = [e for e in curve if e is not None and math.isfinite(e)]
        optim = rec.get("optim") or {}
        train = rec.get("train_ep_top1") or []
        row = {
            "arch": f"{family.name}:{i}", "index": i, "family": family.name,
            "test_acc": _acc(curve[-1]),
            "best_test_acc": _acc(rec["min_test_top1"]) if _is_num(rec.get("min_test_top1"))
            else (100.0 - min(finite) if finite else float("nan")),
            "train_acc": _acc(train[-1]) if train and _is_num(train[-1]) else float("nan"),
            "epochs": len(curve),
            "params": float(rec["params"]) / 1e6, "params_raw": int(rec["params"]),
            "flops": float(rec["flops"]) / 1e6 if _is_num(rec.get("flops")) else float("nan"),
            "base_lr": float(optim["base_lr"]) if _is_num(optim.get("base_lr")) else float("nan"),
            "wd": float(optim["wd"]) if _is_num(optim.get("wd")) else float("nan"),
            "max_ep": int(optim["max_ep"]) if _is_int(optim.get("max_ep")) else len(curve),
            "net_json": json.dumps(rec["net"], sort_keys=True),
        }
        for e in EARLY_EPOCHS:
            row[f"test_acc_e{e}"] = _acc(curve[e - 1]) if e <= len(curve) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


COLUMN_NOTES = {
    "arch": "'<family>:<index>', index = position of the record in the file (dict files: 'top' then 'mid')",
    "test_acc": "final test accuracy (%): 100 - last test_ep_top1 (the proxy papers' ground truth)",
    "best_test_acc": "100 - min_test_top1 (best epoch; optimistic, reported by the NDS paper)",
    "train_acc": "100 - last train_ep_top1",
    "test_acc_e<k>": "test accuracy after epoch k (early-stopping baseline); NaN when trained for fewer epochs",
    "params": "recorded parameter count in millions (params_raw: the integer)",
    "flops": "recorded flops in millions (pycls counts multiply-adds)",
}


# -------------------------------------------------------------------------------------------- the table

# The file each family was last read from in this process: lets a builder made without a data_dir (the runner's
# Space.builder has none) find a file given to load_table(data_dir=...) earlier.
_LAST_PATH: dict[str, Path] = {}


@lru_cache(maxsize=16)
def _table_cached(family_name: str, path_str: str, stamp: tuple) -> pd.DataFrame:
    family = FAMILIES[family_name]
    digest = hashlib.sha256(repr(stamp).encode()).hexdigest()[:12]
    cache = files.resolve_cache_dir() / f"nds_{family_name}_{digest}.parquet"
    df = files.read_derived(cache, pd.read_parquet)  # None: absent, or broken (warned) and rebuilt
    if df is not None:
        return df
    df = records_table(read_records(path_str, family), family)
    files.write_derived(df, cache)
    return df


def family_path(family: str, data_dir=None) -> Path:
    """``<data_dir>/nds/<family>.json``, or a DataFileError saying where to get it."""
    fam = get_family(family)
    root = files.resolve_data_dir(data_dir)
    path = root / fam.key
    if not path.is_file() and data_dir is None and family in _LAST_PATH and _LAST_PATH[family].is_file():
        return _LAST_PATH[family]
    return files.require(fam.key, data_dir)


def load_table(family: str, data_dir=None) -> pd.DataFrame:
    """Every record of a family file as a table (parsed once, then cached as parquet; see COLUMN_NOTES)."""
    path = family_path(family, data_dir)
    _LAST_PATH[family] = path
    st = path.stat()
    return _table_cached(family, str(path), (str(path.resolve()), st.st_size, st.st_mtime_ns))


def available_families(data_dir=None) -> list[str]:
    root = files.resolve_data_dir(data_dir)
    return [n for n, f in FAMILIES.items() if (root / f.key).is_file()]


def load_truth(family: str, data_dir=None) -> pd.DataFrame:
    """Ground truth of every model of a family: ``arch, task, test_acc`` and the other columns of COLUMN_NOTES."""
    fam = get_family(family)
    df = load_table(family, data_dir).drop(columns=["net_json"])
    df.insert(1, "task", fam.task)
    df.attrs["column_notes"] = COLUMN_NOTES
    return df


def parse_key(arch, family: str | None = None) -> tuple[str, int]:
    """``"DARTS:17"`` -> ("DARTS", 17); a bare index needs ``family``."""
    s = str(arch).strip()
    fam, sep, idx = s.rpartition(":")
    if not sep:
        fam, idx = family or "", s
    if not fam:
        raise ArchError(f"NDS arch key {arch!r} must be '<family>:<index>'")
    get_family(fam)
    if family is not None and fam != family:
        raise ArchError(f"arch {arch!r} belongs to NDS family {fam}, not {family}")
    if not idx.isdigit():
        raise ArchError(f"NDS arch key {arch!r}: the index must be a non-negative integer")
    return fam, int(idx)


def net_config(arch, data_dir=None) -> tuple[str, dict]:
    """(family, net config) of an arch key, looked up in its family file."""
    fam, i = parse_key(arch)
    df = load_table(fam, data_dir)
    if i >= len(df):
        raise ArchError(f"NDS arch {arch!r}: index out of range (the {fam} file has {len(df)} records)")
    return fam, json.loads(df["net_json"].iloc[i])


# ----------------------------------------------------------------------------------------------- ops

class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs (each half the channels); the shifted path pads
    right/bottom first, as pycls does, so a 1x1 map stays 1x1 instead of vanishing."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = self.relu(x)
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def _relu_conv_bn(c_in, c_out, k, stride=1, pad=0):
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, k, stride, pad, bias=False),
                         nn.BatchNorm2d(c_out))


def _sep(c, k, stride, dilation=1):
    """Two stacked depthwise(k, dilation) + pointwise + BN units, the first with the stride."""
    pad = dilation * (k - 1) // 2
    layers = []
    for s in (stride, 1):
        layers += [nn.ReLU(inplace=False), nn.Conv2d(c, c, k, s, pad, dilation=dilation, groups=c, bias=False),
                   nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)]
    return nn.Sequential(*layers)


def _dil(c, k, stride):
    pad = k - 1  # dilation 2
    return nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c, c, k, stride, pad, dilation=2, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))


def _factorized(c, k, stride):
    """1xk then kx1 convolution (the stride split between them), then BN."""
    return nn.Sequential(nn.ReLU(inplace=False),
                         nn.Conv2d(c, c, (1, k), (1, stride), (0, k // 2), bias=False),
                         nn.Conv2d(c, c, (k, 1), (stride, 1), (k // 2, 0), bias=False), nn.BatchNorm2d(c))


OPS = {
    "none": lambda c, s: Zero(s),
    "skip_connect": lambda c, s: nn.Identity() if s == 1 else FactorizedReduce(c, c),
    "avg_pool_2x2": lambda c, s: nn.AvgPool2d(2, s, 0, count_include_pad=False),
    "avg_pool_3x3": lambda c, s: kernels.AvgPool2d(3, s, 1, count_include_pad=False),  # PyTorch's bits
    "avg_pool_5x5": lambda c, s: nn.AvgPool2d(5, s, 2, count_include_pad=False),
    "max_pool_2x2": lambda c, s: nn.MaxPool2d(2, s, 0),
    "max_pool_3x3": lambda c, s: nn.MaxPool2d(3, s, 1),
    "max_pool_5x5": lambda c, s: nn.MaxPool2d(5, s, 2),
    "max_pool_7x7": lambda c, s: nn.MaxPool2d(7, s, 3),
    "conv_1x1": lambda c, s: _relu_conv_bn(c, c, 1, s, 0),
    "conv_3x3": lambda c, s: _relu_conv_bn(c, c, 3, s, 1),
    "sep_conv_3x3": lambda c, s: _sep(c, 3, s),
    "sep_conv_5x5": lambda c, s: _sep(c, 5, s),
    "sep_conv_7x7": lambda c, s: _sep(c, 7, s),
    "dil_conv_3x3": lambda c, s: _dil(c, 3, s),
    "dil_conv_5x5": lambda c, s: _dil(c, 5, s),
    "dil_sep_conv_3x3": lambda c, s: _sep(c, 3, s, dilation=2),
    "conv_3x1_1x3": lambda c, s: _factorized(c, 3, s),
    "conv_7x1_1x7": lambda c, s: _factorized(c, 7, s),
}


# --------------------------------------------------------------------------------------- cell networks

class Cell(nn.Module):
    """A DARTS-style cell: two preprocessed inputs, nodes = sum of two ops on earlier states, concat output.
    In a reduction cell the ops reading the two cell inputs have stride 2."""

    def __init__(self, genotype: dict, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else _relu_conv_bn(c_pp, c, 1)
        self.pre1 = _relu_conv_bn(c_p, c, 1)
        part = "reduce" if reduction else "normal"
        pairs = genotype[part]
        self.indices = [int(i) for _, i in pairs]
        self.concat = [int(i) for i in genotype[f"{part}_concat"]]
        self.ops = nn.ModuleList(OPS[op](c, 2 if reduction and i < 2 else 1) for op, i in pairs)
        self.multiplier = len(self.concat)

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        for n in range(len(self.ops) // 2):
            a, b = 2 * n, 2 * n + 1
            states.append(self.ops[a](states[self.indices[a]]) + self.ops[b](states[self.indices[b]]))
        return torch.cat([states[i] for i in self.concat], dim=1)


def _aux_head(c: int, num_classes: int, imagenet: bool) -> nn.Module:
    """The auxiliary classifier (training only; built for parameter counts, never run by forward)."""
    layers = [nn.ReLU(inplace=False),
              nn.AvgPool2d(5, stride=2 if imagenet else 3, padding=0, count_include_pad=False),
              nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=False),
              nn.Conv2d(128, 768, 2, bias=False)]
    if not imagenet:  # pycls' ImageNet head has no BN here (kept so for consistency with the NDS experiments)
        layers.append(nn.BatchNorm2d(768))
    layers += [nn.ReLU(inplace=False), nn.Flatten(), nn.Linear(768, num_classes)]
    return nn.Sequential(*layers)


class CellNetwork(nn.Module):
    """NetworkCIFAR / NetworkImageNet of DARTS as pycls runs it for NDS: stem, ``depth`` cells with reduction
    cells at depth//3 and 2*depth//3 (channels doubled there), global average pool, linear classifier."""

    def __init__(self, genotype: dict, width: int, depth: int, num_classes: int, imagenet: bool,
                 aux: bool = False):
        super().__init__()
        c = width
        if imagenet:  # three stride-2 3x3 convs: /8
            self.stem = nn.Sequential(
                nn.Conv2d(3, c // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(inplace=False),
                nn.Conv2d(c // 2, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c, c, 3, 2, 1, bias=False),
                                       nn.BatchNorm2d(c))
            c_pp, c_p, reduction_prev = c, c, True
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, 3 * c, 3, 1, 1, bias=False), nn.BatchNorm2d(3 * c))
            self.stem1 = None
            c_pp, c_p, reduction_prev = 3 * c, 3 * c, False
        self.cells = nn.ModuleList()
        c_aux = None
        for i in range(depth):
            reduction = i in (depth // 3, 2 * depth // 3)
            if reduction:
                c *= 2
            cell = Cell(genotype, c_pp, c_p, c, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c
            if i == 2 * depth // 3:
                c_aux = c_p
        self.aux_head = _aux_head(c_aux, num_classes, imagenet) if aux else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x):
        s0 = self.stem(x)
        s1 = self.stem1(s0) if self.stem1 is not None else s0
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(torch.flatten(self.pool(s1), 1))


# ------------------------------------------------------------------------------------ ResNet-like networks

def _conv_bn(c_in, c_out, k, stride=1, groups=1):
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]


class ResBlock(nn.Module):
    """Residual block (basic: 3x3-3x3; bottleneck: 1x1-3x3 grouped-1x1) with a 1x1 conv + BN projection when
    the width or resolution changes; ReLU after the sum."""

    def __init__(self, w_in: int, w_out: int, stride: int, bottleneck: bool, bot_mul: float = 1.0, groups: int = 1):
        super().__init__()
        if bottleneck:
            wb = int(round(w_out * bot_mul))
            layers = [*_conv_bn(w_in, wb, 1), nn.ReLU(inplace=False), *_conv_bn(wb, wb, 3, stride, groups),
                      nn.ReLU(inplace=False), *_conv_bn(wb, w_out, 1)]
        else:
            layers = [*_conv_bn(w_in, w_out, 3, stride), nn.ReLU(inplace=False), *_conv_bn(w_out, w_out, 3)]
        self.f = nn.Sequential(*layers)
        self.proj = nn.Sequential(*_conv_bn(w_in, w_out, 1, stride)) if (w_in != w_out or stride != 1) else None
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        return self.relu((x if self.proj is None else self.proj(x)) + self.f(x))


def _plain_block(w_in, w_out, stride):
    """Vanilla ("double plain") block: 3x3 conv-BN-ReLU twice, no shortcut."""
    return nn.Sequential(*_conv_bn(w_in, w_out, 3, stride), nn.ReLU(inplace=False), *_conv_bn(w_out, w_out, 3),
                         nn.ReLU(inplace=False))


def _stem(stem_type: str, w: int) -> nn.Module:
    if stem_type == "res_stem_cifar":
        return nn.Sequential(*_conv_bn(3, w, 3), nn.ReLU(inplace=False))
    if stem_type == "res_stem_in":
        return nn.Sequential(nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=False),
                             nn.MaxPool2d(3, 2, 1))
    if stem_type == "simple_stem_in":
        return nn.Sequential(*_conv_bn(3, w, 3, 2), nn.ReLU(inplace=False))
    raise ArchError(f"unknown NDS stem type {stem_type!r}; known: {', '.join(STEM_TYPES)}")


class AnyNet(nn.Module):
    """pycls' AnyNet as NDS used it: stem, stages of blocks (the first block of a stage has the stride and changes
    the width), global average pool, linear classifier."""

    def __init__(self, net: dict, num_classes: int, dataset: str):
        super().__init__()
        stem_type, stem_w = DEFAULT_STEM[dataset]
        stem_type, stem_w = net.get("stem_type") or stem_type, net.get("stem_w") or stem_w
        bt = net["block_type"]
        ds, ws, ss = net["ds"], net["ws"], net["ss"]
        bms = net.get("bot_muls") or [1.0] * len(ds)
        gs = net.get("num_gs") or [1] * len(ds)
        self.stem = _stem(stem_type, stem_w)
        blocks: list[nn.Module] = []
        w_in = stem_w
        for d, w, s, bm, g in zip(ds, ws, ss, bms, gs, strict=True):
            for b in range(d):
                stride = s if b == 0 else 1
                if bt in ("double_plain_block", "vanilla_block"):
                    blocks.append(_plain_block(w_in, w, stride))
                else:
                    blocks.append(ResBlock(w_in, w, stride, bt == "res_bottleneck_block", bm, g))
                w_in = w
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(w_in, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


# ------------------------------------------------------------------------------------------- builders

def _swap_bn(module: nn.Module) -> None:
    for name, child in list(module._modules.items()):
        if isinstance(child, nn.BatchNorm2d):
            module._modules[name] = nn.Identity()
        elif child is not None:
            _swap_bn(child)


def build_from_net(family: str, net, bn: bool = True, with_aux: bool = False) -> nn.Module:
    """The network of one NDS record's ``net`` config (a dict or its JSON string), PyTorch default init.

    ``with_aux``: also build the auxiliary head when the record has ``aux`` on (only for parameter counts: the
    forward pass never runs it, so proxies see the inference network). ``bn=False`` replaces every BatchNorm by
    Identity. Seed torch before calling.
    """
    fam = get_family(family)
    if isinstance(net, str):
        net = json.loads(net)
    try:
        (_validate_cell_net if fam.kind == "cell" else _validate_anynet)(net, fam.dataset == "imagenet")
    except ValueError as e:
        raise ArchError(f"NDS {family} net config: {e}") from None
    nc = NUM_CLASSES[fam.dataset]
    if fam.kind == "cell":
        model = CellNetwork(net["genotype"], net["width"], net["depth"], nc, fam.dataset == "imagenet",
                            aux=with_aux and bool(net.get("aux")))
    else:
        model = AnyNet(net, nc, fam.dataset)
    if not bn:
        _swap_bn(model)
    return model


def build_network(arch, task: str | None = None, bn: bool = True, data_dir=None, with_aux: bool = False):
    """The network of an arch key ``"<family>:<index>"`` (looked up in the family file)."""
    fam, net = net_config(arch, data_dir)
    if task is not None and task != FAMILIES[fam].task:
        raise ArchError(f"NDS family {fam} is scored on task {FAMILIES[fam].task!r}, not {task!r}")
    return build_from_net(fam, net, bn=bn, with_aux=with_aux)


def count_params(model: nn.Module) -> int:
    """Every parameter of a network (pycls' params count: all parameters of the model as built)."""
    return sum(p.numel() for p in model.parameters())


def check_params(family: str, data_dir=None, n: int | None = None) -> pd.DataFrame:
    """Built vs recorded parameter counts for the first ``n`` records of a family (all when None).

    ``built`` counts the network with its auxiliary head when the record has one (what pycls' count covers);
    ``built_no_aux`` without it. ``match`` is True when the recorded count equals either.
    """
    df = load_table(family, data_dir)
    rows = []
    for _, r in (df if n is None else df.head(n)).iterrows():
        with_aux = count_params(build_from_net(family, r["net_json"], with_aux=True))
        no_aux = count_params(build_from_net(family, r["net_json"]))
        rows.append({"arch": r["arch"], "recorded": int(r["params_raw"]), "built": with_aux, "built_no_aux": no_aux,
                     "match": int(r["params_raw"]) in (with_aux, no_aux)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ space

class NDSSpace(Space):
    """One NDS design space (one sweep file) as a search space: ``nds:<family>``."""

    default_truth = "test_acc"

    def __init__(self, family: str):
        fam = get_family(family)
        self.family = fam
        self.name = f"nds:{fam.name}"
        self.tasks = (fam.task,)
        self.num_classes = {fam.task: NUM_CLASSES[fam.dataset]}
        self.resolution = {fam.task: RESOLUTION[fam.task]}
        self.description = f"NDS {fam.name} ({'ImageNet' if fam.dataset == 'imagenet' else 'CIFAR-10'})"

    def canonical(self, arch, data_dir=None) -> str:
        fam, i = parse_key(arch, self.family.name)
        n = len(load_table(fam, data_dir))
        if i >= n:
            raise ArchError(f"NDS arch {arch!r}: index out of range (the {fam} file has {n} records)")
        return f"{fam}:{i}"

    def all_archs(self, data_dir=None) -> list[str]:
        return list(load_table(self.family.name, data_dir)["arch"])

    def truth(self, task: str, data_dir=None):
        self.check_task(task)
        return load_truth(self.family.name, data_dir)

    def builder(self, arch: str, task: str):
        """A picklable ``build(bn=True)``: the record's net config is bound in, not looked up again."""
        self.check_task(task)
        fam, net = net_config(arch)
        return partial(build_from_net, fam, json.dumps(net, sort_keys=True))


def spaces() -> list[NDSSpace]:
    return [NDSSpace(n) for n in FAMILY_NAMES]
