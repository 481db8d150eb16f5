"""Plugins (proxybench.plugins): a user's space and proxy from a file (--plugin) or an installed package (entry points),
seen by worker processes too; the README's example (tests/plugins/toy_space.py) end to end: run, report, compare."""

from __future__ import annotations

import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from proxybench import datasets, plugins
from proxybench.cache import ScoreCache
from proxybench.cli import main
from proxybench.datasets import Space, files, get_space, register_space
from proxybench.datasets.errors import ArchError
from proxybench.proxies import registry

TOY = Path(__file__).resolve().parents[1] / "plugins" / "toy_space.py"
DATA_FREE = "params,flops,synflow,toy_depth"


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """Spaces, proxies and plugins registered by a test are forgotten after it (other tests list every proxy)."""
    monkeypatch.setattr(datasets, "SPACES", dict(datasets.SPACES))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(plugins, "_FILES", {})
    monkeypatch.setattr(plugins, "_ENTRY_POINTS", {})
    monkeypatch.setattr(plugins, "_state", {"entry_points": False})
    monkeypatch.setenv(plugins.ENV_PLUGINS, "")
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [])  # no installed plugin of this machine leaks in


def _tiny_build(arch: str, task: str, bn: bool = True):
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, int(arch), 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(int(arch), 10))


# --------------------------------------------------------------------------------------------- Space.from_table

def test_from_table_needs_little_and_checks_it():
    sp = Space.from_table("tiny", pd.DataFrame({"arch": ["2", "4", "8"], "acc": [50.0, 60.0, 70.0]}), _tiny_build)
    assert (sp.tasks, sp.num_classes, sp.resolution, sp.default_truth) == (("cifar10",), {"cifar10": 10},
                                                                           {"cifar10": 32}, "acc")
    assert sp.all_archs() == ["2", "4", "8"] and sp.canonical(" 4 ") == "4"
    assert list(sp.truth("cifar10").columns) == ["arch", "task", "acc"]
    assert sp.builder("8", "cifar10")(bn=True)[0].out_channels == 8
    with pytest.raises(ArchError, match="unknown arch '16' of space tiny"):
        sp.canonical("16")
    with pytest.raises(ArchError, match="unknown task"):
        sp.truth("cifar100")
    bad = [({"key": ["a"], "acc": [1.0]}, {}, "needs an 'arch' column"),
           ({"arch": ["a", "a"], "acc": [1.0, 2.0]}, {}, "'a' has 2 rows for task 'cifar10'"),
           ({"arch": ["a"], "acc": [1.0], "val": [2.0]}, {}, "say which column is the trained accuracy"),
           ({"arch": ["a"], "acc": [1.0]}, {"truth": "acx"}, "not a numeric column"),
           ({"arch": ["a"], "acc": [1.0]}, {"tasks": ("mnist",)}, "'mnist' is not one of the suite's image tasks"),
           ({"arch": ["a"], "score": [1.0]}, {}, "rename the table's column"),
           ({"arch": ["a"], "acc": [1.0]}, {"tasks": ("cifar10", "cifar100")}, "needs a 'task' column")]
    for table, facts, match in bad:
        with pytest.raises(ValueError, match=match):
            Space.from_table("bad", table, _tiny_build, **facts)
    two = Space.from_table("two", {"arch": ["a", "a"], "task": ["cifar10", "mnist"], "acc": [1.0, 2.0]}, _tiny_build,
                           num_classes={"cifar10": 10, "mnist": 10}, resolution={"cifar10": 32, "mnist": 28})
    assert two.tasks == ("cifar10", "mnist") and two.resolution["mnist"] == 28


def test_register_space_refuses_a_duplicate_name():
    sp = Space.from_table("tiny", {"arch": ["2"], "acc": [1.0]}, _tiny_build)
    assert register_space(sp) is sp and get_space("tiny") is sp
    with pytest.raises(ValueError, match="space 'tiny' is already registered.*choose another name"):
        register_space(Space.from_table("tiny", {"arch": ["4"], "acc": [1.0]}, _tiny_build))
    with pytest.raises(ValueError, match="'nb201' is already registered"):
        register_space(Space.from_table("nb201", {"arch": ["4"], "acc": [1.0]}, _tiny_build))
    with pytest.raises(TypeError, match="takes a datasets.Space"):
        register_space("tiny2")


# ------------------------------------------------------------------------------------------------- loading

