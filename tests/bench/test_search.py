"""Search simulations (proxybench.studies.search): determinism under a seed, cost accounting, caching, on tiny
synthetic tables."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from proxybench.studies import search as S


def _table(edges: int = 4, ops: int = 4, seconds=None, proxy_noise: float = 1.0, seed: int = 1) -> S.SimTable:
    """Every cell of a small space: accuracy grows with the op indices, plus noise; one proxy 'p'."""
    rng = np.random.default_rng(seed)
    cells = np.array(list(itertools.product(range(ops), repeat=edges)), dtype=np.int8)
    n = len(cells)
    val = 80 + cells.sum(1) + rng.normal(0, 0.5, n)
    test = val + rng.normal(0, 0.2, n)
    val12 = val - 20 + rng.normal(0, 1.0, n)
    score = val + rng.normal(0, proxy_noise, n)
    sec = np.full(n, 0.25) if seconds is None else np.asarray(seconds, float)
    return S.SimTable("toy", "toy", np.arange(100, 100 + n), cells, val, test, val12, {"p": score}, {"p": sec})


CFG = S.SearchConfig(reps=4, budget=10, population=4, sample_size=2, candidates=5, keep_12=2, warmup_fraction=0.2,
                     block=2)


def _ends(ev: pd.DataFrame) -> pd.DataFrame:
    return ev[ev["end"]].set_index("rep")


def test_settings_and_config_are_checked():
    with pytest.raises(ValueError, match="needs"):
        S.Setting("rea", "move")
    with pytest.raises(ValueError, match="takes no"):
        S.Setting("random", "none", "p")
    with pytest.raises(ValueError, match="base"):
        S.Setting("bohb")
    with pytest.raises(ValueError, match="keep_12"):
        S.SearchConfig(candidates=2, keep_12=3)
    assert len(S.settings_for(["a", "b"])) == 4 + 2 * 6


@pytest.mark.parametrize("setting", S.settings_for(["p"]), ids=lambda s: s.key)
def test_deterministic_under_a_seed(setting):
    t = _table()
    a = S.simulate_reps(t, setting, CFG, range(3))
    b = S.simulate_reps(t, setting, CFG, range(3))
    pd.testing.assert_frame_equal(a, b)
    other = S.simulate_reps(t, setting, S.SearchConfig(**{**CFG.__dict__, "seed": 7}), range(3))
    assert not a.equals(other)


@pytest.mark.parametrize("setting", S.settings_for(["p"]), ids=lambda s: s.key)
def test_budget_incumbent_and_no_free_information(setting):
    t = _table()
    ev = S.simulate_reps(t, setting, CFG, range(4))
    val = pd.Series(t.val, index=t.ids)
    for _, g in ev.groupby("rep"):
        inc, end = g[~g["end"]], g[g["end"]].iloc[0]
        assert end["k"] == CFG.budget  # exactly the budget of full trainings
        assert inc["k"].is_monotonic_increasing and inc["k"].is_unique
        assert np.all(np.diff(val.reindex(inc["arch"]).to_numpy()) > 0)  # the incumbent only improves
        assert inc["k"].iloc[0] == 1  # the first trained cell is the first incumbent
        if setting.proxy is None:
            assert end["proxy_n"] == 0 and end["proxy_s"] == 0
        if setting.variant not in ("hier", "12ep"):
            assert end["n12"] == 0


def test_cost_accounting():
    t = _table(edges=4, ops=4)  # 256 cells: room for budget x candidates distinct cells
    b, c, k = CFG.budget, CFG.candidates, CFG.keep_12
    ends = _ends(S.simulate_reps(t, S.Setting("random", "move", "p"), CFG, range(3)))
    assert (ends["proxy_n"] == b * c).all()  # every step scores c fresh cells
    assert np.allclose(ends["proxy_s"], 0.25 * ends["proxy_n"])
    ends = _ends(S.simulate_reps(t, S.Setting("random", "hier", "p"), CFG, range(3)))
    assert (ends["proxy_n"] == b * c).all() and (ends["n12"] == b * k).all()
    ends = _ends(S.simulate_reps(t, S.Setting("random", "12ep"), CFG, range(3)))
    assert (ends["n12"] == b * k).all() and (ends["proxy_n"] == 0).all()
    ev = S.simulate_reps(t, S.Setting("rea", "warmup", "p"), CFG, range(3))
    first = ev[~ev["end"]].groupby("rep").first()
    assert (first["proxy_n"] == CFG.warmup_for(t.n)).all()  # the warm-up is paid before the first training
    assert (_ends(ev)["proxy_n"] == CFG.warmup_for(t.n)).all()  # and nothing after it
    ev = S.simulate_reps(t, S.Setting("rea", "hier", "p"), CFG, range(3))
    h = S.hits(ev, t, CFG)
    assert np.allclose(h["end_cost"], b + S.COST_12 * _ends(ev)["n12"].to_numpy())  # 12-epoch runs at 12/200
    assert (_ends(ev)["n12"] >= b).all()  # at least one 12-epoch run per full training


def test_each_cell_is_paid_once_at_its_own_measured_seconds():
    sec = np.arange(1, 257) / 1024  # distinct, exact in binary
    t = _table(seconds=sec)
    run = S._Run(t, "p", CFG, np.random.default_rng(0))
    run.score(np.array([3, 5, 7]))
    run.score(np.array([5, 7, 9]))  # 5 and 7 are known already: only 9 is paid
    assert run.proxy_n == 4 and run.proxy_s == sec[[3, 5, 7, 9]].sum()
    run.train12(np.array([1, 2]))
    run.train12(np.array([2]))
    assert run.n12 == 2
    run.train(4)
    with pytest.raises(AssertionError, match="twice"):
        run.train(4)


def test_nearest_cells_on_a_restricted_space():
    full = _table(edges=3, ops=3)
    keep = np.array([0, 1, 5, 13, 26])  # a sparse subset: (0,0,0), (0,0,1), (0,1,2), (1,1,1), (2,2,2)
    t = S.SimTable("sub", "toy", full.ids[keep], full.ops[keep], full.val[keep], full.test[keep], full.val12[keep])
    run = S._Run(t, None, CFG, np.random.default_rng(0))
    run.trained[0] = True
    assert run.nearest(0, 1).tolist() == [1]  # distance 1
    assert sorted(run.nearest(0, 3).tolist()) == [1, 2, 3]  # then distance 2 (5) and 3 (13, 26): ties at random
    run.trained[1] = True
    assert run.nearest(0, 1).tolist() == [2]


def test_a_perfect_proxy_warm_up_trains_the_best_cell_first():
    t = _table(proxy_noise=0.0)
    t.scores["p"] = t.val.copy()
    cfg = S.SearchConfig(**{**CFG.__dict__, "warmup_fraction": 1.0, "gap": 0.0})
    t.test = t.val.copy()
    for base in S.BASES:
        ev = S.simulate_reps(t, S.Setting(base, "warmup", "p"), cfg, range(3))
        h = S.hits(ev, t, cfg)
        assert (h["k"] == 1).all() and (h["cost"] == 1).all() and h["reached"].all()
        assert (h["proxy_n"] == t.n).all()


def test_hits_and_speedups_on_known_trajectories():
    t = S.SimTable("x", "toy", np.array([10, 11, 12]), np.zeros((3, 1), np.int8), np.array([1.0, 2, 3]),
                   np.array([90.0, 93.6, 94.0]), np.zeros(3))
    cfg = S.SearchConfig(reps=3, gap=0.5)  # target: test >= 93.5, met by cells 11 and 12

    def events(ks):  # rep r: cell 10 at k=1, then cell 11 at ks[r] (None: never)
        rows = []
        for r, k in enumerate(ks):
            rows.append((r, False, 1, 0, 0, 0.0, 10))
            if k is not None:
                rows.append((r, False, k, 2, 5, 0.5, 11))
            rows.append((r, True, 20, 4, 9, 1.0, -1))
        return pd.DataFrame(rows, columns=S.EVENT_COLUMNS)

    base = S.hits(events([8, 12, None]), t, cfg)
    fast = S.hits(events([2, 3, 4]), t, cfg)
    assert base["k"].tolist() == [8, 12, np.inf] and base["reached"].tolist() == [True, True, False]
    assert np.allclose(fast["cost"], np.array([2, 3, 4]) + 2 * S.COST_12)
    assert np.allclose(base["end_cost"], 20 + 4 * S.COST_12)
    sp = S.speedups({"base": base, "fast": fast}, {"random": "base"}, n_boot=200).set_index("setting")
    assert sp.loc["fast", "median_cost"] == pytest.approx(3 + 2 * S.COST_12)
    assert sp.loc["fast", "speedup_random"] == pytest.approx((12 + 2 * S.COST_12) / (3 + 2 * S.COST_12))
    assert sp.loc["base", "speedup_random"] == pytest.approx(1.0)
    f = sp.loc["fast"]
    assert f["speedup_random_lo"] <= f["speedup_random"] <= f["speedup_random_hi"]
    cv = S.curves(events([2, 3, 4]), t, cfg, np.array([1.0, 2.5, 3.5, 10]))
    assert np.allclose(cv["mean"], [90.0, (93.6 + 90 + 90) / 3, (93.6 * 2 + 90) / 3, 93.6], atol=1e-9)


def test_cached_runs_resume_and_go_stale(tmp_path):
    t = _table()
    s = S.Setting("rea", "hier", "p")
    full = S.run_setting(t, s, CFG, tmp_path)
    parts = sorted(tmp_path.glob("*.parquet"))
    assert len(parts) == 2  # 4 repetitions in blocks of 2
    pd.testing.assert_frame_equal(full, S.simulate_reps(t, s, CFG, range(4)))
    kept = parts[0].stat().st_mtime_ns
    parts[1].unlink()  # a run killed before its second block
    again = S.run_setting(t, s, CFG, tmp_path)
    pd.testing.assert_frame_equal(again, full)
    assert parts[0].stat().st_mtime_ns == kept and parts[1].is_file()  # only the missing block was computed
    t.scores["p"] = t.scores["p"][::-1].copy()  # new scores: the cached repetitions are stale
    S.run_setting(t, s, CFG, tmp_path)
    assert not any(p.is_file() for p in parts) and len(list(tmp_path.glob("*.parquet"))) == 2


def test_a_broken_cached_part_is_recomputed_with_a_warning_naming_it(tmp_path):
    t = _table()
    s = S.Setting("rea", "hier", "p")
    full = S.run_setting(t, s, CFG, tmp_path)
    broken = sorted(tmp_path.glob("*.parquet"))[0]
    broken.write_bytes(b"not a parquet file")  # e.g. a disk that filled up under another writer
    with pytest.warns(RuntimeWarning, match=broken.name):
        again = S.run_setting(t, s, CFG, tmp_path)
    pd.testing.assert_frame_equal(again, full)
    pd.read_parquet(broken)  # rewritten


def test_nb201_table_from_the_cache(real_data):
    from proxybench.provenance import REPO_ROOT

    g = S.Group("t", "cifar10", ("params", "synflow"))
    t = S.load_table(g, real_data, REPO_ROOT / "reports" / "scores")
    assert t.n >= 20 and len(np.unique(t.ids)) == t.n and t.ops.shape == (t.n, 6)
    assert np.isfinite(t.val).all() and np.isfinite(t.test).all() and np.isfinite(t.val12).all()
    assert (t.seconds["synflow"] > 0).all()
    ev = S.simulate_reps(t, S.Setting("rea", "move", "synflow"), S.SearchConfig(reps=2, budget=20), range(2))
    assert set(ev["arch"][~ev["end"]]) <= set(t.ids)


def test_report_end_to_end_on_a_small_study(real_data, tmp_path):
    from proxybench.provenance import REPO_ROOT

    cfg = S.SearchConfig(reps=3, budget=15, block=3)
    assert cfg.tag  # not the default study: its files never overwrite reports/search*
    g = S.Group("c10-small", "cifar10", ("params", "synflow"), "test")
    path, head = S.run_default(tmp_path, real_data, REPO_ROOT / "reports" / "scores", cfg, [g], n_boot=50,
                               progress=False)
    text = path.read_text()
    assert path.name == f"search{cfg.tag}.md" and "speed-up vs REA" in text and "REA + hierarchical (synflow)" in text
    assert (tmp_path / "figures" / f"search_c10-small{cfg.tag}.png").is_file()
    summary = pd.read_csv(tmp_path / f"search{cfg.tag}" / "summary_c10-small.csv")
    assert len(summary) == len(S.settings_for(g.proxies)) and set(summary["reps"]) == {3}
    assert "synflow" in head and f"search{cfg.tag}.md" in head


def test_proxy_seconds_charge_shared_work():
    rows = pd.DataFrame({"arch": ["a", "b"] * 4,
                         "proxy": ["synflow"] * 2 + ["params"] * 2 + ["flops"] * 2 + ["nwot"] * 2,
                         "seconds": [0.5, 0.25, 0.125, 0.125, 0.001, 0.002, 0.0, 0.0]})
    sec, src = S.proxy_seconds(rows, "synflow", None)
    assert sec.to_dict() == {"a": 0.5, "b": 0.25} and "per cell" in src
    sec, src = S.proxy_seconds(rows, "flops", None)  # params built the shared network: flops' own time is marginal
    assert sec.to_dict() == {"a": 0.001 + 0.125, "b": 0.002 + 0.125} and "upper bound" in src
    sec, src = S.proxy_seconds(rows, "nwot", {"cells": 8, "per_proxy": {"nwot": {"seconds_median": 0.375}}})
    assert sec.to_dict() == {"a": 0.375, "b": 0.375} and "alone" in src


def test_a_set_level_aggregate_ranks_only_the_cells_the_search_has_scored():
    from proxybench import metrics

    t = _table()
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=t.n), rng.normal(size=t.n)
    t.members["agg"] = ("log_rank", [a, b])
    t.scores["agg"], t.seconds["agg"] = metrics.aggregate([a, b], "log_rank"), np.ones(t.n)
    run = S._Run(t, "agg", S.SearchConfig(), np.random.default_rng(0))
    first = np.array([5, 9, 2])
    got = run.score(first)
    np.testing.assert_allclose(got, metrics.aggregate([a[[2, 5, 9]], b[[2, 5, 9]]], "log_rank")[[1, 2, 0]])
    # scoring more cells re-ranks the earlier ones among all the cells seen so far, never the whole table
    more = np.array([1, 5])
    seen = np.array([1, 2, 5, 9])
    np.testing.assert_allclose(run.score(more), metrics.aggregate([a[seen], b[seen]], "log_rank")[[0, 2]])
    assert run.proxy_n == 4
    assert not np.allclose(run.score(first), t.scores["agg"][first])
    # the fingerprint sees the members: other member scores, other trajectories
    s = S.Setting("random", "move", "agg")
    before = t.fingerprint(s, S.SearchConfig())
    t.members["agg"] = ("log_rank", [a, -b])
    assert t.fingerprint(s, S.SearchConfig()) != before
