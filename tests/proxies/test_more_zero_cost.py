"""Zen-score, ZiCo, MeCo / MeCo_opt and l2_norm: each against a naive implementation of its definition on a
tiny network, plus sanity and determinism on real NB201 cells."""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

import proxybench.proxies.more_zero_cost as mzc  # noqa: F401  (registers the proxies)
from proxybench.datasets import nb201
from proxybench.proxies import ProxyContext, get_proxy

NAMES = ("zen", "zico", "meco", "meco_opt", "l2_norm")
BIG = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SKIPS = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
POOLS = "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|"
NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
# node 1 is always zero, so the convs reading it feed their BN an all-zero input; node 3 still sees the input
DEAD_BN = "|none~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|skip_connect~2|"


class _Toy(nn.Module):
    """conv-BN-ReLU (in place: BN's output tensor changes after BN's hook ran), conv (+ a branch multiplied
    by 0: zero gradients), an Identity (a tensor two modules return), global pooling, linear."""

    def __init__(self, bn=True, width=6):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, width, 3, padding=1)
        self.dead = nn.Conv2d(4, width, 1)
        self.same = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, 5)

    def features(self, x):
        h = self.act(self.bn1(self.conv1(x)))
        return self.same(torch.relu(self.conv2(h) + 0.0 * self.dead(h)))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One thread: on a shared 2-core machine two threads that wait for each other are several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _toy_ctx(seed=0, batch=None, width=6):
    return ProxyContext("toy", "toy", seed, partial(_Toy, width=width), (3, 6, 5), 5, batch)


def _toy_net(seed, width=6):
    torch.manual_seed(seed)  # the context's documented seeding of the default init
    return _Toy(width=width)


def _nb201_ctx(arch, seed=0, task="cifar10"):
    res = nb201.RESOLUTION[task]
    g = torch.Generator().manual_seed(7)
    batch = (torch.randn(16, 3, res, res, generator=g), torch.randint(0, nb201.NUM_CLASSES[task], (16,), generator=g))
    return ProxyContext(arch, task, seed, partial(nb201.build_network, arch, task), (3, res, res),
                        nb201.NUM_CLASSES[task], batch)


def _score(name, ctx):
    return get_proxy(name).fn(ctx)


def test_records():
    want = {"zen": (False, False, "rank_last"), "zico": (True, True, "exclude"), "meco": (False, False, "exclude"),
            "meco_opt": (False, False, "exclude"), "l2_norm": (False, False, "exclude")}
    for name, (data, labels, policy) in want.items():
        p = get_proxy(name)
        assert (p.needs_data, p.needs_labels, p.nan_policy, p.family) == (data, labels, policy, "zero-cost")
        assert p.higher_is_better and p.paper and p.description


# ---------------------------------------------------------------------------------------------- l2_norm

def test_l2_norm_is_the_sum_of_layer_norms():
    net = _toy_net(3)
    expected = 0.0
    for layer in (net.conv1, net.conv2, net.dead, net.fc):  # every Conv2d/Linear weight, no biases, no BN
        expected += math.sqrt(sum(float(w) ** 2 for w in layer.weight.detach().reshape(-1)))
    assert _score("l2_norm", _toy_ctx(3)) == pytest.approx(expected, rel=1e-12)


# -------------------------------------------------------------------------------------------------- zico

def test_zico_against_per_half_gradients():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 3, 6, 5, generator=g), torch.randint(0, 5, (10,), generator=g)
    net = _toy_net(2)
    net.train()
    grads = {name: [] for name in ("conv1", "conv2", "dead", "fc")}
    for lo, hi in ((0, 5), (5, 10)):
        net.zero_grad()
        nn.functional.cross_entropy(net(x[lo:hi]), y[lo:hi]).backward()
        for name in grads:
            grads[name].append(getattr(net, name).weight.grad.numpy().astype(np.float64).ravel())
    expected = 0.0
    for name, gs in grads.items():
        gs = np.array(gs)
        total = 0.0
        for j in range(gs.shape[1]):
            mean_abs = (abs(gs[0, j]) + abs(gs[1, j])) / 2
            std = math.sqrt(((gs[0, j] - gs[1, j]) / 2) ** 2)  # population std of two values
            if std != 0:
                total += mean_abs / std
        if name == "dead":
            assert total == 0  # its gradients are exactly 0: the layer is skipped
        else:
            expected += math.log(total)
    assert _score("zico", _toy_ctx(2, batch=(x, y))) == pytest.approx(expected, rel=1e-10)


# -------------------------------------------------------------------------------------------------- meco

def _outputs_of_every_module(net, x):
    outs = []
    hooks = [m.register_forward_hook(lambda m, a, o: outs.append(o.detach().clone())) for m in net.modules()]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return outs


