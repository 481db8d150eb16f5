"""Progress bars on a terminal, plain periodic lines in logs.

``progress(iterable, desc=..., unit=...)`` (or ``progress(total=n, ...)`` with ``.update(k)``) is tqdm when
stderr is a terminal; otherwise (a log file, a pipe, CI) it writes one plain line every ``every_pct`` percent or
every ``every_s`` seconds, with the count, rate and ETA, instead of tqdm's carriage-return redraws (thousands of
lines in a log). Every progress bar of ``bench/`` goes through it; ``datasets/`` takes it as an argument.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

__all__ = ["LineProgress", "progress"]

MIN_INTERVAL_S = 5.0  # never two lines closer than this (but the last one): a fast loop prints no 10 %-steps


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
             unit: str = "it", disable: bool = False, leave: bool = True, every_pct: float = 10.0,
             every_s: float = 30.0, stream=None, **tqdm_kwargs):
    """A progress bar over ``iterable`` (or of ``total`` steps, advanced with ``.update(n)``).

    On a terminal (``stream``, default stderr, is a TTY) or when ``disable``: ``tqdm.auto.tqdm`` with these
    arguments (``tqdm_kwargs`` too, e.g. ``dynamic_ncols``). Otherwise a :class:`LineProgress`, which has the
    same ``update`` / ``set_postfix`` / ``set_description`` / ``close`` and context-manager interface."""
    stream = sys.stderr if stream is None else stream
    if disable or _is_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave,
                    **({"file": stream} if stream is not sys.stderr else {}), **tqdm_kwargs)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, leave=leave, every_pct=every_pct,
                        every_s=every_s, stream=stream)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LineProgress:
    """Plain-line progress for logs: a line when the count crosses the next ``every_pct`` percent (at most one
    per :data:`MIN_INTERVAL_S`) or ``every_s`` seconds after the last line, and a last line on close when any
    line was written or ``leave`` is set. A line: ``desc: 120/1600 cell (8%), 2.31 cell/s, elapsed 0:52,
    ETA 10:41 [postfix]``."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
                 unit: str = "it", leave: bool = True, every_pct: float = 10.0, every_s: float = 30.0,
                 stream=None, clock=time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit, self.leave = iterable, total, desc, unit, leave
        self.every_pct, self.every_s = every_pct, every_s
        self.stream = sys.stderr if stream is None else stream
        self._clock = clock
        self.n = 0
        self.postfix = ""
        self.start = self._last = clock()
        self._next_pct = every_pct
        self._printed = False
        self._closed = False

    # tqdm's interface, the parts bench uses
    def __iter__(self) -> Iterator:
        try:
            for x in self.iterable:
                yield x
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(dict(ordered_dict) if ordered_dict else {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self._clock()
        since = now - self._last
        due = since >= self.every_s
        if self.total:
            pct = 100.0 * self.n / self.total
            if pct >= self._next_pct and since >= MIN_INTERVAL_S and self.n < self.total:
                due = True
            if due:
                self._next_pct = (int(pct // self.every_pct) + 1) * self.every_pct
        if due and not self._closed:
            self._write(now)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._printed or self.leave and self.n:
            self._write(self._clock(), done=True)

    def line(self, now: float | None = None, done: bool = False) -> str:
        """The line that would be written now."""
        now = self._clock() if now is None else now
        elapsed = max(now - self.start, 0.0)
        rate = self.n / elapsed if elapsed > 0 else 0.0
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        if self.total:
            count += f" ({100.0 * self.n / self.total:.0f}%)"
        speed = (f"{rate:.2f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit}") if rate > 0 else "–"
        parts = [count, speed, f"elapsed {_clock(elapsed)}"]
        if done:  # closed: finished, or stopped early (an error, an interrupt, a break)
            parts[0] = ("done, " if not self.total or self.n >= self.total else "stopped at ") + parts[0]
        elif self.total and rate > 0:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        text = f"{self.desc}: " if self.desc else ""
        return text + ", ".join(parts) + (f" [{self.postfix}]" if self.postfix else "")

    def _write(self, now: float, done: bool = False) -> None:
        print(self.line(now, done), file=self.stream, flush=True)
        self._last = now
        self._printed = True
