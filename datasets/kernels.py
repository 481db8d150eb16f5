"""Faster CPU kernels that compute bit for bit what PyTorch's own compute (so no score moves).

NB201's ``avg_pool_3x3`` (3x3, stride 1, padding 1, ``count_include_pad=False``) is a third of a forward+backward
on a CPU in PyTorch's NCHW kernels (measured by ``make perf``: ``aten::avg_pool2d`` and its backward, ~4.5 ms a
call at batch 64 for a few thousand additions per plane). PyTorch's CPU kernel (``cpu_avg_pool2d``) sums each
window in row-major order into a float accumulator of the tensor's own type starting at 0, then divides by the
number of in-image positions; its backward divides each output gradient by that number and adds it, in
row-major order of the outputs, into a zeroed input gradient. Both are sums of nine shifted copies of a
zero-padded tensor added in that same order: adding a padded 0 leaves a float sum unchanged, and IEEE addition
and division are exact functions of their operands, so the shifted whole-tensor adds below give the same bits
(``tests/datasets/test_kernels.py`` checks equality, not closeness, in float32 and float64, at every shape NB201
uses and at small odd ones, forward, backward, double backward and forward-mode, and under another CPU dispatch).

The fast path runs for CPU float32/float64 tensors in the contiguous (NCHW) layout; anything else (CUDA, other
layouts, other dtypes, functorch transforms) calls ``F.avg_pool2d`` itself.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_FAST_DTYPES = (torch.float32, torch.float64)
_COUNTS: dict[tuple, torch.Tensor] = {}
_STATE = {"enabled": True}  # False inside ``pytorch_kernels()``


@contextmanager
def pytorch_kernels():
    """Inside the block every function here calls PyTorch's own kernel (``make perf`` measures what this module
    saves; the bits are the same either way)."""
    saved, _STATE["enabled"] = _STATE["enabled"], False
    try:
        yield
    finally:
        _STATE["enabled"] = saved


def window_counts(h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """The number of in-image positions of each 3x3 window (4, 6 or 9), the divisor of count_include_pad=False."""
    key = (h, w, dtype)
    if key not in _COUNTS:
        rows = torch.full((h,), 3.0, dtype=dtype)
        cols = torch.full((w,), 3.0, dtype=dtype)
        rows[0] -= 1
        rows[-1] -= 1
        cols[0] -= 1
        cols[-1] -= 1
        _COUNTS[key] = rows[:, None] * cols[None, :]
    return _COUNTS[key]


def box_sum3(x: torch.Tensor) -> torch.Tensor:
    """sum over the 3x3 window around each position (zero padding) of the last two dimensions, added in row-major
    window order: ((x[-1,-1] + x[-1,0]) + x[-1,1]) + x[0,-1] + ... + x[1,1]. For fewer than 32 columns the result
    is a strided view into a larger buffer (callers that return it make it contiguous)."""
    h, w = x.shape[-2:]
    if w >= 32:  # wide rows: 2-D shifted views (measured faster from 32 columns on)
        xp = F.pad(x, (1, 1, 1, 1))
        out = xp[..., 0:h, 0:w].clone()
        for i in range(3):
            for j in range(3):
                if i or j:
                    out += xp[..., i:i + h, j:j + w]
        return out
    # narrow rows: shift along the flattened padded plane (one extra bottom row keeps every shift in range), so
    # each add runs over long contiguous stretches; the two columns of padding per row are dropped at the end
    p = w + 2
    lead = x.shape[:-2]
    flat = F.pad(x, (1, 1, 1, 2)).reshape(-1, (h + 3) * p)
    n = h * p
    out = flat[:, 0:n].clone()
    for i in range(3):
        for j in range(3):
            if i or j:
                out += flat[:, i * p + j:i * p + j + n]
    return out.view(*lead, h, p)[..., :w]


def _fast(x: torch.Tensor) -> bool:
    return (_STATE["enabled"] and x.device.type == "cpu" and x.dtype in _FAST_DTYPES and x.dim() in (3, 4)
            and x.is_contiguous() and not torch._C._are_functorch_transforms_active())


def _pool3(x: torch.Tensor) -> torch.Tensor:
    return box_sum3(x) / window_counts(x.shape[-2], x.shape[-1], x.dtype)


def _pool3_backward(gy: torch.Tensor) -> torch.Tensor:
    return box_sum3(gy / window_counts(gy.shape[-2], gy.shape[-1], gy.dtype)).contiguous()


class _Pool3(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return _pool3(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, gy):
        return _Pool3Backward.apply(gy)

    @staticmethod
    def jvp(ctx, tx):  # linear: the tangent is the pooled tangent (PyTorch's formula)
        return avg_pool3(tx)


class _Pool3Backward(torch.autograd.Function):
    @staticmethod
    def forward(gy):
        return _pool3_backward(gy) if _fast(gy) else _aten_backward(gy)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, ggx):  # the adjoint of the backward is the pooling itself (PyTorch's formula)
        return avg_pool3(ggx)

    @staticmethod
    def jvp(ctx, tgy):
        return avg_pool3_backward(tgy)


def _aten_backward(gy: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.avg_pool2d_backward(gy, gy, [3, 3], [1, 1], [1, 1], False, False, None)


def avg_pool3(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)``, the same bits, faster on a CPU in NCHW."""
    if not _fast(x):
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return _Pool3.apply(x)


def avg_pool3_backward(gy: torch.Tensor) -> torch.Tensor:
    """The input gradient of ``avg_pool3`` for the output gradient ``gy`` (PyTorch's ``avg_pool2d_backward``)."""
    if not _fast(gy):
        return _aten_backward(gy)
    return _Pool3Backward.apply(gy)


class _Zero(torch.autograd.Function):
    """x * 0 with PyTorch's own kernel and formulas (``mul`` by the scalar 0: the gradient and the tangent are
    multiplied by 0 too), as a Function: a forward-mode tangent through ``Tensor.mul(0.0)`` takes a Python
    decomposition (``torch._prims``, which imports ``torch._dynamo`` on its first use, seconds per process) and
    runs ~5x slower than the kernel."""

    @staticmethod
    def forward(x):
        return x.mul(0.0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, gy):
        return zero(gy)

    @staticmethod
    def jvp(ctx, tx):
        return zero(tx)


def zero(x: torch.Tensor) -> torch.Tensor:
    """``x.mul(0.0)`` (NB201's ``none`` edge, as the official code computes it: NaN where x is not finite), the
    same bits, without forward-mode AD's slow path on a dual tensor."""
    if not _STATE["enabled"] or torch._C._are_functorch_transforms_active():
        return x.mul(0.0)
    return _Zero.apply(x)


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` (same name, repr and arguments: op signatures and latency tables are unchanged) whose 3x3,
    stride 1, padding 1, count_include_pad=False case runs ``avg_pool3``; every other case is nn.AvgPool2d's."""

    def forward(self, x):
        if is_pool3(self):
            return avg_pool3(x)
        return super().forward(x)


def is_pool3(m: nn.Module) -> bool:
    """An average pooling that ``avg_pool3`` computes: 3x3, stride 1, padding 1, count_include_pad=False."""
    return (isinstance(m, nn.AvgPool2d) and m.kernel_size in (3, (3, 3))
            and m.stride in (1, (1, 1)) and m.padding in (1, (1, 1)) and not m.count_include_pad and not m.ceil_mode
            and m.divisor_override is None)
