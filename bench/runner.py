"""Run a study: score every (architecture, proxy) the cache lacks, streaming results into the cache.

A study is space x tasks x proxies x architectures (a seeded sample, all, or a given list) x seed.
Work goes out in chunks of cells through an executor (in-process, local worker processes, or Ray tasks on
a local instance or a cluster: ``proxybench.executors``); only the driver writes the cache, one atomic part per
finished chunk, so a killed run loses at most the chunks in flight and a rerun resumes.

The study contract lives here, once: ``permutation``/``draw_order``/``seeded_sample`` (the seeded order every
study samples from), ``select`` (a study's rows of a cache frame, built on ``proxybench.cache.where``) and
``make_context`` (the one way a ``ProxyContext`` is built).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial

import numpy as np
import pandas as pd
import torch

from proxybench import allocator, provenance
from proxybench.cache import KEY_COLUMNS, ScoreCache, where
from proxybench.cache import row as score_row
from proxybench.datasets import get_space
from proxybench.datasets.errors import ArchError
from proxybench.progress import progress as progress_bar
from proxybench.proxies import ProxyContext, get_proxy, per_cell, resolve_proxies
from proxybench.workers import main_guard_hint, worker_pool

INIT = "torch-default"  # NB201's; each space declares its own (Space.init)
EXTERNAL_SOURCE_PREFIX = "external:"  # the data_source of every score computed elsewhere (proxybench.scorefiles)
_DEVICE_RE = re.compile(r"cpu|auto|cuda(:\d+)?")


@dataclass(frozen=True)
class Study:
    """What to score. ``sample=None`` with ``archs=None`` means every architecture of the space.

    ``sample_seed`` draws the architectures; ``seed`` seeds each network's initialisation and the
    minibatch (the reference setting is 42), so the same sample can be scored at several seeds.
    """

    space: str = "nb201"
    tasks: tuple[str, ...] = ("cifar10",)
    proxies: tuple[str, ...] = ("synflow",)
    sample: int | None = 100
    archs: tuple[str, ...] | None = None
    seed: int = 42
    sample_seed: int = 0
    batch_size: int = 64
    augment: bool = True
    data_dir: str | None = None
    device: str = "cpu"

    def __post_init__(self):
        space = get_space(self.space)
        for t in self.tasks:
            space.check_task(t)
        object.__setattr__(self, "proxies", tuple(resolve_proxies(list(self.proxies))))
        if not self.proxies:
            raise ValueError("--proxies names no proxy: give names, wildcards or @families "
                             "(`proxybench ls proxies` lists them)")
        if self.sample is not None and self.sample < 1:
            raise ArchError(f"--sample must be a positive number of architectures, got {self.sample}")
        if not _DEVICE_RE.fullmatch(self.device):
            raise ValueError(f"--device must be cpu, cuda, cuda:N or auto, got {self.device!r}")

    def arch_list(self) -> list[str]:
        """The study's architectures (canonical keys), in a deterministic order."""
        space = get_space(self.space)
        if self.archs is not None:
            out = [space.canonical(a, self.data_dir) for a in self.archs]
            return list(dict.fromkeys(out))
        every = space.all_archs(self.data_dir)
        if self.sample is not None and self.sample > len(every):
            raise ArchError(f"--sample {self.sample} is more than the {len(every):,} architectures of space "
                            f"{self.space}: use --sample all to score every one, or a smaller sample")
        if self.sample is None or self.sample == len(every):
            return every
        return seeded_sample(self.space, self.sample, self.sample_seed, self.data_dir)


# ------------------------------------------------------------------------------ the seeded permutation
# Every committed study depends on this order: the default studies, DPS's held-out cells, the search groups and
# the latency sample are prefixes of it. Change it and every cached study would draw other cells.

def permutation(space: str, seed: int = 0, data_dir=None) -> np.ndarray:
    """The order in which studies of sample seed ``seed`` draw architectures: a seeded permutation of the indices
    into ``get_space(space).all_archs(data_dir)``. A sample of n is its first n, so samples of one seed are nested
    (the 300 are among the 1000)."""
    return np.random.default_rng(seed).permutation(len(get_space(space).all_archs(data_dir)))


