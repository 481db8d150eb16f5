"""Reduced-training proxies: the EcoNAS notation, the trainer's determinism, the class-difficulty ordering."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from proxybench.datasets import nb201
from proxybench.datasets.images import ImageSource
from proxybench.proxies import get_proxy, list_proxies
from proxybench.proxies import reduced_training as rt


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: two OpenMP threads on a busy machine are much slower
    yield
    torch.set_num_threads(n)


def _source(x, y, split, k=10, task="cifar10"):
    return ImageSource(task, np.asarray(x, dtype=np.uint8), np.asarray(y, dtype=np.int64), k, x.shape[1], False,
                       f"synthetic-{split}-{len(y)}-{int(np.asarray(x, dtype=np.int64).sum())}", f"synthetic {split}")


def _random_set(n_train=48, n_test=24, res=16, k=10, seed=0):
    rng = np.random.default_rng(seed)

    def mk(n, split):
        return _source(rng.integers(0, 256, (n, res, res, 3)), np.arange(n) % k, split, k)

    return mk(n_train, "train"), mk(n_test, "test")


# ------------------------------------------------------------------------------------------- notation

@pytest.mark.parametrize("text,expected", [
    ("c4r4s0e10", rt.Setting(4, 4, 0, 10)),
    ("c0r0s0e60", rt.Setting(0, 0, 0, 60)),
    (" C2R1S3E5 ", rt.Setting(2, 1, 3, 5)),
])
def test_parse_setting(text, expected):
    s = rt.parse_setting(text)
    assert s == expected
    assert rt.parse_setting(str(s)) == s  # round trip


def test_setting_factors_follow_the_notation():
    s = rt.parse_setting("c4r2s2e7")
    assert (s.channel_divisor, s.resolution_divisor, s.sample_fraction, s.e) == (4, 2, 0.25, 7)
    full = rt.parse_setting("c0r0s0e1")  # the paper writes the full setting with zeros
    assert (full.channel_divisor, full.resolution_divisor, full.sample_fraction) == (1, 1, 1.0)
    assert "all training images" in rt.parse_setting("c4r4s0e1").describe()


@pytest.mark.parametrize("bad,match", [
    ("c4r4e10", "c<int>r<int>s<int>e<int>"),  # a factor missing
    ("r4c4s0e10", "in this order"),
    ("c4r4s0e10x", "malformed"),
    ("c4r4s0e0", "epochs"),
    ("c-1r4s0e10", "malformed"),
    ("c4r4s30e1", "s0..s20"),
    (410, "string"),
])
def test_parse_setting_errors_say_what_to_write(bad, match):
    with pytest.raises(ValueError, match=match):
        rt.parse_setting(bad)


def test_registered_grid_and_table_proxies():
    names = list_proxies(family="reduced-training")
    for n in ("econas_c4r4s0e1", "econas_c4r4s2e4", "econas_c4r2s1e1", "danas_easy5_c4r4s0e2",
              "danas_rand5_c4r4s0e2", "nb201_12epoch"):
        assert n in names
    assert get_proxy("econas_c4r4s0e1").needs_training_data and get_proxy("econas_c4r4s0e1").needs_labels
    t = get_proxy("nb201_12epoch")
    assert t.needs_table and not t.needs_data and "reduced-training (table)" in t.description
    assert rt.register_setting("c4r4s0e1") == "econas_c4r4s0e1"  # registering again is a no-op


def test_random_class_subsets_are_not_labelled_easy():
    easy, rand = get_proxy("danas_easy5_c4r4s0e2"), get_proxy("danas_rand5_c4r4s0e2")
    assert "easy classes" in easy.paper and "easiest" in easy.description
    assert "random classes" in rand.paper and "(easy classes)" not in rand.paper and "random" in rand.description
    assert rt.register_setting("c4r4s0e2", "random", 5) == rand.name  # registering again is a no-op


def test_table_proxy_reads_the_row_it_is_given():
    from proxybench.proxies import ProxyContext

    ctx = ProxyContext("a", "cifar10", 0, None, (3, 32, 32), 10, table={"test_acc_12": 71.25, "val_acc_12": 70.0})
    assert get_proxy("nb201_12epoch").fn(ctx) == 71.25
    assert get_proxy("nb201_12epoch_val").fn(ctx) == 70.0
    with pytest.raises(ValueError, match="12-epoch"):
        get_proxy("nb201_12epoch").fn(ProxyContext("a", "cifar10", 0, None, (3, 32, 32), 10, table={"x": 1}))


# --------------------------------------------------------------------------------------------- trainer

def test_select_images_keeps_a_seeded_fraction_and_the_chosen_classes():
    train, test = _random_set(n_train=100, n_test=40)
    xtr, ytr, xte, yte = rt.select_images(train, test, rt.parse_setting("c1r1s2e1"), 3)
    assert len(xtr) == 25 and len(xte) == 40
    again = rt.select_images(train, test, rt.parse_setting("c1r1s2e1"), 3)
    assert np.array_equal(again[0], xtr)
    xtr, ytr, xte, yte = rt.select_images(train, test, rt.parse_setting("c1r1s0e1"), 3, classes=[7, 2])
    assert len(xtr) == 20 and set(ytr) == {0, 1} and set(yte) == {0, 1}  # remapped to 0..k-1 in the given order
    assert np.array_equal(xtr[ytr == 0], train.images[train.labels == 7])


def test_augment_is_a_padded_crop_with_optional_flip():
    x = torch.rand(6, 3, 8, 8)
    a = rt.augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, rt.augment(x, torch.Generator().manual_seed(1)))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(len(x)):
        crops = [c for oy in range(3) for ox in range(3) for c in
                 (padded[i, :, oy:oy + 8, ox:ox + 8], padded[i, :, oy:oy + 8, ox:ox + 8].flip(-1))]
        assert any(torch.equal(a[i], c) for c in crops)


def test_trainer_is_deterministic_for_a_seed():
    train, test = _random_set()
    build = partial(nb201.build_network, "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|"
                                          "avg_pool_3x3~1|nor_conv_3x3~2|", "cifar10")
    a = rt.train_and_evaluate(build, train, test, "c8r2s0e2", seed=5)
    b = rt.train_and_evaluate(build, train, test, "c8r2s0e2", seed=5)
    assert (a.accuracy, a.final_loss, a.per_class) == (b.accuracy, b.final_loss, b.per_class)
    assert (a.n_train, a.n_test, a.iterations, a.resolution) == (48, 24, 2, 8)
    c = rt.train_and_evaluate(build, train, test, "c8r2s0e2", seed=6)
    assert c.final_loss != a.final_loss  # the seed matters


def test_channel_divisor_builds_the_narrow_network():
    build = partial(nb201.build_network, nb201.arch_str(["nor_conv_3x3"] * 6), "cifar10")
    net = rt._build(build, rt.parse_setting("c4r1s0e1"), 0)
    assert nb201.count_params(net) == nb201.count_params(nb201.build_network(nb201.arch_str(["nor_conv_3x3"] * 6),
                                                                              channels=4))

    class NoWidth(nn.Module):
        def __init__(self, bn=True):
            super().__init__()

    with pytest.raises(ValueError, match="channels"):
        rt._build(NoWidth, rt.parse_setting("c2r1s0e1"), 0)
    assert isinstance(rt._build(NoWidth, rt.parse_setting("c1r1s0e1"), 0), NoWidth)


# ---------------------------------------------------------------------------------- class difficulty

def _known_difficulty_set(seed=0, res=16):
    """Four classes of solid colours (each learnable perfectly); in the held-out set, part of the images
    labelled 2 and 3 carry another class's colour, so their held-out accuracy is capped by construction:
    0 and 1: 100%; 3: 70%; 2: 40%. Easiest first: 0, 1, 3, 2."""
    rng = np.random.default_rng(seed)
    colours = np.array([[230, 30, 30], [30, 30, 230], [30, 230, 30], [230, 230, 30]])

    def images(colour_ids):
        x = colours[colour_ids][:, None, None, :] + rng.integers(-20, 21, (len(colour_ids), res, res, 3))
        return np.clip(x, 0, 255)

    y_train = np.repeat(np.arange(4), 60)
    train = _source(images(y_train), y_train, "train", k=4)
    y_test = np.repeat(np.arange(4), 10)
    shown = y_test.copy()
    shown[20:26] = 3  # six of the ten images labelled 2 look like class 3
    shown[30:33] = 2  # three of the ten labelled 3 look like class 2
    test = _source(images(shown), y_test, "test", k=4)
    return train, test


def test_class_order_ranks_classes_by_known_difficulty(monkeypatch):
    monkeypatch.setattr(rt, "_COMPUTED", {})
    train, test = _known_difficulty_set()
    rec = rt.class_order(train, test, seed=0)
    assert rec["order"] == [0, 1, 3, 2], rec["per_class_accuracy"]
    assert rec["per_class_accuracy"][2] < rec["per_class_accuracy"][3] < rec["per_class_accuracy"][0]
    assert rt.class_subset((train, test), "easy", 2, 0, 4) == [0, 1]
    # memoised: the computed record is reused; a pinned ordering is used as given, without retraining
    assert rt.class_order(train, test, seed=0) is rec
    key = rt.class_order_key(train, test, 0)
    monkeypatch.setattr(rt, "_COMPUTED", {})
    monkeypatch.setitem(rt.PINNED_ORDERS, key, (3, 2, 1, 0))
    assert rt.class_subset((train, test), "easy", 2, 0, 4) == [2, 3]


def test_random_class_subset_is_seeded_and_of_size_k():
    a = rt.random_classes(10, 5)
    assert a == rt.random_classes(10, 5) and len(a) == 5 and a == sorted(a) and set(a) <= set(range(10))
    with pytest.raises(ValueError, match="k"):
        rt.class_subset(None, "random", 11, 0, 10)
    with pytest.raises(ValueError, match="easy"):
        rt.class_subset(None, "hardest", 2, 0, 10)
