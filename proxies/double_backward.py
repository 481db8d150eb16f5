"""BatchNorm (training mode) and 3x3 average pooling with hand-written double backwards, for GraSP's H g.

GraSP needs ``H g``: a backward taken with ``create_graph`` and then a double backward through it. PyTorch's
generic ``batchnorm_double_backward`` builds it from many full-size elementwise tensors; in a profiled NB201
cell here it was ~27% of the double backward's time (28.8 ms vs 4.7 ms for the version below on
64x16x32x32). The same quantities follow in closed form from a few per-channel reductions, derived here
(per channel, means ``<.>`` over N, H, W, M elements):

    forward:   xh = (x - mu) * r,  r = (var + eps)^-1/2,  y = gamma * xh + beta
    backward:  gx = gamma * r * P(gy),  P(u) = u - <u> - xh * <u xh>,  ggamma = M <gy xh>,  gbeta = M <gy>

Given the upstream gradients ``v`` of ``gx``, ``vg`` of ``ggamma`` and ``vb`` of ``gbeta``, with ``a = gy - <gy>``:

    d/dgy    = gamma * r * P(v) + vg * xh + vb
    d/dgamma = M * r * <v P(gy)> = M * r * (<v a> - <v xh> <a xh>)
    d/dx     = gamma * r^2 * [(3 <v xh><a xh> - <v a>) xh - <a xh> (v - <v>) - <v xh> a] + vg * r * (a - xh <a xh>)

(d/dx collects the dependence of ``gx`` and ``ggamma`` on x through xh, mu and r.) ``tests/proxies`` check
both backwards against autograd's own in float64 (``gradcheck``/``gradgradcheck``) and GraSP against the
reference implementation. The module's running statistics are updated exactly as ``nn.BatchNorm2d`` does.

Average pooling 3x3, stride 1, padding 1, ``count_include_pad=False`` (NB201's ``avg_pool_3x3``): its forward
and backward stay PyTorch's own kernels (those a plain forward+backward of the network runs, so every other
proxy's numbers are untouched); only the double backward, the pooling itself applied to the upstream gradient,
runs as a box sum of shifted slices times the inverse window count. (PyTorch's CPU ``avg_pool2d`` took 17 ms on
a 64x16x32x32 batch here, the box sum 1.5 ms; using it in the network itself would speed every pass up but
move every cached score by float rounding, so it is not done.)

Used only inside the shared pass while grasp is requested (``patched``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class _BNBackward(torch.autograd.Function):
    """gx, ggamma, gbeta = BN backward(gy; x, gamma); its own backward is the closed-form double backward."""

    @staticmethod
    def forward(ctx, gy, x, gamma, mean, invstd, eps, affine_grads):
        mask = [True, affine_grads, affine_grads]
        gx, gg, gb = torch.ops.aten.native_batch_norm_backward(gy, x, gamma, None, None, mean, invstd, True, eps,
                                                               mask)
        ctx.save_for_backward(gy, x, gamma, mean, invstd)
        if gg is None:
            gg = torch.zeros_like(mean)
            gb = torch.zeros_like(mean)
        return gx, gg, gb

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v, vg, vb):
        # Every output is (per-channel coefficient) x (a full-size tensor) summed, so each costs one fused pass
        # per term: a = gy - <gy> never materialises (<a xh> = <gy xh> as <xh> = 0; <v a> = <v gy> - <v><gy>).
        gy, x, gamma, mean, invstd = ctx.saved_tensors
        if v is None:
            v = torch.zeros_like(gy)
        shape = x.shape
        n, c = shape[0], shape[1]
        x3, gy3, v3 = (t.reshape(n, c, -1) for t in (x, gy, v))
        m = x3.shape[0] * x3.shape[2]
        r = invstd.reshape(1, c, 1)
        g = gamma.reshape(1, c, 1) if gamma is not None else torch.ones_like(r)
        vg = vg.reshape(1, c, 1) if vg is not None else torch.zeros_like(r)
        vb = vb.reshape(1, c, 1) if vb is not None else torch.zeros_like(r)
        xh = torch.addcmul(-mean.reshape(1, c, 1) * r, x3, r)

        def mean_of(t):
            return t.sum(dim=(0, 2), keepdim=True) / m

        m_gy, m_axh = mean_of(gy3), mean_of(gy3 * xh)
        m_v, m_vxh = mean_of(v3), mean_of(v3 * xh)
        d_gy = d_x = d_gamma = None
        gr = g * r
        if ctx.needs_input_grad[0]:
            d_gy = torch.addcmul(vb - gr * m_v, v3, gr).addcmul_(xh, vg - gr * m_vxh).reshape(shape)
        if ctx.needs_input_grad[1] or (gamma is not None and ctx.needs_input_grad[2]):
            m_va = mean_of(v3 * gy3) - m_v * m_gy
            if ctx.needs_input_grad[1]:
                gr2 = gr * r
                c_xh = gr2 * (3 * m_vxh * m_axh - m_va) - vg * r * m_axh
                const = gr2 * (m_axh * m_v + m_vxh * m_gy) - vg * r * m_gy
                d_x = torch.addcmul(const, xh, c_xh).addcmul_(v3, -gr2 * m_axh)
                d_x = d_x.addcmul_(gy3, vg * r - gr2 * m_vxh).reshape(shape)
            if gamma is not None and ctx.needs_input_grad[2]:
                d_gamma = (m * r * (m_va - m_vxh * m_axh)).reshape(-1)
        return d_gy, d_x, d_gamma, None, None, None, None


class _BNTrain(torch.autograd.Function):
    """Training-mode batch norm; backward through ``_BNBackward`` so that it is twice differentiable cheaply."""

    @staticmethod
    def forward(ctx, x, gamma, beta, running_mean, running_var, momentum, eps):
        y, mean, invstd = torch.native_batch_norm(x, gamma, beta, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, gamma, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, gy):
        x, gamma, mean, invstd = ctx.saved_tensors
        want_g, want_b = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        affine_grads = gamma is not None and (want_g or want_b)
        gx, gg, gb = _BNBackward.apply(gy, x, gamma, mean, invstd, ctx.eps, affine_grads)
        return gx, gg if want_g else None, gb if want_b else None, None, None, None, None


def batch_norm_train(x, gamma, beta, running_mean=None, running_var=None, momentum: float = 0.1,
                     eps: float = 1e-5) -> torch.Tensor:
    return _BNTrain.apply(x, gamma, beta, running_mean, running_var, momentum, eps)


def _forward(m: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not m.training:
        return type(m).forward(m, x)
    momentum = 0.0 if m.momentum is None else m.momentum
    if m.track_running_stats and m.num_batches_tracked is not None:
        m.num_batches_tracked.add_(1)
        if m.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
            momentum = 1.0 / float(m.num_batches_tracked)
    rm, rv = (m.running_mean, m.running_var) if m.track_running_stats else (None, None)
    return batch_norm_train(x, m.weight, m.bias, rm, rv, momentum, m.eps)


def _box3(x: torch.Tensor) -> torch.Tensor:
    """3x3 box sum with zero padding over the last two dimensions (shifted in-place adds, separable)."""
    s = x.clone()
    s[..., 1:] += x[..., :-1]
    s[..., :-1] += x[..., 1:]
    t = s.clone()
    t[..., 1:, :] += s[..., :-1, :]
    t[..., :-1, :] += s[..., 1:, :]
    return t


def _inv_count(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """1 / (number of in-image positions of each 3x3 window): the divisor of count_include_pad=False."""
    rows = torch.full((h,), 3.0, dtype=like.dtype, device=like.device)
    cols = torch.full((w,), 3.0, dtype=like.dtype, device=like.device)
    rows[0] -= 1
    rows[-1] -= 1
    cols[0] -= 1
    cols[-1] -= 1
    return 1.0 / (rows[:, None] * cols[None, :])


def avg_pool3_fast(x: torch.Tensor) -> torch.Tensor:
    """avg_pool2d(x, 3, 1, 1, count_include_pad=False) as a box sum (equal to float rounding)."""
    return _box3(x).mul_(_inv_count(x.shape[-2], x.shape[-1], x))


class _Pool3Backward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gy, x):
        return torch.ops.aten.avg_pool2d_backward(gy, x, [3, 3], [1, 1], [1, 1], False, False, None)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gg):
        # avg_pool2d_backward is linear in gy and its adjoint is the pooling itself
        return avg_pool3_fast(gg), None


class _Pool3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved_tensors
        return _Pool3Backward.apply(gy, x.detach())


def _pool_forward(m: nn.AvgPool2d, x: torch.Tensor) -> torch.Tensor:
    return _Pool3.apply(x)


def _is_pool3(m: nn.Module) -> bool:
    return (isinstance(m, nn.AvgPool2d) and m.kernel_size in (3, (3, 3))
            and m.stride in (1, (1, 1)) and m.padding in (1, (1, 1)) and not m.count_include_pad and not m.ceil_mode
            and m.divisor_override is None)


@contextmanager
def patched(net: nn.Module):
    """Within the block, every BatchNorm of ``net`` runs through ``batch_norm_train`` (in training mode) and every
    3x3/stride-1 average pooling without padding counts through ``_Pool3``."""
    mods = []
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.forward = _forward.__get__(m)
            mods.append(m)
        elif _is_pool3(m):
            m.forward = _pool_forward.__get__(m)
            mods.append(m)
    try:
        yield net
    finally:
        for m in mods:
            del m.forward

