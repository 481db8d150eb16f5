"""More training-free proxies: Zen-score, ZiCo, MeCo (and MeCo_opt) and the L2 norm of the initial weights.

Each follows its paper; where the authors' code differs from the paper, the docstring says which one is
followed and what the other does. Random draws (Gaussian weights, inputs, channel samples) come from a local
``torch.Generator`` seeded with ``ctx.seed`` and are drawn on the CPU, so a cell scores the same whatever ran
before it and on whatever device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from proxybench.datasets.nb201 import NB201Network
from proxybench.proxies.context import hooked_forward
from proxybench.proxies.registry import register_proxy

_LAYERS = (nn.Conv2d, nn.Linear)
_ZEN = "Lin et al., Zen-NAS: A Zero-Shot NAS for High-Performance Image Recognition, ICCV 2021"
_ZICO = "Li et al., ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients, ICLR 2023"
_MECO = "Jiang et al., MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum Eigenvalue " \
        "of Correlation, NeurIPS 2023"
_SUITE_ZERO = "Krishnakumar et al., NAS-Bench-Suite-Zero, NeurIPS 2022 Datasets and Benchmarks (NASLib)"


def _generator(ctx) -> torch.Generator:
    return torch.Generator().manual_seed(int(ctx.seed))


def _randn(shape, g: torch.Generator, like: torch.Tensor | None = None, device=None,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, 1) drawn in float32 on the CPU from ``g`` (the same numbers on every device and in a float64
    measurement), then moved and cast."""
    t = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    if like is not None:
        return t.to(device=like.device, dtype=like.dtype)
    return t.to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------- Zen

class _Stop(Exception):
    """Raised by a hook to end a forward pass once the pre-pooling features are known."""


