"""Set-level aggregates: the combination by hand, the rows the runner derives, and what a study computes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from proxybench import metrics
from proxybench.proxies import (
    get_proxy,
    list_aggregates,
    list_proxies,
    per_cell,
    register_aggregate,
    registry,
    resolve_proxies,
)
from proxybench.runner import Study, setting_keys, with_aggregates


@pytest.fixture
def toy_aggregate():
    name = "toy_agg_params_synflow"
    rec = register_aggregate(name, members=("params", "synflow"), aggregation="log_rank", paper="test",
                             description="test aggregate")
    yield rec
    registry._AGGREGATES.pop(name, None)


def test_log_rank_rank_sum_and_rank_mean_by_hand():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([3.0, 1.0, 2.0])
    # ranks a: 1 2 3, b: 3 1 2
    np.testing.assert_allclose(metrics.aggregate([a, b], "log_rank"),
                               [math.log(1 / 3) + math.log(3 / 3), math.log(2 / 3) + math.log(1 / 3),
                                math.log(3 / 3) + math.log(2 / 3)])
    np.testing.assert_allclose(metrics.aggregate([a, b], "rank_sum"), [4, 3, 5])
    np.testing.assert_allclose(metrics.aggregate([a, b], "rank_mean"), [2, 1.5, 2.5])


def test_ties_are_averaged_nan_leaves_a_cell_out_and_minus_inf_ranks_last():
    a = np.array([5.0, 5.0, np.nan, -np.inf])
    b = np.array([1.0, 2.0, 3.0, 4.0])
    out = metrics.aggregate([a, b], "rank_sum")
    # over the 3 cells left (NaN cell out): a ranks 2.5, 2.5, 1 (-inf lowest); b ranks 1, 2, 3
    assert np.isnan(out[2])
    np.testing.assert_allclose(out[[0, 1, 3]], [3.5, 4.5, 4.0])


def test_an_aggregate_depends_on_the_set():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 3.0, 1.0, 2.0])
    whole = metrics.aggregate([a, b], "log_rank")
    part = metrics.aggregate([a[:2], b[:2]], "log_rank")
    assert not np.allclose(whole[:2], part)


def test_the_record_is_label_free_set_level_and_refuses_one_cell(toy_aggregate):
    info = get_proxy(toy_aggregate.name)
    assert info.members == ("params", "synflow") and info.higher_is_better and not info.needs_labels
    assert toy_aggregate.name in list_aggregates() and toy_aggregate.name not in list_proxies()
    assert toy_aggregate.name in resolve_proxies("@training-free")
    assert per_cell([toy_aggregate.name, "params", "flops"]) == ["params", "synflow", "flops"]
    with pytest.raises(RuntimeError, match="set-level"):
        info.fn(None)
    with pytest.raises(ValueError, match="label-free"):
        register_aggregate("bad_agg", members=("snip", "params"), aggregation="rank_sum", paper="", description="")
    with pytest.raises(ValueError, match="aggregation"):
        register_aggregate("bad_agg2", members=("params",), aggregation="product", paper="", description="")


def test_a_study_of_an_aggregate_computes_its_members(toy_aggregate):
    st = Study(proxies=(toy_aggregate.name,), sample=3)
    assert set(setting_keys(st, "cifar10")) == {"params", "synflow"}


def _rows(proxy, scores, status="ok"):
    return [{"space": "nb201", "task": "cifar10", "seed": 42, "arch": f"a{i}", "proxy": proxy, "proxy_version": 1,
             "score": s, "status": status, "error": "", "seconds": 1.0, "batch_size": 0, "data_source": "none",
             "substitute": False} for i, s in enumerate(scores)]


def test_with_aggregates_adds_rows_over_the_cells_every_member_scored(toy_aggregate):
    df = pd.DataFrame(_rows("params", [1.0, 2.0, 3.0, 4.0]) + _rows("synflow", [4.0, 3.0, 2.0])
                      + _rows("flops", [1.0, 1.0, 1.0, 1.0]))
    out = with_aggregates(df, [toy_aggregate.name, "params"])
    assert set(out["proxy"]) == {toy_aggregate.name, "params"}  # synflow and flops were not asked for
    agg = out[out["proxy"] == toy_aggregate.name].set_index("arch")
    assert list(agg.index) == ["a0", "a1", "a2"]  # a3 has no synflow score
    expected = metrics.aggregate([np.array([1.0, 2.0, 3.0]), np.array([4.0, 3.0, 2.0])], "log_rank")
    np.testing.assert_allclose(agg["score"].to_numpy(), expected)
    assert (agg["seconds"] == 2.0).all() and (agg["proxy_version"] == 1).all()
