"""Discrete Proxy Search (Li et al., ICCV 2023): regularised evolution over Eproxy's training settings.

A candidate is an :class:`~proxybench.proxies.eproxy.EproxySetting`; its fitness is the Spearman rho of its declared
ranking (lower loss = better) with the benchmark accuracy on a small seeded **fitness set** of benchmarked
cells. Regularised evolution (Real et al. 2019; population 40, tournament 10, mutation rate 0.2 as the
paper): the first ``population`` candidates are random, then each new candidate mutates the fittest of a
random tournament drawn from the ``population`` most recent ones.

Every (setting, cell) loss goes into a :class:`~proxybench.cache.ScoreCache` under the proxy name
``eproxy[<hash of the setting with alpha = 0>]`` (the FLOPs prior alpha is applied afterwards, so settings that
differ only in alpha share their training), with the settings themselves in ``<index>/settings.json``. The
search is a deterministic function of its seed and the cached scores: a killed search rerun replays the same
candidates from the cache and computes only what is missing.

The found setting is then evaluated on held-out cells that must be **disjoint** from the fitness set
(:class:`OverlapError` otherwise; the original code can overlap them). The default study (``bench_section``):
fitness set = 20 cells drawn outside the 1,000-cell default NB201 sample, evaluation set = the first 500
cells of that sample (their zero-cost scores are already cached), so every proxy is compared on the same cells.
A search run with ``proxybench dps`` is evaluated on the first QUICK_EVAL_N (50) of them unless ``--eval-n`` asks
for more (``default``: the 500 of the default study, ``all``: the 1,000), and its report says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from proxybench import metrics, provenance, store
from proxybench.cache import ScoreCache, where
from proxybench.cache import row as score_row
from proxybench.datasets import get_space
from proxybench.progress import progress as progress_bar
from proxybench.proxies import ProxyContext
from proxybench.proxies import eproxy as ep
from proxybench.runner import draw_order, make_context
from proxybench.sections import SectionConfig, section
from proxybench.workers import worker_pool

# The discrete space searched (the reference's NB201 DPS configuration, channel counts capped at 128 for CPU).
CHOICES: dict[str, tuple] = {
    "lr": (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5),
    "alpha": (-0.5, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    "branches": (1, 2, 3),
    "head_kernel": ep.KERNELS,
    "barrier_kernel": ep.KERNELS,
    "head_channels": (16, 32, 64, 128),
    "target_channels": (16, 32, 64, 128),
    "level": (0.5, 1.0, 1.5, 2.0),
    "init": ep.INITS,
    "barrier_init": ep.INITS,
}
TARGET_P = 0.2  # a random setting includes each target basis with this probability (the reference's > 0.8)
NAN_FITNESS = -1.0  # a candidate whose rho is undefined (every score equal or non-finite)
MACS_PROXY = "eproxy[macs_ratio]"
# the registered proxy whose settings the search explores: its record's direction (↓) and NaN policy (rank_last)
# rank every searched setting's scores
SEARCHED = "eproxy"


class OverlapError(ValueError):
    """The evaluation set shares architectures with the fitness set."""


@dataclass(frozen=True)
class DPSConfig:
    """One search: where, how long, and the images and seeds every candidate is trained with."""

    space: str = "nb201"
    task: str = "cifar10"
    budget: int = 200
    population: int = 40
    tournament: int = 10
    mutation: float = 0.2
    fitness_n: int = 20
    fitness_seed: int = 0
    search_seed: int = 0
    seed: int = 42  # network init and minibatch, as the default study
    batch_size: int = 16
    augment: bool = True
    data_dir: str | None = None

    def __post_init__(self):
        get_space(self.space).check_task(self.task)
        for name in ("budget", "population", "tournament", "fitness_n", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DPS {name} must be at least 1, got {getattr(self, name)}")
        if self.tournament > self.population:
            raise ValueError(f"DPS tournament ({self.tournament}) cannot exceed the population ({self.population})")
        if not 0 <= self.mutation <= 1:
            raise ValueError(f"DPS mutation rate must be in [0, 1], got {self.mutation}")
        if self.fitness_n < 3:
            raise ValueError("DPS needs at least 3 fitness architectures for a rank correlation")


# ----------------------------------------------------------------------------------------- the space

def random_setting(rng: np.random.Generator) -> ep.EproxySetting:
    """A uniformly drawn setting; each target basis included with probability 0.2 (at least one)."""
    kw = {k: v[int(rng.integers(len(v)))] for k, v in CHOICES.items()}
    targets = [b for b in ep.TARGET_BASES if rng.random() < TARGET_P]
    if not targets:
        targets = [ep.TARGET_BASES[int(rng.integers(len(ep.TARGET_BASES)))]]
    return ep.EproxySetting(**kw, targets=tuple(targets))


def mutate(setting: ep.EproxySetting, rng: np.random.Generator, rate: float = 0.2) -> ep.EproxySetting:
    """Redraw each field, and flip each target basis, with probability ``rate`` (never an empty target set)."""
    kw = {}
    for k, v in CHOICES.items():
        kw[k] = v[int(rng.integers(len(v)))] if rng.random() < rate else getattr(setting, k)
    targets = [b for b in ep.TARGET_BASES if (b in setting.targets) != (rng.random() < rate)]
    if not targets:
        targets = list(setting.targets)
    return replace(setting, **kw, targets=tuple(targets))


# ------------------------------------------------------------------------------------- cell selection

def default_sample(space: str, task: str, n: int = 1000, data_dir=None) -> list[str]:
    """The default study's seeded sample (sample seed 0; smaller ones are its prefixes: nested)."""
    from proxybench.runner import Study

    return Study(space=space, tasks=(task,), proxies=("params",), sample=n, data_dir=data_dir).arch_list()


