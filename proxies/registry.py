"""The proxy registry: one decorator, one frozen record per proxy, listing with wildcards."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from proxybench.datasets.errors import did_you_mean

FAMILIES = ("baseline", "zero-cost", "reduced-training", "self-supervised", "hardware")
# the families of the default study and of the golden regression study: no training, no timing
TRAINING_FREE = ("baseline", "zero-cost")
NAN_POLICIES = {
    "exclude": "non-finite scores are left out of the correlations and counted in the report",
    "rank_last": "non-finite scores (a degenerate network: e.g. an output that ignores the input) rank below "
                 "every finite score, tied among themselves; counted in the report",
}
# what a proxy computes per cell, by the costliest kind of work; ``cost_note`` adds the details
COSTS = {
    "free": "no pass through the network: counts or reads the weights, or looks a value up in a table",
    "forward": "forward pass(es) only",
    "forward+backward": "forward and backward pass(es) (a gradient, an input Jacobian)",
    "second-order": "a Hessian term on top of a forward+backward pass",
    "training": "trains a network (steps of SGD)",
}
# the cost tier a study sizes its samples by (NB101: the cheap tier on the most cells, second order on fewest)
TIERS = {
    "cheap": "no backward pass through the minibatch of images, or no pass at all: the largest samples",
    "one-pass": "a pass (or a few) of the minibatch, forward or forward+backward",
    "second-order": "a second-order term per cell: the costliest training-free tier, the smallest samples",
    "trained": "trains a network per cell: sized by its own study",
}
# the tier of a cost class unless the record says otherwise (a forward+backward pass of ONE image is cheap)
TIER_OF_COST = {"free": "cheap", "forward": "one-pass", "forward+backward": "one-pass",
                "second-order": "second-order", "training": "trained"}
# per-cell work that proxies of one group share when they run on the same cell: the cache charges it to
# whichever ran first, so a consumer of per-score seconds must treat the group together (proxybench.studies.search)
# the memory layouts a proxy's float32 networks and images may have (ProxyContext.network / inputs)
LAYOUTS = {
    "nchw": "PyTorch's default contiguous layout",
    "channels_last": "NHWC (torch.channels_last): on CPUs 1.2-3x faster for NB201's small convolutions (make perf); "
                     "its networks' BatchNorm2d compute train-mode batch statistics as accurately as PyTorch's NCHW "
                     "kernel (datasets/accurate_bn.py; PyTorch's own is ~100x less accurate in this layout)",
}
SHARES = {
    "gradient pass": "one forward pass of the minibatch and the backward passes the requested proxies need "
                     "(proxies.gradient.shared_pass)",
    "network": "one built network per cell, read and never modified (ProxyContext.shared_network)",
    # the newer proxies' families: each memoises its per-cell pass in ProxyContext.memo for its other names
    "az_nas pass": "AZ-NAS's forward (and, for trainability, one backward) in the official setting, float64 "
                   "statistics (proxies.az_nas)",
    "az_nas fp32 pass": "AZ-NAS's pass in the official setting with the official float32 statistics",
    "az_nas real pass": "AZ-NAS's pass on the task's real minibatch",
    "gradsign pass": "GradSign's per-sample gradients (proxies.gradsign)",
    "swap pass": "SWAP's 32 re-initialised forward passes and their pattern counts (proxies.swap)",
    "vkdnw pass": "VKDNW's per-sample Jacobian, Fisher and spectrum (proxies.vkdnw)",
}


class UnsupportedNetwork(ValueError):
    """The proxy's definition does not apply to this network (e.g. it needs an NB201 cell, or the stem and cell
    outputs of a known space): the library API leaves the proxy out of its default set instead of failing."""


class UnknownProxyError(KeyError):
    """A proxy name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ProxyInfo:
    """What a proxy is: its record in the registry.

    ``higher_is_better``: the declared direction (a higher score predicts a more accurate network).
    ``needs_data`` / ``needs_labels``: whether it looks at images / labels (contract tests check it).
    ``version``: bump whenever the numbers it produces would change; cached scores of another
    version are "not comparable", never a regression.
    ``cost``: a class of :data:`COSTS` (what it computes per cell); ``cost_note``: the details in words.
    ``tier``: its cost tier (:data:`TIERS`; by default the tier of its cost class).
    ``shares``: the group of :data:`SHARES` whose per-cell work it shares, or "" (none).
    ``nan_policy``: how a non-finite score ranks (:data:`NAN_POLICIES`; applied by ``proxybench.metrics.declared``).
    """

    name: str
    fn: Callable = field(repr=False, compare=False)
    higher_is_better: bool
    family: str
    needs_data: bool
    needs_labels: bool
    paper: str
    version: int = 1
    cost: str = "forward"
    nan_policy: str = "exclude"
    description: str = ""
    needs_training_data: bool = False  # trains on ctx.train_data() (the task's training/held-out images)
    needs_table: bool = False  # reads the benchmark's own table row (ctx.table)
    deterministic: bool = True  # False for timings: two calls under one seed may differ (contract tests skip a == b)
    tier: str = "one-pass"
    shares: str = ""
    cost_note: str = ""
    external: str = ""  # the source (EXTERNAL_SOURCES) of scores computed elsewhere; "" for a proxy of this suite
    # the setting a proxy's definition fixes (part of its definition, shown with its scores); "" = the suite's
    # default: the space's seeded network init, the task's minibatch if it needs data, the network's train mode
    init: str = ""  # e.g. "kaiming_normal(fan_in, relu), biases 0": the proxy re-initialises the network so
    inputs: str = ""  # e.g. "random N(0,1), batch 64": what it feeds instead of (or besides) the task's images
    bn_mode: str = ""  # e.g. "train (batch statistics)" / "eval (running statistics)"
    # the memory layout of its float32 networks and images (LAYOUTS): part of its numbers, as float32 kernels of
    # another layout sum in another order; a proxy changes layout only with a version bump (and a rescoring)
    layout: str = "nchw"
    # the search spaces its definition applies to (their registered names, e.g. ("nb201",) for one defined on NB201's
    # cells: TE-NAS's thin networks, swap_reg's NB201 mu and sigma); () = any network its code can read. Studies of
    # another space leave it out; on such a network it raises UnsupportedNetwork (tests: test_api)
    spaces: tuple[str, ...] = ()
    # a set-level aggregate (register_aggregate): the member proxies whose per-cell scores it combines over the set
    # of cells being ranked, and how (AGGREGATIONS); () for a per-cell proxy
    members: tuple[str, ...] = ()
    aggregation: str = ""
    # False for a variant kept to measure a cause (e.g. AZ-NAS's official float32 statistics), or a proxy whose
    # default-study scores are not computed yet (its module says so): the studies that name it score it; the default
    # study, the golden regression and the library's default set leave it out
    default_study: bool = True

    def compute(self, ctx) -> float:
        """The proxy's raw score on ``ctx``, with the context set up as its record says (what it may read, the
        layout); every caller that scores a proxy (runner, library API, perf) goes through here."""
        ctx.allow_data, ctx.allow_labels = self.needs_data, self.needs_labels
        ctx.layout = self.layout
        return float(self.fn(ctx))

    @property
    def setting(self) -> str:
        """The proxy's init, inputs and BatchNorm mode in words (the suite's defaults where it fixes none)."""
        init = self.init or "the space's seeded init"
        inputs = self.inputs or ("the task's minibatch" if self.needs_data else "no images")
        bn = self.bn_mode or "train mode"
        return f"init: {init}; inputs: {inputs}; BN: {bn}"

    @property
    def direction(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def needs(self) -> str:
        parts = [p for p, on in (("data", self.needs_data), ("labels", self.needs_labels),
                                 ("training", self.needs_training_data), ("table", self.needs_table)) if on]
        return "+".join(parts) or "nothing"


_REGISTRY: dict[str, ProxyInfo] = {}


def register_proxy(name: str, *, higher_is_better: bool, family: str, needs_data: bool, needs_labels: bool,
                   paper: str, version: int = 1, cost: str = "forward", nan_policy: str = "exclude",
                   description: str = "", needs_training_data: bool = False, needs_table: bool = False,
                   deterministic: bool = True, tier: str | None = None, shares: str = "", cost_note: str = "",
                   init: str = "", inputs: str = "", bn_mode: str = "", layout: str = "nchw",
                   spaces: tuple[str, ...] = (),
                   default_study: bool = True, **bound):
    """Register ``fn(ctx, **bound) -> float`` under ``name``; ``bound`` makes variants of one function.

    ``cost`` is a class of :data:`COSTS` (default ``forward``); ``tier`` defaults to the cost class's
    (:data:`TIER_OF_COST`); ``shares`` names a group of :data:`SHARES` or is empty. ``init`` / ``inputs`` /
    ``bn_mode``: the initialisation, input kind and BatchNorm mode the definition fixes, in words ("" = the
    suite's default: the space's init, the task's minibatch, train mode). ``layout``: a key of :data:`LAYOUTS`
    (the memory layout of its float32 networks and images). ``default_study=False``: a variant kept to measure a
    cause, scored by the study that names it, not by the default study (``training_free``)."""
    if family not in FAMILIES:
        raise ValueError(f"proxy {name!r}: family must be one of {FAMILIES}, got {family!r}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"proxy {name!r}: nan_policy must be one of {sorted(NAN_POLICIES)}")
    if cost not in COSTS:
        raise ValueError(f"proxy {name!r}: cost must be a cost class, one of {', '.join(COSTS)}, got {cost!r} "
                         "(details in words go to cost_note)")
    tier = TIER_OF_COST[cost] if tier is None else tier
    if tier not in TIERS:
        raise ValueError(f"proxy {name!r}: tier must be one of {', '.join(TIERS)}, got {tier!r}")
    if family in TRAINING_FREE and tier == "trained":
        raise ValueError(f"proxy {name!r}: a {family} proxy is training-free; its tier cannot be 'trained'")
    if layout not in LAYOUTS:
        raise ValueError(f"proxy {name!r}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if shares and shares not in SHARES:
        raise ValueError(f"proxy {name!r}: shares must name a group of shared work, one of {', '.join(SHARES)}, "
                         f"or be empty; got {shares!r}")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"proxy {name!r}: version must be a positive integer, got {version!r}")
    if needs_labels and not needs_data:
        raise ValueError(f"proxy {name!r}: a proxy that needs labels needs data too")
    if needs_training_data and not needs_labels:
        raise ValueError(f"proxy {name!r}: a proxy that trains on the task's images needs data and labels")

    def deco(fn):
        if name in _REGISTRY:
            first = _REGISTRY[name].fn
            raise ValueError(f"proxy {name!r} is already registered (by {getattr(first, 'func', first).__module__})")
        call = partial(fn, **bound) if bound else fn  # a variant: its function stays visible (call.func)
        doc = description or (fn.__doc__ or "").strip().splitlines()[0] if (description or fn.__doc__) else ""
        _REGISTRY[name] = ProxyInfo(name, call, higher_is_better, family, needs_data, needs_labels, paper,
                                    version, cost, nan_policy, doc, needs_training_data, needs_table,
                                    deterministic=deterministic, tier=tier, shares=shares, cost_note=cost_note,
                                    init=init, inputs=inputs, bn_mode=bn_mode, layout=layout,
                                    spaces=tuple(spaces),
                                    default_study=default_study)
        return fn

    return deco


def _ensure_loaded() -> None:
    from proxybench import proxies  # noqa: F401  (importing the package registers the built-in proxies)


# Scores computed elsewhere (a score file of another tool, imported by ``proxybench.scorefiles``) are cached under
# ``<source>:<proxy>``, e.g. ``naslib:synflow``: the proxy of this suite that the file's scores are of. Such a name
# resolves to a record derived from that proxy's (direction, family, NaN policy) with ``external`` set and version 0;
# nothing computes it (the runner skips it, its function refuses) and ``list_proxies`` does not list it.
EXTERNAL_SOURCES = {"naslib": "NASLib / NAS-Bench-Suite-Zero score files (zc_<space>.json)"}
_EXTERNAL: dict[str, ProxyInfo] = {}


def _computed_elsewhere(ctx, name: str = ""):
    raise RuntimeError(f"{name} holds scores computed elsewhere (imported with `proxybench import-scores`); "
                       f"this suite does not compute it")


def external_proxy(name: str) -> ProxyInfo | None:
    """The record of an external name ``<source>:<registered proxy>`` (see EXTERNAL_SOURCES), or None."""
    source, sep, base = name.partition(":")
    if not sep or source not in EXTERNAL_SOURCES:
        return None
    _ensure_loaded()
    if base not in _REGISTRY:
        return None
    if name not in _EXTERNAL:
        b = _REGISTRY[base]
        _EXTERNAL[name] = ProxyInfo(
            name, partial(_computed_elsewhere, name=name), b.higher_is_better, b.family, False, False, b.paper,
            version=0, cost="free", nan_policy=b.nan_policy, tier="cheap", external=source,
            description=f"{base} computed elsewhere: {EXTERNAL_SOURCES[source]}",
            cost_note="not computed here: imported from a score file")
    return _EXTERNAL[name]


# Set-level aggregates: a score that is a function of a SET of candidates (AZ-NAS's and VKDNW_agg's log-rank sums,
# TE-NAS's rank sum), not of one network. Its members are per-cell proxies, cached like any; the aggregate is
# computed from them over the cells being ranked (proxybench.metrics.aggregate, applied by the runner's
# study_scores and by a search over the cells it has scored so far), so the same cell's value depends on the set.
AGGREGATIONS = {
    "log_rank": "the sum over members of log(rank / N), each member ranked ascending in its declared direction over "
                "the N cells of the set (ties averaged): AZ-NAS's and VKDNW_agg's aggregation",
    "rank_sum": "the sum over members of their ranks over the set (ties averaged): TE-NAS's combination",
    "rank_mean": "the mean over members of their ranks over the set (ties averaged)",
}
_AGGREGATES: dict[str, ProxyInfo] = {}


def _set_level(ctx, name: str = ""):
    raise RuntimeError(f"{name} is a set-level aggregate: it ranks a set of cells, not one network; its members are "
                       "computed per cell and combined over the set (proxybench.metrics.aggregate)")


def register_aggregate(name: str, *, members: tuple[str, ...], aggregation: str, paper: str, description: str,
                       version: int = 1, family: str = "zero-cost", default_study: bool = True) -> ProxyInfo:
    """Register a set-level aggregate of registered per-cell ``members`` (see AGGREGATIONS). Its record reads
    ``higher_is_better=True``, needs data when a member does, labels never (an aggregate stays label-free: a
    member that reads labels is refused), cost and tier of its costliest member."""
    if name in _REGISTRY or name in _AGGREGATES:
        raise ValueError(f"proxy {name!r} is already registered")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregate {name!r}: aggregation must be one of {', '.join(AGGREGATIONS)}")
    if len(members) < 1 or len(set(members)) != len(members):
        raise ValueError(f"aggregate {name!r}: members must be distinct registered proxies")
    infos = [get_proxy(m) for m in members]
    bad = [i.name for i in infos if i.needs_labels or i.members or i.external]
    if bad:
        raise ValueError(f"aggregate {name!r}: members must be label-free per-cell proxies of this suite: {bad}")
    order = list(COSTS)
    cost = max((i.cost for i in infos), key=order.index)
    tiers = list(TIERS)
    rec = ProxyInfo(name, partial(_set_level, name=name), True, family, any(i.needs_data for i in infos), False,
                    paper, version=version, cost=cost, description=description,
                    tier=max((i.tier for i in infos), key=tiers.index),
                    cost_note=f"set-level: its members' cost ({', '.join(members)}), then a ranking of the set",
                    members=tuple(members), aggregation=aggregation, default_study=default_study)
    _AGGREGATES[name] = rec
    return rec


def list_aggregates(pattern: str = "*") -> list[str]:
    """Names of the registered set-level aggregates matching a wildcard, sorted."""
    _ensure_loaded()
    return sorted(n for n in _AGGREGATES if fnmatch.fnmatchcase(n, pattern))


def get_proxy(name: str) -> ProxyInfo:
    """The record of a registered proxy, of a set-level aggregate (``register_aggregate``) or of an external name
    (``external_proxy``); UnknownProxyError with 'did you mean' otherwise."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        if name in _AGGREGATES:
            return _AGGREGATES[name]
        ext = external_proxy(name)
        if ext is not None:
            return ext
        raise UnknownProxyError(
            f"unknown proxy {name!r}{did_you_mean(name, [*_REGISTRY, *_AGGREGATES])}; "
            f"`proxybench ls proxies` lists the {len(_REGISTRY)} registered ones") from None


def list_proxies(pattern: str = "*", family: str | None = None) -> list[str]:
    """Names of registered proxies matching a shell-style wildcard (like timm's list_models), sorted."""
    _ensure_loaded()
    return sorted(n for n, p in _REGISTRY.items()
                  if fnmatch.fnmatchcase(n, pattern) and (family is None or p.family == family))


def per_cell(names) -> list[str]:
    """The per-cell proxies that ``names`` needs computed: each name, an aggregate replaced by its members (in
    order, no repeats); external names are kept (nothing computes them)."""
    out: list[str] = []
    for n in names:
        for m in (get_proxy(n).members or (n,)):
            if m not in out:
                out.append(m)
    return out


def training_free(variants: bool = False) -> list[str]:
    """Every registered proxy of the training-free families that the default study scores; ``variants=True``: with
    the variants kept to measure a cause (``default_study=False``), which only the studies naming them score."""
    return [n for n in list_proxies() if get_proxy(n).family in TRAINING_FREE
            and (variants or get_proxy(n).default_study)]


def of_tier(tier: str, among=None) -> list[str]:
    """The registered proxies of a cost tier (:data:`TIERS`): of ``among`` in its order, or of every registered
    proxy, sorted."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}{did_you_mean(tier, TIERS)}; tiers: {', '.join(TIERS)}")
    names = list_proxies() if among is None else list(among)
    return [n for n in names if get_proxy(n).tier == tier]


def applies_to(name: str, space: str) -> bool:
    """Whether ``name``'s definition applies to the networks of ``space`` (its record's ``spaces``; () = any)."""
    spaces = get_proxy(name).spaces
    return not spaces or space in spaces


def share_group(name: str) -> frozenset[str]:
    """The registered proxies that share per-cell work with ``name`` (itself included; its record's
    ``shares``), or an empty set when it shares none."""
    group = get_proxy(name).shares
    if not group:
        return frozenset()
    return frozenset(n for n in list_proxies() if _REGISTRY[n].shares == group)


def sharing() -> frozenset[str]:
    """Every registered proxy that shares per-cell work with others (a member of some share group)."""
    return frozenset(n for n in list_proxies() if _REGISTRY[n].shares)


def resolve_proxies(spec: str | list[str]) -> list[str]:
    """Expand a comma-separated list of names, wildcards and ``@family`` (or ``@training-free``) into
    registered names, in order, no repeats. ``naslib:*`` (a wildcard after an external source) names the external
    scores of every training-free proxy it matches (``external_proxy``)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[str] = []
    for item in items:
        if item.startswith("@"):
            fam = item[1:]
            if fam == "training-free":  # every training-free proxy and the aggregates built of them
                names = [*training_free(), *(a for a, r in sorted(_AGGREGATES.items())
                                              if r.family in TRAINING_FREE and r.default_study)]
            elif fam in FAMILIES:
                names = list_proxies(family=fam)
            else:
                hint = did_you_mean(fam, (*FAMILIES, "training-free"))
                raise UnknownProxyError(f"unknown proxy family {item!r}{hint}; families: {', '.join(FAMILIES)}, "
                                        "training-free")
            out.extend(n for n in names if n not in out)
            continue
        source, sep, base = item.partition(":")
        if sep and source in EXTERNAL_SOURCES and any(ch in base for ch in "*?["):  # naslib:* (training-free)
            names = [f"{source}:{n}" for n in list_proxies(base) if _REGISTRY[n].family in TRAINING_FREE]
        else:
            names = ([*list_proxies(item), *list_aggregates(item)] if any(ch in item for ch in "*?[")
                     else [get_proxy(item).name])
        if not names:
            raise UnknownProxyError(f"no proxy matches {item!r}; `proxybench ls proxies` lists them")
        out.extend(n for n in names if n not in out)
    return out
