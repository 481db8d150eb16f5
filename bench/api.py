"""Use the suite's proxies from other NAS code: score any PyTorch network (``score``), and a drop-in for
zero-cost-nas's ``find_measures`` (``foresight.pruners.predictive.find_measures``).

``score(model, inputs, targets)`` runs the registered proxies on copies of a user's network through the same
:class:`~proxies.ProxyContext` the benchmark builds for a cell (one per call, so the shared gradient pass runs
once for all of them), and returns ``{proxy: float}``. ``find_measures`` keeps zero-cost-nas's signature and return
shape, so NAS code switches by changing one import; its differences from zero-cost-nas, measured, are in its
docstring and in ``tests/bench/test_api.py``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from proxybench.datasets.nb201 import NB201Network
from proxybench.proxies import ProxyContext, UnsupportedNetwork, get_proxy, resolve_proxies, training_free
from proxybench.proxies.gradient import shared_pass

__all__ = ["ProxyUnavailable", "ProxySkippedWarning", "ZC_MEASURES", "find_measures", "score"]

_LAYERS = (nn.Conv2d, nn.Linear)
# proxies whose definition is a sum over the Conv2d/Linear layers (a model without any would score 0, silently)
_LAYER_SUMS = frozenset({"grad_norm", "snip", "plain", "grasp", "fisher", "synflow", "synflow_bn", "l2_norm", "zico"})


class ProxyUnavailable(ValueError):
    """Proxies that cannot run on a model, or failed on it: one line naming each with its reason.

    ``reasons``: {proxy: reason}; ``scores``: the scores of the proxies that did run (a failure raises after the
    others have run, so nothing computed is lost)."""

    def __init__(self, reasons: dict[str, str], model: str, scores: dict[str, float] | None = None,
                 failed: bool = False):
        self.reasons, self.model, self.scores = dict(reasons), model, dict(scores or {})
        verb = "failed on" if failed else "cannot run on"
        if len(reasons) == 1:
            (name, why), = reasons.items()
            msg = f"proxy {name!r} {verb} {model}: {why}"
        else:
            msg = f"{len(reasons)} proxies {verb} {model}: " + "; ".join(f"{n}: {w}" for n, w in reasons.items())
        super().__init__(msg)


class ProxySkippedWarning(UserWarning):
    """The default proxy set left out proxies that cannot run on the model (listed, with why, in one line)."""


# ------------------------------------------------------------------------------------------ the copies

class _Logits(nn.Module):
    """A model that returns a tuple, seen through its last item (the logits), e.g. NATS-Bench's (features, logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[-1]


class _LogitsWithPreGAP(_Logits):
    def forward_pre_GAP(self, x):  # the Zen-NAS API of the wrapped model (zen reads it)
        return self.model.forward_pre_GAP(x)


def _without_bn(net: nn.Module) -> None:
    """Every BatchNorm module (1d/2d/3d, SyncBatchNorm) of ``net`` replaced by Identity, in place."""
    for name, child in list(net.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(net, name, nn.Identity())
        else:
            _without_bn(child)


def _factory(template: nn.Module, label: str) -> Callable[..., nn.Module]:
    """``build(bn=True)`` for ProxyContext: a deep copy of ``template`` (the user's weights as given), in train mode,
    every parameter requiring grad and without a stale ``.grad``; ``bn=False``: its BatchNorm modules removed."""

    def build(bn: bool = True) -> nn.Module:
        try:
            net = copy.deepcopy(template)
        except Exception as e:  # e.g. a non-leaf tensor kept as an attribute
            raise TypeError(f"score(): cannot copy {label} with copy.deepcopy ({type(e).__name__}: "
                            f"{_first_line(e)}); proxies never run on the caller's own module") from e
        if not bn:
            _without_bn(net)
        for p in net.parameters():
            p.grad = None
            if p.is_floating_point():
                p.requires_grad_(True)
        return net.train()

    return build


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    line = text[0].strip() if text else ""
    return line[:limit] + ("..." if len(line) > limit else "")


def _model_device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module, inputs: torch.Tensor) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return inputs.dtype if inputs.is_floating_point() else torch.float32


def _check_batch(label: str, inputs, targets) -> None:
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point() or inputs.dim() < 2:
        got = f"a {inputs.dtype} tensor of shape {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) \
            else type(inputs).__name__
        raise TypeError(f"score(): inputs must be a floating-point tensor (batch, ...) for {label}, got {got}")
    if targets is None:
        return
    if (not isinstance(targets, torch.Tensor) or targets.dim() != 1 or targets.is_floating_point()
            or targets.dtype == torch.bool or len(targets) != len(inputs)):
        got = f"a {targets.dtype} tensor of shape {tuple(targets.shape)}" if isinstance(targets, torch.Tensor) \
            else type(targets).__name__
        raise TypeError(f"score(): targets must be a 1-d integer tensor of class indices, one per input "
                        f"({len(inputs)}), got {got}")


