"""The SWAP official-code adapter without the official code: its constants, its refusal of a wrong directory and
the glue around the official class (the numpy that sums generators, the import that leaves sys.path and sys.modules
as they were)."""

from __future__ import annotations

import numpy as np
import pytest

from proxybench.proxies import swap as swap_mod
from proxybench.tools import official_swap as sw


def test_the_numpy_view_sums_a_generator_as_the_builtin_and_is_numpy_otherwise():
    sizes = [3, 4, 5]
    view = sw.numpy_summing_generators()
    assert view.sum(n * 2 for n in sizes) == sum(n * 2 for n in sizes) == 24
    assert view.sum(np.ones((2, 3)), axis=0).tolist() == [2.0, 2.0, 2.0]
    assert view.prod is np.prod and view.ndarray is np.ndarray
    assert np.sum is not view.sum  # numpy itself is untouched
    if int(np.__version__.split(".")[0]) >= 2:  # what the view is for: numpy >= 2 refuses the official call
        with pytest.raises(TypeError, match="generator"):
            np.sum(n for n in sizes)


def test_seeding_torch_then_drawing_in_module_order_gives_the_suites_draws():
    """What the comparison's "same draws" rest on: N(0, 1) drawn in place after torch.manual_seed(seed), module after
    module (as the official init does), are the numbers of the suite's init from a generator seeded alike."""
    import torch
    from torch import nn

    def net():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Flatten(),
                             nn.Linear(8, 3))

    a, b = net(), net()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        with torch.no_grad():
            for m in a.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.normal_(m.weight)
    swap_mod.gaussian_init_(b, torch.Generator().manual_seed(7))
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        if name.endswith("weight") and p.dim() > 1:
            assert torch.equal(p, q), name
