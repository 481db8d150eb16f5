"""Tables, plots and reports/README.md from cached scores: every number here is computed, with provenance."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from proxybench import metrics, provenance, store  # noqa: E402
from proxybench.datasets import files, get_space  # noqa: E402
from proxybench.proxies import get_proxy, list_proxies  # noqa: E402
from proxybench.references import definition_notes, published_for  # noqa: E402
from proxybench.render import annotate_spread, fmt_ci, save_figure  # noqa: E402

TRUTH_LABELS = {
    "accuracy": "benchmark accuracy (NB201: 200-epoch test accuracy)",
    "test_acc_200": "200-epoch test accuracy", "val_acc_200": "200-epoch validation accuracy",
    "test_acc_12": "12-epoch-schedule test accuracy", "val_acc_12": "12-epoch-schedule validation accuracy",
}


def divided_seconds(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with each share group's shared work divided equally among the members scored with it on a cell,
    as the runner records it since cache schema 3 (``shared_seconds`` set). Older rows (``shared_seconds`` NaN)
    charged the whole pass to the cell's first member and ~0 to the others: the seconds of a group's rows of one
    cell written together (one cache part: one timestamp) are summed and divided equally among them."""
    if df.empty or "shared_seconds" not in df or "timestamp" not in df:
        return df
    registered = set(list_proxies())
    shares = df["proxy"].map(lambda p: get_proxy(p).shares if p in registered else "")
    old = df["shared_seconds"].isna() & (shares != "")
    if not old.any():
        return df
    d = df.copy()
    sub = d.loc[old, ["space", "task", "arch", "seed", "timestamp", "seconds"]].assign(group=shares[old])
    d.loc[old, "seconds"] = sub.groupby(["space", "task", "arch", "seed", "timestamp", "group"])["seconds"] \
        .transform("mean")
    return d


def summarise(df: pd.DataFrame, truth: str = "accuracy", n_resamples: int = 1000) -> pd.DataFrame:
    """One row per (space, task, proxy, seed): n, failures and signed τ/ρ with 95% bootstrap intervals;
    ``sec_per_arch`` the mean seconds per cell with shared passes divided among their proxies (``divided_seconds``)."""
    rows = []
    df = divided_seconds(df)
    for (space, task, proxy, seed), g in df.groupby(["space", "task", "proxy", "seed"], sort=True):
        info = get_proxy(proxy)
        ok = g[g["status"] != "error"]
        s = metrics.proxy_summary(info, ok["score"].to_numpy(), ok[truth].to_numpy(), n_resamples=n_resamples)
        o = metrics.declared(ok["score"].to_numpy(), info)
        keep = ~np.isnan(o) & np.isfinite(ok[truth].to_numpy())
        o, tt = o[keep], ok[truth].to_numpy()[keep]
        top = {"top10_rho": metrics.top_k_spearman(o, tt, 0.1) if len(tt) >= 20 else float("nan"),
               "precision_at_10": metrics.precision_at_k(o, tt, 0.1) if len(tt) >= 20 else float("nan")}
        rows.append({
            "space": space, "task": task, "proxy": proxy, "seed": seed, "direction": info.direction,
            "nan_policy": info.nan_policy, **top,
            "family": info.family, "version": info.version, **s, "n_errors": int((g["status"] == "error").sum()),
            "substitute": bool(g["substitute"].any()), "data_source": ";".join(sorted(set(g["data_source"]))),
            "batch_size": int(g["batch_size"].max()), "sec_per_arch": float(g["seconds"].mean()),
        })
    out = pd.DataFrame(rows)
    if not out.empty:  # tasks in the space's own order (cifar10, cifar100, ImageNet16-120), not alphabetical
        order = out.apply(lambda r: get_space(r["space"]).tasks.index(r["task"]), axis=1)
        out = out.assign(_o=order).sort_values(["space", "_o", "proxy"], kind="stable").drop(columns="_o")
    return out.reset_index(drop=True)


VOTE = ("synflow", "jacob_cov", "snip")


def ensembles(df: pd.DataFrame, truth: str = "accuracy", members=VOTE, n_resamples: int = 1000) -> pd.DataFrame:
    """Per (space, task): the pairwise concordance of the majority vote of ``members`` (Abdelfattah et al.'s
    "vote"), each member's own concordance, and τ/ρ of their rank-average ensemble, on the architectures
    every member scored (errors dropped; non-finite scores handled by each member's declared policy)."""
    from proxybench.compare import aligned

    rows = []
    members = tuple(members)
    for (space, task, seed), g in df.groupby(["space", "task", "seed"], sort=False):
        if not set(members) <= set(g["proxy"]):
            continue
        oriented, acc, _ = aligned(g, members, truth)
        if len(acc) < 3:
            continue
        # the vote and the rank average see every member's declared ranking (``aligned``: its NaN policy applied)
        avg = metrics.rank_average(oriented)
        summ = metrics.correlation_summary(avg, acc, True, n_resamples=n_resamples)
        rows.append({"space": space, "task": task, "seed": seed, "members": "+".join(members), "n": len(acc),
                     "vote_concordance": metrics.pairwise_concordance(oriented, acc),
                     **{f"concordance_{m}": metrics.pairwise_concordance(o, acc) for m, o in zip(members, oriented, strict=True)},
                     **{f"rankavg_{k}": v for k, v in summ.items() if k not in ("n", "n_nonfinite")}})
    return pd.DataFrame(rows)


