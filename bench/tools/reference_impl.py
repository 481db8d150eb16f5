"""Reference-style implementations of the six classic zero-cost proxies (Abdelfattah et al. 2021).

Written the way the reference code works: every proxy on its own deep copy of the network with its own
forward/backward passes (grasp: two forwards and a double backward; jacob_cov through numpy's ``eig``).
They are the baseline of ``bench/tools/perf.py`` and an independent check of the shared-pass implementation in
``proxies/gradient.py`` (tests compare the two). Not used for scoring.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_LAYERS = (nn.Conv2d, nn.Linear)


def _layers(net):
    return [m for m in net.modules() if isinstance(m, _LAYERS)]


def grad_norm(net_orig, x, y) -> float:
    net = copy.deepcopy(net_orig)
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    return float(sum(m.weight.grad.norm() for m in _layers(net) if m.weight.grad is not None))


def snip(net_orig, x, y) -> float:
    # the reference multiplies each weight by a mask of ones and takes |dL/dmask| = |dL/dw * w|
    net = copy.deepcopy(net_orig)
    masks = {}
    for m in _layers(net):
        w = m.weight.detach().clone()
        del m.weight
        mask = torch.ones_like(w, requires_grad=True)
        masks[m] = (w, mask)
        m.weight = w * mask
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, [mk for _, mk in masks.values()], allow_unused=True)
    return float(sum(g.abs().sum() for g in grads if g is not None))


def grasp(net_orig, x, y) -> float:
    net = copy.deepcopy(net_orig)
    weights = [m.weight for m in _layers(net)]
    grad_w = torch.autograd.grad(F.cross_entropy(net(x), y), weights, allow_unused=True)
    grad_f = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True, allow_unused=True)
    z = sum((gw * gf).sum() for gw, gf in zip(grad_w, grad_f, strict=True) if gw is not None and gf is not None)
    if not torch.is_tensor(z):
        return 0.0
    z.backward()
    return float(sum((-w.detach() * w.grad).sum() for w in weights if w.grad is not None))


def fisher(net_orig, x, y) -> float:
    net = copy.deepcopy(net_orig)
    acts = {}

    def keep(m, _i, o):
        o.retain_grad()
        acts[m] = o

    hooks = [m.register_forward_hook(keep) for m in _layers(net)]
    F.cross_entropy(net(x), y).backward()
    for h in hooks:
        h.remove()
    total = 0.0
    for a in acts.values():
        if a.grad is None:
            continue
        prod = a.detach() * a.grad
        g_nk = prod.sum(dim=tuple(range(2, a.dim()))) if a.dim() > 2 else prod
        total += float(0.5 * g_nk.pow(2).mean(0).sum())
    return total


def jacob_cov(net_orig, x, y=None) -> float:
    net = copy.deepcopy(net_orig)
    x = x.detach().clone().requires_grad_(True)
    out = net(x)
    out.backward(torch.ones_like(out))
    jac = x.grad.reshape(x.shape[0], -1).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(jac)
    if not np.isfinite(corr).all():
        return float("nan")
    v = np.linalg.eig(corr)[0].real
    k = 1e-5
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def synflow(net_orig, build_without_bn, input_shape) -> float:
    net = build_without_bn()
    net.load_state_dict(net_orig.state_dict(), strict=False)  # the reference's prunable copy without BN
    net = net.double()
    with torch.no_grad():
        for t in net.state_dict().values():
            t.abs_()
    out = net(torch.ones((1, *input_shape), dtype=torch.float64))
    torch.sum(out).backward()
    with torch.no_grad():
        return float(sum((m.weight * m.weight.grad).abs().sum() for m in _layers(net) if m.weight.grad is not None))


def all_six(net_orig, x, y, build_without_bn, input_shape) -> dict:
    return {"grad_norm": grad_norm(net_orig, x, y), "snip": snip(net_orig, x, y), "grasp": grasp(net_orig, x, y),
            "fisher": fisher(net_orig, x, y), "jacob_cov": jacob_cov(net_orig, x, y),
            "synflow": synflow(net_orig, build_without_bn, input_shape)}
