"""Cost baselines: parameter count and FLOPs, the baselines many proxies fail to beat."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from proxybench.proxies.registry import register_proxy


@register_proxy("params", higher_is_better=True, family="baseline", needs_data=False, needs_labels=False,
                paper="baseline (NAS-Bench-Suite-Zero, White et al. 2022)", cost="free", shares="network",
                cost_note="counts the parameters of the cell's shared network")
def params(ctx) -> float:
    """Number of trainable parameters (BN affine included, as the benchmarks count them)."""
    return float(sum(p.numel() for p in ctx.shared_network().parameters()))


@register_proxy("flops", higher_is_better=True, family="baseline", needs_data=False, needs_labels=False,
                paper="baseline (NAS-Bench-Suite-Zero, White et al. 2022)", cost="forward", tier="cheap",
                shares="network", cost_note="one forward pass of one image, no gradient")
def flops(ctx) -> float:
    """FLOPs of one forward pass of one image (torch FlopCounterMode: 2 per multiply-add, conv and linear)."""
    net = ctx.shared_network()
    was_training = net.training
    net.eval()
    x = torch.zeros((1, *ctx.input_shape), device=ctx.device, dtype=ctx.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    net.train(was_training)
    return float(counter.get_total_flops())
