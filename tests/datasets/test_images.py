"""Image loading, the safe unpickler, substitutes and minibatch sampling, on small files written in the
official CIFAR-10/100 and ImageNet16 formats."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from proxybench.datasets import files, images, safe_pickle
from proxybench.datasets.errors import DataFileError, UnsafePickleError

CIFAR10_TRAIN_SIZES = (6, 5, 5, 5, 5)
CIFAR10_TEST_SIZE = 7


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # files.corrupt() memoises checksums under the cache dir: keep that out of the checkout.
    monkeypatch.setenv(files.ENV_CACHE_DIR, str(tmp_path / "cache"))
    images.clear_cache()
    yield
    images.clear_cache()


# ------------------------------------------------------------------------------- writing official files


def _rows(hwc: np.ndarray) -> np.ndarray:
    """HWC images -> the official channel-planar rows."""
    return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2).reshape(len(hwc), -1))


def _dump(path: Path, obj, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _random_images(rng, n: int, res: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, res, res, 3), dtype=np.uint8)


def write_cifar10(root: Path, seed: int = 0, constant: tuple[int, int, int] | None = None) -> dict:
    """data_batch_1..5, test_batch, batches.meta; returns the HWC images and labels written per split."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    written = {"train": ([], []), "test": ([], [])}
    names = [(f"data_batch_{i + 1}", "train", n) for i, n in enumerate(CIFAR10_TRAIN_SIZES)]
    names.append(("test_batch", "test", CIFAR10_TEST_SIZE))
    for name, split, n in names:
        x = _random_images(rng, n, 32)
        if constant is not None:
            x[:] = np.asarray(constant, dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=n)]
        _dump(folder / name, {b"batch_label": f"{name} of test".encode(), b"labels": y, b"data": _rows(x),
                              b"filenames": [f"img_{i}.png".encode() for i in range(n)]})
        written[split][0].append(x)
        written[split][1].append(y)
    _dump(folder / "batches.meta", {b"num_cases_per_batch": 10000, b"num_vis": 3072,
                                    b"label_names": [f"class{i}".encode() for i in range(10)]})
    return {k: (np.concatenate(xs), np.concatenate(ys)) for k, (xs, ys) in written.items()}


def write_cifar100(root: Path, n_train: int = 12, n_test: int = 8) -> dict:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = _random_images(rng, n, 32)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        _dump(folder / split, {b"filenames": [b"f.png"] * n, b"batch_label": split.encode(),
                               b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                               b"data": _rows(x)})
        out[split] = (x, np.asarray(fine))
    _dump(folder / "meta", {b"fine_label_names": [b"x"] * 100, b"coarse_label_names": [b"y"] * 20})
    return out


def write_imagenet16(root: Path, batches=range(1, 11), n: int = 20, max_label: int = 200) -> dict:
    """ImageNet16 files with str keys and 1-based labels up to ``max_label``, so the 120-class filter
    has something to drop."""
    rng = np.random.default_rng(2)
    folder = root / "ImageNet16"
    out = {"train": ([], []), "val": ([], [])}
    names = [(f"train_data_batch_{i}", "train") for i in batches] + [("val_data", "val")]
    for name, split in names:
        x = _random_images(rng, n, 16)
        y = [int(v) for v in rng.integers(1, max_label + 1, size=n)]
        y[0], y[1] = 120, 121  # the filter's boundary
        _dump(folder / name, {"data": _rows(x), "labels": y, "mean": np.zeros(768, np.float64)})
        out[split][0].append(x)
        out[split][1].append(y)
    return {k: (np.concatenate(xs), np.concatenate(ys)) for k, (xs, ys) in out.items() if xs}