def _probe(model: nn.Module, inputs: torch.Tensor, label: str, device, dtype) -> tuple[bool, int]:
    """(whether the model returns a tuple, the number of classes): one no-grad forward of (at most) two inputs on a
    throwaway copy in train mode, the mode the proxies run in."""
    net = _factory(model, label)().to(device)
    x = inputs[:2].to(device, dtype)
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as e:
        raise ValueError(f"score(): {label} failed on inputs of shape {tuple(inputs.shape[1:])} "
                         f"({type(e).__name__}: {_first_line(e)})") from e
    is_tuple = isinstance(out, (tuple, list)) and len(out) > 0
    logits = out[-1] if is_tuple else out
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(x):
        what = (f"a tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor)
                else type(logits).__name__)
        where = "the last item of its output" if is_tuple else "its output"
        raise ValueError(f"score(): {where} is {what}, for {len(x)} inputs; score() needs classification logits "
                         f"of shape (batch, classes) from {label}, or a tuple whose last item is them")
    return is_tuple, int(logits.shape[1])


# --------------------------------------------------------------------------------------- what can run

def _has_pre_gap(net: nn.Module) -> bool:
    """What ``proxybench.proxies.more_zero_cost.pre_gap_features`` (zen) can read the pre-pooling feature map from."""
    return (isinstance(net, NB201Network) or callable(getattr(net, "forward_pre_GAP", None))
            or any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) for m in net.modules()))


def _cannot_run(name: str, net: nn.Module, label: str, has_targets: bool) -> str | None:
    """Why a proxy cannot run on the (wrapped) model with this batch, or None."""
    info = get_proxy(name)
    if info.needs_training_data:
        return ("trains a network on the task's training images, which score() does not have "
                "(score a registered space with `proxybench run`)")
    if info.needs_table:
        return "reads the benchmark's table row of a cell (its own results); a model outside a benchmark has none"
    if info.needs_labels and not has_targets:
        return "needs labels: pass targets= (class indices, one per input)"
    if name in _LAYER_SUMS and not any(isinstance(m, _LAYERS) for m in net.modules()):
        return f"sums over nn.Conv2d/nn.Linear layers and {label} has none"
    if name == "nwot" and not any(isinstance(m, nn.ReLU) for m in net.modules()):
        return (f"reads the binary codes at the inputs of nn.ReLU modules and {label} has none "
                "(a functional relu is not seen)")
    if name == "zen" and not _has_pre_gap(net):
        return (f"needs the feature map before global pooling: give {label} a forward_pre_GAP(x) method "
                "or an nn.AdaptiveAvgPool2d module")
    return None


# -------------------------------------------------------------------------------------------- score()

