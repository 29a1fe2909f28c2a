"""recipes/evaluate.py: a finished run scored on a data root of one's choice, by the run's own test, changing nothing."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.recipe_runs import REPO, run_script

EVALUATE = REPO / "recipes" / "evaluate.py"


def _tree_digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_evaluate_scores_the_best_checkpoint_as_the_runs_own_test_and_writes_only_its_folder(
    uninterrupted_run, digits_folder, tmp_path
):
    run = tmp_path / "through"
    shutil.copytree(uninterrupted_run, run)
    before = _tree_digest(run)
    out = tmp_path / "evaluation"
    completed = run_script(EVALUATE, "--run", str(run), "--data-root", str(digits_folder), "--out", str(out))
    assert _tree_digest(run) == before  # nothing of the run changed
    own = json.loads((run / "metrics.json").read_text())
    evaluated = json.loads((out / "metrics.json").read_text())
    for key in ("mean_average_precision_at_r", "precision_at_1", "r_precision"):
        assert evaluated[key] == pytest.approx(own[key], abs=1e-6), key
    assert (out / "plots" / "retrieval_grid.png").stat().st_size > 0
    assert "mean_average_precision_at_r" in completed.stdout

    again = run_script(
        EVALUATE, "--run", str(run), "--data-root", str(digits_folder), "--out", str(out), expect_success=False
    )
    assert again.returncode == 2 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    other = run_script(EVALUATE, "--run", str(run), "optim.lr=1", expect_success=False)
    assert other.returncode == 2 and "only data.*, eval.*" in other.stderr
    missing = run_script(EVALUATE, "--run", str(tmp_path / "nowhere"), expect_success=False)
    assert missing.returncode == 2 and "no run there" in missing.stderr
