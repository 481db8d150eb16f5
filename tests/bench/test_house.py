"""The house rules of bench/ (bench/README.md): sections register themselves, only the CLI imports the CLI,
no private name crosses a module line, a new study is one file."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import pytest

from proxybench import sections as S
from proxybench.provenance import REPO_ROOT

FOLDERS = {"bench": "proxybench", "proxies": "proxybench.proxies", "datasets": "proxybench.datasets"}


def _modules():
    for folder, package in FOLDERS.items():
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT / folder).with_suffix("")
            name = ".".join([package, *(rel.parts[:-1] if rel.name == "__init__" else rel.parts)])
            yield name, path, ast.parse(path.read_text(), filename=str(path))


def _imports(tree: ast.AST, module: str):
    """(imported module, imported name or None) for every import statement, relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                base = ".".join(parts[:len(parts) - node.level] + ([base] if base else []))
            for a in node.names:
                yield base, a.name


def test_every_default_section_is_registered_in_order():
    names = [s.name for s in S.sections()]
    assert names == ["nb101", "nds", "latency", "fullspace", "aznas", "aggregates", "dps", "search", "reduced"]
    assert all(s.module.startswith("proxybench.studies.") for s in S.sections())


def test_only_the_cli_imports_the_cli():
    offenders = [(name, imp) for name, _, tree in _modules() if name != "proxybench.cli"
                 for imp, sym in _imports(tree, name)
                 if imp == "proxybench.cli" or (imp == "proxybench" and sym == "cli")]
    assert offenders == []


def test_no_private_name_crosses_a_module_line():
    offenders = [f"{name}: from {imp} import {sym}" for name, _, tree in _modules()
                 for imp, sym in _imports(tree, name)
                 if sym and sym.startswith("_") and not sym.startswith("__") and imp.split(".")[0] == "proxybench"]
    assert offenders == []


def test_a_new_study_is_one_file(tmp_path, monkeypatch):
    """A module dropped into bench/studies/ registers its section and its subcommand, with no other edit."""
    from proxybench import studies
    from proxybench.cli import build_parser

    pkg = tmp_path / "extra"
    pkg.mkdir()
    (pkg / "toy_study.py").write_text(textwrap.dedent('''
        from proxybench.sections import SectionConfig, section

        @section("toy", order=99)
        def bench_section(cfg: SectionConfig) -> str:
            (cfg.out / "toy.md").write_text("# toy\\n")
            return f"**Toy:** {cfg.bootstrap} resamples"

        def add_cli(sub, parents):
            s = sub.add_parser("toy", parents=parents.section)
            s.set_defaults(fn=lambda args: print(bench_section(SectionConfig.from_args(args))))
    '''))
    monkeypatch.setattr(studies, "__path__", [*studies.__path__, str(pkg)])
    monkeypatch.setattr(S, "_SECTIONS", dict(S._SECTIONS))
    monkeypatch.delitem(sys.modules, "proxybench.studies.toy_study", raising=False)
    secs = S.sections()
    assert secs[-1].name == "toy" and len(secs) == 10
    args = build_parser().parse_args(["toy", "--out", str(tmp_path), "--bootstrap", "7"])
    assert S.SectionConfig.from_args(args).bootstrap == 7
    assert secs[-1].run(S.SectionConfig.from_args(args)) == "**Toy:** 7 resamples"
    assert (tmp_path / "toy.md").is_file()


def test_a_section_name_is_registered_once(monkeypatch):
    monkeypatch.setattr(S, "_SECTIONS", dict(S._SECTIONS))

    def imposter(cfg):
        return ""

    imposter.__module__ = "somewhere.else"
    with pytest.raises(ValueError, match="registered twice"):
        S.section("latency", order=1)(imposter)


def test_options_are_declared_once_per_subcommand():
    """Every subcommand parses with its parents composed (argparse raises on an option declared twice) and the
    studies' subcommands share the same --cache/--out/--bootstrap/--no-progress."""
    from proxybench.cli import build_parser

    p = build_parser()
    for cmd in ("nb101", "latency", "fullspace", "dps", "search", "reduced"):
        a = p.parse_args([cmd, "--cache", "/tmp/c", "--bootstrap", "5", "--no-progress"])
        assert a.cache == "/tmp/c" and a.bootstrap == 5 and a.no_progress


def test_bench_does_not_rewrite_its_options():
    """`bench` builds its studies from the options without changing them (the old code set args.sample)."""
    from proxybench.cli import build_parser, is_default_bench, suite_studies

    args = build_parser().parse_args(["bench"])
    studies = suite_studies(args)
    assert [(s.tasks, s.sample) for s in studies] == [(("cifar10",), 1000), (("cifar100",), 300),
                                                      (("ImageNet16-120",), 300)]
    assert is_default_bench(args) and args.sample == "default-suite"
    one = build_parser().parse_args(["bench", "--task", "cifar100"])
    assert [(s.tasks, s.sample) for s in suite_studies(one)] == [(("cifar100",), 300)]
    assert not is_default_bench(one)
    n = build_parser().parse_args(["bench", "--sample", "20"])
    assert [(s.tasks, s.sample) for s in suite_studies(n)] == [(("cifar10", "cifar100", "ImageNet16-120"), 20)]


def test_architecture_readme_names_every_module():
    """bench/README.md says where each kind of change goes: it names every module of bench/."""
    text = (Path(REPO_ROOT) / "bench" / "README.md").read_text()
    missing = [name for name, path, _ in _modules() if path.is_relative_to(REPO_ROOT / "bench")
               and path.name != "__init__.py"
               and f"{path.stem}.py" not in text]
    assert missing == []
