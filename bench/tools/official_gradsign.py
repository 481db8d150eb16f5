"""GradSign against its official code (github.com/cmu-catalyst/GradSign): ``gradsign`` and ``gradsign_mean``.

Run by ``proxybench official gradsign --code DIR`` (``bench/tools/official.py``). Per cell it scores the suite's
two proxies on the suite's context (seeded NB201 network, the task's minibatch), then the official code on the
same weights and images:

- ``gradsign`` (the sum): the official NB201 pipeline of ``zero-cost-nas-code/nasbench2_pred.py``: the official
  network class (``foresight.models.nasbench2.get_model_from_arch_str``) holding the suite's weights, then
  ``foresight.pruners.predictive.find_measures(..., measure_names=["grad_conflict"])`` on a one-batch loader.
  The official class is another form of the same network: every cell instantiates all five ops of every edge
  (those not in the arch never run, and their weights get no gradient, which adds 0 to the sum), the cell convs
  have a bias and the cell BatchNorms no affine parameters nor running statistics. The suite's weights go over
  by name (:func:`key_map`); the cell conv biases are set to 0, which with the suite's cell BN at its init
  (weight 1, bias 0) makes the two networks the same function; a forward pass of both on the batch checks it.
- ``gradsign_mean``: ``get_grad_conflict`` of ``zero-cost-nas-code/gradsign.py`` (the NASWOT-harness script,
  which takes ``np.nanmean``) on the suite's own network: the script cannot be imported (it parses arguments and
  runs its search at the top level, with imports of a harness that is not in the repository), so its two
  functions are compiled from the file's syntax tree at run time, with the script's own numpy/torch imports.
"""

from __future__ import annotations

import ast
import importlib
import re
import types
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from proxybench.datasets import nb201
from proxybench.proxies import get_proxy
from proxybench.proxies import gradsign as ours
from proxybench.runner import Study, make_context, task_batch
from proxybench.tools.official import importing_from, require

REPO = "cmu-catalyst/GradSign"
COMMIT = "26412be8000a19c1a1147b2bb9399a7d1003eaf1"
PROXIES = ("gradsign", "gradsign_mean")
# the cells of the throw-away comparison this adapter replaces: two conv-heavy, mixed, all-1x1, two with none
CELLS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
    "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|",
    "|none~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
)
TASKS = ("cifar10", "ImageNet16-120")
HOW = ("Both sides see the same seeded NB201 network (the suite's builder, PyTorch-default init under the seed) "
       "and the same images and labels: the first 64 of the task's minibatch (the suite's batch of the default "
       "study), in float32 on the CPU. gradsign: the official NB201 pipeline of zero-cost-nas-code/nasbench2_pred.py "
       "from `foresight.pruners.predictive.find_measures(net, [(x, y)], ('random', 1, classes), cpu, "
       "measure_names=['grad_conflict'])` down (its `get_prunable_copy`, train mode, one backward pass per image "
       "alone, `np.nansum` of |sum of signs|), on the official network class `nasbench2.get_model_from_arch_str` "
       "holding the suite's weights, copied by name; its cell conv biases (the suite's cell convs have none) are set "
       "to 0, its unused ops (each edge holds all five) keep their own init and never run, and a forward pass of "
       "both networks on the batch checks that they compute the same function. gradsign_mean: `get_grad_conflict` of "
       "zero-cost-nas-code/gradsign.py (the NASWOT-harness script, `np.nanmean`) on the suite's network in train "
       "mode; that script runs its search at import, so its two functions are compiled from its syntax tree with "
       "its own numpy/torch imports. Nothing of the official code is patched; it is imported from DIR with "
       "sys.path and sys.modules restored afterwards and no bytecode written into DIR.")

_CODE = "zero-cost-nas-code"
_FILES = (f"{_CODE}/foresight/pruners/predictive.py", f"{_CODE}/foresight/pruners/measures/grad_conflict.py",
          f"{_CODE}/foresight/models/nasbench2.py", f"{_CODE}/foresight/models/nasbench2_ops.py",
          f"{_CODE}/gradsign.py")