def sample_in_draw_order(space: str, task: str, n: int, data_dir=None) -> list[str]:
    """The cells of ``default_sample(n)`` in the order the seeded permutation draws them: scoring them in this
    order makes every finished prefix a seeded random sample itself (a run stopped early is still unbiased)."""
    return draw_order(space, n, 0, data_dir)


def fitness_archs(space: str, task: str, n: int, seed: int, exclude: Sequence[str] = (), data_dir=None) -> list[str]:
    """``n`` seeded benchmarked cells with a known accuracy, none of them in ``exclude``."""
    sp = get_space(space)
    truth = sp.truth(task, data_dir)
    acc = truth.set_index("arch")[sp.default_truth]
    skip = set(exclude)
    pool = sorted(a for a, v in acc.items() if a not in skip and np.isfinite(v))
    if len(pool) < n:
        raise ValueError(f"only {len(pool)} benchmarked cells are outside the evaluation sample; need {n}")
    idx = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in sorted(idx)]


def check_disjoint(fitness: Sequence[str], evaluation: Sequence[str]) -> None:
    """Raise OverlapError when an evaluation architecture is also a fitness architecture."""
    both = sorted(set(fitness) & set(evaluation))
    if both:
        raise OverlapError(f"{len(both)} evaluation architecture(s) are in the DPS fitness set (e.g. {both[0]}); "
                           "a setting searched on them would be scored on its own training data: evaluate on "
                           "held-out architectures")


# ----------------------------------------------------------------------------------------- scoring

def _context(space: str, task: str, arch: str, seed: int, batch) -> ProxyContext:
    return make_context(space, task, arch, seed, batch, allow_labels=False)


def _score_chunk(space: str, task: str, seed: int, batch, setting: dict | None, archs: tuple[str, ...],
                 scorer: Callable | None = None) -> list[tuple[str, float, str, str, float]]:
    """(arch, value, status, error, seconds) per cell: the setting's prior-free loss, or the MACs ratio."""
    torch.set_num_threads(1)
    s = ep.EproxySetting.from_dict(setting) if setting is not None else None
    fn = scorer or ep.eproxy_loss
    out = []
    for arch in archs:
        ctx = _context(space, task, arch, seed, batch)
        t0 = time.perf_counter()
        try:
            v = float(fn(ctx, s)) if s is not None else float(ep.macs_ratio(ctx))
            status, err = ("ok" if math.isfinite(v) else "nonfinite"), ""
        except Exception as e:  # recorded like the runner does: one bad cell must not kill a search
            v, status, err = float("nan"), "error", f"{type(e).__name__}: {e}"[:500]
        out.append((arch, v, status, err, time.perf_counter() - t0))
    return out


