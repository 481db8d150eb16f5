"""The AZ-NAS adapter of ``proxybench official`` without the official code: its constants, the error without a
checkout, and its glue (state-dict names of the official network, weight transfer, the sign view, the import)."""

from __future__ import annotations

import pytest
import torch

from proxybench.datasets import nb201
from proxybench.tools import official_az_nas as adapter

ALL_OPS = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"


def test_official_names_follow_the_official_layout():
    # xautodl's InferCell keeps one ``layers`` entry per edge, in the arch string's order, and its ReLUConvBN and
    # ResNetBasicblock wrap ReLU-conv-BN in ``.op``; TinyNetwork's stem, shortcut, lastact and classifier are named
    # like the suite's (NB201/custom/tss_model.py, xautodl/models/cell_operations.py)
    sd = {adapter.official_name(k): v.shape for k, v in nb201.build_network(ALL_OPS, "cifar10").state_dict().items()}
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    cell0 = {k for k in sd if k.startswith("cells.0.")}
    assert cell0 == {  # the three conv edges 0, 1, 5; skip, pool and none hold nothing
        *(f"cells.0.layers.{e}.op.1.weight" for e in (0, 1, 5)),
        *(f"cells.0.layers.{e}.op.2.{b}" for e in (0, 1, 5) for b in bn)}
    assert sd["cells.0.layers.0.op.1.weight"] == (16, 16, 3, 3) and sd["cells.0.layers.1.op.1.weight"] == (16, 16, 1, 1)
    assert sd["cells.5.conv_a.op.1.weight"] == (32, 16, 3, 3) and sd["cells.5.conv_b.op.1.weight"] == (32, 32, 3, 3)
    assert sd["cells.5.downsample.1.weight"] == (32, 16, 1, 1) and sd["cells.11.conv_a.op.2.running_var"] == (64,)
    assert {"stem.0.weight", "stem.1.weight", "lastact.0.weight", "classifier.weight"} <= set(sd)
    assert not any(".edges." in k for k in sd)


def test_transfer_gives_the_same_network():
    torch.manual_seed(0)
    src = nb201.build_network(ALL_OPS, "cifar10")
    torch.manual_seed(1)
    dst = nb201.build_network(ALL_OPS, "cifar10")
    x = torch.randn(4, 3, 32, 32)
    assert not torch.equal(src.train()(x), dst.train()(x))
    adapter.transfer(src, dst, rename=lambda k: k)
    assert torch.equal(src.train()(x), dst.train()(x))
    with pytest.raises(ValueError, match="networks differ"):
        adapter.transfer(nb201.build_network(nb201.arch_str(["nor_conv_3x3"] * 6)), dst, rename=lambda k: k)


def test_sign_view_gives_the_suite_signs_in_order():
    g = torch.Generator().manual_seed(0)
    signs = [adapter.az.signs((2, 3, 4, 4), g, torch.empty(0)), adapter.az.signs((2, 6, 2, 2), g, torch.empty(0))]
    view = adapter._TorchWithSigns(signs)
    for s in signs:  # the official expression
        assert torch.equal((view.bernoulli(view.ones_like(s) * 0.5) - 0.5) * 2, s)
    assert view.left == 0 and view.mm is torch.mm and view.float32 is torch.float32
    with pytest.raises(RuntimeError, match="more sign tensors"):
        view.bernoulli(torch.ones(1))
    with pytest.raises(RuntimeError, match="shape"):
        adapter._TorchWithSigns(signs).bernoulli(torch.ones(2, 3))
