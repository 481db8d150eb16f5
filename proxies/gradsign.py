"""GradSign (Zhang & Jia, ICLR 2022): how consistently the per-sample gradients of the weights agree in sign.

Definition (paper, Eq. 6, and the official code, github.com/cmu-catalyst/GradSign at 26412be, the NB201 pipeline
``zero-cost-nas-code/nasbench2_pred.py`` -> measure ``grad_conflict`` in
``zero-cost-nas-code/foresight/pruners/measures/grad_conflict.py``): for every sample i of one minibatch, the
cross-entropy gradient g_i of every Conv2d/Linear *weight* (biases and BatchNorm parameters are not part of it),
computed with that sample ALONE through the network (``net(inputs[[i]])``), so every BatchNorm layer normalises
with the statistics of that one sample; then per weight element k the agreement |sum_i sign(g_ik)|, and

    gradsign      = sum over every weight element of |sum_i sign(g_ik)|        (the official code, default)
    gradsign_mean = the same divided by the number of weight elements         (a re-implementation's mean)

Settings fixed by the official code and followed here:

- init: the network's own (the official ``--init_w_type none``: PyTorch's default; here the space's seeded
  init);
- BN: train mode (``get_prunable_copy`` calls ``train()``), batch statistics of the one sample; the running
  statistics play no part in the value (they are updated by the official loop and never read);
- weights: ``layer.weight`` of every nn.Conv2d and nn.Linear in ``net.modules()`` order; a weight without a
  gradient contributes zeros;
- sign: ``np.sign``: sign(0) = 0 (a weight whose gradient is exactly 0, e.g. behind a 'none' edge, adds 0);
  ``np.nansum``: an element whose sum is NaN (a NaN gradient) is left out (here too, and ``gradsign_mean``
  divides by the number of elements left, as ``np.nanmean``);
- batch: the official default is ``--batch_size 128`` (one batch of the training loader, ``dataload random``);
  here the first 64 images of the task's minibatch (the suite's batch; all of it when it has fewer).

Sum or mean: the paper's Eq. 6 and the NB201 Spearman pipeline (``nasbench2_pred.py``, whose results
``gs.py`` reads from ``201_results_batch_128/sum/``) take the sum; ``zero-cost-nas-code/gradsign.py`` of the
same repository (a NASWOT-harness script) and the commented-out fast path of ``grad_conflict.py``
(``np.nanmean``), as well as re-implementations in other suites, take the mean, which divides by the network
size and so changes the ranking. The sum is the default name; the mean is ``gradsign_mean``.

Implementation: per-sample gradients vectorised with ``torch.func`` (``functional_call`` + ``vmap(grad)``
over the samples, each a batch of one, in chunks of at most 16 samples); ``replace_all_batch_norm_modules_``
removes the BN running statistics (BN then always uses batch statistics: the train-mode value, and no
in-place buffer update, which vmap cannot batch). Equal to a plain loop of per-sample backward passes up to
rounding (a float64 test checks it); in float32 a handful of gradients that are ~0 can change sign between
kernels, which moves the score by ~1e-5 relative on most cells and up to 6e-4 on cells with many near-zero
gradients. Against the official ``find_measures(..., ["grad_conflict"])`` on the official network holding the
same weights (``proxybench official gradsign``; reports/official/gradsign.md: 6 cells x cifar10 and
ImageNet16-120, seed 42): median 2.3e-5, largest 6.3e-4 relative (the all-1x1 cell, cifar10). In float64 the
two agree exactly (2 cells, a one-off check); against float64, the official float32 loop is ~9e-5 off on that
cell and the suite's vmapped float32 ~5.5e-4: the float32 rounding of near-zero per-sample gradients, larger
in the vmapped kernels than in the official plain loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap

from proxybench.proxies.registry import register_proxy

_LAYERS = (nn.Conv2d, nn.Linear)
_GRADSIGN = "Zhang & Jia, GradSign: Model Performance Inference with Theoretical Insights, ICLR 2022"
BATCH_SIZE = 64  # images of the task's minibatch (official default 128)
_CHUNK = 16  # samples per vmap call (memory: chunk x weights per-sample gradients)
_CHUNK_BYTES = 1 << 28  # ... and at most 256 MiB of per-sample gradients per call


def weight_names(net: nn.Module) -> list[str]:
    """The parameter names of every Conv2d/Linear weight, in ``net.modules()`` order (each tensor once)."""
    names, seen = [], set()
    for mod_name, m in net.named_modules():
        if isinstance(m, _LAYERS) and m.weight is not None and id(m.weight) not in seen:
            seen.add(id(m.weight))
            names.append(f"{mod_name}.weight" if mod_name else "weight")
    return names


def per_sample_weight_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str]):
    """Yield, chunk by chunk, {name: (chunk, *weight.shape)} cross-entropy gradients of each sample alone.

    ``net`` must be in train mode with its BN running statistics removed (``replace_all_batch_norm_modules_``):
    each sample is a batch of one, so BN normalises with that sample's statistics."""
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}
    weights = {k: params[k] for k in names}
    fixed = {k: v for k, v in params.items() if k not in weights}

    def loss(w, xi, yi):
        out = functional_call(net, ({**fixed, **w}, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    n_weights = sum(w.numel() for w in weights.values())
    chunk = max(1, min(_CHUNK, _CHUNK_BYTES // max(1, n_weights * x.element_size())))
    for lo in range(0, x.shape[0], chunk):
        yield per_sample(weights, x[lo:lo + chunk], y[lo:lo + chunk])


def sign_agreement(ctx, batch_size: int = BATCH_SIZE) -> tuple[float, int]:
    """(sum over weight elements of |sum_i sign(g_i)|, number of elements counted), memoised per cell."""
    key = ("_gradsign", batch_size)
    if key in ctx.memo:
        return ctx.memo[key]
    with ctx.shared_work("gradsign pass"):
        ctx.memo[key] = _sign_agreement(ctx, batch_size)
    return ctx.memo[key]


def _sign_agreement(ctx, batch_size: int) -> tuple[float, int]:
    net = ctx.network(bn=True)
    net.train()
    replace_all_batch_norm_modules_(net)
    x, y = ctx.inputs[:batch_size], ctx.targets[:batch_size]
    names = weight_names(net)
    acc = {k: None for k in names}
    for grads in per_sample_weight_grads(net, x, y, names):
        for k in names:
            s = grads[k].sign().sum(dim=0)  # small integers: exact in float32
            acc[k] = s if acc[k] is None else acc[k] + s
    total, count = 0.0, 0
    for k in names:
        a = acc[k].double().abs()
        finite = ~torch.isnan(a)
        total += float(a[finite].sum())
        count += int(finite.sum())
    return total, count


def _gradsign(ctx, mean: bool = False, batch_size: int = BATCH_SIZE) -> float:
    """GradSign (Zhang & Jia, ICLR 2022): sum over Conv/Linear weights of |sum_i sign(per-sample gradient)|.

    See the module docstring: per-sample cross-entropy gradients, each sample alone through the network (BN
    on its own statistics, train mode), the space's init, the first 64 images of the task's minibatch
    (official 128). ``mean=True``: divided by the number of weight elements (``gradsign_mean``)."""
    total, count = sign_agreement(ctx, batch_size)
    if mean:
        return total / count if count else float("nan")
    return float(total)


_COMMON = dict(higher_is_better=True, family="zero-cost", needs_data=True, needs_labels=True, paper=_GRADSIGN,
               cost="forward+backward", shares="gradsign pass",
               cost_note="64 per-sample forward+backward passes (each image alone), vectorised with torch.func.vmap; "
                         "shared by gradsign and gradsign_mean",
               inputs="the task's minibatch, first 64 images (official 128), each image alone (a batch of one)",
               bn_mode="train, statistics of each single image (no running statistics)")

# Both in the default study: gradsign (the official code's and the paper's sum) is the default; gradsign_mean is the
# re-implementations' mean, which divides by the network's size and so reorders the cells.
register_proxy("gradsign", **_COMMON,
               description="GradSign (Zhang & Jia ICLR 2022): sum over Conv/Linear weights of |sum_i sign(g_i)|, "
                           "per-sample gradients (official code and paper: the sum)")(_gradsign)
register_proxy("gradsign_mean", **_COMMON, mean=True,
               description="GradSign divided by the number of Conv/Linear weights (the mean some re-implementations "
                           "take: divides by network size)")(_gradsign)
