"""The perf script runs end to end on one cell and renders what it measured (no timing is asserted); a partial run
(`--proxies`) times some proxies on the stored run's cells and merges them into its perf.json."""

from __future__ import annotations

import numpy as np
import pytest

from proxybench.tools import perf


def test_perf_measures_every_part_and_renders(real_data, tmp_path):
    r = perf.run(cells=1, memory_cells=0, seed=0, repeats=1, nb101_cells=0, task_cells=0)  # tasks: below
    for key in ("shared_six_over_fwd_bwd", "reference_six_over_fwd_bwd", "shared_six_generic_over_fwd_bwd"):
        assert r[key] > 0, key
    assert list(r["stages"]) == list(perf.STAGES) and r["seed"] == 0  # a partial run redraws the cells from it
    assert {"grasp", "synflow", "jacob_cov", "eproxy"} <= set(r["per_proxy"])
    md = perf.markdown(r)
    assert r["double_backward_pass"]["over_fwd_bwd"] > 0
    assert "PyTorch's generic forward-mode formulas" in md and "Where the six's time goes" in md
    assert "double backward (grasp v2" in md
    assert ("**met**" in md.split("## Against")[0]) == (r["shared_six_over_fwd_bwd"] <= perf.TARGET_RATIO)
    # the machine's limit: a rate against a measured peak, the family's time and the projection
    assert r["peak_gflops"]["peak"] >= max(r["peak_gflops"]["matmul_2048"], r["peak_gflops"]["conv3x3_nchw"])
    assert 0 < r["fwd_bwd_gflops_per_s_median"] and r["fwd_bwd_gflop_median"] > 1  # NB201 cells: GFLOPs per batch
    assert set(r["family"]["proxies"]) == set(perf.training_free()) and r["family"]["seconds_median"] > 0
    assert "## Against the machine's limit" in md and "Projection for the complete NB201 table" in md
    # the family's counted work (every pass, tangents and per-sample gradients included) and the floor it sets
    assert r["family"]["gflop_median"] > 5 * r["fwd_bwd_gflop_median"] and "floor of any implementation" in md
    assert "## Against" not in perf.markdown({k: v for k, v in r.items() if k != "peak_gflops"})
    # the pooling kernel's saving is measured in the same run and said; the pass's layout judges the GFLOP/s
    assert r["fwd_bwd_pytorch_pool_seconds_median"] > 0 and "PyTorch's own 3x3 average pooling kernel" in md
    assert "judged on the NCHW pass" in md
    # the accurate channels_last BatchNorm: its pass timed, and every layout's gradient error against float64
    assert r["fwd_bwd_channels_last_accurate_seconds_median"] > 0 and "accurate_bn.py`'s BatchNorm" in md
    ge = r["gradient_rel_error"]
    assert set(ge) == set(perf.GRADIENT_LAYOUTS) and all(0 < v["median"] <= v["max"] < 1 for v in ge.values())


def test_counted_flops_of_a_known_convolution():
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    assert perf.counted_flops(lambda: F.conv2d(x, w, padding=1)) == 2 * 2 * 4 * 3 * 9 * 8 * 8


def test_counted_flops_agree_with_pytorchs_counter_and_count_vmapped_per_sample_gradients_once():
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, vmap
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 3 * 3, 5))
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])

    def fwd_bwd():
        F.cross_entropy(net(x), y).backward()

    with FlopCounterMode(display=False) as fc:
        fwd_bwd()
    assert perf.counted_flops(fwd_bwd) == fc.get_total_flops() > 0  # ungrouped: PyTorch's own count
    # an input-only backward (the input-Jacobian proxies') runs and counts the input gradients only
    xi = x.clone().requires_grad_(True)
    fwd = perf.counted_flops(lambda: net(xi))
    inp = perf.counted_flops(lambda: torch.autograd.grad(net(xi).sum(), [xi]))
    assert fwd < inp < perf.counted_flops(fwd_bwd)
    # per-sample weight gradients: vmapped (grouped convolutions inside) counts what a loop of samples counts
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p, xs, ys):
        return F.cross_entropy(functional_call(net, p, (xs.unsqueeze(0),)), ys.unsqueeze(0))

    def loop():
        for i in range(4):
            F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]).backward()

    vmapped = perf.counted_flops(lambda: vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y))
    assert vmapped == perf.counted_flops(loop)
    with FlopCounterMode(display=False) as fc:  # the reason for our own counter: PyTorch's overcounts this
        vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    assert fc.get_total_flops() > vmapped


