"""Full-space results: NB201 correlations over all 15,625 cells, next to the sampled ones, when the cache has them.

A full-space study (``make bench-full``: every training-free proxy on every cell of every task) is too large
for ``make bench`` on one CPU, so this section computes no scores: it reports every (task, proxy) whose
15,625 cells are all in the score cache at the default study's settings (seed 42, current proxy version,
batch 64, the default images), with τ/ρ and bootstrap intervals, the sampled value of the default study
beside it, and where and how the scores were computed (device, torch, commit, dates, compute time), as the
cache records them. Correlations are memoised in ``reports/fullspace/correlations.csv`` under a fingerprint
of the scores, so a rerun over an unchanged cache takes seconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from proxybench import metrics, store
from proxybench.cache import ScoreCache
from proxybench.datasets import nb201
from proxybench.provenance import REPO_ROOT, write_if_changed
from proxybench.references import ACCURACY_NOTES, published_for
from proxybench.render import fmt_ci, save_figure
from proxybench.report import SUMMARY_STORE, summarise
from proxybench.runner import INIT, Study, select, with_aggregates, with_truth
from proxybench.sections import SectionConfig, section

NAME = "fullspace"
SEED = 42
CORRELATIONS_STORE = store.Kind("fullspace-correlations", 1, "proxybench fullspace")  # fullspace/correlations.csv
PROXIES = "@training-free"
TRUTH = "accuracy"
RUN_HINT = ('`make bench-full` (that is `proxybench run --task all --sample all --proxies @training-free`, then '
            '`proxybench bench`); on a Ray cluster add `ARGS="--executor ray --address auto"`, on a GPU machine '
            '`ARGS="--executor ray --device cuda --gpus-per-task 0.25"` (README.md: Running on a cluster or GPU)')


def add_cli(sub, parents) -> None:
    s = sub.add_parser(NAME, parents=parents.section, help="report full-space (15,625-cell) NB201 correlations found "
                       "in the cache (compute them with make bench-full)")
    s.set_defaults(fn=_cmd)


def _cmd(args) -> None:
    print(bench_section(SectionConfig.from_args(args)))


# ------------------------------------------------------------------------------------------- the data

def full_space(cache: ScoreCache, data_dir=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the cached rows of every complete (task, proxy), coverage: cells scored per task and proxy)."""
    study = Study(space="nb201", tasks=nb201.TASKS, proxies=(PROXIES,), sample=None, seed=SEED, data_dir=data_dir)
    df = with_aggregates(select(cache.load(), study), study.proxies)  # an aggregate over all cells its members scored
    counts = df.groupby(["task", "proxy"])["arch"].nunique()
    cover = pd.DataFrame([{"task": t, "proxy": p, "cells": int(counts.get((t, p), 0))}
                          for t in study.tasks for p in study.proxies])
    cover["full"] = cover["cells"] == nb201.N_ARCHS
    full = cover.loc[cover["full"], ["task", "proxy"]]
    df = df.merge(full, on=["task", "proxy"], how="inner")
    return df.reset_index(drop=True), cover


def complete_correlations(cache_path, data_dir, n_resamples: int, out) -> pd.DataFrame:
    """The full-space correlations of every complete (task, proxy) of the cache (memoised under ``out``), for the
    README's headline; empty when none is complete."""
    df, _ = full_space(ScoreCache(cache_path), data_dir)
    if df.empty:
        return pd.DataFrame()
    return correlations(with_truth(df, data_dir), n_resamples, Path(out) / NAME / "correlations.csv")


