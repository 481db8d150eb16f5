"""Report figures on caches that hold several spaces or seeds of one task name."""

from __future__ import annotations

import pandas as pd

from proxybench import report


def test_rho_bars_of_two_spaces_with_the_same_task(tmp_path):
    rows = [{"space": sp, "task": "cifar10", "proxy": p, "seed": seed, "rho": r, "rho_lo": r - 0.1,
             "rho_hi": r + 0.1, "n": 10, "substitute": False}
            for sp in ("nb201", "nb101") for seed in (42, 7) for p, r in (("params", 0.5), ("synflow", 0.7))]
    path = report._bars(pd.DataFrame(rows), tmp_path)  # used to fail: duplicate labels on reindex
    assert path.is_file() and path.stat().st_size > 0
