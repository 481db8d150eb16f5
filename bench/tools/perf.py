"""Speed and memory benchmark of the proxies: ratios against one forward+backward pass, measured in one run.

    proxybench perf [--cells 12] [--memory-cells 1000] [--out reports]
    proxybench perf --proxies NAMES [--out reports]    # time some proxies alone, merged into <out>/perf.json

For each of a seeded sample of NB201 cells (cifar10, batch 64 of real augmented images, seed 42) it times,
in the same process and in interleaved order:
  - one forward+backward pass of the cross-entropy loss (the unit),
  - the six classic proxies together through the registry (shared passes),
  - the same six in the reference style (``bench/tools/reference_impl.py``: a deep copy and passes per proxy),
  - every default-study training-free proxy and the self-supervised ones alone (``training_free()`` + Eproxy).
Ratios are medians over cells of (time / forward+backward time of that cell), so the machine's speed
cancels out. Then it scores ``--memory-cells`` cells with the six in one process and reports the growth
of resident memory. Results go to ``<out>/perf.json``, ``<out>/perf.md`` and the README's perf block.

With ``--proxies`` (names or wildcards; an aggregate stands for its members) it re-times only one forward+backward
and each named proxy alone, on the stored run's cells (its ``cells``, ``seed``, batch and threads), and merges them
into the stored ``per_proxy``, each with a ``measured`` record of that run; everything else is kept as it was.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from proxybench import allocator, provenance
from proxybench.datasets import nb201
from proxybench.datasets.images import image_source, sample_batch
from proxybench.proxies import (
    applies_to,
    get_proxy,
    list_proxies,
    per_cell,
    resolve_proxies,
    share_group,
    training_free,
)
from proxybench.report import PERF_STORE
from proxybench.runner import make_context
from proxybench.tools import reference_impl as ref
from proxybench.tools import tool_main, write_results

SIX = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow")
BEGIN_END = ("<!-- perf:begin -->", "<!-- perf:end -->")
TARGET_RATIO = 3.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _ctx(arch, batch, requested, task="cifar10"):
    return make_context("nb201", task, arch, 42, batch, requested=requested)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _fwd_bwd(arch, batch):
    torch.manual_seed(42)
    net = nb201.build_network(arch, "cifar10")
    F.cross_entropy(net(batch[0]), batch[1]).backward()


def _fwd_bwd_pytorch_pool(arch, batch):
    """The unit with PyTorch's own 3x3 average pooling kernel instead of ``datasets/kernels.py``'s (same bits)."""
    from proxybench.datasets import kernels

    with kernels.pytorch_kernels():
        _fwd_bwd(arch, batch)


def _fwd_bwd_channels_last(arch, batch, accurate_bn: bool = False):
    """The unit in the channels_last memory layout: the layout of the shared gradient pass and of the proxies whose
    records declare it (``layouts``); with ``accurate_bn``, its BatchNorm2d are ``datasets/accurate_bn.py``'s (batch
    statistics as accurate as NCHW's: what a switch of the gradient pass's layout would run)."""
    from proxybench.datasets import accurate_bn as abn

    torch.manual_seed(42)
    net = nb201.build_network(arch, "cifar10")
    if accurate_bn:
        abn.use_in(net)
    net = net.to(memory_format=torch.channels_last)
    F.cross_entropy(net(batch[0].contiguous(memory_format=torch.channels_last)), batch[1]).backward()


GRADIENT_LAYOUTS = ("nchw", "channels_last", "channels_last_accurate")


def _gradient(arch, batch, layout: str, dtype=torch.float32) -> torch.Tensor:
    """Every parameter's gradient of the seeded cell's loss (one forward+backward), concatenated, in float64."""
    from proxybench.datasets import accurate_bn

    torch.manual_seed(42)
    net = nb201.build_network(arch, "cifar10").to(dtype)
    fmt = torch.contiguous_format if layout == "nchw" else torch.channels_last
    if layout == "channels_last_accurate":
        accurate_bn.use_in(net)
    net = net.to(memory_format=fmt)
    F.cross_entropy(net(batch[0].to(dtype).contiguous(memory_format=fmt)), batch[1]).backward()
    return torch.cat([p.grad.flatten().double() for p in net.parameters() if p.grad is not None])


def gradient_accuracy(archs, batch) -> dict:
    """Per layout, the float32 gradient's relative error (2-norm) against the float64 NCHW gradient of the same
    seeded network and batch, median and largest over the cells: whether a layout rounds the pass more."""
    errs = {k: [] for k in GRADIENT_LAYOUTS}
    for arch in archs:
        ref = _gradient(arch, batch, "nchw", torch.float64)
        for k in GRADIENT_LAYOUTS:
            errs[k].append(float((_gradient(arch, batch, k) - ref).norm() / ref.norm()))
    return {k: {"median": float(np.median(v)), "max": float(max(v)), "cells": len(v)} for k, v in errs.items()}


def _shared_six(arch, batch):
    ctx = _ctx(arch, batch, SIX)
    return {n: get_proxy(n).compute(ctx) for n in SIX}


def _shared_six_generic(arch, batch):
    """The six with PyTorch's generic forward-mode formulas (none of ``proxies/hvp.py``'s hand-written tangents,
    the weights' scaling by output hooks): what they save."""
    from proxybench.proxies import hvp

    with hvp.generic_formulas():
        return _shared_six(arch, batch)


# the passes of the shared computation, cumulative: where the time of the six goes
STAGES = ("forward (with the weights' tangent)", "+ loss backward (with tangents)", "+ input-Jacobian backward")


def _in_pass_layout(arch, batch):
    """The cell's seeded network and a copy of the images in the shared gradient pass's memory layout."""
    from proxybench.proxies.gradient import LAYOUT

    torch.manual_seed(42)
    fmt = torch.channels_last if LAYOUT == "channels_last" else torch.contiguous_format
    return nb201.build_network(arch, "cifar10").to(memory_format=fmt), batch[0].clone(memory_format=fmt)


def layouts() -> dict[str, list[str]]:
    """The training-free proxies of the default study by the memory layout their records declare."""
    out: dict[str, list[str]] = {}
    for n in training_free():
        out.setdefault(get_proxy(n).layout, []).append(n)
    return out


def _stages(arch, batch, upto: int):
    """The shared pass's autograd work up to stage ``upto`` (index into STAGES), without the proxies' arithmetic."""
    from torch import nn

    from proxybench.proxies import hvp

    net, x = _in_pass_layout(arch, batch)
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    x = x.requires_grad_(True)
    with hvp.weight_direction(net):
        logits = net(x)
        if upto >= 1:
            torch.autograd.grad(logits, weights, hvp.cross_entropy_grad(logits, batch[1]), retain_graph=upto >= 2)
        logits = torch.autograd.forward_ad.unpack_dual(logits).primal
    if upto >= 2:
        with hvp.input_grads_only():
            torch.autograd.grad(logits.sum(), x)


def _double_backward_pass(arch, batch):
    """The same autograd work with GraSP the reference's way (create_graph backward, then a double backward through
    it; PyTorch's own formulas): the method proxybench used before (grasp v2)."""
    from torch import nn

    net, x = _in_pass_layout(arch, batch)
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    x = x.requires_grad_(True)
    logits = net(x)
    torch.autograd.grad(logits.sum(), x, retain_graph=True)
    g = torch.autograd.grad(F.cross_entropy(logits, batch[1]), weights, create_graph=True)
    torch.autograd.grad(sum((a.detach() * a).sum() for a in g), weights)


