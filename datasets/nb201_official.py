"""Convert the official NAS-Bench-201 benchmark file into the suite's tidy ground-truth table.

The official file ``NAS-Bench-201-v1_1-096897.pth`` (2+ GB) is a ``torch.save``-d dict::

    {"meta_archs":        [arch_str, ...],              # 15,625 strings, position = official index
     "arch2infos":        {index: {"less": ArchResults state dict,    # hp '12'  (12-epoch schedule)
                                   "full": ArchResults state dict}},  # hp '200' (200-epoch schedule)
     "evaluated_indexes": set/list of indices}

An ``ArchResults`` state dict holds ``dataset_seed`` ({dataset: [seeds]}) and ``all_results``
({(dataset, seed): ResultsCount state dict}); a ``ResultsCount`` holds the per-epoch train and eval
accuracies (eval keys ``"<set>@<epoch>"``), ``params`` (MB = millions) and ``flop``.  The datasets are
``cifar10-valid`` (trained on the CIFAR-10 train split; eval sets ``x-valid``, ``ori-test``), ``cifar10``
(trained on train+valid; ``ori-test``), ``cifar100`` and ``ImageNet16-120`` (``x-valid``, ``x-test``,
``ori-test`` = valid+test).

The file is read with ``torch.load(weights_only=True)`` only: it never executes code from the file.
The numbers are computed by the official ``nas_201_api`` methods (``get_more_info`` with
``is_random=False`` averages the last-epoch metric over seeds; ``get_compute_costs`` gives the
seed-averaged params), so each column means what the official API means by it.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from proxybench.datasets.errors import DataFileError, UnsafePickleError

OFFICIAL_FILENAME = "NAS-Bench-201-v1_1-096897.pth"
OFFICIAL_SOURCE = (
    f"the official NAS-Bench-201 release (github.com/D-X-Y/NAS-Bench-201, file `{OFFICIAL_FILENAME}`, "
    "about 2.1 GB)"
)
EXPECTED_STRUCTURE = (
    "a torch-saved dict with keys 'meta_archs' (list of 15,625 arch strings), 'arch2infos' "
    "(dict index -> {'less': ArchResults state dict, 'full': ArchResults state dict}) and "
    "'evaluated_indexes' (set or list of indices)"
)
TASKS = ("cifar10", "cifar100", "ImageNet16-120")
COLUMNS = ["index", "arch", "task", "test_acc_200", "val_acc_200", "test_acc_12", "val_acc_12", "params"]

# Errors the official API raises when an entry (dataset, seed, eval set, epoch) is absent.
_MISSING = (KeyError, ValueError, IndexError, ZeroDivisionError)


def _numpy_safe_globals() -> list:
    """numpy scalar/array reconstruction, allowed on top of torch's weights_only set.

    Files written in 2020 may hold numpy scalars (``np.float64``) among the numbers; rebuilding a
    numpy scalar or numeric array from its bytes executes no code from the file, so these globals are
    safe.  They are registered under both the numpy-1 (``numpy.core``) and numpy-2 (``numpy._core``)
    names, because the pickle records the module path of the numpy that wrote it.
    """
    core = np._core.multiarray
    out: list = [np.dtype, np.ndarray]
    for fn in (core.scalar, core._reconstruct):
        out += [(fn, f"numpy.core.multiarray.{fn.__name__}"), (fn, f"numpy._core.multiarray.{fn.__name__}")]
    for name in ("Float16DType", "Float32DType", "Float64DType", "LongDoubleDType", "Int8DType",
                 "Int16DType", "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType",
                 "UInt64DType", "BoolDType", "LongDType", "ULongDType", "LongLongDType", "ULongLongDType"):
        cls = getattr(np.dtypes, name, None)
        if cls is not None:
            out.append(cls)
    return out


def _where_to_get() -> str:
    return f"get it from {OFFICIAL_SOURCE}"


def _bad_structure(path: Any, problem: str) -> DataFileError:
    return DataFileError(
        f"unexpected NAS-Bench-201 benchmark file {path}: {problem}\n"
        f"  expected: {EXPECTED_STRUCTURE}\n  {_where_to_get()}"
    )


def _validate(data: Any, path: Any) -> dict:
    if not isinstance(data, Mapping):
        raise _bad_structure(path, f"top level is a {type(data).__name__}, not a dict")
    missing = [k for k in ("meta_archs", "arch2infos", "evaluated_indexes") if k not in data]
    if missing:
        raise _bad_structure(path, f"missing key(s) {', '.join(repr(k) for k in missing)}")
    if not isinstance(data["meta_archs"], (list, tuple)) or not all(
            isinstance(a, str) for a in data["meta_archs"]):
        raise _bad_structure(path, "'meta_archs' is not a list of arch strings")
    if not isinstance(data["arch2infos"], Mapping):
        raise _bad_structure(path, f"'arch2infos' is a {type(data['arch2infos']).__name__}, not a dict")
    if not isinstance(data["evaluated_indexes"], (set, frozenset, list, tuple)):
        raise _bad_structure(
            path, f"'evaluated_indexes' is a {type(data['evaluated_indexes']).__name__}, not a set or list")
    return dict(data)


def load_official_benchmark(path: str | os.PathLike) -> dict:
    """Load the official NAS-Bench-201 ``.pth`` safely (``weights_only=True``) and check its top level.

    Never falls back to unrestricted unpickling: a file that needs globals outside the safe set
    (torch's weights-only set plus numpy scalars/arrays) is refused with an :class:`UnsafePickleError`
    (a :class:`DataFileError`).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataFileError(
            f"missing NAS-Bench-201 benchmark file {path}\n"
            f"  expected: {EXPECTED_STRUCTURE}\n  {_where_to_get()}")
    extra = [g for g in _numpy_safe_globals() if g not in torch.serialization.get_safe_globals()]
    try:
        with torch.serialization.safe_globals(extra):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        found = re.search(r"GLOBAL (\S+)", msg)  # torch names the refused global this way
        if found:
            raise UnsafePickleError(
                f"refusing to load {path}: it contains objects outside the safe set (global "
                f"{found.group(1)!r}), which could execute code when unpickled; the genuine benchmark "
                f"file holds only dicts, lists, numbers, strings and tensors.\n"
                f"  expected: {EXPECTED_STRUCTURE}\n  {_where_to_get()}") from None
        raise DataFileError(
            f"refusing to load {path}: the safe (weights-only) unpickler cannot read it, so it is corrupt "
            f"or contains objects outside the safe set ({_first_line(msg)}).\n"
            f"  expected: {EXPECTED_STRUCTURE}\n  {_where_to_get()}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        # the weights-only unpickler raises e.g. KeyError(101) on a byte that is no pickle opcode (a text file)
        what = (f"not a torch/pickle file (its byte {e.args[0]!r} is no pickle opcode)"
                if isinstance(e, KeyError) and e.args and isinstance(e.args[0], int)
                else f"{type(e).__name__}{': ' + _first_line(str(e)) if str(e).strip() else ' (truncated?)'}")
        raise DataFileError(
            f"corrupt or unreadable NAS-Bench-201 benchmark file {path}: {what}\n"
            f"  expected: {EXPECTED_STRUCTURE}\n  {_where_to_get()}") from None
    return _validate(data, path)


def _first_line(msg: str) -> str:
    """The unpickler's own complaint inside torch's message, without the advice to load unsafely."""
    detail = msg.rsplit("WeightsUnpickler error:", 1)[-1]
    for line in detail.splitlines():
        line = line.strip()
        if line and not line.startswith(("Weights only load failed", "Check the documentation")):
            return line[:300]
    return "no detail"


def _build_api(data: dict, source: Any):
    """An ``NASBench201API`` holding the file's results.

    The constructor deep-copies the dict it is given, which for the real file doubles a peak memory
    of many GB and takes minutes.  So it is given the file's dict with an empty ``arch2infos``, and its
    ``arch2infos_dict`` is then filled exactly as the constructor fills it
    (``{'12': ArchResults.create_from_state_dict(less), '200': ...(full)}`` in sorted key order).
    Passing a dict also keeps the package away from its own unrestricted ``torch.load``.
    """
    from collections import OrderedDict

    from nas_201_api import ArchResults, NASBench201API

    skeleton = {"meta_archs": data["meta_archs"], "arch2infos": {},
                "evaluated_indexes": data["evaluated_indexes"]}
    try:
        api = NASBench201API(skeleton, verbose=False)
    except AssertionError as e:  # duplicate arch strings
        raise _bad_structure(source, f"'meta_archs' is inconsistent: {e}") from None
    for key in sorted(data["arch2infos"].keys()):
        entry = data["arch2infos"][key]
        if not isinstance(entry, Mapping):
            raise _bad_structure(source, f"arch2infos[{key!r}] is a {type(entry).__name__}, not a dict")
        hp2res: OrderedDict = OrderedDict()
        for hp, name in (("12", "less"), ("200", "full")):
            if name not in entry:
                continue  # the whole schedule is missing for this cell: its columns stay NaN
            try:
                hp2res[hp] = ArchResults.create_from_state_dict(entry[name])
            except (AssertionError, ValueError, TypeError, AttributeError) as e:
                raise _bad_structure(
                    source, f"arch2infos[{key!r}][{name!r}] is not an ArchResults state dict ({e})") from None
        api.arch2infos_dict[key] = hp2res
    return api


def _acc(api, index: int, dataset: str, hp: str, field: str) -> float:
    if hp not in api.arch2infos_dict.get(index, {}):
        return math.nan
    try:
        info = api.get_more_info(index, dataset, iepoch=None, hp=hp, is_random=False)
    except _MISSING:
        return math.nan
    value = info.get(field)
    return math.nan if value is None else float(value)


def _params(api, index: int, dataset: str) -> float:
    # ``get_cost_info`` is ``query_meta_info_by_index(index, hp).get_compute_costs(dataset)``, but
    # query_meta_info_by_index deep-copies the whole ArchResults (every epoch of every seed) on each
    # call; calling get_compute_costs on the stored ArchResults gives the same numbers without the copy.
    for hp in ("200", "12"):
        res = api.arch2infos_dict.get(index, {}).get(hp)
        if res is None:
            continue
        try:
            value = res.get_compute_costs(dataset)["params"]
        except _MISSING:
            continue
        if value is not None and not math.isnan(float(value)):
            return float(value)
    return math.nan


def truth_from_official(path_or_dict: str | os.PathLike | Mapping, progress: Callable | None = None) -> pd.DataFrame:
    """One row per (task, cell index) for the tasks cifar10, cifar100, ImageNet16-120.

    Columns: ``index`` (int64), ``arch`` (official arch string), ``task``, ``test_acc_200``,
    ``val_acc_200``, ``test_acc_12``, ``val_acc_12`` (%, seed means of the last epoch) and ``params``
    (millions, for the task's classifier head).  Test accuracy: ``cifar10`` dataset ``ori-test`` for
    cifar10, ``x-test`` otherwise; validation accuracy: ``cifar10-valid`` dataset ``x-valid`` for
    cifar10, ``x-valid`` otherwise.  Missing entries are NaN.  Rows are ordered by task, then index.

    ``progress``: a wrapper ``progress(iterable, desc=..., unit=...)`` of the loop over cells, such as
    ``proxybench.progress.progress`` (datasets/ does not import bench); None or False: no progress.
    """
    if isinstance(path_or_dict, Mapping):
        source = "<in-memory dict>"
        data = _validate(path_or_dict, source)
    else:
        source = path_or_dict
        data = load_official_benchmark(path_or_dict)
    api = _build_api(data, source)
    del data  # the API holds what it needs; let the raw dict go before the long loop

    per_task: dict[str, list[tuple]] = {t: [] for t in TASKS}
    cells = progress(api.meta_archs, desc="NAS-Bench-201 cells", unit="cell") if progress else api.meta_archs
    for index, arch in enumerate(cells):
        for task in TASKS:
            if task == "cifar10":
                test_ds, val_ds, params_ds = "cifar10", "cifar10-valid", "cifar10"
            else:
                test_ds = val_ds = params_ds = task
            row = [index, arch, task]
            for hp in ("200", "12"):
                row.append(_acc(api, index, test_ds, hp, "test-accuracy"))
                row.append(_acc(api, index, val_ds, hp, "valid-accuracy"))
            p = _params(api, index, params_ds)
            if math.isnan(p) and task == "cifar10":
                p = _params(api, index, "cifar10-valid")  # same network and head (10 classes)
            row.append(p)
            per_task[task].append(tuple(row))

    rows = [r for t in TASKS for r in per_task[t]]
    df = pd.DataFrame.from_records(rows, columns=COLUMNS)
    df["index"] = df["index"].astype("int64")
    df["arch"] = df["arch"].astype(str)
    df["task"] = df["task"].astype(str)
    for col in COLUMNS[3:]:
        df[col] = df[col].astype("float64")
    return df


def write_truth_parquet(df: pd.DataFrame, out_path: str | os.PathLike) -> Path:
    """Write ``df`` to ``out_path`` atomically: a temp file in the same directory, then ``os.replace``."""
    out = Path(out_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return out
