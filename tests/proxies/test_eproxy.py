"""Eproxy: the frozen barrier, the synthetic targets, the setting record and the FLOPs prior."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from proxybench.datasets import nb201
from proxybench.proxies import ProxyContext, get_proxy
from proxybench.proxies import eproxy as ep

CHEAP = "|skip_connect~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|"
WIDEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
EMPTY = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
SMALL = ep.EproxySetting(head_channels=16, target_channels=16, iterations=3, targets=("wave_l", "dot", "net"))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ctx(arch=CHEAP, batch=8, seed=0):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    ctx = ProxyContext(arch, "cifar10", seed, partial(nb201.build_network, arch, "cifar10"), (3, 32, 32), 10,
                       (x, torch.zeros(batch, dtype=torch.long)))
    ctx.allow_labels = False
    return ctx


def test_registered_as_a_label_free_self_supervised_proxy():
    p = get_proxy("eproxy")
    assert (p.family, p.needs_data, p.needs_labels, p.higher_is_better) == ("self-supervised", True, False, False)


def test_barrier_never_changes_while_backbone_and_head_train(monkeypatch):
    built = []
    real = ep.build_model

    def spy(ctx, setting, x):
        m = real(ctx, setting, x)
        built.append((m, {k: v.clone() for k, v in m.state_dict().items()}))
        return m

    monkeypatch.setattr(ep, "build_model", spy)
    loss = ep.eproxy_loss(_ctx(), SMALL)
    assert np.isfinite(loss)
    (model, before), = built
    after = model.state_dict()
    barrier = [k for k in before if k.startswith("barrier.")]
    trained = [k for k in before if k.startswith(("backbone.", "heads.")) and k.endswith("weight")]
    assert barrier and all(not p.requires_grad for p in model.barrier.parameters())
    assert all(torch.equal(before[k], after[k]) for k in barrier)
    assert any(not torch.equal(before[k], after[k]) for k in trained)  # the rest did train


def test_barrier_is_the_same_for_every_cell():
    x = _ctx().inputs
    a = ep.build_model(_ctx(CHEAP), SMALL, x).barrier.state_dict()
    b = ep.build_model(_ctx(WIDEST, seed=3), SMALL, x).barrier.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_targets_are_deterministic_and_depend_on_the_seed():
    x = _ctx(batch=16).inputs
    a, b = ep.make_targets(SMALL, x), ep.make_targets(SMALL, x.clone())
    assert len(a) == SMALL.branches and a[0].shape == (16, 16, 8, 8)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    other = ep.make_targets(ep.EproxySetting(**{**SMALL.to_dict(), "target_seed": 1}), x)
    assert not torch.equal(a[0], other[0])
    assert not torch.equal(a[0], a[1])  # branches get their own maps


def test_level_scales_and_a_smaller_batch_takes_the_first_maps():
    s1 = ep.EproxySetting(targets=("wave_m", "dot"), target_channels=8)
    s2 = ep.EproxySetting(targets=("wave_m", "dot"), target_channels=8, level=2.0)
    t1, t2 = ep.make_targets(s1)[0], ep.make_targets(s2)[0]
    assert torch.allclose(t2, 2 * t1)
    assert torch.equal(ep.make_targets(s1, n=5)[0], t1[:5])
    # each basis is standardised: one basis at level 1 has unit variance
    one = ep.make_targets(ep.EproxySetting(targets=("wave_h",), target_channels=8))[0]
    assert float(one.double().var(unbiased=False)) == pytest.approx(1.0, rel=1e-5)


def _mean_frequency(t: torch.Tensor) -> float:
    spec = np.abs(np.fft.fft2(t.double().numpy(), axes=(-2, -1))) ** 2
    f = np.fft.fftfreq(8)
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    return float((spec * radius).sum() / spec.sum())


def test_wave_bands_are_ordered_by_frequency():
    freqs = [_mean_frequency(ep.make_targets(ep.EproxySetting(targets=(b,), target_channels=8))[0])
             for b in ("wave_l", "wave_m", "wave_h")]
    assert freqs[0] < freqs[1] < freqs[2]


def test_net_targets_follow_the_images():
    s = ep.EproxySetting(targets=("net",), target_channels=8, branches=1)
    x = _ctx(batch=16).inputs
    assert not torch.equal(ep.make_targets(s, x)[0], ep.make_targets(s, x.flip(0))[0])
    with pytest.raises(ValueError, match="needs the images"):
        ep.make_targets(s)


def test_setting_is_hashable_canonical_and_stable():
    a = ep.EproxySetting(targets=("dot", "wave_l"))
    b = ep.EproxySetting(targets=["wave_l", "dot", "dot"], lr=1.2)
    assert a == b and hash(a) == hash(b) and a.hash == b.hash and a.targets == ("wave_l", "dot")
    assert ep.EproxySetting.from_dict(a.to_dict()) == a
    assert ep.DEFAULT.hash == "65753e6e91"  # cache keys depend on it: never change it silently
    assert ep.EproxySetting(alpha=0.3).proxy_name == ep.DEFAULT.proxy_name != ep.EproxySetting(lr=1.1).proxy_name
    for bad in ({"targets": ()}, {"targets": ("waves",)}, {"branches": 4}, {"head_kernel": 2}, {"init": "he"},
                {"lr": float("nan")}, {"head_channels": 0}):
        with pytest.raises(ValueError):
            ep.EproxySetting(**bad)
    with pytest.raises(ValueError, match="unknown"):
        ep.EproxySetting.from_dict({"lr": 1.0, "colour": 3})


def test_batch_smaller_than_sixteen_and_degenerate_cell_give_finite_deterministic_losses():
    for arch in (CHEAP, EMPTY):
        a, b = ep.eproxy_loss(_ctx(arch, batch=4), SMALL), ep.eproxy_loss(_ctx(arch, batch=4), SMALL)
        assert np.isfinite(a) and a == b


def test_only_the_first_sixteen_images_are_used():
    ctx16, ctx20 = _ctx(batch=16), _ctx(batch=20)
    ctx20.batch = (torch.cat([ctx16.batch[0], torch.randn(4, 3, 32, 32)]), torch.zeros(20, dtype=torch.long))
    assert ep.eproxy_loss(ctx16, SMALL) == ep.eproxy_loss(ctx20, SMALL)


def test_flops_prior():
    assert ep.macs_ratio(_ctx(WIDEST)) == pytest.approx(1.0)
    assert 0 < ep.macs_ratio(_ctx(EMPTY)) < ep.macs_ratio(_ctx(CHEAP)) < 1
    assert ep.apply_prior(2.0, 0.5, 0.4) == pytest.approx(2.0 * (1 - 0.2))
    ctx = _ctx(CHEAP)
    s = ep.EproxySetting(**{**SMALL.to_dict(), "alpha": 0.5})
    assert ep.eproxy_score(ctx, s) == pytest.approx(ep.apply_prior(ep.eproxy_loss(_ctx(CHEAP), SMALL),
                                                                  ep.macs_ratio(_ctx(CHEAP)), 0.5))
