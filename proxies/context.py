"""What a proxy sees of one architecture: a seeded network factory, the minibatch, and a shared memo."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from proxybench.datasets import accurate_bn


def hooked_forward(net: nn.Module, x: torch.Tensor, hook: Callable, modules) -> torch.Tensor:
    """One forward of ``x`` without gradients, ``hook`` a forward hook on each of ``modules`` for that forward only
    (removed however the forward ends); returns the output."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            return net(x)
    finally:
        for h in handles:
            h.remove()


class LabelAccessError(RuntimeError):
    """A proxy read data or labels although its record says it does not need them."""


@dataclass
class ProxyContext:
    """Everything a proxy may use for one (architecture, task, seed).

    ``build(bn)`` returns a new network; ``network()`` re-seeds torch with ``seed`` before each build, so
    every proxy of a cell sees the same initial weights whatever ran before it. ``memo`` lets proxies
    share passes within a cell (e.g. one backward pass for several gradient proxies).
    """

    arch: str
    task: str
    seed: int
    build: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    batch: tuple[torch.Tensor, torch.Tensor] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    memo: dict = field(default_factory=dict)
    allow_data: bool = True
    allow_labels: bool = True
    requested: tuple[str, ...] = ()  # every proxy the runner will compute on this cell: shared passes
    # compute only what these need
    # filled by the runner only for proxies that declare needs_training_data / needs_table:
    train_data: Callable[[], tuple] | None = None  # () -> (training images, held-out images): ImageSource-like
    table: dict | None = None  # the benchmark's own row for this (arch, task), e.g. {"test_acc_12": ...}
    # the dtype networks and inputs are computed in; float64 only for the precision measurement
    # (proxybench.precision): the network is built in float32 and cast, so it holds the same initial weights
    dtype: torch.dtype = torch.float32
    # the memory layout of float32 networks and images (registry.LAYOUTS), set from the proxy's record by
    # ProxyInfo.compute; float64 (the precision measurement's reference) stays in the default layout
    layout: str = "nchw"
    # seconds of per-cell work shared by the proxies of a share group (registry.SHARES), per group: filled by
    # ``shared_work``; the runner divides each group's among the members it scored on the cell
    shared_seconds: dict = field(default_factory=dict)
    _shared_depth: int = field(default=0, init=False, repr=False)  # nesting of shared_work blocks

    @contextmanager
    def shared_work(self, group: str) -> Iterator[None]:
        """Time the enclosed work as the share group ``group``'s (a pass its members compute once per cell and
        memoise); work nested in another group's is that group's."""
        if self._shared_depth:
            yield
            return
        self._shared_depth += 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._shared_depth -= 1
            self.shared_seconds[group] = self.shared_seconds.get(group, 0.0) + time.perf_counter() - t0

    @property
    def _channels_last(self) -> bool:
        return self.layout == "channels_last" and self.dtype == torch.float32

    def network(self, bn: bool = True) -> nn.Module:
        """A fresh network with the cell's seeded PyTorch-default initialisation (safe to modify)."""
        torch.manual_seed(self.seed)
        net = self.build(bn=bn).to(self.device)
        if self._channels_last:  # with BatchNorm's batch statistics as accurate as in NCHW (datasets/accurate_bn.py)
            return accurate_bn.use_in(net).to(memory_format=torch.channels_last)
        return net if self.dtype == torch.float32 else net.to(self.dtype)

    def shared_network(self) -> nn.Module:
        """One network per cell for proxies that only read it (params, flops); do not modify it."""
        if "_shared_net" not in self.memo:
            with self.shared_work("network"):
                self.memo["_shared_net"] = self.network()
        return self.memo["_shared_net"]

    @property
    def inputs(self) -> torch.Tensor:
        if not self.allow_data:
            raise LabelAccessError("this proxy is registered with needs_data=False but read the images")
        if self.batch is None:
            raise RuntimeError("no minibatch was prepared for this study")
        return self.to_layout(self.batch[0].to(self.device, self.dtype))

    def to_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (images or any 4-D activation) in the proxy's memory layout: what a proxy that draws its own
        inputs (e.g. zen's N(0, 1) images) feeds its network."""
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last and x.dim() == 4 else x

    @property
    def targets(self) -> torch.Tensor:
        if not self.allow_labels:
            raise LabelAccessError("this proxy is registered with needs_labels=False but read the labels")
        if self.batch is None:
            raise RuntimeError("no minibatch was prepared for this study")
        return self.batch[1].to(self.device)
