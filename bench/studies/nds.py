"""Report section `proxybench.studies.nds`: NDS (Network Design Spaces) loader status, parameter checks, proxy studies.

On a machine with the real release (``<data_dir>/nds/<family>.json``) it scores a seeded sample of every present
family with a few proxies and reports ρ against the final test accuracy, next to the free early-stopping
baseline (the recorded accuracy after a few epochs). Without the release it says so, checks the network builders
against published parameter counts and against generated files in the official schema, and runs the same runner
end to end on those generated SUBSTITUTE files (correlations there mean nothing: the accuracies are synthetic).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from proxybench import provenance, store
from proxybench.datasets import files, nds
from proxybench.datasets import nds_fixtures as fx
from proxybench.render import md_table
from proxybench.sections import SectionConfig, section

# proxybench.runner, proxybench.cache, proxybench.metrics and proxies are imported where used: the CLI imports
# this module to build its parser, and must not load every proxy for that.

NAME = "nds"
# the section's results under <out>/nds/ (the score caches beside them are ScoreCaches)
SUMMARY_STORE = store.Kind("nds-summary", 1, "proxybench nds")  # summary.json
RHO_STORE = store.Kind("nds-rho", 1, "proxybench nds")  # real_rho.csv, substitute_rho.csv
REAL_PROXIES = ("params", "flops", "synflow", "nwot", "jacob_cov", "snip")
REAL_SAMPLE = 50
DEMO_FAMILIES = ("DARTS", "ENAS", "NASNet", "PNAS", "Amoeba", "ResNet", "ResNeXt-A", "DARTS_in")
DEMO_PROXIES = ("params", "flops", "synflow", "grad_norm", "snip", "nwot", "jacob_cov")
DEMO_N, DEMO_SEED = 12, 0

# Published parameter counts of known networks, rebuilt through the NDS builders from NDS-style net configs.
KNOWN = [
    ("DARTS-V2 genotype, CIFAR-10, width 36, 20 cells, no auxiliary head", "DARTS",
     {"genotype": fx.DARTS_V2, "width": 36, "depth": 20, "aux": False}, 3_349_342,
     "3,349,342 (DARTS repo `train.py` count, auxiliary head excluded; the paper reports 3.3 M)"),
    ("DARTS-V2 genotype, ImageNet, width 48, 14 cells, no auxiliary head", "DARTS_in",
     {"genotype": fx.DARTS_V2, "width": 48, "depth": 14, "aux": False}, 4_700_000,
     "4.7 M (DARTS paper, Table 3)"),
    ("ResNet-18 (ImageNet)", "ResNet_lr-wd_in",
     {"block_type": "res_basic_block", "ds": [2, 2, 2, 2], "ws": [64, 128, 256, 512], "ss": [1, 2, 2, 2],
      "stem_type": "res_stem_in", "stem_w": 64}, 11_689_512, "11,689,512 (torchvision resnet18)"),
    ("ResNet-50 (ImageNet)", "ResNeXt-A_in",
     {"block_type": "res_bottleneck_block", "ds": [3, 4, 6, 3], "ws": [256, 512, 1024, 2048], "ss": [1, 2, 2, 2],
      "bot_muls": [0.25] * 4, "num_gs": [1] * 4, "stem_type": "res_stem_in", "stem_w": 64}, 25_557_032,
     "25,557,032 (torchvision resnet50)"),
    ("ResNeXt-50 32x4d (ImageNet)", "ResNeXt-A_in",
     {"block_type": "res_bottleneck_block", "ds": [3, 4, 6, 3], "ws": [256, 512, 1024, 2048], "ss": [1, 2, 2, 2],
      "bot_muls": [0.5] * 4, "num_gs": [32] * 4, "stem_type": "res_stem_in", "stem_w": 64}, 25_028_904,
     "25,028,904 (torchvision resnext50_32x4d)"),
    ("ResNet-56 (CIFAR-10, 1x1-conv projection shortcuts)", "ResNet",
     {"block_type": "res_basic_block", "ds": [9, 9, 9], "ws": [16, 32, 64], "ss": [1, 2, 2],
      "stem_type": "res_stem_cifar", "stem_w": 16}, 850_000,
     "0.85 M (He et al. 2016, Table 6; their option-A identity shortcuts have no projection parameters)"),
]


def known_network_checks() -> pd.DataFrame:
    """Built and closed-form parameter counts of the KNOWN networks next to the published figures."""
    rows = []
    for label, family, net, published, source in KNOWN:
        built = nds.count_params(nds.build_from_net(family, net))
        rows.append({"network": label, "family": family, "built": built,
                     "closed_form": fx.analytic_params(family, net), "published": published, "source": source,
                     "rel_diff": (built - published) / published})
    return pd.DataFrame(rows)


def fixture_param_checks(root) -> pd.DataFrame:
    """Built vs recorded params of every record of every generated family file."""
    parts = [nds.check_params(f, root).assign(family=f) for f in nds.available_families(root)]
    return pd.concat(parts, ignore_index=True)


@contextmanager
def _data_dir_env(path):
    """Worker processes and builders without a data_dir resolve the NDS files through $PROXYBENCH_DATA."""
    old = os.environ.get(files.ENV_DATA_DIR)
    os.environ[files.ENV_DATA_DIR] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(files.ENV_DATA_DIR, None)
        else:
            os.environ[files.ENV_DATA_DIR] = old


def _link_images(data_root: Path, sub_root: Path) -> None:
    """The study reads images from its data directory: link the real image folders beside the generated files."""
    for name in ("cifar-10-batches-py", "cifar-100-python", "ImageNet16"):
        src, dst = data_root / name, sub_root / name
        if src.is_dir() and not dst.exists():
            try:
                dst.symlink_to(src, target_is_directory=True)
            except OSError:
                pass  # data-using proxies then run on whatever the images module finds (or fail visibly)


def _rho_table(df: pd.DataFrame, early: tuple[str, ...] = ()) -> pd.DataFrame:
    from proxybench.metrics import proxy_summary, spearman_rho

    rows = []
    for (space, proxy), g in df.groupby(["space", "proxy"], sort=True):
        ok = g[g["status"] == "ok"]
        s = proxy_summary(proxy, ok["score"], ok["test_acc"], n_resamples=0)
        rows.append({"space": space, "proxy": proxy, "n": s["n"], "errors": int((g["status"] == "error").sum()),
                     "rho": s["rho"], "tau": s["tau"]})
    for (space,), g in df.drop_duplicates(["space", "arch"]).groupby(["space"]):
        for col in early:
            if col in g and g[col].notna().sum() > 2:
                rows.append({"space": space, "proxy": f"[recorded] {col}", "n": int(g[col].notna().sum()),
                             "errors": 0, "rho": spearman_rho(g[col], g["test_acc"]), "tau": float("nan")})
    return pd.DataFrame(rows)


def run_families(families, proxies, data_dir, cache_dir, sample, progress: bool, seed: int = 42) -> pd.DataFrame:
    """Score ``sample`` models of each family (all when None) with ``proxies``; scores joined with truth."""
    from proxybench.cache import ScoreCache
    from proxybench.runner import Study, run_study, study_scores

    cache = ScoreCache(cache_dir)
    frames = []
    with _data_dir_env(files.resolve_data_dir(data_dir)):
        for fam in families:
            study = Study(space=f"nds:{fam}", tasks=(nds.FAMILIES[fam].task,), proxies=tuple(proxies), sample=sample,
                          seed=seed, batch_size=64, data_dir=str(data_dir))
            run_study(study, cache, executor="inprocess", chunk_size=8, progress=progress)
            frames.append(study_scores(study, cache))
    return pd.concat(frames, ignore_index=True)


def _rho_fmt(v) -> str:
    return "–" if not np.isfinite(v) else f"{v:+.3f}"


@dataclass
class NDSReport:
    """Every number of ``reports/nds.md`` (``report_data``); the ``render_*`` functions compute nothing."""

    root: Path  # the data directory
    known: pd.DataFrame  # ``known_network_checks``
    fixture_match: tuple[int, int]  # generated records whose built params equal the recorded ones, of all
    substitute_rho: pd.DataFrame  # ρ on the generated (substitute) files
    n_scores: int = 0
    n_errors: int = 0
    substitute_spaces: list[str] = field(default_factory=list)  # spaces scored on substitute images
    real: list[str] = field(default_factory=list)  # families with real files
    real_rho: pd.DataFrame | None = None
    real_match: tuple[int, int] = (0, 0)  # of the first 20 records of each real family
    known_exact: int = 0  # known networks whose built count is the published one exactly
    known_max_rel: float = 0.0  # the largest relative difference from a published count
    commit: str = ""
    torch: str = ""


def _real_results(real: list[str], data_dir, res_dir: Path, progress: bool) -> tuple[pd.DataFrame, tuple[int, int]]:
    df = run_families(real, REAL_PROXIES, data_dir, res_dir / "scores", REAL_SAMPLE, progress)
    rho = _rho_table(df, tuple(f"test_acc_e{e}" for e in nds.EARLY_EPOCHS))
    store.write_csv(res_dir / "real_rho.csv", rho, RHO_STORE)
    pc = pd.concat([nds.check_params(f, data_dir, n=20).assign(family=f) for f in real], ignore_index=True)
    return rho, (int(pc["match"].sum()), len(pc))


def report_data(out: Path, data_dir, progress: bool = False) -> NDSReport:
    """Score what the caches lack (the real files when present, the generated ones always), check the builders,
    and write ``<out>/nds/`` (ρ tables, summary.json)."""
    res_dir = out / NAME
    res_dir.mkdir(parents=True, exist_ok=True)
    real = nds.available_families(data_dir)
    root = files.resolve_data_dir(data_dir)
    known = known_network_checks()
    real_rho, real_match = _real_results(real, data_dir, res_dir, progress) if real else (None, (0, 0))
    # substitute files: generated deterministically into the derived-files cache, never committed
    sub_root = files.resolve_cache_dir() / f"nds_fixtures_n{DEMO_N}_s{DEMO_SEED}"
    fx.write_fixtures(sub_root, n=DEMO_N, seed=DEMO_SEED)
    _link_images(root, sub_root)
    fpc = fixture_param_checks(sub_root)
    df = run_families(DEMO_FAMILIES, DEMO_PROXIES, sub_root, res_dir / "substitute_scores", None, progress)
    rho = _rho_table(df, ("test_acc_e5",))
    store.write_csv(res_dir / "substitute_rho.csv", rho, RHO_STORE)
    rep = NDSReport(root=root, known=known, fixture_match=(int(fpc["match"].sum()), len(fpc)), substitute_rho=rho,
                    n_scores=int(len(df)), n_errors=int((df["status"] == "error").sum()),
                    substitute_spaces=sorted(df.loc[df["substitute"].astype(bool), "space"].unique()), real=real,
                    real_rho=real_rho, real_match=real_match,
                    known_exact=int((known["built"] == known["published"]).sum()),
                    known_max_rel=known["rel_diff"].abs().max(), commit=provenance.git_commit(),
                    torch=torch.__version__)
    store.write_json(res_dir / "summary.json", _summary_json(rep), SUMMARY_STORE, default=str, keep=("provenance",))
    return rep


def _summary_json(rep: NDSReport) -> dict:
    summary: dict = {"real_families": rep.real, "data_dir": str(rep.root)}
    if rep.real:
        summary["real_rho"] = rep.real_rho.to_dict(orient="records")
        summary["real_param_match"] = list(rep.real_match)
    summary["known_networks"] = rep.known.drop(columns=["source"]).to_dict(orient="records")
    summary["fixture_param_match"] = list(rep.fixture_match)
    summary["substitute"] = {"families": list(DEMO_FAMILIES), "n": DEMO_N, "proxies": list(DEMO_PROXIES),
                             "scores": rep.n_scores, "errors": rep.n_errors}
    summary["provenance"] = dict(provenance.environment())  # no wall time: an unchanged rerun rewrites nothing
    return summary


def render_intro(rep: NDSReport) -> list[str]:
    """The title, the data, the loader and whether real files are here."""
    L = ["# NDS (Network Design Spaces)", "",
         "Radosavovic et al., *On Network Design Spaces for Visual Recognition*, ICCV 2019; data: the `nds_data` "
         "release (`data.zip` of facebookresearch/nds). Loader: `datasets/nds.py`; every sweep file is its own "
         "space `nds:<family>` (`proxybench run --space nds --family DARTS`), architecture key `<family>:<index>`, "
         f"files at `<data_dir>/nds/<family>.json`. Ground truth: final test accuracy = 100 − last "
         f"`test_ep_top1`; early-epoch accuracies `test_acc_e{{{','.join(map(str, nds.EARLY_EPOCHS))}}}` are the "
         "early-stopping baseline. ImageNet families (`*_in`) are scored on ImageNet16-120 images (16×16) with "
         "their ImageNet stem and 1,000-class head.", ""]
    if not rep.real:
        return L + ["**Status: loader ready, no real data on this machine.** None of the release's files is in "
                    f"`{rep.root / 'nds'}` (the NDS JSON files were not reachable from this machine). Put the "
                    "unzipped `nds_data/*.json` there (or pass `--data-dir`) and `make bench` runs, unchanged: a "
                    f"seeded sample of {REAL_SAMPLE} models of every present family scored with "
                    f"{', '.join(REAL_PROXIES)}, ρ against final test accuracy next to the recorded early-epoch "
                    "accuracies, and a built-vs-recorded parameter check (`proxybench nds-check --family DARTS`).", ""]
    return L + [f"**Status: real NDS files found** in `{rep.root / 'nds'}`: {', '.join(rep.real)}.", "",
                f"### Proxies on the real files ({REAL_SAMPLE} seeded models per family, seed 42, batch 64)", "",
                *md_table(rep.real_rho, ["space", "proxy", "n", "errors", "rho"], {"rho": _rho_fmt}), "",
                f"Parameter check on the first 20 records of each family: {rep.real_match[0]} of {rep.real_match[1]} "
                "built networks have exactly the recorded `params` (with or without the auxiliary head).", ""]


def render_checks(rep: NDSReport) -> list[str]:
    """The builders against published parameter counts and against the generated files."""
    n = "{:,}".format
    return ["## Builders vs published parameter counts", "",
            "The networks below are rebuilt from NDS-style `net` configs by the same builders that build NDS "
            "records; `closed form` is an independent per-op count (`datasets/nds_fixtures.analytic_params`).", "",
            *md_table(rep.known, ["network", "built", "closed_form", "published", "source"],
                      {"built": n, "closed_form": n, "published": n}), "",
            "## Generated files in the official schema", "",
            f"`datasets/nds_fixtures.write_fixtures` wrote {len(nds.FAMILY_NAMES)} family files ({DEMO_N} tiny seeded "
            f"networks each, seed {DEMO_SEED}; `proxybench nds-fixtures DIR` writes them). Every record was read and "
            f"validated by the real loader; built parameters equal the recorded ones for {rep.fixture_match[0]} of "
            f"{rep.fixture_match[1]} records.", ""]


def render_substitute(rep: NDSReport) -> list[str]:
    """The runner end to end on the generated files (no meaning as correlations), and the provenance."""
    return ["## ⚠ SUBSTITUTE DATA: runner end to end on generated files", "",
            "**These numbers have no meaning as correlations.** The accuracies in the generated files are "
            "synthetic (a noisy function of model size; nothing was trained) and the networks are tiny. The table "
            f"only shows that the runner, the score cache and every listed proxy work on NDS networks: "
            f"{rep.n_scores} scores, {rep.n_errors} errors, families {', '.join(DEMO_FAMILIES)}, {DEMO_N} models "
            f"each, proxies {', '.join(DEMO_PROXIES)}, seed 42, batch 64. Scored on substitute images (flagged in the "
            f"cache): {', '.join(rep.substitute_spaces) or 'none'}.", "",
            *md_table(rep.substitute_rho, ["space", "proxy", "n", "errors", "rho"], {"rho": _rho_fmt}), "",
            "## Provenance", "",
            f"Written by `proxybench.studies.nds` (`make bench`), commit {rep.commit}, torch {rep.torch}, "
            f"one torch thread, CPU. Scores: `{NAME}/scores` (real) and "
            f"`{NAME}/substitute_scores` (substitute), beside this file, kept apart from the main cache so that "
            "substitute scores never mix with real ones.", ""]


def paragraph(rep: NDSReport) -> str:
    """The section's summary for reports/README.md."""
    if rep.real:
        return (f"**NDS** ([reports/nds.md](nds.md)): real files for {len(rep.real)} families; proxies scored on "
                f"{REAL_SAMPLE} models per family.")
    return ("**NDS** ([reports/nds.md](nds.md)): loader ready, **no real data on this machine**. The builders "
            f"give {rep.known_exact} of {len(rep.known)} published parameter counts "
            f"exactly (the others within {rep.known_max_rel:.1%} of a rounded figure), and the recorded "
            f"count for {rep.fixture_match[0]} of {rep.fixture_match[1]} records of generated official-schema files; "
            f"the runner runs end to end on those files ({rep.n_errors} errors in {rep.n_scores} scores; substitute "
            "data, no meaning as correlations).")


