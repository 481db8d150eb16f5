"""NAS-Bench-201 (Dong & Yang, ICLR 2020): canonical arch keys, ground truth, and the network builder.

The space: a cell is a DAG on 4 nodes whose 6 edges each carry one of 5 ops; 5^6 = 15,625 cells.
The canonical key is the official arch string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` and the
official index (its row in the benchmark).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from proxybench.datasets import files, kernels
from proxybench.datasets.errors import ArchError, DataFileError, did_you_mean

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Edge order of the arch string: node 1 <- 0; node 2 <- 0, 1; node 3 <- 0, 1, 2.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
N_ARCHS = len(OPS) ** len(EDGES)
TASKS = ("cifar10", "cifar100", "ImageNet16-120")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}
RESOLUTION = {"cifar10": 32, "cifar100": 32, "ImageNet16-120": 16}
TRUTH_COLUMNS = ("test_acc_200", "val_acc_200", "test_acc_12", "val_acc_12", "params")
OFFICIAL_TRUTH = "nb201/NAS-Bench-201-v1_1-096897.truth.parquet"

_ARCH_RE = re.compile(r"^\|([a-z_0-9]+)~0\|\+\|([a-z_0-9]+)~0\|([a-z_0-9]+)~1\|\+"
                      r"\|([a-z_0-9]+)~0\|([a-z_0-9]+)~1\|([a-z_0-9]+)~2\|$")
_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def parse_arch(arch: str) -> tuple[str, ...]:
    """The six edge ops of an official arch string, in ``EDGES`` order; ArchError if malformed."""
    if not isinstance(arch, str):
        raise ArchError(f"NB201 arch must be a string like {_EXAMPLE}, got {type(arch).__name__} {arch!r}")
    m = _ARCH_RE.match(arch.strip())
    if not m:
        raise ArchError(
            f"malformed NB201 arch string {arch!r}: expected three nodes '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' "
            f"with ops from {', '.join(OPS)}; e.g. {_EXAMPLE}")
    ops = m.groups()
    bad = [o for o in ops if o not in OPS]
    if bad:
        raise ArchError(f"unknown NB201 op(s) {bad} in {arch!r}; valid ops: {', '.join(OPS)}")
    return tuple(ops)


def no_unreachable_branches(arch: str) -> bool:
    """Whether every op of the cell (every edge but 'none') lies on a path from the cell's input to its output.

    The other cells carry an op whose result never reaches the output, or that never sees the input: the same
    network as a cell with that edge 'none'. 9,445 of the 15,625 cells pass (the all-'none' cell included), the
    "~9.4k cells without unreachable branches" some papers correlate on (REFERENCES.md)."""
    live = [(a, b) for (b, a), op in zip(EDGES, parse_arch(arch), strict=True) if op != "none"]  # (from, to)
    fed, feeds = {0}, {3}
    for a, b in sorted(live, key=lambda e: e[1]):  # edges into node b only leave nodes before b
        if a in fed:
            fed.add(b)
    for a, b in sorted(live, key=lambda e: -e[0]):
        if b in feeds:
            feeds.add(a)
    return all(a in fed and b in feeds for a, b in live)


def arch_str(ops) -> str:
    """The official arch string of six edge ops (names or indices into OPS), in ``EDGES`` order."""
    ops = [OPS[o] if isinstance(o, (int, np.integer)) else o for o in ops]
    if len(ops) != 6 or any(o not in OPS for o in ops):
        raise ArchError(f"an NB201 cell has 6 edges with ops from {OPS}, got {ops}")
    return f"|{ops[0]}~0|+|{ops[1]}~0|{ops[2]}~1|+|{ops[3]}~0|{ops[4]}~1|{ops[5]}~2|"


def canonical(arch) -> str:
    """Canonical key of an arch given as an arch string or an official index (int or digit string)."""
    if isinstance(arch, (int, np.integer)) or (isinstance(arch, str) and arch.strip().isdigit()):
        return index_to_arch(int(arch))
    return arch_str(parse_arch(arch))


# ----------------------------------------------------------------------------------------------- truth

def _read_csv(key: str, columns: list[str], data_dir) -> pd.DataFrame:
    path = files.require(key, data_dir)
    try:
        df = pd.read_csv(path)
    except Exception as e:  # pandas raises many types for a broken CSV; the user needs one message
        raise files.corrupt(key, f"not a readable CSV ({type(e).__name__}: {e})", data_dir) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise files.corrupt(key, f"missing column(s) {missing}; found {list(df.columns)[:10]}", data_dir)
    if len(df) != N_ARCHS:
        raise files.corrupt(key, f"{len(df)} rows, expected {N_ARCHS} (one per cell)", data_dir)
    return df


def _read_val200(key: str, data_dir) -> pd.Series:
    """200-epoch validation accuracy by arch string. The upstream JSON lists cells in base-5 counting
    order (not official index order, despite its description), so rows are matched by arch string."""
    path = files.require(key, data_dir)
    try:
        raw = json.loads(Path(path).read_text())
        archs = [arch_str([o for node in cell for o in node]) for cell, _ in raw]
        accs = [float(a) for _, a in raw]
    except Exception as e:
        raise files.corrupt(key, f"not a JSON list of [cell, accuracy] ({type(e).__name__}: {e})", data_dir) from None
    if len(archs) != N_ARCHS or len(set(archs)) != N_ARCHS:
        raise files.corrupt(key, f"{len(set(archs))} distinct cells, expected {N_ARCHS}", data_dir)
    return pd.Series(accs, index=archs)


def _truth_from_mirrors(data_dir) -> pd.DataFrame:
    nats = _read_csv("nb201/nats_bench.csv", ["ArchitectureString", "CIFAR10TestAccuracy200Epochs",
                                              "CIFAR100TestAccuracy200Epochs",
                                              "ImageNetTestAccuracy200Epochs"], data_dir)
    archs = nats["ArchitectureString"].astype(str).tolist()
    try:
        for a in archs:
            parse_arch(a)
    except ArchError as e:
        raise files.corrupt("nb201/nats_bench.csv", str(e), data_dir) from None
    mini = _read_csv("nb201/mini-bench-arch-cell-accs.csv", ["cellstr", "cifar10-test", "cifar10-val",
                                                            "cifar100-test", "cifar100-val",
                                                            "imagenet-test", "imagenet-val"], data_dir)
    asa = _read_csv("nb201/arch_score_acc.csv", ["cellstr", "params"], data_dir)
    for key, df in (("nb201/mini-bench-arch-cell-accs.csv", mini), ("nb201/arch_score_acc.csv", asa)):
        bad = np.flatnonzero(df["cellstr"].astype(str).to_numpy() != np.asarray(archs))
        if len(bad):
            raise files.corrupt(key, f"row {bad[0]} is {df['cellstr'].iloc[bad[0]]!r} but official index "
                                f"{bad[0]} is {archs[bad[0]]!r}", data_dir)
    params_c10 = asa["params"].astype(float).to_numpy()
    parts = []
    for task, test_col, mini_pfx, val_key in [
        ("cifar10", "CIFAR10TestAccuracy200Epochs", "cifar10", "nb201/val200/cifar10valid.json"),
        ("cifar100", "CIFAR100TestAccuracy200Epochs", "cifar100", "nb201/val200/cifar100.json"),
        ("ImageNet16-120", "ImageNetTestAccuracy200Epochs", "imagenet", "nb201/val200/tinyimagenet.json"),
    ]:
        val = _read_val200(val_key, data_dir).reindex(archs)
        if val.isna().any():
            raise files.corrupt(val_key, "does not cover every cell of nats_bench.csv", data_dir)
        nc = NUM_CLASSES[task]
        parts.append(pd.DataFrame({
            "index": np.arange(N_ARCHS, dtype=np.int64),
            "arch": archs,
            "task": task,
            "test_acc_200": nats[test_col].astype(float).to_numpy(),
            "val_acc_200": val.to_numpy(dtype=float),
            "test_acc_12": mini[f"{mini_pfx}-test"].astype(float).to_numpy(),
            "val_acc_12": mini[f"{mini_pfx}-val"].astype(float).to_numpy(),
            # arch_score_acc holds CIFAR-10-head params; other heads differ only in the Linear(64, nc) layer.
            "params": np.round(params_c10 + 65 * (nc - 10) / 1e6, 6),
        }))
    return pd.concat(parts, ignore_index=True)


def _truth_sources(data_dir) -> list[Path]:
    official = files.resolve_data_dir(data_dir) / OFFICIAL_TRUTH
    if official.is_file():
        return [official]
    keys = ["nb201/nats_bench.csv", "nb201/mini-bench-arch-cell-accs.csv", "nb201/arch_score_acc.csv",
            "nb201/val200/cifar10valid.json", "nb201/val200/cifar100.json", "nb201/val200/tinyimagenet.json"]
    return [files.require(k, data_dir) for k in keys]


def truth_source_id(data_dir=None) -> str:
    """Which ground-truth files were used: 'official' (converted benchmark file) or 'mirror-csv'."""
    srcs = _truth_sources(data_dir)
    return "official-pth" if srcs[0].name.endswith(".truth.parquet") else "mirror-csv"


@lru_cache(maxsize=8)
def _load_truth_cached(data_dir_str: str, stamp: tuple) -> pd.DataFrame:
    data_dir = Path(data_dir_str)
    srcs = _truth_sources(data_dir)
    if srcs[0].name.endswith(".truth.parquet"):
        try:
            df = pd.read_parquet(srcs[0])
        except Exception as e:
            raise DataFileError(f"corrupt converted NB201 benchmark {srcs[0]} ({e}); re-create it with "
                                f"`proxybench import-nb201 NAS-Bench-201-v1_1-096897.pth`") from None
        return df
    digest = hashlib.sha256(repr(stamp).encode()).hexdigest()[:12]  # stable across processes, unlike hash()
    cache = files.resolve_cache_dir() / f"nb201_truth_{digest}.parquet"
    df = files.read_derived(cache, pd.read_parquet)  # None: absent, or broken (warned) and rebuilt
    if df is not None:
        return df
    df = _truth_from_mirrors(data_dir)
    files.write_derived(df, cache)
    return df


def load_truth(tasks=None, data_dir=None) -> pd.DataFrame:
    """Ground truth of every cell, one row per (cell, task).

    Columns: ``index, arch, task, test_acc_200, val_acc_200, test_acc_12, val_acc_12, params``.
    Accuracies in %, seed means; ``params`` in millions for the task's head. For cifar10,
    ``test_acc_200`` is the model trained on train+valid ("cifar10") and ``val_acc_200`` the
    "cifar10-valid" run, as in the official API. Read from a converted official benchmark file when
    present, else from the CSV/JSON mirrors, and cached as parquet keyed by the sources' size and mtime.
    """
    srcs = _truth_sources(data_dir)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in srcs)
    df = _load_truth_cached(str(files.resolve_data_dir(data_dir)), stamp)
    if tasks is not None:
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        for t in tasks:
            check_task(t)
        df = df[df["task"].isin(tasks)].reset_index(drop=True)
    return df


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ArchError(f"unknown NB201 task {task!r}{did_you_mean(task, TASKS)}; tasks: {', '.join(TASKS)}")
    return task


@lru_cache(maxsize=4)
def _index_table(data_dir_str: str) -> tuple[list[str], dict[str, int]]:
    df = load_truth("cifar10", data_dir_str)
    archs = df.sort_values("index")["arch"].tolist()
    return archs, {a: i for i, a in enumerate(archs)}


def index_to_arch(index: int, data_dir=None) -> str:
    """Official arch string of an official index (0..15624)."""
    if not 0 <= int(index) < N_ARCHS:
        raise ArchError(f"NB201 index {index} out of range: valid indices are 0..{N_ARCHS - 1}")
    return _index_table(str(files.resolve_data_dir(data_dir)))[0][int(index)]


def arch_to_index(arch: str, data_dir=None) -> int:
    """Official index of an arch string."""
    return _index_table(str(files.resolve_data_dir(data_dir)))[1][canonical(arch)]


def all_archs(data_dir=None) -> list[str]:
    """Every arch string, in official index order."""
    return list(_index_table(str(files.resolve_data_dir(data_dir)))[0])


# ---------------------------------------------------------------------------------------------- network
# Mirrors the official "infer" network of NAS-Bench-201 (xautodl's TinyNetwork + InferCell): the
# parameter count must equal the benchmark's own, which tests check.

class _Zero(nn.Module):
    def forward(self, x):
        return kernels.zero(x)  # x.mul(0.0), the same bits


def _relu_conv_bn(c_in, c_out, k, stride, pad, bn=True):
    layers = [nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, bias=False)]
    layers.append(nn.BatchNorm2d(c_out) if bn else nn.Identity())
    return nn.Sequential(*layers)


def _op(name: str, c: int, bn: bool) -> nn.Module:
    if name == "none":
        return _Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return _relu_conv_bn(c, c, 1, 1, 0, bn)
    if name == "nor_conv_3x3":
        return _relu_conv_bn(c, c, 3, 1, 1, bn)
    if name == "avg_pool_3x3":
        return kernels.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)  # PyTorch's bits, faster
    raise ArchError(f"unknown NB201 op {name!r}")


class Cell(nn.Module):
    """One NB201 cell: node j = sum of op(node i) over incoming edges; output = node 3."""

    def __init__(self, ops: tuple[str, ...], c: int, bn: bool = True):
        super().__init__()
        self.edges = nn.ModuleList(_op(o, c, bn) for o in ops)

    def forward(self, x):
        nodes = [x]
        e = 0
        for j in range(1, 4):
            acc = None
            for i in range(j):
                y = self.edges[e](nodes[i])
                acc = y if acc is None else acc + y
                e += 1
            nodes.append(acc)
        return nodes[3]


class ResidualReduction(nn.Module):
    """The residual block between stages: two ReLU-conv-BN (the first with stride 2) + avgpool/1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, bn: bool = True):
        super().__init__()
        self.conv_a = _relu_conv_bn(c_in, c_out, 3, 2, 1, bn)
        self.conv_b = _relu_conv_bn(c_out, c_out, 3, 1, 1, bn)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, padding=0),
                                        nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """Stem (3x3 conv, 16 channels) + 3 stages of 5 cells with residual reductions + BN-ReLU, pool, linear."""

    def __init__(self, arch: str, num_classes: int, channels: int = 16, cells_per_stage: int = 5,
                 bn: bool = True):
        super().__init__()
        ops = parse_arch(arch)
        self.arch = arch_str(ops)
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c) if bn else nn.Identity())
        layers: list[nn.Module] = []
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, 2 * c, bn))
                c *= 2
            layers.extend(Cell(ops, c, bn) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c) if bn else nn.Identity(), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def build_network(arch: str, task: str = "cifar10", bn: bool = True, channels: int = 16) -> NB201Network:
    """The NB201 network of a cell for a task (PyTorch default init: seed torch before calling).

    ``channels``: the first stage's width (the benchmark's 16; reduced-training proxies pass fewer)."""
    return NB201Network(canonical(arch) if not isinstance(arch, str) else arch,
                        NUM_CLASSES[check_task(task)], channels=channels, bn=bn)


