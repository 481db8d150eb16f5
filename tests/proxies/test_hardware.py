"""Hardware proxies: the timing loop (fake clock), the lookup table's sum, the op decomposition. No timing asserts."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from proxybench.datasets import nb201
from proxybench.proxies import ProxyContext, get_proxy, hardware, list_proxies


class _Clock:
    def __init__(self):
        self.t = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.t


def test_time_calls_runs_warmup_untimed_then_times_each_repeat():
    clock, calls, syncs = _Clock(), [], []

    def fn():
        calls.append(len(calls))
        clock.t += 2.0 + len(calls)  # the k-th call "takes" 2 + k seconds

    times = hardware.time_calls(fn, warmup=3, repeats=4, clock=clock, sync=lambda: syncs.append(1))
    assert len(calls) == 7 and len(syncs) == 7  # every call synchronised, warm-up included
    assert times == [6.0, 7.0, 8.0, 9.0]  # calls 4..7 only: the warm-up calls are not timed
    assert clock.reads == 8  # two clock reads per timed call, none for the warm-up


@pytest.mark.parametrize("warmup,repeats", [(-1, 3), (0, 0)])
def test_time_calls_rejects_bad_counts(warmup, repeats):
    with pytest.raises(ValueError, match="repeats"):
        hardware.time_calls(lambda: None, warmup=warmup, repeats=repeats)


class _Tiny(nn.Module):
    """Two identical ReLU-conv-BN blocks at the same shape, a pool and a head: 5 op calls, 4 distinct ops."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3))
        self.b = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3))
        self.c = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        x = self.b(self.a(x)) + self.c(x)  # the addition is glue, outside every op
        return self.head(torch.flatten(self.pool(x), 1))


def test_lookup_table_prediction_is_the_sum_of_its_entries_over_the_op_calls():
    measured = []

    def fake_measure(module, shape):
        measured.append((hardware.signature(module), shape))
        return 0.001 * len(measured)  # a distinct value per entry

    table = hardware.LatencyTable(measure=fake_measure)
    net = _Tiny()
    pred = table.predict(net, (4, 3, 8, 8))
    calls = table.breakdown(net, (4, 3, 8, 8))
    assert [k[1] for k, _ in calls] == [(4, 3, 8, 8)] * 3 + [(4, 3, 8, 8), (4, 3)]  # batch 4 in every shape
    assert len(calls) == 5 and len(table.entries) == 3  # a, b, c share one entry; pool and head
    assert len(measured) == 3  # each (op, shape) measured once, then looked up
    conv = table.entries[calls[0][0]]
    assert pred == pytest.approx(3 * conv + table.entries[calls[3][0]] + table.entries[calls[4][0]])
    assert pred == pytest.approx(sum(table.entries[k] for k, _ in calls))


def test_lookup_table_with_real_timings_sums_its_entries():
    table = hardware.LatencyTable(warmup=1, repeats=2)
    pred = table.predict(_Tiny(), (1, 3, 8, 8))
    keys = [k for k, _ in table.breakdown(_Tiny(), (1, 3, 8, 8))]
    assert all(table.entries[k] > 0 for k in keys)
    assert pred == pytest.approx(sum(table.entries[k] for k in keys))


def test_nb201_network_decomposes_into_its_edge_ops_and_fixed_parts():
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
    ops = hardware.op_modules(nb201.build_network(arch))
    # stem + 15 cells x 6 edges + 2 reductions x (conv_a, conv_b, shortcut) + final BN-ReLU, pool, classifier
    assert len(ops) == 1 + 15 * 6 + 2 * 3 + 3
    names = [type(m).__name__ for m in ops]
    assert names.count("AvgPool2d") == 15 and names.count("Identity") == 15 and names.count("_Zero") == 15


def test_timing_proxies_are_registered_as_nondeterministic_lower_is_better():
    assert list_proxies(family="hardware") == ["latency_lut", "latency_lut_b64", "latency_measured",
                                               "latency_measured_b64"]
    for n in list_proxies(family="hardware"):
        p = get_proxy(n)
        assert not p.deterministic and not p.higher_is_better and not p.needs_data and p.direction == "↓"
    assert get_proxy("params").deterministic


def test_latency_lut_proxy_equals_the_table_sum_for_an_nb201_cell():
    arch = "|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
    ctx = ProxyContext(arch, "cifar10", 0, partial(nb201.build_network, arch, "cifar10"), (3, 32, 32), 10)
    threads = torch.get_num_threads()
    score = get_proxy("latency_lut").fn(ctx)
    assert torch.get_num_threads() == threads  # the timing's thread count is restored
    table = hardware.lookup_table("cpu", 1)
    keys = [k for k, _ in table.breakdown(ctx.network(), (1, 3, 32, 32))]
    assert score == pytest.approx(sum(table.entries[k] for k in keys)) and score > 0
