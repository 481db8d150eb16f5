"""VKDNW beside its official code (github.com/ondratybl/VKDNW, ``NB201/``): ``vkdnw``, ``vkdnw_svd32`` and
``vkdnw_single`` against the official ``compute_nas_score`` on the same weights and the same batch.

    proxybench official vkdnw --code DIR    (DIR: git clone https://github.com/ondratybl/VKDNW; checkout COMMIT)

Per cell the suite's values come from the registry (``get_proxy(name).compute`` on ``runner.make_context``); then
``proxies/vkdnw.py``'s ``prepare`` builds the same kaiming-initialised network and the same 64 N(0, 1) images
again, its parameters and buffers are copied in order into the official ``custom.tss_model.TinyNetwork`` of the
cell (the model ``NB201/tss_general_.py`` scores; the copy is checked by comparing the two networks' logits), and
the official ``ZeroShotProxy.compute_vkdnw_score.compute_nas_score`` scores it with the arguments of
``tss_general_.py`` (batch 64, ``params_grad_len=128``) and ``p=1`` (the first element of each tensor: the
code's default ``p=0.`` selects none and fails; the suite's module docstring says why 1). Its ``vkdnw_entropy``
is the official value of ``vkdnw`` and ``vkdnw_svd32``, ``vkdnw_dim + vkdnw_entropy`` that of ``vkdnw_single``.
The ``vkdnw`` row's note gives the decile entropy of the official (float32) Fisher's float64 spectrum and how
many of its deciles lie below 1e-6 of its largest eigenvalue, where the float32 SVD returns rounding: the suite's
``vkdnw`` leaves that rounding out (``proxies/vkdnw.py``, step 6), so those deciles explain its difference; the
rounding of the float32 Fisher's own entries, which the float64 spectrum keeps, the rest.

Nothing of the official code is copied: ``load`` imports it from DIR with DIR/NB201 on ``sys.path`` for the
import only, and takes the official package names (``ZeroShotProxy``, ``custom``, ``xautodl``) out of
``sys.modules`` again. What only stops it running here is changed at run time, on the instance or for the call:
see ``HOW``. The default run (5 cifar10 cells) took 2.5 min of CPU here (8 min on a shared 2-core machine),
most of it the official ``vmap`` of per-sample ``jacrev``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

REPO = "ondratybl/VKDNW"
COMMIT = "6901b65fc68c89c163e8e5d9ba0410926f36870e"
PROXIES = ("vkdnw", "vkdnw_svd32", "vkdnw_single")
# The cells of the comparison the suite's module docstring reports, but the all-3x3 one (the dearest: ~1 min a
# side here); the second is the cell whose float32 floor covers several deciles. cifar10 only by default:
# ImageNet16-120 costs ~30 s a cell on the official side, cifar100 ~20 s a cell on the suite's and minutes on
# the official's (--tasks adds them).
CELLS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|none~0|avg_pool_3x3~1|skip_connect~2|",
    "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
)
TASKS = ("cifar10",)
HOW = (
    "The official `NB201/ZeroShotProxy/compute_vkdnw_score.py` `compute_nas_score` (its `get_fisher`, "
    "`get_jacobian_index` by `vmap` of per-sample `jacrev`, `cholesky_covariance`, float32 `torch.svd`, deciles "
    "and entropy) runs on the official `NB201/custom/tss_model.py` `TinyNetwork(16, 5, cell, classes)`, with "
    "batch 64, `params_grad_len=128` (as `NB201/tss_general_.py`) and `p=1` (the default `p=0.` selects no "
    "element and fails); the network's parameters and buffers are the suite's (`proxies/vkdnw.py` `prepare`: "
    "kaiming_normal fan_in from the seeded generator, BN weight 1 bias 0), copied in order, the copy checked by "
    "the two networks' logits; the batch is the suite's 64 N(0, 1) images, passed as `trainloader=[[x]]`, in the "
    "default memory layout. Patched at run time: the module's `init_model` is the identity for the call (the "
    "weights are already the suite's; the official init would redraw them from the global generator); the "
    "model instance's `cuda` is the identity (CPU torch); the model instance's `named_parameters` yields clones "
    "of the parameters, because torch 2.x's `torch.func` refuses `get_jacobian_index`'s in-place write "
    "`param[param_idx] = v` into a view of a captured parameter (the functorch the code was written for let it "
    "write the same value into the parameter): the values are the same, the number of tensors too. The note of "
    "each `vkdnw` row gives the decile entropy of the spectrum of the official (float32) Fisher in float64 "
    "(`eigvalsh`; the Fisher recorded by wrapping the module's `get_fisher` for the call) and how many of its 9 "
    "deciles lie below 1e-6 of the largest eigenvalue, where the official float32 SVD returns rounding (the "
    "suite's `vkdnw` takes the exact spectrum of a float64 Fisher)."
)
FILES = ("NB201/ZeroShotProxy/compute_vkdnw_score.py", "NB201/custom/tss_model.py",
         "NB201/xautodl/models/cell_searchs/genotypes.py", "NB201/xautodl/models/cell_infers/cells.py")
PACKAGES = ("ZeroShotProxy", "custom", "xautodl")  # the official tree's top-level packages
C, N = 16, 5  # tss_general_.py --channel, --num_cells
FLOOR = 1e-6  # of the largest eigenvalue: what the float32 SVD (~1e-7 of the largest) cannot resolve
LOGITS_RTOL = 1e-4  # the copied network's logits against the suite's, relative to their largest magnitude


def load(code: Path) -> SimpleNamespace:
    """The official scoring module, ``TinyNetwork`` and ``Structure`` imported from the checkout ``code``."""
    from proxybench.tools.official import importing_from, require

    require(code, *FILES, repo=REPO, commit=COMMIT)
    with importing_from(Path(code) / "NB201", *PACKAGES):
        score = importlib.import_module("ZeroShotProxy.compute_vkdnw_score")
        net = importlib.import_module("custom.tss_model")
        genotypes = importlib.import_module("xautodl.models.cell_searchs.genotypes")
    return SimpleNamespace(score=score, TinyNetwork=net.TinyNetwork, Structure=genotypes.Structure)


def transfer(src: nn.Module, dst: nn.Module) -> None:
    """Copy ``src``'s parameters, then its buffers, into ``dst``'s, both in module order (the two NB201 forms
    name their modules differently but register them in the same order); ValueError on a count or shape
    mismatch."""
    from proxybench.tools.official import copy_in_order

    copy_in_order(src.named_parameters(), dst.named_parameters(), "parameters")
    copy_in_order(src.named_buffers(), dst.named_buffers(), "buffers")


@contextmanager
def cloned_parameters(model: nn.Module) -> Iterator[None]:
    """``model.named_parameters()`` yields (name, clone of the parameter) for the duration (an attribute of the
    instance, deleted afterwards): a function transformed by ``torch.func`` may then write into what it reads."""
    cls_fn = type(model).named_parameters

    def named_parameters(*args, **kwargs):
        for name, p in cls_fn(model, *args, **kwargs):
            yield name, p.detach().clone()

    model.named_parameters = named_parameters
    try:
        yield
    finally:
        del model.named_parameters


@contextmanager
def patched(module, **names) -> Iterator[None]:
    """Module attributes replaced for the duration, restored afterwards."""
    old = {k: getattr(module, k) for k in names}
    for k, v in names.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def official_score(official, net: nn.Module, x: torch.Tensor, arch: str, classes: int) -> dict:
    """The official ``compute_nas_score`` of the cell on ``net``'s weights and the batch ``x`` (contiguous):
    its info dict plus "fisher", the Fisher it took the SVD of."""
    model = official.TinyNetwork(C, N, official.Structure.str2structure(arch), classes)
    transfer(net, model)
    with torch.no_grad():
        ref, got = net.eval()(x), model.eval()(x)[1]
    scale = max(float(ref.abs().max()), 1e-30)
    if float((ref - got).abs().max()) > LOGITS_RTOL * scale:
        raise RuntimeError(f"vkdnw: the official TinyNetwork of {arch} does not reproduce the suite's logits after "
                           f"the weight copy (largest difference {float((ref - got).abs().max()):.3g})")
    seen = {}
    get_fisher = official.score.get_fisher

    def recording_get_fisher(*args, **kwargs):
        seen["fisher"] = f = get_fisher(*args, **kwargs)
        return f

    model.cuda = lambda *a, **k: model
    with patched(official.score, init_model=lambda m, method="kaiming_norm_fanin": m,
                 get_fisher=recording_get_fisher), cloned_parameters(model):
        info = official.score.compute_nas_score(model, gpu=None, trainloader=[[x]], resolution=x.shape[2],
                                                batch_size=x.shape[0], params_grad_len=128, p=1)
    return {**info, "fisher": seen["fisher"]}


def compare(official, task: str, arch: str, seed: int) -> list[dict]:
    from proxybench.datasets import nb201
    from proxybench.proxies import get_proxy
    from proxybench.proxies import vkdnw as V
    from proxybench.runner import make_context

    ctx = make_context("nb201", task, arch, seed)
    ours = {n: get_proxy(n).compute(ctx) for n in PROXIES}
    net, x = V.prepare(ctx)  # the weights and images the suite's values were computed on, again
    net, x = net.to(memory_format=torch.contiguous_format), x.contiguous()
    info = official_score(official, net, x, arch, nb201.NUM_CLASSES[task])
    entropy, dim = float(info["vkdnw_entropy"]), float(info["vkdnw_dim"])
    eig = torch.linalg.eigvalsh(info["fisher"].double()).abs()
    top = float(eig.max()) if eig.numel() else 0.0
    q = torch.quantile(eig, torch.tensor(V.QUANTILES, dtype=torch.float64)) if eig.numel() else eig
    below = int((q < FLOOR * top).sum()) if top > 0 else 0
    exact = V.decile_entropy(eig) if eig.numel() else math.nan
    note = f"official F, float64 spectrum: {exact:.9g}; {below}/9 deciles < {FLOOR:g} x largest"
    return [{"proxy": "vkdnw", "ours": ours["vkdnw"], "official": entropy, "note": note},
            {"proxy": "vkdnw_svd32", "ours": ours["vkdnw_svd32"], "official": entropy},
            {"proxy": "vkdnw_single", "ours": ours["vkdnw_single"], "official": dim + entropy}]
