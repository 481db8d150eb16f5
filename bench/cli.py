"""The `proxybench` command line: each subcommand builds a config and calls the library."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from proxybench.options import (
    DEFAULT_CACHE,
    DEFAULT_PROXIES,
    DEFAULT_SUITE,
    OUT_DEFAULT,
    SUITE,
    Parents,
    add_plugin_option,
    positive_int,
    ray_options,
    resolve_outputs,
    study_from_args,
    tasks_of,
)
from proxybench.provenance import REPO_ROOT


def _run(args, study) -> None:
    from proxybench.cache import ScoreCache
    from proxybench.runner import run_study

    cache = ScoreCache(args.cache)
    s = run_study(study, cache, executor=args.executor, workers=args.workers, chunk_size=args.chunk_size,
                  retry_errors=args.retry_errors, progress=not args.no_progress, **ray_options(args))
    print(f"scores: {s.computed} computed, {s.cached} already cached, {s.nonfinite} non-finite, "
          f"{s.errors} errors; {s.seconds:.1f} s; cache: {cache.path}")
    for e in s.error_examples:
        print(f"  error: {e}", file=sys.stderr)
    if s.retried:
        print(f"  {s.retried} chunk(s) resubmitted after a lost worker or node", file=sys.stderr)


def _image_descriptions(study) -> dict:
    from proxybench.proxies import get_proxy
    from proxybench.runner import task_images

    if not any(get_proxy(p).needs_data for p in study.proxies):
        return {}
    return {t: task_images(t, study.data_dir).description for t in study.tasks}


def _report(args, study=None) -> None:
    import pandas as pd

    from proxybench.cache import ScoreCache
    from proxybench.proxies import get_proxy
    from proxybench.report import write_report
    from proxybench.runner import study_scores, with_truth

    cache = ScoreCache(args.cache)
    if study is not None:
        studies = study if isinstance(study, list) else [study]
        df = pd.concat([study_scores(s, cache) for s in studies], ignore_index=True)
        first = studies[0]

        def how(s):
            n = len(s.arch_list())
            return (f"all {n}" if s.sample is None and s.archs is None
                    else f"{n} (from --archs-file)" if s.archs is not None
                    else f"a seeded sample of {n} (sample seed {s.sample_seed}; smaller samples of one seed are "
                         f"nested)")

        note = (f"**Study:** space `{first.space}`; " + "; ".join(f"{', '.join(s.tasks)}: {how(s)}" for s in studies)
                + f"; proxies: {', '.join(first.proxies)}; init/minibatch seed {first.seed}; minibatch "
                f"{first.batch_size} {'with' if first.augment else 'without'} augmentation (for proxies that read "
                f"images).")
        descr = {}
        for s in studies:
            descr.update(_image_descriptions(s))
    else:
        df = cache.load()
        if df.empty:
            raise SystemExit(f"the cache {cache.path} holds no scores: run `proxybench run …` first")
        from proxybench.proxies import list_proxies
        from proxybench.proxies.registry import external_proxy

        external = {p for p in set(df["proxy"]) if external_proxy(p) is not None}
        registered = set(list_proxies()) | external  # the suite's own, and scores imported from a score file
        gone = sorted(set(df["proxy"]) - registered)
        if gone:
            print(f"note: skipping cached scores of proxies no longer registered: {', '.join(gone)}", file=sys.stderr)
        df = df[df["proxy"].isin(registered)]
        current = {p: get_proxy(p).version for p in df["proxy"].unique()}
        df = df[df["proxy_version"] == df["proxy"].map(current)]
        df = with_truth(df, args.data_dir)
        note, descr = f"**Study:** every current-version score in `{cache.path}`.", {}
    from proxybench.proxies import resolve_proxies

    path = write_report(df, args.out, truth=args.truth, study_note=note, data_dir=args.data_dir,
                        n_resamples=args.bootstrap, image_descriptions=descr,
                        ensemble=tuple(resolve_proxies(args.ensemble)))
    print(f"report: {path}")
    if getattr(args, "readme", None):
        from proxybench import precision, store
        from proxybench.report import SUMMARY_STORE, headline_table, update_readme

        summary = store.read_csv(Path(args.out) / "summary.csv", SUMMARY_STORE)
        every = ""
        if study is not None and first.space == "nb201" and args.truth == "accuracy":
            # a (task, proxy) scored on every NB201 cell shows its full-space value (reports/fullspace.md)
            from proxybench.datasets import nb201
            from proxybench.report import with_full_space
            from proxybench.studies import fullspace

            if first.seed == fullspace.SEED:
                full = fullspace.complete_correlations(cache.path, args.data_dir, args.bootstrap, args.out)
                summary = with_full_space(summary, full, first.seed)
                if summary["all_cells"].any():
                    every = (f" A cell marked *every cell* is over all {nb201.N_ARCHS:,} NB201 cells "
                             "(reports/fullspace.md); the others over the sample above.")
        block = headline_table(summary, note + f" Truth: `{args.truth}`; ⚠ = substitute images; digits = the "
                               f"proxy's significant digits under other CPU kernels, threads and float64 (`make "
                               f"precision`). Scores from: {precision.machines_line(df)}.{every}", precision.load())
        if update_readme(args.readme, block):
            print(f"updated the results block of {args.readme}")


def cmd_ls(args) -> None:
    if args.what == "proxies":
        from proxybench.proxies import get_proxy, list_aggregates, list_proxies

        # the per-cell proxies, then the set-level aggregates (their record's cost is their costliest member's)
        names = list_proxies(args.pattern or "*") + list_aggregates(args.pattern or "*")
        header = ("name", "dir", "family", "cost", "tier", "needs", "version", "paper")
        rows = [(n, p.direction, p.family, p.cost, p.tier, p.needs, str(p.version), p.paper)
                for n, p in ((n, get_proxy(n)) for n in names)]
        # every column but the last as wide as its longest entry (names like danas_rand5_c4r4s0e2 are long)
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
        for r in (header, *rows):
            print("  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=False)) + "  " + r[-1])
    else:
        from proxybench.datasets import SPACES, files

        status = files.status_table(args.data_dir)
        for name, sp in SPACES.items():
            mine = [r for r in status if r["space"] == name]
            ok = all(r["status"] != "missing" for r in mine if r["required"]) and (
                any(r["required"] for r in mine) or not mine or any(r["status"] != "missing" for r in mine))
            print(f"{name:<8} {sp.description:<32} ground truth: {'available' if ok else 'MISSING (proxybench data)'}")
            for t in sp.tasks:
                img = [r for r in status if r["space"] == "images" and t in r["tasks"].split(",") and r["required"]]
                real = bool(img) and all(r["status"] != "missing" for r in img)
                print(f"    {t:<16} {sp.num_classes[t]:>4} classes, {sp.resolution[t]}x{sp.resolution[t]}  "
                      f"images: {'real' if real else 'substitute (real images missing)'}")


def cmd_data(args) -> None:
    from proxybench.datasets import files

    d = files.resolve_data_dir(args.data_dir)
    print(f"data directory: {d}  (set with --data-dir or ${files.ENV_DATA_DIR})\n")
    rows = files.status_table(args.data_dir)
    for space in dict.fromkeys(r["space"] for r in rows):
        print(f"[{space}]")
        for r in (r for r in rows if r["space"] == space):
            tag = {"verified": f"verified ({r['variant']})", "unrecognised": "present, checksum unrecognised",
                   "missing": "MISSING" + ("" if r["required"] else " (optional)")}[r["status"]]
            print(f"  {r['file']:<42} {r['tasks']:<30} {tag}")
            if r["status"] == "missing":
                print(f"      get it from {r['source']}\n      put it at {r['path']}")
        print()


def cmd_run(args) -> None:
    study = study_from_args(args, tasks_of(args.space, args.task))
    _run(args, study)


def cmd_report(args) -> None:
    _report(args)


def suite_studies(args) -> list:
    """The studies ``bench`` and ``compare`` run: the default suite (DEFAULT_SUITE, one study per task) unless
    the options name a study (--sample, --task or --archs-file), which is then the one study."""
    from dataclasses import replace

    tasks = tasks_of(args.space, args.task)
    if args.sample == SUITE and not args.archs_file:
        base = study_from_args(args, (tasks[0],))
        return [replace(base, tasks=(t,), sample=DEFAULT_SUITE.get(t, 300)) for t in tasks]
    study = study_from_args(args, tasks)
    return [replace(study, sample=DEFAULT_SUITE["cifar10"]) if args.sample == SUITE else study]


def is_default_bench(args) -> bool:
    """``bench`` with no option that changes the study: the default suite on every task, and its sections."""
    return args.sample == SUITE and args.task == "all" and not args.archs_file and not args.skip_sections


def cmd_bench(args) -> None:
    studies = suite_studies(args)
    for study in studies:
        _run(args, study)
    _report(args, studies)
    if is_default_bench(args):
        _sections(args)


def _sections(args) -> None:
    """Run every registered section (bench/studies/) and list them at the end of reports/README.md."""
    from proxybench.report import SECTIONS_BEGIN, SECTIONS_END, update_readme
    from proxybench.sections import SectionConfig, sections

    cfg = SectionConfig.from_args(args)
    parts = []
    for sec in sections():
        print(f"section: {sec.name}")
        parts.append(sec.run(cfg).strip())
    if parts:
        block = "## Further sections\n\n" + "\n\n".join(parts)
        update_readme(cfg.out / "README.md", block, (SECTIONS_BEGIN, SECTIONS_END))


def cmd_import_nb201(args) -> None:
    from proxybench.datasets import files, nb201
    from proxybench.datasets.nb201_official import truth_from_official, write_truth_parquet
    from proxybench.progress import progress as progress_bar

    out = files.resolve_data_dir(args.data_dir) / nb201.OFFICIAL_TRUTH
    df = truth_from_official(args.file, progress=progress_bar)
    write_truth_parquet(df, out)
    print(f"wrote {len(df)} rows to {out}; the suite now reads NB201 ground truth from it")


def cmd_check_params(args) -> None:
    import numpy as np

    from proxybench.datasets import nb201
    from proxybench.progress import progress as progress_bar

    truth = nb201.load_truth("cifar10", args.data_dir)
    idx = np.arange(nb201.N_ARCHS) if args.all else np.linspace(0, nb201.N_ARCHS - 1, args.n).astype(int)
    memo, counts, unexplained = {}, {}, []
    for i in progress_bar(idx, unit="cell", disable=args.no_progress):
        arch = truth["arch"].iloc[i]
        ops = nb201.parse_arch(arch)
        key = (ops.count("nor_conv_1x1"), ops.count("nor_conv_3x3"))
        if key not in memo:  # the count depends only on how many convs the cell has
            memo[key] = nb201.count_params(nb201.build_network(arch, "cifar10"))
        why = nb201.explain_param_mismatch(memo[key], float(truth["params"].iloc[i]))
        kind = "exact" if why == "exact" else "seed-mixture" if why else "UNEXPLAINED"
        counts[kind] = counts.get(kind, 0) + 1
        if why is None:
            unexplained.append((int(i), arch, memo[key], float(truth["params"].iloc[i])))
    print(f"checked {len(idx)} cells against nb201/arch_score_acc.csv params: {counts}")
    for u in unexplained[:20]:
        print(f"  UNEXPLAINED index {u[0]} {u[1]}: built {u[2]}, benchmark {u[3]} M")
    if unexplained:
        raise SystemExit(1)


def cmd_compare(args) -> None:
    from proxybench import store
    from proxybench.cache import ScoreCache
    from proxybench.compare import RESULT_STORE, compare, markdown
    from proxybench.proxies import get_proxy, resolve_proxies
    from proxybench.runner import study_scores

    proxy = get_proxy(args.proxy).name
    baselines = [p for p in resolve_proxies(args.baselines) if p != proxy]
    args.proxies = ",".join([proxy, *baselines])
    studies = suite_studies(args)
    suite = {s.tasks[0]: len(s.arch_list()) for s in studies}
    for study in studies:
        _run(args, study)  # computes only what the cache lacks: normally just the new proxy
    cache = ScoreCache(args.cache)
    import pandas as pd

    df = pd.concat([study_scores(s, cache) for s in studies], ignore_index=True)
    result = compare(df, proxy, truth=args.truth, n_resamples=args.bootstrap)
    note = (f"Study: {', '.join(f'{t}: {n} cells' for t, n in suite.items())}, seed {studies[0].seed}; truth "
            f"`{args.truth}`; cache `{cache.path}`.")
    md = markdown(result, proxy, note)
    out = Path(args.out) / f"compare_{proxy}.md"
    store.write_text(out, md + "\n")
    store.write_csv(out.with_suffix(".csv"), result, RESULT_STORE)
    print(md)
    print(f"\nwritten: {out}")


def cmd_regress(args) -> None:
    from proxybench import regress

    path = Path(args.baseline)
    if not args.write and not path.is_file():
        raise FileNotFoundError(f"no baseline at {path}: create it on purpose with `make baseline`")
    names = None
    if args.proxies:
        from proxybench.proxies import resolve_proxies

        names = tuple(resolve_proxies(args.proxies))
        if not names:
            raise ValueError(f"--proxies names no proxy: {args.proxies!r}")
        names, note = regress.checked_proxies(names)
        if note:
            print(f"note: {note}", file=sys.stderr)
    study = regress.golden_study(names, data_dir=args.data_dir)
    current = regress.compute(study, progress=not args.no_progress, workers=args.workers)
    if args.write:
        if names is not None and path.is_file():  # only these proxies: merged into the baseline, the rest kept
            old = regress.load_baseline(path)
            current = regress.merge(old, current)
            regress.write_baseline(current, path, merged_into=old)
            print(f"baseline updated: {path} ({', '.join(names)} recomputed; {len(current)} proxies)")
        else:
            regress.write_baseline(current, path)
            print(f"baseline written: {path} ({len(current)} proxies, golden study {regress.GOLDEN})")
        return
    from proxybench import precision

    baseline = regress.load_baseline(path)
    if names is not None:  # check only these
        baseline = {**baseline, "proxies": {k: v for k, v in baseline["proxies"].items() if k in names}}
    rows, ok = regress.check(baseline, current, precision.load(args.precision))
    print(regress.table(rows))
    if not ok:
        print("\nREGRESSION: see the FAIL rows above. If a change of numbers is intended, bump the proxy's "
              "version and run `make baseline`.", file=sys.stderr)
        raise SystemExit(1)
    print("\nno regression")


# commands whose parser needs none of the report sections' and tools' modules (imported by ``build_parser`` to add
# their subcommands: scipy, matplotlib, seaborn, ~2 s): ``proxybench run`` starts without them
LEAN = frozenset({"ls", "data", "run", "cache", "import-nb201", "check-params"})


def _command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is neither an option nor ``--plugin``'s value)."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--plugin":
            skip = True
        elif not a.startswith("-"):
            return a
    return None


def build_parser(full: bool = True) -> argparse.ArgumentParser:
    """Every subcommand; with ``full=False`` only the built-in ones (``LEAN`` runs with that parser)."""
    P = Parents()
    common = P.common
    study_parent = P.study

    rep = argparse.ArgumentParser(add_help=False)
    rep.add_argument("--out", default=OUT_DEFAULT, help="report directory")
    rep.add_argument("--truth", default="accuracy", help="ground-truth column: accuracy (each space's headline: "
                     "NB201 200-epoch test accuracy), or e.g. val_acc_200, test_acc_12")
    rep.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    rep.add_argument("--ensemble", default="synflow,jacob_cov,snip",
                     help="members of the vote and rank-average ensembles (comma-separated)")

    p = argparse.ArgumentParser(prog="proxybench", description=__doc__)
    add_plugin_option(p, dest="plugin_global")  # `proxybench --plugin F <cmd>`: also for commands without common
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ls", parents=[common], help="list proxies or spaces")
    s.add_argument("what", choices=["proxies", "spaces"])
    s.add_argument("pattern", nargs="?", help="wildcard, e.g. 'syn*'")
    s.set_defaults(fn=cmd_ls)
    sub.add_parser("data", parents=[common], help="list every known data file and its status").set_defaults(fn=cmd_data)
    sub.add_parser("run", parents=[common, study_parent("cifar10", 100)],
                   help="score a study into the cache").set_defaults(fn=cmd_run)
    s = sub.add_parser("report", parents=[common, rep], help="write tables and plots from the cache")
    s.add_argument("--cache", default=str(DEFAULT_CACHE))
    s.set_defaults(fn=cmd_report)
    s = sub.add_parser("bench", parents=[common, study_parent("all", SUITE), rep],
                       help="the default study on every task, then the report")
    s.add_argument("--readme", default=None,
                   help="README whose bench:begin/end block gets the headline table ('' to skip; default: the "
                        "project's README.md when the report goes to reports/)")
    s.add_argument("--skip-sections", action="store_true", help="only the training-free study, no further sections")
    s.set_defaults(fn=cmd_bench)
    s = sub.add_parser("compare", parents=[common, study_parent("all", SUITE), rep],
                       help="one proxy against every baseline on the default study, with significance")
    s.add_argument("proxy")
    s.add_argument("--baselines", default=DEFAULT_PROXIES, help="names, wildcards or @families (default: "
                   "@training-free, whose scores are cached; add e.g. @reduced-training on purpose: it trains)")
    s.set_defaults(fn=cmd_compare)
    s = sub.add_parser("regress", parents=[common], help="recompute the golden study and compare with the baseline")
    s.add_argument("--baseline", default=str(REPO_ROOT / "reports" / "baseline.json"))
    s.add_argument("--write", action="store_true", help="write the baseline instead of checking it (make baseline)")
    s.add_argument("--proxies", default=None, help="only these (names or wildcards, comma-separated): check them, "
                   "or with --write recompute them into the existing baseline and keep every other entry")
    s.add_argument("--workers", type=positive_int, default=None)
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--precision", default=str(REPO_ROOT / "reports" / "precision.json"),
                   help="measured precision per proxy and cell (make precision) that judges score changes")
    s.set_defaults(fn=cmd_regress)
    s = sub.add_parser("cache", parents=[common], help="inspect or maintain a score cache (explicit: runs never "
                       "rewrite committed parts)")
    s.add_argument("action", choices=["check", "compact", "prune"], help="check: rows, parts, machines and "
                   "duplicate keys; compact: merge every part into one; prune: drop rows of proxy versions that "
                   "are no longer registered (and compact)")
    s.add_argument("--cache", default=str(DEFAULT_CACHE))
    s.set_defaults(fn=cmd_cache)
    s = sub.add_parser("import-nb201", parents=[common], help="convert the official NAS-Bench-201 .pth once")
    s.add_argument("file")
    s.set_defaults(fn=cmd_import_nb201)
    s = sub.add_parser("check-params", parents=[common], help="check built networks' params against the benchmark")
    s.add_argument("--all", action="store_true", help="all 15,625 cells (default: --n spread over the space)")
    s.add_argument("--n", type=int, default=300)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_check_params)
    if not full:
        return p
    s = sub.add_parser("precision", parents=[common], help="measure every proxy's numerical precision under other "
                       "CPU kernels, thread counts and float64 (writes reports/precision.json)")
    from proxybench import precision as _precision

    _precision.add_arguments(s)
    s.set_defaults(fn=cmd_precision)
    from proxybench.sections import sections
    from proxybench.tools import TOOLS

    for sec in sections():
        sec.add_cli(sub, P)
    for tool in TOOLS:
        tool.add_cli(sub, P)
    from proxybench import scorefiles

    scorefiles.add_cli(sub, P)  # import-scores, export-scores
    return p


def cmd_precision(args) -> None:
    from proxybench import precision

    precision.run(args)


def cmd_cache(args) -> None:
    from proxybench.cache import ScoreCache
    from proxybench.proxies import get_proxy, list_proxies

    cache = ScoreCache(args.cache)
    if args.action == "compact":
        n = len(cache.parts())
        merged = cache.compact()
        print(f"compacted {n} part(s) of {cache.path} into {merged.name if merged else 'nothing'}")
        return
    if args.action == "prune":
        current = {p: get_proxy(p).version for p in list_proxies()}
        print(f"pruned {cache.prune_stale(current)} row(s) of proxy versions no longer registered from {cache.path}")
        return
    df = cache.load()
    print(f"{cache.path}: {len(df)} scores in {len(cache.parts())} part(s)")
    if df.empty:
        return
    for (device, cpu), n in df.groupby(["device", "cpu"]).size().items():
        print(f"  {n:>8} scores on {device}, CPU {cpu}")
    dup = cache.duplicates()
    if dup.empty:
        print("  no duplicate keys")
        return
    differ = dup[dup["max"] > dup["min"]]
    print(f"  {len(dup)} key(s) stored more than once (resolved by content: ok before error, clean commit before "
          f"dirty, smaller score); {len(differ)} with differing scores")
    for _, r in differ.head(10).iterrows():
        rel = (r["max"] - r["min"]) / max(abs(r["min"]), abs(r["max"]))
        print(f"    {r['proxy']} v{r['proxy_version']} {r['task']} {r['arch']}: {r['min']:.9g} .. {r['max']:.9g} "
              f"(relative {rel:.1e})")


def main(argv=None) -> int:
    from proxybench import allocator

    allocator.tune()  # before the first tensor (numbers unchanged; bench/allocator.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(full=_command(argv) not in LEAN).parse_args(argv)
    if getattr(args, "family", None) and hasattr(args, "space"):  # --space nds --family DARTS -> nds:DARTS
        args.space = f"{args.space}:{args.family}"
    if args.data_dir:
        os.environ["PROXYBENCH_DATA"] = str(Path(args.data_dir).resolve())  # workers get it (bench/workers.py)
    resolve_outputs(args)
    if args.cmd == "run" and args.executor in ("auto", "processes") and (args.workers or os.cpu_count() or 1) > 1:
        from proxybench.workers import start_worker_server

        start_worker_server()  # its imports beside this process's own (bench/workers.py)
    from proxybench.cache import CacheError
    from proxybench.datasets.errors import ProxybenchDataError
    from proxybench.proxies import UnknownProxyError

    try:
        from proxybench import plugins

        plugins.load([*(args.plugin_global or []), *(getattr(args, "plugin", None) or [])])
        args.fn(args)
    except (ProxybenchDataError, UnknownProxyError, CacheError, FileNotFoundError, ValueError) as e:
        print(f"proxybench: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `proxybench data | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("proxybench: interrupted; finished chunks are in the cache, rerun to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