def _rho_against(df: pd.DataFrame, column: str) -> dict:
    """Signed ρ of each (space, task, proxy, seed) against another ground-truth column (no intervals)."""
    out = {}
    for key, g in df[df["status"] != "error"].groupby(["space", "task", "proxy", "seed"]):
        out[key] = metrics.proxy_summary(key[2], g["score"].to_numpy(), g[column].to_numpy(), n_resamples=0)["rho"]
    return out


def _nonfinite(r) -> str:
    if not r["n_nonfinite"]:
        return "0"
    return f"{r['n_nonfinite']} ({'ranked last' if r['nan_policy'] == 'rank_last' else 'excluded'})"


def _truth_source(data_dir) -> str:
    from proxybench.datasets import nb201

    try:
        return {"official-pth": "the converted official benchmark file",
                "mirror-csv": "the CSV/JSON mirrors listed below"}[nb201.truth_source_id(data_dir)]
    except Exception as e:  # the report must still render without NB201 files
        return f"unavailable ({type(e).__name__})"


# result stores that more than one module reads: the suite's summary (written here) and make perf's timings
SUMMARY_STORE = store.Kind("summary", 1, "proxybench report")  # <out>/summary.csv
PERF_STORE = store.Kind("perf", 1, "make perf")  # <out>/perf.json, written by proxybench.tools.perf


def alone_seconds(perf: dict | None) -> dict[str, float]:
    """Each proxy's seconds per cell when computed alone, from ``make perf``'s per-proxy entries. An entry
    merged by a later partial run (``proxybench perf --proxies``; it carries ``measured``) was timed under another
    load: its ratio to that run's own forward+backward is what carries over, so its seconds are that ratio times the
    main run's forward+backward seconds (the other entries' unit)."""
    perf = perf or {}
    unit = perf.get("fwd_bwd_seconds_median")
    return {k: (v["over_fwd_bwd"] * unit if "measured" in v and unit else v["seconds_median"])
            for k, v in perf.get("per_proxy", {}).items()}


def load_perf(out: Path) -> dict | None:
    """``<out>/perf.json`` as written by ``make perf`` (``proxybench perf``), or None when absent or unreadable
    (a newer schema is an error: StoreError)."""
    try:
        return store.read_json(Path(out) / "perf.json", PERF_STORE)
    except (OSError, ValueError):
        return None


def _task_order(df: pd.DataFrame) -> list[str]:
    """The tasks present in ``df`` in the order their space lists them (``Space.tasks``), not alphabetical;
    a task no space lists goes last."""
    rank: dict[str, int] = {}
    for space in dict.fromkeys(df["space"]):
        for t in get_space(space).tasks:
            rank.setdefault(t, len(rank))
    present = list(dict.fromkeys(df["task"]))
    return sorted(present, key=lambda t: rank.get(t, len(rank)))


def _scatter(df: pd.DataFrame, proxy: str, truth: str, out: Path, summary: pd.DataFrame) -> Path:
    tasks = _task_order(df)
    info = get_proxy(proxy)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        g = df[(df["task"] == task) & np.isfinite(df["score"])]
        oriented = g["score"] if info.higher_is_better else -g["score"]
        x = oriented.rank(pct=True) * 100
        sub = bool(g["substitute"].any())
        ax.scatter(x, g[truth], s=6, alpha=0.5, color="tab:red" if sub else "tab:blue", linewidths=0)
        row = summary[(summary["task"] == task) & (summary["proxy"] == proxy)].iloc[0]
        ax.set_title(f"{task}{' (SUBSTITUTE images)' if sub else ''}\nρ={row['rho']:+.3f} τ={row['tau']:+.3f} "
                     f"n={row['n']}", fontsize=9)
        ax.set_xlabel(f"rank of {proxy} score ({info.direction}), percentile")
        ax.set_ylabel(TRUTH_LABELS.get(truth, truth) + " (%)")
        ax.grid(alpha=0.3)
    return save_figure(fig, out / f"scatter_{proxy}.png")


def _heatmap(summary: pd.DataFrame, out: Path) -> Path:
    pivot = summary.pivot_table(index="proxy", columns="task", values="rho")
    pivot = pivot[[t for t in _task_order(summary) if t in pivot.columns]]  # the space's task order
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * pivot.shape[1], 0.8 + 0.45 * pivot.shape[0]))
    sns.heatmap(pivot, annot=True, fmt="+.2f", cmap="RdBu_r", vmin=-1, vmax=1, ax=ax, cbar_kws={"label": "ρ"})
    ax.set_title("Spearman ρ of each proxy's declared ranking vs accuracy")
    return save_figure(fig, out / "rho_heatmap.png")


