"""The AZ-NAS reproduction's and the aggregates section's pure parts: member selection and the nearest rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from proxybench.studies import aggregates as A
from proxybench.studies import aznas as Z


def test_greedy_selection_picks_the_informative_members_and_stops():
    rng = np.random.default_rng(0)
    n = 200
    a, b = rng.normal(size=n), rng.normal(size=n)
    target = a + b
    cands = {"a": a, "b": b, "noise1": rng.normal(size=n), "noise2": rng.normal(size=n)}
    members, trace = A.greedy(cands, target)
    assert set(members) == {"a", "b"} and len(trace) == 2
    assert trace[1]["rho"] > trace[0]["rho"]
    # one member that already explains the target: no second one gains the minimum
    members, _ = A.greedy({"t": target, "noise1": cands["noise1"]}, target)
    assert members == ["t"]


def test_the_first_principal_component_agrees_with_most_candidates():
    rng = np.random.default_rng(1)
    z = rng.normal(size=100)
    ranks = np.column_stack([z + 0.1 * rng.normal(size=100) for _ in range(3)] + [-z])
    pc = A._pc1(ranks)
    assert np.corrcoef(pc, z)[0, 1] > 0.9  # the direction of the three, not of the one against them


def test_the_selection_cells_are_outside_every_default_sample():
    from proxybench.options import DEFAULT_SUITE
    from proxybench.runner import Study

    sel = set(A.selection_cells())
    assert len(sel) == A.SELECT_CELLS
    for task, n in DEFAULT_SUITE.items():
        assert sel.isdisjoint(Study(space="nb201", tasks=(task,), proxies=("params",), sample=n).arch_list())


def test_the_nearest_rows_to_the_users_figures_are_ranked_by_mean_difference():
    rows = []
    for change, vals in {"far": (0.9, 0.9, 0.9), "near": (0.75, 0.73, 0.69), "mid": (0.8, 0.7, 0.7)}.items():
        for t, v in zip(Z.USERS, vals, strict=True):
            rows.append({"change": change, "task": t, "rho": v, "tau": v - 0.3})
    rows.append({"change": "cifar10 only", "task": "cifar10", "rho": 0.75, "tau": 0.5})  # not all three tasks
    got = Z.nearest_to_users(pd.DataFrame(rows))
    assert [(c["change"], c["statistic"]) for c in got[:2]] == [("near", "rho"), ("mid", "rho")]
    assert abs(got[0]["mean_abs_diff"] - np.mean([0.0, 0.0, 0.01])) < 1e-12
    assert all(c["change"] != "cifar10 only" for c in got)
