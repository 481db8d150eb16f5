"""The registry: metadata, wildcards, errors."""

from __future__ import annotations

import pytest

import proxies
from proxies import FAMILIES, UnknownProxyError, get_proxy, list_proxies, register_proxy, resolve_proxies


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
])
def test_bad_records_are_refused(kwargs, match):
    base = dict(higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False, paper="x")
    with pytest.raises(ValueError, match=match):
        register_proxy("test_bad_record", **{**base, **kwargs})(lambda ctx: 0.0)


@pytest.mark.parametrize("name", list_proxies())
def test_every_proxy_has_complete_metadata(name):
    p = get_proxy(name)
    assert p.family in FAMILIES and p.paper and p.description and p.version >= 1
    assert p.direction in ("↑", "↓")
    assert p.fn.__module__.startswith("proxies") or callable(p.fn)


def test_package_exports():
    assert set(proxies.__all__) >= {"register_proxy", "get_proxy", "list_proxies", "ProxyContext"}
