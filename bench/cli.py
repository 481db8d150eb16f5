"""The `proxybench` command line: each subcommand builds a config and calls the library."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.provenance import REPO_ROOT

DEFAULT_CACHE = REPO_ROOT / "reports" / "scores"
DEFAULT_OUT = REPO_ROOT / "reports"
# the default of every report command's --out: reports/ with the committed cache, <cache>/report with another
# --cache (see resolve_outputs), so that a trial run with a temporary cache never rewrites the committed reports
OUT_DEFAULT = "(reports/, or <cache>/report with another --cache)"
DEFAULT_PROXIES = "@training-free"  # families baseline + zero-cost; the other families have their own sections
SUITE = "default-suite"  # `bench` without --sample/--task: the DEFAULT_SUITE below

# Report sections beyond the training-free study. Each module defines
#   add_cli(sub, common) -> None      its own subcommand(s) on the `proxybench` parser
#   bench_section(args) -> str        computes what the cache lacks for its default study, writes
#                                     reports/<name>.md and figures, returns a short markdown paragraph
#                                     (headline numbers and a link) for reports/README.md
# `args` carries data_dir, cache (the score cache directory), out (the report directory), no_progress, bootstrap.
SECTIONS: tuple[str, ...] = ("bench.nb101_report", "bench.nds_report", "bench.latency", "bench.fullspace", "bench.dps",
                             "bench.search", "bench.reduced")


def _sample(v: str):
    if v.lower() == "all":
        return None
    if v == SUITE:
        return SUITE
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sample takes a number of architectures or 'all', got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("--sample must be at least 1")
    return n


def _positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _tasks(space: str, spec: str) -> tuple[str, ...]:
    from datasets import get_space

    sp = get_space(space)
    if spec == "all":
        return sp.tasks
    return tuple(sp.check_task(t.strip()) for t in spec.split(",") if t.strip())


def _archs_file(path: str) -> tuple[str, ...]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--archs-file {p} does not exist (one canonical arch key per line)")
    lines = [ln.strip() for ln in p.read_text().splitlines()]
    archs = tuple(ln for ln in lines if ln and not ln.startswith("#"))
    if not archs:
        raise ValueError(f"--archs-file {p} lists no architectures")
    return archs


def _study(args, tasks):
    from bench.runner import Study

    archs = _archs_file(args.archs_file) if getattr(args, "archs_file", None) else None
    return Study(space=args.space, tasks=tasks, proxies=tuple(args.proxies.split(",")),
                 sample=args.sample, archs=archs, seed=args.seed, sample_seed=args.sample_seed,
                 batch_size=args.batch_size, data_dir=args.data_dir, augment=not args.no_augment,
                 device=getattr(args, "device", "cpu"))


def ray_options(args) -> dict:
    """The Ray executor's options from the command line (none unless ``--executor ray``)."""
    return {"address": args.address, "gpus_per_task": args.gpus_per_task} if args.executor == "ray" else {}


def _run(args, study) -> None:
    from bench.cache import ScoreCache
    from bench.runner import run_study

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
    from bench.runner import _image_source
    from proxies import get_proxy

    if not any(get_proxy(p).needs_data for p in study.proxies):
        return {}
    return {t: _image_source(t, study.data_dir).description for t in study.tasks}


