"""Report section ``proxybench.studies.reduced``: reduced-training proxies (EcoNAS settings, DA-NAS-style class subsets,
NB201's 12-epoch table) beside the training-free ones, with their measured cost per cell.

The study: the first N cells of the default training-free study's nested seeded sample (NB201 cifar10,
sample seed 0, seed 42), so every zero-cost score it is compared with is already cached. Each trained
proxy trains a fresh network per cell on the real CIFAR-10 images available here and is scored by its
held-out accuracy; its cost is the measured wall time per cell (``seconds`` in the score cache).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from proxybench import provenance, store
from proxybench.sections import SectionConfig, section

NAME = "reduced"
DEFAULT_N = 24  # sized so the whole default grid computes in about 15 min on the shared 2-core CPU
TASK = "cifar10"
SEED = 42  # the training-free study's seed: the zero-cost scores beside these are its cached ones
SAMPLE_SEED = 0
TABLE_PROXIES = ("nb201_12epoch", "nb201_12epoch_val")
# the section's results under <out>/reduced/
CLASS_ORDER_STORE = store.Kind("reduced-class-order", 1, "proxybench reduced")  # class_order.json
META_STORE = store.Kind("reduced-meta", 1, "proxybench reduced")  # meta.json
SUMMARY_STORE = store.Kind("reduced-summary", 1, "proxybench reduced")  # summary.csv
# Abdelfattah et al. (ICLR 2021) re-implemented EcoNAS on NB201 CIFAR-10: ρ = 0.61 (../shared/REFERENCES.md)
PUBLISHED_ECONAS = {"rho": 0.61, "source": "Abdelfattah et al., ICLR 2021 (their EcoNAS re-implementation, "
                                           "NB201 CIFAR-10)"}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def grid(settings: tuple[str, ...] | None = None, k: int | None = None, base: str | None = None) -> tuple[str, ...]:
    """Proxy names of a grid: EcoNAS settings, then an easy-class and a random-class subset of ``base``."""
    from proxybench.proxies import reduced_training as rt

    settings = tuple(settings or rt.ECONAS_GRID)
    k = rt.DANAS_K if k is None else k
    base = base or rt.DANAS_BASE
    names = [rt.register_setting(s) for s in settings]
    if k:
        names += [rt.register_setting(base, mode, k) for mode in ("easy", "random")]
    return tuple(names)


def studies(n: int, names: tuple[str, ...], data_dir=None):
    """The reduced-training study and the training-free study on the same cells."""
    from proxybench.runner import Study

    common = dict(space="nb201", tasks=(TASK,), sample=n, sample_seed=SAMPLE_SEED, seed=SEED, data_dir=data_dir)
    return (Study(proxies=(*names, *TABLE_PROXIES), **common), Study(proxies=("@training-free",), **common))


# ------------------------------------------------------------------------------------- class ordering

def _class_order_file(out: Path) -> Path:
    return out / NAME / "class_order.json"


def save_class_order(out: Path, key: tuple, rec: dict) -> dict:
    """Store the evidence of a class ordering computed here (per-class accuracies, when, where): the report
    shows it; the proxies read only their pinned orderings (``reduced_training.PINNED_ORDERS``)."""
    rec = {k: v for k, v in rec.items() if k != "pinned"}
    rec = {**rec, "key": list(key), "per_class_accuracy": {str(c): v for c, v in rec["per_class_accuracy"].items()},
           "computed": datetime.now(timezone.utc).isoformat(timespec="seconds"), **provenance.environment()}
    store.write_json(_class_order_file(out), rec, CLASS_ORDER_STORE)
    return rec


# ---------------------------------------------------------------------------------------------- the study

def compute(n: int = DEFAULT_N, names: tuple[str, ...] | None = None, *, data_dir=None, cache_dir=None,
            out=None, progress: bool = True) -> dict:
    """Score what the cache lacks for the reduced-training study and the training-free one on the same
    cells (in this process, one torch thread: the per-cell seconds are the cost reported)."""
    import torch

    from proxybench.cache import ScoreCache
    from proxybench.options import DEFAULT_CACHE
    from proxybench.proxies import reduced_training as rt
    from proxybench.runner import run_study, training_data

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = Path(out or provenance.REPO_ROOT / "reports")
        names = names or grid()
        cache = ScoreCache(cache_dir or DEFAULT_CACHE)
        reduced, free = studies(n, names, data_dir)
        train, test = training_data(TASK, data_dir)
        if any(rt.SPECS.get(n, {}).get("subset") == "easy" for n in names) and rt.pinned_order(train, test, SEED) \
                is None:
            # images without a pinned class ordering: computed once, here, before the cells (so that no cell's
            # cost includes it; this process's proxies then reuse it), and its evidence stored
            save_class_order(out, rt.class_order_key(train, test, SEED), rt.class_order(train, test, SEED))
        runs = {}
        for label, study in (("training-free", free), ("reduced-training", reduced)):
            s = run_study(study, cache, executor="inprocess", chunk_size=2, progress=progress)
            # the run's wall time only when it computed something: an all-cached rerun must not rewrite meta.json
            runs[label] = {"computed": s.computed, "cached": s.cached, "errors": s.errors,
                           **({"seconds": round(s.seconds, 1)} if s.computed else {}), "examples": s.error_examples}
        return runs
    finally:
        torch.set_num_threads(threads)


def extras(names: tuple[str, ...]) -> tuple[str, ...]:
    """Registered settings beyond the default grid (``reduced_training.EXTRA``) that the study does not run."""
    from proxybench.proxies import reduced_training as rt

    return tuple(n for n in rt.EXTRA if n not in names)


def _published_alone(out: Path) -> dict:
    from proxybench.report import alone_seconds, load_perf

    return alone_seconds(load_perf(out))


def results(n: int, names: tuple[str, ...], *, data_dir=None, cache_dir=None, out=None,
            n_resamples: int = 1000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per proxy: signed τ/ρ with 95% intervals against 200-epoch accuracy, and seconds per cell."""
    from proxybench.cache import ScoreCache
    from proxybench.options import DEFAULT_CACHE
    from proxybench.proxies import list_proxies
    from proxybench.report import summarise
    from proxybench.runner import study_scores

    out = Path(out or provenance.REPO_ROOT / "reports")
    cache = ScoreCache(cache_dir or DEFAULT_CACHE)
    reduced, free = studies(n, names, data_dir)
    parts = [study_scores(reduced, cache), study_scores(free, cache)]
    extra = extras(names)
    if extra:  # settings beyond the default budget: shown when cached (`proxybench reduced --settings …`)
        parts.append(study_scores(replace(reduced, proxies=extra), cache))
    others = list_proxies(family="self-supervised")  # shown when already cached for these cells; not computed here
    if others:
        parts.append(study_scores(replace(free, proxies=tuple(others)), cache))
    df = pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(not p.empty for p in parts) \
        else parts[0]
    if df.empty:
        raise ValueError(f"no cached scores for the reduced-training study in {cache.path}: run "
                         "`proxybench reduced` first")
    summ = summarise(df, "accuracy", n_resamples)
    med = df[df["status"] != "error"].groupby("proxy")["seconds"].median()
    alone = _published_alone(out)
    summ["sec_cell_median"] = summ["proxy"].map(med)
    summ["sec_cell_alone"] = summ["proxy"].map(alone)
    summ["cost_s"] = np.where(summ["sec_cell_alone"].notna(), summ["sec_cell_alone"], summ["sec_cell_median"])
    summ["cost_from"] = np.where(summ["sec_cell_alone"].notna(), "make perf (alone)", "score cache (median)")
    return df, summ


