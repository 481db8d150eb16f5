"""The registry: metadata, wildcards, errors."""

from __future__ import annotations

import pytest

from proxybench import proxies
from proxybench.proxies import (
    COSTS,
    FAMILIES,
    SHARES,
    TIERS,
    UnknownProxyError,
    get_proxy,
    list_proxies,
    of_tier,
    register_proxy,
    resolve_proxies,
    share_group,
    sharing,
    training_free,
)
from proxybench.proxies.registry import NAN_POLICIES, TIER_OF_COST


def test_listing_with_wildcards():
    assert list_proxies("synflow*") == ["synflow", "synflow_bn"]
    assert "params" in list_proxies() and list_proxies() == sorted(list_proxies())
    assert list_proxies(family="baseline") == ["flops", "params"]
    assert list_proxies("no-such-*") == []


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownProxyError) as e:
        get_proxy("synflw")
    assert "did you mean 'synflow'" in str(e.value)


def test_resolve_expands_wildcards_in_order_without_repeats():
    assert resolve_proxies("params,synflow*,params") == ["params", "synflow", "synflow_bn"]
    with pytest.raises(UnknownProxyError):
        resolve_proxies("zzz*")


def test_duplicate_names_are_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_proxy("synflow", higher_is_better=True, family="zero-cost", needs_data=False,
                       needs_labels=False, paper="x")(lambda ctx: 0.0)


@pytest.mark.parametrize("kwargs,match", [
    ({"family": "magic"}, "family"),
    ({"nan_policy": "to_minus_1e8"}, "nan_policy"),
    ({"needs_labels": True, "needs_data": False}, "labels"),
    ({"cost": "one shared pass"}, "cost class"),  # free text is not a cost class (it goes to cost_note)
    ({"cost": "cheap"}, "cost class"),
    ({"tier": "expensive"}, "tier"),
    ({"tier": "trained"}, "training-free"),  # a zero-cost proxy does not train
    ({"shares": "gradient"}, "shares"),  # a typo of a share group
    ({"version": 0}, "version"),
])
def test_bad_records_are_refused(kwargs, match):
    base = dict(higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False, paper="x")
    with pytest.raises(ValueError, match=match):
        register_proxy("test_bad_record", **{**base, **kwargs})(lambda ctx: 0.0)


def test_a_refused_record_registers_nothing():
    with pytest.raises(ValueError):
        register_proxy("test_refused_record", higher_is_better=True, family="zero-cost", needs_data=False,
                       needs_labels=False, paper="x", cost="a few passes")(lambda ctx: 0.0)
    assert "test_refused_record" not in list_proxies()


@pytest.mark.parametrize("name", list_proxies())
def test_every_proxy_has_complete_metadata(name):
    p = get_proxy(name)
    assert p.family in FAMILIES and p.paper and p.description and p.version >= 1
    assert p.direction == ("↑" if p.higher_is_better else "↓")
    assert p.nan_policy in NAN_POLICIES
    assert p.cost in COSTS and p.tier in TIERS and (p.shares == "" or p.shares in SHARES)
    # the function itself (a variant's is under partial.func) is defined in a proxy module, not the registry:
    # worker processes register it by importing that module
    fn = getattr(p.fn, "func", p.fn)
    assert callable(fn) and fn.__module__.startswith("proxybench.proxies."), fn
    assert fn.__module__ != "proxybench.proxies.registry", fn


@pytest.mark.parametrize("name", training_free())
def test_training_free_proxies_sit_in_a_training_free_tier(name):
    p = get_proxy(name)
    assert p.cost != "training" and p.tier in ("cheap", "one-pass", "second-order")
    # a tier other than its cost class's is a measured exception, on a proxy of one image (or none)
    assert p.tier == TIER_OF_COST[p.cost] or (p.tier == "cheap" and not p.needs_data), name


