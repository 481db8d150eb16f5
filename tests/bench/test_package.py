"""One importable package: proxybench (bench/), proxybench.proxies, proxybench.datasets; nothing named bench,
proxies or datasets is installed, so another package named datasets (Hugging Face's) is never shadowed."""

from __future__ import annotations

import subprocess
import sys

from proxybench.provenance import REPO_ROOT


def _run(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_public_names_and_no_top_level_packages(tmp_path):
    r = _run("import proxybench as pb; print(pb.score.__module__, pb.find_measures.__module__, "
             "pb.register_proxy.__module__, pb.Space.__module__, pb.register_space.__module__, "
             "'synflow' in pb.list_proxies())", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["proxybench.api", "proxybench.api", "proxybench.proxies.registry",
                                "proxybench.datasets", "proxybench.datasets", "True"]
    for name in ("bench", "proxies", "datasets"):
        r = _run(f"import importlib.util, sys; spec = importlib.util.find_spec({name!r}); "
                 f"sys.exit(0 if spec is None or 'proxybench' not in str(spec.origin) "
                 f"and {str(REPO_ROOT)!r} not in str(spec.origin) else 1)", tmp_path)
        assert r.returncode == 0, f"{name} resolves to this project from elsewhere: {r.stdout}{r.stderr}"


def test_datasets_folder_is_never_imported_as_datasets(tmp_path):
    """From the checkout's root (cwd on sys.path) `import datasets` finds this folder first: it refuses, with what
    to import instead, rather than load under the wrong name; from anywhere else another package of that name
    imports normally."""
    other = tmp_path / "site" / "datasets"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("WHO = 'the other datasets'\n")
    r = _run(f"import sys; sys.path.append({str(tmp_path / 'site')!r}); import datasets; print(datasets.WHO)",
             tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "the other datasets", r.stderr
    r = _run("import datasets", REPO_ROOT)
    assert r.returncode != 0 and "import it as proxybench.datasets" in r.stderr
    r = _run("import proxybench.datasets as d; print(type(d.get_space('nb201')).__name__)", REPO_ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "NB201Space", r.stderr


def test_proxies_folder_is_never_imported_as_proxies():
    """From the checkout's root `import proxies` would load the folder a second time beside proxybench.proxies and
    fail on a duplicate registration far from the cause: it refuses at once, naming the import to use."""
    r = _run("import proxies", REPO_ROOT)
    assert r.returncode != 0 and "import it as proxybench.proxies" in r.stderr, r.stderr
    r = _run("import proxybench.proxies as p; print('synflow' in p.list_proxies())", REPO_ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr
