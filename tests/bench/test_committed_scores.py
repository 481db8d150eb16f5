"""The scores committed in reports/scores are reproduced by the current code (the regression proof).

Any proxy whose registered version equals the committed one must reproduce its committed scores on a
few cells per task; a changed version is "not comparable" and is reported, not failed.
"""

from __future__ import annotations

import math

import pytest

from bench.cache import ScoreCache
from bench.cli import DEFAULT_CACHE
from bench.runner import Job, score_job
from datasets import get_space
from proxies import get_proxy, list_proxies

# cells re-scored per (space, task, setting): NB101 networks cost 10-40x an NB201 one on a CPU
CELLS_PER_GROUP = {"nb201": 3}
OTHER_SPACES_CELLS = 1


def _committed():
    if not DEFAULT_CACHE.is_dir():
        pytest.skip("no committed scores")
    df = ScoreCache(DEFAULT_CACHE).load()
    if df.empty:
        pytest.skip("no committed scores")
    return df


def test_committed_scores_carry_full_provenance():
    df = _committed()
    for col in ("git_commit", "torch_version", "device", "timestamp", "seed", "data_source", "init"):
        assert df[col].notna().all() and (df[col].astype(str) != "").all(), col
    assert (df["init"] == df["space"].map(lambda s: get_space(s).init)).all()  # each space's declared init


def test_current_code_reproduces_committed_scores(real_data):
    df = _committed()
    registered = set(list_proxies())
    df = df[df["proxy"].isin(registered) & (df["status"] == "ok")]
    current = df["proxy"].map(lambda p: get_proxy(p).version)
    not_comparable = sorted(set(df.loc[df["proxy_version"] != current, "proxy"]))
    if not_comparable:
        print(f"not comparable (version changed since they were committed): {not_comparable}")
    df = df[df["proxy_version"] == current]
    checked = 0
    # one job per (space, task, setting) with every proxy on the same few cells: shared passes run once
    for (space, task, seed, batch_size, source), g in df.groupby(["space", "task", "seed", "batch_size",
                                                                  "data_source"]):
        n = CELLS_PER_GROUP.get(space, OTHER_SPACES_CELLS)
        archs = sorted(set(g["arch"]))
        archs = archs[:: max(1, len(archs) // n)][:n]
        rows = g[g["arch"].isin(archs)]
        items = tuple((a, tuple(sorted(set(rows.loc[rows["arch"] == a, "proxy"])))) for a in archs)
        job = Job(space, task, int(seed), int(batch_size) or 64, "+noaug" not in source, None, "cpu", items, "test",
                  threads=1)
        fresh = {(r["arch"], r["proxy"]): r for r in score_job(job)}
        for _, old in rows.iterrows():
            proxy = old["proxy"]
            new = fresh[(old["arch"], proxy)]
            assert new["data_source"] == old["data_source"], (proxy, task)
            assert math.isclose(new["score"], old["score"], rel_tol=1e-6, abs_tol=1e-12), (
                f"{proxy} on {task} {old['arch']}: committed {old['score']!r}, now {new['score']!r}; "
                f"bump the proxy's version if this change is intended")
            checked += 1
    assert checked > 0
