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
    res = stats.bootstrap((s, t), statistic, paired=True, vectorized=False, n_resamples=n_resamples,
                          confidence_level=confidence, method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def correlation_summary(score, truth, higher_is_better: bool = True, n_resamples: int = 1000,
                        seed: int = 0) -> dict:
    """τ and ρ of the proxy's *declared* ranking against the truth, with 95% bootstrap intervals.

    The score is negated for a proxy declared lower-is-better, so a positive value always means "ranks
    as it claims" and a negative one exposes a proxy that is anti-correlated with accuracy. Non-finite
    scores are excluded and counted in ``n_nonfinite``; ``n`` is the number of architectures used.
    """
    s, t = _pair(score, truth)
    finite = np.isfinite(s) & np.isfinite(t)
    s, t = s[finite], t[finite]
    if not higher_is_better:
        s = -s
    out = {"n": int(len(s)), "n_nonfinite": int((~finite).sum()),
           "tau": kendall_tau(s, t), "rho": spearman_rho(s, t)}
    if n_resamples > 0:
        out["tau_lo"], out["tau_hi"] = bootstrap_ci(s, t, kendall_tau, n_resamples, seed=seed)
        out["rho_lo"], out["rho_hi"] = bootstrap_ci(s, t, spearman_rho, n_resamples, seed=seed)
    return out
