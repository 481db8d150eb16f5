"""proxybench: how well does a NAS proxy rank architectures against their trained accuracy?

The package is the repository's three folders: ``bench/`` is ``proxybench`` (studies, the score cache,
statistics, reports: bench/README.md), ``proxies/`` is ``proxybench.proxies`` and ``datasets/`` is
``proxybench.datasets``. The names below are the library's entry points; they load on first use, so that
``import proxybench`` stays light::

    import proxybench
    scores = proxybench.score(model, images, labels)          # every training-free proxy that can run on it
    measures = proxybench.find_measures(net, loader, ("random", 1, 10), "cpu")   # zero-cost-nas's call
    proxybench.register_proxy(...), proxybench.list_proxies(), proxybench.Space, proxybench.register_space(...)
"""

_LAZY = {
    "score": "proxybench.api", "find_measures": "proxybench.api", "ProxyUnavailable": "proxybench.api",
    "register_proxy": "proxybench.proxies", "list_proxies": "proxybench.proxies", "get_proxy": "proxybench.proxies",
    "Space": "proxybench.datasets", "register_space": "proxybench.datasets", "get_space": "proxybench.datasets",
    "load_plugin": ("proxybench.plugins", "load_file"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        where = _LAZY[name]
        module, attr = where if isinstance(where, tuple) else (where, name)
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
