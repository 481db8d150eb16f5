"""TE-NAS's two training-free indicators (Chen, Gong & Wang, ICLR 2021): the NTK condition number and the
number of linear regions.

Read against the official code, github.com/VITA-Group/TENAS at 9df78ffd (``lib/procedures/ntk.py``,
``lib/procedures/linear_region_counter.py``, ``prune_tenas.py``, ``prune_launch.py``). TE-NAS itself prunes a
supernet; for NB201 the networks it scores are thin: the NTK on the search supernet with ``C=3, N=1`` (stem,
one cell per stage, the two residual reductions), the linear regions on a one-cell network with ``C=1`` and no
stem, fed 3x3 one-channel crops. Once pruned to a single path that supernet IS the thin NB201 network of the
cell, so the defaults here score exactly those networks (the official code's behaviour):

- ``te_nas_ntk`` (lower is better): NB201Network(channels=3, cells_per_stage=1) of the cell, train-mode BN,
  the space's seeded PyTorch-default init, one forward of the task's minibatch; the condition number
  lambda_max / lambda_min of the Gram matrix K_ij = <g_i, g_j> of the per-sample gradients g_i of the summed
  logits sum_c f_c(x_i) of that batch forward w.r.t. every parameter whose name contains ``weight`` (conv, BN
  gamma, classifier weight; no bias), as ``get_ntk_n``. Batch coupling through the BN batch statistics is kept
  (each g_i is a VJP of the batch forward, as the official per-sample ``backward`` calls).
- ``te_nas_lr`` (higher is better): the number of distinct ReLU sign patterns (the linear regions the samples
  fall in) of the cell's one-cell C=1 network over 3 batches of 1000 one-channel 3x3 crops of the task's
  images (``Linear_Region_Collector(input_size=(1000, 1, 3, 3), sample_batch=3)``), train-mode BN (statistics
  of each batch of 1000), every ``nn.ReLU`` with a 4-D input hooked, as the official collector.

Where the official code, the paper and REFERENCES.md differ:

- init: the paper draws the weights from Kaiming normal and averages repeats; ``prune_launch.py`` passes
  ``--init kaiming_normal`` with ``--repeat 3`` and ``prune_tenas.py`` re-initialises with
  ``init_model(net, 'kaiming_normal_fanout')`` (NTK) / ``'kaiming_normal_fanin'`` (regions), but ``init_model``
  only knows ``'kaiming_norm_fanin'`` / ``'kaiming_norm_fanout'``: it matches neither, so the official code
  runs PyTorch's default init and its 3 repeats differ only in the batch drawn. The defaults follow that (the
  space's seeded default init, one repeat: the suite's seeds are the repeats). ``te_nas_ntk_kaiming`` /
  ``te_nas_lr_kaiming`` re-draw Conv2d/Linear weights from Kaiming normal (fan_out / fan_in, gain sqrt 2, as
  the code intends and the paper says), biases 0, BN weight 1 bias 0, from the seeded generator.
- NTK batch: official 72 real training images for NB201 (``prune_launch.py``; ``--batch_size`` default 16);
  here the task's minibatch (64 in the suite), as REFERENCES.md's NB201 form.
- width: REFERENCES.md's NB201 form (and the AZ-NAS / VKDNW re-runs its published rho are of) scores the
  full-size network (C=16, N=5). ``_te_nas_ntk(ctx, full=True)`` is that form (the same NTK on
  ``ctx.network()``), implemented but NOT registered: 64 backward passes of the 64-image batch through the
  full network take 69 s CPU (204 s wall, 2 GB) on the median cell here, one thread, against 2.9-3.4 s CPU
  for the thin default; registered, it would join the default study and the precision measurement.
- full-size regions saturate: counted as the re-runs do (a batch of 64, N(0,1) or CIFAR-10 images, every
  4-D ReLU of the C=16 N=5 network, train-mode BN, default init, seeds 0 and 1) the count is 64, the batch
  size, on every NB201 cell measured (the median cell, all-3x3, all-skip_connect, all-avg_pool, a cell with
  a single skip edge, ...) and 1 on the all-'none' cell: no ranking information, so that form is not
  registered. The thin C=1 3x3-crop form counts 58-1171 of its 3000 samples on the cells measured.
- supernet vs cell network: the official supernet skips every op whose softmax weight is <= 0.01
  (``NAS201SearchCell.forward``), so pruned to a single path it computes exactly the thin network of the cell,
  ReLUs included (checked against the official ``TinyNetworkDarts`` in the comparison run).
- crops: the official crops come from 3000 shuffled training images (a random crop and one random channel
  each); here 3000 crops (image, channel, position drawn with replacement from the seeded generator) of the
  task's minibatch.
- numerics: the Gram matrix and its eigenvalues in float64 (official: float32 ``symeig``); the official code
  maps a NaN condition number to 1e5, here a degenerate network (all gradients zero: NaN; lambda_min <= 0,
  a singular NTK: +inf) returns the non-finite value and ranks last (``nan_policy='rank_last'``). Regions are
  counted exactly with ``torch.unique`` (official: a half-precision Hamming-distance matrix, sum of 1/multiplicity).
  Against the official ``get_ntk_n`` and ``Linear_Region_Collector`` on the official supernet pruned to the
  cell's path, holding the same weights, on the same batch and crops (``proxybench official te_nas``;
  reports/official/te_nas.md: 7 cells x 3 tasks, seed 42): condition numbers within 6.9e-5 relative (median
  3.1e-6; 8.4e-4 for the ``_kaiming`` variant on the all-skip cell of cifar100, kappa ~5e4: the official float32
  eigenvalues), region counts within 1.6e-7 (every official count rounds to the suite's integer; the rest is
  its float32 sum of 1/multiplicity).

The TE-NAS score (built by the suite's core from ``te_nas_ntk`` and ``te_nas_lr``; not registered here) is a
function of a SET of candidates: rank the set by the condition number ascending (smallest kappa = rank 0) and by
the number of regions descending (most regions = rank 0), add the two ranks; the LOWEST sum is the best
candidate. A NaN/inf kappa ranks after every finite one (the official code maps NaN to 1e5, which ranks a
finite kappa above 1e5 below it; inf stays inf there). Ties: the official
``prune_tenas.py`` uses dense ranks (equal values share a rank; the next distinct value gets that rank + 1),
after rounding the values it ranks (relative changes from pruning one op) to 3 decimals; the regions are integers
and tie often on the thin network, so dense and averaged ranks give different sums.

Networks other than NB201 (NB101, NDS): the thin official networks are defined for NB201 only, so ``te_nas_ntk``
and ``te_nas_lr`` raise a ValueError there; ``_te_nas_ntk(ctx, full=True)`` (unregistered) scores any network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from proxybench.datasets.nb201 import Cell, NB201Network, parse_arch
from proxybench.proxies.context import hooked_forward
from proxybench.proxies.registry import UnsupportedNetwork, register_proxy

_TENAS = ("Chen, Gong & Wang, Neural Architecture Search on ImageNet in Four GPU Hours: A Theoretically "
          "Inspired Perspective (TE-NAS), ICLR 2021")
_LAYERS = (nn.Conv2d, nn.Linear)
# the official NB201 settings (prune_launch.py / prune_tenas.py)
NTK_CHANNELS, NTK_CELLS = 3, 1  # the NTK supernet: C=3, N=1
LR_BATCH, LR_BATCHES, LR_CROP = 1000, 3, 3  # Linear_Region_Collector(input_size=(1000, 1, 3, 3), sample_batch=3)


def _generator(ctx) -> torch.Generator:
    return torch.Generator().manual_seed(int(ctx.seed))


# ---------------------------------------------------------------------------------------------------- NTK

def ntk_weights(net: nn.Module) -> list[torch.Tensor]:
    """The parameters the official NTK differentiates: every one whose name contains ``weight``."""
    return [p for name, p in net.named_parameters() if "weight" in name and p.requires_grad]


def ntk_gram(net: nn.Module, x: torch.Tensor, params=None, chunk: int = 8) -> torch.Tensor:
    """The (N, N) float64 Gram matrix of the per-sample gradients of the summed logits of ONE forward of ``x``.

    g_i = d(sum_c f(x)_{i,c}) / d params, a VJP of the batch forward (the samples stay coupled through
    train-mode BatchNorm statistics), for ``chunk`` samples at a time with ``is_grads_batched`` (one-hot
    cotangents); unused parameters are skipped. The Gram is accumulated in float64 over column blocks of the
    (N, P) Jacobian, so no float64 copy of it is ever made."""
    out = net(x)
    if isinstance(out, (tuple, list)):  # (features, logits), as the official NB201 models return
        out = out[-1]
    params = ntk_weights(net) if params is None else list(params)  # after the forward: lazy modules are built
    n = out.shape[0]
    rows: list[torch.Tensor] = []
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        go = torch.zeros((hi - lo, *out.shape), dtype=out.dtype, device=out.device)
        go[torch.arange(hi - lo), torch.arange(lo, hi)] = 1.0
        grads = torch.autograd.grad(out, params, go, retain_graph=hi < n, is_grads_batched=True, allow_unused=True)
        rows.append(torch.cat([g.reshape(hi - lo, -1) for g in grads if g is not None], dim=1).detach())
    jac = torch.cat(rows, dim=0)
    gram = torch.zeros((n, n), dtype=torch.float64, device=jac.device)
    block = 1 << 16
    for s in range(0, jac.shape[1], block):
        b = jac[:, s:s + block].to(torch.float64)
        gram += b @ b.T
    return gram


def condition_number(gram: torch.Tensor) -> float:
    """lambda_max / lambda_min of a symmetric PSD matrix (float64 eigvalsh); NaN when it is all zero (no
    gradient at all), +inf when lambda_min <= 0 (a singular NTK)."""
    lam = torch.linalg.eigvalsh(gram.to(torch.float64))
    lo, hi = float(lam[0]), float(lam[-1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= 0.0:
        return math.nan
    if lo <= 0.0:
        return math.inf
    return hi / lo


def ntk_condition(net: nn.Module, x: torch.Tensor, chunk: int = 8) -> float:
    """The TE-NAS NTK condition number of ``net`` (in the mode it is in) on one batch ``x``."""
    return condition_number(ntk_gram(net, x, chunk=chunk))


def _kaiming_(net: nn.Module, g: torch.Generator, mode: str) -> None:
    """The official ``kaiming_normal_fan{in,out}_init`` as intended: Conv2d/Linear weights ~ N(0, 2 / fan),
    biases 0, BatchNorm weight 1 bias 0; drawn in float32 from ``g`` and cast."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _LAYERS):
                w = m.weight
                recept = w[0][0].numel() if w.dim() > 2 else 1
                fan = (w.shape[1] if mode == "fan_in" else w.shape[0]) * recept
                draw = torch.randn(tuple(w.shape), generator=g, dtype=torch.float32) * math.sqrt(2.0 / fan)
                w.copy_(draw.to(device=w.device, dtype=w.dtype))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()


