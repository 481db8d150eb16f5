"""Independent checks of VKDNW (proxies/vkdnw.py): the per-sample Jacobian against plain per-sample autograd, the
covariance factor against its defining identity, the decile entropy on hand-made spectra, the invariances the
definition implies, and the whole score against a slow reference written the official code's way."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from proxybench.datasets import nb201
from proxybench.proxies import ProxyContext, get_proxy
from proxybench.proxies import vkdnw as V


class _Tiny(nn.Module):
    """Every closed form (strided/dilated/grouped conv with bias, eval BN, Linear with bias), the jvp fallback
    (GroupNorm, a Conv2d with padding='same'), and a module called twice (shared weights)."""

    def __init__(self, classes=5, width=4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=2, padding=2, dilation=2, bias=True)
        self.bn = nn.BatchNorm2d(width)
        self.gconv = nn.Conv2d(width, width, 3, padding=1, groups=2, bias=True)
        self.gn = nn.GroupNorm(2, width)
        self.same = nn.Conv2d(width, width, 3, padding="same", bias=False)
        self.shared = nn.Conv2d(width, width, 1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        h = torch.relu(self.gn(self.gconv(h)))
        h = self.shared(torch.relu(self.shared(self.same(h))))
        return self.fc(h.mean(dim=(2, 3)))


def _tiny(classes=5, width=4, seed=0):
    torch.manual_seed(seed)
    net = _Tiny(classes, width).double()
    V._kaiming_init(net, torch.Generator().manual_seed(seed))
    with torch.no_grad():  # non-trivial BN statistics and GroupNorm affine, so every tangent is exercised
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.gn.weight.uniform_(0.5, 1.5)
        net.gn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _loop_jacobian(net, x, names):
    """d logit_k(x_n) / d θ_t.flatten()[0] by ONE sample at a time and one full backward per logit."""
    params = dict(net.named_parameters())
    out = torch.zeros(x.shape[0], 0, len(names), dtype=torch.float64)
    rows = []
    for n in range(x.shape[0]):
        logits = net(x[n:n + 1])
        per_k = []
        for k in range(logits.shape[1]):
            grads = torch.autograd.grad(logits[0, k], [params[t] for t in names], retain_graph=True)
            per_k.append(torch.stack([g.flatten()[0] for g in grads]))
        rows.append(torch.stack(per_k))
    return torch.stack(rows) if rows else out


def test_jacobian_equals_plain_per_sample_autograd_in_float64():
    net = _tiny(classes=3)  # 3 logits < 4 head features: backward passes from the logits
    x = torch.randn(6, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    names = [n for n, _ in net.named_parameters()]
    logits, jac = V.per_sample_jacobian(net, x, names)
    ref = _loop_jacobian(net, x, names)
    assert jac.shape == (6, 3, len(names))
    assert torch.allclose(jac, ref, rtol=1e-10, atol=1e-12 * ref.abs().max())
    assert torch.allclose(logits, net(x).detach())
    assert all(p.requires_grad for p in net.parameters())  # restored


def test_head_feature_route_for_many_classes_gives_the_same_jacobian():
    # 4 head features < 9 classes - 1: the backward passes run from the classifier's inputs
    net = _tiny(classes=9)
    x = torch.randn(3, 3, 10, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    names = [n for n, _ in net.named_parameters()]
    _, jac = V.per_sample_jacobian(net, x, names)
    ref = _loop_jacobian(net, x, names)
    assert torch.allclose(jac, ref, rtol=1e-10, atol=1e-12 * ref.abs().max())
    # a subset of tensors that leaves the head out, and the last-logit row skipped
    _, part = V.per_sample_jacobian(net, x, names[:5], last_logit=False)
    assert torch.allclose(part, ref[:, :, :5], rtol=1e-10, atol=1e-12 * ref.abs().max())


def test_the_last_logit_never_enters_the_fisher():
    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    jac = torch.randn(4, 6, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    changed = jac.clone()
    changed[:, -1] = 1e3
    assert torch.equal(V.fisher(logits, jac), V.fisher(logits, changed))
    assert torch.all(V.cholesky_of_covariance(logits)[:, :, -1] == 0)


def test_cholesky_factor_reproduces_the_multinomial_covariance():
    p = torch.softmax(torch.randn(5, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64), dim=1)
    lo = V.cholesky_factor(p)
    assert torch.all(torch.triu(lo, diagonal=1) == 0)
    cov = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    assert torch.allclose(lo @ lo.transpose(1, 2), cov, atol=1e-14)


def test_smoothed_probabilities_carry_the_official_float16_constants():
    # 1 - float16(0.05) rounds to 0.9501953125 in float16, and float16(0.05) / 10 to 0.00499725341796875
    p = V.smoothed_probabilities(torch.zeros(1, 10, dtype=torch.float64))
    assert p[0, 0].item() == pytest.approx(0.9501953125 / 10 + 0.00499725341796875, rel=1e-15)
    assert p.sum().item() == pytest.approx(1.0001678466796875, rel=1e-15)


def test_decile_entropy_of_hand_made_spectra():
    # 1..10: deciles at positions 0.9 k of 0..9, i.e. 1 + 0.9 k, k = 1..9 (sum 49.5)
    q = [1 + 0.9 * k for k in range(1, 10)]
    hand = -sum(v / 49.5 * math.log(v / 49.5) for v in q)
    assert V.decile_entropy(torch.arange(1.0, 11.0)) == pytest.approx(hand, rel=1e-7)  # float32 positions
    assert V.decile_entropy(torch.full((50,), 3.0)) == pytest.approx(math.log(9), rel=1e-9)  # flat: the maximum
    assert V.decile_entropy(torch.zeros(20)) == 0.0  # every decile 0 (the all-'none' cell)
    # one large eigenvalue among zeros: only the 0.9 decile of 0..0, 1 is positive (position 0.9 * 9 = 8.1 < 9)
    assert V.decile_entropy(torch.tensor([0.0] * 9 + [5.0])) == pytest.approx(0.0, abs=1e-8)


def test_decile_entropy_invariances():
    s = torch.rand(128, generator=torch.Generator().manual_seed(6), dtype=torch.float64) ** 8
    h = V.decile_entropy(s)
    assert V.decile_entropy(s[torch.randperm(128, generator=torch.Generator().manual_seed(7))]) == h  # order
    assert V.decile_entropy(s * 1e4) == pytest.approx(h, rel=1e-9)  # scale (the normalisation)
    spread = torch.cat([s[:64], s[64:] ** 2])
    assert V.decile_entropy(spread) != pytest.approx(h, rel=1e-3)  # a different spectrum scores differently


def test_samples_are_independent_and_the_score_ignores_their_order():
    net = _tiny()
    x = torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(9))
    names = [n for n, _ in net.named_parameters()]
    _, jac = V.per_sample_jacobian(net, x, names)
    _, jac_p = V.per_sample_jacobian(net, x[perm], names)
    assert torch.allclose(jac_p, jac[perm], rtol=1e-12, atol=1e-14 * jac.abs().max())
    assert V.score_network(net, x[perm])["entropy"] == pytest.approx(V.score_network(net, x)["entropy"], rel=1e-10)


def test_train_mode_batchnorm_is_refused():
    net = _tiny().train()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    with pytest.raises(ValueError, match="running statistics"):
        V.per_sample_jacobian(net, x, ["conv.weight"])


def test_tied_weights_are_refused():
    net = _tiny()
    net.tied = nn.Conv2d(4, 4, 1).double()
    net.tied.weight = net.shared.weight
    with pytest.raises(ValueError, match="shared by several modules"):
        V.per_sample_jacobian(net, torch.randn(2, 3, 12, 12, dtype=torch.float64), ["shared.weight"])


def _official_way(net, x, n_tensors):
    """The code's steps with its own tools (plain loops here, torch.svd, float32 arange deciles), float64."""
    names = [n for n, _ in net.named_parameters()][:n_tensors]
    jac = _loop_jacobian(net, x, names)
    out = net(x).detach()
    a16 = torch.tensor(0.05, dtype=torch.float16)
    prob = torch.softmax(out, dim=1) * (1 - a16).item() + (a16 / out.shape[1]).item()
    q = torch.ones_like(prob) - torch.cumsum(prob, dim=1)
    q[:, -1] = 0
    q_shift = torch.roll(q, shifts=1, dims=1)
    q_shift[:, 0] = 1
    d = torch.sqrt(prob * q / q_shift)
    k = out.shape[1]
    lo = torch.zeros(out.shape[0], k, k, dtype=torch.float64)
    for n in range(out.shape[0]):
        for i in range(k):
            lo[n, i, i] = d[n, i]
            for j in range(i):
                lo[n, i, j] = -prob[n, i] / q[n, j] * d[n, j]
    a = lo @ jac
    fim = torch.mean(a.transpose(1, 2) @ a, dim=0)
    lam = torch.svd(fim).S
    quant = torch.quantile(lam, torch.arange(0.1, 1.0, 0.1).double())
    t = quant / (torch.linalg.norm(quant, ord=1).item() + 1e-10)
    return float(-(t * torch.log(t + 1e-10)).sum()), len(list(net.named_parameters()))