def _report(args, study=None) -> None:
    import pandas as pd

    from bench.cache import ScoreCache
    from bench.report import write_report
    from bench.runner import study_scores, with_truth
    from proxies import get_proxy

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
        from proxies import list_proxies

        registered = set(list_proxies())
        gone = sorted(set(df["proxy"]) - registered)
        if gone:
            print(f"note: skipping cached scores of proxies no longer registered: {', '.join(gone)}", file=sys.stderr)
        df = df[df["proxy"].isin(registered)]
        current = {p: get_proxy(p).version for p in df["proxy"].unique()}
        df = df[df["proxy_version"] == df["proxy"].map(current)]
        df = with_truth(df, args.data_dir)
        note, descr = f"**Study:** every current-version score in `{cache.path}`.", {}
    from proxies import resolve_proxies

    path = write_report(df, args.out, truth=args.truth, study_note=note, data_dir=args.data_dir,
                        n_resamples=args.bootstrap, image_descriptions=descr,
                        ensemble=tuple(resolve_proxies(args.ensemble)))
    print(f"report: {path}")
    if getattr(args, "readme", None):
        from bench import precision
        from bench.report import headline_table, update_readme

        summary = pd.read_csv(Path(args.out) / "summary.csv")
        block = headline_table(summary, note + f" Truth: `{args.truth}`; ⚠ = substitute images; digits = the "
                               f"proxy's significant digits under other CPU kernels, threads and float64 (`make "
                               f"precision`). Scores from: {precision.machines_line(df)}.", precision.load())
        if update_readme(args.readme, block):
            print(f"updated the results block of {args.readme}")


def cmd_ls(args) -> None:
    if args.what == "proxies":
        from proxies import get_proxy, list_proxies

        names = list_proxies(args.pattern or "*")
        print(f"{'name':<14} {'dir':<4} {'family':<16} {'needs':<12} {'version':<8} paper")
        for n in names:
            p = get_proxy(n)
            print(f"{n:<14} {p.direction:<4} {p.family:<16} {p.needs:<12} {p.version:<8} {p.paper}")
    else:
        from datasets import SPACES, files

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
    from datasets import files

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
    study = _study(args, _tasks(args.space, args.task))
    _run(args, study)


def cmd_report(args) -> None:
    _report(args)


# The default study of `make bench`: every registered proxy; 1,000 seeded cells on cifar10 (the sample
# the literature's comparisons use) and the first 300 of the same permutation on the other tasks.
DEFAULT_SUITE = {"cifar10": 1000, "cifar100": 300, "ImageNet16-120": 300}


def cmd_bench(args) -> None:
    from dataclasses import replace

    if args.sample != SUITE or args.task != "all" or args.archs_file:
        if args.sample == SUITE:
            args.sample = DEFAULT_SUITE["cifar10"]
        studies = [_study(args, _tasks(args.space, args.task))]  # an explicit study
    else:
        args.sample = None
        base = _study(args, (_tasks(args.space, "all")[0],))
        studies = [replace(base, tasks=(t,), sample=n) for t, n in DEFAULT_SUITE.items()]
    for study in studies:
        _run(args, study)
    _report(args, studies)
    if studies_are_default(args):
        _sections(args)


def studies_are_default(args) -> bool:
    return args.sample is None and args.task == "all" and not args.archs_file and not args.skip_sections


def _sections(args) -> None:
    """Run every extra section (SECTIONS) and list them at the end of reports/README.md."""
    import importlib

    from bench.report import SECTIONS_BEGIN, SECTIONS_END, update_readme

    parts = []
    for name in SECTIONS:
        mod = importlib.import_module(name)
        print(f"section: {name}")
        parts.append(mod.bench_section(args).strip())
    if parts:
        block = "## Further sections\n\n" + "\n\n".join(parts)
        update_readme(Path(args.out) / "README.md", block, (SECTIONS_BEGIN, SECTIONS_END))


def cmd_import_nb201(args) -> None:
    from datasets import files, nb201
    from datasets.nb201_official import truth_from_official, write_truth_parquet

    out = files.resolve_data_dir(args.data_dir) / nb201.OFFICIAL_TRUTH
    df = truth_from_official(args.file)
    write_truth_parquet(df, out)
    print(f"wrote {len(df)} rows to {out}; the suite now reads NB201 ground truth from it")


