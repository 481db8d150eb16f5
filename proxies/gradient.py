"""Gradient- and activation-based zero-cost proxies of Abdelfattah et al. (ICLR 2021) and NAS-Bench-Suite-Zero,
computed from ONE shared pass per cell.

The reference code runs every proxy on its own copy of the network (about ten forward+backward passes
per cell). Here one forward pass of the minibatch feeds all of them:

- one backward of the cross-entropy loss gives the weight gradients (grad_norm, snip, plain) and the
  gradients at every Conv/Linear output (fisher); when grasp is requested, the forward and this backward
  also carry the derivative along the scaling of the weights, which gives grasp's ``w^T H g`` without a
  double backward (``proxies/hvp.py``);
- one input-only backward of the summed logits gives the per-image input Jacobians (jacob_cov, epe_nas);
- forward pre-hooks on the ReLUs accumulate the binary-code kernel (nwot) during the same forward.

Only what the cell's requested proxies need is computed (``ctx.requested``). Each value equals what the
separate reference computation gives (tests compare both on real cells). Network in train mode (BN on
batch statistics), PyTorch default init seeded per cell, mean cross-entropy, sums over Conv2d/Linear.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from proxybench.proxies import hvp
from proxybench.proxies.registry import register_proxy

_LAYERS = (nn.Conv2d, nn.Linear)
# the registry's share group of the proxies of this module (``shares=`` in each record below)
PASS = "gradient pass"
# what each proxy of the pass needs from it (internal to this module: the parts of the pass to compute); the
# registry records who shares the pass (proxies.registry.share_group), tests check both agree
NEEDS = {
    "grad_norm": {"wgrad"}, "snip": {"wgrad"}, "plain": {"wgrad"}, "grasp": {"wgrad", "hvp"},
    "fisher": {"actgrad"}, "jacob_cov": {"jacobian"}, "epe_nas": {"jacobian"}, "nwot": {"codes"},
}
_ABDELFATTAH = "Abdelfattah et al., Zero-Cost Proxies for Lightweight NAS, ICLR 2021"
# The memory layout of the pass (registry.LAYOUTS), one for the whole share group, as the pass is computed once for
# all of them (tests: test_registry). PyTorch's CPU BatchNorm in train mode computes its channels_last batch
# statistics 30-100x less accurately than in NCHW (1e-5 vs 1e-7 relative on a 64x16x32x32 batch with AVX-512
# kernels, 3.7e-6 with AVX2; tests: test_gradient): on the 64 golden cells the float32 scores of the pass moved
# 10-30x farther from their float64 values (snip median 7.8e-6 -> 2.1e-4 relative). The "channels_last" layout now
# runs datasets/accurate_bn.py's BatchNorm (statistics as accurate as NCHW's; proxies/hvp.py's tangents too).
# Measured with it on the 64 golden cells (cifar10, the golden study's augmented batch; AMD EPYC AVX-512,
# 2026-12-03; `proxybench precision --layout channels_last --proxies grad_norm,snip,plain,grasp,fisher,jacob_cov,
# epe_nas,nwot` prints the table): the change against the NCHW scores is below the median dispatch spread for every
# proxy (snip 2.1e-5 vs 2.8e-5, grasp 2.9e-4 vs 8.6e-4), the distance to float64 0.5-2x NCHW's (snip 1.5e-5 vs
# 7.8e-6, jacob_cov 9e-7 vs 2.5e-6), but outside the per-cell measured precision (precision.within) on 0-6 of the
# 62-64 finite cells per proxy (snip 6, grad_norm and plain 5, grasp and fisher 4, epe_nas 2). The whole pass of
# the eight was 1.13x faster (1.26 vs 1.43 s per cell over those cells, one run each, the other core busy). A switch
# is a version bump of the eight and a rescoring, for 1.13x: not taken.
LAYOUT = "nchw"
_VERSION = 1


_LABEL_NEEDS = {"wgrad", "actgrad", "hvp"}


def _requested_needs(ctx, name: str) -> set[str]:
    need = set(NEEDS[name])
    for other in ctx.requested:
        need |= NEEDS.get(other, set())
    return need


def _pass_targets(ctx, need: set[str]) -> torch.Tensor:
    """Labels for the pass. The pass may run on behalf of another requested proxy that declared it needs
    labels (e.g. jacob_cov first, snip later in the same cell); the calling proxy's value never uses them."""
    label_users = [n for n in ctx.requested if NEEDS.get(n, set()) & _LABEL_NEEDS]
    if ctx.allow_labels or not label_users:
        return ctx.targets  # guarded: raises for an undeclared read
    from proxybench.proxies.registry import get_proxy

    if all(get_proxy(n).needs_labels for n in label_users):
        return ctx.batch[1].to(ctx.device)
    return ctx.targets


