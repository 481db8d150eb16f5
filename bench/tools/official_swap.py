"""SWAP against its official code (github.com/pym1024/SWAP): ``swap`` and ``swap_reg``.

Run by ``proxybench official swap --code DIR`` (``bench/tools/official.py``). Per cell it scores the suite's two
proxies on the suite's context, then the official ``SWAP`` class (``src/metrics/swap.py``) on the suite's seeded
NB201 network (the official repository has no NB201 network: its one script, ``correlation.py``, scores DARTS
cells) with the same 16 images, in the loop of ``correlation.py``: 32 times re-initialise, ``reinit``,
``forward``, ``clear``, and the mean. Two departures from that script, both to compare the same numbers:

- the re-initialisation is ``network_weight_gaussian_init(net)`` called once per repeat after
  ``torch.manual_seed(seed)``, which draws exactly the suite's numbers; ``correlation.py`` calls it through
  ``net.apply`` (every module re-initialises its subtree once per ancestor) from an unseeded global RNG: other
  draws of the same distribution, so its mean could only agree to the sampling error of 32 repeats;
- the official ``SWAP`` is built with ``regular=True`` and the suite's NB201 ``mu``, ``sigma`` (the public code
  gives none for NB201), so one official pass gives both values: the raw count (the object's ``swap.swap``,
  read before ``clear``) for ``swap``, the returned regularised count for ``swap_reg``.

The suite runs NB201 networks in channels-last layout and the official code in the default one: a ReLU input
within rounding of 0 can change side between the two convolution kernels, which moves a pass's count by a few
patterns. The note of each row says how many of the 32 passes gave the same count.
"""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import numpy as np
import torch

from proxybench.proxies import get_proxy
from proxybench.proxies import swap as ours
from proxybench.runner import Study, make_context, task_batch
from proxybench.tools.official import importing_from, require

REPO = "pym1024/SWAP"
COMMIT = "f6049f7c979b0cfc9ac5a13666fedb79dfe3cce8"
PROXIES = ("swap", "swap_reg")
# cells of the throw-away comparison this adapter replaces, the cheaper ones for the official code (its
# torch.unique over up to 0.9M neuron rows costs 10-60 s CPU per cell): near saturation, mixed, with none edges,
# without any conv edge
CELLS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
    "|none~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
    "|avg_pool_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|avg_pool_3x3~1|skip_connect~2|",
)
TASKS = ("cifar10", "ImageNet16-120")
HOW = ("Both sides see the same seeded NB201 network (the suite's builder; the official repository has no NB201 "
       "network) and the same images: the first 16 of the task's minibatch (the suite's batch of the default "
       "study), train mode, float32 on the CPU. The official side is the `SWAP` class of src/metrics/swap.py "
       "(forward hooks on the ReLUs, `torch.unique` of the transposed sign matrix) in the loop of correlation.py: "
       "32 times `network_weight_gaussian_init` of src/utils/utilities.py, `reinit`, `forward`, `clear`, and the "
       "mean; the re-initialisation is called once per repeat after `torch.manual_seed(seed)` (correlation.py "
       "calls it through `net.apply`, unseeded: other draws of the same distribution), which draws exactly the "
       "suite's numbers. `SWAP` is built with `regular=True`, device 'cpu' and the suite's NB201 mu and sigma (the "
       "public code gives none for NB201): its returned values give swap_reg, its raw count (`swap.swap`, read "
       "before `clear`) swap. One run-time patch: `count_parameters` of src/utils/utilities.py calls "
       "`np.sum(generator)`, which numpy >= 2 refuses; that module's `np` is replaced by a view of numpy whose "
       "`sum` first makes a list of a generator. The code is imported from DIR with sys.path and sys.modules "
       "restored afterwards and no bytecode written into DIR.")

_FILES = ("src/metrics/swap.py", "src/utils/utilities.py")


def numpy_summing_generators() -> types.ModuleType:
    """numpy, except that ``sum`` of a generator sums the list of its items (numpy < 2 did so, with a warning;
    numpy >= 2 raises TypeError): what the official ``count_parameters`` needs."""
    view = types.ModuleType("numpy_summing_generators")
    view.__dict__.update(np.__dict__)

    def sum_(a, *args, **kwargs):
        return np.sum(list(a) if isinstance(a, types.GeneratorType) else a, *args, **kwargs)

    view.sum = sum_
    return view


def load(code: Path) -> types.SimpleNamespace:
    """The official ``SWAP`` class and ``network_weight_gaussian_init`` from the checkout ``code``."""
    code = Path(code)
    require(code, *_FILES, repo=REPO, commit=COMMIT)
    with importing_from(code, "src"):
        metrics = importlib.import_module("src.metrics.swap")
        utilities = importlib.import_module("src.utils.utilities")
    utilities.np = numpy_summing_generators()  # the module object is this load's own (out of sys.modules)
    return types.SimpleNamespace(SWAP=metrics.SWAP, init=utilities.network_weight_gaussian_init)


def compare(official, task: str, arch: str, seed: int) -> list[dict]:
    """The suite's swap/swap_reg and the official code's on one cell (see the module docstring)."""
    x, y = task_batch(task, None, Study.batch_size, seed, Study.augment)
    ctx = make_context("nb201", task, arch, seed, (x, y), requested=PROXIES)
    values = {p: get_proxy(p).compute(ctx) for p in PROXIES}
    counts = ctx.memo[("_swap", ours.SAMPLES, ours.REPEATS)]["counts"]
    net = ctx.network(bn=True).to(memory_format=torch.contiguous_format)
    net.train()
    inputs = ctx.inputs[:ours.SAMPLES].contiguous()
    raw, regular = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sw = official.SWAP(model=net, inputs=inputs, device="cpu", seed=seed, regular=True,
                           mu=ours.SWAP_REG_MU[task], sigma=ours.SWAP_REG_SIGMA)
        for _ in range(ours.REPEATS):
            official.init(net)
            sw.reinit()
            regular.append(sw.forward())
            raw.append(sw.swap.swap)
            sw.clear()
    same = sum(int(a == b) for a, b in zip(counts, raw, strict=True))
    diff = max(abs(a - b) for a, b in zip(counts, raw, strict=True))
    note = f"same count in {same}/{len(raw)} passes, at most {diff} apart"
    return [{"proxy": "swap", "ours": values["swap"], "official": float(np.mean(raw)), "note": note},
            {"proxy": "swap_reg", "ours": values["swap_reg"], "official": float(np.mean(regular)), "note": note}]