def cmd_check_params(args) -> None:
    import numpy as np
    from tqdm.auto import tqdm

    from datasets import nb201

    truth = nb201.load_truth("cifar10", args.data_dir)
    idx = np.arange(nb201.N_ARCHS) if args.all else np.linspace(0, nb201.N_ARCHS - 1, args.n).astype(int)
    memo, counts, unexplained = {}, {}, []
    for i in tqdm(idx, unit="cell", disable=args.no_progress):
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


def _study_options(study, task: str, sample) -> None:
    study.add_argument("--space", default="nb201")
    study.add_argument("--family", default=None, help="NDS: --space nds --family DARTS is --space nds:DARTS")
    study.add_argument("--task", "--tasks", dest="task", default=task, help="task(s), comma-separated, or 'all'")
    study.add_argument("--proxies", default=DEFAULT_PROXIES, help="names or wildcards, comma-separated")
    study.add_argument("--sample", type=_sample, default=sample, help="number of architectures, or 'all'")
    study.add_argument("--archs-file", default=None, help="one canonical arch key per line (instead of --sample)")
    study.add_argument("--seed", type=int, default=42, help="init and minibatch seed (reference: 42)")
    study.add_argument("--sample-seed", type=int, default=0, help="seed of the architecture sample")
    study.add_argument("--batch-size", type=_positive_int, default=64)
    study.add_argument("--no-augment", action="store_true")
    study.add_argument("--cache", default=str(DEFAULT_CACHE), help="parquet score cache directory")
    study.add_argument("--executor", default="auto", choices=["auto", "inprocess", "processes", "ray"])
    study.add_argument("--workers", type=_positive_int, default=None,
                       help="worker processes, or the CPUs of a local Ray instance (default: all cores)")
    study.add_argument("--address", default=None, help="Ray cluster to join ('auto' on a cluster node, or "
                       "HOST:PORT of the head); without it --executor ray starts a local Ray instance")
    study.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda when there is one); "
                       "recorded with every score")
    study.add_argument("--gpus-per-task", type=float, default=None, help="Ray: GPUs each chunk reserves, e.g. "
                       "0.25 runs four chunks per GPU (default: 1 with --device cuda, else 0)")
    study.add_argument("--chunk-size", type=_positive_int, default=8,
                       help="cells per chunk (flushed to the cache as one part)")
    study.add_argument("--retry-errors", action="store_true", help="recompute scores cached as errors")
    study.add_argument("--no-progress", action="store_true")


def cmd_compare(args) -> None:
    from dataclasses import replace

    from bench.cache import ScoreCache
    from bench.compare import compare, markdown
    from bench.runner import study_scores
    from proxies import get_proxy, resolve_proxies

    proxy = get_proxy(args.proxy).name
    baselines = [p for p in resolve_proxies(args.baselines) if p != proxy]
    args.proxies = ",".join([proxy, *baselines])
    args.sample = None
    base = _study(args, (_tasks(args.space, "all")[0],))
    tasks = _tasks(args.space, args.task)
    suite = DEFAULT_SUITE if args.task == "all" else {t: DEFAULT_SUITE.get(t, 300) for t in tasks}
    studies = [replace(base, tasks=(t,), sample=n) for t, n in suite.items()]
    for study in studies:
        _run(args, study)  # computes only what the cache lacks: normally just the new proxy
    cache = ScoreCache(args.cache)
    import pandas as pd

    df = pd.concat([study_scores(s, cache) for s in studies], ignore_index=True)
    result = compare(df, proxy, truth=args.truth, n_resamples=args.bootstrap)
    note = (f"Default study ({', '.join(f'{t}: {n} cells' for t, n in suite.items())}, seed {base.seed}); truth "
            f"`{args.truth}`; cache `{cache.path}`.")
    md = markdown(result, proxy, note)
    out = Path(args.out) / f"compare_{proxy}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md + "\n")
    result.to_csv(out.with_suffix(".csv"), index=False)
    print(md)
    print(f"\nwritten: {out}")