def draw_order(space: str, n: int | None = None, seed: int = 0, data_dir=None) -> list[str]:
    """The first ``n`` architectures of the permutation (all with None) in the order it draws them: every prefix
    of a run that scores them in this order is a seeded random sample itself."""
    every = get_space(space).all_archs(data_dir)
    return [every[i] for i in permutation(space, seed, data_dir)[:n]]


def seeded_sample(space: str, n: int, seed: int = 0, data_dir=None) -> list[str]:
    """The seeded sample of ``n`` architectures (``Study.arch_list``): the permutation's first ``n``, in the
    space's order."""
    every = get_space(space).all_archs(data_dir)
    return [every[i] for i in np.sort(permutation(space, seed, data_dir)[:n])]


@dataclass(frozen=True)
class Job:
    """One chunk of work: the cells of one task, each with the proxies still missing for it."""

    space: str
    task: str
    seed: int
    batch_size: int
    augment: bool
    data_dir: str | None
    device: str
    items: tuple[tuple[str, tuple[str, ...]], ...]
    git_commit: str
    threads: int = 0
    dtype: str = "float32"  # "float64" only in the precision measurement (proxybench.precision); never cached


@dataclass
class RunSummary:
    computed: int = 0
    cached: int = 0
    errors: int = 0
    nonfinite: int = 0
    seconds: float = 0.0
    error_examples: list = field(default_factory=list)
    retried: int = 0  # chunks resubmitted after a lost worker or node (Ray)


# ------------------------------------------------------------------------------------------ the worker

@lru_cache(maxsize=8)
def task_images(task: str, data_dir: str | None):
    from proxybench.datasets.images import image_source

    return image_source(task, data_dir)


@lru_cache(maxsize=8)
def task_batch(task: str, data_dir: str | None, batch_size: int, seed: int, augment: bool):
    from proxybench.datasets.images import sample_batch

    return sample_batch(task_images(task, data_dir), batch_size, seed, augment=augment)


def data_source_id(task: str, data_dir: str | None, augment: bool) -> tuple[str, bool]:
    """Cache key of the images a data-using proxy sees, and whether they are a substitute."""
    src = task_images(task, data_dir)
    return src.source_id + ("" if augment else "+noaug"), bool(src.substitute)


@lru_cache(maxsize=4)
def training_data(task: str, data_dir: str | None):
    """(training images, held-out images) of a task, for proxies that train (needs_training_data)."""
    return task_images(task, data_dir), _held_out_source(task, data_dir)


@lru_cache(maxsize=4)
def _held_out_source(task: str, data_dir: str | None):
    from proxybench.datasets.images import image_source

    return image_source(task, data_dir, split="test")  # ImageNet16-120: its val file


def training_source_id(task: str, data_dir: str | None) -> tuple[str, bool]:
    """Cache key of the images a training proxy trains and is scored on, and whether they are a substitute."""
    train, test = training_data(task, data_dir)
    return f"train={train.source_id};heldout={test.source_id}", bool(train.substitute or test.substitute)


def resolve_device(spec: str) -> torch.device:
    """The torch device of ``--device`` (cpu, cuda, cuda:N, auto) in this process; a clear error when CUDA is asked
    for and absent. Resolved where the chunk runs: a Ray worker on a GPU node sees its GPU, the driver may not."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: torch {torch.__version__} sees no CUDA device here "
                         f"({os.uname().nodename}); install a CUDA build of torch, or use --device cpu or auto")
    return torch.device(spec)


def device_label(device: torch.device) -> str:
    """What the cache records as a score's device: ``cpu``, or ``cuda`` with the GPU model."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def make_context(space: str, task: str, arch: str, seed: int, batch=None, *, device: torch.device | None = None,
                 requested: Iterable[str] = (), build: Callable | None = None, train_data: Callable | None = None,
                 table: dict | None = None, dtype: torch.dtype = torch.float32,
                 allow_labels: bool = True) -> ProxyContext:
    """The one way a :class:`~proxies.ProxyContext` is built: the space's network builder (or ``build``), its input
    shape and number of classes for ``task``; ``batch`` the minibatch, ``requested`` the proxies that will run on
    the cell (shared passes compute only what they need), the rest as :class:`~proxies.ProxyContext` says."""
    sp = get_space(space)
    res = sp.resolution[task]
    ctx = ProxyContext(arch=arch, task=task, seed=seed, build=build if build is not None else sp.builder(arch, task),
                       input_shape=(3, res, res), num_classes=sp.num_classes[task], batch=batch,
                       requested=tuple(requested), train_data=train_data, table=table, dtype=dtype,
                       **({"device": device} if device is not None else {}))
    ctx.allow_labels = allow_labels
    return ctx