def score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None,
          proxies: str | Sequence[str] | None = None, seed: int | None = None,
          device: str | torch.device | None = None) -> dict[str, float]:
    """Score a PyTorch classifier with the registered proxies: ``{proxy: float}``.

    ``model``: any ``nn.Module`` whose output is classification logits ``(batch, classes)``, or a tuple/list whose
    last item is (NATS-Bench's ``(features, logits)``). ``inputs``: a float tensor ``(batch, ...)``; ``targets``:
    class indices, one per input (needed by the proxies that read labels). ``proxies``: names, wildcards or
    ``@family`` (``proxybench.proxies.resolve_proxies``); None: every training-free proxy
    (``proxybench.proxies.training_free()``).
    ``seed``: torch is seeded with it before each copy is made, for the proxies' own random draws (zen's and meco's
    Gaussian inputs, meco_opt's channels); None: one drawn from torch's global generator. ``device``: where the
    copies and the batch go; None: the model's.

    The model is never modified: every proxy runs on a deep copy, with the model's weights AS GIVEN (nothing is
    re-initialised: score a freshly initialised network to score it "at initialisation"). The copies are in train
    mode (BatchNorm on batch statistics, as the proxies are defined) whatever the model's mode, every parameter
    requires grad and no stale ``.grad`` is kept; the model's parameters, buffers, gradients, ``requires_grad`` and
    train/eval mode are unchanged afterwards, and so is torch's global RNG state apart from the one draw of
    ``seed=None`` (the calls run under ``torch.random.fork_rng``). One :class:`~proxies.ProxyContext` serves all
    proxies of a call, so the shared gradient pass runs once.

    Proxies defined without BatchNorm (``synflow``; its ``synflow_bn`` keeps it) get a copy whose
    ``nn.BatchNorm1d/2d/3d`` and ``SyncBatchNorm`` modules are replaced by ``nn.Identity`` -- what zero-cost-nas's
    copy does and what the benchmark spaces' ``bn=False`` builders do; other normalisation (GroupNorm, LayerNorm, a
    functional ``batch_norm``) is kept.

    On a network built the way a benchmark space builds a cell (``torch.manual_seed(seed)``, then the builder), the
    scores are exactly those ``proxybench run`` computes for that cell and minibatch (tests/bench/test_api.py);
    a model that draws from torch's global generator in its forward (dropout) sees other draws than in the
    benchmark, where the build consumed the init's draws first. A non-finite score is returned as it is (e.g.
    nwot's -inf, jacob_cov's nan on a network whose output ignores its input; ``get_proxy(name).nan_policy`` says
    how the suite ranks it).

    Raises :class:`ProxyUnavailable` (one line, every proxy with its reason) when a proxy named in ``proxies``
    cannot run on the model: it needs labels and ``targets`` is None, the task's training images, a benchmark's
    table row, Conv2d/Linear layers (the proxies that sum over them), ``nn.ReLU`` modules (nwot), or the feature map
    before global pooling (zen: a ``forward_pre_GAP`` method or an ``nn.AdaptiveAvgPool2d``). With the default set
    (``proxies=None``) those proxies are left out instead, and a :class:`ProxySkippedWarning` lists them in one
    line. A proxy that raises while running is never skipped: after the others have run, ``ProxyUnavailable``
    names each failure (``.scores`` holds the rest).
    """
    scores, _, _ = _score(model, inputs, targets, proxies, seed, device)
    return scores


