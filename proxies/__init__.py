"""The proxy registry and the built-in proxies.

Importing this package imports every module in ``proxies/`` (so a new file with a ``@register_proxy``
function is picked up by the CLI, the reports, the contract tests and worker processes without
touching any other file).
"""

if __name__ == "proxies":  # found as a top-level "proxies" (Python started in the checkout's root): never ours
    raise ImportError("this is proxybench's proxies/ folder, found because Python runs in the checkout's root: "
                      "import it as proxybench.proxies (a top-level copy would register every proxy a second time)")

import importlib
import pkgutil

from proxybench.proxies.context import LabelAccessError, ProxyContext
from proxybench.proxies.registry import (
    COSTS,
    FAMILIES,
    SHARES,
    TIERS,
    TRAINING_FREE,
    ProxyInfo,
    UnknownProxyError,
    UnsupportedNetwork,
    applies_to,
    get_proxy,
    list_aggregates,
    list_proxies,
    of_tier,
    per_cell,
    register_aggregate,
    register_proxy,
    resolve_proxies,
    share_group,
    sharing,
    training_free,
)

_INFRASTRUCTURE = {"context", "registry"}
for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _mod not in _INFRASTRUCTURE and not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["COSTS", "FAMILIES", "LabelAccessError", "ProxyContext", "ProxyInfo", "SHARES", "TIERS",
           "UnknownProxyError", "UnsupportedNetwork", "applies_to", "get_proxy", "list_aggregates", "list_proxies",
           "of_tier",
           "per_cell", "register_aggregate", "register_proxy", "resolve_proxies", "share_group", "sharing",
           "TRAINING_FREE", "training_free"]
