"""The registry of report sections (studies beyond the training-free table), registered like proxies.

A study is one module in ``bench/studies/`` (found by name, no list to edit)::

    from proxybench.sections import SectionConfig, section

    @section("latency", order=30)
    def bench_section(cfg: SectionConfig) -> str:
        ...  # compute what the caches lack for the default study, write reports/latency.md
        return "**Latency:** … [latency.md](latency.md)"   # the paragraph for reports/README.md

    def add_cli(sub, parents) -> None:   # optional: the study's own subcommand(s)
        s = sub.add_parser("latency", parents=[parents.common, parents.cache, parents.report, parents.progress])
        ...

``make bench`` runs every registered section in ``order`` after the training-free study. A section reads its
settings from a ``SectionConfig`` (built by the CLI), never from the CLI's namespace, and never imports the CLI.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SectionConfig:
    """What ``make bench`` hands every section: where the data, the score cache and the report are."""

    cache: Path
    out: Path
    data_dir: str | None = None
    progress: bool = True
    bootstrap: int = 1000

    @classmethod
    def from_args(cls, args) -> SectionConfig:
        return cls(cache=Path(args.cache), out=Path(args.out), data_dir=args.data_dir,
                   progress=not getattr(args, "no_progress", False), bootstrap=int(getattr(args, "bootstrap", 1000)))


@dataclass(frozen=True)
class Section:
    name: str
    order: int
    run: Callable[[SectionConfig], str]
    module: str

    def add_cli(self, sub, parents) -> None:
        fn = getattr(importlib.import_module(self.module), "add_cli", None)
        if fn is not None:
            fn(sub, parents)


_SECTIONS: dict[str, Section] = {}


def section(name: str, order: int):
    """Register ``fn(cfg: SectionConfig) -> str`` as the report section ``name`` (run in ascending ``order``)."""

    def deco(fn):
        old = _SECTIONS.get(name)
        if old is not None and old.module != fn.__module__:
            raise ValueError(f"section {name!r} is registered twice ({old.module} and {fn.__module__})")
        _SECTIONS[name] = Section(name, order, fn, fn.__module__)
        return fn

    return deco


def discover() -> None:
    """Import every module of ``bench/studies/`` so that its sections register."""
    from proxybench import studies

    for m in sorted(pkgutil.iter_modules(studies.__path__), key=lambda m: m.name):
        if not m.name.startswith("_"):
            importlib.import_module(f"{studies.__name__}.{m.name}")


def sections() -> list[Section]:
    """Every registered section, in the order ``make bench`` runs them."""
    discover()
    return sorted(_SECTIONS.values(), key=lambda s: (s.order, s.name))