def _older() -> dict:
    """The committed run as a run before the family's work and the other tasks were measured."""
    r = _stored()
    r["family"] = {k: v for k, v in r["family"].items()
                   if k not in ("gflop_median", "gflop_mean", "flops_over_fwd_bwd", "tasks")}
    return r


def test_the_familys_counted_work_gives_the_floor_of_the_complete_table():
    r = _older()
    assert "floor of any implementation" not in perf.markdown(r)  # a run before the family's work was counted
    r["family"].update(gflop_median=240.0, gflop_mean=250.0, flops_over_fwd_bwd=12.8)
    md = perf.markdown(r)
    cpus, peak = r["load_average_1min"]["cpus"], r["peak_gflops"]["peak"]
    floor = 250.0 / peak * perf.NB201_PAIRS / cpus / 3600
    assert f"would still take **{floor:.1f} hours**" in md and "floor of any implementation" in md
    assert f"asks for {floor / perf.TARGET_HOURS:.0%} of the peak rate" in md
    rate = 240.0 / r["family"]["seconds_median"]
    assert f"| 240.0 | {r['family']['seconds_median']:.3f} (" in md and f"| {rate:.1f} | {rate / peak:.0%} |" in md
    assert "counted `groups` times" in md or "counts it `groups` times" in md


def test_the_other_tasks_are_timed_beside_cifar10_and_weigh_the_projection(real_data, monkeypatch):
    # the family stubbed (its cost per task is made up here); the batches are the tasks' real ones
    cost = {"cifar10": 2.0, "cifar100": 6.0, "ImageNet16-120": 1.0}
    calls = []

    def family(arch, batch, names, task="cifar10"):
        calls.append((arch, task, tuple(batch[0].shape)))
        return cost[task]

    monkeypatch.setattr(perf, "_family", family)
    monkeypatch.setattr(perf, "_timed", lambda fn: fn())
    monkeypatch.setattr(perf, "counted_flops", lambda fn: 1e9 * fn())
    batch = perf.sample_batch(perf.image_source("cifar10", real_data), 64, 42)
    t = perf.family_tasks(["a", "b"], batch, [2e9, 2e9], ["params"], real_data, repeats=1)
    assert set(t) == set(perf.OTHER_TASKS)
    timed = calls[:6]  # interleaved: each cell on cifar10, then on the others
    assert [c[:2] for c in timed] == [("a", "cifar10"), ("a", "cifar100"), ("a", "ImageNet16-120"),
                                      ("b", "cifar10"), ("b", "cifar100"), ("b", "ImageNet16-120")]
    assert {c[2] for c in calls if c[1] == "ImageNet16-120"} == {(64, 3, 16, 16)}
    assert t["cifar100"]["over_cifar10"] == 3.0 and t["ImageNet16-120"]["over_cifar10_range"] == [0.5, 0.5]
    assert t["cifar100"]["flops_over_cifar10"] == 3.0 and t["ImageNet16-120"]["gflop_mean"] == 1.0
    assert t["ImageNet16-120"]["substitute"] == perf.image_source("ImageNet16-120", real_data).substitute
    assert not t["cifar100"]["substitute"]
    # the projection: each task at cifar10's time times its ratio; so the floor, by the counted work
    r = _older()
    r["family"].update(gflop_median=240.0, gflop_mean=250.0, flops_over_fwd_bwd=12.8, tasks=t)
    md = perf.markdown(r)
    cpus, peak, c10 = r["load_average_1min"]["cpus"], r["peak_gflops"]["peak"], r["family"]["seconds_median"]
    hours = c10 * (1 + 3.0 + 0.5) * 15625 / cpus / 3600
    floor = 250.0 * (1 + 3.0 + 0.5) * 15625 / peak / cpus / 3600
    assert f"**{hours:.1f} hours**" in md and f"would still take **{floor:.1f} hours**" in md
    assert f"cifar100 {3 * c10:.2f} s (3.00x, 3.00-3.00)" in md and "cifar100 3.00x, ImageNet16-120 0.50x" in md
    assert ("substitute images of its shape" in md) == t["ImageNet16-120"]["substitute"]
    assert "this run did not measure the other tasks" in perf.markdown(_older())  # an older run: said, no bound


