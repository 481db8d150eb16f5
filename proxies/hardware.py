"""Hardware cost proxies after ProxylessNAS (Cai, Zhu & Han, ICLR 2019): a per-operation latency lookup table
whose sum predicts a network's latency, and one measured forward pass.

Lower is better for both (a faster network). They are timings, so two calls differ slightly: they are
registered ``deterministic=False``. Every timing runs in inference mode, the network in eval mode, on an
all-zeros input, with torch fixed to ``THREADS`` thread(s) (restored afterwards). Parameter count and FLOPs,
the other two cost estimates, are the "baseline" family (``proxies/cost.py``).

The lookup table is built once per process, device, batch size and thread count: the first time an
operation occurs at an input shape it is measured on its own (warm-up, repeats, median; on CPU by the
thread's CPU time, robust to a shared machine) and the value is reused for every later network. An
"operation" is a leaf module or an ``nn.Sequential`` of leaves, found top-down; for NB201 these are exactly
the edge ops (ReLU-conv-BN, avg-pool, identity, zero) and the fixed stem, reduction-block parts, final
BN-ReLU, pooling and classifier. Tensor additions outside modules (the node sums of a cell, the residual
sum) are not in the table; an NB201 network has the same number of them whatever its cell, so they shift
every prediction equally and change no ranking.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from proxybench.proxies.registry import register_proxy

THREADS = 1  # as the suite's worker processes run; on a shared machine one thread is also the least noisy
LUT_WARMUP = {1: 3, 64: 1}  # per batch size: untimed calls before the timed ones
LUT_REPEATS = {1: 15, 64: 5}
LUT_VERSION = 2  # 2: table entries timed by the thread's CPU time on CPU devices (1: wall-clock)
_PROXYLESS = "Cai, Zhu & Han, ProxylessNAS, ICLR 2019"


def time_calls(fn: Callable[[], object], *, warmup: int, repeats: int, clock: Callable[[], float] = time.perf_counter,
               sync: Callable[[], None] | None = None) -> list[float]:
    """Seconds of each of ``repeats`` timed calls of ``fn``, after ``warmup`` untimed calls.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs after every call so asynchronous devices are timed to
    completion; ``clock`` is injectable for tests.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        if sync is not None:
            sync()
        times.append(clock() - t0)
    return times


