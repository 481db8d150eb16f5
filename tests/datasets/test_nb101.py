"""NB101 specs, module hashes, readers (JSON mirror, official tfrecord) and the network builder.

Published figures used here:
- NNI's NAS-Bench-101 example (docs/en_US/NAS/BenchmarksExample.ipynb) lists the cell below with module
  hash 00005c142e6f48ac74fdcf73e3439874 and 8.55553 M parameters;
- the official NASBench colab (google-research/nasbench, NASBench.ipynb) queries the README's
  Inception-like cell and gets back an isomorphic stored cell with trainable_parameters 2694282.
"""

from __future__ import annotations

import base64
import itertools
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from torch import nn

from proxybench.datasets import files, get_space, nb101
from proxybench.datasets.errors import ArchError, DataFileError

DATA = files.REPO_ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / nb101.MIRROR_KEY).is_file(), reason="benchmark data absent")

C3, C1, MP = nb101.CONV3X3, nb101.CONV1X1, nb101.MAXPOOL3X3
NNI_MATRIX = [[0, 1, 0, 0, 1, 1, 0],
              [0, 0, 1, 0, 0, 0, 0],
              [0, 0, 0, 1, 0, 0, 1],
              [0, 0, 0, 0, 0, 1, 0],
              [0, 0, 0, 0, 0, 1, 0],
              [0, 0, 0, 0, 0, 0, 1],
              [0, 0, 0, 0, 0, 0, 0]]
NNI_OPS = ["input", C3, MP, C3, C3, C1, "output"]
NNI_HASH = "00005c142e6f48ac74fdcf73e3439874"
NNI_PARAMS = 8_555_530
# The README's query cell and the stored cell the official API answered with (isomorphic).
README_MATRIX = [[0, 1, 1, 1, 0, 1, 0],
                 [0, 0, 0, 0, 0, 0, 1],
                 [0, 0, 0, 0, 0, 0, 1],
                 [0, 0, 0, 0, 1, 0, 0],
                 [0, 0, 0, 0, 0, 0, 1],
                 [0, 0, 0, 0, 0, 0, 1],
                 [0, 0, 0, 0, 0, 0, 0]]
README_OPS = ["input", C1, C3, C3, C3, MP, "output"]
STORED_MATRIX = [[0, 1, 1, 1, 1, 0, 0],
                 [0, 0, 0, 0, 0, 0, 1],
                 [0, 0, 0, 0, 0, 0, 1],
                 [0, 0, 0, 0, 0, 0, 1],
                 [0, 0, 0, 0, 0, 1, 0],
                 [0, 0, 0, 0, 0, 0, 1],
                 [0, 0, 0, 0, 0, 0, 0]]
STORED_OPS = ["input", C3, C1, MP, C3, C3, "output"]
README_PARAMS = 2_694_282

CHAIN3 = [[0, 1, 0], [0, 0, 1], [0, 0, 0]]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Derived tables go to a per-test cache dir, never the checkout's ``.cache``."""
    monkeypatch.setenv(files.ENV_CACHE_DIR, str(tmp_path / "cache"))


def chain(n):
    return [[1 if j == i + 1 else 0 for j in range(n)] for i in range(n)]