def write_report(out: Path, data_dir, no_progress: bool = True) -> tuple[Path, str]:
    """Compute what the caches lack and write ``<out>/nds.md`` and ``<out>/nds/summary.json``."""
    torch.set_num_threads(1)
    out = Path(out)
    rep = report_data(out, data_dir, progress=not no_progress)
    path = out / f"{NAME}.md"
    provenance.write_if_changed(path, "\n".join([*render_intro(rep), *render_checks(rep), *render_substitute(rep)]))
    return path, paragraph(rep)


@section(NAME, order=20)
def bench_section(cfg: SectionConfig) -> str:
    path, para = write_report(cfg.out, cfg.data_dir, no_progress=not cfg.progress)
    print(f"nds report: {path}")
    return para


def cmd_fixtures(args) -> None:
    paths = fx.write_fixtures(args.dir, families=args.families.split(",") if args.families else None, n=args.n,
                              seed=args.seed)
    print(f"wrote {len(paths)} SUBSTITUTE NDS family files (synthetic accuracies) to {Path(args.dir) / 'nds'}; "
          f"use them with --data-dir {args.dir}")


def cmd_check(args) -> None:
    df = nds.check_params(args.family, args.data_dir, n=args.n)
    print(df.to_string(index=False))
    print(f"{int(df['match'].sum())} of {len(df)} built networks have the recorded parameter count")
    if not df["match"].all():
        raise SystemExit(1)


def add_cli(sub, parents) -> None:
    common = parents.common
    s = sub.add_parser("nds-fixtures", parents=[common], help="write small NDS family files in the official schema "
                       "(substitute data for tests and demos)")
    s.add_argument("dir", help="root directory: files go to DIR/nds/<family>.json")
    s.add_argument("--n", type=int, default=6, help="records per family")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--families", default=None, help="comma-separated (default: every family of the release)")
    s.set_defaults(fn=cmd_fixtures)
    s = sub.add_parser("nds-check", parents=[common], help="built vs recorded parameter counts of an NDS family")
    s.add_argument("--family", required=True)
    s.add_argument("--n", type=int, default=None, help="first N records (default: all)")
    s.set_defaults(fn=cmd_check)
