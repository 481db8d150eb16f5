"""The score cache: a directory of parquet parts, one row per computed score, with its provenance.

Each flush writes a new part atomically (a hidden temporary file renamed into place), so a process
killed at any moment leaves only complete parts: it loses at most the work in flight, and a rerun
computes exactly what is missing. ``pandas.read_parquet(DIR)`` reads the whole cache.

The cache is append-only: a run adds parts and never rewrites one. Merging parts (``compact``) and dropping
rows of retired proxy versions (``prune_stale``) are explicit commands (``proxybench cache compact|prune``),
never side effects of a run, so committed parts stay as they were committed.

Schema 2 added ``builder_version`` to the key (the space's network-builder version: a builder change must not
mix old and new scores) and ``cpu`` (the CPU model and the kernels torch dispatched to). Parts of schema 1
are read as they are, with builder version 1 (every builder of that time) and ``cpu`` "unrecorded".
Two rows of one key (the same score computed twice, or caches merged) resolve deterministically, whatever
the clocks said: a finished score before a non-finite one before an error, then a clean commit before a
dirty one, then the smaller score; ``duplicates()`` lists every such key and whether its scores differed.

This module owns the row contract: ``row(...)`` builds the one row every writer appends (the runner, DPS, the
latency measurements), with its provenance columns filled in; ``where(df, ...)`` is the one filter of cached rows
(``proxybench.runner.select`` builds a study's from it). Rows whose value is a measurement of this machine rather than a
reproducible score (the latency study's timings) carry the run index in ``data_source``
(``measurement_source``/``measurement_runs``); no other code reads that encoding.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from proxybench import store

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
KEY_COLUMNS = ["space", "task", "arch", "proxy", "proxy_version", "seed", "batch_size", "data_source", "init",
               "builder_version"]
COLUMNS = KEY_COLUMNS + [
    "score", "status", "error", "seconds", "shared_seconds", "substitute", "device", "cpu", "dtype", "torch_version",
    "proxybench_version", "git_commit", "timestamp", "schema_version",
]
UNRECORDED_CPU = "unrecorded (schema 1)"
_V1_DEFAULTS = {"builder_version": 1, "cpu": UNRECORDED_CPU}
# schema 3: ``seconds`` of a share group's member is its own work plus an equal part of the group's shared work on
# the cell, ``shared_seconds`` that whole shared work (0 for a proxy of no group); before, the first member of a
# cell paid for all of it (others ~0): unrecorded, NaN
_V2_DEFAULTS = {"shared_seconds": float("nan")}
_STATUS_RANK = {"ok": 0, "nonfinite": 1, "error": 2}
_TYPES = {
    "space": pa.string(), "task": pa.string(), "arch": pa.string(), "proxy": pa.string(),
    "proxy_version": pa.int64(), "seed": pa.int64(), "batch_size": pa.int64(), "data_source": pa.string(),
    "init": pa.string(), "builder_version": pa.int64(), "cpu": pa.string(), "score": pa.float64(),
    "status": pa.string(), "error": pa.string(),
    "seconds": pa.float64(), "shared_seconds": pa.float64(), "substitute": pa.bool_(), "device": pa.string(),
    "dtype": pa.string(),
    "torch_version": pa.string(), "proxybench_version": pa.string(), "git_commit": pa.string(),
    "timestamp": pa.string(), "schema_version": pa.int64(),
}
SCHEMA = pa.schema([(c, _TYPES[c]) for c in COLUMNS])
# the store marker of a part; the schema version ``ScoreCache`` checks is its own ``proxybench_schema`` metadata
SCORE_CACHE = store.Kind("score-cache", SCHEMA_VERSION, "proxybench run")
STAMP_COLUMNS = ("timestamp", "schema_version")  # filled by ``ScoreCache.append``


def _builder_version(space: str) -> int:
    """The registered space's network-builder version (1 for a space that is not registered here)."""
    from proxybench.datasets import SPACES

    sp = SPACES.get(space)
    return int(getattr(sp, "builder_version", 1)) if sp is not None else 1


