"""Rendering helpers shared by the reports: number formats, Markdown tables, figure files.

Sections compute their numbers elsewhere and format them here, so that every report writes a ρ, an
interval or a table the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["annotate_spread", "fmt_ci", "md_table", "save_figure"]


def fmt_ci(v: float | None, lo: float | None = None, hi: float | None = None) -> str:
    """A signed correlation to 3 decimals, with its interval when ``lo`` is finite: ``+0.712 [+0.680, +0.741]``;
    ``n/a`` for a missing or non-finite value."""
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and np.isfinite(lo) else "")


def md_table(rows: Iterable[Mapping], cols: Sequence[str], fmt: Mapping[str, Callable] | None = None) -> list[str]:
    """The lines of a Markdown table of ``cols``, one row per record (a DataFrame's rows or dicts); a column's
    cells go through ``fmt[col]`` when given, else ``str``."""
    fmt = fmt or {}
    if hasattr(rows, "iterrows"):
        rows = (r for _, r in rows.iterrows())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(c, str)(r[c]) for c in cols) + " |")
    return lines


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (110 dpi) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def annotate_spread(ax, labels: Sequence[str], xs: Sequence[float], ys: Sequence[float], *, fontsize: float = 7,
                    offset: tuple[float, float] = (3, 2), pad: float = 1.0, iterations: int = 200) -> list:
    """Annotate points with labels nudged vertically apart so that no two overlap: a simple iterative
    repulsion between labels whose boxes share some width (measured on the drawn figure, no new dependency).
    A label moved off its point gets a thin leader line. Returns the annotations."""
    kw = dict(fontsize=fontsize, textcoords="offset points")
    texts = [ax.annotate(lab, (x, y), xytext=offset, **kw) for lab, x, y in zip(labels, xs, ys, strict=True)]
    if len(texts) < 2:
        return texts
    fig = ax.figure
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    x0, x1 = np.array([b.x0 for b in boxes]), np.array([b.x1 for b in boxes])
    y0, h = np.array([b.y0 for b in boxes]), np.array([b.height for b in boxes])
    ok = np.isfinite(x0) & np.isfinite(y0)
    dy = np.zeros(len(texts))
    for _ in range(iterations):
        moved = False
        order = [i for i in np.argsort(y0 + dy, kind="stable") if ok[i]]
        for k, a in enumerate(order):  # a below b
            for b in order[k + 1:]:
                if x1[a] <= x0[b] or x1[b] <= x0[a]:
                    continue
                overlap = (y0[a] + dy[a] + h[a] + pad) - (y0[b] + dy[b])
                if overlap > 1e-6:
                    dy[a] -= overlap / 2
                    dy[b] += overlap / 2
                    moved = True
        if not moved:
            break
    to_points = 72.0 / fig.dpi
    for i, t in enumerate(texts):
        if abs(dy[i]) > 1e-6:
            xy, text = t.xy, t.get_text()
            t.remove()
            far = abs(dy[i]) > h[i]
            texts[i] = ax.annotate(text, xy, xytext=(offset[0], offset[1] + dy[i] * to_points), **kw,
                                   **({"arrowprops": dict(arrowstyle="-", lw=0.4, color="0.5", shrinkA=0, shrinkB=2)}
                                      if far else {}))
    return texts
