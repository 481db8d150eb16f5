"""Score files of other tools: NASLib's ``zc_<space>.json`` read into a score cache as external rows, and written
from the suite's own cache (``proxybench import-scores`` / ``export-scores``).

**The format** (NASLib / NAS-Bench-Suite-Zero, ``../shared/REFERENCES.md``): ``{dataset: {key: {proxy: {"score":
float, "time": seconds}, ..., "val_accuracy": float}}}``, datasets being the space's tasks (NB201: ``cifar10``,
``cifar100``, ``ImageNet16-120``; NB101: ``cifar10``).

- NB201 keys are ``str(tuple)`` of six op indices into NASLib's op order ``NB201_OPS`` (skip_connect 0, none 1: the
  reverse of NATS-Bench), one per edge in NASLib's edge order ``NB201_EDGES`` ((1,2), (1,3), (1,4), (2,3), (2,4),
  (3,4), nodes counted from 1): ``(2, 2, 4, 0, 2, 0)`` is ``|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+``
  ``|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|``. A key becomes the official arch string, checked against the
  space's arch list.
- NB101 keys are ``str(tuple)`` of the flattened n x n adjacency (row-major) followed by n op indices into
  ``NB101_OPS`` (input 0, output 1, maxpool3x3 2, conv1x1-bn-relu 3, conv3x3-bn-relu 4); n is read from the length
  (n*n + n numbers, n <= 7). A key becomes the official module hash (the cell is validated and pruned first).
- Proxy names are the registry's except ``NAMES`` (``jacov`` is ``jacob_cov``); ``val_accuracy`` is the file's
  ground truth (NB201 cifar10: the cifar10-valid validation accuracy), not a score. A name that is neither is an
  error listing them, unless ``skip_unknown``.

**External rows.** Each score becomes one cache row (``proxybench.cache.row``) with proxy ``naslib:<registry name>``
(an external name, ``proxybench.proxies.registry.external_proxy``: the suite's own keys never collide with it, and
nothing
computes it), ``proxy_version`` 0, ``data_source`` ``external:naslib:<first 12 hex digits of the file's SHA-256>``,
``init`` "unknown (computed elsewhere)", ``device`` "external", ``cpu`` "computed elsewhere: <file name>, sha256
<digest>", ``git_commit`` "external", ``dtype`` and ``torch_version`` "unknown", ``seconds`` the file's ``time``.
The file records no seed: the rows are filed under ``seed`` (42 by default, the seed of the suite's studies, so that
a study with the same seed selects them: ``proxybench.runner.select``). A cache holds the scores of one file per (space,
task, proxy, seed): a second file is refused; importing the same file again adds nothing.

``agreement`` pairs a suite proxy with its external scores (``synflow`` with ``naslib:synflow``) on the cells both
scored: the training-free report shows it (``proxybench.report``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from proxybench import metrics, store
from proxybench.datasets.errors import ArchError, did_you_mean

FORMATS = ("naslib",)
SPACES = ("nb201", "nb101")
FILE_NAMES = {"nb201": "zc_nasbench201.json", "nb101": "zc_nasbench101.json"}
NB201_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
NB201_EDGES = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))
NB101_OPS = ("input", "output", "maxpool3x3", "conv1x1-bn-relu", "conv3x3-bn-relu")
NAMES = {"jacov": "jacob_cov"}  # NASLib's name -> the registry's, where they differ
NOT_SCORES = ("val_accuracy",)  # entries of a key that are the file's ground truth, not a proxy's score
VAL_COLUMN = {"nb201": "val_acc_200", "nb101": "val_acc"}  # what export writes as val_accuracy, when known
EXTERNAL_INIT = "unknown (computed elsewhere)"
EXTERNAL_DEVICE = "external"
IMPORT_PART_ROWS = 100_000  # rows per cache part an import writes
_SHAPE = '{dataset: {key: {proxy: {"score": number, "time": seconds}, ..., "val_accuracy": number}}}'
_KEY_RE = re.compile(r"^\(\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*,?\s*\)$")


class ScoreFileError(ValueError):
    """A score file that cannot be read as its format says (the message names the file and the place)."""


def _arch_position() -> tuple[int, ...]:
    """For each NASLib edge (u, v) (nodes from 1), its position in the official arch string (``nb201.EDGES``:
    (node, input) from 0)."""
    from proxybench.datasets import nb201

    return tuple(nb201.EDGES.index((v - 1, u - 1)) for u, v in NB201_EDGES)


def _ints(key: str, where: str) -> tuple[int, ...]:
    m = _KEY_RE.match(key.strip()) if isinstance(key, str) else None
    if not m:
        raise ScoreFileError(f"{where}: malformed key {key!r}: NASLib's keys are str(tuple) of op indices, e.g. "
                             f"'(2, 2, 4, 0, 2, 0)' for NB201")
    return tuple(int(x) for x in m.group(1).split(","))


def nb201_arch(key: str, where: str = "key") -> str:
    """The official NB201 arch string of a NASLib key."""
    from proxybench.datasets import nb201

    ops = _ints(key, where)
    if len(ops) != 6:
        raise ScoreFileError(f"{where}: malformed NB201 key {key!r}: {len(ops)} numbers, expected 6 (one op index "
                             f"per edge {', '.join(map(str, NB201_EDGES))})")
    bad = [(i, o) for i, o in enumerate(ops) if not 0 <= o < len(NB201_OPS)]
    if bad:
        i, o = bad[0]
        raise ScoreFileError(f"{where}: unknown op index {o} (edge {NB201_EDGES[i]}) in NB201 key {key!r}: NASLib's "
                             f"NB201 ops are " + ", ".join(f"{j} {n}" for j, n in enumerate(NB201_OPS)))
    names = [""] * 6
    for i, pos in enumerate(_arch_position()):
        names[pos] = NB201_OPS[ops[i]]
    return nb201.arch_str(names)


def nb201_key(arch: str) -> str:
    """The NASLib key of an NB201 arch string."""
    from proxybench.datasets import nb201

    ops = nb201.parse_arch(nb201.canonical(arch))
    return str(tuple(NB201_OPS.index(ops[pos]) for pos in _arch_position()))


def nb101_arch(key: str, where: str = "key") -> str:
    """The official NB101 module hash of a NASLib key (the cell validated and pruned)."""
    from proxybench.datasets import nb101

    v = _ints(key, where)
    n = int(round((math.sqrt(1 + 4 * len(v)) - 1) / 2))
    if n * n + n != len(v) or not 2 <= n <= nb101.MAX_VERTICES:
        raise ScoreFileError(f"{where}: malformed NB101 key {key!r}: {len(v)} numbers; a key is an n x n adjacency "
                             f"then n op indices (n*n + n numbers, n from 2 to {nb101.MAX_VERTICES}: 56 for 7 "
                             f"vertices)")
    adj, op_idx = v[:n * n], v[n * n:]
    bad = [o for o in op_idx if not 0 <= o < len(NB101_OPS)]
    if bad:
        raise ScoreFileError(f"{where}: unknown op index {bad[0]} in NB101 key {key!r}: NASLib's NB101 ops are "
                             + ", ".join(f"{j} {o}" for j, o in enumerate(NB101_OPS)))
    try:
        return nb101.make_spec([list(adj[i * n:(i + 1) * n]) for i in range(n)], [NB101_OPS[o] for o in op_idx]).hash()
    except ArchError as e:
        raise ScoreFileError(f"{where}: NB101 key {key!r} is not a valid cell: {e}") from None


def nb101_key(arch: str, data_dir=None) -> str:
    """The NASLib key of an NB101 module hash (its pruned spec, as the ground-truth table numbers it)."""
    from proxybench.datasets import nb101

    spec = nb101.spec_of(arch, data_dir)
    return str(tuple([*(int(x) for row in spec.matrix for x in row), *(NB101_OPS.index(o) for o in spec.ops)]))


def arch_of(space: str, key: str, where: str = "key") -> str:
    return nb201_arch(key, where) if space == "nb201" else nb101_arch(key, where)


def key_of(space: str, arch: str, data_dir=None) -> str:
    return nb201_key(arch) if space == "nb201" else nb101_key(arch, data_dir)


def _check(fmt: str, space: str) -> None:
    if fmt not in FORMATS:
        raise ScoreFileError(f"unknown score-file format {fmt!r}{did_you_mean(fmt, FORMATS)}; formats: "
                             f"{', '.join(FORMATS)}")
    if space not in SPACES:
        raise ScoreFileError(f"the naslib format covers spaces {', '.join(SPACES)}, not {space!r}")


def suite_name(name: str) -> str | None:
    """The registry's name of a NASLib proxy name, or None when the suite has no such proxy."""
    from proxybench.proxies import list_proxies

    mapped = NAMES.get(name, name)
    return mapped if mapped in set(list_proxies()) else None


