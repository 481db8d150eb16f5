"""The GradSign official-code adapter without the official code: its constants, its refusal of a wrong directory and
the glue around the official functions (the weight transfer's key map, the script's functions compiled alone, the
import that leaves sys.path and sys.modules as they were)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from proxybench.datasets import nb201
from proxybench.tools import official_gradsign as gs

ALL_OPS = "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|"


@pytest.mark.parametrize("official_ops", [("none", "avg_pool_3x3", "nor_conv_3x3", "nor_conv_1x1", "skip_connect"),
                                          ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "none", "avg_pool_3x3")])
def test_key_map_sends_each_weight_to_its_place_in_the_official_network(official_ops):
    net = nb201.build_network(ALL_OPS, "cifar10")
    keys = list(net.state_dict())
    m = gs.key_map(keys, nb201.parse_arch(ALL_OPS), official_ops)
    assert set(m) == set(keys)
    mapped = [v for v in m.values() if v is not None]
    assert len(mapped) == len(set(mapped))  # one official key per suite key
    # nothing but the cell edges' BatchNorms (no affine parameters nor statistics in the official cells) is left
    cell_bn = {k for k in keys if re.fullmatch(r"cells\.\d+\.edges\.\d\.2\..+", k)}
    assert cell_bn and {k for k, v in m.items() if v is None} == cell_bn
    j = official_ops.index
    assert m["stem.0.weight"] == "stem.net.0.weight" and m["stem.1.running_var"] == "stem.net.1.running_var"
    assert m["cells.0.edges.0.1.weight"] == f"stack_cell1.0.options.{j('nor_conv_3x3')}.op.1.weight"
    assert m["cells.4.edges.5.1.weight"] == f"stack_cell1.4.options.{5 * 5 + j('nor_conv_1x1')}.op.1.weight"
    assert m["cells.5.conv_a.1.weight"] == "reduction1.conv_a.op.1.weight"
    assert m["cells.5.conv_b.2.bias"] == "reduction1.conv_b.op.2.bias"
    assert m["cells.11.downsample.1.weight"] == "reduction2.residual.1.weight"
    assert m["cells.6.edges.2.1.weight"] == f"stack_cell2.0.options.{2 * 5 + j('nor_conv_1x1')}.op.1.weight"
    assert m["cells.16.edges.0.1.weight"] == f"stack_cell3.4.options.{j('nor_conv_3x3')}.op.1.weight"
    assert m["lastact.0.weight"] == "top.lastact.0.weight" and m["classifier.bias"] == "top.classifier.bias"
    # every parameter is carried over except the cell BNs' affine ones, which sit at their init (1, 0) and which the
    # official cells replace by the identity (2 x channels per conv edge per cell); count_params is the benchmark's
    # own count (tests/datasets check it)
    conv_edges = sum(o.startswith("nor_conv") for o in nb201.parse_arch(ALL_OPS))
    state = net.state_dict()
    carried = sum(state[k].numel() for k, v in m.items() if v is not None and k in dict(net.named_parameters()))
    assert carried + conv_edges * 5 * 2 * (16 + 32 + 64) == nb201.count_params(net)


def test_key_map_refuses_a_key_it_does_not_know():
    with pytest.raises(ValueError, match="no counterpart"):
        gs.key_map(["head.weight"], nb201.parse_arch(ALL_OPS), tuple(nb201.OPS))


def test_the_scripts_functions_run_without_the_rest_of_the_script(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import numpy as np\nimport not_installed_harness\nfrom torch import nn\n"
                      "raise SystemExit('the top level ran')\n"
                      "def helper(a):\n    return np.asarray(a) * 2\n"
                      "def score(a):\n    return float(np.nanmean(helper(a)))\n"
                      "def other():\n    return not_installed_harness\n")
    fns = gs._script_functions(script, ["helper", "score"], ["numpy", "torch"])
    assert fns["score"]([1.0, np.nan, 3.0]) == 4.0
    with pytest.raises(ValueError, match="no top-level missing"):
        gs._script_functions(script, ["score", "missing"], ["numpy"])


def test_transfer_refuses_a_cell_bn_away_from_its_init():
    net = nb201.build_network(ALL_OPS, "cifar10")
    with torch.no_grad():
        net.cells[0].edges[0][2].weight.fill_(2.0)
    with pytest.raises(ValueError, match="not at 1, 0"):
        gs.transfer(net, nb201.build_network(ALL_OPS, "cifar10"), ALL_OPS, tuple(nb201.OPS))
