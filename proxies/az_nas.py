"""AZ-NAS components (Lee & Ham, CVPR 2024): expressivity, progressivity and trainability of one network.

AZ-NAS scores a *set* of candidates: each of four per-network components is ranked over the set and the ranks
are combined. This module registers the three components that need a pass through the network, each as its
own proxy, all computed from ONE forward pass (plus one backward pass for trainability) per cell and setting,
shared through ``ctx.memo``. The fourth component, complexity, is the suite's ``flops`` proxy (not
re-registered here). No ``az_nas`` proxy is registered: the aggregate is a property of the candidate set and
is built by the suite's core from the cached components.

The aggregation, exactly as the official NB201 notebook (``NB201/tss_general.ipynb``, cell 8) computes it::

    N = number of candidates
    az_nas = log(rank(complexity) / N) + log(rank(expressivity) / N)
             + log(rank(progressivity) / N) + log(rank(trainability) / N)

- ``rank`` is ``scipy.stats.rankdata`` with its defaults: ASCENDING (the smallest value gets rank 1, the largest
  rank N) and ties averaged (``method="average"``). So for all four components a HIGHER value is better (a
  higher rank, a larger log-rank term); every record below declares ``higher_is_better=True``, and complexity
  enters with the same direction (more FLOPs ranks higher). The best candidate is ``argmax(az_nas)``.
- The components by suite name: ``flops``, ``az_expressivity``, ``az_progressivity``, ``az_trainability``
  (or one variant setting's three, e.g. ``az_expressivity_fp32`` ...; do not mix settings).
- Non-finite values: the official code maps a NaN component to -inf before ranking, and -inf ranks below every
  finite value (the -inf values tie, averaged). The scores here are -inf where the official arithmetic's are
  (see ``_fp32`` for the float32 exceptions) and the records declare ``nan_policy="rank_last"``: rank them below
  every finite value, tied, which is what ``rankdata`` does with -inf.
- Official complexity on NB201 is NOT counted on the network but read from the benchmark API:
  ``get_compute_costs(dataset)["flops"]`` (xautodl's counter: multiply-adds in millions, counting pooling and
  linear biases too); the suite's ``flops`` counts 2 per multiply-add of conv/linear only, so the avg-pool op
  adds nothing and cells that differ only in pool/skip/none tie on ``flops`` but not on the API's FLOPs.
  The notebook then reports ``kendalltau`` and ``spearmanr`` of ``rankdata(az_nas)`` against the 200-epoch
  seed-mean test accuracy (``cifar10``: ``ori-test`` of the train+valid run; ``cifar100`` and
  ``ImageNet16-120``: ``x-test``) over all 15,625 cells of ``gen_all`` (isomorphic duplicates included); its
  printed line is "kendall, pearson, spearman" in that order.

The components, as the official ``NB201/ZeroShotProxy/compute_az_nas_score.py`` (github.com/cvlab-yonsei/AZ-NAS,
commit 5e6683a2cfa5c6d0dc34a1317a842497ba7eae47) computes them:

- setting: every Conv2d/Linear weight re-drawn Kaiming-normal (fan_in, ReLU gain: std sqrt(2 / fan_in)),
  biases 0, BatchNorm2d/GroupNorm weight 1 and bias 0 (``init_model(model, 'kaiming_norm_fanin')``, called
  unconditionally by the function); network in train mode (BN on batch statistics); input a batch of 64 N(0, 1)
  images of the task's resolution (the notebook's loader batch and ``torch.randn``: AZ-NAS is not in the
  notebook's list of real-input metrics, so ``trainloader=None``);
- feature maps (NB201): the stem output (conv-BN, before any ReLU) and the output of every module of
  ``cells``: the 15 cells AND the 2 residual reduction blocks, 18 maps (``TinyNetwork.extract_cell_features``);
- expressivity: per map, the (B*H*W) x C matrix with centred columns, its covariance (divided by B*H*W), the
  eigenvalues s (``eigvalsh``), p = s / sum(s), the entropy -sum p log(p + 1e-8); summed over the maps;
- progressivity: the minimum over consecutive maps of (entropy of map l) - (entropy of map l-1);
- trainability: for each pair of consecutive maps (last pair first), a random +-1 tensor g_out (Bernoulli(1/2)
  * 2 - 1) of the later map's shape is back-propagated to the earlier map through the block between them,
  g_in = J^T g_out; when the resolution halves g_in is pixel-unshuffled by the stride (C x 2H x 2W ->
  4C x H x W); M = g_in^T g_out / (B*H*W) as (channels_in x channels_out); sigma = its largest singular value;
  the pair scores -sigma - 1 / (sigma + 1e-6) + 2, or -inf when g_in equals g_out exactly (an identity block,
  e.g. a cell whose only live edge is skip 0->3); trainability = the mean over the pairs (so -inf when the
  cell is an identity); a cell whose output is identically zero scores -1e6 + 2 per cell block (finite);
- NaN -> -inf for each of the three: a map that is identically zero (a cell with no live path) has
  sum(s) = 0, so expressivity and progressivity are -inf.

Default (``az_*``) vs official code: the same definition and setting, with the statistics (covariances, their
eigenvalues, the M matrices and their singular values) computed in float64 from the network's float32 features
and gradients. The official code computes them in float32, and that is not only rounding: in parameter-free or
skip-heavy cells (e.g. all skip_connect, all avg_pool_3x3) the stage-3 maps are numerically rank-deficient
(the reduction block adds a 1x1-projected shortcut of huge scale, 4^5 x the stem's after five all-skip cells,
to a unit-scale conv path: eigenvalue ratios down to 1e-14), float32 ``eigvalsh`` returns eigenvalues below
-1e-8 sum(s), log(p + 1e-8) is NaN, and the official expressivity and progressivity of such a cell become -inf:
ranked last, by an accident of rounding that depends on the hardware and the order of operations (measured on
this CPU: the same float32 formula on the same weights gives -inf or a finite value for some cells depending
only on the memory layout of the network). The float64 values are the definition's; ``az_*_fp32`` keeps the
official float32 statistics (the same formulas, ``eigvalsh``, ``svdvals`` in float32; the covariance product is
formed from a (C, B*H*W) copy where the official code multiplies the (B*H*W, C) matrix, so its rounding is not
the official one bit for bit) to measure how much this changes the ranking. Measured on this CPU: 14 of 200
random NB201 cells (7%; CIFAR-10, seed 0) get the float32 -inf, besides 6 whose output is zero (-inf in both);
their float64 expressivity ranks in the bottom 2-6% of the finite ones anyway. Checked against the official function by
``proxybench official az_nas`` (bench/tools/official_az_nas.py, the results in reports/official/az_nas.md: 12
cells x cifar10 and ImageNet16-120, seed 42, the same weights, input and signs; CPU, float32 network). Where
both are finite, ``az_*_fp32`` agrees to 5e-8 (expressivity), 1.1e-4 relative (progressivity; 7e-7 absolute: it
is a difference of float32 entropies of 2 to 4, whose rounding step is 2.4e-7) and exactly (trainability); the
default agrees to 6e-8, 4.5e-5 (8e-7 absolute) and 5.5e-7, and is finite on the 8 of 24 pairs where the
official value is the float32 -inf. ``az_*_fp32`` is -inf where the official value is on all of them but one:
``|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|`` (cifar10,
seed 42), finite in ``_fp32`` (expressivity 30.20), whose official float32 covariance has eigenvalues down to
-1.65e-8 sum(s) and the suite's float32 copy only -4.6e-9 (the product's order above). An earlier check at seed 0
on 28 pairs found the -inf on the same pairs in both.

Other numerical differences, by design:

- random numbers (weights, input, signs) come from a local ``torch.Generator`` seeded with ``ctx.seed`` and are
  drawn in float32 on the CPU (then cast): in this order, the weight (and, for the PyTorch init, bias) of each
  Conv2d/Linear in ``modules()`` order, the input batch, the sign tensors from the last pair to the first; a
  sign is one bit of a uniform random byte (a fair coin, as Bernoulli(1/2), 10x faster). The official code
  draws from the global (CUDA) generator, which runs on from cell to cell after one ``prepare_seed(1)``: its
  numbers are one draw per cell, as here, but not these draws;
- the 17 backward passes are one: each block's input is a detached copy of the previous map, so ONE backward
  of all sign tensors gives every block's J^T g_out at once; this is the same vector-Jacobian product the
  official per-pair ``autograd.grad(f_out, f_in)`` computes (the only path from one map to the next is its
  block). A test checks it against a plain loop of per-pair ``autograd.grad`` in float64;
- the network runs in float32 as in the official code (``ctx.dtype``: float64 in the precision measurement).
  Late-stage pair scores are sensitive to float32 rounding at up to about 1e-3 relative in some cells; their
  mean less (measured on |nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|none~2|:
  single pair scores move by up to 1.3e-3 from a float64 network, the trainability by 5e-7; a channels-last
  float32 network, tried for speed and dropped, moved it by 4e-4).

Paper vs code: the definitions above are those of the code; REFERENCES.md's summary of the paper matches them,
without the code's two regularisers (1e-8 in the entropy's log, 1e-6 in 1/sigma), which are kept. The other
official versions differ from NB201's: the ImageNet MobileNetV2 one uses the block features of its own network
and reads the complexity from the model; the AutoFormer one skips an identity block instead of scoring -inf and
runs the model in eval mode. The NB201 code is followed.

Other search spaces (no official code): the maps are the stem output and every "cell" output of the space's
network: NAS-Bench-101 (nasbench_pytorch's Network): the stem ConvBnRelu and the 9 cells, each max-pool
downsampling merged into the block of the cell after it (as NB201's reduction: pixel-unshuffle at the stride);
NDS ResNet-like AnyNet: the stem and every residual/plain block; NDS DARTS-style cell networks: the stem (and
the ImageNet ``stem1``) and every cell; a cell reads two earlier maps, and trainability back-propagates from a
cell's output to the map just before it with the older input held fixed, which is what the official
``autograd.grad(f_out, f_in)`` would give (the first cell of a CIFAR network reads the stem output twice: both
paths). When a stride does not divide the resolution (e.g. 7 -> 4) g_in is zero-padded to stride * output size
before the unshuffle (the official code would fail). Any other network: a ValueError naming what is needed.

Variant settings, to measure plausible per-cell causes of the gap between the paper's rho (about 0.91 / 0.90 /
0.89) and what users of the official code report (0.75 / 0.73 / 0.68: cvlab-yonsei/AZ-NAS issues #8, #9, #10,
no cause given by the authors): ``*_fp32``: the official float32 statistics (above); ``*_real``: the task's
real minibatch (``ctx.inputs``, the batch the runner prepares) instead of random images, as the official
function does when it is given a loader. The official function always re-initialises with Kaiming-normal, so a
user of the official code cannot get another init; ``reinit`` also offers PyTorch's default distributions
("pytorch": Conv2d/Linear weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))) for a re-implementation's
setting, not registered.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from proxybench.datasets.nb201 import NB201Network
from proxybench.proxies.registry import UnsupportedNetwork, register_proxy

_AZ = "Lee & Ham, AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search, CVPR 2024"
COMPONENTS = ("expressivity", "progressivity", "trainability")
# setting suffix -> keyword arguments of _az: the default (official NB201 setting) and the two variants
SETTINGS = {
    "": {"scheme": "kaiming", "real": False, "precision": "float64"},
    "_fp32": {"scheme": "kaiming", "real": False, "precision": "float32"},
    "_real": {"scheme": "kaiming", "real": True, "precision": "float64"},
}
# the registry's share group of each setting's pass (``shares=`` of the records below), by (real, precision)
_GROUP = {(False, "float64"): "az_nas pass", (False, "float32"): "az_nas fp32 pass",
          (True, "float64"): "az_nas real pass"}
BATCH = 64
ENTROPY_EPS = 1e-8  # official: log(p + 1e-8)
SIGMA_EPS = 1e-6  # official: 1 / (sigma + 1e-6)

_INIT_WORDS = {
    "kaiming": "kaiming_normal(fan_in, relu) for Conv2d/Linear weights, biases 0, BN weight 1 bias 0 "
               "(local generator seeded by the cell's seed)",
    "pytorch": "PyTorch's default distributions: Conv2d/Linear weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), "
               "BN weight 1 bias 0 (local generator seeded by the cell's seed)",
}


def names(suffix: str = "") -> tuple[str, ...]:
    """The three component names of a setting (a key of ``SETTINGS``: ``""``, ``"_fp32"`` or ``"_real"``)."""
    return tuple(f"az_{c}{suffix}" for c in COMPONENTS)


# ------------------------------------------------------------------------------------------- setting

def _generator(ctx) -> torch.Generator:
    return torch.Generator().manual_seed(int(ctx.seed))


def _fan_in(w: torch.Tensor) -> int:
    return int(w[0].numel()) if w.dim() > 1 else int(w.numel())


@torch.no_grad()
def reinit(net: nn.Module, g: torch.Generator, init: str) -> None:
    """Re-draw the weights of ``net`` in place: ``init`` "kaiming" (the official ``kaiming_norm_fanin``) or
    "pytorch" (PyTorch's default distributions). Draws in float32 on the CPU from ``g``, then casts."""
    if init not in _INIT_WORDS:
        raise ValueError(f"az_nas: unknown init {init!r}; choose one of {', '.join(_INIT_WORDS)}")
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            fan_in = _fan_in(w)
            if init == "kaiming":
                t = torch.randn(tuple(w.shape), generator=g, dtype=torch.float32) * math.sqrt(2.0 / fan_in)
            else:
                bound = 1.0 / math.sqrt(fan_in)
                t = (torch.rand(tuple(w.shape), generator=g, dtype=torch.float32) * 2 - 1) * bound
            w.copy_(t.to(device=w.device, dtype=w.dtype))
            if m.bias is not None:
                if init == "kaiming":
                    m.bias.zero_()
                else:
                    bound = 1.0 / math.sqrt(fan_in)
                    b = (torch.rand(tuple(m.bias.shape), generator=g, dtype=torch.float32) * 2 - 1) * bound
                    m.bias.copy_(b.to(device=m.bias.device, dtype=m.bias.dtype))
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            m.weight.fill_(1.0)
            m.bias.zero_()


def prepare(ctx, init: str = "kaiming", real: bool = False, batch_size: int = BATCH):
    """The network (re-initialised, train mode, parameters frozen), the input batch and the generator the sign
    tensors are drawn from next: the setting of one pass (tests reuse it)."""
    net = ctx.network(bn=True)
    g = _generator(ctx)
    reinit(net, g, init)
    net.train()
    net.requires_grad_(False)
    if real:
        x = ctx.inputs
    else:
        x = torch.randn((batch_size, *ctx.input_shape), generator=g, dtype=torch.float32)
        x = x.to(device=ctx.device, dtype=ctx.dtype)
    return net, x, g


# ------------------------------------------------------------------------------------------- blocks

Step = Callable[[list, torch.Tensor], torch.Tensor]  # (maps so far, detached previous map) -> next map


def _sequential(block: nn.Module) -> Step:
    return lambda maps, leaf: block(leaf)


def _two_input(cell: nn.Module) -> Step:
    # a DARTS-style cell reads the map before the previous one too: held fixed (detached); the first cell of a
    # CIFAR network reads the stem output twice, both through the leaf
    return lambda maps, leaf: cell(maps[-2].detach() if len(maps) > 1 else leaf, leaf)


def blocks(net: nn.Module) -> tuple[nn.Module, list[Step]]:
    """(stem, steps): the module giving the first feature map, then one step per following map."""
    if isinstance(net, NB201Network):
        return net.stem, [_sequential(b) for b in net.cells]
    from proxybench.datasets import nds  # lazy: only for NDS networks

    if isinstance(net, nds.AnyNet):
        return net.stem, [_sequential(b) for b in net.stages]
    if isinstance(net, nds.CellNetwork):
        steps = [_sequential(net.stem1)] if net.stem1 is not None else []
        return net.stem, steps + [_two_input(c) for c in net.cells]
    layers, cells = getattr(net, "layers", None), getattr(net, "cell_indices", None)
    if isinstance(layers, nn.ModuleList) and isinstance(cells, set) and cells:  # nasbench_pytorch's Network
        steps, pending = [], []
        for i, layer in enumerate(layers):
            if i == 0:
                continue
            pending.append(layer)
            if i in cells:
                steps.append(_sequential(pending[0] if len(pending) == 1 else nn.Sequential(*pending)))
                pending = []
        if pending or 0 in cells:
            raise ValueError("az_nas: an NB101 network must start with its stem and end with a cell")
        return layers[0], steps
    raise UnsupportedNetwork(f"az_nas: no feature maps known for {type(net).__name__}: AZ-NAS needs the stem output "
                             "and every cell output (supported: NB201Network, nasbench_pytorch's Network, NDS "
                             "AnyNet and CellNetwork)")


# ---------------------------------------------------------------------------------------- components

def _rows(f: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A (B, C, H, W) map as the (C, B*H*W) matrix in ``dtype``: one copy, whatever the memory format."""
    b, c = f.shape[:2]
    out = torch.empty((c, f.numel() // c), dtype=dtype, device=f.device)
    out.view(c, b, -1).copy_(f.detach().reshape(b, c, -1).transpose(0, 1))
    return out


def map_cov(f: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The channel covariance of a (B, C, H, W) map, computed in ``dtype``: the (B*H*W) x C matrix with centred
    columns, Z^T Z / (B*H*W)."""
    if f.dim() != 4:
        raise ValueError(f"az_nas: feature maps must be (B, C, H, W), got shape {tuple(f.shape)}")
    z = _rows(f, dtype)
    z -= z.mean(dim=1, keepdim=True)
    return z @ z.T / z.shape[1]


def entropies(covs: list[torch.Tensor]) -> list[float]:
    """Entropy -sum p log(p + 1e-8) of each covariance's eigenvalues s normalised to p = s / sum(s), in the
    covariances' dtype (NaN for a zero matrix, or where an eigenvalue comes out below -1e-8 sum(s)); batched by
    size."""
    out = [math.nan] * len(covs)
    by_size: dict[int, list[int]] = {}
    for i, c in enumerate(covs):
        by_size.setdefault(c.shape[0], []).append(i)
    for idx in by_size.values():
        s = torch.linalg.eigvalsh(torch.stack([covs[i] for i in idx]))
        p = s / s.sum(dim=1, keepdim=True)
        h = -(p * torch.log(p + ENTROPY_EPS)).sum(dim=1)
        for i, v in zip(idx, h.tolist(), strict=True):
            out[i] = v
    return out


def map_entropy(f: torch.Tensor, dtype: torch.dtype = torch.float64) -> float:
    """The expressivity term of one (B, C, H, W) feature map."""
    return entropies([map_cov(f, dtype)])[0]


def _unshuffle(g_in: torch.Tensor, ho: int, wo: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C*sh*sw, ho, wo): pixel-unshuffle by the stride (sh, sw) = (H/ho, W/wo), zero-padded
    to stride * output size when the stride does not divide the resolution; unchanged when it is 1."""
    b, c, hi, wi = g_in.shape
    if (hi, wi) == (ho, wo):
        return g_in
    if hi < ho or wi < wo:
        raise ValueError(f"az_nas: a block enlarges its map ({hi}x{wi} -> {ho}x{wo}); trainability needs "
                         "blocks that keep or reduce the resolution")
    sh, sw = -(-hi // ho), -(-wi // wo)
    if (sh * ho, sw * wo) != (hi, wi):
        g_in = nn.functional.pad(g_in, (0, sw * wo - wi, 0, sh * ho - hi))
    return g_in.reshape(b, c, ho, sh, wo, sw).permute(0, 1, 3, 5, 2, 4).reshape(b, c * sh * sw, ho, wo)


def block_sigma(g_in: torch.Tensor, g_out: torch.Tensor, dtype: torch.dtype = torch.float64) -> float:
    """Largest singular value of M = g_in^T g_out / (B*H*W), computed in ``dtype``: rows are the (image,
    position) pairs of the output map, g_in pixel-unshuffled at a stride (the channel order does not change the
    singular values)."""
    if g_in.dim() != 4 or g_out.dim() != 4:
        raise ValueError("az_nas: trainability needs (B, C, H, W) maps")
    b, co, ho, wo = g_out.shape
    a, o = _rows(_unshuffle(g_in, ho, wo), dtype), _rows(g_out, dtype)
    mat = a @ o.T / o.shape[1]
    return float(torch.linalg.svdvals(mat).max())


def pair_score(g_in: torch.Tensor, g_out: torch.Tensor, dtype: torch.dtype = torch.float64) -> float:
    """One block's trainability term: -inf for an identity block (g_in == g_out), else -s - 1/(s + 1e-6) + 2."""
    if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
        return -math.inf
    s = block_sigma(g_in, g_out, dtype)
    return -s - 1.0 / (s + SIGMA_EPS) + 2.0


def signs(shape, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """A random +-1 tensor, each sign a fair coin (the official Bernoulli(1/2) * 2 - 1): the bits of uniform
    random bytes drawn on the CPU from ``g`` (least significant first; 10x faster than ``bernoulli``), then
    cast like ``like``."""
    n = math.prod(shape)
    raw = torch.randint(0, 256, ((n + 7) // 8,), generator=g, dtype=torch.uint8)
    bits = (raw.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1
    t = bits.reshape(-1)[:n].reshape(tuple(shape)).to(torch.float32) * 2 - 1
    return t.to(device=like.device, dtype=like.dtype)


def _nan_to_neginf(v: float) -> float:
    return -math.inf if math.isnan(v) else float(v)


def run_pass(ctx, scheme: str = "kaiming", real: bool = False, precision: str = "float64",
             trainability: bool = True, batch_size: int = BATCH) -> dict:
    """One AZ-NAS pass: the per-map entropies and, with ``trainability``, the per-block pair scores; the
    three components (official NaN -> -inf). ``precision``: the dtype of the statistics (covariances,
    eigenvalues, M and its singular values): "float64", or "float32" as the official code."""
    if precision not in ("float64", "float32"):
        raise ValueError(f"az_nas: precision must be 'float64' or 'float32', got {precision!r}")
    dtype = torch.float64 if precision == "float64" else torch.float32
    net, x, g = prepare(ctx, scheme, real, batch_size)
    stem, steps = blocks(net)
    covs: list[torch.Tensor] = []
    leaves: list[torch.Tensor] = []
    maps: list[torch.Tensor] = []
    with torch.set_grad_enabled(trainability):
        with torch.no_grad():
            maps.append(stem(x))
        covs.append(map_cov(maps[0], dtype))
        for step in steps:
            leaf = maps[-1].detach().requires_grad_(trainability)
            leaves.append(leaf)
            maps.append(step(maps, leaf))
            covs.append(map_cov(maps[-1], dtype))  # before a later block could modify it in place
    if not steps:
        raise ValueError("az_nas: the network has a single feature map: progressivity needs two")
    ent = entropies(covs)
    out = {"entropies": ent, "pairs": None, "trainability": None}
    if any(math.isnan(h) for h in ent):
        out["expressivity"] = out["progressivity"] = -math.inf
    else:
        out["expressivity"] = _nan_to_neginf(math.fsum(ent))
        out["progressivity"] = _nan_to_neginf(min(b - a for a, b in zip(ent[:-1], ent[1:], strict=True)))
    if trainability:
        outs = maps[1:]
        g_outs: list[torch.Tensor | None] = [None] * len(outs)
        for i in reversed(range(len(outs))):  # official order: the last pair first
            g_outs[i] = signs(outs[i].shape, g, like=outs[i])
        live = [i for i, o in enumerate(outs) if o.requires_grad]
        grads: list[torch.Tensor | None] = [None] * len(outs)
        if live:
            got = torch.autograd.grad([outs[i] for i in live], [leaves[i] for i in live],
                                      [g_outs[i] for i in live], allow_unused=True)
            for i, gr in zip(live, got, strict=True):
                grads[i] = gr
        pairs = [pair_score(torch.zeros_like(leaves[i]) if gr is None else gr, g_outs[i], dtype)
                 for i, gr in enumerate(grads)]
        out["pairs"] = pairs
        mean = -math.inf if any(p == -math.inf for p in pairs) else math.fsum(pairs) / len(pairs)
        out["trainability"] = _nan_to_neginf(mean)
    return out


def shared_pass(ctx, scheme: str = "kaiming", real: bool = False, precision: str = "float64",
                trainability: bool = True) -> dict:
    """The pass of one setting, memoised in ``ctx.memo``: the forward is run once per cell and setting, and
    again only if trainability is asked after a forward-only pass."""
    key = f"_az_nas:{scheme}:{'real' if real else 'random'}:{precision}"
    memo = ctx.memo.get(key)
    if memo is None or (trainability and memo["trainability"] is None):
        with ctx.shared_work(_GROUP.get((real, precision), "az_nas pass")):
            memo = run_pass(ctx, scheme, real, precision, trainability)
        ctx.memo[key] = memo
    return memo


def _az(ctx, component: str = "expressivity", scheme: str = "kaiming", real: bool = False,
        precision: str = "float64") -> float:
    """AZ-NAS component (Lee & Ham, CVPR 2024) of one cell, from the pass it shares with the other two.

    ``scheme``: the weight initialisation ("kaiming" or "pytorch"); ``real``: the task's minibatch instead of
    random images; ``precision``: the dtype of the statistics."""
    setting = {"scheme": scheme, "real": real, "precision": precision}
    suffix = next((s for s, kw in SETTINGS.items() if kw == setting), None)
    t_name = f"az_trainability{suffix}"
    need_t = component == "trainability" or t_name in ctx.requested or not ctx.requested
    return float(shared_pass(ctx, scheme, real, precision, need_t)[component])


_DESCRIPTIONS = {
    "expressivity": "sum over the stem and cell outputs of the entropy of the normalised eigenvalues of the "
                    "channel covariance",
    "progressivity": "smallest increase of that entropy between consecutive feature maps",
    "trainability": "mean over blocks of -s - 1/s + 2, s = largest singular value of the block's Jacobian "
                    "estimated from a random +-1 backward (-inf for an identity block)",
}
_SETTING_WORDS = {"": "official NB201 setting, float64 statistics",
                  "_fp32": "official NB201 setting and the official float32 statistics",
                  "_real": "the task's real minibatch instead of random images"}

for _suffix, _kw in SETTINGS.items():
    for _comp in COMPONENTS:
        _inputs = "the task's minibatch (the runner's batch)" if _kw["real"] else f"random N(0,1), batch {BATCH}"
        _t = _comp == "trainability"
        register_proxy(
            f"az_{_comp}{_suffix}", higher_is_better=True, family="zero-cost", needs_data=_kw["real"],
            needs_labels=False, paper=_AZ, cost="forward+backward" if _t else "forward", nan_policy="rank_last",
            cost_note=("one forward of the batch and one backward of random +-1 signs through every block "
                       "(each block's input detached: all 17 NB201 block VJPs in one backward); "
                       "shares the pass with the setting's other two components" if _t else
                       f"one forward of the batch; {_kw['precision']} eigendecompositions of each feature map's "
                       "channel covariance; shares the pass with the setting's other two components"),
            description=f"AZ-NAS {_comp} (Lee & Ham CVPR 2024), {_SETTING_WORDS[_suffix]}: {_DESCRIPTIONS[_comp]}",
            init=_INIT_WORDS[_kw["scheme"]], inputs=_inputs, bn_mode="train (batch statistics)",
            default_study=not _suffix,  # the variants measure causes in the AZ-NAS reproduction (studies.aznas)
            shares=_GROUP[(_kw["real"], _kw["precision"])],
            component=_comp, **_kw)(_az)
