"""Score files of other tools (proxybench.scorefiles): NASLib's key encoding, reading files in the official format into
external rows, writing the suite's cache in it, and the report's agreement table."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from proxybench import scorefiles as S
from proxybench.cache import ScoreCache
from proxybench.cache import row as cache_row
from proxybench.cli import main
from proxybench.datasets import nb101, nb201

# the README's example cell (REFERENCES.md: NASLib numbers skip_connect 0, none 1, conv3x3 2, conv1x1 3, pool 4)
EXAMPLE_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"
EXAMPLE_KEY = "(2, 2, 4, 0, 2, 0)"
# NB101's official example cell (the nasbench README), 7 vertices: 49 adjacency entries then 7 op indices
NB101_MATRIX = [[0, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0, 0],
                [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]]
NB101_OPS = ["input", "conv1x1-bn-relu", "conv3x3-bn-relu", "conv3x3-bn-relu", "conv3x3-bn-relu", "maxpool3x3",
             "output"]


def _nb101_key(matrix, ops) -> str:
    return str(tuple([x for r in matrix for x in r] + [S.NB101_OPS.index(o) for o in ops]))


def _write(path, doc):
    path.write_text(json.dumps(doc))
    return path


# ------------------------------------------------------------------------------------------------ keys

def test_nb201_keys_follow_naslib_op_and_edge_order():
    assert S.nb201_arch(EXAMPLE_KEY) == EXAMPLE_ARCH
    assert S.nb201_key(EXAMPLE_ARCH) == EXAMPLE_KEY
    # NASLib's edge (1, 4) is node 3's input 0: the fourth op of the arch string, not the third
    assert nb201.parse_arch(S.nb201_arch("(1, 1, 3, 1, 1, 1)")) == ("none", "none", "none", "nor_conv_1x1",
                                                                    "none", "none")
    # a bijection between NASLib's 5^6 keys and the official arch strings
    archs = {S.nb201_arch(str(k)) for k in itertools.product(range(5), repeat=6)}
    assert len(archs) == nb201.N_ARCHS
    assert all(S.nb201_arch(S.nb201_key(a)) == a for a in itertools.islice(sorted(archs), 0, None, 97))


def test_nb101_keys_are_adjacency_then_ops():
    key = _nb101_key(NB101_MATRIX, NB101_OPS)
    assert S.nb101_arch(key) == nb101.module_hash(NB101_MATRIX, NB101_OPS)
    # a pruned cell of 3 vertices: 9 adjacency entries and 3 op indices
    chain, ops = [[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "maxpool3x3", "output"]
    small = _nb101_key(chain, ops)
    assert len(json.loads(small.replace("(", "[").replace(")", "]"))) == 12
    assert S.nb101_arch(small) == nb101.module_hash(chain, ops)


@pytest.mark.parametrize("space,key,match", [
    ("nb201", "(1, 2, 3)", "3 numbers, expected 6"),
    ("nb201", "[0, 1, 2, 3, 4, 0]", "malformed key"),
    ("nb201", "(0, 1, 2, 3, 4, x)", "malformed key"),
    ("nb201", "|nor_conv_3x3~0|+", "malformed key"),
    ("nb201", "(0, 1, 2, 5, 4, 0)", "unknown op index 5"),
    ("nb101", "(0, 1, 0, 0, 0, 0, 0, 0, 0, 0)", "n\\*n \\+ n numbers"),
    ("nb101", "(0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 7, 1)", "unknown op index 7"),
    ("nb101", "(0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 2, 1)", "not a valid cell.*upper-triangular"),
    ("nb101", "(0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 2, 0)", "not a valid cell.*'output'"),
])
def test_malformed_keys_are_clear_errors(space, key, match):
    with pytest.raises(S.ScoreFileError, match=match):
        S.arch_of(space, key, "zc.json: cifar10")


def test_external_names_resolve_but_are_never_computed(tmp_path):
    from proxybench.proxies import TRAINING_FREE, UnknownProxyError, get_proxy, list_proxies, resolve_proxies
    from proxybench.runner import Study, plan

    info, base = get_proxy("naslib:synflow"), get_proxy("synflow")
    assert (info.external, info.version, info.higher_is_better, info.nan_policy) == ("naslib", 0,
                                                                                     base.higher_is_better,
                                                                                     base.nan_policy)
    assert "naslib:synflow" not in list_proxies()
    names = resolve_proxies("synflow,naslib:*")
    assert names[0] == "synflow" and "naslib:jacob_cov" in names
    assert all(get_proxy(n.split(":", 1)[1]).family in TRAINING_FREE for n in names[1:])
    for bad in ("naslib:nope", "elsewhere:synflow"):
        with pytest.raises(UnknownProxyError):
            get_proxy(bad)
    with pytest.raises(RuntimeError, match="computed elsewhere"):
        info.fn(None)
    study = Study(space="nb201", proxies=("params", "naslib:synflow"), archs=(EXAMPLE_ARCH,))
    jobs, _ = plan(study, ScoreCache(tmp_path / "cache"))
    assert [names for j in jobs for _, names in j.items] == [("params",)]


# ------------------------------------------------------------------------------------------------ files

def test_malformed_files_are_clear_errors(tmp_path):
    good = {"cifar10": {EXAMPLE_KEY: {"synflow": {"score": 1.0, "time": 0.1}, "val_accuracy": 90.0}}}
    path = _write(tmp_path / "zc_nasbench201.json", good)
    assert S.read_naslib(path, "nb201").scores["arch"].tolist() == [EXAMPLE_ARCH]
    truncated = tmp_path / "truncated.json"
    truncated.write_text(path.read_text()[:-7])
    with pytest.raises(S.ScoreFileError, match="not a complete JSON document.*truncated"):
        S.read_naslib(truncated, "nb201")
    cases = [({"cifar-10": good["cifar10"]}, "dataset 'cifar-10' is not a task of nb201.*did you mean 'cifar10'"),
             ({"cifar10": {EXAMPLE_KEY: {"synflow": 3.0}}}, "expected \\{\"score\""),
             ({"cifar10": {EXAMPLE_KEY: {"synflow": {"score": "high"}}}}, "expected a number"),
             ({"cifar10": {EXAMPLE_KEY: [1, 2]}}, "expected an object of proxies"),
             ({"cifar10": {"(9, 9, 9, 9, 9, 9)": good["cifar10"][EXAMPLE_KEY]}}, "unknown op index 9"),
             ([1, 2], "expected a JSON object"),
             ({}, "expected a JSON object")]
    for doc, match in cases:
        with pytest.raises(S.ScoreFileError, match=match):
            S.read_naslib(_write(tmp_path / "bad.json", doc), "nb201")
    with pytest.raises(FileNotFoundError):
        S.read_naslib(tmp_path / "absent.json", "nb201")


def test_proxy_names_are_mapped_and_unknown_ones_listed(tmp_path):
    doc = {"cifar10": {EXAMPLE_KEY: {"jacov": {"score": 2.0, "time": 0.1}, "nwot": {"score": 3.0, "time": 0.1},
                                     "mystery": {"score": 1.0}, "zzz": {"score": 1.0}, "val_accuracy": 91.0}}}
    path = _write(tmp_path / "zc.json", doc)
    with pytest.raises(S.ScoreFileError, match="does not know: mystery \\(1 scores\\), zzz \\(1 scores\\).*jacov = "
                                               "jacob_cov.*--skip-unknown"):
        S.read_naslib(path, "nb201")
    sf = S.read_naslib(path, "nb201", skip_unknown=True)
    assert sorted(sf.scores["proxy"]) == ["jacob_cov", "nwot"]
    assert sf.skipped == {"mystery": 1, "zzz": 1}
    assert sf.val_accuracy["val_accuracy"].tolist() == [91.0]
    assert S.naslib_name("jacob_cov") == "jacov" and S.naslib_name("synflow") == "synflow"


# --------------------------------------------------------------------------------------- import / export

def _suite_rows(space: str, archs, proxies=("params", "synflow"), task: str = "cifar10") -> list[dict]:
    """Rows as the suite writes them for data-free proxies (scores made up: nothing is computed)."""
    from proxybench.datasets import get_space

    sp = get_space(space)
    rng = np.random.default_rng(0)
    return [cache_row(space=space, task=task, arch=a, proxy=p, proxy_version=1, seed=42, init=sp.init,
                      score=float(rng.lognormal(3, 1)), seconds=0.01, git_commit="abc")
            for a in archs for p in proxies]


@pytest.fixture
def nb201_cells(real_data):
    from proxybench.runner import draw_order

    return draw_order("nb201", 30, 0, real_data)  # a prefix of the seeded permutation: what search simulates


def test_import_writes_external_rows_once(tmp_path, nb201_cells, real_data):
    truth = nb201.load_truth("cifar10", real_data).set_index("arch")
    doc = {"cifar10": {S.nb201_key(a): {"synflow": {"score": float(i), "time": 0.5},
                                        "jacov": {"score": math.nan if i == 3 else -float(i), "time": 0.25},
                                        "val_accuracy": float(truth.loc[a, "val_acc_200"])}
                       for i, a in enumerate(nb201_cells)}}
    path = _write(tmp_path / "zc_nasbench201.json", doc)
    cache = tmp_path / "cache"
    s = S.import_scores(path, "nb201", cache, data_dir=real_data)
    assert (s.written, s.already, s.by_task, s.proxies) == (60, 0, {"cifar10": 30},
                                                            ["naslib:jacob_cov", "naslib:synflow"])
    assert s.val_check["cifar10"][0] == 30 and s.val_check["cifar10"][1] == pytest.approx(1.0)
    df = ScoreCache(cache).load()
    assert set(df["data_source"]) == {f"external:naslib:{s.sha256[:12]}"}
    assert set(df["proxy_version"]) == {0} and set(df["init"]) == {S.EXTERNAL_INIT}
    assert set(df["device"]) == {"external"} and set(df["git_commit"]) == {"external"}
    assert df["cpu"].str.contains("computed elsewhere: zc_nasbench201.json").all()
    assert set(df["arch"]) == set(nb201_cells) and (df["seed"] == 42).all()
    assert df.loc[df["proxy"] == "naslib:synflow", "seconds"].eq(0.5).all()
    assert (df["status"] == "nonfinite").sum() == 1
    again = S.import_scores(path, "nb201", cache, data_dir=real_data)
    assert (again.written, again.already) == (0, 60)
    other = _write(tmp_path / "other.json", {"cifar10": {S.nb201_key(nb201_cells[0]): {"synflow": {"score": 9.0}}}})
    with pytest.raises(S.ScoreFileError, match="already holds naslib:synflow .* from another file"):
        S.import_scores(other, "nb201", cache, data_dir=real_data)
    assert len(ScoreCache(cache).load()) == 60
    # the CLI: --cache is required (a trial import never lands in the committed cache by default)
    with pytest.raises(SystemExit):
        main(["import-scores", str(path), "--space", "nb201"])


def test_export_import_round_trip_and_agreement(tmp_path, nb201_cells, real_data, capsys):
    suite = tmp_path / "suite"
    ScoreCache(suite).append(_suite_rows("nb201", nb201_cells))
    out = tmp_path / "zc_nasbench201.json"
    assert main(["export-scores", "--space", "nb201", "--cache", str(suite), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert list(doc) == ["cifar10"] and len(doc["cifar10"]) == 30
    entry = doc["cifar10"][S.nb201_key(nb201_cells[0])]
    assert set(entry) == {"params", "synflow", "val_accuracy"} and set(entry["synflow"]) == {"score", "time"}
    # imported beside the suite's own rows: the same scores under naslib:<proxy>
    assert main(["import-scores", str(out), "--space", "nb201", "--cache", str(suite)]) == 0
    assert "Spearman ρ +1.0000" in capsys.readouterr().out  # val_accuracy decoded to the cells it names
    df = ScoreCache(suite).load()
    mine = df[df["proxy"] == "synflow"].set_index("arch")["score"]
    theirs = df[df["proxy"] == "naslib:synflow"].set_index("arch")["score"]
    pd.testing.assert_series_equal(mine.sort_index(), theirs.sort_index(), check_names=False)
    ag = S.agreement(df)
    assert sorted(ag["proxy"]) == ["params", "synflow"]
    assert (ag["n"] == 30).all() and np.allclose(ag["rho"], 1.0) and (ag["median_rel_diff"] == 0).all()

    # the report shows both, and the agreement table
    rep = tmp_path / "rep"
    assert main(["report", "--cache", str(suite), "--out", str(rep), "--bootstrap", "20"]) == 0
    text = (rep / "README.md").read_text()
    assert "## Agreement with imported score files" in text
    assert "| nb201 · cifar10 | 42 | synflow | naslib:synflow |" in text
    assert "naslib:params" in text

    # compare selects them with a wildcard; nothing is computed for an external name
    cells = tmp_path / "cells.txt"
    cells.write_text("\n".join(nb201_cells) + "\n")
    before = len(ScoreCache(suite).parts())
    assert main(["compare", "synflow", "--space", "nb201", "--task", "cifar10", "--archs-file", str(cells),
                 "--baselines", "naslib:*", "--cache", str(suite), "--out", str(rep), "--bootstrap", "20",
                 "--no-progress", "--executor", "inprocess"]) == 0
    assert "| naslib:synflow | ↑ | 30 |" in (rep / "compare_synflow.md").read_text()
    assert len(ScoreCache(suite).parts()) == before

    # and a search group can simulate with them (proxybench.studies.search reads them through runner.select)
    from proxybench.studies import search

    table = search.load_table(search.Group("ext", "cifar10", ("synflow", "naslib:synflow")), real_data, cached=df)
    assert table.n == 30 and np.array_equal(table.scores["synflow"], table.scores["naslib:synflow"])


def test_nb101_round_trip(tmp_path, real_data):
    cells = nb101.all_archs(real_data)[:12]
    suite = tmp_path / "suite"
    ScoreCache(suite).append(_suite_rows("nb101", cells, proxies=("params", "synflow")))
    out = tmp_path / "zc_nasbench101.json"
    s = S.export_scores(suite, "nb101", out, proxies="par*", data_dir=real_data)
    assert s.by_task == {"cifar10": 12} and s.proxies == ["params"] and not s.with_val
    back = S.read_naslib(out, "nb101")
    assert sorted(back.scores["arch"]) == sorted(cells)
    imp = S.import_scores(out, "nb101", tmp_path / "ext", data_dir=real_data)
    assert imp.outside_truth == 0 and imp.proxies == ["naslib:params"]
    # a cell the 2,500-cell table lacks is imported (it is a valid cell) and counted
    doc = json.loads(out.read_text())
    doc["cifar10"][_nb101_key(NB101_MATRIX, NB101_OPS)] = {"params": {"score": 1.0, "time": 0.0}}
    more = S.import_scores(_write(tmp_path / "more.json", doc), "nb101", tmp_path / "ext2", data_dir=real_data)
    known = nb101.module_hash(NB101_MATRIX, NB101_OPS) in set(nb101.all_archs(real_data))
    assert more.outside_truth == (0 if known else 1)
