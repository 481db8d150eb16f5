"""Crash a CLI run mid-study (shared by the kill/resume tests of every executor)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_until_parts_then_sigkill(cmd: list, env: dict, cache_dir: Path, stderr_file: Path, parts: int = 2,
                                 timeout: float = 60) -> None:
    """Start ``cmd``, wait until ``cache_dir`` holds ``parts`` parquet parts, then SIGKILL it (a crash)."""
    import signal
    import subprocess
    import time

    with open(stderr_file, "w") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + timeout
            while len(list(Path(cache_dir).glob("*.parquet"))) < parts:
                assert proc.poll() is None, f"the run ended before it was killed: {stderr_file.read_text()}"
                assert time.monotonic() < deadline, f"no {parts} cache parts within {timeout:g} s"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
