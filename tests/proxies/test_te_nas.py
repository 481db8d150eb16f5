"""Independent checks of TE-NAS's indicators (proxies/te_nas.py): the NTK condition number, the linear regions."""

from __future__ import annotations

import itertools
import math
from functools import partial

import pytest
import torch
from torch import nn

from proxybench.datasets import nb201
from proxybench.proxies import ProxyContext, get_proxy, list_proxies, te_nas

MEDIAN = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def _ctx(arch, n=8, seed=0, build=None):
    g = torch.Generator().manual_seed(5)
    batch = (torch.randn(n, 3, 32, 32, generator=g), torch.zeros(n, dtype=torch.long))
    return ProxyContext(arch, "cifar10", seed, build or partial(nb201.build_network, arch, "cifar10"), (3, 32, 32),
                        10, batch)


# ------------------------------------------------------------------------------------------------ the NTK

def test_ntk_of_a_linear_model_is_x_xt_times_the_classes_and_ignores_the_bias():
    # f(x) = W x + b with 3 outputs: d(sum_c f_c)/dW = (x, x, x) per sample, so K = 3 X X^T; the bias is not
    # differentiated (the official NTK takes only parameters named *weight*, else K would be 3 (X X^T + 1)).
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    net = nn.Linear(2, 3).double()
    gram = te_nas.ntk_gram(net, x)
    assert torch.allclose(gram, 3 * torch.tensor([[1.0, 1.0], [1.0, 2.0]], dtype=torch.float64), rtol=0, atol=1e-14)
    # eigenvalues of [[1, 1], [1, 2]]: (3 +- sqrt 5) / 2
    assert te_nas.condition_number(gram) == pytest.approx((3 + math.sqrt(5)) / (3 - math.sqrt(5)), rel=1e-12)


def _tiny_bn_net():
    torch.manual_seed(3)
    return nb201.NB201Network(MEDIAN, 4, channels=2, cells_per_stage=1).double().train()


def test_batched_per_sample_gram_equals_a_loop_of_backward_passes_in_float64():
    net = _tiny_bn_net()
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weights = te_nas.ntk_weights(net)
    rows = []
    for i in range(x.shape[0]):  # a fresh batch forward for every sample, one plain backward each
        out = net(x)
        grads = torch.autograd.grad(out[i].sum(), weights)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    jac = torch.stack(rows)
    loop = jac @ jac.T
    for chunk in (1, 4, 6):
        assert torch.allclose(te_nas.ntk_gram(net, x, chunk=chunk), loop, rtol=1e-12, atol=0)


def test_the_gram_keeps_the_coupling_of_train_mode_batch_statistics():
    # per-sample gradients of ONE batch forward (BN statistics of the whole batch) are not those of
    # separate one-image forwards: a decoupled shortcut would give the second matrix
    net = _tiny_bn_net()
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    weights = te_nas.ntk_weights(net)
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(net(x[i:i + 1]).sum(), weights)])
            for i in range(6)]
    decoupled = torch.stack(rows) @ torch.stack(rows).T
    assert not torch.allclose(te_nas.ntk_gram(net, x), decoupled, rtol=1e-3)


def test_condition_number_of_degenerate_and_diagonal_matrices():
    assert te_nas.condition_number(torch.diag(torch.tensor([4.0, 1.0, 2.0], dtype=torch.float64))) == 4.0
    assert math.isnan(te_nas.condition_number(torch.zeros(3, 3, dtype=torch.float64)))
    v = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    assert te_nas.condition_number(v.T @ v) == math.inf  # rank one: lambda_min = 0 (or rounded below)


def test_ntk_condition_is_invariant_to_scaling_the_input_of_a_bias_free_relu_network():
    # f(a x) = a f(x) for a bias-free ReLU network, so every gradient scales by a, K by a^2: kappa unchanged
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7, bias=False), nn.ReLU(), nn.Linear(7, 3, bias=False)).double()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    k = te_nas.ntk_condition(net, x)
    assert math.isfinite(k) and k > 1
    assert te_nas.ntk_condition(net, 3.7 * x) == pytest.approx(k, rel=1e-10)
    assert te_nas.ntk_condition(net, x + 1.0) != pytest.approx(k, rel=1e-3)  # a shift is no symmetry


