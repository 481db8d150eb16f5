"""Does a proxy make NAS cheaper? Search simulations on NAS-Bench-201 with proxies in the loop.

Abdelfattah et al. (ICLR 2021) put zero-cost proxies into random search and regularised evolution and
reached the same accuracy with several times fewer trained models; EcoNAS (CVPR 2020) spends training on
promising candidates through a hierarchy of cheap fidelities. With the ground truth in a table every such
search is simulated in milliseconds: "training" a cell reads its 200-epoch validation accuracy
(``val_acc_200``, what a search may see), and the search reports the 200-epoch test accuracy
(``test_acc_200``) of the cell it would return (the best validation accuracy trained so far).

Strategies (``Setting``: a base search and how the proxy enters it):

- ``random``: cells drawn uniformly without replacement, each trained.
- ``rea``: regularised (aging) evolution of Real et al. (AAAI 2019) with NB201's settings (population 10,
  tournament 3): the best of 3 random members is mutated (one of the 6 edges gets another op) into a cell
  not trained yet, which is trained and replaces the oldest member.
- ``warmup``: score N random cells with the proxy first; random search trains them best-proxy-first, REA
  starts from the best P of them.
- ``move``: each step proposes C candidates (C random cells; for REA C mutations of the parent), scores them
  with the proxy and trains only the best.
- ``hier`` (EcoNAS-style hierarchy): the C candidates are scored with the proxy, the best K get the official
  12-epoch-schedule training (``val_acc_12``, charged 12/200 of a full training) and only the best of those
  gets the full 200-epoch training.
- ``12ep``: the same hierarchy without the proxy stage (K candidates straight to 12 epochs): it separates what
  the proxy adds from what the cheap training adds.

Costs, in two currencies: trainings (full ones, plus 12-epoch ones at ``COST_12`` each) and proxy seconds as
measured when the scores were computed (the ``seconds`` column of the score cache; see ``proxy_seconds``).
A proxy score or a 12-epoch result is paid once per cell and remembered; no cell is fully trained twice.

The pure core (``simulate``, ``hits``, ``speedups``, ``curves``) works on any ``SimTable``; the rest reads the
score cache and the benchmark, caches repetitions as parquet under ``reports/search/`` and writes the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from proxybench import store
from proxybench.sections import SectionConfig, section

SIM_VERSION = 2  # bump when a change would alter simulated trajectories (invalidates reports/search/)
# the simulations' files under <out>/search/: one parquet part per block of repetitions, a summary per group
PART_STORE = store.Kind("search-part", 1, "proxybench search")
SUMMARY_STORE = store.Kind("search-summary", 1, "proxybench search")
COST_12 = 12 / 200  # one 12-epoch-schedule training, in full (200-epoch) trainings: the ratio of epochs
BASES = ("random", "rea")
VARIANTS = ("none", "warmup", "move", "hier", "12ep")
VARIANT_LABELS = {"none": "no proxy", "warmup": "warm-up", "move": "move proposal", "hier": "hierarchical",
                  "12ep": "12-epoch only"}


# ------------------------------------------------------------------------------------------ the model

@dataclass(frozen=True)
class SearchConfig:
    """Settings of a simulation study. ``budget=None``: a tenth of the space, clipped to [50, 500] trainings."""

    reps: int = 100
    seed: int = 0
    budget: int | None = None
    population: int = 10  # NB201's R-EA: --ea_population 10 --ea_sample_size 3
    sample_size: int = 3
    warmup_fraction: float = 0.2  # N = 20% of the space: 3,125 of 15,625 (Abdelfattah et al. used 3,000) ...
    warmup_min_budgets: float = 3.0  # ... but at least 3 budgets, so the proxy picks from many more than are trained
    candidates: int = 10  # C: candidates per step of move proposal and of the hierarchy
    keep_12: int = 3  # K: candidates that get the 12-epoch training in the hierarchy
    cost_12: float = COST_12
    gap: float = 0.5  # "within 0.5%": percentage points of test accuracy below the space's best cell
    block: int = 50  # repetitions per cached part

    def __post_init__(self):
        if self.reps < 1 or self.block < 1:
            raise ValueError("reps and block must be at least 1")
        if self.population < self.sample_size or self.sample_size < 1:
            raise ValueError(f"REA needs 1 <= sample_size <= population, got {self.sample_size}, {self.population}")
        if self.candidates < 1 or not 1 <= self.keep_12 <= self.candidates:
            raise ValueError(f"need 1 <= keep_12 <= candidates, got {self.keep_12}, {self.candidates}")
        if not 0 < self.warmup_fraction <= 1:
            raise ValueError(f"warmup_fraction must be in (0, 1], got {self.warmup_fraction}")

    @property
    def tag(self) -> str:
        """'' for the default study; otherwise a suffix that keeps its files apart from the default's."""
        if self == SearchConfig():
            return ""
        return "-" + hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]

    def budget_for(self, n: int) -> int:
        return min(n, self.budget if self.budget is not None else int(np.clip(n // 10, 50, 500)))

    def warmup_for(self, n: int) -> int:
        want = max(self.population, round(self.warmup_fraction * n),
                   round(self.warmup_min_budgets * self.budget_for(n)))
        return int(min(n, want))


@dataclass(frozen=True)
class Setting:
    """One search strategy: a base search, the way a proxy enters it, and the proxy (None without one)."""

    base: str
    variant: str = "none"
    proxy: str | None = None

    def __post_init__(self):
        if self.base not in BASES:
            raise ValueError(f"unknown base search {self.base!r}: use one of {BASES}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}: use one of {VARIANTS}")
        if (self.proxy is None) != (self.variant in ("none", "12ep")):
            raise ValueError(f"variant {self.variant!r} {'needs' if self.proxy is None else 'takes no'} proxy")

    @property
    def key(self) -> str:
        return f"{self.base}-{self.variant}" + (f"-{self.proxy}" if self.proxy else "")

    @property
    def label(self) -> str:
        base = {"random": "random", "rea": "REA"}[self.base]
        return base + ("" if self.variant == "none" else f" + {VARIANT_LABELS[self.variant]}") + (
            f" ({self.proxy})" if self.proxy else "")


@dataclass
class SimTable:
    """The simulated space: per cell its ops, the three accuracies a search can read, and proxy scores.

    ``scores[p]`` is oriented (higher = the proxy predicts better), non-finite scores set to -inf (ranked
    last: a search must still rank them); ``seconds[p]`` is what scoring each cell cost.
    """

    name: str
    task: str
    ids: np.ndarray  # official NB201 indices (or any int id)
    ops: np.ndarray  # (n, edges) op indices: mutation = change one edge
    val: np.ndarray  # 200-epoch validation accuracy: what "training" reveals
    test: np.ndarray  # 200-epoch test accuracy: what is reported
    val12: np.ndarray  # 12-epoch-schedule validation accuracy: the cheap training
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, np.ndarray] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    # a set-level aggregate p (proxies.register_aggregate): (its aggregation, its members' oriented scores). A search
    # ranks the cells it has scored so far with it (``_Run.score``); ``scores[p]`` is its value over the whole table,
    # which no search could know, kept for reference only
    members: dict[str, tuple[str, list[np.ndarray]]] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.ids)
        for k in ("ops", "val", "test", "val12"):
            if len(getattr(self, k)) != n:
                raise ValueError(f"SimTable {self.name}: {k} has {len(getattr(self, k))} rows, expected {n}")
        for p in self.scores:
            if len(self.scores[p]) != n or len(self.seconds[p]) != n:
                raise ValueError(f"SimTable {self.name}: scores/seconds of {p} do not cover the {n} cells")

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def target(self) -> float:
        return float(np.max(self.test))

    def fingerprint(self, setting: Setting, cfg: SearchConfig) -> str:
        """Hash of everything a setting's trajectories depend on: cached parts with another hash are stale."""
        h = hashlib.sha256()
        h.update(json.dumps([SIM_VERSION, asdict(cfg) | {"reps": 0, "block": 0}, setting.key]).encode())
        for a in (self.ids, self.ops, self.val, self.test, self.val12):
            h.update(np.ascontiguousarray(a).tobytes())
        if setting.proxy:
            h.update(np.ascontiguousarray(self.scores[setting.proxy], dtype=np.float64).tobytes())
            h.update(np.ascontiguousarray(self.seconds[setting.proxy], dtype=np.float64).tobytes())
            how, arrays = self.members.get(setting.proxy, ("", []))
            h.update(how.encode())
            for a in arrays:
                h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()[:12]


# ------------------------------------------------------------------------------------- the simulation

class _Run:
    """The state of one search: what is trained, scored, 12-epoch-trained, and what it cost."""

    def __init__(self, t: SimTable, proxy: str | None, cfg: SearchConfig, rng: np.random.Generator):
        self.t, self.cfg, self.rng = t, cfg, rng
        self.score_of = t.scores[proxy] if proxy else None
        self.seconds_of = t.seconds[proxy] if proxy else None
        self.members_of = t.members.get(proxy) if proxy else None  # an aggregate: ranked over the scored cells
        self.budget = cfg.budget_for(t.n)
        self.trained = np.zeros(t.n, bool)
        self.scored = np.zeros(t.n, bool)
        self.partial = np.zeros(t.n, bool)
        self.n_train = self.n12 = self.proxy_n = 0
        self.proxy_s = 0.0
        self.best = -1
        self.events: list[tuple] = []  # (k, n12, proxy_n, proxy_s, cell) whenever the incumbent changes
        self._perm, self._ptr = rng.permutation(t.n), 0
        self._drawn = np.zeros(t.n, bool)

    @property
    def done(self) -> bool:
        return self.n_train >= self.budget

    def train(self, i: int) -> None:
        if self.trained[i]:
            raise AssertionError(f"cell {i} trained twice")  # a bug in a strategy, never expected
        self.trained[i] = True
        self.n_train += 1
        if self.best < 0 or self.t.val[i] > self.t.val[self.best]:
            self.best = int(i)
            self.events.append((self.n_train, self.n12, self.proxy_n, self.proxy_s, int(i)))

    def score(self, idx: np.ndarray) -> np.ndarray:
        new = idx[~self.scored[idx]]
        self.scored[new] = True
        self.proxy_n += len(new)
        self.proxy_s += float(self.seconds_of[new].sum())
        if self.members_of is None:
            return self.score_of[idx]
        # a set-level aggregate: what a search can compute, over every cell it has scored so far
        from proxybench.metrics import aggregate

        how, arrays = self.members_of
        seen = np.flatnonzero(self.scored)
        agg = aggregate([a[seen] for a in arrays], how)
        out = agg[np.searchsorted(seen, idx)]
        return np.where(np.isnan(out), -np.inf, out)

    def train12(self, idx: np.ndarray) -> np.ndarray:
        new = idx[~self.partial[idx]]
        self.partial[new] = True
        self.n12 += len(new)
        return self.t.val12[idx]

    def draw(self, k: int) -> np.ndarray:
        """k untrained cells, uniformly, none drawn before; once all were drawn, any untrained ones."""
        out: list[int] = []
        while len(out) < k:
            if self._ptr >= len(self._perm):
                rest = np.flatnonzero(~self.trained & ~self._drawn)
                if not len(rest):
                    self._drawn[:] = False
                    rest = np.setdiff1d(np.flatnonzero(~self.trained), out)
                    if not len(rest):
                        break
                self._perm, self._ptr = self.rng.permutation(rest), 0
            i = int(self._perm[self._ptr])
            self._ptr += 1
            if not self.trained[i] and not self._drawn[i]:
                self._drawn[i] = True
                out.append(i)
        return np.asarray(out, dtype=np.int64)

    def nearest(self, parent: int, k: int) -> np.ndarray:
        """k untrained cells nearest to ``parent`` in Hamming distance over the edges, ties at random. On the
        full space these are k of its one-edge mutations; on a restricted space the nearest cells it has."""
        d = (self.t.ops != self.t.ops[parent]).sum(1)
        d[self.trained] = 99
        out: list[int] = []
        for level in range(1, self.t.ops.shape[1] + 1):
            c = np.flatnonzero(d == level)
            need = k - len(out)
            out.extend(c if len(c) <= need else self.rng.choice(c, need, replace=False))
            if len(out) >= k:
                break
        return np.asarray(out, dtype=np.int64)

    def top(self, idx: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
        """The k of ``idx`` with the highest values, ties broken at random (params ties often)."""
        return idx[np.lexsort((self.rng.random(len(idx)), -values))[:k]]


def _funnel(run: _Run, cand: np.ndarray, variant: str) -> int:
    """Which of the candidate cells to train fully."""
    cfg = run.cfg
    if variant == "move":
        return int(run.top(cand, run.score(cand), 1)[0])
    if variant == "hier":
        cand = run.top(cand, run.score(cand), cfg.keep_12)
    if variant in ("hier", "12ep"):
        return int(run.top(cand, run.train12(cand), 1)[0])
    return int(cand[0])


def simulate(table: SimTable, setting: Setting, cfg: SearchConfig, rep: int) -> tuple[list[tuple], tuple]:
    """One seeded search. Returns its incumbent changes ``(k, n12, proxy_n, proxy_s, cell)`` and its totals
    ``(k, n12, proxy_n, proxy_s)`` when the budget is spent. Deterministic in ``(cfg.seed, rep)``; every
    setting of a repetition starts from the same random stream (common random numbers)."""
    rng = np.random.default_rng([cfg.seed, rep])
    run = _Run(table, setting.proxy, cfg, rng)
    v, n = setting.variant, table.n
    per_step = {"none": 1, "warmup": 1, "move": cfg.candidates, "hier": cfg.candidates, "12ep": cfg.keep_12}[v]
    if setting.base == "random":
        if v == "warmup":
            pool = run.draw(cfg.warmup_for(n))
            for i in run.top(pool, run.score(pool), len(pool)):
                if run.done:
                    break
                run.train(int(i))
        while not run.done:
            cand = run.draw(per_step)
            if not len(cand):
                break
            run.train(_funnel(run, cand, v))
    else:
        if v == "warmup":
            pool = run.draw(cfg.warmup_for(n))
            init = run.top(pool, run.score(pool), cfg.population)
        else:
            init = run.draw(cfg.population)
        pop: deque[int] = deque()
        for i in init:
            if run.done:
                break
            run.train(int(i))
            pop.append(int(i))
        while not run.done:
            members = np.asarray(pop)[rng.choice(len(pop), min(cfg.sample_size, len(pop)), replace=False)]
            parent = int(members[np.argmax(table.val[members])])
            cand = run.nearest(parent, per_step)
            if not len(cand):
                break
            child = _funnel(run, cand, "none" if v == "warmup" else v)
            run.train(child)
            pop.append(child)
            if len(pop) > cfg.population:
                pop.popleft()
    return run.events, (run.n_train, run.n12, run.proxy_n, run.proxy_s)


EVENT_COLUMNS = ["rep", "end", "k", "n12", "proxy_n", "proxy_s", "arch"]


def simulate_reps(table: SimTable, setting: Setting, cfg: SearchConfig, reps) -> pd.DataFrame:
    """Repetitions ``reps`` of a setting as rows: one per incumbent change, and one ``end`` row per repetition."""
    rows = []
    for r in reps:
        events, end = simulate(table, setting, cfg, int(r))
        rows += [(r, False, k, n12, pn, ps, int(table.ids[c])) for k, n12, pn, ps, c in events]
        rows.append((r, True, *end, -1))
    df = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    return df.astype({"rep": "int32", "k": "int32", "n12": "int32", "proxy_n": "int32", "proxy_s": "float64",
                      "arch": "int32"})


# --------------------------------------------------------------------------------------- the analysis

def hits(events: pd.DataFrame, table: SimTable, cfg: SearchConfig) -> pd.DataFrame:
    """Per repetition: when (trainings, 12-epoch runs, cost, proxy evaluations and seconds) the returned
    cell's test accuracy first came within ``cfg.gap`` points of the space's best; inf when never."""
    test_of = pd.Series(table.test, index=table.ids)
    goal = table.target - cfg.gap
    ev = events[~events["end"]].assign(test=lambda d: test_of.reindex(d["arch"]).to_numpy())
    first = ev[ev["test"] >= goal - 1e-9].groupby("rep", sort=True).first()
    end = events[events["end"]].set_index("rep")
    out = pd.DataFrame(index=end.index)
    for c in ("k", "n12", "proxy_n", "proxy_s"):
        out[c] = first[c].reindex(out.index).astype(float).fillna(np.inf)
    out["cost"] = out["k"] + cfg.cost_12 * out["n12"]
    out["reached"] = np.isfinite(out["k"])
    last = ev.groupby("rep").last()
    out["final_test"] = last["test"].reindex(out.index)
    out["end_cost"] = end["k"] + cfg.cost_12 * end["n12"]
    out["end_proxy_s"] = end["proxy_s"]
    out["end_proxy_n"] = end["proxy_n"]
    return out.reset_index()


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else float("nan")  # inf (never reached) sorts last: a censored median


def _boot_medians(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    return np.median(x[idx], axis=1)


def speedups(h: dict[str, pd.DataFrame], baselines: dict[str, str], n_boot: int = 1000,
             seed: int = 0) -> pd.DataFrame:
    """Per setting: median cost to reach the target (95% bootstrap interval over repetitions), the share of
    repetitions that reached it, and the speed-up (baseline median / this median, with a bootstrap interval)
    against each baseline setting key in ``baselines`` (name -> key)."""
    rng = np.random.default_rng(seed)
    boots = {k: _boot_medians(v["cost"].to_numpy(), n_boot, rng) for k, v in h.items()} if n_boot else {}
    rows = []
    for key, d in h.items():
        cost = d["cost"].to_numpy()
        row = {"setting": key, "reps": len(d), "reached": float(d["reached"].mean()), "median_cost": _median(cost),
               "median_trainings": _median(d["k"].to_numpy()), "median_n12": _median(d["n12"].to_numpy()),
               "median_proxy_n": _median(d["proxy_n"].to_numpy()), "median_proxy_s": _median(d["proxy_s"].to_numpy()),
               "mean_final_test": float(d["final_test"].mean())}
        if n_boot:
            # no interpolation: medians of censored repetitions are inf, and inf - inf would give nan
            row["median_cost_lo"], row["median_cost_hi"] = np.percentile(boots[key], [2.5, 97.5],
                                                                         method="inverted_cdf")
        for name, base in baselines.items():
            if base not in h:
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                row[f"speedup_{name}"] = _median(h[base]["cost"].to_numpy()) / row["median_cost"]
                if n_boot:
                    ratio = boots[base] / boots[key]  # inf / inf (both censored) is nan: left out
                    row[f"speedup_{name}_lo"], row[f"speedup_{name}_hi"] = (
                        np.nanpercentile(ratio, [2.5, 97.5], method="inverted_cdf") if not np.isnan(ratio).all()
                        else (np.nan, np.nan))
        rows.append(row)
    return pd.DataFrame(rows)


def curves(events: pd.DataFrame, table: SimTable, cfg: SearchConfig, grid: np.ndarray) -> pd.DataFrame:
    """Test accuracy of the returned cell against cost (full-training equivalents) on ``grid``: mean over
    repetitions with a 95% normal interval of the mean; NaN where a repetition has trained nothing yet."""
    ev = events[~events["end"]].sort_values(["rep", "k"], kind="stable")
    by_id = np.full(int(table.ids.max()) + 1, np.nan)
    by_id[table.ids] = table.test
    vals = by_id[ev["arch"].to_numpy()]
    cost = ev["k"].to_numpy() + cfg.cost_12 * ev["n12"].to_numpy()
    _, starts = np.unique(ev["rep"].to_numpy(), return_index=True)
    bounds = list(starts) + [len(ev)]
    mat = np.full((len(starts), len(grid)), np.nan)
    for row in range(len(starts)):
        a, b = bounds[row], bounds[row + 1]
        at = np.searchsorted(cost[a:b], grid, side="right") - 1
        mat[row] = np.where(at >= 0, vals[a:b][np.clip(at, 0, None)], np.nan)
    full = ~np.isnan(mat).any(0)
    mean = np.where(full, np.nanmean(np.where(full, mat, 0.0), 0), np.nan)
    half = 1.96 * mat.std(0, ddof=1) / np.sqrt(len(mat)) if len(mat) > 1 else np.zeros(len(grid))
    return pd.DataFrame({"cost": grid, "mean": mean, "lo": mean - half, "hi": mean + half})


# ------------------------------------------------------------------------------- the cached runs (I/O)

def _part_name(setting: Setting, fp: str, start: int) -> str:
    return f"{setting.key}__{fp}__r{start:04d}.parquet"


def run_setting(table: SimTable, setting: Setting, cfg: SearchConfig, root: str | os.PathLike) -> pd.DataFrame:
    """The setting's ``cfg.reps`` repetitions, computing only the blocks not cached under ``root`` (one parquet
    part per block of ``cfg.block`` repetitions, written atomically); stale parts of the setting are removed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fp = table.fingerprint(setting, cfg)
    for old in root.glob(f"{setting.key}__*.parquet"):
        if old.name.split("__")[1] != fp:
            old.unlink(missing_ok=True)  # written for other scores, truth, code or settings
    parts = []
    for start in range(0, cfg.reps, cfg.block):
        path = root / _part_name(setting, fp, start)
        reps = range(start, min(cfg.reps, start + cfg.block))
        if path.is_file():
            try:
                df = store.read_parquet(path, PART_STORE)
                if set(df["rep"]) == set(reps):
                    parts.append(df)
                    continue
            except (OSError, ValueError, KeyError) as e:  # truncated/corrupt parquet (ArrowInvalid), no "rep"
                warnings.warn(f"search cache part {path} is unreadable ({type(e).__name__}: {e}); recomputing it",
                              RuntimeWarning, stacklevel=2)
        df = simulate_reps(table, setting, cfg, reps)
        store.write_parquet(path, df, PART_STORE, compression="zstd")
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------------------ the tables from NB201

# Proxies whose cached seconds can be marginal: those of a share group of the registry (``shares`` in each record,
# proxies.registry.SHARES: the gradient proxies share one forward/backward pass per cell, params/flops/l2_norm one
# built network); the cache charges the shared work to whichever ran first on the cell. Their per-cell cost is
# each proxy's cost *alone* from `make perf` when reports/perf.json has it, else an upper bound (own seconds + the
# group's largest).

def proxy_seconds(rows: pd.DataFrame, proxy: str, perf: dict | None) -> tuple[pd.Series, str]:
    """Per-cell seconds of ``proxy`` (indexed by arch) from its cached rows, and where they came from."""
    from proxybench.proxies import share_group
    from proxybench.report import alone_seconds

    own = rows[rows["proxy"] == proxy].set_index("arch")["seconds"]
    group = share_group(proxy)
    if not group:
        return own, "measured per cell (score cache)"
    alone = alone_seconds(perf).get(proxy)
    if alone is not None:
        return pd.Series(float(alone), index=own.index), (
            f"alone, median of {(perf or {}).get('cells', '?')} cells (reports/perf.json): its cached seconds may "
            "exclude work shared with other proxies of the cell")
    g = rows[rows["proxy"].isin(group)].groupby("arch")["seconds"].max()
    return (own + g.reindex(own.index).fillna(0.0)).rename("seconds"), (
        "upper bound: own seconds + the largest cached seconds of the proxies it shares work with, per cell")


@dataclass(frozen=True)
class Group:
    """A simulated space: a task and the proxies that must all have scores on each of its cells."""

    name: str
    task: str
    proxies: tuple[str, ...]
    description: str = ""


# The default study. Spaces are the longest fully-scored prefix of the seed-0 permutation that the default
# training-free study samples from (proxybench.runner.Study.arch_list), so each is a uniform sample, nested with the
# 1,000/300-cell default studies; "all 15,625 cells" once the data-free proxies have scored the whole space.
GROUPS = (
    Group("cifar10-datafree", "cifar10", ("params", "flops", "synflow"),
          "data-free cheap proxies, meant to cover the whole space"),
    Group("cifar100-datafree", "cifar100", ("params", "flops", "synflow"),
          "data-free cheap proxies, meant to cover the whole space"),
    Group("ImageNet16-120-datafree", "ImageNet16-120", ("params", "flops", "synflow"),
          "data-free cheap proxies (an all-ones input: no images needed), meant to cover the whole space"),
    Group("cifar10-study", "cifar10", ("params", "synflow", "meco_opt", "nwot", "jacob_cov"),
          "costlier proxies: the cells of the default study"),
    Group("cifar100-study", "cifar100", ("params", "synflow", "meco_opt", "nwot", "jacob_cov"),
          "the cells of the default study"),
    Group("ImageNet16-120-study", "ImageNet16-120", ("params", "synflow", "meco_opt", "nwot", "jacob_cov"),
          "the cells of the default study"),
)


def settings_for(proxies) -> list[Setting]:
    out = [Setting(b) for b in BASES] + [Setting(b, "12ep") for b in BASES]
    out += [Setting(b, v, p) for p in proxies for b in BASES for v in ("warmup", "move", "hier")]
    return out


def load_table(group: Group, data_dir=None, cache: str | os.PathLike | None = None,
               perf: dict | None = None, seed: int = 42, cached: pd.DataFrame | None = None) -> SimTable:
    """The NB201 table of a group: ground truth, and the cached scores (current version, the default study's
    settings) of its proxies on the longest prefix of the seed-0 permutation where all of them exist."""
    from proxybench import metrics
    from proxybench.cache import ScoreCache
    from proxybench.datasets import nb201
    from proxybench.provenance import REPO_ROOT
    from proxybench.proxies import get_proxy, per_cell, sharing
    from proxybench.runner import Study, permutation, select

    truth = nb201.load_truth(group.task, data_dir).set_index("arch")
    study = Study(space="nb201", tasks=(group.task,), proxies=group.proxies, sample=None, seed=seed,
                  data_dir=data_dir)
    df = cached if cached is not None else ScoreCache(cache or REPO_ROOT / "reports" / "scores").load()
    df = select(df, study, scope_only=True)  # every proxy and setting of the group's task and seed
    allpass = df[df["proxy"].isin(sharing())]
    df = select(df, study, ok_only=True)
    every = nb201.all_archs(data_dir)
    perm = permutation("nb201", study.sample_seed, data_dir)
    have = None
    for p in per_cell(group.proxies):  # an aggregate needs each of its members
        s = set(df.loc[df["proxy"] == p, "arch"])
        have = s if have is None else have & s
    covered = np.array([every[i] in have for i in perm])
    n = int(np.argmin(covered)) if not covered.all() else len(perm)
    if n < 20:
        raise ValueError(f"search group {group.name}: only {n} cells of the seed-0 permutation have scores of all of "
                         f"{', '.join(group.proxies)} on {group.task}; run `proxybench run --space nb201 --task "
                         f"{group.task} --proxies {','.join(group.proxies)} --sample 1000` first")
    archs = [every[i] for i in np.sort(perm[:n])]
    t = truth.loc[archs]
    scores, seconds, sources, subst, members = {}, {}, {}, {}, {}
    computed = per_cell(group.proxies)
    for p in computed:
        info = get_proxy(p)
        rows = df[df["proxy"] == p].set_index("arch").loc[archs]
        # a search orders every cell: a non-finite score ranks last, whatever the proxy's NaN policy
        scores[p] = metrics.declared(rows["score"].to_numpy(dtype=float), info, every_cell=True)
        sec, sources[p] = proxy_seconds(pd.concat([df[df["arch"].isin(archs)], allpass[allpass["arch"].isin(
            archs) & ~allpass["proxy"].isin(computed)]]), p, perf)
        seconds[p] = sec.reindex(archs).to_numpy(dtype=float)
        subst[p] = bool(rows["substitute"].any())
    for p in group.proxies:
        info = get_proxy(p)
        if info.members:  # ranked over the cells a search has scored (SimTable.members); its cost is its members'
            members[p] = (info.aggregation, [scores[m] for m in info.members])
            scores[p] = metrics.aggregate(members[p][1], info.aggregation)
            seconds[p] = np.sum([seconds[m] for m in info.members], axis=0)
            sources[p] = "the sum of its members' seconds: " + "; ".join(f"{m}: {sources[m]}" for m in info.members)
            subst[p] = any(subst[m] for m in info.members)
    for p in set(computed) - set(group.proxies):  # members that are not searched with on their own
        for d in (scores, seconds, sources, subst):
            d.pop(p)
    notes = {"n": n, "of": len(every), "seconds_source": sources, "substitute": subst,
             "median_seconds": {p: float(np.median(seconds[p])) for p in group.proxies},
             "nonfinite": {p: int(np.sum(~np.isfinite(scores[p]))) for p in group.proxies}}
    return SimTable(name=group.name, task=group.task, ids=t["index"].to_numpy(dtype=np.int64),
                    ops=np.array([[nb201.OPS.index(o) for o in nb201.parse_arch(a)] for a in archs], dtype=np.int8),
                    val=t["val_acc_200"].to_numpy(float), test=t["test_acc_200"].to_numpy(float),
                    val12=t["val_acc_12"].to_numpy(float), scores=scores, seconds=seconds, notes=notes,
                    members=members)


@dataclass
class GroupResult:
    group: Group
    table: SimTable
    settings: list[Setting]
    events: dict[str, pd.DataFrame]
    hits: dict[str, pd.DataFrame]
    summary: pd.DataFrame


def run_group(group: Group, cfg: SearchConfig, root: str | os.PathLike, data_dir=None, cache=None,
              perf: dict | None = None, n_boot: int = 1000, progress: bool = True,
              cached: pd.DataFrame | None = None) -> GroupResult:
    """Simulate (or read from ``root``) every setting of a group and summarise it."""
    from proxybench.progress import progress as progress_bar

    table = load_table(group, data_dir, cache, perf, cached=cached)
    sets = settings_for(group.proxies)
    events, h = {}, {}
    for s in progress_bar(sets, desc=f"search {group.name} ({table.n} cells)", unit="setting", disable=not progress):
        events[s.key] = run_setting(table, s, cfg, Path(root) / group.name)
        h[s.key] = hits(events[s.key], table, cfg)
    summary = speedups(h, {"random": "random-none", "rea": "rea-none"}, n_boot=n_boot, seed=cfg.seed)
    lab = {s.key: s for s in sets}
    summary.insert(1, "label", summary["setting"].map(lambda k: lab[k].label))
    for c in ("base", "variant", "proxy"):
        summary.insert(2, c, summary["setting"].map(lambda k, c=c: getattr(lab[k], c)))
    return GroupResult(group, table, sets, events, h, summary)


# ------------------------------------------------------------------------------------------- the report

def _fmt_cost(v: float, budget: int) -> str:
    return f"> {budget}" if not np.isfinite(v) else f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def _fmt_ratio(v, lo=None, hi=None, base_median=None, median=None, budget=None) -> str:
    """A speed-up with its interval; a bound when the baseline or the strategy missed the target (censored)."""
    if base_median is not None and median is not None:
        if not np.isfinite(base_median) and not np.isfinite(median):
            return "n/a (neither reached)"
        if not np.isfinite(base_median):
            return f"> {budget / median:.2f}×"
        if not np.isfinite(median):
            return f"< {base_median / budget:.2f}×"
    if v is None or not np.isfinite(v):
        return "n/a"
    s = f"{v:.2f}×"
    if lo is not None and np.isfinite(lo):
        s += f" [{lo:.2f}, {'∞' if not np.isfinite(hi) else f'{hi:.2f}'}]"
    return s


def _figure(res: GroupResult, cfg: SearchConfig, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from proxybench.render import save_figure

    end = max(float(h["end_cost"].max()) for h in res.hits.values())
    grid = np.geomspace(1.0, end, 300)
    colors = dict(zip(res.group.proxies, ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
                                          "tab:brown", "tab:pink"], strict=False))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), sharey=True)
    best = res.table.target
    lowest = best
    for r, base in enumerate(BASES):
        for c, variant in enumerate(("warmup", "move", "hier")):
            ax = axes[r, c]
            lines = [(Setting(base), "black", "-")]
            if variant == "hier":
                lines.append((Setting(base, "12ep"), "gray", "--"))
            lines += [(Setting(base, variant, p), colors[p], "-") for p in res.group.proxies]
            for s, color, ls in lines:
                cv = curves(res.events[s.key], res.table, cfg, grid)
                lowest = min(lowest, float(np.nanmin(cv["mean"], initial=best)))
                ax.plot(cv["cost"], cv["mean"], color=color, ls=ls, lw=1.3,
                        label=s.proxy or VARIANT_LABELS[s.variant])
                ax.fill_between(cv["cost"], cv["lo"], cv["hi"], color=color, alpha=0.2, lw=0)
            ax.axhline(best, color="k", lw=0.6, ls=":")
            ax.axhline(best - cfg.gap, color="tab:red", lw=0.6, ls=":")
            ax.set_xscale("log")
            ax.set_title(f"{'random search' if base == 'random' else 'REA'}: {VARIANT_LABELS[variant]}", fontsize=10)
            ax.set_xlabel("trainings (12-epoch runs count 12/200)" if variant == "hier" else "trainings")
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel("test accuracy of the returned cell (%)")
            ax.legend(fontsize=7, loc="lower right")
    axes[0, 0].set_ylim(max(lowest, best - 4) - 0.2, best + 0.3)
    fig.suptitle(f"NB201 {res.group.task}, {_space_words(res.table)}: mean of {cfg.reps} seeded searches, 95% "
                 f"interval of the mean; dotted: best cell and best − {cfg.gap}", fontsize=10)
    return save_figure(fig, out / f"search_{res.group.name}{cfg.tag}.png")


def _space_words(t: SimTable) -> str:
    return (f"all {t.n:,} cells" if t.n == t.notes.get("of") else
            f"{t.n:,} of {t.notes.get('of', '?'):,} cells, a uniform sample")


def _sp(r, name: str) -> tuple:
    return r.get(f"speedup_{name}"), r.get(f"speedup_{name}_lo"), r.get(f"speedup_{name}_hi")


def _verdict(s: pd.DataFrame, budget: int) -> str:
    """How many proxy-in-the-loop strategies beat (or lose to) their own proxy-free base, by the bootstrap interval."""
    if "speedup_rea_lo" not in s:
        return ""
    out = []
    for base in BASES:
        d = s[(s["base"] == base) & s["proxy"].map(lambda p: isinstance(p, str))]
        lo, hi = d[f"speedup_{base}_lo"], d[f"speedup_{base}_hi"]
        name = {"random": "random search", "rea": "REA"}[base]
        twelve = s[s["setting"] == f"{base}-12ep"]
        med = s.set_index("setting")["median_cost"]
        t = ""
        if len(twelve):
            r12 = twelve.iloc[0]
            t = "; 12-epoch screening without a proxy: " + _fmt_ratio(*_sp(r12, base), med.get(f"{base}-none"),
                                                                       r12["median_cost"], budget)
        out.append(f"against {name}: {int((lo > 1).sum())} of {len(d)} proxy strategies faster, "
                   f"{int((hi < 1).sum())} slower, the rest not distinguishable{t}")
    return "**Verdict (95% bootstrap interval of the speed-up):** " + "; ".join(out) + "."


def _table_md(res: GroupResult, cfg: SearchConfig) -> list[str]:
    budget = cfg.budget_for(res.table.n)
    s = res.summary
    base_med = s.set_index("setting")["median_cost"]
    L = ["| strategy | reached | trainings to target, median [95% CI] | of which 12-ep runs | proxy evals / "
         "seconds to target | speed-up vs random | speed-up vs REA | mean final test (%) |",
         "|---|---|---|---|---|---|---|---|"]
    for _, r in s.iterrows():
        ci = (f" [{_fmt_cost(r['median_cost_lo'], budget)}, {_fmt_cost(r['median_cost_hi'], budget)}]"
              if "median_cost_lo" in r else "")
        px = ("–" if r["proxy"] is None or not isinstance(r["proxy"], str) else
              f"{_fmt_cost(r['median_proxy_n'], 10**9)} / {r['median_proxy_s']:.3g} s"
              if np.isfinite(r["median_proxy_n"]) else "n/a")
        n12 = "–" if r["variant"] not in ("hier", "12ep") else (
            _fmt_cost(r["median_n12"], 0) if np.isfinite(r["median_n12"]) else "n/a")
        L.append(f"| {r['label']} | {r['reached']:.0%} | {_fmt_cost(r['median_cost'], budget)}{ci} | {n12} | {px} | "
                 f"{_fmt_ratio(*_sp(r, 'random'), base_med.get('random-none'), r['median_cost'], budget)} | "
                 f"{_fmt_ratio(*_sp(r, 'rea'), base_med.get('rea-none'), r['median_cost'], budget)} | "
                 f"{r['mean_final_test']:.2f} |")
    return L


def render_intro(cfg: SearchConfig, out_name: str) -> list[str]:
    """What is simulated, the strategies and how costs and speed-ups are counted."""
    made = ("`make bench` (section `proxybench.studies.search`)" if not cfg.tag else
            "`proxybench search` with non-default settings (see Provenance)")
    return ["# Does a proxy make NAS cheaper? Search simulations on NAS-Bench-201", "",
            f"_Generated by {made} from the cached repetitions in `{out_name}/search{cfg.tag}/`; "
            "every number is computed._", "",
            "Each search is simulated on the benchmark table: **training** a cell reveals its 200-epoch validation "
            "accuracy (`val_acc_200`); the search returns the trained cell with the best validation accuracy and we "
            "report that cell's 200-epoch **test** accuracy (`test_acc_200`). A proxy score or a 12-epoch result is "
            f"paid once per cell; no cell is trained twice. {cfg.reps} seeded repetitions per strategy (seeds "
            f"({cfg.seed}, 0..{cfg.reps - 1}); every strategy of a repetition starts from the same random stream).", "",
            "**Strategies.** *random*: uniform sampling without replacement. *REA*: regularised evolution with NB201's "
            f"settings (population {cfg.population}, tournament {cfg.sample_size}, mutation = another op on one of the "
            "6 edges, to a cell not trained yet; on a restricted space: a random nearest cell of the space, by "
            f"Hamming distance over the edges). *warm-up*: score N = {cfg.warmup_fraction:.0%} of the space's cells "
            f"(at least {cfg.warmup_min_budgets:g}× the budget, at most all) with the proxy first; random search "
            "then trains them best-proxy-first, REA starts from the best "
            f"{cfg.population}. *move proposal*: each step scores {cfg.candidates} candidates (random cells; for REA "
            f"{cfg.candidates} mutations of the parent) and trains only the best. *hierarchical* (EcoNAS-style): the "
            f"{cfg.candidates} candidates are scored, the best {cfg.keep_12} get the official 12-epoch-schedule "
            "training (`val_acc_12`) and only the best of those the full training. *12-epoch only*: the hierarchy "
            f"without the proxy ({cfg.keep_12} random candidates / mutations to 12 epochs): what the proxy adds.", "",
            "**Costs.** Trainings: full 200-epoch trainings, plus each 12-epoch-schedule training at "
            f"**{cfg.cost_12:.3g}** of one (12/200 epochs; the real ratio of wall-clock is not in the files here). "
            "Proxy seconds: the "
            "wall-clock seconds measured when each cell's score was computed (score cache, CPU, a shared 2-core "
            "machine: contention inflates them, and scores computed at different times saw different load); for "
            "proxies that share work per cell with other proxies (one pass for the gradient proxies, one built "
            "network for params/flops/l2_norm) the cached seconds may exclude that work, so their per-cell cost is "
            "each proxy's cost *alone* from `make perf` (`reports/perf.json`). "
            "The **target** is a returned cell within "
            f"{cfg.gap} points (\"0.5%\", absolute) of the best test accuracy in the simulated space. *Trainings to "
            "target* is per repetition; its median over repetitions, with a 95% percentile bootstrap interval "
            "(\"> budget\" when fewer than half the repetitions got there within the budget). The speed-up is the "
            "baseline's median over the strategy's (bootstrap interval of the ratio): against random search and "
            "against REA without a proxy; \"> x\" / \"< x\" are bounds when one median is beyond the budget, and "
            "an interval reaching 0 or ∞ means that in some resamples a median was beyond the budget.", ""]


def _group_facts(res: GroupResult, cfg: SearchConfig) -> dict:
    """The numbers of a group's section: its budget and warm-up, the best cell, the cells that meet the target,
    the proxies scored on substitute images and the verdict."""
    t = res.table
    budget = cfg.budget_for(t.n)
    return {"budget": budget, "warmup": cfg.warmup_for(t.n), "best_index": int(t.ids[np.argmax(t.test)]),
            "n_target": int((t.test >= t.target - cfg.gap - 1e-9).sum()),
            "substitute": [p for p, v in t.notes["substitute"].items() if v], "verdict": _verdict(res.summary, budget)}


def render_group(res: GroupResult, cfg: SearchConfig, facts: dict) -> list[str]:
    """A group's section: its space, the verdict, the curves, the strategies' table and the proxies' costs."""
    t, g = res.table, res.group
    L = [f"## {g.task}: {_space_words(t)}", "",
         f"Proxies: {', '.join(g.proxies)} ({g.description}). Budget {facts['budget']} trainings per search; "
         f"warm-up N = {facts['warmup']}. Best cell: test {t.target:.2f}% (index "
         f"{facts['best_index']}); target ≥ {t.target - cfg.gap:.2f}%, met by "
         f"{facts['n_target']} of the {t.n:,} cells.", ""]
    if t.n != t.notes.get("of"):
        L += [f"> **Restricted space:** only the {t.n:,} cells where every proxy of this group has a cached score "
              "are simulated (a uniform random sample of NB201); targets and budgets are those of this "
              "smaller space, so its numbers are not those of a search over all 15,625 cells. The space is the "
              "longest fully scored prefix of the default study's seeded permutation; to widen it, score more "
              "cells in that order (`proxybench search --write-order FILE`, then `proxybench run --archs-file "
              "FILE …`).", ""]
    if facts["substitute"]:
        L += [f"> **Substitute images:** {', '.join(facts['substitute'])} scored {g.task} cells on substitute images "
              "(the real images are not in the data directory); their searches use those scores.", ""]
    L += [facts["verdict"], "", f"![search curves](figures/search_{g.name}{cfg.tag}.png)", ""]
    L += _table_md(res, cfg) + [""]
    L += ["| proxy | non-finite scores (ranked last) | median seconds per cell | seconds from |",
          "|---|---|---|---|"]
    return L + [f"| {p} | {t.notes['nonfinite'][p]} | {t.notes['median_seconds'][p]:.4g} | "
                f"{t.notes['seconds_source'][p]} |" for p in g.proxies] + [""]


def render_provenance(cfg: SearchConfig, out_name: str, truth_source: str, env: dict, written: str,
                      missing: dict | None = None) -> list[str]:
    """The groups not simulated, and where every number comes from."""
    L = ["## Not simulated", ""] + [f"- {k}: {v}" for k, v in missing.items()] + [""] if missing else []
    return L + ["## Provenance", "",
                f"- Ground truth: NB201 {truth_source} (`val_acc_200`, `test_acc_200`, `val_acc_12`); "
                "scores: the score cache (`reports/scores`), current proxy versions, seed 42, the default study's "
                "batch and images.",
                f"- Simulation version {SIM_VERSION}; settings {json.dumps(asdict(cfg))}.",
                f"- Code {env['git_commit']}; numpy {env['numpy']}, pandas {env['pandas']}, python {env['python']}; "
                f"written {written}.",
                f"- Cached repetitions: `{out_name}/search{cfg.tag}/<group>/<setting>__<fingerprint>__r<first "
                "rep>.parquet`, one row per change of the returned cell and one `end` row per repetition; the "
                "fingerprint hashes the table (cells, truth, the proxy's scores and seconds), the settings and the "
                "simulation version, so any change recomputes.",
                ""]


def write_report(results: list[GroupResult], cfg: SearchConfig, out: str | os.PathLike, data_dir=None,
                 missing: dict | None = None) -> tuple[Path, str]:
    """reports/search.md, the figures and reports/search/summary.csv; returns the path and the headline."""
    from proxybench import provenance
    from proxybench.datasets import nb201

    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    L = render_intro(cfg, out.name)
    heads = []
    for res in results:
        facts = _group_facts(res, cfg)
        L += render_group(res, cfg, facts)
        _figure(res, cfg, out / "figures")
        store.write_csv(out / f"search{cfg.tag}" / f"summary_{res.group.name}.csv",
                        res.summary.assign(group=res.group.name, task=res.group.task, cells=res.table.n,
                                           budget=facts["budget"]), SUMMARY_STORE)
        heads.append((res, facts["budget"]))
    L += render_provenance(cfg, out.name, nb201.truth_source_id(data_dir), provenance.environment(),
                           datetime.now(timezone.utc).isoformat(timespec="seconds"), missing)
    path = out / f"search{cfg.tag}.md"
    provenance.write_if_changed(path, "\n".join(L))
    return path, _headline(heads, cfg)


HEADLINE_PROXY = "synflow"  # fixed in advance (in every group, cheap, data-free): no pick of the best of many


def _headline(heads, cfg: SearchConfig) -> str:
    parts = []
    for res, budget in heads:
        s = res.summary.set_index("setting")
        if f"rea-warmup-{HEADLINE_PROXY}" not in s.index:
            continue
        rea = s.loc["rea-none"]

        items = []
        for key, words in ((f"rea-warmup-{HEADLINE_PROXY}", "warm-up"),
                           (f"rea-move-{HEADLINE_PROXY}", "move proposal"),
                           (f"rea-hier-{HEADLINE_PROXY}", "hierarchical"),
                           ("rea-12ep", "12-epoch screening, no proxy")):
            r = s.loc[key]
            sp = _fmt_ratio(r["speedup_rea"], None, None, rea["median_cost"], r["median_cost"], budget)
            items.append(f"{words} {_fmt_cost(r['median_cost'], budget)} ({sp})")
        parts.append(f"**{res.group.task}** ({_space_words(res.table)}): REA {_fmt_cost(rea['median_cost'], budget)}; "
                     + ", ".join(items))
    return ("### Search simulations: does a proxy make NAS cheaper?\n\n"
            f"Median trainings for regularised evolution (REA, {cfg.reps} seeded runs each) to return a cell within "
            f"{cfg.gap} points of the best test accuracy of the simulated NB201 space, without and with "
            f"{HEADLINE_PROXY} in the loop (speed-up against REA): " + "; ".join(parts) + ". Every proxy, random "
            f"search, the curves and the restricted spaces: [search{cfg.tag}.md](search{cfg.tag}.md).")


# ------------------------------------------------------------------------------------ section and CLI

def run_default(out, data_dir=None, cache=None, cfg: SearchConfig | None = None, groups=GROUPS,
                n_boot: int = 1000, progress: bool = True) -> tuple[Path, str]:
    """Simulate (or read) every group of the default study and write the report."""
    from proxybench.cache import ScoreCache
    from proxybench.provenance import REPO_ROOT
    from proxybench.report import load_perf

    cfg = cfg or SearchConfig()
    out = Path(out)
    perf = load_perf(out) or load_perf(REPO_ROOT / "reports")  # `make perf` writes reports/perf.json
    cached = ScoreCache(cache or REPO_ROOT / "reports" / "scores").load()
    results, missing = [], {}
    for g in groups:
        try:
            results.append(run_group(g, cfg, out / f"search{cfg.tag}", data_dir, cache, perf, n_boot, progress,
                                     cached))
        except ValueError as e:
            missing[g.name] = str(e)
    if not results:
        raise ValueError("no search group has scores to simulate: " + "; ".join(missing.values()))
    (out / f"search{cfg.tag}").mkdir(parents=True, exist_ok=True)
    return write_report(results, cfg, out, data_dir, missing)


@section("search", order=60)
def bench_section(cfg: SectionConfig) -> str:
    path, head = run_default(cfg.out, cfg.data_dir, cfg.cache, n_boot=min(cfg.bootstrap, 1000),
                             progress=cfg.progress)
    return head


def write_order(path: str | os.PathLike, data_dir=None, sample_seed: int = 0) -> Path:
    """Every NB201 cell in the order of the default study's seeded permutation, for ``proxybench run --archs-file``:
    scoring in this order grows the fully-scored prefix that the search groups simulate."""
    from proxybench.runner import draw_order

    p = Path(path)
    p.write_text(f"# every NB201 cell in the order of the seed-{sample_seed} permutation of proxybench.runner.Study\n"
                 + "\n".join(draw_order("nb201", None, sample_seed, data_dir)) + "\n")
    return p


def cmd_search(args) -> None:
    if args.write_order:
        p = write_order(args.write_order, args.data_dir)
        print(f"wrote {p}: score it with `proxybench run --space nb201 --task all --archs-file {p} "
              "--proxies params,flops,synflow` (resumable) to widen the simulated data-free spaces")
        return
    names = [g.strip() for g in args.groups.split(",")] if args.groups else [g.name for g in GROUPS]
    unknown = sorted(set(names) - {g.name for g in GROUPS})
    if unknown:
        raise ValueError(f"unknown search group(s) {unknown}: choose from {', '.join(g.name for g in GROUPS)}")
    cfg = SearchConfig(reps=args.reps, seed=args.seed, budget=args.budget)
    path, head = run_default(args.out, args.data_dir, args.cache, cfg, [g for g in GROUPS if g.name in names],
                             n_boot=args.bootstrap, progress=not args.no_progress)
    print(head)
    print(f"report: {path}")


def add_cli(sub, parents) -> None:
    s = sub.add_parser("search", parents=parents.section,
                       help="search simulations on NB201: does a proxy make NAS cheaper?")
    s.add_argument("--groups", default="", help="comma-separated groups (default: all): " +
                   ", ".join(g.name for g in GROUPS))
    s.add_argument("--reps", type=int, default=SearchConfig.reps, help="seeded repetitions per strategy")
    s.add_argument("--seed", type=int, default=SearchConfig.seed)
    s.add_argument("--budget", type=int, default=None, help="trainings per search (default: a tenth of the space, "
                   "clipped to 50..500)")
    s.add_argument("--write-order", default=None, metavar="FILE", help="write every NB201 cell in the default "
                   "study's permutation order (an --archs-file for `proxybench run`) and exit")
    s.set_defaults(fn=cmd_search)
