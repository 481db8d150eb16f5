"""Rank-correlation metrics: arrays in, numbers out. Signed, never abs().

Ties are handled as scipy does: Kendall's tau-b (``scipy.stats.kendalltau``) and Spearman's rho on
average ranks (``scipy.stats.spearmanr``).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _pair(score, truth) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 1:
        raise ValueError(f"score and truth must be 1-D of equal length, got {s.shape} and {t.shape}")
    return s, t


def kendall_tau(score, truth) -> float:
    """Kendall's tau-b between a proxy's scores and the true accuracies (scipy.stats.kendalltau)."""
    s, t = _pair(score, truth)
    return float(stats.kendalltau(s, t).statistic) if len(s) > 1 else float("nan")


def spearman_rho(score, truth) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks; scipy.stats.spearmanr)."""
    s, t = _pair(score, truth)
    return float(stats.spearmanr(s, t).statistic) if len(s) > 1 else float("nan")


def bootstrap_ci(score, truth, statistic, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(score, truth)``, resampling architectures (pairs)."""
    s, t = _pair(score, truth)
    if len(s) < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    fast = _RESAMPLED.get(statistic)
    if fast is not None:  # the same resamples (scipy resamples the pairs' indices), each statistic the same bits
        ranked = _Ranked(s, t)
        res = stats.bootstrap((np.arange(len(s)),), lambda i, axis=-1: fast(ranked, i), vectorized=True,
                              n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                              random_state=rng)
    else:
        res = stats.bootstrap((s, t), statistic, paired=True, vectorized=False, n_resamples=n_resamples,
                              confidence_level=confidence, method="percentile", random_state=rng)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


class _Ranked:
    """A set of (score, truth) pairs as what Kendall's τ-b and Spearman's ρ of any resample of it depend on: the
    dense ranks of each side and the pairs' lexicographic order. A resample (indices ``i``, with repeats) is then
    its counts per pair, so neither statistic sorts again, and each equals scipy's ``kendalltau``/``spearmanr`` of
    ``(score[i], truth[i])`` bit for bit (tested): τ-b is made of the same integer counts (discordant pairs by
    scipy's own ``_kendall_dis``, ties) and the same final float operations, ρ is ``np.corrcoef`` of the same
    average ranks (exact half-integers) in the resample's order and memory layout. This is what makes ``make
    bench``'s 1,000-resample intervals cheap: scipy's per-call overhead and sorts were most of their time."""

    def __init__(self, s: np.ndarray, t: np.ndarray):
        self.n = len(s)
        self.dx = np.unique(s, return_inverse=True)[1].astype(np.intp).ravel()
        self.dy = np.unique(t, return_inverse=True)[1].astype(np.intp).ravel()
        self.order = np.lexsort((self.dy, self.dx))  # by score rank, then by truth rank

    def counts(self, i: np.ndarray) -> np.ndarray:
        return np.bincount(i, minlength=self.n)

    def tau(self, i: np.ndarray) -> float:
        """scipy.stats.kendalltau(s[i], t[i]).statistic (variant b)."""
        c = self.counts(i)
        seq = np.repeat(self.order, c[self.order])  # the resample sorted by (score, truth)
        x, y = self.dx[seq], self.dy[seq] + 1  # _kendall_dis's Fenwick tree needs ranks >= 1
        size = seq.size
        dis = _kendall_dis(x, y)
        obs = np.r_[True, (x[1:] != x[:-1]) | (y[1:] != y[:-1]), True]
        cnt = np.diff(np.nonzero(obs)[0]).astype("int64", copy=False)
        ntie = int((cnt * (cnt - 1) // 2).sum())
        xtie, ytie = _ties(x), _ties(y)
        tot = (size * (size - 1)) // 2
        if xtie == tot or ytie == tot:
            return float("nan")
        con_minus_dis = tot - xtie - ytie + ntie - 2 * dis
        tau = con_minus_dis / np.sqrt(tot - xtie) / np.sqrt(tot - ytie)
        return float(np.minimum(1.0, max(-1.0, tau)))

    def rho(self, i: np.ndarray) -> float:
        """scipy.stats.spearmanr(s[i], t[i]).statistic."""
        c = self.counts(i)
        rx, ry = _average_ranks(self.dx, c)[self.dx[i]], _average_ranks(self.dy, c)[self.dy[i]]
        if (rx[0] == rx).all() or (ry[0] == ry).all():
            return float("nan")  # a constant side: scipy's ConstantInputWarning case
        return float(np.corrcoef(np.vstack((rx, ry)).T, rowvar=False)[1, 0])


def _ties(ranks: np.ndarray) -> int:
    cnt = np.bincount(ranks).astype("int64", copy=False)
    cnt = cnt[cnt > 1]
    return int((cnt * (cnt - 1) // 2).sum())


def _average_ranks(dense: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per distinct value (dense rank), its average 1-based rank among the resample's items (``counts`` per item):
    the items below it, plus (its multiplicity + 1) / 2, as ``scipy.stats.rankdata(method="average")``."""
    m = np.bincount(dense, weights=counts)
    below = np.cumsum(m) - m
    return below + (m + 1) / 2


def _resampled(stat):
    def on_indices(ranked: _Ranked, i: np.ndarray) -> np.ndarray:
        i = np.asarray(i)
        if i.ndim == 1:
            return np.asarray(stat(ranked, i))
        return np.array([stat(ranked, row) for row in i.reshape(-1, i.shape[-1])]).reshape(i.shape[:-1])
    return on_indices


def oriented(score, higher_is_better: bool = True, nan_policy: str = "exclude") -> np.ndarray:
    """The score as a "higher ranks better" array: negated for a lower-is-better proxy; under the
    ``rank_last`` policy every non-finite score becomes -inf (below all finite ones, tied among themselves),
    under ``exclude`` it becomes NaN (callers drop it)."""
    s = np.asarray(score, dtype=np.float64)
    s = s if higher_is_better else -s
    if nan_policy == "rank_last":
        s = np.where(np.isfinite(s), s, -np.inf)
    elif nan_policy == "exclude":
        s = np.where(np.isfinite(s), s, np.nan)
    else:
        raise ValueError(f"unknown nan_policy {nan_policy!r}")
    return s


def _record(proxy):
    """A proxy's registry record: ``proxy`` is a registered name or the record itself."""
    if isinstance(proxy, str):
        from proxybench.proxies import get_proxy

        return get_proxy(proxy)
    return proxy


def declared(score, proxy, *, every_cell: bool = False) -> np.ndarray:
    """A proxy's scores as its declared ranking: the one place its registry record's direction and NaN
    policy are applied (``proxy``: a registered name or its record, ``proxies.ProxyInfo``).

    Higher ranks better (negated for a ↓ proxy); a non-finite score becomes -inf under ``rank_last`` (below
    every finite score, tied among themselves) and NaN under ``exclude`` (the caller drops it). A consumer that
    must order every cell (a search picking cells, a latency budget) passes ``every_cell=True``: it cannot
    leave a cell out, so a non-finite score ranks last whatever the policy."""
    info = _record(proxy)
    return oriented(score, info.higher_is_better, "rank_last" if every_cell else info.nan_policy)


def declared_rho(score, truth, proxy) -> tuple[float, int]:
    """Spearman ρ of a proxy's declared ranking (:func:`declared`) against ``truth`` over the cells where both are
    defined (an excluded non-finite score or a missing accuracy drops the cell), and how many cells that is."""
    s, t = _pair(declared(np.asarray(score, dtype=np.float64), proxy), truth)
    keep = ~np.isnan(s) & np.isfinite(t)
    return spearman_rho(s[keep], t[keep]), int(keep.sum())


def proxy_summary(proxy, score, truth, n_resamples: int = 1000, seed: int = 0) -> dict:
    """:func:`correlation_summary` of a registered proxy's scores, in its declared ranking (:func:`declared`)."""
    s, t = _pair(score, truth)
    return _summary(declared(s, proxy), t, int((~np.isfinite(s)).sum()), n_resamples, seed)


def correlation_summary(score, truth, higher_is_better: bool = True, n_resamples: int = 1000,
                        seed: int = 0, nan_policy: str = "exclude") -> dict:
    """τ and ρ of the proxy's *declared* ranking against the truth, with 95% bootstrap intervals.

    The score is negated for a proxy declared lower-is-better, so a positive value always means "ranks
    as it claims" and a negative one exposes a proxy that is anti-correlated with accuracy. Non-finite
    scores are counted in ``n_nonfinite`` and, by the proxy's declared policy, either excluded
    (``exclude``) or ranked below every finite score (``rank_last``); ``n`` is the number of
    architectures in the correlation. For a registered proxy, :func:`proxy_summary` reads the direction and
    the policy from its record.
    """
    s, t = _pair(score, truth)
    return _summary(oriented(s, higher_is_better, nan_policy), t, int((~np.isfinite(s)).sum()), n_resamples, seed)


def _summary(s: np.ndarray, t: np.ndarray, n_nonfinite: int, n_resamples: int, seed: int) -> dict:
    """τ, ρ and their intervals of oriented scores ``s`` (NaN: excluded) against the truth ``t``."""
    keep = ~np.isnan(s) & np.isfinite(t)
    s, t = s[keep], t[keep]
    out = {"n": int(len(s)), "n_nonfinite": n_nonfinite,
           "tau": kendall_tau(s, t), "rho": spearman_rho(s, t)}
    nan = float("nan")
    for key, stat in (("tau", kendall_tau), ("rho", spearman_rho)):
        lo_hi = bootstrap_ci(s, t, stat, n_resamples, seed=seed) if n_resamples > 0 else (nan, nan)
        out[f"{key}_lo"], out[f"{key}_hi"] = lo_hi
    return out


def _pair_signs(x: np.ndarray, rows: slice) -> np.ndarray:
    return np.sign(x[rows, None] - x[None, :])


def pairwise_concordance(scores, truth, block: int = 512) -> float:
    """Fraction of architecture pairs with different accuracy that a ranking orders like the accuracy.

    ``scores`` is one score array, or a list of arrays whose pairwise majority vote is the ranking (the
    "vote" of Abdelfattah et al. 2021: each proxy votes sign(s_i - s_j); the majority decides). A pair
    the ranking leaves tied (equal scores, or a split vote) counts 1/2. Scores must be oriented (higher
    ranks better; see ``oriented``), -inf allowed, NaN not. Computed in blocks of rows, O(n^2) time,
    O(block * n) memory.
    """
    many = [np.asarray(s, dtype=np.float64) for s in (scores if isinstance(scores, (list, tuple)) else [scores])]
    t = np.asarray(truth, dtype=np.float64)
    if any(s.shape != t.shape for s in many) or any(np.isnan(s).any() for s in many):
        raise ValueError("scores must match truth in shape and hold no NaN (orient them first)")
    known = np.isfinite(t)  # a pair with an unknown accuracy is no evidence either way
    many, t = [s[known] for s in many], t[known]
    agree = pairs = 0.0
    for start in range(0, len(t), block):
        rows = slice(start, min(start + block, len(t)))
        truth_sign = _pair_signs(t, rows)
        with np.errstate(invalid="ignore"):  # -inf - -inf: a tie, counted as one
            votes = sum(np.nan_to_num(_pair_signs(s, rows), nan=0.0) for s in many)
        decided = np.sign(votes)
        mask = truth_sign != 0
        agree += float(np.sum((decided == truth_sign)[mask]) + 0.5 * np.sum((decided == 0)[mask]))
        pairs += float(mask.sum())
    return agree / pairs if pairs else float("nan")


def rank_average(scores) -> np.ndarray:
    """Rank-average ensemble: the mean over proxies of each architecture's average rank (ties as scipy's
    rankdata, -inf lowest). Scores must be oriented (higher ranks better)."""
    ranks = [stats.rankdata(np.asarray(s, dtype=np.float64)) for s in scores]
    return np.mean(ranks, axis=0)


def aggregate(scores, how: str) -> np.ndarray:
    """A set-level aggregate (``proxies.registry.AGGREGATIONS``) of oriented member scores over the cells given.

    ``scores``: one array per member, oriented (higher ranks better; :func:`declared`): NaN = left out, -inf =
    ranked last. Each member is ranked ascending over the cells where no member is NaN (ties averaged, as
    ``scipy.stats.rankdata``); ``log_rank`` sums log(rank / N) (AZ-NAS, VKDNW_agg), ``rank_sum`` sums the ranks
    (TE-NAS), ``rank_mean`` averages them. A cell with a NaN member gets NaN. The value of a cell depends on the
    set: the same cell in another set gets another value."""
    s = np.vstack([np.asarray(x, dtype=np.float64) for x in scores])
    keep = ~np.isnan(s).any(axis=0)
    out = np.full(s.shape[1], np.nan)
    n = int(keep.sum())
    if n == 0:
        return out
    ranks = np.vstack([stats.rankdata(row[keep]) for row in s])
    if how == "log_rank":
        out[keep] = np.log(ranks / n).sum(axis=0)
    elif how == "rank_sum":
        out[keep] = ranks.sum(axis=0)
    elif how == "rank_mean":
        out[keep] = ranks.mean(axis=0)
    else:
        raise ValueError(f"unknown aggregation {how!r}: one of log_rank, rank_sum, rank_mean")
    return out


def _top_k_count(n: int, frac: float) -> int:
    if not 0 < frac <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    return max(2, int(round(frac * n)))


def top_k_spearman(score, truth, frac: float = 0.1) -> float:
    """Spearman ρ within the ``frac`` most accurate architectures (the literature's "top-10%" ρ).

    The subset is chosen by the truth (ties at the cut broken by order of appearance, stable sort), so it
    asks: among the good architectures, does the proxy still rank correctly?
    """
    s, t = _pair(score, truth)
    k = _top_k_count(len(t), frac)
    top = np.argsort(-t, kind="stable")[:k]
    return spearman_rho(s[top], t[top])


def precision_at_k(score, truth, frac: float = 0.1) -> float:
    """Fraction of the proxy's top-k architectures that are among the truly top-k (k = ``frac`` * n).

    Ties at either cut count by their expected share under a random tie-break (params, for example, has
    only 22 distinct values on NB201), so the result never depends on row order. Scores must be oriented.
    """
    s, t = _pair(score, truth)
    k = _top_k_count(len(t), frac)
    return float(np.sum(_top_k_membership(s, k) * _top_k_membership(t, k)) / k)


def _top_k_membership(x: np.ndarray, k: int) -> np.ndarray:
    """Probability that each item is in the top k when ties at the cut are broken at random."""
    v = np.sort(x)[::-1][k - 1]  # the k-th largest value
    above, tied = x > v, x == v
    p = above.astype(float)
    p[tied] = (k - above.sum()) / tied.sum()
    return p


def paired_bootstrap_test(score_a, score_b, truth, statistic=spearman_rho, n_resamples: int = 1000,
                          seed: int = 0) -> dict:
    """Does proxy A rank better than proxy B on the same architectures?

    Resamples architectures (the same indices for both proxies) and returns ``delta`` = stat(A) - stat(B)
    on the full sample, its 95% percentile interval, and the two-sided bootstrap p-value (twice the smaller
    fraction of resampled deltas on either side of 0, as (1 + count) / (B + 1)). Scores must be oriented;
    -inf (a rank_last non-finite score) is allowed, NaN is not.
    """
    a, t = _pair(score_a, truth)
    b, _ = _pair(score_b, truth)
    rng = np.random.default_rng(seed)
    n = len(t)
    deltas = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = rng.integers(0, n, n)
        deltas[i] = statistic(a[idx], t[idx]) - statistic(b[idx], t[idx])
    deltas = deltas[np.isfinite(deltas)]
    delta = statistic(a, t) - statistic(b, t)
    if not len(deltas):
        return {"delta": delta, "delta_lo": float("nan"), "delta_hi": float("nan"), "p_value": float("nan"), "n": n}
    if np.all(deltas == 0):
        p = 1.0  # identical rankings
    else:  # (1 + count) / (B + 1): a bootstrap p-value is never exactly 0
        tail = min(np.sum(deltas <= 0), np.sum(deltas >= 0))
        p = min(1.0, 2 * (1 + tail) / (len(deltas) + 1))
    return {"delta": delta, "delta_lo": float(np.percentile(deltas, 2.5)),
            "delta_hi": float(np.percentile(deltas, 97.5)), "p_value": float(p), "n": n}


def seed_spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of a metric across seeds (sd NaN for one seed)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


# the statistics ``bootstrap_ci`` evaluates on resampled indices (:class:`_Ranked`); any other goes through scipy.
# τ-b counts discordant pairs with scipy's own (private) routine, the one its kendalltau calls: a scipy without it
# takes the per-resample path (same numbers, slower)
try:
    from scipy.stats._stats import _kendall_dis
except ImportError:  # pragma: no cover - depends on the installed scipy
    _kendall_dis = None
_RESAMPLED = {spearman_rho: _resampled(_Ranked.rho)}
if _kendall_dis is not None:
    _RESAMPLED[kendall_tau] = _resampled(_Ranked.tau)