_SCRIPT_FUNCTIONS = ("get_flattened_metric", "get_grad_conflict")
_SCRIPT_IMPORTS = ("numpy", "torch", "copy")  # the only modules of the script's own imports its functions use
_CELLS_PER_STAGE = 5
_FORWARD_RTOL = 1e-4  # logits of the two network forms: equal up to float32 rounding, or the transfer is wrong


def _script_functions(path: Path, names: Iterable[str], modules: Iterable[str]) -> dict:
    """The top-level functions ``names`` of the script ``path``, compiled with only its top-level imports of
    ``modules`` (the rest of the script, its argument parsing and its main loop, never runs)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names, modules = tuple(names), tuple(modules)

    def wanted_import(node):
        if isinstance(node, ast.Import):
            return all(a.name.split(".")[0] in modules for a in node.names)
        return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in modules and not node.level

    body = [n for n in tree.body if wanted_import(n)]
    body += [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    found = {n.name for n in body if isinstance(n, ast.FunctionDef)}
    if found != set(names):
        raise ValueError(f"{path} defines no top-level {', '.join(sorted(set(names) - found))}")
    namespace = {"__name__": f"official_{path.stem}", "__file__": str(path)}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)
    return {n: namespace[n] for n in names}


def load(code: Path) -> types.SimpleNamespace:
    """The official pipeline (``predictive``, the network module ``nasbench2``, the op order of its cells
    ``ops``) and the script's ``get_grad_conflict`` (``mean_fn``) from the checkout ``code``."""
    code = Path(code)
    require(code, *_FILES, repo=REPO, commit=COMMIT)
    with importing_from(code / _CODE, "foresight"):
        predictive = importlib.import_module("foresight.pruners.predictive")
        nasbench2 = importlib.import_module("foresight.models.nasbench2")
    fns = _script_functions(code / _CODE / "gradsign.py", _SCRIPT_FUNCTIONS, _SCRIPT_IMPORTS)
    return types.SimpleNamespace(predictive=predictive, nasbench2=nasbench2, ops=tuple(nasbench2.OPS),
                                 mean_fn=fns["get_grad_conflict"])


def key_map(keys: Iterable[str], arch_ops: tuple[str, ...], official_ops: tuple[str, ...],
            cells_per_stage: int = _CELLS_PER_STAGE) -> dict[str, str | None]:
    """The official network's state-dict key of every key of the suite's :class:`~proxybench.datasets.nb201.
    NB201Network` state dict (``keys``), or None for the cell-edge BatchNorm entries (the official cell BNs have
    no affine parameters nor running statistics).

    The suite's ``cells`` is one sequence (stage 1's cells, a reduction, stage 2's, a reduction, stage 3's);
    the official network has ``stack_cell{1,2,3}`` and ``reduction{1,2}``, and its cell holds every op of
    every edge: edge e's op o is ``options[len(official_ops) * e + official_ops.index(o)]``."""
    per = cells_per_stage + 1
    out: dict[str, str | None] = {}
    for key in keys:
        m = re.fullmatch(r"cells\.(\d+)\.(.+)", key)
        if m is None:
            new = re.sub(r"^stem\.", "stem.net.", key)
            new = re.sub(r"^(lastact|classifier)\.", r"top.\1.", new)
            if new == key:
                raise ValueError(f"no counterpart in the official network for {key!r}")
            out[key] = new
            continue
        k, rest = int(m.group(1)), m.group(2)
        stage, pos = divmod(k, per)
        if pos == cells_per_stage:  # a reduction block
            new = re.sub(r"^(conv_[ab])\.", r"\1.op.", rest)
            new = re.sub(r"^downsample\.", "residual.", new)
            out[key] = f"reduction{stage + 1}.{new}"
            continue
        e = re.fullmatch(r"edges\.(\d+)\.(\d+)\.(.+)", rest)
        if e is None:
            raise ValueError(f"no counterpart in the official network for {key!r}")
        edge, layer, name = int(e.group(1)), int(e.group(2)), e.group(3)
        if layer == 2:  # the edge's BatchNorm
            out[key] = None
            continue
        option = len(official_ops) * edge + official_ops.index(arch_ops[edge])
        out[key] = f"stack_cell{stage + 1}.{pos}.options.{option}.op.{layer}.{name}"
    return out


