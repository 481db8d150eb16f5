"""CI regression of correlations: recompute a small golden study and compare it with a committed baseline.

``make baseline`` writes ``reports/baseline.json`` on purpose (never automatically); ``make regress``
recomputes the golden study with the current code in a fresh cache and fails when, for a proxy whose
declared version is unchanged, a score moved by more than that cell's measured precision allows
(``reports/precision.json``, ``make precision``: see ``proxybench.precision``), or the correlation of its declared
ranking dropped by more than ``TOLERANCE``. So it passes on any CPU whose rounding stays inside the measured
precision and fails on a real change. A proxy whose version changed is "not comparable" (regenerate the
baseline and remeasure its precision).
"""

from __future__ import annotations

import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from proxybench import metrics, precision, provenance, store
from proxybench.cache import ScoreCache
from proxybench.proxies import get_proxy, per_cell, training_free
from proxybench.runner import Study, run_study, study_scores

GOLDEN = {"space": "nb201", "tasks": ("cifar10",), "sample": 64, "sample_seed": 1, "seed": 42, "batch_size": 64}
TRUTH = "accuracy"  # the space's headline ground truth (NB201: 200-epoch test accuracy)
BASELINE_STORE = store.Kind("regression-baseline", 1, "make baseline")  # reports/baseline.json
TOLERANCE = 0.02  # the largest allowed drop of the declared-direction Spearman ρ (and Kendall τ)


def golden_study(proxies=None, data_dir=None) -> Study:
    return Study(proxies=tuple(proxies or training_free()), data_dir=data_dir, **GOLDEN)


def checked_proxies(names) -> tuple[tuple[str, ...], str]:
    """The per-cell proxies a regression of ``names`` checks, and a note when that is not ``names`` itself: a
    set-level aggregate (``proxies.register_aggregate``) has no scores of its own to compare cell by cell (its
    value on a cell depends on the whole set), so its members are checked in its place (``per_cell``)."""
    names = tuple(names)
    aggs = [n for n in names if get_proxy(n).members]
    if not aggs:
        return names, ""
    members = tuple(per_cell(names))
    return members, (f"{', '.join(aggs)}: set-level aggregate(s); the regression checks the per-cell proxies they "
                     f"are computed from instead: {', '.join(members)}")


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
        s = metrics.proxy_summary(info, ok["score"].to_numpy(), ok[TRUTH].to_numpy(), n_resamples=0)
        first = g.iloc[0]
        setting = {"space": study.space, "task": str(first["task"]), "seed": int(first["seed"]),
                   "batch_size": int(first["batch_size"]), "data_source": str(first["data_source"])}
        out[proxy] = {"version": int(info.version), "direction": info.direction, "nan_policy": info.nan_policy,
                      "setting": setting,
                      "rho": s["rho"], "tau": s["tau"], "n": s["n"], "n_nonfinite": s["n_nonfinite"],
                      "errors": sorted(g.loc[g["status"] == "error", "arch"]),
                      "scores": {a: (None if not math.isfinite(v) else v) for a, v in zip(g["arch"], g["score"],
                                                                                          strict=True)}}
    return out


