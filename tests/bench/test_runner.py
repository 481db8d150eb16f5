"""The study runner on the real NB201 data: resume, determinism, arch selection, executors, failing proxies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from proxybench.cache import KEY_COLUMNS, ScoreCache
from proxybench.datasets import nb201
from proxybench.datasets.errors import ArchError
from proxybench.proxies import UnknownProxyError, get_proxy, register_proxy
from proxybench.proxies.registry import _REGISTRY
from proxybench.runner import InProcessExecutor, ProcessExecutor, Study, make_executor, run_study, study_scores

pytestmark = pytest.mark.usefixtures("real_data")

STUDY = dict(space="nb201", tasks=("cifar10",), proxies=("params", "synflow"), sample=6, seed=42)
RAISES, NAN, READS_LABELS, READS_LABELS_WITH_DATA = (
    "_bench_test_raises", "_bench_test_nan", "_bench_test_reads_labels", "_bench_test_reads_labels_data")


def _scores(cache: ScoreCache) -> dict:
    df = cache.load()
    return {(a, p): s for a, p, s in zip(df["arch"], df["proxy"], df["score"], strict=True)}


def _run(study: Study, cache: ScoreCache, **kw):
    kw = {"executor": "inprocess", "progress": False, **kw}
    return run_study(study, cache, **kw)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The reference study scored once into a cache shared by the tests that only read it."""
    study = Study(**STUDY)
    cache = ScoreCache(tmp_path_factory.mktemp("runner") / "scores")
    return study, cache, _run(study, cache, chunk_size=4)


def test_run_computes_every_score_then_resumes_from_cache(first_run):
    study, cache, summary = first_run
    assert (summary.computed, summary.cached, summary.errors, summary.nonfinite) == (12, 0, 0, 0)
    df = cache.load()
    assert len(df) == 12 and not df.duplicated(["arch", "proxy"]).any()
    assert set(df["arch"]) == set(study.arch_list()) and set(df["proxy"]) == {"params", "synflow"}
    assert (df["status"] == "ok").all() and np.isfinite(df["score"]).all() and (df["score"] >= 0).all()
    assert (df["seed"] == 42).all() and (df["batch_size"] == 0).all() and (df["data_source"] == "none").all()
    assert len(cache.parts()) == 2  # one part per chunk; a run never compacts (append-only)
    parts = cache.parts()
    again = _run(study, cache)
    assert (again.computed, again.cached, again.errors) == (0, 12, 0)
    assert cache.parts() == parts  # nothing was written


def test_params_score_is_the_parameter_count(first_run):
    _, cache, _ = first_run
    df = cache.load()
    for arch, score in zip(df.loc[df["proxy"] == "params", "arch"], df.loc[df["proxy"] == "params", "score"],
                           strict=True):
        assert score == nb201.count_params(nb201.build_network(arch, "cifar10"))


def test_study_scores_join_the_ground_truth(first_run):
    study, cache, _ = first_run
    df = study_scores(study, cache)
    assert len(df) == 12 and df["test_acc_200"].notna().all()
    truth = nb201.load_truth("cifar10").set_index("arch")["test_acc_200"]
    assert (df["test_acc_200"].to_numpy() == truth.loc[df["arch"]].to_numpy()).all()


def test_scores_are_deterministic_in_a_fresh_cache(first_run, tmp_path):
    study, cache, _ = first_run
    fresh = ScoreCache(tmp_path / "again")
    s = _run(Study(**STUDY), fresh, chunk_size=8)
    assert s.computed == 12
    assert _scores(fresh) == _scores(cache)


def test_process_executor_gives_the_same_scores(first_run, tmp_path):
    study, cache, _ = first_run
    other = ScoreCache(tmp_path / "processes")
    s = _run(study, other, executor="processes", workers=2, chunk_size=2)
    assert (s.computed, s.cached, s.errors) == (12, 0, 0)
    got, want = _scores(other), _scores(cache)
    assert got.keys() == want.keys()
    for k in want:  # one torch thread per worker may reorder float64 sums in synflow: allow rounding only
        assert got[k] == pytest.approx(want[k], rel=1e-9), k


