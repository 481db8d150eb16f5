"""AZ-NAS adapter of ``proxybench official``: the official NB201 ``compute_nas_score`` beside the suite's az_* proxies.

    proxybench official az_nas --code DIR    (DIR: github.com/cvlab-yonsei/AZ-NAS at COMMIT)

For each (task, cell) the suite scores the six proxies of ``PROXIES`` through the registry (the default float64
statistics and the ``_fp32`` variant, one shared pass each) while the sign tensors its trainability draws are
recorded. Then the official ``NB201/ZeroShotProxy/compute_az_nas_score.py:compute_nas_score`` runs once on the
official network class (``NB201/custom/tss_model.py:TinyNetwork`` with xautodl's cells from the checkout) holding
the suite's weights, on the suite's input batch and with the suite's signs; both settings are compared with that
one official result. The official code is imported from DIR at run time (``sys.path`` and ``sys.modules`` restored
afterwards) and patched only by names replaced for the duration of the call (see ``HOW``).
"""

from __future__ import annotations

import importlib
import math
import re
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from proxybench.datasets import nb201
from proxybench.proxies import az_nas as az
from proxybench.proxies import get_proxy
from proxybench.runner import make_context
from proxybench.tools.official import importing_from, require

REPO = "cvlab-yonsei/AZ-NAS"
COMMIT = "5e6683a2cfa5c6d0dc34a1317a842497ba7eae47"
PROXIES = az.names() + az.names("_fp32")
TASKS = ("cifar10", "ImageNet16-120")
# seven chosen cells (conv-heavy ones, parameter-free and skip-heavy ones where the official float32 statistics
# can give -inf, an identity cell, a zero cell) and five random ones: the -inf cases and finite values, in about
# 3 minutes of one CPU core (one torch thread: OMP_NUM_THREADS=1)
CELLS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",  # identity cell: trainability -inf
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # zero cell: expressivity, progressivity -inf
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|",
    "|skip_connect~0|+|avg_pool_3x3~0|none~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|nor_conv_3x3~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
)
HOW = (
    "The official NB201 `ZeroShotProxy/compute_az_nas_score.py:compute_nas_score` (its expressivity, "
    "progressivity and trainability, float32 statistics as written) runs on the official network class, "
    "`NB201/custom/tss_model.py:TinyNetwork(16, 5, Structure.str2structure(arch), classes)` built from the "
    "checkout's xautodl cells, holding the suite's weights: the suite's own az_nas setting (`proxies.az_nas."
    "prepare`: Kaiming-normal fan_in weights drawn from the cell's seeded generator, BN weight 1 bias 0) copied "
    "parameter by parameter and buffer by buffer, matched by name, and checked to give the suite network's "
    "logits on the batch. The input is the suite's batch of 64 N(0, 1) images, given to the official function "
    "as a one-batch `trainloader` [(x, None)] (its `trainloader=None` branch would draw its own); the +-1 sign "
    "tensors are the ones the suite's trainability drew (recorded as the suite scored the cell, the same for "
    "both settings). Patched at run time, only for the duration of the call: the module's `init_model` is a "
    "no-op (it would re-draw the weights from the global generator), the network's `cuda` is the identity "
    "(`gpu=None`, CPU), and the module's `torch` is a view of torch whose `bernoulli` returns the recorded signs "
    "as 0/1, in the order the official loop asks for them (the last pair first), so that its "
    "`(bernoulli(.) - 0.5) * 2` gives the suite's signs; nothing else is changed. One official result per "
    "cell is compared with both suite settings: the default (float64 statistics) and `_fp32` (the official "
    "float32 statistics)."
)
_FILES = ("NB201/ZeroShotProxy/compute_az_nas_score.py", "NB201/custom/tss_model.py",
          "NB201/xautodl/models/cell_searchs/genotypes.py", "NB201/xautodl/models/cell_infers/cells.py")
_COMPONENT = {n: n.removeprefix("az_").split("_")[0] for n in PROXIES}


def load(code: Path) -> types.SimpleNamespace:
    """The official scoring module, network class and genotype parser, imported from the checkout ``code``."""
    code = Path(code)
    require(code, *_FILES, repo=REPO, commit=COMMIT)
    with importing_from(code / "NB201"):
        score = importlib.import_module("ZeroShotProxy.compute_az_nas_score")
        tss = importlib.import_module("custom.tss_model")
        genotypes = importlib.import_module("xautodl.models.cell_searchs.genotypes")
    return types.SimpleNamespace(score=score, TinyNetwork=tss.TinyNetwork, Structure=genotypes.Structure)


# ------------------------------------------------------------------------------------------- glue

_RENAMES = ((re.compile(r"^cells\.(\d+)\.edges\.(\d+)\.(\d+)\."), r"cells.\1.layers.\2.op.\3."),
            (re.compile(r"^cells\.(\d+)\.conv_([ab])\.(\d+)\."), r"cells.\1.conv_\2.op.\3."))


def official_name(key: str) -> str:
    """The official TinyNetwork's state-dict name of a suite NB201Network entry: a cell's edge e is xautodl's
    ``layers[e]`` (InferCell builds them in the arch string's edge order) and every ReLU-conv-BN is wrapped in
    an ``op`` Sequential; the stem, shortcuts, last BN and classifier are named alike."""
    for pattern, repl in _RENAMES:
        key = pattern.sub(repl, key)
    return key


