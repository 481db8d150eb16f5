"""Every result file the suite writes goes through here: one atomic writer, one schema marker, one reader.

**Kinds.** A result store declares a :class:`Kind` beside the code that writes it: a name (``"dps-search"``),
the schema version this code writes and reads, and the command that (re)writes the file, which errors name.
Bump the version when the layout changes so that an older reader would misread it; give the kind a
``migrate(obj, found_version)`` when files of the older layout must still be read (committed results are
append-only history: they are migrated when read, never rewritten by hand).

**The marker** says which kind and version a file holds:

- JSON (``write_json``/``read_json``): a top-level key ``"proxybench_store": {"kind": ..., "schema_version": ...}``;
  the reader returns the object without it.
- CSV (``write_csv``/``read_csv``): a sidecar ``<file>.store.json`` holding that key (the CSV stays a plain table).
- Parquet (``write_table``/``write_parquet``/``read_parquet``): the schema metadata key ``proxybench_store`` (the
  same JSON). The score cache (``proxybench.cache``) writes its parts through ``write_table`` and also keeps its own
  ``proxybench_schema`` version, which ``ScoreCache`` checks and migrates.

A file without a marker was written before the marker existed: it reads as schema version 1. A marker of a newer
version, or of another kind, is a :class:`StoreError` naming the file, the versions and the command to rerun.

**Writes** are atomic (``atomic_write``): a hidden temporary file ``.<name>.<pid>.tmp`` in the same directory,
renamed over the target, so a reader never sees half a file and a killed writer leaves only a stale temporary.
JSON, CSV and text writes change nothing when the file already says the same: identical, or (JSON, text) different
only in provenance stamps (commit hashes, times of day, absolute paths: ``unstamped``). A file written before the
marker that says the same as the new content stays as it is too, so adopting the marker rewrote no committed file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = "proxybench_store"
SIDECAR_SUFFIX = ".store.json"
UNMARKED_VERSION = 1  # files written before the marker existed


class StoreError(Exception):
    """A result file of another kind or schema version than this code reads."""


@dataclass(frozen=True)
class Kind:
    """One result store: its name, the schema version this code writes and reads, the command that writes it."""

    name: str
    version: int
    writer: str
    migrate: Callable[[Any, int], Any] | None = field(default=None, compare=False)

    def marker(self) -> dict:
        return {"kind": self.name, "schema_version": self.version}


# ------------------------------------------------------------------------------------------ writing

def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], object], *,
                 fsync: bool = False) -> Path:
    """Write ``data`` (text, bytes, or ``writer(tmp_path)``) to ``path`` through a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # hidden: directory readers skip it
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# what changes on every run without the content changing: the rendering commit, times of day, and where the
# checkout and the data directory are on this machine (absolute paths)
STAMPS = (re.compile(r"\b[0-9a-f]{12}(\+dirty)?\b"),
          re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00|Z)?"),
          re.compile(r"(?<![\w.])/(?:[\w.+-]+/)*[\w.+-]+"))


def unstamped(text: str) -> str:
    """``text`` with its provenance stamps (``STAMPS``) replaced by a placeholder."""
    for pattern in STAMPS:
        text = pattern.sub("<stamp>", text)
    return text


def _same(a: str, b: str) -> bool:
    """Whether two renderings say the same up to provenance stamps."""
    return a == b or unstamped(a) == unstamped(b)


def _says(path: Path, *texts: str | None, stamps: bool) -> bool:
    """Whether the file at ``path`` already says one of ``texts`` (up to stamps when ``stamps``)."""
    if not path.is_file():
        return False
    try:
        old = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return any(t is not None and (_same(old, t) if stamps else old == t) for t in texts)