def _py2_short_string(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b


def py2_cifar_pickle(rows: np.ndarray, labels: list[int]) -> bytes:
    """A pickle as Python 2 + numpy wrote the official CIFAR batches (str as BINSTRING, numpy under
    ``numpy.core``), which Python 3 only reads with encoding="bytes" or "latin1"."""
    n, width = rows.shape
    dtype = (b"cnumpy\ndtype\n" + _py2_short_string(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + _py2_short_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_short_string(b"b")
             + b"\x87R" + b"(K\x01J" + struct.pack("<i", n) + b"J" + struct.pack("<i", width) + b"\x86"
             + dtype + b"\x89T" + struct.pack("<I", rows.nbytes) + rows.tobytes() + b"tb")
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return (b"\x80\x02}(" + _py2_short_string(b"data") + array + _py2_short_string(b"labels") + label_list
            + b"u.")


# -------------------------------------------------------------------------------------------- loading


def test_cifar10_shapes_dtypes_and_order(tmp_path):
    written = write_cifar10(tmp_path)
    x, y = images.load_cifar10("train", data_dir=tmp_path)
    assert x.shape == (sum(CIFAR10_TRAIN_SIZES), 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (len(x),) and y.dtype == np.int64 and 0 <= y.min() and y.max() <= 9
    np.testing.assert_array_equal(x, written["train"][0])  # batches 1..5 in order
    np.testing.assert_array_equal(y, written["train"][1])
    xt, yt = images.load_cifar10("test", data_dir=tmp_path)
    assert xt.shape == (CIFAR10_TEST_SIZE, 32, 32, 3)
    np.testing.assert_array_equal(yt, written["test"][1])


def test_channel_layout_planted_image(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    d = pickle.loads(path.read_bytes(), encoding="bytes")
    row = np.concatenate([np.full(1024, 200), np.full(1024, 10), np.full(1024, 50)]).astype(np.uint8)
    row[32 * 3 + 5] = 255  # red plane, pixel (row 3, column 5)
    d[b"data"][0] = row
    _dump(path, d)
    x, _ = images.load_cifar10("train", data_dir=tmp_path)
    assert x[0, 0, 0].tolist() == [200, 10, 50]
    assert x[0, 3, 5, 0] == 255 and x[0, 5, 3, 0] == 200


def test_cifar100_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    x, y = images.load_cifar100("train", data_dir=tmp_path)
    assert x.shape == (12, 32, 32, 3) and y.dtype == np.int64
    np.testing.assert_array_equal(y, written["train"][1])
    np.testing.assert_array_equal(x, written["train"][0])
    src = images.image_source("cifar100", data_dir=tmp_path, split="test")
    assert (src.num_classes, src.resolution, src.substitute) == (100, 32, False)
    assert src.source_id.startswith("cifar100-test:") and "CIFAR-100 test (8 real images)" == src.description


def test_python2_official_pickle_loads(tmp_path):
    write_cifar10(tmp_path)
    rng = np.random.default_rng(5)
    x = _random_images(rng, 4, 32)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(py2_cifar_pickle(_rows(x), [3, 1, 4, 1]))
    got_x, got_y = images.load_cifar10("train", data_dir=tmp_path)
    np.testing.assert_array_equal(got_x[:4], x)
    assert got_y[:4].tolist() == [3, 1, 4, 1]


def test_imagenet16_filter_and_zero_based_labels(tmp_path):
    written = write_imagenet16(tmp_path)
    x, y = images.load_imagenet16("train", data_dir=tmp_path)
    raw_x, raw_y = written["train"]
    keep = raw_y <= 120
    assert 0 < keep.sum() < len(raw_y)
    assert x.shape == (keep.sum(), 16, 16, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(y, raw_y[keep] - 1)
    np.testing.assert_array_equal(x, raw_x[keep])
    assert y.min() >= 0 and y.max() == 119
    xv, yv = images.load_imagenet16("val", num_classes=10, data_dir=tmp_path)
    np.testing.assert_array_equal(yv, written["val"][1][written["val"][1] <= 10] - 1)
    src = images.image_source("ImageNet16-120", data_dir=tmp_path)
    assert (src.substitute, src.resolution, src.num_classes) == (False, 16, 120)
    assert src.source_id.startswith("ImageNet16-120-train:") and "SUBSTITUTE" not in src.description


def test_imagenet16_substitute_when_missing(tmp_path):
    written = write_cifar10(tmp_path)
    src = images.image_source("ImageNet16-120", data_dir=tmp_path)
    assert src.substitute and src.task == "ImageNet16-120" and src.resolution == 16
    assert src.images.shape == (sum(CIFAR10_TRAIN_SIZES), 16, 16, 3) and src.images.dtype == np.uint8
    assert src.description.startswith("SUBSTITUTE") and str(tmp_path) in src.description
    assert src.source_id.startswith("substitute:")
    np.testing.assert_array_equal(src.labels, written["train"][1])
    block = written["train"][0][0, :2, :2, 0].astype(int)
    assert src.images[0, 0, 0, 0] == (block.sum() + 2) // 4
    val = images.image_source("ImageNet16-120", data_dir=tmp_path, split="val")
    assert val.substitute and len(val.labels) == CIFAR10_TEST_SIZE
    with pytest.raises(DataFileError, match="ImageNet16/train_data_batch_1"):
        images.image_source("ImageNet16-120", data_dir=tmp_path, allow_substitute=False)


def test_no_substitute_without_cifar10_or_with_partial_imagenet16(tmp_path):
    with pytest.raises(DataFileError, match="(?s)ImageNet16/train_data_batch_1.*CIFAR-10 train files"):
        images.image_source("ImageNet16-120", data_dir=tmp_path)
    write_cifar10(tmp_path)
    write_imagenet16(tmp_path, batches=range(1, 4))  # a broken download, not an absent dataset
    with pytest.raises(DataFileError, match="train_data_batch_4"):
        images.image_source("ImageNet16-120", data_dir=tmp_path)


def test_source_cache_and_invalidation(tmp_path):
    write_cifar10(tmp_path)
    a = images.image_source("ImageNet16-120", data_dir=tmp_path)
    assert images.image_source("ImageNet16-120", data_dir=str(tmp_path)) is a
    assert not a.images.flags.writeable
    write_imagenet16(tmp_path)
    b = images.image_source("ImageNet16-120", data_dir=tmp_path)
    assert not b.substitute and b.source_id != a.source_id


def test_missing_file_names_path_and_source(tmp_path):
    with pytest.raises(DataFileError) as e:
        images.load_cifar10("train", data_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in msg
    assert "cifar-10-python.tar.gz" in msg
    with pytest.raises(DataFileError, match="cifar-100-python.tar.gz"):
        images.image_source("cifar100", data_dir=tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_file_names_file_and_where_to_get_it(tmp_path, damage):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"this is not a pickle")
    with pytest.raises(DataFileError) as e:
        images.load_cifar10("train", data_dir=tmp_path)
    assert not isinstance(e.value, UnsafePickleError)
    msg = str(e.value)
    assert f"corrupt or unexpected data file {path}" in msg
    assert "replace it" in msg and "cifar-10-python.tar.gz" in msg


@pytest.mark.parametrize("bad, problem", [
    ({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, "shape"),
    ({b"data": np.zeros((3, 3072), np.float32), b"labels": [0, 1, 2]}, "uint8"),
    ({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}, "one label per image"),
    ({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 10]}, "0..9"),
    ({b"labels": [0]}, "'data'"),
    ([1, 2, 3], "expected a dict"),
])
def test_wrong_format_is_corrupt(tmp_path, bad, problem):
    write_cifar10(tmp_path)
    _dump(tmp_path / "cifar-10-batches-py" / "test_batch", bad)
    with pytest.raises(DataFileError, match="test_batch") as e:
        images.load_cifar10("test", data_dir=tmp_path)
    assert problem in str(e.value)


# -------------------------------------------------------------------------------------- safe unpickling


class _Evil:
    """Pickles as a call to os.system; pickle.dumps only records the call, it never runs it."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Evil(f"touch {marker}"), b"labels": []}, protocol=2)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError) as e:
        images.load_cifar10("train", data_dir=tmp_path)
    msg = str(e.value)
    assert f"{os.system.__module__}.system" in msg and str(path) in msg and "malicious" in msg
    assert not marker.exists()


@pytest.mark.parametrize("payload, refused", [
    (b"cos\nsystem\n(S'echo hi'\ntR.", "os.system"),
    (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.",
     "builtins.eval"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.", "_codecs.encode"),
    (b"\x80\x02c__builtin__\nbytes\nJ\x00\xca\x9a;\x85R.", "bytes()"),
    (b"\x80\x02P1\n.", "persistent id"),
])
def test_safe_pickle_refuses_globals(tmp_path, payload, refused):
    path = tmp_path / "f.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=f"refused to load {refused}"):
        safe_pickle.load(path)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_safe_pickle_reads_numpy_at_every_protocol(tmp_path, protocol):
    obj = {"a": np.arange(12, dtype=np.uint8).reshape(3, 4), "b": [1, 2], "c": b"", "d": b"xy",
           "e": np.float32(1.5), "f": np.zeros((2, 2), np.float64).T}
    path = tmp_path / "f.pkl"
    _dump(path, obj, protocol)
    got = safe_pickle.load(path)
    assert got.keys() == obj.keys()
    for k in obj:
        np.testing.assert_array_equal(got[k], obj[k])


def test_safe_pickle_corrupt_without_key(tmp_path):
    path = tmp_path / "f.pkl"
    path.write_bytes(b"\x80\x02}q\x00(")
    with pytest.raises(DataFileError, match=f"corrupt or unreadable pickle file {path}"):
        safe_pickle.load(path)


# ----------------------------------------------------------------------------------------- minibatches


def test_sample_batch_deterministic_per_seed(tmp_path):
    write_cifar10(tmp_path)
    src = images.image_source("cifar10", data_dir=tmp_path)
    x1, y1 = images.sample_batch(src, 8, seed=3)
    np.random.seed(123)
    torch.manual_seed(123)
    x2, y2 = images.sample_batch(src, 8, seed=3)
    assert x1.shape == (8, 3, 32, 32) and x1.dtype == torch.float32 and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = images.sample_batch(src, 8, seed=4)
    assert not torch.equal(x1, x3)


def test_sample_batch_normalises_constant_image(tmp_path):
    write_cifar10(tmp_path, constant=(100, 150, 200))
    src = images.image_source("cifar10", data_dir=tmp_path)
    x, _ = images.sample_batch(src, 5, seed=0, augment=False)
    mean, std = images.NORMALIZATION["cifar10"]
    for c, v in enumerate((100, 150, 200)):
        expected = (v / 255 - mean[c]) / std[c]
        torch.testing.assert_close(x[:, c], torch.full_like(x[:, c], expected), rtol=0, atol=1e-5)


def test_sample_batch_draws_distinct_images(tmp_path):
    n = 30
    rng = np.random.default_rng(0)
    src = images.ImageSource("cifar100", _random_images(rng, n, 32), np.arange(n, dtype=np.int64), 100, 32,
                             False, "test", "test images")
    _, y = images.sample_batch(src, n, seed=1)
    assert sorted(y.tolist()) == list(range(n))


@pytest.mark.parametrize("res", [32, 16])
def test_augmentation_is_padded_crop_and_flip(res):
    task = "cifar10" if res == 32 else "ImageNet16-120"
    pad = 4 if res == 32 else 2
    img = np.random.default_rng(0).integers(1, 256, size=(1, res, res, 3), dtype=np.uint8)
    src = images.ImageSource(task, img, np.zeros(1, np.int64), 10, res, False, "test", "one image")
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in images.NORMALIZATION[task])
    padded = np.pad(img[0], ((pad, pad), (pad, pad), (0, 0)))
    seen = set()
    for seed in range(40):
        x, _ = images.sample_batch(src, 1, seed=seed)
        raw = torch.round((x[0] * std + mean) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        matches = {(oy, ox, flip) for oy in range(2 * pad + 1) for ox in range(2 * pad + 1) for flip in (0, 1)
                   if np.array_equal(raw, padded[oy:oy + res, ox:ox + res][:, ::-1] if flip
                                     else padded[oy:oy + res, ox:ox + res])}
        assert len(matches) == 1
        seen |= matches
    assert {f for _, _, f in seen} == {0, 1} and len(seen) > 10


def test_sample_batch_too_large(tmp_path):
    write_cifar10(tmp_path)
    src = images.image_source("cifar10", data_dir=tmp_path, split="test")
    with pytest.raises(ValueError, match="larger than the 7 images available") as e:
        images.sample_batch(src, 8, seed=0)
    assert isinstance(e.value, images.BatchSizeError)
    with pytest.raises(ValueError, match="positive integer"):
        images.sample_batch(src, 0, seed=0)


def test_tasks_and_normalization_tables():
    assert images.TASKS == {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}
    assert set(images.NORMALIZATION) == set(images.TASKS)
    mean, std = images.NORMALIZATION["ImageNet16-120"]
    assert mean[0] == pytest.approx(122.68 / 255) and std[2] == pytest.approx(65.09 / 255)


# -------------------------------------------------------------------------------------------- real data


def test_real_cifar10_mirror():
    data_dir = Path(files.REPO_ROOT).parent / "shared" / "data"
    if not (data_dir / "cifar-10-batches-py").is_dir():
        pytest.skip(f"no CIFAR-10 mirror at {data_dir}")
    x, y = images.load_cifar10("train", data_dir=data_dir)
    assert x.shape == (5170, 32, 32, 3)
    assert set(y.tolist()) == set(range(10))
