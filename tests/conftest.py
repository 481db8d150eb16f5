"""Settings for every test: one torch thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Score with one torch thread, as the process executor's workers do: the networks are tiny, and on a
    busy 2-core machine two OpenMP threads per process are ~10x slower, not faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