def _score(model, inputs, targets, proxies, seed, device) -> tuple[dict[str, float], ProxyContext, nn.Module]:
    """:func:`score`, also returning the context (its memo holds the shared pass) and the copied template."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"score(): model must be a torch.nn.Module, got {type(model).__name__}")
    label = type(model).__name__
    _check_batch(label, inputs, targets)
    inputs = inputs.detach()
    targets = None if targets is None else targets.detach()
    strict = proxies is not None
    names = resolve_proxies(proxies) if strict else training_free()
    if not names:
        raise ValueError("score(): proxies names no proxy (give names, wildcards or @families)")
    device = _model_device(model) if device is None else torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"score(): device={str(device)!r}, but torch {torch.__version__} sees no CUDA device here")
    dtype = _model_dtype(model, inputs)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        is_tuple, num_classes = _probe(model, inputs, label, device, dtype)
        if targets is not None and len(targets) and not (0 <= int(targets.min()) and int(targets.max()) < num_classes):
            raise ValueError(f"score(): targets must be class indices in 0..{num_classes - 1} ({label} has "
                             f"{num_classes} outputs), got {int(targets.min())}..{int(targets.max())}")
        if is_tuple:
            template = (_LogitsWithPreGAP if callable(getattr(model, "forward_pre_GAP", None)) else _Logits)(model)
        else:
            template = model
        reasons = {n: r for n in names if (r := _cannot_run(n, template, label, targets is not None)) is not None}
        if reasons and strict:
            raise ProxyUnavailable(reasons, label)
        n_names = len(names)
        names = [n for n in names if n not in reasons]  # left out: one warning after the run names every one
        ctx = ProxyContext(arch=f"{label} (score())", task="custom", seed=seed, build=_factory(template, label),
                           input_shape=tuple(inputs.shape[1:]), num_classes=num_classes, batch=(inputs, targets),
                           device=device, requested=tuple(names), dtype=dtype)
        scores: dict[str, float] = {}
        failures: dict[str, str] = {}
        unsupported: dict[str, str] = {}
        first: Exception | None = None
        for name in names:
            info = get_proxy(name)
            try:
                scores[name] = info.compute(ctx)
            except UnsupportedNetwork as e:  # its definition does not apply to this kind of network
                if strict:
                    failures[name] = f"{type(e).__name__}: {_first_line(e)}"
                    first = first or e
                else:
                    unsupported[name] = _first_line(e)
            except Exception as e:  # every failure is reported below, none is skipped
                failures[name] = f"{type(e).__name__}: {_first_line(e)}"
                first = first or e
    left_out = {**reasons, **unsupported}  # what cannot run (checked first), what does not apply (said by the proxy)
    if left_out:
        by_reason: dict[str, list[str]] = {}
        for n, r in left_out.items():
            by_reason.setdefault(r, []).append(n)
        warnings.warn(f"score(): left out {len(left_out)} of the {n_names} training-free proxies, which cannot run on "
                      f"{label}: " + "; ".join(f"{', '.join(ns)}: {r}" for r, ns in by_reason.items()),
                      ProxySkippedWarning, stacklevel=3)
    if failures:
        raise ProxyUnavailable(failures, label, scores, failed=True) from first
    return scores, ctx, template


# ------------------------------------------------------------------------------- zero-cost-nas's find_measures

# zero-cost-nas's default measure list (``measures.available_measures``: the order its modules register them;
# l2_norm exists there but is not loaded by default)
ZC_MEASURES = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "plain", "synflow_bn", "synflow")
_ALIASES = {"jacov": "jacob_cov"}  # NASLib's name
_LOSS_MEASURES = frozenset({"grad_norm", "snip", "grasp", "fisher", "plain", "epe_nas", "zico"})


def _is_cross_entropy(loss_fn) -> bool:
    if loss_fn is F.cross_entropy:
        return True
    return (isinstance(loss_fn, nn.CrossEntropyLoss) and loss_fn.weight is None and loss_fn.reduction == "mean"
            and loss_fn.label_smoothing == 0.0)


def _take_batches(loader: Iterable, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """zero-cost-nas's 'random': the first ``n`` batches of the loader, concatenated."""
    xs, ys = [], []
    it = iter(loader)
    for i in range(n):
        try:
            x, y = next(it)
        except StopIteration:
            raise ValueError(f"find_measures: dataload 'random' asks for {n} batches; the dataloader has {i}") from None
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _take_per_class(loader: Iterable, num_classes: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """zero-cost-nas's 'grasp': the loader's first ``per_class`` images of each class, class 0's first."""
    xs: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]
    ys: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]
    for x, y in loader:
        for i in range(len(x)):
            c = int(y[i])
            if not 0 <= c < num_classes:
                raise ValueError(f"find_measures: dataload 'grasp' with {num_classes} classes got label {c}")
            if len(xs[c]) < per_class:
                xs[c].append(x[i:i + 1])
                ys[c].append(y[i:i + 1])
        if all(len(v) == per_class for v in xs):
            break
    short = [c for c in range(num_classes) if len(xs[c]) < per_class]
    if short:
        raise ValueError(f"find_measures: dataload 'grasp' needs {per_class} images of each of {num_classes} classes; "
                         f"the dataloader ran out with fewer of class(es) {', '.join(map(str, short[:10]))}"
                         f"{' ...' if len(short) > 10 else ''}")
    return torch.cat([torch.cat(v) for v in xs]), torch.cat([torch.cat(v) for v in ys]).view(-1)


def _sum_arrays(measures_arr: dict) -> dict[str, float]:
    """zero-cost-nas's summary of per-layer arrays: jacob_cov as is, every other measure summed over its arrays."""
    out = {}
    for k, v in measures_arr.items():
        if k == "jacob_cov" or not isinstance(v, (list, tuple)):
            out[k] = float(v)
            continue
        total = 0.0
        for a in v:
            total = total + torch.sum(torch.as_tensor(a))
        out[k] = float(total)
    return out


def zc_fisher(ctx: ProxyContext, template: nn.Module) -> float:
    """zero-cost-nas's summed fisher from the shared pass: its per-channel values are broadcast to every weight of
    the channel before the sum, so each layer counts ``prod(weight.shape[1:])`` times (layers marked
    ``dont_ch_prune`` are left out, as its channel mode does)."""
    per_layer = shared_pass(ctx, "fisher")["fisher"]
    layers = [m for m in template.modules() if isinstance(m, _LAYERS)]
    return float(sum(v * math.prod(m.weight.shape[1:]) for v, m in zip(per_layer, layers, strict=True)
                     if not hasattr(m, "dont_ch_prune")))


