"""The NAS-Bench-101 section of `make bench`: training-free proxies on seeded samples of the NB101 cells
here, next to the published all-space values (Abdelfattah et al. ICLR 2021), and `proxybench import-nb101`.

NB101 networks (stem 128 channels, 9 cells) cost 10-40x an NB201 network on a CPU, so the default study is
three nested samples of the 2,500-cell table, one per cost tier of the proxies' registry records
(``proxybench.proxies.registry.TIERS``): the cheap proxies on ``CHEAP_N`` cells, the proxies of one
forward+backward pass on ``ALL_N`` of them and GraSP (a second-order pass, per cell about as costly as all the
one-pass proxies together) on ``SECOND_ORDER_N``. ``proxybench nb101 --sample all --second-order-sample all``
computes the whole table where a GPU or a cluster is available (see README: Running on a cluster or GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from proxybench import provenance
from proxybench.cache import ScoreCache
from proxybench.proxies import applies_to, of_tier, training_free
from proxybench.render import fmt_ci, save_figure
from proxybench.report import summarise
from proxybench.runner import Study, run_study, study_scores, with_truth
from proxybench.sections import SectionConfig, section

# the sample of each cost tier (the ``tier`` of each proxy's registry record, proxies.registry.TIERS)
CHEAP_N = 2500  # the whole mirror table; with the official tfrecord imported, a seeded 2,500 of the 423,624
ALL_N = 248
SECOND_ORDER_N = 152
BATCH = 64  # Abdelfattah et al. used 256 for NB101; see the report's study line
SEED = 42
SAMPLE_SEED = 0
NAME = "nb101"


# Default-study proxies not scored on NB101 yet: the section leaves them out (its report names them with the command
# that computes them, ``proxybench nb101 --with-pending``). An NB101 cell costs ~8x an NB201 cell here (stem 128):
# AZ-NAS's components and VKDNW on the 248 cells of the one-pass tier are ~1 core-hour on this CPU; GradSign's 64
# per-image gradients and SWAP's 32 re-initialised passes about as much again.
PENDING = ("az_expressivity", "az_progressivity", "az_trainability", "vkdnw", "vkdnw_single", "gradsign",
           "gradsign_mean", "swap")
def tier_proxies(tier: str, with_pending: bool = False) -> tuple[str, ...]:
    """The training-free proxies whose registry record puts them in cost tier ``tier``, sorted; those of
    ``PENDING`` only ``with_pending``; never those whose record's ``spaces`` leave NB101 out (``nb201_only``)."""
    return tuple(p for p in of_tier(tier, among=training_free())
                 if (with_pending or p not in PENDING) and applies_to(p, "nb101"))


def nb201_only() -> tuple[str, ...]:
    """The default-study proxies the section never scores: their definition applies to other spaces only (their
    records' ``spaces``: TE-NAS's thin NB201 networks, swap_reg's NB201 mu and sigma)."""
    return tuple(p for p in training_free() if not applies_to(p, "nb101"))


def pending() -> tuple[str, ...]:
    """The default-study proxies the section leaves out (``PENDING``, as registered)."""
    return tuple(p for p in PENDING if p in training_free())


def default_studies(data_dir=None, cheap_n: int | None = CHEAP_N, all_n: int | None = ALL_N,
                    batch_size: int = BATCH, second_order_n: int | None = SECOND_ORDER_N,
                    with_pending: bool = False) -> list[Study]:
    """The nested studies of the section, one per cost tier of the registry: the cheap proxies on most cells,
    the one-pass proxies on fewer, the second-order ones on fewest (``None``: every cell). A tier without
    proxies (e.g. none registered) is left out; ``PENDING`` proxies only ``with_pending``."""
    cheap, rest, second = (tier_proxies(t, with_pending) for t in ("cheap", "one-pass", "second-order"))
    common = dict(space="nb101", tasks=("cifar10",), seed=SEED, sample_seed=SAMPLE_SEED, batch_size=batch_size,
                  data_dir=data_dir)
    tiers = [(cheap, cheap_n), (rest, all_n), (second, second_order_n)]
    return [Study(proxies=proxies, sample=n, **common) for proxies, n in tiers if proxies]