@torch.no_grad()
def transfer(src: nn.Module, dst: nn.Module, rename: Callable[[str], str] = official_name) -> None:
    """Copy every parameter and buffer of ``src`` into ``dst``, matched by ``rename(name)``; ValueError unless the
    two state dicts have the same names and shapes."""
    theirs = dst.state_dict()
    ours = {rename(k): v for k, v in src.state_dict().items()}
    if set(ours) != set(theirs):
        raise ValueError(f"az_nas official: the networks differ: only in the suite's {sorted(set(ours) - set(theirs))}"
                         f", only in the official {sorted(set(theirs) - set(ours))}")
    bad = [k for k, v in ours.items() if v.shape != theirs[k].shape]
    if bad:
        raise ValueError(f"az_nas official: shapes differ at {bad}")
    for k, v in ours.items():
        theirs[k].copy_(v)


class _TorchWithSigns(types.ModuleType):
    """torch, except that ``bernoulli`` returns the next of ``signs`` mapped to 0/1: what the official
    ``(torch.bernoulli(0.5) - 0.5) * 2`` turns back into those signs."""

    def __init__(self, signs: list[torch.Tensor]):
        super().__init__("torch")
        self._queue = list(signs)

    def __getattr__(self, name):
        return getattr(torch, name)

    def bernoulli(self, p, *args, **kwargs):
        if not self._queue:
            raise RuntimeError("az_nas official: the official code asked for more sign tensors than the suite drew")
        t = self._queue.pop(0)
        if t.shape != p.shape:
            raise RuntimeError(f"az_nas official: sign tensor of shape {tuple(t.shape)} asked for {tuple(p.shape)}")
        return ((t + 1) / 2).to(dtype=p.dtype, device=p.device).contiguous()

    @property
    def left(self) -> int:
        return len(self._queue)


@contextmanager
def _patched(obj, **names) -> Iterator[None]:
    old = {k: obj.__dict__[k] for k in names if k in obj.__dict__}
    for k, v in names.items():
        setattr(obj, k, v)
    try:
        yield
    finally:
        for k in names:
            if k in old:
                setattr(obj, k, old[k])
            else:
                delattr(obj, k)


def _recording(drawn: list[torch.Tensor]):
    real = az.signs

    def record(shape, g, like):
        t = real(shape, g, like)
        drawn.append(t.detach().clone())
        return t

    return _patched(az, signs=record)


def run_official(official, arch: str, task: str, net: nn.Module, x: torch.Tensor, signs: list[torch.Tensor]) -> dict:
    """The official ``compute_nas_score`` on a TinyNetwork holding ``net``'s weights, input ``x`` and ``signs``."""
    model = official.TinyNetwork(16, 5, official.Structure.str2structure(arch), nb201.NUM_CLASSES[task])
    transfer(net, model)
    with torch.no_grad():  # the transfer's check: the same network (train mode, as the official function runs)
        a, b = net.train()(x), model.train()(x)[1]
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"az_nas official: the official network's logits differ from the suite's by "
                           f"{(a - b).abs().max().item():.3g} on {arch}")
    view = _TorchWithSigns(signs)
    with _patched(official.score, init_model=lambda m, method="kaiming_norm_fanin": m, torch=view), \
            _patched(model, cuda=lambda *a, **k: model):
        info = official.score.compute_nas_score(model, gpu=None, trainloader=[(x, None)], resolution=x.shape[2],
                                                batch_size=x.shape[0])
    if view.left:
        raise RuntimeError(f"az_nas official: {view.left} of the suite's sign tensors were not used")
    return info


def compare(official, task: str, arch: str, seed: int) -> list[dict]:
    """The six suite values of one cell and the official value of each one's component (the contract's rows)."""
    arch = nb201.canonical(arch)  # the edge order official_name relies on
    ctx = make_context("nb201", task, arch, seed, requested=PROXIES)
    drawn: list[torch.Tensor] = []
    with _recording(drawn):
        ours = {n: get_proxy(n).compute(ctx) for n in PROXIES}
    half = len(drawn) // 2  # one pass per setting, the same draws
    if len(drawn) != 2 * half or not all(torch.equal(a, b) for a, b in zip(drawn[:half], drawn[half:], strict=True)):
        raise RuntimeError("az_nas official: the two settings drew different sign tensors")
    net, x, _ = az.prepare(ctx)  # the weights and input of those passes (the same generator draws)
    info = run_official(official, arch, task, net, x.contiguous(), drawn[:half])
    rows = []
    for n in PROXIES:
        c = _COMPONENT[n]
        note = ""
        if (info[c] == -math.inf) != (ours[n] == -math.inf):
            side = "the official value" if info[c] == -math.inf else "the suite's value"
            note = f"{side} alone is -inf"
            if not n.endswith("_fp32"):
                note += f" (az_{c}_fp32: {ours[f'az_{c}_fp32']:.6g})"
        rows.append({"proxy": n, "ours": ours[n], "official": float(info[c]), "note": note})
    return rows
