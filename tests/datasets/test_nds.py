"""NDS loaders and networks, on files in the official schema written by datasets.nds_fixtures.

Published figures used here:
- DARTS-V2 (genotype of the DARTS repo's genotypes.py), CIFAR-10, 36 channels, 20 cells, no auxiliary head:
  3,349,342 parameters (the DARTS repo's count; the paper, Table 1, reports 3.3 M); ImageNet mobile setting
  (48 channels, 14 cells): 4.7 M (paper, Table 3);
- torchvision's resnet18 / resnet50 / resnext50_32x4d: 11,689,512 / 25,557,032 / 25,028,904 parameters.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from proxybench.cache import ScoreCache
from proxybench.datasets import files, get_space, nds
from proxybench.datasets import nds_fixtures as fx
from proxybench.datasets.errors import ArchError, DataFileError
from proxybench.runner import Study, run_study, study_scores


@pytest.fixture(autouse=True)
def _derived_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv(files.ENV_CACHE_DIR, str(tmp_path_factory.getbasetemp() / "nds-derived"))
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nds-data")
    fx.write_fixtures(root, n=3, seed=1)
    return root


def _r18():
    return {"block_type": "res_basic_block", "ds": [2, 2, 2, 2], "ws": [64, 128, 256, 512], "ss": [1, 2, 2, 2],
            "stem_type": "res_stem_in", "stem_w": 64}


def _bottleneck(bm, g):
    return {"block_type": "res_bottleneck_block", "ds": [3, 4, 6, 3], "ws": [256, 512, 1024, 2048],
            "ss": [1, 2, 2, 2], "bot_muls": [bm] * 4, "num_gs": [g] * 4, "stem_type": "res_stem_in", "stem_w": 64}


# ------------------------------------------------------------------------------------ parameter counts

def test_darts_v2_cifar_matches_the_published_count():
    net = {"genotype": fx.DARTS_V2, "width": 36, "depth": 20, "aux": False}
    built = nds.count_params(nds.build_from_net("DARTS", net))
    assert built == fx.analytic_params("DARTS", net) == 3_349_342
    assert abs(built / 1e6 - 3.3) < 0.05  # the paper's rounded figure
    # the auxiliary head counts only when asked for (pycls counts it; the proxies' network does not have it)
    net["aux"] = True
    assert nds.count_params(nds.build_from_net("DARTS", net)) == 3_349_342
    with_aux = nds.count_params(nds.build_from_net("DARTS", net, with_aux=True))
    assert with_aux == fx.analytic_params("DARTS", net) > 3_349_342


def test_darts_v2_imagenet_matches_the_published_count():
    net = {"genotype": fx.DARTS_V2, "width": 48, "depth": 14, "aux": False}
    built = nds.count_params(nds.build_from_net("DARTS_in", net))
    assert built == fx.analytic_params("DARTS_in", net)
    assert abs(built / 1e6 - 4.7) < 0.05


@pytest.mark.parametrize("net, published", [(_r18(), 11_689_512), (_bottleneck(0.25, 1), 25_557_032),
                                            (_bottleneck(0.5, 32), 25_028_904)])
def test_resnets_match_torchvision_counts(net, published):
    assert nds.count_params(nds.build_from_net("ResNeXt-A_in", net)) == fx.analytic_params("ResNeXt-A_in", net) \
        == published


def test_resnet56_cifar_is_about_085m():
    net = {"block_type": "res_basic_block", "ds": [9, 9, 9], "ws": [16, 32, 64], "ss": [1, 2, 2],
           "stem_type": "res_stem_cifar", "stem_w": 16}
    built = nds.count_params(nds.build_from_net("ResNet", net))
    # He et al.'s 0.85 M uses parameter-free shortcuts; pycls' two 1x1 projections add 2,752
    assert built == 853_018 + 2_752


# --------------------------------------------------------------------------------- every family, files

@pytest.mark.parametrize("family", nds.FAMILY_NAMES)
def test_every_family_reads_builds_and_runs(fixture_root, family):
    df = nds.check_params(family, fixture_root)
    assert len(df) == 3 and df["match"].all() and (df["recorded"] == df["built"]).all()
    space = get_space(f"nds:{family}")
    task = space.tasks[0]
    assert task == ("ImageNet16-120" if family.endswith("_in") else "cifar10")
    archs = space.all_archs(fixture_root)
    assert archs == [f"{family}:{i}" for i in range(3)]
    build = space.builder(archs[-1], task)
    build = pickle.loads(pickle.dumps(build))  # workers receive it
    torch.manual_seed(0)
    for bn in (True, False):
        net = build(bn=bn)
        assert bn or not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        out = net(torch.randn(2, 3, 16, 16))
        assert out.shape == (2, space.num_classes[task]) and torch.isfinite(out).all()


def test_truth_columns(fixture_root):
    recs = json.loads((fixture_root / "nds" / "DARTS.json").read_text())
    truth = get_space("nds:DARTS").truth("cifar10", fixture_root)
    assert list(truth["arch"]) == ["DARTS:0", "DARTS:1", "DARTS:2"]
    for i, r in enumerate(recs):
        row = truth.iloc[i]
        assert row["test_acc"] == pytest.approx(100 - r["test_ep_top1"][-1])
        assert row["best_test_acc"] == pytest.approx(100 - r["min_test_top1"])
        assert row["test_acc_e5"] == pytest.approx(100 - r["test_ep_top1"][4])
        assert row["params_raw"] == r["params"]
    assert truth["test_acc_e50"].isna().all()  # the generated runs have 10 epochs


def test_top_mid_layout_is_joined_in_order(tmp_path):
    fx.write_fixtures(tmp_path, families=["DARTS"], n=4, seed=3)
    recs = json.loads((tmp_path / "nds" / "DARTS.json").read_text())
    (tmp_path / "nds" / "DARTS.json").write_text(json.dumps({"top": recs[:1], "mid": recs[1:]}))
    df = nds.load_table("DARTS", tmp_path)
    assert [json.loads(s) for s in df["net_json"]] == [r["net"] for r in recs]


# ------------------------------------------------------------------------------------- malformed input

def _write(tmp_path, family, data):
    (tmp_path / "nds").mkdir(exist_ok=True)
    (tmp_path / "nds" / f"{family}.json").write_text(json.dumps(data) if not isinstance(data, str) else data)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("net"), "'net'"),
    (lambda r: r["net"]["genotype"]["normal"].__setitem__(0, ["sep_conv_3x3", 7]), "out of range"),
    (lambda r: r["net"]["genotype"]["normal"].__setitem__(0, ["sep_conv_9x9", 0]), "unknown op"),
    (lambda r: r["net"].__setitem__("depth", 0), "net.depth"),
    (lambda r: r.__setitem__("test_ep_top1", []), "test_ep_top1"),
    (lambda r: r.__setitem__("params", "many"), "'params'"),
])
def test_malformed_record_names_file_and_index(tmp_path, mutate, message):
    fx.write_fixtures(tmp_path, families=["DARTS"], n=3)
    recs = json.loads((tmp_path / "nds" / "DARTS.json").read_text())
    mutate(recs[2])
    _write(tmp_path, "DARTS", recs)
    with pytest.raises(DataFileError, match=message) as e:
        nds.load_table("DARTS", tmp_path)
    assert "DARTS.json" in str(e.value) and "record 2" in str(e.value)


def test_malformed_resnext_groups(tmp_path):
    fx.write_fixtures(tmp_path, families=["ResNeXt-B"], n=2)
    recs = json.loads((tmp_path / "nds" / "ResNeXt-B.json").read_text())
    recs[1]["net"]["num_gs"][0] = 3
    recs[1]["net"]["bot_muls"][0] = 1.0
    recs[1]["net"]["ws"][0] = 16
    _write(tmp_path, "ResNeXt-B", recs)
    with pytest.raises(DataFileError, match=r"ResNeXt-B\.json, record 1: .*num_gs"):
        nds.load_table("ResNeXt-B", tmp_path)


@pytest.mark.parametrize("text, message", [("{not json", "not readable as JSON"), ("[]", "non-empty list"),
                                           ('{"top": []}', "'top' and 'mid'")])
def test_malformed_file(tmp_path, text, message):
    _write(tmp_path, "ENAS", text)
    with pytest.raises(DataFileError, match=message):
        nds.load_table("ENAS", tmp_path)


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataFileError, match=r"(?s)nds/PNAS\.json.*dl\.fbaipublicfiles\.com/nds/data\.zip"):
        get_space("nds:PNAS").all_archs(tmp_path)


def test_keys(fixture_root):
    space = get_space("nds:ENAS")
    assert space.canonical("2", fixture_root) == space.canonical("ENAS:2", fixture_root) == "ENAS:2"
    with pytest.raises(ArchError, match="out of range"):
        space.canonical("ENAS:3", fixture_root)
    with pytest.raises(ArchError, match="belongs to NDS family DARTS"):
        space.canonical("DARTS:0", fixture_root)
    with pytest.raises(ArchError, match="did you mean"):
        nds.parse_key("DART:0")
    with pytest.raises(ArchError, match="unknown task"):
        space.builder("ENAS:0", "ImageNet16-120")


# ---------------------------------------------------------------------------------------- the runner

def test_runner_scores_an_nds_family(fixture_root, tmp_path):
    study = Study(space="nds:DARTS", tasks=("cifar10",), proxies=("params", "synflow"), sample=None,
                  data_dir=str(fixture_root))
    summary = run_study(study, ScoreCache(tmp_path / "scores"), executor="inprocess", progress=False)
    assert summary.computed == 6 and summary.errors == 0
    df = study_scores(study, ScoreCache(tmp_path / "scores"))
    assert len(df) == 6 and df["accuracy"].notna().all()
    params = df[df["proxy"] == "params"].set_index("arch")
    assert params["score"].round().astype(int).to_dict() == params["params_raw"].to_dict()


def test_cli_family_option(fixture_root, tmp_path, monkeypatch, capsys):
    from proxybench.cli import main

    monkeypatch.setenv(files.ENV_DATA_DIR, str(fixture_root))  # main() sets it from --data-dir; restored after
    rc = main(["run", "--space", "nds", "--family", "ResNet", "--data-dir", str(fixture_root), "--proxies", "params",
               "--sample", "2", "--cache", str(tmp_path / "c"), "--executor", "inprocess", "--no-progress"])
    assert rc == 0 and "2 computed" in capsys.readouterr().out
    rc = main(["run", "--space", "nds", "--family", "ResNet_in", "--data-dir", str(fixture_root)])
    assert rc == 2 and "unknown search space" in capsys.readouterr().err