def test_make_executor():
    assert isinstance(make_executor("inprocess"), InProcessExecutor)
    assert isinstance(make_executor("auto", workers=4, n_jobs=1), InProcessExecutor)
    ex = make_executor("processes", workers=3)
    assert isinstance(ex, ProcessExecutor) and ex.workers == 3
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("spark")
    # auto: processes only when the estimated work pays their start-up
    assert isinstance(make_executor("auto", workers=2, n_jobs=1, seconds=60.0), ProcessExecutor)
    assert isinstance(make_executor("auto", workers=2, n_jobs=50, seconds=1.0), InProcessExecutor)


def test_a_small_study_spreads_over_every_worker():
    from proxybench.runner import Job, estimated_seconds, spread

    items = tuple((f"a{i}", ("params", "grasp")) for i in range(8))
    one = [Job("nb201", "cifar10", 42, 64, True, None, "cpu", items, "c")]
    two = spread(one, 2)
    assert [len(j.items) for j in two] == [4, 4] and sum((j.items for j in two), ()) == items
    assert [len(j.items) for j in spread(one, 3)] == [3, 3, 2]
    assert spread(one, 1) == one and spread(two, 2) == two
    assert estimated_seconds(one) > estimated_seconds([Job("nb201", "cifar10", 42, 64, True, None, "cpu",
                                                           tuple((a, ("params",)) for a, _ in items), "c")])


# ------------------------------------------------------------------------------------ choosing archs

def test_arch_list_is_deterministic_for_a_sample_seed():
    a = Study(**STUDY).arch_list()
    assert a == Study(**STUDY).arch_list() == Study(**STUDY).arch_list()
    assert len(a) == 6 and len(set(a)) == 6
    assert all(nb201.canonical(x) == x for x in a)
    idx = [nb201.arch_to_index(x) for x in a]
    assert idx == sorted(idx)  # official index order
    b = Study(**{**STUDY, "sample_seed": 1}).arch_list()
    assert len(b) == 6 and b != a
    # The init seed does not change the sample.
    assert Study(**{**STUDY, "seed": 0}).arch_list() == a


def test_the_seeded_permutation_is_the_historic_one_and_samples_are_its_sorted_prefixes():
    """Every committed study depends on this order: the default studies, DPS's held-out cells, the search groups."""
    from proxybench.runner import draw_order, permutation, seeded_sample

    every = nb201.all_archs()
    perm = permutation("nb201", 0)
    assert perm.tolist() == np.random.default_rng(0).permutation(len(every)).tolist()
    assert draw_order("nb201", 5) == [every[i] for i in perm[:5]]
    assert seeded_sample("nb201", 5) == sorted(draw_order("nb201", 5), key=every.index)
    assert Study(**{**STUDY, "sample": 300}).arch_list() == seeded_sample("nb201", 300)
    assert set(seeded_sample("nb201", 30, seed=1)) < set(seeded_sample("nb201", 300, seed=1))  # nested


def test_select_is_the_study_filter_of_study_scores(first_run):
    from proxybench.runner import select

    study, cache, _ = first_run
    df = cache.load()
    mine = select(df, study)
    assert len(mine) == 12 and set(mine["proxy"]) == {"params", "synflow"}
    assert select(df, Study(**{**STUDY, "seed": 0})).empty and select(df, Study(**{**STUDY, "sample": 3})).shape[0] == 6
    assert len(select(df, Study(**{**STUDY, "proxies": ("params",)}))) == 6
    assert len(select(df, Study(**{**STUDY, "proxies": ("params",)}), scope_only=True)) == 12
    assert study_scores(study, cache)[["arch", "proxy", "score"]].equals(
        mine[["arch", "proxy", "score"]].reset_index(drop=True))


def test_make_context_uses_the_spaces_builder_and_shapes():
    from proxybench.runner import make_context

    arch = nb201.all_archs()[7]
    ctx = make_context("nb201", "cifar100", arch, 42, requested=["params"], allow_labels=False)
    assert ctx.input_shape == (3, 32, 32) and ctx.num_classes == 100 and ctx.requested == ("params",)
    assert not ctx.allow_labels and ctx.device.type == "cpu" and ctx.batch is None
    assert sum(p.numel() for p in ctx.network().parameters()) == sum(
        p.numel() for p in nb201.build_network(arch, "cifar100").parameters())