class Evaluator:
    """Prior-free Eproxy losses and MACs ratios of cells through a score cache (nothing is computed twice).

    ``batch`` / ``data_source`` default to the runner's seeded minibatch of ``config.batch_size`` images of
    the task (the same images the registered ``eproxy`` sees in a study with that batch size). ``scorer``
    replaces :func:`proxybench.proxies.eproxy.eproxy_loss` (tests); it forces in-process scoring.
    """

    def __init__(self, config: DPSConfig, cache: ScoreCache, *, workers: int = 1, batch=None,
                 data_source: str | None = None, scorer: Callable | None = None, progress: bool = True):
        self.config, self.cache, self.scorer, self.progress = config, cache, scorer, progress
        self.workers = 1 if scorer is not None else max(1, workers)
        if batch is None:
            from proxybench.runner import data_source_id, task_batch

            batch = task_batch(config.task, config.data_dir, config.batch_size, config.seed, config.augment)
            data_source, self.substitute = data_source_id(config.task, config.data_dir, config.augment)
        else:
            self.substitute = False
        self.batch = (batch[0][: config.batch_size], batch[1][: config.batch_size])
        self.data_source = data_source or "unknown"
        self.computed = 0
        self._pool: ProcessPoolExecutor | None = None
        self._known: dict[tuple[str, str], float] = {}
        self._load()

    def _load(self) -> None:
        df = self.cache.load()
        c = self.config
        mine = dict(space=c.space, task=c.task, seed=c.seed, proxy_version=ep.VERSION, ok_only=True)
        # the settings' losses on this minibatch, and the MACs ratios (which read no images)
        parts = (where(df, **mine, batch_size=c.batch_size, data_source=self.data_source),
                 where(df, **mine, proxy=MACS_PROXY))
        self._known = {(p, a): float(s) for d in parts
                       for p, a, s in zip(d["proxy"], d["arch"], d["score"], strict=True)}

    def _rows(self, proxy: str, init: str, results, uses_data: bool) -> list[dict]:
        c = self.config
        return [score_row(space=c.space, task=c.task, arch=a, proxy=proxy, proxy_version=ep.VERSION, seed=c.seed,
                          batch_size=c.batch_size if uses_data else 0,
                          data_source=self.data_source if uses_data else "none", init=init, score=v, status=st,
                          error=err, seconds=sec, substitute=self.substitute and uses_data, device="cpu",
                          dtype="float32")
                for a, v, st, err, sec in results]

    def _compute(self, proxy: str, setting: ep.EproxySetting | None, archs: Sequence[str], desc: str) -> None:
        missing = [a for a in dict.fromkeys(archs) if (proxy, a) not in self._known]
        if not missing:
            return
        c = self.config
        sdict = setting.to_dict() if setting is not None else None
        chunk = 4 if self.workers > 1 else 10
        chunks = [tuple(missing[i:i + chunk]) for i in range(0, len(missing), chunk)]
        bar = progress_bar(total=len(missing), unit="cell", desc=desc, leave=False, disable=not self.progress,
                           dynamic_ncols=True)
        init = setting.init if setting is not None else "none"

        def take(results):
            self.cache.append(self._rows(proxy, init, results, setting is not None))  # one atomic part per chunk
            for a, v, st, _e, _s in results:
                if st != "error":
                    self._known[(proxy, a)] = v
            self.computed += len(results)
            bar.update(len(results))

        try:
            if self.workers == 1:
                for ch in chunks:
                    take(_score_chunk(c.space, c.task, c.seed, self.batch, sdict, ch, self.scorer))
            else:
                if self._pool is None:  # one pool for the evaluator's life: workers start (import torch) once
                    self._pool = worker_pool(self.workers)
                futs = [self._pool.submit(_score_chunk, c.space, c.task, c.seed, self.batch, sdict, ch)
                        for ch in chunks]
                try:
                    for f in futs:
                        take(f.result())
                except BaseException:
                    for f in futs:
                        f.cancel()
                    raise
        finally:
            bar.close()

    def close(self) -> None:
        """Stop the worker processes (if any)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def losses(self, setting: ep.EproxySetting, archs: Sequence[str]) -> np.ndarray:
        """The prior-free loss of ``setting`` on each cell (NaN for a diverged or failed one)."""
        self._compute(setting.proxy_name, setting.without_prior(), archs, f"eproxy[{setting.without_prior().hash}]")
        return np.array([self._known.get((setting.proxy_name, a), float("nan")) for a in archs])

    def ratios(self, archs: Sequence[str]) -> np.ndarray:
        self._compute(MACS_PROXY, None, archs, "MACs")
        return np.array([self._known.get((MACS_PROXY, a), float("nan")) for a in archs])

    def scores(self, setting: ep.EproxySetting, archs: Sequence[str]) -> np.ndarray:
        """The setting's Eproxy score (loss times the FLOPs prior) on each cell: lower is better."""
        loss = self.losses(setting, archs)
        if setting.alpha == 0:
            return loss
        return ep.apply_prior(loss, self.ratios(archs), setting.alpha)


def fitness_of(scores: np.ndarray, accuracy: np.ndarray) -> float:
    """Spearman rho of the declared ranking with accuracy: a searched setting is an Eproxy setting, ranked as
    the ``eproxy`` record declares (lower score = better; non-finite ranked last)."""
    rho = metrics.spearman_rho(metrics.declared(scores, SEARCHED), accuracy)
    return rho if math.isfinite(rho) else NAN_FITNESS


# ----------------------------------------------------------------------------------------- the search

@dataclass
class SearchResult:
    config: DPSConfig
    fitness_archs: list[str]
    history: list[dict] = field(default_factory=list)  # per candidate: index, hash, setting, fitness, best

    @property
    def best(self) -> dict:
        return max(self.history, key=lambda h: (h["fitness"], -h["index"]))

    @property
    def best_setting(self) -> ep.EproxySetting:
        return ep.EproxySetting.from_dict(self.best["setting"])


