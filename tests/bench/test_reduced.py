"""The reduced-training report section: its study, the runner's plumbing for proxies that train or read
the benchmark table, and the CLI's settings option."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from proxybench.cache import ScoreCache
from proxybench.proxies import get_proxy
from proxybench.proxies import reduced_training as rt
from proxybench.runner import Study, run_study, setting_keys, study_scores, training_source_id
from proxybench.studies import reduced


def test_default_grid_has_three_econas_settings_two_class_subsets_and_the_table():
    names = reduced.grid()
    assert sum(n.startswith("econas_") for n in names) >= 3
    assert {rt.SPECS[n]["subset"] for n in names} == {None, "easy", "random"}
    sizes = {rt.SPECS[n]["k"] for n in names if rt.SPECS[n]["subset"]}
    assert len(sizes) == 1  # easy and random subsets of the same size
    assert all(get_proxy(n).family == "reduced-training" for n in (*names, *reduced.TABLE_PROXIES))


def test_settings_option_parses_or_explains():
    assert reduced._settings("c4r4s0e10, c2r2s1e5") == ("c4r4s0e10", "c2r2s1e5")
    with pytest.raises(argparse.ArgumentTypeError, match="c<int>r<int>s<int>e<int>"):
        reduced._settings("c4r4e10")


def test_run_rejects_a_bad_sample_size(tmp_path):
    with pytest.raises(ValueError, match="--sample"):
        reduced.run(0, cache_dir=tmp_path, out=tmp_path)


def test_cells_are_the_first_of_the_training_free_sample(real_data):
    red, free = reduced.studies(12, reduced.grid(), str(real_data))
    assert red.arch_list() == free.arch_list()
    big = Study(space="nb201", tasks=("cifar10",), sample=1000, sample_seed=0, data_dir=str(real_data))
    assert set(red.arch_list()) <= set(big.arch_list())


def test_runner_gives_the_table_row_and_keys_training_proxies_by_their_images(real_data, tmp_path):
    from proxybench.datasets import nb201

    study = Study(space="nb201", tasks=("cifar10",), proxies=("nb201_12epoch", "econas_c4r4s0e1"), sample=3,
                  data_dir=str(real_data))
    keys = setting_keys(study, "cifar10")
    src, substitute = training_source_id("cifar10", str(real_data))
    assert keys["econas_c4r4s0e1"] == (get_proxy("econas_c4r4s0e1").version, 0, src)
    assert src.startswith("train=cifar10-train:") and ";heldout=cifar10-test:" in src and not substitute
    assert keys["nb201_12epoch"][1:] == (0, "none")
    table_only = Study(space="nb201", tasks=("cifar10",), proxies=("nb201_12epoch",), sample=3,
                       data_dir=str(real_data))
    cache = ScoreCache(tmp_path / "scores")
    s = run_study(table_only, cache, executor="inprocess", progress=False)
    assert s.computed == 3 and s.errors == 0
    df = study_scores(table_only, cache)
    truth = nb201.load_truth("cifar10", str(real_data)).set_index("arch")["test_acc_12"]
    assert (df["score"].to_numpy() == truth.loc[df["arch"]].to_numpy()).all()


def test_a_table_proxy_never_sees_the_final_training_columns(real_data, tmp_path, monkeypatch):
    from dataclasses import replace

    from proxybench.datasets import get_space
    from proxybench.proxies import registry

    seen = []
    info = get_proxy("nb201_12epoch")
    spy = replace(info, fn=lambda ctx: seen.append(set(ctx.table)) or 1.0)
    monkeypatch.setitem(registry._REGISTRY, info.name, spy)
    study = Study(space="nb201", tasks=("cifar10",), proxies=(info.name,), sample=2, data_dir=str(real_data))
    run_study(study, ScoreCache(tmp_path / "scores"), executor="inprocess", progress=False)
    space = get_space("nb201")
    assert space.final_truth == ("test_acc_200", "val_acc_200")
    assert len(seen) == 2 and all({"test_acc_12", "val_acc_12"} <= cols for cols in seen)
    assert all(cols.isdisjoint({space.default_truth, *space.final_truth}) for cols in seen)


def test_counts_state_absolute_image_numbers(real_data, monkeypatch):
    from proxybench.runner import training_data

    train, test = training_data("cifar10", str(real_data))
    # a given ordering: no reference network is trained here
    monkeypatch.setitem(rt.PINNED_ORDERS, rt.class_order_key(train, test, reduced.SEED), (9, 8, 7, 6, 5, 4, 3, 2, 1, 0))
    counts = reduced._counts(reduced.grid(), str(real_data))
    avail = counts["_available"]
    assert (avail["train"], avail["test"]) == (train.num_images, test.num_images)
    c = counts["econas_c4r4s2e4"]
    assert c["n_train"] == round(train.num_images / 4) and c["n_test"] == test.num_images and c["resolution"] == 8
    easy = counts[next(n for n in reduced.grid() if rt.SPECS[n]["subset"] == "easy")]
    assert easy["classes"] == [5, 6, 7, 8, 9] and easy["n_test"] == int((test.labels >= 5).sum())


def test_the_committed_class_ordering_is_pinned_and_needs_no_bench_to_reach_a_process(real_data, monkeypatch):
    import json

    from proxybench import provenance
    from proxybench.runner import training_data

    train, test = training_data("cifar10", str(real_data))
    key = rt.class_order_key(train, test, reduced.SEED)
    # the pinned ordering is the one whose evidence the committed report shows
    evidence = json.loads((provenance.REPO_ROOT / "reports" / reduced.NAME / "class_order.json").read_text())
    assert tuple(evidence["key"]) == key and tuple(evidence["order"]) == rt.PINNED_ORDERS[key]
    # what a fresh worker process sees: the proxy module alone gives the classes, no reference network is trained
    monkeypatch.setattr(rt, "_COMPUTED", {})
    monkeypatch.setattr(rt, "train_and_evaluate", lambda *a, **k: pytest.fail("trained the reference network"))
    assert rt.class_subset((train, test), "easy", rt.DANAS_K, reduced.SEED, 10) == [0, 1, 6, 7, 8]


def test_summary_columns(monkeypatch, tmp_path):
    # results() on a synthetic cache frame: signed rho, intervals and a cost per proxy
    rows = []
    for i in range(8):
        for p, score in (("econas_c4r4s0e1", i), ("params", -i)):
            rows.append({"space": "nb201", "task": "cifar10", "arch": f"a{i}", "proxy": p, "seed": 42,
                         "score": float(score), "status": "ok", "seconds": 2.0 if p != "params" else 0.01,
                         "substitute": False, "data_source": "x", "batch_size": 0, "accuracy": float(i),
                         "device": "cpu"})
    df = pd.DataFrame(rows)
    monkeypatch.setattr("proxybench.runner.study_scores", lambda study, cache: df if "params" in study.proxies else
                        df.iloc[:0])
    _, summ = reduced.results(8, ("econas_c4r4s0e1",), cache_dir=tmp_path, out=tmp_path, n_resamples=50)
    r = summ.set_index("proxy")
    assert r.loc["econas_c4r4s0e1", "rho"] == pytest.approx(1.0) and r.loc["params", "rho"] == pytest.approx(-1.0)
    assert r.loc["econas_c4r4s0e1", "cost_s"] == 2.0 and r.loc["params", "cost_from"] == "score cache (median)"
