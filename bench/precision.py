"""Measured numerical precision of every proxy: the same scores computed in equivalent ways.

Float32 results differ between machines: other kernels (AVX-512, AVX2, no SIMD; oneDNN's blocking), other
thread counts, other summation orders. A score is a result only to the digits that survive such changes.
This module measures them. For a set of cells it scores every proxy under each ``VARIANT`` below, each in a
fresh process (the dispatch variables must be set before torch loads):

- ``native``: this machine's best kernels, one torch thread (how the suite computes every cached score);
- ``native-2t``: the same with two torch threads (other work splits, other reduction order);
- ``avx2``: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, the kernels of an AVX2-only CPU;
- ``portable``: ``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE``: scalar ATen, SSE4.1
  oneDNN and MKL's portable code path. MKL (torch's BLAS and LAPACK: float64 convolutions, matrix products,
  eigenvalues) chooses its kernels by CPU vendor and model, so an Intel and an AMD machine differ there too;
  this is what moved synflow_bn by 3% on an AVX-512/AMX Xeon, and ``MKL_CBWR=COMPATIBLE`` reproduces it here;
  note that ATen's scalar kernels also draw PyTorch's default initialisation differently in the last bit, so this
  variant perturbs the initial weights too, as a CPU without AVX2 (or another architecture's kernels) would;
- ``float64``: the same network (built in float32 and cast, so the same initial weights) and images in float64,
  for training-free proxies: close to exact arithmetic, so it shows how far float32 is from the number the
  definition asks for;
- ``machine:<name>`` (``--machine``): the native kernels of a real second machine, measured there on the same cells
  and stored beside the reference machine's variants. Emulation does not cover everything: on an Intel Xeon with
  AMX, against the AMD EPYC that wrote the committed scores, gradsign's sign count moved by one sign (2 of 2.2
  million) where every emulated variant agreed, and a one-epoch EcoNAS accuracy by 4 points where they spread 1.6.

Method (written with the results): per (proxy, cell) the **spread** is max − min of the variants' scores.
Two machines whose kernels are among those emulated differ by at most the spread; kernels not emulated here
(AMX, GPUs, other BLAS) can round differently again, so a check allows ``MARGIN`` (2) times the spread, plus
``FLOOR_REL`` (4 float32 ulps, 4.8e-7) of the score for cells whose variants happened to agree. Per proxy the
relative precision is the largest spread/|score| over the cells (its significant digits: -log10 of it), and
the absolute precision the largest spread (for scores that cancel towards 0, where a relative figure means
nothing). Both go to ``reports/precision.json``, beside the regression baseline; ``make regress`` and the
committed-score test judge score changes by them. A proxy whose relative precision is worse than 1e-3 is
ill-conditioned: ``ILL_CONDITIONED`` says why, or its numerics are fixed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from proxybench.provenance import REPO_ROOT

PRECISION_FILE = REPO_ROOT / "reports" / "precision.json"
FORMAT_VERSION = 1
MARGIN = 2.0
FLOOR_REL = 4 * 2.0 ** -23  # 4 float32 ulps of the score: the tolerance of a cell whose variants agreed
ILL = 1e-3  # a relative precision worse than this marks an ill-conditioned proxy
# cells of the committed scores re-scored per (space, task, setting) by the committed-score test and measured
# here: NB101 networks cost 10-40x an NB201 one on a CPU
CELLS_PER_GROUP = {"nb201": 3}
OTHER_SPACES_CELLS = 1


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict = field(default_factory=dict)
    threads: int = 1
    dtype: str = "float32"
    description: str = ""


VARIANTS = (
    Variant("native", {}, 1, "float32", "this CPU's best kernels, 1 torch thread (how the suite scores)"),
    Variant("native-2t", {}, 2, "float32", "the same kernels, 2 torch threads"),
    Variant("avx2", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, 1, "float32",
            "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 (an AVX2-only CPU)"),
    Variant("portable", {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
            1, "float32", "ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE (no vector ATen "
            "kernels, SSE4.1 oneDNN, MKL's portable code path: MKL picks other kernels on Intel and AMD CPUs)"),
    Variant("float64", {}, 1, "float64", "network and images in float64 (training-free proxies only)"),
)
REFERENCE = "native"
MACHINE_PREFIX = "machine:"


def machine_variant(name: str, base: Variant | None = None) -> Variant:
    """Variant ``base`` (default: the native kernels) on this machine, stored as another machine's variant
    ``machine:<name>`` (``machine:<name>/<base>`` for another base) beside those measured where the reference scores
    were: a real second CPU (another vendor, AMX, another BLAS path) rounds in ways the emulated dispatches do not,
    and its scores then widen each cell's measured spread."""
    from proxybench import provenance

    base = base or VARIANTS[0]
    d = provenance.cpu_description()
    suffix = "" if base.name == REFERENCE else f"/{base.name}"
    return Variant(MACHINE_PREFIX + name + suffix, base.env, base.threads, base.dtype,
                   f"{base.description}, on another machine ({d['cpu']}; {', '.join(d['flags'])})")
