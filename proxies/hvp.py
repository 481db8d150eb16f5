"""GraSP's Hessian-gradient term in one forward-over-reverse pass along the weights (exact, no double backward).

GraSP (Wang et al. 2020; the code of Abdelfattah et al.) scores a network by ``S = -sum_l w_l . (H g)_l`` over the
Conv/Linear weights ``w``, with ``g`` the loss gradient and ``H`` the loss Hessian with respect to those weights.
Only the sum is reported, and ``H`` is symmetric, so

    S = -w^T H g = -g^T (H w),    H w = d/ds grad L((1 + s) w) at s = 0,

the derivative of the gradient when every Conv/Linear weight is scaled by ``1 + s`` (the other parameters stay).
That is one forward-mode derivative taken through the forward and the backward pass that compute ``g`` anyway,
instead of the reference's create_graph backward plus double backward.

Scaling the weights has a structure that generic forward-mode AD does not see: a layer ``y = conv(x, (1+s) w)``
has the tangent ``conv(x', w) + (y - bias)``, one convolution where generic AD runs two; in the backward, the input
gradient's tangent is ``convT(gy', w) + gx`` and the weight gradient's ``corr(x', gy) + corr(x, gy')``. The
Functions below run exactly those (PyTorch's own kernels, ``aten.convolution_backward``), and give training-mode
BatchNorm and the 3x3 average pooling closed-form tangents of their forward and backward:

    BN forward:   y' = gamma r P(x'),  P(u) = u - <u> - xh <u xh>,  xh = (x - mu) r,  r = (var + eps)^-1/2
    BN backward:  gx = gamma r P(gy);  its tangent, with a = <gy xh>, b = <xh x'>, c = <gy x'> - <gy><x'> - a b,
                  gx' = gamma r P(gy' - r a x') - gamma r^3 c (x - mu) - r b gx

(``<.>`` is the per-channel mean over N, H, W; ``gamma r P(u)`` is one ``native_batch_norm_backward`` call.)
Every other operation (ReLU, sums, other pooling, concatenation) keeps PyTorch's own forward-mode formulas, and
a Conv/Linear this module does not handle (e.g. padding_mode other than zeros) gets the scaling through a generic
output hook. ``tests/proxies/test_hvp.py`` checks ``H w`` against double-backward autograd in float64.

The primal values are PyTorch's own kernels on the network as built, so every other proxy read from the same pass
(grad_norm, snip, fisher, jacob_cov, ...) is unchanged. BatchNorm's affine parameters get no gradients inside
``weight_direction`` (the shared pass differentiates with respect to Conv/Linear weights and the input only).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from proxybench.datasets import accurate_bn, kernels

# "input_only": set by ``input_grads_only`` (backward passes that need no weight gradients); "generic": set by
# ``generic_formulas`` (bench/tools/perf.py)
_STATE = {"input_only": False, "generic": False}
_CB = torch.ops.aten.convolution_backward


# ``native_batch_norm_backward`` in train mode: PyTorch's call, or accurate sums for channels_last
_nbb = accurate_bn.batch_norm_backward


def _conv_input_grad(gy, x, w, conf):
    stride, padding, dilation, groups = conf
    return _CB(gy, x, w, None, stride, padding, dilation, False, [0] * len(stride), groups, [True, False, False])[0]


def _conv_weight_grad(gy, x, w, conf):
    stride, padding, dilation, groups = conf
    return _CB(gy, x, w, None, stride, padding, dilation, False, [0] * len(stride), groups, [False, True, False])[1]


class _ForwardOnly(torch.autograd.Function):
    """A backward step whose tangent is written by hand; differentiating it again is not supported."""

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError("proxybench.proxies.hvp computes forward-over-reverse only; no double backward")


class _Conv(torch.autograd.Function):
    """y = conv(x, (1+s) w) + b at s = 0."""

    @staticmethod
    def forward(ctx, x, w, b, s, conf):
        y = F.conv2d(x, w, b, *conf)
        ctx.conf, ctx.has_bias = conf, b is not None
        ctx.save_for_backward(x, w, s)
        ctx.save_for_forward(x, w, y, b)
        return y

    @staticmethod
    def jvp(ctx, tx, _tw, _tb, _ts, _conf):
        x, w, y, b = ctx.saved_tensors
        core = y if b is None else y - b.view(1, -1, 1, 1)
        if tx is None:
            return core.clone()
        return F.conv2d(tx, w, None, *ctx.conf).add_(core)

    @staticmethod
    def backward(ctx, gy):
        x, w, s = ctx.saved_tensors
        if _STATE["input_only"]:
            gx = _ConvInputGrad.apply(gy, x, w, s, ctx.conf) if ctx.needs_input_grad[0] else None
            return gx, None, None, None, None
        gx = gw = None
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[1]:
            gx, gw = _ConvGrads.apply(gy, x, w, s, ctx.conf)  # one kernel call, as PyTorch's own backward
        elif ctx.needs_input_grad[0]:
            gx = _ConvInputGrad.apply(gy, x, w, s, ctx.conf)
        elif ctx.needs_input_grad[1]:
            gw = _ConvWeightGrad.apply(gy, x, w, s, ctx.conf)
        gb = gy.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None


def _conv_grads(gy, x, w, conf):
    stride, padding, dilation, groups = conf
    gx, gw, _ = _CB(gy, x, w, None, stride, padding, dilation, False, [0] * len(stride), groups, [True, True, False])
    return gx, gw


class _ConvGrads(_ForwardOnly):
    """(gx, gw) by one kernel call; tangents convT(gy', w) + gx and corr(x, gy') (the same call on gy')
    + corr(x', gy)."""

    @staticmethod
    def forward(ctx, gy, x, w, s, conf):
        gx, gw = _conv_grads(gy, x, w, conf)
        ctx.conf = conf
        ctx.save_for_forward(gy, x, w, gx)
        return gx, gw

    @staticmethod
    def jvp(ctx, tgy, tx, _tw, _ts, _conf):
        gy, x, w, gx = ctx.saved_tensors
        if tgy is None:
            tgx, tgw = gx.clone(), torch.zeros_like(w)
        else:
            tgx, tgw = _conv_grads(tgy, x, w, ctx.conf)
            tgx.add_(gx)
        if tx is not None:
            tgw.add_(_conv_weight_grad(gy, tx, w, ctx.conf))
        return tgx, tgw


class _ConvInputGrad(_ForwardOnly):
    """gx = convT(gy, (1+s) w); tangent convT(gy', w) + gx."""

    @staticmethod
    def forward(ctx, gy, x, w, s, conf):
        gx = _conv_input_grad(gy, x, w, conf)
        ctx.conf = conf
        ctx.save_for_forward(x, w, gx)
        return gx

    @staticmethod
    def jvp(ctx, tgy, _tx, _tw, _ts, _conf):
        x, w, gx = ctx.saved_tensors
        if tgy is None:
            return gx.clone()
        return _conv_input_grad(tgy, x, w, ctx.conf).add_(gx)


class _ConvWeightGrad(_ForwardOnly):
    """gw = corr(x, gy); tangent corr(x', gy) + corr(x, gy')."""

    @staticmethod
    def forward(ctx, gy, x, w, s, conf):
        ctx.conf = conf
        ctx.save_for_forward(gy, x, w)
        return _conv_weight_grad(gy, x, w, conf)

    @staticmethod
    def jvp(ctx, tgy, tx, _tw, _ts, _conf):
        gy, x, w = ctx.saved_tensors
        if tx is None and tgy is None:
            return torch.zeros_like(w)
        if tx is None:
            return _conv_weight_grad(tgy, x, w, ctx.conf)
        if tgy is None:
            return _conv_weight_grad(gy, tx, w, ctx.conf)
        # two calls: one over the concatenated batch was slower here (2.5x at 64x16x32x32 on this CPU)
        return _conv_weight_grad(gy, tx, w, ctx.conf).add_(_conv_weight_grad(tgy, x, w, ctx.conf))


class _Linear(torch.autograd.Function):
    """y = x (1+s) w^T + b at s = 0 (x of shape (N, in))."""

    @staticmethod
    def forward(ctx, x, w, b, s):
        y = F.linear(x, w, b)
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w, s)
        ctx.save_for_forward(w, y, b)
        return y

    @staticmethod
    def jvp(ctx, tx, _tw, _tb, _ts):
        w, y, b = ctx.saved_tensors
        core = y if b is None else y - b
        return core.clone() if tx is None else F.linear(tx, w).add_(core)

    @staticmethod
    def backward(ctx, gy):
        x, w, s = ctx.saved_tensors
        gx = _LinearInputGrad.apply(gy, w, s) if ctx.needs_input_grad[0] else None
        if _STATE["input_only"]:
            return gx, None, None, None
        gw = _LinearWeightGrad.apply(gy, x, s) if ctx.needs_input_grad[1] else None
        gb = gy.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class _LinearInputGrad(_ForwardOnly):
    @staticmethod
    def forward(ctx, gy, w, s):
        gx = gy @ w
        ctx.save_for_forward(w, gx)
        return gx

    @staticmethod
    def jvp(ctx, tgy, _tw, _ts):
        w, gx = ctx.saved_tensors
        return gx.clone() if tgy is None else (tgy @ w).add_(gx)


class _LinearWeightGrad(_ForwardOnly):
    @staticmethod
    def forward(ctx, gy, x, s):
        ctx.save_for_forward(gy, x)
        return gy.t() @ x

    @staticmethod
    def jvp(ctx, tgy, tx, _ts):
        gy, x = ctx.saved_tensors
        out = torch.zeros(gy.shape[1], x.shape[1], dtype=x.dtype, device=x.device)
        if tx is not None:
            out.addmm_(gy.t(), tx)
        if tgy is not None:
            out.addmm_(tgy.t(), x)
        return out


def _shape(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape([1, -1] + [1] * (like.dim() - 2))


class _BN(torch.autograd.Function):
    """Training-mode batch norm with closed-form tangents of its forward and of its input gradient."""

    @staticmethod
    def forward(ctx, x, gamma, beta, running_mean, running_var, momentum, eps, s):
        y, mean, invstd = accurate_bn.batch_norm(x, gamma, beta, running_mean, running_var, momentum, eps)
        ctx.eps = eps
        ctx.save_for_backward(x, gamma, mean, invstd, s)
        ctx.save_for_forward(x, gamma, mean, invstd)
        return y

    @staticmethod
    def jvp(ctx, tx, _tg, _tb, _trm, _trv, _tm, _te, _ts):
        x, gamma, mean, invstd = ctx.saved_tensors
        if tx is None:
            return torch.zeros_like(x)
        return _nbb(tx, x, gamma, mean, invstd, ctx.eps, [True, False, False])[0]

    @staticmethod
    def backward(ctx, gy):
        x, gamma, mean, invstd, s = ctx.saved_tensors
        gx = _BNInputGrad.apply(gy, x, gamma, mean, invstd, ctx.eps, s)
        return gx, None, None, None, None, None, None, None


class _BNInputGrad(_ForwardOnly):
    @staticmethod
    def forward(ctx, gy, x, gamma, mean, invstd, eps, s):
        # with the affine reductions (fused): <gy xh> and <gy> for the tangent
        gx, sum_gy_xh, sum_gy = _nbb(gy, x, gamma, mean, invstd, eps, [True, gamma is not None, gamma is not None])
        if gamma is None:  # no affine reductions from the kernel: compute them
            red = [d for d in range(x.dim()) if d != 1]
            sum_gy = gy.sum(red)
            sum_gy_xh = ((x - _shape(mean, x)) * gy).sum(red) * invstd
        ctx.eps = eps
        ctx.save_for_forward(gy, x, gamma, mean, invstd, gx, sum_gy_xh, sum_gy)
        return gx

    @staticmethod
    def jvp(ctx, tgy, tx, _tg, _tm, _ti, _te, _ts):
        gy, x, gamma, mean, invstd, gx, sum_gy_xh, sum_gy = ctx.saved_tensors
        eps = ctx.eps
        if tx is None:
            if tgy is None:
                return torch.zeros_like(gx)
            return _nbb(tgy, x, gamma, mean, invstd, eps, [True, False, False])[0]
        m = x.numel() // x.shape[1]
        r = _shape(invstd, x)
        mu = _shape(mean, x)
        g = _shape(gamma, x) if gamma is not None else torch.ones_like(r)
        a = _shape(sum_gy_xh, x) / m
        m_gy = _shape(sum_gy, x) / m
        # the per-channel sums of tx * xh, tx and tx * gy by the fused kernel's affine reductions (nothing
        # materialised): with mean 0 and invstd 1 its "xh" is gy itself
        _, s_txxh, s_tx = _nbb(tx, x, gamma, mean, invstd, eps, [False, True, True])
        ones = torch.ones_like(invstd)
        _, s_txgy, _ = _nbb(tx, gy, ones, torch.zeros_like(mean), ones, eps, [False, True, False])
        b = _shape(s_txxh, x) / m
        c = _shape(s_txgy, x) / m - m_gy * (_shape(s_tx, x) / m) - a * b
        u = tx * (-r * a) if tgy is None else torch.addcmul(tgy, tx, -r * a)
        out = _nbb(u, x, gamma, mean, invstd, eps, [True, False, False])[0]
        coef = -g * r * r * r * c
        return out.addcmul_(x, coef).addcmul_(gx, -r * b).sub_(coef * mu)


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


class _Pool3(torch.autograd.Function):
    """NB201's avg_pool_3x3 (stride 1, padding 1, count_include_pad=False): PyTorch's bits by
    ``kernels.avg_pool3``; tangents by the separable box sum."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        ctx.save_for_backward(x)
        return kernels.avg_pool3(x)

    @staticmethod
    def jvp(ctx, tx):
        return avg_pool3_fast(tx)

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved_tensors
        return _Pool3Grad.apply(gy, x)


class _Pool3Grad(_ForwardOnly):
    @staticmethod
    def forward(ctx, gy, x):
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return kernels.avg_pool3_backward(gy)

    @staticmethod
    def jvp(ctx, tgy, _tx):
        if tgy is None:
            return torch.zeros(ctx.shape, dtype=ctx.dtype)
        # the adjoint of (box sum times inverse count) is the box sum of (tgy times inverse count)
        return _box3(tgy * _inv_count(tgy.shape[-2], tgy.shape[-1], tgy))


def _conv_conf(m: nn.Conv2d):
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        return None
    return (tuple(m.stride), tuple(m.padding), tuple(m.dilation), m.groups)


class _Scaled(torch.autograd.Function):
    """Generic fallback on a layer's output: identity, tangent + (output - bias); its backward scales the
    incoming gradient by (1+s), so that layer's weight-gradient tangent is (H w)_l + g_l (corrected in ``hw``)."""

    @staticmethod
    def forward(ctx, out, core, s):
        ctx.save_for_forward(core)
        ctx.save_for_backward(s)
        return out.clone()

    @staticmethod
    def jvp(ctx, t_out, _tc, _ts):
        (core,) = ctx.saved_tensors
        return core.clone() if t_out is None else t_out + core

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return _Scaled.apply(g, g, s), None, None


class WeightDirection:
    """State of one ``weight_direction`` block: the dual scalar and the layers on the generic fallback."""

    def __init__(self, s: torch.Tensor):
        self.s = s
        self.fallback: set[int] = set()

    def hw(self, grads, layers) -> list[torch.Tensor | None]:
        """(H w)_l for each layer, from the weight gradients computed inside the block (their tangents)."""
        out = []
        for g, m in zip(grads, layers, strict=True):
            if g is None:
                out.append(None)
                continue
            p, t = fwAD.unpack_dual(g)
            if t is None:
                t = torch.zeros_like(p)
            out.append(t - p if id(m) in self.fallback else t)
        return out


def _patch(net: nn.Module, state: WeightDirection):
    s = state.s
    patched, hooks = [], []

    def conv_forward(m, x):
        return _Conv.apply(x, m.weight, m.bias, s, m._hvp_conf)

    def linear_forward(m, x):
        if x.dim() != 2:  # the generic path for this call
            state.fallback.add(id(m))
            return fallback_hook(m, None, type(m).forward(m, x))
        return _Linear.apply(x, m.weight, m.bias, s)

    def bn_forward(m, x):
        if not m.training:
            return type(m).forward(m, x)
        rm, rv, momentum = accurate_bn.batch_stats_bookkeeping(m)
        return _BN.apply(x, m.weight, m.bias, rm, rv, momentum, m.eps, s)

    def pool_forward(m, x):
        return _Pool3.apply(x)

    def fallback_hook(m, _inp, out):
        b = m.bias
        if b is not None:  # Linear: bias on the last dimension; convolutions: on the channels
            b = b if isinstance(m, nn.Linear) else b.reshape([1, -1] + [1] * (out.dim() - 2))
        core = out if b is None else out - b
        return _Scaled.apply(out, core.detach(), s)

    generic = _STATE.get("generic", False)  # generic_formulas(): PyTorch's formulas only, to show what the above save
    for m in net.modules():
        if generic:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                state.fallback.add(id(m))
                hooks.append(m.register_forward_hook(fallback_hook))
            continue
        if type(m) is nn.Conv2d and _conv_conf(m) is not None:
            m._hvp_conf = _conv_conf(m)
            m.forward = conv_forward.__get__(m)
        elif type(m) is nn.Linear:
            m.forward = linear_forward.__get__(m)
        elif isinstance(m, (nn.Conv2d, nn.Linear, nn.Conv1d, nn.Conv3d)):
            state.fallback.add(id(m))
            hooks.append(m.register_forward_hook(fallback_hook))
            continue
        elif type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, accurate_bn.BatchNorm2d):
            m.forward = bn_forward.__get__(m)
        elif kernels.is_pool3(m):
            m.forward = pool_forward.__get__(m)
        else:
            continue
        patched.append(m)
    return patched, hooks


@contextmanager
def weight_direction(net: nn.Module):
    """A forward-mode level in which ``net``'s forward and every backward through it carry the derivative along
    the scaling of all Conv/Linear weights; ``WeightDirection.hw`` reads ``H w`` off the weight gradients.
    A Linear inside it must see 2-d inputs to use the fast path (others take the generic one)."""
    with fwAD.dual_level():
        state = WeightDirection(fwAD.make_dual(torch.zeros(()), torch.ones(())))
        patched, hooks = _patch(net, state)
        try:
            yield state
        finally:
            for m in patched:
                del m.forward
                if hasattr(m, "_hvp_conf"):
                    del m._hvp_conf
            for h in hooks:
                h.remove()


def cross_entropy_grad(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The gradient of the mean cross-entropy at the logits, with its tangent: PyTorch's own backward on the primal
    (generic forward-mode AD through the loss would compute the primal by other kernels), and the tangent
    ``(p * z' - p <p, z'>) / N``, ``p = softmax(z)``, in float64."""
    z, tz = fwAD.unpack_dual(logits)
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        (gz,) = torch.autograd.grad(F.cross_entropy(z, targets), z)
    if tz is None:
        return gz
    p = torch.softmax(z.detach().double(), dim=1)
    t = tz.double()
    tangent = (p * t - p * (p * t).sum(1, keepdim=True)) / z.shape[0]
    return fwAD.make_dual(gz, tangent.to(gz.dtype))


class _Seed(torch.autograd.Function):
    """A scalar whose backward hands ``g`` (and its tangent) to ``z`` unchanged: ``grad(seeded(z, g), w)`` is
    ``grad(z, w, grad_outputs=g)``, the same bits, without autograd's check of ``grad_outputs`` (its first use in a
    process imports sympy, ~0.7 s: a cost of every worker)."""

    @staticmethod
    def forward(z, g):
        return z.new_zeros(())

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.g = inputs[1]

    @staticmethod
    def backward(ctx, _):
        return ctx.g, None

    @staticmethod
    def jvp(ctx, _tz, _tg):
        return torch.zeros((), dtype=ctx.g.dtype, device=ctx.g.device)


def seeded(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The scalar to differentiate for the backward from ``z`` with output gradient ``g`` (see ``_Seed``)."""
    return _Seed.apply(z, g)


@contextmanager
def generic_formulas():
    """``weight_direction`` blocks opened in the block use PyTorch's generic forward-mode formulas, none of the
    hand-written tangents of this module (bench/tools/perf.py measures what those save)."""
    saved, _STATE["generic"] = _STATE.get("generic", False), True
    try:
        yield
    finally:
        _STATE["generic"] = saved


@contextmanager
def input_grads_only():
    """Backward passes in the block compute no weight gradients through the patched layers (jacob_cov's)."""
    saved, _STATE["input_only"] = _STATE["input_only"], True
    try:
        yield
    finally:
        _STATE["input_only"] = saved