def test_cost_tiers_of_the_committed_studies():
    # the NB101 section's tiers (proxybench.studies.nb101) are these registry records: the committed study
    free = training_free()
    assert set(of_tier("cheap", free)) == {"params", "flops", "synflow", "synflow_bn", "l2_norm", "meco_opt"}
    assert of_tier("second-order", free) == ["grasp"]
    assert set(of_tier("one-pass", free)) == set(free) - set(of_tier("cheap", free)) - {"grasp"}
    assert of_tier("cheap", ["params", "snip"]) == ["params"]
    with pytest.raises(ValueError, match="tier"):
        of_tier("costly")


def test_versions_are_declared_where_each_proxy_is_registered():
    # cached scores are keyed by version: these numbers must not move without rescoring
    from proxybench.proxies.gradient import NEEDS

    assert {n: get_proxy(n).version for n in NEEDS} == {
        "grad_norm": 1, "snip": 1, "plain": 1, "grasp": 3, "fisher": 1, "jacob_cov": 1, "epe_nas": 1, "nwot": 1}
    assert get_proxy("zen").version == 1


def test_a_share_group_has_one_memory_layout():
    # the group's pass is computed once, in the layout of whichever member asks first: every member must
    # declare the same one, or its numbers would depend on the order of the proxies
    groups: dict[str, set[str]] = {}
    for n in sharing():
        groups.setdefault(get_proxy(n).shares, set()).add(get_proxy(n).layout)
    assert all(len(v) == 1 for v in groups.values()), groups
    from proxybench.proxies.gradient import LAYOUT

    assert groups["gradient pass"] == {LAYOUT} and groups["network"] == {"nchw"}


def test_share_groups_are_the_shared_pass_and_the_shared_network():
    from proxybench.proxies.gradient import NEEDS, PASS

    # every proxy of the gradient module's pass, and only those, shares the pass (the module's parts agree)
    assert share_group("snip") == frozenset(NEEDS) and {get_proxy(n).shares for n in NEEDS} == {PASS}
    assert share_group("params") == {"params", "flops", "l2_norm"} == share_group("l2_norm")
    assert share_group("synflow") == frozenset() and share_group("eproxy") == frozenset()
    newer = {"az_nas pass": 3, "az_nas fp32 pass": 3, "az_nas real pass": 3, "gradsign pass": 2, "swap pass": 2,
             "vkdnw pass": 3}
    assert sharing() == frozenset(NEEDS) | {"params", "flops", "l2_norm"} | {
        n for n in list_proxies() if get_proxy(n).shares in newer}
    assert {g: sum(get_proxy(n).shares == g for n in list_proxies()) for g in newer} == newer
    # a group of one shares nothing: every declared group has at least two members
    assert all(len(share_group(n)) >= 2 for n in sharing())


@pytest.mark.parametrize("group", ["az_nas pass", "gradsign pass", "swap pass", "vkdnw pass"])
def test_a_newer_share_group_computes_its_pass_once_per_cell(group, monkeypatch):
    """The group's first member fills the cell's memo; the others read it and add no pass of their own."""
    import torch

    from proxybench.runner import make_context

    members = sorted(n for n in list_proxies() if get_proxy(n).shares == group)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(64, 3, 16, 16, generator=g), torch.randint(0, 120, (64,), generator=g))
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    ctx = make_context("nb201", "ImageNet16-120", arch, 0, batch, requested=members)
    builds = []
    build = ctx.build
    monkeypatch.setattr(ctx, "build", lambda *a, **k: builds.append(1) or build(*a, **k))
    get_proxy(members[0]).compute(ctx)
    keys, n_builds = set(ctx.memo), len(builds)
    assert keys and n_builds >= 1
    for name in members[1:]:
        get_proxy(name).compute(ctx)
    assert set(ctx.memo) == keys and len(builds) == n_builds


def test_package_exports():
    assert set(proxies.__all__) >= {"register_proxy", "get_proxy", "list_proxies", "ProxyContext"}
