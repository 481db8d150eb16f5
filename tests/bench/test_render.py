"""Rendering helpers: the formats every report shares, and the figures' order and labels."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from proxybench import render, report  # noqa: E402


def test_fmt_ci_and_md_table_format_as_the_reports_always_did():
    assert render.fmt_ci(0.71234, 0.68, 0.741) == "+0.712 [+0.680, +0.741]"
    assert render.fmt_ci(-0.5) == "-0.500"
    assert render.fmt_ci(0.5, math.nan, math.nan) == "+0.500"
    assert render.fmt_ci(math.nan) == render.fmt_ci(None) == "n/a"
    df = pd.DataFrame({"proxy": ["synflow", "snip"], "rho": [0.75, math.nan]})
    rho = {"rho": lambda v: "–" if not math.isfinite(v) else f"{v:+.3f}"}
    assert render.md_table(df, ["proxy", "rho"], rho) == [
        "| proxy | rho |", "|---|---|", "| synflow | +0.750 |", "| snip | – |"]
    assert render.md_table(df.to_dict("records"), ["proxy", "rho"], rho) == render.md_table(df, ["proxy", "rho"], rho)


def test_save_figure_writes_and_closes(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = render.save_figure(fig, tmp_path / "f.png")
    assert path.is_file() and not plt.fignum_exists(fig.number)


def test_labels_of_nearby_points_do_not_overlap():
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    names = [f"proxy_{i}" for i in range(8)]
    xs = [0.01] * 6 + [1.0, 2.0]
    ys = [0.55 + 0.002 * i for i in range(6)] + [0.3, 0.8]
    ax.scatter(xs, ys)
    ax.set_xscale("log")
    texts = render.annotate_spread(ax, names, xs, ys)
    fig.canvas.draw()
    boxes = [Text.get_window_extent(t, fig.canvas.get_renderer()) for t in texts]  # the text, not its leader line
    assert not [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert [t.get_text() for t in texts] == names and texts[6].xyann == (3, 2)  # a lone label stays put
    plt.close(fig)


def test_the_heatmap_orders_tasks_as_the_space_lists_them(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(report.sns, "heatmap", lambda data, **kw: seen.setdefault("columns", list(data.columns)))
    summary = pd.DataFrame([{"space": "nb201", "task": t, "proxy": p, "rho": 0.5}
                            for t in ("ImageNet16-120", "cifar10", "cifar100") for p in ("snip", "synflow")])
    report._heatmap(summary, tmp_path)
    assert seen["columns"] == ["cifar10", "cifar100", "ImageNet16-120"]  # NB201's order, not alphabetical
