"""The latency section: measurement loop (fake clock, injected timer), resume, the budget/Pareto analysis and
the report's stability flag. No timing assertions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from torch import nn

from proxybench.cache import ScoreCache
from proxybench.studies import latency


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.training_seen = []

    def forward(self, x):
        self.calls += 1
        self.training_seen.append(self.training)
        return x


def test_measure_latency_builds_once_warms_up_then_times_each_repeat():
    built = []
    ticks = iter(range(100))

    def build():
        built.append(_Counting())
        return built[-1]

    times = latency.measure_latency(build, (2, 3, 4, 4), warmup=2, repeats=5, clock=lambda: next(ticks))
    assert len(built) == 1 and built[0].calls == 7
    assert times == [1] * 5  # each timed call reads the clock twice, one tick apart
    assert built[0].training_seen == [False] * 7  # eval mode


def test_spread_is_median_and_relative_iqr():
    med, rel = latency.spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert med == 3.0 and rel == pytest.approx((4.0 - 2.0) / 3.0)


def test_measure_study_times_each_run_batch_and_cell_once_and_resumes(real_data, tmp_path):
    study = latency.LatencyStudy(sample=4, runs=2, batches=(1, 64), data_dir=str(real_data))
    calls = []

    def fake(arch, batch):  # (wall, CPU) pairs, as the default clock gives
        calls.append((arch, batch))
        wall = 0.001 * batch * (1 + study.archs().index(arch))
        return [[wall, wall / 2]] * 3

    cache = ScoreCache(tmp_path / "scores")
    assert latency.measure_study(study, cache, progress=False, measure=fake, chunk=3,
                                 meta_path=tmp_path / "meta.json") == 8  # 4 cells x 2 runs
    assert len(calls) == 4 * 2 * 2 and len(set(calls)) == 8  # each (cell, batch) once per run
    df = cache.load()
    assert set(df["proxy"]) == {latency.TRUTH, latency.SPREAD, latency.CPU, latency.CPU_SPREAD}
    assert set(df["data_source"]) == {"zeros;run=0", "zeros;run=1"} and set(df["batch_size"]) == {1, 64}
    assert latency.measure_study(study, cache, progress=False, measure=fake) == 0 and len(calls) == 16  # resumed
    truth = latency.truth_table(study, cache).set_index("arch").loc[study.archs()]
    assert truth["latency_b64"].tolist() == pytest.approx([0.064 * (i + 1) for i in range(4)])
    assert truth["cpu_b64"].tolist() == pytest.approx([0.032 * (i + 1) for i in range(4)])
    assert (truth["spread0_b1"] == 0).all()
    meta = latency._read_json(tmp_path / "meta.json")
    assert meta["sessions"][0]["threads"] == 1 and "torch" in meta["sessions"][0]["environment"]


def test_pareto_front_and_budget_curve_by_hand():
    lat = np.array([1.0, 2.0, 2.0, 3.0, 4.0])
    acc = np.array([50.0, 70.0, 60.0, 65.0, 90.0])
    assert latency.pareto_front(lat, acc).tolist() == [0, 1, 4]
    score = np.array([5.0, 1.0, 9.0, 9.0, 0.0])  # ties at the top: cells 2 and 3
    c = latency.budget_curve(lat, acc, score, [0.5, 1.0, 2.0, 3.0, 4.0]).set_index("budget")
    assert c.loc[0.5, "n_feasible"] == 0 and np.isnan(c.loc[0.5, "pick"])
    assert c.loc[1.0, ["pick", "best", "random"]].tolist() == [50.0, 50.0, 50.0]
    assert c.loc[2.0, ["pick", "best"]].tolist() == [60.0, 70.0]
    assert c.loc[3.0, "pick"] == 62.5  # tied top scores: the tied cells' mean accuracy
    assert c.loc[4.0, ["best", "random"]].tolist() == [90.0, 67.0]


def _synthetic(n=12, stable=True):
    rng = np.random.default_rng(0)
    archs = [f"a{i}" for i in range(n)]
    base = np.linspace(1e-3, 5e-3, n)
    run1 = base if stable else np.roll(base, n // 2)  # a shuffled ranking
    truth = pd.DataFrame({"arch": archs, "run0_b1": base, "run1_b1": run1, "spread0_b1": 0.05, "spread1_b1": 0.1,
                          "latency_b1": (base + run1) / 2})
    prox = pd.DataFrame({"arch": archs, "params": base * 1e6, "flops": base * 1e8, "latency_lut": base * 0.5,
                         "latency_measured": base + rng.normal(0, 1e-4, n)})
    acc = pd.DataFrame([{"arch": a, "proxy": p, "score": float(rng.normal()), "accuracy": 80 + 10 * b / 5e-3}
                        for a, b in zip(archs, base, strict=True) for p in latency.ACC_PROXIES])
    return truth, prox, acc


@pytest.mark.parametrize("stable", [True, False])
def test_report_flags_an_unstable_ground_truth(tmp_path, stable):
    study = latency.LatencyStudy(sample=12, batches=(1,))
    truth, prox, acc = _synthetic(stable=stable)
    res = latency.analyse(study, truth, prox, None, None, acc, n_resamples=20)
    vm = res["vs_measured"].set_index("estimate")
    if stable:
        assert vm.loc["latency_lut", "rho"] == pytest.approx(1.0)
    row = res["stability"].iloc[0]
    assert row["clock"] == "wall-clock" and row["batch"] == 1
    assert row["rho_runs"] == pytest.approx(1.0) if stable else row["rho_runs"] < latency.STABLE_RHO
    path = latency.write_report(study, res, tmp_path, {}, {}, [])
    text = path.read_text()
    assert ("Unstable ground truth" in text) is (not stable)
    assert "| latency_lut | hardware |" in text and "measured here, batch 1" in text
    assert (tmp_path / "figures" / "latency_budget_accuracy.png").is_file()
    assert (tmp_path / "figures" / "latency_pareto.png").is_file()
