"""Scaling benchmark of the executors: one study with 1 and 2 local worker processes and with Ray on 2 CPUs.

    python -m proxybench.tools.scaling [--sample 40] [--proxies @training-free] [--chunk-size 2] [--out reports]

Each configuration scores the same study (NB201, seeded sample, seed 42) from an empty temporary cache,
so all of them compute every score; the wall time covers the whole ``run_study`` call, worker start-up
included (Ray's instance start-up is measured apart: a cluster pays it once, not per study). Reported:
speed-ups over 1 worker, and the per-cell overhead, i.e. worker-seconds per cell spent outside the proxies'
own timed work (start-up, building networks, moving chunks, idle workers), for each executor and for Ray
over local processes. The scores of every configuration are compared, bit for bit. Results go to
``<out>/scaling.json``, ``<out>/scaling.md`` and the README's scaling block.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from proxybench import provenance, store
from proxybench.cache import ScoreCache
from proxybench.runner import Study, run_study
from proxybench.tools import tool_main, write_results

BEGIN_END = ("<!-- scaling:begin -->", "<!-- scaling:end -->")
CONFIGS = (("processes", 1), ("processes", 2), ("ray", 2))
TARGET_SPEEDUP = 1.7
SCALING_STORE = store.Kind("scaling", 1, "make scaling")  # <out>/scaling.json


def _scores(cache: ScoreCache) -> dict:
    df = cache.load()
    return {(a, p): s for a, p, s in zip(df["arch"], df["proxy"], df["score"], strict=True)}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def run(study: Study, chunk_size: int = 2, repeats: int = 1, configs=CONFIGS, progress: bool = True) -> dict:
    """Time ``study`` under each (executor, workers) configuration; the best wall time of ``repeats`` runs."""
    ray_startup, connected = None, False
    rows, reference, identical = [], None, True
    load_before = os.getloadavg()
    for kind, workers in configs:
        best = None
        for _ in range(repeats):
            if kind == "ray" and not connected:
                import ray

                from proxybench.executors import RayExecutor

                started_here = not ray.is_initialized()  # else: a running instance, not ours to time or stop
                t0 = time.perf_counter()
                RayExecutor(workers).connect()
                connected = True
                ray_startup = time.perf_counter() - t0 if started_here else None
            with tempfile.TemporaryDirectory(prefix="proxybench-scaling-") as d:
                cache = ScoreCache(Path(d) / "scores")
                t0 = time.perf_counter()
                s = run_study(study, cache, executor=kind, workers=workers, chunk_size=chunk_size, progress=progress)
                wall = time.perf_counter() - t0
                df = cache.load()
                scores = _scores(cache)
            if s.errors:
                raise RuntimeError(f"{kind} x{workers}: {s.errors} scoring errors, e.g. {s.error_examples[:1]}")
            reference = reference if reference is not None else scores
            identical &= _same(scores, reference)
            if best is None or wall < best["wall_seconds"]:
                best = {"executor": kind, "workers": workers, "wall_seconds": wall, "scores": len(df),
                        "cells": int(df["arch"].nunique()), "proxy_seconds": float(df["seconds"].sum())}
        rows.append(best)
    if ray_startup is not None:
        import ray

        ray.shutdown()  # the instance this benchmark started
    base = rows[0]["wall_seconds"]
    for r in rows:
        r["speedup"] = base / r["wall_seconds"]
        r["efficiency"] = r["speedup"] / r["workers"]
        r["overhead_per_cell_s"] = (r["wall_seconds"] * r["workers"] - r["proxy_seconds"]) / r["cells"]
    return {
        "study": {"space": study.space, "tasks": list(study.tasks), "proxies": list(study.proxies),
                  "sample": study.sample, "sample_seed": study.sample_seed, "seed": study.seed,
                  "batch_size": study.batch_size, "chunk_size": chunk_size, "repeats": repeats},
        "results": rows, "identical_scores": bool(identical), "ray_startup_seconds": ray_startup,
        "cores": os.cpu_count(), "load_before": list(load_before), "load_after": list(os.getloadavg()),
        "environment": {**provenance.environment(), "ray": provenance.version("ray"), "host": platform.node()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def markdown(r: dict) -> str:
    st, env, res = r["study"], r["environment"], r["results"]
    n, base = res[0]["cells"], res[0]["wall_seconds"]
    L = [f"Measured by `make scaling` (`python -m proxybench.tools.scaling`) on {n} seeded NB201 cells "
         f"({', '.join(st['tasks'])}, "
         f"sample seed {st['sample_seed']}, seed {st['seed']}), {len(st['proxies'])} proxies "
         f"({', '.join(st['proxies'])}), chunks of {st['chunk_size']} cells, best of {st['repeats']} run(s) each, "
         f"from an empty cache; {r['cores']} cores, load average {r['load_before'][0]:.2f} before and "
         f"{r['load_after'][0]:.2f} after; torch {env['torch']}, Ray {env['ray']}, commit {env['git_commit']}, "
         f"{r['date'][:10]}.", ""]
    if r["load_before"][0] > 0.5 * r["cores"]:
        L += [f"⚠ The machine was busy when this ran (load {r['load_before'][0]:.1f} on {r['cores']} cores): the "
              "speed-ups understate what an idle machine gives.", ""]
    L += ["| executor | workers | wall s | cells/s | speed-up over 1 worker | efficiency | overhead per cell |",
          "|---|---|---|---|---|---|---|"]
    for x in res:
        L.append(f"| {x['executor']} | {x['workers']} | {x['wall_seconds']:.1f} | {x['cells'] / x['wall_seconds']:.2f} "
                 f"| {x['speedup']:.2f}× | {x['efficiency']:.0%} | {x['overhead_per_cell_s'] * 1000:.0f} ms |")
    L += ["", "Overhead per cell: worker-seconds per cell outside the proxies' own timed work "
          "(wall × workers − Σ proxy seconds, ÷ cells): start-up, building networks, moving chunks, idle workers."]
    two = next((x for x in res if x["executor"] == "processes" and x["workers"] == 2), None)
    rayr = next((x for x in res if x["executor"] == "ray"), None)
    if two:
        ok = two["speedup"] >= TARGET_SPEEDUP
        L += ["", f"2 local workers: **{two['speedup']:.2f}×** over 1 (target ≥ {TARGET_SPEEDUP}× on 2 cores: "
              f"{'**met**' if ok else '**not met**'})."]
    if rayr:
        line = f"Ray on {rayr['workers']} CPUs: **{rayr['speedup']:.2f}×** over 1 local worker"
        if two:
            extra = (rayr["wall_seconds"] - two["wall_seconds"]) * rayr["workers"] / rayr["cells"]
            line += (f"; worker time per cell, Ray minus {two['workers']} local processes: {extra * 1000:+.0f} ms "
                     "(the per-cell overhead of the Ray path)")
        if r["ray_startup_seconds"] is not None:
            with_start = base / (rayr["wall_seconds"] + r["ray_startup_seconds"])
            line += (f". Starting the local Ray instance (which also starts its idle worker processes) took "
                     f"{r['ray_startup_seconds']:.1f} s, once per driver and not in the wall time above (a running "
                     f"cluster does not pay it); counting it, the speed-up is {with_start:.2f}×")
        L += ["", line + "."]
    L += ["", "Scores of every configuration: " + ("identical, bit for bit." if r["identical_scores"]
                                                   else "**NOT identical** (a bug: please report it).")]
    return "\n".join(L)


HELP = "speed-ups of 1 and 2 local workers and Ray on one study (reports/scaling.md)"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--task", default="cifar10")
    ap.add_argument("--proxies", default="@training-free", help="names or wildcards, comma-separated")
    ap.add_argument("--sample", type=int, default=40, help="cells of the study")
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="each wall time is the best of this many runs")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(provenance.REPO_ROOT / "reports"))
    ap.add_argument("--readme", default=None,
                    help="README whose marked block to update (default: the repository's, only when --out is the "
                         "repository's reports/; '' to skip)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="re-render scaling.md and the README from scaling.json")


def cmd(args) -> None:
    def measure():
        study = Study(tasks=(args.task,), proxies=tuple(args.proxies.split(",")), sample=args.sample,
                      sample_seed=args.sample_seed, data_dir=args.data_dir)
        return run(study, args.chunk_size, args.repeats, progress=not args.no_progress)

    write_results(args, "scaling", "Scaling of the executors", SCALING_STORE, measure, markdown, BEGIN_END)


def main(argv=None) -> int:  # `python -m proxybench.tools.scaling` = `proxybench scaling`
    return tool_main(argv, __doc__, add_arguments, cmd)


if __name__ == "__main__":
    raise SystemExit(main())
