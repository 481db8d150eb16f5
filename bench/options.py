"""Command-line options shared by the CLI and the studies' subcommands: defaults, argument types, and the option
groups (argparse parents) that every subcommand reuses, so each option is declared once.

Only argparse lives here; what a command does is in the library (the studies, the runner, the report). The CLI
(``proxybench.cli``) builds the parser from these parents and each study's ``add_cli``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from proxybench.provenance import REPO_ROOT

DEFAULT_CACHE = REPO_ROOT / "reports" / "scores"
DEFAULT_OUT = REPO_ROOT / "reports"
# the default of every report command's --out: reports/ with the committed cache, <cache>/report with another
# --cache (see resolve_outputs), so that a trial run with a temporary cache never rewrites the committed reports
OUT_DEFAULT = "(reports/, or <cache>/report with another --cache)"
DEFAULT_PROXIES = "@training-free"  # families baseline + zero-cost; the other families have their own sections
SUITE = "default-suite"  # `bench` without --sample/--task: the DEFAULT_SUITE below

# The default study of `make bench`: every training-free proxy; 1,000 seeded cells on cifar10 (the sample the
# literature's comparisons use) and the first 300 of the same permutation on the other tasks.
DEFAULT_SUITE = {"cifar10": 1000, "cifar100": 300, "ImageNet16-120": 300}


# ------------------------------------------------------------------------------------------- argument types

def sample_arg(v: str):
    """``--sample``: a number of architectures, 'all' (None) or the default suite's marker."""
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


def positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def tasks_of(space: str, spec: str) -> tuple[str, ...]:
    """``--task``: comma-separated task names of ``space``, or 'all' (in the order the space lists them)."""
    from proxybench.datasets import get_space

    sp = get_space(space)
    if spec == "all":
        return sp.tasks
    return tuple(sp.check_task(t.strip()) for t in spec.split(",") if t.strip())


def archs_file(path: str) -> tuple[str, ...]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--archs-file {p} does not exist (one canonical arch key per line)")
    lines = [ln.strip() for ln in p.read_text().splitlines()]
    archs = tuple(ln for ln in lines if ln and not ln.startswith("#"))
    if not archs:
        raise ValueError(f"--archs-file {p} lists no architectures")
    return archs


# ------------------------------------------------------------------------------------------- option groups

class Parents:
    """The option groups a subcommand composes: ``parents=[P.common, P.cache, P.report, P.progress]``.

    A fresh set per parser: argparse shares a parent's option objects, so a default set on one subcommand
    would leak into the others."""

    def __init__(self) -> None:
        self.common = argparse.ArgumentParser(add_help=False)
        self.common.add_argument("--data-dir", default=None, help="benchmark data directory (default: "
                                 "$PROXYBENCH_DATA, else ../shared/data beside the checkout)")
        add_plugin_option(self.common)

    @staticmethod
    def _new() -> argparse.ArgumentParser:
        return argparse.ArgumentParser(add_help=False)

    @property
    def cache(self) -> argparse.ArgumentParser:
        p = self._new()
        p.add_argument("--cache", default=str(DEFAULT_CACHE), help="parquet score cache directory")
        return p

    @property
    def report(self) -> argparse.ArgumentParser:
        """--out and --bootstrap: what every command that writes a report takes."""
        p = self._new()
        p.add_argument("--out", default=OUT_DEFAULT, help="report directory")
        p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
        return p

    @property
    def progress(self) -> argparse.ArgumentParser:
        p = self._new()
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        return p

    @property
    def section(self) -> list[argparse.ArgumentParser]:
        """What a study's own subcommand takes: --data-dir, --cache, --out, --bootstrap, --no-progress."""
        return [self.common, self.cache, self.report, self.progress]

    @property
    def executor(self) -> argparse.ArgumentParser:
        """Where a study's chunks run: --executor, --workers, --address, --device, --gpus-per-task."""
        p = self._new()
        add_executor_options(p)
        return p

    def study(self, task: str, sample) -> argparse.ArgumentParser:
        """A training-free study (space, tasks, proxies, sample, seeds, batch) and where it runs."""
        p = self._new()
        p.add_argument("--space", default="nb201")
        p.add_argument("--family", default=None, help="NDS: --space nds --family DARTS is --space nds:DARTS")
        p.add_argument("--task", "--tasks", dest="task", default=task, help="task(s), comma-separated, or 'all'")
        p.add_argument("--proxies", default=DEFAULT_PROXIES, help="names or wildcards, comma-separated")
        p.add_argument("--sample", type=sample_arg, default=sample, help="number of architectures, or 'all'")
        p.add_argument("--archs-file", default=None, help="one canonical arch key per line (instead of --sample)")
        p.add_argument("--seed", type=int, default=42, help="init and minibatch seed (reference: 42)")
        p.add_argument("--sample-seed", type=int, default=0, help="seed of the architecture sample")
        p.add_argument("--batch-size", type=positive_int, default=64)
        p.add_argument("--no-augment", action="store_true")
        p.add_argument("--cache", default=str(DEFAULT_CACHE), help="parquet score cache directory")
        add_executor_options(p)
        p.add_argument("--chunk-size", type=positive_int, default=8,
                       help="cells per chunk (flushed to the cache as one part)")
        p.add_argument("--retry-errors", action="store_true", help="recompute scores cached as errors")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        return p


