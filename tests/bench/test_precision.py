"""Measured precision: spreads per (proxy, cell), per-proxy figures, merging remeasurements, the committed file."""

from __future__ import annotations

import math

import pytest

from proxybench import precision


def _rows(scores: dict, proxy="p", version=1, status="ok"):
    return [{"space": "nb201", "task": "cifar10", "arch": a, "proxy": proxy, "proxy_version": version, "seed": 42,
             "batch_size": 0, "data_source": "none", "score": s, "status": status} for a, s in scores.items()]


def _results(**variants):
    return {v: {"capability": "X", "threads": 1, "rows": rows} for v, rows in variants.items()}


def test_spread_is_the_range_over_variants_and_digits_follow_the_worst_cell():
    res = _results(native=_rows({"a": 100.0, "b": 2.0, "z": 0.0}),
                   avx2=_rows({"a": 100.01, "b": 2.0, "z": 0.0}),
                   float64=_rows({"a": 99.995, "b": 2.0 + 2e-9, "z": 0.0}))
    cells = precision.per_cell(res)["p"]
    key = precision.cell_key("nb201", "cifar10", 42, 0, "none", "a")
    assert cells[key]["spread"] == pytest.approx(0.015) and cells[key]["ref"] == 100.0
    summary = precision.per_proxy(cells)
    assert summary["rtol"] == pytest.approx(1.5e-4) and summary["digits"] == 3
    assert summary["atol"] == pytest.approx(0.015)
    assert precision.digits(0.0) == 15 and precision.digits(2.9e-3) == 2


def test_non_finite_scores_agree_only_when_every_variant_agrees():
    res = _results(native=_rows({"a": -math.inf, "b": -math.inf}), avx2=_rows({"a": -math.inf, "b": 3.0}))
    cells = precision.per_cell(res)["p"]
    k = lambda a: precision.cell_key("nb201", "cifar10", 42, 0, "none", a)  # noqa: E731
    assert cells[k("a")]["spread"] == 0.0 and cells[k("b")]["spread"] == math.inf
    assert not precision.within(-math.inf, 3.0, 0.0) and precision.within(-math.inf, -math.inf, 0.0)


def test_merge_adds_variants_to_cells_and_restarts_a_proxy_at_a_new_version():
    doc = precision.merge({}, _results(native=_rows({"a": 1.0}), avx2=_rows({"a": 1.0 + 1e-6})), "golden")
    key = precision.cell_key("nb201", "cifar10", 42, 0, "none", "a")
    assert doc["proxies"]["p"]["cells"][key]["spread"] == pytest.approx(1e-6)
    doc = precision.merge(doc, _results(portable=_rows({"a": 1.0 - 1e-5})), "golden")  # one more variant
    assert set(doc["proxies"]["p"]["cells"][key]["scores"]) == {"native", "avx2", "portable"}
    assert doc["proxies"]["p"]["cells"][key]["spread"] == pytest.approx(1.1e-5)
    doc = precision.merge(doc, _results(native=_rows({"a": 5.0}, version=2), avx2=_rows({"a": 5.0}, version=2)), "g")
    assert doc["proxies"]["p"]["version"] == 2 and doc["proxies"]["p"]["cells"][key]["spread"] == 0.0
    assert precision.spread_of(doc, "p", key, 1) is None and precision.spread_of(doc, "p", key, 2) == 0.0


