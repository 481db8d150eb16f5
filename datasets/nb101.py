"""NAS-Bench-101 (Ying et al., ICML 2019): cell specs, module hashes, ground truth and the network builder.

The space: a cell ("module") is a DAG of at most 7 vertices and 9 edges given by an upper-triangular
adjacency matrix and one op per vertex (``input``, then ``conv3x3-bn-relu`` / ``conv1x1-bn-relu`` /
``maxpool3x3``, then ``output``). Vertices not on a path input -> output are pruned first, as the
official ``ModelSpec`` does, and the canonical key is the official module hash: an MD5 over an
isomorphism-invariant labelling of the pruned graph (``nasbench/lib/graph_util.py: hash_module``), so
two specs that differ only in the numbering of their interior vertices share one key.

Ground truth comes from, in order of preference:

1. ``nb101/nasbench_only108.truth.parquet`` in the data directory (a table written by
   :func:`convert_tfrecord`);
2. the official ``nb101/nasbench_only108.tfrecord``, converted once (pure Python, no TensorFlow) into a
   parquet table in the cache directory;
3. the 2,500-cell mirror ``nb101/nasbench1_2500.json`` (test accuracy only; see ``COLUMN_NOTES``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pandas as pd

from proxybench.datasets import Space, files
from proxybench.datasets.errors import ArchError, DataFileError, did_you_mean

INPUT, OUTPUT = "input", "output"
CONV3X3, CONV1X1, MAXPOOL3X3 = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"
# The official config['available_ops'], in its order: an op's index here is its label in the module hash.
OPS = (CONV3X3, CONV1X1, MAXPOOL3X3)
MAX_VERTICES = 7
MAX_EDGES = 9
TASKS = ("cifar10",)
NUM_CLASSES = {"cifar10": 10}
RESOLUTION = {"cifar10": 32}
EPOCHS = 108

MIRROR_KEY = "nb101/nasbench1_2500.json"
IMAGENET_KEY = "nb101/nasbench1_imgnet.json"
TFRECORD_KEY = "nb101/nasbench_only108.tfrecord"
OFFICIAL_TRUTH = "nb101/nasbench_only108.truth.parquet"  # written by convert_tfrecord(), optional

NB101_SOURCE = (
    "NAS-Bench-101: the official `nasbench_only108.tfrecord` (storage.googleapis.com/nasbench/, "
    "published SHA256 4c39c3936e36a85269881d659e44e61a245babcb72cb374eacacf75d0e5f4fd1), or the JSON "
    "subsets of leeyeehoo/GenNAS-Zero `data/nb101/`"
)

_SPEC_FMT = ("JSON list of [[adjacency, ops], accuracy]; adjacency a square 0/1 upper-triangular matrix "
             "(at most 7x7), ops 'input', conv3x3-bn-relu / conv1x1-bn-relu / maxpool3x3, 'output'")
files.register_file(files.DataFile(
    MIRROR_KEY, MIRROR_KEY, "nb101", TASKS,
    "2,500 NB101 cells with CIFAR-10 test accuracy (a fraction; most likely the 108-epoch mean over the "
    "three repeats, undocumented upstream)",
    _SPEC_FMT, NB101_SOURCE,
    {"mirror": "sha256:cc87cc0c5c2c20c6e9bb5adddd84db873ca97c1fa0b171bb1af13f8eed7844da"}))
files.register_file(files.DataFile(
    IMAGENET_KEY, IMAGENET_KEY, "nb101", (),
    "500 NB101 cells with ImageNet top-1 accuracy (%) of an undocumented training run",
    _SPEC_FMT, NB101_SOURCE,
    {"mirror": "sha256:68dbec138fb986c0304f8e0607a2d263204c26f5eb3cb42bcf6f1db7b3cd1e48"}, required=False))
files.register_file(files.DataFile(
    TFRECORD_KEY, TFRECORD_KEY, "nb101", TASKS,
    "official NAS-Bench-101 108-epoch results: 423,624 cells x 3 repeats (read without TensorFlow)",
    "TFRecord (u64 length, masked CRC32C of the length, payload, masked CRC32C of the payload); payload = "
    "JSON [module_hash, epochs, adjacency 0/1 string, comma-separated ops, base64 ModelMetrics protobuf]",
    NB101_SOURCE, {}, required=False))

# What each column of the tables means (also set as ``DataFrame.attrs["column_notes"]``).
COLUMN_NOTES = {
    "arch": "official module hash (MD5 of the pruned cell's isomorphism-invariant labelling)",
    "matrix": "pruned adjacency, row-major, flattened to a 0/1 string (side = sqrt(len))",
    "ops": "comma-separated vertex ops of the pruned cell, 'input' first and 'output' last",
    "test_acc": "CIFAR-10 test accuracy in %. Official table: mean over the three 108-epoch repeats. "
                "2,500-cell mirror: the file's fraction x 100; undocumented upstream, most likely the same "
                "108-epoch mean",
    "val_acc": "CIFAR-10 validation accuracy in % (official only), mean over the three 108-epoch repeats",
    "test_acc_1": "official per-repeat final test accuracy (%), repeats in file order (also _2, _3)",
    "val_acc_1": "official per-repeat final validation accuracy (%), repeats in file order (also _2, _3)",
    "train_acc": "official final train accuracy (%), mean over repeats",
    "train_time": "official training time (s) to the end of training, mean over repeats",
    "trainable_parameters": "official parameter count of the network (all trainable TF variables)",
    "params": "trainable_parameters in millions",
    "imagenet_top1": "ImageNet top-1 (%) from nasbench1_imgnet.json (undocumented training run)",
}

_HASH_RE = re.compile(r"^[0-9a-f]{32}$")


# -------------------------------------------------------------------------------------------- cell specs

@dataclass(frozen=True)
class Spec:
    """A pruned, validated NB101 cell: adjacency rows and vertex ops (hashable and picklable)."""

    matrix: tuple[tuple[int, ...], ...]
    ops: tuple[str, ...]

    @property
    def num_vertices(self) -> int:
        return len(self.ops)

    @property
    def num_edges(self) -> int:
        return sum(map(sum, self.matrix))

    @property
    def matrix_str(self) -> str:
        """The adjacency flattened row-major to a 0/1 string, as in the official tfrecord."""
        return "".join(str(v) for row in self.matrix for v in row)

    @property
    def ops_str(self) -> str:
        return ",".join(self.ops)

    def compact(self) -> str:
        """``'<matrix_str>|<ops_str>'``, a spec string :func:`parse_spec` reads back."""
        return f"{self.matrix_str}|{self.ops_str}"

    def to_numpy(self) -> np.ndarray:
        return np.array(self.matrix, dtype=np.int64)

    def hash(self) -> str:
        return _hash_pruned(self.matrix, self.ops)


def _as_matrix(matrix) -> list[list[int]]:
    try:
        arr = np.asarray(matrix)
    except Exception as e:  # ragged nested lists
        raise ArchError(f"NB101 adjacency must be a square 0/1 matrix, got {matrix!r} ({e})") from None
    if arr.ndim != 2:
        raise ArchError(f"NB101 adjacency must be a square 0/1 matrix (2-D), got an array of shape {arr.shape}")
    if arr.shape[0] != arr.shape[1]:
        raise ArchError(f"NB101 adjacency must be square, got {arr.shape[0]}x{arr.shape[1]}")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise ArchError(f"NB101 adjacency entries must be 0 or 1, got dtype {arr.dtype}")
    bad = np.argwhere((arr != 0) & (arr != 1))
    if len(bad):
        i, j = (int(x) for x in bad[0])
        raise ArchError(f"NB101 adjacency entries must be 0 or 1, found {arr[i, j].item()!r} at row {i}, column {j}")
    return arr.astype(np.int64).tolist()


def _reachable(m: list[list[int]], start: int, forward: bool) -> set[int]:
    n = len(m)
    seen, stack = {start}, [start]
    while stack:
        v = stack.pop()
        nbrs = (w for w in range(n) if (m[v][w] if forward else m[w][v]))
        for w in nbrs:
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return seen


def prune(matrix, ops) -> tuple[list[list[int]], list[str]] | None:
    """Drop vertices not on a path input -> output, as the official ``ModelSpec._prune`` does.

    Returns the pruned (matrix, ops), or None when the input does not reach the output. Expects a square
    upper-triangular 0/1 matrix (see :func:`make_spec` for the checks).
    """
    m = [list(map(int, row)) for row in matrix]
    n = len(m)
    keep = sorted(_reachable(m, 0, True) & _reachable(m, n - 1, False))
    if 0 not in keep or (n - 1) not in keep or n < 2:
        return None
    return [[m[i][j] for j in keep] for i in keep], [ops[i] for i in keep]


def make_spec(matrix, ops) -> Spec:
    """Validate and prune a cell like the official ``ModelSpec`` + ``NASBench._check_spec``.

    Rules, each failing with an ArchError that names it: the adjacency is a square 0/1 matrix with one op
    per vertex; it is strictly upper-triangular (edges go from a lower to a higher vertex); the ops are
    'input' first, 'output' last and interior ops from ``OPS`` (checked on every vertex, stricter than the
    official API, which ignores ops of pruned vertices); the input reaches the output; after pruning the
    cell has at most 7 vertices and 9 edges.
    """
    m = _as_matrix(matrix)
    if isinstance(ops, str):
        ops = ops.split(",")
    try:
        ops = [str(o).strip() for o in ops]
    except TypeError:
        raise ArchError(f"NB101 ops must be a list of op names, got {type(ops).__name__} {ops!r}") from None
    n = len(m)
    if n < 2:
        raise ArchError(f"an NB101 cell needs at least an input and an output vertex, got a {n}x{n} adjacency")
    if len(ops) != n:
        raise ArchError(f"NB101 spec has {len(ops)} ops for a {n}x{n} adjacency: give one op per vertex")
    for i in range(n):
        for j in range(i + 1):
            if m[i][j]:
                raise ArchError(
                    f"NB101 adjacency must be strictly upper-triangular (edges go from a lower to a higher "
                    f"vertex, no self-loops): found edge {i}->{j}")
    if ops[0] != INPUT:
        raise ArchError(f"the first NB101 op must be 'input', got {ops[0]!r}")
    if ops[-1] != OUTPUT:
        raise ArchError(f"the last NB101 op must be 'output', got {ops[-1]!r}")
    for v, op in enumerate(ops[1:-1], start=1):
        if op not in OPS:
            hint = (" ('input'/'output' only at the first/last vertex)" if op in (INPUT, OUTPUT)
                    else did_you_mean(op, OPS))
            raise ArchError(f"unknown NB101 op {op!r} at vertex {v}{hint}; valid interior ops: {', '.join(OPS)}")
    pruned = prune(m, ops)
    if pruned is None:
        raise ArchError(f"NB101 cell is disconnected: no path from the input (vertex 0) to the output "
                        f"(vertex {n - 1})")
    pm, pops = pruned
    if len(pops) > MAX_VERTICES:
        raise ArchError(f"NB101 cell has too many vertices after pruning: {len(pops)} > {MAX_VERTICES}")
    edges = sum(map(sum, pm))
    if edges > MAX_EDGES:
        raise ArchError(f"NB101 cell has too many edges after pruning: {edges} > {MAX_EDGES}")
    return Spec(tuple(tuple(r) for r in pm), tuple(pops))


def _md5(s: str) -> str:
    return hashlib.md5(s.encode("utf-8")).hexdigest()


def hash_graph(matrix, labels) -> str:
    """The official isomorphism-invariant graph hash (``graph_util.hash_module``) of any labelled digraph.

    Each vertex starts from the MD5 of ``str((out_degree, in_degree, label))``; then, once per vertex,
    every vertex's hash becomes the MD5 of its sorted in-neighbour hashes, '|', its sorted out-neighbour
    hashes, '|', its own hash. The result is the MD5 of ``str(sorted(hashes))``. NB101 labels: -1 for the
    input, -2 for the output, the index in ``OPS`` for interior vertices.
    """
    m = [[int(x) for x in row] for row in matrix]
    n = len(m)
    labels = [int(x) for x in labels]
    if len(labels) != n or any(len(row) != n for row in m):
        raise ValueError(f"hash_graph needs a square matrix and one label per vertex, got {n} rows, "
                         f"{len(labels)} labels")
    ins = [[w for w in range(n) if m[w][v]] for v in range(n)]
    outs = [[w for w in range(n) if m[v][w]] for v in range(n)]
    h = [_md5(str((len(outs[v]), len(ins[v]), labels[v]))) for v in range(n)]
    for _ in range(n):
        h = [_md5("".join(sorted(h[w] for w in ins[v])) + "|" + "".join(sorted(h[w] for w in outs[v])) + "|" + h[v])
             for v in range(n)]
    return _md5(str(sorted(h)))


def _hash_pruned(matrix, ops) -> str:
    labels = [-1] + [OPS.index(o) for o in ops[1:-1]] + [-2]
    return hash_graph(matrix, labels)


def module_hash(matrix, ops) -> str:
    """The official module hash of a cell (validated and pruned first, as the official API does)."""
    return make_spec(matrix, ops).hash()


def parse_spec(arch) -> Spec:
    """A Spec from any of: a Spec; ``(matrix, ops)``; a dict with ``matrix``/``ops`` (or the official
    ``module_adjacency``/``module_operations``); a JSON string of those; or ``'<0/1 string>|<ops,...>'``."""
    if isinstance(arch, Spec):
        return make_spec(arch.matrix, arch.ops)
    if isinstance(arch, str):
        s = arch.strip()
        if "|" in s and not s.startswith(("[", "{")):
            bits, _, ops = s.partition("|")
            bits = bits.strip()
            side = int(round(len(bits) ** 0.5))
            if not bits or side * side != len(bits) or set(bits) - {"0", "1"}:
                raise ArchError(f"malformed NB101 spec string {arch!r}: expected '<n*n 0/1 digits>|<n comma-"
                                f"separated ops>', e.g. '010001000|input,conv3x3-bn-relu,output'")
            return make_spec([[int(c) for c in bits[i * side:(i + 1) * side]] for i in range(side)], ops.split(","))
        try:
            arch = json.loads(s)
        except ValueError:
            raise ArchError(f"malformed NB101 arch {arch!r}: expected a 32-hex-digit module hash, a JSON "
                            f"[matrix, ops] / {{'matrix', 'ops'}}, or '<0/1 string>|<ops>'") from None
    if isinstance(arch, dict):
        matrix = arch.get("matrix", arch.get("module_adjacency"))
        ops = arch.get("ops", arch.get("module_operations"))
        if matrix is None or ops is None:
            raise ArchError(f"an NB101 spec dict needs 'matrix' and 'ops', got keys {sorted(arch)}")
        return make_spec(matrix, ops)
    if isinstance(arch, (list, tuple)) and len(arch) == 2:
        return make_spec(arch[0], arch[1])
    raise ArchError(f"cannot read an NB101 cell from {type(arch).__name__} {arch!r}: give a module hash, "
                    f"(matrix, ops), a dict with 'matrix' and 'ops', or '<0/1 string>|<ops>'")


def _spec_from_strings(matrix_str: str, ops_str: str) -> Spec:
    side = int(round(len(matrix_str) ** 0.5))
    m = tuple(tuple(int(c) for c in matrix_str[i * side:(i + 1) * side]) for i in range(side))
    return Spec(m, tuple(ops_str.split(",")))


# Specs seen in this process (tables loaded, specs canonicalised): lets the builder work for any data dir.
_KNOWN_SPECS: dict[str, Spec] = {}


def canonical(arch, data_dir=None) -> str:
    """Canonical key (module hash) of a hash or a spec. A hash must be one of the loaded table's cells;
    a spec only has to be valid (its truth is missing when the table lacks it)."""
    if isinstance(arch, str) and _HASH_RE.match(arch.strip().lower()):
        h = arch.strip().lower()
        if h not in _spec_index(data_dir):
            src = truth_source_id(data_dir)
            raise ArchError(f"NB101 module hash {h} is not in the {src} table ({len(_spec_index(data_dir))} "
                            f"cells); give the cell as (matrix, ops) or use a hash from all_archs()")
        return h
    spec = parse_spec(arch)
    h = spec.hash()
    _KNOWN_SPECS.setdefault(h, spec)
    return h


def spec_of(arch_hash: str, data_dir=None) -> Spec:
    """The pruned spec of a module hash: the table's own (the numbering that was trained), else one
    canonicalised in this process, else one from any NB101 table in the cache directory."""
    h = str(arch_hash).strip().lower()
    if not _HASH_RE.match(h):
        raise ArchError(f"not an NB101 module hash (32 hex digits): {arch_hash!r}")
    try:
        index = _spec_index(data_dir)
    except DataFileError:
        index = {}
    if h in index:
        return _spec_from_strings(*index[h])
    if h in _KNOWN_SPECS:
        return _KNOWN_SPECS[h]
    index = _cached_spec_index()  # tables converted earlier, e.g. from another --data-dir
    if h not in index:
        raise ArchError(f"unknown NB101 module hash {h}: not in the ground-truth table of "
                        f"{files.resolve_data_dir(data_dir)} nor in any cached NB101 table")
    spec = _KNOWN_SPECS[h] = _spec_from_strings(*index[h])
    return spec


# ------------------------------------------------------------------------------------------------ readers

def _with_notes(df: pd.DataFrame) -> pd.DataFrame:
    df.attrs["column_notes"] = {c: COLUMN_NOTES[c] for c in df.columns if c in COLUMN_NOTES}
    return df


def _read_spec_json(key: str, value_col: str, scale: float, data_dir) -> pd.DataFrame:
    path = files.require(key, data_dir)
    try:
        raw = json.loads(Path(path).read_text())
        cells = [(cell[0], cell[1], float(acc)) for cell, acc in raw]
    except Exception as e:
        raise files.corrupt(key, f"not a JSON list of [[adjacency, ops], accuracy] ({type(e).__name__}: {e})",
                            data_dir) from None
    rows = []
    for i, (matrix, ops, acc) in enumerate(cells):
        try:
            spec = make_spec(matrix, ops)
        except ArchError as e:
            raise files.corrupt(key, f"entry {i} is not a valid NB101 cell: {e}", data_dir) from None
        rows.append((spec.hash(), spec.matrix_str, spec.ops_str, acc * scale))
    df = pd.DataFrame(rows, columns=["arch", "matrix", "ops", value_col])
    # isomorphic duplicates: one row per cell, the mean of its listed accuracies
    if df["arch"].duplicated().any():
        df = df.groupby("arch", sort=False, as_index=False).agg(
            {"matrix": "first", "ops": "first", value_col: "mean"})
    return _with_notes(df)


def read_mirror_json(data_dir=None) -> pd.DataFrame:
    """The 2,500-cell mirror as ``arch, matrix, ops, test_acc`` (test_acc = the file's fraction x 100).

    The accuracy is undocumented upstream; it is most likely the 108-epoch CIFAR-10 test accuracy averaged
    over the three repeats (see ``COLUMN_NOTES['test_acc']``). Isomorphic duplicates are merged (mean).
    """
    return _read_spec_json(MIRROR_KEY, "test_acc", 100.0, data_dir)


def read_imagenet_json(data_dir=None) -> pd.DataFrame:
    """The 500-cell ImageNet file as ``arch, matrix, ops, imagenet_top1`` (top-1 in %, as stored)."""
    return _read_spec_json(IMAGENET_KEY, "imagenet_top1", 1.0, data_dir)


# ----------------------------------------------------------------------------------- tfrecord + protobuf

def _crc32c_table() -> list[int]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``; table-driven pure Python."""
    c = crc ^ 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC TFRecord stores: rotate right by 15 bits, add 0xa282ead8 (mod 2^32)."""
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def iter_tfrecord(path, verify_crc: bool = True):
    """Yield the payloads of a TFRecord file; DataFileError on a truncated file or a CRC mismatch."""
    path = Path(path)
    with open(path, "rb") as f:
        index = 0
        while True:
            offset = f.tell()
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise _bad_record(path, index, offset, f"truncated header ({len(header)} of 12 bytes)")
            length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
            if verify_crc and masked_crc32c(length_bytes) != length_crc:
                raise _bad_record(path, index, offset, "length CRC mismatch (not a TFRecord file, or corrupt)")
            (length,) = struct.unpack("<Q", length_bytes)
            payload = f.read(length)
            footer = f.read(4)
            if len(payload) < length or len(footer) < 4:
                raise _bad_record(path, index, offset, f"truncated record (payload of {length} bytes)")
            if verify_crc and masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
                raise _bad_record(path, index, offset, "payload CRC mismatch")
            yield payload
            index += 1


def _bad_record(path, index: int, offset: int, problem: str) -> DataFileError:
    return DataFileError(f"corrupt NB101 tfrecord {path}: record {index} at byte {offset}: {problem}\n"
                         f"  expected: {files.CATALOGUE[TFRECORD_KEY].fmt}\n  replace it: get it from {NB101_SOURCE}")


class ProtobufError(ValueError):
    """A byte string is not a well-formed protocol-buffer message."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint longer than 10 bytes")