def add_plugin_option(p: argparse.ArgumentParser, dest: str = "plugin") -> None:
    """--plugin FILE (repeatable): a Python file that registers spaces or proxies, loaded before the command
    (``proxybench.plugins``); installed packages add theirs through the entry-point group ``proxybench.plugins``."""
    p.add_argument("--plugin", action="append", default=None, dest=dest, metavar="FILE",
                   help="a Python file that registers spaces or proxies, loaded first (repeatable; also "
                        "$PROXYBENCH_PLUGINS and the entry-point group proxybench.plugins)")


def add_executor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", default="auto", choices=["auto", "inprocess", "processes", "ray"])
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes, or the CPUs of a local Ray instance (default: all cores)")
    p.add_argument("--address", default=None, help="Ray cluster to join ('auto' on a cluster node, or "
                   "HOST:PORT of the head); without it --executor ray starts a local Ray instance")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda when there is one); "
                   "recorded with every score")
    p.add_argument("--gpus-per-task", type=float, default=None, help="Ray: GPUs each chunk reserves, e.g. "
                   "0.25 runs four chunks per GPU (default: 1 with --device cuda, else 0)")


# ------------------------------------------------------------------------------------------- from options

def ray_options(args) -> dict:
    """The Ray executor's options from the command line (none unless ``--executor ray``)."""
    return {"address": args.address, "gpus_per_task": args.gpus_per_task} if args.executor == "ray" else {}


def study_from_args(args, tasks):
    """The ``Study`` that a study parent's options describe (the default suite's marker reads as every cell:
    callers that run the suite set each task's sample with ``dataclasses.replace``)."""
    from proxybench.runner import Study

    archs = archs_file(args.archs_file) if getattr(args, "archs_file", None) else None
    return Study(space=args.space, tasks=tasks, proxies=tuple(args.proxies.split(",")),
                 sample=None if args.sample == SUITE else args.sample, archs=archs, seed=args.seed,
                 sample_seed=args.sample_seed, batch_size=args.batch_size, data_dir=args.data_dir,
                 augment=not args.no_augment, device=getattr(args, "device", "cpu"))


def same_path(a, b) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def resolve_outputs(args) -> None:
    """Where a command writes: only where it was told. ``--out`` defaults to reports/ with the committed cache,
    and to ``<cache>/report`` with any other ``--cache``; the project README is updated only when the report
    goes to reports/."""
    if getattr(args, "out", None) == OUT_DEFAULT:
        cache = getattr(args, "cache", None)
        args.out = str(DEFAULT_OUT if cache is None or same_path(cache, DEFAULT_CACHE) else Path(cache) / "report")
    if hasattr(args, "readme") and args.readme is None:
        args.readme = str(REPO_ROOT / "README.md") if same_path(args.out, DEFAULT_OUT) else ""
