"""VKDNW (Týbl & Neumann, CVPR 2025): the entropy of the deciles of an empirical Fisher information spectrum.

Followed: the official code, github.com/ondratybl/VKDNW at 6901b65 (``NB201/ZeroShotProxy/compute_vkdnw_score.py``
as ``NB201/tss_general_.py`` runs it; the rankings of ``NB201/tss_utils.py`` and ``NB201/paper_preparation.ipynb``
as of 2b67433^, the commit that deleted them). Per cell:

1. Re-initialise as the code's ``init_model(model, 'kaiming_norm_fanin')``: every ``nn.Conv2d`` / ``nn.Linear``
   weight from kaiming_normal(fan_in, relu) = N(0, 2 / fan_in), their biases 0, ``nn.BatchNorm2d`` /
   ``nn.GroupNorm`` affine weight 1 and bias 0. Draws in float32 from a generator seeded with ``ctx.seed``
   (modules in order), then the input.
2. 64 images drawn from N(0, 1) (the script's ``--batch_size 64`` with ``trainloader=None``): no data.
3. The network in eval mode: BatchNorm normalises with its running statistics, mean 0 and variance 1 in a
   fresh network (so nearly the identity), and each sample is computed on its own (the code vmaps over them).
4. The parameters: the FIRST ``params_grad_len = 128`` tensors of ``named_parameters()``, i.e. of all parameter
   tensors in module order (conv and linear weights, BatchNorm weights AND biases, the classifier's weight and
   bias): on a large NB201 cell the 128 end in the first or second stage and the classifier is left out. Of
   each, ONE scalar: its first element (flat index 0), not a multiplicative scale of the tensor. The code's
   ``get_jacobian_index`` takes ``torch.linspace(0, numel - 1, steps=p)`` of each tensor with p = 1, i.e. index 0
   (its default ``p = 0.`` selects no element and fails); the paper's runs of Nov 12, 2024 (Table 1) used the
   earlier version that took ``flatten()[0:1]``: the same element.
5. Per-sample Jacobians J_n (K x T, K classes, T <= 128) of the LOGITS (not log-softmax) w.r.t. those scalars,
   and the code's ``cholesky_covariance`` of the smoothed probabilities p = (1 - a) softmax + a / K, a = 0.05:
   the lower-triangular L_n with L_n L_n^T = diag(p) - p p^T (Tanabe & Sagae 1992). The code writes a as a
   float16 tensor, so 1 - a = 0.9501953 and a / K are float16 and p sums to 1.00017 (L L^T then differs from the
   covariance by ~1e-3); kept, as the code's q_j = 1 - sum_{i<=j} p_i (see ``cholesky_of_covariance``).
   The Fisher: F = mean_n A_n^T A_n with A_n = L_n J_n (the code's product), i.e. J^T L^T L J. The Fisher of the
   softmax likelihood would be J^T (diag(p) - p p^T) J = J^T L L^T J (A_n = L_n^T J_n): the code's product is
   followed; L's last column is 0, so the last logit never enters.
6. The spectrum: the code's ``torch.svd(F).S``, i.e. the absolute values of the eigenvalues of the symmetric F,
   here by ``eigvalsh`` in float64. The code's SVD is float32: it returns about 1e-7 of the largest eigenvalue
   for every eigenvalue below that, and on NB201 the spectrum spans up to ~27 decades (largest ~1e6 to 1e11,
   lowest deciles 1e-16 to 1e-3), so its lowest deciles are rounding: measured against the official code on 8
   NB201 cells at seed 0, 2e-5 to 1.8e-3 relative, and 7% on one cifar10 cell whose floor covers 5 deciles
   (official 0.3445, exact 0.3193); by ``proxybench official vkdnw`` (reports/official/vkdnw.md: 5 cifar10 cells,
   seed 42, the official ``compute_nas_score`` on the official network holding the same weights and images)
   median 2.1e-3, largest 1.7e-2 (``vkdnw_svd32``: 6.9e-5 and 2.1e-4); the exact spectrum of the official
   Fisher agrees with ``vkdnw`` to 2e-6 - 2.3e-4. The
   default follows the quantity the code means (its value does not depend on float32 rounding, LAPACK or the
   GPU's SVD); ``vkdnw_svd32`` rounds F to float32 and takes its float32 SVD (CPU LAPACK), as the code; the
   published runs used a GPU SVD, whose floor is of the same size but not the same numbers.
7. The 9 deciles ``torch.quantile(s, torch.arange(0.1, 1., 0.1))`` (linear interpolation of the sorted values),
   divided by their sum + 1e-10; the Shannon entropy -sum t log(t + 1e-10), natural log, not divided by log 9:
   ``vkdnw``, the code's ``vkdnw_entropy`` (the paper's Eq. (11) VKDNW). Higher is better (the code ranks it
   ascending). A network whose output ignores its input (all-'none' cell) has every decile 0 and scores 0.

Precision: the Jacobian in ``ctx.dtype`` (float32; the code too), everything after it in float64. Scores in
float32 and float64 agree to ~1e-7 relative on NB201 cells. ``vkdnw_svd32`` reproduces the official scores to
6e-6 - 3e-4 on 7 of the 8 cells and 1.2e-2 on the one above (the floor's rounding is not the code's own).

The size term. The code also returns ``vkdnw_dim`` = ℵ, the number of parameter tensors of the WHOLE network
(``len(list(model.named_parameters()))``, not capped at 128; "#trainable_layers"), and every score it reports as
VKDNW (Table 1's VKDNW_single; the VKDNW member of VKDNW_agg) ranks the tuples (ℵ, entropy) lexicographically
(pandas ``rank(method='dense')`` of the tuples, ascending): by ℵ first, the entropy within equal ℵ. The paper's
Eq. (12) writes VKDNW_single = ℵ + VKDNW (as a third-party summary of the paper quotes it; the paper's text was
not at hand here); ``vkdnw_single`` returns that sum. It orders
networks as the code's tuples do for every pair whose ℵ differ by more than ln 9 = 2.197 (the entropy of 9
values lies in [0, ln 9]): always on NB201 (ℵ = 21 + 45 x the number of conv edges of the cell: each adds a
conv weight and a BN weight and bias in each of the 15 cells) and on NB101 / NDS networks, whose parameter
tensors come in conv-BN units of 3; a pair whose ℵ differ by 1 or 2 (a layer with or without a bias) could be
ordered otherwise. Ties: the code's dense rank gives tied tuples (in practice only entropy-0 networks) one rank.
The official-numerics form of VKDNW_single is vkdnw_single - vkdnw + vkdnw_svd32 (ℵ + the float32-SVD entropy).

VKDNW_agg (not registered: it ranks a SET of candidates; the suite's core builds it from cached scores). The
official aggregation (``paper_preparation.ipynb``, "Ablation: add components", the source of Table 1's
VKDNW_agg; the same sum is ``vkdnw_comb_rank`` in ``tss_utils.get_scores``) is, over the candidates,

    VKDNW_agg = log R(vkdnw_single) + log R(az_expressivity) + log R(az_trainability) + log R(flops)
                + log R(jacob_cov)

five components, each weight 1, R = the ascending rank among the candidates (pandas ``rank()``: average rank
for ties; the dense rank of the (ℵ, entropy) tuples for the VKDNW term), so a higher value is better in all five
(higher VKDNW_single, expressivity, trainability, FLOPs, jacov). No division by the number of candidates
(AZ-NAS's log(rank / m): a constant shift). jacov NaNs are set to the minimum jacov first (tied with the
lowest). The members as the official code computes them: expressivity and trainability of AZ-NAS's
``compute_az_nas_score`` (random input, kaiming init; its progressivity is NOT a member); FLOPs of the
NATS-Bench API (``get_compute_costs(dataset)['flops']``, the benchmark's count; the suite's ``flops`` counts the
same convolutions and linear layers); jacov of the repository's ``compute_jacov_score`` (kaiming_normal fan_in
init, train mode, one real batch, the input gradient of the summed logits, -sum log(v + 1e-5) + 1 / (v + 1e-5)
over the eigenvalues v of the correlation of the per-image gradients; the suite's ``jacob_cov`` is the same
statistic on PyTorch's default init). The published NB201 numbers (rho 0.919 / 0.919 / 0.906) are means over 5
seeds on the cells of GRAF's feature table (the notebook's ``run['net'].notnull()``; ~9.4k unique cells), against
test accuracy (cifar10 ori-test, the others x-test; the notebook calls it ``val_accs``). The MobileNetV2
search (``ImageNet_MBV2/evolution_search_vkdnw.py``) aggregates other members (complexity, expressivity,
progressivity, vkdnw_entropy, trainability) and draws its 128 parameter tensors at random.

Speed. Not computed as the code does (``vmap`` over samples of ``jacrev`` w.r.t. the 128 scalars): a forward hook
on each module owning a chosen scalar adds delta_n * d out / d θ[0] to its output, delta a zero vector with one
entry per sample (the tangent in closed form for Conv2d, Linear and eval-mode BatchNorm, else by
``torch.func.jvp``); after one forward pass, one backward pass per output direction gives that direction's
derivative for every sample and every scalar at once: K - 1 directions (the logits but the last), or, when the
network ends in an ``nn.Linear`` with D < K - 1 inputs (NB201: 64 features for 100 / 120 classes), D directions
of its input features, mapped through its weight. Network and images are channels-last (measured ~30% faster
on the CPU; the same numbers up to rounding). Measured on the median NB201 cell
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|``, one CPU
thread (2-core machine shared with other jobs): 2.8-4.3 s per cell for cifar10 (9 backward passes), 4.5-5.2 s
for ImageNet16-120 and 21-23 s for cifar100 (64 each). Measured alternatives on the cifar10 cell: forward mode
(``torch.func.jvp`` vmapped over the 128 scalars, one tangent each) ~25x slower, the code's ``vmap`` of per-sample
``jacrev`` 4.6x slower (12.6 s vs 2.7 s for the Jacobian), ``is_grads_batched`` backward ~1.3x slower than a loop.

Rounding: J jumps where a ReLU input sits at 0 within rounding, so a change of kernel, layout or dtype may move
the score by up to ~1e-4 relative (1e-7 in most cells).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from proxybench.proxies.registry import register_proxy

_PAPER = "Týbl & Neumann, Training-free Neural Architecture Search through Variance of Knowledge of Deep " \
         "Network Weights, CVPR 2025"
_MEMO = "_vkdnw"
BATCH = 64  # NB201/tss_general_.py --batch_size
N_TENSORS = 128  # --params_grad_len: the first 128 parameter tensors
# the code's torch.arange(0.1, 1., 0.1): 9 deciles at float32 positions (0.10000000149, ..., 0.89999998)
QUANTILES = tuple(torch.arange(0.1, 1.0, 0.1, dtype=torch.float32).tolist())
EPS = 1e-10  # the code's in the normalisation and inside the log
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_INIT = "kaiming_normal(fan_in, relu) conv/linear weights, biases 0, BN/GroupNorm weight 1 bias 0"
_INPUTS = f"random N(0,1), batch {BATCH}"
_BN = "eval (running statistics: mean 0, variance 1 at init)"


def _generator(ctx) -> torch.Generator:
    return torch.Generator().manual_seed(int(ctx.seed))


def _kaiming_init(net: nn.Module, g: torch.Generator) -> None:
    """The code's ``init_model(model, 'kaiming_norm_fanin')``; draws in float32 in module order, then cast."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                std = math.sqrt(2.0) / math.sqrt(nn.init._calculate_correct_fan(m.weight, "fan_in"))
                w = torch.randn(tuple(m.weight.shape), generator=g, dtype=torch.float32) * std
                m.weight.copy_(w.to(m.weight))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()