def decode_protobuf(buf: bytes) -> dict[int, list]:
    """Wire-level decode: field number -> list of values (int for varints, bytes for fixed64 (8 bytes),
    length-delimited and fixed32 (4 bytes)). Groups are not supported."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ProtobufError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise ProtobufError(f"truncated fixed{size * 8} field {field}")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ProtobufError(f"truncated length-delimited field {field}")
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ProtobufError(f"unsupported wire type {wire} (field {field})")
        fields.setdefault(field, []).append(value)
    return fields


def _double(values: list, name: str) -> float:
    v = values[-1]  # proto2 optional: the last occurrence wins
    if not isinstance(v, bytes) or len(v) != 8:
        raise ProtobufError(f"{name} is not a double")
    return struct.unpack("<d", v)[0]


def _int32(values: list, name: str) -> int:
    v = values[-1]
    if not isinstance(v, int):
        raise ProtobufError(f"{name} is not a varint")
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >= 1 << 63 else v


# model_metrics.proto (nasbench/lib): ModelMetrics{1: repeated EvaluationData evaluation_data,
# 2: int32 trainable_parameters, 3: double total_time}; EvaluationData{1: double current_epoch,
# 2: double training_time, 3: double train_accuracy, 4: double validation_accuracy,
# 5: double test_accuracy, 6: string checkpoint_path}.
_EVAL_FIELDS = {1: "current_epoch", 2: "training_time", 3: "train_accuracy", 4: "validation_accuracy",
                5: "test_accuracy"}


def decode_model_metrics(buf: bytes) -> dict:
    """Decode an official ``ModelMetrics`` message into a dict (accuracies as stored: fractions)."""
    top = decode_protobuf(buf)
    evals = []
    for raw in top.get(1, []):
        if not isinstance(raw, bytes):
            raise ProtobufError("evaluation_data is not a message")
        sub = decode_protobuf(raw)
        d = {name: _double(sub[num], name) if num in sub else 0.0 for num, name in _EVAL_FIELDS.items()}
        if 6 in sub:
            d["checkpoint_path"] = bytes(sub[6][-1]).decode("utf-8", "replace")
        evals.append(d)
    return {
        "evaluation_data": evals,
        "trainable_parameters": _int32(top[2], "trainable_parameters") if 2 in top else 0,
        "total_time": _double(top[3], "total_time") if 3 in top else 0.0,
    }


def parse_record(payload: bytes) -> dict:
    """One official record: ``module_hash, epochs, matrix (0/1 string), ops (comma string), metrics``."""
    module_hash_, epochs, raw_adjacency, raw_operations, raw_metrics = json.loads(payload.decode("utf-8"))
    metrics = decode_model_metrics(base64.b64decode(raw_metrics, validate=True))
    return {"module_hash": str(module_hash_), "epochs": int(epochs), "matrix": str(raw_adjacency),
            "ops": str(raw_operations), "metrics": metrics}


def convert_tfrecord(src, dst=None, epochs: int = EPOCHS, verify_crc: bool = True,
                     check_hashes: int = 100) -> pd.DataFrame:
    """Read an official NB101 tfrecord into one row per cell (records of other epoch budgets are skipped).

    Columns: ``arch, matrix, ops, trainable_parameters, params, n_repeats, val_acc_1..3, test_acc_1..3,
    val_acc, test_acc, train_acc, train_time`` (accuracies in %, final evaluation of each repeat, means
    over the repeats; see ``COLUMN_NOTES``). The module hash of the first ``check_hashes`` cells is
    recomputed and must match the file's. Written atomically to ``dst`` (parquet) when given.
    """
    src = Path(src)
    if not src.is_file():
        raise DataFileError(f"missing NB101 tfrecord {src}; get it from {NB101_SOURCE}")
    cells: dict[str, dict] = {}
    checked = 0
    for i, payload in enumerate(iter_tfrecord(src, verify_crc)):
        try:
            rec = parse_record(payload)
            if rec["epochs"] != epochs:
                continue
            evals = rec["metrics"]["evaluation_data"]
            if not evals:
                raise ValueError("no evaluation_data")
            final = evals[-1]
        except (ValueError, TypeError, KeyError, ProtobufError, binascii.Error) as e:
            raise DataFileError(f"corrupt NB101 tfrecord {src}: record {i} is not [module_hash, epochs, "
                                f"adjacency, ops, base64 ModelMetrics] ({type(e).__name__}: {e})") from None
        h = rec["module_hash"]
        cell = cells.get(h)
        if cell is None:
            cell = cells[h] = {"matrix": rec["matrix"], "ops": rec["ops"],
                               "trainable_parameters": rec["metrics"]["trainable_parameters"], "runs": []}
            if checked < check_hashes:
                try:
                    stored = _spec_from_strings(rec["matrix"], rec["ops"])
                    ours = module_hash(stored.matrix, stored.ops)
                except ArchError as e:
                    raise DataFileError(f"corrupt NB101 tfrecord {src}: record {i} holds an invalid cell: {e}") \
                        from None
                if ours != h:
                    raise DataFileError(f"NB101 tfrecord {src}: record {i} has module hash {h} but its cell "
                                        f"hashes to {ours}; the file is not the official NB101 release")
                checked += 1
        elif (cell["matrix"], cell["ops"]) != (rec["matrix"], rec["ops"]):
            raise DataFileError(f"corrupt NB101 tfrecord {src}: module hash {h} appears with two different cells")
        # keep only what the table needs: (validation, test, train accuracy, training time) of the final eval
        cell["runs"].append((final["validation_accuracy"], final["test_accuracy"], final["train_accuracy"],
                             final["training_time"]))
    if not cells:
        raise DataFileError(f"NB101 tfrecord {src} holds no {epochs}-epoch records")
    rows = []
    for h, c in cells.items():
        runs = c["runs"]
        n = len(runs)
        val, test, train, secs = (sum(x) / n for x in zip(*runs, strict=True))
        row = {"arch": h, "matrix": c["matrix"], "ops": c["ops"],
               "trainable_parameters": int(c["trainable_parameters"]),
               "params": round(c["trainable_parameters"] / 1e6, 6), "n_repeats": n}
        for r in range(3):
            row[f"val_acc_{r + 1}"] = 100.0 * runs[r][0] if r < n else np.nan
            row[f"test_acc_{r + 1}"] = 100.0 * runs[r][1] if r < n else np.nan
        row.update(val_acc=100.0 * val, test_acc=100.0 * test, train_acc=100.0 * train, train_time=secs)
        rows.append(row)
    df = _with_notes(pd.DataFrame(rows).sort_values("arch", ignore_index=True))
    if dst is not None:
        files.atomic_parquet(df, Path(dst))
    return df


# ------------------------------------------------------------------------------------------------ truth

def _table_source(data_dir) -> tuple[str, Path]:
    root = files.resolve_data_dir(data_dir)
    if (root / OFFICIAL_TRUTH).is_file():
        return "official-parquet", root / OFFICIAL_TRUTH
    if (root / TFRECORD_KEY).is_file():
        return "official-tfrecord", root / TFRECORD_KEY
    return "mirror-2500", files.require(MIRROR_KEY, data_dir)


def truth_source_id(data_dir=None) -> str:
    """Which table the truth comes from: 'official-parquet', 'official-tfrecord' or 'mirror-2500'."""
    return _table_source(data_dir)[0]


@lru_cache(maxsize=8)
def _load_table_cached(kind: str, path_str: str, stamp: tuple) -> pd.DataFrame:
    path = Path(path_str)
    if kind == "official-parquet":
        try:
            return _with_notes(pd.read_parquet(path))
        except Exception as e:
            raise DataFileError(f"corrupt converted NB101 table {path} ({e}); re-create it with proxybench."
                                f"datasets.nb101.convert_tfrecord(<nasbench_only108.tfrecord>, '{path}')") from None
    digest = hashlib.sha256(repr(stamp).encode()).hexdigest()[:12]
    prefix = "nb101_only108" if kind == "official-tfrecord" else "nb101_mirror"
    cache = files.resolve_cache_dir() / f"{prefix}_{digest}.parquet"
    df = files.read_derived(cache, lambda p: _with_notes(pd.read_parquet(p)))  # None: absent, or broken (warned)
    if df is not None:
        return df
    if kind == "official-tfrecord":
        df = convert_tfrecord(path)
    else:
        df = read_mirror_json(path.parent.parent)
    files.write_derived(df, cache)
    return df


def load_table(data_dir=None) -> pd.DataFrame:
    """One row per cell of the best available source (see the module docstring); cached as parquet."""
    kind, path = _table_source(data_dir)
    st = path.stat()
    return _load_table_cached(kind, str(path), (str(path), st.st_size, st.st_mtime_ns))


@lru_cache(maxsize=8)
def _spec_index_cached(data_dir_str: str, stamp: tuple) -> dict[str, tuple[str, str]]:
    df = load_table(data_dir_str)
    return dict(zip(df["arch"], zip(df["matrix"], df["ops"], strict=True), strict=True))


def _spec_index(data_dir=None) -> dict[str, tuple[str, str]]:
    kind, path = _table_source(data_dir)
    st = path.stat()
    return _spec_index_cached(str(files.resolve_data_dir(data_dir)), (kind, str(path), st.st_size, st.st_mtime_ns))


def _cached_spec_index() -> dict[str, tuple[str, str]]:
    index: dict[str, tuple[str, str]] = {}
    for p in sorted(files.resolve_cache_dir().glob("nb101_*.parquet")):
        df = files.read_derived(p, lambda q: pd.read_parquet(q, columns=["arch", "matrix", "ops"]))
        if df is None:  # unreadable (warned once)
            continue
        index.update(zip(df["arch"], zip(df["matrix"], df["ops"], strict=True), strict=True))
    return index


def all_archs(data_dir=None) -> list[str]:
    """Every cell's module hash in the table (mirror: file order; official: sorted)."""
    return list(_spec_index(data_dir))


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ArchError(f"unknown NB101 task {task!r}{did_you_mean(task, TASKS)}; tasks: {', '.join(TASKS)}")
    return task