def naslib_name(proxy: str) -> str:
    """NASLib's name of a registry proxy (the inverse of ``NAMES``)."""
    return {v: k for k, v in NAMES.items()}.get(proxy, proxy)


# ------------------------------------------------------------------------------------------------ reading

@dataclass
class ScoreFile:
    """A score file read: one row per score (``task``, ``arch``, ``proxy`` (the registry's name), ``score``,
    ``seconds``), the file's checksum, and what was left out."""

    path: Path
    sha256: str
    scores: pd.DataFrame
    val_accuracy: pd.DataFrame  # task, arch, val_accuracy (the file's ground truth, where it has one)
    skipped: dict = field(default_factory=dict)  # unknown proxy name -> scores left out (skip_unknown)
    duplicates: int = 0  # keys that are another numbering of a cell already read (NB101): the first kept
    keys: int = 0


def _number(v, where: str) -> float:
    if v is None:
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ScoreFileError(f"{where}: expected a number, got {type(v).__name__} {v!r}")
    return float(v)


def read_naslib(path: str | os.PathLike, space: str, *, skip_unknown: bool = False) -> ScoreFile:
    """Read a NASLib ``zc_<space>.json``; ScoreFileError (naming the file, dataset and key) for a truncated or
    malformed file, a malformed key, an unknown op index or dataset, and, unless ``skip_unknown``, an unknown proxy
    name."""
    from proxybench.datasets import get_space

    _check("naslib", space)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"score file {p} does not exist")
    raw = p.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    try:
        doc = json.loads(raw)
    except ValueError as e:
        detail = f"{e.msg} at line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise ScoreFileError(f"{p}: not a complete JSON document ({detail}; {len(raw):,} bytes): a truncated or "
                             f"damaged file? The naslib format is {_SHAPE}") from None
    if not isinstance(doc, dict) or not doc:
        raise ScoreFileError(f"{p}: expected a JSON object {_SHAPE}, got {type(doc).__name__}"
                             f"{' (empty)' if not doc else ''}")
    sp = get_space(space)
    cols = {"task": [], "arch": [], "proxy": [], "score": [], "seconds": []}
    val = {"task": [], "arch": [], "val_accuracy": []}
    unknown: dict[str, int] = {}
    names: dict[str, str | None] = {}
    duplicates = n_keys = 0
    for task, cells in doc.items():
        if task not in sp.tasks:
            raise ScoreFileError(f"{p}: dataset {task!r} is not a task of {space}{did_you_mean(task, sp.tasks)}; "
                                 f"tasks: {', '.join(sp.tasks)}")
        if not isinstance(cells, dict):
            raise ScoreFileError(f"{p}: dataset {task!r}: expected an object of keys, got {type(cells).__name__}")
        seen: set[str] = set()
        for key, entry in cells.items():
            where = f"{p}: {task} key {key!r}"
            arch = arch_of(space, key, f"{p}: {task}")
            n_keys += 1
            if arch in seen:
                duplicates += 1
                continue
            seen.add(arch)
            if not isinstance(entry, dict):
                raise ScoreFileError(f"{where}: expected an object of proxies, got {type(entry).__name__}")
            for name, value in entry.items():
                if name in NOT_SCORES:
                    val["task"].append(task)
                    val["arch"].append(arch)
                    val["val_accuracy"].append(_number(value, f"{where} {name}"))
                    continue
                if name not in names:
                    names[name] = suite_name(name)
                if names[name] is None:
                    unknown[name] = unknown.get(name, 0) + 1
                    continue
                if not isinstance(value, dict) or "score" not in value:
                    raise ScoreFileError(f"{where}: proxy {name!r}: expected {{\"score\": number, \"time\": seconds}}, "
                                         f"got {value!r}"[:400])
                cols["task"].append(task)
                cols["arch"].append(arch)
                cols["proxy"].append(names[name])
                cols["score"].append(_number(value["score"], f"{where} {name} score"))
                cols["seconds"].append(_number(value.get("time"), f"{where} {name} time"))
    if unknown and not skip_unknown:
        listed = ", ".join(f"{n} ({c:,} scores)" for n, c in sorted(unknown.items()))
        renamed = ", ".join(f"{k} = {v}" for k, v in NAMES.items())
        raise ScoreFileError(f"{p}: proxy name(s) the suite does not know: {listed}. Known NASLib names are the "
                             f"registry's (`proxybench ls proxies`) and {renamed}; --skip-unknown imports the others "
                             f"and leaves these out")
    scores = pd.DataFrame(cols)
    if scores.empty:
        raise ScoreFileError(f"{p}: holds no score of a known proxy")
    return ScoreFile(p, sha, scores, pd.DataFrame(val), unknown, duplicates, n_keys)


