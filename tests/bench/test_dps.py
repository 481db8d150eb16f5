"""Discrete Proxy Search: the setting space, disjoint fitness/evaluation sets, caching and resume."""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from proxybench.cache import ScoreCache
from proxybench.datasets import nb201
from proxybench.options import Parents
from proxybench.proxies import eproxy as ep
from proxybench.studies import dps

ARCHS = [nb201.arch_str(ops) for ops in (
    ("nor_conv_3x3",) * 6, ("skip_connect",) * 6, ("nor_conv_1x1",) * 6, ("avg_pool_3x3",) * 6,
    ("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "none", "nor_conv_3x3", "skip_connect"),
    ("none", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3"))]
FITNESS = dict(zip(ARCHS, [93.0, 80.0, 90.0, 70.0, 91.0, 85.0], strict=True))
CONFIG = dps.DPSConfig(budget=7, population=4, tournament=2, fitness_n=len(ARCHS))


class FakeScorer:
    """A deterministic stand-in for the Eproxy training (arch, setting -> a number), counting its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, ctx, setting):
        self.calls.append((setting.hash, ctx.arch))
        noise = int(hashlib.sha256(f"{ctx.arch}{setting.hash}".encode()).hexdigest()[:8], 16) / 2**32
        return float(-FITNESS[ctx.arch] * setting.lr + 40 * noise)


def _evaluator(cache_dir, scorer):
    batch = (torch.zeros(16, 3, 32, 32), torch.zeros(16, dtype=torch.long))
    return dps.Evaluator(CONFIG, ScoreCache(cache_dir), batch=batch, data_source="test-images", scorer=scorer,
                         progress=False)


def test_random_and_mutated_settings_stay_in_the_space():
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = dps.random_setting(rng)
        assert all(getattr(s, k) in v for k, v in dps.CHOICES.items()) and s.targets
        m = dps.mutate(s, rng, 0.2)
        assert all(getattr(m, k) in v for k, v in dps.CHOICES.items()) and m.targets
    s = ep.EproxySetting(targets=("net", "dot"))
    assert dps.mutate(s, rng, 0.0) == s
    assert dps.mutate(s, rng, 1.0).targets == ("wave_l", "wave_m", "wave_h")  # every target bit flips
    every = ep.EproxySetting(targets=ep.TARGET_BASES)
    assert dps.mutate(every, rng, 1.0).targets == ep.TARGET_BASES  # never empty: the parent's set is kept


def test_evaluation_set_must_be_disjoint_from_the_fitness_set():
    dps.check_disjoint(ARCHS[:3], ARCHS[3:])
    with pytest.raises(dps.OverlapError, match="fitness set"):
        dps.check_disjoint(ARCHS[:3], ARCHS[2:])
    assert issubclass(dps.OverlapError, ValueError)  # the CLI turns it into one line and exit 2


def test_fitness_cells_avoid_the_default_sample(real_data):
    suite = dps.default_sample("nb201", "cifar10", 1000)
    fit = dps.fitness_archs("nb201", "cifar10", 20, 0, exclude=suite)
    assert len(fit) == 20 and not set(fit) & set(suite)
    assert fit == dps.fitness_archs("nb201", "cifar10", 20, 0, exclude=suite)  # seeded
    assert fit != dps.fitness_archs("nb201", "cifar10", 20, 1, exclude=suite)
    assert set(dps.default_sample("nb201", "cifar10", 500)) <= set(suite)  # evaluation cells: nested in the sample
    drawn = dps.sample_in_draw_order("nb201", "cifar10", 300)
    assert set(drawn[:137]) == set(dps.default_sample("nb201", "cifar10", 137))  # every prefix is the seeded sample


def test_search_is_deterministic_and_resumes_without_recomputing(tmp_path):
    full_scorer = FakeScorer()
    full = dps.search(CONFIG, _evaluator(tmp_path / "a", full_scorer), FITNESS, tmp_path / "ia", progress=False)
    assert len(full.history) == CONFIG.budget
    assert [h["best_so_far"] for h in full.history] == sorted(h["best_so_far"] for h in full.history)
    unique = {(h["proxy"], a) for h in full.history for a in ARCHS}
    assert len(full_scorer.calls) == len(unique)  # each (alpha-free setting, cell) trained once

    class Killed(Exception):
        pass

    def kill_after_three(rec):
        if rec["index"] == 2:
            raise Killed

    first = FakeScorer()
    with pytest.raises(Killed):
        dps.search(CONFIG, _evaluator(tmp_path / "b", first), FITNESS, tmp_path / "ib", progress=False,
                   on_candidate=kill_after_three)
    assert 0 < len(first.calls) < len(unique)
    second = FakeScorer()
    resumed = dps.search(CONFIG, _evaluator(tmp_path / "b", second), FITNESS, tmp_path / "ib", progress=False)
    assert not set(first.calls) & set(second.calls)  # nothing computed twice
    assert len(first.calls) + len(second.calls) == len(unique)
    assert [h["hash"] for h in resumed.history] == [h["hash"] for h in full.history]
    assert [h["fitness"] for h in resumed.history] == [h["fitness"] for h in full.history]
    index = pd.read_json(tmp_path / "ib" / "settings.json", typ="series")
    assert {h["proxy"] for h in resumed.history} <= set(index.index)


def test_settings_differing_only_in_alpha_share_their_training(tmp_path):
    scorer = FakeScorer()
    ev = _evaluator(tmp_path, scorer)
    base = ep.EproxySetting(head_channels=16, target_channels=16)
    loss = ev.losses(base, ARCHS[:2])
    n = len(scorer.calls)
    prior = ev.scores(ep.EproxySetting(**{**base.to_dict(), "alpha": 0.5}), ARCHS[:2])
    assert len(scorer.calls) == n
    ratios = ev.ratios(ARCHS[:2])
    assert ratios[0] == pytest.approx(1.0)  # the all-conv3x3 cell is the largest
    assert np.allclose(prior, loss * (1 - 0.5 * ratios))
    rows = ScoreCache(tmp_path).load()
    assert set(rows["proxy"]) == {base.proxy_name, dps.MACS_PROXY}
    assert (rows.loc[rows["proxy"] == base.proxy_name, "batch_size"] == 16).all()


def test_fitness_ranks_lower_loss_first_and_nan_last():
    acc = np.array([1.0, 2.0, 3.0, 4.0])
    assert dps.fitness_of(np.array([4.0, 3.0, 2.0, 1.0]), acc) == pytest.approx(1.0)
    assert dps.fitness_of(np.array([np.nan, 3.0, 2.0, 1.0]), acc) == pytest.approx(1.0)
    assert dps.fitness_of(np.array([1.0, 1.0, 1.0, 1.0]), acc) == dps.NAN_FITNESS


def test_config_and_cli_validate(tmp_path):
    with pytest.raises(ValueError, match="tournament"):
        dps.DPSConfig(population=4, tournament=5)
    with pytest.raises(ValueError, match="fitness"):
        dps.DPSConfig(fitness_n=2)
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd")
    dps.add_cli(sub, Parents())
    args = p.parse_args(["dps", "--space", "nb201", "--task", "cifar10", "--budget", "50"])
    assert (args.budget, args.population, args.tournament, args.fn) == (50, 40, 10, dps.cmd_dps)


def test_trajectory_report_renders(tmp_path):
    scorer = FakeScorer()
    result = dps.search(CONFIG, _evaluator(tmp_path / "c", scorer), FITNESS, tmp_path / "i", progress=False)
    table = pd.DataFrame([dps._correlation_row(n, "k", s, list(FITNESS.values()), h, 0)
                          for n, s, h in (("DPS best (alpha +0)", [1, 2, 3, 4, 5, 6], dps.SEARCHED),
                                          ("eproxy", [6, 5, 4, 3, 2, 1], "eproxy"))])  # both ranked ↓
    para = dps.write_report(tmp_path, result, table, result.best_setting, 0.1, eval_n=6, search_s=1.0, eval_s=1.0,
                            data_source="test", substitute=False, computed=len(scorer.calls))
    text = (tmp_path / "dps.md").read_text()
    assert (tmp_path / "figures" / "dps_trajectory.png").is_file()
    assert "random search" not in text and f"{len(result.history)} candidate settings" in text
    assert "dps.md" in para


def test_eval_n_option_takes_a_number_default_or_all():
    assert dps.eval_n_arg("50") == 50
    assert dps.eval_n_arg("default") == dps.DEFAULT_EVAL_N == 500
    assert dps.eval_n_arg("all") == dps.SUITE_N
    for bad in ("2", "1001", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            dps.eval_n_arg(bad)
    # the committed default study keeps its 500 held-out cells; a quick evaluation is another run
    assert dps.is_default_study(dps.DEFAULT_STUDY, dps.DEFAULT_EVAL_N)
    assert not dps.is_default_study(dps.DEFAULT_STUDY, dps.QUICK_EVAL_N)
    assert dps.run_id(dps.DEFAULT_STUDY, dps.QUICK_EVAL_N) != dps.run_id(dps.DEFAULT_STUDY, dps.DEFAULT_EVAL_N)


def test_make_bench_section_still_evaluates_the_default_study_on_500_cells(tmp_path, monkeypatch):
    from proxybench.sections import SectionConfig

    seen = {}
    monkeypatch.setattr(dps, "run_default", lambda config, cache, out, **kw: seen.update(config=config, **kw) or "")
    dps.bench_section(SectionConfig(cache=tmp_path, out=tmp_path))
    assert seen["config"] == dps.DEFAULT_STUDY and seen.get("eval_n", dps.DEFAULT_EVAL_N) == 500


def test_a_tiny_user_search_evaluates_only_the_quick_held_out_set(tmp_path, monkeypatch, capsys):
    """`proxybench dps --budget 3`: the held-out evaluation is the quick default (50 cells), not 500; stubs
    stand in for the data, the Eproxy training and the main-cache studies."""
    import itertools

    from proxybench import runner
    from proxybench.datasets import get_space

    pool = [nb201.arch_str(ops) for ops in itertools.islice(itertools.product(nb201.OPS, repeat=6), 0, 2000, 9)]
    suite, fit = pool[:150], pool[150:170]
    rng = np.random.default_rng(0)
    acc = dict(zip(pool, rng.uniform(50, 95, len(pool)), strict=True))
    truth = pd.DataFrame({"arch": pool, "task": "cifar10", "test_acc_200": [acc[a] for a in pool],
                          "test_acc_12": [acc[a] - 20 for a in pool]})
    monkeypatch.setattr(get_space("nb201"), "truth", lambda task, data_dir=None: truth)
    monkeypatch.setattr(dps, "sample_in_draw_order", lambda space, task, n, data_dir=None: suite[:n])
    monkeypatch.setattr(dps, "default_sample", lambda space, task, n=1000, data_dir=None: suite)
    monkeypatch.setattr(dps, "fitness_archs", lambda space, task, n, seed, exclude=(), data_dir=None: fit[:n])
    monkeypatch.setattr(ep, "macs_ratio", lambda ctx: 0.5)
    calls = []

    def scorer(ctx, setting):
        calls.append(ctx.arch)
        return float(-acc[ctx.arch] * setting.lr)

    real = dps.Evaluator
    batch = (torch.zeros(16, 3, 32, 32), torch.zeros(16, dtype=torch.long))
    monkeypatch.setattr(dps, "Evaluator", lambda config, cache, workers=1, progress=True: real(
        config, cache, batch=batch, data_source="test-images", scorer=scorer, progress=False))
    studies = []
    monkeypatch.setattr(runner, "run_study", lambda study, cache, **kw: studies.append(study))
    monkeypatch.setattr(runner, "study_scores", lambda study, cache: pd.DataFrame(
        {"proxy": "eproxy" if study.proxies == ("eproxy",) else "params", "arch": list(study.archs),
         "score": [-acc[a] for a in study.archs], "seconds": 0.01}))

    p = argparse.ArgumentParser()
    dps.add_cli(p.add_subparsers(dest="cmd"), Parents())
    args = p.parse_args(["dps", "--budget", "3", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
                         "--no-progress", "--bootstrap", "0"])
    assert args.eval_n == dps.QUICK_EVAL_N == 50
    args.fn(args)
    held_out = suite[:dps.QUICK_EVAL_N]
    assert {a for a in calls if a not in fit} == set(held_out)  # the best setting trained on the 50 cells only
    assert studies and all(list(st.archs) == held_out for st in studies)
    assert "held-out evaluation on 50 cells" in capsys.readouterr().out
    assert not (tmp_path / "out" / "dps.md").exists()  # never over the committed default study
    config = dps.DPSConfig(budget=3)
    text = (tmp_path / "out" / "dps-runs" / dps.run_id(config, 50) / "dps.md").read_text()
    assert "Quick held-out evaluation: 50 cells" in text and "**50 held-out NB201 cifar10 cells**" in text