def test_sample_none_is_every_arch_and_a_bad_sample_is_refused():
    assert len(Study(**{**STUDY, "sample": None}).arch_list()) == nb201.N_ARCHS
    with pytest.raises(ArchError, match="positive"):
        Study(**{**STUDY, "sample": 0})


def test_archs_given_as_indices_or_strings_are_canonical():
    idx = (0, "6111", 15624)
    strings = [nb201.index_to_arch(i) for i in (0, 6111, 15624)]
    assert Study(**{**STUDY, "archs": idx}).arch_list() == strings
    messy = tuple(f"  {s}\n" for s in strings)  # surrounding whitespace, as read from a file
    assert Study(**{**STUDY, "archs": messy}).arch_list() == strings
    # Repeats (the same cell as an index and as a string) are scored once, first occurrence first.
    assert Study(**{**STUDY, "archs": (strings[1], 6111, 0)}).arch_list() == [strings[1], strings[0]]


def test_archs_are_exactly_what_is_scored(tmp_path):
    strings = [nb201.index_to_arch(i) for i in (1, 2)]
    cache = ScoreCache(tmp_path)
    s = _run(Study(**{**STUDY, "archs": (1, strings[1])}), cache)
    assert s.computed == 4
    assert sorted(cache.load()["arch"].unique()) == sorted(strings)


def test_a_malformed_arch_is_an_arch_error():
    with pytest.raises(ArchError, match="malformed NB201 arch string"):
        Study(**{**STUDY, "archs": ("|conv~0|",)}).arch_list()
    with pytest.raises(ArchError, match="out of range"):
        Study(**{**STUDY, "archs": (15625,)}).arch_list()


def test_unknown_proxy_suggests_a_name():
    with pytest.raises(UnknownProxyError, match="did you mean 'synflow'"):
        Study(**{**STUDY, "proxies": ("params", "synflw")})


def test_unknown_task_names_the_valid_tasks():
    with pytest.raises(ArchError) as e:
        Study(**{**STUDY, "tasks": ("cifar-10",)})
    msg = str(e.value)
    assert "cifar-10" in msg and all(t in msg for t in nb201.TASKS)
    assert "did you mean 'cifar10'" in msg


# --------------------------------------------------------------------------------- failing proxies

def _raises(ctx):
    raise RuntimeError("boom")


def _nan(ctx):
    return float("nan")


def _reads_labels(ctx):
    return float(ctx.targets.float().sum())


@pytest.fixture
def scratch_proxies():
    """Throwaway proxies, registered for one test and removed after it (the registry refuses a name twice,
    and the contract tests of tests/proxies iterate over every registered proxy)."""
    specs = {
        RAISES: (_raises, dict(needs_data=False, needs_labels=False)),
        NAN: (_nan, dict(needs_data=False, needs_labels=False)),
        READS_LABELS: (_reads_labels, dict(needs_data=False, needs_labels=False)),
        READS_LABELS_WITH_DATA: (_reads_labels, dict(needs_data=True, needs_labels=False)),
    }
    for name, (fn, needs) in specs.items():
        if name not in _REGISTRY:
            register_proxy(name, higher_is_better=True, family="zero-cost", paper="test", **needs,
                           description="bench test proxy")(fn)
    yield list(specs)
    for name in specs:
        _REGISTRY.pop(name, None)