# ---------------------------------------------------------------------------------------------- importing

@dataclass
class ImportSummary:
    path: Path
    sha256: str
    data_source: str
    written: int  # rows appended
    already: int  # rows this file had put in the cache before
    by_task: dict  # task -> cells
    proxies: list  # the external names written
    skipped: dict  # unknown proxy name -> scores left out
    duplicates: int
    outside_truth: int | None  # cells the space's ground-truth table lacks (NB101's mirror has 2,500); None: unknown
    parts: list = field(default_factory=list)  # the cache parts written
    # task -> (cells, Spearman ρ of the file's val_accuracy with the suite's VAL_COLUMN): a check of the key decoding
    val_check: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        L = [f"imported {self.path.name} (sha256 {self.sha256[:12]}, data_source {self.data_source}): {self.written:,} "
             f"rows written, {self.already:,} already in the cache",
             "  cells: " + ", ".join(f"{t} {n:,}" for t, n in self.by_task.items()),
             "  proxies: " + ", ".join(self.proxies)]
        if self.skipped:
            L.append("  left out (unknown names): "
                     + ", ".join(f"{n} ({c:,})" for n, c in sorted(self.skipped.items())))
        if self.duplicates:
            L.append(f"  {self.duplicates:,} key(s) were another numbering of a cell already read: the first kept")
        for t, (n, rho) in self.val_check.items():
            L.append(f"  {t}: the file's val_accuracy against the suite's ground truth on {n:,} cells: Spearman ρ "
                     f"{rho:+.4f}" + ("" if rho > 0.99 else " ⚠ (the keys may not decode to the cells they name)"))
        if self.outside_truth:
            L.append(f"  {self.outside_truth:,} cell(s) are not in the space's ground-truth table: they have no "
                     f"accuracy to correlate with")
        return L