def score_job(job: Job) -> list[dict]:
    """Compute every score of a chunk; one row per (cell, proxy). Errors are rows too, never raised."""
    from proxybench.plugins import ensure_loaded

    ensure_loaded()  # a worker process: its driver's plugins (spaces, proxies) before anything is looked up
    allocator.tune()  # freed tensor memory kept for the next pass (no value changes; bench/allocator.py)
    if job.threads:
        torch.set_num_threads(job.threads)
    device = resolve_device(job.device)  # outside the per-cell guard: a missing GPU fails the chunk, loudly
    label = device_label(device)
    cpu = provenance.cpu_label()
    space = get_space(job.space)
    infos = {n: get_proxy(n) for _, names in job.items for n in names}
    needs_data = any(i.needs_data for i in infos.values())
    batch = task_batch(job.task, job.data_dir, job.batch_size, job.seed, job.augment) if needs_data else None
    src, substitute = data_source_id(job.task, job.data_dir, job.augment) if needs_data else ("none", False)
    # proxies that train get the task's images, proxies that read the benchmark's table get its row
    train_data = (partial(training_data, job.task, job.data_dir)
                  if any(i.needs_training_data for i in infos.values()) else None)
    if train_data is not None:
        tsrc, tsub = training_source_id(job.task, job.data_dir)
    table = None
    if any(i.needs_table for i in infos.values()):
        table = space.truth(job.task, job.data_dir).set_index("arch")
        # never the ground truth nor its siblings (Space.final_truth): a table proxy reads cheaper results
        hidden = {space.default_truth, *space.final_truth}
        table = table.drop(columns=[c for c in table.columns if c in hidden])
    rows = []
    for arch, names in job.items:
        ctx = make_context(job.space, job.task, arch, job.seed, batch, device=device, requested=names,
                           train_data=train_data, dtype=getattr(torch, job.dtype),
                           table=table.loc[arch].to_dict() if table is not None and arch in table.index else None)
        done, pooled = [], defaultdict(float)
        for name in names:
            info = infos[name]
            before = dict(ctx.shared_seconds)
            t0 = time.perf_counter()
            error = ""
            try:
                score = info.compute(ctx)
                status = "ok" if math.isfinite(score) else "nonfinite"
            except Exception as e:  # one bad cell must not kill a study: recorded, counted, reported
                score, status, error = float("nan"), "error", f"{type(e).__name__}: {e}"[:500]
            elapsed = time.perf_counter() - t0
            # the call's time less the shared work it did for its group (divided below); work timed for a group
            # it does not belong to stays its own
            shared = ctx.shared_seconds.get(info.shares, 0.0) - before.get(info.shares, 0.0) if info.shares else 0.0
            pooled[info.shares] += shared
            done.append((name, info, score, status, error, elapsed - shared))
        split = Counter(info.shares for _, info, *_ in done if info.shares)
        for name, info, score, status, error, own in done:
            # honest per-proxy cost: each member of a share group pays an equal part of the group's shared work on
            # this cell (their seconds sum to the cell's real time); ``shared_seconds`` is the whole shared work
            pass_s = pooled[info.shares] if info.shares else 0.0
            seconds = own + (pass_s / split[info.shares] if info.shares else 0.0)
            key = (job.batch_size, src, substitute) if info.needs_data else (0, "none", False)
            if info.needs_training_data:  # keyed by the training/held-out images, not the minibatch
                key = (0, tsrc, tsub)
            rows.append(score_row(space=job.space, task=job.task, arch=arch, proxy=name, proxy_version=info.version,
                                  seed=job.seed, batch_size=key[0], data_source=key[1], init=space.init,
                                  builder_version=space.builder_version, cpu=cpu, score=score, status=status,
                                  error=error, seconds=seconds, shared_seconds=pass_s, substitute=key[2],
                                  device=label, dtype=job.dtype, git_commit=job.git_commit))
    return rows


# --------------------------------------------------------------------------------------- the executors

