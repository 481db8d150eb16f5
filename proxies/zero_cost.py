"""Training-free (zero-cost) proxies, as defined by Abdelfattah et al. (ICLR 2021) and the papers they cite."""

from __future__ import annotations

import torch
from torch import nn

from proxybench.proxies.registry import register_proxy

_PRUNABLE = (nn.Conv2d, nn.Linear)


def _synflow(ctx, bn: bool) -> float:
    """SynFlow (Tanaka et al. 2020) as in zero-cost-nas: |w|, float64, one all-ones input, R = sum of
    outputs; score = sum over Conv2d/Linear weights of |w * dR/dw|. Values reach 1e60: rank metrics only."""
    net = ctx.network(bn=bn).double()
    with torch.no_grad():
        for t in net.state_dict().values():  # weights and BN buffers, like the reference's linearize()
            if t.is_floating_point():
                t.abs_()
    x = torch.ones((1, *ctx.input_shape), dtype=torch.float64, device=ctx.device)
    torch.sum(net(x)).backward()
    total = 0.0
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, _PRUNABLE) and m.weight.grad is not None:
                total += float((m.weight * m.weight.grad).abs().sum())
    return total


# cheap tier: the backward pass is of ONE all-ones image, not of the minibatch
_SYNFLOW_COST = dict(cost="forward+backward", tier="cheap",
                     cost_note="one forward+backward pass of one all-ones image, float64")
register_proxy("synflow", higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False,
               paper="Tanaka et al. 2020; Abdelfattah et al. ICLR 2021", bn=False, **_SYNFLOW_COST,
               description="SynFlow with BatchNorm removed (the reference setting)")(_synflow)
register_proxy("synflow_bn", higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False,
               paper="Tanaka et al. 2020; Abdelfattah et al. ICLR 2021", bn=True, **_SYNFLOW_COST,
               description="SynFlow with BatchNorm kept (train mode, batch of one all-ones image)")(_synflow)