def _nb201_arch(ctx, proxy: str) -> str:
    """The cell's NB201 arch string, or a ValueError for a network of another space."""
    net = ctx.shared_network()
    if not isinstance(net, NB201Network):
        raise UnsupportedNetwork(f"{proxy}: the official TE-NAS networks (a thin NB201 supernet) are defined for NB201 "
                         f"cells only, not for {type(net).__name__}; _te_nas_ntk(ctx, full=True) scores any network")
    return net.arch


def thin_ntk_network(ctx) -> NB201Network:
    """The official NTK network of an NB201 cell: C=3, one cell per stage, seeded PyTorch-default init."""
    arch = _nb201_arch(ctx, "te_nas_ntk")
    torch.manual_seed(ctx.seed)
    net = NB201Network(arch, ctx.num_classes, channels=NTK_CHANNELS, cells_per_stage=NTK_CELLS)
    return net.to(device=ctx.device, dtype=ctx.dtype)


def _te_nas_ntk(ctx, full: bool = False, kaiming: bool = False) -> float:
    """TE-NAS NTK condition number (Chen et al. ICLR 2021): lambda_max / lambda_min of the per-sample gradient
    Gram matrix of the summed logits, one batch, train-mode BN; lower is better (the module docstring: setting)."""
    net = ctx.network(bn=True) if full else thin_ntk_network(ctx)
    if kaiming:
        _kaiming_(net, _generator(ctx), "fan_out")
    net.train()
    return ntk_condition(net, ctx.inputs)


