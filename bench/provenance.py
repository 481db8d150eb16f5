"""Where a number came from: code commit, library versions, machine."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The checkout's commit (``+dirty`` when tracked files differ from it), or 'unknown'."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "bench",
                                "proxies", "datasets"], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def cpu_flags() -> tuple[str, ...]:
    """The vector instruction sets the CPU reports that decide which kernels run (AVX2, AVX-512, AMX)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return tuple(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile",
                                         "amx_bf16") if f in flags)
    except OSError:
        pass
    return ()


def cpu_description() -> dict:
    """Where a CPU number came from: model, instruction sets, and the kernels torch dispatches to here."""
    import torch

    return {"cpu": cpu_model(), "flags": list(cpu_flags()), "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default (best)"),
            "torch_threads": torch.get_num_threads()}


def cpu_label() -> str:
    """The cache's ``cpu`` column, e.g. ``AMD EPYC; AVX512 kernels`` (``; oneDNN max AVX2`` when capped)."""
    d = cpu_description()
    label = f"{d['cpu']}; {d['aten_capability']} kernels"
    if "ONEDNN_MAX_CPU_ISA" in os.environ:
        label += f"; oneDNN max {os.environ['ONEDNN_MAX_CPU_ISA']}"
    return label


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


@lru_cache(maxsize=1)
def environment() -> dict:
    import torch

    return {
        "proxybench": version("proxybench"), "torch": torch.__version__, "python": platform.python_version(),
        "numpy": version("numpy"), "scipy": version("scipy"), "pandas": version("pandas"),
        "machine": f"{platform.machine()} {platform.system()}, {torch.get_num_threads()} torch threads",
        "cpu": cpu_label(), "cpu_flags": ",".join(cpu_flags()),
        "git_commit": git_commit(),
    }


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` to ``path`` atomically, unless the file already says the same: identical, or different
    only in its provenance stamps (commit hashes, timestamps, absolute paths: ``proxybench.store.unstamped``). A
    regenerated report whose numbers did not change leaves the committed file as it was (and says which commit
    last changed it). True if written. (``proxybench.store.write_text``.)"""
    from proxybench import store

    return store.write_text(path, text)
