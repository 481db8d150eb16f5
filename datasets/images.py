"""Benchmark images for data-dependent proxies: CIFAR-10, CIFAR-100 and ImageNet16-120.

Images are read from the official python-pickle files (through :mod:`proxybench.datasets.safe_pickle`, so a
tampered file cannot run code), kept as uint8 ``[N, H, W, 3]`` arrays, and turned into normalised
minibatches with NAS-Bench-201's training augmentation.  When the ImageNet16 files are absent, an
explicitly flagged substitute built from CIFAR-10 can stand in, so the pipeline still runs; every
:class:`ImageSource` carries a ``source_id`` and a ``description`` so reports say which images were used.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from proxybench.datasets import files, safe_pickle
from proxybench.datasets.errors import DataFileError, ProxybenchDataError


class TaskInfo(NamedTuple):
    num_classes: int
    resolution: int


TASKS: dict[str, TaskInfo] = {
    "cifar10": TaskInfo(10, 32),
    "cifar100": TaskInfo(100, 32),
    "ImageNet16-120": TaskInfo(120, 16),
}


def _per_255(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(v / 255 for v in values)


# (mean, std) per channel in RGB order, on the [0, 1] scale: the constants of NAS-Bench-201's
# ``get_datasets``, so proxies see inputs distributed as the benchmark's networks were trained on.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": (_per_255([125.3, 123.0, 113.9]), _per_255([63.0, 62.1, 66.7])),
    "cifar100": (_per_255([129.3, 124.1, 112.4]), _per_255([68.2, 65.4, 70.4])),
    "ImageNet16-120": (_per_255([122.68, 116.66, 104.01]), _per_255([63.22, 61.26, 65.09])),
}

# Zero padding before the random crop, per resolution (NB201: RandomCrop(32, padding=4) and
# RandomCrop(16, padding=2)).
_CROP_PADDING = {32: 4, 16: 2}

CIFAR10_KEYS = {
    "train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
    "test": ("cifar-10-batches-py/test_batch",),
}
CIFAR100_KEYS = {"train": ("cifar-100-python/train",), "test": ("cifar-100-python/test",)}
IMAGENET16_KEYS = {
    "train": tuple(f"ImageNet16/train_data_batch_{i}" for i in range(1, 11)),
    "val": ("ImageNet16/val_data",),
}
_IMAGENET16_CLASSES = 1000


class BatchSizeError(ProxybenchDataError, ValueError):
    """A minibatch larger than the images available was requested."""


# ----------------------------------------------------------------------------------------- file reading


def _canonical_split(task: str, split: str) -> str:
    if task == "ImageNet16-120":
        # NB201 splits val_data into its "valid" and "test" halves; both names mean the whole file here.
        if split in ("val", "valid", "test"):
            return "val"
        if split == "train":
            return "train"
        raise ValueError(f"unknown split {split!r} for ImageNet16-120; expected 'train' or 'val'")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} for {task}; expected 'train' or 'test'")
    return split


def _entry(d: dict, name: str):
    # Official CIFAR files are Python 2 pickles read with encoding="bytes" (b'data'); copies re-pickled
    # under Python 3 carry str keys.  Either is the same format as far as the images are concerned.
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    return None


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {list(value.shape)}"
    return type(value).__name__


def _check_batch(
    d, key: str, data_dir, *, label_field: str, row_len: int, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``data`` rows and int64 labels of one unpickled batch, or ``files.corrupt``."""
    if not isinstance(d, dict):
        raise files.corrupt(key, f"expected a dict, found {_describe(d)}", data_dir)
    data, labels = _entry(d, "data"), _entry(d, label_field)
    for name, value in (("data", data), (label_field, labels)):
        if value is None:
            keys = ", ".join(repr(k) for k in d)
            raise files.corrupt(key, f"no {name!r} entry (keys: {keys})", data_dir)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == row_len):
        raise files.corrupt(key, f"'data' must be a uint8 array of shape [n, {row_len}], found "
                                 f"{_describe(data)}", data_dir)
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError) as e:
        raise files.corrupt(key, f"{label_field!r} is not a list of integers ({e})", data_dir) from e
    if y.ndim != 1 or len(y) != len(data):
        raise files.corrupt(key, f"{label_field!r} must hold one label per image ({len(data)}), found "
                                 f"{_describe(y)}", data_dir)
    if len(y) and y.dtype.kind not in "iu":
        raise files.corrupt(key, f"{label_field!r} must be integers, found {y.dtype}", data_dir)
    y = y.astype(np.int64)
    if len(y) and (y.min() < lo or y.max() > hi):
        raise files.corrupt(key, f"{label_field!r} must lie in {lo}..{hi}, found {y.min()}..{y.max()}",
                            data_dir)
    return data, y


