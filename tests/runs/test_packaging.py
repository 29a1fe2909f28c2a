"""The wheel `python -m build` makes: its files and metadata, and the README quick start from a venv that holds that
wheel instead of this checkout."""

import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.multiprocess import child_environment

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the working tree, so that no build/ folder of an earlier build (with files since deleted) leaks
    # into the wheel; no build isolation: the dev venv's setuptools (>= 77, as pyproject.toml asks) builds it offline.
    source = out / "source"
    top_level_outputs = {".git", ".venv", "build", "dist", "runs", "data"}
    shutil.copytree(
        REPO, source,
        ignore=lambda folder, names: [n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (Path(folder) == REPO and n in top_level_outputs)],
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
        check=True, capture_output=True, text=True, env=child_environment(),
    )  # fmt: skip
    (path,) = out.glob("pml_vmf-*.whl")
    return path


def test_the_wheel_holds_the_package_its_licence_and_its_type_marker(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "pml_vmf/py.typed" in names and "pml_vmf/training/engine.py" in names
    tracked = subprocess.run(["git", "ls-files", "pml_vmf"], cwd=REPO, capture_output=True, text=True).stdout.split()
    if tracked:  # a git checkout: the wheel holds the package's files, no more
        assert sorted(n for n in names if n.startswith("pml_vmf/")) == sorted(tracked)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "recipes/", "benchmarks/")) for n in names)
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert (
        "Classifier: Programming Language :: Python :: 3.11" in metadata and "Classifier: Typing :: Typed" in metadata
    )
    requires = re.findall(r"^Requires-Dist: (.*)$", metadata, flags=re.M)
    assert {re.split(r"[<>=!~; ]", r)[0] for r in requires if "extra ==" not in r} == {
        "torch",
        "pytorch-metric-learning",
    }
    # One faiss per extra: faiss-cpu and faiss-gpu-cu12 both install the module `faiss`, so no extra holds both.
    for extra in ("recipes", "cpu", "gpu", "dev"):
        faiss = [r for r in requires if r.startswith("faiss") and f'extra == "{extra}"' in r]
        assert len(faiss) <= 1, (extra, faiss)


@pytest.mark.slow
def test_the_readme_quick_start_runs_from_a_venv_that_holds_the_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies (torch and the rest, gigabytes) come from this venv, after the venv's own site-packages: the
    # package itself is the wheel's copy, never this checkout (the editable install's finder is not loaded there).
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    blocks = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(), flags=re.S | re.M)
    script = tmp_path / "quick_start.py"
    script.write_text(
        "import pml_vmf, pathlib\n"
        f"assert pathlib.Path(pml_vmf.__file__).is_relative_to({str(site_packages)!r}), pml_vmf.__file__\n"
        + "\n".join(blocks)
        + "\nprint('accuracy', accuracy)\n"
    )
    completed = subprocess.run(
        [str(python), str(script)], capture_output=True, text=True, cwd=tmp_path, env=child_environment(), timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert float(completed.stdout.split("accuracy")[-1]) > 0.9
