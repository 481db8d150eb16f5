"""Agreement with the official code: the suite's proxies and their authors' implementations on the same cells.

    proxybench official FAMILY --code DIR [--tasks cifar10,...] [--cells N] [--out reports]

FAMILY is one of the newer proxy families (``az_nas``, ``te_nas``, ``gradsign``, ``swap``, ``vkdnw``); DIR is a
checkout of its official repository (``git clone https://github.com/<repo> DIR && git -C DIR checkout <commit>``:
the repository and the commit the suite's module was read against are printed by ``proxybench official --list``).
The official code is never copied into the suite: each family's adapter (``bench/tools/official_<family>.py``)
imports the official scoring functions from DIR at run time, works around what only stops them running on a CPU
(``.cuda()`` calls, removed torch functions) by patching names at run time, and feeds them the same seeded
network weights and the same batch the suite's proxy sees. Each (task, cell, proxy) gives the suite's value, the
official value and their relative difference |ours - official| / max(|official|, 1e-30).

Results go to ``<out>/official/<family>.json`` (every value, the official repository's commit as read from DIR,
the suite's commit, torch, CPU) and ``<out>/official/<family>.md``; the reports quote them. Nothing else reads
DIR, and the tests never need it (they run the plumbing on a stand-in adapter).

Adapter contract (a module ``proxybench.tools.official_<family>``):

- ``REPO`` ("owner/name"), ``COMMIT`` (40 hex digits: the commit the suite's module follows), ``PROXIES`` (the
  suite's names compared), ``CELLS`` (NB201 arch strings compared by default), ``TASKS`` (default tasks),
  ``HOW`` (one paragraph: what of the official code runs, on what weights and inputs, and what was patched);
- ``load(code: Path) -> object``: imports the official functions from the checkout; raises
  :class:`OfficialCodeError` saying which file is missing and what to do;
- ``compare(official, task: str, arch: str, seed: int) -> list[dict]``: rows ``{"proxy", "ours", "official"}``
  (plus an optional ``"note"``) for that cell.
"""

from __future__ import annotations

import argparse
import importlib
import math
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from proxybench import provenance, store

HELP = "run a newer proxy family's official code beside the suite's on the same cells and batch"
FAMILIES = ("az_nas", "te_nas", "gradsign", "swap", "vkdnw")
OFFICIAL_STORE = store.Kind("official-agreement", 1, "proxybench official")  # <out>/official/<family>.json


class OfficialCodeError(FileNotFoundError):
    """The official checkout lacks what an adapter needs (the message says what and how to get it)."""


def adapter(family: str):
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    return importlib.import_module(f"proxybench.tools.official_{family}")


def require(code: Path, *files: str, repo: str, commit: str) -> None:
    """Raise :class:`OfficialCodeError` unless every path of ``files`` exists under ``code``."""
    missing = [f for f in files if not (code / f).exists()]
    if missing:
        raise OfficialCodeError(
            f"{code} is not a checkout of github.com/{repo}: missing {', '.join(missing)}. Get it with "
            f"`git clone https://github.com/{repo} {code} && git -C {code} checkout {commit}`")


@contextmanager
def importing_from(root: Path, *packages: str, stubs: dict | None = None):
    """``root`` first on sys.path while the block imports the top-level ``packages`` from it (default: every
    top-level module and package of ``root``); afterwards sys.path and sys.modules are as before (the imported
    modules live on only in the caller's hands: an installed package of the same name is shadowed for the
    duration, then restored), and no bytecode is written into the checkout. ``stubs``: modules by name that stand
    in for what the official code imports but does not need here (e.g. torchvision), for the duration only."""
    packages = packages or tuple(p.stem for p in Path(root).iterdir() if p.is_dir() or p.suffix == ".py")
    stubs = stubs or {}

    def official_(name):
        return name.split(".")[0] in packages or name in stubs

    saved_path, saved_bytecode = list(sys.path), sys.dont_write_bytecode
    saved = {n: m for n, m in sys.modules.items() if official_(n)}
    for n in saved:
        del sys.modules[n]
    sys.modules.update(stubs)
    sys.path.insert(0, str(root))
    sys.dont_write_bytecode = True
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
        for n in [n for n in sys.modules if official_(n)]:
            del sys.modules[n]
        sys.modules.update(saved)


def copy_in_order(src, dst, what: str = "parameter tensors") -> None:
    """Copy the suite network's tensors ``src`` into the official network's ``dst`` pairwise, in order (two
    sequences of (name, tensor), e.g. ``named_parameters()``: NB201's two forms name their modules differently but
    register them in the same order); a ValueError, naming both sides, on a count or shape mismatch."""
    import torch

    src, dst = list(src), list(dst)
    if len(src) != len(dst):
        raise ValueError(f"{what}: the suite's network has {len(src)}, the official one {len(dst)}")
    for (n1, t1), (n2, t2) in zip(src, dst, strict=True):
        if t1.shape != t2.shape:
            raise ValueError(f"{what}: the suite's {n1} has shape {tuple(t1.shape)}, the official {n2} "
                             f"{tuple(t2.shape)}")
    with torch.no_grad():
        for (_, t1), (_, t2) in zip(src, dst, strict=True):
            t2.copy_(t1)


def checkout_commit(code: Path) -> str:
    """The commit DIR is checked out at, or "unknown (not a git checkout)"."""
    try:
        out = subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown (not a git checkout)"


def relative(ours: float, official: float) -> float:
    """|ours - official| / max(|official|, 1e-30); 0 when both are the same non-finite value, inf otherwise."""
    if not (math.isfinite(ours) and math.isfinite(official)):
        return 0.0 if (ours == official or (math.isnan(ours) and math.isnan(official))) else math.inf
    return abs(ours - official) / max(abs(official), 1e-30)


def measure(mod, code: Path, tasks: list[str], cells: list[str], seed: int, progress=print) -> dict:
    official = mod.load(code)
    rows = []
    for task in tasks:
        for arch in cells:
            t0 = time.perf_counter()
            got = mod.compare(official, task, arch, seed)
            dt = time.perf_counter() - t0
            for r in got:
                ours, off = float(r["ours"]), float(r["official"])
                rows.append({"task": task, "arch": arch, "proxy": r["proxy"], "ours": ours, "official": off,
                             "relative": relative(ours, off), "note": r.get("note", "")})
            progress(f"  {task} {arch}: {len(got)} value(s), {dt:.1f} s")
    read_at = checkout_commit(code)
    return {"family": mod.__name__.rsplit("official_", 1)[-1], "repo": mod.REPO, "commit_followed": mod.COMMIT,
            "commit_run": read_at, "how": mod.HOW, "seed": seed, "tasks": tasks, "cells": cells,
            "proxies": list(mod.PROXIES), "rows": rows, "environment": provenance.environment()}