def _naive_min_eig_corr(fea: np.ndarray) -> float:
    """Smallest eigenvalue of the channels' Pearson correlation, NaN entries (constant channels, one
    position) set to 0 as MeCo does."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy: "degrees of freedom <= 0" for one position
        corr = np.atleast_2d(np.corrcoef(fea))
    corr[~np.isfinite(corr)] = 0.0
    return float(np.linalg.eigvalsh(corr).min())


def test_meco_against_numpy_on_every_module():
    net = _toy_net(4)
    net.train()
    x = torch.randn((1, 3, 6, 5), generator=torch.Generator().manual_seed(4))  # the documented input draw
    outs = _outputs_of_every_module(net, x)
    assert len(outs) == 9  # conv1, bn1, act, conv2, dead, same, pool, fc and the network itself
    expected = sum(_naive_min_eig_corr(o[0].reshape(o.shape[1], -1).double().numpy()) for o in outs)
    assert _score("meco", _toy_ctx(4)) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_meco_opt_samples_eight_channels_and_weights_by_channels():
    width = 16
    net = _toy_net(5, width=width)
    net.train()
    g = torch.Generator().manual_seed(5)
    x = torch.randn((1, 3, 6, 5), generator=g)
    expected = 0.0
    for o in _outputs_of_every_module(net, x):
        fea = o[0].reshape(o.shape[1], -1).double()
        if fea.shape[1] < 2:
            continue  # one position per channel: a zero matrix, nothing drawn
        c = fea.shape[0]
        rows = torch.randperm(c, generator=g)[: min(8, c)]
        expected += _naive_min_eig_corr(fea[rows].numpy()) * c / min(8, c)
    assert _score("meco_opt", _toy_ctx(5, width=width)) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_meco_opt_equals_meco_when_no_module_has_more_than_eight_channels():
    for seed in (0, 1):
        assert _score("meco_opt", _toy_ctx(seed)) == pytest.approx(_score("meco", _toy_ctx(seed)), rel=1e-9)


# --------------------------------------------------------------------------------------------------- zen

def _zen_setup(seed, batch_size=64, shape=(3, 6, 5)):
    net = _toy_net(seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():  # module order, as documented: N(0,1) weights, zero biases, BN affine 1 / 0
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                if m.bias is not None:
                    m.bias.zero_()
        net.bn1.weight.fill_(1.0)
        net.bn1.bias.zero_()
    x = torch.randn((batch_size, *shape), generator=g)
    eps = torch.randn((batch_size, *shape), generator=g)
    return net.train(), x, x + 0.01 * eps


def test_zen_paper_definition_against_numpy():
    net, x, x2 = _zen_setup(6)
    with torch.no_grad():
        bn_in = net.conv1(x).double().numpy()  # the one BN layer's input on the batch x
        f1 = net.features(x).double().numpy()
        f2 = net.features(x2).double().numpy()
    log_delta = math.log(np.mean([math.sqrt(((a - b) ** 2).sum()) for a, b in zip(f1, f2, strict=True)]))
    channel_vars = [bn_in[:, c].var() for c in range(bn_in.shape[1])]  # biased, as BN normalises with
    expected = log_delta + math.log(math.sqrt(np.mean(channel_vars)))
    assert _score("zen", _toy_ctx(6)) == pytest.approx(expected, rel=1e-7)  # BN's own float32 variance


def test_zen_official_variant_reproduces_running_var_and_l1():
    net, x, x2 = _zen_setup(7)
    with torch.no_grad():
        v1 = net.conv1(x).double().numpy()
        f1 = net.features(x).double().numpy()
        v2 = net.conv1(x2).double().numpy()
        f2 = net.features(x2).double().numpy()
    unbiased = [np.var(v[:, c], ddof=1) for v in (v1, v2) for c in range(4)]
    running = 0.81 + 0.09 * np.array(unbiased[:4]) + 0.1 * np.array(unbiased[4:])  # momentum 0.1 from 1
    expected = math.log(np.mean(np.abs(f1 - f2).sum(axis=(1, 2, 3)))) + math.log(math.sqrt(running.mean()))
    assert mzc._zen(_toy_ctx(7), official=True) == pytest.approx(expected, rel=1e-6)  # float32 features


def test_pre_gap_features_of_nb201_is_the_pool_input():
    net = nb201.build_network(DEAD_BN)
    x = torch.randn(2, 3, 32, 32)
    seen = []
    handle = net.pool.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    net(x)
    handle.remove()
    assert torch.equal(mzc.pre_gap_features(net, x), seen[0])


def test_zen_is_minus_inf_when_the_output_ignores_the_input_and_finite_with_dead_bn_layers():
    assert _score("zen", _nb201_ctx(NONE)) == -math.inf
    assert get_proxy("zen").nan_policy == "rank_last"
    assert math.isfinite(_score("zen", _nb201_ctx(DEAD_BN)))


# ------------------------------------------------------------------------------------ NB201 sanity checks

@pytest.mark.parametrize("name", ["zen", "zico", "meco", "l2_norm"])
def test_the_all_conv_cell_beats_the_parameter_free_cells(name):
    big = _score(name, _nb201_ctx(BIG))
    for small in (SKIPS, POOLS):
        assert big > _score(name, _nb201_ctx(small)), (name, small)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed_and_seed_dependent(name):
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    a = _score(name, _nb201_ctx(arch, seed=1))
    assert math.isfinite(a)
    assert a == _score(name, _nb201_ctx(arch, seed=1))
    assert a != _score(name, _nb201_ctx(arch, seed=2))