# ------------------------------------------------------------------------------------------ the Jacobian

def _first_element_tangent(mod: nn.Module, attr: str, args: tuple, out: torch.Tensor):
    """d out / d (mod.<attr>).flatten()[0] at the current input: (dim, values), dim the output dimension whose
    channel 0 the element acts on and values that channel (closed forms for exact Conv2d, Linear, eval-mode
    BatchNorm), or (None, the full tangent) by ``torch.func.jvp`` for any other module."""
    x = args[0]
    if type(mod) is nn.Conv2d and mod.padding_mode == "zeros" and isinstance(mod.padding, tuple):
        if attr == "bias":
            return 1, torch.ones_like(out[:, 0])
        # weight[0, 0, 0, 0]: output channel 0 sees input channel 0 (group 0) through the kernel's first tap
        kernel = torch.zeros((1, 1, *mod.kernel_size), dtype=x.dtype, device=x.device)
        kernel.view(-1)[0] = 1.0
        t = F.conv2d(x[:, :1], kernel, None, mod.stride, mod.padding, mod.dilation)
        return 1, t[:, 0]
    if type(mod) is nn.Linear:
        if attr == "bias":
            return out.dim() - 1, torch.ones_like(out[..., 0])
        return out.dim() - 1, x[..., 0]
    if type(mod) in _BATCHNORMS and not mod.training and mod.running_var is not None:
        if attr == "bias":
            return 1, torch.ones_like(out[:, 0])
        return 1, (x[:, 0] - mod.running_mean[0]) / torch.sqrt(mod.running_var[0] + mod.eps)
    p = getattr(mod, attr).detach()
    tangent = torch.zeros_like(p)
    tangent.view(-1)[0] = 1.0
    _, t = torch.func.jvp(lambda w: torch.func.functional_call(mod, {attr: w}, args), (p,), (tangent,))
    return None, t


class _Inject(torch.autograd.Function):
    """out + sum_i delta_i * t_i placed in channel 0 of dimension ``dim``, for delta_i = 0: the forward is a copy of
    out, the backward passes the gradient through and gives delta_i the per-sample sum of grad[channel 0] * t_i
    (cheaper than autograd's slice-assignment, which copies the whole gradient once per chosen weight)."""

    @staticmethod
    def forward(ctx, out, dim, *pairs):
        ctx.dim = dim
        ctx.save_for_backward(*pairs[1::2])
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        g0 = grad.select(ctx.dim, 0)
        grads = []
        for t in ctx.saved_tensors:
            grads += [(g0 * t).flatten(1).sum(1) if g0.dim() > 1 else g0 * t, None]
        return (grad, None, *grads)


class _Injector:
    """Forward hooks adding delta_n * d out / d θ[0] to each owning module's output (delta = 0: the values
    are unchanged); the gradient of an output w.r.t. delta_n is then its derivative w.r.t. θ[0] at sample n."""

    def __init__(self, net: nn.Module, names: list[str], batch: int, dtype, device):
        self.deltas = {n: torch.zeros(batch, dtype=dtype, device=device, requires_grad=True) for n in names}
        self.owner: dict[str, nn.Module] = {}
        by_module: dict[nn.Module, list[tuple[str, str]]] = {}
        for n in names:
            mod_name, _, attr = n.rpartition(".")
            mod = net.get_submodule(mod_name)
            self.owner[n] = mod
            by_module.setdefault(mod, []).append((attr, n))
        self.calls: dict[nn.Module, int] = {}
        self._busy: set[nn.Module] = set()
        self._handles = [m.register_forward_hook(self._hook(entries)) for m, entries in by_module.items()]
        self.features: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles += [m.register_forward_hook(self._record) for m in net.modules() if isinstance(m, nn.Linear)]

    def _hook(self, entries):
        def hook(mod, args, out):
            if mod in self._busy:  # a torch.func.jvp fallback calling the module again
                return None
            if not isinstance(out, torch.Tensor) or not args or not isinstance(args[0], torch.Tensor):
                raise ValueError(f"vkdnw: {type(mod).__name__} must take and return one tensor")
            self.calls[mod] = self.calls.get(mod, 0) + 1
            self._busy.add(mod)
            try:
                with torch.no_grad():
                    tangents = [(_first_element_tangent(mod, attr, args, out), n) for attr, n in entries]
            finally:
                self._busy.discard(mod)
            sliced: dict[int, list] = {}
            for (dim, t), n in tangents:
                d = self.deltas[n]
                if dim is None:
                    out = out + d.view(-1, *([1] * (out.dim() - 1))) * t
                else:
                    sliced.setdefault(dim, []).extend((d, t))
            for dim, pairs in sliced.items():
                out = _Inject.apply(out, dim, *pairs)
            return out
        return hook

    def _record(self, mod, args, out):
        self.features[mod] = (args[0], out)

    def remove(self):
        for h in self._handles:
            h.remove()