def cmd_regress(args) -> None:
    import json

    from bench import regress

    path = Path(args.baseline)
    if not args.write and not path.is_file():
        raise FileNotFoundError(f"no baseline at {path}: create it on purpose with `make baseline`")
    study = regress.golden_study(data_dir=args.data_dir)
    current = regress.compute(study, progress=not args.no_progress, workers=args.workers)
    if args.write:
        regress.write_baseline(current, path)
        print(f"baseline written: {path} ({len(current)} proxies, golden study {regress.GOLDEN})")
        return
    from bench import precision

    rows, ok = regress.check(json.loads(path.read_text()), current, precision.load(args.precision))
    print(regress.table(rows))
    if not ok:
        print("\nREGRESSION: see the FAIL rows above. If a change of numbers is intended, bump the proxy's "
              "version and run `make baseline`.", file=sys.stderr)
        raise SystemExit(1)
    print("\nno regression")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None, help="benchmark data directory (default: $PROXYBENCH_DATA, "
                        "else ../shared/data beside the checkout)")

    def study_parent(task: str, sample):
        # one parent per subcommand: argparse shares a parent's option objects, so defaults set on one
        # subcommand would leak into the others
        study = argparse.ArgumentParser(add_help=False)
        _study_options(study, task, sample)
        return study

    rep = argparse.ArgumentParser(add_help=False)
    rep.add_argument("--out", default=OUT_DEFAULT, help="report directory")
    rep.add_argument("--truth", default="accuracy", help="ground-truth column: accuracy (each space's headline: "
                     "NB201 200-epoch test accuracy), or e.g. val_acc_200, test_acc_12")
    rep.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    rep.add_argument("--ensemble", default="synflow,jacob_cov,snip",
                     help="members of the vote and rank-average ensembles (comma-separated)")

    p = argparse.ArgumentParser(prog="proxybench", description=__doc__)
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
    s.add_argument("--workers", type=_positive_int, default=None)
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--precision", default=str(REPO_ROOT / "reports" / "precision.json"),
                   help="measured precision per proxy and cell (make precision) that judges score changes")
    s.set_defaults(fn=cmd_regress)
    s = sub.add_parser("precision", parents=[common], help="measure every proxy's numerical precision under other "
                       "CPU kernels, thread counts and float64 (writes reports/precision.json)")
    from bench import precision as _precision

    _precision.add_arguments(s)
    s.set_defaults(fn=cmd_precision)
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
    import importlib

    for name in SECTIONS:
        importlib.import_module(name).add_cli(sub, common)
    return p


def _same_path(a, b) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def resolve_outputs(args) -> None:
    """Where a command writes: only where it was told. ``--out`` defaults to reports/ with the committed cache,
    and to ``<cache>/report`` with any other ``--cache``; the project README is updated only when the report
    goes to reports/."""
    if getattr(args, "out", None) == OUT_DEFAULT:
        cache = getattr(args, "cache", None)
        args.out = str(DEFAULT_OUT if cache is None or _same_path(cache, DEFAULT_CACHE) else Path(cache) / "report")
    if hasattr(args, "readme") and args.readme is None:
        args.readme = str(REPO_ROOT / "README.md") if _same_path(args.out, DEFAULT_OUT) else ""


def cmd_precision(args) -> None:
    from bench import precision

    precision.run(args)


def cmd_cache(args) -> None:
    from bench.cache import ScoreCache
    from proxies import get_proxy, list_proxies

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
    args = build_parser().parse_args(argv)
    if getattr(args, "family", None) and hasattr(args, "space"):  # --space nds --family DARTS -> nds:DARTS
        args.space = f"{args.space}:{args.family}"
    if args.data_dir:
        os.environ["PROXYBENCH_DATA"] = str(Path(args.data_dir).resolve())  # spawned workers inherit it
    resolve_outputs(args)
    from bench.cache import CacheError
    from datasets.errors import ProxybenchDataError
    from proxies import UnknownProxyError

    try:
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