METHOD = (f"spread = max - min of a (proxy, cell)'s scores over the variants; allowed change = {MARGIN:g} x spread + "
          f"{FLOOR_REL:.2g} x |score|; relative precision = max over cells of spread/|score|; significant digits = "
          f"floor(-log10(relative precision))")

# proxies whose measured relative precision is worse than ILL, and the measured cause (see the variants' scores
# in reports/precision.json); zico was one too, until v2 computed its passes in float64
_SHARED_FLOAT32 = ("float32 rounding of the shared forward+backward pass grows through deep chains of convolutions "
                   "and train-mode BatchNorm: the worst cells are conv chains with few skip connections, and there "
                   "the float64 variant differs most, so it is the float32 value that is off. A float64 pass would "
                   "fix it at a multiple of the pass's cost on a CPU; not done yet (the speed issue decides), so these "
                   "are float32 values of the definition, with the digits stated")
ILL_CONDITIONED: dict[str, str] = {
    "grad_norm": _SHARED_FLOAT32,
    "snip": _SHARED_FLOAT32,
    "fisher": _SHARED_FLOAT32 + "; fisher squares per-channel sums, which doubles the relative error",
    "epe_nas": _SHARED_FLOAT32 + "; epe_nas takes log|corr| of the float32 input-Jacobian correlations",
    "plain": _SHARED_FLOAT32 + "; plain is a sum of signed terms that cancel, so read its absolute precision",
    "grasp": _SHARED_FLOAT32 + "; grasp is a sum of signed terms that cancel, so read its absolute precision",
    "zico": ("with two halves std(g) = |g1 - g2|/2 and some weights' per-half gradients nearly agree, so "
             "float32 gradients leave those terms, the largest of their layer's sum, mostly rounding (native, 2 "
             "threads and AVX2 differ). Its passes in float64 (zico(ctx, float64=True), measured on the golden "
             "cells) make those kernels agree to the last bit, at a multiple of the cost: not switched yet, since it "
             "means rescoring every committed zico score. Even then ZiCo stays sensitive to its initial weights: "
             "ATen's scalar kernels (the portable variant, like a CPU without AVX2) draw PyTorch's default init "
             "differently in the last bit (many weights differ by about one float32 ulp of the init bound), and a "
             "weight whose per-half gradients nearly agree gets a huge mean|g|/std that dominates its layer's sum. "
             "Not fixable within its definition (split_data=2)"),
    **{name: ("it trains (SGD on the task's images for a few epochs): like any perturbation of training, "
              "rounding differences grow from step to step, so the trained accuracy moves by points between "
              "kernels, even between 1 and 2 threads. One score is one draw of a distribution whose width is "
              "the spread shown; its ρ over many cells is what holds, not a cell's value")
       for name in ("econas_c4r2s1e1", "econas_c4r4s0e1", "econas_c4r4s0e5", "econas_c4r4s2e4",
                    "danas_easy5_c4r4s0e2", "danas_rand5_c4r4s0e2")},
    "eproxy": ("it trains (10 SGD steps of the self-supervised regression): rounding differences grow from "
               "step to step, so the final loss moves by up to about 1% between kernels"),
    "synflow_bn": ("computed in float64, yet rounding decides its value: with BatchNorm in train mode on one "
                   "all-ones image the weight gradients are left-overs of cancellations, so the BLAS summation "
                   "order (MKL picks its kernels by CPU vendor: the portable variant) and the thread count move "
                   "it. Not fixable within its definition (torch has no wider float); its ρ on NB201 is near 0"),
}