def _per_sample_grads(outputs: torch.Tensor, inputs: list[torch.Tensor], rows: int) -> torch.Tensor:
    """(B, rows, T): d outputs[n, m] / d inputs[t][n] for m < rows, per-sample outputs (B, M) and per-sample
    scalars (B,): one backward pass per m (a loop: ``is_grads_batched`` was measured slower on the CPU)."""
    b = outputs.shape[0]
    out = outputs.new_zeros(b, rows, len(inputs))
    if not inputs or not outputs.requires_grad:  # no chosen scalar upstream of these outputs
        return out
    for m in range(rows):
        cot = torch.zeros_like(outputs)
        cot[:, m] = 1.0
        grads = torch.autograd.grad(outputs, inputs, grad_outputs=cot, retain_graph=m < rows - 1, allow_unused=True)
        for t, g in enumerate(grads):
            if g is not None:
                out[:, m, t] = g
    return out


def per_sample_jacobian(net: nn.Module, x: torch.Tensor, names: list[str], last_logit: bool = True):
    """(logits, J): the logits (B, K) and J (B, K, T), J[n, k, t] = d logit_k(x_n) / d θ_t.flatten()[0] for the
    parameter tensors ``names`` of ``net`` (its samples must not interact: eval-mode BatchNorm).

    ``last_logit=False``: the row of the last logit may be left 0 (one backward pass less; the Fisher never
    reads it: the last column of its Cholesky factor is 0).

    A parameter must act through the forward of the module that owns it (true of every layer of the benchmark
    spaces); one owned by several modules (tied weights) is refused."""
    owners: dict[int, int] = {}
    for m in net.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    tied = [n for n, p in net.named_parameters() if n in names and owners[id(p)] > 1]
    if tied:
        raise ValueError(f"vkdnw: parameters shared by several modules are not supported: {tied}")
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_var is None):
            raise ValueError("vkdnw: BatchNorm must use running statistics (eval mode, track_running_stats): the "
                             "per-sample Jacobians of the official code see no batch statistics")
    frozen = [(p, p.requires_grad) for p in net.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    inj = _Injector(net, names, x.shape[0], x.dtype, x.device)
    try:
        with torch.enable_grad():
            logits = net(x)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise ValueError(f"vkdnw: the network must return logits (batch, classes), got "
                                 f"{type(logits).__name__} {getattr(logits, 'shape', '')}")
            for n, mod in inj.owner.items():
                if inj.calls.get(mod, 0) == 0:
                    raise ValueError(f"vkdnw: module of parameter {n!r} was not called in forward")
            head = next((m for m, (_, o) in inj.features.items() if o is logits), None)
            phi = inj.features[head][0] if head is not None else None
            deltas = [inj.deltas[n] for n in names]
            k = logits.shape[1]
            rows = k if last_logit else k - 1
            if phi is not None and phi.dim() == 2 and phi.shape[1] < rows:
                # fewer cotangents: the Jacobian of the head's input features, mapped through its weight
                own = [inj.owner[n] is head for n in names]
                jp = _per_sample_grads(phi, [d for d, o in zip(deltas, own, strict=True) if not o], phi.shape[1])
                jac = logits.new_zeros(x.shape[0], k, len(names))
                jac[:, :, [i for i, o in enumerate(own) if not o]] = torch.einsum("kd,bdt->bkt", head.weight, jp)
                for i, n in enumerate(names):
                    if own[i]:  # the head's own first weight / bias element feeds logit 0 only
                        jac[:, 0, i] = phi[:, 0] if n.endswith("weight") else 1.0
            else:
                jac = logits.new_zeros(x.shape[0], k, len(names))
                jac[:, :rows] = _per_sample_grads(logits, deltas, rows)
    finally:
        inj.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
    return logits.detach(), jac.detach()


# ------------------------------------------------------------------------------------------ the spectrum

def smoothed_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The code's p = softmax * (1 - a) + a / K with a = ``torch.tensor(0.05, dtype=torch.float16)``: both
    constants are float16 (1 - a = 0.9501953125, a / 10 = 0.0049973), so p sums to 1.000168 (K = 10, 100) or
    1.000177 (K = 120), not 1; kept (float64 here)."""
    a = torch.tensor(0.05, dtype=torch.float16)
    scale, shift = float(1 - a), float(a / logits.shape[1])
    return torch.softmax(logits.double(), dim=1) * scale + shift


def cholesky_factor(p: torch.Tensor) -> torch.Tensor:
    """(B, K, K) the code's ``cholesky_covariance`` of probabilities p (B, K): lower-triangular L with
    L_jj = d_j = sqrt(p_j q_j / q_{j-1}) and L_ij = -p_i d_j / q_j (i > j), q_j = 1 - sum_{i<=j} p_i, q_{-1} = 1,
    q_{K-1} := 0 (so the last column is 0). L L^T = diag(p) - p p^T when p sums to 1 (Tanabe & Sagae 1992)."""
    k = p.shape[1]
    q = 1.0 - p.cumsum(dim=1)
    q[:, -1] = 0.0
    q_prev = torch.cat([torch.ones_like(q[:, :1]), q[:, :-1]], dim=1)
    d = torch.sqrt(p * q / q_prev)
    off = -p[:, :, None] * (d / torch.where(q > 0, q, torch.ones_like(q)))[:, None, :]
    lower = torch.tril(torch.ones(k, k, dtype=torch.bool, device=p.device), diagonal=-1)
    return torch.where(lower, off, torch.zeros_like(off)) + torch.diag_embed(d)


def cholesky_of_covariance(logits: torch.Tensor) -> torch.Tensor:
    """The code's factor for the logits: ``cholesky_factor`` of the smoothed probabilities (which sum to
    1.00017, so L L^T differs from their covariance by ~1e-3 relative, as in the code), float64."""
    return cholesky_factor(smoothed_probabilities(logits))


def fisher(logits: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
    """The code's empirical Fisher (T, T): mean_n (L_n J_n)^T (L_n J_n), in float64."""
    a = cholesky_of_covariance(logits) @ jac.double()
    return torch.einsum("bkt,bks->ts", a, a) / a.shape[0]


