"""The official NAS-Bench-201 file converter, on a tiny file written in the official format.

The file is built the way NAS-Bench-201's own scripts built it: one ``ResultsCount`` per (dataset,
seed) with per-epoch train/eval dicts, gathered into an ``ArchResults`` per schedule ('less' = hp 12,
'full' = hp 200), saved as state dicts under ``arch2infos``.
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from nas_201_api import ArchResults, ResultsCount

from proxybench.datasets.errors import DataFileError, UnsafePickleError
from proxybench.datasets.nb201_official import (
    OFFICIAL_FILENAME,
    load_official_benchmark,
    truth_from_official,
    write_truth_parquet,
)

ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",  # listed in meta_archs but never evaluated
]
SEEDS = (777, 888)
EPOCHS = {"12": 12, "200": 200}
# the eval sets each dataset has in the official file
EVAL_SETS = {
    "cifar10-valid": ("x-valid", "ori-test"),
    "cifar10": ("ori-test",),
    "cifar100": ("x-valid", "x-test", "ori-test"),
    "ImageNet16-120": ("x-valid", "x-test", "ori-test"),
}
CLASSES = {"cifar10-valid": 10, "cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}
PARAMS = {  # cell -> dataset -> params (MB); same for every seed and schedule, as in the real file
    0: {"cifar10-valid": 1.531546, "cifar10": 1.531546, "cifar100": 1.554676, "ImageNet16-120": 1.566376},
    1: {"cifar10-valid": 0.286826, "cifar10": 0.286826, "cifar100": 0.309956, "ImageNet16-120": 0.321656},
}

# Last-epoch accuracies (seed 777, seed 888); every earlier epoch is 10 points lower.
FINAL = {
    (0, "200"): {
        ("cifar10-valid", "x-valid"): (84.0, 86.0), ("cifar10-valid", "ori-test"): (88.0, 90.0),
        ("cifar10", "ori-test"): (93.0, 94.0),
        ("cifar100", "x-valid"): (70.0, 71.0), ("cifar100", "x-test"): (71.0, 72.0),
        ("cifar100", "ori-test"): (70.5, 71.5),
        ("ImageNet16-120", "x-valid"): (44.0, 45.0), ("ImageNet16-120", "x-test"): (45.0, 47.0),
        ("ImageNet16-120", "ori-test"): (44.5, 46.0),
    },
    (0, "12"): {
        ("cifar10-valid", "x-valid"): (70.0, 72.0), ("cifar10-valid", "ori-test"): (73.0, 74.0),
        ("cifar10", "ori-test"): (76.0, 77.0),
        ("cifar100", "x-valid"): (40.0, 41.0), ("cifar100", "x-test"): (42.0, 43.0),
        ("cifar100", "ori-test"): (41.0, 42.0),
        ("ImageNet16-120", "x-valid"): (20.0, 21.0), ("ImageNet16-120", "x-test"): (22.0, 22.5),
        ("ImageNet16-120", "ori-test"): (21.0, 21.75),
    },
    (1, "200"): {
        ("cifar10-valid", "x-valid"): (80.25, 80.75), ("cifar10-valid", "ori-test"): (83.0, 83.0),
        ("cifar10", "ori-test"): (86.5, 87.5),
        ("cifar100", "x-valid"): (60.0, 62.0), ("cifar100", "x-test"): (61.0, 61.5),
        ("cifar100", "ori-test"): (60.5, 61.75),
        ("ImageNet16-120", "x-valid"): (30.0, 33.0), ("ImageNet16-120", "x-test"): (31.0, 32.0),
        ("ImageNet16-120", "ori-test"): (30.5, 32.5),
    },
    # cell 1 has no ImageNet16-120 run on the 12-epoch schedule -> NaN there
    (1, "12"): {
        ("cifar10-valid", "x-valid"): (60.0, 61.0), ("cifar10-valid", "ori-test"): (62.0, 63.0),
        ("cifar10", "ori-test"): (65.0, 66.0),
        ("cifar100", "x-valid"): (30.0, 30.5), ("cifar100", "x-test"): (31.0, 31.5),
        ("cifar100", "ori-test"): (30.5, 31.0),
    },
}

NAN = math.nan
# Seed means computed by hand from FINAL:
# (index, task): test_acc_200, val_acc_200, test_acc_12, val_acc_12, params
EXPECTED = {
    (0, "cifar10"): (93.5, 85.0, 76.5, 71.0, 1.531546),
    (0, "cifar100"): (71.5, 70.5, 42.5, 40.5, 1.554676),
    (0, "ImageNet16-120"): (46.0, 44.5, 22.25, 20.5, 1.566376),
    (1, "cifar10"): (87.0, 80.5, 65.5, 60.5, 0.286826),
    (1, "cifar100"): (61.25, 61.0, 31.25, 30.25, 0.309956),
    (1, "ImageNet16-120"): (31.5, 31.5, NAN, NAN, 0.321656),
    (2, "cifar10"): (NAN, NAN, NAN, NAN, NAN),
    (2, "cifar100"): (NAN, NAN, NAN, NAN, NAN),
    (2, "ImageNet16-120"): (NAN, NAN, NAN, NAN, NAN),
}


def _results_count(cell: int, hp: str, dataset: str, seed_pos: int) -> ResultsCount:
    epochs = EPOCHS[hp]
    seed = SEEDS[seed_pos]
    arch_config = {"channel": 16, "num_cells": 5, "arch_str": ARCHS[cell], "class_num": CLASSES[dataset]}
    params = PARAMS[cell][dataset]
    if cell == 1:
        params = np.float64(params)  # files of that era may hold numpy scalars; the safe loader allows them
    train_accs = {e: 50.0 + e * 0.1 for e in range(epochs)}
    train_losses = {e: 2.0 - e * 0.005 for e in range(epochs)}
    r = ResultsCount(dataset, None, train_accs, train_losses, params, 100.0 + cell, arch_config, seed,
                     epochs, [0.01 + 0.001 * seed_pos])
    r.update_train_info(train_accs, None, train_losses, {e: 1.5 for e in range(epochs)})
    accs, losses, times = {}, {}, {}
    for set_name in EVAL_SETS[dataset]:
        final = FINAL[(cell, hp)][(dataset, set_name)][seed_pos]
        for e in range(epochs):
            key = f"{set_name}@{e}"
            accs[key] = final if e == epochs - 1 else final - 10.0
            losses[key] = 1.0
            times[key] = 0.5
    r.update_eval(accs, losses, times)
    return r


def _arch_results(cell: int, hp: str) -> dict:
    res = ArchResults(cell, ARCHS[cell])
    datasets = sorted({d for d, _ in FINAL[(cell, hp)]})
    for dataset in datasets:
        for pos in range(len(SEEDS)):
            res.update(dataset, SEEDS[pos], _results_count(cell, hp, dataset, pos))
    return res.state_dict()


def _official_dict() -> dict:
    return {
        "meta_archs": list(ARCHS),
        "arch2infos": {cell: {"less": _arch_results(cell, "12"), "full": _arch_results(cell, "200")}
                       for cell in (0, 1)},
        "evaluated_indexes": {0, 1},
    }


@pytest.fixture(scope="module")
def official_dict() -> dict:
    return _official_dict()


def _check_truth(df: pd.DataFrame) -> None:
    assert list(df.columns) == ["index", "arch", "task", "test_acc_200", "val_acc_200",
                                "test_acc_12", "val_acc_12", "params"]
    assert df["index"].dtype == np.int64
    for col in ["test_acc_200", "val_acc_200", "test_acc_12", "val_acc_12", "params"]:
        assert df[col].dtype == np.float64, col
    assert len(df) == 9
    assert not df.duplicated(["index", "task"]).any()
    assert list(df["task"].unique()) == ["cifar10", "cifar100", "ImageNet16-120"]
    for row in df.itertuples(index=False):
        assert isinstance(row.arch, str) and row.arch == ARCHS[row.index]
        want = EXPECTED[(row.index, row.task)]
        got = (row.test_acc_200, row.val_acc_200, row.test_acc_12, row.val_acc_12, row.params)
        for name, w, g in zip(["test_acc_200", "val_acc_200", "test_acc_12", "val_acc_12", "params"],
                              want, got, strict=True):
            if math.isnan(w):
                assert math.isnan(g), (row.index, row.task, name, g)
            else:
                assert g == pytest.approx(w, abs=1e-9), (row.index, row.task, name, g)


@pytest.mark.parametrize("zipfile_format", [True, False], ids=["zip", "legacy"])
def test_truth_from_official_file(tmp_path, official_dict, zipfile_format):
    path = tmp_path / OFFICIAL_FILENAME
    torch.save(official_dict, path, _use_new_zipfile_serialization=zipfile_format)
    loaded = load_official_benchmark(path)
    assert set(loaded) == {"meta_archs", "arch2infos", "evaluated_indexes"}
    _check_truth(truth_from_official(path, progress=False))


def test_truth_from_dict_and_parquet_roundtrip(tmp_path, official_dict):
    df = truth_from_official(official_dict, progress=False)
    _check_truth(df)
    out = write_truth_parquet(df, tmp_path / "sub" / "nb201_truth.parquet")
    assert out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["nb201_truth.parquet"]  # no temp file left over
    back = pd.read_parquet(out)
    _check_truth(back)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)


class _Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _EvilExec:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("evil_cls", [_Evil, _EvilExec], ids=["os.system", "exec"])
@pytest.mark.parametrize("writer", ["torch-zip", "torch-legacy", "pickle"])
def test_malicious_file_is_refused(tmp_path, evil_cls, writer):
    marker = tmp_path / "PWNED"
    payload = {"meta_archs": list(ARCHS), "arch2infos": evil_cls(marker), "evaluated_indexes": []}
    path = tmp_path / OFFICIAL_FILENAME
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch-zip")
    with pytest.raises(DataFileError) as exc:
        truth_from_official(path, progress=False)
    assert not marker.exists()
    msg = str(exc.value)
    assert isinstance(exc.value, UnsafePickleError)
    assert str(path) in msg and "safe set" in msg
    assert ("system" if evil_cls is _Evil else "exec") in msg  # names the refused global
    assert "weights_only` set to `False`" not in msg  # no advice to load it unsafely
    with pytest.raises(DataFileError):
        load_official_benchmark(path)
    assert not marker.exists()


def test_missing_arch2infos_names_the_file(tmp_path):
    path = tmp_path / "nb201.pth"
    torch.save({"meta_archs": list(ARCHS), "evaluated_indexes": [0, 1]}, path)
    with pytest.raises(DataFileError) as exc:
        truth_from_official(path, progress=False)
    msg = str(exc.value)
    assert str(path) in msg and "'arch2infos'" in msg
    assert OFFICIAL_FILENAME in msg and "meta_archs" in msg


def test_wrong_types_and_missing_file(tmp_path):
    path = tmp_path / "nb201.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(DataFileError, match="not a dict"):
        load_official_benchmark(path)
    torch.save({"meta_archs": list(ARCHS), "arch2infos": [], "evaluated_indexes": []}, path)
    with pytest.raises(DataFileError, match="'arch2infos' is a list"):
        load_official_benchmark(path)
    with pytest.raises(DataFileError, match=OFFICIAL_FILENAME):
        load_official_benchmark(tmp_path / "absent.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a torch file at all" * 10)
    with pytest.raises(DataFileError, match="garbage.pth"):
        load_official_benchmark(tmp_path / "garbage.pth")
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "nb201.pth").read_bytes()[:40])
    with pytest.raises(DataFileError, match="truncated.pth"):
        load_official_benchmark(tmp_path / "truncated.pth")
