"""Set-level aggregates against the record: the papers' (AZ-NAS, VKDNW_agg, TE-NAS) and the suite's own.

An aggregate ranks a set of cells by combining its members' ranks (``proxies.register_aggregate``). The suite's own
aggregates choose their members on ``SELECT_CELLS`` NB201 cifar10 cells that no default study contains (positions
``SELECT_START`` .. of the seed-0 permutation whose prefixes are the default samples), never on the cells they are
scored on:

- ``agg_sel50``: greedy forward selection of members by the ρ of their log-rank aggregate against the 200-epoch
  *validation* accuracy of the 50 selection cells (what a search may see; at most 50 labels, as DPS uses);
- ``agg_pc1``: the same greedy selection with no labels at all, by agreement with the first principal component of
  the candidates' ranks on the selection cells (the direction most candidates agree on).

Both selections are recomputed here from the cached scores and compared with the members pinned in
``proxies/aggregates.py`` (a definition cannot change with the cache: a mismatch is reported, never applied). Every
aggregate is then reported on the default study's cells with intervals, next to the published record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from proxybench import metrics
from proxybench.cache import ScoreCache
from proxybench.options import DEFAULT_SUITE
from proxybench.provenance import write_if_changed
from proxybench.proxies import get_proxy, list_aggregates, training_free
from proxybench.references import PUBLISHED
from proxybench.render import fmt_ci
from proxybench.runner import Study, permutation, run_study, select, with_aggregates, with_truth
from proxybench.sections import SectionConfig, section

NAME = "aggregates"
SEED = 42
SELECT_TASK, SELECT_START, SELECT_CELLS = "cifar10", 1000, 50
SELECT_TRUTH = "val_acc_200"
MAX_MEMBERS, MIN_GAIN = 5, 0.01
OWN = {"agg_sel50": "labels", "agg_pc1": "pc1"}  # the selected ones and their objective (agg_all: no choice)


def pool() -> tuple[str, ...]:
    """The candidates: every label-free per-cell proxy of the default study (an aggregate stays label-free)."""
    return tuple(n for n in training_free() if not get_proxy(n).needs_labels)


def selection_cells(data_dir=None) -> list[str]:
    """The 50 cells the suite's aggregates choose members on: disjoint from every default-study sample."""
    from proxybench.datasets import nb201

    every = nb201.all_archs(data_dir)
    perm = permutation("nb201", 0, data_dir)
    return [every[i] for i in perm[SELECT_START:SELECT_START + SELECT_CELLS]]


def selection_study(data_dir=None) -> Study:
    return Study(space="nb201", tasks=(SELECT_TASK,), proxies=pool(), archs=tuple(selection_cells(data_dir)),
                 seed=SEED, data_dir=data_dir)


def _pc1(ranks: np.ndarray) -> np.ndarray:
    """The first principal component of standardised rank columns, signed to agree with most of them."""
    z = (ranks - ranks.mean(0)) / np.where(ranks.std(0) > 0, ranks.std(0), 1.0)
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    pc = u[:, 0] * s[0]
    return pc if np.sum(np.sign(vt[0])) >= 0 else -pc


def greedy(oriented: dict[str, np.ndarray], target: np.ndarray, max_members: int = MAX_MEMBERS,
           min_gain: float = MIN_GAIN) -> tuple[list[str], list[dict]]:
    """Forward selection: add the candidate whose log-rank aggregate with the members chosen so far has the highest
    Spearman ρ with ``target``; stop at ``max_members`` or when the best gain is below ``min_gain``. Ties go to the
    first name in sorted order. Returns the members and the trace (step, added, ρ)."""
    members: list[str] = []
    trace: list[dict] = []
    best_rho = -np.inf
    while len(members) < max_members:
        best = None
        for name in sorted(oriented):
            if name in members:
                continue
            agg = metrics.aggregate([oriented[m] for m in (*members, name)], "log_rank")
            rho = metrics.spearman_rho(agg, target)
            if np.isfinite(rho) and (best is None or rho > best[1] + 1e-12):
                best = (name, rho)
        if best is None or (members and best[1] - best_rho < min_gain):
            break
        members.append(best[0])
        best_rho = best[1]
        trace.append({"step": len(members), "added": best[0], "rho": best[1]})
    return members, trace


