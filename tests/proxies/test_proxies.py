"""Contract tests over every registered proxy, and independent checks of each definition."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from proxybench.datasets import nb201
from proxybench.datasets.images import NORMALIZATION  # noqa: F401  (images module must import without data)
from proxybench.proxies import LabelAccessError, ProxyContext, get_proxy, list_proxies

CELLS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # degenerate: the output never sees the input
]


def _tiny_training_set(task, n_train=40, n_test=20):
    """A tiny synthetic (training, held-out) pair for proxies that train: quick, and every class present."""
    from proxybench.datasets.images import ImageSource

    res, k = nb201.RESOLUTION[task], nb201.NUM_CLASSES[task]
    rng = np.random.default_rng(7)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8)
        y = np.arange(n, dtype=np.int64) % k
        out.append(ImageSource(task, x, y, k, res, False, f"synthetic-{task}-{split}-{n}", f"synthetic {split}"))
    return tuple(out)


def _ctx(arch, task="cifar10", seed=0, proxy=None, with_batch=True):
    res = nb201.RESOLUTION[task]
    g = torch.Generator().manual_seed(123)
    batch = (torch.randn(8, 3, res, res, generator=g), torch.randint(0, nb201.NUM_CLASSES[task], (8,), generator=g))
    ctx = ProxyContext(arch, task, seed, partial(nb201.build_network, arch, task), (3, res, res),
                       nb201.NUM_CLASSES[task], batch if with_batch else None,
                       train_data=partial(_tiny_training_set, task),
                       table={"test_acc_12": 61.5, "val_acc_12": 60.25})
    if proxy is not None:
        ctx.allow_data, ctx.allow_labels = proxy.needs_data, proxy.needs_labels
    return ctx


@pytest.mark.parametrize("name", list_proxies())
@pytest.mark.parametrize("arch", CELLS)
def test_contract_finite_deterministic_and_honest_about_inputs(name, arch):
    p = get_proxy(name)
    ctx = _ctx(arch, proxy=p, with_batch=p.needs_data)
    a = p.fn(ctx)
    assert isinstance(a, float)
    if not math.isfinite(a):
        # only a degenerate network may give a non-finite score, and only under a declared policy
        assert arch == CELLS[2] and p.nan_policy == "rank_last", f"{name} gave {a} on {arch}"
    b = p.fn(_ctx(arch, proxy=p, with_batch=p.needs_data))
    if p.deterministic:  # timings (family hardware) are declared non-deterministic
        assert a == b or (math.isnan(a) and math.isnan(b)), f"{name} is not deterministic under a fixed seed"


def test_reading_labels_without_declaring_it_is_caught():
    ctx = _ctx(CELLS[0])
    ctx.allow_labels = False
    with pytest.raises(LabelAccessError, match="needs_labels"):
        _ = ctx.targets


def test_params_equals_the_benchmark_count():
    for arch in CELLS[:2]:
        assert get_proxy("params").fn(_ctx(arch)) == nb201.count_params(nb201.build_network(arch))


def _conv_flops(c_in, c_out, k, hw):
    return 2 * c_in * c_out * k * k * hw


def test_flops_of_the_empty_cell_network_by_hand():
    # all-'none' cells: stem + two residual reductions + classifier carry every FLOP
    expected = (_conv_flops(3, 16, 3, 32 * 32)
                + _conv_flops(16, 32, 3, 16 * 16) + _conv_flops(32, 32, 3, 16 * 16) + _conv_flops(16, 32, 1, 16 * 16)
                + _conv_flops(32, 64, 3, 8 * 8) + _conv_flops(64, 64, 3, 8 * 8) + _conv_flops(32, 64, 1, 8 * 8)
                + 2 * 64 * 10)
    assert get_proxy("flops").fn(_ctx(CELLS[2])) == expected


class _TwoLayer(nn.Module):
    def __init__(self, bn=True):
        super().__init__()
        self.a = nn.Linear(4, 3, bias=False)
        self.b = nn.Linear(3, 1, bias=False)

    def forward(self, x):
        return self.b(torch.relu(self.a(x.flatten(1))))


def test_synflow_equals_the_path_norm_on_a_two_layer_network():
    # With |w| and an all-ones input, R = sum_j |b_j| sum_i |a_ji|, and each layer's sum |w * dR/dw| equals R.
    ctx = ProxyContext("toy", "cifar10", 0, _TwoLayer, (1, 2, 2), 1)
    torch.manual_seed(0)
    ref = _TwoLayer()
    with torch.no_grad():
        r = float((ref.b.weight.double().abs() @ ref.a.weight.double().abs()).sum())
    assert get_proxy("synflow").fn(ctx) == pytest.approx(2 * r, rel=1e-12)


def test_synflow_prefers_the_bigger_network_and_ignores_the_data():
    big, small = (get_proxy("synflow").fn(_ctx(a, with_batch=False)) for a in CELLS[:2])
    assert big > small > 0
