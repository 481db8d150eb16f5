"""Unpickling of benchmark image files without letting the file run code.

The official CIFAR-10/100 and ImageNet16 files are python pickles.  A plain ``pickle.load`` executes
whatever callable the file names, so a tampered download could run arbitrary commands.  This module's
unpickler resolves only the handful of globals those files need to rebuild numpy arrays (and bytes, for
protocol-2 pickles written by Python 3); everything else is refused with :class:`UnsafePickleError`.
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path
from typing import Any

from proxybench.datasets import files
from proxybench.datasets.errors import DataFileError, UnsafePickleError

_REFUSAL_REASON = (
    "benchmark pickles contain only numpy arrays, lists and dicts; this file may be malicious"
)

# (module, name) as written in the pickle -> (module to import, attribute).  numpy 2 renamed
# ``numpy.core`` to ``numpy._core``; files written under either name must load under either numpy.
_NUMPY_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
}

# Python 3 writes ``bytes`` at protocol < 3 as ``_codecs.encode(text, "latin1")`` (``bytes()`` when
# empty): the re-pickled CIFAR copies in circulation, including the local mirror, are written that way.
_BYTES_GLOBALS = {("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes")}
_LATIN1_NAMES = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "iso8859_1", "l1"}

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(_NUMPY_GLOBALS) | frozenset(_BYTES_GLOBALS)


def _numpy_attr(where: str, name: str) -> Any:
    if where == "numpy":
        import numpy

        return getattr(numpy, name)
    # Only fixed module names from the table above reach import_module, never text from the file.
    for prefix in ("numpy._core.", "numpy.core."):
        try:
            module = importlib.import_module(prefix + where)
        except ImportError:
            continue
        return getattr(module, name)
    raise ImportError(f"numpy has no {where}.{name}")


class _RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose ``find_class`` resolves only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file, *, path: Path, encoding: str):
        super().__init__(file, encoding=encoding)
        self._path = path

    def _refuse(self, what: str) -> UnsafePickleError:
        return UnsafePickleError(f"refused to load {what} from {self._path}: {_REFUSAL_REASON}")

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _NUMPY_GLOBALS:
            return _numpy_attr(*_NUMPY_GLOBALS[key])
        if key == ("_codecs", "encode"):
            return self._latin1_encode
        if key in _BYTES_GLOBALS:
            return self._empty_bytes
        raise self._refuse(f"{module}.{name}")

    # The two bytes helpers accept only what pickle itself writes, so that even these builtins cannot be
    # driven with attacker-chosen arguments (codec lookups, huge allocations).
    def _latin1_encode(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(text, str) or encoding not in _LATIN1_NAMES or errors != "strict":
            raise self._refuse(f"_codecs.encode with arguments ({type(text).__name__}, {encoding!r})")
        return text.encode("latin1")

    def _empty_bytes(self, *args: Any) -> bytes:
        if args:
            raise self._refuse(f"bytes() with {len(args)} argument(s)")
        return b""

    def persistent_load(self, pid: Any) -> Any:
        raise self._refuse(f"persistent id {pid!r}")


def load(
    path: str | os.PathLike,
    *,
    key: str | None = None,
    data_dir: str | os.PathLike | None = None,
    encoding: str = "bytes",
) -> Any:
    """Unpickle a benchmark file, refusing every global outside :data:`ALLOWED_GLOBALS`.

    Parameters
    ----------
    path
        The pickle file.
    key
        Its catalogue key (``proxybench.datasets.files.CATALOGUE``); when given, a corrupt file's error says the
        expected format and where to get a good copy.
    data_dir
        Data directory the key is resolved against (only used for error messages).
    encoding
        How Python 2 ``str`` objects are decoded: ``"bytes"`` for CIFAR (keys come out as ``b'data'``),
        ``"latin1"`` for ImageNet16 (keys come out as ``'data'``).

    Raises
    ------
    UnsafePickleError
        The file names a global outside the allow-list (nothing from the file is executed).
    DataFileError
        The file is unreadable, truncated or not a pickle.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path=path, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # any failure while unpickling means the file is unusable
        problem = f"cannot unpickle it ({type(e).__name__}: {e})"
        if key is not None:
            raise files.corrupt(key, problem, data_dir) from e
        raise DataFileError(f"corrupt or unreadable pickle file {path}: {problem}") from e


__all__ = ["ALLOWED_GLOBALS", "load"]
