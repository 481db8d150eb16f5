"""Compare one proxy with every baseline on the same architectures, with paired significance tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from proxybench import metrics, store
from proxybench.datasets import get_space
from proxybench.proxies import get_proxy

RESULT_STORE = store.Kind("compare", 1, "proxybench compare")  # <out>/compare_<proxy>.csv (beside its .md)


def _holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone)."""
    order = np.argsort(pvalues)
    m = len(pvalues)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj.tolist()


def _task_rank(space: str, task: str) -> int:
    """Sort key: the tasks of a space in the order the space lists them (``Space.tasks``), not alphabetical."""
    tasks = get_space(space).tasks
    return tasks.index(task) if task in tasks else len(tasks)


def aligned(g: pd.DataFrame, members, truth: str) -> tuple[list[np.ndarray], np.ndarray, pd.Index]:
    """Oriented scores of ``members`` on the architectures that every one of them scored (rows with
    status "error" or no row at all drop the architecture; a *stored* non-finite score follows its proxy's
    declared policy) and with a known truth. ``g`` holds one seed and setting per (arch, proxy)."""
    ok = g[(g["status"] != "error") & g["proxy"].isin(members)]
    if ok.duplicated(["arch", "proxy"]).any():
        raise ValueError("several scores per (arch, proxy): compare one seed and setting at a time")
    wide = ok.pivot(index="arch", columns="proxy", values="score").reindex(columns=list(members))
    present = ok.assign(_n=1).pivot(index="arch", columns="proxy", values="_n").reindex(
        index=wide.index, columns=list(members)).notna().all(axis=1)
    wide = wide[present]
    acc = g.drop_duplicates("arch").set_index("arch")[truth].reindex(wide.index).to_numpy(dtype=float)
    cols = [metrics.declared(wide[m].to_numpy(dtype=float), m) for m in members]
    keep = np.isfinite(acc)
    for c in cols:
        keep &= ~np.isnan(c)
    return [c[keep] for c in cols], acc[keep], wide.index[keep]


def compare(df: pd.DataFrame, proxy: str, truth: str = "accuracy", n_resamples: int = 1000,
            alpha: float = 0.05) -> pd.DataFrame:
    """Per task: ``proxy``'s ρ against every other proxy in ``df`` on the architectures both scored.

    ``delta`` = ρ(proxy) - ρ(baseline) (declared rankings, each proxy's NaN policy applied), its paired
    bootstrap 95% interval and p-value, and the Holm-adjusted p-value over the baselines of a task;
    ``significant`` when the adjusted p-value is below ``alpha``.
    """
    rows = []
    get_proxy(proxy)  # an unknown name fails here, with "did you mean"
    spaces = list(dict.fromkeys(df["space"]))
    groups = sorted(df.groupby(["space", "task", "seed"], sort=False),
                    key=lambda kg: (spaces.index(kg[0][0]), _task_rank(*kg[0][:2])))
    for (space, task, _seed), g in groups:
        if proxy not in set(g["proxy"]):
            continue
        task_rows = []
        for other in sorted(set(g["proxy"]) - {proxy}):
            info = get_proxy(other)
            (a, b), t, _ = aligned(g, (proxy, other), truth)
            if len(t) < 10:
                continue
            test = metrics.paired_bootstrap_test(a, b, t, n_resamples=max(1, n_resamples))
            task_rows.append({"space": space, "task": task, "proxy": proxy, "baseline": other,
                              "direction": info.direction, "n": len(t),
                              "rho_proxy": metrics.spearman_rho(a, t), "rho_baseline": metrics.spearman_rho(b, t),
                              "tau_baseline": metrics.kendall_tau(b, t), **test})
        if task_rows:
            for r, p_adj in zip(task_rows, _holm([r["p_value"] for r in task_rows]), strict=True):
                r["p_holm"] = p_adj
                r["significant"] = p_adj < alpha
            rows += task_rows
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, proxy: str, note: str = "") -> str:
    if table.empty:
        return f"No architecture was scored by both {proxy} and another proxy."
    L = [f"# {proxy} against the baselines", "", note, "",
         "Δρ = ρ(" + proxy + ") − ρ(baseline) on the architectures both scored; 95% paired-bootstrap interval; "
         "p two-sided, Holm-adjusted over the baselines of a task; significant at 0.05.", ""]
    for (space, task), g in table.groupby(["space", "task"], sort=False):
        L += [f"## {space} · {task}", "",
              f"{proxy}'s ρ is computed with each baseline on the architectures both scored (column n).", "",
              f"| baseline | dir | n | {proxy} ρ | baseline ρ | Δρ [95% CI] | p (Holm) | verdict |",
              "|---|---|---|---|---|---|---|---|"]
        for _, r in g.sort_values("rho_baseline", ascending=False).iterrows():
            verdict = (f"{proxy} {'better' if r['delta'] > 0 else 'worse'}" if r["significant"]
                       else "no significant difference")
            L.append(f"| {r['baseline']} | {r['direction']} | {r['n']} | {r['rho_proxy']:+.3f} | "
                     f"{r['rho_baseline']:+.3f} | "
                     f"{r['delta']:+.3f} [{r['delta_lo']:+.3f}, {r['delta_hi']:+.3f}] "
                     f"| {r['p_holm']:.3g} | {verdict} |")
        L.append("")
    return "\n".join(L)
