"""datasets/kernels.py: the fast 3x3 average pooling computes PyTorch's own bits (equality, not closeness)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from proxybench.datasets import kernels, nb201
from proxybench.precision import VARIANTS

# every shape NB201 pools at batch 64 and 1 (CIFAR 32/16/8, ImageNet16-120 16/8/4), both code paths of box_sum3
# (32 columns and more, fewer), odd and degenerate planes, and an unbatched (C, H, W) input
SHAPES = [(64, 16, 32, 32), (64, 32, 16, 16), (64, 64, 8, 8), (64, 16, 16, 16), (64, 64, 4, 4), (1, 16, 32, 32),
          (3, 5, 7, 9), (2, 3, 1, 1), (2, 3, 2, 5), (2, 2, 33, 40), (5, 8, 8)]


def _reference(x):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


def _all_results(pool, x, gy, gg):
    """The pooling's output, input gradient, double-backward (d gradient / d gy along gg) and forward-mode tangent."""
    xx = x.clone().requires_grad_(True)
    gyy = gy.clone().requires_grad_(True)
    y = pool(xx)
    (gx,) = torch.autograd.grad(y, xx, gyy, create_graph=True)
    (dd,) = torch.autograd.grad(gx, gyy, gg)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(pool(fwAD.make_dual(x, gg))).tangent
    return y.detach(), gx.detach(), dd, tangent


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_pool3_gives_pytorchs_bits_forward_backward_double_backward_and_tangent(shape, dtype):
    g = torch.Generator().manual_seed(hash(shape) % 2**31)
    x, gy, gg = (torch.randn(*shape, dtype=dtype, generator=g) * 3 for _ in range(3))
    ours = _all_results(kernels.avg_pool3, x, gy, gg)
    ref = _all_results(_reference, x, gy, gg)
    for what, a, b in zip(("forward", "backward", "double backward", "tangent"), ours, ref, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, what
        assert torch.equal(a, b), f"{what}: max |difference| {(a - b).abs().max().item():.3g}"
        assert a.is_contiguous(), what


def test_pool3_backward_alone_equals_atens():
    gy = torch.randn(4, 16, 8, 8, dtype=torch.float32)
    ref = torch.ops.aten.avg_pool2d_backward(gy, gy, [3, 3], [1, 1], [1, 1], False, False, None)
    assert torch.equal(kernels.avg_pool3_backward(gy), ref)
    # non-contiguous gradients (an expanded one, as a sum's backward gives) take PyTorch's own kernel
    ex = torch.ones(1, 1, 1, 1).expand(4, 16, 8, 8)
    assert torch.equal(kernels.avg_pool3_backward(ex), torch.ops.aten.avg_pool2d_backward(
        ex, ex, [3, 3], [1, 1], [1, 1], False, False, None))


def test_other_layouts_dtypes_and_functorch_take_pytorchs_kernel_and_agree():
    x = torch.randn(2, 8, 6, 6)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(kernels.avg_pool3(cl), _reference(cl))
    h = x.to(torch.bfloat16)
    assert torch.equal(kernels.avg_pool3(h), _reference(h))
    per_sample = torch.func.vmap(kernels.avg_pool3)(x)  # functorch transforms: F.avg_pool2d itself
    assert torch.equal(per_sample, _reference(x))
    grads = torch.func.vmap(torch.func.grad(lambda t: kernels.avg_pool3(t).pow(2).sum()))(x)
    assert torch.equal(grads, torch.func.vmap(torch.func.grad(lambda t: _reference(t).pow(2).sum()))(x))


def test_the_module_keeps_nn_avgpool2d_name_repr_and_other_cases():
    m = kernels.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    ref = torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    assert type(m).__name__ == "AvgPool2d" and repr(m) == repr(ref) and kernels.is_pool3(m)
    other = kernels.AvgPool2d(2, stride=2)
    x = torch.randn(2, 4, 8, 8)
    assert not kernels.is_pool3(other) and torch.equal(other(x), torch.nn.AvgPool2d(2, stride=2)(x))
    net = nb201.build_network("|avg_pool_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|")
    pools = [p for p in net.modules() if isinstance(p, torch.nn.AvgPool2d) and kernels.is_pool3(p)]
    assert len(pools) == 15 * 2 and all(type(p) is kernels.AvgPool2d for p in pools)


_CHILD = """
import torch, torch.nn.functional as F
from proxybench.datasets import kernels
bad = []
for shape in [(64, 16, 32, 32), (64, 32, 16, 16), (64, 64, 8, 8), (3, 5, 7, 9)]:
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(*shape, dtype=dtype).requires_grad_(True)
        gy = torch.randn(*shape, dtype=dtype)
        ref = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        (g_ref,) = torch.autograd.grad(ref, x, gy)
        ours = kernels.avg_pool3(x)
        (g_ours,) = torch.autograd.grad(ours, x, gy)
        if not (torch.equal(ours, ref) and torch.equal(g_ours, g_ref)):
            bad.append((shape, str(dtype)))
print("BAD", bad)
"""


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.name in ("avx2", "portable")], ids=lambda v: v.name)
def test_pool3_gives_pytorchs_bits_under_another_cpu_dispatch(variant):
    """PyTorch's pooling kernel is vectorised per dispatch: the equality must hold for each (a fresh process)."""
    env = {**os.environ, **variant.env}
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "BAD []", out.stdout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_gives_pytorchs_bits_signed_zeros_and_nans_included(dtype):
    g = torch.Generator().manual_seed(3)
    x, gy, gg = (torch.randn(4, 8, 6, 6, dtype=dtype, generator=g) for _ in range(3))
    x[0, 0, 0, :3] = torch.tensor([float("inf"), float("-inf"), float("nan")], dtype=dtype)
    gy[0, 0, 1, 0] = float("nan")
    ours = _all_results(kernels.zero, x, gy, gg)
    ref = _all_results(lambda t: t.mul(0.0), x, gy, gg)
    for what, a, b in zip(("forward", "backward", "double backward", "tangent"), ours, ref, strict=True):
        same = torch.equal(a.isnan(), b.isnan()) and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
        assert same and torch.equal(torch.signbit(a), torch.signbit(b)), what
    assert ours[0].isnan().sum() == 3  # inf * 0 and nan * 0 stay NaN, as in the official Zero op


_NO_DYNAMO = """
import sys, torch, torch.autograd.forward_ad as fwAD
from proxybench.datasets import kernels
x = torch.randn(2, 3, 4, 4, requires_grad=True)
with fwAD.dual_level():
    y = kernels.zero(fwAD.make_dual(x, torch.randn_like(x)))
    torch.autograd.grad(y.sum(), x)
print("dynamo" if "torch._dynamo" in sys.modules else "clean")
"""


def test_zero_under_forward_mode_takes_no_python_decomposition():
    """``Tensor.mul(0.0)`` on a dual tensor runs a torch._refs decomposition that imports torch._dynamo (seconds
    per worker process); ``kernels.zero`` must not."""
    out = subprocess.run([sys.executable, "-c", _NO_DYNAMO], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "clean"
