"""What a run logs: every step's loss and learning rate, vMF diagnostics per epoch, TensorBoard, the curves plot."""

import json

import pytest


@pytest.mark.slow
def test_steps_epochs_and_vmf_diagnostics_reach_tensorboard_and_the_run_folder(uninterrupted_run):
    """The run of 3 epochs of 4 steps that tests/conftest.py trains with run.trackers=[tensorboard]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = uninterrupted_run
    steps = [json.loads(line) for line in (run / "train_steps.jsonl").read_text().splitlines()]
    assert [(s["epoch"], s["step"], s["global_step"]) for s in steps] == [
        (e, s, 4 * e + s) for e in range(3) for s in range(1, 5)
    ]
    assert all(len(s["lr"]) == 2 and s["loss"] > 0 for s in steps)
    assert steps[-1]["lr"][0] < steps[0]["lr"][0]  # the cosine schedule, step by step
    epochs = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if "train_loss" in json.loads(line)
    ]
    for record in epochs:  # the miner's last estimate: every class has samples, so every statistic is finite
        assert (
            0
            < record["vmf/resultant_length_min"]
            <= record["vmf/resultant_length_mean"]
            <= record["vmf/resultant_length_max"]
            <= 1
        )
        assert record["vmf/concentration_min"] <= record["vmf/concentration_max"]
    events = EventAccumulator(str(run / "through")).Reload()  # accelerate logs to <project_dir>/<run name>
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "epoch/train_loss", "vmf/resultant_length_mean", "vmf/concentration_max"} <= set(
        scalars
    )
    assert "mean_average_precision_at_r" in " ".join(scalars)
    logged = events.Scalars("train/loss")
    assert [e.step for e in logged] == list(range(1, 13))
    assert [e.value for e in logged] == pytest.approx([s["loss"] for s in steps], rel=1e-5)
    assert (run / "plots" / "training_curves.png").is_file()


def test_training_curves_show_every_step_whole_epochs_and_one_line_for_identical_metrics():
    from matplotlib import pyplot as plt

    from pml_vmf.evaluation.plots import training_curves_figure

    steps = [
        {"epoch": e, "step": s, "global_step": 20 * e + s, "loss": 3.0 - 0.05 * (20 * e + s)}
        for e in range(2)
        for s in range(1, 21)
    ]
    records = [{"epoch": e, "split": "val", "precision_at_1": 0.5 + e / 10, "recall_at_1": 0.5 + e / 10, "r_precision": 0.3,
                "mean_average_precision_at_r": 0.2} for e in range(2)]  # fmt: skip
    fig = training_curves_figure(records, steps)
    loss_ax, metric_ax = fig.axes
    assert len(loss_ax.lines[0].get_xdata()) == 40  # every step, not one point per epoch
    assert loss_ax.lines[0].get_xdata()[-1] == pytest.approx(2.0)
    labels = [line.get_label() for line in metric_ax.lines]
    assert labels == ["mean_average_precision_at_r", "precision_at_1 = recall_at_1", "r_precision"]
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)