_NTK = dict(higher_is_better=False, family="zero-cost", needs_data=True, needs_labels=False, paper=_TENAS,
            spaces=("nb201",),
            nan_policy="rank_last", cost="forward+backward", bn_mode="train (batch statistics)",
            inputs="the task's minibatch (64 in the suite; official: 72 training images), one batch")
_THIN = "the thin network NB201Network(channels=3, cells_per_stage=1) of the cell (NB201 only)"
_DEFAULT_INIT = "the space's seeded PyTorch default (what the official code runs: its Kaiming re-init is a no-op)"
_KAIMING_OUT = "kaiming_normal(fan_out, relu) on Conv2d/Linear, biases 0, BN weight 1 bias 0"
register_proxy("te_nas_ntk", **_NTK, init=_DEFAULT_INIT,
               cost_note="one forward of the minibatch and one backward per image (batched VJPs) through " + _THIN,
               description="TE-NAS NTK condition number (lower is better) on the official thin NB201 network "
                           "(C=3, N=1), train-mode BN, the task's minibatch")(_te_nas_ntk)
# te_nas_ntk's 64 per-image backward passes take ~3 s CPU per cell here; the _kaiming variants measure a cause (the
# paper's init against the code's) and stay out of the default study
register_proxy("te_nas_ntk_kaiming", **_NTK, init=_KAIMING_OUT, kaiming=True, default_study=False,
               cost_note="as te_nas_ntk, after a Kaiming re-draw of " + _THIN,
               description="TE-NAS NTK condition number on the thin NB201 network after a Kaiming-normal fan_out "
                           "re-draw (the paper's init, the code's intent)")(_te_nas_ntk)
