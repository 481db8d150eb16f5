"""The scores committed in reports/scores are reproduced by the current code (the regression proof).

Any proxy whose registered version equals the committed one must reproduce its committed scores on a
few cells per group, within the precision measured for those cells (``reports/precision.json``, ``make
precision``): so the test passes on any CPU whose rounding stays inside it, and fails on a real change.
A changed version is "not comparable" and is reported, not failed.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import pytest

from proxybench import precision
from proxybench.cache import ScoreCache
from proxybench.cli import DEFAULT_CACHE
from proxybench.datasets import get_space
from proxybench.proxies import get_proxy, list_proxies
from proxybench.runner import estimated_seconds, make_executor, score_job


def _committed():
    if not DEFAULT_CACHE.is_dir():
        pytest.skip("no committed scores")
    df = ScoreCache(DEFAULT_CACHE).load()
    if df.empty:
        pytest.skip("no committed scores")
    return df


def test_committed_scores_carry_full_provenance():
    df = _committed()
    for col in ("git_commit", "torch_version", "device", "cpu", "timestamp", "seed", "data_source", "init"):
        assert df[col].notna().all() and (df[col].astype(str) != "").all(), col
    assert (df["init"] == df["space"].map(lambda s: get_space(s).init)).all()  # each space's declared init


def _allowed(prec: dict, proxy: str, version: int, key: str, old: float, new: float) -> tuple[float, str]:
    """The allowed change of one committed score: its cell's measured spread, or else the proxy's worst
    measured relative precision (a cell of the sample that was not measured)."""
    spread = precision.spread_of(prec, proxy, key, version)
    if spread is not None:
        return precision.tolerance(spread, max(abs(old), abs(new))), "cell"
    entry = prec.get("proxies", {}).get(proxy) or {}
    assert entry.get("version") == version and entry.get("rtol") is not None, (
        f"no measured precision of {proxy} v{version}: run `make precision`")
    return precision.tolerance(float(entry["rtol"]) * abs(old), max(abs(old), abs(new))), "proxy"


def test_current_code_reproduces_committed_scores(real_data):
    df = _committed()
    prec = precision.load()
    registered = set(list_proxies())
    ok = df[df["proxy"].isin(registered) & (df["status"] == "ok")]
    not_comparable = sorted(set(ok.loc[ok["proxy_version"] != ok["proxy"].map(lambda p: get_proxy(p).version),
                                       "proxy"]))
    if not_comparable:
        print(f"not comparable (version changed since they were committed): {not_comparable}")
    df = precision.current_committed(df)  # the rows `make precision committed` samples its cells from
    compared = set()
    # the cells `make precision committed` measured, one job per cell (its shared passes run once), on every core
    jobs = [replace(job, items=(item,))
            for job in precision.committed_jobs(df, precision.CELLS_PER_GROUP, precision.OTHER_SPACES_CELLS)
            for item in job.items]
    jobs.sort(key=lambda j: (j.space == "nb201", -estimated_seconds([j])))  # the longest first: no idle core at the end
    fresh = {}
    for rows in make_executor("processes", workers=min(len(jobs), os.cpu_count() or 1)).map(score_job, jobs):
        fresh.update({_row_key(r): r for r in rows})
    cells = {(j.space, j.task, j.items[0][0]) for j in jobs}
    df = df[[(s, t, a) in cells for s, t, a in zip(df["space"], df["task"], df["arch"], strict=True)]]
    for _, old in df.iterrows():
        new = fresh.get(_row_key(old))
        if new is None:
            continue  # another setting of the same cell (batch or images), not in the sample
        key = precision.cell_key(old["space"], old["task"], old["seed"], old["batch_size"], old["data_source"],
                                 old["arch"])
        allowed, by = _allowed(prec, old["proxy"], int(old["proxy_version"]), key, old["score"], new["score"])
        assert math.isfinite(new["score"]) and abs(new["score"] - old["score"]) <= allowed, (
            f"{old['proxy']} on {old['task']} {old['arch']}: committed {old['score']!r}, now {new['score']!r} "
            f"(allowed {allowed:.3g} by the measured precision of the {by}); bump the proxy's version if this "
            f"change is intended")
        compared.add(_row_key(old))
    # every (cell, proxy) the sample re-scored was compared with its committed score, none left out
    assert compared and compared == set(fresh), sorted(set(fresh) - compared)[:5]


def _row_key(r) -> tuple:
    return (r["space"], r["task"], r["arch"], r["proxy"], r["data_source"], int(r["batch_size"]), int(r["seed"]))