def source_of(sha256: str, fmt: str = "naslib") -> str:
    """The ``data_source`` of the rows of a score file."""
    from proxybench.runner import EXTERNAL_SOURCE_PREFIX

    return f"{EXTERNAL_SOURCE_PREFIX}{fmt}:{sha256[:12]}"


def import_scores(path: str | os.PathLike, space: str, cache: str | os.PathLike, *, fmt: str = "naslib",
                  seed: int = 42, skip_unknown: bool = False, data_dir=None) -> ImportSummary:
    """Read a score file and append its scores to the cache at ``cache`` as external rows (the module docstring)."""
    from proxybench.cache import ScoreCache, where
    from proxybench.cache import row as cache_row
    from proxybench.datasets import get_space
    from proxybench.datasets.errors import DataFileError

    _check(fmt, space)
    sf = read_naslib(path, space, skip_unknown=skip_unknown)
    sp = get_space(space)
    try:
        every = set(sp.all_archs(data_dir))
    except DataFileError:
        if space == "nb201":
            raise
        every = None
    if space == "nb201":  # every well-formed key is a cell; checked all the same
        stray = sorted(set(sf.scores["arch"]) - every)
        if stray:
            raise ScoreFileError(f"{sf.path}: {len(stray)} key(s) are not NB201 cells, e.g. {stray[0]}")
    outside = None if every is None else len(set(sf.scores["arch"]) - every)
    ds = source_of(sf.sha256, fmt)
    df = sf.scores.assign(proxy=fmt + ":" + sf.scores["proxy"])
    sc = ScoreCache(cache)
    have = where(sc.load(), space=space, seed=seed, proxy=set(df["proxy"]))
    other = have[have["data_source"] != ds]
    clash = set(zip(other["task"], other["proxy"], strict=True)) & set(zip(df["task"], df["proxy"], strict=True))
    if clash:
        t, pr = sorted(clash)[0]
        src = other.loc[(other["task"] == t) & (other["proxy"] == pr), "data_source"].iloc[0]
        raise ScoreFileError(f"the cache {sc.path} already holds {pr} scores of {space} · {t} (seed {seed}) from "
                             f"another file ({src}): a cache holds one file per (space, task, proxy); import "
                             f"{sf.path.name} into another --cache (or with another --seed)")
    mine = set(have.loc[have["data_source"] == ds, ["task", "arch", "proxy"]].itertuples(index=False, name=None))
    new = df[[k not in mine for k in zip(df["task"], df["arch"], df["proxy"], strict=True)]]
    template = cache_row(space=space, task="", arch="", proxy="", proxy_version=0, seed=seed, init=EXTERNAL_INIT,
                         score=0.0, seconds=0.0, batch_size=0, data_source=ds, substitute=False,
                         device=EXTERNAL_DEVICE, dtype="unknown", git_commit="external",
                         cpu=f"computed elsewhere: {sf.path.name}, sha256 {sf.sha256[:16]}")
    template["torch_version"] = "unknown (computed elsewhere)"
    parts = []
    for i in range(0, len(new), IMPORT_PART_ROWS):  # parts of bounded size (memory); a rerun adds what is missing
        rows = [{**template, "task": task, "arch": arch, "proxy": proxy, "score": score, "seconds": seconds,
                 "status": "ok" if math.isfinite(score) else "nonfinite"}
                for task, arch, proxy, score, seconds in new.iloc[i:i + IMPORT_PART_ROWS][
                    ["task", "arch", "proxy", "score", "seconds"]].itertuples(index=False, name=None)]
        parts.append(sc.append(rows))
    by_task = {t: int(n) for t, n in df.drop_duplicates(["task", "arch"]).groupby("task", sort=False).size().items()}
    return ImportSummary(sf.path, sf.sha256, ds, len(new), len(df) - len(new), by_task,
                         sorted(set(df["proxy"])), sf.skipped, sf.duplicates, outside, parts,
                         _val_check(sf, space, data_dir))


