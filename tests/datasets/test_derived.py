"""Derived parquet caches (datasets.files.read_derived/write_derived): a broken or unwritable one is warned about
once, with its path, and the table is derived again; other errors are not swallowed."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from proxybench.datasets import files


def test_a_broken_derived_file_is_warned_once_and_reads_as_absent(tmp_path):
    p = tmp_path / "broken_derived.parquet"
    p.write_bytes(b"not parquet at all")
    with pytest.warns(files.DerivedCacheWarning, match="broken_derived.parquet") as rec:
        assert files.read_derived(p, pd.read_parquet) is None
    assert "rebuilt" in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per path
        assert files.read_derived(p, pd.read_parquet) is None
    assert files.read_derived(tmp_path / "absent.parquet", pd.read_parquet) is None  # absent: no warning


def test_a_good_derived_file_round_trips(tmp_path):
    df = pd.DataFrame({"arch": ["a", "b"], "acc": [1.0, 2.0]})
    p = tmp_path / "c" / "good.parquet"
    assert files.write_derived(df, p)
    pd.testing.assert_frame_equal(files.read_derived(p, pd.read_parquet), df)
    assert sorted(x.name for x in p.parent.iterdir()) == ["good.parquet"]  # no temporary left


def test_an_unwritable_cache_is_warned_once(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    df = pd.DataFrame({"x": [1]})
    with pytest.warns(files.DerivedCacheWarning, match="cannot write"):
        assert not files.write_derived(df, blocker / "t.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not files.write_derived(df, blocker / "t.parquet")


def test_a_bug_in_the_reader_is_not_swallowed(tmp_path):
    p = tmp_path / "x.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(p)

    def buggy(path):
        raise ZeroDivisionError("a bug, not a broken file")

    with pytest.raises(ZeroDivisionError):
        files.read_derived(p, buggy)
