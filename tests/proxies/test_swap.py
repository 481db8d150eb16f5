"""SWAP / swap_reg: the pattern count on hand-made activation matrices, the score against a slow reference that
stores the activations and counts rows with torch.unique (the official way), the regularisation factor and the
NB201 constants recomputed from the space."""

from __future__ import annotations

import math
from functools import partial
from math import factorial

import pytest
import torch
from torch import nn

from proxybench.datasets import nb201
from proxybench.proxies import ProxyContext, get_proxy
from proxybench.proxies import swap as sw

MEDIAN = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"


def _count(matrix: torch.Tensor) -> int:
    c = sw.PatternCounter(matrix.shape[0])
    c.add(matrix)
    return c.count()


def test_pattern_count_on_a_hand_made_matrix_counts_per_neuron_patterns():
    # 3 samples x 5 neurons: columns (1,0,1), (1,0,1), (0,0,0), (0,1,0), (0,0,0) -> 3 distinct neuron patterns;
    # the rows (samples) are all distinct: 3 too, so a second matrix tells the two readings apart
    a = torch.tensor([[1., 1., 0., 0., 0.],
                      [0., 0., 0., 2., 0.],
                      [3., 5., 0., 0., -1.]])  # > 0 is 'active': -1 and 0 are both off
    assert _count(a) == 3
    # 2 samples x 4 neurons: 2 distinct rows, 4 distinct columns (every 2-bit pattern once)
    b = torch.tensor([[0., 1., 0., 1.], [0., 0., 1., 1.]])
    assert _count(b) == 4
    # 4 samples x 3 neurons, identical columns: 1 pattern although the 4 rows take 2 values
    c = torch.tensor([[1.] * 3, [0.] * 3, [1.] * 3, [1.] * 3])
    assert _count(c) == 1


@pytest.mark.parametrize("n", [5, 16, 21, 70])
def test_pattern_count_equals_a_set_of_columns(n):
    g = torch.Generator().manual_seed(n)
    # few distinct columns, repeated, over several added tensors (4-D, channels-last, 2-D)
    base = torch.randn(n, 37, generator=g)
    cols = base[:, torch.randint(0, 37, (300,), generator=g)]
    parts = [cols[:, :120].reshape(n, 2, 6, 10),
             cols[:, 120:240].reshape(n, 3, 5, 8).contiguous(memory_format=torch.channels_last),
             cols[:, 240:]]
    counter = sw.PatternCounter(n)
    for p in parts:
        counter.add(p)
    expected = len({tuple((cols[:, j] > 0).tolist()) for j in range(cols.shape[1])})
    assert counter.count() == expected
    assert counter.added == 300
    counter.reset()
    counter.add(parts[2])
    assert counter.count() == len({tuple((cols[:, j] > 0).tolist()) for j in range(240, 300)})


class _Toy(nn.Module):
    """Two ReLU modules on feature maps (one called twice), one on a vector (not hooked: 2-D input), BN."""

    def __init__(self, bn=True):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(4, 2, 1)
        self.r2 = nn.ReLU(inplace=True)
        self.fc1 = nn.Linear(2, 6)
        self.r3 = nn.ReLU()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = self.r1(self.bn(self.c1(x)))
        h = self.r2(self.c2(h)) + self.r2(self.c2(h * 0.5))
        return self.fc2(self.r3(self.fc1(h.mean(dim=(2, 3)))))


def _reference_swap(build, x, seed, repeats, samples=16):
    """The official procedure, written out: store every hooked ReLU output, concatenate (samples x neurons),
    sign, transpose, torch.unique rows; weights redrawn per repeat (N(0,1), biases 0, BN 1/0) in module order."""
    torch.manual_seed(seed)
    net = build(bn=True)
    net.train()
    x = x[:samples]
    feats = []

    def hook(m, args, out):
        if args[0].dim() == 4:
            feats.append(out.detach().clone())

    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(hook)
    g = torch.Generator().manual_seed(seed)
    scores = []
    with torch.no_grad():
        for _ in range(repeats):
            for m in net.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.copy_(torch.randn(tuple(m.weight.shape), generator=g))
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.BatchNorm2d):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            feats.clear()
            net(x)
            act = torch.sign(torch.cat([f.reshape(x.shape[0], -1) for f in feats], 1))
            scores.append(torch.unique(act.T, dim=0).shape[0])
    return sum(scores) / len(scores)


