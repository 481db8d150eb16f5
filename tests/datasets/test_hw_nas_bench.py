"""HW-NAS-Bench tables: NASLib op indices mapped onto canonical NB201 arch keys, -1 as missing, clear errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from proxybench.datasets import files, hw_nas_bench, nb201
from proxybench.datasets.errors import ArchError, DataFileError

DATA = Path(files.REPO_ROOT).parent / "shared" / "data"
HEADER = ("net,edgegpu_latency,edgegpu_energy,raspi4_latency,edgetpu_latency,pixel3_latency,eyeriss_latency,"
          "eyeriss_energy,eyeriss_arithmetic_intensity,fpga_latency,fpga_energy")


@pytest.fixture(autouse=True)
def _derived_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(files.ENV_CACHE_DIR, str(tmp_path / "derived"))  # checksum memo of error messages


def _write(tmp_path, rows: list[str], task="cifar10") -> Path:
    d = tmp_path / "data"
    (d / "nb201" / "hw").mkdir(parents=True)
    (d / "nb201" / "hw" / f"hw_{task}.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return d


def _row(net: str, edgetpu: float = 0.5) -> str:
    return f'"{net}",5.8,24.2,10.4,{edgetpu},3.6,3.6,0.68,6.2,2.5,18.0'


def test_mapping_of_a_small_file_in_the_official_format(tmp_path):
    # NASLib: ops (skip_connect, none, nor_conv_3x3, nor_conv_1x1, avg_pool_3x3), edges 0→1, 0→2, 0→3, 1→2, 1→3, 2→3
    d = _write(tmp_path, [_row("(1, 1, 1, 1, 1, 1)"), _row("(2, 2, 2, 2, 2, 2)"), _row("(0, 1, 2, 3, 4, 0)", -1.0)])
    df = hw_nas_bench.load_hw("cifar10", d, complete=False)
    assert df["arch"].tolist() == [
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        # node 1 <- 0: skip; node 2 <- 0: none, <- 1: conv1x1; node 3 <- 0: conv3x3, <- 1: avgpool, <- 2: skip
        "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|skip_connect~2|",
    ]
    assert df["task"].eq("cifar10").all() and df["raspi4_latency"].tolist() == [10.4] * 3
    assert df["edgetpu_latency"].iloc[:2].tolist() == [0.5, 0.5] and np.isnan(df["edgetpu_latency"].iloc[2])
    assert "eyeriss_arithmetic_intensity" not in df  # not a cost


def test_mapping_is_a_bijection_with_an_inverse():
    archs = {hw_nas_bench.naslib_to_arch(t) for t in itertools.product(range(5), repeat=6)}
    assert len(archs) == nb201.N_ARCHS
    for t in [(0, 1, 2, 3, 4, 0), (4, 3, 3, 0, 0, 0), (1, 2, 3, 4, 0, 1)]:
        assert hw_nas_bench.arch_to_naslib(hw_nas_bench.naslib_to_arch(t)) == t
    with pytest.raises(ArchError):
        hw_nas_bench.naslib_to_arch((0, 1, 2, 3, 5, 0))


def test_an_incomplete_or_malformed_table_is_a_clear_error(tmp_path):
    d = _write(tmp_path, [_row("(1, 1, 1, 1, 1, 1)")])
    with pytest.raises(DataFileError, match="1 cells, expected 15625"):
        hw_nas_bench.load_hw("cifar10", d)
    d2 = _write(tmp_path / "b", [_row("(1, 1, 1, 1)")])
    with pytest.raises(DataFileError, match="six op indices"):
        hw_nas_bench.load_hw("cifar10", d2, complete=False)
    d3 = _write(tmp_path / "c", [_row("(1, 1, 1, 1, 1, 1)"), _row("(1, 1, 1, 1, 1, 1)")])
    with pytest.raises(DataFileError, match="duplicate"):
        hw_nas_bench.load_hw("cifar10", d3, complete=False)
    with pytest.raises(DataFileError, match="hw_cifar100.csv"):
        hw_nas_bench.load_hw("cifar100", tmp_path / "nowhere")


def test_output_reaches_input_by_hand():
    assert hw_nas_bench.output_reaches_input("|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|") is False
    assert hw_nas_bench.output_reaches_input("|nor_conv_1x1~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|")
    assert not hw_nas_bench.output_reaches_input("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|")


@pytest.mark.skipif(not (DATA / "nb201" / "hw" / "hw_cifar10.csv").is_file(), reason="HW-NAS-Bench table absent")
def test_real_table_covers_every_cell_and_its_edge_order_matches_the_measurements():
    df = hw_nas_bench.load_hw("cifar10", DATA)
    assert df["arch"].nunique() == nb201.N_ARCHS and df["arch"].map(nb201.canonical).eq(df["arch"]).all()
    # On the Raspberry Pi the compiler folds away a network whose cell output never sees the input: such cells
    # take far under a millisecond. Under the right edge order those fastest cells are exactly disconnected ones.
    fast = df[df["raspi4_latency"] < 1.0]
    assert len(fast) > 50
    assert not any(hw_nas_bench.output_reaches_input(a) for a in fast["arch"])
    assert df["edgetpu_latency"].isna().sum() == 4699  # the file's -1 entries
