"""Compare one proxy with every baseline on the same architectures, with paired significance tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench import metrics
from proxies import get_proxy


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


def compare(df: pd.DataFrame, proxy: str, truth: str = "accuracy", n_resamples: int = 1000,
            alpha: float = 0.05) -> pd.DataFrame:
    """Per task: ``proxy``'s ρ against every other proxy in ``df`` on the architectures both scored.

    ``delta`` = ρ(proxy) - ρ(baseline) (declared rankings, each proxy's NaN policy applied), its paired
    bootstrap 95% interval and p-value, and the Holm-adjusted p-value over the baselines of a task;
    ``significant`` when the adjusted p-value is below ``alpha``.
    """
    rows = []
    new = get_proxy(proxy)
    for (space, task), g in df[df["status"] != "error"].groupby(["space", "task"], sort=False):
        wide = g.pivot_table(index="arch", columns="proxy", values="score", aggfunc="first", dropna=False)
        if proxy not in wide.columns:
            continue
        acc = g.drop_duplicates("arch").set_index("arch")[truth]
        task_rows = []
        for other in [c for c in wide.columns if c != proxy]:
            info = get_proxy(other)
            a = metrics.oriented(wide[proxy].to_numpy(), new.higher_is_better, new.nan_policy)
            b = metrics.oriented(wide[other].to_numpy(), info.higher_is_better, info.nan_policy)
            t = acc.reindex(wide.index).to_numpy()
            keep = ~np.isnan(a) & ~np.isnan(b) & np.isfinite(t)
            if keep.sum() < 10:
                continue
            test = metrics.paired_bootstrap_test(a[keep], b[keep], t[keep], n_resamples=n_resamples)
            task_rows.append({"space": space, "task": task, "proxy": proxy, "baseline": other,
                              "direction": info.direction, "n": int(keep.sum()),
                              "rho_proxy": metrics.spearman_rho(a[keep], t[keep]),
                              "rho_baseline": metrics.spearman_rho(b[keep], t[keep]),
                              "tau_baseline": metrics.kendall_tau(b[keep], t[keep]), **test})
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
              f"{proxy}: ρ = {g['rho_proxy'].iloc[0]:+.3f} (n = {g['n'].max()})", "",
              "| baseline | dir | n | baseline ρ | Δρ [95% CI] | p (Holm) | verdict |",
              "|---|---|---|---|---|---|---|"]
        for _, r in g.sort_values("rho_baseline", ascending=False).iterrows():
            verdict = (f"{proxy} {'better' if r['delta'] > 0 else 'worse'}" if r["significant"]
                       else "no significant difference")
            L.append(f"| {r['baseline']} | {r['direction']} | {r['n']} | {r['rho_baseline']:+.3f} | "
                     f"{r['delta']:+.3f} [{r['delta_lo']:+.3f}, {r['delta_hi']:+.3f}] "
                     f"| {r['p_holm']:.3g} | {verdict} |")
        L.append("")
    return "\n".join(L)