def _bars(summary: pd.DataFrame, out: Path) -> Path:
    # one panel per (space, task), at its first seed (a cache may hold several spaces, e.g. NB201's and NB101's
    # cifar10, and several seeds of a study)
    first = summary[summary["seed"] == summary.groupby(["space", "task"])["seed"].transform("min")]
    panels = list(dict.fromkeys(zip(first["space"], first["task"], strict=True)))
    several = first["space"].nunique() > 1
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 0.8 + 0.32 * first["proxy"].nunique()),
                             squeeze=False, sharey=True)
    order = first.groupby("proxy")["rho"].mean().sort_values().index.tolist()
    for ax, (space, task) in zip(axes[0], panels, strict=True):
        g = first[(first["space"] == space) & (first["task"] == task)].set_index("proxy").reindex(order)
        y = np.arange(len(order))
        err = np.vstack([g["rho"] - g["rho_lo"], g["rho_hi"] - g["rho"]])
        colors = ["tab:red" if sub else "tab:blue" for sub in g["substitute"].fillna(False)]
        ax.barh(y, g["rho"], xerr=np.nan_to_num(err), color=colors, alpha=0.8, capsize=2)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, order)
        n = int(g["n"].max()) if g["n"].notna().any() else 0
        ax.set_title(f"{space + ' ' if several else ''}{task} (n={n}; red = substitute images)", fontsize=9)
        ax.set_xlabel("Spearman ρ with 95% CI")
        ax.set_xlim(-1, 1)
        ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out / "rho_bars.png")


def _proxy_matrix(df: pd.DataFrame, out: Path) -> Path:
    """Spearman correlation between proxies' scores on the first task's architectures they share."""
    task = df["task"].iloc[0]
    wide = df[(df["task"] == task) & (df["status"] != "error")].pivot_table(
        index="arch", columns="proxy", values="score", aggfunc="first")
    wide = wide.replace([np.inf, -np.inf], np.nan)
    corr = wide.rank().corr(method="pearson", min_periods=10)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.5 * len(corr)), max(4.5, 1.0 + 0.45 * len(corr))))
    sns.heatmap(corr, annot=len(corr) <= 20, fmt=".2f", cmap="RdBu_r", vmin=-1, vmax=1, ax=ax,
                annot_kws={"fontsize": 7}, cbar_kws={"label": "Spearman ρ between scores"})
    ax.set_title(f"How similar are the proxies?\n{task}, n={len(wide)} architectures")
    return save_figure(fig, out / "proxy_correlation.png")


def _cost(summary: pd.DataFrame, out: Path, perf: dict | None = None) -> Path:
    """ρ against cost. The cost of each proxy computed alone comes from ``make perf`` (reports/perf.json)
    when present; else the cached seconds, a shared pass divided among the proxies that shared it."""
    task = summary["task"].iloc[0]
    g = summary[summary["task"] == task].copy()
    alone = alone_seconds(perf)
    if alone and set(g["proxy"]) <= set(alone):
        g["cost"] = g["proxy"].map(alone)
        xlabel = (f"seconds per cell, each proxy alone (make perf: cifar10, batch 64, "
                  f"{(perf or {}).get('threads', '?')} thread(s))")
    else:
        g["cost"] = g["sec_per_arch"]
        xlabel = "seconds per architecture (as cached; a shared pass divided among the proxies sharing it)"
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(g["cost"], g["rho"], color="tab:blue")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("Spearman ρ")
    ax.set_title(f"Cost vs ranking quality ({task}, n={int(g['n'].max())})")
    ax.grid(alpha=0.3)
    annotate_spread(ax, list(g["proxy"]), list(g["cost"]), list(g["rho"]), fontsize=7)  # labels nudged apart
    return save_figure(fig, out / "cost_vs_rho.png")


@dataclass
class ReportResult:
    """Every number the training-free report shows, computed from the scored rows by ``compute_report``; the
    ``render_*`` functions turn it into Markdown lines and compute nothing."""

    summary: pd.DataFrame  # one row per (space, task, proxy, seed): ``summarise``
    truth: str = "accuracy"
    n_resamples: int = 1000
    study_note: str = ""
    seeds: list = field(default_factory=list)
    substitute_tasks: list[str] = field(default_factory=list)
    seed_spread: pd.DataFrame | None = None  # space, task, proxy, seeds, mean, sd (several seeds only)
    ensemble: tuple[str, ...] = VOTE
    ensembles: pd.DataFrame | None = None  # ``ensembles``
    vote_published: dict = field(default_factory=dict)  # (space, task) -> the published vote concordance
    published: list[dict] = field(default_factory=list)  # one record per (summary row, published figure)
    precision: dict = field(default_factory=dict)  # reports/precision.json
    proxies: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # the facts of the Provenance section
    image_descriptions: dict | None = None
    data_files: list[dict] = field(default_factory=list)  # the data files the report lists
    missing_imagenet16: bool = False

    @property
    def fig_seed(self):
        """Figures show one seed; the spread over seeds is a table."""
        return self.seeds[0]


