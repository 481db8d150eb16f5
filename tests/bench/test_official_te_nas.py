"""The TE-NAS official-code adapter without the official code: its constants, its refusal of a wrong directory and
the glue it puts around the official functions (single-path alphas, weight transfer, run-time patches)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from proxybench.tools import official_te_nas as te
from proxybench.tools.official import importing_from


def test_single_path_alphas_keep_exactly_the_cells_ops():
    arch = "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|"
    # the op of edge i <- j read off the string itself: node i's group, the token ending in ~j
    want = {f"{i}<-{tok.split('~')[1]}": tok.split("~")[0]
            for i, group in enumerate(arch.strip("|").split("|+|"), start=1) for tok in group.split("|")}
    keys = sorted(want)  # the official cell numbers its edges by the sorted keys
    edge2index = {k: n for n, k in enumerate(keys)}
    op_names = ["avg_pool_3x3", "none", "nor_conv_3x3", "skip_connect", "nor_conv_1x1"]  # any order
    w = torch.softmax(te.single_path_alphas(arch, edge2index, op_names, 1000), dim=-1)
    for key, op in want.items():
        row = w[edge2index[key]]
        assert row[op_names.index(op)] == 1.0  # exactly: the official forward multiplies the kept op by it
        assert int((row == 0).sum()) == len(op_names) - 1  # and skips the others (weight <= 0.01)


def test_transfer_copies_in_order_and_refuses_a_mismatch():
    src, dst = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 3)), nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 3))
    te.transfer(src, list(dst.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(src.parameters(), dst.parameters(), strict=True))
    with pytest.raises(ValueError, match="shape"):
        te.transfer(src, list(nn.Sequential(nn.Conv2d(1, 2, 1), nn.Linear(2, 3)).parameters()))
    with pytest.raises(ValueError, match="parameter tensors"):
        te.transfer(src, list(dst.parameters())[:-1])


def test_the_patched_torch_runs_what_todays_torch_refuses():
    a = (torch.rand(6, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    plain = torch.matmul(a.half(), (1 - a).T.half())
    with pytest.raises(RuntimeError, match="single memory location"):
        plain += plain.T  # calc_LR's line, as today's torch answers it
    shim = te._CpuTorch()
    res = shim.matmul(a.half(), (1 - a).T.half())
    res += res.T
    expected = torch.matmul(a, (1 - a).T)
    assert torch.equal(res.float(), expected + expected.T)
    ntk = a @ a.T + torch.eye(6)
    w, _ = shim.symeig(ntk)
    assert torch.allclose(w, torch.linalg.eigvalsh(ntk)) and bool((w[1:] >= w[:-1]).all())
    assert shim.cuda.current_device() == "cpu" and shim.zeros is torch.zeros


def test_cuda_calls_stay_on_the_cpu_only_inside_the_context():
    before = torch.Tensor.cuda
    x = torch.ones(2)
    with te.on_cpu():
        assert x.cuda() is x and x.cuda(device="cpu", non_blocking=True) is x
    assert torch.Tensor.cuda is before


def test_its_stubs_stand_in_only_while_the_official_code_imports(tmp_path):
    (tmp_path / "te_nas_fake_official.py").write_text("import datasets\nVALUE = datasets.MARK\n")
    path, had = list(sys.path), "datasets" in sys.modules
    before = sys.modules.get("datasets")
    stub = te._stub("datasets", MARK=7)
    with importing_from(tmp_path, stubs={"datasets": stub}):
        import te_nas_fake_official

        assert te_nas_fake_official.VALUE == 7
    assert sys.path == path and "te_nas_fake_official" not in sys.modules
    assert ("datasets" in sys.modules) == had and sys.modules.get("datasets") is before