def test_te_nas_ntk_scores_the_official_thin_network_on_the_minibatch():
    ctx = _ctx(MEDIAN)
    thin = te_nas.thin_ntk_network(ctx)
    assert thin.stem[0].out_channels == 3 and len(thin.cells) == 3 + 2  # one cell per stage + two reductions
    assert get_proxy("te_nas_ntk").fn(ctx) == pytest.approx(te_nas.ntk_condition(thin.train(), ctx.inputs), rel=1e-6)
    # the all-skip thin network's parameters by hand: stem 3*3*9 + BN 6; reductions 3->6 and 6->12
    # (conv_a + BN, conv_b + BN, 1x1 shortcut); last BN 24; classifier 12*10 + 10
    by_hand = (81 + 6) + (162 + 12 + 324 + 12 + 18) + (648 + 24 + 1296 + 24 + 72) + 24 + 130
    assert nb201.count_params(te_nas.thin_ntk_network(_ctx(ALL_SKIP))) == by_hand


def test_degenerate_cell_and_other_spaces():
    ctx = _ctx(ALL_NONE)
    assert math.isnan(get_proxy("te_nas_ntk").fn(ctx))  # no gradient reaches any weight: ranks last
    assert get_proxy("te_nas_lr").fn(ctx) == 1.0  # the output ignores the input: one region
    other = _ctx(MEDIAN, build=lambda bn=True: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                                             nn.Flatten(), nn.LazyLinear(10)))
    for name in ("te_nas_ntk", "te_nas_lr"):
        with pytest.raises(ValueError, match="NB201 cells only"):
            get_proxy(name).fn(other)
    # the unregistered full-size form scores any network (here 8 samples, 4*30*30*10 + 4 + 4*27 weights)
    assert 1 < te_nas._te_nas_ntk(other, full=True) < math.inf


def test_kaiming_redraw_uses_the_declared_fan():
    g = torch.Generator().manual_seed(0)
    for mode, fan in (("fan_in", 64 * 9), ("fan_out", 32 * 9)):
        net = nn.Sequential(nn.Conv2d(64, 32, 3), nn.BatchNorm2d(32), nn.Linear(8, 8))
        with torch.no_grad():
            net[1].weight.fill_(3.0)
        te_nas._kaiming_(net, g, mode)
        assert float(net[0].weight.detach().std()) == pytest.approx(math.sqrt(2 / fan), rel=0.03)
        assert float(net[0].bias.detach().abs().max()) == 0.0 == float(net[2].bias.detach().abs().max())
        assert bool((net[1].weight == 1).all()) and bool((net[1].bias == 0).all())


# ------------------------------------------------------------------------------------------ linear regions

def test_linear_regions_of_a_one_dimensional_relu_network_by_hand():
    # ReLU(x), ReLU(x - 1), ReLU(2 - x): breakpoints at 0, 1, 2 cut the line into 4 regions
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0], [-1.0]]))
        net[0].bias.copy_(torch.tensor([0.0, -1.0, 2.0]))
    line = torch.linspace(-5, 5, 1001)[:, None]
    assert te_nas.count_linear_regions(net, [line], four_d_only=False) == 4
    assert te_nas.count_linear_regions(net, [torch.linspace(0.1, 0.9, 50)[:, None]], four_d_only=False) == 1
    assert te_nas.count_linear_regions(net, [torch.tensor([[-1.0]]), torch.tensor([[0.5], [3.0]])],
                                       four_d_only=False) == 3
    # the official hook only sees ReLUs with a 4-D input: none here, so every sample shares one pattern
    assert te_nas.count_linear_regions(net, [line]) == 1


