"""Committed results are append-only: trial runs with a temporary cache write only there, a run never rewrites a
cache part, and bad input is one clear line with a non-zero exit."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from proxybench.cache import ScoreCache
from proxybench.cli import OUT_DEFAULT, build_parser, resolve_outputs
from proxybench.runner import Study, run_study

REPO_ROOT = Path(__file__).resolve().parents[2]


def _tree_state() -> tuple[str, str]:
    """`git status` of the checkout and a digest of every file under reports/ (content and mtime)."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO_ROOT,
                            capture_output=True, text=True).stdout
    h = hashlib.sha256()
    for p in sorted((REPO_ROOT / "reports").rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(REPO_ROOT)}:{p.stat().st_mtime_ns}:{p.stat().st_size}".encode())
    return status, h.hexdigest()


def _cli(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "proxybench.cli", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.usefixtures("real_data")
def test_trial_run_report_and_dps_with_a_temporary_cache_leave_the_checkout_as_it_was(tmp_path, cli_env):
    before = _tree_state()
    cache = tmp_path / "trial"
    p = _cli(cli_env, "run", "--proxies", "params,synflow", "--sample", "3", "--cache", cache, "--no-progress")
    assert p.returncode == 0, p.stderr
    p = _cli(cli_env, "report", "--cache", cache, "--bootstrap", "0")
    assert p.returncode == 0, p.stderr
    assert (cache / "report" / "README.md").is_file()  # the report went beside the trial cache
    p = _cli(cli_env, "dps", "--budget", "1", "--population", "1", "--tournament", "1", "--fitness-n", "3",
             "--eval-n", "3", "--cache", cache, "--bootstrap", "0", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert list((cache / "report").rglob("search.json"))  # its search record too
    assert _tree_state() == before


def test_outputs_follow_the_cache_unless_told():
    parser = build_parser()
    args = parser.parse_args(["report", "--cache", "/tmp/elsewhere"])
    resolve_outputs(args)
    assert args.out == str(Path("/tmp/elsewhere") / "report")
    args = parser.parse_args(["bench", "--cache", "/tmp/elsewhere"])
    resolve_outputs(args)
    assert args.readme == "" and args.out.startswith("/tmp/elsewhere")  # the project README is not touched
    args = parser.parse_args(["report"])
    assert args.out == OUT_DEFAULT
    resolve_outputs(args)
    assert Path(args.out) == REPO_ROOT / "reports"
    args = parser.parse_args(["report", "--cache", "/tmp/elsewhere", "--out", "/tmp/mine"])
    resolve_outputs(args)
    assert args.out == "/tmp/mine"


@pytest.mark.usefixtures("real_data")
def test_a_run_adds_parts_and_rewrites_none(tmp_path):
    cache = ScoreCache(tmp_path / "c")
    run_study(Study(proxies=("params",), sample=4), cache, executor="inprocess", chunk_size=2, progress=False)
    first = {p.name: p.stat().st_mtime_ns for p in cache.parts()}
    assert len(first) == 2
    run_study(Study(proxies=("params", "flops"), sample=6), cache, executor="inprocess", chunk_size=2, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in cache.parts()}
    assert {k: after[k] for k in first} == first and len(after) > len(first)


def _one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, and the message names what is wrong."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "error:" in p.stderr, p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)
    return p.stderr


@pytest.mark.usefixtures("real_data")
@pytest.mark.parametrize("argv, needles", [
    (["run", "--sample", "99999", "--proxies", "params"], ["15,625", "--sample all"]),
    (["run", "--proxies", "", "--sample", "2"], ["--proxies names no proxy"]),
    (["run", "--workers", "0", "--sample", "2", "--proxies", "params"], ["--workers", "at least 1"]),
    (["run", "--chunk-size", "0", "--sample", "2", "--proxies", "params"], ["--chunk-size", "at least 1"]),
])
def test_bad_input_is_one_clear_error(tmp_path, cli_env, argv, needles):
    _one_line_error(_cli(cli_env, *argv, "--cache", tmp_path / "c", timeout=120), *needles)
    assert not (tmp_path / "c").exists()


def test_import_nb201_of_a_file_that_is_not_the_benchmark(tmp_path, cli_env):
    bad = tmp_path / "not-the-benchmark.pth"
    bad.write_text("hello, I am a text file\n")
    err = _one_line_error(_cli(cli_env, "import-nb201", bad, "--data-dir", tmp_path, timeout=120),
                          "not a torch/pickle file")
    assert "NAS-Bench-201-v1_1-096897.pth" in err  # where to get the real one


def test_a_rerendered_report_that_differs_only_in_its_stamps_is_not_rewritten(tmp_path):
    from proxybench.provenance import write_if_changed

    p = tmp_path / "r.md"
    assert write_if_changed(p, "rho +0.812 at commit 86a942af196f, 2026-11-23T09:15:31+00:00\n")
    mtime = p.stat().st_mtime_ns
    assert not write_if_changed(p, "rho +0.812 at commit 0123456789ab+dirty, 2026-12-01T10:00:00+00:00\n")
    assert p.stat().st_mtime_ns == mtime and "86a942af196f" in p.read_text()
    assert write_if_changed(p, "rho +0.813 at commit 0123456789ab, 2026-12-01T10:00:00+00:00\n")  # a real change
    assert "+0.813" in p.read_text()
    assert write_if_changed(p, "data in `/work/shared/data`: 3 cells/s, 1/2 of them\n")
    assert not write_if_changed(p, "data in `/home/me/shared/data`: 3 cells/s, 1/2 of them\n")  # another machine
    assert write_if_changed(p, "data in `/home/me/shared/data`: 4 cells/s, 1/2 of them\n")


def test_cache_check_lists_machines_and_duplicate_keys(tmp_path, cli_env):
    from test_cache import row  # tests/bench/test_cache.py

    cache = ScoreCache(tmp_path / "c")
    cache.append([row(score=1.0, cpu="CPU A; AVX512 kernels")])
    cache.append([row(score=1.0 + 1e-6, cpu="CPU B; AVX2 kernels")])
    p = _cli(cli_env, "cache", "check", "--cache", tmp_path / "c", timeout=120)
    assert p.returncode == 0, p.stderr
    assert "CPU A; AVX512 kernels" in p.stdout and "1 key(s) stored more than once" in p.stdout
    assert "1 with differing scores" in p.stdout and "relative 1.0e-06" in p.stdout
    before = sorted(x.name for x in cache.parts())
    p = _cli(cli_env, "cache", "compact", "--cache", tmp_path / "c", timeout=120)  # explicit, and only then
    assert p.returncode == 0 and sorted(x.name for x in cache.parts()) != before and len(cache.parts()) == 1