def test_swap_equals_the_reference_on_a_toy_network():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 3, 4, 4, generator=g)
    ctx = ProxyContext("toy", "cifar10", 7, _Toy, (3, 4, 4), 3, (x, torch.zeros(20, dtype=torch.long)))
    ctx.allow_labels = False
    got = get_proxy("swap").fn(ctx)
    assert got == _reference_swap(_Toy, x, 7, sw.REPEATS)
    assert 1 < got <= min(2 ** 16, 4 * 16 + 2 * 16 * 2)  # bounded by patterns and by neurons (r2 called twice)
    with pytest.raises(ValueError, match="NAS-Bench-201"):  # no mu, sigma for this network
        get_proxy("swap_reg").fn(ctx)


def test_swap_equals_the_reference_on_an_nb201_cell():
    task = "ImageNet16-120"
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 3, 16, 16, generator=g)
    build = partial(nb201.build_network, MEDIAN, task)
    ctx = ProxyContext(MEDIAN, task, 2, build, (3, 16, 16), 120, (x, None))
    got = sw._swap(ctx, repeats=2)
    # channels-last layout here, contiguous there: another conv kernel may flip a ReLU output at ~0
    assert got == pytest.approx(_reference_swap(build, x, 2, 2), rel=1e-3)
    assert got > 1000


def test_regular_factor_is_one_at_mu_and_gaussian_in_the_size():
    mu, sigma = sw.SWAP_REG_MU["cifar10"], sw.SWAP_REG_SIGMA
    assert sw.regular_factor(mu, mu, sigma) == 1.0
    sd = math.sqrt(sigma / 2)
    assert sw.regular_factor(mu + sd, mu, sigma) == pytest.approx(math.exp(-0.5), rel=1e-12)
    assert sw.regular_factor(mu - 2 * sd, mu, sigma) == pytest.approx(math.exp(-2.0), rel=1e-12)


def test_swap_reg_is_swap_times_the_factor_of_the_network_size():
    task = "cifar100"
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    arch = "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|skip_connect~2|"
    ctx = ProxyContext(arch, task, 0, partial(nb201.build_network, arch, task), (3, 32, 32), 100, (x, None))
    plain = sw._swap(ctx, repeats=2)
    reg = sw._swap(ctx, regular=True, repeats=2)
    p = nb201.count_params(nb201.build_network(arch, task)) / 1e3
    assert reg == pytest.approx(plain * math.exp(-(p - sw.SWAP_REG_MU[task]) ** 2 / sw.SWAP_REG_SIGMA), rel=1e-12)
    assert 0 < reg < plain


def test_nb201_constants_are_the_spaces_mean_and_twice_its_variance():
    # every cell weighted once: group the 5^6 cells by their numbers (k1, k3) of conv1x1 / conv3x3 edges, build
    # one CIFAR-10 network per group and count its parameters; another head adds the same to every cell
    def params(ops, task="cifar10"):
        return nb201.count_params(nb201.NB201Network(nb201.arch_str(ops), nb201.NUM_CLASSES[task])) / 1e3

    none, c1, c3 = "none", "nor_conv_1x1", "nor_conv_3x3"
    total, total_sq, cells = 0.0, 0.0, 0
    for k1 in range(7):
        for k3 in range(7 - k1):
            p = params([c1] * k1 + [c3] * k3 + [none] * (6 - k1 - k3))
            rest = 6 - k1 - k3  # each of the other edges: none, skip or pool
            mult = factorial(6) // (factorial(k1) * factorial(k3) * factorial(rest)) * 3 ** rest
            total, total_sq, cells = total + mult * p, total_sq + mult * p * p, cells + mult
    assert cells == 5 ** 6
    mean = total / cells
    assert sw.SWAP_REG_SIGMA == pytest.approx(2 * (total_sq / cells - mean ** 2), rel=1e-9)
    for task in nb201.TASKS:
        head = params([none] * 6, task) - params([none] * 6)
        assert sw.SWAP_REG_MU[task] == pytest.approx(mean + head, abs=1e-9)


def test_a_network_without_relu_modules_is_refused():
    class NoRelu(nn.Module):
        def __init__(self, bn=True):
            super().__init__()
            self.c = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return torch.relu(self.c(x)).mean(dim=(2, 3))

    x = torch.randn(16, 3, 4, 4)
    ctx = ProxyContext("toy", "cifar10", 0, NoRelu, (3, 4, 4), 2, (x, None))
    with pytest.raises(ValueError, match="no nn.ReLU"):
        sw._swap(ctx, repeats=1)


def test_registry_records_the_setting():
    for name in ("swap", "swap_reg"):
        p = get_proxy(name)
        assert p.needs_data and not p.needs_labels and p.higher_is_better and p.cost == "forward"
        assert "N(0,1)" in p.init and "first 16" in p.inputs and p.bn_mode.startswith("train")
    assert (sw.SAMPLES, sw.REPEATS) == (16, 32)