TRUTH_COLUMNS = ("test_acc", "val_acc", "test_acc_1", "test_acc_2", "test_acc_3", "val_acc_1", "val_acc_2",
                 "val_acc_3", "train_acc", "train_time", "params")


def load_truth(task: str = "cifar10", data_dir=None) -> pd.DataFrame:
    """Ground truth of every cell: ``arch, task, test_acc`` plus, from the official table, ``val_acc``,
    the per-repeat accuracies, ``train_acc``, ``train_time`` and ``params`` (millions). Accuracies in %."""
    check_task(task)
    df = load_table(data_dir)
    cols = ["arch"] + [c for c in TRUTH_COLUMNS if c in df.columns]
    out = df[cols].copy()
    out.insert(1, "task", task)
    return _with_notes(out)


# ---------------------------------------------------------------------------------------------- network

INITS = ("package", "pytorch", "tf")


def build_network(matrix, ops, task: str = "cifar10", bn: bool = True, stem_channels: int = 128,
                  num_stacks: int = 3, modules_per_stack: int = 3, init: str = "package"):
    """The NB101 network of a cell: ``nasbench_pytorch.model.Network`` (the official TF model ported to
    PyTorch), with the official skeleton (stem 128 channels, 3 stacks of 3 modules) by default.

    Changes to the package's module, none affecting what it computes in train mode:

    - its ``Placeholder`` modules (one scalar parameter each, never used in ``forward``) become
      ``nn.Identity`` and each cell's empty ``dev_param`` becomes a buffer, so every parameter gets a
      gradient and the parameter count equals the official ``trainable_parameters`` (checked on two
      published cells: 8,555,530 and 2,694,282; the package as is counts 45 and 36 more);
    - every BatchNorm uses momentum 0.1 (PyTorch's default, which the package's interior ops and the
      zero-cost-nas NB101 port already use); the package's default 0.997 for the stem and the input
      projections is TF's value, which PyTorch would read as "weigh the new batch by 0.997". Only
      running statistics (eval mode) depend on it;
    - ``bn=False`` replaces every BatchNorm2d by Identity (as the zero-cost-nas port's ``bn=False``).

    ``init``: "package" (default) keeps the package's initialisation, the same as the zero-cost-nas NB101
    port: conv weights N(0, 2 / (k*k*out_channels)), linear N(0, 0.01), zero biases, BN weight 1 and bias
    0; "pytorch" resets every layer to PyTorch's default initialisation; "tf" uses the package's
    ``tf_like`` initialisation (conv N(0, 1/fan_in), linear Xavier-uniform). All draw from torch's global
    RNG: seed torch before calling.
    """
    spec = make_spec(matrix, ops)
    check_task(task)
    if init not in INITS:
        raise ValueError(f"unknown NB101 init {init!r}; choose one of {', '.join(INITS)}")
    try:
        from nasbench_pytorch.model import Network
        from nasbench_pytorch.model.model import Placeholder
    except ImportError as e:
        raise ImportError(f"the NB101 network needs the `nasbench-pytorch` package ({e})") from None
    from torch import nn

    net = _network_class(Network)((spec.to_numpy(), list(spec.ops)), num_labels=NUM_CLASSES[task], in_channels=3,
                  stem_out_channels=stem_channels, num_stacks=num_stacks, num_modules_per_stack=modules_per_stack,
                  momentum=0.1, tf_like=init == "tf")
    _swap_modules(net, lambda m: isinstance(m, Placeholder), lambda m: nn.Identity())
    for m in net.modules():
        if "dev_param" in m._parameters:
            p = m._parameters.pop("dev_param")
            m.register_buffer("dev_param", p.detach(), persistent=False)
        if init == "pytorch" and isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            m.reset_parameters()
    if not bn:
        _swap_modules(net, lambda m: isinstance(m, nn.BatchNorm2d), lambda m: nn.Identity())
    return net


