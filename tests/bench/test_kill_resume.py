"""The command line for real: a run killed with SIGKILL resumes to exactly the full study; archs files,
error messages and the report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from killing import run_until_parts_then_sigkill  # tests/bench/killing.py

from proxybench.cache import ScoreCache
from proxybench.cli import SUITE, build_parser
from proxybench.datasets import nb201
from proxybench.report import write_report
from proxybench.runner import Study, run_study, study_scores

pytestmark = pytest.mark.usefixtures("real_data")

REPO_ROOT = Path(__file__).resolve().parents[2]
SUMMARY_RE = re.compile(r"scores: (\d+) computed, (\d+) already cached, (\d+) non-finite, (\d+) errors")


def cli(*args: str) -> list[str]:
    """`proxybench ARGS` through the module entry point of this checkout."""
    return [sys.executable, "-m", "proxybench.cli", *map(str, args)]


def run_cli(env: dict, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(p: subprocess.CompletedProcess, code: int = 2) -> str:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("proxybench: error: "), p.stderr
    return lines[0]


# ------------------------------------------------------------------------------------- kill and resume

def test_sigkill_mid_run_then_rerun_completes_exactly(tmp_path, cli_env):
    cache_dir = tmp_path / "scores"
    cmd = cli("run", "--task", "cifar10", "--proxies", "params,flops,synflow", "--sample", "60",
              "--chunk-size", "2", "--executor", "inprocess", "--cache", cache_dir, "--no-progress")
    stderr_file = tmp_path / "killed.stderr"
    run_until_parts_then_sigkill(cmd, cli_env, cache_dir, stderr_file)

    # Whatever the kill interrupted, the cache reads: no partial part is ever visible.
    cache = ScoreCache(cache_dir)
    parts = cache.parts()
    assert len(parts) >= 2 and all(p.name.startswith("part-") for p in parts)  # not compacted yet
    before = cache.load()
    k = len(before)
    assert len(pd.read_parquet(cache_dir)) == k
    assert k % 6 == 0 and 12 <= k < 180  # whole chunks of 2 cells x 3 proxies
    assert not before.duplicated(["arch", "proxy"]).any() and (before["status"] == "ok").all()

    done = subprocess.run(cmd, env=cli_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    m = SUMMARY_RE.search(done.stdout)
    assert m, done.stdout
    computed, cached, nonfinite, errors = map(int, m.groups())
    assert (computed, cached, errors) == (180 - k, k, 0), done.stdout
    assert f"{180 - k} computed, {k} already cached" in done.stdout

    final = cache.load()
    assert len(final) == 180 and len(pd.read_parquet(cache_dir)) == 180
    assert final.groupby(["arch", "proxy"]).size().eq(1).all()
    assert final["arch"].nunique() == 60 and set(final["proxy"]) == {"params", "flops", "synflow"}
    assert (final["status"] == "ok").sum() + nonfinite == 180
    assert sorted(final["arch"].unique()) == sorted(Study(sample=60, proxies=("params",)).arch_list())
    # The rows that survived the kill were kept, not recomputed.
    merged = before.merge(final, on=["arch", "proxy"], suffixes=("_before", "_after"))
    assert len(merged) == k
    assert (merged["timestamp_before"] == merged["timestamp_after"]).all()
    assert (merged["score_before"] == merged["score_after"]).all()
    # append-only: the completed run added parts and rewrote none (compaction is `proxybench cache compact`)
    assert set(parts) <= set(cache.parts()) and all(p.name.startswith("part-") for p in cache.parts())


# ------------------------------------------------------------------------------------------ the CLI

def test_archs_file_scores_exactly_those_archs(tmp_path, cli_env):
    archs = [nb201.index_to_arch(i) for i in (7, 1234, 15000)]
    f = tmp_path / "archs.txt"
    f.write_text("# three cells, one per line\n" + f"{archs[0]}\n\n  {archs[1]}  \n{archs[2]}\n")
    cache_dir = tmp_path / "scores"
    p = run_cli(cli_env, "run", "--task", "cifar10", "--archs-file", f, "--proxies", "params,flops",
                "--cache", cache_dir, "--executor", "inprocess", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "6 computed, 0 already cached, 0 non-finite, 0 errors" in p.stdout
    df = ScoreCache(cache_dir).load()
    assert sorted(df["arch"].unique()) == sorted(archs) and len(df) == 6


def test_a_malformed_arch_in_the_file_is_a_one_line_error(tmp_path, cli_env):
    bad = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|conv_5x5~1|skip_connect~2|"
    f = tmp_path / "archs.txt"
    f.write_text(f"# one good, one bad\n{nb201.index_to_arch(3)}\n{bad}\n")
    cache_dir = tmp_path / "scores"
    p = run_cli(cli_env, "run", "--task", "cifar10", "--archs-file", f, "--proxies", "params",
                "--cache", cache_dir, "--executor", "inprocess", "--no-progress")
    line = assert_one_line_error(p)
    assert bad in line
    assert ScoreCache(cache_dir).load().empty


def test_a_missing_archs_file_is_a_one_line_error(tmp_path, cli_env):
    p = run_cli(cli_env, "run", "--archs-file", tmp_path / "nope.txt", "--proxies", "params",
                "--cache", tmp_path / "scores", "--no-progress")
    assert "nope.txt" in assert_one_line_error(p)


def test_an_unknown_proxy_suggests_a_name(tmp_path, cli_env):
    p = run_cli(cli_env, "run", "--task", "cifar10", "--proxies", "params,synflw", "--sample", "2",
                "--cache", tmp_path / "scores", "--no-progress")
    line = assert_one_line_error(p)
    assert "did you mean 'synflow'" in line
    assert not (tmp_path / "scores").exists()


def test_report_writes_readme_table_and_figures(tmp_path, cli_env):
    cache = ScoreCache(tmp_path / "scores")
    proxies = ("params", "flops", "synflow")
    summary = run_study(Study(proxies=proxies, sample=10, sample_seed=3), cache, executor="inprocess",
                        progress=False)
    assert (summary.computed, summary.errors) == (30, 0)
    out = tmp_path / "report"
    p = run_cli(cli_env, "report", "--cache", cache.path, "--out", out, "--bootstrap", "50")
    assert p.returncode == 0, p.stderr
    readme = out / "README.md"
    assert readme.is_file() and f"report: {readme}" in p.stdout
    text = readme.read_text()
    assert "## nb201 · cifar10" in text
    for proxy in proxies:
        row = [ln for ln in text.splitlines() if ln.startswith(f"| [{proxy}](figures/scatter_{proxy}.png) |")]
        assert len(row) == 1, proxy
        assert "| 10 |" in row[0]  # n
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert {f"figures/scatter_{p}.png" for p in proxies} | {"figures/rho_heatmap.png"} <= set(links)
    for link in links:
        png = out / link
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    summary_csv = pd.read_csv(out / "summary.csv")
    assert sorted(summary_csv["proxy"]) == sorted(proxies) and (summary_csv["n"] == 10).all()
    assert not list(out.glob(".*.tmp"))


def test_report_of_an_empty_cache_says_what_to_do(tmp_path, cli_env):
    p = run_cli(cli_env, "report", "--cache", tmp_path / "empty", "--out", tmp_path / "report")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "holds no scores" in p.stderr and "proxybench run" in p.stderr


def test_bench_defaults_to_every_task_and_a_large_sample():
    args = build_parser().parse_args(["bench"])
    assert (args.task, args.sample, args.fn.__name__) == ("all", SUITE, "cmd_bench")


def test_run_defaults_to_cifar10_and_a_sample_of_100():
    args = build_parser().parse_args(["run"])
    assert (args.task, args.sample) == ("cifar10", 100)


def test_report_without_bootstrap_intervals(tmp_path):
    study = Study(proxies=("params",), sample=5)
    cache = ScoreCache(tmp_path / "scores")
    run_study(study, cache, executor="inprocess", progress=False)
    path = write_report(study_scores(study, cache), tmp_path / "report", n_resamples=0)
    assert "| [params](figures/scatter_params.png) |" in path.read_text()


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigkill_of_the_driver_leaves_no_worker_behind(tmp_path, cli_env):
    import os
    import signal
    import time

    cache_dir = tmp_path / "scores"
    cmd = cli("run", "--task", "cifar10", "--proxies", "zico,synflow", "--sample", "40", "--chunk-size", "1",
              "--executor", "processes", "--workers", "2", "--cache", cache_dir, "--no-progress")
    proc = subprocess.Popen(cmd, env=cli_env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list(cache_dir.glob("*.parquet"))) < 1:  # the workers are up and scoring
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no chunk finished within 120 s"
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "workers outlived their SIGKILLed driver"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
