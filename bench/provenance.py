"""Where a number came from: code commit, library versions, machine."""

from __future__ import annotations

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
        "git_commit": git_commit(),
    }