def decile_entropy(values: torch.Tensor) -> float:
    """Entropy of the 9 deciles (linear interpolation) of ``values``, normalised by their sum (+1e-10)."""
    v = values.double().flatten()
    q = torch.quantile(v, torch.tensor(QUANTILES, dtype=torch.float64, device=v.device))
    t = q / (q.abs().sum() + EPS)
    return float(-(t * torch.log(t + EPS)).sum()) + 0.0  # + 0.0: no -0.0 when every decile is 0


def prepare(ctx) -> tuple[nn.Module, torch.Tensor]:
    """The cell's network (kaiming-initialised, eval mode) and its batch of N(0, 1) images, both channels-last
    for image inputs (the same numbers up to rounding; on the CPU the backward passes take ~30% less time)."""
    net = ctx.network(bn=True)
    g = _generator(ctx)
    _kaiming_init(net, g)
    net.eval()
    x = torch.randn((BATCH, *ctx.input_shape), generator=g, dtype=torch.float32).to(ctx.device, ctx.dtype)
    if x.dim() == 4:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return net, x


def svd32_entropy(fim: torch.Tensor) -> float:
    """The entropy as the code's float32 ``torch.svd(F).S`` gives it: F rounded to float32, its float32 singular
    values from the full decomposition (``svdvals``, which skips the singular vectors, runs another LAPACK path
    with other rounding); a failed SVD scores 0, as the code's fallback ``lambdas = zeros(2)``."""
    try:
        s = torch.linalg.svd(fim.to(torch.float32), full_matrices=False).S
    except torch.linalg.LinAlgError:
        return 0.0
    return decile_entropy(s)


