"""proxybench.store: atomic writes, the schema marker of every result store, old unmarked files, clear version
errors."""

from __future__ import annotations

import json
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from proxybench import store

KIND = store.Kind("toy-result", 1, "proxybench toy")
V2 = store.Kind("toy-result", 2, "proxybench toy")


def test_atomic_write_leaves_no_temporary_and_replaces_whole(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    store.atomic_write(p, "one")
    store.atomic_write(p, b"two")
    store.atomic_write(p, lambda tmp: tmp.write_text("three"))
    assert p.read_text() == "three"
    assert sorted(os.listdir(p.parent)) == ["a.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    p = tmp_path / "a.json"
    store.atomic_write(p, "old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.atomic_write(p, boom)
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["a.json"]


def test_json_round_trip_carries_the_marker_and_the_reader_strips_it(tmp_path):
    p = tmp_path / "r.json"
    assert store.write_json(p, {"b": 1, "a": [1, 2]}, KIND)
    raw = json.loads(p.read_text())
    assert raw[store.MARKER] == {"kind": "toy-result", "schema_version": 1}
    assert store.read_json(p, KIND) == {"b": 1, "a": [1, 2]}


def test_an_unchanged_rewrite_leaves_the_file_as_it_was(tmp_path):
    p = tmp_path / "r.json"
    store.write_json(p, {"n": 1, "written": "2026-01-01T00:00:00+00:00", "commit": "0123456789ab"}, KIND)
    before = (p.read_bytes(), p.stat().st_mtime_ns)
    # only provenance stamps differ: nothing is written
    assert not store.write_json(p, {"n": 1, "written": "2026-02-02T10:00:00+00:00", "commit": "ba9876543210"}, KIND)
    assert (p.read_bytes(), p.stat().st_mtime_ns) == before
    assert store.write_json(p, {"n": 2, "written": "2026-02-02T10:00:00+00:00", "commit": "ba9876543210"}, KIND)
    assert store.read_json(p, KIND)["n"] == 2


def test_an_old_unmarked_file_is_read_as_version_1_and_not_rewritten_when_unchanged(tmp_path):
    p = tmp_path / "committed.json"
    p.write_text(json.dumps({"tables": {"1": []}, "lut_version": 2}, indent=1))  # written before the marker
    before = p.read_bytes()
    assert store.read_json(p, KIND) == {"tables": {"1": []}, "lut_version": 2}
    assert not store.write_json(p, {"tables": {"1": []}, "lut_version": 2}, KIND)
    assert p.read_bytes() == before
    assert store.write_json(p, {"tables": {"1": [1]}, "lut_version": 2}, KIND)  # a change adopts the marker
    assert json.loads(p.read_text())[store.MARKER]["schema_version"] == 1


def test_a_newer_version_is_a_clear_error(tmp_path):
    p = tmp_path / "future.json"
    store.write_json(p, {"x": 1}, V2)
    with pytest.raises(store.StoreError) as e:
        store.read_json(p, KIND)
    msg = str(e.value)
    assert str(p) in msg and "schema version 2" in msg and "reads version 1" in msg and "newer" in msg
    assert "proxybench toy" in msg  # what to do: rerun the command that writes it


def test_an_older_version_is_migrated_or_refused(tmp_path):
    p = tmp_path / "old.json"
    p.write_text(json.dumps({"value": 3}))  # unmarked: version 1
    with pytest.raises(store.StoreError, match="older than the version 2"):
        store.read_json(p, V2)
    migrating = store.Kind("toy-result", 2, "proxybench toy", migrate=lambda obj, v: {"values": [obj["value"]]})
    assert store.read_json(p, migrating) == {"values": [3]}
    assert json.loads(p.read_text()) == {"value": 3}  # migrated when read, never rewritten


def test_a_file_of_another_kind_is_refused(tmp_path):
    p = tmp_path / "x.json"
    store.write_json(p, {"x": 1}, store.Kind("other-result", 1, "proxybench other"))
    with pytest.raises(store.StoreError, match="'other-result' store, not 'toy-result'"):
        store.read_json(p, KIND)


def test_json_keeps_each_stores_formatting(tmp_path):
    p = tmp_path / "s.json"
    store.write_json(p, {"b": 1, "a": 2}, KIND, sort_keys=True, newline=True)
    text = p.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"b": 1, "a": 2}, indent=1, sort_keys=True) + "\n")
    assert not store.write_json(legacy, {"b": 1, "a": 2}, KIND, sort_keys=True, newline=True)


def test_csv_marker_is_a_sidecar_and_an_unchanged_csv_is_not_rewritten(tmp_path):
    p = tmp_path / "t.csv"
    df = pd.DataFrame({"proxy": ["a", "b"], "rho": [0.5, 0.25]})
    assert store.write_csv(p, df, KIND)
    assert p.read_text() == df.to_csv(index=False)  # a plain table
    assert json.loads(store.sidecar(p).read_text())[store.MARKER] == KIND.marker()
    pd.testing.assert_frame_equal(store.read_csv(p, KIND), df)
    mtime = p.stat().st_mtime_ns
    assert not store.write_csv(p, df, KIND) and p.stat().st_mtime_ns == mtime
    old = tmp_path / "old.csv"  # a committed CSV from before the marker
    df.to_csv(old, index=False)
    pd.testing.assert_frame_equal(store.read_csv(old, KIND), df)
    assert not store.write_csv(old, df, KIND) and not store.sidecar(old).exists()
    store.write_csv(p, df, V2)
    with pytest.raises(store.StoreError, match="newer"):
        store.read_csv(p, KIND)


def test_parquet_marker_is_schema_metadata(tmp_path):
    p = tmp_path / "part.parquet"
    df = pd.DataFrame({"rep": [0, 1], "arch": [3, 4]})
    store.write_parquet(p, df, KIND, compression="zstd")
    assert json.loads(pq.read_schema(p).metadata[store.MARKER.encode()]) == KIND.marker()
    pd.testing.assert_frame_equal(store.read_parquet(p, KIND), df)
    pd.testing.assert_frame_equal(pd.read_parquet(p), df)  # still a plain parquet file
    unmarked = tmp_path / "old.parquet"
    df.to_parquet(unmarked, index=False)
    pd.testing.assert_frame_equal(store.read_parquet(unmarked, KIND), df)
    store.write_parquet(p, df, V2)
    with pytest.raises(store.StoreError, match="schema version 2"):
        store.read_parquet(p, KIND)


def test_write_text_ignores_only_stamps(tmp_path):
    p = tmp_path / "r.md"
    assert store.write_text(p, "rho +0.812 at commit 86a942af196f\n")
    assert not store.write_text(p, "rho +0.812 at commit 0123456789ab+dirty\n")
    assert store.write_text(p, "rho +0.813 at commit 0123456789ab\n")


def test_a_result_rederived_on_another_machine_keeps_its_provenance(tmp_path):
    path = tmp_path / "r.json"
    assert store.write_json(path, {"best": 1, "environment": {"cpu": "A"}}, KIND, keep=("environment",))
    before = path.read_text()
    # the same content from another CPU: not rewritten
    assert not store.write_json(path, {"best": 1, "environment": {"cpu": "B"}}, KIND, keep=("environment",))
    assert path.read_text() == before
    # without keep, or with other content, it is
    assert store.write_json(path, {"best": 2, "environment": {"cpu": "B"}}, KIND, keep=("environment",))
    assert store.read_json(path, KIND) == {"best": 2, "environment": {"cpu": "B"}}
    assert store.write_json(path, {"best": 2, "environment": {"cpu": "C"}}, KIND)