def published_nb101() -> dict[str, float]:
    from proxybench.references import PUBLISHED

    return {p.proxy: p.rho for p in PUBLISHED if p.space == "nb101"}


@dataclass
class NB101Report:
    """Every number of ``reports/nb101.md`` (``report_data``); the ``render_*`` functions compute nothing."""

    summary: pd.DataFrame  # ``summarise`` of the scores, best ρ first (empty: no scores yet)
    source: str = "mirror-2500"  # the ground truth's source id (``proxybench.datasets.nb101.truth_source_id``)
    published: dict = field(default_factory=dict)  # proxy -> published abs(ρ) over all 423k cells
    studies: list[tuple[tuple[str, ...], int]] = field(default_factory=list)  # (proxies, cells) per tier
    batch: int = BATCH
    total_s: float = 0.0  # every proxy's seconds per cell, summed
    n_table: int = 0  # cells of the table here
    outside: list[str] = field(default_factory=list)  # published values outside our interval of abs(ρ)
    tier_sizes: str = ""
    imagenet: dict = field(default_factory=dict)  # the ImageNet file: its cells and overlap, or why unavailable
    commits: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)


def _imagenet_facts(data_dir) -> dict:
    """The ImageNet top-1 file ``nasbench1_imgnet.json``: its cells and how many the CIFAR-10 table holds."""
    from proxybench.datasets import nb101

    try:
        im = nb101.read_imagenet_json(data_dir)
    except Exception as e:  # optional file
        return {"error": type(e).__name__}
    return {"n": len(im), "overlap": len(set(im["arch"]) & set(nb101.all_archs(data_dir)))}


def report_data(df: pd.DataFrame, data_dir=None, n_resamples: int = 1000,
                studies: list[Study] | None = None) -> NB101Report:
    """The section's numbers from scored rows joined with truth."""
    from proxybench.datasets import nb101

    summary = summarise(df, truth="accuracy", n_resamples=n_resamples) if not df.empty else pd.DataFrame()
    pub = published_nb101()
    rep = NB101Report(summary=summary, source=nb101.truth_source_id(data_dir), published=pub,
                      studies=[(s.proxies, len(s.arch_list())) for s in studies or []],
                      batch=studies[0].batch_size if studies else BATCH, imagenet=_imagenet_facts(data_dir),
                      commits=sorted(set(df["git_commit"])) if not df.empty else [],
                      devices=sorted(set(df["device"])) if not df.empty else [], env=provenance.environment())
    if summary.empty:
        return rep
    ranked = summary.sort_values("rho", ascending=False)
    return replace(rep, summary=ranked, total_s=float(summary["sec_per_arch"].sum()),
                   n_table=len(nb101.all_archs(data_dir)), outside=_outside_sampling_error(ranked, pub),
                   tier_sizes=_tier_sizes(ranked))


def render_intro(rep: NB101Report) -> list[str]:
    """The title, the ground truth, the networks, the study and the cost of the whole table."""
    from proxybench.datasets import nb101

    src_text = {"mirror-2500": f"the 2,500-cell mirror `{nb101.MIRROR_KEY}` (CIFAR-10 test accuracy as a fraction, "
                               "x100 here; undocumented upstream, most likely the 108-epoch mean over 3 repeats)",
                "official-tfrecord": f"the official `{nb101.TFRECORD_KEY}` (108-epoch mean test accuracy)",
                "official-parquet": f"`{nb101.OFFICIAL_TRUTH}` converted from the official tfrecord"}[rep.source]
    L = ["# NAS-Bench-101: training-free proxies", "",
         "Generated by `make bench` (`proxybench bench`; this section alone: `proxybench nb101`). Every number "
         "below is computed from the score cache; published values are quoted from REFERENCES.md.", "",
         f"**Ground truth:** {src_text}. **Networks:** `nasbench-pytorch` (stem 128 channels, 3 stacks x 3 cells), "
         f"its He-normal initialisation (cache key `init = {get_space_init()}`), parameter counts equal to the "
         "official `trainable_parameters` (tests).", ""]
    if rep.studies:
        L += ["**Study:** " + "; ".join(f"{', '.join(p)} on a seeded sample of {n} cells" for p, n in rep.studies)
              + f" (sample seed {SAMPLE_SEED}; each smaller sample is nested in the larger); init/minibatch seed "
                f"{SEED}; minibatch {rep.batch} real CIFAR-10 training images with augmentation. "
                f"Abdelfattah et al. used a minibatch of 256 on all 423,624 cells: batch {rep.batch} and "
                "the sample sizes are what this project's 2-core CPU sessions computed (committed in `reports/scores`; "
                "`make bench` reads them and computes only what is missing; grasp's second-order pass at "
                "batch 256 did not fit in this machine's 24 GB beside other jobs). Intervals: 95% bootstrap.", ""]
    if not rep.summary.empty:
        L += [f"Every proxy on all cells of the table: {rep.total_s:.0f} s per cell at batch {rep.batch} as cached "
              "(the s/cell column summed), i.e. "
              f"{rep.total_s * rep.n_table / 3600:.1f} hours of one core; on a GPU machine: "
              "`proxybench nb101 --cheap-sample all --sample all --second-order-sample all --batch-size 256 "
              "--executor ray --device cuda --gpus-per-task 0.25` (it computes only what the cache lacks; this "
              "section then reports it).", ""]
    return L