@lru_cache(maxsize=1)
def _network_class(base):
    """The package's Network plus ``forward_pre_GAP`` (the Zen-NAS API: the feature map before the global
    mean), which feature-based proxies such as zen need; ``forward`` is the package's, unchanged."""

    class NB101Network(base):
        def forward_pre_GAP(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    return NB101Network


def _swap_modules(module, predicate, make) -> None:
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        if predicate(child):
            module._modules[name] = make(child)
        else:
            _swap_modules(child, predicate, make)


def count_params(model) -> int:
    """All parameters of a network (what the official ``trainable_parameters`` counts)."""
    return sum(p.numel() for p in model.parameters())


def builder(arch: str, task: str = "cifar10", data_dir=None):
    """A picklable ``build(bn=True)`` for a module hash (or a spec): the spec is bound in, not looked up."""
    check_task(task)
    spec = parse_spec(arch) if not (isinstance(arch, str) and _HASH_RE.match(arch.strip().lower())) \
        else spec_of(arch, data_dir)
    return partial(build_network, spec.matrix, spec.ops, task)


# ------------------------------------------------------------------------------------------------ space

class NB101Space(Space):
    name = "nb101"
    tasks = TASKS
    num_classes = NUM_CLASSES
    resolution = RESOLUTION
    description = "NAS-Bench-101 (2,500 or 423,624)"  # the mirror subset, or the official tfrecord
    default_truth = "test_acc"
    init = "nasbench-pytorch"  # the package's He-normal convolutions (the zero-cost-nas port's init); see build_network

    def canonical(self, arch, data_dir=None) -> str:
        return canonical(arch, data_dir)

    def all_archs(self, data_dir=None) -> list[str]:
        return all_archs(data_dir)

    def truth(self, task: str, data_dir=None):
        return load_truth(self.check_task(task), data_dir)

    def builder(self, arch: str, task: str):
        return builder(arch, self.check_task(task))