# the search's record under <out>/dps/ (reports/dps/ for the default study)
SETTINGS_STORE = store.Kind("dps-settings", 1, "proxybench dps")  # settings.json: cache proxy name -> setting
RECORD_STORE = store.Kind("dps-search", 1, "proxybench dps")  # search.json
TRAJECTORY_STORE = store.Kind("dps-trajectory", 1, "proxybench dps")  # trajectory.csv
HELDOUT_STORE = store.Kind("dps-heldout", 1, "proxybench dps")  # heldout.csv


def _write_json(path: Path, obj, kind: store.Kind, keep: tuple[str, ...] = ()) -> None:
    store.write_json(path, obj, kind, sort_keys=True, newline=True, keep=keep)


def record_settings(index_dir: Path, settings: Sequence[ep.EproxySetting]) -> None:
    """Add settings to ``settings.json``: cache proxy name -> the alpha-free setting it was trained with."""
    path = Path(index_dir) / "settings.json"
    known = store.read_json(path, SETTINGS_STORE) if path.is_file() else {}
    new = {s.proxy_name: s.without_prior().to_dict() for s in settings}
    if any(k not in known for k in new):
        known.update(new)
        _write_json(path, known, SETTINGS_STORE)


def search(config: DPSConfig, evaluator: Evaluator, fitness: dict[str, float], index_dir: str | os.PathLike,
           progress: bool = True, on_candidate: Callable[[dict], None] | None = None) -> SearchResult:
    """Regularised evolution over Eproxy settings; fitness = rho on the cells of ``fitness`` (arch -> accuracy).

    Deterministic for ``config.search_seed`` and the cached scores: rerunning replays it from the cache.
    ``on_candidate`` is called with each finished candidate's record (progress hooks, tests).
    """
    archs = list(fitness)
    acc = np.array([fitness[a] for a in archs], dtype=float)
    rng = np.random.default_rng(config.search_seed)
    result = SearchResult(config, archs)
    population: list[dict] = []
    bar = progress_bar(total=config.budget, unit="setting", desc=f"DPS {config.space} {config.task}",
                       disable=not progress, dynamic_ncols=True)
    try:
        for i in range(config.budget):
            if i < config.population:
                setting = random_setting(rng)
            else:
                pool = population[-config.population:]
                picks = rng.choice(len(pool), size=config.tournament, replace=False)
                parent = max((pool[j] for j in picks), key=lambda h: h["fitness"])
                setting = mutate(ep.EproxySetting.from_dict(parent["setting"]), rng, config.mutation)
            record_settings(index_dir, [setting])
            f = fitness_of(evaluator.scores(setting, archs), acc)
            rec = {"index": i, "hash": setting.hash, "proxy": setting.proxy_name, "setting": setting.to_dict(),
                   "fitness": f}
            population.append(rec)
            result.history.append({**rec, "best_so_far": max(h["fitness"] for h in result.history + [rec])})
            bar.update(1)
            bar.set_postfix(best=f"{result.history[-1]['best_so_far']:+.3f}", computed=evaluator.computed)
            if on_candidate is not None:
                on_candidate(rec)
    finally:
        bar.close()
    return result


def save_search(result: SearchResult, index_dir: str | os.PathLike) -> None:
    """The trajectory (CSV) and the search record (JSON, with provenance) under ``index_dir``."""
    d = Path(index_dir)
    d.mkdir(parents=True, exist_ok=True)
    store.write_csv(d / "trajectory.csv", pd.DataFrame([{k: v for k, v in h.items() if k != "setting"}
                                                        for h in result.history]), TRAJECTORY_STORE)
    _write_json(d / "search.json", {"config": asdict(result.config), "fitness_archs": result.fitness_archs,
                                    "best": result.best, "environment": provenance.environment()}, RECORD_STORE,
                keep=("environment",))  # the same search re-derived on another CPU keeps its record


# ----------------------------------------------------------------------------------------- the CLI

def eval_n_arg(v: str) -> int:
    """``--eval-n``: a number of held-out cells, ``default`` (the default study's DEFAULT_EVAL_N) or ``all``
    (the SUITE_N cells of the default sample)."""
    n = {"default": DEFAULT_EVAL_N, "all": SUITE_N}.get(str(v).strip().lower())
    if n is None:
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of cells, 'default' or 'all', got {v!r}") from None
    if not 3 <= n <= SUITE_N:
        raise argparse.ArgumentTypeError(f"--eval-n must be between 3 and {SUITE_N} (the default sample), got {n}")
    return n


def cmd_dps(args) -> None:
    config = DPSConfig(space=args.space, task=args.task, budget=args.budget, population=args.population,
                       tournament=args.tournament, mutation=args.mutation, fitness_n=args.fitness_n,
                       fitness_seed=args.fitness_seed, search_seed=args.search_seed, data_dir=args.data_dir)
    print(f"DPS: {config.budget} candidate settings on {config.fitness_n} fitness cells, then the held-out "
          f"evaluation on {args.eval_n} cells (--eval-n; `make bench`'s study uses {DEFAULT_EVAL_N})", flush=True)
    out = run_default(config, Path(args.cache), Path(args.out), eval_n=args.eval_n, workers=args.workers,
                      progress=not args.no_progress, n_resamples=args.bootstrap)
    print(out)


