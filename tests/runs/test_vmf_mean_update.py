"""benchmarks/vmf_mean_update.py end to end: the recipe's mean-update variants, one CSV row each, and a summary."""

import csv

import pytest

from tests.recipe_runs import DIGITS_CONFIG, REPO, run_script

SCRIPT = REPO / "benchmarks" / "vmf_mean_update.py"


@pytest.mark.slow
def test_mean_update_variants_train_through_the_recipe_and_a_rerun_skips_them(digits_folder, tmp_path):
    args = [
        "--config", str(DIGITS_CONFIG), "--data-root", str(digits_folder), "--out", str(tmp_path / "ablation"),
        "--variants", "per_epoch", "full_pass", "--set", "train.max_steps_per_epoch=3",
    ]  # fmt: skip
    run_script(SCRIPT, *args)
    with open(tmp_path / "ablation" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["variant"], r["name"]) for r in rows] == [
        ("per_epoch", "per_epoch-seed0"),
        ("full_pass", "full_pass-seed0"),
    ]
    for row in rows:
        assert 0 <= float(row["mean_average_precision_at_r"]) <= 1 and float(row["seconds_per_epoch"]) > 0
    configs = {r["variant"]: (tmp_path / "ablation" / "runs" / r["folder"] / "config.yaml").read_text() for r in rows}
    assert "publish_every: null" in configs["per_epoch"] and "source: full_pass" in configs["full_pass"]
    summary = (tmp_path / "ablation" / "summary.md").read_text()
    assert "| per_epoch | 1 |" in summary and "| full_pass | 1 |" in summary
    before = (tmp_path / "ablation" / "runs.csv").read_text()
    run_script(SCRIPT, *args)
    assert (tmp_path / "ablation" / "runs.csv").read_text() == before
