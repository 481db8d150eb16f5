"""datasets/accurate_bn.py: channels_last train-mode BatchNorm, correct in float64, as accurate as NCHW in float32."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from proxybench.datasets import accurate_bn

NB201_SHAPES = [(64, 16, 32, 32), (64, 32, 16, 16), (64, 64, 8, 8), (64, 64, 4, 4)]
CL = torch.channels_last


def _cl(t):
    return t.contiguous(memory_format=CL)


def _results(bn_fn, x, w, b, gy):
    xx, ww, bb = (t.clone().requires_grad_(True) for t in (x, w, b))
    y = bn_fn(xx, ww, bb)
    gx, gw, gb = torch.autograd.grad(y, (xx, ww, bb), gy)
    return y.detach(), gx, gw, gb


def _ours(x, w, b):
    return accurate_bn.batch_norm_channels_last(_cl(x), w, b, eps=1e-5)


def _pytorch(x, w, b):
    return F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)


@pytest.mark.parametrize("shape", [(8, 5, 6, 7), (64, 16, 8, 8)])
def test_float64_values_and_gradients_are_batchnorms(shape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, dtype=torch.float64, generator=g) * 2 + 3
    w, b = (torch.randn(shape[1], dtype=torch.float64, generator=g) for _ in range(2))
    gy = torch.randn(shape, dtype=torch.float64, generator=g)
    ours, ref = _results(_ours, x, w, b, gy), _results(_pytorch, x, w, b, gy)
    for what, a, r in zip(("y", "gx", "gweight", "gbias"), ours, ref, strict=True):
        assert a.shape == r.shape, what
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12, msg=what)
    assert ours[0].is_contiguous(memory_format=CL) and ours[1].is_contiguous(memory_format=CL)


def test_gradcheck():
    g = torch.Generator().manual_seed(2)
    x = _cl(torch.randn(3, 4, 3, 5, dtype=torch.float64, generator=g)).requires_grad_(True)
    w = torch.randn(4, dtype=torch.float64, generator=g).requires_grad_(True)
    b = torch.randn(4, dtype=torch.float64, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *a: accurate_bn.batch_norm_channels_last(*a, eps=1e-5), (x, w, b))


def _error(y, ref):
    return float((y.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("shape", NB201_SHAPES)
def test_float32_is_as_accurate_as_pytorchs_nchw_kernel(shape):
    """Against float64, forward and input gradient: ours in channels_last within 2x of PyTorch's NCHW kernel's
    error or within 4 float32 ulps of the largest value (2^-22), whichever is larger: both errors are a few
    roundings (measured here 1.0-1.8e-7 against NCHW's 0.6-1.5e-7, the same under AVX2), while PyTorch's
    channels_last kernel is off by 4e-7 to 3.6e-6 on these shapes (the reason this exists; it fails this test)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g) * 3 + 5  # a mean, as after a ReLU: what makes a naive sum round
    w, b = torch.rand(shape[1], generator=g) + 0.5, torch.randn(shape[1], generator=g)
    gy = torch.randn(shape, generator=g) + 1
    ref = _results(_pytorch, x.double(), w.double(), b.double(), gy.double())
    nchw = _results(_pytorch, x, w, b, gy)
    ours = _results(_ours, x, w, b, gy)
    for i, what in enumerate(("forward", "input gradient")):
        e_ours, e_nchw = _error(ours[i], ref[i]), _error(nchw[i], ref[i])
        assert e_ours <= max(2 * e_nchw, 2.0**-22), f"{what}: {e_ours:.2e} against NCHW's {e_nchw:.2e}"