# The full-size form (REFERENCES.md's NB201 form, the re-runs'): 64 backward passes of the 64-image batch through
# the C=16 N=5 network, 69 s CPU (204 s wall) on the median cell here. Not registered: every registered zero-cost proxy
# joins the default @training-free study and the 64-cell x 5-variant precision measurement. To register it:
# register_proxy("te_nas_ntk_full", **_NTK, init="the space's seeded init", full=True,
#                cost_note="one forward of the minibatch and one backward per image through the full network",
#                description="TE-NAS NTK condition number on the full-size network")(_te_nas_ntk)


# ------------------------------------------------------------------------------------------ linear regions

class ThinRegionNetwork(nn.Module):
    """The official linear-region network of an NB201 cell: TinyNetworkDarts(C=1, N=1, depth=1,
    use_stem=False) pruned to the cell: the cell at 1 channel on the 1-channel input, BN-ReLU, pool, linear."""

    def __init__(self, arch: str, num_classes: int):
        super().__init__()
        self.cell = Cell(parse_arch(arch), 1)
        self.lastact = nn.Sequential(nn.BatchNorm2d(1), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.lastact(self.cell(x))), 1))


def sign_patterns(net: nn.Module, x: torch.Tensor, four_d_only: bool = True) -> torch.Tensor:
    """The (N, neurons) boolean ReLU activation pattern of each sample: ``output > 0`` of every ``nn.ReLU``
    called in one forward (with ``four_d_only``, as the official hook, only those with a 4-D input), in call
    order. Zero columns when no ReLU is called."""
    seen: list[torch.Tensor] = []

    def hook(module, args, out):
        if not four_d_only or args[0].dim() == 4:
            seen.append((out > 0).reshape(out.shape[0], -1))

    hooked_forward(net, x, hook, [m for m in net.modules() if isinstance(m, nn.ReLU)])
    if not seen:
        return torch.zeros((x.shape[0], 0), dtype=torch.bool, device=x.device)
    return torch.cat(seen, dim=1)


