"""Train-mode BatchNorm for the channels_last layout with batch statistics as accurate as PyTorch's NCHW kernel's.

Why: a whole NB201 forward+backward runs ~1.35x faster in channels_last on a CPU (``make perf``), but PyTorch's
CPU BatchNorm in train mode sums its channels_last batch statistics less accurately than its NCHW kernel: the
largest relative error of the forward against float64 on a 64x16x32x32 batch with mean 5 is ~1e-5 against ~1e-7
(``proxybench.tools.perf.batchnorm_accuracy``), and the gradient proxies' float32 scores moved 10-30x farther
from their float64 values (``proxies/gradient.py``'s note on ``LAYOUT``). Here the (N, C, H, W) channels_last
tensor is the free (N*H*W, C) view of its memory, and every per-channel statistic is a ``sum`` over that view's
first dimension (PyTorch's vectorised cascade sum: error growing with log of the count, not with the count):

- forward: mean = sum(x) / m; centred xc = x - mean; biased variance = sum(xc * xc) / m (two passes, no
  cancellation); y = xc * (invstd * weight) + bias, invstd = 1 / sqrt(var + eps); running statistics as
  ``nn.BatchNorm2d`` updates them (momentum, the unbiased variance m / (m - 1) * var);
- backward (the same closed form as PyTorch's): with xh = xc * invstd, g_bias = sum(gy), g_weight = sum(gy * xh),
  gx = (gy - g_bias / m - xh * g_weight / m) * invstd * weight.

``batch_norm`` and ``batch_norm_backward`` mirror PyTorch's ``native_batch_norm`` and
``native_batch_norm_backward`` (train mode) for code that calls those (``proxies/hvp.py``'s closed-form tangents):
PyTorch's own call for any input but a channels_last one. In channels_last the values are not PyTorch's bits (other
summation orders): a proxy that switches its layout changes its version or shows that its scores stay within their
measured precision. Tested (``tests/datasets/test_accurate_bn.py``): float64 values
and gradients equal ``F.batch_norm``'s to rounding, gradcheck, and float32 accuracy against float64 no worse
than PyTorch's NCHW kernel's on NB201's shapes. Anything else (NCHW, eval mode, no batch statistics, other
ranks) is ``nn.BatchNorm2d``'s own forward, bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn

_NBB = torch.ops.aten.native_batch_norm_backward


def _is_cl(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """The (N*H*W, C) view of a channels_last 4-D tensor's memory (no copy; a copy first for another layout)."""
    return x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _unrows(r: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    n, c, h, w = like.shape
    return r.view(n, h, w, c).permute(0, 3, 1, 2)


def batch_norm(x, weight, bias, running_mean, running_var, momentum: float, eps: float):
    """``torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)``: (y, batch
    mean, invstd), the running statistics updated in place. A channels_last ``x`` gets the accurate statistics
    (y channels_last); any other is PyTorch's own call, bit for bit."""
    if not _is_cl(x):
        return torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
    r = _rows(x)
    m = r.shape[0]
    mean = r.sum(0) / m
    xc = r - mean
    var = (xc * xc).sum(0) / m
    invstd = (var + eps).rsqrt()
    scale = invstd if weight is None else invstd * weight
    y = xc * scale if bias is None else torch.addcmul(bias, xc, scale)
    with torch.no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        if running_var is not None:
            running_var.mul_(1 - momentum).add_(var * (m / max(m - 1, 1)), alpha=momentum)
    return _unrows(y, x), mean, invstd


def batch_norm_backward(gy, x, weight, mean, invstd, eps: float, mask):
    """``native_batch_norm_backward(gy, x, weight, None, None, mean, invstd, True, eps, mask)``: (input gradient,
    sum(gy * xh), sum(gy)) per ``mask``, None where not asked (xh = (x - mean) * invstd). A channels_last ``x``
    gets the accurate per-channel sums (the input gradient channels_last); any other is PyTorch's own call."""
    if not _is_cl(x):
        return _NBB(gy, x, weight, None, None, mean, invstd, True, eps, list(mask))
    g = _rows(gy)
    m = g.shape[0]
    xh = (_rows(x) - mean) * invstd
    g_bias = g.sum(0)
    g_weight = (g * xh).sum(0)
    gx = None
    if mask[0]:
        scale = invstd if weight is None else invstd * weight
        gx = _unrows((g - g_bias / m - xh * (g_weight / m)) * scale, x)
    return gx, g_weight if mask[1] else None, g_bias if mask[2] else None


class _BatchNormCL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        y, mean, invstd = batch_norm(x, weight, bias, running_mean, running_var, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, gy):
        x, weight, mean, invstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        gx, gw, gb = batch_norm_backward(gy, x, weight, mean, invstd, ctx.eps,
                                         (need[0], need[1] and weight is not None, need[2]))
        return gx, gw, gb, None, None, None, None


def batch_norm_channels_last(x, weight, bias, running_mean=None, running_var=None, momentum: float = 0.1,
                             eps: float = 1e-5):
    """Train-mode batch norm of a channels_last 4-D ``x`` (differentiable in x, weight, bias); y is channels_last."""
    if not _is_cl(x):
        raise ValueError("batch_norm_channels_last: a 4-D channels_last tensor is required, got shape "
                         f"{tuple(x.shape)} with strides {x.stride()}")
    return _BatchNormCL.apply(x, weight, bias, running_mean, running_var, momentum, eps)


def _takes_this_path(m: nn.BatchNorm2d, x: torch.Tensor) -> bool:
    batch_stats = m.training or m.running_mean is None
    return (batch_stats and _is_cl(x) and x.shape[1] > 0 and x.numel() > x.shape[1]
            and x.dtype in (torch.float32, torch.float64) and not torch._C._are_functorch_transforms_active())


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same name, arguments, state and repr) whose batch-statistics forward on a channels_last
    input runs ``batch_norm_channels_last``; every other case is nn.BatchNorm2d's own."""

    def forward(self, x):
        if not _takes_this_path(self, x):
            return super().forward(x)
        self._check_input_dim(x)
        rm, rv, momentum = batch_stats_bookkeeping(self)
        return batch_norm_channels_last(x, self.weight, self.bias, rm, rv, momentum, self.eps)


def batch_stats_bookkeeping(m: nn.modules.batchnorm._BatchNorm):
    """What ``nn.BatchNorm``'s forward does before a batch-statistics kernel call: count the batch in
    ``num_batches_tracked`` (training with running statistics) and pick the momentum (``None``: the cumulative
    average 1/batches) and the running statistics to update (none when the module does not track them).
    Returns ``(running_mean, running_var, momentum)``; shared by this module's BatchNorm2d and proxies/hvp.py's."""
    momentum = 0.0 if m.momentum is None else m.momentum
    if m.training and m.track_running_stats and m.num_batches_tracked is not None:
        m.num_batches_tracked.add_(1)
        if m.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(m.num_batches_tracked)
    if not m.training or m.track_running_stats:
        return m.running_mean, m.running_var, momentum
    return None, None, momentum


def use_in(net: nn.Module) -> nn.Module:
    """Every ``nn.BatchNorm2d`` of ``net`` (exactly that class) becomes this module's ``BatchNorm2d`` in place
    (parameters and buffers kept); returns ``net``."""
    for mod in net.modules():
        if type(mod) is nn.BatchNorm2d:
            mod.__class__ = BatchNorm2d
    return net