def _reference_six(arch, batch):
    torch.manual_seed(42)
    net = nb201.build_network(arch, "cifar10")
    return ref.all_six(net, batch[0], batch[1], partial(nb201.build_network, arch, "cifar10", bn=False), (3, 32, 32))


def _family(arch, batch, names, task="cifar10"):
    """Every training-free proxy of a cell in one context, as a study scores them (shared passes)."""
    ctx = _ctx(arch, batch, tuple(names), task)
    return {n: get_proxy(n).compute(ctx) for n in names}


class _FlopCount:
    """Convolution and matrix-product FLOPs of the aten operations run inside it (2 per multiply-add), with
    PyTorch's formulas (``torch.utils.flop_counter``) but two differences from its FlopCounterMode: no module
    hooks (so ``autograd.grad(..., inputs)`` and forward-mode passes run as without it), and a convolution's
    backward counted as one forward convolution per gradient it computes (input, weight), which is what both cost;
    FlopCounterMode's weight-gradient formula ignores ``groups`` and counts a grouped convolution's, as
    ``torch.func.vmap`` runs per-sample gradients, ``groups`` times over (tests/bench/test_perf.py)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_map
        from torch.utils.flop_counter import conv_flop_count, flop_registry

        counter = self
        self.total = 0
        backward = torch.ops.aten.convolution_backward
        shape = lambda t: t.shape if isinstance(t, torch.Tensor) else t  # noqa: E731

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                packet = func._overloadpacket
                if packet is backward:  # (grad_output, input, weight, ..., output_mask)
                    grad_out, x, w, mask = args[0], args[1], args[2], args[-1]
                    one = conv_flop_count(list(x.shape), list(w.shape), list(grad_out.shape))
                    counter.total += one * (int(bool(mask[0])) + int(bool(mask[1])))
                elif packet in flop_registry:
                    counter.total += flop_registry[packet](*tree_map(shape, args), **tree_map(shape, kwargs),
                                                           out_val=tree_map(shape, out))
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def counted_flops(fn) -> float:
    """Floating-point operations of ``fn()``: its convolutions and matrix products, forward and backward, 2 per
    multiply-add (:class:`_FlopCount`; elementwise work, pooling and BatchNorm are not counted, so a rate from it is
    a lower bound of the arithmetic done, and seconds at a peak rate from it a lower bound of the time)."""
    with _FlopCount() as c:
        fn()
    return float(c.total)


def machine_peak(repeats: int = 3) -> dict:
    """This core's attainable float32 rate (GFLOP/s, best of ``repeats``): a 2048² matrix product and a 3x3
    convolution of NB201's widest shape class (64 images, 64 -> 64 channels, 32x32; NCHW and channels_last)."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    x, w = torch.randn(64, 64, 32, 32), torch.randn(64, 64, 3, 3)
    xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    conv_flops = 2 * 64 * 64 * 64 * 9 * 32 * 32

    def rate(fn, flops):
        fn()  # warm-up
        return flops / min(_timed(fn) for _ in range(repeats)) / 1e9

    out = {"matmul_2048": rate(lambda: a @ b, 2 * n ** 3),
           "conv3x3_nchw": rate(lambda: F.conv2d(x, w, padding=1), conv_flops),
           "conv3x3_channels_last": rate(lambda: F.conv2d(xc, wc, padding=1), conv_flops)}
    out["peak"] = max(out.values())
    return out