def summary(r: dict) -> list[dict]:
    """Per proxy: values compared, how many identical, median and largest relative difference."""
    out = []
    for p in r["proxies"]:
        rel = sorted(x["relative"] for x in r["rows"] if x["proxy"] == p)
        if not rel:
            continue
        rows = [x for x in r["rows"] if x["proxy"] == p]
        same = sum(1 for x in rows if x["ours"] == x["official"])
        one = [x for x in rows if math.isfinite(x["ours"]) != math.isfinite(x["official"])]
        finite = sorted(x["relative"] for x in rows if math.isfinite(x["ours"]) and math.isfinite(x["official"]))
        out.append({"proxy": p, "n": len(rel), "identical": same, "median": rel[len(rel) // 2], "max": rel[-1],
                    "max_finite": finite[-1] if finite else math.nan,
                    "official_only_nonfinite": sum(1 for x in one if not math.isfinite(x["official"])),
                    "ours_only_nonfinite": sum(1 for x in one if not math.isfinite(x["ours"]))})
    return out


def fmt(v: float) -> str:
    return "–" if math.isnan(v) else "inf" if math.isinf(v) else ("0" if v == 0 else f"{v:.1e}")


def markdown(r: dict) -> str:
    env = r["environment"]
    run = r["commit_run"]
    at = (f"at {run[:12]}" + ("" if run == r["commit_followed"] else
                               f" (the suite's module follows {r['commit_followed'][:12]})")
          if not run.startswith("unknown") else f"({run}; the suite's module follows {r['commit_followed'][:12]})")
    L = [f"Measured by `proxybench official {r['family']} --code DIR`: the official code of github.com/{r['repo']} "
         f"{at}, run beside the suite's proxies (commit {env['git_commit']}, torch {env['torch']}, {env['cpu']}) on "
         f"{len(r['cells'])} NB201 cell(s) x {len(r['tasks'])} task(s), seed {r['seed']}.", "", r["how"], "",
         "| proxy | values | identical | median relative difference | largest | largest where both are finite | "
         "non-finite in the official code only | in the suite only |", "|---|---|---|---|---|---|---|---|"]
    L += [f"| {s['proxy']} | {s['n']} | {s['identical']} | {fmt(s['median'])} | {fmt(s['max'])} | "
          f"{fmt(s['max_finite'])} | {s['official_only_nonfinite']} | {s['ours_only_nonfinite']} |" for s in summary(r)]
    L += ["", "Every value:", "", "| task | cell | proxy | suite | official | relative | note |",
          "|---|---|---|---|---|---|---|"]
    L += [f"| {x['task']} | `{x['arch']}` | {x['proxy']} | {x['ours']:.9g} | {x['official']:.9g} | "
          f"{fmt(x['relative'])} | {x['note'] or '–'} |" for x in r["rows"]]
    return "\n".join(L)


def write(r: dict, out: Path) -> Path:
    d = Path(out) / "official"
    d.mkdir(parents=True, exist_ok=True)
    store.write_json(d / f"{r['family']}.json", r, OFFICIAL_STORE)
    store.write_text(d / f"{r['family']}.md", f"# {r['family']}: agreement with the official code\n\n"
                     + markdown(r) + "\n")
    return d / f"{r['family']}.md"


def read(out: Path, family: str) -> dict | None:
    """The stored agreement of ``family`` under ``<out>/official/``, or None when it was never measured."""
    path = Path(out) / "official" / f"{family}.json"
    return store.read_json(path, OFFICIAL_STORE) if path.exists() else None


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("family", nargs="?", choices=FAMILIES, help="the proxy family")
    ap.add_argument("--code", type=Path, help="a checkout of the family's official repository")
    ap.add_argument("--tasks", default=None, help="comma-separated tasks (default: the adapter's)")
    ap.add_argument("--cells", type=int, default=None, help="compare only the first N of the adapter's cells")
    ap.add_argument("--seed", type=int, default=42, help="init and minibatch seed (the suite's default: 42)")
    ap.add_argument("--out", default=str(provenance.REPO_ROOT / "reports"), help="results go to <out>/official/")
    ap.add_argument("--data-dir", default=None, help="benchmark data directory (default: as every subcommand)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: as each worker process of a study runs)")
    ap.add_argument("--list", action="store_true", help="list the families, their repositories and commits")


def cmd(args) -> None:
    if args.list or not args.family:
        for f in FAMILIES:
            m = adapter(f)
            print(f"{f:<10} github.com/{m.REPO} @ {m.COMMIT[:12]}: {', '.join(m.PROXIES)}")
        return
    if args.code is None:
        raise ValueError("--code DIR is required: a checkout of the official repository (see --list)")
    import torch

    torch.set_num_threads(args.threads)
    mod = adapter(args.family)
    tasks = args.tasks.split(",") if args.tasks else list(mod.TASKS)
    cells = list(mod.CELLS)[: args.cells] if args.cells else list(mod.CELLS)
    r = measure(mod, args.code.resolve(), tasks, cells, args.seed)
    path = write(r, Path(args.out))
    print(markdown(r).split("\n\nEvery value:")[0])
    print(f"wrote {path}")


if __name__ == "__main__":
    import sys

    from proxybench.tools import tool_main

    sys.exit(tool_main(sys.argv[1:], __doc__, add_arguments, cmd))