def _table_row(r, pub: dict) -> str:
    p = pub.get(r["proxy"])
    # the published figures are |ρ|: compare magnitudes, and say when ours is negative
    diff = (f"{abs(r['rho']) - p:+.3f}" + (" (ours negative)" if r["rho"] < 0 else "")
            if p is not None and np.isfinite(r["rho"]) else "–")
    return (f"| {r['proxy']} | {r['direction']} | {r['n']} | {fmt_ci(r['rho'], r['rho_lo'], r['rho_hi'])} | "
            f"{fmt_ci(r['tau'], r['tau_lo'], r['tau_hi'])} | {p if p is not None else '–'} | {diff} | "
            f"{r['sec_per_arch']:.2f} |")


def render_table(rep: NB101Report, figure: str | None = None) -> list[str]:
    """ρ/τ per proxy next to the published abs(ρ), the notes on the comparison and the figure."""
    if rep.summary.empty:
        return ["No NB101 scores in the cache yet.", ""]
    L = ["| proxy | dir | n | Spearman ρ [95% CI] | Kendall τ [95% CI] | published abs(ρ) (all 423k) | "
         "abs(ρ) − published | s/cell |", "|---|---|---|---|---|---|---|---|"]
    L += [_table_row(r, rep.published) for _, r in rep.summary.iterrows()]
    L += ["", "Published values are absolute ρ over all 423,624 cells (repo notebook) with batch 256, so they "
          "do not say whether a proxy ranked cells the right way round; here ρ is signed in each proxy's "
          "declared direction and the difference compares magnitudes. It is within sampling error when the "
          "published value lies inside the interval of abs(ρ) (the interval's absolute values). "
          "s/cell: mean seconds per cell and proxy as cached (a shared pass divided equally among the proxies "
          "that shared it on the cell; the machine was shared with other jobs).", ""]
    if rep.outside:
        L += [f"Published value outside the interval of abs(ρ): {', '.join(rep.outside)}. Differences this run "
              f"does not control for: minibatch {rep.batch} vs 256, these "
              "cells vs all 423,624, and the initialisation (nasbench-pytorch's He-normal here; the reference's "
              "networks come from its own NB101 port). Not tuned toward the published values.", ""]
    return L + ([f"![ρ per proxy on NB101]({figure})", ""] if figure else [])


def render_imagenet(rep: NB101Report) -> list[str]:
    from proxybench.datasets import nb101

    im = rep.imagenet
    if "error" in im:
        return [f"The ImageNet file `{nb101.IMAGENET_KEY}` is not available ({im['error']}).", ""]
    return [f"`{nb101.IMAGENET_KEY}`: {im['n']} cells with an ImageNet top-1 accuracy (training setting "
            f"undocumented upstream); {im['overlap']} of them are among the CIFAR-10 table's cells here, too few "
            "for a correlation with the CIFAR-10 scores. Scoring them needs ImageNet images (224x224), which are "
            "not on this machine; the file is read and validated (`proxybench.datasets.nb101.read_imagenet_json`).", ""]