@pytest.mark.parametrize("lines,regions", [(3, 7), (4, 11)])
def test_linear_regions_of_a_two_dimensional_relu_network_by_hand(lines, regions):
    # x = 0, y = 0, x + y = 1 (and x - y = 2): lines in general position, every crossing inside [-3, 3]^2,
    # cut the plane into 1 + n + n(n-1)/2 regions: 7 for three lines, 11 for four
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])[:lines]
    b = torch.tensor([0.0, 0.0, -1.0, -2.0])[:lines]
    net = nn.Sequential(nn.Linear(2, lines), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(w)
        net[0].bias.copy_(b)
    grid = torch.linspace(-3, 3, 121)
    pts = torch.cartesian_prod(grid, grid)
    assert te_nas.count_linear_regions(net, [pts], four_d_only=False) == regions


def test_count_patterns_agrees_with_a_set_and_with_the_official_multiplicity_sum():
    g = torch.Generator().manual_seed(0)
    for n, k in ((200, 6), (50, 1), (30, 40)):
        p = torch.rand(n, k, generator=g) < 0.5
        as_set = len({tuple(r) for r in p.tolist()})
        a = p.double()
        differ = a @ (1 - a).T + (1 - a) @ a.T  # Hamming distances
        multiplicity = (differ == 0).sum(1).double()
        assert te_nas.count_patterns(p) == as_set == round(float((1 / multiplicity).sum()))


def test_sign_patterns_ignore_a_positive_input_scale_of_a_bias_free_relu_network():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 2, bias=False), nn.ReLU(), nn.Conv2d(4, 3, 2, bias=False), nn.ReLU())
    x = torch.randn(64, 1, 3, 3, generator=torch.Generator().manual_seed(4))
    base = te_nas.sign_patterns(net, x)
    assert base.shape == (64, 4 * 4 + 3 * 1)
    for scale in (2.0, 0.25):  # powers of two: the pre-activations scale exactly
        assert torch.equal(te_nas.sign_patterns(net, scale * x), base)
    assert not torch.equal(te_nas.sign_patterns(net, -x), base)


def test_crops_are_one_channel_windows_of_the_images():
    imgs = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    c = te_nas.crops(imgs, torch.Generator().manual_seed(1), 40)
    assert c.shape == (40, 1, 3, 3)
    windows = {tuple(imgs[i, ch, t:t + 3, s:s + 3].reshape(-1).tolist())
               for i, ch, t, s in itertools.product(range(4), range(3), range(6), range(6))}
    assert all(tuple(w.reshape(-1).tolist()) in windows for w in c)


def test_te_nas_lr_counts_the_one_cell_c1_network_on_3000_crops():
    ctx = _ctx(ALL_CONV)
    torch.manual_seed(ctx.seed)
    net = te_nas.ThinRegionNetwork(ALL_CONV, 10).train()
    assert nb201.count_params(net) == 6 * (9 + 2) + 2 + 20  # six 3x3 convs at one channel, BN, linear 1->10
    g = te_nas._generator(ctx)
    batches = [te_nas.crops(ctx.inputs, g, 1000) for _ in range(3)]
    # six ReLU-conv edges and the last BN-ReLU, each 9 neurons on a 3x3 crop
    assert te_nas.sign_patterns(net, batches[0]).shape == (1000, 7 * 9)
    expected = te_nas.count_linear_regions(net, batches)
    assert get_proxy("te_nas_lr").fn(ctx) == float(expected)
    assert 1 < expected < 3000  # the thin network does not saturate at its 3000 samples
    # the all-skip cell has only the last BN-ReLU: at most 2^9 patterns
    assert get_proxy("te_nas_lr").fn(_ctx(ALL_SKIP)) <= 512


def test_records():
    ntk, lr = get_proxy("te_nas_ntk"), get_proxy("te_nas_lr")
    assert not ntk.higher_is_better and ntk.nan_policy == "rank_last" and lr.higher_is_better
    for p in (ntk, lr, get_proxy("te_nas_ntk_kaiming"), get_proxy("te_nas_lr_kaiming")):
        assert p.needs_data and not p.needs_labels and p.init and p.inputs and p.bn_mode
    assert "te_nas" not in list_proxies()  # the rank sum over a set is built by the suite's core
