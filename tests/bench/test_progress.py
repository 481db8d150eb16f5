"""Progress: tqdm on a terminal, a few plain lines (no carriage returns) in a log."""

from __future__ import annotations

import io

from proxybench import progress as P


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_line_every_10_percent_or_30_seconds_not_a_redraw_per_step():
    out, clock = io.StringIO(), Clock()
    bar = P.LineProgress(total=1000, desc="nb201 cifar10", unit="cell", stream=out, clock=clock)
    for _ in range(1000):
        clock.t += 0.1  # 100 s in all: ten 10 %-steps, each 10 s apart
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 9 <= len(lines) <= 12
    assert lines[0].startswith("nb201 cifar10: 100/1000 cell (10%), 10.00 cell/s, elapsed 0:10, ETA 1:30")
    assert lines[-1].startswith("nb201 cifar10: done, 1000/1000 cell (100%)")


def test_a_slow_loop_reports_every_30_seconds_and_a_fast_one_only_its_end():
    out, clock = io.StringIO(), Clock()
    bar = P.LineProgress(total=10_000, unit="cell", stream=out, clock=clock)
    for _ in range(5):
        clock.t += 31
        bar.update(1)  # far from 10 %: the time rule alone
    assert len(out.getvalue().splitlines()) == 5 and "s/cell" in out.getvalue()
    fast, clock2 = io.StringIO(), Clock()
    for _ in P.LineProgress(range(50), stream=fast, clock=clock2):
        clock2.t += 0.01  # 10 %-steps closer than MIN_INTERVAL_S print nothing
    assert len(fast.getvalue().splitlines()) == 1 and "done, 50/50" in fast.getvalue()
    quiet = io.StringIO()
    bar = P.LineProgress(total=5, stream=quiet, leave=False, clock=Clock())
    bar.update(5)
    bar.close()
    assert quiet.getvalue() == ""  # leave=False and nothing written before: as tqdm, it leaves no trace


def test_progress_is_tqdm_on_a_terminal_and_lines_otherwise():
    from tqdm.auto import tqdm

    assert isinstance(P.progress(range(3), stream=Tty()), tqdm)
    assert isinstance(P.progress(range(3), disable=True), tqdm)
    log = P.progress(total=4, desc="x", stream=io.StringIO(), dynamic_ncols=True)  # tqdm-only kwargs are ignored
    assert isinstance(log, P.LineProgress)
    with log as bar:
        bar.update(2)
        bar.set_postfix(best="+0.500", computed=3)
        bar.update(2)
    assert log.stream.getvalue().rstrip().endswith("[best=+0.500, computed=3]")
    assert list(P.progress([1, 2, 3], stream=io.StringIO())) == [1, 2, 3]


def test_bench_and_datasets_use_no_tqdm_but_through_bench_progress():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    users = [p.relative_to(root).as_posix() for d in ("bench", "datasets") for p in (root / d).rglob("*.py")
             if "tqdm" in p.read_text()]
    assert users == ["bench/progress.py"]
