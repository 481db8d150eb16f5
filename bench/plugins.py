"""Plugins: a search space or a proxy defined outside the suite, loaded before a command runs.

A plugin is a Python file (``proxybench ... --plugin FILE``, repeatable) or a module of an installed package named
by an entry point of the group ``proxybench.plugins``. Importing it registers what it defines:
``proxybench.datasets.register_space(Space.from_table(...))`` (or any ``proxybench.datasets.Space``),
``proxybench.proxies.register_proxy(...)``. An
entry point that names a callable (``pkg.mod:setup``) has it called once after the import.

Worker processes see the same plugins: the files loaded are listed in the environment variable
``PROXYBENCH_PLUGINS`` (paths separated by ``os.pathsep``; set it yourself to load files without ``--plugin``),
which every worker gets (its environment is the driver's at pool start: ``proxybench.workers``), and each worker
loads them and the entry points once, before its first chunk
(``ensure_loaded``, called by ``proxybench.runner.score_job``). A plugin that fails to load is a :class:`PluginError`
naming it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

ENV_PLUGINS = "PROXYBENCH_PLUGINS"
ENTRY_POINT_GROUP = "proxybench.plugins"

_FILES: dict[str, ModuleType] = {}  # resolved path -> the module it was loaded as (a file is loaded once)
_ENTRY_POINTS: dict[str, object] = {}  # "name = value" -> what it loaded
_state = {"entry_points": False}


class PluginError(ValueError):
    """A plugin could not be found or loaded."""


def module_name(path: str | os.PathLike) -> str:
    """The name a plugin file is imported under: its stem and a digest of its absolute path, the same in every
    process (so that functions it defines pickle by reference, e.g. a space's builder)."""
    p = Path(path).resolve()
    stem = re.sub(r"\W", "_", p.stem)
    return f"proxybench_plugin_{stem}_{hashlib.sha256(str(p).encode()).hexdigest()[:8]}"


def _remember(path: Path) -> None:
    """List ``path`` in $PROXYBENCH_PLUGINS, so that worker processes started from now on load it too."""
    listed = [p for p in os.environ.get(ENV_PLUGINS, "").split(os.pathsep) if p]
    if str(path) not in listed:
        os.environ[ENV_PLUGINS] = os.pathsep.join([*listed, str(path)])


def load_file(path: str | os.PathLike) -> ModuleType:
    """Import a plugin file (once per process) and list it for the workers; PluginError when it is missing or
    raises."""
    p = Path(path).expanduser().resolve()
    if str(p) in _FILES:
        return _FILES[str(p)]
    if not p.is_file():
        raise PluginError(f"plugin file {path} does not exist (--plugin takes a Python file that registers spaces "
                          f"or proxies)")
    if p.suffix != ".py":
        raise PluginError(f"plugin {p} is not a Python file (.py)")
    name = module_name(p)
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {p} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise PluginError(f"plugin {p} failed to load: {type(e).__name__}: {e}") from e
    _FILES[str(p)] = module
    _remember(p)
    return module


def load_entry_points() -> list[str]:
    """Load every entry point of the group ``proxybench.plugins`` (once per process); returns their names."""
    if _state["entry_points"]:
        return [k.split(" = ")[0] for k in _ENTRY_POINTS]
    _state["entry_points"] = True
    names = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = f"{ep.name} = {ep.value}"
        if key in _ENTRY_POINTS:
            continue
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, ModuleType):
                obj()
        except Exception as e:
            dist = getattr(getattr(ep, "dist", None), "name", None)
            raise PluginError(f"plugin {ep.name!r} (entry point {ep.value!r} of group {ENTRY_POINT_GROUP}"
                              f"{f', package {dist}' if dist else ''}) failed to load: {type(e).__name__}: {e}") from e
        _ENTRY_POINTS[key] = obj
        names.append(ep.name)
    return names


def env_files() -> list[str]:
    """The plugin files listed in $PROXYBENCH_PLUGINS."""
    return [p for p in os.environ.get(ENV_PLUGINS, "").split(os.pathsep) if p]


def load(files=(), *, entry_points: bool = True) -> list[ModuleType]:
    """What a command loads before it runs: the installed entry points, the files of $PROXYBENCH_PLUGINS, then
    ``files`` (``--plugin``). Returns the modules of the files."""
    if entry_points:
        load_entry_points()
    return [load_file(f) for f in [*env_files(), *files]]


def ensure_loaded() -> None:
    """In a worker process: load the plugins of its driver (entry points and $PROXYBENCH_PLUGINS); each once."""
    load()


def loaded() -> dict:
    """What this process has loaded: ``{"files": [...], "entry_points": [...]}``."""
    return {"files": list(_FILES), "entry_points": list(_ENTRY_POINTS)}
