"""Small NDS family files in the official schema, for tests and for demonstrating the pipeline without the release.

The real ``nds_data`` files are not on every machine (they are not on the one this suite was built on).
:func:`write_fixtures` writes ``<root>/nds/<family>.json`` for every family: a few seeded random networks
each, drawn from the family's own design space but tiny (widths 4-16, depths 2-5), with every field of the
official record. The ``params`` field is computed by :func:`analytic_params`, closed-form counts per op and
block written independently of the ``nn.Module`` builders in :mod:`proxybench.datasets.nds`, so "built parameters ==
recorded parameters" is a real check of the builders. The accuracy curves are SYNTHETIC (a noisy function
of size, no training happened): correlations computed on these files mean nothing.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

from proxybench.datasets import nds

SYNTHETIC_NOTE = ("SUBSTITUTE DATA written by datasets.nds_fixtures: tiny seeded random networks of each design "
                  "space; params are exact, accuracy curves are synthetic (no training happened)")

# Known genotypes (DARTS paper / repo genotypes.py): for checks against published parameter counts.
DARTS_V2 = {
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
               ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
               ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
    "reduce_concat": [2, 3, 4, 5],
}


# ------------------------------------------------------------------------------- independent param counts

def _bn(c: int) -> int:
    return 2 * c


def _op_params(op: str, c: int, stride: int) -> int:
    """Closed-form parameter count of one cell op on ``c`` channels."""
    if op in ("none",) or "pool" in op:
        return 0
    if op == "skip_connect":
        return 0 if stride == 1 else c * c + _bn(c)  # factorized reduce: two 1x1 convs to c/2 each
    k = int(op[-1])
    if op.startswith("sep_conv") or op.startswith("dil_sep_conv"):
        return 2 * (k * k * c + c * c + _bn(c))      # twice: depthwise kxk, pointwise 1x1, BN
    if op.startswith("dil_conv"):
        return k * k * c + c * c + _bn(c)
    if op in ("conv_1x1", "conv_3x3"):
        return k * k * c * c + _bn(c)
    if op in ("conv_3x1_1x3", "conv_7x1_1x7"):
        return 2 * k * c * c + _bn(c)
    raise ValueError(f"no closed form for op {op!r}")


def _cell_net_params(net: dict, num_classes: int, imagenet: bool, aux: bool) -> int:
    g, c, depth = net["genotype"], net["width"], net["depth"]
    if imagenet:
        h = c // 2
        total = 27 * h + _bn(h) + 9 * h * c + _bn(c) + 9 * c * c + _bn(c)
        c_pp = c_p = c
        reduction_prev = True
    else:
        total = 27 * 3 * c + _bn(3 * c)
        c_pp = c_p = 3 * c
        reduction_prev = False
    c_aux = None
    for i in range(depth):
        reduction = i in (depth // 3, 2 * depth // 3)
        if reduction:
            c *= 2
        total += (c_pp * c + _bn(c))  # preprocess0: factorized reduce or ReLU-1x1-BN, same count
        total += c_p * c + _bn(c)
        part = "reduce" if reduction else "normal"
        total += sum(_op_params(op, c, 2 if reduction and j < 2 else 1) for op, j in g[part])
        reduction_prev = reduction
        c_pp, c_p = c_p, len(g[f"{part}_concat"]) * c
        if i == 2 * depth // 3:
            c_aux = c_p
    del reduction_prev  # the preprocess count does not depend on it
    if aux:
        total += c_aux * 128 + _bn(128) + 128 * 768 * 4 + (0 if imagenet else _bn(768))
        total += 768 * num_classes + num_classes
    return total + c_p * num_classes + num_classes


def _anynet_params(net: dict, num_classes: int, dataset: str) -> int:
    stem_type, stem_w = nds.DEFAULT_STEM[dataset]
    stem_type, w_in = net.get("stem_type") or stem_type, net.get("stem_w") or stem_w
    total = (49 if stem_type == "res_stem_in" else 9) * 3 * w_in + _bn(w_in)
    bt = net["block_type"]
    n = len(net["ds"])
    bms, gs = net.get("bot_muls") or [1.0] * n, net.get("num_gs") or [1] * n
    for d, w, s, bm, g in zip(net["ds"], net["ws"], net["ss"], bms, gs, strict=True):
        for b in range(d):
            stride = s if b == 0 else 1
            if bt == "res_bottleneck_block":
                wb = int(round(w * bm))
                total += w_in * wb + _bn(wb) + 9 * wb * wb // g + _bn(wb) + wb * w + _bn(w)
            else:  # basic and plain blocks: two 3x3 convs
                total += 9 * w_in * w + _bn(w) + 9 * w * w + _bn(w)
            if bt.startswith("res_") and (w_in != w or stride != 1):
                total += w_in * w + _bn(w)
            w_in = w
    return total + w_in * num_classes + num_classes


def analytic_params(family: str, net: dict, with_aux: bool = True) -> int:
    """Parameters of a record's network by closed-form counting (independent of the builders)."""
    fam = nds.get_family(family)
    nc = nds.NUM_CLASSES[fam.dataset]
    if fam.kind == "cell":
        return _cell_net_params(net, nc, fam.dataset == "imagenet", with_aux and bool(net.get("aux")))
    return _anynet_params(net, nc, fam.dataset)


