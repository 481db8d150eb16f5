"""The papers' set-level scores, registered as aggregates of the suite's per-cell proxies.

AZ-NAS, TE-NAS and VKDNW_agg rank a SET of candidates: each member proxy is ranked over the set and the ranks are
combined (``registry.AGGREGATIONS``). The members are cached like any proxy; the aggregate is computed from them over
the cells being ranked (``proxybench.runner.with_aggregates``; a search uses the cells it has scored so far), so the
value of a cell depends on the set it is ranked in, and two studies of other cells give it other values.
"""

from __future__ import annotations

# the members register first
from proxybench.proxies import az_nas, cost, gradient, more_zero_cost, swap, te_nas, vkdnw, zero_cost  # noqa: F401
from proxybench.proxies.registry import register_aggregate

register_aggregate(
    "az_nas", members=("flops", "az_expressivity", "az_progressivity", "az_trainability"), aggregation="log_rank",
    paper="Lee & Ham, AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search, CVPR 2024",
    description="AZ-NAS (Lee & Ham CVPR 2024): Σ log(rank/N) over the set of flops, expressivity, progressivity and "
                "trainability (the official NB201 notebook's aggregation; each ranked ascending, ties averaged)")

register_aggregate(
    "te_nas", members=("te_nas_ntk", "te_nas_lr"), aggregation="rank_sum",
    paper="Chen et al., Neural Architecture Search on ImageNet in Four GPU Hours: A Theoretically Inspired "
          "Perspective (TE-NAS), ICLR 2021",
    description="TE-NAS (Chen et al. ICLR 2021): the sum over the set of the ranks of the NTK condition number "
                "(lower better) and the number of linear regions (higher better); ties averaged (the official code "
                "ranks densely on values rounded to 3 decimals)")

register_aggregate(
    "vkdnw_agg", members=("vkdnw_single", "az_expressivity", "az_trainability", "flops", "jacob_cov"),
    aggregation="log_rank",
    paper="Týbl & Neumann, Training-free Neural Architecture Search through Variance of Knowledge of Deep Network "
          "Weights (VKDNW), CVPR 2025",
    description="VKDNW_agg (CVPR 2025): Σ log rank over the set of VKDNW (its (tensor count, entropy) ranking: "
                "vkdnw_single), AZ-NAS's expressivity and trainability, flops and jacob_cov (the official code divides "
                "by nothing: log R, not log R/N, the same ordering)")

# The suite's own aggregates (bench/studies/aggregates.py recomputes both selections from the cache and reports
# whether they still give these members). Chosen on 50 NB201 cifar10 cells that no default study contains (positions
# 1000-1049 of the seed-0 permutation), from the label-free proxies of the default study, by greedy forward selection
# of log-rank members (at most 5, stopping when ρ gains less than 0.01); rules fixed before any selection was run.
_SUITE = "proxybench (this suite): members chosen on 50 cells disjoint from every default study"
# Version 2 of both: the same rules on the larger pool of 19 label-free proxies once TE-NAS, GradSign, SWAP and
# VKDNW joined the default study (version 1, on the 13 before them: agg_sel50 = meco_opt, agg_pc1 = meco, nwot).
register_aggregate(
    "agg_sel50", members=("meco_opt", "vkdnw", "az_expressivity", "az_trainability"), aggregation="log_rank",
    paper=_SUITE, version=2,
    description="label-free score, members chosen with 50 labels: the greedy selection by ρ against the 200-epoch "
                "validation accuracy of the 50 selection cells, from the 19 label-free default-study proxies (v1, "
                "from the 13 before the newer proxies: meco_opt alone)")
register_aggregate(
    "agg_pc1", members=("vkdnw_single", "meco", "swap"), aggregation="log_rank", paper=_SUITE, version=2,
    description="fully label-free: the greedy selection by agreement with the first principal component of the "
                "candidates' ranks on the 50 selection cells (no accuracy read), from the 19 label-free "
                "default-study proxies (v1, from the 13 before the newer proxies: meco, nwot)")
register_aggregate(
    "agg_all", members=("az_expressivity", "az_progressivity", "az_trainability", "flops", "jacob_cov", "l2_norm",
                        "meco", "meco_opt", "nwot", "params", "synflow", "synflow_bn", "zen"),
    aggregation="log_rank", paper=_SUITE,
    description="fully label-free, no choice at all: Σ log rank of every label-free proxy of the default study (as "
                "registered when it was defined)")
