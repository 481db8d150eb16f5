"""The VKDNW official-code adapter (bench/tools/official_vkdnw.py): its constants and glue, without the official
code."""

from __future__ import annotations

import pytest
import torch

from proxybench.datasets import nb201
from proxybench.tools import official_vkdnw as A

SMALL = "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|none~0|avg_pool_3x3~1|skip_connect~2|"


def _net(arch, seed):
    torch.manual_seed(seed)
    return nb201.build_network(arch, "cifar10").eval()


def test_transfer_gives_the_same_network_and_refuses_another_cell():
    src, dst = _net(SMALL, 0), _net(SMALL, 1)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(src(x), dst(x))
    A.transfer(src, dst)
    assert torch.equal(src(x), dst(x))
    other = _net("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|avg_pool_3x3~1|skip_connect~2|", 0)
    with pytest.raises(ValueError):  # a 3x3 where the 1x1 was: the shapes differ
        A.transfer(src, other)
    with pytest.raises(ValueError):  # fewer conv edges: fewer tensors
        A.transfer(src, _net("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 0))


def test_cloned_parameters_let_torch_func_write_into_what_it_reads():
    """The official get_jacobian_index writes one element of a flattened parameter inside jacrev: refused on the
    captured parameter itself, allowed on the clones the adapter's patch yields; the instance is restored."""
    lin = torch.nn.Linear(3, 2)

    def f(v):
        w = dict(lin.named_parameters())["weight"].detach().flatten()
        w[0] = v
        return torch.func.functional_call(lin, {"weight": w.reshape(2, 3)}, (torch.ones(1, 3),)).sum()

    v = lin.weight.detach().flatten()[0].clone()
    with pytest.raises(RuntimeError, match="in-place"):
        torch.func.grad(f)(v)
    with A.cloned_parameters(lin):
        assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
        assert float(torch.func.grad(f)(v)) == pytest.approx(1.0)  # d sum(W 1 + b) / d W[0, 0]
    assert "named_parameters" not in vars(lin)
