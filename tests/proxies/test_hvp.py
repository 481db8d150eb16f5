"""GraSP's w^T H g by forward-over-reverse along the weights (proxies/hvp.py) against the double backward of autograd,
and the pass's primal values against a plain backward."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from proxybench.datasets import nb201
from proxybench.proxies import hvp

LAYERS = (nn.Conv2d, nn.Linear)


def _w_h_g(net, x, y) -> float:
    """sum_l w_l . (H g)_l the reference way: create_graph backward, then the double backward."""
    weights = [m.weight for m in net.modules() if isinstance(m, LAYERS)]
    g = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True, allow_unused=True)
    z = sum((a.detach() * a).sum() for a in g if a is not None)
    hg = torch.autograd.grad(z, weights, allow_unused=True)
    return float(sum((w * h).sum() for w, h in zip(weights, hg, strict=True) if h is not None))


def _g_h_w(net, x, y):
    """sum_l g_l . (H w)_l through ``weight_direction``; also the primal gradients."""
    layers = [m for m in net.modules() if isinstance(m, LAYERS)]
    weights = [m.weight for m in layers]
    with hvp.weight_direction(net) as direction:
        logits = net(x)
        grads = torch.autograd.grad(logits, weights, hvp.cross_entropy_grad(logits, y), allow_unused=True)
        hw = direction.hw(grads, layers)
        primal = [None if g is None else fwAD.unpack_dual(g).primal.clone() for g in grads]
    total = sum(float((g * h).sum()) for g, h in zip(primal, hw, strict=True) if h is not None)
    return total, primal


class _Odd(nn.Module):
    """Every layer kind the module handles, and two it leaves to the generic path (reflect padding, a Linear on
    3-d input): conv with bias, grouped/dilated/strided conv, BN without affine, BN1d, max and 3x3 avg pooling."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(8, affine=False)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=4, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.mp = nn.MaxPool2d(3, 1, 1)
        self.tok = nn.Linear(8, 8)
        self.l1 = nn.Linear(8, 16)
        self.bn1 = nn.BatchNorm1d(16)
        self.l2 = nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.bn(self.c1(x)))
        h = self.pool(h) + h
        h = torch.relu(self.bn2(self.c2(h)))
        h = self.mp(self.c3(h))
        h = self.tok(h.flatten(2).transpose(1, 2)).mean(1)  # Linear on (N, tokens, features)
        return self.l2(torch.relu(self.bn1(self.l1(h))))


def _data(n, res, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, res, res, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("make, res", [
    (_Odd, 12),
    (lambda: nb201.build_network("|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|"
                                 "avg_pool_3x3~2|"), 32),
    (lambda: nb201.build_network("|avg_pool_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_3x3~2|"), 32),
])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_g_h_w_equals_w_h_g_of_the_double_backward_in_float64(make, res, layout):
    # the hand-written tangents in both memory layouts (registry.LAYOUTS: a proxy may declare either)
    torch.manual_seed(3)
    net = make().double().train().to(memory_format=layout)
    x, y = _data(6, res)
    x = x.contiguous(memory_format=layout)
    ref = _w_h_g(net, x, y)
    ours, _ = _g_h_w(net, x, y)
    assert ours == pytest.approx(ref, rel=1e-10, abs=1e-12)
    assert abs(ref) > 1e-6  # a test that could fail: the value is not trivially zero


def test_the_generic_path_is_used_where_it_must_be_and_corrected():
    torch.manual_seed(0)
    net = _Odd().double().train()
    x, y = _data(4, 12)
    with hvp.weight_direction(net) as direction:
        net(x)
    assert direction.fallback == {id(net.c3), id(net.tok)}
    for m in net.modules():  # every patch is undone
        assert "forward" not in vars(m)


def test_primal_gradients_are_those_of_a_plain_backward_bit_for_bit():
    """Every proxy read from the shared pass (grad_norm, snip, fisher, ...) is unchanged when grasp joins it."""
    arch = "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    x, y = _data(16, 32)
    x = x.float()
    torch.manual_seed(42)
    net = nb201.build_network(arch).train()
    weights = [m.weight for m in net.modules() if isinstance(m, LAYERS)]
    plain = torch.autograd.grad(F.cross_entropy(net(x), y), weights)
    torch.manual_seed(42)
    net = nb201.build_network(arch).train()
    _, ours = _g_h_w(net, x, y)
    assert all(torch.equal(a, b) for a, b in zip(plain, ours, strict=True))


def test_input_gradients_after_the_block_equal_a_plain_backward():
    arch = "|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    x, y = _data(8, 32)
    x = x.float()
    torch.manual_seed(42)
    net = nb201.build_network(arch).train()
    xr = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(net(xr).sum(), xr)
    torch.manual_seed(42)
    net = nb201.build_network(arch).train()
    xo = x.clone().requires_grad_(True)
    with hvp.weight_direction(net):
        logits = net(xo)
        torch.autograd.grad(logits, [m.weight for m in net.modules() if isinstance(m, LAYERS)],
                            hvp.cross_entropy_grad(logits, y), retain_graph=True)
        logits = fwAD.unpack_dual(logits).primal
    with hvp.input_grads_only():
        (ours,) = torch.autograd.grad(logits.sum(), xo)
    assert torch.equal(plain, ours)


def test_a_double_backward_through_the_block_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 10)).double()
    x, y = _data(4, 6)
    with hvp.weight_direction(net):
        g = torch.autograd.grad(F.cross_entropy(net(x), y), net[0].weight, create_graph=True)[0]
        with pytest.raises(RuntimeError, match="no double backward"):
            torch.autograd.grad(fwAD.unpack_dual(g).primal.sum(), net[0].weight)


def test_seeded_backward_gives_grad_outputs_bits_and_tangents():
    """``grad(seeded(z, g), w)`` is ``grad(z, w, grad_outputs=g)``: the same primal bits and forward-mode tangents."""
    arch = "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|none~2|"
    x, y = _data(8, 32)
    x = x.float()
    results = []
    for seeded in (False, True):
        torch.manual_seed(42)
        net = nb201.build_network(arch).train()
        weights = [m.weight for m in net.modules() if isinstance(m, LAYERS)]
        with hvp.weight_direction(net):
            logits = net(x)
            g = hvp.cross_entropy_grad(logits, y)
            grads = (torch.autograd.grad(hvp.seeded(logits, g), weights) if seeded
                     else torch.autograd.grad(logits, weights, g))
            results.append([fwAD.unpack_dual(t) for t in grads])
    for (p0, t0), (p1, t1) in zip(*results, strict=True):
        assert torch.equal(p0, p1) and torch.equal(t0, t1)
