"""The parquet score cache: round trip, newest-row dedupe, the directory contract, crashes, schema checks."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from proxybench.cache import COLUMNS, KEY_COLUMNS, SCHEMA, SCHEMA_VERSION, UNRECORDED_CPU, CacheError, ScoreCache

PUBLIC_COLUMNS = ["space", "task", "arch", "proxy", "proxy_version", "seed", "score", "seconds"]
ARCHS = [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
]


def row(arch: str = ARCHS[0], proxy: str = "params", score: float = 1.0, **over) -> dict:
    r = {
        "space": "nb201", "task": "cifar10", "arch": arch, "proxy": proxy, "proxy_version": 1, "seed": 42,
        "batch_size": 0, "data_source": "none", "init": "torch-default", "score": score, "status": "ok",
        "error": "", "seconds": 0.01, "substitute": False, "device": "cpu", "dtype": "float32",
        "torch_version": "2.x", "proxybench_version": "0.1.0", "git_commit": "abc1234",
    }
    r.update(over)
    return r


def rows(n_archs: int = 3, proxies=("params", "synflow"), score0: float = 0.0) -> list[dict]:
    return [row(a, p, score0 + 10 * i + j) for i, a in enumerate(ARCHS[:n_archs]) for j, p in enumerate(proxies)]


def test_empty_cache_loads_as_empty_frame_with_columns(tmp_path):
    cache = ScoreCache(tmp_path / "scores")
    df = cache.load()
    assert df.empty and list(df.columns) == COLUMNS
    assert cache.parts() == [] and cache.append([]) is None
    assert not (tmp_path / "scores").exists()  # created on first write only


def test_append_load_round_trip(tmp_path):
    cache = ScoreCache(tmp_path / "scores")
    written = rows()
    part = cache.append(written)
    assert part is not None and part.is_file() and part.parent == cache.path and part.suffix == ".parquet"
    df = cache.load()
    assert list(df.columns) == COLUMNS and len(df) == len(written)
    df = df.sort_values(["arch", "proxy"]).reset_index(drop=True)
    expected = pd.DataFrame(written).sort_values(["arch", "proxy"]).reset_index(drop=True)
    for c in expected.columns:
        assert df[c].tolist() == expected[c].tolist(), c
    assert (df["schema_version"] == SCHEMA_VERSION).all()
    assert df["timestamp"].str.match(r"\d{4}-\d\d-\d\dT").all()
    assert pq.read_schema(part).metadata[b"proxybench_schema"] == str(SCHEMA_VERSION).encode()


def test_duplicate_keys_resolve_by_content_whatever_the_clock_or_order(tmp_path):
    stamps = ["2024-01-02T00:00:00.000+00:00", "2023-12-31T00:00:00.000+00:00", "2999-01-01T00:00:00.000+00:00"]
    copies = [row(score=2.0, timestamp=stamps[0]), row(score=float("nan"), status="error", timestamp=stamps[2]),
              row(score=2.5, git_commit="abc1234+dirty", timestamp=stamps[1]),
              row(score=2.1, timestamp=stamps[1])]
    picked = set()
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        cache = ScoreCache(tmp_path / "".join(map(str, order)))
        for i in order:  # one part per copy, written in this order
            cache.append([copies[i], row(ARCHS[1], score=5.0)] if i == 0 else [copies[i]])
        df = cache.load()
        assert len(df) == 2 and not df.duplicated(KEY_COLUMNS).any()
        picked.add(float(df.set_index("arch").loc[ARCHS[0], "score"]))
        dup = cache.duplicates()
        assert len(dup) == 1 and int(dup["rows"].iloc[0]) == 4  # visible: one key stored four times
        assert dup["min"].iloc[0] == 2.0 and dup["max"].iloc[0] == 2.5  # ... with differing finished scores
    # ok before error, a clean commit before a dirty one, then the smaller score: 2.0, in every order
    assert picked == {2.0}
    # A different key column (another proxy or builder version) is another row, not a duplicate.
    cache.append([row(score=3.0, proxy_version=2), row(score=3.0, builder_version=2)])
    assert len(cache.load()) == 4


def test_a_schema_1_part_is_read_with_builder_version_1_and_an_unrecorded_cpu(tmp_path):
    v1 = [c for c in COLUMNS if c not in ("builder_version", "cpu", "shared_seconds")]
    table = pa.Table.from_pylist([{**{k: v for k, v in row().items() if k in v1}, "timestamp": "t",
                                   "schema_version": 1}], schema=pa.schema([SCHEMA.field(c) for c in v1]))
    pq.write_table(table.replace_schema_metadata({"proxybench_schema": "1"}), tmp_path / "part-old.parquet")
    before = (tmp_path / "part-old.parquet").read_bytes()
    df = ScoreCache(tmp_path).load()
    assert len(df) == 1 and df["builder_version"].iloc[0] == 1 and df["cpu"].iloc[0] == UNRECORDED_CPU
    assert (tmp_path / "part-old.parquet").read_bytes() == before  # migrated on read, never rewritten
    ScoreCache(tmp_path).append([row(ARCHS[1])])
    df = ScoreCache(tmp_path).load()
    assert len(df) == 2 and " kernels" in df.set_index("arch").loc[ARCHS[1], "cpu"]  # this process's CPU


def test_a_schema_2_part_is_read_with_unrecorded_shared_seconds(tmp_path):
    # before schema 3 a share group's first member paid for the shared pass: that split is unknown, NaN
    v2 = [c for c in COLUMNS if c != "shared_seconds"]
    table = pa.Table.from_pylist([{**{k: v for k, v in row().items() if k in v2}, "timestamp": "t",
                                   "schema_version": 2}], schema=pa.schema([SCHEMA.field(c) for c in v2]))
    pq.write_table(table.replace_schema_metadata({"proxybench_schema": "2"}), tmp_path / "part-old.parquet")
    ScoreCache(tmp_path).append([row(ARCHS[1], shared_seconds=0.0)])
    df = ScoreCache(tmp_path).load().set_index("arch")
    assert math.isnan(df.loc[ARCHS[0], "shared_seconds"]) and df.loc[ARCHS[1], "shared_seconds"] == 0.0


def test_pandas_reads_the_directory(tmp_path):
    cache = ScoreCache(tmp_path / "scores")
    cache.append(rows(2))
    cache.append(rows(1, proxies=("flops",)))
    df = pd.read_parquet(cache.path)
    assert set(PUBLIC_COLUMNS) <= set(df.columns)
    assert len(df) == 5
    assert sorted(df["proxy"]) == ["flops", "params", "params", "synflow", "synflow"]
    assert df["proxy_version"].dtype.kind == "i" and df["score"].dtype.kind == "f"


def test_a_leftover_temporary_file_is_ignored(tmp_path):
    cache = ScoreCache(tmp_path / "scores")
    cache.append(rows())
    # A crash mid-write leaves a hidden, truncated temporary file beside the complete parts.
    good = pa.Table.from_pylist([{**row(ARCHS[2], "flops"), "timestamp": "x", "schema_version": 1}],
                                schema=SCHEMA)
    tmp = cache.path / ".part-20240101T000000-deadbeef.parquet.tmp"
    pq.write_table(good, tmp)
    tmp.write_bytes(tmp.read_bytes()[:50])  # truncated: not readable as parquet
    assert cache.parts() == sorted(cache.path.glob("part-*.parquet")) and len(cache.parts()) == 1
    assert len(cache.load()) == 6
    assert len(pd.read_parquet(cache.path)) == 6
    # The same holds after compaction, which must not trip over it either.
    cache.append(rows(1, ("flops",)))
    cache.compact()
    assert len(cache.load()) == 7 and len(pd.read_parquet(cache.path)) == 7


def test_a_truncated_part_is_a_clear_error(tmp_path):
    cache = ScoreCache(tmp_path)
    part = cache.append(rows())
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(CacheError, match="unreadable cache part"):
        cache.load()


def test_compact_merges_parts_without_losing_rows(tmp_path):
    cache = ScoreCache(tmp_path / "scores")
    for i, a in enumerate(ARCHS):
        cache.append([row(a, "params", float(i)), row(a, "synflow", float(10 + i))])
    cache.append([row(ARCHS[0], "params", -99.0, timestamp="2999-01-01T00:00:00.000+00:00")])  # smaller score wins
    assert len(cache.parts()) == 4
    before = cache.load()
    merged = cache.compact()
    assert cache.parts() == [merged]
    after = cache.load()
    assert len(after) == 6 and len(pd.read_parquet(cache.path)) == 6
    key = ["arch", "proxy"]
    pd.testing.assert_frame_equal(before.sort_values(key).reset_index(drop=True),
                                  after.sort_values(key).reset_index(drop=True))
    assert after.set_index(key).loc[(ARCHS[0], "params"), "score"] == -99.0
    # Compacting a compact cache is a no-op, and appending after it still works.
    assert cache.compact() == merged
    cache.append([row(ARCHS[1], "flops", 7.0)])
    assert len(cache.load()) == 7


def test_a_part_of_another_schema_version_is_refused(tmp_path):
    cache = ScoreCache(tmp_path)
    cache.append(rows())
    table = pa.Table.from_pylist([{**row(), "timestamp": "t", "schema_version": 99}], schema=SCHEMA)
    pq.write_table(table.replace_schema_metadata({"proxybench_schema": "99"}), tmp_path / "part-future.parquet")
    with pytest.raises(CacheError, match="schema version 99") as e:
        cache.load()
    assert "newer" in str(e.value) and str(SCHEMA_VERSION) in str(e.value)


def test_a_part_without_schema_metadata_is_refused(tmp_path):
    cache = ScoreCache(tmp_path)
    pd.DataFrame([row()]).to_parquet(tmp_path / "part-foreign.parquet")
    with pytest.raises(CacheError, match="schema version 0"):
        cache.load()


def test_a_part_missing_columns_is_refused(tmp_path):
    cache = ScoreCache(tmp_path)
    table = pa.table({"space": ["nb201"]}).replace_schema_metadata({"proxybench_schema": str(SCHEMA_VERSION)})
    pq.write_table(table, tmp_path / "part-x.parquet")
    with pytest.raises(CacheError, match="lacks columns"):
        cache.load()


def test_a_file_path_is_refused(tmp_path):
    f = tmp_path / "scores.parquet"
    f.write_bytes(b"not a directory")
    with pytest.raises(CacheError, match="is a file"):
        ScoreCache(f)


def test_prune_stale_drops_only_rows_of_another_version(tmp_path):
    cache = ScoreCache(tmp_path / "scores")
    cache.append([row(a, "grasp", 1.0, proxy_version=1) for a in ARCHS])
    cache.append([row(ARCHS[0], "grasp", 2.0, proxy_version=2), row(ARCHS[0], "params", 3.0),
                  row(ARCHS[1], "retired", 4.0)])
    assert cache.prune_stale({"grasp": 2, "params": 1}) == 3  # the three grasp v1 rows
    left = cache.load().set_index(["arch", "proxy"])
    assert len(left) == 3 and len(cache.parts()) == 1
    assert left.loc[(ARCHS[0], "grasp"), "score"] == 2.0
    assert (ARCHS[1], "retired") in left.index  # a proxy not registered any more is left alone
    assert cache.prune_stale({"grasp": 2, "params": 1}) == 0


def test_the_row_constructor_fills_every_column_of_the_schema(tmp_path):
    from proxybench import cache as C

    kw = dict(space="nb201", task="cifar10", arch=ARCHS[0], proxy="params", proxy_version=1, seed=42,
              init="torch-default", score=1.5, seconds=0.01)
    r = C.row(**kw)
    assert list(r) + list(C.STAMP_COLUMNS) == COLUMNS  # exactly the schema's columns, in its order
    assert r["status"] == "ok" and r["builder_version"] == 1 and r["cpu"] and r["git_commit"]
    assert C.row(**{**kw, "score": float("nan")})["status"] == "nonfinite"
    assert C.row(**{**kw, "score": float("nan"), "error": "ValueError: x"})["status"] == "error"
    cache = ScoreCache(tmp_path)
    cache.append([r])
    back = cache.load().iloc[0]
    assert {c: back[c] for c in r} == r and back["schema_version"] == SCHEMA_VERSION


def test_where_filters_key_columns_and_settings_keeping_columns():
    from proxybench.cache import where

    df = pd.DataFrame([row(a, p, float(i)) for i, (a, p) in enumerate(
        [(ARCHS[0], "params"), (ARCHS[1], "params"), (ARCHS[0], "synflow")])] + [
        row(ARCHS[2], "params", status="error")])
    assert list(where(df, proxy="params")["arch"]) == [ARCHS[0], ARCHS[1], ARCHS[2]]
    assert list(where(df, proxy="params", ok_only=True)["arch"]) == [ARCHS[0], ARCHS[1]]
    assert list(where(df, arch={ARCHS[0]}, proxy=None)["proxy"]) == ["params", "synflow"]
    keep = {("cifar10", "synflow", 1, 0, "none")}
    assert list(where(df, settings=keep)["proxy"]) == ["synflow"]
    empty = where(df, proxy="absent", settings=keep)
    assert empty.empty and list(empty.columns) == list(df.columns)


def test_measurement_rows_encode_their_run_in_the_data_source():
    from proxybench.cache import measurement_runs, measurement_source

    assert measurement_source(1) == "zeros;run=1"
    runs = measurement_runs(pd.Series(["zeros;run=0", "zeros;run=12", "cifar10-train", "none"]))
    assert runs.iloc[:2].tolist() == [0, 12] and runs.iloc[2:].isna().all()


def test_a_second_load_of_an_unchanged_cache_is_the_memo_and_any_change_of_the_directory_rereads(tmp_path,
                                                                                              monkeypatch):
    from proxybench import cache as cache_mod

    cache = ScoreCache(tmp_path / "scores")
    part = cache.append(rows(proxies=("params",)))
    first = cache.load()
    reads = []
    original = cache_mod.ScoreCache._read
    monkeypatch.setattr(cache_mod.ScoreCache, "_read", lambda self, parts: reads.append(1) or original(self, parts))
    first["score"] = -1.0  # a caller changing its frame changes nobody else's
    again = ScoreCache(tmp_path / "scores").load()  # another instance of the same directory: the memo
    assert reads == [] and (again["score"] != -1.0).all() and len(again) == 3
    cache.append([row(ARCHS[0], "synflow", 5.0)])  # a new part
    assert len(cache.load()) == 4 and reads == [1]
    table = pq.read_table(part).to_pandas()
    table["score"] = 99.0  # a part replaced in place (not something the suite does): new content, new inode
    tmp = part.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pandas(table, schema=pq.read_schema(part), preserve_index=False), tmp)
    tmp.replace(part)
    assert (cache.load().query("proxy == 'params'")["score"] == 99.0).all() and reads == [1, 1]
    part.unlink()  # a removed part
    assert len(cache.load()) == 1 and len(reads) == 3