# ------------------------------------------------------------------------------------------------- report

def _counts(names: tuple[str, ...], data_dir=None) -> dict:
    """Absolute image counts and iterations of each trained proxy on the images available here."""
    from proxybench.proxies import get_proxy
    from proxybench.proxies import reduced_training as rt
    from proxybench.runner import training_data

    train, test = training_data(TASK, data_dir)
    out = {}
    for name in names:
        info = get_proxy(name)
        if not info.needs_training_data:
            continue
        spec = rt.SPECS[name]
        setting = spec["setting"]
        classes = (rt.class_subset((train, test), spec["subset"], spec["k"], SEED, train.num_classes)
                   if spec["subset"] else None)
        xtr, _, xte, _ = rt.select_images(train, test, setting, SEED, classes)
        out[name] = {"setting": str(setting), "describe": setting.describe(), "n_train": len(xtr),
                     "n_test": len(xte), "epochs": setting.e,
                     "iterations": setting.e * len(rt.batch_starts(len(xtr))),
                     "resolution": max(1, train.resolution // setting.resolution_divisor),
                     "width": 16 // setting.channel_divisor, "classes": classes}
    out["_available"] = {"train": int(train.num_images), "test": int(test.num_images),
                         "train_desc": train.description, "test_desc": test.description}
    return out


def _figure(summ: pd.DataFrame, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from proxybench.render import save_figure

    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = {"baseline": "tab:gray", "zero-cost": "tab:blue", "reduced-training": "tab:red",
              "self-supervised": "tab:green"}
    table = summ[summ["proxy"].isin(TABLE_PROXIES)]
    pts = summ[~summ["proxy"].isin(TABLE_PROXIES) & (summ["cost_s"] > 0) & np.isfinite(summ["rho"])]
    for fam, g in pts.groupby("family"):
        ax.errorbar(g["cost_s"], g["rho"], yerr=[g["rho"] - g["rho_lo"], g["rho_hi"] - g["rho"]], fmt="o",
                    color=colors.get(fam, "black"), label=fam, capsize=2, alpha=0.85, ms=5)
    for _, r in pts.iterrows():
        ax.annotate(r["proxy"], (r["cost_s"], r["rho"]), fontsize=6.5, xytext=(3, 2), textcoords="offset points")
    for i, (_, r) in enumerate(table.iterrows()):
        ax.axhline(r["rho"], color="tab:purple", ls="--" if i == 0 else ":", lw=1,
                   label=f"{r['proxy']} (table lookup; its cost: the benchmark's own 12-epoch training)")
    ax.axhline(PUBLISHED_ECONAS["rho"], color="tab:orange", ls="-.", lw=1, label="EcoNAS, published ρ (Abdelfattah)")
    if not pts.empty:
        ax.set_xscale("log")
    ax.set_xlabel("seconds per cell (log; CPU, 1 thread, shared machine)", fontsize=8)
    ax.set_ylabel("Spearman ρ vs 200-epoch test accuracy")
    ax.set_title(f"Cost vs ranking quality, NB201 {TASK}, n={int(summ['n'].max())} cells", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower left")
    path = out / "figures" / f"{NAME}_cost_vs_rho.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


def _classes_text(classes) -> str:
    return ", ".join(f"{c} {CIFAR10_CLASSES[c]}" for c in classes) if classes else "all 10"


@dataclass
class ReducedReport:
    """Every number of ``reports/reduced.md`` (``report_data``); the ``render_*`` functions compute nothing."""

    names: tuple[str, ...]  # the trained settings of the study
    trained: pd.DataFrame  # summary rows (``results``) of the trained settings shown, best ρ first
    tables: pd.DataFrame  # NB201's 12-epoch table proxies
    free: pd.DataFrame  # every other proxy, best ρ first
    n_resamples: int = 1000
    shown: tuple[str, ...] = ()  # the trained settings shown: the study's, then cached extras
    extra_note: dict = field(default_factory=dict)  # an extra setting -> " (extra)"
    counts: dict = field(default_factory=dict)  # ``_counts``: image numbers and iterations per setting
    order: dict | None = None  # the stored class ordering (class_order.json)
    figure: str = f"{NAME}_cost_vs_rho.png"
    n_cells: int = 0
    total_train_s: float = 0.0
    devices: str = ""
    n_zero: int = 0  # trained settings whose ρ interval contains 0
    rho_range: tuple[float, float] = (float("nan"), float("nan"))  # of the trained settings
    size_rho: list[tuple[str, float]] | None = None  # ρ of each trained score with the cell's parameter count
    best_econas: dict | None = None  # the best EcoNAS setting's row, the published ρ inside it, epochs' worth
    versions: dict = field(default_factory=dict)  # proxy -> registered version
    env: dict = field(default_factory=dict)


def _size_rho(df: pd.DataFrame, proxies) -> list[tuple[str, float]] | None:
    from proxybench import metrics

    if "params" not in df.columns:
        return None
    out = []
    for p in proxies:
        g = df[(df["proxy"] == p) & (df["status"] != "error")]
        out.append((p, metrics.spearman_rho(g["score"].to_numpy(), g["params"].to_numpy())))
    return out


def _best_econas(trained: pd.DataFrame, counts: dict, shown) -> dict | None:
    best = trained[trained["proxy"].str.startswith("econas_")].head(1)
    if best.empty:
        return None
    b = best.iloc[0]
    worth = [counts[p]["n_train"] * counts[p]["epochs"] / counts["_available"]["train"] for p in shown]
    return {"row": b, "inside": b["rho_lo"] <= PUBLISHED_ECONAS["rho"] <= b["rho_hi"],
            "worth": (min(worth), max(worth))}


def report_data(df: pd.DataFrame, summ: pd.DataFrame, names: tuple[str, ...], shown: tuple[str, ...],
                counts: dict, order: dict | None, n_resamples: int, env: dict) -> ReducedReport:
    """The report's numbers from the scored rows and their summary (``results``) and the image counts."""
    from proxybench.proxies import get_proxy

    trained = summ[summ["proxy"].isin(shown)].sort_values("rho", ascending=False)
    return ReducedReport(
        names=names, trained=trained, tables=summ[summ["proxy"].isin(TABLE_PROXIES)],
        free=summ[~summ["proxy"].isin((*shown, *TABLE_PROXIES))].sort_values("rho", ascending=False),
        n_resamples=n_resamples, shown=shown, extra_note={p: " (extra)" for p in shown if p not in names},
        counts=counts, order=order, n_cells=len(df["arch"].unique()),
        total_train_s=float(df[df["proxy"].isin(names) & (df["status"] == "ok")]["seconds"].sum()),
        devices=", ".join(sorted(set(df[df["proxy"].isin(names)]["device"]))),
        n_zero=int(((trained["rho_lo"] <= 0) & (trained["rho_hi"] >= 0)).sum()),
        rho_range=(trained["rho"].min(), trained["rho"].max()), size_rho=_size_rho(df, trained["proxy"]),
        best_econas=_best_econas(trained, counts, shown),
        versions={p: get_proxy(p).version for p in (*names, *TABLE_PROXIES)}, env=env)


def render_study(rep: ReducedReport) -> list[str]:
    """The title, the links and the study: cells, images, size, trainer, notation."""
    avail, extra = rep.counts["_available"], rep.extra_note
    return ["# Reduced-training proxies: EcoNAS settings, DA-NAS class subsets, NB201's 12-epoch table", "",
            f"Written by `make bench` (section `bench.{NAME}`) or `proxybench {NAME}`; every number below is computed "
            f"from the score cache. Figures: [cost vs ρ](figures/{rep.figure}); results: [`{NAME}/summary.csv`]"
            f"({NAME}/summary.csv), [`{NAME}/meta.json`]({NAME}/meta.json).", "",
            "## Study", "",
            f"- **Cells:** the first {rep.n_cells} of the training-free study's nested seeded sample of NB201 `{TASK}` "
            f"(sample seed {SAMPLE_SEED}; they are among the 1,000 cells of the default study); init, data order and "
            f"augmentation seed {SEED}. Ground truth: 200-epoch test accuracy (seed mean).",
            f"- **Images:** the real CIFAR-10 images on this machine: {avail['train']:,} training and "
            f"{avail['test']:,} held-out (test) images ({avail['train_desc']}; {avail['test_desc']}): a tenth of "
            "CIFAR-10's 50,000 training images, so `s0` here means these 5,170 images, not 50,000.",
            f"- **Size:** {rep.n_cells} cells × {len(rep.names)} trained settings, chosen so that the whole grid "
            f"computes in about 15 minutes on this shared 2-core CPU (one torch thread); measured total training time "
            f"of the cached scores: {rep.total_train_s / 60:.1f} min ({rep.devices}). Larger studies: `proxybench "
            f"{NAME} --sample N`, other settings: `--settings c4r4s0e10,c2r2s0e5`."
            + (f" Rows marked (extra) are settings beyond this budget ({', '.join(extra)}), computed once on the "
               f"same cells and shown because they are cached; `make bench` does not compute them." if extra else ""),
            "- **Trainer** (`proxies/reduced_training.py`): SGD, Nesterov momentum 0.9, lr 0.1 with a per-iteration "
            "cosine schedule to 0, weight decay 5e-4, batch 256 (NB201's optimiser), random crop after zero padding "
            "(resolution/8 px) and horizontal flip, all seeded; BatchNorm on batch statistics while training, "
            "running statistics for the held-out images. **Score: top-1 accuracy (%) on the held-out images** (↑).",
            "- **Notation** (EcoNAS): `c` channel divisor (NB201's 16 → 16/c at the first stage), `r` resolution "
            "divisor (area downsampling, 32 px → 32/r), `s` sample level: `s0` = every available training image "
            "(as `../shared/REFERENCES.md` reads EcoNAS's `c4r4s0e60`), `s_k` = a seeded 2^-k of them (our reading "
            "for k > 0; the reference notes only fix s0), `e` epochs.",
            ""]


def render_settings(rep: ReducedReport) -> list[str]:
    """Each trained setting's absolute sizes, then the easy-class ordering when one is stored."""
    L = ["## Settings and their absolute sizes", "",
         "| proxy | setting | width (stage 1) | resolution | training images | held-out images | classes | epochs | "
         "iterations |", "|---|---|---|---|---|---|---|---|---|"]
    for name in rep.shown:
        c = rep.counts[name]
        L.append(f"| {name}{rep.extra_note.get(name, '')} | `{c['setting']}` ({c['describe']}) | {c['width']} | "
                 f"{c['resolution']}×{c['resolution']} | {c['n_train']:,} | {c['n_test']:,} | "
                 f"{_classes_text(c['classes'])} | {c['epochs']} | {c['iterations']} |")
    L.append("")
    order = rep.order
    if order:
        acc = order["per_class_accuracy"]
        L += ["**Easy classes (DA-NAS).** Difficulty is defined by a fixed reference network (`ReferenceCNN`: three "
              "conv-BN-ReLU blocks of 16/32/64 channels, global pooling, linear head) trained once with the trainer "
              f"above ({order['reference']}) on all {rep.counts['_available']['train']:,} training images; a class is "
              "easier when its held-out accuracy is higher (ties: lower class id). Ordering, easiest first: "
              + ", ".join(f"{c} {CIFAR10_CLASSES[c]} ({acc[str(c)]:.0f}%)" for c in order["order"])
              + f". Reference accuracy {order['accuracy']:.1f}%, trained in {order['seconds']:.0f} s "
              f"(once; stored in [`{NAME}/class_order.json`]({NAME}/class_order.json), keyed by the images' digests). "
              "The random subset is a seeded draw (seed 0) of the same size.", ""]
    return L


QUALITY_COLUMNS = ("proxy", "family", "dir", "n", "Kendall τ [95% CI]", "Spearman ρ [95% CI]", "s/cell", "cost from")


def _quality_cells(r, label: str) -> dict:
    from proxybench.render import fmt_ci

    table = r["proxy"] in TABLE_PROXIES
    return {"proxy": label, "family": r["family"], "dir": r["direction"], "n": r["n"],
            "Kendall τ [95% CI]": fmt_ci(r["tau"], r["tau_lo"], r["tau_hi"]),
            "Spearman ρ [95% CI]": fmt_ci(r["rho"], r["rho_lo"], r["rho_hi"]),
            "s/cell": "table lookup" if table else f"{r['cost_s']:.3g}", "cost from": "-" if table else r["cost_from"]}


def render_quality(rep: ReducedReport) -> list[str]:
    """The reduced-training table: every proxy's τ/ρ against the accuracy and its cost per cell."""
    from proxybench.render import md_table

    rows = [_quality_cells(r, r["proxy"] + rep.extra_note.get(r["proxy"], "")) for _, r in rep.trained.iterrows()]
    rows += [_quality_cells(r, f"{r['proxy']} (reduced-training (table))") for _, r in rep.tables.iterrows()]
    rows += [_quality_cells(r, r["proxy"]) for _, r in rep.free.iterrows()]
    return ["## Ranking quality and cost", "",
            "Signed ρ/τ of each proxy's declared ranking against the 200-epoch test accuracy, 95% percentile "
            f"bootstrap intervals over cells ({rep.n_resamples} resamples). Cost: median wall seconds per cell of the "
            "cached scores (one thread, on a CPU shared with other jobs, so an upper bound on this machine's idle "
            "speed); for the training-free proxies the time each takes alone from `make perf` when available (the "
            "cache's seconds divide a shared pass among the proxies that shared it, not what one costs alone).", "",
            *md_table(rows, QUALITY_COLUMNS), "", f"![cost vs rho](figures/{rep.figure})", ""]


def render_findings(rep: ReducedReport) -> list[str]:
    """What the numbers say, and the best EcoNAS setting against the published figure."""
    from proxybench.render import fmt_ci

    lo, hi = rep.rho_range
    L = ["## What the numbers say", "",
         f"- {rep.n_zero} of the {len(rep.trained)} trained settings have a ρ interval that contains 0; ρ ranges "
         f"from {lo:+.3f} to {hi:+.3f}."]
    if not rep.tables.empty:
        t = rep.tables.iloc[0]
        L.append(f"- NB201's own 12-epoch schedule (`{t['proxy']}`: the benchmark's own training run, not "
                 f"measured here) reaches ρ {fmt_ci(t['rho'], t['rho_lo'], t['rho_hi'])} on the same cells.")
    if rep.size_rho is not None:
        L.append("- ρ of each trained proxy's score with the cell's parameter count (negative: the trained score "
                 "favours cells with fewer parameters; compare `params`' own ρ with the accuracy in the table "
                 "above): " + "; ".join(f"{p} {v:+.2f}" for p, v in rep.size_rho) + ".")
    L += ["", "## Against the published EcoNAS figure", ""]
    if rep.best_econas:
        b, (lo_w, hi_w) = rep.best_econas["row"], rep.best_econas["worth"]
        L.append(f"{PUBLISHED_ECONAS['source']} report ρ = {PUBLISHED_ECONAS['rho']:.2f} for EcoNAS. Our best EcoNAS "
                 f"setting here, `{b['proxy']}`, has ρ = {fmt_ci(b['rho'], b['rho_lo'], b['rho_hi'])} on "
                 f"{b['n']} cells: the published value is {'inside' if rep.best_econas['inside'] else 'outside'} our "
                 f"interval. The settings are not theirs: {rep.counts['_available']['train']:,} training images "
                 f"instead of 50,000 and {lo_w:.1f} to {hi_w:.1f} epochs' worth of them per cell on a CPU, so this is "
                 "a measurement of what such a budget buys here, not a reproduction.")
    return L


def render_provenance(rep: ReducedReport) -> list[str]:
    env = rep.env
    return ["", "## Provenance", "",
            f"torch {env['torch']}, Python {env['python']}, {env['machine']} when this report was written "
            f"(scores computed with one), commit {env['git_commit']}; scores from "
            f"the cache (columns `seconds`, `device`, `git_commit`, `timestamp` per score). Proxy versions: "
            + ", ".join(f"{p} v{v}" for p, v in rep.versions.items()) + ".", ""]


def paragraph(rep: ReducedReport) -> str:
    """The section's summary for reports/README.md."""
    from proxybench.render import fmt_ci

    head = [f"`{r['proxy']}`{rep.extra_note.get(r['proxy'], '')} ρ {fmt_ci(r['rho'], r['rho_lo'], r['rho_hi'])} at "
            f"{r['cost_s']:.3g} s/cell" for _, r in rep.trained.iterrows()]
    t12 = rep.tables[rep.tables["proxy"] == "nb201_12epoch"]
    t12s = f"; NB201's 12-epoch table ρ {fmt_ci(t12['rho'].iloc[0])}" if not t12.empty else ""
    return (f"### Reduced-training proxies\n\nOn {rep.n_cells} NB201 {TASK} cells "
            f"({rep.counts['_available']['train']:,} real training images, CPU): " + "; ".join(head) + t12s
            + f". Published EcoNAS ρ {PUBLISHED_ECONAS['rho']:.2f}. Full table, cost-vs-ρ plot of the whole suite: "
            f"[reports/{NAME}.md]({NAME}.md).")


def write_report(n: int, names: tuple[str, ...], *, data_dir=None, cache_dir=None, out=None,
                 n_resamples: int = 1000, runs: dict | None = None) -> tuple[Path, str]:
    """Write reports/reduced.md, its figure and reports/reduced/ results; returns (path, README paragraph)."""
    out = Path(out or provenance.REPO_ROOT / "reports")
    df, summ = results(n, names, data_dir=data_dir, cache_dir=cache_dir, out=out, n_resamples=n_resamples)
    shown = (*names, *[p for p in extras(names) if p in set(summ["proxy"])])
    counts = _counts(shown, data_dir)
    order_path = _class_order_file(out)
    order = store.read_json(order_path, CLASS_ORDER_STORE) if order_path.is_file() else None
    fig = _figure(summ, out)
    res_dir = out / NAME
    res_dir.mkdir(parents=True, exist_ok=True)
    store.write_csv(res_dir / "summary.csv", summ, SUMMARY_STORE)
    env = provenance.environment()
    rep = replace(report_data(df, summ, names, shown, counts, order, n_resamples, env), figure=fig.name)
    meta = {"n_cells": rep.n_cells, "task": TASK, "seed": SEED, "sample_seed": SAMPLE_SEED, "proxies": list(names),
            "counts": {k: v for k, v in counts.items()}, "runs": runs, "environment": env,
            "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store.write_json(res_dir / "meta.json", meta, META_STORE, default=str)
    path = out / f"{NAME}.md"
    store.write_text(path, "\n".join([*render_study(rep), *render_settings(rep), *render_quality(rep),
                                      *render_findings(rep), *render_provenance(rep)]))
    return path, paragraph(rep)


# --------------------------------------------------------------------------------------------- CLI / bench

def run(n: int = DEFAULT_N, names: tuple[str, ...] | None = None, *, data_dir=None, cache_dir=None, out=None,
        progress: bool = True, n_resamples: int = 1000) -> tuple[Path, str]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--sample must be a positive number of cells, got {n!r}")
    names = names or grid()
    runs = compute(n, names, data_dir=data_dir, cache_dir=cache_dir, out=out, progress=progress)
    for label, r in runs.items():
        print(f"{label}: {r['computed']} scores computed, {r['cached']} cached, {r['errors']} errors"
              + (f", {r['seconds']} s" if "seconds" in r else ""))
        for e in r["examples"]:
            print(f"  error: {e}")
    return write_report(n, names, data_dir=data_dir, cache_dir=cache_dir, out=out, n_resamples=n_resamples,
                        runs=runs)


@section(NAME, order=70)
def bench_section(cfg: SectionConfig) -> str:
    """The default reduced-training study: computes only what the cache lacks, writes reports/reduced.md."""
    _, para = run(DEFAULT_N, None, data_dir=cfg.data_dir, cache_dir=cfg.cache, out=cfg.out, progress=cfg.progress,
                  n_resamples=cfg.bootstrap)
    return para


def _settings(v: str) -> tuple[str, ...]:
    from proxybench.proxies.reduced_training import parse_setting

    try:
        return tuple(str(parse_setting(s)) for s in v.split(",") if s.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_reduced(args) -> None:
    names = grid(args.settings, args.classes, args.subset_setting)
    path, para = run(args.sample, names, data_dir=args.data_dir, cache_dir=args.cache, out=args.out,
                     progress=not args.no_progress, n_resamples=args.bootstrap)
    print(para)
    print(f"\nwritten: {path}")


def add_cli(sub, parents) -> None:
    s = sub.add_parser(NAME, parents=parents.section, help="reduced-training proxies (EcoNAS, DA-NAS subsets, NB201 "
                       "12-epoch table) on a sample of NB201 cifar10 cells, with their cost")
    s.add_argument("--sample", type=int, default=DEFAULT_N, help=f"number of cells (default {DEFAULT_N}; nested)")
    s.add_argument("--settings", type=_settings, default=None,
                   help="EcoNAS settings, comma-separated, e.g. c4r4s0e10,c2r2s0e5 (default: the built-in grid)")
    s.add_argument("--classes", type=int, default=None, help="k of the easy/random class subsets (0: none)")
    s.add_argument("--subset-setting", type=lambda v: str(_settings(v)[0]), default=None,
                   help="EcoNAS setting of the class-subset proxies (default c4r4s0e2)")
    s.set_defaults(fn=cmd_reduced)