class InProcessExecutor:
    """Runs chunks one after another in this process (debugging, small studies). Like every executor it
    scores with one torch thread: float32 reductions then run in the same order whichever executor computed
    a score (two threads moved meco_opt by 1e-6 relative), and this process's setting is restored."""

    workers = 1

    def map(self, fn: Callable, jobs: Iterable) -> Iterator:
        before = torch.get_num_threads()
        try:
            for job in jobs:
                yield fn(replace(job, threads=1))
        finally:
            torch.set_num_threads(before)


class ProcessExecutor:
    """Local worker processes (``proxybench.workers``: forked by a fork server, one torch thread each, ended with
    their driver); results stream back as chunks finish."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)

    def map(self, fn: Callable, jobs: Iterable) -> Iterator:
        jobs = [replace(j, threads=1) for j in jobs]
        try:
            with worker_pool(self.workers) as pool:
                futures = [pool.submit(fn, j) for j in jobs]
                try:
                    for fut in as_completed(futures):
                        yield fut.result()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        except BrokenProcessPool as e:
            hint = main_guard_hint()  # the usual cause in a user's script; otherwise e.g. a worker killed (memory)
            if hint is None:
                raise
            raise RuntimeError(hint) from e


# Rough seconds per cell of one proxy of each tier on one CPU core (the orders of magnitude of reports/perf.md),
# used only to decide whether worker processes, a few seconds each to start, pay off for a study.
TIER_SECONDS = {"cheap": 0.05, "one-pass": 0.5, "second-order": 1.5, "trained": 60.0}
PROCESSES_PAY_OFF_S = 10.0  # estimated work above which "auto" starts worker processes


def estimated_seconds(jobs: list[Job]) -> float:
    """The work of ``jobs`` on one core, from the registry's cost tiers (an estimate, never reported)."""
    tier = {}
    total = 0.0
    for j in jobs:
        for _, names in j.items:
            for n in names:
                if n not in tier:
                    tier[n] = TIER_SECONDS.get(get_proxy(n).tier, 0.5)
                total += tier[n]
    return total


def spread(jobs: list[Job], workers: int) -> list[Job]:
    """Split the chunks of a study that has fewer chunks than workers, so that every worker gets work."""
    if workers <= 1 or len(jobs) >= workers:
        return jobs
    size = max(1, math.ceil(sum(len(j.items) for j in jobs) / workers))
    return [replace(j, items=j.items[i:i + size]) for j in jobs for i in range(0, len(j.items), size)]


def make_executor(kind: str = "auto", workers: int | None = None, n_jobs: int = 0, seconds: float | None = None,
                  **ray_options):
    """``ray_options`` (address, gpus_per_task, max_retries) go to :class:`proxybench.executors.RayExecutor`.

    ``auto``: worker processes when there is more than one core and the work pays their start-up: ``seconds``
    (the estimated work, :func:`estimated_seconds`) above PROCESSES_PAY_OFF_S, or without an estimate 4 chunks."""
    cores = os.cpu_count() or 1
    if kind == "auto":
        enough = seconds > PROCESSES_PAY_OFF_S if seconds is not None else n_jobs >= 4
        kind = "processes" if (workers or cores) > 1 and enough else "inprocess"
    if kind == "inprocess":
        return InProcessExecutor()
    if kind == "processes":
        return ProcessExecutor(workers or cores)
    if kind == "ray":
        from proxybench.executors import RayExecutor

        ex = RayExecutor(workers, **ray_options)
        ex.connect()  # now, so that a bad address fails before any work and ``workers`` is the cluster's CPUs
        return ex
    raise ValueError(f"unknown executor {kind!r}: use auto, inprocess, processes or ray")


# ----------------------------------------------------------------------------------------- the driver

def _cached_keys(cache: ScoreCache, study: Study, retry_errors: bool, archs: list[str]) -> set[tuple]:
    df = cache.load()
    if df.empty:
        return set()
    # only the rows a key of this study can match (a study is often a small part of a large cache)
    df = where(df, space=study.space, seed=study.seed, task=set(study.tasks), proxy=set(per_cell(study.proxies)),
               ok_only=retry_errors)
    df = df[df["arch"].isin(set(archs)).to_numpy(dtype=bool)]
    return set(zip(*(df[c].tolist() for c in KEY_COLUMNS), strict=True))


