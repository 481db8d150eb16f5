"""The NB101 section: nested default studies, an end-to-end run on a tiny table, the published column."""

from __future__ import annotations

import json

import pytest

from proxybench.datasets import files, nb101
from proxybench.studies import nb101 as nb101_report

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
    cheap, rest, second = nb101_report.default_studies(cheap_n=4, all_n=3, second_order_n=2)
    assert set(cheap.proxies).isdisjoint(rest.proxies) and set(rest.proxies).isdisjoint(second.proxies)
    assert set(second.proxies) == {"grasp"}
    from proxybench.proxies import training_free

    # every training-free proxy but those not scored on NB101 yet (named by the section's report and paragraph)
    # and those defined on NB201's networks only
    nb201_only = set(nb101_report.nb201_only())
    assert nb201_only == {"te_nas_ntk", "te_nas_lr", "swap_reg"}  # their records' spaces
    assert set(cheap.proxies) | set(rest.proxies) | set(second.proxies) == set(training_free()) - set(
        nb101_report.pending()) - nb201_only
    with_pending = nb101_report.default_studies(cheap_n=4, all_n=3, second_order_n=2, with_pending=True)
    assert set().union(*(s.proxies for s in with_pending)) == set(training_free()) - nb201_only
    # each smaller sample is nested in the larger
    assert set(second.arch_list()) < set(rest.arch_list()) < set(cheap.arch_list())
    assert len(second.arch_list()) == 2 and len(rest.arch_list()) == 3
    assert cheap.space == rest.space == second.space == "nb101" and second.batch_size == nb101_report.BATCH


def test_a_tier_without_registered_proxies_is_left_out(tiny_nb101, monkeypatch):
    monkeypatch.setattr(nb101_report, "training_free", lambda: ["params", "snip"])
    studies = nb101_report.default_studies(cheap_n=3, all_n=2)
    assert [s.proxies for s in studies] == [("params",), ("snip",)]


def test_section_end_to_end_on_a_tiny_table(tiny_nb101, tmp_path, monkeypatch):
    # two cheap data-free proxies on every cell of the tiny table: builds real nasbench-pytorch networks
    monkeypatch.setattr(nb101_report, "tier_proxies", lambda tier, with_pending=False: {"cheap": ("params",),
                                                                    "one-pass": ("synflow",)}.get(tier, ()))
    out = tmp_path / "reports"
    path, para = nb101_report.run(cache_dir=tmp_path / "scores", out_dir=out, progress=False, n_resamples=50,
                                  cheap_n=4, all_n=4, workers=1)
    text = path.read_text()
    assert "| synflow | ↑ | 4 |" in text and "| params | ↑ | 4 |" in text
    assert "0.37" in text  # synflow's published all-space value sits in its row
    assert "NAS-Bench-101" in para and (out / "figures" / "nb101_rho.png").is_file()
    # a rerun computes nothing
    import proxybench.runner as runner

    calls = []
    monkeypatch.setattr(runner, "score_job", lambda job: calls.append(job) or [])
    nb101_report.run(cache_dir=tmp_path / "scores", out_dir=out, progress=False, n_resamples=50, cheap_n=4,
                     all_n=4, workers=1)
    assert calls == []


def test_nb101_command_takes_the_tier_samples_executor_and_device(tiny_nb101, tmp_path, monkeypatch, capsys):
    from proxybench.cli import main

    # synflow a stand-in for the second-order tier: the tier mechanics, cheaply
    monkeypatch.setattr(nb101_report, "tier_proxies", lambda tier, with_pending=False: {"cheap": ("params",),
                                                                    "second-order": ("synflow",)}.get(tier, ()))
    cache, out = tmp_path / "scores", tmp_path / "reports"
    assert main(["nb101", "--cheap-sample", "all", "--second-order-sample", "2", "--executor", "inprocess",
                 "--device", "cpu", "--cache", str(cache), "--out", str(out), "--bootstrap", "20",
                 "--no-progress"]) == 0
    text = (out / "nb101.md").read_text()
    assert "| params | ↑ | 4 |" in text and "| synflow | ↑ | 2 |" in text
    assert "n=4: params; n=2: synflow" in capsys.readouterr().out
    from proxybench.cache import ScoreCache

    assert set(ScoreCache(cache).load()["device"]) == {"cpu"}


def test_published_values_outside_the_interval_of_abs_rho_are_listed():
    import pandas as pd

    summary = pd.DataFrame({"proxy": ["a", "b", "c", "d"], "rho": [0.30, -0.20, 0.05, 0.40],
                            "rho_lo": [0.25, -0.30, -0.10, 0.35], "rho_hi": [0.35, -0.10, 0.20, 0.45]})
    pub = {"a": 0.45, "b": 0.25, "c": 0.15, "d": 0.10}
    # a: 0.45 above [0.25, 0.35]; b: 0.25 inside [0.10, 0.30]; c: crosses zero, 0.15 inside [0, 0.20]; d: below
    assert nb101_report._outside_sampling_error(summary, pub) == ["a (+0.300, 0.45)", "d (+0.400, 0.1)"]
