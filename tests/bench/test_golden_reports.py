"""Golden files of the report tables that matter, rendered from small fixed result objects (no proxy is
computed): the README's headline table, the main report's correlation table, the latency study's cost estimates
against measured latency and the reduced-training table. A changed number, column or format fails here; to
change a table on purpose, rerun with ``PROXYBENCH_UPDATE_GOLDEN=1`` and review the diff of ``tests/bench/golden``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from proxybench import report
from proxybench.studies import latency, reduced

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("PROXYBENCH_UPDATE_GOLDEN") == "1"


def check_golden(name: str, text: str) -> None:
    """``text`` equals ``golden/<name>.md`` (rewritten instead when PROXYBENCH_UPDATE_GOLDEN=1)."""
    path = GOLDEN / f"{name}.md"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        return
    assert path.is_file(), f"no golden file {path}: run with PROXYBENCH_UPDATE_GOLDEN=1 once and commit it"
    want = path.read_text()
    diff = "\n".join(difflib.unified_diff(want.splitlines(), text.splitlines(), "golden", "rendered", lineterm=""))
    assert text == want, f"{name} renders differently from {path} (PROXYBENCH_UPDATE_GOLDEN=1 rewrites it):\n{diff}"


def _summary_row(task, proxy, rho, **kw) -> dict:
    """A row of ``report.summarise`` with fixed numbers."""
    return {"space": "nb201", "task": task, "proxy": proxy, "seed": 42, "direction": "↑", "nan_policy": "exclude",
            "top10_rho": rho / 2, "precision_at_10": 0.25, "family": "zero-cost", "version": 1, "n": 100,
            "n_nonfinite": 0, "tau": rho * 0.7, "tau_lo": rho * 0.7 - 0.05, "tau_hi": rho * 0.7 + 0.05,
            "rho": rho, "rho_lo": rho - 0.08, "rho_hi": rho + 0.06, "n_errors": 0, "substitute": False,
            "data_source": "cifar10-train", "batch_size": 64, "sec_per_arch": 0.0421, **kw}


SUMMARY = pd.DataFrame([
    _summary_row("cifar10", "synflow", 0.7634, data_source="none", batch_size=0, sec_per_arch=0.0123),
    _summary_row("cifar10", "params", 0.7312, family="baseline", data_source="none", batch_size=0),
    _summary_row("cifar10", "grad_norm", -0.0521, direction="↓", n_nonfinite=3, nan_policy="rank_last",
                 n_errors=1, n=97),
    _summary_row("cifar10", "nwot", 0.4417, n_nonfinite=2, n=98, top10_rho=float("nan"),
                 rho_lo=float("nan"), rho_hi=float("nan"), tau_lo=float("nan"), tau_hi=float("nan")),
    _summary_row("cifar100", "synflow", 0.7021, data_source="none", batch_size=0),
    _summary_row("cifar100", "params", 0.6955, family="baseline", data_source="none", batch_size=0),
    _summary_row("cifar100", "grad_norm", 0.1234, direction="↓", substitute=True, nan_policy="rank_last"),
])


def test_headline_table():
    prec = {"proxies": {"synflow": {"digits": 6}, "params": {"digits": 15}, "grad_norm": {"digits": None}}}
    check_golden("headline", report.headline_table(SUMMARY, "**Study:** a fixed synthetic summary.", prec) + "\n")


def test_report_correlation_table():
    res = report.ReportResult(summary=SUMMARY, seeds=[42])
    check_golden("report_correlations", "\n".join(report.render_correlations(res)) + "\n")


def test_latency_cost_estimates_vs_measured():
    rows = []
    for i, (est, fam) in enumerate((("params", "baseline"), ("flops", "baseline"), ("latency_lut", "hardware"),
                                    ("latency_measured_b64", "hardware"))):
        for j, target in enumerate(("latency_b1", "latency_b64", "cpu_b1")):
            rho, tau = 0.9 - 0.11 * i - 0.03 * j, 0.75 - 0.1 * i - 0.02 * j
            rows.append({"estimate": est, "family": fam, "target": target, "n": 64, "rho": rho, "rho_lo": rho - 0.07,
                         "rho_hi": min(rho + 0.04, 1.0), "tau": tau, "tau_lo": tau - 0.06, "tau_hi": tau + 0.05})
    rep = latency.LatencyReport(study=latency.LatencyStudy(), vs_measured=pd.DataFrame(rows), n_resamples=1000,
                                n_cells=64)
    check_golden("latency_vs_measured", "\n".join(latency.render_vs_measured(rep)) + "\n")


def test_reduced_training_table():
    def row(proxy, family, rho, cost, cost_from="score cache (median)", **kw):
        return {"proxy": proxy, "family": family, "direction": "↑", "n": 24, "tau": rho * 0.7,
                "tau_lo": rho * 0.7 - 0.2, "tau_hi": rho * 0.7 + 0.15, "rho": rho, "rho_lo": rho - 0.3,
                "rho_hi": min(rho + 0.2, 0.95), "cost_s": cost, "cost_from": cost_from, **kw}

    trained = pd.DataFrame([row("econas_c4r4s0e5", "reduced-training", 0.6512, 41.27),
                            row("econas_c4r2s1e1", "reduced-training", 0.4021, 9.812),
                            row("danas_easy5_c4r4s0e2", "reduced-training", -0.0734, 7.0)])
    tables = pd.DataFrame([row("nb201_12epoch", "reduced-training", 0.8123, 0.0, "-"),
                           row("nb201_12epoch_val", "reduced-training", 0.7988, 0.0, "-")])
    free = pd.DataFrame([row("synflow", "zero-cost", 0.5744, 0.0312, "make perf (alone)"),
                         row("params", "baseline", 0.5603, 0.00041, "make perf (alone)", direction="↑"),
                         row("grad_norm", "zero-cost", np.nan, 0.0521, direction="↓")])
    rep = reduced.ReducedReport(names=("econas_c4r4s0e5", "econas_c4r2s1e1"), trained=trained, tables=tables,
                                free=free, n_resamples=1000, extra_note={"danas_easy5_c4r4s0e2": " (extra)"})
    check_golden("reduced_quality", "\n".join(reduced.render_quality(rep)) + "\n")


@pytest.mark.skipif(UPDATE, reason="rewriting the golden files")
def test_a_changed_number_fails_the_golden_check():
    changed = SUMMARY.assign(rho=SUMMARY["rho"].where(SUMMARY["proxy"] != "nwot", 0.4427))
    with pytest.raises(AssertionError, match="renders differently"):
        check_golden("report_correlations",
                     "\n".join(report.render_correlations(report.ReportResult(summary=changed, seeds=[42]))) + "\n")
