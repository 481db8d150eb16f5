"""Search spaces (arch keys, ground truth, network builders) and the image batches proxies see."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from datasets import files, nb201
from datasets.errors import ArchError, DataFileError, ProxybenchDataError, did_you_mean


@dataclass(frozen=True)
class Space:
    """A search space as the bench sees it: tasks, canonical keys, ground truth, network builder."""

    name: str
    tasks: tuple[str, ...]
    num_classes: dict
    resolution: dict
    description: str
    truth_keys: tuple[str, ...]

    def canonical(self, arch, data_dir=None) -> str:
        return nb201.canonical(arch) if not str(arch).strip().isdigit() else nb201.index_to_arch(
            int(arch), data_dir)

    def all_archs(self, data_dir=None) -> list[str]:
        return nb201.all_archs(data_dir)

    def truth(self, task: str, data_dir=None):
        return nb201.load_truth(task, data_dir)

    def builder(self, arch: str, task: str):
        """A picklable ``build(bn=True) -> nn.Module`` for one cell and task."""
        return partial(nb201.build_network, arch, task)

    def check_task(self, task: str) -> str:
        if task not in self.tasks:
            raise ArchError(f"unknown task {task!r} for space {self.name}{did_you_mean(task, self.tasks)}; "
                            f"tasks: {', '.join(self.tasks)}")
        return task


SPACES = {
    "nb201": Space("nb201", nb201.TASKS, nb201.NUM_CLASSES, nb201.RESOLUTION,
                   "NAS-Bench-201 (15,625 cells)", tuple(k for k, f in files.CATALOGUE.items()
                                                         if f.space == "nb201" and f.required)),
}


def get_space(name: str) -> Space:
    try:
        return SPACES[name]
    except KeyError:
        raise ArchError(f"unknown search space {name!r}{did_you_mean(name, SPACES)}; spaces: "
                        f"{', '.join(SPACES)} (NB101 and NDS loaders are planned)") from None


__all__ = ["SPACES", "ArchError", "DataFileError", "ProxybenchDataError", "Space", "get_space"]
