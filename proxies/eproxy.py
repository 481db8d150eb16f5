"""Eproxy (Li et al., Extensible and Efficient Proxy for NAS, ICCV 2023): self-supervised few-shot regression.

The candidate backbone + a small trainable head per branch + a frozen, randomly initialised **barrier**
convolution regress fixed synthetic 8x8 target maps for 10 SGD iterations on one batch of 16 images; the
score is the final MSE loss (lower is better). Every training setting is an :class:`EproxySetting`, a
frozen, hashable record with a stable short hash, so the Discrete Proxy Search (``bench/studies/dps.py``) can cache
each (setting, cell) score and never recompute it.

What this implementation decides (the public GenNAS-Zero code, ``do_train.py`` and ``model_wrapper/``, is
the reference; differences are listed):

- **Backbone features.** NB201: the raw output of each of the three stages (after the last cell of a stage,
  before the residual reduction / the final BN-ReLU, global pooling and classifier), deepest first, each
  resized to 8x8 by nearest-neighbour interpolation: branch 0 = stage 3 (64 ch, 8x8), branch 1 = stage 2
  (32 ch, 16x16 -> 8x8), branch 2 = stage 1 (16 ch, 32x32 -> 8x8), as the reference's ``BackboneNB201``.
  Any other network: one branch, the last 4-D activation of its forward pass (its pre-pooling feature map);
  a setting asking for more branches uses what there is.
- **Head** (trainable) per branch: conv(k_head, C_in -> C_head) - ReLU - BN, the reference's order.
  **Barrier** per branch: conv(k_barrier, C_head -> C_target) with bias, ``requires_grad=False`` and never
  given to the optimizer; initialised from a generator seeded by the setting alone, so every cell regresses
  through the same fixed barrier (the reference draws it from the global RNG after building each model).
  Head/barrier kernel sizes and channel counts are one value per setting (the reference allows one per branch).
- **Targets** (generated here, no downloaded tensors): for each branch a ``[16, C_target, 8, 8]`` map, the sum
  of the chosen bases, each standardised to unit variance, times ``level``. Bases, drawn per (image, channel)
  from ``numpy.random.default_rng`` seeded by (target_seed, branch, basis): ``wave_l`` / ``wave_m`` / ``wave_h``
  plane waves ``sin(2 pi (fx x + fy y) / 8 + phase)`` with spatial frequency |f| in (0.25, 1], (1, 2], (2, 4]
  cycles per 8 pixels, random direction and phase; ``dot`` four random pixels set to +-1; ``net`` the 8x8
  feature maps of a fixed random 3-layer conv net (seeded) applied to the images themselves (the only basis
  that depends on image content). A batch smaller than 16 uses the first images of the targets.
- **Training**: ``model.train()`` (BN on batch statistics), SGD (lr, momentum 0.9, weight decay 4e-5) over
  backbone + heads, loss = sum over branches of MSE; 10 iterations. **Score** = the branch-weighted loss
  ``sum_i MSE_i / 2**i`` of the 10th forward pass (as the reference: the loss recorded at the last iteration,
  i.e. after 9 updates), times the FLOPs prior ``1 - alpha * MACs / MACs_max`` (alpha = 0: no prior; MACs of
  the backbone on one image, MACs_max = the all-conv3x3 NB201 cell; NB201 only).
- **Batch**: the first 16 images of ``ctx.inputs`` (the study's minibatch); fewer when the batch is smaller
  (the contract tests use 8); the runner's default section scores it with a 16-image batch.
"""

from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from proxybench.proxies.registry import register_proxy

PAPER = "Li et al., Extensible and Efficient Proxy for Neural Architecture Search (Eproxy), ICCV 2023"
TARGET_BASES = ("net", "wave_l", "wave_m", "wave_h", "dot")
INITS = ("torch-default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")
KERNELS = (1, 3, 7)
MAX_BRANCHES = 3
N_IMAGES = 16
SIZE = 8
# bump whenever the numbers eproxy_loss produces for a given setting would change
VERSION = 1
_WAVE_BANDS = {"wave_l": (0.25, 1.0), "wave_m": (1.0, 2.0), "wave_h": (2.0, 4.0)}  # cycles per 8 px