def test_plugin_files_load_once_and_failures_name_the_file(tmp_path, capsys):
    mod = plugins.load_file(TOY)
    assert plugins.load_file(TOY) is mod  # once per process: a second --plugin of the same file is no error
    assert get_space("toy").all_archs()[:2] == ["w2-d1-k1", "w2-d1-k3"] and len(get_space("toy").all_archs()) == 30
    assert registry.get_proxy("toy_depth").family == "baseline"
    assert str(TOY) in plugins.env_files()  # workers started from now on load it too
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no such table')\n")
    with pytest.raises(plugins.PluginError, match="broken.py failed to load: RuntimeError: no such table"):
        plugins.load_file(broken)
    assert main(["ls", "spaces", "--plugin", str(broken)]) == 2
    assert "broken.py failed to load" in capsys.readouterr().err
    assert main(["ls", "spaces", "--plugin", str(tmp_path / "absent.py")]) == 2
    assert "absent.py does not exist" in capsys.readouterr().err


def test_entry_point_plugins_load_at_cli_start(tmp_path, monkeypatch, capsys):
    (tmp_path / "pb_ep_plugin.py").write_text(textwrap.dedent('''
        from torch import nn
        from proxybench.datasets import Space, register_space

        def build(arch, task, bn=True):
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

        def setup():
            register_space(Space.from_table("epspace", {"arch": ["a", "b", "c"], "acc": [1.0, 2.0, 3.0]}, build,
                                            description="from an entry point"))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pb_ep_plugin", raising=False)
    eps = [metadata.EntryPoint(name="toyspace", value="pb_ep_plugin:setup", group=plugins.ENTRY_POINT_GROUP)]
    seen = []
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: seen.append(kw) or eps)
    assert main(["ls", "spaces"]) == 0
    assert seen == [{"group": "proxybench.plugins"}]
    assert "from an entry point" in capsys.readouterr().out
    assert get_space("epspace").all_archs() == ["a", "b", "c"]
    plugins.ensure_loaded()  # a worker's call: already loaded, nothing registered twice
    assert plugins.loaded()["entry_points"] == ["toyspace = pb_ep_plugin:setup"]

    monkeypatch.setattr(plugins, "_state", {"entry_points": False})
    eps[:] = [metadata.EntryPoint(name="broken", value="pb_no_such_module_xyz", group=plugins.ENTRY_POINT_GROUP)]
    with pytest.raises(plugins.PluginError, match="plugin 'broken' \\(entry point 'pb_no_such_module_xyz'.*"
                                                  "ModuleNotFoundError"):
        plugins.load()
    monkeypatch.setattr(plugins, "_state", {"entry_points": False})
    assert main(["ls", "proxies"]) == 2
    assert "plugin 'broken'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- the README's example

def test_the_readme_example_runs_end_to_end(tmp_path):
    """`run`, `report` and `compare` on the plugin space, as README's "Your own space" shows."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    real = (files.resolve_data_dir() / "cifar-10-batches-py").is_dir()
    data = ",grad_norm" if real else ""  # one data proxy: real CIFAR-10
    assert main(["run", "--plugin", str(TOY), "--space", "toy", "--sample", "all", "--proxies", DATA_FREE + data,
                 "--cache", str(cache), "--no-progress", "--executor", "inprocess"]) == 0
    df = ScoreCache(cache).load()
    assert len(df) == 30 * (4 + bool(data)) and (df["status"] == "ok").all() and set(df["space"]) == {"toy"}
    assert main(["report", "--plugin", str(TOY), "--cache", str(cache), "--out", str(out), "--bootstrap", "20"]) == 0
    text = (out / "README.md").read_text()
    assert "## toy · cifar10" in text and "[toy_depth](figures/scatter_toy_depth.png)" in text
    assert (out / "figures" / "scatter_synflow.png").is_file()
    assert main(["compare", "toy_depth", "--plugin", str(TOY), "--space", "toy", "--sample", "all", "--baselines",
                 "params,flops,synflow", "--cache", str(cache), "--out", str(out), "--bootstrap", "20",
                 "--no-progress", "--executor", "inprocess"]) == 0
    cmp = (out / "compare_toy_depth.md").read_text()
    assert "## toy · cifar10" in cmp and "| params | ↑ | 30 |" in cmp


def test_worker_processes_see_the_plugin(tmp_path):
    """Spawned workers know nothing the driver registered at run time: they load $PROXYBENCH_PLUGINS."""
    cache = tmp_path / "cache"
    assert main(["--plugin", str(TOY), "run", "--space", "toy", "--sample", "8", "--proxies", "params,toy_depth",
                 "--cache", str(cache), "--no-progress", "--executor", "processes", "--workers", "2",
                 "--chunk-size", "4"]) == 0
    df = ScoreCache(cache).load()
    assert len(df) == 16 and (df["status"] == "ok").all()
    assert set(df.loc[df["proxy"] == "toy_depth", "score"]) <= {1.0, 2.0, 3.0}


def test_the_readme_shows_the_example_file():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Your own space", 1)[1].split("\n## ", 1)[0]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert block.strip() and block in TOY.read_text()
    assert "proxybench run --plugin tests/plugins/toy_space.py --space toy" in section
