"""The proxy registry and the built-in proxies. Importing this package registers them all."""

from proxies import cost, zero_cost  # noqa: E402,F401  (registration side effects)
from proxies.context import LabelAccessError, ProxyContext
from proxies.registry import (
    FAMILIES,
    ProxyInfo,
    UnknownProxyError,
    get_proxy,
    list_proxies,
    register_proxy,
    resolve_proxies,
)

__all__ = ["FAMILIES", "LabelAccessError", "ProxyContext", "ProxyInfo", "UnknownProxyError", "get_proxy",
           "list_proxies", "register_proxy", "resolve_proxies"]
