"""bench/allocator.py: glibc's allocator keeps freed tensor memory; no computed value moves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_CHILD = """
import sys, torch
from proxybench import allocator
ok = allocator.tune()
assert allocator.tune() is ok  # once per process
x = torch.randn(64, 16, 32, 32, generator=torch.Generator().manual_seed(0))
w = torch.randn(16, 16, 3, 3, generator=torch.Generator().manual_seed(1))
y = torch.nn.functional.conv2d(x, w, padding=1).relu().sum(dtype=torch.float64)
print(ok, repr(float(y)))
"""


def _child(env):
    out = subprocess.run([sys.executable, "-c", _CHILD], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt: Linux with glibc")
def test_tune_sets_the_allocator_and_changes_no_value():
    tuned, v_tuned = _child({"PROXYBENCH_MALLOPT": "1"})
    off, v_off = _child({"PROXYBENCH_MALLOPT": "0", "THP_MEM_ALLOC_ENABLE": "0"})
    assert tuned == "True" and off == "False"
    assert v_tuned == v_off
