"""GradSign / GradSign_mean: a closed form on a one-layer linear model, the vmap per-sample gradients against a
plain loop of single-sample backward passes in float64, the sum/mean relation, and facts of the definition."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import replace_all_batch_norm_modules_

from proxybench.datasets import nb201
from proxybench.proxies import ProxyContext, get_proxy
from proxybench.proxies import gradsign as gs

MEDIAN = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"


class _Linear(nn.Module):
    """logits = W x (no bias): per-sample dL/dW = (softmax(W x) - onehot(y)) x^T."""

    def __init__(self, bn=True, d=6, k=4):
        super().__init__()
        self.fc = nn.Linear(d, k, bias=False)

    def forward(self, x):
        return self.fc(x.flatten(1))


class _ConvNet(nn.Module):
    """conv-BN-ReLU, a second conv-BN, a 1x1 conv on a branch multiplied by 0 (exactly zero gradients), pooling,
    linear with bias: BN on a single sample's statistics matters here."""

    def __init__(self, bn=True):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(3)
        self.c2 = nn.Conv2d(3, 4, 3, padding=1)
        self.b2 = nn.BatchNorm2d(4)
        self.dead = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.b2(self.c2(h)) + 0.0 * self.dead(h))
        return self.fc(h.mean(dim=(2, 3)))


def _ctx(build, shape, classes, x, y, dtype=torch.float32, seed=0):
    return ProxyContext("toy", "cifar10", seed, build, shape, classes, (x, y), dtype=dtype)


def _data(n, shape, classes, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_closed_form_on_a_one_layer_linear_model():
    x, y = _data(9, (1, 2, 3), 4)
    ctx = _ctx(_Linear, (1, 2, 3), 4, x, y, dtype=torch.float64)
    w = ctx.network().fc.weight.detach().double().numpy()
    xs = x.double().flatten(1).numpy()
    logits = xs @ w.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y.numpy()] -= 1.0  # dL/dlogits of each sample
    grads = p[:, :, None] * xs[:, None, :]  # (samples, k, d)
    expected = float(np.abs(np.sign(grads).sum(0)).sum())
    assert get_proxy("gradsign").fn(ctx) == expected
    assert get_proxy("gradsign_mean").fn(ctx) == pytest.approx(expected / w.size, rel=1e-15)
    # a hand count of the same: every element has 9 signs, so |sum| is odd unless a gradient is exactly 0
    assert expected % 2 == 9 * w.size % 2 and 0 < expected <= 9 * w.size


def _loop_grads(net, x, y, names):
    """Per-sample gradients the plain way: each sample alone through the train-mode network, one backward each."""
    params = dict(net.named_parameters())
    out = []
    for i in range(x.shape[0]):
        loss = F.cross_entropy(net(x[i:i + 1]), y[i:i + 1])
        out.append([g.detach() for g in torch.autograd.grad(loss, [params[k] for k in names])])
    return out


@pytest.mark.parametrize("which", ["toy", "nb201"])
def test_vmap_per_sample_gradients_equal_a_plain_loop_in_float64(which):
    if which == "toy":
        x, y = _data(7, (2, 5, 5), 3)
        ctx = _ctx(_ConvNet, (2, 5, 5), 3, x, y, dtype=torch.float64)
    else:
        task = "ImageNet16-120"
        x, y = _data(5, (3, 16, 16), 120)
        ctx = ProxyContext(MEDIAN, task, 1, partial(nb201.build_network, MEDIAN, task), (3, 16, 16), 120, (x, y),
                           dtype=torch.float64)
    ref_net = ctx.network()
    ref_net.train()
    names = gs.weight_names(ref_net)
    xd = x.double()
    ref = _loop_grads(ref_net, xd, y, names)
    net = ctx.network()
    net.train()
    replace_all_batch_norm_modules_(net)
    got = list(gs.per_sample_weight_grads(net, xd, y, names))
    got = {k: torch.cat([g[k] for g in got]) for k in names}
    for j, k in enumerate(names):
        want = torch.stack([r[j] for r in ref])
        torch.testing.assert_close(got[k], want, rtol=1e-10, atol=1e-13)
    # the score from the loop's gradients, np.sign / np.nansum as the official code
    flat = np.stack([np.concatenate([g.numpy().ravel() for g in r]) for r in ref])
    expected = float(np.nansum(np.abs(np.sign(flat).sum(0))))
    assert get_proxy("gradsign").fn(ctx) == expected
    if which == "toy":  # the 0 * branch: its weight's gradients are exactly 0 and add nothing
        assert float(got["dead.weight"].abs().max()) == 0.0


