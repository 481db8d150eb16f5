"""A plugin: your own search space (and a proxy) for proxybench, in one file.

    proxybench run --plugin tests/plugins/toy_space.py --space toy --sample all --proxies params,flops,synflow,toy_depth
    proxybench report --plugin tests/plugins/toy_space.py --cache <the cache>
    proxybench compare toy_depth --plugin tests/plugins/toy_space.py --space toy --sample all --baselines params,synflow

The space: 30 small CNNs on CIFAR-10, keyed ``w<width>-d<depth>-k<kernel>``. The accuracies below are made up for
the example; yours are what your cells reached when trained.
"""

from torch import nn

from proxybench.datasets import Space, register_space
from proxybench.proxies.registry import register_proxy

# the table: one row per cell, its key and its trained accuracy (%)
ARCHS = [f"w{w}-d{d}-k{k}" for w in (2, 4, 8, 16, 32) for d in (1, 2, 3) for k in (1, 3)]
ACCURACY = [round(40 + 7 * w.bit_length() + 2.5 * d + 3 * (k == 3) + (w * 7 + d * 3 + k) % 5 * 0.7, 2)
            for w in (2, 4, 8, 16, 32) for d in (1, 2, 3) for k in (1, 3)]
TABLE = {"arch": ARCHS, "test_acc": ACCURACY}


def build(arch: str, task: str, bn: bool = True) -> nn.Module:
    """The network of a cell: ``d`` conv-BN-ReLU layers of ``w`` channels and kernel ``k``, pooled, a linear head."""
    w, d, k = (int(part[1:]) for part in arch.split("-"))
    layers, c = [], 3
    for _ in range(d):
        layers += [nn.Conv2d(c, w, k, padding=k // 2, bias=False), nn.BatchNorm2d(w) if bn else nn.Identity(),
                   nn.ReLU()]
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


# task cifar10 (the default): 10 classes, 32x32 CIFAR-10 images for the proxies that read images
register_space(Space.from_table("toy", TABLE, build, description="30 small CNNs (the plugin example)"))


@register_proxy("toy_depth", higher_is_better=True, family="baseline", needs_data=False, needs_labels=False,
                paper="plugin example", cost="free")
def toy_depth(ctx) -> float:
    """Number of convolutions of the network."""
    return float(sum(isinstance(m, nn.Conv2d) for m in ctx.network().modules()))
