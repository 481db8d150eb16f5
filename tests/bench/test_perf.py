"""The perf script runs end to end on one cell and renders what it measured (no timing is asserted)."""

from __future__ import annotations

from bench.tools import perf


def test_perf_measures_every_part_and_renders(real_data, tmp_path):
    r = perf.run(cells=1, memory_cells=0, seed=0, repeats=1, nb101_cells=0)
    for key in ("shared_six_over_fwd_bwd", "reference_six_over_fwd_bwd", "shared_six_generic_over_fwd_bwd"):
        assert r[key] > 0, key
    assert list(r["stages"]) == list(perf.STAGES)
    assert {"grasp", "synflow", "jacob_cov", "eproxy"} <= set(r["per_proxy"])
    md = perf.markdown(r)
    assert r["double_backward_pass"]["over_fwd_bwd"] > 0
    assert "PyTorch's generic forward-mode formulas" in md and "Where the six's time goes" in md
    assert "double backward (grasp v2" in md
    assert ("**met**" in md) == (r["shared_six_over_fwd_bwd"] <= perf.TARGET_RATIO)
