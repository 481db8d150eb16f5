"""The Ray executor on a real local Ray instance (2 CPUs): the same scores as the local executors, a worker
killed mid-study, a driver killed mid-study and resumed, devices and GPU requests."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import ray  # a dev dependency (make setup): CI runs these tests on a real local instance
from killing import run_until_parts_then_sigkill  # tests/bench/killing.py

from proxybench.cache import ScoreCache
from proxybench.cli import build_parser
from proxybench.runner import Job, Study, resolve_device, run_study, score_job

pytestmark = pytest.mark.usefixtures("real_data")

REPO_ROOT = Path(__file__).resolve().parents[2]
MARK = "PROXYBENCH_TEST_RAY_SESSION"  # in the environment of this module's Ray workers, and no others


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance with 2 CPUs for the module, started the way `--executor ray` starts one."""
    from proxybench.executors import RayExecutor

    if ray.is_initialized():
        ray.shutdown()
    token = uuid.uuid4().hex
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MARK, token)  # the raylet and its workers inherit the environment of ray.init
        mp.setenv("OMP_NUM_THREADS", "1")
        RayExecutor(workers=2).connect()
        try:
            yield token, ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


def _scores(cache: ScoreCache) -> dict:
    df = cache.load()
    return {(a, p): s for a, p, s in zip(df["arch"], df["proxy"], df["score"], strict=True)}


def test_every_executor_gives_identical_scores(ray_session, tmp_path):
    study = Study(proxies=("params", "synflow"), sample=4, sample_seed=5)
    scores = {}
    for kind in ("inprocess", "processes", "ray"):
        cache = ScoreCache(tmp_path / kind)
        s = run_study(study, cache, executor=kind, workers=2, chunk_size=1, progress=False)
        assert (s.computed, s.errors, s.retried) == (8, 0, 0), kind
        df = cache.load()
        assert (df["device"] == "cpu").all() and not df.duplicated(["arch", "proxy"]).any()
        scores[kind] = _scores(cache)
    assert len(scores["inprocess"]) == 8
    assert scores["processes"] == scores["inprocess"]
    assert scores["ray"] == scores["inprocess"]  # bit for bit


def _our_ray_workers(token: str, title: bytes) -> list[int]:
    """Pids of this module's Ray processes whose title (Ray sets it to ray::<task>) starts with ``title``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "cmdline").read_bytes().startswith(title) and f"{MARK}={token}".encode() in (
                    d / "environ").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def test_a_worker_killed_mid_study_loses_nothing(ray_session, tmp_path):
    token, _ = ray_session
    killed = []

    def kill_one_running_chunk():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pids = _our_ray_workers(token, b"ray::")  # then watch only their titles: a scan of /proc is slow
            for _ in range(500):
                for pid in pids:
                    try:
                        running = Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::score_job")
                    except OSError:
                        continue
                    if running:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
                time.sleep(0.001)

    study = Study(proxies=("params", "synflow"), sample=8, sample_seed=11)
    cache = ScoreCache(tmp_path / "scores")
    watcher = threading.Thread(target=kill_one_running_chunk, daemon=True)
    watcher.start()
    s = run_study(study, cache, executor="ray", chunk_size=1, progress=False)
    watcher.join(timeout=5)
    assert len(killed) == 1, "no Ray worker was seen running a chunk"
    assert s.retried == 1  # the chunk of the killed worker, resubmitted by the driver
    assert (s.computed, s.errors) == (16, 0)
    df = cache.load()
    assert len(df) == 16 and df.groupby(["arch", "proxy"]).size().eq(1).all()
    assert sorted(df["arch"].unique()) == sorted(study.arch_list()) and (df["status"] == "ok").all()


def test_a_killed_ray_driver_resumes(ray_session, tmp_path, cli_env):
    _, address = ray_session
    cache_dir = tmp_path / "scores"
    cmd = [sys.executable, "-m", "proxybench.cli", "run", "--task", "cifar10", "--proxies", "params,synflow",
           "--sample", "10", "--sample-seed", "3", "--chunk-size", "1", "--executor", "ray", "--address", address,
           "--cache", str(cache_dir), "--no-progress"]
    run_until_parts_then_sigkill(cmd, cli_env, cache_dir, tmp_path / "killed.stderr", timeout=90)
    before = ScoreCache(cache_dir).load()
    k = len(before)
    assert k % 2 == 0 and 4 <= k < 20 and not before.duplicated(["arch", "proxy"]).any()

    # the rerun (here in-process, on the same cluster: a second CLI start would only add time)
    study = Study(proxies=("params", "synflow"), sample=10, sample_seed=3)
    s = run_study(study, ScoreCache(cache_dir), executor="ray", chunk_size=1, progress=False)
    assert (s.computed, s.cached, s.errors) == (20 - k, k, 0)
    final = ScoreCache(cache_dir).load()
    assert len(final) == 20 and final.groupby(["arch", "proxy"]).size().eq(1).all()
    assert sorted(final["arch"].unique()) == sorted(study.arch_list())
    kept = before.merge(final, on=["arch", "proxy"], suffixes=("_before", "_after"))
    assert (kept["timestamp_before"] == kept["timestamp_after"]).all()  # not recomputed


def test_gpu_requests_are_checked_against_the_cluster(ray_session):
    from proxybench.executors import RayExecutor

    job = Job("nb201", "cifar10", 42, 64, True, None, "cuda", (("x", ("params",)),), "test")
    if ray.cluster_resources().get("GPU", 0) == 0:
        with pytest.raises(ValueError, match="has 0 GPUs"):
            list(RayExecutor(gpus_per_task=0.25).map(score_job, [job]))
    with pytest.raises(ValueError, match="--device cuda"):
        list(RayExecutor(gpus_per_task=0.5).map(score_job, [replace(job, device="cpu")]))
    import torch

    if not torch.cuda.is_available():  # the worker's own error comes back as itself, not retried
        with pytest.raises(ValueError, match="sees no CUDA device"):
            list(RayExecutor(gpus_per_task=0).map(score_job, [job]))


def test_device_option():
    args = build_parser().parse_args(["run", "--executor", "ray", "--address", "auto", "--device", "auto",
                                      "--gpus-per-task", "0.25"])
    assert (args.executor, args.address, args.device, args.gpus_per_task) == ("ray", "auto", "auto", 0.25)
    assert build_parser().parse_args(["run"]).device == "cpu"
    with pytest.raises(ValueError, match="--device must be"):
        Study(proxies=("params",), device="gpu")
    assert resolve_device("cpu").type == "cpu"
    import torch

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            resolve_device("cuda")


def test_scaling_benchmark_runs_and_renders(ray_session):
    from proxybench.tools import scaling

    study = Study(proxies=("params",), sample=3, sample_seed=2)
    r = scaling.run(study, chunk_size=1, configs=(("inprocess", 1), ("ray", 2)), progress=False)
    assert r["identical_scores"] and [x["executor"] for x in r["results"]] == ["inprocess", "ray"]
    assert all(x["cells"] == 3 and x["scores"] == 3 and x["wall_seconds"] > 0 for x in r["results"])
    assert r["results"][0]["speedup"] == 1.0
    md = scaling.markdown(r)
    assert "| ray | 2 |" in md and "Ray on 2 CPUs" in md and "identical, bit for bit" in md
    assert r["ray_startup_seconds"] is None and ray.is_initialized()  # the session's instance: reused, not stopped