def test_a_run_written_elsewhere_leaves_the_readme(tmp_path, monkeypatch, capsys):
    from proxybench import report, store
    from proxybench.report import PERF_STORE

    store.write_json(tmp_path / "perf.json", _stored(), PERF_STORE)
    monkeypatch.setattr(report, "update_readme", lambda *a, **k: pytest.fail("the committed README was rewritten"))
    perf.main(["--render-only", "--out", str(tmp_path)])
    assert "README.md not updated" in capsys.readouterr().out and (tmp_path / "perf.md").is_file()
    # the README is the repository's only when the results go to its reports/, as with the CLI
    from proxybench.provenance import REPO_ROOT

    seen = []
    monkeypatch.setattr(perf, "cmd", seen.append)
    perf.main(["--render-only"])
    perf.main(["--render-only", "--out", str(tmp_path)])
    assert [a.readme for a in seen] == [str(REPO_ROOT / "README.md"), ""]


# `proxybench perf --proxies`: some proxies timed alone on the stored run's cells and merged into its perf.json.
# The timing functions are stubs (no network is built): each "takes" the seconds of COST.

COST = {"fwd_bwd": 2.0, "params": 0.1, "flops": 0.3}


def _stored() -> dict:
    """The committed full run (read only) as that run wrote it: the perf.json a partial run merges into, without
    the entries later partial runs merged into it (those carry a ``measured`` record)."""
    from proxybench import provenance, store
    from proxybench.report import PERF_STORE

    r = store.read_json(provenance.REPO_ROOT / "reports" / "perf.json", PERF_STORE)
    r["per_proxy"] = {k: v for k, v in r["per_proxy"].items() if "measured" not in v}
    return r


@pytest.fixture
def stub_timing(monkeypatch) -> list:
    """Stubs of the cells, the batch and the timed passes; the (what, cell) of every timed call, in order."""
    calls: list = []
    monkeypatch.setattr(perf.nb201, "all_archs", lambda data_dir=None: [f"cell{i}" for i in range(200)])
    monkeypatch.setattr(perf, "image_source", lambda *a, **k: None)
    monkeypatch.setattr(perf, "sample_batch", lambda *a, **k: ("images", "labels"))
    monkeypatch.setattr(perf, "_fwd_bwd", lambda arch, batch: calls.append(("fwd_bwd", arch)))
    monkeypatch.setattr(perf, "_one", lambda arch, batch, name: calls.append((name, arch)))
    monkeypatch.setattr(perf, "_timed", lambda fn: (fn(), COST[calls[-1][0]])[1])
    return calls


def test_partial_run_times_the_stored_cells_and_keeps_the_rest(stub_timing):
    from proxybench import provenance

    stored = {**_stored(), "seed": 3}
    entries = perf.time_alone(["params", "flops"], stored, repeats=2, cells=2)
    # the stored run's first two seeded cells (run()'s draw), fwd_bwd then each proxy, best of 2, after a warm-up
    every = [f"cell{i}" for i in range(200)]
    cells = [every[i] for i in np.random.default_rng(3).choice(200, stored["cells"], replace=False)][:2]
    warm = [("fwd_bwd", cells[0]), ("params", cells[0]), ("flops", cells[0])]
    assert stub_timing == warm + [(w, c) for c in cells for w in ("fwd_bwd", "fwd_bwd", "params", "params",
                                                                    "flops", "flops")]
    assert entries["flops"]["seconds_median"] == 0.3 and entries["flops"]["over_fwd_bwd"] == pytest.approx(0.15)
    m = entries["params"]["measured"]
    assert m["commit"] == provenance.git_commit() and m["timestamp"] and m["threads"] == stored["threads"]
    assert set(m["load_average_1min"]) == {"before", "after", "cpus"} and m["cells"] == 2
    assert m["fwd_bwd_seconds_median"] == 2.0
    merged = perf.merge_alone(stored, entries)
    assert merged["per_proxy"]["params"] == entries["params"] and "measured" in merged["per_proxy"]["flops"]
    for name, v in stored["per_proxy"].items():  # the main run's entries keep theirs, without a measured record
        if name not in entries:
            assert merged["per_proxy"][name] == v and "measured" not in v
    assert {k: v for k, v in merged.items() if k != "per_proxy"} == {k: v for k, v in stored.items()
                                                                     if k != "per_proxy"}
    assert "measured" not in stored["per_proxy"]["params"]  # the stored object itself is left as it was
    with pytest.raises(ValueError, match="stored run timed"):
        perf.time_alone(["params"], stored, cells=stored["cells"] + 1)