def _planar_to_hwc(rows: np.ndarray, resolution: int) -> np.ndarray:
    # Each row is the red plane, then green, then blue, each row-major.
    return rows.reshape(len(rows), 3, resolution, resolution).transpose(0, 2, 3, 1)


def _load_pickled(
    keys: Sequence[str], data_dir, *, encoding: str, label_field: str, row_len: int, lo: int, hi: int,
    keep_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    # Check every file exists before reading any, so a missing last batch fails at once.
    paths = [files.require(k, data_dir) for k in keys]
    resolution = int(round((row_len // 3) ** 0.5))
    images, labels = [], []
    for key, path in zip(keys, paths, strict=True):
        d = safe_pickle.load(path, key=key, data_dir=data_dir, encoding=encoding)
        x, y = _check_batch(d, key, data_dir, label_field=label_field, row_len=row_len, lo=lo, hi=hi)
        if keep_classes is not None:
            # Filter per file: a full ImageNet16 batch is ~100 MB, the 120-class part ~12 MB.
            keep = y <= keep_classes
            x, y = x[keep], y[keep] - 1
        images.append(_planar_to_hwc(x, resolution))
        labels.append(y)
        del d
    return np.concatenate(images), np.concatenate(labels)


def load_cifar10(split: str = "train", data_dir: str | os.PathLike | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 images and labels from the official python pickles.

    Parameters
    ----------
    split
        ``"train"`` (``data_batch_1..5`` concatenated in order) or ``"test"`` (``test_batch``).
    data_dir
        Data directory (default: ``files.resolve_data_dir()``).

    Returns
    -------
    images : uint8 ndarray ``[N, 32, 32, 3]`` (HWC, RGB)
    labels : int64 ndarray ``[N]`` in 0..9
    """
    return _load_pickled(CIFAR10_KEYS[_canonical_split("cifar10", split)], data_dir, encoding="bytes",
                         label_field="labels", row_len=3072, lo=0, hi=9)


def load_cifar100(split: str = "train", data_dir: str | os.PathLike | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100 images and fine labels (0..99) from the official python pickles (``train`` or ``test``).

    Returns uint8 ``[N, 32, 32, 3]`` images and int64 ``[N]`` labels, as :func:`load_cifar10`.
    """
    return _load_pickled(CIFAR100_KEYS[_canonical_split("cifar100", split)], data_dir, encoding="bytes",
                         label_field="fine_labels", row_len=3072, lo=0, hi=99)


def load_imagenet16(split: str = "train", num_classes: int = 120,
                    data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ImageNet16 images of the first ``num_classes`` classes, as NAS-Bench-201's ImageNet16-120.

    Parameters
    ----------
    split
        ``"train"`` (``ImageNet16/train_data_batch_1..10``) or ``"val"`` (``ImageNet16/val_data``;
        ``"test"`` is accepted as the same file).
    num_classes
        Keep images whose 1-based label is at most this (120 for ImageNet16-120).
    data_dir
        Data directory (default: ``files.resolve_data_dir()``).

    Returns
    -------
    images : uint8 ndarray ``[N, 16, 16, 3]`` (HWC, RGB)
    labels : int64 ndarray ``[N]`` in ``0..num_classes-1`` (the files' labels minus one)
    """
    if not 1 <= num_classes <= _IMAGENET16_CLASSES:
        raise ValueError(f"num_classes must be in 1..{_IMAGENET16_CLASSES}, got {num_classes}")
    return _load_pickled(IMAGENET16_KEYS[_canonical_split("ImageNet16-120", split)], data_dir,
                         encoding="latin1", label_field="labels", row_len=768, lo=1,
                         hi=_IMAGENET16_CLASSES, keep_classes=num_classes)


# --------------------------------------------------------------------------------------- image sources


@dataclass(frozen=True, eq=False)
class ImageSource:
    """The images one task's proxies are evaluated on.

    ``images`` (uint8 ``[N, H, W, 3]``) and ``labels`` (int64 ``[N]``) are read-only and shared by every
    caller of :func:`image_source`.  ``source_id`` identifies exactly these images (task, split and a
    digest of pixels and labels; prefixed ``substitute:`` for stand-in images) and ``description`` says
    in words what they are, for reports.
    """

    task: str
    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    num_classes: int
    resolution: int
    substitute: bool
    source_id: str
    description: str

    @property
    def num_images(self) -> int:
        return len(self.labels)


def _digest(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(repr(images.shape).encode())
    h.update(np.ascontiguousarray(images).data)
    h.update(labels.astype("<i8").tobytes())
    return h.hexdigest()[:12]


def _make_source(task: str, split: str, images: np.ndarray, labels: np.ndarray, *, substitute: bool,
                 description: str) -> ImageSource:
    images = np.ascontiguousarray(images)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    # Cached sources are shared between callers; a stray in-place edit must not leak into other runs.
    images.flags.writeable = False
    labels.flags.writeable = False
    source_id = f"{task}-{split}:{_digest(images, labels)}"
    if substitute:
        source_id = "substitute:" + source_id
    info = TASKS[task]
    return ImageSource(task, images, labels, info.num_classes, info.resolution, substitute, source_id,
                       description)


def _avg_pool_2x2(images: np.ndarray) -> np.ndarray:
    n, h, w, c = images.shape
    sums = images.reshape(n, h // 2, 2, w // 2, 2, c).sum(axis=(2, 4), dtype=np.uint16)
    return ((sums + 2) // 4).astype(np.uint8)  # round half up


def _imagenet16_substitute(root: str, split: str, missing: DataFileError) -> ImageSource:
    cifar_split = "train" if split == "train" else "test"
    keys = CIFAR10_KEYS[cifar_split]
    if not all(files.CATALOGUE[k].path(root).is_file() for k in keys):
        raise DataFileError(f"{missing}\n  (no substitute either: the CIFAR-10 {cifar_split} files are "
                            f"missing too)") from missing
    x, y = load_cifar10(cifar_split, root)
    x = _avg_pool_2x2(x)
    description = (f"SUBSTITUTE: CIFAR-10 {cifar_split} images average-pooled to 16x16 ({len(y):,} images, "
                   f"labels 0-9; no ImageNet16-120 images in {root})")
    return _make_source("ImageNet16-120", split, x, y, substitute=True, description=description)


@functools.lru_cache(maxsize=8)
def _cached_source(root: str, task: str, split: str, allow_substitute: bool,
                   fingerprint: tuple) -> ImageSource:
    del fingerprint  # only part of the cache key
    if task == "cifar10":
        x, y = load_cifar10(split, root)
        return _make_source(task, split, x, y, substitute=False,
                            description=f"CIFAR-10 {split} ({len(y):,} real images)")
    if task == "cifar100":
        x, y = load_cifar100(split, root)
        return _make_source(task, split, x, y, substitute=False,
                            description=f"CIFAR-100 {split} ({len(y):,} real images)")
    keys = IMAGENET16_KEYS[split]
    present = [k for k in keys if files.CATALOGUE[k].path(root).is_file()]
    # Substitute only when the ImageNet16 files are wholly absent: a partial copy is a broken download
    # the user should hear about, not something to paper over.
    if allow_substitute and not present:
        try:
            files.require(keys[0], root)
        except DataFileError as missing:
            return _imagenet16_substitute(root, split, missing)
    x, y = load_imagenet16(split, TASKS[task].num_classes, root)
    return _make_source(task, split, x, y, substitute=False,
                        description=f"ImageNet16-120 {split} ({len(y):,} real images of ImageNet16 "
                                    f"classes 1-120)")


def _fingerprint(root: Path, task: str, split: str) -> tuple:
    # Size and mtime of every file the source may read, so replacing a file invalidates the cache.
    keys = list(CIFAR10_KEYS[split] if task == "cifar10" else
                CIFAR100_KEYS[split] if task == "cifar100" else IMAGENET16_KEYS[split])
    if task == "ImageNet16-120":
        keys += CIFAR10_KEYS["train" if split == "train" else "test"]
    out = []
    for k in keys:
        try:
            st = files.CATALOGUE[k].path(root).stat()
            out.append((k, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((k, None, None))
    return tuple(out)


def image_source(task: str, data_dir: str | os.PathLike | None = None, split: str = "train",
                 allow_substitute: bool = True) -> ImageSource:
    """The images of ``task`` (``"cifar10"``, ``"cifar100"`` or ``"ImageNet16-120"``), cached in-process.

    Parameters
    ----------
    task
        One of :data:`TASKS`.
    data_dir
        Data directory (default: ``files.resolve_data_dir()``).
    split
        ``"train"`` or ``"test"`` (``"val"`` for ImageNet16-120).
    allow_substitute
        When no ImageNet16 file is present, stand in CIFAR-10 images of the same split, 2x2
        average-pooled to 16x16, with their labels 0..9 (valid class ids of the 120-way task); the result
        has ``substitute=True``, a ``substitute:`` source id and a description starting ``SUBSTITUTE``.

    Raises
    ------
    DataFileError
        The task's files (or, for a substitute, CIFAR-10's) are missing or corrupt; the message names
        the file and where to get it.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    split = _canonical_split(task, split)
    root = files.resolve_data_dir(data_dir)
    return _cached_source(str(root), task, split, bool(allow_substitute), _fingerprint(root, task, split))


def clear_cache() -> None:
    """Forget every cached :class:`ImageSource` (frees their memory)."""
    _cached_source.cache_clear()


# ------------------------------------------------------------------------------------------- minibatches


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # NB201 applies RandomHorizontalFlip then RandomCrop; crop-then-flip with uniform offsets has the
    # same distribution, and folding the flip into the column index makes it one gather.
    b, h, w, _ = x.shape
    pad = _CROP_PADDING.get(h, h // 8)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oy = rng.integers(0, 2 * pad + 1, size=b)
    ox = rng.integers(0, 2 * pad + 1, size=b)
    flip = rng.random(b) < 0.5
    rows = oy[:, None] + np.arange(h)
    cols = ox[:, None] + np.arange(w)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def sample_batch(source: ImageSource, batch_size: int, seed, augment: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised minibatch of distinct images drawn from ``source``.

    Parameters
    ----------
    source
        From :func:`image_source`.
    batch_size
        Number of distinct images, at most ``source.num_images``.
    seed
        Seed of ``numpy.random.default_rng``: the images, crops and flips depend on it alone.
    augment
        Apply NB201's training augmentation (random crop after zero padding of 4 px at 32x32, 2 px at
        16x16; horizontal flip with p=0.5).

    Returns
    -------
    x : float32 tensor ``[B, 3, H, W]``, scaled to [0, 1] then normalised with ``NORMALIZATION[task]``
    y : int64 tensor ``[B]``

    Raises
    ------
    BatchSizeError
        ``batch_size`` exceeds the number of images available.
    """
    n = source.num_images
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size > n:
        raise BatchSizeError(
            f"batch_size {batch_size:,} is larger than the {n:,} images available in {source.description} "
            f"[{source.source_id}]; use a batch size of at most {n:,} or a data directory with more images")
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=int(batch_size), replace=False)
    x = source.images[idx]
    if augment:
        x = _augment(x, rng)
    mean, std = (np.asarray(v, dtype=np.float32) for v in NORMALIZATION[source.task])
    xf = (x.astype(np.float32) / np.float32(255) - mean) / std
    return (torch.from_numpy(np.ascontiguousarray(xf.transpose(0, 3, 1, 2))),
            torch.from_numpy(source.labels[idx].astype(np.int64)))


__all__ = [
    "NORMALIZATION", "TASKS", "BatchSizeError", "ImageSource", "TaskInfo", "clear_cache", "image_source",
    "load_cifar10", "load_cifar100", "load_imagenet16", "sample_batch",
]
