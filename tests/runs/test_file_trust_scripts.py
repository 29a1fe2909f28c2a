"""Files a user may have downloaded are hostile, through the scripts: no crafted pickle runs, whether given as a
model, named by an index, or planted in a checkpoint a run resumes."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from pml_vmf.inference import EmbeddingIndex
from pml_vmf.training.checkpoints import MANIFEST
from tests.crafted_files import craft_pickle
from tests.multiprocess import child_environment
from tests.recipe_runs import REPO, run_script

EXPORT, INDEX, SEARCH = (REPO / "recipes" / f"{name}.py" for name in ("export", "index", "search"))


@pytest.mark.slow
def test_the_scripts_never_unpickle_a_model_they_are_given_or_an_index_names(tmp_path, digits_folder):
    marker = tmp_path / "pwned"
    crafted = craft_pickle(tmp_path / "downloaded" / "embedding_model.pt", marker)
    index = tmp_path / "index"
    EmbeddingIndex(8).add(torch.randn(4, 8), ["a", "b", "c", "d"]).save(
        index, model=str(crafted)
    )  # a downloaded index.json
    query = str(sorted((digits_folder / "1").iterdir())[0])
    calls = {
        "export.py --run": (
            EXPORT,
            "--run",
            str(crafted),
            "--out",
            str(tmp_path / "export"),
            "--check-images",
            str(digits_folder / "1"),
        ),
        "index.py --model": (
            INDEX,
            "--model",
            str(crafted),
            "--images",
            str(digits_folder / "1"),
            "--out",
            str(tmp_path / "i"),
        ),
        "search.py --model": (SEARCH, "--index", str(index), "--model", str(crafted), "--query", query),
        "search.py, the index's model": (SEARCH, "--index", str(index), "--query", query),
    }
    for call, (script, *args) in calls.items():
        completed = run_script(script, *args, expect_success=False)
        assert completed.returncode == 2 and str(crafted) in completed.stderr, (call, completed.stderr)
        assert "Traceback" not in completed.stderr and not marker.exists(), call
    k0 = run_script(SEARCH, "--index", str(index), "--query", query, "-k", "0", expect_success=False)
    assert (
        k0.returncode == 2
        and "-k is the number of results per query, at least 1" in k0.stderr
        and "Traceback" not in k0.stderr
    )


def _resume(run, *overrides) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "recipes" / "train.py"), "--resume", str(run), *overrides],
        capture_output=True, text=True, timeout=600, env=child_environment(), cwd=REPO,
    )  # fmt: skip


def _rewrite_manifest(checkpoint) -> None:
    """As an attacker would: the manifest made to agree with the planted file, so that only the loader stands."""
    from pml_vmf.files import file_sha256

    manifest = {
        p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(checkpoint.iterdir())
        if p.name != MANIFEST
    }
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.slow
# custom_checkpoint_0.pkl: accelerate's custom states, which it unpickles in full; pml-vmf never writes one.
@pytest.mark.parametrize(
    "planted", ["loss.pt", "miner_process0.pt", "progress.pt", "random_states_0.pkl", "custom_checkpoint_0.pkl"]
)
def test_resume_never_runs_code_planted_in_a_checkpoint(planted, uninterrupted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted_run, run)
    marker = tmp_path / "pwned"
    checkpoint = run / "checkpoints" / "epoch_0002"
    craft_pickle(checkpoint / planted, marker)
    _rewrite_manifest(checkpoint)
    completed = _resume(run)
    assert not marker.exists(), completed.stderr
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert (
        f"{checkpoint / planted} " in completed.stderr
        and "is not loaded" in completed.stderr
        and "Traceback" not in completed.stderr
    )