def transfer(suite_net: torch.nn.Module, official_net: torch.nn.Module, arch: str, official_ops) -> None:
    """Put the suite's weights into the official network (:func:`key_map`), its used cell conv biases to 0."""
    arch_ops = nb201.parse_arch(arch)
    state, suite = official_net.state_dict(), suite_net.state_dict()
    mapping = key_map(suite, arch_ops, official_ops)
    for key, value in suite.items():  # a cell-edge BN: the official one is the identity-affine one, as at init
        if mapping[key] is None and (key.endswith(".weight") and not torch.all(value == 1)
                                     or key.endswith(".bias") and torch.any(value)):
            raise ValueError(f"{key}: the official cell BN has no affine parameters; this one is not at 1, 0")
    for key, value in suite.items():
        new = mapping[key]
        if new is None:
            continue
        if new not in state:
            raise ValueError(f"{key} -> {new}: no such entry in the official network")
        if state[new].shape != value.shape:
            raise ValueError(f"{key} -> {new}: shape {tuple(value.shape)} vs the official {tuple(state[new].shape)}")
        state[new] = value.clone()
    for edge, op in enumerate(arch_ops):
        if op.startswith("nor_conv"):
            option = len(official_ops) * edge + official_ops.index(op)
            for stage in range(3):
                for pos in range(_CELLS_PER_STAGE):
                    b = f"stack_cell{stage + 1}.{pos}.options.{option}.op.1.bias"
                    state[b] = torch.zeros_like(state[b])
    official_net.load_state_dict(state, strict=True)


def compare(official, task: str, arch: str, seed: int) -> list[dict]:
    """The suite's gradsign/gradsign_mean and the official code's on one cell (see the module docstring)."""
    x, y = task_batch(task, None, Study.batch_size, seed, Study.augment)
    ctx = make_context("nb201", task, arch, seed, (x, y), requested=PROXIES)
    values = {p: get_proxy(p).compute(ctx) for p in PROXIES}
    xb = ctx.inputs[:ours.BATCH_SIZE].contiguous()
    yb = ctx.targets[:ours.BATCH_SIZE]
    classes = nb201.NUM_CLASSES[task]
    suite_net = ctx.network(bn=True)
    with torch.random.fork_rng(devices=[]):  # the official constructors draw their own init: leave torch's RNG
        off_net = official.nasbench2.get_model_from_arch_str(arch, classes)
        if official.nasbench2.get_arch_str_from_model(off_net) != arch:  # the check of nasbench2_pred.py
            raise ValueError(f"the official network of {arch} reads back as another arch")
        transfer(suite_net, off_net, arch, official.ops)
        got = official.predictive.find_measures(off_net, [(xb, yb)], ("random", 1, classes), torch.device("cpu"),
                                                measure_names=["grad_conflict"])
        mean_net = ctx.network(bn=True)
        mean_net.train()
        mean = official.mean_fn(net=mean_net, inputs=xb, targets=yb, loss_fn=F.cross_entropy)
    with torch.no_grad():  # the two forms of the network compute the same function (train mode, batch statistics)
        a, b = suite_net.train()(xb), off_net.train()(xb)
    gap = float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
    if gap > _FORWARD_RTOL:
        raise ValueError(f"{arch}: the official network with the suite's weights gives other logits ({gap:.1e})")
    note = ("official network: the same logits" if gap == 0 else
            f"official network: logits within {gap:.0e} relative")
    return [{"proxy": "gradsign", "ours": values["gradsign"], "official": float(got["grad_conflict"]), "note": note},
            {"proxy": "gradsign_mean", "ours": values["gradsign_mean"], "official": float(mean),
             "note": "official gradsign.py (np.nanmean) on the suite's network"}]