def _val_check(sf: ScoreFile, space: str, data_dir) -> dict:
    """Per task, the file's ``val_accuracy`` against the suite's ground truth (``VAL_COLUMN``) on the common cells."""
    from proxybench.datasets import get_space

    out = {}
    col = VAL_COLUMN[space]
    for task, g in sf.val_accuracy.groupby("task", sort=False) if len(sf.val_accuracy) else ():
        try:
            truth = get_space(space).truth(task, data_dir)
        except Exception:  # no ground truth here: nothing to check against
            continue
        if col not in truth.columns:
            continue
        m = g.merge(truth[["arch", col]], on="arch").dropna()
        if len(m) >= 3:
            out[task] = (len(m), metrics.spearman_rho(m["val_accuracy"].to_numpy(float), m[col].to_numpy(float)))
    return out


# ---------------------------------------------------------------------------------------------- exporting

@dataclass
class ExportSummary:
    path: Path
    by_task: dict  # task -> cells written
    proxies: list  # registry names written
    with_val: bool

    def lines(self) -> list[str]:
        return [f"wrote {self.path}: " + ", ".join(f"{t} {n:,} cells" for t, n in self.by_task.items()),
                "  proxies: " + ", ".join(f"{p} (as {naslib_name(p)})" if naslib_name(p) != p else p
                                          for p in self.proxies)
                + ("" if self.with_val else "; no val_accuracy (not in the space's ground truth here)")]