def find_measures(net_orig: nn.Module, dataloader, dataload_info, device, loss_fn=F.cross_entropy,
                  measure_names=None, measures_arr=None) -> dict[str, float]:
    """zero-cost-nas's ``find_measures``, same signature and return shape: ``{measure_name: float}``.

    ``dataload_info = (dataload, num_imgs_or_batches, num_classes)``: ``'random'`` takes the loader's first
    ``num_imgs_or_batches`` batches, ``'grasp'`` its first ``num_imgs_or_batches`` images of every class (class 0's
    first); the loader yields ``(inputs, targets)``. ``measure_names``: zero-cost-nas's names (grad_norm, snip,
    grasp, fisher, jacob_cov, plain, synflow, synflow_bn, l2_norm; ``jacov`` is accepted for jacob_cov), or any
    name of the suite's registry (``proxybench ls proxies``); None: zero-cost-nas's default list
    (:data:`ZC_MEASURES`). ``measures_arr``: per-layer arrays already computed, only summed (as zero-cost-nas).
    Every measure is computed by :func:`score` (the suite's proxies, one shared pass, the network's weights as
    given) on that batch.

    Differences from zero-cost-nas (measured in tests/bench/test_api.py against a re-statement of its semantics on
    one network and batch):

    - the suite's gradient pass runs in the memory layout of ``proxies.gradient.LAYOUT`` (NCHW; on a copy: the
      caller's network is untouched); the figures below are against the re-statement in that layout (grasp against
      its float64 value);
    - the same numbers to float rounding (measured on the test network, a 2-conv CNN with BatchNorm, 16 images):
      grad_norm, snip, plain, l2_norm agree to 3e-8 relative in float32, fisher to 1.4e-7 (the same kernels, sums
      in another order; l2_norm sums in float64); synflow and synflow_bn (float64) and jacob_cov exactly (ours:
      ``eigvalsh`` in float64, zero-cost-nas: numpy ``eig`` of the float32 Jacobians' correlations); grasp is
      ``-g . (H w)`` by one forward-over-reverse pass instead of ``-w . (H g)`` by a double backward, equal in exact
      arithmetic: 1.3e-6 relative in float32 (the rounding of terms that cancel), 6e-16 in float64;
    - fisher is zero-cost-nas's sum, which counts each channel's value once per weight of the channel
      (``prod(weight.shape[1:])`` times, its per-weight broadcast before the sum): NOT the suite's registered
      ``fisher`` (``score()``, the reports), which counts each channel once; on the test network the two differ by
      a factor of 48, and not by one factor across networks (each layer has its own), so rankings differ too;
    - the caller's network is neither moved nor put in train mode (zero-cost-nas moves it to the CPU and leaves it
      on ``device`` in train mode); every measure runs in train mode (zero-cost-nas's copies keep the caller's mode,
      so only a network passed in eval mode scores differently);
    - ``loss_fn`` must be the mean cross-entropy (``F.cross_entropy`` or a default ``nn.CrossEntropyLoss()``) when
      a measure uses the loss: the suite's gradient pass is defined with it; anything else raises;
    - no retry on CUDA out-of-memory with the batch split in parts (zero-cost-nas's ``split_data``);
    - 'grasp' stops reading the loader once every class has its images (zero-cost-nas reads until it has seen one
      more image of every class, and raises StopIteration if the loader ends first: the images taken are the same);
    - a measure that cannot run on the network raises :class:`ProxyUnavailable` naming it (zero-cost-nas: whatever
      error its code hits; jacob_cov printed and returned nan).
    """
    if measures_arr is not None:
        return _sum_arrays(measures_arr)
    try:
        dataload, n, num_classes = dataload_info
    except (TypeError, ValueError):
        raise ValueError("find_measures: dataload_info must be (dataload, num_imgs_or_batches, num_classes), e.g. "
                         f"('random', 1, 10); got {dataload_info!r}") from None
    names = list(ZC_MEASURES if measure_names is None else measure_names)
    registry = [_ALIASES.get(m, m) for m in names]
    for m in registry:
        get_proxy(m)  # an unknown name fails before any data is read, with "did you mean"
    uses_loss = [m for m in registry if m in _LOSS_MEASURES]
    if uses_loss and not _is_cross_entropy(loss_fn):
        raise ValueError(f"find_measures: loss_fn={getattr(loss_fn, '__name__', loss_fn)!r} is not supported: "
                         f"{', '.join(uses_loss)} use the mean cross-entropy (pass F.cross_entropy, the default)")
    if dataload == "random":
        inputs, targets = _take_batches(dataloader, int(n))
    elif dataload == "grasp":
        inputs, targets = _take_per_class(dataloader, int(num_classes), int(n))
    else:
        raise NotImplementedError(f"dataload {dataload} is not supported (use 'random' or 'grasp')")
    scores, ctx, template = _score(net_orig, inputs, targets, list(dict.fromkeys(registry)), None, device)
    if "fisher" in scores:
        scores["fisher"] = zc_fisher(ctx, template)
    return {m: scores[r] for m, r in zip(names, registry, strict=True)}