def cell_key(space: str, task: str, seed: int, batch_size: int, data_source: str, arch: str) -> str:
    """One string per scored setting of a cell (the cache key without proxy and version)."""
    return f"{space}|{task}|{int(seed)}|{int(batch_size)}|{data_source}|{arch}"


# ------------------------------------------------------------------------------------------ which cells

def golden_jobs(proxies=None, data_dir=None) -> list:
    """One job per task of the golden regression study (all its cells, every proxy)."""
    from proxybench import regress
    from proxybench.cache import ScoreCache
    from proxybench.runner import plan

    study = regress.golden_study(proxies, data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        jobs, _ = plan(study, ScoreCache(tmp), chunk_size=10 ** 9)
    return jobs


def committed_sample(df, cells_per_group: dict[str, int], default_cells: int = 1) -> list[tuple[tuple, list]]:
    """The committed cells the committed-score test re-scores: per (space, task, seed, batch, images) the
    first cells in a fixed hash order among those that hold every proxy of the group (so each proxy is
    checked; stable as the cache grows unless a new complete cell hashes lower), with the proxies committed
    for each. Returns ``[(group, [(arch, proxies)...])]``."""
    import hashlib

    out = []
    for (space, task, seed, bs, src), g in df.groupby(["space", "task", "seed", "batch_size", "data_source"]):
        n = cells_per_group.get(space, default_cells)
        per_arch = g.groupby("arch")["proxy"].nunique()
        complete = per_arch.index[per_arch == g["proxy"].nunique()]
        archs = sorted(complete if len(complete) else per_arch.index,
                       key=lambda a: hashlib.sha1(a.encode()).hexdigest())[:n]
        items = [(a, sorted(set(g.loc[g["arch"] == a, "proxy"]))) for a in archs]
        out.append(((space, task, int(seed), int(bs), src), items))
    return out


def committed_jobs(df, cells_per_group, default_cells=1, only=None) -> list:
    """The jobs of ``committed_sample``; ``only``: keep these proxies of each sampled cell (the cells are chosen
    from all of ``df``, so a partial measurement covers the cells the committed-score test samples)."""
    from proxybench.runner import Job

    jobs = []
    for (space, task, seed, bs, src), items in committed_sample(df, cells_per_group, default_cells):
        items = [(a, [n for n in p if only is None or n in only]) for a, p in items]
        items = [(a, p) for a, p in items if p]
        if items:
            jobs.append(Job(space, task, seed, bs or 64, "+noaug" not in src, None, "cpu",
                            tuple((a, tuple(p)) for a, p in items), "precision", threads=1))
    return jobs


def current_committed(df):
    """The committed rows the committed-score test re-scores: registered proxies at their current version, ok."""
    from proxybench.proxies import get_proxy, list_proxies

    registered = set(list_proxies())
    df = df[df["proxy"].isin(registered) & (df["status"] == "ok")]
    return df[df["proxy_version"] == df["proxy"].map(lambda p: get_proxy(p).version)]


# --------------------------------------------------------------------------------------------- measuring

def _worker(spec_path: str, out_path: str) -> None:
    """Runs in a fresh process whose environment selects the kernels: scores the jobs, writes rows as JSON."""
    import torch

    from proxybench.proxies import TRAINING_FREE, get_proxy
    from proxybench.runner import Job, score_job

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(int(spec["threads"]))
    rows = []
    for j in spec["jobs"]:
        items = tuple((a, tuple(p)) for a, p in j.pop("items"))
        if spec["dtype"] != "float32":  # float64 only for the training-free families (the others train in float32)
            items = tuple((a, tuple(n for n in p if get_proxy(n).family in TRAINING_FREE)) for a, p in items)
            items = tuple((a, p) for a, p in items if p)
            if not items:
                continue
        job = Job(**{**j, "items": items, "threads": int(spec["threads"]), "dtype": spec["dtype"]})
        for r in score_job(job):
            rows.append({k: r[k] for k in ("space", "task", "arch", "proxy", "proxy_version", "seed", "batch_size",
                                           "data_source", "score", "status")})
    Path(out_path).write_text(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                                          "threads": torch.get_num_threads(), "rows": rows}))