def pre_gap_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The feature map just before global average pooling (what Zen-NAS calls ``forward_pre_GAP``).

    NB201Network: stem -> cells -> lastact (the BN-ReLU before ``.pool``). A network with its own
    ``forward_pre_GAP`` (the Zen-NAS API): that. Otherwise the input of the first adaptive pooling module,
    caught by a forward pre-hook that stops the pass there.
    """
    if isinstance(net, NB201Network):
        return net.lastact(net.cells(net.stem(x)))
    if callable(getattr(net, "forward_pre_GAP", None)):
        return net.forward_pre_GAP(x)
    pool = next((m for m in net.modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))), None)
    if pool is None:
        raise ValueError(f"zen: cannot find the global pooling of {type(net).__name__}: give it a "
                         "forward_pre_GAP(x) method or an nn.AdaptiveAvgPool2d module")
    seen = []

    def catch(module, args):
        seen.append(args[0])
        raise _Stop

    handle = pool.register_forward_pre_hook(catch)
    try:
        net(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"zen: the pooling module of {type(net).__name__} was not called in forward")
    return seen[0]


def _zen(ctx, batch_size: int = 64, mixup_gamma: float = 1e-2, official: bool = False) -> float:
    """Zen-score (Lin et al., ICCV 2021): log E||f(x) - f(x + 0.01 eps)||_F + sum over BN layers of log sigma_i.

    As in the paper (Algorithm 1) and the official ``compute_zen_score.py``: every Conv2d/Linear weight
    drawn from N(0, 1) (biases 0), BatchNorm weight 1 / bias 0, network in train mode, x and eps drawn from
    N(0, 1), f = the feature map before global pooling (after NB201's final BN-ReLU), one repeat (as
    ``evolution_search.py`` calls it), batch 64 (the ``--batch_size`` of the official search scripts; the
    standalone script's default is 16 with 32 repeats).

    Where the official code differs from the paper, the paper is followed (``official=True`` gives the
    code's numbers):

    - Delta: the paper's per-image Frobenius norm of f(x) - f(x'), averaged over the batch (the code sums
      absolute values, an L1 norm);
    - sigma_i: the paper's mini-batch statistic, sqrt of the mean over channels of the variance that
      BatchNorm2d layer i normalised f(x)'s batch with (the code reads ``running_var`` after the two
      forward passes at the default momentum 0.1 from its initial 1: 0.81 + 0.09 var(x) + 0.1 var(x')).
      A BN layer whose input is identically zero (fed only by 'none' edges) carries no signal and is left
      out: its log sigma would be -inf (the code's running_var gives it log sqrt(0.81));
    - residual links are kept: the paper removes them, which has no meaning for NB201's cell DAG (and
      the NB201 ports of Zen in NASLib and the MeCo repository keep them too).

    A network whose output ignores its input (e.g. the all-'none' cell) has Delta = 0 and scores -inf.
    """
    net = ctx.network(bn=True)
    g = _generator(ctx)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _LAYERS):
                m.weight.copy_(_randn(m.weight.shape, g, like=m.weight))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
    net.train()
    shape = (batch_size, *ctx.input_shape)
    x = ctx.to_layout(_randn(shape, g, device=ctx.device, dtype=ctx.dtype))
    eps = ctx.to_layout(_randn(shape, g, device=ctx.device, dtype=ctx.dtype))
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d) and m.running_var is not None]
    per_channel: dict[nn.Module, int] = {}  # BN layer -> values per channel in its batch (N*H*W)

    def count(module, args):
        per_channel[module] = args[0].numel() // args[0].shape[1]

    handles = []
    if not official:  # running_var := the unbiased variance of the last batch (free: BN computes it anyway)
        for m in bns:
            m.momentum = 1.0
            handles.append(m.register_forward_pre_hook(count))
    try:
        with torch.no_grad():
            f1 = pre_gap_features(net, x)
            batch_var = [(m.running_var.double().mean(), per_channel.get(m, 0)) for m in bns]
            for h in handles:
                h.remove()
            f2 = pre_gap_features(net, x + mixup_gamma * eps)
    finally:
        for h in handles:
            h.remove()
    diff = (f1.double() - f2.double()).flatten(1)
    if official:
        delta = float(diff.abs().sum(dim=1).mean())
        log_sigma = [0.5 * math.log(float(m.running_var.double().mean())) for m in bns]
    else:
        delta = float(diff.norm(dim=1).mean())
        # the biased variance BN normalised with; layers not called, or fed only zeros, are left out
        log_sigma = [0.5 * math.log(float(v) * (n - 1) / n) for v, n in batch_var if n > 1 and v > 0]
    if not delta > 0:
        return -math.inf
    return math.log(delta) + math.fsum(log_sigma)


register_proxy("zen", higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False,
               paper=_ZEN, nan_policy="rank_last", cost="forward", cost_note="two forward passes (batch 64)",
               description="Zen-score (Lin et al. ICCV 2021): log E||f(x)-f(x+0.01e)||_F + sum log BN sigma, "
                           "N(0,1) weights and inputs (paper's definition)")(_zen)


# --------------------------------------------------------------------------------------------------- ZiCo

def _zico_from_grads(per_layer: list[torch.Tensor]) -> float:
    """ZiCo of gradients stacked per layer as (splits, n_weights) tensors."""
    total = 0.0
    for grads in per_layer:
        grads = grads.double()
        std = grads.std(dim=0, correction=0)  # numpy's default ddof=0, as the official np.std
        keep = std != 0
        ratio_sum = float((grads.abs().mean(dim=0)[keep] / std[keep]).sum())
        if ratio_sum > 0:  # official: a layer whose sum is 0 (no weight with varying gradient) is skipped
            total += math.log(ratio_sum)
    return total


@register_proxy("zico", higher_is_better=True, family="zero-cost", needs_data=True, needs_labels=True,
                paper=_ZICO, cost="forward+backward", cost_note="two forward+backward passes (half batch each)")
def zico(ctx, splits: int = 2, float64: bool = False) -> float:
    """ZiCo (Li et al., ICLR 2023): sum over Conv2d/Linear layers of log sum_w mean|g_w| / std(g_w) across batches.

    As the official ``compute_zico.py`` (ZiCo and MeCo repositories): PyTorch default init, train mode,
    mean cross-entropy, the minibatch split into ``split_data=2`` consecutive halves, one gradient per half;
    per weight element the mean over halves of |g| divided by the (ddof=0) std over halves of g (the signed
    gradient), summed over the elements whose std is nonzero; the layer's term is the log of that sum,
    skipped when the sum is 0. Layers without a gradient are skipped (as the MeCo repository's copy).

    Follows the paper where the code differs: the code never zeroes the gradients between the halves, so
    its second "sample" is the accumulated g1 + g2; here each half's own gradient is used, as the paper's
    statistics over per-batch gradients define it.

    Precision (``make precision``, reports/precision.json): with two halves std(g) = |g1 - g2| / 2, and some
    weights' per-half gradients agree to ~1e-5, so float32 gradients leave those terms, the largest of their
    layer's sum, mostly rounding: the score moves by up to a few percent between CPU kernels. ``float64=True``
    casts the network (built in float32, so the same initial weights) and the images to float64: measured on
    the 64 golden cells, native, 2-thread and AVX2 kernels then agree to the last bit, at about 2.5x the cost
    on a CPU. It is not the registered default yet: switching means a version bump and rescoring every
    committed zico score (about 2 core-hours here, NB101 most of it), left to the speed issue / a GPU session.
    """
    dtype = torch.float64 if float64 else ctx.dtype
    net = ctx.network(bn=True).to(dtype)
    net.train()
    x, y = ctx.inputs.to(dtype), ctx.targets
    layers = [m for m in net.modules() if isinstance(m, _LAYERS)]
    weights = [m.weight for m in layers]
    grads: list[list[torch.Tensor | None]] = [[] for _ in weights]
    n = x.shape[0]
    for sp in range(splits):
        lo, hi = sp * n // splits, (sp + 1) * n // splits
        loss = F.cross_entropy(net(x[lo:hi]), y[lo:hi])
        for acc, gr in zip(grads, torch.autograd.grad(loss, weights, allow_unused=True), strict=True):
            acc.append(None if gr is None else gr.detach().reshape(-1))
    return _zico_from_grads([torch.stack(gs) for gs in grads if all(gr is not None for gr in gs)])


# --------------------------------------------------------------------------------------------------- MeCo

def _min_eig_of_corr(feas: list[torch.Tensor]) -> list[float]:
    """Smallest eigenvalue of the Pearson correlation between the rows of each (variables, observations)
    float64 matrix, NaN/inf entries (constant rows) set to 0 as MeCo does; batched per shape: a few large
    ops rather than hundreds of small ones. Same arithmetic as ``torch.corrcoef``, clipped to [-1, 1]."""
    out = [math.nan] * len(feas)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(feas):
        by_shape.setdefault(tuple(f.shape), []).append(i)
    for (rows, cols), idx in by_shape.items():
        x = torch.stack([feas[i] for i in idx])
        x = x - x.mean(dim=2, keepdim=True)
        cov = x @ x.transpose(1, 2) / (cols - 1)
        std = cov.diagonal(dim1=1, dim2=2).sqrt()
        corr = (cov / std[:, :, None] / std[:, None, :]).clamp(-1.0, 1.0)
        corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)
        if rows == 1:  # one variable: its correlation with itself, 1 (0 when constant)
            corr = (std[:, :, None] > 0).double()
        lowest = torch.linalg.eigvalsh(corr)[:, 0]
        for i, v in zip(idx, lowest.tolist(), strict=True):
            out[i] = v
    return out


def _meco(ctx, opt: bool = False, sample_channels: int = 8) -> float:
    """MeCo (Jiang et al., NeurIPS 2023): sum over modules of the smallest eigenvalue of the channel correlation.

    As the official code (HamsterMimi/MeCo, ``correlation/NAS_Bench_201.py`` and
    ``foresight/pruners/measures/meco.py``): PyTorch default init, train mode, ONE input sample, a forward
    hook on every module (``named_modules()``: the network itself, containers and leaves, so a tensor
    returned by several nested modules counts once per module); from each output the first sample
    (``out[0]``) reshaped to (channels, positions); the Pearson correlation matrix between channels, NaN/inf
    entries set to 0; its smallest eigenvalue; the sum over modules of the finite ones. Outputs with fewer
    than 2 positions (pooled features, logits) give an all-NaN, hence zero, matrix: they add 0.

    The input is one N(0, 1) sample of the task's shape: the paper calls MeCo data-independent ("one random
    data"), as ``measures/meco.py`` does (it draws ``torch.randn(1, 3, 64, 64)``; the NB201 script feeds
    one training image instead). Eigenvalues by ``eigvalsh`` in float64 (the code: ``eig`` in float32).

    ``opt``: MeCo_opt, as ``NAS_Bench_201.py``'s ``meco_opt``: per module, 8 channels drawn at random
    without replacement (here from the seeded generator), the smallest eigenvalue of their correlation
    times channels / 8. With fewer than 8 channels (not in NB201) all of them are used (factor 1).
    """
    net = ctx.network(bn=True)
    net.train()
    g = _generator(ctx)
    x = _randn((1, *ctx.input_shape), g, device=ctx.device, dtype=ctx.dtype)
    feas: list[torch.Tensor] = []  # (channels, positions) float64 copies, one per distinct output
    terms: list[tuple[int, float]] = []  # (index into feas, factor), one per hooked call
    cache: dict[tuple[int, int], tuple[torch.Tensor, int]] = {}  # -> (tensor kept alive, index into feas)

    def hook(module, args, out):
        src = out[0] if isinstance(out, (tuple, list)) and out else out  # a tuple: its first tensor
        if not isinstance(src, torch.Tensor) or src.dim() == 0:
            return
        first = out[0]  # official: data_output[0], i.e. the first sample (or a tuple's first element)
        if first.dim() == 0:
            return
        fea = first.detach().reshape(first.shape[0], -1)
        if fea.shape[1] < 2:  # one observation per channel: NaN correlations, set to 0: eigenvalue 0
            return
        if opt:
            c = fea.shape[0]
            k = min(sample_channels, c)
            rows = torch.randperm(c, generator=g)[:k].to(fea.device)
            feas.append(fea[rows].to(torch.float64, copy=True))
            terms.append((len(feas) - 1, c / k))
            return
        key = (id(src), src._version)  # the same tensor returned again (containers, Identity), unmodified
        if key not in cache:
            feas.append(fea.to(torch.float64, copy=True))  # a copy: later in-place ops must not change it
            cache[key] = (src, len(feas) - 1)
        terms.append((cache[key][1], 1.0))

    hooked_forward(net, x, hook, net.modules())
    lowest = _min_eig_of_corr(feas)
    return math.fsum(f * lowest[i] for i, f in terms if math.isfinite(f * lowest[i]))


# tiers by the cost measured per NB101 cell (reports/nb101.md, s/cell): MeCo's eigendecompositions of every
# module's full channel correlation cost several times MeCo_opt's of 8 channels (about 0.9 s vs 0.2 s on the
# 2-core CPU), so MeCo is sized with the one-pass proxies and MeCo_opt with the cheap ones
register_proxy("meco", higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False,
               paper=_MECO, cost="forward", tier="one-pass",
               cost_note="one forward pass of one image; an eigendecomposition per module and its channels",
               description="MeCo (Jiang et al. NeurIPS 2023): sum over modules of the min eigenvalue of the "
                           "channel correlation of one random input's features")(_meco)
register_proxy("meco_opt", higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False,
               paper=_MECO, cost="forward", tier="cheap", opt=True,
               cost_note="one forward pass of one image; an 8x8 eigendecomposition per module",
               description="MeCo_opt (Jiang et al. NeurIPS 2023): MeCo on 8 random channels per module, "
                           "weighted by channels/8")(_meco)


# ------------------------------------------------------------------------------------------------ l2_norm

@register_proxy("l2_norm", higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False,
                paper=_SUITE_ZERO, cost="free", shares="network", cost_note="reads the weights")
def l2_norm(ctx) -> float:
    """L2 norm (NAS-Bench-Suite-Zero / NASLib): sum over Conv2d/Linear layers of ||W||_2 at initialisation.

    As NASLib's ``measures/l2_norm.py``: each layer's weight (not its bias) as one vector, its Euclidean
    norm (not squared), summed; PyTorch default init. NASLib ranks it as is (higher is better). Float64.
    """
    return math.fsum(float(torch.linalg.vector_norm(m.weight.detach(), dtype=torch.float64))
                     for m in ctx.shared_network().modules() if isinstance(m, _LAYERS))
