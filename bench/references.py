"""Published correlations the suite is checked against (../shared/REFERENCES.md). These are the papers'
numbers, kept apart from anything the suite measures; reports print them side by side."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """A published figure; ``n`` as the paper states its sample, with the count ("all 15,625", "1,000")."""

    space: str
    task: str
    proxy: str
    rho: float
    n: str
    source: str
    accuracy: str = "test"  # the accuracy the paper correlates with: "test" or "validation" (200 epochs)
    cell_set: str = "all"  # the cells it correlates on: "all" of the sample, or "no_unreachable" (NB201's 9,445
    # cells whose every op is on an input-output path: datasets.nb201.no_unreachable_branches)

    def __post_init__(self):
        if not re.search(r"\d", self.n):
            raise ValueError(f"published {self.proxy} on {self.space}/{self.task}: n must state the number of cells, "
                             f"got {self.n!r}")

    @property
    def cells(self) -> int:
        """The number of cells behind the figure, read from ``n`` (every cell of its space when it says "all")."""
        return int(re.sub(r"\D", "", self.n))


_AB = "Abdelfattah et al. ICLR 2021 (repo notebook, absolute ρ, test accuracy)"
_SZ = "NAS-Bench-Suite-Zero (White et al. 2022)"

PUBLISHED: list[Published] = [
    *[Published("nb201", task, proxy, rho, "all 15,625", _AB)
      for task, row in {
          "cifar10": {"grad_norm": 0.59, "snip": 0.60, "grasp": 0.51, "fisher": 0.36, "synflow": 0.74,
                      "jacob_cov": 0.73},
          "cifar100": {"grad_norm": 0.64, "snip": 0.64, "grasp": 0.55, "fisher": 0.39, "synflow": 0.76,
                       "jacob_cov": 0.70},
          "ImageNet16-120": {"grad_norm": 0.58, "snip": 0.58, "grasp": 0.55, "fisher": 0.33, "synflow": 0.75,
                             "jacob_cov": 0.70},
      }.items() for proxy, rho in row.items()],
    *[Published("nb101", "cifar10", proxy, rho, "all 423,624", _AB + ", batch 256")
      for proxy, rho in {"grad_norm": 0.20, "snip": 0.16, "grasp": 0.45, "fisher": 0.26, "synflow": 0.37,
                         "jacob_cov": 0.38}.items()],
    *[Published("nb201", "cifar100", proxy, rho, "1,000", _SZ)
      for proxy, rho in {"synflow": 0.79, "params": 0.74, "jacob_cov": 0.72, "flops": 0.71, "snip": 0.68,
                         "grad_norm": 0.68, "grasp": 0.63, "fisher": 0.61}.items()],
]


# The newer training-free proxies (REFERENCES.md, "Newer training-free proxies"); the set-level aggregates (az_nas,
# te_nas, vkdnw_agg) are the suite's names for the papers' final scores
_AZ = "Lee & Ham, AZ-NAS, CVPR 2024 (official notebook; ρ for cifar100/ImageNet16-120 as stated in the paper)"
_VK = "Týbl & Neumann, VKDNW, CVPR 2025 (5 runs; most likely the cells without unreachable branches)"
_TE = "TE-NAS (Chen et al. ICLR 2021) as re-run independently (REFERENCES.md)"
NEWER: list[Published] = [
    Published("nb201", "cifar10", "az_nas", 0.913, "all 15,625", _AZ),
    Published("nb201", "cifar100", "az_nas", 0.90, "all 15,625", _AZ),
    Published("nb201", "ImageNet16-120", "az_nas", 0.89, "all 15,625", _AZ),
    *[Published("nb201", t, "az_nas", r, "all 15,625", "AZ-NAS as re-run by VKDNW (CVPR 2025)")
      for t, r in (("cifar10", 0.912), ("cifar100", 0.899), ("ImageNet16-120", 0.876))],
    *[Published("nb201", t, "te_nas", r, "all 15,625", _TE)
      for t, r in (("cifar10", 0.68), ("cifar100", 0.66), ("ImageNet16-120", 0.64))],
    *[Published("nb201", t, "te_nas", r, "~9,445 without unreachable branches", _TE, cell_set="no_unreachable")
      for t, r in (("cifar10", 0.72), ("cifar100", 0.72), ("ImageNet16-120", 0.71))],
    *[Published("nb201", t, "gradsign", r, "all 15,625", "Zhang & Jia, GradSign, ICLR 2022 (paper, batch 128)")
      for t, r in (("cifar10", 0.765), ("cifar100", 0.793), ("ImageNet16-120", 0.783))],
    Published("nb201", "cifar100", "swap_reg", 0.90, "all 15,625 (the space; the sample is not restated here)",
              "Peng et al., SWAP, ICLR 2024 (regularised SWAP)", accuracy="validation"),
    Published("nb201", "cifar100", "nwot", 0.80, "all 15,625 (the space; the sample is not restated here)",
              "Peng et al., SWAP, ICLR 2024 (their NWOT baseline)", accuracy="validation"),
    *[Published("nb201", t, "vkdnw_agg", r, "~9,445 without unreachable branches", _VK, cell_set="no_unreachable")
      for t, r in (("cifar10", 0.919), ("cifar100", 0.919), ("ImageNet16-120", 0.906))],
]
PUBLISHED += NEWER

# AZ-NAS beyond the table above (bench/studies/aznas.py): the ρ its users report with the official code
# (github.com/cvlab-yonsei/AZ-NAS issue 8, no cause given), the paper's ρ, and the Kendall τ the official notebook
# prints beside ρ on CIFAR-10 (REFERENCES.md).
AZ_NAS_USERS_RHO = {"cifar10": 0.75, "cifar100": 0.73, "ImageNet16-120": 0.68}
AZ_NAS_PAPER_RHO = {p.task: p.rho for p in NEWER if p.proxy == "az_nas" and p.source == _AZ}
AZ_NAS_NOTEBOOK_TAU_CIFAR10 = 0.741


# What a published figure's own code correlated with, where it says more than the paper (read in the code; facts,
# not numbers): reports print them beside a figure that does not reproduce on the stated accuracy.
ACCURACY_NOTES = {
    (_AB, "cifar10"): "zero-cost-nas `nasbench2_pred.py` stores `api.get_more_info(i, 'cifar10-valid', hp='200')"
                      "['test-accuracy']` as `testacc`, which the notebook's Table 1 correlates with: the test "
                      "accuracy of NB201's cifar10-valid training (on half the training images), which the data "
                      "here lacks: `test_acc_200` is the cifar10 training's (on all of them), `val_acc_200` the "
                      "cifar10-valid training's validation accuracy",
}


def published_for(space: str, task: str, proxy: str) -> list[Published]:
    return [p for p in PUBLISHED if (p.space, p.task, p.proxy) == (space, task, proxy)]


# The repo's "vote" figures: pairwise concordance of the majority of synflow, jacob_cov and snip (all cells).
PUBLISHED_VOTE = {("nb201", "cifar10"): 0.82, ("nb201", "cifar100"): 0.83, ("nb201", "ImageNet16-120"): 0.81}


# Known differences between our definition/setting and the one behind the published figure (facts, not numbers).
DEFINITION_NOTES = {
    "nwot": ["batch 64 (the suite's shared minibatch); NASWOT used 128"],
    "zen": ["follows the Zen-NAS paper (per-image L2 of the feature change, BN batch variance); the official code "
            "uses an L1 sum and running variances"],
    "zico": ["each half-batch's own gradient, as the paper defines; the official code accumulates across halves"],
    "meco": ["one Gaussian input sample; the paper's NB201 script feeds one real image"],
    "meco_opt": ["one Gaussian input sample; the paper's NB201 script feeds one real image"],
    "jacob_cov": ["a degenerate cell (output ignores input) is ranked last; the reference maps errors to a constant"],
    "flops": ["FLOPs of Conv2d/Linear only (torch FlopCounterMode); on NB201 it ranks cells exactly as params does"],
    "synflow_bn": ["BatchNorm kept in train mode on one all-ones image: not the setting of the published synflow"],
}


def definition_notes(proxy: str) -> list[str]:
    return DEFINITION_NOTES.get(proxy, [])
