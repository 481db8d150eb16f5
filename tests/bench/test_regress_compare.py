"""CI regression of correlations and the compare command."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from proxybench import compare as cmp
from proxybench import precision, regress
from proxybench.proxies import get_proxy, registry


def _entry(scores, version=1, rho=0.5, tau=0.4, errors=()):
    return {"version": version, "direction": "↑", "nan_policy": "exclude", "rho": rho, "tau": tau,
            "n": len(scores), "n_nonfinite": 0, "scores": dict(scores), "errors": list(errors)}


SC = {"a": 1.0, "b": 2.0, "c": 3.0}


def _prec(names=("p", "q", "r", "new", "gone"), archs=("a", "b", "c"), spread=0.0, version=1) -> dict:
    """A precision document in which every (proxy, cell) was measured with the given spread."""
    st = regress.DEFAULT_SETTING
    key = lambda a: precision.cell_key(st["space"], st["task"], st["seed"], st["batch_size"], st["data_source"], a)  # noqa: E731
    return {"format": precision.FORMAT_VERSION,
            "proxies": {n: {"version": version, "cells": {key(a): {"spread": spread} for a in archs}} for n in names}}


PREC = _prec()


def test_check_passes_identical_and_flags_each_kind_of_change():
    base = {"proxies": {"p": _entry(SC), "q": _entry(SC), "r": _entry(SC), "gone": _entry(SC)}, "tolerance": 0.02}
    current = {"p": _entry(SC),                                              # unchanged
               "q": _entry({k: -v for k, v in SC.items()}, rho=-0.5, tau=-0.4),  # sign flipped, same version
               "r": _entry({k: 2 * v for k, v in SC.items()}, version=2),    # intended change, version bumped
               "new": _entry(SC)}
    rows, ok = regress.check(base, current, PREC)
    status = {r["proxy"]: r["status"] for r in rows}
    assert not ok
    assert status["p"] == "ok"
    assert status["q"].startswith("FAIL: scores changed but version 1 did not")
    assert status["r"].startswith("not comparable")
    assert status["new"].startswith("new") and status["gone"].startswith("missing")
    assert "| q |" in regress.table(rows)


def test_check_flags_a_correlation_drop_beyond_the_tolerance_only():
    base = {"proxies": {"p": _entry(SC, rho=0.50, tau=0.40)}, "tolerance": 0.02}
    assert regress.check(base, {"p": _entry(SC, rho=0.49, tau=0.39)}, PREC)[1]
    rows, ok = regress.check(base, {"p": _entry(SC, rho=0.45, tau=0.40)}, PREC)
    assert not ok and "correlation dropped" in rows[0]["status"]


def test_changes_are_judged_by_each_cells_measured_precision():
    base = {"proxies": {"p": _entry({"a": 1000.0, "b": -3.0})}, "tolerance": 0.02}
    prec = _prec(("p",), ("a", "b"), spread=0.0)
    # cells whose variants agreed bit for bit: a few float32 ulps pass, a real change does not
    assert regress.check(base, {"p": _entry({"a": 1000.0 * (1 + 1e-7), "b": -3.0})}, prec)[1]
    assert not regress.check(base, {"p": _entry({"a": 1000.0 * (1 + 1e-5), "b": -3.0})}, prec)[1]
    assert not regress.check(base, {"p": _entry({"a": 1000.0, "b": -2.0})}, prec)[1]
    assert not regress.check(base, {"p": _entry({"a": 1000.0, "b": None})}, prec)[1]
    # a measured spread of 0.1 allows 2 x 0.1 (MARGIN) and not more
    prec = _prec(("p",), ("a", "b"), spread=0.1)
    assert regress.check(base, {"p": _entry({"a": 1000.19, "b": -3.0})}, prec)[1]
    assert not regress.check(base, {"p": _entry({"a": 1000.21, "b": -3.0})}, prec)[1]
    # a small score of a proxy whose scores span many orders of magnitude (synflow) is checked on its own
    wide = {"p": _entry({"a": 1e50, "b": 1e10, "c": 1e30})}
    assert not regress.check({"proxies": wide, "tolerance": 0.02}, {"p": _entry({"a": 1e50, "b": 2e10, "c": 1e30})},
                             _prec(("p",)))[1]


def test_a_cell_without_measured_precision_fails_and_says_what_to_run():
    base = {"proxies": {"p": _entry(SC)}, "tolerance": 0.02}
    rows, ok = regress.check(base, {"p": _entry(SC)}, {})
    assert not ok and "make precision" in rows[0]["status"]
    rows, ok = regress.check(base, {"p": _entry(SC)}, _prec(("p",), version=2))  # measured at another version
    assert not ok and "no measured precision of p v1" in rows[0]["status"]


def _committed_baseline():
    base = json.loads((regress.provenance.REPO_ROOT / "reports" / "baseline.json").read_text())
    prec = precision.load()
    if not prec:
        pytest.fail("reports/precision.json is missing: run `make precision`")
    return base, prec


@pytest.mark.parametrize("name", ["grad_norm", "synflow", "params"])
def test_the_committed_check_fails_a_0_1_percent_change_and_a_sign_flip(name):
    """With the committed baseline and measured precision: unchanged scores pass, a change of half the allowed
    amount passes, and a 0.1% change or a sign flip of a well-conditioned proxy fails."""
    base, prec = _committed_baseline()
    entry = base["proxies"][name]
    assert regress.check({**base, "proxies": {name: entry}}, {name: entry}, prec)[1]

    def scaled(f):
        return {**entry, "scores": {a: (None if v is None else f(a, v)) for a, v in entry["scores"].items()}}

    st = entry["setting"]

    def half_allowed(a, v):
        key = precision.cell_key(st["space"], st["task"], st["seed"], st["batch_size"], st["data_source"], a)
        return v + 0.5 * precision.tolerance(precision.spread_of(prec, name, key, entry["version"]), v)

    assert regress.check({**base, "proxies": {name: entry}}, {name: scaled(half_allowed)}, prec)[1]
    rows, ok = regress.check({**base, "proxies": {name: entry}}, {name: scaled(lambda a, v: v * 1.001)}, prec)
    assert not ok and "scores changed" in rows[0]["status"]
    flipped = {**scaled(lambda a, v: -v), "rho": -entry["rho"], "tau": -entry["tau"]}
    assert not regress.check({**base, "proxies": {name: entry}}, {name: flipped}, prec)[1]


@pytest.fixture
def small_golden(monkeypatch, real_data):
    monkeypatch.setattr(regress, "GOLDEN", {**regress.GOLDEN, "sample": 12})
    return regress.golden_study(proxies=["params", "synflow"])


def test_a_sign_flipped_proxy_fails_the_regression_end_to_end(small_golden, monkeypatch, tmp_path):
    good = regress.compute(small_golden, progress=False, workers=1)
    path = regress.write_baseline(good, tmp_path / "baseline.json")
    # the precision of the two proxies on these cells, measured as `make precision` does (two of its variants)
    variants = [v for v in precision.VARIANTS if v.name in ("native", "avx2")]
    jobs = precision.golden_jobs(["params", "synflow"])
    prec = precision.merge({}, precision.measure(jobs, variants, progress=False), "test")
    assert prec["proxies"]["params"]["rtol"] == 0.0  # a count: every kernel gives the same number
    assert regress.check(json.loads(path.read_text()), regress.compute(small_golden, progress=False, workers=1),
                         prec)[1]
    original = get_proxy("params")
    flipped = replace(original, fn=lambda ctx: -original.fn(ctx))  # a bug: same version, sign flipped
    monkeypatch.setitem(registry._REGISTRY, "params", flipped)
    rows, ok = regress.check(json.loads(path.read_text()), regress.compute(small_golden, progress=False, workers=1),
                             prec)
    assert not ok
    status = {r["proxy"]: r["status"] for r in rows}
    assert status["params"].startswith("FAIL: scores changed") and status["synflow"] == "ok"


def test_a_baseline_of_some_proxies_is_merged_and_only_they_are_checked(small_golden, tmp_path, capsys):
    """`make baseline ARGS='--proxies P'` recomputes P into the baseline and keeps every other entry (and when the
    file was first written); `regress --proxies P` checks P alone."""
    from proxybench.cli import main

    path = tmp_path / "baseline.json"
    kept = _entry(SC)
    regress.write_baseline({"kept": kept, "params": _entry({"x": 1.0})}, path)
    before = regress.load_baseline(path)
    argv = ["regress", "--baseline", str(path), "--proxies", "params", "--workers", "1", "--no-progress"]
    assert main([*argv, "--write"]) in (0, None)
    after = regress.load_baseline(path)
    assert after["proxies"]["kept"] == kept and after["written"] == before["written"]
    params = after["proxies"]["params"]
    assert set(params["scores"]) == set(small_golden.arch_list()) and "recomputed" in params
    assert params["scores"] == regress.compute(small_golden, progress=False, workers=1)["params"]["scores"]
    capsys.readouterr()
    assert main(argv) in (0, None)  # params against its recomputed entry; "kept" (not registered) is not checked
    out = capsys.readouterr().out
    assert "| params |" in out and "kept" not in out and "no regression" in out


def test_regress_of_an_aggregate_checks_its_members(small_golden, tmp_path, capsys):
    """An aggregate has no per-cell scores to compare (its value depends on the set): `regress --proxies AGG`
    checks its members, says so, and a member's sign flip fails it (it used to pass as 'new')."""
    from proxybench.cli import main
    from proxybench.proxies import register_aggregate

    assert regress.checked_proxies(["params", "synflow"]) == (("params", "synflow"), "")
    members, note = regress.checked_proxies(["te_nas", "params"])
    assert members == ("te_nas_ntk", "te_nas_lr", "params") and "te_nas" in note and "te_nas_lr" in note
    name = "toy_regress_agg"
    register_aggregate(name, members=("params", "synflow"), aggregation="log_rank", paper="test", description="t")
    try:
        path = regress.write_baseline(regress.compute(small_golden, progress=False, workers=1),
                                      tmp_path / "baseline.json")
        argv = ["regress", "--baseline", str(path), "--proxies", name, "--workers", "1", "--no-progress"]
        capsys.readouterr()
        assert main(argv) in (0, None)
        out = capsys.readouterr()
        assert "| params |" in out.out and "| synflow |" in out.out and f"| {name} |" not in out.out
        assert "set-level" in out.err and "no regression" in out.out
        baseline = json.loads(path.read_text())
        baseline["proxies"]["synflow"]["scores"] = {a: -v for a, v in baseline["proxies"]["synflow"]["scores"].items()}
        path.write_text(json.dumps(baseline))
        with pytest.raises(SystemExit):
            main(argv)
    finally:
        registry._AGGREGATES.pop(name, None)


