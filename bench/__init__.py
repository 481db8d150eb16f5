"""The benchmark: studies, the score cache, statistics, reports (bench/README.md).

``score`` and ``find_measures`` (:mod:`bench.api`, the library entry points) load on first use, so that
``import bench`` stays light."""

_LAZY = {"score": "bench.api", "find_measures": "bench.api", "ProxyUnavailable": "bench.api"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