def _job_dict(job) -> dict:
    d = asdict(job)
    d["items"] = [list(x) for x in job.items]
    return d


def _split(jobs: list, parts: int) -> list[list]:
    """``jobs`` cut into at most ``parts`` lists of about as many cells (one cell per job piece, round robin)."""
    from dataclasses import replace

    pieces = [replace(j, items=(item,)) for j in jobs for item in j.items]
    return [p for p in (pieces[i::parts] for i in range(parts)) if p]


def measure(jobs: list, variants=VARIANTS, parallel: int = 2, progress: bool = True) -> dict:
    """Score ``jobs`` under every variant (``parallel`` processes at a time; fewer variants than processes share
    the cells of a variant among them). Returns ``{variant: {"capability", "threads", "rows"}}``."""
    results: dict = {}
    variants = list(variants)
    per_variant = max(1, parallel // max(1, len(variants)))
    with tempfile.TemporaryDirectory(prefix="proxybench-precision-") as tmp:
        running: list = []
        queue = [(v, i, part) for v in variants for i, part in enumerate(_split(jobs, per_variant))]
        while queue or running:
            while queue and len(running) < parallel:
                v, i, part = queue.pop(0)
                stem = re.sub(r"[^A-Za-z0-9_.-]", "_", v.name)  # machine:NAME/avx2 -> a file name
                spec = Path(tmp, f"{stem}.{i}.spec.json")
                spec.write_text(json.dumps({"threads": v.threads, "dtype": v.dtype,
                                            "jobs": [_job_dict(j) for j in part]}))
                out = Path(tmp, f"{stem}.{i}.out.json")
                env = {**os.environ, **v.env}
                for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR"):
                    if k not in v.env:
                        env.pop(k, None)  # native means native, whatever the caller's shell set
                proc = subprocess.Popen([sys.executable, "-m", "proxybench.precision", "_worker", str(spec), str(out)],
                                        env=env, cwd=REPO_ROOT)
                running.append((v, proc, out, time.perf_counter()))
                if progress:
                    print(f"precision: variant {v.name} started", file=sys.stderr)
            time.sleep(0.5)
            for item in list(running):
                v, proc, out, t0 = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                if proc.returncode != 0:
                    for _, p, _, _ in running:
                        p.kill()
                    raise RuntimeError(f"precision variant {v.name} failed (exit {proc.returncode})")
                got = json.loads(out.read_text())
                if v.name in results:  # another piece of the same variant's cells
                    got["rows"] = results[v.name]["rows"] + got["rows"]
                results[v.name] = got
                if progress:
                    print(f"precision: variant {v.name} done in {time.perf_counter() - t0:.0f} s "
                          f"(ATen capability {results[v.name]['capability']})", file=sys.stderr)
    return results


# -------------------------------------------------------------------------------------------- summarising

def per_cell(results: dict) -> dict:
    """``{proxy: {cell_key: {"version", "ref", "spread", "scores": {variant: score or None}}}}``."""
    table: dict = {}
    for vname, res in results.items():
        for r in res["rows"]:
            key = cell_key(r["space"], r["task"], r["seed"], r["batch_size"], r["data_source"], r["arch"])
            entry = table.setdefault(r["proxy"], {}).setdefault(key, {"version": r["proxy_version"], "scores": {}})
            entry["scores"][vname] = r["score"] if r["status"] == "ok" else None
    for cells in table.values():
        for e in cells.values():
            e.update(_spread(e))
    return table


def _spread(e: dict) -> dict:
    """``ref`` (the native score) and ``spread`` (max - min over the variants) of one cell's ``scores``."""
    scores = e["scores"]
    vals = [v for v in scores.values() if v is not None and math.isfinite(v)]
    ref = scores.get(REFERENCE)
    if len(vals) == len(scores) and vals:
        return {"ref": ref, "spread": max(vals) - min(vals)}
    # non-finite in some variant: the same in every one is agreement, else there is no precision at all
    same = len({str(v) for v in scores.values()}) == 1
    return {"ref": ref, "spread": 0.0 if same else math.inf}


def per_proxy(cells: dict) -> dict:
    """A proxy's precision from its cells: the worst relative and absolute spread, and the median relative."""
    rel, spreads, scales = [], [], []
    version = None
    for e in cells.values():
        version = e["version"]
        ref = e["ref"]
        if ref is None or not math.isfinite(ref):
            if e["spread"] == math.inf:
                rel.append(math.inf)
            continue
        spreads.append(e["spread"])
        scales.append(abs(ref))
        if ref != 0:
            rel.append(e["spread"] / abs(ref))
        elif e["spread"] > 0:
            rel.append(math.inf)
    if not rel:
        return {"version": version, "n_cells": len(cells), "rtol": None, "rtol_median": None, "atol": None,
                "digits": None}
    worst = max(rel)
    return {"worst_variant": _worst_variant(cells), "version": version, "n_cells": len(cells), "rtol": worst,
            "rtol_median": float(np.median(rel)),
            "atol": max(spreads) if spreads else None, "median_abs_score": float(np.median(scales)) if scales else None,
            "atol_rel_to_median": (max(spreads) / float(np.median(scales))) if spreads and np.median(scales) else None,
            "digits": digits(worst)}


def _worst_variant(cells: dict) -> str | None:
    """The variant farthest from the reference over the proxy's cells (relative to the reference score)."""
    best, name = 0.0, None
    for e in cells.values():
        ref = e.get("ref")
        if ref is None or not math.isfinite(ref) or ref == 0:
            continue
        for v, s in e["scores"].items():
            if v != REFERENCE and s is not None and math.isfinite(s) and abs(s - ref) / abs(ref) > best:
                best, name = abs(s - ref) / abs(ref), v
    return name


def digits(rtol: float | None) -> int | None:
    """Significant decimal digits that survive a relative change of ``rtol`` (15 for an exact match)."""
    if rtol is None or not math.isfinite(rtol):
        return None
    return 15 if rtol <= 1e-15 else max(0, int(math.floor(-math.log10(rtol))))


def tolerance(spread: float, score: float) -> float:
    """How far a score of a cell may move on another machine: ``MARGIN`` x its measured spread, at least
    ``FLOOR_REL`` of the score."""
    return MARGIN * spread + FLOOR_REL * abs(score)


def within(old: float | None, new: float | None, spread: float) -> bool:
    """Whether ``new`` equals ``old`` to the cell's measured precision (non-finite must stay the same)."""
    finite = [v is not None and math.isfinite(v) for v in (old, new)]
    if not all(finite):  # a missing or non-finite score must stay exactly so (None and NaN count as missing)
        return not any(finite) and (str(old) == str(new) or old is None or new is None
                                    or (math.isnan(old) and math.isnan(new)))
    return abs(new - old) <= tolerance(spread, max(abs(old), abs(new)))


# ----------------------------------------------------------------------------------------- the stored file

def load(path: str | os.PathLike = PRECISION_FILE) -> dict:
    """The stored precision (``{}`` when none was measured)."""
    p = Path(path)
    if not p.is_file():
        return {}
    doc = json.loads(p.read_text())
    if doc.get("format") != FORMAT_VERSION:
        raise ValueError(f"{p} has precision format {doc.get('format')}, this proxybench reads {FORMAT_VERSION}: "
                         f"remeasure it with `make precision`")
    return doc


def merge(doc: dict, results: dict, label: str) -> dict:
    """The stored document with the scores measured now added to the same (proxy, cell) entries (a variant
    measured again replaces its score); a proxy measured at another version starts afresh."""
    from proxybench import provenance

    doc = json.loads(json.dumps(doc)) if doc else {}
    doc["format"] = FORMAT_VERSION
    doc["method"] = METHOD
    known = doc.get("variants", {})
    for v in VARIANTS:
        if v.name in results:
            known[v.name] = {"description": v.description, "capability": results[v.name].get("capability"),
                             "threads": results[v.name].get("threads"), "env": v.env, "dtype": v.dtype}
    for name in results:
        if name.startswith(MACHINE_PREFIX):
            machine, _, base = name[len(MACHINE_PREFIX):].partition("/")
            v = machine_variant(machine, next((b for b in VARIANTS if b.name == base), None))
            known[name] = {"description": v.description, "capability": results[name].get("capability"),
                           "threads": results[name].get("threads"), "env": v.env, "dtype": v.dtype}
    order = [v.name for v in VARIANTS] + sorted(k for k in known if k.startswith(MACHINE_PREFIX))
    doc["variants"] = {k: known[k] for k in order if k in known}
    doc.setdefault("measured", {})[label] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": provenance.cpu_description(),
        "git_commit": provenance.git_commit(), "torch": provenance.environment()["torch"],
        "variants": sorted(results)}
    proxies = doc.setdefault("proxies", {})
    for name, cells in per_cell(results).items():
        version = next(iter(cells.values()))["version"]
        entry = proxies.get(name)
        if entry is None or entry.get("version") != version:
            entry = {"version": version, "cells": {}}
        for key, c in cells.items():
            stored = entry["cells"].setdefault(key, {"scores": {}})
            stored["scores"].update(c["scores"])
        for stored in entry["cells"].values():
            e = _spread({"scores": dict(stored["scores"])})
            stored.update(spread=e["spread"], ref=e["ref"])
        entry.update(per_proxy({k: {**v, "version": version} for k, v in entry["cells"].items()}))
        entry["ill_conditioned"] = ILL_CONDITIONED.get(name)
        proxies[name] = dict(sorted(entry.items()))
    doc["proxies"] = dict(sorted(proxies.items()))
    return doc