def setting_keys(study: Study, task: str) -> dict[str, tuple[int, int, str]]:
    """Per proxy, the (version, batch_size, data_source) part of its cache key in this study and task."""
    keys = {}
    for name in per_cell(study.proxies):  # an aggregate's members, never the aggregate itself
        info = get_proxy(name)
        if info.external:  # scores computed elsewhere: never computed here (``select`` finds them)
            continue
        src = data_source_id(task, study.data_dir, study.augment)[0] if info.needs_data else "none"
        keys[name] = (info.version, study.batch_size if info.needs_data else 0, src)
        if info.needs_training_data:
            keys[name] = (info.version, 0, training_source_id(task, study.data_dir)[0])
    return keys


def plan(study: Study, cache: ScoreCache, retry_errors: bool = False, chunk_size: int = 8) -> tuple[list[Job], int]:
    """The jobs still to run and the number of scores already cached."""
    archs = study.arch_list()
    have = _cached_keys(cache, study, retry_errors, archs)
    commit = provenance.git_commit()
    init, builder = get_space(study.space).init, get_space(study.space).builder_version
    jobs, cached = [], 0
    for task in study.tasks:
        keys = setting_keys(study, task)  # the proxies computed here (not external ones)
        items = []
        for arch in archs:
            missing = tuple(n for n in keys if (study.space, task, arch, n, keys[n][0], study.seed,
                                                keys[n][1], keys[n][2], init, builder) not in have)
            cached += len(keys) - len(missing)
            if missing:
                items.append((arch, missing))
        for i in range(0, len(items), chunk_size):
            jobs.append(Job(study.space, task, study.seed, study.batch_size, study.augment, study.data_dir,
                            study.device, tuple(items[i:i + chunk_size]), commit))
    return jobs, cached


def run_study(study: Study, cache: ScoreCache, executor: str = "auto", workers: int | None = None,
              chunk_size: int = 8, retry_errors: bool = False, progress: bool = True, **ray_options) -> RunSummary:
    """Compute what the cache lacks for ``study``; returns counts. Safe to interrupt and rerun.

    ``ray_options`` (``address``, ``gpus_per_task``, ``max_retries``) configure ``executor="ray"``."""
    t0 = time.perf_counter()
    jobs, cached = plan(study, cache, retry_errors, chunk_size)
    summary = RunSummary(cached=cached)
    n_cells = sum(len(j.items) for j in jobs)
    if jobs:
        ex = make_executor(executor, workers, len(jobs), seconds=estimated_seconds(jobs), **ray_options)
        jobs = spread(jobs, ex.workers)  # a small study still keeps every worker busy
        if executor != "ray":
            resolve_device(study.device)  # fail here, before any work, when this machine lacks the device
        bar = progress_bar(total=n_cells, unit="cell", disable=not progress, dynamic_ncols=True,
                           desc=f"{study.space} {','.join(study.tasks)} [{ex.workers} worker(s)]")
        try:
            for rows in ex.map(score_job, jobs):
                cache.append(rows)
                summary.computed += len(rows)
                for r in rows:
                    if r["status"] == "error":
                        summary.errors += 1
                        if len(summary.error_examples) < 5:
                            summary.error_examples.append(f"{r['proxy']} on {r['arch']}: {r['error']}")
                    elif r["status"] == "nonfinite":
                        summary.nonfinite += 1
                bar.update(len({r["arch"] for r in rows}))
        finally:
            bar.close()
            summary.retried = getattr(ex, "retried", 0)
    summary.seconds = time.perf_counter() - t0
    return summary


def study_scores(study: Study, cache: ScoreCache) -> pd.DataFrame:
    """The study's cached scores joined with the ground truth (one row per task, arch, proxy); the study's
    set-level aggregates computed from their members over the study's cells (``with_aggregates``)."""
    return with_truth(with_aggregates(select(cache.load(), study), study.proxies), study.data_dir)


