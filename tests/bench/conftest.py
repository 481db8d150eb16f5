"""Shared fixtures of the bench tests: the real data directory (skip when absent) and an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxybench.datasets import files

DATA_DIR = Path(files.REPO_ROOT).parent / "shared" / "data"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def derived_cache_dir(tmp_path_factory) -> Path:
    """One $PROXYBENCH_CACHE_DIR for the session: derived files (parquet truth, checksum memo) are built
    once and shared with the subprocesses, and nothing is written into the checkout."""
    return tmp_path_factory.mktemp("proxybench-derived")


@pytest.fixture(scope="module", autouse=True)
def _isolated_derived_cache(derived_cache_dir):
    # Module scope: in place before the module-scoped fixtures that score studies.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(files.ENV_CACHE_DIR, str(derived_cache_dir))
        yield


@pytest.fixture
def real_data() -> Path:
    """The real benchmark data beside the checkout; the test is skipped when it is absent."""
    if not (DATA_DIR / "nb201").is_dir():
        pytest.skip(f"real benchmark data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture
def cli_env(derived_cache_dir) -> dict:
    """Environment of a `python -m proxybench.cli` subprocess: the default data directory (no $PROXYBENCH_DATA),
    derived files in the session's temporary cache, the checkout importable, one torch thread."""
    env = {k: v for k, v in os.environ.items() if k != files.ENV_DATA_DIR}
    env[files.ENV_CACHE_DIR] = str(derived_cache_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # see _one_torch_thread
    return env

