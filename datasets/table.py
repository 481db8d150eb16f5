"""A search space given by a table: a user's space in a few lines (``Space.from_table``).

The table has one row per cell (and task): its key in ``arch``, optionally its ``task``, and the accuracies the
cells reached when trained (the ground truth; any other numeric columns are kept as further truth columns). A
builder ``build(arch, task, bn=True) -> nn.Module`` makes the network of a cell. Everything else a ``Space``
declares has a default: the tasks are the table's, classes and resolution those of the task's images when the task
is one of the suite's image tasks (cifar10, cifar100, ImageNet16-120: the images data-using proxies see), the
initialisation is PyTorch's default, the builder's version 1.
"""

from __future__ import annotations

from functools import partial

from proxybench.datasets import Space
from proxybench.datasets.errors import ArchError, did_you_mean

# columns a truth table must not use: the score rows it is joined with have them
RESERVED_COLUMNS = ("space", "proxy", "score", "status", "seed", "error", "seconds", "accuracy")


def _per_task(value, what: str, tasks, name: str) -> dict:
    from proxybench.datasets.images import TASKS as IMAGE_TASKS

    if isinstance(value, dict):
        missing = [t for t in tasks if t not in value]
        if missing:
            raise ValueError(f"space {name!r}: {what} gives no value for task(s) {missing}")
        return {t: int(value[t]) for t in tasks}
    if value is not None:
        return {t: int(value) for t in tasks}
    out = {}
    for t in tasks:
        if t not in IMAGE_TASKS:
            raise ValueError(f"space {name!r}: task {t!r} is not one of the suite's image tasks "
                             f"({', '.join(IMAGE_TASKS)}): give {what}= (an int, or a dict per task)")
        out[t] = getattr(IMAGE_TASKS[t], what)
    return out


class TableSpace(Space):
    """A space whose cells, truth and network come from a table and a builder (see the module docstring)."""

    def __init__(self, name: str, table, build, *, tasks=None, truth: str | None = None, final_truth=None,
                 num_classes=None, resolution=None, description: str = "", init: str = "torch-default",
                 builder_version: int = 1):
        import pandas as pd

        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a space needs a name, got {name!r}")
        if not callable(build):
            raise ValueError(f"space {name!r}: build must be a function build(arch, task, bn=True) -> nn.Module, "
                             f"got {type(build).__name__}")
        df = pd.DataFrame(table).copy()
        if "arch" not in df.columns:
            raise ValueError(f"space {name!r}: the table needs an 'arch' column (one key per cell); it has "
                             f"{list(df.columns)}")
        if df.empty:
            raise ValueError(f"space {name!r}: the table has no rows")
        df["arch"] = df["arch"].astype(str).str.strip()
        if "task" in df.columns:
            df["task"] = df["task"].astype(str)
            present = tuple(dict.fromkeys(df["task"]))
            tasks = tuple(tasks) if tasks else present
            extra = [t for t in present if t not in tasks]
            if extra:
                raise ValueError(f"space {name!r}: the table has rows of task(s) {extra} not in tasks={tasks}")
        else:
            tasks = tuple(tasks) if tasks else ("cifar10",)
            if len(tasks) != 1:
                raise ValueError(f"space {name!r}: a table of several tasks ({', '.join(tasks)}) needs a 'task' "
                                 "column (the row's task)")
            df.insert(1, "task", tasks[0])
        empty = [t for t in tasks if not (df["task"] == t).any()]
        if empty:
            raise ValueError(f"space {name!r}: no row of task(s) {empty} in the table")
        dup = df[df.duplicated(["task", "arch"])]
        if len(dup):
            r = dup.iloc[0]
            n = int(((df["task"] == r["task"]) & (df["arch"] == r["arch"])).sum())
            raise ValueError(f"space {name!r}: arch {r['arch']!r} has {n} rows for task {r['task']!r}: one row per "
                             f"cell and task")
        reserved = [c for c in df.columns if c in RESERVED_COLUMNS]
        if reserved:
            raise ValueError(f"space {name!r}: rename the table's column(s) {reserved}: the score rows use them")
        numeric = [c for c in df.columns if c not in ("arch", "task") and pd.api.types.is_numeric_dtype(df[c])]
        if truth is None:
            if len(numeric) != 1:
                raise ValueError(f"space {name!r}: say which column is the trained accuracy (truth=...): the table "
                                 f"has numeric columns {numeric or 'none'}")
            truth = numeric[0]
        if truth not in numeric:
            raise ValueError(f"space {name!r}: truth={truth!r} is not a numeric column of the table "
                             f"{did_you_mean(truth, numeric)}; numeric columns: {numeric}")
        self.name = name
        self.tasks = tasks
        self.num_classes = _per_task(num_classes, "num_classes", tasks, name)
        self.resolution = _per_task(resolution, "resolution", tasks, name)
        self.default_truth = truth
        self.final_truth = tuple(final_truth) if final_truth is not None else (truth,)
        self.init = init
        self.builder_version = int(builder_version)
        self.description = description or f"{name} (a table of {df['arch'].nunique():,} cells)"
        self._table = df.reset_index(drop=True)
        self._archs = list(dict.fromkeys(df["arch"]))
        self._known = set(self._archs)
        self._build = build

    def canonical(self, arch, data_dir=None) -> str:
        key = str(arch).strip()
        if key not in self._known:
            raise ArchError(f"unknown arch {arch!r} of space {self.name}{did_you_mean(key, self._archs)}; its "
                            f"{len(self._archs)} keys are the table's 'arch' column")
        return key

    def all_archs(self, data_dir=None) -> list[str]:
        return list(self._archs)

    def truth(self, task: str, data_dir=None):
        t = self._table
        return t[t["task"] == self.check_task(task)].reset_index(drop=True)

    def builder(self, arch: str, task: str):
        return partial(self._build, self.canonical(arch), self.check_task(task))