class CacheError(store.StoreError):
    """The cache cannot be read as this version of the suite writes it."""


def row(*, space: str, task: str, arch: str, proxy: str, proxy_version: int, seed: int, init: str, score: float,
        seconds: float, shared_seconds: float = 0.0, batch_size: int = 0, data_source: str = "none",
        substitute: bool = False, status: str | None = None, error: str = "", device: str = "cpu",
        dtype: str = "float32", git_commit: str | None = None, cpu: str | None = None,
        builder_version: int | None = None) -> dict:
    """One score row: every column of ``COLUMNS`` but the ``STAMP_COLUMNS`` that ``ScoreCache.append`` adds.

    ``status`` defaults to "error" with an ``error``, else "ok" for a finite score and "nonfinite" otherwise.
    Provenance left out is this process's: ``git_commit`` (pass the driver's from a worker), ``cpu``
    (``provenance.cpu_label``), torch and proxybench versions, and the space's ``builder_version``."""
    import math

    import torch

    from proxybench import provenance

    if status is None:
        status = "error" if error else ("ok" if math.isfinite(score) else "nonfinite")
    return {
        "space": space, "task": task, "arch": arch, "proxy": proxy, "proxy_version": proxy_version, "seed": seed,
        "batch_size": batch_size, "data_source": data_source, "init": init,
        "builder_version": builder_version if builder_version is not None else _builder_version(space),
        "score": score, "status": status, "error": error, "seconds": seconds,
        "shared_seconds": shared_seconds, "substitute": substitute,
        "device": device, "cpu": cpu if cpu is not None else provenance.cpu_label(), "dtype": dtype,
        "torch_version": torch.__version__, "proxybench_version": provenance.version("proxybench"),
        "git_commit": git_commit if git_commit is not None else provenance.git_commit(),
    }


def where(df: pd.DataFrame, *, settings: set[tuple] | None = None, ok_only: bool = False, **columns) -> pd.DataFrame:
    """The rows of ``df`` whose columns match: ``column=value`` (equal) or ``column={values}`` (a set, list or
    tuple: one of them); None matches anything. ``settings``: the (task, proxy, proxy_version, batch_size,
    data_source) a row must have (a row of a (task, proxy) not in it is dropped). ``ok_only`` drops error rows.
    Row order and columns are kept (an empty result still has every column)."""
    mask = np.ones(len(df), dtype=bool)
    for col, want in columns.items():
        if want is None:
            continue
        hit = df[col].isin(list(want)) if isinstance(want, (set, frozenset, list, tuple)) else df[col] == want
        mask &= hit.to_numpy(dtype=bool)
    if ok_only:
        mask &= (df["status"] != "error").to_numpy(dtype=bool)
    df = df[mask]
    if settings is not None:
        key = zip(df["task"], df["proxy"], df["proxy_version"], df["batch_size"], df["data_source"], strict=True)
        df = df[np.fromiter((k in settings for k in key), dtype=bool, count=len(df))]  # df[[]] would drop columns
    return df


# Measurement rows. A measurement (a timing of this machine) is kept as a score row whose ``data_source`` names
# the input it was measured on and the index of the independent measurement run: ``"<input>;run=<k>"``. The runs
# of one cell are separate keys, so each is cached and resumed on its own.
MEASUREMENT_RUN = ";run="


def measurement_source(run: int, measured_on: str = "zeros") -> str:
    """The ``data_source`` of run ``run`` of a measurement on ``measured_on`` (latency: an all-zeros input)."""
    return f"{measured_on}{MEASUREMENT_RUN}{int(run)}"


def measurement_runs(data_source: pd.Series) -> pd.Series:
    """The run index of each measurement row's ``data_source`` (``<NA>`` for a row that is not one)."""
    return data_source.str.extract(rf"{re.escape(MEASUREMENT_RUN)}(\d+)$", expand=False).astype("Int64")


# per cache directory, the last ``ScoreCache.load`` of this process: (listing signature, frame, duplicates)
_LOADED: dict[Path, tuple[tuple, pd.DataFrame, pd.DataFrame]] = {}