def export_scores(cache: str | os.PathLike, space: str, out: str | os.PathLike, *, fmt: str = "naslib",
                  seed: int = 42, batch_size: int = 64, augment: bool = True, proxies=None,
                  data_dir=None) -> ExportSummary:
    """Write the suite's own scores of ``space`` in the cache as a NASLib score file: for each task and cell, the
    current version of every registered proxy at the study settings (``seed``, ``batch_size``, ``augment``: the
    defaults are the suite's studies'), its seconds as ``time``, and the file's ``val_accuracy`` (NB201
    ``val_acc_200``, NB101 ``val_acc``) where the ground truth has it. Error rows are left out. ``proxies``: only
    these (names, wildcards, @families; default: every registered proxy the cache holds)."""
    from proxybench.cache import ScoreCache
    from proxybench.datasets import get_space
    from proxybench.proxies import list_proxies, resolve_proxies
    from proxybench.runner import Study, select

    _check(fmt, space)
    sp = get_space(space)
    df = ScoreCache(cache).load()
    df = df[df["space"] == space]
    registered = set(list_proxies() if proxies is None else resolve_proxies(proxies)) & set(list_proxies())
    proxies = sorted(p for p in set(df["proxy"]) if p in registered)
    tasks = tuple(t for t in sp.tasks if (df["task"] == t).any())
    if not proxies or not tasks:
        raise ValueError(f"the cache {ScoreCache(cache).path} holds no score of the suite's proxies on {space}")
    study = Study(space=space, tasks=tasks, proxies=tuple(proxies), sample=None, seed=seed, batch_size=batch_size,
                  augment=augment, data_dir=data_dir)
    rows = select(df, study, ok_only=True)
    if rows.empty:
        raise ValueError(f"the cache holds no {space} scores at the study settings (seed {seed}, batch {batch_size}, "
                         f"current proxy versions)")
    doc: dict = {}
    by_task, with_val = {}, False
    keys: dict[str, str] = {}
    for task in tasks:
        g = rows[rows["task"] == task]
        if g.empty:
            continue
        try:
            truth = sp.truth(task, data_dir)
        except Exception:  # the scores are written whether or not the truth is here
            truth = pd.DataFrame(columns=["arch"])
        col = VAL_COLUMN.get(space)
        vals = truth.set_index("arch")[col].to_dict() if col in truth.columns else {}
        cells: dict = {}
        for arch, proxy, score, seconds in g[["arch", "proxy", "score", "seconds"]].itertuples(index=False, name=None):
            if arch not in keys:
                keys[arch] = key_of(space, arch, data_dir)
            cells.setdefault(keys[arch], {})[naslib_name(proxy)] = {"score": float(score), "time": float(seconds)}
        for arch in dict.fromkeys(g["arch"]):
            v = vals.get(arch)
            if v is not None and np.isfinite(v):
                cells[keys[arch]]["val_accuracy"] = float(v)
                with_val = True
        doc[task] = cells
        by_task[task] = len(cells)
    # the foreign format has no room for the store marker: written atomically, as NASLib writes it
    store.atomic_write(out, json.dumps(doc))
    return ExportSummary(Path(out), by_task, sorted(set(rows["proxy"])), with_val)


# ---------------------------------------------------------------------------------------------- agreement

def agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Per (space, task, seed, proxy, suite setting) where the suite's scores of a proxy and an external file's
    (``naslib:<proxy>``) both exist: the cells both scored (finite scores), Spearman ρ between the two (raw scores:
    ρ near -1 is a sign convention that differs), and the median relative difference |a - b| / max(|a|, |b|)."""
    from proxybench.proxies.registry import external_proxy

    cols = ["space", "task", "seed", "proxy", "external", "source", "suite_source", "n", "rho", "median_rel_diff"]
    ext = [p for p in dict.fromkeys(df["proxy"]) if external_proxy(p) is not None] if len(df) else []
    rows = []
    for name in ext:
        base = name.split(":", 1)[1]
        part = df[df["proxy"].isin([name, base]) & (df["status"] == "ok")]
        for (space, task, seed), g in part.groupby(["space", "task", "seed"], sort=False):
            theirs = g[g["proxy"] == name].drop_duplicates("arch").set_index("arch")["score"]
            mine_all = g[g["proxy"] == base]
            if theirs.empty or mine_all.empty:
                continue
            for (bs, src), mine in mine_all.groupby(["batch_size", "data_source"], sort=True):
                mine = mine.drop_duplicates("arch").set_index("arch")["score"]
                common = mine.index.intersection(theirs.index)
                a, b = mine.loc[common].to_numpy(float), theirs.loc[common].to_numpy(float)
                scale = np.maximum(np.abs(a), np.abs(b))
                rel = np.where(scale > 0, np.abs(a - b) / np.where(scale > 0, scale, 1), 0.0)
                rows.append({"space": space, "task": task, "seed": seed, "proxy": base, "external": name,
                             "source": ";".join(sorted(set(g.loc[g["proxy"] == name, "data_source"]))),
                             "suite_source": src if src == "none" else f"{src} (batch {bs})", "n": len(common),
                             "rho": metrics.spearman_rho(a, b) if len(common) >= 3 else float("nan"),
                             "median_rel_diff": float(np.median(rel)) if len(common) else float("nan")})
    return pd.DataFrame(rows, columns=cols)


def _fmt_diff(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.2g}"


def render_agreement(table: pd.DataFrame) -> list[str]:
    """The report's lines for ``agreement`` (none when no proxy has both)."""
    from proxybench.render import fmt_ci, md_table

    if table is None or table.empty:
        return []
    shown = pd.DataFrame({"space · task": table["space"] + " · " + table["task"], "seed": table["seed"],
                          "proxy": table["proxy"], "imported as": table["external"], "file": table["source"],
                          "suite's scores": table["suite_source"], "common cells": table["n"],
                          "Spearman ρ": table["rho"], "median rel. diff.": table["median_rel_diff"]})
    return ["## Agreement with imported score files", "",
            "Where the cache holds a proxy's scores from this suite and from an imported score file (`naslib:<proxy>`, "
            "`proxybench import-scores`): Spearman ρ between the two on the cells both scored, and the median relative "
            "difference of the scores. ρ near +1 with a small difference: the implementations agree; ρ near −1: the "
            "same ranking under the opposite sign convention.", "",
            *md_table(shown, list(shown.columns), {"Spearman ρ": fmt_ci, "median rel. diff.": _fmt_diff}),
            ""]