def test_each_sample_alone_differs_from_batch_statistics():
    # the definition's per-sample BN statistics matter: a batch-BN per-sample gradient (the whole batch through
    # BN, one backward per sample's loss) gives another value on this toy
    x, y = _data(6, (2, 5, 5), 3)
    ctx = _ctx(_ConvNet, (2, 5, 5), 3, x, y, dtype=torch.float64)
    net = ctx.network()
    net.train()
    names = gs.weight_names(net)
    params = dict(net.named_parameters())
    out = net(x.double())
    signs = 0
    for i in range(6):
        gr = torch.autograd.grad(F.cross_entropy(out[i:i + 1], y[i:i + 1]), [params[k] for k in names],
                                 retain_graph=True)
        signs = signs + torch.cat([g.sign().flatten() for g in gr])
    assert float(signs.abs().sum()) != get_proxy("gradsign").fn(ctx)


def _nb201_ctx(arch=MEDIAN, task="ImageNet16-120", n=8, seed=0):
    res = nb201.RESOLUTION[task]
    x, y = _data(n, (3, res, res), nb201.NUM_CLASSES[task], seed=seed + 11)
    return ProxyContext(arch, task, seed, partial(nb201.build_network, arch, task), (3, res, res),
                        nb201.NUM_CLASSES[task], (x, y))


def test_sum_and_mean_differ_by_exactly_the_weight_count_and_share_one_pass():
    builds = []
    ctx = _nb201_ctx()
    build = ctx.build
    ctx.build = lambda bn=True: builds.append(bn) or build(bn=bn)
    total = get_proxy("gradsign").fn(ctx)
    mean = get_proxy("gradsign_mean").fn(ctx)
    net = nb201.build_network(MEDIAN, "ImageNet16-120")
    n_weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert n_weights < sum(p.numel() for p in net.parameters())  # biases and BN affine are not counted
    assert total / mean == pytest.approx(n_weights, rel=1e-12)
    assert len(builds) == 1  # the second name read the memo


def test_a_duplicated_batch_doubles_the_score_and_a_batch_of_one_counts_nonzero_gradients():
    # samples are independent (each alone through BN): [x; x] doubles every sign sum; one sample: |sign| = 1
    # for every nonzero gradient
    x, y = _data(5, (2, 5, 5), 3)
    one = _ctx(_ConvNet, (2, 5, 5), 3, x, y, dtype=torch.float64)
    two = _ctx(_ConvNet, (2, 5, 5), 3, torch.cat([x, x]), torch.cat([y, y]), dtype=torch.float64)
    assert get_proxy("gradsign").fn(two) == 2 * get_proxy("gradsign").fn(one)
    single = _ctx(_ConvNet, (2, 5, 5), 3, x[:1], y[:1], dtype=torch.float64)
    net = single.network()
    net.train()
    gr = _loop_grads(net, x[:1].double(), y[:1], gs.weight_names(net))[0]
    assert get_proxy("gradsign").fn(single) == sum(int((g != 0).sum()) for g in gr)


def test_uses_the_first_64_images_of_a_larger_minibatch():
    x, y = _data(70, (2, 5, 5), 3)
    big = _ctx(_ConvNet, (2, 5, 5), 3, x, y, dtype=torch.float64)
    first = _ctx(_ConvNet, (2, 5, 5), 3, x[:64], y[:64], dtype=torch.float64)
    assert gs.BATCH_SIZE == 64
    assert get_proxy("gradsign").fn(big) == get_proxy("gradsign").fn(first)


def test_registry_records_the_setting():
    for name in ("gradsign", "gradsign_mean"):
        p = get_proxy(name)
        assert p.needs_data and p.needs_labels and p.higher_is_better and p.cost == "forward+backward"
        assert "first 64" in p.inputs and "each image alone" in p.inputs and "single image" in p.bn_mode
