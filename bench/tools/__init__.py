"""Measuring tools: `proxybench perf` (bench/tools/perf.py) and `proxybench scaling` (bench/tools/scaling.py) time
the proxies (reference_impl.py is the reference-style implementation that perf times against the shared passes);
`proxybench official` (bench/tools/official.py, one ``official_<family>.py`` adapter per family) runs a newer
proxy's official code beside the suite's on the same cells and batch."""

from __future__ import annotations

from types import ModuleType


class _Lazy:
    """A tool module, imported when the CLI adds its subcommand."""

    def __init__(self, name: str) -> None:
        self.name = name

    def add_cli(self, sub, parents) -> None:
        """``proxybench <name>``: the module's HELP, docstring, ``add_arguments(parser)`` and ``cmd(args)``."""
        import argparse
        import importlib

        mod: ModuleType = importlib.import_module(f"{__name__}.{self.name}")
        s = sub.add_parser(self.name, help=mod.HELP, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(s)
        s.set_defaults(fn=mod.cmd)


TOOLS = (_Lazy("perf"), _Lazy("scaling"), _Lazy("official"))


def write_results(args, name: str, title: str, kind, measure, markdown, markers) -> None:
    """What every speed tool does with its measurement: ``measure()`` (or, with ``--render-only``, the stored
    ``<out>/<name>.json``) is stored, rendered to ``<out>/<name>.md`` and into the README's marked block."""
    from pathlib import Path

    from proxybench import store
    from proxybench.report import update_readme

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        r = store.read_json(out / f"{name}.json", kind)
    else:
        r = measure()
        store.write_json(out / f"{name}.json", r, kind)
    md = markdown(r)
    store.write_text(out / f"{name}.md", f"# {title}\n\n" + md + "\n")
    print(md)
    if args.readme and update_readme(args.readme, md, markers=markers):
        print(f"updated the {name} block of {args.readme}")
    elif not args.readme:
        print(f"README.md not updated: the results went to {out}, not the repository's reports/ "
              "(--readme PATH updates one)")


def tool_main(argv, doc: str, add_arguments, cmd) -> int:
    """``python -m proxybench.tools.<name>``: the same as ``proxybench <name>``."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    args = ap.parse_args(argv)
    from proxybench.options import resolve_outputs

    resolve_outputs(args)  # as the CLI: the README only when the results go to reports/
    cmd(args)
    return 0