def batchnorm_accuracy(shape=(64, 16, 32, 32), mean: float = 5.0, seed: int = 0) -> dict:
    """Largest relative error of train-mode BatchNorm's float32 forward against float64, per memory layout, on a
    batch of NB201's widest shape whose activations have a mean (as after a ReLU): why the pass keeps NCHW."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 3 + mean
    ref = F.batch_norm(x.double(), None, None, training=True)
    err = lambda y: float((y.double() - ref).abs().max() / ref.abs().max())  # noqa: E731
    return {"nchw": err(F.batch_norm(x, None, None, training=True)),
            "channels_last": err(F.batch_norm(x.contiguous(memory_format=torch.channels_last), None, None,
                                              training=True))}


def _one(arch, batch, name):
    p = get_proxy(name)
    ctx = _ctx(arch, batch, (name,))
    return p.compute(ctx)


def _sample(every, cells: int, rng) -> list[str]:
    """A run's seeded cells: the first draw of its generator (perf.json's ``cells`` and ``seed`` define them)."""
    return [every[i] for i in rng.choice(len(every), cells, replace=False)]


def nb101_proxies() -> list[str]:
    """The training-free proxies whose definitions apply to NB101 networks (not the NB201-only ones)."""
    return [n for n in training_free() if applies_to(n, "nb101")]


def _nb101(cells: int, batch, seed: int, data_dir=None) -> dict:
    """Per-cell seconds on NB101 networks (stem 128): one forward+backward, the six classic proxies with
    shared passes, and every training-free proxy of the default study together (one run each)."""
    from proxybench.datasets import nb101

    every = nb101.all_archs(data_dir)
    rng = np.random.default_rng(seed)
    archs = [every[i] for i in rng.choice(len(every), cells, replace=False)]
    every_proxy = nb101_proxies()
    rows = []
    for arch in archs:
        build = nb101.builder(arch, "cifar10", data_dir)

        def ctx(requested, build=build, arch=arch):
            return make_context("nb101", "cifar10", arch, 42, batch, requested=requested, build=build)

        def fwd_bwd(build=build):
            torch.manual_seed(42)
            F.cross_entropy(build()(batch[0]), batch[1]).backward()

        def together(names):
            c = ctx(names)
            return {n: get_proxy(n).compute(c) for n in names}

        rows.append({"fwd_bwd": _timed(fwd_bwd), "six": _timed(lambda: together(SIX)),
                     "all": _timed(lambda: together(every_proxy))})
    med = lambda k: float(np.median([r[k] for r in rows]))  # noqa: E731
    return {"cells": cells, "batch_size": int(batch[0].shape[0]), "fwd_bwd_seconds_median": med("fwd_bwd"),
            "six_seconds_median": med("six"), "all_seconds_median": med("all"), "proxies": every_proxy,
            "six_over_fwd_bwd": float(np.median([r["six"] / r["fwd_bwd"] for r in rows]))}


OTHER_TASKS = ("cifar100", "ImageNet16-120")  # the family's cost is measured on each: it is not cifar10's


def family_tasks(archs, batch, flops10, family, data_dir=None, repeats: int = 2) -> dict:
    """The family's time and counted work per cell on each of :data:`OTHER_TASKS`, as ratios to cifar10's per cell:
    on ``archs`` (the first cells of the run; ``batch`` its cifar10 batch, ``flops10`` their cifar10 counted work),
    cifar10 timed again beside each task, interleaved, so that a ratio is of one stretch of the machine's load. A
    task's cost differs: VKDNW's per-sample Jacobian takes one backward pass per logit direction (9 on cifar10, 64 on
    cifar100 and ImageNet16-120, whose classifier has 64 inputs), and ImageNet16-120's 16x16 inputs have a quarter of
    the pixels. A task's batch is drawn like cifar10's (64 augmented training images, seed 42); ``substitute``: its
    images stand in for missing ones (``image_source``; the shapes are the task's, so the cost is its)."""
    best = lambda fn: min(_timed(fn) for _ in range(repeats))  # noqa: E731
    sources = {t: image_source(t, data_dir) for t in OTHER_TASKS}
    batches = {t: sample_batch(sources[t], 64, 42) for t in OTHER_TASKS}
    seconds: dict[str, list[float]] = {t: [] for t in ("cifar10", *OTHER_TASKS)}
    for a in archs:
        seconds["cifar10"].append(best(lambda a=a: _family(a, batch, family)))
        for t in OTHER_TASKS:
            seconds[t].append(best(lambda a=a, t=t: _family(a, batches[t], family, t)))
    out = {}
    for t in OTHER_TASKS:
        flops = [counted_flops(lambda a=a, t=t: _family(a, batches[t], family, t)) for a in archs]
        over = [s / c for s, c in zip(seconds[t], seconds["cifar10"], strict=True)]
        out[t] = {"cells": len(archs), "substitute": bool(sources[t].substitute),
                  "seconds_median": float(np.median(seconds[t])),
                  "cifar10_seconds_median": float(np.median(seconds["cifar10"])),
                  "over_cifar10": float(np.median(over)), "over_cifar10_range": [float(min(over)), float(max(over))],
                  "gflop_mean": float(np.mean(flops)) / 1e9,
                  "flops_over_cifar10": float(np.sum(flops) / np.sum(flops10))}
    return out


def run(cells: int = 12, memory_cells: int = 1000, seed: int = 0, data_dir=None, threads: int = 1,
        repeats: int = 2, nb101_cells: int = 2, task_cells: int = 4) -> dict:
    torch.set_num_threads(threads)  # as each worker process of a study runs
    load_before = os.getloadavg()[0]  # other work on the machine: ratios are in-run, absolute times are not
    batch = sample_batch(image_source("cifar10", data_dir), 64, 42)
    every = nb201.all_archs(data_dir)
    rng = np.random.default_rng(seed)
    archs = _sample(every, cells, rng)
    # the training-free proxies, and the self-supervised ones (Eproxy: a few SGD steps on 16 images); the
    # proxies that train for epochs or time the hardware are measured by their own sections
    names = training_free() + list_proxies(family="self-supervised")
    family = training_free()
    _fwd_bwd(archs[0], batch)  # warm-up: allocator, kernels, imports
    _shared_six(archs[0], batch)
    peak = machine_peak()
    rows = []
    for arch in archs:
        # every measurement is the best of `repeats` runs, so background noise inflates none of them
        best = lambda fn: min(_timed(fn) for _ in range(repeats))  # noqa: E731
        row = {"arch": arch, "fwd_bwd": best(lambda a=arch: _fwd_bwd(a, batch)),
               "fwd_bwd_flops": counted_flops(lambda a=arch: _fwd_bwd(a, batch))}
        row["family"] = best(lambda a=arch: _family(a, batch, family))
        row["family_flops"] = counted_flops(lambda a=arch: _family(a, batch, family))
        row["fwd_bwd_channels_last"] = best(lambda a=arch: _fwd_bwd_channels_last(a, batch))
        row["fwd_bwd_channels_last_accurate"] = best(lambda a=arch: _fwd_bwd_channels_last(a, batch, True))
        row["fwd_bwd_pytorch_pool"] = best(lambda a=arch: _fwd_bwd_pytorch_pool(a, batch))
        row["shared_six"] = best(lambda a=arch: _shared_six(a, batch))
        row["reference_six"] = best(lambda a=arch: _reference_six(a, batch))
        row["shared_six_generic"] = best(lambda a=arch: _shared_six_generic(a, batch))
        for i, stage in enumerate(STAGES):
            row[stage] = best(lambda a=arch, i=i: _stages(a, batch, i))
        row["double_backward_pass"] = best(lambda a=arch: _double_backward_pass(a, batch))
        for n in names:
            row[n] = best(lambda a=arch, n=n: _one(a, batch, n))
        rows.append(row)
    ratio = lambda k: float(np.median([r[k] / r["fwd_bwd"] for r in rows]))  # noqa: E731
    result = {
        "cells": cells, "seed": seed, "batch_size": 64, "task": "cifar10", "threads": torch.get_num_threads(),
        "repeats": repeats,
        "fwd_bwd_seconds_median": float(np.median([r["fwd_bwd"] for r in rows])),
        "shared_six_over_fwd_bwd": ratio("shared_six"),
        "reference_six_over_fwd_bwd": ratio("reference_six"),
        "speedup_vs_reference": float(np.median([r["reference_six"] / r["shared_six"] for r in rows])),
        "shared_six_seconds_median": float(np.median([r["shared_six"] for r in rows])),
        "reference_six_seconds_median": float(np.median([r["reference_six"] for r in rows])),
        "shared_six_generic_over_fwd_bwd": ratio("shared_six_generic"),
        "shared_six_generic_seconds_median": float(np.median([r["shared_six_generic"] for r in rows])),
        "stages": {k: {"seconds_median": float(np.median([r[k] for r in rows])), "over_fwd_bwd": ratio(k)}
                   for k in STAGES},
        "double_backward_pass": {"seconds_median": float(np.median([r["double_backward_pass"] for r in rows])),
                                 "over_fwd_bwd": ratio("double_backward_pass")},
        "per_proxy": {n: {"seconds_median": float(np.median([r[n] for r in rows])), "over_fwd_bwd": ratio(n)}
                      for n in names},
        "peak_gflops": peak,
        "fwd_bwd_gflop_median": float(np.median([r["fwd_bwd_flops"] for r in rows])) / 1e9,
        "fwd_bwd_gflops_per_s_median": float(np.median([r["fwd_bwd_flops"] / r["fwd_bwd"] for r in rows])) / 1e9,
        "fwd_bwd_channels_last_speedup": float(np.median([r["fwd_bwd"] / r["fwd_bwd_channels_last"]
                                                          for r in rows])),
        "fwd_bwd_channels_last_seconds_median": float(np.median([r["fwd_bwd_channels_last"] for r in rows])),
        "fwd_bwd_channels_last_gflops_per_s_median": float(np.median([r["fwd_bwd_flops"] / r["fwd_bwd_channels_last"]
                                                                      for r in rows])) / 1e9,
        "fwd_bwd_channels_last_accurate_seconds_median": float(np.median([r["fwd_bwd_channels_last_accurate"]
                                                                          for r in rows])),
        "fwd_bwd_channels_last_accurate_speedup": float(np.median([r["fwd_bwd"] / r["fwd_bwd_channels_last_accurate"]
                                                                   for r in rows])),
        "fwd_bwd_channels_last_accurate_gflops_per_s_median": float(np.median(
            [r["fwd_bwd_flops"] / r["fwd_bwd_channels_last_accurate"] for r in rows])) / 1e9,
        "gradient_rel_error": gradient_accuracy(archs, batch),
        "fwd_bwd_pytorch_pool_seconds_median": float(np.median([r["fwd_bwd_pytorch_pool"] for r in rows])),
        "pool_kernel_speedup": float(np.median([r["fwd_bwd_pytorch_pool"] / r["fwd_bwd"] for r in rows])),
        "layouts": layouts(),
        "batchnorm_rel_error": batchnorm_accuracy(),
        "family": {"proxies": family, "seconds_median": float(np.median([r["family"] for r in rows])),
                   "over_fwd_bwd": ratio("family"),
                   # the family's counted work: the floor of its time at the machine's peak (limit_lines)
                   "gflop_median": float(np.median([r["family_flops"] for r in rows])) / 1e9,
                   "gflop_mean": float(np.mean([r["family_flops"] for r in rows])) / 1e9,
                   "flops_over_fwd_bwd": float(np.median([r["family_flops"] / r["fwd_bwd_flops"] for r in rows]))},
        "environment": provenance.environment(),
        "allocator_tuned": allocator.tune(),  # as in every scoring process (set by the CLI before any tensor)
        "load_average_1min": {"before": load_before, "after_timing": os.getloadavg()[0], "cpus": os.cpu_count()},
    }
    if task_cells:  # the other tasks' cost per cell, as ratios to cifar10's on the same first cells
        n = min(task_cells, cells)
        result["family"]["tasks"] = family_tasks(archs[:n], batch, [r["family_flops"] for r in rows[:n]], family,
                                                 data_dir, repeats)
    if memory_cells:
        mem_archs = [every[i] for i in rng.choice(len(every), memory_cells, replace=False)]
        _shared_six(mem_archs[0], batch)
        before = _rss_mb()
        rss_peak = before
        t0 = time.perf_counter()
        for a in mem_archs:
            _shared_six(a, batch)
            rss_peak = max(rss_peak, _rss_mb())
        result["memory"] = {"cells": memory_cells, "rss_before_mb": before, "rss_after_mb": _rss_mb(),
                            "rss_peak_mb": rss_peak, "growth_mb": _rss_mb() - before,
                            "seconds_per_cell": (time.perf_counter() - t0) / memory_cells}
    if nb101_cells:  # after the memory check: NB101's big networks raise the resident set for good
        result["nb101"] = _nb101(nb101_cells, batch, seed, data_dir)
    return result


def alone_names(spec) -> list[str]:
    """The per-cell proxies that ``--proxies`` names (``resolve_proxies``: names, wildcards, ``@family``; an aggregate
    stands for its members). External scores are refused: nothing here computes them."""
    names = per_cell(resolve_proxies(spec))
    external = [n for n in names if get_proxy(n).external]
    if external:
        raise ValueError(f"{', '.join(external)}: external scores, computed elsewhere; nothing to time here")
    return names


def time_alone(names, stored: dict, data_dir=None, repeats: int = 2, cells: int | None = None) -> dict:
    """Each of ``names`` alone and one forward+backward (the unit), best of ``repeats``, on the cells of the stored
    run ``stored`` (its ``cells`` and ``seed``: the same seeded cells, batch and torch threads; ``cells``: only the
    first that many of them). Returns ``per_proxy`` entries, each with the ``measured`` record of this run: its
    seconds are this run's, its ratio (to this run's forward+backward, per cell, median) is comparable with the
    stored ones."""
    n_cells = stored["cells"] if cells is None else cells
    if not 1 <= n_cells <= stored["cells"]:
        raise ValueError(f"--cells {n_cells}: the stored run timed {stored['cells']} cells; a partial run times "
                         "those or the first of them")
    before_threads = torch.get_num_threads()
    torch.set_num_threads(stored.get("threads", 1))  # as the stored run: a ratio depends on the threads
    try:
        load_before = os.getloadavg()[0]
        batch = sample_batch(image_source("cifar10", data_dir), stored.get("batch_size", 64), 42)
        # perf.json of a run before the seed was stored: run()'s default seed, the only one `make perf` uses
        rng = np.random.default_rng(stored.get("seed", 0))
        archs = _sample(nb201.all_archs(data_dir), stored["cells"], rng)[:n_cells]
        _fwd_bwd(archs[0], batch)  # warm-up: allocator, kernels, imports
        for n in names:
            _one(archs[0], batch, n)
        best = lambda fn: min(_timed(fn) for _ in range(repeats))  # noqa: E731
        rows = []
        for arch in archs:  # interleaved, as in run(): a slow spell of the machine touches every column alike
            row = {"fwd_bwd": best(lambda a=arch: _fwd_bwd(a, batch))}
            for n in names:
                row[n] = best(lambda a=arch, n=n: _one(a, batch, n))
            rows.append(row)
        measured = {"commit": provenance.git_commit(),
                    "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "load_average_1min": {"before": load_before, "after": os.getloadavg()[0], "cpus": os.cpu_count()},
                    "threads": torch.get_num_threads(), "cells": n_cells, "repeats": repeats,
                    "fwd_bwd_seconds_median": float(np.median([r["fwd_bwd"] for r in rows]))}
    finally:
        torch.set_num_threads(before_threads)
    return {n: {"seconds_median": float(np.median([r[n] for r in rows])),
                "over_fwd_bwd": float(np.median([r[n] / r["fwd_bwd"] for r in rows])), "measured": dict(measured)}
            for n in names}


def merge_alone(stored: dict, entries: dict) -> dict:
    """``stored`` with ``entries`` (``time_alone``) put into its ``per_proxy``: a named proxy's entry replaced, the
    others (the main run's, without ``measured``, and earlier partial runs') and everything else kept."""
    import copy

    r = copy.deepcopy(stored)
    r["per_proxy"] = {**r.get("per_proxy", {}), **copy.deepcopy(entries)}
    return r


def newer_proxies(r: dict) -> tuple[list[str], list[str]]:
    """The default-study proxies (``training_free()``) that the stored family run lacks: those with a ``per_proxy``
    entry (timed alone), and those not timed at all."""
    missing = [n for n in training_free() if n not in set(r["family"]["proxies"])]
    timed = [n for n in missing if n in r.get("per_proxy", {})]
    return timed, [n for n in missing if n not in timed]


def grouped_sum(per_proxy: dict, names) -> dict:
    """The cost of ``names`` alone, summed with each share group of the registry (``share_group``) counted once,
    by its most expensive member (by ratio: the comparable number across runs). ``groups``: (members, the one
    counted) of each group with more than one of ``names``."""
    groups: dict[frozenset, list[str]] = {}
    for n in names:
        groups.setdefault(share_group(n) or frozenset({n}), []).append(n)
    counted = [max(g, key=lambda n: per_proxy[n]["over_fwd_bwd"]) for g in groups.values()]
    return {"seconds": sum(per_proxy[n]["seconds_median"] for n in counted),
            "over_fwd_bwd": sum(per_proxy[n]["over_fwd_bwd"] for n in counted),
            "groups": [(g, c) for g, c in zip(groups.values(), counted, strict=True) if len(g) > 1]}


MARKS = "†‡§¶"


def _marks(per_proxy: dict) -> dict:
    """A footnote mark for each distinct partial run (commit, timestamp) of the ``per_proxy`` entries, in time order."""
    runs = sorted({(v["measured"]["timestamp"], v["measured"]["commit"]) for v in per_proxy.values()
                   if "measured" in v})
    return {k: MARKS[i] if i < len(MARKS) else f"†{i + 1}" for i, k in enumerate(runs)}


def _mark(marks: dict, v: dict) -> str:
    return marks[(v["measured"]["timestamp"], v["measured"]["commit"])] if "measured" in v else ""


def per_proxy_lines(r: dict) -> list[str]:
    """The table of every proxy alone, by ratio (seconds of a partial run come from another run than the rest), its
    rows of later partial runs marked and a note on each of those runs."""
    pp, marks = r["per_proxy"], _marks(r["per_proxy"])
    L = ["| proxy (alone) | seconds per cell | ÷ forward+backward |", "|---|---|---|"]
    for n, v in sorted(pp.items(), key=lambda kv: kv[1]["over_fwd_bwd"]):
        L.append(f"| {n}{_mark(marks, v)} | {v['seconds_median']:.3f} | {v['over_fwd_bwd']:.2f} |")
    for (ts, commit), mark in marks.items():
        m = next(v["measured"] for v in pp.values() if "measured" in v and v["measured"]["timestamp"] == ts
                 and v["measured"]["commit"] == commit)
        load = m["load_average_1min"]
        L += ["", f"{mark} Measured later, alone, by `proxybench perf --proxies` at commit {commit} ({ts}; "
              f"{m['cells']} of the {r['cells']} cells above, best of {m['repeats']}, {m['threads']} torch threads; "
              f"machine load {load['before']:.1f} before and {load['after']:.1f} after, on {load['cpus']} CPUs; its "
              f"forward+backward {m['fwd_bwd_seconds_median']:.3f} s per cell): their seconds come from another run "
              "than the rest, so their ratio to that run's own forward+backward is the comparable number."]
    return L


def markdown(r: dict, runs=()) -> str:
    """perf.md's body from a run ``r``; ``runs``: the archived full runs (:func:`load_runs`), one row each."""
    env = r["environment"]
    L = [f"Measured by `make perf` (`proxybench perf`) on {r['cells']} seeded NB201 cells, cifar10, batch "
         f"{r['batch_size']}, CPU ({env.get('cpu', 'model not recorded')}) with {r['threads']} torch threads, torch "
         f"{env['torch']}, commit {env['git_commit']}. "
         f"Times are medians over cells; ratios are per-cell time divided by that cell's forward+backward time "
         f"(median {r['fwd_bwd_seconds_median']:.3f} s)."
         + (f" Machine load (1-minute average) {r['load_average_1min']['before']:.1f} before and "
            f"{r['load_average_1min']['after_timing']:.1f} after the timing, on {r['load_average_1min']['cpus']} "
            "CPUs." if "load_average_1min" in r else "")
         + (" Memory allocator: glibc's, set by `bench/allocator.py` as in every scoring process (freed tensor memory "
            "kept, huge pages for tensors of 2 MB and more; no value changes)." if r.get("allocator_tuned") else ""),
         "",
         "| what | seconds per cell | ÷ one forward+backward |", "|---|---|---|",
         f"| six classic proxies, shared passes (proxybench) | {r['shared_six_seconds_median']:.3f} | "
         f"**{r['shared_six_over_fwd_bwd']:.2f}** |",
         f"| six classic proxies, reference style (a copy and passes per proxy) | "
         f"{r['reference_six_seconds_median']:.3f} | {r['reference_six_over_fwd_bwd']:.2f} |",
         f"| the same, PyTorch's generic forward-mode formulas (none of `proxies/hvp.py`'s tangents) | "
         f"{r['shared_six_generic_seconds_median']:.3f} | {r['shared_six_generic_over_fwd_bwd']:.2f} |",
         "", f"Speed-up over the reference style: {r['speedup_vs_reference']:.1f}x. Target of the training-free "
         f"issue: at most {TARGET_RATIO:g}x one forward+backward — "
         + ("**met**." if r["shared_six_over_fwd_bwd"] <= TARGET_RATIO else
            f"**not met** ({r['shared_six_over_fwd_bwd']:.2f}x)."), ""]
    if "pool_kernel_speedup" in r:
        L += [f"Kernels: one forward+backward with PyTorch's own 3x3 average pooling kernel takes "
              f"{r['fwd_bwd_pytorch_pool_seconds_median']:.3f} s per cell, with `datasets/kernels.py`'s (whole-tensor "
              f"shifted adds in PyTorch's order: the same bits forward, backward and tangent, tested for equality) "
              f"{r['fwd_bwd_seconds_median']:.3f} s: {r['pool_kernel_speedup']:.2f}x (median of the per-cell "
              "ratios). Every NB201 proxy runs the faster kernel; no score moved.", ""]
    if "stages" in r:
        st = r["stages"]
        L += ["Where the six's time goes (the shared pass's autograd work, cumulative, same cells; synflow's own "
              "single-image pass and the proxies' arithmetic are the rest):", "",
              "| passes | seconds per cell | ÷ forward+backward |", "|---|---|---|"]
        L += [f"| {k} | {v['seconds_median']:.3f} | {v['over_fwd_bwd']:.2f} |" for k, v in st.items()]
        if "double_backward_pass" in r:
            d = r["double_backward_pass"]
            L += [f"| the same with GraSP by a create_graph backward and a double backward (grasp v2, the reference's "
                  f"method) | {d['seconds_median']:.3f} | {d['over_fwd_bwd']:.2f} |"]
        L += ["",
              "How: GraSP's score is a sum, -w·(Hg), and H is symmetric, so it equals -g·(Hw), where Hw is the "
              "derivative of the gradient when every Conv/Linear weight is scaled by 1+s. That derivative is carried "
              "forward through the one forward and loss backward the other proxies use (forward-over-reverse), instead "
              "of a create_graph backward plus a double backward. Counted in convolutions per layer: one "
              "forward+backward is 3 (forward, input gradient, weight gradient); the six need the forward and its "
              "tangent (2), the loss backward (2) and its tangents (3: the input gradient's 1, the weight gradient's "
              "2), and jacob_cov's input-only backward (1): 8, a ratio of 2.7 in the convolutions (the double backward "
              "needed 10). `proxies/hvp.py` writes the tangents of convolution, BatchNorm (closed form) and 3x3 pooling"
              " by hand and leaves the primal values to PyTorch's kernels, so every other proxy's value is unchanged "
              "bit for bit (tested); the generic-formulas row above shows what the hand-written tangents save.",
              ""]
    if "memory" in r:
        m = r["memory"]
        L += [f"Memory: scoring {m['cells']} cells with the six in one process grew resident memory by "
              f"{m['growth_mb']:+.0f} MB ({m['rss_before_mb']:.0f} → {m['rss_after_mb']:.0f} MB, peak "
              f"{m['rss_peak_mb']:.0f} MB); {m['seconds_per_cell']:.3f} s per cell.", ""]
    if "nb101" in r:
        b = r["nb101"]
        lack = [n for n in training_free() if n not in b["proxies"] and applies_to(n, "nb101")]
        nb201_only = [n for n in training_free() if not applies_to(n, "nb101")]
        L += [f"NAS-Bench-101 (stem 128 channels, batch {b['batch_size']}, {b['cells']} seeded cells): one "
              f"forward+backward {b['fwd_bwd_seconds_median']:.2f} s; the six classic proxies "
              f"{b['six_seconds_median']:.2f} s per cell ({b['six_over_fwd_bwd']:.2f}x); all "
              f"{len(b['proxies'])} training-free proxies together {b['all_seconds_median']:.2f} s per cell"
              + (f" (not included: {', '.join(lack)}; a partial run times NB201 only)"
                 if lack else "")
              + (f"; {', '.join(nb201_only)} are defined for NB201 networks only" if nb201_only else "") + ".", ""]
    L += limit_lines(r)
    if "reference_code" in r:
        z = r["reference_code"]
        L += ["## Against the zero-cost-nas reference code", "",
              f"Whole processes, start-up included, on {z['cells']} seeded NB201 cells (cifar10, the same "
              f"minibatch of 64), the six classic proxies: the reference code (commit {z['reference_commit']}, "
              f"its `find_measures`, run as it is) {z['reference_seconds']:.1f} s, `proxybench run` "
              f"{z['proxybench_seconds']:.1f} s: **{z['speedup']:.2f}x** (target of the speed issue: "
              f"{TARGET_REFERENCE:g}x — {'**met**' if z['speedup'] >= TARGET_REFERENCE else '**not met**'}). "
              "The reference-style rows above re-implement its method inside this process; this is its own code.",
              ""]
    L += runs_lines(runs)
    L += per_proxy_lines(r)
    return "\n".join(L)


# The zero-cost-nas reference code, run as it is (never copied into this project) from a checkout given with
# --reference-code: one whole process that scores the cells with its `find_measures`, next to one whole
# `proxybench run` process of the same six proxies on the same cells and minibatch.
REFERENCE_SCRIPT = """
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import torch
from foresight.models.nasbench2 import get_model_from_arch_str
from foresight.pruners.predictive import find_measures
x, y = torch.load(sys.argv[2])
archs = [a for a in open(sys.argv[3]).read().split() if a]
for arch in archs:
    torch.manual_seed(42)
    net = get_model_from_arch_str(arch, 10)
    find_measures(net, [(x, y)], ("random", 1, 10), torch.device("cpu"), measure_names=sys.argv[4].split(","))
print(time.perf_counter() - t0)
"""


def reference_code_timing(code_dir: str, cells: int = 8, seed: int = 0, data_dir=None) -> dict:
    """Whole-process seconds of the zero-cost-nas reference code and of `proxybench run` for the six classic
    proxies on the same seeded NB201 cells (cifar10) and the same minibatch, one after the other, each with
    PyTorch's default threads (both use every core, as a user runs them)."""
    import subprocess
    import sys
    import tempfile

    every = nb201.all_archs(data_dir)
    archs = [every[i] for i in np.random.default_rng(seed).choice(len(every), cells, replace=False)]
    batch = sample_batch(image_source("cifar10", data_dir), 64, 42)
    commit = subprocess.run(["git", "-C", code_dir, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown (not a git checkout)"
    with tempfile.TemporaryDirectory() as tmp:
        archs_file, batch_file = Path(tmp) / "archs.txt", Path(tmp) / "batch.pt"
        archs_file.write_text("\n".join(archs) + "\n")
        torch.save(batch, batch_file)

        def whole(cmd):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            return time.perf_counter() - t0

        ref = whole([sys.executable, "-c", REFERENCE_SCRIPT, code_dir, str(batch_file), str(archs_file),
                     ",".join(SIX)])
        ours = whole([sys.executable, "-m", "proxybench.cli", "run", "--space", "nb201", "--task", "cifar10",
                      "--archs-file", str(archs_file), "--proxies", ",".join(SIX), "--cache", str(Path(tmp) / "c"),
                      "--no-progress"])
    return {"cells": cells, "reference_seconds": ref, "proxybench_seconds": ours, "speedup": ref / ours,
            "reference_commit": commit, "proxies": list(SIX)}


NB201_PAIRS = 15625 * 3  # every cell on cifar10, cifar100 and ImageNet16-120
TARGET_REFERENCE = 3.0  # ... and for the six against the reference code, whole processes
TARGET_GFLOPS = 60.0  # the speed issue's target for one forward+backward on one core
TARGET_HOURS = 8.0  # and for the complete NB201 training-free table on this machine


def task_text(fam: dict) -> str:
    """How the projection weighs the tasks: cifar10's time per cell and the others' measured ratios to it."""
    tasks = fam["tasks"]
    n = next(iter(tasks.values()))["cells"]
    parts = [f"{t} {fam['seconds_median'] * v['over_cifar10']:.2f} s ({v['over_cifar10']:.2f}x, "
             f"{v['over_cifar10_range'][0]:.2f}-{v['over_cifar10_range'][1]:.2f})" for t, v in tasks.items()]
    subs = [t for t, v in tasks.items() if v["substitute"]]
    return (f"each task at its measured time per cell: cifar10 {fam['seconds_median']:.2f} s, "
            + ", ".join(parts) + f" (cifar10's times the task's ratio to it, per cell, median and range over the "
            f"first {n} cells, timed side by side; VKDNW takes one backward pass per logit direction: 9 on cifar10, "
            "64 on the others)"
            + (f"; {', '.join(subs)} on substitute images of its shape (the cost is of the shape)" if subs else ""))


def _projection(r: dict):
    """(project, per_pair): seconds per (cell, task) pair -> hours of the complete table on the run's cores, and a
    cifar10 quantity -> its mean per pair, each task weighed by its measured ratio ``key`` to cifar10 (a run before
    the tasks were measured: cifar10's for every task)."""
    cpus = r.get("load_average_1min", {}).get("cpus") or 1
    tasks = r["family"].get("tasks")  # the other tasks' cost as ratios to cifar10's (absent from older runs)
    per_pair = (lambda c10, key: c10 * (1 + sum(t[key] for t in tasks.values())) / 3) if tasks else \
        (lambda c10, key: c10)
    return (lambda seconds: seconds * NB201_PAIRS / cpus / 3600), per_pair


RUNS_DIR = "perf_runs"  # <out>/perf_runs/<UTC time>-<cpu>.json: every full `make perf` run, kept (append-only)


def archive_run(out, r: dict, when: datetime | None = None) -> Path:
    """Keep a full run's perf.json as ``<out>/perf_runs/<UTC time>-<cpu>.json`` (never overwritten): perf.json holds
    the latest run only, and the machine a session draws differs (the table of :func:`runs_lines`)."""
    from proxybench import store

    when = when or datetime.now(timezone.utc)
    cpu = r.get("environment", {}).get("cpu", "unknown").split(";")[0]
    slug = "-".join("".join(c if c.isalnum() else " " for c in cpu.lower()).split())[:40] or "unknown"
    path = Path(out) / RUNS_DIR / f"{when.strftime('%Y%m%dT%H%M%S')}-{slug}.json"
    if path.exists():
        raise FileExistsError(f"{path} exists: archived runs are never overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    store.write_json(path, r, PERF_STORE)
    return path


def load_runs(out) -> list[tuple[str, dict]]:
    """The archived full runs of ``<out>/perf_runs``, oldest first: (file stem, perf.json of that run)."""
    from proxybench import store

    return [(p.stem, store.read_json(p, PERF_STORE)) for p in sorted((Path(out) / RUNS_DIR).glob("*.json"))]


def runs_lines(runs) -> list[str]:
    """One row per archived run: the machine, the unit and its rate, the targets' quantities."""
    if len(runs) < 2:
        return []
    L = ["## On each machine measured", "",
         f"Every full `make perf` run is kept in `reports/{RUNS_DIR}/` (the file name: when, in UTC, and the CPU). "
         "The machine a session is given differs, and with it every absolute figure: the same code runs the NB201 "
         "pass at a different fraction of each CPU's peak. Ratios within one run are the comparable numbers.", "",
         "| run | CPU | commit | forward+backward, s | GFLOP/s (of peak) | six ÷ forward+backward | × the reference "
         "code | family, s per cifar10 cell | complete table, h | its floor, h |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for stem, r in runs:
        pk = r.get("peak_gflops")
        rate = (f"{r['fwd_bwd_gflops_per_s_median']:.1f} ({r['fwd_bwd_gflops_per_s_median'] / pk['peak']:.0%})"
                if pk else "–")
        ref = f"{r['reference_code']['speedup']:.2f}x" if "reference_code" in r else "–"
        fam = r["family"]
        project, per_pair = _projection(r)
        hours = f"{project(per_pair(fam['seconds_median'], 'over_cifar10')):.1f}" + ("" if "tasks" in fam else "*")
        floor = (f"{project(per_pair(fam['gflop_mean'], 'flops_over_cifar10') / pk['peak']):.1f}"
                 + ("" if "tasks" in fam else "*")) if pk and "gflop_mean" in fam else "–"
        L.append(f"| {stem.split('-')[0]} | {r['environment'].get('cpu', '?')} | {r['environment']['git_commit']} | "
                 f"{r['fwd_bwd_seconds_median']:.3f} | {rate} | {r['shared_six_over_fwd_bwd']:.2f} | {ref} | "
                 f"{fam['seconds_median']:.2f} | {hours} | {floor} |")
    if any("tasks" not in r["family"] for _, r in runs):
        L += ["", "\\* at the cifar10 cost for every task (that run did not measure the others): no bound, "
              "cifar100's VKDNW costs more."]
    return L + [""]


def limit_lines(r: dict) -> list[str]:
    """The machine's limit and how close the passes come to it (absent from a perf.json of an older run)."""
    if "peak_gflops" not in r:
        return []
    pk, fam = r["peak_gflops"], r["family"]
    cpus = r.get("load_average_1min", {}).get("cpus") or 1
    project, per_pair = _projection(r)
    tasks = fam.get("tasks")
    hours = project(per_pair(fam["seconds_median"], "over_cifar10"))
    timed, untimed = newer_proxies(r)
    s = grouped_sum(r["per_proxy"], timed) if timed else None
    # their ratios at this run's forward+backward: seconds of a partial run are of another machine load
    added = s["over_fwd_bwd"] * r["fwd_bwd_seconds_median"] if s else 0.0
    complete = hours + project(added)  # the newer proxies at their cifar10 cost on every task
    missing = timed + untimed
    family_row = (f"| all {len(fam['proxies'])} training-free proxies together (shared passes)"
                  + (f"; not included: {', '.join(missing)}" if missing else "")
                  + (f" | {fam['gflop_median']:.1f} | " if "gflop_median" in fam else " | – | ")
                  + f"{fam['seconds_median']:.3f} ({fam['over_fwd_bwd']:.2f}x one forward+backward) | "
                  + (f"{fam['gflop_median'] / fam['seconds_median']:.1f} | "
                     f"{fam['gflop_median'] / fam['seconds_median'] / r['peak_gflops']['peak']:.0%} |"
                     if "gflop_median" in fam else "– | – |"))
    newer = []
    if s:
        shared = "; ".join(f"{', '.join(sorted(g))}: {c}" for g, c in s["groups"])
        newer += [f"The newer proxies alone, summed: {s['seconds']:.3f} s per cell ({s['over_fwd_bwd']:.2f}x one "
                  f"forward+backward), from their own rows below ({', '.join(timed)}; seconds as the runs that timed "
                  "them measured them, the ratio is the comparable number). Timed alone, each pays for "
                  "the passes it would share in a study, so a plain sum overstates proxies that share one: each "
                  "share group of the registry is counted once, by its most expensive member"
                  + (f" ({shared})" if shared else "") + "; work they could share with the family or with another "
                  "group is still counted again.", ""]
    if untimed:
        newer += [f"Not timed at all: {', '.join(untimed)} (`proxybench perf --proxies {','.join(untimed)}` times "
                  "them alone).", ""]
    frac = r["fwd_bwd_gflops_per_s_median"] / pk["peak"]
    verdict = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    cl_rate = r.get("fwd_bwd_channels_last_gflops_per_s_median")
    lay = r.get("layouts")
    pass_layout = ("channels_last" if "snip" in lay.get("channels_last", []) else "NCHW") if lay else None
    cl_note = {"channels_last": "the shared gradient pass's layout", "NCHW": "not the gradient pass's: it runs NCHW",
               None: "a layout measured beside"}[pass_layout]
    cl_row = ([f"| one forward+backward in channels_last ({cl_note}) | "
               f"{r['fwd_bwd_gflop_median']:.1f} | {r['fwd_bwd_channels_last_seconds_median']:.3f} | {cl_rate:.1f} | "
               f"{cl_rate / pk['peak']:.0%} |"] if cl_rate else [])
    acc_rate = r.get("fwd_bwd_channels_last_accurate_gflops_per_s_median")
    if acc_rate:
        cl_row.append(f"| the same with `datasets/accurate_bn.py`'s BatchNorm (no proxy runs it yet) | "
                      f"{r['fwd_bwd_gflop_median']:.1f} | {r['fwd_bwd_channels_last_accurate_seconds_median']:.3f} | "
                      f"{acc_rate:.1f} | {acc_rate / pk['peak']:.0%} |")
    ge = r.get("gradient_rel_error")
    ge_text = ("" if not ge else
               " The whole pass's float32 gradient (every parameter, 2-norm) against the float64 NCHW gradient of the "
               f"same seeded network and batch, median (largest) over the {ge['nchw']['cells']} cells: NCHW "
               f"{ge['nchw']['median']:.1e} ({ge['nchw']['max']:.1e}), channels_last with PyTorch's BatchNorm "
               f"{ge['channels_last']['median']:.1e} ({ge['channels_last']['max']:.1e}), channels_last with "
               f"`datasets/accurate_bn.py`'s (batch statistics summed as accurately as NCHW's, "
               f"{r['fwd_bwd_channels_last_accurate_speedup']:.2f}x faster than NCHW) "
               f"{ge['channels_last_accurate']['median']:.1e} ({ge['channels_last_accurate']['max']:.1e}). A switch "
               "of the gradient pass to it still needs its hand-written BatchNorm tangents (proxies/hvp.py) on the "
               "new statistics, and each proxy's scores judged against their measured precision (or a version bump "
               "and a rescoring).")
    bn = r.get("batchnorm_rel_error")
    bn_text = (f" Train-mode BatchNorm's float32 forward (64x16x32x32, mean 5) is off from float64 by "
               f"{bn['nchw']:.1e} relative in NCHW and {bn['channels_last']:.1e} in channels_last here: the layout's "
               "batch statistics round more, which moved the gradient proxies' float32 scores farther from their "
               "float64 values on the golden cells. `datasets/accurate_bn.py`'s BatchNorm has NCHW's accuracy in "
               "channels_last, but with it the gradient pass's scores still move outside their per-cell measured "
               "precision on some golden cells, for a small gain of the whole pass (the measurement and the decision: "
               "proxies/gradient.py's note on LAYOUT), so the pass stays NCHW." if bn else "")
    if lay:
        rate = cl_rate if pass_layout == "channels_last" and cl_rate else r["fwd_bwd_gflops_per_s_median"]
        cl = lay.get("channels_last", [])
        layout_text = (f"The same forward+backward in the channels_last layout is "
                       f"{r['fwd_bwd_channels_last_speedup']:.2f}x faster here. "
                       + (f"The proxies whose records declare it compute in it: {', '.join(cl)} (version bumps, as it "
                          "moved their float32 scores by more than their measured precision, and the committed "
                          "tables rescored); the others keep NCHW" if cl else "No proxy's record declares it: all "
                          "compute in NCHW")
                       + " (a switch is a version bump and a rescoring each). The GFLOP/s target is judged on the "
                       f"{pass_layout} pass, the layout the gradient proxies' pass runs in.")
    else:  # a perf.json of a run before the layouts were recorded
        layout_text = (f"The same forward+backward in the channels_last layout is "
                       f"{r['fwd_bwd_channels_last_speedup']:.2f}x faster here; the proxies of that run did not use "
                       "it.")
    if "gflop_mean" in fam:
        flops_text = ("FLOPs counted with PyTorch's formulas (convolutions and matrix products, forward and backward, "
                      "forward-mode tangents included, 2 per multiply-add; pooling, BatchNorm and elementwise work "
                      "uncounted, so the rates are lower bounds), a grouped convolution's weight gradient counted once "
                      "(PyTorch's FlopCounterMode counts it `groups` times: vmapped per-sample gradients). ")
        floor = project(per_pair(fam["gflop_mean"], "flops_over_cifar10") / pk["peak"])
        work_tasks = (", ".join(f"{t} {v['flops_over_cifar10']:.2f}x" for t, v in tasks.items())
                      + " that on the same cells" if tasks else
                      "at the cifar10 cost for every task, which is no bound: ImageNet16-120's inputs have a quarter "
                      "of the pixels, cifar100's VKDNW takes 64 backward passes to cifar10's 9")
        floor_text = (f" The family's counted work is {fam['gflop_median']:.0f} GFLOP per cifar10 cell (median; "
                      f"{fam['flops_over_fwd_bwd']:.1f}x one forward+backward's), {fam['gflop_mean']:.0f} on "
                      f"average, {work_tasks}: run at this core's peak ({pk['peak']:.0f} GFLOP/s) in every counted "
                      f"operation and nothing else, the complete table would still take **{floor:.1f} hours** on "
                      f"{cpus} cores: the floor of any "
                      f"implementation of these definitions on this machine. The {TARGET_HOURS:g}-hour target asks "
                      f"for {floor / TARGET_HOURS:.0%} of the peak rate averaged over the whole family; the family "
                      f"reaches {fam['gflop_median'] / fam['seconds_median'] / pk['peak']:.0%} today (counted GFLOP "
                      "over measured seconds, median cell), one plain forward+backward "
                      f"{frac:.0%}.")
    else:  # a perf.json of a run before the family's work was counted
        flops_text = ("FLOPs as PyTorch's FlopCounterMode counts them (convolutions and matrix products, forward and "
                      "backward, 2 per multiply-add; pooling, BatchNorm and elementwise work uncounted), so the rates "
                      "are lower bounds; the family's passes (forward-mode tangents, input Jacobians) are not "
                      "countable by it, hence its time only. ")
        floor_text = ""
    if not lay:  # a run before layouts were recorded: the faster of the two, as that run judged it
        rate = max(r["fwd_bwd_gflops_per_s_median"], cl_rate or 0.0)
    return [
        "## Against the machine's limit", "",
        f"This core's attainable float32 rate (best of 3): a 2048² matrix product {pk['matmul_2048']:.0f} GFLOP/s, "
        f"a 3x3 convolution (64 images, 64→64 channels, 32x32) {pk['conv3x3_nchw']:.0f} GFLOP/s in NCHW and "
        f"{pk['conv3x3_channels_last']:.0f} GFLOP/s in channels_last: peak {pk['peak']:.0f} GFLOP/s.", "",
        "| pass (median cell) | counted GFLOP | seconds | GFLOP/s | of peak |", "|---|---|---|---|---|",
        f"| one forward+backward | {r['fwd_bwd_gflop_median']:.1f} | {r['fwd_bwd_seconds_median']:.3f} | "
        f"{r['fwd_bwd_gflops_per_s_median']:.1f} | {frac:.0%} |", *cl_row,
        family_row, "", *newer,
        flops_text + layout_text + bn_text + ge_text, "",
        f"Projection for the complete NB201 table ({NB201_PAIRS:,} (cell, task) pairs, every training-free proxy) "
        f"on this machine's {cpus} cores, " + (task_text(fam) if tasks else
                                               "at the measured cifar10 time per cell for every task (no bound: "
                                               "ImageNet16-120's 16x16 inputs cost less, cifar100's VKDNW more; "
                                               "this run did not measure the other tasks)")
        + f": **{hours:.1f} hours**"
        + (f" for the {len(fam['proxies'])} proxies of the family run. With the newer proxies added (the "
           f"family's seconds plus their grouped sum, {s['over_fwd_bwd']:.2f}x this run's forward+backward = "
           f"{added:.3f} s per cell): **{complete:.1f} hours**, a sum of separate measurements, not a measurement "
           "of them together" if s else "")
        + (f". It leaves out {', '.join(untimed)}: not timed" if untimed else "") + "." + floor_text, "",
        f"Targets of the speed issue: one forward+backward ≥ {TARGET_GFLOPS:g} GFLOP/s per core — "
        f"{verdict(rate >= TARGET_GFLOPS)}; the complete table ≤ {TARGET_HOURS:g} h"
        + (" (with the newer proxies)" if s else "") + f" — {verdict(complete <= TARGET_HOURS)}.", ""]


HELP = "speed of the proxies as ratios to one forward+backward, and memory growth (reports/perf.md)"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--cells", type=int, default=None,
                    help="seeded NB201 cells (default 12; with --proxies: the stored run's, or the first N of them)")
    ap.add_argument("--proxies", default=None, metavar="NAMES",
                    help="time only these proxies alone (names, wildcards) on the stored run's cells and merge them "
                         "into <out>/perf.json (needs a full `make perf` run there first)")
    ap.add_argument("--memory-cells", type=int, default=1000)
    ap.add_argument("--out", default=str(provenance.REPO_ROOT / "reports"))
    ap.add_argument("--readme", default=None,
                    help="README whose marked block to update (default: the repository's, only when --out is the "
                         "repository's reports/; '' to skip)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (studies run 1 per worker process; with --proxies: the stored run's)")
    ap.add_argument("--repeats", type=int, default=2, help="each time is the best of this many runs")
    ap.add_argument("--nb101-cells", type=int, default=2, help="NB101 cells timed (0: skip)")
    ap.add_argument("--task-cells", type=int, default=4,
                    help="the first cells on which the family is timed on cifar100 and ImageNet16-120 too (0: skip)")
    ap.add_argument("--reference-code", default=None, metavar="DIR",
                    help="a zero-cost-nas checkout: also time its own find_measures against `proxybench run`")
    ap.add_argument("--reference-cells", type=int, default=8, help="cells of that comparison")
    ap.add_argument("--render-only", action="store_true", help="re-render perf.md and the README from perf.json")


def measure_alone(args) -> dict:
    """``--proxies``: the stored ``<out>/perf.json`` with the named proxies timed alone merged in."""
    from proxybench import store

    path = Path(args.out) / "perf.json"
    if not path.is_file():
        raise SystemExit(f"no {path}: `proxybench perf --proxies` times proxies on the cells of a stored full run and "
                         f"merges them into it; run `make perf` (or `proxybench perf --out {args.out}`) first")
    stored = store.read_json(path, PERF_STORE)
    try:
        names = alone_names(args.proxies)
        entries = time_alone(names, stored, data_dir=args.data_dir, repeats=args.repeats, cells=args.cells)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return merge_alone(stored, entries)


def cmd(args) -> None:
    if args.proxies and not args.render_only:
        write_results(args, "perf", "Proxy speed and memory", PERF_STORE, lambda: measure_alone(args),
                      lambda r: markdown(r, load_runs(args.out)), BEGIN_END)
        return

    def measure():
        r = run(args.cells or 12, args.memory_cells, data_dir=args.data_dir, threads=args.threads, repeats=args.repeats,
                nb101_cells=args.nb101_cells, task_cells=args.task_cells)
        if args.reference_code:
            r["reference_code"] = reference_code_timing(args.reference_code, args.reference_cells,
                                                        data_dir=args.data_dir)
        print(f"kept as {archive_run(args.out, r)}")
        return r

    write_results(args, "perf", "Proxy speed and memory", PERF_STORE, measure,
                  lambda r: markdown(r, load_runs(args.out)), BEGIN_END)


def main(argv=None) -> int:  # `python -m proxybench.tools.perf` = `proxybench perf`
    return tool_main(argv, __doc__, add_arguments, cmd)


if __name__ == "__main__":
    raise SystemExit(main())
