"""The NB101 section: nested default studies, an end-to-end run on a tiny table, the published column."""

from __future__ import annotations

import json

import pytest

from bench import nb101_report
from datasets import files, nb101

MATRIX = [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
CELLS = [[[MATRIX, ["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "output"]], 0.91],
         [[MATRIX, ["input", "conv3x3-bn-relu", "maxpool3x3", "output"]], 0.88],
         [[MATRIX, ["input", "maxpool3x3", "maxpool3x3", "output"]], 0.80],
         [[[[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv1x1-bn-relu", "output"]], 0.85]]


@pytest.fixture
def tiny_nb101(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "nb101").mkdir(parents=True)
    (root / nb101.MIRROR_KEY).write_text(json.dumps(CELLS))
    monkeypatch.setenv(files.ENV_DATA_DIR, str(root))
    monkeypatch.setenv(files.ENV_CACHE_DIR, str(tmp_path / "derived"))
    return root


def test_default_studies_are_nested_and_cover_every_training_free_proxy(tiny_nb101):
    cheap, rest = nb101_report.default_studies(cheap_n=3, all_n=2)
    assert set(cheap.proxies).isdisjoint(rest.proxies)
    from proxies import training_free

    assert set(cheap.proxies) | set(rest.proxies) == set(training_free())
    assert set(rest.arch_list()) < set(cheap.arch_list())  # the smaller sample is nested in the larger
    assert cheap.space == rest.space == "nb101" and rest.batch_size == nb101_report.BATCH


def test_section_end_to_end_on_a_tiny_table(tiny_nb101, tmp_path, monkeypatch):
    # two cheap data-free proxies on every cell of the tiny table: builds real nasbench-pytorch networks
    monkeypatch.setattr(nb101_report, "CHEAP", ("params",))
    monkeypatch.setattr(nb101_report, "training_free", lambda: ["params", "synflow"])
    out = tmp_path / "reports"
    path, para = nb101_report.run(cache_dir=tmp_path / "scores", out_dir=out, progress=False, n_resamples=50,
                                  cheap_n=4, all_n=4, workers=1)
    text = path.read_text()
    assert "| synflow | ↑ | 4 |" in text and "| params | ↑ | 4 |" in text
    assert "0.37" in text  # synflow's published all-space value sits in its row
    assert "NAS-Bench-101" in para and (out / "figures" / "nb101_rho.png").is_file()
    # a rerun computes nothing
    import bench.runner as runner

    calls = []
    monkeypatch.setattr(runner, "score_job", lambda job: calls.append(job) or [])
    nb101_report.run(cache_dir=tmp_path / "scores", out_dir=out, progress=False, n_resamples=50, cheap_n=4,
                     all_n=4, workers=1)
    assert calls == []