def render_provenance(rep: NB101Report) -> list[str]:
    env = rep.env
    return ["## Provenance", "",
            f"- code: proxybench {env['proxybench']}, commit {env['git_commit']}; torch {env['torch']}",
            f"- scores computed at commit(s): {', '.join(rep.commits) if rep.commits else '–'}; "
            f"devices: {', '.join(rep.devices) if rep.devices else '–'}",
            f"- ground truth: {rep.source}", ""]


def paragraph(rep: NB101Report) -> str:
    """The section's summary for reports/README.md."""
    s = rep.summary
    if s.empty:
        return "**NAS-Bench-101:** no scores yet — run `proxybench nb101`."
    best = s.iloc[0]
    return (f"**NAS-Bench-101** ([nb101.md](nb101.md)): {len(s)} training-free proxies on seeded samples "
            f"of the 2,500-cell table ({rep.tier_sizes}); "
            f"best ρ {best['rho']:+.3f} ({best['proxy']}); "
            + (f"not scored on NB101 yet: {', '.join(pending())} (`proxybench nb101 --with-pending`); "
               if pending() else "")
            + (f"defined for NB201 only: {', '.join(nb201_only())}; " if nb201_only() else "") + "synflow "
            + (fmt_ci(*s.loc[s['proxy'] == 'synflow', ['rho', 'rho_lo', 'rho_hi']].iloc[0])
               if (s["proxy"] == "synflow").any() else "n/a")
            + f" vs published {rep.published.get('synflow')} (all 423k).")


