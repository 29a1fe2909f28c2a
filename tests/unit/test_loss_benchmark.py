"""How the loss benchmark (benchmarks/loss_benchmark.py) plans, tunes and summarises runs."""

import pytest
from loss_benchmark import (  # benchmarks/, on pytest's pythonpath
    TUNING_GRIDS,
    parse_grid,
    plan,
    summary_table,
    validation_curve,
    winners,
)

from pml_vmf.training import LOSSES, ConfigError


def _row(name, phase, loss, value="", val=""):
    return {"name": name, "phase": phase, "loss": loss, "seed": "0", "param": "kappa" if value else "", "value": value,
            "best_val_map_at_r": val, "mean_average_precision_at_r": "0.5", "seconds_per_epoch": "1", "peak_memory_mb": "9"}  # fmt: skip


def test_seeds_wait_for_the_tuning_and_use_the_value_best_on_validation():
    grid = parse_grid(["vmf.kappa=8,16"])
    assert [p.name for p in plan(["vmf"], [0, 1], grid, [])] == [
        "baseline-untrained",
        "tune-vmf-kappa8",
        "tune-vmf-kappa16",
    ]
    assert [p.name for p in plan(["vmf"], [0, 1], grid, [], baseline=False)] == ["tune-vmf-kappa8", "tune-vmf-kappa16"]
    rows = [
        _row("tune-vmf-kappa8", "tune", "vmf", "8.0", "0.4"),
        _row("tune-vmf-kappa16", "tune", "vmf", "16.0", "0.6"),
    ]
    assert winners(rows, grid) == {"vmf": 16.0}
    assert [p.name for p in plan(["vmf"], [0, 1], grid, rows, baseline=False)] == [
        "vmf-kappa16-seed0",
        "vmf-kappa16-seed1",
    ]
    rows.append(_row("vmf-kappa16-seed0", "final", "vmf", "16.0", "0.6"))
    assert "| vmf | kappa=16 | 1 |" in summary_table(rows, grid)


def test_a_malformed_tuning_grid_is_an_error():
    with pytest.raises(ConfigError, match="LOSS.PARAM=V1,V2"):
        parse_grid(["kappa=8,16"])


def test_the_default_grid_tunes_each_listed_loss_over_its_registry_values_and_items_override_it():
    grid = parse_grid(["default", "vmf.kappa=4,8"], ["vmf", "triplet", "softmax"])
    assert grid == {"vmf": ("kappa", [4.0, 8.0]), "triplet": ("margin", [0.05, 0.1, 0.2])}  # softmax has no grid
    # Every grid brackets its loss's registry default; vMF's default kappa is "auto", a scale from the class count
    # (3 to 9 for the recipes' 10 to 600 classes), which its grid of fixed values brackets from above.
    numeric = {loss: grid for loss, grid in parse_grid(["default"], list(LOSSES)).items() if loss != "vmf"}
    assert all(LOSSES[loss].defaults[param] in values for loss, (param, values) in numeric.items())
    assert LOSSES["vmf"].defaults["kappa"] == "auto"
    assert set(TUNING_GRIDS) <= set(LOSSES)


def test_a_loss_that_does_not_clear_the_untrained_network_is_flagged():
    grid = parse_grid(["vmf.kappa=8"])
    rows = [
        {**_row("baseline-untrained", "baseline", "vmf"), "mean_average_precision_at_r": "0.55"},
        _row("tune-vmf-kappa8", "tune", "vmf", "8.0", "0.6"),
        {**_row("vmf-kappa8-seed0", "final", "vmf", "8.0", "0.6"), "mean_average_precision_at_r": "0.7"},
        _row("triplet-seed0", "final", "triplet"),  # MAP@R 0.5, below the untrained 0.55
    ]
    table = summary_table(rows, grid).splitlines()
    assert table[2].startswith("| untrained network (train.epochs=0) |  | 1 | 0.550 |")
    assert table[3].startswith("| vmf | kappa=8 |") and table[4].startswith(
        "| triplet (not above untrained) | default |"
    )


def test_the_time_to_accuracy_curve_counts_every_epochs_training_seconds_but_not_validation():
    log = [
        {"epoch": 0, "train_loss": 1.0, "train_seconds": 10.0},  # not validated (eval.every=2)
        {"epoch": 1, "train_loss": 0.9, "train_seconds": 12.5, "split": "val", "mean_average_precision_at_r": 0.4},
        {"epoch": 2, "train_loss": 0.8, "train_seconds": 30.0, "split": "val", "mean_average_precision_at_r": 0.6},
        {"split": "test", "mean_average_precision_at_r": 0.5},
    ]
    assert validation_curve(log) == [(1, 22.5, 0.4), (2, 52.5, 0.6)]
    accuracy_log = [{**r, "classifier_accuracy": 0.9} for r in log[1:3]]
    assert validation_curve(accuracy_log, "classifier_accuracy") == [(1, 12.5, 0.9), (2, 42.5, 0.9)]


def test_tuning_follows_the_runs_selection_metric_where_the_rows_record_one():
    grid = parse_grid(["vmf.kappa=8,16"])
    rows = [
        {
            **_row("tune-vmf-kappa8", "tune", "vmf", "8.0", "0.6"),
            "select_by": "classifier_accuracy",
            "best_val_score": "0.91",
        },
        {
            **_row("tune-vmf-kappa16", "tune", "vmf", "16.0", "0.4"),
            "select_by": "classifier_accuracy",
            "best_val_score": "0.93",
        },
    ]
    assert winners(rows, grid) == {"vmf": 16.0}  # by accuracy, though kappa 8 has the better MAP@R
    assert winners([{k: v for k, v in r.items() if k != "best_val_score"} for r in rows], grid) == {
        "vmf": 8.0
    }  # older rows


def test_a_stopped_benchmark_keeps_the_curves_of_the_runs_it_finished(tmp_path, monkeypatch):
    """The curves are written after every finished run: the run folders are not committed, so a benchmark stopped
    mid-way (the session's end) would otherwise leave its finished runs' curves nowhere."""
    import json

    from pml_vmf.files import read_rows
    from pml_vmf.training import TrainingInterrupted
    from tests.recipe_runs import DIGITS_CONFIG, REPO, load_script

    benchmark = load_script(REPO / "benchmarks" / "benchmark.py")

    def run_one(config_path, overrides, planned, runs_dir):
        if planned.seed == 1:
            raise TrainingInterrupted("Stopped at epoch 0, step 3 on SIGTERM.", None, 143)
        (runs_dir / planned.name).mkdir(parents=True)
        record = {
            "epoch": 0,
            "train_loss": 1.0,
            "train_seconds": 2.5,
            "split": "val",
            "mean_average_precision_at_r": 0.5,
        }
        (runs_dir / planned.name / "metrics.jsonl").write_text(json.dumps(record) + "\n")
        return {
            "name": planned.name,
            "folder": planned.name,
            "phase": planned.phase,
            "loss": planned.loss,
            "seed": planned.seed,
        }

    monkeypatch.setattr(benchmark, "run_one", run_one)
    out = tmp_path / "bench"
    args = ["--config", str(DIGITS_CONFIG), "--out", str(out), "--losses", "vmf", "--seeds", "0", "1", "--no-baseline"]
    assert benchmark.main(args) == 143
    assert [r["name"] for r in read_rows(out / "runs.csv")] == ["vmf-seed0"]
    curves = read_rows(out / "validation_curves.csv")
    assert [(c["name"], c["epoch"], c["train_seconds"], c["value"]) for c in curves] == [
        ("vmf-seed0", "0", "2.5", "0.5")
    ]