def with_aggregates(df: pd.DataFrame, names) -> pd.DataFrame:
    """``df`` with a row per cell for each set-level aggregate among ``names`` (``proxies.register_aggregate``),
    computed over each (space, task, seed)'s cells that every member scored without error; member rows that
    ``names`` does not ask for are dropped. An aggregate row's ``seconds`` is the sum of its members', its
    ``batch_size`` / ``data_source`` / ``substitute`` those of its members together; the other provenance is its first
    member's. The value of a cell depends on the set it is ranked in: a subset gives other values."""
    aggs = [get_proxy(n) for n in names if get_proxy(n).members]
    if not aggs or df.empty:
        return df
    out = [df[df["proxy"].isin(set(names))]]
    for info in aggs:
        members = list(info.members)
        mine = df[df["proxy"].isin(members) & (df["status"] != "error")]
        for _, g in mine.groupby(["space", "task", "seed"], sort=False):
            wide = g.pivot_table(index="arch", columns="proxy", values="score", aggfunc="first", dropna=False)
            if not set(members) <= set(wide.columns):
                continue
            wide = wide[members]
            have = g.groupby("arch")["proxy"].nunique()
            archs = [a for a in wide.index if have.get(a, 0) == len(members)]
            if not archs:
                continue
            wide = wide.loc[archs]
            from proxybench import metrics  # scipy: only here, not at every worker's start

            score = metrics.aggregate([metrics.declared(wide[m].to_numpy(), m) for m in members], info.aggregation)
            first = g[g["proxy"] == members[0]].set_index("arch").loc[archs]
            per = g.groupby("arch")
            rows = first.reset_index().copy()
            rows["proxy"], rows["proxy_version"] = info.name, info.version
            rows["score"] = score
            rows["status"] = np.where(np.isfinite(score), "ok", "nonfinite")
            rows["error"] = ""
            rows["seconds"] = per["seconds"].sum().loc[archs].to_numpy()
            rows["batch_size"] = per["batch_size"].max().loc[archs].to_numpy()
            rows["substitute"] = per["substitute"].any().loc[archs].to_numpy()
            rows["data_source"] = per["data_source"].agg(
                lambda v: ";".join(sorted({x for x in v if x != "none"})) or "none").loc[archs].to_numpy()
            out.append(rows[df.columns])
    return pd.concat(out, ignore_index=True)


def study_settings(study: Study) -> set[tuple]:
    """The (task, proxy, proxy_version, batch_size, data_source) of every score of the study."""
    return {(t, p, *k) for t in study.tasks for p, k in setting_keys(study, t).items()}


def select(df: pd.DataFrame, study: Study, *, scope_only: bool = False, ok_only: bool = False) -> pd.DataFrame:
    """The rows of the cache frame ``df`` that are ``study``'s: its space, seed, tasks and architectures, the space's
    init and builder version, and of each (task, proxy) exactly the study's setting (the current version, batch
    size and images; the cache may also hold other batch sizes, substitute and real images, older versions).

    ``scope_only``: every proxy at any setting within that scope. ``ok_only``: without error rows.

    Scores computed elsewhere (external proxies such as ``naslib:synflow``, imported by ``proxybench.scorefiles``) are
    the study's when it names them (or with ``scope_only``) and they are of its space, seed, tasks and cells,
    whatever their init, builder or source file: the import keeps one file per (space, task, proxy) in a cache."""
    space = get_space(study.space)
    whole = study.archs is None and study.sample is None  # every architecture: no need to list them
    arch = None if whole else set(study.arch_list())
    own = where(df, space=study.space, seed=study.seed, task=set(study.tasks), arch=arch, init=space.init,
                builder_version=space.builder_version, proxy=None if scope_only else set(per_cell(study.proxies)),
                settings=None if scope_only else study_settings(study), ok_only=ok_only)
    external = [p for p in study.proxies if get_proxy(p).external]
    if not (external or scope_only) or df.empty:
        return own
    ext = where(df, space=study.space, seed=study.seed, task=set(study.tasks), arch=arch,
                proxy=None if scope_only else set(external), ok_only=ok_only)
    ext = ext[ext["data_source"].str.startswith(EXTERNAL_SOURCE_PREFIX)]
    return pd.concat([own, ext[~ext.index.isin(own.index)]]) if len(ext) else own


def with_truth(df: pd.DataFrame, data_dir=None) -> pd.DataFrame:
    """Scores joined with their space's ground truth; ``accuracy`` is each space's headline column."""
    parts = []
    for space_name, g in df.groupby("space", sort=False):
        space = get_space(space_name)
        truth = pd.concat([space.truth(t, data_dir) for t in g["task"].unique()], ignore_index=True)
        truth = truth.assign(accuracy=truth[space.default_truth])
        parts.append(g.merge(truth, on=["task", "arch"], how="left"))
    if not parts:
        return df.assign(accuracy=pd.Series(dtype=float))
    return pd.concat(parts, ignore_index=True)