def score_network(net: nn.Module, x: torch.Tensor, n_tensors: int = N_TENSORS) -> dict:
    """{"entropy": VKDNW, "entropy_svd32": the same by the code's float32 SVD, "dim": ℵ} of a network in eval
    mode on the batch ``x``."""
    names = [n for n, _ in net.named_parameters()]
    logits, jac = per_sample_jacobian(net, x, names[:n_tensors], last_logit=False)
    fim = fisher(logits, jac)
    eig = torch.linalg.eigvalsh(fim).abs()  # = the singular values of the symmetric F
    return {"entropy": decile_entropy(eig), "entropy_svd32": svd32_entropy(fim), "dim": len(names)}


def _parts(ctx) -> dict:
    """Entropy and ℵ of the cell, computed once per cell (``ctx.memo``) for every VKDNW name."""
    if _MEMO not in ctx.memo:
        with ctx.shared_work("vkdnw pass"):
            ctx.memo[_MEMO] = score_network(*prepare(ctx))
    return ctx.memo[_MEMO]


def _vkdnw(ctx, single: bool = False, svd32: bool = False) -> float:
    """VKDNW (Týbl & Neumann, CVPR 2025): entropy of the deciles of the Fisher spectrum of 128 weights."""
    parts = _parts(ctx)
    if svd32:
        return parts["entropy_svd32"]
    return float(parts["dim"] + parts["entropy"]) if single else parts["entropy"]


