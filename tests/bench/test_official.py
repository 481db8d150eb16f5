"""`proxybench official`: the plumbing around the family adapters, on a stand-in adapter (no official code)."""

from __future__ import annotations

import math
import sys
import types

import pytest

from proxybench.tools import official


def _stand_in(tmp_path):
    """An adapter whose "official code" is a file in tmp_path returning the suite's value times (1 + 1e-6)."""
    (tmp_path / "score.py").write_text("def score(x):\n    return x * (1 + 1e-6)\n")

    def load(code):
        official.require(code, "score.py", repo="someone/stand-in", commit="0" * 40)
        ns = {}
        exec((code / "score.py").read_text(), ns)
        return ns["score"]

    def compare(fn, task, arch, seed):
        ours = float(len(arch) + seed)
        return [{"proxy": "params", "ours": ours, "official": fn(ours)},
                {"proxy": "flops", "ours": ours, "official": ours, "note": "same"}]

    mod = types.ModuleType("proxybench.tools.official_standin")
    mod.REPO, mod.COMMIT, mod.PROXIES, mod.CELLS, mod.TASKS = "someone/stand-in", "0" * 40, ("params", "flops"), (
        "a", "bcd"), ("cifar10",)
    mod.HOW, mod.load, mod.compare = "A stand-in.", load, compare
    return mod


def test_relative_difference():
    assert official.relative(1.0, 1.0) == 0.0
    assert official.relative(1.000001, 1.0) == pytest.approx(1e-6)
    assert official.relative(0.0, 0.0) == 0.0
    assert official.relative(math.inf, math.inf) == 0.0 and official.relative(math.nan, math.nan) == 0.0
    assert official.relative(1.0, math.inf) == math.inf and official.relative(-math.inf, math.inf) == math.inf


def test_measure_summarise_write_and_read_back(tmp_path):
    mod = _stand_in(tmp_path)
    r = official.measure(mod, tmp_path, ["cifar10"], list(mod.CELLS), 42, progress=lambda s: None)
    assert [(x["arch"], x["proxy"]) for x in r["rows"]] == [("a", "params"), ("a", "flops"), ("bcd", "params"),
                                                             ("bcd", "flops")]
    assert r["commit_run"].startswith("unknown") and r["commit_followed"] == "0" * 40
    s = {x["proxy"]: x for x in official.summary(r)}
    assert s["flops"]["identical"] == 2 and s["flops"]["max"] == 0.0
    assert s["params"]["identical"] == 0 and s["params"]["max"] == pytest.approx(1e-6, rel=1e-5)
    out = tmp_path / "reports"
    md = official.write(r, out)
    assert md.read_text().startswith("# standin: agreement with the official code")
    assert "| params | 2 | 0 | 1.0e-06 | 1.0e-06 | 1.0e-06 | 0 | 0 |" in md.read_text()
    assert official.read(out, "standin")["rows"] == r["rows"]
    assert official.read(out, "swap") is None


def test_a_directory_without_the_official_files_says_how_to_get_them(tmp_path):
    mod = _stand_in(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(official.OfficialCodeError, match="git clone https://github.com/someone/stand-in"):
        mod.load(empty)


@pytest.mark.parametrize("family", official.FAMILIES)
def test_every_family_has_an_adapter_with_the_contract(family, tmp_path):
    import re

    from proxybench.datasets import nb201
    from proxybench.proxies import list_proxies

    m = official.adapter(family)
    assert re.fullmatch(r"[0-9a-f]{40}", m.COMMIT) and re.fullmatch(r"[\w.-]+/[\w.-]+", m.REPO)
    assert m.HOW and "\n" not in m.HOW
    assert m.PROXIES and set(m.PROXIES) <= set(list_proxies())
    assert m.CELLS and all(nb201.parse_arch(a) for a in m.CELLS) and set(m.TASKS) <= set(nb201.TASKS)
    with pytest.raises(official.OfficialCodeError) as e:  # an empty directory: what is missing, how to get it
        m.load(tmp_path)
    assert f"git clone https://github.com/{m.REPO} {tmp_path} && git -C {tmp_path} checkout {m.COMMIT}" in str(e.value)


def test_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown family"):
        official.adapter("nope")


def test_the_report_lists_each_measured_family_and_names_the_unmeasured(tmp_path):
    from proxybench import report

    mod = _stand_in(tmp_path)
    r = official.measure(mod, tmp_path, ["cifar10"], list(mod.CELLS), 42, progress=lambda s: None)
    r["family"] = "swap"  # stored as one of the suite's families
    official.write(r, tmp_path / "reports")
    text = "\n".join(report.render_official_agreement(tmp_path / "reports"))
    assert ("| [swap](official/swap.md) | github.com/someone/stand-in @ commit unknown | params | 2 | 0 | 1.0e-06 | "
            "1.0e-06 | 0 | 0 |") in text
    assert "Not measured here: az_nas, te_nas, gradsign, vkdnw" in text


def test_importing_from_a_checkout_leaves_sys_path_and_modules_as_they_were(tmp_path, monkeypatch):
    pkg = tmp_path / "src" / "metrics"
    pkg.mkdir(parents=True)
    (tmp_path / "src" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("WHERE = 'the checkout'\n")
    earlier = type(sys)("src")  # someone else's top-level module "src", imported before
    monkeypatch.setitem(sys.modules, "src", earlier)
    path_before = list(sys.path)
    with official.importing_from(tmp_path, "src"):
        import src.metrics as mod
    assert mod.WHERE == "the checkout"
    assert sys.path == path_before and sys.modules["src"] is earlier and "src.metrics" not in sys.modules
    assert not list(tmp_path.rglob("__pycache__"))  # nothing written into the checkout



def test_importing_from_defaults_to_every_top_level_module_of_the_checkout(tmp_path, monkeypatch):
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "__init__.py").write_text("WHO = 'official'\n")
    (tmp_path / "helper.py").write_text("X = 1\n")
    earlier = type(sys)("custom")
    monkeypatch.setitem(sys.modules, "custom", earlier)
    with official.importing_from(tmp_path):
        import custom
        import helper

    assert custom.WHO == "official" and helper.X == 1
    assert sys.modules["custom"] is earlier and "helper" not in sys.modules