def test_a_second_machine_is_a_variant_that_widens_the_spread_and_keeps_the_reference():
    doc = precision.merge({}, _results(native=_rows({"a": 10.0}), avx2=_rows({"a": 10.0})), "committed")
    key = precision.cell_key("nb201", "cifar10", 42, 0, "none", "a")
    assert doc["proxies"]["p"]["cells"][key]["spread"] == 0.0
    name = precision.machine_variant("xeon-amx").name
    doc = precision.merge(doc, _results(**{name: _rows({"a": 10.5})}), "committed machine:xeon-amx")
    cell = doc["proxies"]["p"]["cells"][key]
    assert cell["ref"] == 10.0 and cell["spread"] == pytest.approx(0.5)  # the reference machine's score stays ref
    assert list(doc["variants"]) == ["native", "avx2", name] and "another machine" in doc["variants"][name][
        "description"]
    assert set(doc["measured"]) == {"committed", "committed machine:xeon-amx"}  # neither run's record replaced
    # a cell measured only by the other machine has no spread against the reference scores: unknown, not 0
    doc = precision.merge(doc, _results(**{name: _rows({"b": 3.0})}), "committed machine:xeon-amx")
    assert precision.spread_of(doc, "p", key, 1) == pytest.approx(0.5)
    assert precision.spread_of(doc, "p", precision.cell_key("nb201", "cifar10", 42, 0, "none", "b"), 1) is None


def test_a_variant_with_spare_processes_is_cut_into_pieces_of_cells():
    from proxybench.runner import Job

    jobs = [Job("nb201", "cifar10", 42, 64, True, None, "cpu", (("a", ("p",)), ("b", ("p",)), ("c", ("p",))), "x"),
            Job("nb201", "cifar100", 42, 64, True, None, "cpu", (("d", ("p",)),), "x")]
    parts = precision._split(jobs, 2)
    assert [[j.items[0][0] for j in p] for p in parts] == [["a", "c"], ["b", "d"]]
    (whole,) = precision._split(jobs, 1)
    assert [j.items[0][0] for j in whole] == ["a", "b", "c", "d"] and len(precision._split(jobs, 9)) == 4


def test_the_tolerance_is_twice_the_spread_plus_a_few_float32_ulps():
    assert precision.tolerance(0.0, 1.0) == pytest.approx(4 * 2.0 ** -23)
    assert precision.within(10.0, 10.0 + 0.19, 0.1) and not precision.within(10.0, 10.0 + 0.21, 0.1)


def test_the_committed_precision_covers_every_golden_proxy_at_its_current_version():
    """reports/precision.json is what CI judges by: every training-free proxy measured at its registered
    version on all 64 golden cells, with every variant, and its table renders."""
    from proxybench.proxies import get_proxy, training_free

    doc = precision.load()
    assert doc, "reports/precision.json is missing: run `make precision`"
    golden = {j.task: {a for a, _ in j.items} for j in precision.golden_jobs()}
    for name in training_free():
        entry = doc["proxies"].get(name)
        assert entry is not None and entry["version"] == get_proxy(name).version, name
        parts = [k.split("|", 5) for k in entry["cells"]]  # space, task, seed, batch, images, arch
        measured = {p[5] for p in parts if p[:3] == ["nb201", "cifar10", "42"]}
        assert golden["cifar10"] <= measured, f"{name}: golden cells without a measured precision"
        variants = {v for c in entry["cells"].values() for v in c["scores"]}
        assert {"native", "native-2t", "avx2", "portable", "float64"} <= variants, (name, variants)
    assert "| params |" in precision.table(doc)


def test_layout_check_scores_golden_cells_in_another_layout_and_restores_the_records(real_data):
    """``proxybench precision --layout``: in the proxies' own layout the golden cells reproduce within their measured
    precision; in channels_last the same cells are rescored there (rounding moves: not all bit-identical), and the
    registry's records are as before afterwards."""
    from proxybench.proxies import get_proxy

    doc = precision.load()
    before = get_proxy("grad_norm")
    same = precision.layout_check(doc, ["grad_norm"], before.layout, cells=2)
    assert [r["proxy"] for r in same] == ["grad_norm"] and same[0]["cells"] == 2
    assert same[0]["within"] == 2
    other = precision.layout_check(doc, ["grad_norm"], "channels_last", cells=2)
    assert other[0]["cells"] == 2 and other[0]["identical"] < 2 and other[0]["change_max"] > 0
    assert get_proxy("grad_norm") is before
    assert "| grad_norm | 2 |" in precision.layout_table(other, "channels_last")
