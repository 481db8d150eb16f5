"""`proxybench ls proxies`: one aligned table of the registry records."""

from __future__ import annotations

from proxybench.cli import main
from proxybench.proxies import get_proxy, list_aggregates, list_proxies


def test_ls_proxies_aligns_every_column_to_its_longest_entry(capsys):
    assert main(["ls", "proxies"]) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], lines[1:]
    assert header.split()[:8] == ["name", "dir", "family", "cost", "tier", "needs", "version", "paper"]
    names = list_proxies() + list_aggregates()  # the set-level aggregates after the per-cell proxies
    assert [r.split()[0] for r in rows] == names
    longest = max(names, key=len)  # e.g. latency_measured_b64: longer than any fixed width was
    starts = [header.index(col) for col in ("dir", "family", "cost", "tier", "needs", "version", "paper")]
    assert starts[0] > len(longest)
    for line, name in zip(rows, names, strict=True):
        p = get_proxy(name)
        # every field starts in its header's column
        for start, value in zip(starts, (p.direction, p.family, p.cost, p.tier, p.needs, str(p.version), p.paper),
                                strict=True):
            assert line[start:].startswith(value), (name, value, line)


def test_run_starts_without_the_report_modules():
    """``proxybench run`` (and each worker it spawns) parses its arguments without importing the report sections'
    modules (scipy, matplotlib: seconds per process); ``--help`` still lists every command."""
    import subprocess
    import sys

    code = ("import sys; from proxybench.cli import LEAN, _command, build_parser; "
            "assert _command(['--plugin', 'run', 'run', '--sample', '3']) == 'run'; "
            "build_parser(full=False).parse_args(['run', '--sample', '3']); "
            "print(sorted(m for m in ('scipy', 'matplotlib', 'seaborn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    full = subprocess.run([sys.executable, "-m", "proxybench.cli", "--help"], capture_output=True, text=True,
                          timeout=300)
    assert "precision" in full.stdout and "perf" in full.stdout
