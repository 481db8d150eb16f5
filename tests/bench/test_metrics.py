"""Rank-correlation metrics: agreement with scipy, hand-computed cases, sign, NaN handling, intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from proxybench.metrics import (
    bootstrap_ci,
    correlation_summary,
    kendall_tau,
    paired_bootstrap_test,
    pairwise_concordance,
    precision_at_k,
    rank_average,
    seed_spread,
    spearman_rho,
    top_k_spearman,
)


def _random_pairs(seed: int, n: int, ties: bool):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values on both sides: most pairs are tied somewhere
        s = rng.integers(0, 4, n).astype(float)
        t = np.round(s + rng.normal(0, 1.5, n))
    else:
        s = rng.normal(size=n)
        t = 0.5 * s + rng.normal(size=n)
    return s, t


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "many-ties"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_scipy(seed, ties):
    s, t = _random_pairs(seed, 50, ties)
    if ties:
        assert len(np.unique(s)) <= 4 and len(np.unique(t)) < 20
    assert kendall_tau(s, t) == pytest.approx(stats.kendalltau(s, t).statistic, abs=1e-12)
    assert spearman_rho(s, t) == pytest.approx(stats.spearmanr(s, t).statistic, abs=1e-12)


def test_hand_computed_small_case():
    # One discordant pair (2, 3) out of 6: tau = (5 - 1) / 6; sum d^2 = 2: rho = 1 - 6*2 / (4*15) = 0.8.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_ties_use_tau_b_and_average_ranks():
    # x has one tied pair: concordant 5, discordant 0, tau-b = 5 / sqrt(5 * 6).
    x, y = [1, 1, 2, 3], [1, 2, 3, 4]
    assert kendall_tau(x, y) == pytest.approx(5 / math.sqrt(30))
    # Average ranks of x: 1.5, 1.5, 3, 4; rho is their Pearson correlation with 1..4.
    assert spearman_rho(x, y) == pytest.approx(np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1])


def test_perfect_inverse_is_signed_minus_one():
    x = np.arange(20.0)
    assert kendall_tau(x, -x) == pytest.approx(-1.0)
    assert spearman_rho(x, -x) == pytest.approx(-1.0)
    assert kendall_tau(x, x**3) == pytest.approx(1.0)
    s = correlation_summary(x, -x, higher_is_better=True, n_resamples=0)
    assert s["tau"] == pytest.approx(-1.0) and s["rho"] == pytest.approx(-1.0)


def test_lower_is_better_negates_the_score():
    s, t = _random_pairs(3, 40, ties=False)
    up = correlation_summary(s, t, higher_is_better=True, n_resamples=0)
    down = correlation_summary(s, t, higher_is_better=False, n_resamples=0)
    assert up["tau"] > 0
    assert down["tau"] == pytest.approx(-up["tau"]) and down["rho"] == pytest.approx(-up["rho"])
    # A lower-is-better proxy that ranks perfectly as declared scores +1.
    x = np.arange(10.0)
    assert correlation_summary(-x, x, higher_is_better=False, n_resamples=0)["rho"] == pytest.approx(1.0)


def test_nonfinite_scores_are_excluded_and_counted():
    s, t = _random_pairs(4, 30, ties=False)
    bad = s.copy()
    bad[[0, 5, 9]] = [np.nan, np.inf, -np.inf]
    out = correlation_summary(bad, t, n_resamples=0)
    keep = np.ones(30, bool)
    keep[[0, 5, 9]] = False
    assert out["n"] == 27 and out["n_nonfinite"] == 3
    assert out["tau"] == pytest.approx(stats.kendalltau(s[keep], t[keep]).statistic)
    assert out["rho"] == pytest.approx(stats.spearmanr(s[keep], t[keep]).statistic)
    # A non-finite truth value drops the pair too, but is not the proxy's non-finite score.
    t2 = t.copy()
    t2[1] = np.nan
    out2 = correlation_summary(s, t2, n_resamples=0)
    assert out2["n"] == 29 and out2["n_nonfinite"] == 0


def test_rank_last_policy_ranks_nonfinite_scores_below_all_others():
    s, t = _random_pairs(4, 30, ties=False)
    bad = s.copy()
    bad[[0, 5]] = [np.nan, -np.inf]
    out = correlation_summary(bad, t, n_resamples=0, nan_policy="rank_last")
    lowest = s.copy()
    lowest[[0, 5]] = s.min() - 1  # tied below every finite score
    assert out["n"] == 30 and out["n_nonfinite"] == 2
    assert out["rho"] == pytest.approx(stats.spearmanr(lowest, t).statistic)
    assert out["tau"] == pytest.approx(stats.kendalltau(lowest, t).statistic)
    with pytest.raises(ValueError, match="nan_policy"):
        correlation_summary(s, t, nan_policy="to_minus_1e8")


def test_declared_applies_the_direction_and_nan_policy_of_the_registry_record():
    from proxybench.metrics import declared, proxy_summary
    from proxybench.proxies import get_proxy

    s, t = _random_pairs(5, 30, ties=False)
    bad = s.copy()
    bad[[0, 5]] = [np.nan, np.inf]
    # jacob_cov: ↑, rank_last; eproxy: ↓, rank_last; params: ↑, exclude
    assert get_proxy("jacob_cov").nan_policy == "rank_last" and get_proxy("params").nan_policy == "exclude"
    ranked = declared(bad, "jacob_cov")
    assert np.isneginf(ranked[[0, 5]]).all() and (ranked[1:5] == s[1:5]).all()
    assert (declared(bad, "eproxy")[1:5] == -s[1:5]).all() and np.isneginf(declared(bad, "eproxy")[[0, 5]]).all()
    assert np.isnan(declared(bad, "params")[[0, 5]]).all()
    assert np.isneginf(declared(bad, get_proxy("params"), every_cell=True)[[0, 5]]).all()  # a search ranks all
    for name in ("jacob_cov", "eproxy", "params"):
        info = get_proxy(name)
        mine = proxy_summary(name, bad, t, n_resamples=50)
        by_hand = correlation_summary(bad, t, info.higher_is_better, n_resamples=50, nan_policy=info.nan_policy)
        assert mine == by_hand
    assert proxy_summary("params", bad, t, n_resamples=0)["n"] == 28
    assert proxy_summary("jacob_cov", bad, t, n_resamples=0)["n"] == 30


def test_declared_rho_drops_what_the_policy_excludes_and_missing_accuracies():
    from proxybench.metrics import declared_rho

    s, t = _random_pairs(6, 40, ties=False)
    bad, truth = s.copy(), t.copy()
    bad[[0, 5]] = [np.nan, np.inf]
    truth[7] = np.nan  # a cell without a trained accuracy
    keep = np.isfinite(bad) & np.isfinite(truth)
    rho, n = declared_rho(bad, truth, "params")  # ↑, exclude: the two non-finite scores and the NaN accuracy go
    assert n == 37 and rho == pytest.approx(stats.spearmanr(s[keep], t[keep]).statistic, abs=1e-15)
    rho, n = declared_rho(bad, truth, "eproxy")  # ↓, rank_last: the non-finite scores stay, ranked last
    ranked = np.where(np.isfinite(bad), -bad, -np.inf)
    assert n == 39 and rho == pytest.approx(stats.spearmanr(ranked[~np.isnan(truth)],
                                                            truth[~np.isnan(truth)]).statistic, abs=1e-15)


def test_pairwise_concordance_matches_kendall_without_ties_and_votes_by_majority():
    s, t = _random_pairs(6, 40, ties=False)
    assert pairwise_concordance(s, t) == pytest.approx((stats.kendalltau(s, t).statistic + 1) / 2)
    t3 = np.array([1.0, 2.0, 3.0])
    up, down = np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])
    assert pairwise_concordance([up, up, down], t3) == 1.0   # the majority orders every pair right
    assert pairwise_concordance([up, down, down], t3) == 0.0
    assert pairwise_concordance([up, down], t3) == 0.5       # every vote split: counted 1/2
    assert pairwise_concordance(np.array([1.0, 1.0, 1.0]), t3) == 0.5  # all tied
    assert pairwise_concordance([up], t3, block=1) == 1.0    # blocks change nothing


def test_rank_average_is_the_mean_of_scipy_ranks():
    a, b = np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, -np.inf])
    assert rank_average([a, b]).tolist() == [2.5, 2.0, 1.5]  # ranks [3, 1, 2] and [2, 3, 1]


def test_interval_contains_estimate_and_is_seed_deterministic():
    s, t = _random_pairs(5, 60, ties=False)
    a = correlation_summary(s, t, n_resamples=300, seed=7)
    b = correlation_summary(s, t, n_resamples=300, seed=7)
    assert a == b
    for m in ("tau", "rho"):
        assert -1 <= a[f"{m}_lo"] <= a[m] <= a[f"{m}_hi"] <= 1
        assert a[f"{m}_lo"] < a[f"{m}_hi"]
    c = correlation_summary(s, t, n_resamples=300, seed=8)
    assert (c["tau_lo"], c["tau_hi"]) != (a["tau_lo"], a["tau_hi"])
    assert c["tau"] == a["tau"]


def test_bootstrap_needs_three_points():
    assert all(math.isnan(v) for v in bootstrap_ci([1, 2], [2, 1], kendall_tau, n_resamples=10))
    assert math.isnan(kendall_tau([1.0], [2.0])) and math.isnan(spearman_rho([1.0], [2.0]))


@pytest.mark.parametrize("fn", [kendall_tau, spearman_rho, correlation_summary])
def test_shape_mismatch_raises(fn):
    with pytest.raises(ValueError, match="equal length"):
        fn([1, 2, 3], [1, 2])
    with pytest.raises(ValueError):
        fn(np.ones((2, 2)), np.ones((2, 2)))


def test_top_k_spearman_uses_the_most_accurate_architectures():
    t = np.arange(20, dtype=float)
    s = t.copy()
    s[:10] = s[:10][::-1]  # the worse half is scrambled: the top-10% is still perfectly ranked
    assert top_k_spearman(s, t, frac=0.5) == pytest.approx(1.0)
    s2 = t.copy()
    s2[-4:] = s2[-4:][::-1]  # the best four reversed
    assert top_k_spearman(s2, t, frac=0.2) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        top_k_spearman(s, t, frac=0)


def test_precision_at_k_by_hand():
    t = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    s = np.array([10.0, 2, 3, 4, 5, 6, 7, 8, 9, 1])  # proxy's top-2: indices 0 and 8; truth's: 9 and 8
    assert precision_at_k(s, t, frac=0.2) == 0.5
    assert precision_at_k(t, t, frac=0.3) == 1.0


def test_paired_bootstrap_detects_a_better_proxy_and_not_an_equal_one():
    rng = np.random.default_rng(1)
    t = rng.normal(size=200)
    good, bad = t + 0.3 * rng.normal(size=200), t + 3 * rng.normal(size=200)
    res = paired_bootstrap_test(good, bad, t, n_resamples=300)
    assert res["delta"] > 0 and res["delta_lo"] > 0 and res["p_value"] < 0.01
    same = paired_bootstrap_test(good, good, t, n_resamples=50)
    assert same["delta"] == 0 and same["p_value"] == 1.0


def test_seed_spread():
    assert seed_spread([0.5, 0.7]) == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1)))
    assert np.isnan(seed_spread([0.5])[1])


@pytest.mark.parametrize("kind", ["continuous", "ties", "rank_last", "few_values"])
def test_the_resampled_rank_statistics_are_scipys_bootstrap_bit_for_bit(kind):
    """bootstrap_ci evaluates τ and ρ on resampled indices (metrics._Ranked) instead of calling scipy per resample:
    the same resamples and, per resample, the same bits as scipy's kendalltau/spearmanr, so the same interval."""
    import warnings

    from proxybench.metrics import _Ranked

    rng = np.random.default_rng({"continuous": 0, "ties": 1, "rank_last": 2, "few_values": 3}[kind])
    for n in (3, 7, 40, 400):
        s = rng.normal(size=n)
        t = s + rng.normal(size=n)
        if kind == "ties":
            s, t = np.round(2 * s), np.round(t)
        elif kind == "rank_last":
            s[rng.random(n) < 0.25] = -np.inf
        elif kind == "few_values":
            s = rng.integers(0, 2, n).astype(float)
        ranked = _Ranked(s, t)
        for _ in range(20):  # single resamples, constant ones included for small n
            i = rng.integers(0, n, n)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tau, rho = stats.kendalltau(s[i], t[i]).statistic, stats.spearmanr(s[i], t[i]).statistic
            assert ranked.tau(i) == tau or (math.isnan(tau) and math.isnan(ranked.tau(i)))
            assert ranked.rho(i) == rho or (math.isnan(rho) and math.isnan(ranked.rho(i)))
        for stat in (kendall_tau, spearman_rho):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = stats.bootstrap((s, t), stat, paired=True, vectorized=False, n_resamples=200,
                                       confidence_level=0.95, method="percentile",
                                       random_state=np.random.default_rng(5)).confidence_interval
                got = bootstrap_ci(s, t, stat, n_resamples=200, seed=5)
            assert np.array_equal(got, (want.low, want.high), equal_nan=True), (kind, n, stat.__name__)