def test_failing_proxies_are_recorded_not_raised(scratch_proxies, tmp_path):
    study = Study(**{**STUDY, "proxies": ("params", RAISES, NAN, READS_LABELS), "sample": 3})
    cache = ScoreCache(tmp_path)
    s = _run(study, cache, chunk_size=2)
    assert (s.computed, s.cached, s.errors, s.nonfinite) == (12, 0, 6, 3)
    assert 1 <= len(s.error_examples) <= 5
    df = cache.load().set_index("proxy")
    assert (df.loc["params", "status"] == "ok").all()
    assert (df.loc[RAISES, "status"] == "error").all() and math.isnan(df.loc[RAISES, "score"].iloc[0])
    assert df.loc[RAISES, "error"].str.fullmatch("RuntimeError: boom").all()
    assert (df.loc[NAN, "status"] == "nonfinite").all() and (df.loc[NAN, "error"] == "").all()
    assert (df.loc[READS_LABELS, "status"] == "error").all()
    assert df.loc[READS_LABELS, "error"].str.startswith("LabelAccessError").all()
    assert df.loc[READS_LABELS, "error"].str.contains("needs_labels").all()

    # Errors are cached like scores; --retry-errors recomputes exactly them.
    assert _run(study, cache).computed == 0
    retry = _run(study, cache, retry_errors=True)
    assert (retry.computed, retry.cached, retry.errors) == (6, 6, 6)
    df = cache.load()
    assert len(df) == 12 and not df.duplicated(KEY_COLUMNS).any()


def test_a_proxy_with_data_but_not_labels_cannot_read_labels(scratch_proxies, tmp_path):
    assert get_proxy(READS_LABELS_WITH_DATA).needs_data
    study = Study(**{**STUDY, "proxies": (READS_LABELS_WITH_DATA,), "sample": 2, "batch_size": 8})
    cache = ScoreCache(tmp_path)
    s = _run(study, cache)
    assert (s.computed, s.errors) == (2, 2)
    df = cache.load()
    assert df["error"].str.contains("LabelAccessError").all() and df["error"].str.contains("needs_labels").all()
    assert (df["batch_size"] == 8).all() and (df["data_source"] != "none").all()


def test_a_share_groups_pass_is_divided_among_its_members(tmp_path, monkeypatch):
    # the cache's seconds are each proxy's true part of the cell's time: the gradient pass's members pay equal
    # parts of the pass, whichever ran first, and shared_seconds records the whole pass on each of them
    import time

    from proxybench.proxies.registry import ProxyInfo
    from proxybench.runner import plan, score_job

    calls = []
    compute = ProxyInfo.compute

    def timed(self, ctx):  # the proxies' calls alone (not the minibatch's loading around them)
        t0 = time.perf_counter()
        try:
            return compute(self, ctx)
        finally:
            calls.append(time.perf_counter() - t0)

    monkeypatch.setattr(ProxyInfo, "compute", timed)
    group = ("snip", "grad_norm", "nwot", "jacob_cov")
    study = Study(space="nb201", tasks=("cifar10",), proxies=group + ("params", "synflow"), sample=1, seed=42)
    (job,), _ = plan(study, ScoreCache(tmp_path))
    rows = {r["proxy"]: r for r in score_job(job)}
    wall = sum(calls)
    shared = {rows[p]["shared_seconds"] for p in group}
    assert len(shared) == 1 and (s := shared.pop()) > 0.05  # one pass, on every member
    assert rows["synflow"]["shared_seconds"] == 0.0  # a proxy of no group
    assert rows["params"]["shared_seconds"] > 0  # the shared network (params alone here: all of it)
    assert all(s / len(group) <= rows[p]["seconds"] < s for p in group)  # no member 0, none the whole pass
    assert len(calls) == len(rows)
    assert sum(r["seconds"] for r in rows.values()) == pytest.approx(wall, rel=0.01)  # the cell's real time


def test_older_rows_have_their_shared_pass_divided_when_reported():
    # schema-2 rows: the cell's first member of a group paid the whole pass; report.divided_seconds splits it
    # among the group's rows of that cell written together, and leaves other proxies and newer rows alone
    import pandas as pd

    from proxybench.report import divided_seconds

    nan = float("nan")
    df = pd.DataFrame({"space": "nb201", "task": "cifar10", "seed": 42, "arch": ["a", "a", "a", "a", "b", "b"],
                       "proxy": ["snip", "grad_norm", "synflow", "nwot", "snip", "grad_norm"],
                       "timestamp": ["t1", "t1", "t1", "t2", "t3", "t3"],
                       "seconds": [0.9, 0.0, 0.2, 0.5, 0.5, 0.5], "shared_seconds": [nan, nan, nan, nan, 0.8, 0.8]})
    out = divided_seconds(df)["seconds"].tolist()
    assert out == [0.45, 0.45, 0.2, 0.5, 0.5, 0.5]  # nwot: another run (part), its own pass