# ------------------------------------------------------------------------------------------ generation

def random_genotype(space: str, rng: random.Random) -> dict:
    """A random cell of a design space: each node picks two ops of the space's op set and two inputs among
    the earlier states; the output concatenates the nodes no other node reads (all nodes for DARTS)."""
    ops, nodes = nds.CELL_OPS[space], nds.CELL_NODES[space]
    g = {}
    for part in ("normal", "reduce"):
        pairs, used = [], set()
        for n in range(nodes):
            for _ in range(2):
                j = rng.randrange(2 + n)
                pairs.append([rng.choice(ops), j])
                used.add(j)
        g[part] = pairs
        loose = [s for s in range(2, 2 + nodes) if s not in used]
        g[f"{part}_concat"] = list(range(2, 2 + nodes)) if space == "DARTS" or not loose else loose
    return g


def random_net(family: str, rng: random.Random) -> dict:
    """A tiny network config of a family in the official ``net`` layout."""
    fam = nds.get_family(family)
    if fam.kind == "cell":
        fixed = "fix-w-d" in family
        return {"genotype": random_genotype(fam.base, rng), "width": 8 if fixed else rng.choice([4, 6, 8, 12]),
                "depth": 5 if fixed else rng.randint(2, 5), "aux": rng.random() < 0.3, "drop_prob": 0.0}
    n = 3 if fam.dataset == "cifar10" else 4
    ss = [1] + [2] * (n - 1)
    stem = ("res_stem_cifar", 8) if fam.dataset == "cifar10" else ("res_stem_in", 8)
    if fam.base in ("ResNeXt-A", "ResNeXt-B", "ResNet-B"):
        bt = "res_bottleneck_block"
        gs = [1] * n if fam.base == "ResNet-B" else [rng.choice([1, 2, 4]) for _ in range(n)]
        bms = [rng.choice([0.25, 0.5, 1.0]) for _ in range(n)]
        ws = [rng.choice([16, 32]) * 2 ** i for i in range(n)]
        return {"block_type": bt, "ds": [rng.randint(1, 2) for _ in range(n)], "ws": ws, "ss": ss,
                "bot_muls": bms, "num_gs": gs, "stem_type": stem[0], "stem_w": stem[1]}
    bt = "double_plain_block" if fam.base == "Vanilla" else "res_basic_block"
    return {"block_type": bt, "ds": [rng.randint(1, 2) for _ in range(n)],
            "ws": [rng.choice([4, 8, 12]) * 2 ** i for i in range(n)], "ss": ss, "bot_muls": [], "num_gs": [],
            "stem_type": stem[0], "stem_w": stem[1]}


def _curve(final_err: float, epochs: int, rng: random.Random) -> list[float]:
    start = 90.0 if final_err < 80 else 99.0
    return [round(final_err + (start - final_err) * math.exp(-5.0 * (e + 1) / epochs) + rng.gauss(0, 0.3), 3)
            for e in range(epochs)]


def random_record(family: str, rng: random.Random, epochs: int = 10) -> dict:
    """One record with every field of the official schema; params exact, curves synthetic."""
    fam = nds.get_family(family)
    net = random_net(family, rng)
    params = analytic_params(family, net)
    base = 25.0 if fam.dataset == "cifar10" else 60.0
    final = max(1.0, base - 2.0 * math.log(params) + rng.gauss(0, 1.5))
    test = _curve(final, epochs, rng)
    train = [max(0.0, e - 3.0) for e in test]
    return {
        "job_id": rng.randrange(10 ** 6), "rng_seed": rng.randrange(10 ** 6), "net": net,
        "optim": {"base_lr": 0.1, "wd": 5e-4, "max_ep": epochs, "lr_policy": "cos", "momentum": 0.9},
        "params": params, "flops": params * 10, "exp_mem": 0.0, "act_mem": 0.0,
        "prec_time": {"train_fw_bw": 0.01, "test_fw": 0.003}, "iter_time": 0.02,
        "min_test_top1": min(test), "test_ep_top1": test, "train_ep_top1": train,
        "train_ep_loss": [round(e / 30.0, 4) for e in train],
        "train_it_loss": [], "train_it_top1": [], "note": SYNTHETIC_NOTE,
    }


def write_fixtures(root, families=None, n: int = 6, seed: int = 0, epochs: int = 10) -> list[Path]:
    """Write ``<root>/nds/<family>.json`` (``n`` records each; the ``*_in`` ResNeXt files use the official
    ``{top, mid}`` dict layout, the rest a list). Returns the written paths."""
    out_dir = Path(root) / "nds"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for family in families or nds.FAMILY_NAMES:
        rng = random.Random(f"{seed}:{family}")
        records = [random_record(family, rng, epochs) for _ in range(n)]
        data = {"top": records[: n // 2], "mid": records[n // 2:]} if family.startswith("ResNeXt") and \
            family.endswith("_in") else records
        path = out_dir / f"{family}.json"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
        written.append(path)
    return written