def add_cli(sub, parents) -> None:
    s = sub.add_parser("dps", parents=parents.section, help="Discrete Proxy Search over Eproxy settings (+ its report)")
    s.add_argument("--space", default="nb201")
    s.add_argument("--task", default="cifar10")
    s.add_argument("--budget", type=int, default=200, help="candidate settings to evaluate (default 200)")
    s.add_argument("--population", type=int, default=40)
    s.add_argument("--tournament", type=int, default=10)
    s.add_argument("--mutation", type=float, default=0.2)
    s.add_argument("--fitness-n", type=int, default=20, help="benchmarked architectures of the fitness set")
    s.add_argument("--fitness-seed", type=int, default=0)
    s.add_argument("--search-seed", type=int, default=0)
    s.add_argument("--eval-n", type=eval_n_arg, default=QUICK_EVAL_N,
                   help=f"held-out cells the best setting is evaluated on (a prefix of the default sample): a "
                        f"number, 'default' ({DEFAULT_EVAL_N}, as `make bench`) or 'all' ({SUITE_N}); default "
                        f"{QUICK_EVAL_N}, so that a small search finishes in minutes")
    s.add_argument("--workers", type=int, default=1, help="worker processes for scoring")
    s.set_defaults(fn=cmd_dps)


# ----------------------------------------------------------------------------------------- the study

# The study `make bench` runs (see bench_section): scaled down from the paper's 200 candidates / population 40
# to what a 2-core CPU affords, and stated as such in the report.
DEFAULT_STUDY = DPSConfig(budget=8, population=4, tournament=2)
DEFAULT_EVAL_N = 500
# `proxybench dps`'s default held-out size: a user's search is evaluated in minutes, not the ~15 min (CPU) of the
# default study's 500 cells for a new setting; `--eval-n default` (or 500) evaluates on the default study's cells
QUICK_EVAL_N = 50
SUITE_N = 1000  # the default study's cifar10 sample, from which the evaluation cells come


def _correlation_row(name: str, kind: str, score, truth, proxy, n_resamples: int,
                     seconds: float = float("nan")) -> dict:
    """τ/ρ of ``score`` ranked as the registered ``proxy`` (a name or its record) declares."""
    from proxybench.proxies import get_proxy

    info = get_proxy(proxy) if isinstance(proxy, str) else proxy
    s = metrics.proxy_summary(info, np.asarray(score, float), np.asarray(truth, float), n_resamples=n_resamples)
    return {"proxy": name, "kind": kind, "dir": info.direction, **s, "sec_per_cell": seconds}


def is_default_study(config: DPSConfig, eval_n: int) -> bool:
    """Whether this is the search ``make bench`` runs (its record is the committed reports/dps/)."""
    return replace(config, data_dir=None) == replace(DEFAULT_STUDY, data_dir=None) and eval_n == DEFAULT_EVAL_N


