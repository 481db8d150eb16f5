"""NB201 keys, ground truth and networks, checked against the benchmark's own files."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from proxybench.datasets import files, nb201
from proxybench.datasets.errors import ArchError, DataFileError

DATA = Path(files.REPO_ROOT).parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "nb201" / "nats_bench.csv").is_file(), reason="benchmark data absent")
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


@pytest.mark.parametrize("ops", [("none",) * 6, ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3",
                                                 "none", "skip_connect")])
def test_arch_string_round_trip(ops):
    s = nb201.arch_str(ops)
    assert nb201.parse_arch(s) == ops
    assert nb201.canonical(s) == s
    assert nb201.arch_str([nb201.OPS.index(o) for o in ops]) == s


@pytest.mark.parametrize("bad", [
    "", "|nor_conv_3x3~0|", "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",
    "|conv_5x5~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    BEST + "extra", BEST.replace("+", "-"),
])
def test_malformed_arch_strings_are_rejected_with_a_hint(bad):
    with pytest.raises(ArchError) as e:
        nb201.parse_arch(bad)
    assert "nor_conv_3x3" in str(e.value)  # the message shows the valid form / ops


def test_non_string_arch_is_rejected():
    with pytest.raises(ArchError):
        nb201.parse_arch(None)
    with pytest.raises(ArchError):
        nb201.arch_str(["none"] * 5)


@needs_data
@pytest.mark.parametrize("index", [-1, nb201.N_ARCHS, 10**6])
def test_out_of_range_index_is_rejected(index):
    with pytest.raises(ArchError, match="0..15624"):
        nb201.index_to_arch(index)


@needs_data
def test_index_and_arch_string_both_ways():
    for i in (0, 1, 6111, 15624):
        a = nb201.index_to_arch(i)
        assert nb201.arch_to_index(a) == i
        assert nb201.canonical(str(i)) == a
    assert nb201.index_to_arch(6111) == BEST


@needs_data
def test_truth_table_matches_the_benchmark_facts():
    df = nb201.load_truth()
    assert len(df) == 3 * nb201.N_ARCHS
    assert list(df.columns) == ["index", "arch", "task", *nb201.TRUTH_COLUMNS]
    c10 = df[df["task"] == "cifar10"]
    best = c10.loc[c10["test_acc_200"].idxmax()]
    assert best["index"] == 6111 and round(best["test_acc_200"], 3) == 94.373  # the data README's fact
    assert df[list(nb201.TRUTH_COLUMNS)].notna().all().all()
    # the validation JSON is matched by arch string: index 0's cifar10-valid accuracy is the mirror CSV's
    assert c10.iloc[0]["val_acc_200"] == pytest.approx(81.98266666, abs=1e-6)
    t0 = time.perf_counter()
    nb201.load_truth(["cifar100", "ImageNet16-120"])
    assert time.perf_counter() - t0 < 1.0


@needs_data
def test_unknown_task_suggests_the_right_one():
    with pytest.raises(ArchError, match="cifar100"):
        nb201.load_truth("cifar-100")


@needs_data
def test_param_counts_equal_the_benchmark_on_cells_spread_over_the_space():
    truth = nb201.load_truth(data_dir=DATA)
    idx = np.linspace(0, nb201.N_ARCHS - 1, 300).astype(int)
    exact = 0
    for i in idx:
        arch = nb201.index_to_arch(int(i))
        for task in nb201.TASKS if i % 50 == 0 else ("cifar10",):
            n = nb201.count_params(nb201.build_network(arch, task))
            official = float(truth[(truth["index"] == i) & (truth["task"] == task)]["params"].iloc[0])
            why = nb201.explain_param_mismatch(n, official)
            assert why is not None, f"index {i} {task}: built {n}, benchmark {official} M, unexplained"
            exact += why == "exact"
    assert exact >= 0.97 * (len(idx) + 2 * len(idx[idx % 50 == 0]))


def test_explain_param_mismatch_rejects_arbitrary_differences():
    assert nb201.explain_param_mismatch(129306, 0.129306) == "exact"
    assert nb201.explain_param_mismatch(129306, 0.119973).startswith("seed-mixture")  # index 296's value
    assert nb201.explain_param_mismatch(129306, 0.129307 + 0.000500) is None


@pytest.mark.parametrize("task,shape", [("cifar10", (2, 3, 32, 32)), ("ImageNet16-120", (2, 3, 16, 16))])
def test_network_forward_shape(task, shape):
    net = nb201.build_network(BEST, task)
    assert net(torch.randn(shape)).shape == (2, nb201.NUM_CLASSES[task])


# ------------------------------------------------------------------------- missing and corrupt files

@pytest.fixture
def nb201_copy(tmp_path, monkeypatch):
    if not (DATA / "nb201").is_dir():
        pytest.skip("benchmark data absent")
    monkeypatch.setenv("PROXYBENCH_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copytree(DATA / "nb201", tmp_path / "data" / "nb201")
    for p in (tmp_path / "data").rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return tmp_path / "data"


def test_missing_file_names_it_and_where_to_get_it(nb201_copy):
    (nb201_copy / "nb201" / "nats_bench.csv").unlink()
    with pytest.raises(DataFileError) as e:
        nb201.load_truth(data_dir=nb201_copy)
    msg = str(e.value)
    assert str(nb201_copy / "nb201" / "nats_bench.csv") in msg
    assert "cb5d777ec336" in msg and "NAS-Bench-201" in msg and "put it at" in msg


def test_truncated_csv_is_a_clear_error_not_a_pandas_trace(nb201_copy):
    p = nb201_copy / "nb201" / "arch_score_acc.csv"
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(DataFileError) as e:
        nb201.load_truth(data_dir=nb201_copy)
    msg = str(e.value)
    assert "arch_score_acc.csv" in msg and "rows" in msg and "checksum matches none" in msg
    assert "f386107cfaf3" in msg  # the expected checksum


def test_garbage_json_is_a_clear_error(nb201_copy):
    (nb201_copy / "nb201" / "val200" / "cifar100.json").write_text("{not json")
    with pytest.raises(DataFileError, match="cifar100.json"):
        nb201.load_truth(data_dir=nb201_copy)


def test_reordered_rows_are_detected(nb201_copy):
    p = nb201_copy / "nb201" / "mini-bench-arch-cell-accs.csv"
    lines = p.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match="official index 0"):
        nb201.load_truth(data_dir=nb201_copy)


def test_cells_without_unreachable_branches_are_the_9445_of_the_literature():
    every = nb201.all_archs()
    assert sum(nb201.no_unreachable_branches(a) for a in every) == 9445
    # node 1's conv feeds nothing (edges 1->2 and 1->3 are none): a dangling op
    assert not nb201.no_unreachable_branches("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|")
    # node 2 never sees the input but feeds the output: an op that sees no input
    assert not nb201.no_unreachable_branches("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|")
    assert nb201.no_unreachable_branches("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|skip_connect~2|")