def _signature(parts: list[Path]) -> tuple:
    """What identifies a cache directory's content: each part's name, size, modification time and inode (a part
    is written once, atomically, under a new name; one replaced in place changes its inode or mtime)."""
    sig = []
    for p in parts:
        try:
            st = p.stat()
        except FileNotFoundError:  # removed by a concurrent compaction
            continue
        sig.append((p.name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(sig)


class ScoreCache:
    """Parquet score cache at ``path`` (a directory; created on first write)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._duplicates = pd.DataFrame()
        if self.path.exists() and not self.path.is_dir():
            raise CacheError(f"cache path {self.path} is a file; the cache is a directory of parquet parts")

    def parts(self) -> list[Path]:
        # merged parts ("scores-*") sort after chunk parts ("part-*"), so a concurrent reader that lists
        # both during a compaction still sees every row
        return sorted(self.path.glob("*.parquet")) if self.path.is_dir() else []

    def load(self) -> pd.DataFrame:
        """Every cached row (the newest row of each key), with columns ``COLUMNS``.

        A process that loads an unchanged cache again (``make bench``: every study and section) gets a copy of
        the frame it read last time: the parts are immutable, and any write, compaction or prune changes the
        directory's listing (names, sizes, modification times, inodes), which is what the memo is keyed on."""
        parts = self.parts()
        sig = _signature(parts)
        memo = _LOADED.get(self.path.resolve())
        if memo is not None and memo[0] == sig:
            self._duplicates = memo[2].copy()
            return memo[1].copy()
        df = self._read(parts)
        _LOADED[self.path.resolve()] = (sig, df, self._duplicates)
        return df.copy()

    def _read(self, parts: list[Path]) -> pd.DataFrame:
        frames = []
        for part in parts:
            try:
                table = pq.read_table(part)
            except FileNotFoundError:
                continue  # removed by a concurrent compaction, whose merged part holds its rows
            except Exception as e:
                raise CacheError(f"unreadable cache part {part} ({type(e).__name__}: {e}); it was not written "
                                 f"by a completed flush of this suite: move it away and rerun") from None
            frames.append(self._check(table, part).to_pandas())
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=SCHEMA.field(c).type.to_pandas_dtype()) for c in COLUMNS})
        df = pd.concat(frames, ignore_index=True)
        return self._resolve(df)

    def _resolve(self, df: pd.DataFrame) -> pd.DataFrame:
        """One row per key, chosen by content alone (see the module docstring); remembers the duplicates."""
        dup = df.duplicated(KEY_COLUMNS, keep=False)
        if not dup.any():
            self._duplicates = pd.DataFrame()
            return df.reset_index(drop=True)
        rank = df["status"].map(_STATUS_RANK).fillna(3)
        dirty = df["git_commit"].astype(str).str.endswith("+dirty")
        order = df.assign(_rank=rank, _dirty=dirty, _score=df["score"].fillna(np.inf))
        order = order.sort_values(KEY_COLUMNS + ["_rank", "_dirty", "_score", "git_commit", "cpu"], kind="stable")
        d = order[dup.loc[order.index]]
        ok = d[d["status"] == "ok"]
        spread = ok.groupby(KEY_COLUMNS, sort=False)["score"].agg(["min", "max", "count"])
        counts = d.groupby(KEY_COLUMNS, sort=False).size().rename("rows")
        self._duplicates = counts.to_frame().join(spread, how="left").reset_index()
        return order.drop_duplicates(KEY_COLUMNS, keep="first").drop(columns=["_rank", "_dirty", "_score"]) \
            .reset_index(drop=True)

    def duplicates(self) -> pd.DataFrame:
        """Keys the last ``load`` found more than once: the key, ``rows``, and the ``min``/``max``/``count`` of
        their finished scores (``min != max``: the copies disagree, e.g. scores of two machines)."""
        return self._duplicates

    @staticmethod
    def _check(table: pa.Table, part: Path) -> pa.Table:
        meta = table.schema.metadata or {}
        version = int(meta.get(b"proxybench_schema", b"0"))
        defaults = {1: {**_V1_DEFAULTS, **_V2_DEFAULTS}, 2: _V2_DEFAULTS}.get(version)
        if defaults and all(c in table.column_names for c in COLUMNS if c not in defaults):
            for c, v in defaults.items():  # read-time migration: the committed part itself is never rewritten
                if c not in table.column_names:
                    table = table.append_column(pa.field(c, SCHEMA.field(c).type), pa.array([v] * len(table),
                                                                                            SCHEMA.field(c).type))
        elif version not in READABLE_VERSIONS:
            newer = "a newer" if version > SCHEMA_VERSION else "an older"
            readable = ", ".join(map(str, READABLE_VERSIONS))
            raise CacheError(f"cache part {part} has schema version {version}, written by {newer} proxybench "
                             f"(this one reads versions {readable}); use a matching version or a fresh --cache")
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise CacheError(f"cache part {part} lacks columns {missing}")
        return table.select(COLUMNS)

    def append(self, rows: list[dict]) -> Path | None:
        """Write rows as one new part, atomically. Returns the part's path (None for no rows)."""
        if not rows:
            return None
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        defaults = {"error": "", "timestamp": now, "schema_version": SCHEMA_VERSION}
        if any("cpu" not in r for r in rows):  # rows scored in this process; workers record their own
            from proxybench.provenance import cpu_label

            defaults["cpu"] = cpu_label()
        full = [{**defaults, "builder_version": r.get("builder_version") or _builder_version(r["space"]), **r}
                for r in rows]
        table = pa.Table.from_pylist(full, schema=SCHEMA).replace_schema_metadata(
            {"proxybench_schema": str(SCHEMA_VERSION)})
        return self._write(table, f"part-{now.replace(':', '').replace('-', '')[:15]}-{uuid.uuid4().hex[:8]}")

    def _write(self, table: pa.Table, stem: str) -> Path:
        # atomic and fsynced, through a hidden temporary file that readers of the directory skip
        return store.write_table(self.path / f"{stem}.parquet", table, SCORE_CACHE, compression="zstd", fsync=True)

    def prune_stale(self, current_versions: dict[str, int]) -> int:
        """Drop the rows of proxies whose cached version differs from ``current_versions[proxy]`` (scores that can
        never be used again, e.g. after a proxy's numbers changed on purpose); compacts. Returns rows dropped."""
        parts = self.parts()  # listed before loading, as in ``compact``: a part written meanwhile is kept
        df = self.load()
        if df.empty:
            return 0
        cur = df["proxy"].map(current_versions)
        stale = cur.notna() & (df["proxy_version"] != cur)
        if not stale.any():
            return 0
        self._replace_all(df[~stale], parts)
        return int(stale.sum())

    def _replace_all(self, df: pd.DataFrame, parts: list[Path]) -> Path:
        """Write ``df`` as one part, then remove ``parts`` (a crash in between leaves duplicates, never a loss)."""
        df = df.sort_values(["space", "task", "proxy", "seed", "arch"], kind="stable").reset_index(drop=True)
        table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False).replace_schema_metadata(
            {"proxybench_schema": str(SCHEMA_VERSION)})
        merged = self._write(table, f"scores-{uuid.uuid4().hex[:8]}")
        for p in parts:
            p.unlink(missing_ok=True)
        return merged

    def compact(self) -> Path | None:
        """Merge all parts into one (newest row per key). The merged part is written before the old ones
        are removed, so a crash in between leaves duplicates that ``load`` resolves, never a loss."""
        parts = self.parts()
        if len(parts) <= 1:
            return parts[0] if parts else None
        merged = self._replace_all(self.load(), parts)
        # temporary files of writers killed mid-write; an hour old, they belong to no live writer
        for tmp in self.path.glob(".*.tmp"):
            if time.time() - tmp.stat().st_mtime > 3600:
                tmp.unlink(missing_ok=True)
        return merged
