"""SWAP (Peng et al., ICLR 2024): the number of distinct sample-wise activation patterns of the ReLUs.

Definition, as the official code computes it (github.com/pym1024/SWAP at f6049f7: ``src/metrics/swap.py``,
``src/utils/utilities.py``, ``correlation.py``):

- one real batch of ``--input_samples 16`` images (the official default), network in train mode (BatchNorm on
  the batch statistics of the 16 images; the official script never calls ``eval()``);
- ``--repeats 32`` times: every nn.Conv2d and nn.Linear weight redrawn from N(0, 1), their biases set to 0,
  BatchNorm2d/GroupNorm weight 1 and bias 0 (``network_weight_gaussian_init``), then one forward pass;
- a forward hook on every nn.ReLU module whose input is 4-D (feature maps, not vectors) takes its output; the
  outputs of one pass, each flattened per sample and concatenated, form the (samples x neurons) matrix; its
  sign is binary (a ReLU output is > 0 or = 0);
- SWAP of the pass = the number of distinct rows of the TRANSPOSED matrix (``torch.unique(act.T, dim=0)``):
  distinct per-neuron patterns over the samples (a neuron's pattern: which of the 16 samples activate it),
  not distinct per-sample patterns over the neurons; at most min(neurons, 2^16);
- the score = the mean over the 32 passes.

Where this differs from the official code, by implementation only:

- random draws: the official script draws with ``network.apply(network_weight_gaussian_init)``, which
  re-initialises every module's whole subtree once per ancestor (a leaf is redrawn as many times as it is
  deep; the last draw stays), from torch's global RNG, never seeded by ``SWAP`` (its ``reinit`` seeds only
  when the seed changes). Here each repeat draws every Conv2d/Linear weight once, in ``net.modules()`` order,
  in float32 from a local generator seeded with ``ctx.seed``: the same distribution (i.i.d. N(0, 1)), and
  exactly the official function's numbers when it is called once per repeat after ``torch.manual_seed(seed)``;
- patterns are hashed in the hooks instead of storing the activations: for up to 20 samples each neuron's
  pattern is its integer code sum_i bit_i 2^i, marked in a 2^n table (no activation is kept); for more
  samples the codes (63 samples per int64 word) are collected and counted with ``torch.unique``;
- NB201 networks run in channels-last memory layout (about 1.6x faster on a CPU); other spaces keep the
  contiguous layout. The count does not depend on the order of the neurons, but the layout changes how the
  convolutions round, so a pre-activation within rounding of 0 can flip its sign: against the official
  ``SWAP`` class on the same network, draws and images (``proxybench official swap``;
  reports/official/swap.md: 5 cells x cifar10 and ImageNet16-120, seed 42) the per-pass counts differ by 0-3
  patterns and the score by at most 1.9e-5 relative (median 1.2e-6); in the contiguous layout the two agreed
  exactly (2 cells, a one-off check).

Saturation: an NB201 network has 0.04-0.9M ReLU neurons per pass against 2^16 = 65,536 possible patterns of 16
samples, so the count of a network with many conv edges is close to 65,536 and SWAP separates those cells
little (the published DARTS experiment scores 1-cell, 3-channel networks: ``Network(3, 10, 1, genotype)``).

Regularised SWAP (``swap_reg``): SWAP x exp(-(P - mu)^2 / sigma), P = the network's parameters in thousands
(the official ``count_parameters``: every parameter, BN affine included, / 1e3; ``cal_regular_factor``). The
public code gives no mu, sigma for NB201 (its one script, ``correlation.py``, scores DARTS cells unregularised),
and the values behind the paper's NB201 numbers were not available here. Chosen WITHOUT any NB201 accuracy,
from the parameter distribution of the space itself (every one of the 15,625 cells weighted equally):
mu = the mean parameter count of the space for the task's head, sigma = 2 x its variance, so that the factor
is the Gaussian exp(-z^2 / 2) of the size's z-score within the space. NB201's parameter count depends only on
the numbers k1, k3 of conv1x1 / conv3x3 edges: P = base + 28.000 k1 + 243.040 k3 thousand, base = the
all-'none' network (73.306 / 79.156 / 80.456 thousand for the three heads); each edge is either with
probability 1/5, so mu = base + 6 (28.000 + 243.040) / 5 and
var = 6 ((28.000^2 + 243.040^2) / 5 - ((28.000 + 243.040) / 5)^2) = 54,191.886336: the constants below (a test
recomputes them by enumerating the cells). The factor is 1 at P = mu (398.6 thousand on CIFAR-10), 0.38 at the
smallest network (73 thousand) and 7e-6 at the largest (1.53 million). Other spaces have no mu, sigma here:
``swap_reg`` refuses them with a clear error.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from proxybench.datasets import nb201
from proxybench.datasets.errors import ArchError
from proxybench.datasets.nb201 import NB201Network
from proxybench.proxies.registry import UnsupportedNetwork, register_proxy

_SWAP = "Peng et al., SWAP-NAS: Sample-Wise Activation Patterns for Ultra-fast NAS, ICLR 2024"
SAMPLES = 16  # images of the task's minibatch (official --input_samples 16)
REPEATS = 32  # re-initialisations, one forward each (official --repeats 32)
# regularisation constants for NB201, parameters in thousands (see the module docstring: the space's mean
# parameter count for the task's head, and twice the space's parameter variance; no accuracy involved)
SWAP_REG_MU = {"cifar10": 398.554, "cifar100": 404.404, "ImageNet16-120": 405.704}
SWAP_REG_SIGMA = 108383.772672
_TABLE_BITS = 20  # up to this many samples a presence table of 2^n patterns counts them


def regular_factor(params_thousands: float, mu: float, sigma: float) -> float:
    """exp(-(P - mu)^2 / sigma), the official ``cal_regular_factor`` (P in thousands of parameters)."""
    return math.exp(-((params_thousands - mu) ** 2) / sigma)


class PatternCounter:
    """Counts the distinct per-neuron binary patterns over ``n`` samples, fed one activation tensor at a time.

    ``add(a)``: ``a`` of shape (n, ...) (any memory layout); a neuron is one position of ``a[0]``, its
    pattern the n-vector (a[i] > 0 for i in samples). ``count()``: the number of distinct patterns among every
    neuron added since ``reset()``, the same as ``torch.unique(cat(flattened a's, 1).T > 0, dim=0)``'s rows."""

    def __init__(self, n: int, device=None):
        self.n = n
        self.device = device
        self.table = torch.zeros(1 << n, dtype=torch.bool, device=device) if n <= _TABLE_BITS else None
        self.words = (n + 62) // 63
        self.reset()

    def reset(self) -> None:
        self.added = 0
        self.codes: list[torch.Tensor] = []
        if self.table is not None:
            self.table.zero_()

    def _bits(self, a: torch.Tensor) -> torch.Tensor:
        bits = a > 0
        if bits.dim() == 4 and not bits.is_contiguous() and bits.is_contiguous(memory_format=torch.channels_last):
            bits = bits.permute(0, 2, 3, 1)  # a free view; the neurons' order does not change the count
        return bits.reshape(self.n, -1)

    def add(self, a: torch.Tensor) -> None:
        if a.shape[0] != self.n:
            raise ValueError(f"swap: an activation of {a.shape[0]} samples, expected {self.n}")
        bits = self._bits(a)
        self.added += bits.shape[1]
        if self.table is not None:  # integer codes < 2^20: exact in float32
            weights = torch.pow(2.0, torch.arange(self.n, device=bits.device, dtype=torch.float32))
            self.table[(weights @ bits.to(torch.float32)).to(torch.int64)] = True
            return
        words = []
        for w in range(self.words):
            part = bits[63 * w:63 * (w + 1)].to(torch.int64)
            shifts = torch.arange(part.shape[0], device=bits.device, dtype=torch.int64)[:, None]
            words.append((part << shifts).sum(dim=0))
        self.codes.append(torch.stack(words, dim=1))  # (neurons, words)

    def count(self) -> int:
        if self.table is not None:
            return int(self.table.sum())
        codes = torch.cat(self.codes)
        return int(torch.unique(codes[:, 0]).numel() if self.words == 1 else torch.unique(codes, dim=0).shape[0])


def gaussian_init_(net: nn.Module, g: torch.Generator) -> None:
    """The official ``network_weight_gaussian_init`` (applied once): Conv2d/Linear weights N(0, 1) drawn in
    ``net.modules()`` order (float32 from ``g``, then cast), their biases 0, BatchNorm2d/GroupNorm weight 1 and
    bias 0 (skipped for a norm without affine parameters, which the official code would fail on)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = torch.randn(tuple(m.weight.shape), generator=g, dtype=torch.float32)
                m.weight.copy_(w.to(device=m.weight.device, dtype=m.weight.dtype))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()


def swap_counts(ctx, samples: int = SAMPLES, repeats: int = REPEATS) -> dict:
    """The per-repeat pattern counts and the network's parameter count, memoised per cell (``ctx.memo``)."""
    key = ("_swap", samples, repeats)
    if key in ctx.memo:
        return ctx.memo[key]
    with ctx.shared_work("swap pass"):
        ctx.memo[key] = _swap_counts(ctx, samples, repeats)
    return ctx.memo[key]


def _swap_counts(ctx, samples: int, repeats: int) -> dict:
    net = ctx.network(bn=True)
    net.train()
    x = ctx.inputs[:samples]
    n_params = sum(p.numel() for p in net.parameters())
    if isinstance(net, NB201Network) and x.dim() == 4:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    counter = PatternCounter(x.shape[0], device=x.device)

    def hook(module, args, out):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            counter.add(out.detach())

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    g = torch.Generator().manual_seed(int(ctx.seed))
    counts = []
    try:
        with torch.no_grad():
            for _ in range(repeats):
                gaussian_init_(net, g)
                counter.reset()
                net(x)
                if counter.added == 0:
                    raise UnsupportedNetwork(f"swap: no nn.ReLU module with a 4-D input ran in "
                                             f"{type(net).__name__}'s forward (SWAP hooks nn.ReLU modules, as the "
                                             "official code)")
                counts.append(counter.count())
    finally:
        for h in handles:
            h.remove()
    return {"counts": counts, "params": n_params, "nb201": isinstance(net, NB201Network)}


_NOT_NB201 = ("swap_reg: mu and sigma are set for NAS-Bench-201 networks and tasks only (SWAP_REG_MU), not for "
              "{!r} on {!r}: score it with swap")


def _is_nb201_arch(arch) -> bool:
    try:
        nb201.parse_arch(arch)
    except ArchError:
        return False
    return True


def _swap(ctx, regular: bool = False, samples: int = SAMPLES, repeats: int = REPEATS) -> float:
    """SWAP (Peng et al., ICLR 2024): distinct per-neuron ReLU patterns over 16 images, mean of 32 N(0,1) inits.

    See the module docstring. ``regular=True`` (``swap_reg``): times exp(-(P - mu)^2 / sigma), P in thousands
    of parameters, mu and sigma the NB201 constants ``SWAP_REG_MU`` / ``SWAP_REG_SIGMA``."""
    if regular and (ctx.task not in SWAP_REG_MU or not _is_nb201_arch(ctx.arch)):  # refuse before the passes
        raise UnsupportedNetwork(_NOT_NB201.format(ctx.arch, ctx.task))
    res = swap_counts(ctx, samples, repeats)
    score = math.fsum(res["counts"]) / len(res["counts"])
    if not regular:
        return score
    if not res["nb201"]:
        raise UnsupportedNetwork(_NOT_NB201.format(ctx.arch, ctx.task))
    return score * regular_factor(res["params"] / 1e3, SWAP_REG_MU[ctx.task], SWAP_REG_SIGMA)


_COMMON = dict(higher_is_better=True, family="zero-cost", needs_data=True, needs_labels=False, paper=_SWAP,
               cost="forward", shares="swap pass",
               cost_note="32 forward passes of 16 images, every Conv/Linear weight redrawn N(0,1) before each; "
                         "shared by swap and swap_reg",
               init="Conv/Linear weights N(0,1), biases 0, BN weight 1 bias 0; redrawn for each of 32 passes",
               inputs="the task's minibatch, first 16 images (official 16)",
               bn_mode="train (batch statistics of the 16 images)")

# Both in the default study: swap is the official code's score (the default); swap_reg the paper's regularised form.
register_proxy("swap", **_COMMON,
               description="SWAP (Peng et al. ICLR 2024): distinct per-neuron ReLU patterns over 16 images, mean "
                           "over 32 N(0,1) re-inits (official code)")(_swap)
register_proxy("swap_reg", **_COMMON, regular=True, spaces=("nb201",),
               description="regularised SWAP: SWAP x exp(-(P-mu)^2/sigma), P in thousands; NB201 mu, sigma from the "
                           "space's parameter distribution (no accuracies)")(_swap)