def _fingerprint(g: pd.DataFrame, n_resamples: int) -> str:
    """Changes whenever a score, a version, the truth or the number of resamples does."""
    g = g.sort_values("arch")
    h = hashlib.sha256(f"{n_resamples}|{TRUTH}|{g['proxy_version'].iloc[0]}".encode())
    h.update(pd.util.hash_pandas_object(g[["arch", "score", "status", TRUTH]], index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def correlations(df: pd.DataFrame, n_resamples: int, memo: Path) -> pd.DataFrame:
    """``summarise`` per complete (task, proxy), reusing memoised rows whose fingerprint still matches."""
    old = store.read_csv(memo, CORRELATIONS_STORE) if memo.is_file() else pd.DataFrame(columns=["fingerprint"])
    rows = []
    for _, g in df.groupby(["task", "proxy"], sort=False):
        fp = _fingerprint(g, n_resamples)
        hit = old[old["fingerprint"] == fp]
        if len(hit):
            rows.append(hit.iloc[[0]])
            continue
        s = summarise(g, TRUTH, n_resamples)
        rows.append(s.assign(fingerprint=fp))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    store.write_csv(memo, out, CORRELATIONS_STORE)
    return out


# the four (cells, accuracy) variants of a full-space ρ: every cell or the ~9,445 without unreachable branches,
# against the 200-epoch test or validation accuracy (the cell sets and accuracies papers correlate on)
VARIANTS = (("all", "test"), ("all", "validation"), ("no_unreachable", "test"), ("no_unreachable", "validation"))
_ACC_COLUMN = {"test": "test_acc_200", "validation": "val_acc_200"}
BAND = 0.03  # the complete-tables issue's reproduction band for a published ρ


def _rho(g: pd.DataFrame, proxy: str, column: str) -> tuple[float, int]:
    """Spearman ρ of the proxy's declared ranking (its direction and NaN policy) against ``column``, and its n."""
    return metrics.declared_rho(g["score"].to_numpy(dtype=float), g[column].to_numpy(dtype=float), proxy)


def published_comparison(df: pd.DataFrame) -> pd.DataFrame:
    """Every published ρ over the whole space (or its cells without unreachable branches) of a complete (task,
    proxy), next to ours on the same cells against the same accuracy, with all four variants as context."""
    rows = []
    for (task, proxy), g in df.groupby(["task", "proxy"], sort=False):
        pubs = [p for p in published_for("nb201", task, proxy)
                if p.cells == nb201.N_ARCHS or p.cell_set == "no_unreachable"]
        if not pubs:
            continue
        g = g[g["status"] != "error"]
        reach = g["arch"].map(nb201.no_unreachable_branches).astype(bool)
        var = {(c, a): _rho(g[reach] if c == "no_unreachable" else g, proxy, _ACC_COLUMN[a]) for c, a in VARIANTS}
        for p in pubs:
            ours, n = var[(p.cell_set, p.accuracy)]
            nearest = min(VARIANTS, key=lambda v: abs(var[v][0] - p.rho))
            rows.append({"task": task, "proxy": proxy, "published": p.rho, "source": p.source, "cells": p.cell_set,
                         "accuracy": p.accuracy, "n": n, "ours": ours, "diff": ours - p.rho,
                         "within": abs(ours - p.rho) <= BAND + 1e-9, "nearest": nearest,
                         "note": ACCURACY_NOTES.get((p.source, task), ""),
                         **{f"{c}|{a}": var[(c, a)][0] for c, a in VARIANTS},
                         **{f"n|{c}": var[(c, "test")][1] for c in ("all", "no_unreachable")}})
    out = pd.DataFrame(rows)
    if not out.empty:  # the space's task order
        out = out.sort_values("task", key=lambda t: t.map(nb201.TASKS.index), kind="stable").reset_index(drop=True)
    return out


def provenance_of(df: pd.DataFrame) -> list[str]:
    """Where and how the full-space scores were computed, as the cache rows record it."""
    ts = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    dev = df.groupby("device").size().sort_values(ascending=False)
    return [
        "- devices: " + ", ".join(f"`{d}` ({n:,} scores)" for d, n in dev.items()),
        f"- computed between {ts.min():%Y-%m-%d %H:%M} and {ts.max():%Y-%m-%d %H:%M} UTC; "
        f"{df['seconds'].sum() / 3600:.2f} h of proxy compute time in total (sum of the per-score times)",
        "- code: commit(s) " + ", ".join(f"`{c}`" for c in sorted(set(df["git_commit"]))) + "; proxybench "
        + ", ".join(sorted(set(df["proxybench_version"]))) + "; torch " + ", ".join(sorted(set(df["torch_version"])))
        + "; dtype " + ", ".join(sorted(set(df["dtype"]))),
        f"- settings: init/minibatch seed {SEED}, init `{INIT}`; images: "
        + ", ".join(f"`{s}`" for s in sorted(set(df["data_source"]))) + " (batch "
        + ", ".join(str(b) for b in sorted(set(df["batch_size"]))) + "; 0 = reads no images)"
        + ("; ⚠ some scores used substitute images" if df["substitute"].any() else ""),
        "- the cache records the device of every score but not the host, nor which executor ran it",
    ]


# ------------------------------------------------------------------------------------------ the report

def _sampled(out: Path) -> pd.DataFrame:
    p = out / "summary.csv"
    if not p.is_file():
        return pd.DataFrame(columns=["task", "proxy", "seed", "n", "rho", "rho_lo", "rho_hi"])
    s = store.read_csv(p, SUMMARY_STORE)
    return s[(s["space"] == "nb201") & (s["seed"] == SEED)]


def _figure(table: pd.DataFrame, out: Path) -> Path | None:
    t = table.dropna(subset=["rho_sampled"])
    if t.empty:
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5))
    for task, g in t.groupby("task", sort=False):
        ax.errorbar(g["rho_sampled"], g["rho"], yerr=[g["rho"] - g["rho_lo"], g["rho_hi"] - g["rho"]],
                    fmt="o", ms=4, capsize=2, label=task)
        for _, r in g.iterrows():
            ax.annotate(r["proxy"], (r["rho_sampled"], r["rho"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    lo = min(t["rho_sampled"].min(), t["rho_lo"].min()) - 0.05
    hi = max(t["rho_sampled"].max(), t["rho_hi"].max()) + 0.05
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="Spearman ρ, sampled default study", ylabel="Spearman ρ, all 15,625 cells",
           title="NB201: full space vs sampled")
    ax.legend(fontsize=8)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out / "figures" / f"{NAME}_rho.png")


def _shown(path: Path) -> str:
    """A path as a report shows it: relative to the checkout when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@dataclass
class FullspaceReport:
    """Every number of ``reports/fullspace.md`` (``report_data``); the ``render_*`` functions compute nothing."""

    cover: pd.DataFrame  # task, proxy, cells scored, full
    n_resamples: int = 1000
    cache: str = ""  # the score cache, as the report shows its path
    table: pd.DataFrame | None = None  # full-space τ/ρ per (task, proxy), the sampled values beside them
    provenance: list[str] = field(default_factory=list)
    best: pd.Series | None = None  # the (task, proxy) of the highest full-space ρ
    published: pd.DataFrame | None = None  # published_comparison: papers' figures on the same cells
    size: dict = field(default_factory=dict)  # the cache's parquet files: count, bytes in all, the largest

    @property
    def missing(self) -> pd.DataFrame:
        return self.cover[~self.cover["full"]]


def report_data(cfg: SectionConfig) -> FullspaceReport:
    """The full-space correlations the cache allows (memoised), next to the sampled study's."""
    cache = ScoreCache(cfg.cache)
    df, cover = full_space(cache, cfg.data_dir)
    rep = FullspaceReport(cover=cover, n_resamples=cfg.bootstrap, cache=_shown(cache.path), size=cache_size(cache.path))
    if df.empty:
        return rep
    df = with_truth(df, cfg.data_dir)
    corr = correlations(df, cfg.bootstrap, cfg.out / NAME / "correlations.csv")
    sampled = _sampled(cfg.out)[["task", "proxy", "n", "rho", "rho_lo", "rho_hi"]]
    table = corr.merge(sampled, on=["task", "proxy"], how="left", suffixes=("", "_sampled"))
    return replace(rep, table=table, provenance=provenance_of(df),
                   best=table.sort_values("rho", ascending=False).iloc[0], published=published_comparison(df))


def render_intro(rep: FullspaceReport) -> list[str]:
    return ["# Full-space NB201 results", "",
            "_Generated by `make bench` (section `proxybench.studies.fullspace`); every number is computed from the "
            f"score cache `{rep.cache}`._", "",
            f"Correlations over **all {nb201.N_ARCHS:,} NB201 cells** for every training-free proxy and task whose "
            "cells are all scored in the cache at the default study's settings, next to the sampled default study "
            "(reports/README.md). Truth: 200-epoch test accuracy. Intervals: 95% percentile bootstrap over "
            f"architectures ({rep.n_resamples} resamples).", ""]


def _table_row(r) -> str:
    samp, delta = "–", "–"
    if pd.notna(r["rho_sampled"]):
        samp = f"{fmt_ci(r['rho_sampled'], r['rho_lo_sampled'], r['rho_hi_sampled'])} ({int(r['n_sampled'])})"
        delta = f"{r['rho'] - r['rho_sampled']:+.3f}"
    return (f"| {r['task']} | {r['proxy']} | {r['direction']} | {int(r['n']):,} | "
            f"{fmt_ci(r['tau'], r['tau_lo'], r['tau_hi'])} | {fmt_ci(r['rho'], r['rho_lo'], r['rho_hi'])} | "
            f"{fmt_ci(r['top10_rho'])} | {r['precision_at_10']:.2f} | {samp} | {delta} |")


def render_table(rep: FullspaceReport, figure: Path | None) -> list[str]:
    """The full-space correlations next to the sampled ones, and where the scores were computed."""
    if rep.table is None:
        return ["**No full-space scores yet.**", ""]
    L = ["| task | proxy | dir | n | Kendall τ [95% CI] | Spearman ρ [95% CI] | top-10% ρ | P@10% | "
         "sampled ρ [95% CI] (n) | full − sampled ρ |", "|---|---|---|---|---|---|---|---|---|---|"]
    L += [_table_row(r) for _, r in rep.table.iterrows()]
    L += ["", "n counts the cells in the correlation (a non-finite score is excluded or ranked last, by the "
          "proxy's declared policy, as in the main report). top-10% ρ: Spearman ρ within the 10% most accurate "
          "cells; P@10%: the share of the proxy's top 10% that are among the truly top 10% (ties counted by their "
          "expected share), as in the main report."]
    if figure is not None:
        L += ["", f"![full space vs sampled](figures/{figure.name})"]
    return L + ["", "## Where and how these scores were computed", "", *rep.provenance, ""]


_CELLS = {"all": f"all {nb201.N_ARCHS:,}", "no_unreachable": "~9,445 without unreachable branches"}
_SHORT = {"all": "all", "no_unreachable": "9,445"}


def render_published(rep: FullspaceReport) -> list[str]:
    """The papers' full-space figures against ours on the same cells and accuracy (and the other variants)."""
    pub = rep.published
    if pub is None or pub.empty:
        return []
    heads = " | ".join(f"{_SHORT[c]} · {a}" for c, a in VARIANTS)
    L = ["## Against published numbers, on the same cells", "",
         f"Each published ρ over the whole space (or its ~9,445 cells without unreachable branches) of a complete row "
         "above, next to ours on the same cells against the same 200-epoch accuracy the paper states, and our four "
         f"variants (all cells or the 9,445; test or validation accuracy) as measured context. ±{BAND} is the "
         "reproduction band.", "",
         f"| task | proxy | published ρ (cells, accuracy) | ours, same cells and accuracy (n) | ours − published | "
         f"within ±{BAND} | {heads} |", "|---|---|---|---|---|---|" + "---|" * len(VARIANTS)]
    for _, r in pub.iterrows():
        L.append(f"| {r['task']} | {r['proxy']} | {r['published']:.3f} ({_CELLS[r['cells']]}, {r['accuracy']}) | "
                 f"{r['ours']:+.3f} ({r['n']:,}) | {r['diff']:+.3f} | {'yes' if r['within'] else '**no**'} | "
                 + " | ".join(f"{r[f'{c}|{a}']:+.3f}" for c, a in VARIANTS) + " |")
    L += ["", "Sources: " + "; ".join(sorted(set(pub["source"]))) + "."]
    off = pub[~pub["within"]]
    if not off.empty:
        L += ["", "Outside the band:", ""]
        for _, r in off.iterrows():
            c, a = r["nearest"]
            L.append(f"- {r['proxy']} on {r['task']}: {r['diff']:+.3f} against the stated "
                     f"{_CELLS[r['cells']]} cells and {r['accuracy']} accuracy; of our four variants the nearest is "
                     f"{_SHORT[c]} · {a}, {r[f'{c}|{a}']:+.3f} ({r[f'{c}|{a}'] - r['published']:+.3f})"
                     + (f". The figure's own code: {r['note']}." if r["note"] else
                        "; no cause found yet (the difference stands)."))
    return L + [""]


MAX_FILE_MB = 5.0  # no committed results file over this (the complete-tables issue)


def cache_size(path) -> dict:
    """The parquet files of a score cache: how many, their bytes in all, the largest (name, bytes)."""
    files = sorted(Path(path).glob("*.parquet")) if Path(path).is_dir() else []
    sizes = {f.name: f.stat().st_size for f in files}
    big = max(sizes, key=sizes.get) if sizes else ""
    encoded = None
    if big:  # are the largest file's text columns (arch, proxy, versions, sources...) stored once per distinct value?
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(Path(path) / big).metadata
        text = [i for i in range(meta.num_columns) if meta.schema.column(i).physical_type == "BYTE_ARRAY"]
        encoded = all(any("DICTIONARY" in e for e in meta.row_group(g).column(i).encodings)
                      for g in range(meta.num_row_groups) for i in text)
    return {"files": len(sizes), "bytes": sum(sizes.values()), "largest": big, "largest_bytes": sizes.get(big, 0),
            "dictionary_encoded": encoded}


def _size_line(rep: FullspaceReport) -> list[str]:
    z = rep.size
    if not z.get("files"):
        return []
    mb = z["largest_bytes"] / 2**20
    return ["", f"Size: the score cache `{rep.cache}` holds {z['files']:,} parquet files, {z['bytes'] / 2**20:.1f} MB "
            f"in all; the largest, `{z['largest']}`, is {mb:.1f} MB "
            f"({'within' if mb <= MAX_FILE_MB else '**over**'} the {MAX_FILE_MB:g} MB a file may have); its text "
            "columns (cells, proxies, versions, sources, devices) are "
            + ("dictionary-encoded (each distinct value stored once per row group)." if z["dictionary_encoded"]
               else "**not** all dictionary-encoded.")]


def render_coverage(rep: FullspaceReport) -> list[str]:
    """Cells scored per proxy and task, how to compute what is missing, and the cache's size."""
    L = ["## Coverage", ""]
    if rep.missing.empty:
        return L + [f"Every training-free proxy has all {nb201.N_ARCHS:,} cells on every task.", *_size_line(rep)]
    L += [f"Cells scored at the default settings, of {nb201.N_ARCHS:,} (full-space numbers appear above once a "
          "row reaches all of them):", "", "| proxy | " + " | ".join(nb201.TASKS) + " |",
          "|---|" + "---|" * len(nb201.TASKS)]
    for proxy, g in rep.cover.groupby("proxy", sort=False):
        c = g.set_index("task")["cells"]
        L.append(f"| {proxy} | " + " | ".join(("✓ " if c[t] == nb201.N_ARCHS else "") + f"{c[t]:,}"
                                               for t in nb201.TASKS) + " |")
    return L + ["", f"To compute what is missing: {RUN_HINT}. It computes only what the cache lacks, and a killed "
                "run resumes. Scores computed elsewhere (a cluster, a GPU machine) join this report once their "
                "cache's parquet files are copied into the cache directory (`reports/scores/`).", *_size_line(rep)]


def paragraph(rep: FullspaceReport) -> str:
    """The section's summary for reports/README.md."""
    if rep.table is None:
        return (f"**Full space (all {nb201.N_ARCHS:,} NB201 cells):** no training-free proxy has full-space "
                f"scores in the cache yet; compute them with `make bench-full` (on a GPU or a Ray cluster: see "
                f"README.md). Coverage: [{NAME}.md]({NAME}.md).")
    best = rep.best
    return (f"**Full space (all {nb201.N_ARCHS:,} NB201 cells):** {len(rep.table)} training-free (task, proxy) "
            f"pairs scored on every cell; best: {best['proxy']} on {best['task']}, ρ = "
            f"{fmt_ci(best['rho'], best['rho_lo'], best['rho_hi'])}"
            + (f" (sampled: {best['rho_sampled']:.3f}, n={int(best['n_sampled'])})"
               if pd.notna(best["rho_sampled"]) else "")
            + f"; {len(rep.missing)} pairs still lack full-space scores. Details and provenance: "
              f"[{NAME}.md]({NAME}.md).")


@section(NAME, order=40)
def bench_section(cfg: SectionConfig) -> str:
    rep = report_data(cfg)
    figure = _figure(rep.table, cfg.out) if rep.table is not None else None
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_if_changed(cfg.out / f"{NAME}.md",
                     "\n".join([*render_intro(rep), *render_table(rep, figure), *render_published(rep),
                                *render_coverage(rep)]) + "\n")
    return paragraph(rep)