# -------------------------------------------------------------------------------------------------- the CLI

def cmd_import(args) -> None:
    s = import_scores(args.file, args.space, args.cache, fmt=args.format, seed=args.seed,
                      skip_unknown=args.skip_unknown, data_dir=args.data_dir)
    print("\n".join(s.lines()))
    print(f"  report them beside the suite's own: proxybench report --cache {args.cache}; select them with "
          f"--proxies {args.format}:<proxy> (or '{args.format}:*')")


def cmd_export(args) -> None:
    s = export_scores(args.cache, args.space, args.out, fmt=args.format, seed=args.seed, batch_size=args.batch_size,
                      augment=not args.no_augment, proxies=args.proxies, data_dir=args.data_dir)
    print("\n".join(s.lines()))


def add_cli(sub, parents) -> None:
    from proxybench.options import DEFAULT_CACHE, positive_int

    s = sub.add_parser("import-scores", parents=[parents.common],
                       help="read another tool's score file (NASLib zc_<space>.json) into a cache as external rows "
                            "(naslib:<proxy>)")
    s.add_argument("file")
    s.add_argument("--format", default="naslib", choices=FORMATS)
    s.add_argument("--space", required=True, choices=SPACES)
    s.add_argument("--cache", required=True, help="the cache to add the rows to (required: committed results are "
                   "history, so a trial import goes to a cache of its own, e.g. a copy of reports/scores)")
    s.add_argument("--seed", type=int, default=42, help="the study seed to file the scores under (the file records "
                   "none; the suite's studies use 42)")
    s.add_argument("--skip-unknown", action="store_true", help="leave out proxy names the suite does not know "
                   "(default: an error listing them)")
    s.set_defaults(fn=cmd_import)
    s = sub.add_parser("export-scores", parents=[parents.common],
                       help="write the suite's cached scores of a space as a score file (NASLib zc_<space>.json)")
    s.add_argument("--format", default="naslib", choices=FORMATS)
    s.add_argument("--space", required=True, choices=SPACES)
    s.add_argument("--cache", default=str(DEFAULT_CACHE), help="the score cache to read")
    s.add_argument("--out", required=True, help="the file to write, e.g. zc_nasbench201.json")
    s.add_argument("--seed", type=int, default=42, help="the study seed of the scores written")
    s.add_argument("--batch-size", type=positive_int, default=64, help="the minibatch of the data-using proxies' "
                   "scores written")
    s.add_argument("--no-augment", action="store_true", help="the scores of the study without augmentation")
    s.add_argument("--proxies", default=None, help="only these (names, wildcards, @families; default: every "
                   "proxy the cache holds)")
    s.set_defaults(fn=cmd_export)