def test_partial_run_of_a_real_cell(real_data):
    stored = {"cells": 12, "seed": 0, "threads": 1, "batch_size": 64}
    v = perf.time_alone(["params"], stored, data_dir=real_data, repeats=1, cells=1)["params"]
    assert 0 < v["over_fwd_bwd"] < 1 and v["measured"]["fwd_bwd_seconds_median"] > 0


def test_partial_run_from_the_command_line(stub_timing, tmp_path):
    from proxybench import store
    from proxybench.report import PERF_STORE

    store.write_json(tmp_path / "perf.json", _stored(), PERF_STORE)
    perf.main(["--proxies", "param*,flops", "--cells", "1", "--repeats", "1", "--out", str(tmp_path), "--readme", ""])
    r = store.read_json(tmp_path / "perf.json", PERF_STORE)
    assert r["per_proxy"]["params"]["measured"]["cells"] == 1 and "measured" in r["per_proxy"]["flops"]
    assert r["per_proxy"]["grasp"] == _stored()["per_proxy"]["grasp"]
    md = (tmp_path / "perf.md").read_text()
    assert "| params† |" in md and "| flops† |" in md and "| grasp |" in md
    assert "† Measured later, alone, by `proxybench perf --proxies`" in md and "comparable number" in md


def test_partial_run_refuses_without_a_stored_run(tmp_path):
    with pytest.raises(SystemExit, match="run `make perf`"):
        perf.main(["--proxies", "params", "--out", str(tmp_path), "--readme", ""])
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="external scores"):
        perf.alone_names("naslib:params")
    assert perf.alone_names("te_nas") == ["te_nas_ntk", "te_nas_lr"]  # an aggregate: its members


def test_markdown_names_what_the_family_lacks_and_counts_share_groups_once(monkeypatch):
    r = _older()
    newer = ("gradsign", "gradsign_mean", "swap", "te_nas_ntk")  # as a run before they were in the family
    family = [p for p in r["family"]["proxies"] if p not in newer]
    r["family"]["proxies"] = family
    r["per_proxy"] = {k: v for k, v in r["per_proxy"].items() if k not in newer}
    monkeypatch.setattr(perf, "training_free", lambda: family)
    plain = perf.markdown(r)
    assert "not included" not in plain and "newer proxies" not in plain and "Not timed" not in plain
    # three newer default-study proxies timed alone (gradsign and gradsign_mean share a pass), one not timed
    monkeypatch.setattr(perf, "training_free", lambda: family + ["gradsign", "gradsign_mean", "swap", "te_nas_ntk"])
    mark = {"commit": "abc", "timestamp": "2026-01-01T00:00:00+00:00", "threads": 1, "cells": 12, "repeats": 2,
            "load_average_1min": {"before": 1.0, "after": 1.5, "cpus": 2}, "fwd_bwd_seconds_median": 1.0}
    r["per_proxy"].update({"gradsign": {"seconds_median": 2.0, "over_fwd_bwd": 1.0, "measured": mark},
                           "gradsign_mean": {"seconds_median": 2.4, "over_fwd_bwd": 1.2, "measured": mark},
                           "swap": {"seconds_median": 1.0, "over_fwd_bwd": 0.5, "measured": mark}})
    md = perf.markdown(r)
    assert (f"| all {len(family)} training-free proxies together (shared passes); not included: gradsign, "
            "gradsign_mean, swap, te_nas_ntk |") in md
    assert "The newer proxies alone, summed: 3.400 s per cell (1.70x one forward+backward)" in md
    assert "counted once, by its most expensive member (gradsign, gradsign_mean: gradsign_mean)" in md
    assert "Not timed at all: te_nas_ntk" in md
    fam, cpus = r["family"]["seconds_median"], r["load_average_1min"]["cpus"]
    hours = lambda s: s * perf.NB201_PAIRS / cpus / 3600  # noqa: E731
    assert f"**{hours(fam):.1f} hours**" in md and "a sum of separate measurements" in md
    assert f"**{hours(fam + 1.7 * r['fwd_bwd_seconds_median']):.1f} hours**" in md
    assert "| gradsign† |" in md and "at commit abc" in md and "| grasp |" in md