def write_section(df: pd.DataFrame, out_dir, data_dir=None, n_resamples: int = 1000,
                  studies: list[Study] | None = None) -> tuple[Path, str]:
    """reports/nb101.md and its figure from scored rows joined with truth; returns (path, summary paragraph)."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rep = report_data(df, data_dir, n_resamples, studies)
    fig = None if rep.summary.empty else _bars(rep.summary, rep.published, out / "figures" / "nb101_rho.png")
    L = [*render_intro(rep), *render_table(rep, fig and fig.relative_to(out).as_posix()), *render_imagenet(rep),
         *render_provenance(rep)]
    path = out / f"{NAME}.md"
    provenance.write_if_changed(path, "\n".join(L) + "\n")
    return path, paragraph(rep)


def _outside_sampling_error(summary: pd.DataFrame, pub: dict) -> list[str]:
    """Proxies whose published abs(ρ) lies outside the interval of our abs(ρ), as 'name (ours, published)'."""
    out = []
    for _, r in summary.iterrows():
        p = pub.get(r["proxy"])
        if p is None or not np.isfinite(r["rho_lo"]) or not np.isfinite(r["rho_hi"]):
            continue
        lo, hi = sorted((abs(r["rho_lo"]), abs(r["rho_hi"])))
        if r["rho_lo"] < 0 < r["rho_hi"]:
            lo = 0.0  # the interval crosses zero: abs(ρ) can be anything from 0
        if not lo <= p <= hi:
            out.append(f"{r['proxy']} ({r['rho']:+.3f}, {p})")
    return out


def _tier_sizes(summary: pd.DataFrame) -> str:
    """'n=2500: params, flops; n=24: grasp' -- the sample size of each group of proxies, largest first."""
    groups = summary.groupby("n")["proxy"].apply(lambda p: ", ".join(sorted(p)))
    return "; ".join(f"n={n}: {names}" for n, names in sorted(groups.items(), reverse=True))


def get_space_init() -> str:
    from proxybench.datasets import get_space

    return get_space("nb101").init


def _bars(summary: pd.DataFrame, pub: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary.sort_values("rho")
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(s) + 1.2))
    y = np.arange(len(s))
    err = np.vstack([s["rho"] - s["rho_lo"], s["rho_hi"] - s["rho"]])
    ax.barh(y, s["rho"], xerr=err, color="#4c72b0", alpha=0.85, label="measured (95% CI)")
    for i, p in enumerate(s["proxy"]):
        if p in pub:
            ax.plot(pub[p], i, "D", color="#dd8452", label="published (all 423k, |ρ|)" if i == 0 or p == "synflow"
                    else None)
    ax.set_yticks(y, [f"{p} (n={n})" for p, n in zip(s["proxy"], s["n"], strict=True)])
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("Spearman ρ vs CIFAR-10 test accuracy (declared direction)")
    ax.set_title("NAS-Bench-101")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), loc="lower right", fontsize=8)
    return save_figure(fig, path)


def run(data_dir=None, cache_dir=None, out_dir=None, progress: bool = True, n_resamples: int = 1000,
        cheap_n: int | None = CHEAP_N, all_n: int | None = ALL_N, batch_size: int = BATCH, workers: int | None = None,
        second_order_n: int | None = SECOND_ORDER_N, executor: str = "auto", device: str = "cpu",
        with_pending: bool = False, **ray_options):
    """Computes what the cache lacks for the section's studies, then writes it. ``executor``, ``device`` and
    ``ray_options`` (address, gpus_per_task) as for ``proxybench run``: the whole table wants a GPU or a cluster."""
    cache = ScoreCache(cache_dir)
    studies = [replace(s, device=device)
               for s in default_studies(data_dir, cheap_n, all_n, batch_size, second_order_n, with_pending)]
    for s in studies:
        # NB101 cells are slow: flush often
        r = run_study(s, cache, executor=executor, workers=workers, progress=progress, chunk_size=2, **ray_options)
        print(f"nb101: {r.computed} computed, {r.cached} cached, {r.errors} errors ({r.seconds:.0f} s)")
    df = pd.concat([study_scores(s, cache) for s in studies], ignore_index=True)
    if not df.empty and "accuracy" not in df.columns:
        df = with_truth(df, data_dir)
    return write_section(df, out_dir, data_dir, n_resamples, studies)


@section(NAME, order=10)
def bench_section(cfg: SectionConfig) -> str:
    path, para = run(cfg.data_dir, cfg.cache, cfg.out, progress=cfg.progress, n_resamples=cfg.bootstrap)
    print(f"report: {path}")
    return para


def _cmd(args) -> None:
    from proxybench.options import ray_options

    path, para = run(args.data_dir, args.cache, args.out, progress=not args.no_progress, n_resamples=args.bootstrap,
                     cheap_n=args.cheap_sample, all_n=args.sample, batch_size=args.batch_size, workers=args.workers,
                     second_order_n=args.second_order_sample, executor=args.executor, device=args.device,
                     with_pending=args.with_pending, **ray_options(args))
    print(para)
    print(f"report: {path}")


def _cmd_import(args) -> None:
    from proxybench.datasets import files, nb101

    dst = Path(args.out) if args.out else files.resolve_data_dir(args.data_dir) / nb101.OFFICIAL_TRUTH
    df = nb101.convert_tfrecord(args.file, dst)
    print(f"converted {len(df):,} cells from {args.file} into {dst}; NB101 now reads its ground truth from it")


def add_cli(sub, parents) -> None:
    from proxybench.options import sample_arg

    s = sub.add_parser("nb101", parents=[*parents.section, parents.executor],
                       help="the NB101 section: training-free proxies on NB101 samples")
    s.add_argument("--sample", type=sample_arg, default=ALL_N, help="cells for the one-pass proxies (or 'all')")
    s.add_argument("--cheap-sample", type=sample_arg, default=CHEAP_N, help="cells for the cheap proxies (or 'all')")
    s.add_argument("--second-order-sample", type=sample_arg, default=SECOND_ORDER_N,
                   help=f"cells for the second-order proxies, {', '.join(tier_proxies('second-order'))} (or 'all')")
    s.add_argument("--batch-size", type=int, default=BATCH, help="minibatch (Abdelfattah et al.: 256)")
    s.add_argument("--with-pending", action="store_true",
                   help=f"also the proxies not scored on NB101 yet: {', '.join(PENDING)}")
    s.set_defaults(fn=_cmd)
    s = sub.add_parser("import-nb101", parents=[parents.common],
                       help="convert the official nasbench_only108.tfrecord once into a parquet table (no TensorFlow)")
    s.add_argument("file", help="path to nasbench_only108.tfrecord")
    s.add_argument("--out", default=None,
                   help="output parquet (default: <data dir>/nb101/nasbench_only108.truth.parquet)")
    s.set_defaults(fn=_cmd_import)