def shared_pass(ctx, name: str) -> dict:
    """The per-cell pass results (memoised in ``ctx.memo``), computed once for every requested proxy."""
    memo = ctx.memo.get("_shared_pass")
    if memo is not None and NEEDS[name] <= memo["have"]:
        return memo
    need = _requested_needs(ctx, name)
    with ctx.shared_work(PASS):
        memo = _run_pass(ctx, need)
    ctx.memo["_shared_pass"] = memo
    return memo


def _run_pass(ctx, need: set[str]) -> dict:
    net = ctx.network()
    net.train()
    layers = [m for m in net.modules() if isinstance(m, _LAYERS)]
    weights = [m.weight for m in layers]
    out: dict = {"have": set(need)}
    acts: list[torch.Tensor] = []
    hooks = []
    if "actgrad" in need:
        hooks += [m.register_forward_hook(lambda _m, _i, o: acts.append(o)) for m in layers]
    if "codes" in need:
        b = ctx.inputs.shape[0]
        kernel = torch.zeros(b, b, dtype=torch.float64, device=ctx.device)

        def codes_hook(_m, inp):
            with torch.no_grad():
                s = (inp[0].reshape(b, -1) > 0).to(torch.float32) * 2 - 1  # codes as +-1
                # x x^T + (1-x)(1-x)^T == (d + s s^T) / 2 for binary x and s = 2x - 1: one matmul, exact
                kernel.add_(((s @ s.T + s.shape[1]) / 2).to(torch.float64))

        hooks += [m.register_forward_pre_hook(codes_hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    x = ctx.inputs.detach().clone()
    if "jacobian" in need:
        x.requires_grad_(True)
    grad_needed = bool(need & {"wgrad", "actgrad", "hvp"})
    hw = None
    try:
        if "hvp" in need:
            # grasp: the forward and the loss backward carry the derivative along the weights' scaling, which
            # gives H w (proxies/hvp.py); the primal values are those of the plain pass
            with hvp.weight_direction(net) as direction:
                logits = net(x)
                for h in hooks:
                    h.remove()
                wanted = weights + (acts if "actgrad" in need else [])
                seed = hvp.seeded(logits, hvp.cross_entropy_grad(logits, _pass_targets(ctx, need)))
                grads = torch.autograd.grad(seed, wanted, retain_graph="jacobian" in need, allow_unused=True)
                hw = direction.hw(grads[:len(weights)], layers)
                grads = [None if g is None else fwAD.unpack_dual(g).primal for g in grads]
                acts = [fwAD.unpack_dual(a).primal for a in acts]
                logits = fwAD.unpack_dual(logits).primal
        else:
            logits = net(x)
    finally:
        for h in hooks:
            h.remove()
    if "jacobian" in need:
        # after the loss backward when grasp is requested: outside the forward-mode level, no tangents
        with hvp.input_grads_only():
            (jac,) = torch.autograd.grad(logits.sum(), x, retain_graph=grad_needed and hw is None)
        out["jacobian"] = jac.reshape(jac.shape[0], -1).detach()
    if grad_needed:
        if hw is None:
            loss = F.cross_entropy(logits, _pass_targets(ctx, need))
            wanted = weights + (acts if "actgrad" in need else [])
            grads = torch.autograd.grad(loss, wanted, allow_unused=True)
        gw = [g if g is not None else torch.zeros_like(w) for g, w in zip(grads[:len(weights)], weights, strict=True)]
        with torch.no_grad():
            if "wgrad" in need:
                out["grad_norm"] = [float(g.norm()) for g in gw]
                out["snip"] = [float((g * w).abs().sum()) for g, w in zip(gw, weights, strict=True)]
                out["plain"] = [float((g * w).sum()) for g, w in zip(gw, weights, strict=True)]
            if "actgrad" in need:
                fisher = []
                for a, g in zip(acts, grads[len(weights):], strict=True):
                    if g is None:
                        fisher.append(0.0)
                        continue
                    prod = a * g
                    per_channel = prod.sum(dim=tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
                    fisher.append(float(0.5 * per_channel.pow(2).mean(0).sum()))
                out["fisher"] = fisher
            if hw is not None:
                # -sum_l w_l . (H g)_l = -sum_l g_l . (H w)_l (H symmetric); per layer the second form's terms
                out["grasp"] = [0.0 if h is None else float((-g * h).sum()) for g, h in zip(gw, hw, strict=True)]
    if "codes" in need:
        out["kernel"] = kernel
    return out


def _layer_sum(name: str):
    def fn(ctx) -> float:
        return float(sum(shared_pass(ctx, name)[name]))

    return fn


_WEIGHT_GRAD_COST = dict(cost="forward+backward", cost_note="the shared pass: one loss backward")
for _name, _doc, _cost, _version in [
    ("grad_norm", "Sum over Conv/Linear layers of the L2 norm of the layer's loss gradient.", _WEIGHT_GRAD_COST,
     _VERSION),
    ("snip", "SNIP (Lee et al. 2019): sum of |dL/dw * w| over Conv/Linear weights.", _WEIGHT_GRAD_COST, _VERSION),
    ("plain", "Plain (Mozer & Smolensky 1989, as in NAS-Bench-Suite-Zero): sum of dL/dw * w.", _WEIGHT_GRAD_COST,
     _VERSION),
    # grasp v3: -g . (H w) by forward-over-reverse (proxies/hvp.py) instead of -w . (H g) by a double backward
    # (v2) -- the same number in exact arithmetic (tests: float64), float32 rounding differs where terms cancel
    ("grasp", "GraSP (Wang et al. 2020): sum of -w * (H g) over Conv/Linear weights, H the loss Hessian.",
     dict(cost="second-order", cost_note="the shared pass, its forward and loss backward carrying a "
                                         "forward-mode tangent (H w, proxies/hvp.py)"), 3),
    ("fisher", "Fisher (Theis et al. 2018; Turner et al. 2020): per output channel 0.5 * mean over the batch "
               "of (sum over positions of activation * its gradient)^2, summed.", _WEIGHT_GRAD_COST, _VERSION),
]:
    register_proxy(_name, higher_is_better=True, family="zero-cost", needs_data=True, needs_labels=True,
                   paper=_ABDELFATTAH, description=_doc, shares=PASS, version=_version, layout=LAYOUT,
                   **_cost)(_layer_sum(_name))


def _jacob_cov_from(jac: torch.Tensor) -> float:
    j = jac.to(torch.float64)
    corr = torch.corrcoef(j)
    if not torch.isfinite(corr).all():
        return float("nan")  # a Jacobian row of zeros: the output ignores the input
    v = torch.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-(torch.log(v + k) + 1.0 / (v + k)).sum())


@register_proxy("jacob_cov", higher_is_better=True, family="zero-cost", needs_data=True, needs_labels=False,
                paper="Mellor et al. 2021 (NASWOT v1); " + _ABDELFATTAH, nan_policy="rank_last",
                cost="forward+backward", shares=PASS, cost_note="the shared pass: one input-only backward",
                version=_VERSION, layout=LAYOUT)
def jacob_cov(ctx) -> float:
    """NASWOT v1: -sum over eigenvalues v of the per-image input-Jacobian correlation matrix of log(v+k)+1/(v+k)."""
    return _jacob_cov_from(shared_pass(ctx, "jacob_cov")["jacobian"])


def _epe_from(jac: torch.Tensor, labels: np.ndarray, n_outputs: int) -> float:
    k = 1e-5
    per_class = []
    j = jac.detach().to("cpu", torch.float64).numpy()
    for c in np.unique(labels):
        rows = j[labels == c]
        if len(rows) == 1 and n_outputs > 100:
            continue  # the reference's per-size normalisation fails on a one-image class and skips it
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(rows) if len(rows) > 1 else np.ones((1, 1))
            s = float(np.sum(np.log(np.abs(corr) + k)))
        if n_outputs > 100:
            s /= len(corr)
        per_class.append(s)
    if not per_class:
        return float("nan")
    s = np.asarray(per_class)
    if n_outputs <= 100:
        return float(np.abs(s).sum())
    return float(np.abs(s[:, None] - s[None, :]).sum() / len(s))


@register_proxy("epe_nas", higher_is_better=True, family="zero-cost", needs_data=True, needs_labels=True,
                paper="Lopes et al., EPE-NAS, ICANN 2021", nan_policy="rank_last", cost="forward+backward",
                shares=PASS, cost_note="the shared pass: one input-only backward", version=_VERSION, layout=LAYOUT)
def epe_nas(ctx) -> float:
    """EPE-NAS: per class, sum of log(|corr|+k) of the input-Jacobian correlations; combined over classes as
    the reference (sum of |s_c| for <=100 outputs, mean pairwise |s_c - s_c'| otherwise)."""
    jac = shared_pass(ctx, "epe_nas")["jacobian"]
    return _epe_from(jac, ctx.targets.cpu().numpy(), ctx.num_classes)


@register_proxy("nwot", higher_is_better=True, family="zero-cost", needs_data=True, needs_labels=False,
                paper="Mellor et al., Neural Architecture Search without Training, ICML 2021 (v2)",
                nan_policy="rank_last", cost="forward", shares=PASS,
                cost_note="the shared pass: hooks on its forward", version=_VERSION, layout=LAYOUT)
def nwot(ctx) -> float:
    """NASWOT v2: log|det K|, K the Hamming-similarity kernel of the binary ReLU input codes of the batch."""
    sign, logdet = torch.linalg.slogdet(shared_pass(ctx, "nwot")["kernel"])
    return float(logdet) if sign > 0 else float("-inf")
