"""glibc's allocator set for tensors of a few MB (CPU scoring): freed memory is kept for the next pass.

A forward+backward of an NB201 cell allocates and frees a few hundred tensors of 1-4 MB (more with forward-mode
tangents). glibc's defaults serve those from ``mmap`` (above a dynamic threshold) and give freed memory back to
the system (heap top above the trim threshold), so each pass faults its pages in again: on the reference machine
~3x more page faults and 10-30% more time for the six classic proxies (``make perf`` measures it). ``tune`` raises
the mmap threshold to glibc's maximum (32 MB on 64-bit), keeps up to 1 GB of freed heap, grows the heap in 64 MB
steps, and asks PyTorch to back allocations of 2 MB and more with transparent huge pages (its own switch,
``THP_MEM_ALLOC_ENABLE``, where the kernel offers them on request: 512x fewer faults for those). It changes no
computed value (where memory comes from, not what is computed in it); resident memory then stays near its peak
instead of shrinking between passes. Linux only (mallopt with glibc); with PROXYBENCH_MALLOPT=0 nothing is
changed.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
_STATE = {"tuned": None}


def tune() -> bool:
    """Set glibc's allocator (once per process); True when it is set."""
    if _STATE["tuned"] is not None:
        return _STATE["tuned"]
    ok = False
    if sys.platform.startswith("linux") and os.environ.get("PROXYBENCH_MALLOPT", "1") != "0":
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # PyTorch CPU allocator; workers inherit it
        try:
            mallopt = ctypes.CDLL(None).mallopt
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            ok = all(mallopt(k, v) == 1 for k, v in SETTINGS.items())
        except (OSError, AttributeError):  # not glibc (musl has no mallopt)
            ok = False
    _STATE["tuned"] = ok
    return ok