def test_score_equals_the_official_steps_on_a_tiny_network():
    net = _tiny(classes=7)
    x = torch.randn(10, 3, 12, 12, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    for n_tensors in (128, 6):  # all tensors, and the first 6 (the official cut)
        ours = V.score_network(net, x, n_tensors)
        ref, dim = _official_way(net, x, n_tensors)
        assert ours["dim"] == dim == 13
        assert ours["entropy"] == pytest.approx(ref, rel=1e-8)
        assert 0.0 < ours["entropy"] < math.log(9)


def _ctx(arch, channels=4, dtype=torch.float64, seed=0):
    build = partial(nb201.build_network, arch, "cifar10", channels=channels)
    return ProxyContext(arch, "cifar10", seed, build, (3, 32, 32), 10, dtype=dtype)


def test_proxy_on_a_narrow_nb201_network_matches_the_official_steps():
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    ctx = _ctx(arch, channels=2)
    score, single = get_proxy("vkdnw").fn(ctx), get_proxy("vkdnw_single").fn(ctx)  # one pass (ctx.memo)
    dim = 21 + 45 * 2  # stem 3, reductions 2 x 7, lastact 2, classifier 2; 3 per conv edge in each of 15 cells
    assert single == pytest.approx(dim + score, rel=1e-15)
    net, x = V.prepare(ctx)
    assert not net.training and x.shape == (64, 3, 32, 32)
    ref, ref_dim = _official_way(net, x[:8], 128)  # the slow loops on 8 of the 64 images
    assert ref_dim == dim
    assert V.score_network(net, x[:8])["entropy"] == pytest.approx(ref, rel=1e-8)
    assert score != pytest.approx(ref, rel=1e-3)  # the 64-image score is not the 8-image one


def test_initialisation_is_the_official_kaiming_fan_in():
    net = nb201.build_network("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "cifar10")
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(3.0)
    V._kaiming_init(net, torch.Generator().manual_seed(0))
    conv = net.cells[0].edges[0][1]  # 16 x 16 x 3 x 3: fan_in 144
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 144), rel=0.05)
    assert net.classifier.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.1)
    assert torch.all(net.classifier.bias == 0)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in net.modules()
               if isinstance(m, nn.BatchNorm2d))


