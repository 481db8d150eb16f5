"""The full-space section: reports a (task, proxy) only when all 15,625 NB201 cells are cached, with provenance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from proxybench.cache import ScoreCache
from proxybench.datasets import nb201
from proxybench.proxies import get_proxy
from proxybench.runner import INIT
from proxybench.sections import SectionConfig
from proxybench.studies import fullspace

pytestmark = pytest.mark.usefixtures("real_data")


def _rows(archs, proxy: str, scores, device: str) -> list[dict]:
    info = get_proxy(proxy)
    return [{"space": "nb201", "task": "cifar10", "arch": a, "proxy": proxy, "proxy_version": info.version, "seed": 42,
             "batch_size": 0, "data_source": "none", "init": INIT, "score": float(s), "status": "ok",
             "seconds": 0.5, "substitute": False, "device": device, "dtype": "float32", "torch_version": "2.13.0",
             "proxybench_version": "0.1.0", "git_commit": "abc123"} for a, s in zip(archs, scores, strict=True)]


def _args(tmp_path, bootstrap=20):
    return SectionConfig(cache=tmp_path / "scores", out=tmp_path / "out", progress=False, bootstrap=bootstrap)


def test_a_full_space_proxy_is_reported_with_provenance_and_the_rest_as_missing(tmp_path):
    truth = nb201.load_truth("cifar10").set_index("arch")
    archs = nb201.all_archs()
    cache = ScoreCache(tmp_path / "scores")
    # params on every cell: the benchmark's own parameter counts; synflow on all but one cell
    cache.append(_rows(archs, "params", truth.loc[archs, "params"].to_numpy(), "cuda (NVIDIA H200)"))
    cache.append(_rows(archs[1:], "synflow", np.arange(len(archs) - 1), "cpu"))
    out = tmp_path / "out"
    out.mkdir()
    pd.DataFrame([{"space": "nb201", "task": "cifar10", "proxy": "params", "seed": 42, "n": 1000, "rho": 0.7,
                   "rho_lo": 0.65, "rho_hi": 0.75}]).to_csv(out / "summary.csv", index=False)

    para = fullspace.bench_section(_args(tmp_path))
    text = (out / "fullspace.md").read_text()
    assert "1 training-free (task, proxy) pairs scored on every cell" in para and "params on cifar10" in para
    row = [ln for ln in text.splitlines() if ln.startswith("| cifar10 | params |")]
    assert len(row) == 1 and "| 15,625 |" in row[0] and "(1000)" in row[0]
    # the reported rho is the real Spearman correlation of parameter counts with test accuracy
    from scipy.stats import spearmanr

    rho = spearmanr(truth.loc[archs, "params"], truth.loc[archs, "test_acc_200"]).statistic
    assert f"| {rho:+.3f} [" in row[0]
    from proxybench import metrics

    p, t = truth.loc[archs, "params"].to_numpy(), truth.loc[archs, "test_acc_200"].to_numpy()
    top = f"{metrics.top_k_spearman(p, t, 0.1):+.3f} | {metrics.precision_at_k(p, t, 0.1):.2f} |"
    assert top in row[0]  # top-10% rho and precision@10% over every cell
    assert "`cuda (NVIDIA H200)` (15,625 scores)" in text and "`abc123`" in text
    assert not any(ln.startswith("| cifar10 | synflow |") for ln in text.splitlines())
    assert "| synflow | 15,624 |" in text and "| params | ✓ 15,625 |" in text
    assert (out / "figures" / "fullspace_rho.png").is_file()
    files = list((tmp_path / "scores").glob("*.parquet"))
    mb = sum(f.stat().st_size for f in files) / 2**20
    assert f"holds {len(files):,} parquet files, {mb:.1f} MB in all" in text and "dictionary-encoded (" in text

    memo = out / "fullspace" / "correlations.csv"
    first = pd.read_csv(memo)
    assert len(first) == 1
    fullspace.bench_section(_args(tmp_path))  # unchanged cache: the memoised row is reused as is
    pd.testing.assert_frame_equal(pd.read_csv(memo), first)


def test_without_full_space_scores_it_says_how_to_compute_them(tmp_path):
    para = fullspace.bench_section(_args(tmp_path))
    text = (tmp_path / "out" / "fullspace.md").read_text()
    assert "no training-free proxy has full-space scores" in para
    assert "make bench-full" in text and "--executor ray --address auto" in text
    assert "| params | 0 | 0 | 0 |" in text


def test_a_published_full_space_figure_is_compared_on_its_own_cells_and_accuracy(tmp_path):
    # synflow on every cifar10 cell, its scores the validation accuracy itself: the comparison with the published
    # 0.74 (all 15,625 cells, test accuracy) uses the test accuracy on every cell, and the four variants are the
    # real correlations (the validation one exactly 1)
    from scipy.stats import spearmanr

    truth = nb201.load_truth("cifar10").set_index("arch")
    archs = nb201.all_archs()
    cache = ScoreCache(tmp_path / "scores")
    cache.append(_rows(archs, "synflow", truth.loc[archs, "val_acc_200"].to_numpy(), "cpu"))
    (tmp_path / "out").mkdir()
    fullspace.bench_section(_args(tmp_path))
    text = (tmp_path / "out" / "fullspace.md").read_text()
    assert "## Against published numbers, on the same cells" in text
    t = truth.loc[archs]
    reach = [nb201.no_unreachable_branches(a) for a in archs]
    sub = t[reach]
    ours = spearmanr(t["val_acc_200"], t["test_acc_200"]).statistic
    sub_test = spearmanr(sub["val_acc_200"], sub["test_acc_200"]).statistic
    row = [ln for ln in text.splitlines() if ln.startswith("| cifar10 | synflow | 0.740 (all 15,625, test)")]
    assert len(row) == 1, text
    cells = [c.strip() for c in row[0].split("|")[1:-1]]
    assert cells[3] == f"{ours:+.3f} (15,625)" and cells[4] == f"{ours - 0.74:+.3f}"
    assert cells[5] == ("yes" if abs(ours - 0.74) <= 0.03 else "**no**")
    assert cells[6:] == [f"{ours:+.3f}", "+1.000", f"{sub_test:+.3f}", "+1.000"]
    assert len(sub) == 9445
    if abs(ours - 0.74) > 0.03:  # outside: the nearest variant and the figure's own code are said
        assert "- synflow on cifar10:" in text and "cifar10-valid" in text


def test_the_headline_shows_a_complete_rows_every_cell_value_and_keeps_the_rest_sampled():
    from proxybench import report

    summary = pd.DataFrame([
        {"space": "nb201", "task": t, "proxy": p, "seed": 42, "direction": "↑", "n": n, "rho": rho,
         "rho_lo": rho - 0.05, "rho_hi": rho + 0.05, "substitute": False}
        for t, p, n, rho in (("cifar10", "synflow", 1000, 0.75), ("cifar10", "snip", 1000, 0.60),
                             ("cifar100", "synflow", 300, 0.76))])
    full = pd.DataFrame([{"task": "cifar10", "proxy": "synflow", "n": 15625, "rho": 0.779, "rho_lo": 0.772,
                          "rho_hi": 0.786, "substitute": False}])
    table = report.headline_table(report.with_full_space(summary, full, seed=42))
    row = next(ln for ln in table.splitlines() if ln.startswith("| synflow |"))
    assert "+0.779 [+0.772, +0.786] (n=15,625, every cell)" in row and "(n=300)" in row  # cifar100 stays sampled
    assert "(n=1000)" in next(ln for ln in table.splitlines() if ln.startswith("| snip |"))
    # another seed's study is a different study: nothing replaced
    assert "every cell" not in report.headline_table(report.with_full_space(summary.assign(seed=0), full, seed=42))
