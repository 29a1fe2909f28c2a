"""benchmarks/benchmark.py and the raw-pixel baseline end to end on a tiny config, and the benchmark's resume."""

import csv
import shutil

import pytest
from loss_benchmark import parse_grid, winners  # benchmarks/, on pytest's pythonpath

from tests.multiprocess import accelerate_launch
from tests.recipe_runs import DIGITS_CONFIG, REPO, load_script, run_script

BENCHMARK = REPO / "benchmarks" / "benchmark.py"


@pytest.mark.slow
@pytest.mark.multiprocess
def test_benchmark_writes_csv_table_and_plots_and_a_rerun_skips_finished_runs(digits_folder, tmp_path):
    args = [
        "--config", str(DIGITS_CONFIG), "--data-root", str(digits_folder), "--out", str(tmp_path / "bench"),
        "--losses", "vmf", "triplet", "--seeds", "0", "--tune", "vmf.kappa=8,16", "--set", "train.max_steps_per_epoch=3",
    ]  # fmt: skip
    accelerate_launch(BENCHMARK, *args)  # two processes: one CSV, written by the main one
    with open(tmp_path / "bench" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["phase"]) for r in rows] == [
        ("baseline-untrained", "baseline"), ("tune-vmf-kappa8", "tune"), ("tune-vmf-kappa16", "tune"),
        (f"vmf-kappa{float(winners(rows, parse_grid(['vmf.kappa=8,16']))['vmf']):g}-seed0", "final"),
        ("triplet-seed0", "final"),
    ]  # fmt: skip
    for row in rows[1:]:
        assert 0 <= float(row["mean_average_precision_at_r"]) <= 1 and float(row["train_seconds"]) > 0
        assert float(row["peak_memory_mb"]) > 0 and 0 <= float(row["best_val_map_at_r"]) <= 1
    assert 0 <= float(rows[0]["mean_average_precision_at_r"]) <= 1 and float(rows[0]["train_seconds"]) == 0
    summary = (tmp_path / "bench" / "summary.md").read_text()
    assert "| untrained network (train.epochs=0) |" in summary.splitlines()[2]
    assert "| vmf" in summary and "| kappa=" in summary and "| default | 1 |" in summary
    for plot in ("headline_metrics.png", "validation_map_at_r.png", "tuning_vmf_kappa.png", "time_to_accuracy.png"):
        assert (tmp_path / "bench" / "plots" / plot).stat().st_size > 0
    with open(tmp_path / "bench" / "validation_curves.csv") as f:
        curves = list(csv.DictReader(f))  # one validated epoch per trained run, the final copy of the winner included
    assert [c["name"] for c in curves] == [r["name"] for r in rows[1:]] and {c["metric"] for c in curves} == {
        "mean_average_precision_at_r"
    }
    assert [float(c["value"]) for c in curves] == [float(r["best_val_map_at_r"]) for r in rows[1:]]
    time_to_accuracy = load_script(REPO / "benchmarks" / "time_to_accuracy.py")
    assert time_to_accuracy.main([str(tmp_path / "bench"), "--out", str(tmp_path / "race.png")]) == 0
    assert (tmp_path / "race.png").stat().st_size > 0
    before = (tmp_path / "bench" / "runs.csv").read_text()
    folders = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "bench" / "runs").iterdir()}
    run_script(BENCHMARK, *args)  # one process this time: nothing is left to run
    assert (tmp_path / "bench" / "runs.csv").read_text() == before
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "bench" / "runs").iterdir()} == folders
    # continued in a fresh clone (the committed CSVs, no run folders): the finished runs keep their curves
    shutil.rmtree(tmp_path / "bench" / "runs")
    run_script(BENCHMARK, *args)
    with open(tmp_path / "bench" / "validation_curves.csv") as f:
        assert list(csv.DictReader(f)) == curves


def test_raw_pixel_baseline_scores_flattened_images_with_the_recipe_evaluation(
    digits_folder, digits_closed_set_folder, tmp_path
):
    """Digits are easy in pixel space: a baseline row near chance (0.2 for the 5 test classes) would be a bug."""
    out = tmp_path / "raw.csv"
    args = ["--config", str(DIGITS_CONFIG), "--out", str(out)]
    run_script(REPO / "benchmarks" / "raw_pixel_baseline.py", *args, "--data-root", str(digits_folder))
    closed = ["--data-root", str(digits_closed_set_folder), "data.protocol=closed_set"]
    run_script(REPO / "benchmarks" / "raw_pixel_baseline.py", *args, *closed)
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == ["raw-pixels", "raw-pixels"]
    assert float(rows[0]["precision_at_1"]) > 0.8 and int(rows[0]["num_query"]) == int(rows[0]["num_unique_query"])
    assert float(rows[1]["nearest_mean_accuracy"]) > 0.6  # 10 classes: chance is 0.1
    missing = run_script(REPO / "benchmarks" / "raw_pixel_baseline.py", "--config", str(DIGITS_CONFIG),
                         "--data-root", str(tmp_path / "nowhere"), expect_success=False)  # fmt: skip
    assert missing.returncode == 2 and "nowhere" in missing.stderr
