"""The perf script runs end to end on one cell and renders what it measured (no timing is asserted)."""

from __future__ import annotations

from proxybench.tools import perf


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
    assert ("**met**" in md.split("## Against")[0]) == (r["shared_six_over_fwd_bwd"] <= perf.TARGET_RATIO)
    # the machine's limit: a rate against a measured peak, the family's time and the projection
    assert r["peak_gflops"]["peak"] >= max(r["peak_gflops"]["matmul_2048"], r["peak_gflops"]["conv3x3_nchw"])
    assert 0 < r["fwd_bwd_gflops_per_s_median"] and r["fwd_bwd_gflop_median"] > 1  # NB201 cells: GFLOPs per batch
    assert set(r["family"]["proxies"]) == set(perf.training_free()) and r["family"]["seconds_median"] > 0
    assert "## Against the machine's limit" in md and "Projection for the complete NB201 table" in md
    assert "## Against" not in perf.markdown({k: v for k, v in r.items() if k != "peak_gflops"})


def test_counted_flops_of_a_known_convolution():
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    assert perf.counted_flops(lambda: F.conv2d(x, w, padding=1)) == 2 * 2 * 4 * 3 * 9 * 8 * 8