_COST = f"one forward of {BATCH} random images with a tangent per chosen weight, then min(classes - 1, " \
        "classifier inputs) backward passes (NB201: 9 for cifar10, 64 otherwise); a 128x128 eigendecomposition"
# vkdnw and vkdnw_single are in the default study (~3.5 s CPU per cifar10 cell, ~22 s per cifar100 cell here: 64
# backward passes for 100 classes); vkdnw_svd32 measures a cause (the official float32 SVD) and stays out of it.
register_proxy("vkdnw", higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False,
               paper=_PAPER, cost="forward+backward", cost_note=_COST, init=_INIT, inputs=_INPUTS, bn_mode=_BN,
               shares="vkdnw pass",
               description="VKDNW (Týbl & Neumann, CVPR 2025): entropy of the 9 deciles of the empirical Fisher "
                           "spectrum w.r.t. the first element of the first 128 parameter tensors (official code)"
               )(_vkdnw)
register_proxy("vkdnw_single", higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False,
               paper=_PAPER, cost="forward+backward", cost_note=_COST, init=_INIT, inputs=_INPUTS, bn_mode=_BN,
               shares="vkdnw pass",
               single=True,
               description="VKDNW_single (Týbl & Neumann, CVPR 2025): number of parameter tensors + vkdnw, i.e. "
                           "the official (tensors, entropy) lexicographic order (the VKDNW member of VKDNW_agg)"
               )(_vkdnw)
register_proxy("vkdnw_svd32", higher_is_better=True, family="zero-cost", needs_data=False, needs_labels=False,
               paper=_PAPER, cost="forward+backward", cost_note=_COST, init=_INIT, inputs=_INPUTS, bn_mode=_BN,
               shares="vkdnw pass",
               default_study=False,
               svd32=True,
               description="vkdnw with the official code's float32 SVD of the Fisher: its lowest deciles are "
                           "rounding (about 1e-7 of the largest) when the spectrum spans more decades"
               )(_vkdnw)