def write_text(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` atomically unless the file already says the same (identical, or different only in its
    stamps): a regenerated report whose numbers did not change stays as committed. True if written."""
    path = Path(path)
    if _says(path, text, stamps=True):
        return False
    atomic_write(path, text)
    return True


def write_json(path: str | os.PathLike, obj: dict, kind: Kind, *, indent: int | None = 1, sort_keys: bool = False,
               default: Callable | None = None, newline: bool = False, keep: tuple[str, ...] = ()) -> bool:
    """Write ``obj`` (a dict) with the kind's marker, atomically, unless the file already says the same (up to
    stamps; an unmarked file of version 1 with the same content counts). True if written.

    ``keep``: top-level keys that say where and how the file was last written (the machine's environment), not what
    it holds: a file that differs from ``obj`` in them alone stays as it is, so re-deriving an unchanged result on
    another CPU does not rewrite a committed file's provenance."""
    if not isinstance(obj, dict):
        raise TypeError(f"a JSON result store holds an object, not {type(obj).__name__} ({path})")
    if MARKER in obj:
        raise ValueError(f"{path}: {MARKER!r} is the store's own key")

    def render(o):
        return json.dumps(o, indent=indent, sort_keys=sort_keys, default=default) + ("\n" if newline else "")

    path = Path(path)
    text = render({MARKER: kind.marker(), **obj})
    legacy = render(obj) if kind.version == UNMARKED_VERSION else None
    if _says(path, text, legacy, stamps=True):
        return False
    if keep and path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and all(k in old for k in keep):
            content = lambda o: render({k: v for k, v in o.items() if k not in keep and k != MARKER})  # noqa: E731
            if old.get(MARKER, kind.marker() if kind.version == UNMARKED_VERSION else None) == kind.marker() \
                    and _same(content(old), content(obj)):
                return False
    atomic_write(path, text)
    return True


def sidecar(path: str | os.PathLike) -> Path:
    """The marker file of a CSV store: ``<file>.store.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_csv(path: str | os.PathLike, df, kind: Kind, **to_csv) -> bool:
    """Write ``df`` as CSV (``DataFrame.to_csv`` options, ``index=False`` by default) and its sidecar marker,
    atomically, unless both already say exactly that. True if the CSV was written."""
    path = Path(path)
    to_csv.setdefault("index", False)
    text = df.to_csv(None, **to_csv)
    side = sidecar(path)
    mark = json.dumps({MARKER: kind.marker()}, indent=1) + "\n"
    marked = _says(side, mark, stamps=False) or (not side.exists() and kind.version == UNMARKED_VERSION)
    if marked and _says(path, text, stamps=False):
        return False
    atomic_write(path, text)
    if not _says(side, mark, stamps=False):
        atomic_write(side, mark)
    return True


def write_table(path: str | os.PathLike, table, kind: Kind, *, compression: str = "snappy",
                fsync: bool = False) -> Path:
    """Write a pyarrow table as parquet with the kind's marker in its schema metadata, atomically."""
    import pyarrow.parquet as pq

    meta = dict(table.schema.metadata or {})
    meta[MARKER.encode()] = json.dumps(kind.marker()).encode()
    table = table.replace_schema_metadata(meta)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression=compression), fsync=fsync)


def write_parquet(path: str | os.PathLike, df, kind: Kind, *, index: bool = False,
                  compression: str = "snappy") -> Path:
    """``DataFrame.to_parquet`` through ``write_table``: atomic, with the marker."""
    import pyarrow as pa

    return write_table(path, pa.Table.from_pandas(df, preserve_index=index), kind, compression=compression)


# ------------------------------------------------------------------------------------------ reading

def _found(path: str | os.PathLike, mark, kind: Kind) -> int:
    """The schema version a file's marker says (1 without one), or a StoreError when this code cannot read it."""
    if mark is None:
        found_kind, found = None, UNMARKED_VERSION
    else:
        try:
            found_kind, found = mark.get("kind"), int(mark["schema_version"])
        except (AttributeError, KeyError, TypeError, ValueError):
            raise StoreError(f"{path}: unreadable {MARKER} marker {mark!r}; rerun `{kind.writer}` to rewrite "
                             "it") from None
    if found_kind is not None and found_kind != kind.name:
        raise StoreError(f"{path} holds a {found_kind!r} store, not {kind.name!r}: a file of another result "
                         f"was put here; move it away and rerun `{kind.writer}`")
    if found > kind.version:
        raise StoreError(f"{path} has schema version {found} of {kind.name!r}, written by a newer proxybench (this "
                         f"one reads version {kind.version}): use a matching checkout, or rerun `{kind.writer}` to "
                         "rewrite it with this one")
    if found < kind.version and kind.migrate is None:
        raise StoreError(f"{path} has schema version {found} of {kind.name!r}, older than the version "
                         f"{kind.version} this proxybench reads: rerun `{kind.writer}` to rewrite it")
    return found


def check(path: str | os.PathLike, mark: dict | None, kind: Kind, obj):
    """``obj``, read from ``path`` whose marker is ``mark`` (None: unmarked, version 1), as this code reads
    ``kind``: as it is, migrated from an older version, or a StoreError (another kind, a newer version, an older
    one without a migration)."""
    found = _found(path, mark, kind)
    return kind.migrate(obj, found) if found < kind.version else obj


def read_json(path: str | os.PathLike, kind: Kind) -> dict:
    """The object ``write_json`` wrote (without the marker), checked against ``kind`` (see ``check``). A missing
    file raises OSError and a malformed one ValueError, as ``json`` does."""
    obj = json.loads(Path(path).read_text(encoding="utf-8"))
    mark = obj.pop(MARKER, None) if isinstance(obj, dict) else None
    return check(path, mark, kind, obj)


def read_csv(path: str | os.PathLike, kind: Kind, **read_csv):
    """``pandas.read_csv`` of a CSV store, checked against ``kind`` through its sidecar (none: version 1)."""
    import pandas as pd

    side = sidecar(path)
    mark = None
    if side.is_file():
        try:
            mark = json.loads(side.read_text(encoding="utf-8")).get(MARKER)
        except (ValueError, AttributeError):
            raise StoreError(f"{side}: unreadable marker of {path}; rerun `{kind.writer}` to rewrite both") from None
    found = _found(path, mark, kind)  # before reading: a newer layout must not be misread
    df = pd.read_csv(path, **read_csv)
    return kind.migrate(df, found) if found < kind.version else df


def read_table(path: str | os.PathLike, kind: Kind, columns=None):
    """The pyarrow table of a parquet store, checked against ``kind`` through its metadata (none: version 1)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=columns)
    raw = (table.schema.metadata or {}).get(MARKER.encode())
    try:
        mark = json.loads(raw) if raw is not None else None
    except ValueError:
        mark = raw.decode(errors="replace")
    return check(path, mark, kind, table)


def read_parquet(path: str | os.PathLike, kind: Kind, columns=None):
    """``read_table`` as a DataFrame."""
    return read_table(path, kind, columns).to_pandas()
