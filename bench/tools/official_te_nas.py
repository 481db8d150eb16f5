"""TE-NAS against its official code: ``te_nas_ntk`` / ``te_nas_lr`` (and the ``_kaiming`` variants) beside the official
``get_ntk_n`` and ``Linear_Region_Collector`` of github.com/VITA-Group/TENAS, run on the official supernet.

    proxybench official te_nas --code DIR

For each cell the official NB201 supernet (the ``TinyNetworkDarts`` that ``get_cell_based_tiny_net`` builds from
``prune_tenas.py``'s NB201 configs: ``DARTS-V1``, C=3 N=1 with stem for the NTK; C=1 N=1 depth=1 without stem for the
regions) is pruned to the cell's single path the way the official pruning does (alpha 0 on the kept op, ``-INF`` on
the others: its softmax is exactly one-hot, so ``NAS201SearchCell`` runs the kept op alone, times 1.0), and gets the
parameters of the suite's thin network of that cell (built, seeded and, for ``_kaiming``, re-drawn by the family
module's own helpers), copied in module order with every shape checked, then checked by one forward: both networks
must give the same logits (to 1e-5 of the largest). The official NTK condition number is ``get_ntk_n`` on the suite's
minibatch; the official region count is ``Linear_Region_Collector.forward`` on the suite's 3 x 1000 crops (drawn by
``te_nas.crops`` from the proxy's generator, in its order), read by ``getLinearReginCount``.

The official modules are imported from DIR at run time (nothing of them is in the repository); what only stops
them running on a CPU with today's torch is patched for the duration of the import or the call (see ``HOW``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import types
from pathlib import Path

import torch
from torch import nn

from proxybench.datasets.nb201 import EDGES, parse_arch
from proxybench.proxies import get_proxy, te_nas
from proxybench.runner import make_context, task_batch, task_images
from proxybench.tools.official import OfficialCodeError, copy_in_order, importing_from, require

REPO = "VITA-Group/TENAS"
COMMIT = "9df78ffd98573035375b12e19b9007578cc4155d"
PROXIES = ("te_nas_ntk", "te_nas_lr", "te_nas_ntk_kaiming", "te_nas_lr_kaiming")
# the cells of the first comparison run: a median-like cell, all-3x3, mixed, all-skip, all-avg_pool, one with 'none'
CELLS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|",
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|",
)
TASKS = ("cifar10", "cifar100", "ImageNet16-120")
BATCH = 64  # the suite's default minibatch (Study.batch_size), augmented as the default study's
FILES = ("lib/procedures/ntk.py", "lib/procedures/linear_region_counter.py", "lib/models/__init__.py",
         "lib/models/cell_searchs/search_cells.py")
# prune_tenas.py's NB201 supernets (model_config / model_config_thin; prune_launch.py: --track_running_stats 1)
NTK_NET = dict(C=te_nas.NTK_CHANNELS, N=te_nas.NTK_CELLS, depth=-1, use_stem=True)
LR_NET = dict(C=1, N=1, depth=1, use_stem=False)
HOW = ("The official functions run from DIR: `lib/procedures/ntk.py` `get_ntk_n(loader, [net], train_mode=True, "
       "num_batch=1)` (one batch, one `backward` per sample, float32 Gram and eigenvalues, NaN -> 1e5) and "
       "`lib/procedures/linear_region_counter.py` `Linear_Region_Collector(input_size=(1000, 1, 3, 3), "
       "sample_batch=3)`, its `forward` on each of the 3 crop batches and `getLinearReginCount()` (half-precision "
       "Hamming matrix, sum of 1/multiplicity), on the official network class: the supernet (TinyNetworkDarts) that "
       "`models.get_cell_based_tiny_net` builds from prune_tenas.py's NB201 configs (DARTS-V1, C=3 N=1 with stem for "
       "the NTK; C=1 N=1 depth=1, no stem, for the regions; affine, track_running_stats), pruned to the cell's single "
       "path as the official pruning does (alpha 0 on the kept op, -INF on the others). Its weights are the suite's: "
       "the family module's seeded thin network of the cell (thin_ntk_network / ThinRegionNetwork; for the _kaiming "
       "rows after its Kaiming re-draw, which the official init_model never performs, so those rows check the scoring,"
       " not the init) copied in module order with every shape checked and then the logits of both networks compared "
       "on the batch; the inputs are the suite's default minibatch (64 augmented training images, seed as given) and "
       "the proxy's own 3 x 1000 one-channel 3x3 crops of it. Patched at run time, and only for the duration of the "
       "import or the call: `torchvision`, `torchvision.transforms`, `torchvision.datasets` and the official "
       "`datasets` package (used only to load training images, which are passed in here) are empty stub modules in "
       "sys.modules while linear_region_counter.py is imported; `torch.Tensor.cuda` returns the tensor itself; each "
       "official module's global `torch` is a stand-in that answers `torch.cuda.current_device()` with 'cpu', makes "
       "`torch.cuda.empty_cache` a no-op, maps the removed `torch.symeig` to `torch.linalg.eigh` (upper triangle, "
       "ascending, as symeig's default) and makes the `res += res.T` of `calc_LR` (refused by today's torch: the "
       "operands alias) the out-of-place sum, which has the same zero pattern. Where the ImageNet16-120 files are "
       "absent both sides see the suite's CIFAR-10 substitute (16x16, 120 classes), noted on each row.")


# ------------------------------------------------------------------------------------------- run-time patches

class _OutOfPlaceIAdd(torch.Tensor):
    """A tensor whose ``+=`` is the out-of-place sum: ``calc_LR``'s ``res += res.T``, which today's torch refuses
    because the operands share memory (every entry is >= 0, so the sum's zero pattern is what the code meant)."""

    def __iadd__(self, other):
        return torch.add(self, other)


class _CpuCuda:
    """``torch.cuda`` as an official module sees it on a CPU: the current device is the CPU, emptying its cache
    does nothing; everything else is the real ``torch.cuda``."""

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def empty_cache() -> None:
        return None

    def __getattr__(self, name):
        return getattr(torch.cuda, name)


class _CpuTorch:
    """The global ``torch`` of an imported official module: the real torch but for ``cuda`` (:class:`_CpuCuda`),
    the removed ``symeig`` and a ``matmul`` whose result supports ``res += res.T``."""

    cuda = _CpuCuda()

    @staticmethod
    def symeig(a, eigenvectors=False, upper=True):
        w, v = torch.linalg.eigh(a, UPLO="U" if upper else "L")  # ascending, as symeig
        return w, (v if eigenvectors else torch.empty(0, dtype=a.dtype))

    @staticmethod
    def matmul(a, b):
        return torch.matmul(a, b).as_subclass(_OutOfPlaceIAdd)

    def __getattr__(self, name):
        return getattr(torch, name)


def _stay(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
    return self


@contextlib.contextmanager
def on_cpu():
    """``Tensor.cuda()`` returns the tensor itself while an official function runs (everything is on the CPU)."""
    saved = torch.Tensor.cuda
    torch.Tensor.cuda = _stay
    try:
        yield
    finally:
        torch.Tensor.cuda = saved


def _stub(name: str, **names) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(names)
    return mod


def _unavailable(what: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"{what} is a stub here: the official code may not load its own data in this adapter")
    return fail


def _import_stubs() -> dict[str, types.ModuleType]:
    tv = _stub("torchvision", transforms=_stub("torchvision.transforms"), datasets=_stub("torchvision.datasets"))
    return {"torchvision": tv, "torchvision.transforms": tv.transforms, "torchvision.datasets": tv.datasets,
            "datasets": _stub("datasets", CUTOUT=_unavailable("CUTOUT"), Dataset2Class={},
                              ImageNet16=_unavailable("ImageNet16"))}


def _from_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.torch = _CpuTorch()  # the functions read their module's global `torch` when they run
    return mod


def load(code: Path) -> types.SimpleNamespace:
    """The official NTK function, region collector and supernet builder, imported from the checkout ``code``."""
    code = Path(code)
    require(code, *FILES, repo=REPO, commit=COMMIT)
    lib = code / "lib"
    try:
        with importing_from(lib, stubs=_import_stubs()):
            models = importlib.import_module("models")
            cells = importlib.import_module("models.cell_searchs.search_cells")
            # get_cell_based_tiny_net's DARTS-V1 class and its NB201 op list, read now: both functions import
            # lazily from the package, which is gone from sys.modules once the import is over
            supernet_class = importlib.import_module("models.cell_searchs").nas201_super_nets["DARTS-V1"]
            space = list(models.get_search_spaces("cell", "nas-bench-201"))
            ntk = _from_file("tenas_official_ntk", lib / "procedures" / "ntk.py")
            lrc = _from_file("tenas_official_linear_region_counter", lib / "procedures" / "linear_region_counter.py")
    except (ImportError, AttributeError) as e:
        raise OfficialCodeError(f"{code} does not import as github.com/{REPO} at {COMMIT[:12]} ({e}). Get it with "
                                f"`git clone https://github.com/{REPO} {code} && git -C {code} checkout {COMMIT}`"
                                ) from e
    return types.SimpleNamespace(get_ntk_n=ntk.get_ntk_n, Linear_Region_Collector=lrc.Linear_Region_Collector,
                                 supernet_class=supernet_class, space=space, inf=float(cells.INF))


# ----------------------------------------------------------------------------------------------------- glue

def single_path_alphas(arch: str, edge2index: dict[str, int], op_names, inf: float) -> torch.Tensor:
    """The supernet's arch parameters of ``arch`` as the official pruning leaves them: row ``edge2index['i<-j']``
    is 0 at the cell's op of edge i <- j and ``-inf`` elsewhere (its softmax is exactly one-hot)."""
    op_names = list(op_names)
    alpha = torch.full((len(edge2index), len(op_names)), -float(inf))
    for (i, j), op in zip(EDGES, parse_arch(arch), strict=True):
        alpha[edge2index[f"{i}<-{j}"], op_names.index(op)] = 0.0
    return alpha


def supernet(official, arch: str, num_classes: int, C: int, N: int, depth: int, use_stem: bool) -> nn.Module:
    """The official NB201 supernet pruned to the single path of ``arch``: what ``get_cell_based_tiny_net`` builds
    from prune_tenas.py's config (DARTS-V1, max_nodes 4, affine, track_running_stats)."""
    net = official.supernet_class(C, N, 4, num_classes, official.space, True, True, depth, use_stem)
    net.set_alphas([single_path_alphas(arch, net.edge2index, net.op_names, official.inf)])
    return net


def live_parameters(sup: nn.Module, arch: str) -> list[nn.Parameter]:
    """The supernet's parameters its single-path forward uses, in module order: not the pruned ops', not the
    arch parameters, not the stem's when it has none."""
    ops = dict(zip((f"{i}<-{j}" for i, j in EDGES), parse_arch(arch), strict=True))
    dead = {id(sup.arch_parameters)}
    if not sup.use_stem:
        dead.update(id(p) for p in sup.stem.parameters())
    for cell in sup.cells:
        if hasattr(cell, "edges"):
            for key, candidates in cell.edges.items():
                for name, mod in zip(cell.op_names, candidates, strict=True):
                    if name != ops[key]:
                        dead.update(id(p) for p in mod.parameters())
    return [p for p in sup.parameters() if id(p) not in dead]


def transfer(ours: nn.Module, theirs: list[nn.Parameter]) -> None:
    """Copy ``ours``'s parameters into ``theirs`` in order; a ValueError if their number or any shape differs."""
    copy_in_order(ours.named_parameters(), ((f"parameter {k}", p) for k, p in enumerate(theirs)))


def _logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = net(x)
    return out[-1] if isinstance(out, (tuple, list)) else out


def official_twin(official, ours: nn.Module, arch: str, num_classes: int, x: torch.Tensor, net: dict) -> nn.Module:
    """The official pruned supernet carrying ``ours``'s weights, after checking both give the same logits on
    ``x`` (train mode: batch statistics, as both proxies use)."""
    sup = supernet(official, arch, num_classes, **net)
    transfer(ours, live_parameters(sup, arch))
    ours.train(), sup.train()
    a, b = _logits(ours, x), _logits(sup, x)
    scale = float(a.abs().max()) or 1.0
    if not torch.allclose(a, b, rtol=0, atol=1e-5 * scale):
        raise AssertionError(f"{arch}: the official supernet's logits differ from the suite's network's by "
                             f"{float((a - b).abs().max()):.3g} after the weight transfer")
    return sup


def _official_ntk(official, ctx, kaiming: bool) -> float:
    ours = te_nas.thin_ntk_network(ctx)  # as _te_nas_ntk builds it
    if kaiming:
        te_nas._kaiming_(ours, te_nas._generator(ctx), "fan_out")
    x = ctx.inputs
    sup = official_twin(official, ours, ctx.arch, ctx.num_classes, x, NTK_NET)
    with on_cpu():
        return float(official.get_ntk_n([(x, None)], [sup], recalbn=0, train_mode=True, num_batch=1)[0])


def _official_lr(official, ctx, kaiming: bool) -> float:
    torch.manual_seed(ctx.seed)  # as _te_nas_lr: the seeded net, then the generator's Kaiming draw, then the crops
    ours = te_nas.ThinRegionNetwork(ctx.arch, ctx.num_classes).to(device=ctx.device, dtype=ctx.dtype)
    g = te_nas._generator(ctx)
    if kaiming:
        te_nas._kaiming_(ours, g, "fan_in")
    batches = [te_nas.crops(ctx.inputs, g, te_nas.LR_BATCH) for _ in range(te_nas.LR_BATCHES)]
    sup = official_twin(official, ours, ctx.arch, ctx.num_classes, batches[0], LR_NET)
    size = (te_nas.LR_BATCH, 1, te_nas.LR_CROP, te_nas.LR_CROP)
    with on_cpu():
        lrc = official.Linear_Region_Collector(models=[sup], input_size=size, sample_batch=te_nas.LR_BATCHES,
                                               dataset=ctx.task, data_path=None, seed=ctx.seed)
        for b in batches:
            lrc.forward(sup, lrc.LRCounts[0], b)
        return float(lrc.LRCounts[0].getLinearReginCount())


def compare(official, task: str, arch: str, seed: int) -> list[dict]:
    """The four proxies on one cell: the suite's value and the official functions' on the official supernet."""
    batch = task_batch(task, None, BATCH, seed, True)
    ctx = make_context("nb201", task, arch, seed, batch, requested=PROXIES)
    src = task_images(task, None)
    note = "substitute images (no ImageNet16-120 files)" if src.substitute else ""
    rows = []
    for name in PROXIES:
        info = get_proxy(name)
        ours = info.compute(ctx)  # also lets the context hand out the images, as for the proxy
        kaiming = name.endswith("_kaiming")
        off = (_official_ntk if name.startswith("te_nas_ntk") else _official_lr)(official, ctx, kaiming)
        rows.append({"proxy": name, "ours": ours, "official": off, "note": note})
    return rows
