"""CI regression of correlations: recompute a small golden study and compare it with a committed baseline.

``make baseline`` writes ``reports/baseline.json`` on purpose (never automatically); ``make regress``
recomputes the golden study with the current code in a fresh cache and fails when, for a proxy whose
declared version is unchanged, the scores changed or the correlation of its declared ranking dropped by
more than ``TOLERANCE``. A proxy whose version changed is "not comparable" (regenerate the baseline).
"""

from __future__ import annotations

import json
import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench import metrics, provenance
from bench.cache import ScoreCache
from bench.runner import Study, run_study, study_scores
from proxies import get_proxy, training_free

GOLDEN = {"space": "nb201", "tasks": ("cifar10",), "sample": 64, "sample_seed": 1, "seed": 42, "batch_size": 64}
TRUTH = "accuracy"  # the space's headline ground truth (NB201: 200-epoch test accuracy)
TOLERANCE = 0.02  # the largest allowed drop of the declared-direction Spearman ρ (and Kendall τ)
SCORE_RTOL = 1e-4  # each score may move by this fraction of itself (float32 sums, thread counts) ...
SCORE_ATOL = 1e-6  # ... plus this fraction of the proxy's 5th-percentile nonzero |score| (sums cancelling to ~0)


def golden_study(proxies=None, data_dir=None) -> Study:
    return Study(proxies=tuple(proxies or training_free()), data_dir=data_dir, **GOLDEN)


def compute(study: Study, progress: bool = True, workers: int | None = None) -> dict:
    """Score the study in a fresh temporary cache; per proxy: version, direction, τ, ρ, n and the scores."""
    with tempfile.TemporaryDirectory(prefix="proxybench-regress-") as tmp:
        cache = ScoreCache(tmp)
        run_study(study, cache, workers=workers, progress=progress)
        df = study_scores(study, cache)
    out = {}
    for proxy, g in df.groupby("proxy"):
        info = get_proxy(proxy)
        ok = g[g["status"] != "error"]
        s = metrics.correlation_summary(ok["score"].to_numpy(), ok[TRUTH].to_numpy(), info.higher_is_better,
                                        n_resamples=0, nan_policy=info.nan_policy)
        out[proxy] = {"version": int(info.version), "direction": info.direction, "nan_policy": info.nan_policy,
                      "rho": s["rho"], "tau": s["tau"], "n": s["n"], "n_nonfinite": s["n_nonfinite"],
                      "errors": sorted(g.loc[g["status"] == "error", "arch"]),
                      "scores": {a: (None if not math.isfinite(v) else v) for a, v in zip(g["arch"], g["score"],
                                                                                          strict=True)}}
    return out


def write_baseline(result: dict, path: str | Path) -> Path:
    path = Path(path)
    doc = {"golden_study": {k: list(v) if isinstance(v, tuple) else v for k, v in GOLDEN.items()},
           "truth": TRUTH, "tolerance": TOLERANCE, "score_rtol": SCORE_RTOL, "score_atol": SCORE_ATOL,
           "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "environment": provenance.environment(), "proxies": result}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def _scores_equal(old: dict, new: dict, rtol: float = SCORE_RTOL, atol: float = SCORE_ATOL) -> tuple[bool, str]:
    """Each score within ``rtol`` of itself plus ``atol`` x the 5th percentile of the proxy's nonzero |scores|
    (small next to almost every score, even for synflow's 1e10..1e50); non-finite must stay non-finite."""
    if set(old) != set(new):
        return False, f"different architectures ({len(set(old) ^ set(new))} differ)"
    finite = [abs(v) for v in old.values() if v]
    floor = atol * float(np.percentile(finite, 5, method="lower")) if finite else 0.0
    for a, o in old.items():
        n = new[a]
        if (o is None) != (n is None):
            return False, f"{a}: {o} -> {n}"
        if o is not None and abs(o - n) > rtol * max(abs(o), abs(n)) + floor:
            return False, f"{a}: {o:.6g} -> {n:.6g}"
    return True, ""


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def check(baseline: dict, current: dict) -> tuple[list[dict], bool]:
    """Compare a recomputed golden study with the baseline: rows for the diff table, and whether it passes."""
    rows, ok = [], True
    base = baseline["proxies"]
    tol = baseline.get("tolerance", TOLERANCE)
    for name in sorted(set(base) | set(current)):
        b, c = base.get(name), current.get(name)
        row = {"proxy": name, "rho_baseline": b["rho"] if b else np.nan, "rho_now": c["rho"] if c else np.nan,
               "tau_baseline": b["tau"] if b else np.nan, "tau_now": c["tau"] if c else np.nan}
        if b is None:
            row["status"] = "new (not in the baseline: run `make baseline` to add it)"
        elif c is None:
            row["status"] = "missing (in the baseline, not registered now)"
        elif b["version"] != c["version"]:
            row["status"] = f"not comparable (version {b['version']} -> {c['version']}; run `make baseline`)"
        else:
            same, why = _scores_equal(b["scores"], c["scores"], baseline.get("score_rtol", SCORE_RTOL),
                                      baseline.get("score_atol", SCORE_ATOL))
            drop_rho = _num(b["rho"]) - _num(c["rho"])
            drop_tau = _num(b["tau"]) - _num(c["tau"])
            if c.get("errors"):
                row["status"] = f"FAIL: {len(c['errors'])} error(s), e.g. on {c['errors'][0]}"
                ok = False
            elif not all(math.isfinite(_num(x[k])) for x in (b, c) for k in ("rho", "tau")):
                row["status"] = "FAIL: a correlation is not a number"
                ok = False
            elif not same:
                row["status"] = f"FAIL: scores changed but version {c['version']} did not ({why})"
                ok = False
            elif drop_rho > tol or drop_tau > tol:
                row["status"] = f"FAIL: correlation dropped (ρ {-drop_rho:+.3f}, τ {-drop_tau:+.3f}; tolerance {tol})"
                ok = False
            else:
                row["status"] = "ok"
        rows.append(row)
    return rows, ok


def table(rows: list[dict]) -> str:
    L = ["| proxy | ρ baseline | ρ now | τ baseline | τ now | status |", "|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:+.3f}"  # noqa: E731
    for r in rows:
        L.append(f"| {r['proxy']} | {fmt(r['rho_baseline'])} | {fmt(r['rho_now'])} | {fmt(r['tau_baseline'])} | "
                 f"{fmt(r['tau_now'])} | {r['status']} |")
    return "\n".join(L)
