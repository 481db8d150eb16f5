"""AZ-NAS components: each statistic against a case whose value is known by construction, the one-backward
trick against a plain loop of per-block backward passes (float64), the per-cell memo against separate calls, and
the setting (init, signs, records). Agreement with the official code on real NB201 cells is checked by a script
outside the repository (it needs the official code): see the report of the change."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from proxybench.datasets import nb201
from proxybench.proxies import ProxyContext, get_proxy, list_proxies
from proxybench.proxies import az_nas as az

MEDIAN = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
MIXED = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|none~2|"
IDENTITY = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"  # every cell is the identity
NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # every cell outputs zeros
SKIPS = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
TASK = "ImageNet16-120"  # 16x16 images: a quarter of CIFAR's cost, the same 18 maps


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ctx(arch, task=TASK, seed=0, dtype=torch.float32, requested=(), batch=None):
    res = nb201.RESOLUTION[task]
    return ProxyContext(arch, task, seed, partial(nb201.build_network, arch, task), (3, res, res),
                        nb201.NUM_CLASSES[task], batch, requested=tuple(requested), dtype=dtype)


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _as_map(rows: torch.Tensor, b: int, hw: int) -> torch.Tensor:
    """A (b*hw*hw) x C matrix as a (b, C, hw, hw) map whose (B*H*W) x C matrix (rows in (b, y, x) order) is it."""
    c = rows.shape[1]
    return rows.reshape(b, hw, hw, c).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------- expressivity

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_entropy_of_an_isotropic_map_is_log_c(dtype):
    # columns 1..C of a Sylvester-Hadamard matrix: zero mean, orthogonal, equal norms -> covariance = I
    c = 16
    f = _as_map(_hadamard(256)[:, 1:c + 1], 4, 8)
    expected = -c * (1 / c) * math.log(1 / c + az.ENTROPY_EPS)
    assert az.map_entropy(f, dtype) == pytest.approx(expected, rel=1e-12 if dtype == torch.float64 else 1e-6)
    assert expected == pytest.approx(math.log(c), rel=1e-6)


def test_entropy_of_a_known_spectrum_and_of_a_rank_one_map():
    lam = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    f = _as_map(_hadamard(128)[:, 1:9] * lam.sqrt(), 2, 8)  # covariance diag(lam)
    p = lam / lam.sum()
    expected = float(-(p * torch.log(p + 1e-8)).sum())
    assert az.map_entropy(f) == pytest.approx(expected, rel=1e-12)
    assert az.map_entropy(37.0 * f + 5.0) == pytest.approx(expected, rel=1e-12)  # scale and shift invariant
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2 * 8 * 8, 1, generator=g, dtype=torch.float64)
    rank_one = _as_map(v * torch.randn(1, 8, generator=g, dtype=torch.float64), 2, 8)
    assert abs(az.map_entropy(rank_one)) < 1e-7  # p = (1, 0, ..., 0): -log(1 + 1e-8) ~ -1e-8
    assert math.isnan(az.map_entropy(torch.zeros(2, 4, 3, 3)))  # sum(s) = 0: NaN (official: -> -inf)


def _maps_by_hooks(net, x):
    """The 18 maps from forward hooks on the stem and on every module of ``cells`` (not az.blocks)."""
    maps = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: maps.append(o.detach().double()))
             for m in [net.stem, *net.cells]]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return maps


def _entropy_by_numpy(f: torch.Tensor) -> float:
    z = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).numpy()
    s = np.linalg.eigvalsh(np.cov(z, rowvar=False, bias=True))  # the covariance's eigenvalues
    p = s / s.sum()
    return float(-(p * np.log(p + 1e-8)).sum())


def test_expressivity_is_the_sum_and_progressivity_the_min_of_consecutive_differences():
    ctx = _ctx(MEDIAN, requested=("az_expressivity", "az_progressivity"))  # a forward-only pass
    e, p = get_proxy("az_expressivity").fn(ctx), get_proxy("az_progressivity").fn(ctx)
    net, x, _ = az.prepare(_ctx(MEDIAN))
    h = [_entropy_by_numpy(f) for f in _maps_by_hooks(net, x)]
    assert len(h) == 18  # stem + 15 cells + 2 reductions
    assert e == pytest.approx(math.fsum(h), rel=1e-9)
    diffs = [b - a for a, b in zip(h[:-1], h[1:], strict=True)]
    assert p == pytest.approx(min(diffs), rel=1e-7, abs=1e-9)
    assert ctx.memo["_az_nas:kaiming:random:float64"]["entropies"] == pytest.approx(h, rel=1e-9)


def test_a_cell_network_without_signal_ranks_last_and_an_identity_cell_has_minus_inf_trainability():
    ctx = _ctx(NONE, requested=az.names())
    none = [get_proxy(n).fn(ctx) for n in az.names()]
    assert none[0] == none[1] == -math.inf
    # official: zero gradients give sigma = 0 and -1/(0 + 1e-6) + 2 per cell block; the reductions stay finite
    assert -1e6 < none[2] < -0.8e6
    ctx = _ctx(IDENTITY, requested=az.names())
    ident = [get_proxy(n).fn(ctx) for n in az.names()]
    assert math.isfinite(ident[0]) and ident[1] == 0.0 and ident[2] == -math.inf


def test_the_float32_artefact_cause_stage_three_maps_of_an_all_skip_cell_are_numerically_rank_deficient():
    # why the official float32 eigvalsh can return eigenvalues below -1e-8 sum(s) (-> NaN -> -inf) on such cells
    net, x, _ = az.prepare(_ctx(SKIPS))
    maps = _maps_by_hooks(net, x)
    s = torch.linalg.eigvalsh(az.map_cov(maps[-1]))
    assert float(s.min() / s.max()) < 1e-10
    s = torch.linalg.eigvalsh(az.map_cov(maps[5]))  # stage 1: well conditioned
    assert float(s.min() / s.max()) > 1e-3


# --------------------------------------------------------------------------------------------- trainability

def _matrix_with_singular_values(rows, cols, values, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    s = torch.zeros(rows, cols, dtype=torch.float64)
    s[range(len(values)), range(len(values))] = torch.tensor(values, dtype=torch.float64)
    return u @ s @ v.T


def _vjp(block, x, g_out):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(block(x), x, g_out)[0]


def test_sigma_of_a_linear_1x1_conv_is_its_largest_singular_value():
    w = _matrix_with_singular_values(6, 6, [3.0, 1.0, 0.5, 0.5, 0.2, 0.1])
    conv = nn.Conv2d(6, 6, 1, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(w[:, :, None, None])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, 16, 16, generator=g, dtype=torch.float64)
    g_out = az.signs(x.shape, g, like=x)
    g_in = _vjp(conv, x, g_out)
    # M = W^T S, S = g g^T averaged over the 16,384 positions = I + O(sqrt(6 / 16,384)): sigma close to 3, and
    # exactly the largest singular value of W^T S
    rows = g_out.permute(0, 2, 3, 1).reshape(-1, 6)
    s = rows.T @ rows / rows.shape[0]
    sigma = az.block_sigma(g_in, g_out)
    assert sigma == pytest.approx(float(torch.linalg.svdvals(w.T @ s).max()), rel=1e-10)
    assert sigma == pytest.approx(3.0, rel=0.05)
    assert az.pair_score(g_in, g_out) == pytest.approx(-sigma - 1 / (sigma + 1e-6) + 2, rel=1e-12)
    assert az.pair_score(g_out, g_out) == -math.inf  # identity block
    two = 2 * float(torch.linalg.eigvalsh(s).max())  # the block 2 I: M = 2 S
    assert az.pair_score(2 * g_out, g_out) == pytest.approx(-two - 1 / (two + 1e-6) + 2, rel=1e-10)


def test_sigma_of_a_strided_block_uses_the_pixel_unshuffle():
    # a 2x2 stride-2 conv: per output position out = W_flat @ (the 2x2 input patch), W_flat = (c_out, c_in*4)
    # in (c, dy, dx) order, the order of the unshuffled channels: sigma ~ the largest singular value of W_flat
    w = _matrix_with_singular_values(4, 12, [2.5, 1.0, 0.7, 0.3], seed=3)
    conv = nn.Conv2d(3, 4, 2, stride=2, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(w.reshape(4, 3, 2, 2))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 3, 32, 32, generator=g, dtype=torch.float64)
    g_out = az.signs((64, 4, 16, 16), g, like=x)
    assert az.block_sigma(_vjp(conv, x, g_out), g_out) == pytest.approx(2.5, rel=0.05)
    # odd resolution (7 -> 4 with a stride-2, padded conv): zero-padded to 8 before the unshuffle
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False).double()
    x = torch.randn(8, 3, 7, 7, generator=g, dtype=torch.float64)
    g_out = az.signs((8, 4, 4, 4), g, like=x)
    assert math.isfinite(az.block_sigma(_vjp(conv, x, g_out), g_out))


def test_block_sigma_equals_a_brute_force_sum_of_outer_products():
    g = torch.Generator().manual_seed(4)
    g_in = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    g_out = torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64)
    mat = torch.zeros(12, 5, dtype=torch.float64)
    for b in range(2):
        for y in range(3):
            for x in range(3):
                patch = torch.stack([g_in[b, c, 2 * y + dy, 2 * x + dx]
                                     for c in range(3) for dy in range(2) for dx in range(2)])
                mat += torch.outer(patch, g_out[b, :, y, x])
    expected = float(torch.linalg.svdvals(mat / 18).max())
    assert az.block_sigma(g_in, g_out) == pytest.approx(expected, rel=1e-12)
    assert az.block_sigma(g_in.float(), g_out.float(), torch.float32) == pytest.approx(expected, rel=1e-5)


def test_one_backward_equals_a_loop_of_per_block_backwards_in_float64():
    ctx = _ctx(MIXED, dtype=torch.float64)
    out = az.run_pass(ctx, batch_size=8)
    net, x, g = az.prepare(_ctx(MIXED, dtype=torch.float64), batch_size=8)
    feats = [net.stem(x.requires_grad_(True))]  # the official way: the maps of one graph, one autograd.grad per pair
    for cell in net.cells:
        feats.append(cell(feats[-1]))
    g_outs = {i: az.signs(feats[i].shape, g, like=feats[i]) for i in reversed(range(1, len(feats)))}
    pairs = [None] * (len(feats) - 1)
    for i in reversed(range(1, len(feats))):
        g_in = torch.autograd.grad(feats[i], feats[i - 1], g_outs[i], retain_graph=True)[0]
        pairs[i - 1] = az.pair_score(g_in, g_outs[i])
    assert out["pairs"] == pytest.approx(pairs, rel=1e-10)
    assert out["trainability"] == pytest.approx(float(np.mean(pairs)), rel=1e-12)


# ------------------------------------------------------------------------------------- memo and setting

def test_one_pass_per_cell_gives_the_values_of_separate_calls():
    builds = []

    def counting(bn=True):
        builds.append(bn)
        return nb201.build_network(MEDIAN, TASK, bn=bn)

    names = az.names()
    shared = _ctx(MEDIAN, requested=names)
    shared.build = counting
    together = [get_proxy(n).fn(shared) for n in names]
    assert len(builds) == 1 and all(math.isfinite(v) for v in together)
    # separate calls on fresh contexts: forward-only passes when trainability is not requested, and a full pass
    # when it is asked for anyway
    alone = _ctx(MEDIAN, requested=("az_expressivity",))
    assert get_proxy("az_expressivity").fn(alone) == together[0]
    assert alone.memo["_az_nas:kaiming:random:float64"]["trainability"] is None
    assert get_proxy("az_trainability").fn(alone) == together[2]
    assert get_proxy("az_progressivity").fn(_ctx(MEDIAN, requested=("az_progressivity",))) == together[1]


def test_the_float32_statistics_agree_with_float64_on_a_well_conditioned_cell():
    ctx = _ctx(MEDIAN, requested=az.names() + az.names("_fp32"))
    a = [get_proxy(n).fn(ctx) for n in az.names()]
    b = [get_proxy(n).fn(ctx) for n in az.names("_fp32")]
    assert b == pytest.approx(a, rel=1e-4)


def test_kaiming_init_inputs_and_signs():
    net = nb201.build_network(MEDIAN, TASK)
    az.reinit(net, torch.Generator().manual_seed(0), "kaiming")
    conv = net.cells[-1].edges[0][1]  # a 3x3 conv of the last stage: 64 x 64 x 9 weights, fan_in 576
    w = conv.weight.detach()
    assert float(w.std()) == pytest.approx(math.sqrt(2 / 576), rel=0.02)
    assert float(w.mean()) == pytest.approx(0.0, abs=3e-3)
    assert float(net.classifier.bias.detach().abs().max()) == 0.0
    bn = net.stem[1]
    assert bool((bn.weight == 1).all()) and bool((bn.bias == 0).all())
    az.reinit(net, torch.Generator().manual_seed(0), "pytorch")
    bound = 1 / math.sqrt(576)
    w = conv.weight.detach()
    assert float(w.abs().max()) <= bound and float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
    g = torch.Generator().manual_seed(0)
    s = az.signs((64, 16, 16, 16), g, like=torch.zeros(1))
    assert set(s.unique().tolist()) == {-1.0, 1.0} and abs(float(s.mean())) < 0.01
    _, x1, _ = az.prepare(_ctx(MEDIAN, seed=3))
    _, x2, _ = az.prepare(_ctx(MEDIAN, seed=3))
    assert x1.shape == (64, 3, 16, 16) and torch.equal(x1, x2)
    assert float(x1.std()) == pytest.approx(1.0, rel=0.02)


def test_the_real_input_variant_reads_the_minibatch():
    res = nb201.RESOLUTION[TASK]
    g = torch.Generator().manual_seed(5)
    batch = (torch.randn(8, 3, res, res, generator=g), torch.zeros(8, dtype=torch.long))
    only = ("az_expressivity_real", "az_expressivity")  # forward-only passes
    a = get_proxy("az_expressivity_real").fn(_ctx(MEDIAN, batch=batch, requested=only))
    b = get_proxy("az_expressivity_real").fn(_ctx(MEDIAN, batch=(3 * batch[0], batch[1]), requested=only))
    c = get_proxy("az_expressivity").fn(_ctx(MEDIAN, requested=only))
    assert a == pytest.approx(b, rel=1e-4)  # the stem is conv-BN (train mode): invariant to the input's scale
    assert a != pytest.approx(c, rel=1e-3)  # 8 other images than the 64 random ones


def test_registration():
    names = list_proxies("az_*")
    assert sorted(names) == sorted(n for s in az.SETTINGS for n in az.names(s))
    assert "az_nas" not in list_proxies() and "flops" in list_proxies()
    for n in names:
        p = get_proxy(n)
        assert p.higher_is_better and p.nan_policy == "rank_last" and not p.needs_labels
        assert p.needs_data == n.endswith("_real")
        assert "kaiming" in p.init and p.bn_mode.startswith("train") and p.inputs
        assert p.cost == ("forward+backward" if "trainability" in n else "forward")


# ------------------------------------------------------------------------------------------ other spaces

def _run_on(net, shape, batch_size=4):
    ctx = ProxyContext("toy", "cifar10", 0, lambda bn=True: net, shape, 10)
    return az.run_pass(ctx, batch_size=batch_size)


def test_nb101_anynet_and_darts_networks_have_their_cell_outputs_as_maps():
    from proxybench.datasets import nb101, nds

    torch.manual_seed(0)
    net = nb101.build_network([[0, 1, 1], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"],
                              stem_channels=8, num_stacks=3, modules_per_stack=1)
    out = _run_on(net, (3, 16, 16))
    assert len(out["entropies"]) == 4 and len(out["pairs"]) == 3  # stem + 3 cells (max-pools merged)
    assert all(math.isfinite(v) for v in (out["expressivity"], out["progressivity"], out["trainability"]))
    anynet = nds.AnyNet({"block_type": "res_basic_block", "ds": [1, 2], "ws": [8, 16], "ss": [1, 2],
                         "stem_type": "res_stem_cifar", "stem_w": 8}, 10, "cifar10")
    out = _run_on(anynet, (3, 16, 16))
    assert len(out["entropies"]) == 4 and all(math.isfinite(p) for p in out["pairs"])
    genotype = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1], ["avg_pool_3x3", 0], ["sep_conv_3x3", 2]],
                "normal_concat": [2, 3],
                "reduce": [["max_pool_3x3", 0], ["sep_conv_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1]],
                "reduce_concat": [2, 3]}
    darts = nds.CellNetwork(genotype, 4, 3, 10, imagenet=False)
    ctx = ProxyContext("toy", "cifar10", 0, lambda bn=True: darts, (3, 16, 16), 10, dtype=torch.float64)
    out = az.run_pass(ctx, batch_size=4)
    assert len(out["entropies"]) == 4
    # a cell reads the two previous maps: the per-pair reference is autograd.grad(map k, map k-1) on the whole
    # graph (the official way), which holds map k-2 fixed since it does not depend on map k-1
    _, x, g = az.prepare(ctx, batch_size=4)
    s0 = darts.stem(x.requires_grad_(True))
    maps, s1 = [s0], s0
    for cell in darts.cells:
        s0, s1 = s1, cell(s0, s1)
        maps.append(s1)
    g_outs = {i: az.signs(maps[i].shape, g, like=maps[i]) for i in reversed(range(1, len(maps)))}
    ref = [az.pair_score(torch.autograd.grad(maps[i], maps[i - 1], g_outs[i], retain_graph=True)[0], g_outs[i])
           for i in range(1, len(maps))]
    assert out["pairs"] == pytest.approx(ref, rel=1e-10)


def test_an_unknown_network_is_a_clear_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(ValueError, match="no feature maps known for Sequential"):
        _run_on(net, (3, 8, 8))