@dataclass(frozen=True)
class EproxySetting:
    """One Eproxy training setting: every knob DPS searches, plus the fixed optimiser constants.

    Defaults are the reference's NB201 configuration (``config_nb201_mse_12e-1.yaml``: three branches,
    1x1 head, 3x3 barrier, 128 channels, high-frequency waves, lr 1.2), level 1, PyTorch default init, no
    FLOPs prior.
    """

    lr: float = 1.2
    alpha: float = 0.0
    branches: int = 3
    head_kernel: int = 1
    barrier_kernel: int = 3
    head_channels: int = 128
    target_channels: int = 128
    targets: tuple[str, ...] = ("wave_h",)
    level: float = 1.0
    init: str = "torch-default"
    barrier_init: str = "torch-default"
    target_seed: int = 0
    iterations: int = 10
    momentum: float = 0.9
    weight_decay: float = 4e-5

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("lr", "alpha", "level", "momentum", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"EproxySetting.{name} must be a finite number, got {v!r}")
            put(name, round(float(v), 10))  # one float per value: stable hash
        for name in ("branches", "head_kernel", "barrier_kernel", "head_channels", "target_channels",
                     "target_seed", "iterations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"EproxySetting.{name} must be an integer, got {v!r}")
            put(name, int(v))
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        bad = [t for t in targets if t not in TARGET_BASES]
        if bad or not targets:
            raise ValueError(f"EproxySetting.targets must be a non-empty subset of {TARGET_BASES}, got {targets!r}")
        put("targets", tuple(t for t in TARGET_BASES if t in targets))  # canonical order, no repeats
        if not 1 <= self.branches <= MAX_BRANCHES:
            raise ValueError(f"EproxySetting.branches must be 1..{MAX_BRANCHES}, got {self.branches}")
        for name in ("head_kernel", "barrier_kernel"):
            if getattr(self, name) % 2 != 1 or getattr(self, name) < 1:
                raise ValueError(f"EproxySetting.{name} must be an odd positive kernel size, got {getattr(self, name)}")
        for name in ("head_channels", "target_channels", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"EproxySetting.{name} must be positive, got {getattr(self, name)}")
        for name in ("init", "barrier_init"):
            if getattr(self, name) not in INITS:
                raise ValueError(f"EproxySetting.{name} must be one of {INITS}, got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise ValueError(f"EproxySetting.lr must be positive, got {self.lr}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EproxySetting:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown EproxySetting fields {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if k == "targets" else v for k, v in d.items()})

    @property
    def hash(self) -> str:
        """A stable 10-hex-digit hash of every field (canonical JSON, sorted keys)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def without_prior(self) -> EproxySetting:
        """The same training with alpha = 0: what the training loss depends on (the prior is applied after)."""
        return replace(self, alpha=0.0)

    @property
    def proxy_name(self) -> str:
        """The score-cache name of this setting's prior-free loss: ``eproxy[<hash of the alpha=0 setting>]``."""
        return f"eproxy[{self.without_prior().hash}]"

    def describe(self) -> str:
        return (f"lr {self.lr:g}, alpha {self.alpha:+g}, {self.branches} branch(es), head k{self.head_kernel} "
                f"x{self.head_channels}, barrier k{self.barrier_kernel} x{self.target_channels}, targets "
                f"{'+'.join(self.targets)} at level {self.level:g}, init {self.init} / barrier {self.barrier_init}")


DEFAULT = EproxySetting()


# ------------------------------------------------------------------------------------------ targets

def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def _wave(rng: np.random.Generator, shape, band) -> np.ndarray:
    n, c = shape
    f = rng.uniform(*band, size=(n, c, 1, 1)) / SIZE  # cycles per pixel
    theta = rng.uniform(0, 2 * np.pi, size=(n, c, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, c, 1, 1))
    y, x = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    return np.sin(2 * np.pi * f * (np.cos(theta) * x + np.sin(theta) * y) + phase)


def _dots(rng: np.random.Generator, shape, k: int = 4) -> np.ndarray:
    n, c = shape
    out = np.zeros((n, c, SIZE * SIZE))
    pos = np.argsort(rng.random((n, c, SIZE * SIZE)), axis=-1)[..., :k]
    np.put_along_axis(out, pos, rng.choice([-1.0, 1.0], size=(n, c, k)), axis=-1)
    return out.reshape(n, c, SIZE, SIZE)


def _random_net_features(images: torch.Tensor, channels: int, seed: int) -> np.ndarray:
    """8x8 maps of a fixed random conv net (3 conv-ReLU layers, seeded) applied to the images."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        net = nn.Sequential(nn.Conv2d(images.shape[1], 32, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(64, channels, 3, padding=1))
    with torch.no_grad():
        feats = net(images.detach().float().cpu())
        feats = F.adaptive_avg_pool2d(feats, SIZE)
    return feats.double().numpy()


def _standardise(a: np.ndarray) -> np.ndarray:
    sd = a.std()
    return (a - a.mean()) / sd if sd > 0 else a - a.mean()


def make_targets(setting: EproxySetting, images: torch.Tensor | None = None, n: int = N_IMAGES
                 ) -> list[torch.Tensor]:
    """The target maps of every branch, ``[n, target_channels, 8, 8]`` float32 each; deterministic for a
    setting (and, for the ``net`` basis, the images). The first ``n`` of 16 per-image maps."""
    out = []
    for b in range(setting.branches):
        total = np.zeros((N_IMAGES, setting.target_channels, SIZE, SIZE))
        for basis in setting.targets:
            rng = np.random.default_rng(_seed("eproxy-target", setting.target_seed, b, basis))
            shape = (N_IMAGES, setting.target_channels)
            if basis in _WAVE_BANDS:
                a = _wave(rng, shape, _WAVE_BANDS[basis])
            elif basis == "dot":
                a = _dots(rng, shape)
            else:
                if images is None:
                    raise ValueError("the 'net' target basis needs the images")
                a = _random_net_features(images[:N_IMAGES], setting.target_channels,
                                         _seed("eproxy-net", setting.target_seed, b))
                if a.shape[0] < N_IMAGES:  # fewer images: the maps exist for those only
                    a = np.concatenate([a, np.zeros((N_IMAGES - a.shape[0], *a.shape[1:]))])
            total += _standardise(a)
        out.append(torch.from_numpy(total[:n] * setting.level).float())
    return out


_TARGET_MEMO: dict = {}


def _targets_for(setting: EproxySetting, images: torch.Tensor) -> list[torch.Tensor]:
    """make_targets memoised per (target part of the setting, images): shared by every cell of a study."""
    key_setting = (setting.branches, setting.target_channels, setting.targets, setting.level, setting.target_seed)
    img_key = hashlib.sha1(images.detach().cpu().numpy().tobytes()).hexdigest() if "net" in setting.targets else ""
    key = (key_setting, len(images), img_key)
    if key not in _TARGET_MEMO:
        if len(_TARGET_MEMO) > 64:
            _TARGET_MEMO.clear()
        _TARGET_MEMO[key] = make_targets(setting, images, len(images))
    return [t.to(images.device) for t in _TARGET_MEMO[key]]


# ------------------------------------------------------------------------------------------ the model

def _init(module: nn.Module, scheme: str, generator: torch.Generator | None = None) -> None:
    """Re-initialise conv/linear weights (biases to zero) with ``scheme``; torch-default leaves them."""
    if scheme == "torch-default":
        return
    fn = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_,
          "kaiming_uniform": lambda w, generator=None: nn.init.kaiming_uniform_(w, nonlinearity="relu",
                                                                                generator=generator),
          "kaiming_normal": lambda w, generator=None: nn.init.kaiming_normal_(w, nonlinearity="relu",
                                                                              generator=generator)}[scheme]
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                fn(m.weight, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()


def stage_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The backbone's feature maps, deepest first (see the module docstring)."""
    from proxybench.datasets.nb201 import NB201Network, ResidualReduction

    if isinstance(net, NB201Network):
        h = net.stem(x)
        feats = []
        for m in net.cells:
            if isinstance(m, ResidualReduction):
                feats.append(h)
            h = m(h)
        feats.append(h)
        return feats[::-1]
    last: list[torch.Tensor] = []

    def keep(_m, _i, o):
        if isinstance(o, torch.Tensor) and o.dim() == 4:
            last[:] = [o]

    hooks = [m.register_forward_hook(keep) for m in net.modules()]
    try:
        net(x)
    finally:
        for h in hooks:
            h.remove()
    if not last:
        raise ValueError(f"eproxy needs a convolutional backbone: {type(net).__name__} produced no 4-D feature map")
    return last


class EproxyModel(nn.Module):
    """Backbone + trainable heads + frozen barriers. ``forward`` returns one ``[B, C_target, 8, 8]`` per branch."""

    def __init__(self, backbone: nn.Module, in_channels: list[int], setting: EproxySetting):
        super().__init__()
        self.backbone = backbone
        k, c = setting.head_kernel, setting.head_channels
        self.heads = nn.ModuleList(nn.Sequential(nn.Conv2d(ci, c, k, padding=k // 2), nn.ReLU(), nn.BatchNorm2d(c))
                                   for ci in in_channels)
        with torch.random.fork_rng(devices=[]):
            seed = _seed("eproxy-barrier", setting.target_seed, setting.barrier_init) % 2**63
            torch.manual_seed(seed)
            kb = setting.barrier_kernel
            self.barrier = nn.ModuleList(nn.Conv2d(c, setting.target_channels, kb, padding=kb // 2)
                                         for _ in in_channels)
            _init(self.barrier, setting.barrier_init, torch.Generator().manual_seed(seed))
        self.barrier.requires_grad_(False)

    def trainable(self) -> list[nn.Parameter]:
        """What the optimizer gets: backbone and heads, never the barrier."""
        return [*self.backbone.parameters(), *self.heads.parameters()]

    def forward(self, x):
        feats = stage_features(self.backbone, x)[: len(self.heads)]
        feats = [f if f.shape[-2:] == (SIZE, SIZE) else F.interpolate(f, size=(SIZE, SIZE)) for f in feats]
        return [bar(head(f)) for f, head, bar in zip(feats, self.heads, self.barrier, strict=True)]


def build_model(ctx, setting: EproxySetting, x: torch.Tensor) -> EproxyModel:
    """The cell's seeded backbone (``ctx.network()``) with heads and barrier for ``setting``."""
    backbone = ctx.network()
    backbone.eval()  # a shape probe: leave the BN running statistics alone
    with torch.no_grad():
        shapes = [f.shape[1] for f in stage_features(backbone, x[:1])][: setting.branches]
    backbone.train()
    model = EproxyModel(backbone, shapes, setting).to(x.device)
    _init(nn.ModuleList([model.backbone, model.heads]), setting.init)
    return model


# ------------------------------------------------------------------------------------------ the score

def _images(ctx) -> torch.Tensor:
    x = ctx.inputs
    return x[:N_IMAGES]


@contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def eproxy_loss(ctx, setting: EproxySetting = DEFAULT) -> float:
    """The prior-free Eproxy score of one cell: the branch-weighted MSE of the last of ``iterations`` SGD
    steps (lower is better). NaN when the training diverges.

    Runs on one torch thread: the tensors are small (two threads are no faster, and ~10x slower on a busy
    machine), and CPU reductions differ in the last bits with the thread count, which 10 SGD steps amplify;
    so the score does not depend on the caller's thread setting.
    """
    with _one_thread():
        return _loss(ctx, setting)


def _loss(ctx, setting: EproxySetting) -> float:
    x = _images(ctx)
    targets = _targets_for(setting, x)
    model = build_model(ctx, setting, x)
    targets = targets[: len(model.heads)]
    model.train()
    opt = torch.optim.SGD(model.trainable(), lr=setting.lr, momentum=setting.momentum,
                          weight_decay=setting.weight_decay)
    score = float("nan")
    for _ in range(setting.iterations):
        outs = model(x)
        losses = [F.mse_loss(o, t) for o, t in zip(outs, targets, strict=True)]
        with torch.no_grad():
            score = float(sum(loss.detach() / 2 ** i for i, loss in enumerate(losses)))
        if not math.isfinite(score):
            return float("nan")
        opt.zero_grad(set_to_none=True)
        sum(losses).backward()
        opt.step()
    return score


def backbone_macs(net: nn.Module, input_shape, device=None) -> float:
    """Multiply-adds of the backbone's feature path on one image (torch FlopCounterMode / 2)."""
    x = torch.zeros((1, *input_shape), device=device)
    was = net.training
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        stage_features(net, x)
    net.train(was)
    return counter.get_total_flops() / 2


@lru_cache(maxsize=8)
def _nb201_max_macs(task: str, input_shape: tuple) -> float:
    from proxybench.datasets.nb201 import build_network

    widest = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    with torch.random.fork_rng(devices=[]):
        net = build_network(widest, task)
    return backbone_macs(net, input_shape)


def macs_ratio(ctx) -> float:
    """MACs of the cell's backbone over the largest of its space (NB201: the all-conv3x3 cell), in [0, 1]."""
    from proxybench.datasets.nb201 import NB201Network

    net = ctx.shared_network()
    if not isinstance(net, NB201Network):
        raise ValueError("the Eproxy FLOPs prior (alpha != 0) needs the space's largest network; only NB201 "
                         "has one here: use alpha = 0")
    return backbone_macs(net, ctx.input_shape, ctx.device) / _nb201_max_macs(ctx.task, tuple(ctx.input_shape))


def apply_prior(loss: float, ratio: float, alpha: float) -> float:
    """The reference's FLOPs prior: ``loss * (1 - alpha * MACs / MACs_max)`` (lower is better)."""
    return loss * (1.0 - alpha * ratio)


def eproxy_score(ctx, setting: EproxySetting = DEFAULT) -> float:
    """The Eproxy score of one cell under ``setting`` (the loss, with the FLOPs prior when alpha != 0)."""
    loss = eproxy_loss(ctx, setting.without_prior())
    return loss if setting.alpha == 0 else apply_prior(loss, macs_ratio(ctx), setting.alpha)


@register_proxy("eproxy", higher_is_better=False, family="self-supervised", needs_data=True, needs_labels=False,
                paper=PAPER, version=VERSION, cost="training", nan_policy="rank_last",
                cost_note="10 SGD steps on one batch of 16 images",
                description="Eproxy, default setting: final MSE of 10 SGD steps regressing synthetic 8x8 targets "
                            "through a frozen barrier (lower is better; divergence ranks last)")
def eproxy(ctx) -> float:
    """Eproxy with the default setting (Li et al., ICCV 2023): final self-supervised regression loss."""
    return eproxy_score(ctx, DEFAULT)