def _seed_spread(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (space, task, proxy), g in summary.groupby(["space", "task", "proxy"], sort=False):
        mean, sd = metrics.seed_spread(g["rho"].to_numpy())
        rows.append({"space": space, "task": task, "proxy": proxy, "seeds": len(g), "mean": mean, "sd": sd})
    return pd.DataFrame(rows)


def _rho_without_unreachable(df: pd.DataFrame, column: str) -> dict:
    """Signed ρ and n of each NB201 (space, task, proxy, seed) on its cells without unreachable branches (the
    cell set of some papers: ``datasets.nb201.no_unreachable_branches``), against ``column``."""
    from proxybench.datasets import nb201

    d = df[(df["space"] == "nb201") & (df["status"] != "error")]
    if d.empty or column not in d:
        return {}
    keep = d["arch"].map(nb201.no_unreachable_branches)
    out = {}
    for key, g in d[keep.to_numpy(dtype=bool)].groupby(["space", "task", "proxy", "seed"]):
        s = metrics.proxy_summary(key[2], g["score"].to_numpy(), g[column].to_numpy(), n_resamples=0)
        out[key] = (s["rho"], s["n"])
    return out


def _published_rows(summary: pd.DataFrame, val_rho: dict, subset_rho: dict | None = None) -> list[dict]:
    """Each summary row against every published figure for it, with the facts that may explain a difference.

    ``subset_rho``: (key, accuracy) -> (ρ, n) on the cells without unreachable branches, for figures on that set."""
    rows = []
    subset_rho = subset_rho or {}
    for _, r in summary.iterrows():
        key = (r["space"], r["task"], r["proxy"], r["seed"])
        for p in published_for(r["space"], r["task"], r["proxy"]):
            if p.cell_set == "no_unreachable" and (key, p.accuracy) in subset_rho:
                rho, n = subset_rho[(key, p.accuracy)]
                rows.append({"space": r["space"], "task": r["task"], "proxy": r["proxy"], "rho": rho,
                             "rho_lo": float("nan"), "rho_hi": float("nan"), "n": n, "val_rho": val_rho.get(key),
                             "published": p, "diff": rho - p.rho, "inside": None,
                             "facts": [f"ours on the {n} cells of this study without unreachable branches, against "
                                       f"the {p.accuracy} accuracy (the paper's cell set and accuracy)"]})
                continue
            v = val_rho.get(key)
            against_val = p.accuracy == "validation" and v is not None  # the paper's accuracy, where we have it
            diff = (v if against_val else r["rho"]) - p.rho
            inside = (None if against_val or not np.isfinite(r["rho_lo"])
                      else r["rho_lo"] <= p.rho <= r["rho_hi"])
            facts = ["the paper correlates with the validation accuracy: the difference is of ours against it"
                     ] if against_val else []
            if abs(diff) > 0.05:
                if p.cells != r["n"]:
                    facts.append(f"our sample is {r['n']} cells, theirs {p.n}")
                if r["substitute"]:
                    facts.append("substitute images")
                if not against_val and v is not None and abs(v - p.rho) < abs(diff) - 0.02:
                    facts.append(f"against validation accuracy ρ={v:+.3f}, closer to the published value")
                facts += [n for n in definition_notes(r["proxy"])]
            rows.append({"space": r["space"], "task": r["task"], "proxy": r["proxy"], "rho": r["rho"],
                         "rho_lo": r["rho_lo"], "rho_hi": r["rho_hi"], "n": r["n"], "val_rho": val_rho.get(key),
                         "published": p, "diff": diff, "inside": inside, "facts": facts})
    return rows


def _provenance(df: pd.DataFrame, summary: pd.DataFrame, prec: dict, data_dir) -> dict:
    from proxybench import precision

    return {"env": provenance.environment(), "commits": sorted(set(df["git_commit"])),
            "machines": precision.machines_line(df), "pooling": precision.pooling_line(df, prec),
            "torch_versions": sorted(set(df["torch_version"])), "devices": sorted(set(df["device"])),
            "inits": sorted(set(df["init"])), "seeds": sorted(set(df["seed"])),
            "batch_sizes": [b for b in sorted(set(summary["batch_size"])) if b],
            "data_dir": files.resolve_data_dir(data_dir), "truth_source": _truth_source(data_dir)}


def compute_report(df: pd.DataFrame, *, truth: str = "accuracy", study_note: str = "", data_dir=None,
                   n_resamples: int = 1000, image_descriptions: dict | None = None,
                   ensemble: tuple[str, ...] = VOTE) -> ReportResult:
    """Every statistic of the report: the summary, the spread over seeds, the ensembles, the comparison with
    published figures, the precision and provenance facts."""
    from proxybench import precision
    from proxybench.references import PUBLISHED, PUBLISHED_VOTE

    summary = summarise(df, truth, n_resamples)
    seeds = sorted(summary["seed"].unique())
    ens = ensembles(df, truth, members=ensemble, n_resamples=n_resamples)
    val_rho = _rho_against(df, "val_acc_200") if truth != "val_acc_200" and "val_acc_200" in df else {}
    subset_rho = {}
    if any(p.cell_set == "no_unreachable" for p in PUBLISHED):
        for acc, col in (("test", truth), ("validation", "val_acc_200")):
            subset_rho.update({(k, acc): v for k, v in _rho_without_unreachable(df, col).items()})
    prec = precision.load()
    status = files.status_table(data_dir)
    return ReportResult(
        summary=summary, truth=truth, n_resamples=n_resamples, study_note=study_note, seeds=seeds,
        substitute_tasks=sorted(summary.loc[summary["substitute"], "task"].unique()),
        seed_spread=_seed_spread(summary) if len(seeds) > 1 else None, ensemble=tuple(ensemble), ensembles=ens,
        vote_published=dict(PUBLISHED_VOTE) if tuple(ensemble) == VOTE else {},
        published=_published_rows(summary, val_rho, subset_rho), precision=prec, proxies=sorted(df["proxy"].unique()),
        provenance=_provenance(df, summary, prec, data_dir), image_descriptions=image_descriptions,
        data_files=[r for r in status if r["space"] in ("nb201", "images") and (r["status"] != "missing"
                                                                                 or r["required"])],
        missing_imagenet16=all(r["status"] == "missing" for r in status if r["file"].startswith("ImageNet16/")))


def render_intro(res: ReportResult) -> list[str]:
    """The title, the substitute-data warning and what the correlations are."""
    L = ["# proxybench report", "",
         "_Generated by `make bench` (`proxybench bench`); do not edit by hand: every number below is computed "
         "from the score cache and the benchmark files listed under Provenance._", ""]
    if res.substitute_tasks:
        L += [f"> **Substitute data:** the rows marked ⚠ ({', '.join(res.substitute_tasks)}) were scored on substitute "
              "images because the task's real images are not in the data directory; proxies that read no images "
              "(params, flops, synflow) are unaffected. The ground truth is real in every row.", ""]
    L += [f"Correlation of each proxy's **declared ranking** with the {TRUTH_LABELS.get(res.truth, res.truth)} "
          "(signed: a proxy declared ↓ has its score negated, so a negative value means it ranks *against* its "
          "claim). Intervals: 95% percentile bootstrap over architectures "
          f"({res.n_resamples} resamples). Ties as in scipy (τ-b, average ranks).", ""]
    if res.study_note:
        L += [res.study_note, ""]
    return L


def _correlation_row(r, several_seeds: bool) -> str:
    data = ("⚠ substitute" if r["substitute"] else "real") if r["data_source"] != "none" else "none needed"
    seed_tag = f" (seed {r['seed']})" if several_seeds else ""
    return (f"| [{r['proxy']}](figures/scatter_{r['proxy']}.png){seed_tag} | {r['direction']} | {r['family']} | {r['n']} "
            f"| {_nonfinite(r)} | {r['n_errors']} | {fmt_ci(r['tau'], r['tau_lo'], r['tau_hi'])} | "
            f"{fmt_ci(r['rho'], r['rho_lo'], r['rho_hi'])} | {fmt_ci(r['top10_rho'])} | {r['precision_at_10']:.2f} | "
            f"{data} | {r['sec_per_arch']:.3f} |")


def render_correlations(res: ReportResult) -> list[str]:
    """One table per (space, task): every proxy's τ/ρ with intervals, best ρ first."""
    L = []
    for (space, task), g in res.summary.groupby(["space", "task"], sort=False):
        L += [f"## {space} · {task}", "",
              "| proxy | dir | family | n | non-finite | errors | Kendall τ [95% CI] | Spearman ρ [95% CI] | top-10% ρ | precision@10% | data | s/arch |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        L += [_correlation_row(r, len(res.seeds) > 1) for _, r in g.sort_values("rho", ascending=False).iterrows()]
        L.append("")
    return L


def render_seed_spread(res: ReportResult) -> list[str]:
    if len(res.seeds) <= 1:
        return []
    L = ["## Spread across seeds", "", f"Seeds {', '.join(str(x) for x in res.seeds)}: each proxy scored at "
         "several random initialisations (and minibatches); mean ± sd (ddof 1) of ρ over seeds. Figures show "
         f"seed {res.fig_seed}.", "", "| space · task | proxy | seeds | ρ mean ± sd |", "|---|---|---|---|"]
    L += [f"| {r['space']} · {r['task']} | {r['proxy']} | {r['seeds']} | {r['mean']:+.3f} ± {r['sd']:.3f} |"
          for r in res.seed_spread.to_dict("records")]
    return L + [""]


def render_ensembles(res: ReportResult) -> list[str]:
    ens, members = res.ensembles, res.ensemble
    if ens is None or ens.empty:
        return []
    L = ["## Ensembles", "",
         f"`vote` is the pairwise majority of {', '.join(members)} (Abdelfattah et al. 2021 use synflow, "
         "jacob_cov, snip): the figure is the "
         "fraction of architecture pairs (with different accuracy) it orders like the accuracy, a split or tied "
         "vote counting 1/2. It is a pairwise concordance, not a correlation; each member's own concordance is "
         "beside it. `rank-average` is the mean of the members' ranks, scored by τ/ρ like any proxy.", "",
         "| space · task | n | vote concordance | published vote | " + " | ".join(f"{m} concordance" for m in members)
         + " | rank-average τ [95% CI] | rank-average ρ [95% CI] |",
         "|---|---|---|---|" + "---|" * len(members) + "---|---|"]
    for _, r in ens.iterrows():
        pub = res.vote_published.get((r["space"], r["task"]))
        L.append(f"| {r['space']} · {r['task']} | {r['n']} | {r['vote_concordance']:.3f} | "
                 f"{f'{pub:.2f}' if pub else '–'} | " + " | ".join(f"{r[f'concordance_{m}']:.3f}" for m in members)
                 + f" | {fmt_ci(r['rankavg_tau'], r['rankavg_tau_lo'], r['rankavg_tau_hi'])} | "
                 f"{fmt_ci(r['rankavg_rho'], r['rankavg_rho_lo'], r['rankavg_rho_hi'])} |")
    return L + [""]


def _published_line(r: dict) -> str:
    p, diff = r["published"], r["diff"]
    inside = "n/a (no interval)" if r["inside"] is None else ("yes" if r["inside"] else "no")
    vtxt = "–" if r["val_rho"] is None else f"{r['val_rho']:+.3f}"
    flag = " ⚑" if abs(diff) > 0.05 else ""
    return (f"| {r['space']} · {r['task']} | {r['proxy']} | {fmt_ci(r['rho'], r['rho_lo'], r['rho_hi'])} ({r['n']}) "
            f"| {vtxt} | {p.rho:.2f}{' (val.)' if p.accuracy == 'validation' else ''} ({p.n}) | {diff:+.3f}{flag} | {inside} | {'; '.join(r['facts']) or '–'} | "
            f"{p.source} |")


def render_published(res: ReportResult) -> list[str]:
    L = ["## Against published numbers", "",
         "Every proxy with a published ρ, its measured ρ, and the difference. A difference over 0.05 is marked "
         "⚑ and the facts that can explain it are listed: the sample, substitute images, the ρ against the "
         "200-epoch *validation* accuracy (some papers correlate with it), and known definition differences.", "",
         "| space · task | proxy | measured ρ [95% CI] (n) | ρ vs val. acc. | published ρ (n) | difference | "
         "published inside CI? | what may explain a difference | source |",
         "|---|---|---|---|---|---|---|---|---|"]
    L += [_published_line(r) for r in res.published]
    if not res.published:
        L.append("| - | - | - | - | - | - | - | - | no published figure for these proxies |")
    return L + ["", "Published figures are |ρ| on the sample named; ours is signed and on the sample of this study, "
                "so a smaller sample gives a wider interval.", ""]


def render_figures(heat: Path, extra: list[tuple[Path, str]], scatters: dict[str, Path]) -> list[str]:
    L = ["## Figures", "", f"![ρ heatmap](figures/{heat.name})", ""]
    for path, what in extra:
        L += [f"![{what}](figures/{path.name})", ""]
    return L + [f"- [{p}](figures/{f.name}): rank of score vs accuracy, one panel per task" for p, f in scatters.items()]


def render_precision(res: ReportResult) -> list[str]:
    from proxybench import precision

    return ["", "## Precision", "", precision.report_paragraph(res.precision), "",
            precision.table(res.precision, proxies=res.proxies), ""]


def render_provenance(res: ReportResult) -> list[str]:
    pv, env = res.provenance, res.provenance["env"]
    L = ["## Provenance", "",
         f"- code: proxybench {env['proxybench']}; scores computed at commit(s) {', '.join(pv['commits'])}",
         f"- machines behind the scores: {pv['machines']}",
         f"- pooling: {pv['pooling']}",
         f"- libraries: torch {env['torch']} (scores: {', '.join(pv['torch_versions'])}), "
         f"python {env['python']}, numpy {env['numpy']}, scipy {env['scipy']}, pandas {env['pandas']}",
         f"- devices: {', '.join(pv['devices'])}; init: {', '.join(pv['inits'])}; "
         f"seeds: {', '.join(str(s) for s in pv['seeds'])}; minibatch sizes: "
         f"{', '.join(str(b) for b in pv['batch_sizes']) or 'none (data-free proxies only)'}",
         f"- data directory: `{pv['data_dir']}`; NB201 ground truth read from: {pv['truth_source']}", ""]
    if res.image_descriptions:
        L += ["Images the data-using proxies see, per task:", ""]
        L += [f"- {t}: {d}" for t, d in res.image_descriptions.items()] + [""]
    return L + render_data_files(res) + [""] + [
        "Ground-truth notes: NB201 accuracies are seed means; for cifar10 the test accuracy is the network "
        "trained on train+valid (official `cifar10`), as in the official API. The validation-accuracy JSON files "
        "list cells in base-5 counting order, not official index order (contrary to their description); the "
        "loader matches them by arch string. The benchmark's `params` are checked against the networks built "
        "here by `proxybench check-params`.", ""]


def render_data_files(res: ReportResult) -> list[str]:
    lines = ["| file | status | version | what |", "|---|---|---|---|"]
    lines += [f"| `{r['file']}` | {r['status']} | {r['variant'] or '-'} | {r['description']} |" for r in res.data_files]
    if res.missing_imagenet16:
        lines.append("| `ImageNet16/*` | missing | - | ImageNet16-120 images: not available here (see below) |")
    return lines


def _kept_sections(path: Path) -> list[str]:
    """The further sections (latency, search, ...) that `proxybench bench` wrote into the old README."""
    kept = ""
    if path.is_file() and SECTIONS_BEGIN in (old := path.read_text()) and SECTIONS_END in old:
        kept = old.split(SECTIONS_BEGIN, 1)[1].split(SECTIONS_END, 1)[0].strip("\n")
    return [SECTIONS_BEGIN, kept, SECTIONS_END] if kept else [SECTIONS_BEGIN, SECTIONS_END]


def _write_figures(df: pd.DataFrame, res: ReportResult, out: Path) -> list[str]:
    """The figures of the report's first seed, and the Markdown lines that show them."""
    fig_df, fig_summary = df[df["seed"] == res.fig_seed], res.summary[res.summary["seed"] == res.fig_seed]
    figs = {p: _scatter(fig_df[fig_df["proxy"] == p], p, res.truth, out / "figures", fig_summary)
            for p in sorted(fig_df["proxy"].unique())}
    heat = _heatmap(fig_summary, out / "figures")
    extra = [(_bars(fig_summary, out / "figures"), "Spearman ρ with 95% intervals, per task"),
             (_proxy_matrix(fig_df, out / "figures"), "how similar the proxies' rankings are (Spearman ρ between scores)"),
             (_cost(fig_summary, out / "figures", load_perf(out)), "seconds per architecture vs ρ")]
    return render_figures(heat, extra, figs)


def render_external_agreement(df: pd.DataFrame) -> list[str]:
    """Where the rows hold a proxy's scores from this suite and from an imported score file (``naslib:<proxy>``,
    ``proxybench.scorefiles``): the per-cell agreement of the two (Spearman ρ on the common cells). None otherwise."""
    from proxybench import scorefiles

    return scorefiles.render_agreement(scorefiles.agreement(df))


def render_official_agreement(out: str | os.PathLike) -> list[str]:
    """The newer proxies against their official code (``proxybench official``, stored under ``<out>/official/``):
    per family and proxy, the values compared and the largest relative difference; a line saying how to measure
    it where a family was never measured."""
    from proxybench.tools import official

    L = ["## Agreement with the official code", "",
         "The newer proxies' official implementations, run by `proxybench official FAMILY --code DIR` "
         "(bench/tools/official.py) from a checkout of the authors' repository, never copied into the suite, beside "
         "the suite's proxies on the same seeded weights and batch; relative difference = |suite - official| / "
         "|official|. Each family's page lists every value and what was patched to run the code on a CPU.", "",
         "| family | official code | proxy | values | identical | median relative difference | largest where both "
         "are finite | non-finite in the official code only | in the suite only |", "|---|---|---|---|---|---|---|---|---|"]
    missing = []
    for family in official.FAMILIES:
        r = official.read(out, family)
        if r is None:
            missing.append(family)
            continue
        at = r["commit_run"][:12] if not r["commit_run"].startswith("unknown") else "commit unknown"
        for s in official.summary(r):
            L.append(f"| [{family}](official/{family}.md) | github.com/{r['repo']} @ {at} | {s['proxy']} | {s['n']} "
                     f"| {s['identical']} | {official.fmt(s['median'])} | {official.fmt(s['max_finite'])} | "
                     f"{s['official_only_nonfinite']} | {s['ours_only_nonfinite']} |")
    if missing:
        L += ["", "Not measured here: " + ", ".join(missing) + " (`proxybench official FAMILY --code DIR`; "
              "`proxybench official --list` names each repository and commit)."]
    return L + [""]


def write_report(df: pd.DataFrame, out_dir: str | os.PathLike, *, truth: str = "accuracy",
                 study_note: str = "", data_dir=None, n_resamples: int = 1000,
                 image_descriptions: dict | None = None, ensemble: tuple[str, ...] = VOTE) -> Path:
    """Write ``summary.csv``, figures and ``README.md`` into ``out_dir`` from scored rows joined with truth.

    ``ensemble``: the members of the vote / rank-average ensemble (default: synflow, jacob_cov, snip).
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    if df.empty:
        raise ValueError("no cached scores to report: run `proxybench run …` (or `make bench`) first")
    if truth not in df.columns:
        raise ValueError(f"--truth {truth!r} is not a ground-truth column here; columns: "
                         f"{', '.join(c for c in df.columns if 'acc' in c)}")
    res = compute_report(df, truth=truth, study_note=study_note, data_dir=data_dir, n_resamples=n_resamples,
                         image_descriptions=image_descriptions, ensemble=ensemble)
    store.write_csv(out / "summary.csv", res.summary, SUMMARY_STORE)
    figures = _write_figures(df, res, out)
    path = out / "README.md"
    agreement = render_external_agreement(df)  # imported score files vs the suite's own scores (proxybench.scorefiles)
    L = [*render_intro(res), *render_correlations(res), *render_seed_spread(res), *render_ensembles(res),
         *render_published(res), *render_official_agreement(out), *agreement, *figures, *render_precision(res), *render_provenance(res), *_kept_sections(path)]
    provenance.write_if_changed(path, "\n".join(L) + "\n")
    return path


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
SECTIONS_BEGIN, SECTIONS_END = "<!-- sections:begin -->", "<!-- sections:end -->"


def with_full_space(summary: pd.DataFrame, full: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The summary with each NB201 (task, proxy) of the study's ``seed`` that ``full`` (full-space correlations:
    task, proxy, n, rho, rho_lo, rho_hi, substitute) covers replaced by its every-cell values (``all_cells``)."""
    out = summary.assign(all_cells=False)
    if full is None or full.empty:
        return out
    f = full.set_index(["task", "proxy"])
    for i, r in out.iterrows():
        key = (r["task"], r["proxy"])
        if r["space"] == "nb201" and int(r["seed"]) == seed and key in f.index:
            v = f.loc[key]
            out.loc[i, ["rho", "rho_lo", "rho_hi", "n"]] = [v["rho"], v["rho_lo"], v["rho_hi"], int(v["n"])]
            out.loc[i, "substitute"] = bool(v["substitute"])
            out.loc[i, "all_cells"] = True
    return out


def headline_result(summary: pd.DataFrame, prec: dict | None = None) -> dict:
    """What the headline table shows: its tasks, each proxy's rows by task (proxies by mean ρ, best first), its
    significant digits as measured by ``make precision`` (``prec``, reports/precision.json)."""
    prec = prec or {}
    order = summary.groupby("proxy")["rho"].mean().sort_values(ascending=False).index
    return {"tasks": list(dict.fromkeys(summary["task"])),
            "rows": {p: summary[summary["proxy"] == p].set_index("task") for p in order},
            "digits": {p: (prec.get("proxies", {}).get(p) or {}).get("digits") for p in order}}


def _headline_cell(g: pd.DataFrame, task: str) -> str:
    if task not in g.index:
        return "–"
    r = g.loc[task]
    n = f"n={int(r['n']):,}, every cell" if r.get("all_cells", False) else f"n={r['n']}"
    return f"{fmt_ci(r['rho'], r['rho_lo'], r['rho_hi'])} ({n}){' ⚠' if r['substitute'] else ''}"


def render_headline(result: dict, study_note: str = "") -> str:
    """The headline table of ``headline_result``, after ``study_note``."""
    tasks = result["tasks"]
    lines = ["| proxy | dir | digits | " + " | ".join(f"{t} ρ [95% CI]" for t in tasks) + " |",
             "|---|---|---|" + "---|" * len(tasks)]
    for proxy, g in result["rows"].items():
        d = result["digits"][proxy]
        lines.append(f"| {proxy} | {g['direction'].iloc[0]} | {'–' if d is None else d} | "
                     + " | ".join(_headline_cell(g, t) for t in tasks) + " |")
    out = "\n".join(lines)
    return (study_note + "\n\n" if study_note else "") + out


def headline_table(summary: pd.DataFrame, study_note: str = "", prec: dict | None = None) -> str:
    """ρ per proxy and task with intervals and n, for the project README; ``digits``: each proxy's significant
    digits as measured by ``make precision`` (``prec``, reports/precision.json)."""
    return render_headline(headline_result(summary, prec), study_note)


def update_readme(readme: str | os.PathLike, block: str, markers: tuple[str, str] = (BEGIN, END)) -> bool:
    """Replace the text between a pair of markers of a README; False when it has no such markers."""
    begin, end = markers
    p = Path(readme)
    if not p.is_file():
        return False
    text = p.read_text()
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    provenance.write_if_changed(p, f"{head}{begin}\n{block}\n{end}{tail}")
    return True
