"""The hand-written double backwards used by GraSP's shared pass (proxies/double_backward.py) against autograd's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

from datasets import nb201
from proxies import double_backward as db


def _x(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_first_and_second_derivatives_match_finite_differences(affine):
    x = _x(4, 3, 5, 5)
    if affine:
        gamma = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
        beta = torch.randn(3, dtype=torch.float64).requires_grad_()
        fn, args = (lambda x, g, b: db.batch_norm_train(x, g, b)), (x, gamma, beta)
    else:
        fn, args = (lambda x: db.batch_norm_train(x, None, None)), (x,)
    assert gradcheck(fn, args)
    assert gradgradcheck(fn, args)  # every upstream gradient, including those of d/dgamma and d/dbeta


def test_batch_norm_double_backward_equals_pytorchs():
    x, v = _x(8, 4, 6, 6), _x(8, 4, 6, 6, seed=1)
    gamma = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_()
    gy = _x(8, 4, 6, 6, seed=2)
    ours = db.batch_norm_train(x, gamma, None)
    theirs = F.batch_norm(x, None, None, gamma, None, training=True)
    assert torch.allclose(ours, theirs, atol=1e-12)
    g1 = torch.autograd.grad(ours, (x, gamma), gy, create_graph=True)
    g2 = torch.autograd.grad(theirs, (x, gamma), gy, create_graph=True)
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    h1 = torch.autograd.grad(g1[0], (x, gamma, gy), v)
    h2 = torch.autograd.grad(g2[0], (x, gamma, gy), v)
    for a, b in zip(h1, h2, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)


def test_patched_batch_norm_updates_running_statistics_like_the_module():
    plain, ours = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    x = torch.randn(5, 3, 4, 4)
    for _ in range(2):
        y1 = plain(x)
        with db.patched(ours):
            y2 = ours(x)
        assert torch.allclose(y1, y2, atol=1e-6)
    assert torch.allclose(plain.running_mean, ours.running_mean)
    assert torch.allclose(plain.running_var, ours.running_var)
    assert int(plain.num_batches_tracked) == int(ours.num_batches_tracked) == 2
    assert "forward" not in vars(ours)  # the patch is undone


def test_plain_avg_pool_gets_the_box_sum_double_backward():
    x = _x(2, 3, 5, 6)
    pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    assert db._is_pool3(pool) and not db._is_pool3(nn.AvgPool2d(3, 2, 1, count_include_pad=False))
    with db.patched(nn.Sequential(pool)):
        assert torch.allclose(pool(x), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        assert gradcheck(pool, (x,)) and gradgradcheck(pool, (x,))


def _grasp(net, x, y, fast):
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if fast:
        with db.patched(net):
            out = net(x)
    else:
        out = net(x)
    g = torch.autograd.grad(F.cross_entropy(out, y), weights, create_graph=True)
    z = sum((a.detach() * a).sum() for a in g)
    hg = torch.autograd.grad(z, weights)
    return torch.stack([(-w * h).sum() for w, h in zip(weights, hg, strict=True)]).detach()


def test_grasp_through_the_patched_network_equals_autograds_in_float64():
    arch = "|avg_pool_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)
    torch.manual_seed(42)
    net = nb201.build_network(arch).double()
    fast, slow = _grasp(net, x, y, True), _grasp(net, x, y, False)
    assert torch.allclose(fast, slow, rtol=1e-9, atol=1e-12 * float(slow.abs().max()))


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 2, 1, 1), (1, 2, 2, 3), (3, 4, 4)])
def test_box_sum_pooling_equals_pytorchs(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    assert torch.allclose(db.avg_pool3_fast(x), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), atol=1e-14)