# ------------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("matrix, ops, message", [
    ([[0, 1, 0], [0, 0, 1]], ["input", C3, "output"], "must be square, got 2x3"),
    ([[[0]]], ["input"], "2-D"),
    ([[0]], ["input"], "at least an input and an output"),
    ([[0, 2, 0], [0, 0, 1], [0, 0, 0]], ["input", C3, "output"], "must be 0 or 1, found 2 at row 0, column 1"),
    (CHAIN3, ["input", "output"], "2 ops for a 3x3 adjacency"),
    ([[0, 1, 0], [0, 0, 1], [0, 1, 0]], ["input", C3, "output"], "strictly upper-triangular"),
    ([[1, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", C3, "output"], "found edge 0->0"),
    (CHAIN3, [C3, C3, "output"], "first NB101 op must be 'input'"),
    (CHAIN3, ["input", C3, C3], "last NB101 op must be 'output'"),
    (CHAIN3, ["input", "conv5x5-bn-relu", "output"], "unknown NB101 op 'conv5x5-bn-relu' at vertex 1"),
    (CHAIN3, ["input", "conv3x3", "output"], "did you mean"),
    (CHAIN3, ["input", "output", "output"], "only at the first/last vertex"),
    ([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", C3, "output"], "disconnected"),
    (chain(9), ["input"] + [C3] * 7 + ["output"], "too many vertices after pruning: 9 > 7"),
    ([[0, 1, 1, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0],
      [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0] * 7], ["input"] + [C3] * 5 + ["output"],
     "too many edges after pruning: 10 > 9"),
])
def test_invalid_specs_say_which_rule_failed(matrix, ops, message):
    with pytest.raises(ArchError) as e:
        nb101.make_spec(matrix, ops)
    assert message in str(e.value)


def test_limits_apply_after_pruning_as_in_the_official_api():
    # 8 vertices, one of them isolated: valid once pruned to 7
    m = chain(8)
    m[5][6] = m[6][7] = 0
    m[5][7] = 1
    spec = nb101.make_spec(m, ["input"] + [C3] * 6 + ["output"])
    assert spec.num_vertices == 7 and spec.num_edges == 6 and spec.ops[-1] == "output"


# --------------------------------------------------------------------------------------------- pruning

def test_pruning_drops_dangling_and_unreachable_vertices():
    # vertex 1 has no path to the output, vertex 2 is not reachable from the input
    m = [[0, 1, 0, 1, 0],
         [0, 0, 0, 0, 0],
         [0, 0, 0, 1, 0],
         [0, 0, 0, 0, 1],
         [0, 0, 0, 0, 0]]
    spec = nb101.make_spec(m, ["input", C1, MP, C3, "output"])
    assert spec.matrix == ((0, 1, 0), (0, 0, 1), (0, 0, 0))
    assert spec.ops == ("input", C3, "output")
    assert nb101.module_hash(m, ["input", C1, MP, C3, "output"]) == nb101.module_hash(CHAIN3, ["input", C3, "output"])
    assert nb101.prune([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", C3, "output"]) is None


def test_input_straight_to_output_is_a_valid_two_vertex_cell():
    spec = nb101.make_spec([[0, 1, 1], [0, 0, 0], [0, 0, 0]], ["input", C3, "output"])
    assert spec.ops == ("input", "output") and spec.matrix == ((0, 1), (0, 0))


# ---------------------------------------------------------------------------------------------- hashes

def test_hash_matches_the_published_nni_example():
    assert nb101.module_hash(NNI_MATRIX, NNI_OPS) == NNI_HASH


def test_hash_is_invariant_under_interior_vertex_permutations():
    base = nb101.module_hash(NNI_MATRIX, NNI_OPS)
    a = np.array(NNI_MATRIX)
    valid = 0
    for perm in itertools.permutations(range(1, 6)):
        order = [0, *perm, 6]  # new vertex i is old vertex order[i]
        pm = a[np.ix_(order, order)]
        if np.any(np.tril(pm)):
            continue  # not a topological numbering: not a valid spec, but the graph hash must still agree
        valid += 1
        assert nb101.module_hash(pm, [NNI_OPS[i] for i in order]) == base
    assert valid >= 2
    rng = np.random.default_rng(0)
    labels = [-1, 0, 2, 0, 0, 1, -2]
    ref = nb101.hash_graph(a, labels)
    assert ref == base
    for _ in range(20):
        order = rng.permutation(7)
        assert nb101.hash_graph(a[np.ix_(order, order)], [labels[i] for i in order]) == ref


def test_official_readme_cell_and_its_stored_form_share_a_hash():
    assert nb101.module_hash(README_MATRIX, README_OPS) == nb101.module_hash(STORED_MATRIX, STORED_OPS)


def test_different_cells_hash_differently():
    base = nb101.module_hash(NNI_MATRIX, NNI_OPS)
    other_op = list(NNI_OPS)
    other_op[5] = C3
    assert nb101.module_hash(NNI_MATRIX, other_op) != base
    other_edge = [row[:] for row in NNI_MATRIX]
    other_edge[2][6] = 0
    other_edge[1][6] = 1
    assert nb101.module_hash(other_edge, NNI_OPS) != base
    # non-isomorphic pairs the official tests single out (need self hash / edge direction / in-neighbours)
    line = chain(5)
    assert nb101.hash_graph(line, [-1, 1, 0, 0, -2]) != nb101.hash_graph(line, [-1, 0, 0, 1, -2])
    m4 = [[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    assert nb101.hash_graph(m4, [-1, 1, 0, -2]) != nb101.hash_graph(m4, [-1, 0, 1, -2])


def test_spec_forms_and_canonical_keys():
    spec = nb101.make_spec(NNI_MATRIX, NNI_OPS)
    for form in (spec, (NNI_MATRIX, NNI_OPS), {"module_adjacency": NNI_MATRIX, "module_operations": NNI_OPS},
                 json.dumps([NNI_MATRIX, NNI_OPS]), spec.compact()):
        assert nb101.parse_spec(form) == spec
        assert nb101.canonical(form) == NNI_HASH
    assert nb101.spec_of(NNI_HASH) == spec  # known from canonicalising it above
    for bad in ("011|input,output", "not a cell", 42, {"matrix": CHAIN3}):
        with pytest.raises(ArchError):
            nb101.parse_spec(bad)


# ---------------------------------------------------------------------------------------------- readers

@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    """A data dir with a 3-cell mirror JSON (the published cells), and a private cache dir."""
    root = tmp_path / "data"
    (root / "nb101").mkdir(parents=True)
    cells = [[[NNI_MATRIX, NNI_OPS], 0.9206],
             [[README_MATRIX, README_OPS], 0.931],
             [[CHAIN3, ["input", C1, "output"]], 0.5]]
    (root / nb101.MIRROR_KEY).write_text(json.dumps(cells))
    monkeypatch.setenv(files.ENV_DATA_DIR, str(root))
    return root


def test_mirror_reader_and_space_on_a_tiny_file(tiny_data):
    df = nb101.read_mirror_json(tiny_data)
    assert list(df.columns) == ["arch", "matrix", "ops", "test_acc"]
    assert df["arch"].iloc[0] == NNI_HASH and df["test_acc"].iloc[0] == pytest.approx(92.06)
    assert "test_acc" in df.attrs["column_notes"]
    space = get_space("nb101")
    assert isinstance(space, nb101.NB101Space) and space.default_truth == "test_acc"
    assert space.all_archs() == df["arch"].tolist()
    truth = space.truth("cifar10")
    assert list(truth.columns) == ["arch", "task", "test_acc"] and (truth["task"] == "cifar10").all()
    assert nb101.truth_source_id() == "mirror-2500"
    assert space.canonical(NNI_HASH.upper()) == NNI_HASH
    with pytest.raises(ArchError, match="not in the mirror-2500 table"):
        space.canonical("0" * 32)
    with pytest.raises(ArchError, match="unknown task"):
        space.truth("cifar100")


def test_corrupt_mirror_json_is_a_data_file_error(tiny_data):
    (tiny_data / nb101.MIRROR_KEY).write_text('[[[[0, 1], [0, 0]], "x"]]')
    with pytest.raises(DataFileError, match="nasbench1_2500.json"):
        nb101.read_mirror_json(tiny_data)
    (tiny_data / nb101.MIRROR_KEY).write_text(json.dumps([[[[[0, 0], [0, 0]], ["input", "output"]], 0.1]]))
    with pytest.raises(DataFileError, match="entry 0 is not a valid NB101 cell"):
        nb101.read_mirror_json(tiny_data)


@needs_data
def test_mirror_reader_on_the_real_file():
    df = nb101.read_mirror_json(DATA)
    assert len(df) == 2500 and df["arch"].is_unique
    assert df["test_acc"].between(0, 100).all() and df["test_acc"].max() == pytest.approx(94.0204, abs=1e-3)
    for row in df.sample(20, random_state=0).itertuples():
        spec = nb101.parse_spec(f"{row.matrix}|{row.ops}")
        assert spec.hash() == row.arch
    im = nb101.read_imagenet_json(DATA)
    assert len(im) == 500 and im["imagenet_top1"].between(0, 100).all()


# --------------------------------------------------------------------------------------------- tfrecord

def test_crc32c_known_vectors():
    assert nb101.crc32c(b"123456789") == 0xE3069283
    assert nb101.crc32c(bytes(32)) == 0x8A9136AA
    assert nb101.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert nb101.crc32c(b"6789", nb101.crc32c(b"12345")) == 0xE3069283


def _varint(v):
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(num, wire, payload):
    key = _varint(num << 3 | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def _double(num, x):
    return _field(num, 1, struct.pack("<d", x))


def _metrics(params, evals, total_time=1.0):
    """ModelMetrics encoded with field numbers of nasbench/lib/model_metrics.proto."""
    out = b""
    for ev in evals:
        sub = b"".join(_double(i + 1, x) for i, x in enumerate(ev)) + _field(6, 2, b"/ckpt/model.ckpt-1")
        out += _field(1, 2, sub)
    return out + _field(2, 0, _varint(params)) + _double(3, total_time)


def _record(payload):
    length = struct.pack("<Q", len(payload))
    return (length + struct.pack("<I", nb101.masked_crc32c(length)) + payload
            + struct.pack("<I", nb101.masked_crc32c(payload)))


def _payload(h, epochs, matrix, ops, metrics):
    flat = "".join(str(v) for row in matrix for v in row)
    return json.dumps([h, epochs, flat, ",".join(ops), base64.b64encode(metrics).decode()]).encode()


def _write_tfrecord(path, stored_hash_for_chain=None):
    chain_ops = ["input", C1, "output"]
    cells = [(NNI_HASH, NNI_MATRIX, NNI_OPS, NNI_PARAMS),
             (stored_hash_for_chain or nb101.module_hash(CHAIN3, chain_ops), CHAIN3, chain_ops, 1234)]
    blob = b""
    for r in range(3):
        for k, (h, m, o, p) in enumerate(cells):
            evals = [(0.0, 0.0, 0.1, 0.1, 0.1), (54.0, 50.0 + r, 0.8, 0.7, 0.7),
                     (108.0, 100.0 + r, 1.0, 0.90 + 0.01 * r + k * 0.001, 0.91 + 0.01 * r)]
            blob += _record(_payload(h, 108, m, o, _metrics(p, evals)))
    blob += _record(_payload(NNI_HASH, 4, NNI_MATRIX, NNI_OPS, _metrics(NNI_PARAMS, [(0.0,) * 5, (4.0,) * 5])))
    path.write_bytes(blob)
    return blob


def test_tfrecord_round_trip(tmp_path):
    src = tmp_path / "nasbench_only108.tfrecord"
    _write_tfrecord(src)
    payloads = list(nb101.iter_tfrecord(src))
    assert len(payloads) == 7
    rec = nb101.parse_record(payloads[0])
    assert rec["module_hash"] == NNI_HASH and rec["epochs"] == 108
    m = rec["metrics"]
    assert m["trainable_parameters"] == NNI_PARAMS and m["total_time"] == 1.0
    assert [e["current_epoch"] for e in m["evaluation_data"]] == [0.0, 54.0, 108.0]
    assert m["evaluation_data"][2]["checkpoint_path"] == "/ckpt/model.ckpt-1"

    df = nb101.convert_tfrecord(src, tmp_path / "out.parquet")
    assert (tmp_path / "out.parquet").is_file() and len(df) == 2  # the 4-epoch record is skipped
    row = df.set_index("arch").loc[NNI_HASH]
    assert row["trainable_parameters"] == NNI_PARAMS and row["params"] == pytest.approx(8.55553)
    assert row["n_repeats"] == 3 and row["ops"] == ",".join(NNI_OPS)
    assert [row[f"val_acc_{r}"] for r in (1, 2, 3)] == pytest.approx([90.0, 91.0, 92.0])
    assert row["test_acc"] == pytest.approx(92.0) and row["val_acc"] == pytest.approx(91.0)
    assert row["train_time"] == pytest.approx(101.0) and row["train_acc"] == pytest.approx(100.0)


def test_space_prefers_the_official_tfrecord(tiny_data):
    _write_tfrecord(tiny_data / nb101.TFRECORD_KEY)
    assert nb101.truth_source_id() == "official-tfrecord"
    space = get_space("nb101")
    assert space.all_archs() == sorted(space.all_archs()) and NNI_HASH in space.all_archs()
    truth = space.truth("cifar10")
    assert {"arch", "task", "test_acc", "val_acc", "params"} <= set(truth.columns)
    cached = list((files.resolve_cache_dir()).glob("nb101_only108_*.parquet"))
    assert len(cached) == 1  # converted once


@pytest.mark.parametrize("where, message", [(-3, "payload CRC mismatch"), (9, "length CRC mismatch"),
                                             ("cut", "truncated")])
def test_corrupt_tfrecord_is_a_data_file_error(tmp_path, where, message):
    src = tmp_path / "bad.tfrecord"
    blob = bytearray(_write_tfrecord(src))
    if where == "cut":
        blob = blob[:-7]
    else:
        blob[where] ^= 0x01
    src.write_bytes(bytes(blob))
    with pytest.raises(DataFileError, match=message):
        nb101.convert_tfrecord(src)


def test_tfrecord_with_a_wrong_module_hash_is_rejected(tmp_path):
    src = tmp_path / "wrong.tfrecord"
    _write_tfrecord(src, stored_hash_for_chain="f" * 32)
    with pytest.raises(DataFileError, match="hashes to"):
        nb101.convert_tfrecord(src)


def test_protobuf_decoder_rejects_garbage():
    with pytest.raises(nb101.ProtobufError):
        nb101.decode_model_metrics(b"\x0a\x05ab")  # length-delimited field longer than the message
    assert nb101.decode_protobuf(_field(2, 0, _varint(-5)))[2] == [(1 << 64) - 5]
    assert nb101.decode_model_metrics(_field(2, 0, _varint(-5)))["trainable_parameters"] == -5


# ---------------------------------------------------------------------------------------------- network

def test_builder_is_picklable_and_matches_published_parameter_counts(tiny_data):
    space = get_space("nb101")
    for matrix, ops, official in ((NNI_MATRIX, NNI_OPS, NNI_PARAMS), (STORED_MATRIX, STORED_OPS, README_PARAMS)):
        build = pickle.loads(pickle.dumps(space.builder(space.canonical((matrix, ops)), "cifar10")))
        net = build()
        assert isinstance(net, nn.Module)
        assert nb101.count_params(net) == official
        assert nb101.count_params(build()) == official  # deterministic
    no_bn = build(bn=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())
    assert 0 < nb101.count_params(no_bn) < README_PARAMS


def test_small_network_forward_gives_every_parameter_a_gradient():
    torch.manual_seed(0)
    net = nb101.build_network(NNI_MATRIX, NNI_OPS, stem_channels=8, num_stacks=1, modules_per_stack=1)
    torch.manual_seed(0)
    again = nb101.build_network(NNI_MATRIX, NNI_OPS, stem_channels=8, num_stacks=1, modules_per_stack=1)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values(),
                                                  strict=True))
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_batchnorm_momentum_and_init_choices():
    small = {"stem_channels": 8, "num_stacks": 1, "modules_per_stack": 1}
    torch.manual_seed(0)
    net = nb101.build_network(NNI_MATRIX, NNI_OPS, **small)
    assert {m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}
    counts = set()
    for init in nb101.INITS:
        torch.manual_seed(0)
        other = nb101.build_network(NNI_MATRIX, NNI_OPS, init=init, **small)
        counts.add(nb101.count_params(other))
        same = all(torch.equal(a, b) for a, b in zip(net.parameters(), other.parameters(), strict=True))
        assert same == (init == "package")
    assert counts == {nb101.count_params(net)}
    with pytest.raises(ValueError, match="unknown NB101 init"):
        nb101.build_network(NNI_MATRIX, NNI_OPS, init="xavier", **small)


def test_import_nb101_command_converts_once_and_the_space_reads_the_result(tiny_data, tmp_path, capsys):
    from proxybench.cli import main

    src = tmp_path / "download" / "nasbench_only108.tfrecord"
    src.parent.mkdir()
    _write_tfrecord(src)
    assert nb101.truth_source_id() == "mirror-2500"
    assert main(["import-nb101", str(src)]) == 0
    assert "converted 2 cells" in capsys.readouterr().out
    assert (tiny_data / nb101.OFFICIAL_TRUTH).is_file()
    assert nb101.truth_source_id() == "official-parquet"
    truth = get_space("nb101").truth("cifar10").set_index("arch")
    assert truth.loc[NNI_HASH, "test_acc"] == pytest.approx(92.0)
    assert main(["import-nb101", str(tmp_path / "missing.tfrecord")]) == 2
    assert "missing NB101 tfrecord" in capsys.readouterr().err