def test_regress_without_a_baseline_says_how_to_make_one(tmp_path, cli_env):
    p = subprocess.run([sys.executable, "-m", "proxybench.cli", "regress", "--baseline", str(tmp_path / "none.json"),
                        "--no-progress"], capture_output=True, text=True, env=cli_env, timeout=900)
    assert p.returncode == 2 and "make baseline" in p.stderr and "Traceback" not in p.stderr


def _study_frame(scores: dict, acc: np.ndarray) -> pd.DataFrame:
    """Scored rows of a synthetic one-task study, as study_scores returns them."""
    archs = [f"a{i}" for i in range(len(acc))]
    return pd.concat([pd.DataFrame({"space": "nb201", "task": "cifar10", "arch": archs, "proxy": p, "score": s,
                                    "status": "ok", "seed": 42, "accuracy": acc}) for p, s in scores.items()])


def test_compare_finds_the_better_proxy_and_adjusts_for_many_baselines():
    rng = np.random.default_rng(0)
    n = 150
    acc = rng.normal(size=n)
    scores = {"params": acc + 0.2 * rng.normal(size=n), "flops": acc + 3 * rng.normal(size=n),
              "synflow": acc + 0.25 * rng.normal(size=n)}
    df = _study_frame(scores, acc)
    res = cmp.compare(df, "params", n_resamples=300).set_index("baseline")
    assert set(res.index) == {"flops", "synflow"}
    assert res.loc["flops", "significant"] and res.loc["flops", "delta"] > 0
    assert (res["p_holm"] >= res["p_value"]).all()
    md = cmp.markdown(res.reset_index(), "params")
    assert "| flops |" in md and "params better" in md


def test_holm_adjustment_by_hand():
    assert cmp._holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_vote_and_rank_average_ensembles_on_a_synthetic_study():
    from proxybench.report import ensembles

    rng = np.random.default_rng(2)
    n = 80
    acc = rng.normal(size=n)
    scores = {"synflow": acc + 0.5 * rng.normal(size=n), "jacob_cov": acc + 0.5 * rng.normal(size=n),
              "snip": acc + 0.5 * rng.normal(size=n)}
    scores["jacob_cov"][0] = np.nan  # a degenerate cell: jacob_cov ranks it last, it is not dropped
    df = _study_frame(scores, acc)
    e = ensembles(df, n_resamples=50).iloc[0]
    assert e["n"] == n
    members = [e[f"concordance_{m}"] for m in ("synflow", "jacob_cov", "snip")]
    assert 0.5 < min(members) and e["vote_concordance"] > np.mean(members)  # independent errors: the vote helps
    assert e["rankavg_rho"] > 0.8
