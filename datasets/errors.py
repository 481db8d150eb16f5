"""Errors raised by the dataset layer: each one says what is wrong and what to do."""

from __future__ import annotations


class ProxybenchDataError(Exception):
    """Base class of every data error; the CLI prints its message without a traceback."""


class DataFileError(ProxybenchDataError):
    """A benchmark file is missing, corrupt, or in an unexpected format."""


class ArchError(ProxybenchDataError, ValueError):
    """An architecture key (arch string, index, spec) is malformed or out of range."""


class UnsafePickleError(DataFileError):
    """A pickle file asked to load a global outside the allow-list (it could execute code)."""


def did_you_mean(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest of ``choices``, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