def device_sync(device) -> Callable[[], None] | None:
    """The synchronisation a timing on ``device`` needs (None on CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return None


@contextmanager
def fixed_threads(n: int = THREADS) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; restores the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ lookup table

def _is_leaf(m: nn.Module) -> bool:
    return next(m.children(), None) is None


def op_modules(net: nn.Module) -> list[nn.Module]:
    """The operations of a network, top-down: a leaf module, or an ``nn.Sequential`` whose children are all
    leaves (ReLU-conv-BN counts as one op, as in ProxylessNAS's per-block table)."""
    out: list[nn.Module] = []

    def walk(m: nn.Module) -> None:
        if _is_leaf(m) or (isinstance(m, nn.Sequential) and all(_is_leaf(c) for c in m.children())):
            out.append(m)
            return
        for c in m.children():
            walk(c)

    walk(net)
    return out


def signature(m: nn.Module) -> str:
    """What an op is, independent of its weights: its repr on one line (type, channels, kernel, stride, ...)."""
    return " ".join(repr(m).split())


def op_calls(net: nn.Module, x: torch.Tensor) -> list[tuple[tuple[str, tuple[int, ...]], nn.Module]]:
    """Every op call of one forward pass of ``net`` on ``x``, in call order: ((signature, input shape), module)."""
    calls: list[tuple[tuple[str, tuple[int, ...]], nn.Module]] = []
    sigs = {}
    hooks = []
    for m in op_modules(net):
        sigs[m] = signature(m)
        hooks.append(m.register_forward_pre_hook(
            lambda mod, args: calls.append(((sigs[mod], tuple(args[0].shape)), mod))))
    try:
        with torch.inference_mode(), fixed_threads(THREADS):
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return calls


class LatencyTable:
    """A ProxylessNAS-style lookup table: median seconds of each (op signature, input shape) on one device.

    ``measure`` times one op on its own (``time_calls`` + median); it is injectable for tests.
    """

    def __init__(self, device="cpu", warmup: int = 3, repeats: int = 15, threads: int = THREADS,
                 measure: Callable[[nn.Module, tuple[int, ...]], float] | None = None):
        self.device = torch.device(device)
        self.warmup, self.repeats, self.threads = warmup, repeats, threads
        self.entries: dict[tuple[str, tuple[int, ...]], float] = {}
        self._measure = measure or self._time_op

    def _time_op(self, module: nn.Module, shape: tuple[int, ...]) -> float:
        x = torch.zeros(shape, device=self.device)
        # On CPU, with one thread, an op runs in the calling thread: its CPU time leaves out the time spent
        # waiting for a core on a shared machine, which would otherwise corrupt the one entry every later
        # prediction reuses. A GPU op is timed by the wall clock after synchronising.
        clock = time.thread_time if self.device.type == "cpu" else time.perf_counter
        with torch.inference_mode(), fixed_threads(self.threads):
            times = time_calls(lambda: module(x), warmup=self.warmup, repeats=self.repeats, clock=clock,
                               sync=device_sync(self.device))
        return float(np.median(times))

    def breakdown(self, net: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[tuple, float]]:
        """(key, seconds) of every op call of ``net`` on an input of ``input_shape`` (batch included); ops not
        yet in the table are measured first and kept. The calls are recorded on one image and the batch size
        put into each op's input shape (an op's other dimensions do not depend on the batch)."""
        net = net.to(self.device).eval()
        batch, rest = int(input_shape[0]), tuple(input_shape[1:])
        calls = [((sig, (batch, *shape[1:])), m) for (sig, shape), m in
                 op_calls(net, torch.zeros((1, *rest), device=self.device))]
        for key, module in calls:
            if key not in self.entries:
                self.entries[key] = self._measure(module, key[1])
        return [(key, self.entries[key]) for key, _ in calls]

    def predict(self, net: nn.Module, input_shape: tuple[int, ...]) -> float:
        """Predicted latency (seconds): the sum of the table's entries over the network's op calls."""
        return float(sum(s for _, s in self.breakdown(net, input_shape)))

    def records(self) -> list[dict]:
        """The table as rows (for reports): signature, input shape, seconds."""
        return [{"op": sig, "input_shape": list(shape), "seconds": s} for (sig, shape), s in self.entries.items()]


_TABLES: dict[tuple[str, int, int], LatencyTable] = {}


def lookup_table(device="cpu", batch_size: int = 1) -> LatencyTable:
    """This process's table for a device and batch size (created empty, filled as networks are scored)."""
    key = (str(torch.device(device)), int(batch_size), THREADS)
    if key not in _TABLES:
        _TABLES[key] = LatencyTable(device, LUT_WARMUP.get(batch_size, 1), LUT_REPEATS.get(batch_size, 5), THREADS)
    return _TABLES[key]


def _eval_network(ctx) -> nn.Module:
    return ctx.network().eval()


def latency_lut(ctx, batch_size: int = 1) -> float:
    """Predicted latency (s): sum over the network's ops of a per-op lookup table measured on this device."""
    table = lookup_table(ctx.device, batch_size)
    return table.predict(_eval_network(ctx), (batch_size, *ctx.input_shape))


def latency_measured(ctx, batch_size: int = 1) -> float:
    """Measured latency (s) of one forward pass, timed after one untimed warm-up pass."""
    net = _eval_network(ctx)
    x = torch.zeros((batch_size, *ctx.input_shape), device=ctx.device)
    with torch.inference_mode(), fixed_threads(THREADS):
        return float(time_calls(lambda: net(x), warmup=1, repeats=1, sync=device_sync(ctx.device))[0])


for _b, _suffix in ((1, ""), (64, "_b64")):
    register_proxy(f"latency_lut{_suffix}", higher_is_better=False, family="hardware", needs_data=False,
                   needs_labels=False, paper=_PROXYLESS, deterministic=False, batch_size=_b, version=LUT_VERSION,
                   cost="free", cost_note="a table lookup per op (the table is measured once per process)",
                   description=f"ProxylessNAS-style lookup-table latency at batch {_b}: sum of per-op medians "
                               f"measured on this device ({THREADS} thread; CPU: thread CPU time)")(latency_lut)
    register_proxy(f"latency_measured{_suffix}", higher_is_better=False, family="hardware", needs_data=False,
                   needs_labels=False, paper=_PROXYLESS, deterministic=False, batch_size=_b,
                   cost="forward", cost_note=f"two forward passes (batch {_b}), one of them timed",
                   description=f"latency of one timed forward pass at batch {_b} after one warm-up "
                               f"({THREADS} thread)")(latency_measured)