def write_baseline(result: dict, path: str | Path, merged_into: dict | None = None) -> Path:
    """Write the baseline; ``merged_into``: the baseline ``result`` was merged into (:func:`merge`), whose
    ``written`` and ``environment`` stay those of the entries it kept."""
    path = Path(path)
    first = merged_into or {"written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "environment": provenance.environment()}
    doc = {"golden_study": {k: list(v) if isinstance(v, tuple) else v for k, v in GOLDEN.items()},
           "truth": TRUTH, "tolerance": TOLERANCE,
           "score_tolerance": "per cell, from reports/precision.json: " + precision.METHOD,
           "written": first["written"], "environment": first["environment"], "proxies": result}
    store.write_json(path, doc, BASELINE_STORE, sort_keys=True)
    return path


def merge(baseline: dict, current: dict) -> dict:
    """The baseline's per-proxy entries with ``current``'s (recomputed) ones put in; each recomputed entry records
    when and where (``written``, ``environment``), as the whole file records its first writing."""
    stamp = {"written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "environment": provenance.environment()}
    return {**baseline["proxies"], **{k: {**v, "recomputed": stamp} for k, v in current.items()}}


def load_baseline(path: str | Path) -> dict:
    """The baseline ``write_baseline`` wrote (``make baseline``)."""
    return store.read_json(path, BASELINE_STORE)


DEFAULT_SETTING = {"space": "nb201", "task": "cifar10", "seed": 42, "batch_size": 0, "data_source": "none"}


def _scores_within(name: str, old: dict, new: dict, prec: dict) -> tuple[bool | None, str, float]:
    """Whether every golden score of ``name`` moved by no more than its cell's measured precision allows.
    Returns (same, why, worst |change| / allowed change); ``same`` is None when a cell's precision is unknown."""
    a, b = old["scores"], new["scores"]
    if set(a) != set(b):
        return False, f"different architectures ({len(set(a) ^ set(b))} differ)", np.inf
    st = {**DEFAULT_SETTING, **new.get("setting", {})}
    worst, worst_why = 0.0, ""
    for arch, o in a.items():
        n = b[arch]
        key = precision.cell_key(st["space"], st["task"], st["seed"], st["batch_size"], st["data_source"], arch)
        spread = precision.spread_of(prec, name, key, new["version"])
        if spread is None:
            return None, (f"no measured precision of {name} v{new['version']} on {arch}: run `make precision` "
                          f"(or `proxybench precision golden --proxies {name}`)"), np.nan
        if not precision.within(o, n, spread):
            return False, f"{arch}: {_g(o)} -> {_g(n)} (measured spread {spread:.2g})", np.inf
        if o is not None and n is not None and math.isfinite(o) and math.isfinite(n):
            ratio = abs(n - o) / precision.tolerance(spread, max(abs(o), abs(n))) if n != o else 0.0
            if ratio > worst:
                worst, worst_why = ratio, arch
    return True, worst_why, worst


def _g(v) -> str:
    return "None" if v is None else f"{v:.9g}"


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def check(baseline: dict, current: dict, prec: dict | None = None) -> tuple[list[dict], bool]:
    """Compare a recomputed golden study with the baseline: rows for the diff table, and whether it passes.
    ``prec`` is the measured precision (``proxybench.precision.load()``) that judges each score's change."""
    rows, ok = [], True
    prec = prec or {}
    base = baseline["proxies"]
    tol = baseline.get("tolerance", TOLERANCE)
    for name in sorted(set(base) | set(current)):
        b, c = base.get(name), current.get(name)
        row = {"proxy": name, "rho_baseline": b["rho"] if b else np.nan, "rho_now": c["rho"] if c else np.nan,
               "tau_baseline": b["tau"] if b else np.nan, "tau_now": c["tau"] if c else np.nan, "used": np.nan,
               "digits": (prec.get("proxies", {}).get(name) or {}).get("digits")}
        if b is None:
            row["status"] = "new (not in the baseline: run `make baseline` to add it)"
        elif c is None:
            row["status"] = "missing (in the baseline, not registered now)"
        elif b["version"] != c["version"]:
            row["status"] = f"not comparable (version {b['version']} -> {c['version']}; run `make baseline`)"
        else:
            same, why, used = _scores_within(name, b, c, prec)
            row["used"] = used
            drop_rho = _num(b["rho"]) - _num(c["rho"])
            drop_tau = _num(b["tau"]) - _num(c["tau"])
            if c.get("errors"):
                row["status"] = f"FAIL: {len(c['errors'])} error(s), e.g. on {c['errors'][0]}"
                ok = False
            elif not all(math.isfinite(_num(x[k])) for x in (b, c) for k in ("rho", "tau")):
                row["status"] = "FAIL: a correlation is not a number"
                ok = False
            elif same is None:
                row["status"] = f"FAIL: {why}"
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
    L = ["| proxy | digits | ρ baseline | ρ now | τ baseline | τ now | largest change ÷ allowed | status |",
         "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:+.3f}"  # noqa: E731
    for r in rows:
        used = r.get("used")
        used = "–" if used is None or not math.isfinite(used) else f"{used:.2f}"
        digits = "–" if r.get("digits") is None else str(r["digits"])
        L.append(f"| {r['proxy']} | {digits} | {fmt(r['rho_baseline'])} | {fmt(r['rho_now'])} | "
                 f"{fmt(r['tau_baseline'])} | {fmt(r['tau_now'])} | {used} | {r['status']} |")
    return "\n".join(L)
