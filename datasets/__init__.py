"""Search spaces (arch keys, ground truth, network builders) and the image batches proxies see."""

from __future__ import annotations

if __name__ == "datasets":  # found as a top-level "datasets" (Python started in the checkout's root): never ours
    raise ImportError("this is proxybench's datasets/ folder, found because Python runs in the checkout's root: "
                      "import it as proxybench.datasets; another package named 'datasets' (e.g. Hugging Face's) "
                      "imports normally from any other directory")

from functools import partial

from proxybench.datasets import files, nb201
from proxybench.datasets.errors import ArchError, DataFileError, ProxybenchDataError, did_you_mean


class Space:
    """A search space as the bench sees it: tasks, canonical keys, ground truth, network builder.

    Subclasses set the class attributes and implement ``canonical``, ``all_archs``, ``truth`` and
    ``builder``. ``truth(task)`` returns one row per architecture with at least ``arch``, ``task`` and
    the column named by ``default_truth`` (the space's headline accuracy).
    """

    name: str = ""
    tasks: tuple[str, ...] = ()
    num_classes: dict = {}
    resolution: dict = {}
    description: str = ""
    default_truth: str = "test_acc_200"
    # the ``truth`` columns that come from the benchmark's full training (the ground truth and its siblings, e.g.
    # the validation accuracy of the same training): never handed to a proxy that reads the benchmark's table
    # (``needs_table``), which may read only cheaper results (NB201's 12-epoch columns); ``default_truth`` always is
    final_truth: tuple[str, ...] = ()
    # the initialisation its builder applies (recorded with every score, part of the cache key)
    init: str = "torch-default"
    # bump whenever the networks ``builder`` returns change (layers, channels, init): part of the cache key,
    # so scores of old and new networks never mix
    builder_version: int = 1

    def canonical(self, arch, data_dir=None) -> str:
        raise NotImplementedError

    def all_archs(self, data_dir=None) -> list[str]:
        raise NotImplementedError

    def truth(self, task: str, data_dir=None):
        raise NotImplementedError

    def builder(self, arch: str, task: str):
        """A picklable ``build(bn=True) -> nn.Module`` for one architecture and task."""
        raise NotImplementedError

    @classmethod
    def from_table(cls, name: str, table, build, **facts) -> Space:
        """A space from a table (one row per cell: ``arch``, optionally ``task``, and its trained accuracy) and a
        builder ``build(arch, task, bn=True) -> nn.Module``; ``facts``: ``tasks``, ``truth`` (the accuracy column),
        ``final_truth``, ``num_classes``, ``resolution``, ``description``, ``init``, ``builder_version``
        (see :class:`proxybench.datasets.table.TableSpace`). Register it with :func:`register_space`."""
        from proxybench.datasets.table import TableSpace

        return TableSpace(name, table, build, **facts)

    def check_task(self, task: str) -> str:
        if task not in self.tasks:
            raise ArchError(f"unknown task {task!r} for space {self.name}{did_you_mean(task, self.tasks)}; "
                            f"tasks: {', '.join(self.tasks)}")
        return task


class NB201Space(Space):
    name = "nb201"
    tasks = nb201.TASKS
    num_classes = nb201.NUM_CLASSES
    resolution = nb201.RESOLUTION
    description = "NAS-Bench-201 (15,625 cells)"
    default_truth = "test_acc_200"
    final_truth = ("test_acc_200", "val_acc_200")  # the 200-epoch training; the 12-epoch columns are a proxy's
    init = "torch-default"

    def canonical(self, arch, data_dir=None) -> str:
        if str(arch).strip().isdigit():
            return nb201.index_to_arch(int(arch), data_dir)
        return nb201.canonical(arch)

    def all_archs(self, data_dir=None) -> list[str]:
        return nb201.all_archs(data_dir)

    def truth(self, task: str, data_dir=None):
        return nb201.load_truth(self.check_task(task), data_dir)

    def builder(self, arch: str, task: str):
        return partial(nb201.build_network, arch, task)


SPACES: dict[str, Space] = {}


def register_space(space: Space) -> Space:
    """Make ``space`` known by its name to every command (``--space NAME``) and library call; a plugin
    (``--plugin FILE``) calls this. A name already registered is refused."""
    if not isinstance(space, Space):
        raise TypeError(f"register_space takes a datasets.Space (e.g. Space.from_table(...)), got "
                        f"{type(space).__name__}")
    if not space.name:
        raise ValueError("a space needs a name (its --space)")
    if space.name in SPACES:
        first = type(SPACES[space.name])
        raise ValueError(f"space {space.name!r} is already registered (a {first.__name__} from {first.__module__}): "
                         f"choose another name")
    SPACES[space.name] = space
    return space


register_space(NB201Space())


def get_space(name: str) -> Space:
    try:
        return SPACES[name]
    except KeyError:
        raise ArchError(f"unknown search space {name!r}{did_you_mean(name, SPACES)}; spaces: "
                        f"{', '.join(SPACES)}") from None


__all__ = ["SPACES", "ArchError", "DataFileError", "NB201Space", "ProxybenchDataError", "Space", "files",
           "get_space", "register_space"]
from proxybench.datasets import nb101  # noqa: E402

register_space(nb101.NB101Space())
from proxybench.datasets import nds  # noqa: E402

for _nds_space in nds.spaces():  # one space per NDS sweep file: nds:DARTS, nds:ResNeXt-A_in, ...
    register_space(_nds_space)