def test_alone_seconds_carry_a_partial_runs_ratio_over_to_the_main_runs_unit():
    """An entry merged by `perf --proxies` under another load counts by its ratio times the main run's unit."""
    from proxybench.report import alone_seconds

    perf = {"fwd_bwd_seconds_median": 0.5,
            "per_proxy": {"snip": {"seconds_median": 0.2, "over_fwd_bwd": 0.4},
                          "swap": {"seconds_median": 9.0, "over_fwd_bwd": 3.0, "measured": {"fwd_bwd_seconds": 3.0}}}}
    assert alone_seconds(perf) == {"snip": 0.2, "swap": 1.5}
    assert alone_seconds(None) == {}


def test_the_nb101_timing_leaves_out_and_names_the_nb201_only_proxies(monkeypatch):
    # _nb101 times every training-free proxy whose definition applies to NB101 networks (swap_reg, te_nas_* do not:
    # they refuse an NB101 cell); the page names them instead of listing them as missing
    r = _stored()
    family = ["snip", "swap", "swap_reg", "te_nas_lr"]
    monkeypatch.setattr(perf, "training_free", lambda: family)
    r["nb101"] = {"cells": 2, "batch_size": 64, "fwd_bwd_seconds_median": 5.0, "six_seconds_median": 19.0,
                  "all_seconds_median": 30.0, "six_over_fwd_bwd": 3.8,
                  "proxies": perf.nb101_proxies()}
    assert perf.nb101_proxies() == ["snip", "swap"]  # what _nb101 times
    md = perf.markdown(r)
    line = next(ln for ln in md.splitlines() if ln.startswith("NAS-Bench-101"))
    assert "not included" not in line and "swap_reg, te_nas_lr are defined for NB201 networks only" in line


def test_every_full_run_is_kept_and_each_machine_gets_a_row(tmp_path):
    from datetime import datetime, timezone

    old = _older()  # a run before the tasks were measured
    new = _stored()
    new["environment"] = {**new["environment"], "cpu": "Other CPU (R) 9; AVX2 kernels", "git_commit": "abc"}
    task = lambda x: {"cells": 4, "substitute": False, "over_cifar10": x, "over_cifar10_range": [x, x],  # noqa: E731
                      "flops_over_cifar10": x}
    new["family"].update(gflop_mean=250.0, tasks={"cifar100": task(2.0), "ImageNet16-120": task(0.5)})
    a = perf.archive_run(tmp_path, new, datetime(2026, 12, 5, 1, 2, 3, tzinfo=timezone.utc))
    b = perf.archive_run(tmp_path, old, datetime(2026, 12, 4, 1, 2, 3, tzinfo=timezone.utc))
    assert a.name == "20261205T010203-other-cpu-r-9.json" and b.parent == a.parent == tmp_path / perf.RUNS_DIR
    with pytest.raises(FileExistsError):
        perf.archive_run(tmp_path, old, datetime(2026, 12, 4, 1, 2, 3, tzinfo=timezone.utc))
    runs = perf.load_runs(tmp_path)
    assert [stem for stem, _ in runs] == [b.stem, a.stem]  # oldest first
    rows = [line for line in perf.markdown(new, runs).splitlines() if line.startswith("| 2026")]
    cpus = new["load_average_1min"]["cpus"]
    hours = new["family"]["seconds_median"] * (1 + 2.0 + 0.5) / 3 * perf.NB201_PAIRS / cpus / 3600
    old_hours = old["family"]["seconds_median"] * perf.NB201_PAIRS / cpus / 3600
    assert len(rows) == 2 and rows[1].startswith("| 20261205T010203 | Other CPU (R) 9; AVX2 kernels | abc |")
    assert f"| {hours:.1f} |" in rows[1] and f"| {old_hours:.1f}* |" in rows[0]
    assert "On each machine measured" not in perf.markdown(new, runs[:1])  # one machine: no table