def write(doc: dict, path: str | os.PathLike = PRECISION_FILE) -> Path:
    """Write atomically; unchanged content leaves the file untouched. (Its schema version is its own ``format``
    key, which ``load`` checks; the document predates ``proxybench.store``'s marker.)"""
    from proxybench import store

    p = Path(path)
    text = json.dumps(doc, indent=1, sort_keys=True, default=_json_default) + "\n"
    if p.is_file() and p.read_text() == text:
        return p
    return store.atomic_write(p, text)


def _json_default(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    raise TypeError(type(v))


def spread_of(doc: dict, proxy: str, key: str, version: int) -> float | None:
    """The measured spread of one (proxy, cell), or None when that cell was not measured at this version, or only
    by other machines' variants (without the reference machine's native score the spread says nothing of how far
    the committed score may move: the proxy's worst relative precision applies instead)."""
    entry = doc.get("proxies", {}).get(proxy)
    if not entry or entry.get("version") != version:
        return None
    cell = entry.get("cells", {}).get(key)
    if cell is None or REFERENCE not in cell.get("scores", {REFERENCE: None}):
        return None
    return float(cell["spread"])


def table(doc: dict, proxies=None) -> str:
    """Markdown: per proxy its significant digits, relative and absolute precision (``proxies``: only these)."""
    L = ["| proxy | version | cells | significant digits | relative precision (worst / median) | worst spread ÷ "
         "median score | farthest variant | note |", "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else ("∞" if not math.isfinite(float(v)) else f"{float(v):.1e}")  # noqa: E731
    for name, e in doc.get("proxies", {}).items():
        if proxies is not None and name not in proxies:
            continue
        rt, rm = e.get("rtol"), e.get("rtol_median")
        rt = None if rt is None else float(rt)
        note = e.get("ill_conditioned") or ("" if rt is None or rt <= ILL else "**ill-conditioned** (worse than 1e-3)")
        dig = "–" if e.get("digits") is None else e["digits"]
        note = ("**ill-conditioned**: " + note) if rt is not None and rt > ILL and e.get("ill_conditioned") else note
        L.append(f"| {name} | {e.get('version')} | {e.get('n_cells')} | {dig} | {fmt(rt)} / {fmt(rm)} | "
                 f"{fmt(e.get('atol_rel_to_median'))} | {e.get('worst_variant') or '–'} | {note} |")
    if len(L) == 2:
        L.append("| – | – | – | – | – | – | – | not measured: run `make precision` |")
    return "\n".join(L)


def report_paragraph(doc: dict) -> str:
    """How the precision below was measured, for the reports."""
    if not doc:
        return "No precision was measured (`make precision` writes `reports/precision.json`)."
    runs = "; ".join(f"{what}: {m['machine']['cpu']} ({m['machine']['aten_capability']} kernels), commit "
                     f"{m['git_commit']}, torch {m['torch']}" for what, m in sorted(doc.get("measured", {}).items()))
    variants = "; ".join(f"`{k}` {v['description']}" for k, v in doc.get("variants", {}).items())
    return (f"Each proxy's numerical precision, measured by `make precision` (`bench/precision.py`) on the golden "
            f"regression cells and on a sample of the committed scores, each scored under equivalent computations: "
            f"{variants}. Method: {doc.get('method', METHOD)}. Measured on {runs}. `make regress` and the "
            f"committed-score test allow each score to move by this much and no more.")


def machines_line(df) -> str:
    """Which machines computed the scores of a table, with counts."""
    cpu = df["cpu"] if "cpu" in df else None
    if cpu is None:
        return ", ".join(f"{n} on {d}" for d, n in df["device"].value_counts().items())
    counts = df.groupby(["device", "cpu", "dtype"], dropna=False).size().sort_values(ascending=False)
    return "; ".join(f"{n:,} scores on {d} (CPU {c}, {t})" for (d, c, t), n in counts.items())


def pooling_line(df, doc: dict) -> str:
    """Whether scores from several machines were pooled in one table, and on what grounds."""
    devices = sorted(set(df["device"]))
    cpus = sorted(set(df["cpu"])) if "cpu" in df else []
    gpu = [d for d in devices if d.startswith("cuda")]
    if len(devices) == 1 and len(cpus) <= 1:
        return "every score of these tables comes from one machine: nothing pooled."
    worst = [e.get("rtol") for n, e in doc.get("proxies", {}).items() if n in set(df["proxy"]) and e.get("rtol")]
    text = (f"scores of {len(cpus)} CPU description(s) are pooled: CPU kernels change a score only within its "
            f"measured precision (above)")
    if gpu:
        text += (f"; ⚠ scores from {', '.join(gpu)} are pooled with CPU scores although no GPU variant was "
                 f"measured here: their agreement is assumed, not shown")
    return text + ("." if not worst else f" (worst relative precision of these proxies {max(map(float, worst)):.1e}).")


# ----------------------------------------------------------------------------------------------- the CLI

def layout_check(doc: dict, proxies, layout: str, data_dir=None, cells: int | None = None) -> list[dict]:
    """What a switch of ``proxies``' memory layout would do to their scores: the golden NB201 cells scored here, in
    this process, with the proxies' records set to ``layout``, against the measured variants of the same cells in
    ``doc``. Per proxy: cells, bit-identical to the native score, ``within`` its per-cell measured precision,
    median and largest relative change against the native score next to the median and largest relative spread,
    and the median relative distance to the float64 variant of the new and of the native scores. The decision a
    version bump rests on (registry: a layout is part of a proxy's numbers); nothing is written."""
    from dataclasses import replace

    from proxybench.proxies import registry
    from proxybench.runner import score_job

    saved = {n: registry._REGISTRY[n] for n in proxies}
    rows = []
    try:
        for n in proxies:
            registry._REGISTRY[n] = replace(saved[n], layout=layout)
        for job in golden_jobs(list(proxies), data_dir):
            if job.space != "nb201":
                continue
            items = job.items[:cells] if cells else job.items
            rows += score_job(replace(job, items=items, threads=1))
    finally:
        registry._REGISTRY.update(saved)
    per: dict = {}
    for r in rows:
        key = cell_key(r["space"], r["task"], r["seed"], r["batch_size"], r["data_source"], r["arch"])
        e = doc.get("proxies", {}).get(r["proxy"], {}).get("cells", {}).get(key)
        if e is None or r["status"] != "ok":
            continue
        native, f64 = e["scores"].get(REFERENCE), e["scores"].get("float64")
        if native is None or not math.isfinite(native) or native == 0 or not math.isfinite(r["score"]):
            continue
        d = per.setdefault(r["proxy"], {"change": [], "spread": [], "new_f64": [], "native_f64": [], "within": 0,
                                        "identical": 0})
        d["change"].append(abs(r["score"] - native) / abs(native))
        d["spread"].append(e["spread"] / abs(native))
        d["within"] += within(native, r["score"], e["spread"])
        d["identical"] += r["score"] == native
        if f64 is not None and math.isfinite(f64) and f64 != 0:
            d["new_f64"].append(abs(r["score"] - f64) / abs(f64))
            d["native_f64"].append(abs(native - f64) / abs(f64))
    med = lambda v: float(np.median(v)) if v else math.nan  # noqa: E731
    return [{"proxy": n, "cells": len(d["change"]), "identical": d["identical"], "within": d["within"],
             "change_median": med(d["change"]), "change_max": max(d["change"]),
             "spread_median": med(d["spread"]), "spread_max": max(d["spread"]),
             "new_to_float64_median": med(d["new_f64"]), "native_to_float64_median": med(d["native_f64"])}
            for n, d in sorted(per.items())]


def layout_table(rows: list[dict], layout: str) -> str:
    head = (f"| proxy | cells | bit-identical | within precision | change median (max) | spread median (max) | "
            f"to float64: {layout} | to float64: native |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['proxy']} | {r['cells']} | {r['identical']} | {r['within']} | "
                     f"{r['change_median']:.1e} ({r['change_max']:.1e}) | {r['spread_median']:.1e} "
                     f"({r['spread_max']:.1e}) | {r['new_to_float64_median']:.1e} | "
                     f"{r['native_to_float64_median']:.1e} |")
    return "\n".join(lines)


def run(args) -> None:
    from proxybench.cache import ScoreCache
    from proxybench.proxies import resolve_proxies

    proxies = resolve_proxies(args.proxies) if args.proxies else None
    if args.layout:
        if not proxies:
            raise SystemExit("precision --layout: name the proxies whose layout would change (--proxies), e.g. a "
                             "share group: --proxies grad_norm,snip,plain,grasp,fisher,jacob_cov,epe_nas,nwot")
        t0 = time.perf_counter()
        rows = layout_check(load(args.out), proxies, args.layout, args.data_dir, args.cells)
        print(layout_table(rows, args.layout))
        print(f"\nthe golden NB201 cells of {', '.join(proxies)} in layout {args.layout!r}, against {args.out}'s "
              f"variants, in {time.perf_counter() - t0:.0f} s (nothing written)")
        return
    jobs = []
    if args.what in ("golden", "all"):
        jobs += golden_jobs(proxies, args.data_dir)
    if args.what in ("committed", "all"):
        df = current_committed(ScoreCache(args.cache).load())
        jobs += committed_jobs(df, CELLS_PER_GROUP, OTHER_SPACES_CELLS, only=set(proxies) if proxies else None)
    variants = [v for v in VARIANTS if not args.variants or v.name in args.variants.split(",")]
    if args.machine:  # this machine's kernels as another machine's variants (see machine_variant): native by default
        variants = [machine_variant(args.machine, v) for v in (variants if args.variants else VARIANTS[:1])]
    t0 = time.perf_counter()
    results = measure(jobs, variants, parallel=args.parallel, progress=not args.no_progress)
    doc = merge(load(args.out), results, args.what + (" " + ",".join(v.name for v in variants) if args.machine else ""))
    write(doc, args.out)
    print(table(doc))
    print(f"\nprecision: {sum(len(j.items) for j in jobs)} cells x {len(variants)} variants in "
          f"{time.perf_counter() - t0:.0f} s; written {args.out}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", default="all", choices=["golden", "committed", "all"],
                   help="the golden regression cells, a sample of the committed scores, or both")
    p.add_argument("--proxies", default=None, help="only these proxies (their entries are replaced)")
    p.add_argument("--variants", default=None, help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS))
    p.add_argument("--parallel", type=int, default=2, help="processes at once (a variant each, or pieces of one)")
    p.add_argument("--machine", default=None, metavar="NAME",
                   help="measure this machine's native kernels only, stored as the variant machine:NAME beside the "
                        "variants measured on the machine that wrote the scores (a real second CPU)")
    p.add_argument("--cache", default=str(REPO_ROOT / "reports" / "scores"))
    p.add_argument("--out", default=str(PRECISION_FILE))
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--layout", default=None, metavar="NAME",
                   help="instead of measuring: score the golden NB201 cells of --proxies in this memory layout "
                        "(proxies.registry.LAYOUTS) here and compare them with the stored variants (nothing written)")
    p.add_argument("--cells", type=int, default=None, help="with --layout: the first N golden cells per task")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_worker":
        _worker(sys.argv[2], sys.argv[3])
    else:
        ap = argparse.ArgumentParser(prog="python -m proxybench.precision")
        ap.add_argument("--data-dir", default=None)
        add_arguments(ap)
        run(ap.parse_args())
