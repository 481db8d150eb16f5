"""The score cache: a directory of parquet parts, one row per computed score, with its provenance.

Each flush writes a new part atomically (a hidden temporary file renamed into place), so a process
killed at any moment leaves only complete parts: it loses at most the work in flight, and a rerun
computes exactly what is missing. ``pandas.read_parquet(DIR)`` reads the whole cache.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
KEY_COLUMNS = ["space", "task", "arch", "proxy", "proxy_version", "seed", "batch_size", "data_source", "init"]
COLUMNS = KEY_COLUMNS + [
    "score", "status", "error", "seconds", "substitute", "device", "dtype", "torch_version",
    "proxybench_version", "git_commit", "timestamp", "schema_version",
]
_TYPES = {
    "space": pa.string(), "task": pa.string(), "arch": pa.string(), "proxy": pa.string(),
    "proxy_version": pa.int64(), "seed": pa.int64(), "batch_size": pa.int64(), "data_source": pa.string(),
    "init": pa.string(), "score": pa.float64(), "status": pa.string(), "error": pa.string(),
    "seconds": pa.float64(), "substitute": pa.bool_(), "device": pa.string(), "dtype": pa.string(),
    "torch_version": pa.string(), "proxybench_version": pa.string(), "git_commit": pa.string(),
    "timestamp": pa.string(), "schema_version": pa.int64(),
}
SCHEMA = pa.schema([(c, _TYPES[c]) for c in COLUMNS])


class CacheError(Exception):
    """The cache cannot be read as this version of the suite writes it."""


class ScoreCache:
    """Parquet score cache at ``path`` (a directory; created on first write)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise CacheError(f"cache path {self.path} is a file; the cache is a directory of parquet parts")

    def parts(self) -> list[Path]:
        # merged parts ("scores-*") sort after chunk parts ("part-*"), so a concurrent reader that lists
        # both during a compaction still sees every row
        return sorted(self.path.glob("*.parquet")) if self.path.is_dir() else []

    def load(self) -> pd.DataFrame:
        """Every cached row (the newest row of each key), with columns ``COLUMNS``."""
        frames = []
        for part in self.parts():
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
        return (df.sort_values("timestamp", kind="stable")
                  .drop_duplicates(KEY_COLUMNS, keep="last").reset_index(drop=True))

    @staticmethod
    def _check(table: pa.Table, part: Path) -> pa.Table:
        meta = table.schema.metadata or {}
        version = int(meta.get(b"proxybench_schema", b"0"))
        if version != SCHEMA_VERSION:
            newer = "a newer" if version > SCHEMA_VERSION else "an older"
            raise CacheError(f"cache part {part} has schema version {version}, written by {newer} proxybench "
                             f"(this one reads {SCHEMA_VERSION}); use a matching version or a fresh --cache")
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise CacheError(f"cache part {part} lacks columns {missing}")
        return table.select(COLUMNS)

    def append(self, rows: list[dict]) -> Path | None:
        """Write rows as one new part, atomically. Returns the part's path (None for no rows)."""
        if not rows:
            return None
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        full = [{**{"error": "", "timestamp": now, "schema_version": SCHEMA_VERSION}, **r} for r in rows]
        table = pa.Table.from_pylist(full, schema=SCHEMA).replace_schema_metadata(
            {"proxybench_schema": str(SCHEMA_VERSION)})
        return self._write(table, f"part-{now.replace(':', '').replace('-', '')[:15]}-{uuid.uuid4().hex[:8]}")

    def _write(self, table: pa.Table, stem: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / f"{stem}.parquet"
        tmp = self.path / f".{stem}.parquet.tmp"  # hidden: readers of the directory skip it
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return final

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
        for tmp in self.path.glob(".*.parquet.tmp"):
            if time.time() - tmp.stat().st_mtime > 3600:
                tmp.unlink(missing_ok=True)
        return merged