def test_size_term_orders_nb201_cells_lexicographically():
    # ℵ = 21 + 45 x conv edges: steps of 45 > ln 9, the largest entropy gap, so ℵ + H orders as (ℵ, H)
    ops = ["nor_conv_3x3", "nor_conv_1x1", "nor_conv_3x3", "nor_conv_1x1", "nor_conv_3x3", "nor_conv_1x1"]
    others = ["skip_connect", "none", "avg_pool_3x3", "skip_connect", "none", "avg_pool_3x3"]
    for convs in range(7):
        net = nb201.build_network(nb201.arch_str(ops[:convs] + others[convs:]), "cifar10")
        assert len(list(net.named_parameters())) == 21 + 45 * convs
    assert 45 > math.log(9)


def test_float32_svd_floors_the_lowest_deciles_at_rounding_level():
    g = torch.Generator().manual_seed(11)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    # deciles from 1e-14 to 1e7 under a largest eigenvalue 1e11 (as on NB201 cells): the float32 SVD returns
    # ~1e-7 x 1e11 for every eigenvalue below it, float64 eigenvalues stay exact
    wide = torch.cat([torch.logspace(-14, 7, 39, dtype=torch.float64), torch.tensor([1e11], dtype=torch.float64)])
    fim = q @ torch.diag(wide) @ q.T
    exact = V.decile_entropy(wide)
    assert V.decile_entropy(torch.linalg.eigvalsh(fim).abs()) == pytest.approx(exact, rel=1e-6)
    assert V.svd32_entropy(fim) > 2 * exact
    assert V.svd32_entropy(fim) == V.decile_entropy(torch.svd(fim.float()).S)  # the code's call
    narrow = torch.linspace(1.0, 10.0, 40, dtype=torch.float64)
    assert V.svd32_entropy(q @ torch.diag(narrow) @ q.T) == pytest.approx(V.decile_entropy(narrow), rel=1e-5)


def test_float32_and_float64_agree():
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    a = get_proxy("vkdnw").fn(_ctx(arch, channels=1, dtype=torch.float32))
    b = get_proxy("vkdnw").fn(_ctx(arch, channels=1, dtype=torch.float64))
    assert a == pytest.approx(b, rel=1e-4)
