"""The proxy registry: one decorator, one frozen record per proxy, listing with wildcards."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from datasets.errors import did_you_mean

FAMILIES = ("baseline", "zero-cost", "reduced-training", "self-supervised", "hardware")
# the families of the default study and of the golden regression study: no training, no timing
TRAINING_FREE = ("baseline", "zero-cost")
NAN_POLICIES = {
    "exclude": "non-finite scores are left out of the correlations and counted in the report",
    "rank_last": "non-finite scores (a degenerate network: e.g. an output that ignores the input) rank below "
                 "every finite score, tied among themselves; counted in the report",
}


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
    """

    name: str
    fn: Callable = field(repr=False, compare=False)
    higher_is_better: bool
    family: str
    needs_data: bool
    needs_labels: bool
    paper: str
    version: int = 1
    cost: str = "cheap"
    nan_policy: str = "exclude"
    description: str = ""
    needs_training_data: bool = False  # trains on ctx.train_data() (the task's training/held-out images)
    needs_table: bool = False  # reads the benchmark's own table row (ctx.table)
    deterministic: bool = True  # False for timings: two calls under one seed may differ (contract tests skip a == b)

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
                   paper: str, version: int = 1, cost: str = "cheap", nan_policy: str = "exclude",
                   description: str = "", needs_training_data: bool = False, needs_table: bool = False,
                   deterministic: bool = True, **bound):
    """Register ``fn(ctx, **bound) -> float`` under ``name``; ``bound`` makes variants of one function."""
    if family not in FAMILIES:
        raise ValueError(f"proxy {name!r}: family must be one of {FAMILIES}, got {family!r}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"proxy {name!r}: nan_policy must be one of {sorted(NAN_POLICIES)}")
    if needs_labels and not needs_data:
        raise ValueError(f"proxy {name!r}: a proxy that needs labels needs data too")
    if needs_training_data and not needs_labels:
        raise ValueError(f"proxy {name!r}: a proxy that trains on the task's images needs data and labels")

    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"proxy {name!r} is already registered (by {_REGISTRY[name].fn.__module__})")
        call = (lambda ctx: fn(ctx, **bound)) if bound else fn
        doc = description or (fn.__doc__ or "").strip().splitlines()[0] if (description or fn.__doc__) else ""
        _REGISTRY[name] = ProxyInfo(name, call, higher_is_better, family, needs_data, needs_labels, paper,
                                    version, cost, nan_policy, doc, needs_training_data, needs_table,
                                    deterministic=deterministic)
        return fn

    return deco


def _ensure_loaded() -> None:
    import proxies  # noqa: F401  (importing the package registers the built-in proxies)


def get_proxy(name: str) -> ProxyInfo:
    """The record of a registered proxy; UnknownProxyError with 'did you mean' otherwise."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownProxyError(
            f"unknown proxy {name!r}{did_you_mean(name, _REGISTRY)}; "
            f"`proxybench ls proxies` lists the {len(_REGISTRY)} registered ones") from None


def list_proxies(pattern: str = "*", family: str | None = None) -> list[str]:
    """Names of registered proxies matching a shell-style wildcard (like timm's list_models), sorted."""
    _ensure_loaded()
    return sorted(n for n, p in _REGISTRY.items()
                  if fnmatch.fnmatchcase(n, pattern) and (family is None or p.family == family))


def training_free() -> list[str]:
    """Every registered proxy of the training-free families (the default study)."""
    return [n for n in list_proxies() if get_proxy(n).family in TRAINING_FREE]


def resolve_proxies(spec: str | list[str]) -> list[str]:
    """Expand a comma-separated list of names, wildcards and ``@family`` (or ``@training-free``) into
    registered names, in order, no repeats."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[str] = []
    for item in items:
        if item.startswith("@"):
            fam = item[1:]
            if fam == "training-free":
                names = training_free()
            elif fam in FAMILIES:
                names = list_proxies(family=fam)
            else:
                hint = did_you_mean(fam, (*FAMILIES, "training-free"))
                raise UnknownProxyError(f"unknown proxy family {item!r}{hint}; families: {', '.join(FAMILIES)}, "
                                        "training-free")
            out.extend(n for n in names if n not in out)
            continue
        names = list_proxies(item) if any(ch in item for ch in "*?[") else [get_proxy(item).name]
        if not names:
            raise UnknownProxyError(f"no proxy matches {item!r}; `proxybench ls proxies` lists them")
        out.extend(n for n in names if n not in out)
    return out