@pytest.mark.parametrize("kwargs", [{"momentum": None}, {"track_running_stats": False}, {"momentum": 0.1}])
def test_bookkeeping_follows_nn_batchnorm(kwargs):
    """num_batches_tracked, the momentum (None: the cumulative average) and which running statistics move: the
    helper BatchNorm2d and proxies/hvp.py share (batch_stats_bookkeeping) against nn.BatchNorm2d over 3 steps."""
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(6, **kwargs).double()
    ours = accurate_bn.use_in(nn.Sequential(copy.deepcopy(ref)))[0]
    for step in range(3):
        x = torch.randn(4, 6, 5, 5, dtype=torch.float64) + step
        torch.testing.assert_close(ours(_cl(x)), ref(x), rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        a, b = getattr(ours, name), getattr(ref, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0, msg=name)
    if kwargs.get("momentum", 0.1) is None:  # the cumulative average moved the statistics away from the start
        assert int(ours.num_batches_tracked) == 3 and not torch.allclose(ours.running_var, torch.ones(6).double())
    ours.running_mean = ours.running_var = None  # eval without running statistics: batch statistics, no update
    ref.running_mean = ref.running_var = None
    ours.eval()
    ref.eval()
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(ours(_cl(x)), ref(x), rtol=1e-12, atol=1e-12)


def test_module_matches_nn_batchnorm_state_and_falls_back_bit_for_bit():
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(6, momentum=0.3).double()
    ours = accurate_bn.use_in(nn.Sequential(copy.deepcopy(ref)))[0]
    assert type(ours) is accurate_bn.BatchNorm2d and isinstance(ours, nn.BatchNorm2d)
    assert type(ours).__name__ == "BatchNorm2d" and repr(ours) == repr(ref)
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64) + 2
    for _ in range(2):  # two steps: the running statistics follow nn.BatchNorm2d's update
        torch.testing.assert_close(ours(_cl(x)), ref(x), rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-12, atol=0, msg=name)
    # NCHW input, eval mode: nn.BatchNorm2d's own forward, the same bits
    x32 = torch.randn(4, 6, 5, 5)
    a, b = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
    accurate_bn.use_in(a)
    assert torch.equal(a(x32), b(x32))
    a.eval()
    b.eval()
    assert torch.equal(a(_cl(x32)), b(_cl(x32)))


def test_rejects_other_layouts():
    with pytest.raises(ValueError, match="channels_last"):
        accurate_bn.batch_norm_channels_last(torch.randn(2, 3, 4, 4), None, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_mirrors_are_pytorchs_calls_in_nchw_and_agree_in_channels_last(dtype):
    """``batch_norm``/``batch_norm_backward`` (what proxies/hvp.py calls): PyTorch's bits for an NCHW input; for
    a channels_last one, PyTorch's values to rounding in float64, every output and mask."""
    g = torch.Generator().manual_seed(4)
    x, gy = (torch.randn(6, 5, 4, 3, generator=g, dtype=dtype) + 1 for _ in range(2))
    w, b = (torch.randn(5, generator=g, dtype=dtype) for _ in range(2))
    nbb = torch.ops.aten.native_batch_norm_backward
    for weight in (w, None):
        stats = [(torch.zeros(5, dtype=dtype), torch.ones(5, dtype=dtype)) for _ in range(3)]
        ref = torch.native_batch_norm(x, weight, b, *stats[0], True, 0.1, 1e-5)
        ours = accurate_bn.batch_norm(x, weight, b, *stats[1], 0.1, 1e-5)
        assert all(torch.equal(a, r) for a, r in zip(ours, ref, strict=True))
        mask = [True, weight is not None, True]
        back = accurate_bn.batch_norm_backward(gy, x, weight, ref[1], ref[2], 1e-5, mask)
        back_ref = nbb(gy, x, weight, None, None, ref[1], ref[2], True, 1e-5, mask)
        assert all(torch.equal(a, r) for a, r in zip(back, back_ref, strict=True) if r is not None)
        if dtype is torch.float64:
            cl = accurate_bn.batch_norm(_cl(x), weight, b, *stats[2], 0.1, 1e-5)
            assert cl[0].is_contiguous(memory_format=CL)
            for a, r in zip(cl, ref, strict=True):
                torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(stats[2], stats[0], rtol=1e-12, atol=1e-12)  # the running statistics
            back_cl = accurate_bn.batch_norm_backward(_cl(gy), _cl(x), weight, ref[1], ref[2], 1e-5, mask)
            for a, r in zip(back_cl, back_ref, strict=True):
                if r is not None:
                    torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