def count_patterns(patterns: torch.Tensor) -> int:
    """The number of distinct rows of a boolean (samples, neurons) matrix: the linear regions hit."""
    if patterns.shape[0] == 0:
        return 0
    if patterns.shape[1] == 0:
        return 1
    return int(torch.unique(patterns.to(torch.uint8), dim=0).shape[0])


def count_linear_regions(net: nn.Module, batches, four_d_only: bool = True) -> int:
    """Distinct ReLU sign patterns over the samples of several batches, each forwarded on its own (in
    train mode each batch is normalised by its own BN statistics, as the official collector)."""
    return count_patterns(torch.cat([sign_patterns(net, b, four_d_only) for b in batches], dim=0))


def crops(images: torch.Tensor, g: torch.Generator, n: int, size: int = LR_CROP) -> torch.Tensor:
    """``n`` one-channel ``size`` x ``size`` crops of ``images`` (N, C, H, W): image, channel and position each
    drawn uniformly (with replacement) from ``g``; (n, 1, size, size)."""
    num, chans, h, w = images.shape
    idx = torch.randint(num, (n,), generator=g)
    ch = torch.randint(chans, (n,), generator=g)
    top = torch.randint(h - size + 1, (n,), generator=g)
    left = torch.randint(w - size + 1, (n,), generator=g)
    rows = (top[:, None] + torch.arange(size)).to(images.device)  # (n, size)
    cols = (left[:, None] + torch.arange(size)).to(images.device)
    sel = images[idx.to(images.device), ch.to(images.device)]  # (n, H, W)
    out = sel[torch.arange(n, device=images.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out[:, None]


def _te_nas_lr(ctx, kaiming: bool = False) -> float:
    """TE-NAS number of linear regions (Chen et al. ICLR 2021): distinct ReLU sign patterns of the cell's thin
    one-cell C=1 network over 3 x 1000 one-channel 3x3 crops of the task's images; higher is better."""
    arch = _nb201_arch(ctx, "te_nas_lr")
    torch.manual_seed(ctx.seed)
    net = ThinRegionNetwork(arch, ctx.num_classes).to(device=ctx.device, dtype=ctx.dtype)
    g = _generator(ctx)
    if kaiming:
        _kaiming_(net, g, "fan_in")
    net.train()
    images = ctx.inputs
    batches = [crops(images, g, LR_BATCH) for _ in range(LR_BATCHES)]
    return float(count_linear_regions(net, batches))


_LR = dict(higher_is_better=True, family="zero-cost", needs_data=True, needs_labels=False, paper=_TENAS,
           spaces=("nb201",),
           cost="forward", bn_mode="train (statistics of each batch of 1000 crops)",
           inputs="3 batches of 1000 one-channel 3x3 crops of the task's minibatch (official: of training images)",
           cost_note="3 forwards of 1000 3x3 crops through the one-cell C=1 network of the cell (NB201 only)")
register_proxy("te_nas_lr", **_LR, init=_DEFAULT_INIT,
               description="TE-NAS number of linear regions (distinct ReLU patterns) of the official one-cell C=1 "
                           "network over 3000 3x3 one-channel crops")(_te_nas_lr)
register_proxy("te_nas_lr_kaiming", **_LR, init="kaiming_normal(fan_in, relu) on Conv2d/Linear, biases 0, BN "
                                                 "weight 1 bias 0", kaiming=True, default_study=False,
               description="TE-NAS number of linear regions of the one-cell C=1 network after a Kaiming-normal "
                           "fan_in re-draw (the paper's init, the code's intent)")(_te_nas_lr)