def count_params(model: nn.Module) -> int:
    """Trainable parameters, counted like the benchmark (all parameters, BN affine included)."""
    return sum(p.numel() for p in model.parameters())


def _op_params(name: str, channels: int = 16, cells_per_stage: int = 5) -> int:
    """Parameters one edge op adds over the whole network (one copy per cell, 3 stages)."""
    per = {"nor_conv_1x1": lambda c: c * c + 2 * c, "nor_conv_3x3": lambda c: 9 * c * c + 2 * c}
    return sum(cells_per_stage * per[name](channels * 2 ** s) for s in range(3)) if name in per else 0


def explain_param_mismatch(ours: int, official_millions: float) -> str | None:
    """Why the benchmark's ``params`` differs from the network's count, or None when it cannot be explained.

    In 204 of the 15,625 cells the benchmark's value is the mean over seed runs of which one or two
    trained a network with one or two convolution ops more or fewer: the difference is then an exact
    multiple of 1/2 or 1/3 of one conv op's parameters (checked to the file's 6 decimals).
    """
    diff = round(official_millions * 1e6) - ours
    if diff == 0:
        return "exact"
    c1, c3 = _op_params("nor_conv_1x1"), _op_params("nor_conv_3x3")
    for runs in (2, 3):
        for k1 in range(-6, 7):
            for k3 in range(-6, 7):
                if abs(runs * diff - (k1 * c1 + k3 * c3)) <= runs:  # the CSV rounds to 1 parameter
                    return (f"seed-mixture: mean over {runs} runs, off by {k1}/{runs} conv1x1 and "
                            f"{k3}/{runs} conv3x3 op(s)")
    return None