def select_members(df: pd.DataFrame, objective: str) -> tuple[list[str], list[dict]]:
    """The members an objective chooses on the selection cells' rows ``df`` (with the truth joined)."""
    wide = df.pivot_table(index="arch", columns="proxy", values="score", aggfunc="first")
    cands = [p for p in pool() if p in wide.columns and wide[p].notna().all()]
    oriented = {p: metrics.declared(wide[p].to_numpy(), p, every_cell=True) for p in cands}
    if objective == "labels":
        target = df.drop_duplicates("arch").set_index("arch").loc[wide.index, SELECT_TRUTH].to_numpy(dtype=float)
    else:
        from scipy import stats

        ranks = np.column_stack([stats.rankdata(oriented[p]) for p in cands])
        target = _pc1(ranks)
    return greedy(oriented, target)


@dataclass
class Result:
    selections: dict = field(default_factory=dict)  # name -> (members, trace, pinned members)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)  # aggregate, task, n, rho [CI], tau
    n_resamples: int = 1000


def compute(cache: ScoreCache, data_dir=None, n_resamples: int = 1000) -> Result:
    sel = with_truth(select(cache.load(), selection_study(data_dir), ok_only=True), data_dir)
    selections = {}
    for name, objective in OWN.items():
        members, trace = select_members(sel, objective) if len(sel) else ([], [])
        pinned = list(get_proxy(name).members) if name in list_aggregates() else []
        selections[name] = (members, trace, pinned)
    rows = []
    aggs = list_aggregates()
    for task, n in DEFAULT_SUITE.items():
        study = Study(space="nb201", tasks=(task,), proxies=tuple(aggs), sample=n, seed=SEED, data_dir=data_dir)
        df = with_truth(with_aggregates(select(cache.load(), study, ok_only=True), aggs), data_dir)
        for agg, g in df.groupby("proxy", sort=False):
            s = metrics.proxy_summary(agg, g["score"].to_numpy(), g["accuracy"].to_numpy(), n_resamples=n_resamples)
            v = metrics.proxy_summary(agg, g["score"].to_numpy(), g["val_acc_200"].to_numpy(), n_resamples=0)
            rows.append({"aggregate": agg, "task": task, "n": s["n"], "rho": s["rho"], "rho_lo": s["rho_lo"],
                         "rho_hi": s["rho_hi"], "tau": s["tau"], "val_rho": v["rho"]})
    return Result(selections, pd.DataFrame(rows), n_resamples)


def _record_line() -> list[str]:
    rec = [p for p in PUBLISHED if p.proxy in ("vkdnw_agg", "az_nas") and p.space == "nb201"]
    return [f"- {p.proxy} on {p.task}: ρ {p.rho:.3f} ({p.n}, {p.accuracy} accuracy; {p.source})" for p in rec]


def _verdicts(res: Result) -> list[str]:
    """Plainly, per suite aggregate and task: does its interval lie above, below or around VKDNW_agg's record?"""
    record = {p.task: p.rho for p in PUBLISHED if p.proxy == "vkdnw_agg" and p.space == "nb201"}
    out = ["Against the record (VKDNW_agg's published ρ), on this study's cells: above = the whole 95% interval is "
           "above it, below = the whole interval is below it, level = the interval contains it."]
    for agg in [*OWN, "agg_all"]:
        r = res.table[res.table["aggregate"] == agg]
        if r.empty:
            continue
        parts = []
        for _, x in r.iterrows():
            if x["task"] not in record or not np.isfinite(x["rho_lo"]):
                continue
            rec = record[x["task"]]
            word = "above" if x["rho_lo"] > rec else "below" if x["rho_hi"] < rec else "level"
            parts.append(f"{x['task']} ρ {x['rho']:+.3f} [{x['rho_lo']:+.3f}, {x['rho_hi']:+.3f}] vs {rec:.3f}: "
                         f"**{word}**")
        if parts:
            out.append(f"- {agg}: " + "; ".join(parts))
    return out