def run_id(config: DPSConfig, eval_n: int) -> str:
    """A short name for a search's settings (its folder under ``<out>/dps-runs/``)."""
    import hashlib

    d = {k: v for k, v in asdict(config).items() if k != "data_dir"}
    digest = hashlib.sha1(json.dumps({**d, "eval_n": eval_n}, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"budget{config.budget}-{digest}"


def run_default(config: DPSConfig, cache_dir: Path, out: Path, eval_n: int = DEFAULT_EVAL_N, workers: int = 1,
                progress: bool = True, n_resamples: int = 1000, search_only: bool = False) -> str:
    """Search (resuming from the cache), evaluate the best setting, the default Eproxy, the training-free
    proxies and the 12-epoch table on held-out cells, write ``reports/dps.md``; returns a short summary."""
    sp = get_space(config.space)
    if eval_n > SUITE_N:
        raise ValueError(f"--eval-n is at most {SUITE_N} (the default sample, whose zero-cost scores are cached)")
    eval_archs = sample_in_draw_order(config.space, config.task, eval_n, config.data_dir)
    suite = default_sample(config.space, config.task, SUITE_N, config.data_dir)
    fit_archs = fitness_archs(config.space, config.task, config.fitness_n, config.fitness_seed, exclude=suite,
                              data_dir=config.data_dir)
    check_disjoint(fit_archs, eval_archs)
    truth = sp.truth(config.task, config.data_dir).set_index("arch")
    if not is_default_study(config, eval_n):
        # another search than the committed default one: its record and report go beside it, never over it
        out = out / "dps-runs" / run_id(config, eval_n)
    index_dir = out / "dps"
    dps_cache = ScoreCache(cache_dir / "dps")
    ev = Evaluator(config, dps_cache, workers=workers, progress=progress)
    try:
        return _run_default(config, cache_dir, out, ev, eval_archs, fit_archs, truth, index_dir, progress,
                            n_resamples, search_only)
    finally:
        ev.close()


def _run_default(config, cache_dir, out, ev, eval_archs, fit_archs, truth, index_dir, progress, n_resamples,
                 search_only) -> str:
    from proxybench.runner import Study, run_study, study_scores

    sp = get_space(config.space)
    workers = ev.workers
    dps_cache = ev.cache
    t0 = time.perf_counter()
    result = search(config, ev, {a: float(truth.at[a, sp.default_truth]) for a in fit_archs}, index_dir, progress)
    search_s = time.perf_counter() - t0
    save_search(result, index_dir)
    best = result.best_setting
    fit_acc = np.array([truth.at[a, sp.default_truth] for a in fit_archs])
    default_fitness = fitness_of(ev.scores(ep.DEFAULT, fit_archs), fit_acc)
    if search_only:
        return f"search done: best fitness {result.best['fitness']:+.3f} ({best.describe()})"

    # held-out evaluation: the best setting here, the default Eproxy and the training-free proxies through the
    # main cache (registered proxies, the default study's settings)
    t1 = time.perf_counter()
    best_loss = ev.losses(best, eval_archs)
    ratios = ev.ratios(eval_archs) if best.alpha != 0 else None
    main = ScoreCache(cache_dir)
    eproxy_study = Study(space=config.space, tasks=(config.task,), proxies=("eproxy",), archs=tuple(eval_archs),
                         seed=config.seed, batch_size=config.batch_size, augment=config.augment,
                         data_dir=config.data_dir)
    zc_study = Study(space=config.space, tasks=(config.task,), proxies=("@training-free",), archs=tuple(eval_archs),
                     seed=config.seed, data_dir=config.data_dir)
    for st in (eproxy_study, zc_study):
        run_study(st, main, executor="processes" if workers > 1 else "inprocess", workers=workers,
                  progress=progress)
    eval_s = time.perf_counter() - t1
    acc = truth.loc[eval_archs, sp.default_truth].to_numpy(float)
    secs = _seconds(dps_cache, best.proxy_name, eval_archs)
    best_score = ep.apply_prior(best_loss, ratios, best.alpha) if ratios is not None else best_loss
    rows = [_correlation_row(f"DPS best (alpha {best.alpha:+g})", "searched", best_score, acc, SEARCHED,
                             n_resamples, seconds=secs)]
    if best.alpha != 0:
        rows.append(_correlation_row("DPS best, alpha = 0", "searched", best_loss, acc, SEARCHED, n_resamples,
                                     seconds=secs))
    df = pd.concat([study_scores(eproxy_study, main), study_scores(zc_study, main)], ignore_index=True)
    from proxybench.proxies import get_proxy

    for name, g in df.groupby("proxy", sort=False):
        info = get_proxy(name)
        g = g.set_index("arch").reindex(eval_archs)
        rows.append(_correlation_row(name, info.family, g["score"].to_numpy(float), acc, info, n_resamples,
                                     float(g["seconds"].mean())))
    # the 12-epoch column is the score of the registered table proxy nb201_12epoch: ranked as it declares
    rows.append(_correlation_row("12-epoch table (test_acc_12)", "reduced-training",
                                 truth.loc[eval_archs, "test_acc_12"].to_numpy(float), acc, "nb201_12epoch",
                                 n_resamples))
    table = pd.DataFrame(rows).sort_values("rho", ascending=False, kind="stable").reset_index(drop=True)
    store.write_csv(index_dir / "heldout.csv", table, HELDOUT_STORE)
    return write_report(out, result, table, best, default_fitness, eval_n=len(eval_archs), search_s=search_s,
                        eval_s=eval_s, data_source=ev.data_source, substitute=ev.substitute,
                        computed=ev.computed)


def _trajectory_figure(result: SearchResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from proxybench.render import save_figure

    h = pd.DataFrame(result.history)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.scatter(h["index"] + 1, h["fitness"], s=12, alpha=0.6, label="candidate")
    ax.step(h["index"] + 1, h["best_so_far"], where="post", color="C3", label="best so far")
    ax.axvline(result.config.population + 0.5, color="grey", ls=":", lw=1, label="end of random initialisation")
    ax.set_xlabel("candidate settings evaluated")
    ax.set_ylabel(f"fitness: Spearman ρ ({len(result.fitness_archs)} cells)")
    ax.set_title(f"DPS on {result.config.space} {result.config.task}")
    ax.legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


@dataclass
class DPSReport:
    """What ``reports/dps.md`` shows of a search and its held-out evaluation; the ``render_*`` functions compute
    nothing."""

    result: SearchResult
    table: pd.DataFrame  # the held-out τ/ρ of every proxy (``_correlation_row``), best ρ first
    best: ep.EproxySetting
    default_fitness: float
    eval_n: int
    search_s: float
    eval_s: float
    data_source: str
    substitute: bool
    computed: int
    out_name: str = "reports"
    figure: str = "dps_trajectory.png"
    env: dict = field(default_factory=dict)

    @property
    def eproxy_seconds(self) -> float:
        """The default Eproxy setting's measured seconds per held-out cell."""
        eprow = self.table[self.table["proxy"] == "eproxy"]
        return float(eprow["sec_per_cell"].iloc[0]) if len(eprow) else float("nan")


def render_search(rep: DPSReport) -> list[str]:
    """The method, the search and the notices of a non-default, quick or random search."""
    c, result = rep.result.config, rep.result
    lines = [
        "# Eproxy and Discrete Proxy Search (DPS)", "",
        "_Generated by `make bench` (section `proxybench.studies.dps`) / `proxybench dps`; every number is computed "
        "from the score caches (`<cache>/dps` for searched settings, the main cache for registered proxies)._", "",
        f"Method: Li et al., ICCV 2023 (see `proxies/eproxy.py` for every implementation decision). Space "
        f"`{c.space}`, task `{c.task}`; ground truth `{get_space(c.space).default_truth}`.", "",
        "## Search", "",
        f"Regularised evolution: **{len(result.history)} candidate settings** (budget {c.budget}), population "
        f"{c.population}, tournament {c.tournament}, mutation rate {c.mutation}, search seed {c.search_seed}. "
        f"Fitness = Spearman ρ of the declared ranking (lower loss = better) on **{len(result.fitness_archs)} "
        f"benchmarked cells** (fitness seed {c.fitness_seed}; drawn outside the {SUITE_N}-cell default sample, "
        f"so disjoint from the evaluation cells, which is checked). Each candidate: 10 SGD steps on "
        f"{c.batch_size} images (`{rep.data_source}`{', ⚠ substitute' if rep.substitute else ''}), init seed "
        f"{c.seed}.",
        "",
    ]
    d, eval_n = DEFAULT_STUDY, rep.eval_n
    if (c.budget, c.population, c.tournament, c.fitness_n, eval_n) != (d.budget, d.population, d.tournament,
                                                                      d.fitness_n, DEFAULT_EVAL_N):
        lines += [f"> **Not the default study.** `make bench` runs budget {d.budget}, population {d.population}, "
                  f"tournament {d.tournament}, {d.fitness_n} fitness cells and {DEFAULT_EVAL_N} held-out cells (the "
                  f"paper: budget 200, population 40, tournament 10); this report: budget {c.budget}, population "
                  f"{c.population}, tournament {c.tournament}, {c.fitness_n} fitness cells, {eval_n} held-out cells. "
                  "Rerunning computes only what the caches lack.", ""]
    if eval_n < DEFAULT_EVAL_N:
        lines += [f"> **Quick held-out evaluation: {eval_n} cells** (`--eval-n`; `proxybench dps` evaluates on "
                  f"{QUICK_EVAL_N} by default, so that a small search finishes in minutes). The intervals below are "
                  f"wide on so few cells: `--eval-n {DEFAULT_EVAL_N}` evaluates on the default study's cells (whose "
                  f"zero-cost scores are cached), `--eval-n all` on all {SUITE_N}.", ""]
    if len(result.history) <= c.population:
        lines += [f"> With {len(result.history)} candidates and a population of {c.population}, the search never left "
                  "its random initialisation: this is a random search.", ""]
    return lines


def render_best(rep: DPSReport) -> list[str]:
    """The trajectory, the best fitness and the best setting beside the default one."""
    b, default = rep.result.best, ep.DEFAULT.to_dict()
    return [f"![trajectory](figures/{rep.figure})", "",
            f"Best fitness **{b['fitness']:+.3f}** (candidate {b['index'] + 1}, setting `{b['hash']}`); the default "
            f"Eproxy setting scores {rep.default_fitness:+.3f} on the same fitness cells.", "",
            "| field | best setting | default |", "|---|---|---|",
            *(f"| {k} | {v} | {default[k]} |" for k, v in rep.best.to_dict().items())]


def _heldout_row(r) -> str:
    from proxybench.render import fmt_ci

    sec = f"{r['sec_per_cell']:.2f}" if np.isfinite(r["sec_per_cell"]) else "—"
    return (f"| {r['proxy']} | {r['kind']} | {r['dir']} | {r['n']} | {r['n_nonfinite']} | "
            f"{fmt_ci(r['tau'], r['tau_lo'], r['tau_hi'])} | {fmt_ci(r['rho'], r['rho_lo'], r['rho_hi'])} | {sec} |")


def render_heldout(rep: DPSReport) -> list[str]:
    """τ/ρ of the best setting, the default Eproxy and the other proxies on the held-out cells."""
    c, eval_n = rep.result.config, rep.eval_n
    return ["", "## Held-out evaluation", "",
            f"**{eval_n} held-out NB201 {c.task} cells**: the first {eval_n} of the default study's seeded "
            f"{SUITE_N}-cell sample (sample seed 0), none in the fitness set. Signed τ/ρ of each proxy's declared "
            "ranking; 95% percentile bootstrap intervals over architectures. Non-finite Eproxy losses (a "
            "diverged training) rank last; s/cell is the mean measured time per cell on this machine.", "",
            "| proxy | kind | dir | n | non-finite | Kendall τ [95% CI] | Spearman ρ [95% CI] | s/cell |",
            "|---|---|---|---|---|---|---|---|", *(_heldout_row(r) for _, r in rep.table.iterrows())]


def render_cost(rep: DPSReport) -> list[str]:
    """The measured cost of the search and of Eproxy, and the provenance."""
    env, name = rep.env, rep.out_name
    # a run that computed nothing (make bench re-rendering from the caches) has no cost to report: its wall time
    # would only make the regenerated page differ from the committed one
    this_run = (f"This run: search {rep.search_s / 60:.1f} min, held-out evaluation {rep.eval_s / 60:.1f} min, "
                f"{rep.computed} (setting, cell) losses computed (the rest came from the cache). On a machine shared "
                "with other jobs these times are wall-clock under contention." if rep.computed else
                "This rendering computed no (setting, cell) loss: every one came from the DPS cache.")
    return ["", "## Cost", "",
            f"Per-cell Eproxy time (default setting, measured on the held-out cells): **{rep.eproxy_seconds:.2f} s** "
            f"(10 forward+backward passes of batch 16 on one CPU thread, plus building the network). {this_run}", "",
            "## Provenance", "",
            f"Code `{env['git_commit']}`, torch {env['torch']}, python {env['python']}, {env['machine']}. Search "
            f"record: `{name}/dps/search.json` (config, fitness cells, best setting), trajectory "
            f"`{name}/dps/trajectory.csv`, held-out table `{name}/dps/heldout.csv`, setting index "
            f"`{name}/dps/settings.json` (cache proxy name → setting).", ""]


def paragraph(rep: DPSReport) -> str:
    """The section's summary for reports/README.md."""
    from proxybench.render import fmt_ci

    top = rep.table.set_index("proxy")
    best_row = top.iloc[[i for i, p in enumerate(top.index) if p.startswith("DPS best")][0]]
    return (f"### Eproxy + DPS\n\nDPS ({len(rep.result.history)} candidate settings, fitness on "
            f"{len(rep.result.fitness_archs)} cells) found a setting with held-out ρ {fmt_ci(best_row['rho'])} on "
            f"{rep.eval_n} NB201 {rep.result.config.task} cells, against "
            f"{fmt_ci(top.loc['eproxy', 'rho']) if 'eproxy' in top.index else 'n/a'} "
            f"for the default Eproxy setting ({rep.eproxy_seconds:.2f} s/cell); details: [dps.md](dps.md).")


def write_report(out: Path, result: SearchResult, table: pd.DataFrame, best: ep.EproxySetting,
                 default_fitness: float, *, eval_n: int, search_s: float, eval_s: float, data_source: str,
                 substitute: bool, computed: int) -> str:
    """``reports/dps.md`` and its trajectory figure; returns the paragraph for reports/README.md."""
    fig = _trajectory_figure(result, out / "figures" / "dps_trajectory.png")
    rep = DPSReport(result=result, table=table, best=best, default_fitness=default_fitness, eval_n=eval_n,
                    search_s=search_s, eval_s=eval_s, data_source=data_source, substitute=substitute,
                    computed=computed, out_name=out.name, figure=fig.name, env=provenance.environment())
    lines = [*render_search(rep), *render_best(rep), *render_heldout(rep), *render_cost(rep)]
    provenance.write_if_changed(out / "dps.md", "\n".join(lines))
    return paragraph(rep)


def _seconds(cache: ScoreCache, proxy: str, archs) -> float:
    df = where(cache.load(), proxy=proxy, arch=set(archs), ok_only=True)
    return float(df["seconds"].mean()) if len(df) else float("nan")


@section("dps", order=50)
def bench_section(cfg: SectionConfig) -> str:
    """The default DPS study (DEFAULT_STUDY, 500 held-out cells): computes only what the caches lack."""
    return run_default(replace(DEFAULT_STUDY, data_dir=cfg.data_dir), cfg.cache, cfg.out,
                       progress=cfg.progress, n_resamples=cfg.bootstrap, workers=1)


__all__ = ["CHOICES", "DEFAULT_EVAL_N", "DEFAULT_STUDY", "QUICK_EVAL_N", "DPSConfig", "Evaluator", "OverlapError",
           "SearchResult", "add_cli", "bench_section", "check_disjoint", "eval_n_arg", "fitness_archs", "fitness_of",
           "mutate", "random_setting", "search"]
