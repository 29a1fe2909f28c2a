"""Stopping a run and continuing it: a real SIGTERM mid-epoch (1 and 2 processes), a NaN loss, a bug's traceback."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.multiprocess import accelerate_launch, accelerate_launch_command, child_environment
from tests.recipe_runs import DIGITS_CONFIG, REPO, SHORT_RUN, TRAIN_SCRIPT, run_script, run_train_script

HOOK_WORKER = REPO / "tests" / "workers" / "train_with_hook.py"
# SHORT_RUN: digits, 3 epochs of 4 steps; global step 6 is epoch 1's second step.
TIMINGS = ("train_seconds", "images_per_second", "peak_memory_mb")  # measured, so never equal between two runs


def _common(digits_folder, tmp_path) -> list:
    return ["--config", str(DIGITS_CONFIG), "--data-root", str(digits_folder), f"run.output_dir={tmp_path}", *SHORT_RUN]


def _train(num_processes: int, *args: str) -> None:
    if num_processes == 1:
        run_train_script(*args)
    else:
        accelerate_launch(TRAIN_SCRIPT, *args, num_processes=num_processes)


def _assert_same_run(first: Path, second: Path) -> None:
    assert json.loads((first / "metrics.json").read_text()) == pytest.approx(
        json.loads((second / "metrics.json").read_text()), abs=1e-6
    )
    for name in ("model.safetensors", "class_means.safetensors"):
        tensors = [load_file(run / "model" / name) for run in (first, second)]
        for key, value in tensors[0].items():
            torch.testing.assert_close(tensors[1][key], value, atol=1e-6, rtol=0, msg=key)
    steps = [
        [json.loads(line) for line in (run / "train_steps.jsonl").read_text().splitlines()] for run in (first, second)
    ]
    assert [s["global_step"] for s in steps[1]] == [s["global_step"] for s in steps[0]] == list(range(1, 13))
    assert [s["loss"] for s in steps[1]] == pytest.approx([s["loss"] for s in steps[0]], abs=1e-6)
    logs = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (first, second)]
    assert [r["split"] for r in logs[0]] == [r["split"] for r in logs[1]] == ["val", "val", "val", "test"]
    for uninterrupted, resumed in zip(*logs):  # every record, the vMF diagnostics included; timings aside
        measured = [k for k in uninterrupted if k not in TIMINGS]
        assert sorted(k for k in resumed if k not in TIMINGS) == sorted(measured)
        assert {k: resumed[k] for k in measured} == pytest.approx({k: uninterrupted[k] for k in measured}, abs=1e-6)


@pytest.mark.slow
def test_a_run_stopped_by_stop_after_epoch_resumes_to_the_end(uninterrupted_run, digits_folder, tmp_path):
    """The saved config still says stop_after_epoch=1: the resumed run must not stop again after every epoch."""
    stopped = run_train_script(*_common(digits_folder, tmp_path), "run.name=resumed", "train.stop_after_epoch=1")
    assert "--resume" in stopped.stderr and stopped.returncode == 0
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    run_train_script("--resume", str(tmp_path / "resumed"))
    _assert_same_run(uninterrupted_run, tmp_path / "resumed")


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("num_processes", [1, 2])
def test_sigterm_mid_epoch_writes_a_checkpoint_and_resume_ends_where_an_uninterrupted_run_ends(
    num_processes, uninterrupted_run, digits_folder, tmp_path
):
    common = _common(digits_folder, tmp_path)
    through = uninterrupted_run
    if num_processes > 1:  # BatchNorm statistics differ from one process's: compare with two processes through
        _train(num_processes, *common, "run.name=through")
        through = tmp_path / "through"
    marker = tmp_path / "paused"
    worker_args = [str(HOOK_WORKER), "pause", "6", str(marker), *common, "run.name=stopped"]
    if num_processes == 1:  # the training process itself gets the signal (SLURM signals every process of a job)
        command = [sys.executable, *worker_args]
    else:  # the launcher gets it, as a cluster's scheduler sends it, and forwards it to both processes
        command = accelerate_launch_command(*map(Path, worker_args[:1]), *worker_args[1:], num_processes=num_processes)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_environment(), cwd=REPO
    )
    deadline = time.monotonic() + 240
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), process.communicate(timeout=60)[1][-4000:]
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=240)
    # The step in flight when the signal came (global step 7, epoch 1's third of four) completes, then the run stops.
    assert "Stopped at epoch 1, step 3 of 4 on SIGTERM" in stderr, stderr[-4000:]
    if num_processes == 1:
        assert process.returncode == 128 + signal.SIGTERM
    stopped = tmp_path / "stopped"
    index = json.loads((stopped / "checkpoints" / "index.json").read_text())
    assert index["last"] == "epoch_0001_step_000003" and index["best"] in ("epoch_0000", "epoch_0001")
    assert not (stopped / "metrics.json").exists()
    assert not list((stopped / "checkpoints").glob(".*.tmp")), "a temporary checkpoint folder was left behind"
    _train(num_processes, "--resume", str(stopped))
    _assert_same_run(through, stopped)


@pytest.mark.slow
def test_early_stopping_tests_the_best_checkpoint_once_patience_runs_out_and_resume_does_not_train_on(
    digits_folder, tmp_path
):
    """A network that cannot change (learning rates 0, BatchNorm frozen) scores the same every epoch, so epoch 0 stays
    the best: with patience 2 the run validates epochs 0, 1, 2, skips 3 and 4, and tests epoch 0's checkpoint."""
    frozen = ["optim.lr=0", "optim.loss_lr=0", "model.freeze_batchnorm=true", "train.epochs=5"]
    args = [*_common(digits_folder, tmp_path), "run.name=patient", *frozen, "train.early_stopping_patience=2"]
    finished = run_train_script(*args)
    assert "Early stopping before epoch 3" in finished.stdout
    run = tmp_path / "patient"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["split"], r["epoch"]) for r in records] == [("val", 0), ("val", 1), ("val", 2), ("test", 0)]
    assert len({r["mean_average_precision_at_r"] for r in records[:3]}) == 1  # the premise: nothing improved
    resumed = run_train_script("--resume", str(run))
    assert "Early stopping before epoch 3" in resumed.stdout
    assert [json.loads(line)["split"] for line in (run / "metrics.jsonl").read_text().splitlines()].count("val") == 3


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_without_touching_the_last_good_checkpoint(digits_folder, tmp_path):
    completed = run_script(
        HOOK_WORKER, "nan", "6", str(tmp_path / "unused"), *_common(digits_folder, tmp_path), expect_success=False
    )
    assert completed.returncode == 3, completed.stderr[-4000:]
    message = completed.stderr.strip().splitlines()[-1]
    assert "not finite" in message and "epoch 1, step 2 of 4 (global step 6)" in message, message
    assert "Lower optim.lr (now 0.05)" in message and "kappa" in message and "--resume" in message
    assert "Traceback" not in completed.stderr
    checkpoints = tmp_path / "digits" / "checkpoints"
    assert json.loads((checkpoints / "index.json").read_text()) == {"last": "epoch_0000", "best": "epoch_0000"}
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_0000", "index.json"]
    weights = load_file(checkpoints / "epoch_0000" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_an_error_in_training_keeps_its_traceback(digits_folder, tmp_path):
    """Only mistakes in the config or the data get a one-line message; a bug in training shows where it is."""
    completed = run_script(
        HOOK_WORKER,
        "valueerror",
        "1",
        str(tmp_path / "unused"),
        *_common(digits_folder, tmp_path),
        expect_success=False,
    )
    assert completed.returncode == 1
    assert "Traceback (most recent call last)" in completed.stderr and "a bug in the training step" in completed.stderr


@pytest.mark.slow
def test_resume_applies_new_learning_rates_and_refuses_another_optimizer(uninterrupted_run, digits_folder, tmp_path):
    common = [
        "--config",
        str(DIGITS_CONFIG),
        "--data-root",
        str(digits_folder),
        f"run.output_dir={tmp_path}",
        *SHORT_RUN,
    ]
    run_train_script(*common, "run.name=lr", "train.stop_after_epoch=2")
    run = tmp_path / "lr"
    refused = run_train_script("--resume", str(run), "optim.optimizer=adamw", expect_success=False)
    assert refused.returncode == 2 and "optim.optimizer cannot change on --resume (sgd -> adamw)" in refused.stderr
    resumed = run_train_script("--resume", str(run), "optim.lr=0.01")
    assert "Resumed with new optimizer settings: optim.lr 0.05 -> 0.01" in resumed.stdout
    steps = [
        [json.loads(line) for line in (r / "train_steps.jsonl").read_text().splitlines()]
        for r in (uninterrupted_run, run)
    ]
    for before, after in zip(*steps):
        scale = (
            0.2 if after["global_step"] > 8 else 1.0
        )  # 0.01 / 0.05 from the resumed epoch on, the cosine's position kept
        assert after["lr"] == pytest.approx([scale * lr for lr in before["lr"]], rel=1e-9, abs=1e-12)
    assert "lr: 0.01" in (run / "config.yaml").read_text()