def render(res: Result) -> str:
    tasks = list(DEFAULT_SUITE)
    L = ["# Set-level aggregates against the record", "",
         f"_Generated by `make bench` (section `proxybench.studies.{NAME}`); every number is computed from the score "
         "cache `reports/scores`._", "",
         "An aggregate ranks a set of cells by combining its members' ranks over that set (so a cell's value depends "
         "on the set). Below: every registered aggregate on the default study's cells (ρ and τ of the declared "
         f"ranking against the 200-epoch test accuracy, 95% bootstrap intervals, {res.n_resamples} resamples), and "
         "how the suite's own aggregates chose their members.", ""]
    if res.table.empty:
        return "\n".join(L + ["No aggregate has all its members cached yet.", ""])
    L += ["| aggregate | members (aggregation) | " + " | ".join(f"{t} ρ [95% CI] (n) | τ | ρ vs val." for t in tasks)
          + " |", "|---|---|" + "---|---|---|" * len(tasks)]
    for agg in res.table["aggregate"].unique():
        info = get_proxy(agg)
        cells = []
        for t in tasks:
            r = res.table[(res.table["aggregate"] == agg) & (res.table["task"] == t)]
            if r.empty:
                cells += ["–", "–", "–"]
                continue
            r = r.iloc[0]
            cells += [f"{fmt_ci(r['rho'], r['rho_lo'], r['rho_hi'])} ({int(r['n'])})", f"{r['tau']:+.3f}",
                      f"{r['val_rho']:+.3f}"]
        L.append(f"| {agg} | {', '.join(info.members)} ({info.aggregation}) | " + " | ".join(cells) + " |")
    L += ["", "The record for a label-free method on NB201 (REFERENCES.md):", *_record_line(), "",
          *_verdicts(res), "",
          "Those are over all 15,625 cells (VKDNW_agg most likely over the 9,445 without unreachable branches); the "
          "table above is over the default study's sample: compare within intervals, and see reports/fullspace.md "
          "for the complete table when every member covers it.", ""]
    L += ["## How the suite's aggregates chose their members", "",
          f"On {SELECT_CELLS} cifar10 cells that no default study contains (positions {SELECT_START}–"
          f"{SELECT_START + SELECT_CELLS - 1} of the seed-0 permutation whose prefixes are the default samples), "
          f"from the {len(pool())} label-free proxies of the default study: greedy forward selection of log-rank "
          f"members, at most {MAX_MEMBERS}, stopping when ρ gains less than {MIN_GAIN}.", ""]
    for name, (members, trace, pinned) in res.selections.items():
        how = (f"ρ against the {SELECT_CELLS} cells' 200-epoch validation accuracy" if OWN[name] == "labels" else
               "agreement (ρ) with the first principal component of the candidates' ranks: no labels at all")
        steps = "; ".join(f"{t['step']}. +{t['added']} (ρ {t['rho']:+.3f})" for t in trace) or "no selection cells"
        state = ("The pinned members (proxies/aggregates.py) are the ones this selection gives"
                 if pinned and pinned == members else
                 f"⚑ The pinned members ({', '.join(pinned) or 'none'}) differ from what the cache now selects "
                 "(a definition does not follow the cache: re-pin and bump its version on purpose)")
        L += [f"- **{name}**, by {how}: {steps}. {state}."]
    if "agg_all" in list_aggregates():
        L += [f"- **agg_all**, no choice at all: every label-free proxy of the default study when it was defined "
              f"({', '.join(get_proxy('agg_all').members)})."]
    return "\n".join(L + [""])


def paragraph(res: Result) -> str:
    if res.table.empty:
        return f"**Aggregates:** none has its members cached yet ([{NAME}.md]({NAME}.md))."
    best = res.table[res.table["task"] == "cifar10"].sort_values("rho", ascending=False)
    top = "; ".join(f"{r['aggregate']} ρ {r['rho']:+.3f}" for _, r in best.head(4).iterrows())
    return (f"**Aggregates** (set-level, on the default study's cifar10 cells): {top}. Members of the suite's own "
            f"chosen on {SELECT_CELLS} disjoint cells; against VKDNW_agg's published ρ 0.919: [{NAME}.md]({NAME}.md).")


def run(cfg: SectionConfig) -> str:
    cache = ScoreCache(cfg.cache)
    run_study(selection_study(cfg.data_dir), cache, executor="auto", progress=cfg.progress, chunk_size=10)
    res = compute(cache, cfg.data_dir, cfg.bootstrap)
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_if_changed(cfg.out / f"{NAME}.md", render(res) + "\n")
    return paragraph(res)


@section(NAME, order=47)
def bench_section(cfg: SectionConfig) -> str:
    return run(cfg)


def add_cli(sub, parents) -> None:
    s = sub.add_parser(NAME, parents=parents.section, help="set-level aggregates against the record, and how the "
                       "suite's own chose their members (reports/aggregates.md)")
    s.set_defaults(fn=lambda args: print(run(SectionConfig.from_args(args))))
