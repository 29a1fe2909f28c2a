"""Runs that failed or were damaged: up-front validation, re-running a folder without a checkpoint, resuming past a
lost or truncated checkpoint file, and one-line messages where the README promises one."""

import json
import shutil

import pytest

from tests.recipe_runs import DIGITS_CONFIG, run_train_script

ONE_STEP = ("train.epochs=1", "train.max_steps_per_epoch=2")


def _common(digits_folder, tmp_path) -> list:
    return ["--config", str(DIGITS_CONFIG), "--data-root", str(digits_folder), f"run.output_dir={tmp_path}"]


def _one_line_error(completed, code: int = 2) -> str:
    assert completed.returncode == code, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    return completed.stderr


def test_a_bad_setting_is_refused_before_a_run_folder_exists(digits_folder, tmp_path):
    completed = run_train_script(
        *_common(digits_folder, tmp_path), "run.name=bad", "train.batch_size=-4", expect_success=False
    )
    assert "train.batch_size must be an integer of at least 1, got -4" in _one_line_error(completed)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_a_folder_without_a_checkpoint_can_be_run_again_and_resumed(digits_folder, tmp_path):
    common = [*_common(digits_folder, tmp_path), *ONE_STEP]
    failed = tmp_path / "again"
    failed.mkdir()
    (failed / "config.yaml").write_text("run: {name: again}\n")  # what a run that died before its first checkpoint left
    (failed / "train_steps.jsonl").write_text(
        json.dumps({"epoch": 0, "step": 1, "global_step": 1, "loss": 9.0, "lr": [0.1]}) + "\n"
    )
    completed = run_train_script(*common, "run.name=again")
    assert "holds no checkpoint yet: training it from the beginning" in completed.stdout
    steps = [json.loads(line) for line in (failed / "train_steps.jsonl").read_text().splitlines()]
    assert [s["global_step"] for s in steps] == [1, 2] and steps[0]["loss"] != 9.0  # the old attempt's log is gone
    shutil.rmtree(failed / "checkpoints")
    (failed / "metrics.json").unlink()
    resumed = run_train_script("--resume", str(failed), *ONE_STEP)
    assert "training it from the beginning" in resumed.stdout and (failed / "metrics.json").is_file()


@pytest.mark.slow
def test_resuming_past_a_lost_checkpoint_index_logs_as_an_uninterrupted_run(uninterrupted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted_run, run)
    (run / "checkpoints" / "index.json").unlink()
    completed = run_train_script("--resume", str(run))  # a finished run: it tests its best checkpoint again
    assert "index.json is missing or damaged" in completed.stderr
    logs = [
        [json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()] for r in (uninterrupted_run, run)
    ]
    assert (
        [r["split"] for r in logs[1]] == [r["split"] for r in logs[0]] == ["val", "val", "val", "test"]
    )  # one test record
    assert logs[1][-1] == pytest.approx(logs[0][-1], abs=1e-6)


@pytest.mark.slow
def test_a_truncated_checkpoint_or_a_changed_architecture_is_one_line_that_names_it(uninterrupted_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted_run, run)
    changed = run_train_script("--resume", str(run), "model.embedding_size=16", expect_success=False)
    assert "does not fit this run's model or loss" in _one_line_error(changed)
    weights = run / "checkpoints" / "epoch_0002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    truncated = run_train_script("--resume", str(run), expect_success=False)
    assert f"No intact checkpoint in {run / 'checkpoints'}: {weights} is truncated or altered" in _one_line_error(
        truncated
    )


def test_an_output_folder_that_cannot_be_written_is_one_line(digits_folder, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    completed = run_train_script(*_common(digits_folder, blocker), "run.name=x", *ONE_STEP, expect_success=False)
    assert "cannot write the run folder" in _one_line_error(completed)


@pytest.mark.slow
def test_a_lost_checkpoint_index_never_costs_the_best_checkpoint(uninterrupted_run, digits_folder, tmp_path):
    """index.json lost mid-run: resuming rebuilds it from the checkpoints and the run's progress, so the next save
    prunes nothing it should keep and the test scores the best epoch, as the uninterrupted run did."""
    from tests.recipe_runs import SHORT_RUN

    stopped = run_train_script(
        *_common(digits_folder, tmp_path), *SHORT_RUN, "run.name=lost", "train.stop_after_epoch=2"
    )
    run = tmp_path / "lost"
    best = json.loads((run / "checkpoints" / "index.json").read_text())["best"]
    (run / "checkpoints" / "index.json").unlink()
    resumed = run_train_script("--resume", str(run))
    assert "was missing or damaged: rebuilt from the checkpoints" in resumed.stdout + stopped.stdout
    expected = json.loads((uninterrupted_run / "metrics.json").read_text())
    got = json.loads((run / "metrics.json").read_text())
    assert got["epoch"] == expected["epoch"] and got["mean_average_precision_at_r"] == pytest.approx(
        expected["mean_average_precision_at_r"], abs=1e-6
    )
    index = json.loads((run / "checkpoints" / "index.json").read_text())
    assert (run / "checkpoints" / index["best"]).is_dir() and index["best"] in (best, "epoch_0002")


@pytest.mark.slow
def test_a_log_line_torn_by_a_kill_is_dropped_on_resume(uninterrupted_run, digits_folder, tmp_path):
    from tests.recipe_runs import SHORT_RUN

    run_train_script(*_common(digits_folder, tmp_path), *SHORT_RUN, "run.name=torn", "train.stop_after_epoch=2")
    run = tmp_path / "torn"
    for name in ("train_steps.jsonl", "metrics.jsonl"):
        with open(run / name, "a") as f:
            f.write('{"epoch": 2, "step": 1, "glo')  # the kill came during this append
    resumed = run_train_script("--resume", str(run))
    assert "dropped its last line, cut off while it was written" in resumed.stderr
    for name in ("train_steps.jsonl", "metrics.jsonl"):
        got = [json.loads(line) for line in (run / name).read_text().splitlines()]
        expected = [json.loads(line) for line in (uninterrupted_run / name).read_text().splitlines()]
        assert [r.get("global_step", r.get("epoch")) for r in got] == [
            r.get("global_step", r.get("epoch")) for r in expected
        ]


@pytest.mark.multiprocess
def test_a_config_error_under_two_processes_is_printed_once(digits_folder, tmp_path):
    import subprocess

    from tests.multiprocess import accelerate_launch_command, child_environment
    from tests.recipe_runs import TRAIN_SCRIPT

    command = accelerate_launch_command(TRAIN_SCRIPT, *_common(digits_folder, tmp_path), "bogus.key=1", num_processes=2)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=child_environment())
    assert completed.returncode != 0
    assert completed.stderr.count("train.py: Unknown config key 'bogus.key'") == 1


def test_too_few_classes_for_a_batch_says_how_many_validation_took(digits_folder, tmp_path):
    completed = run_train_script(
        *_common(digits_folder, tmp_path), "run.name=few", "data.val_by=classes", "data.val_fraction=0.4",
        "train.batch_size=40", "train.samples_per_class=8", expect_success=False,
    )  # fmt: skip
    assert "other classes are held out for validation" in _one_line_error(completed)


@pytest.mark.slow
def test_resume_on_changed_images_names_what_changed(digits_folder, tmp_path):
    data = tmp_path / "digits"
    shutil.copytree(digits_folder, data)
    common = ["--config", str(DIGITS_CONFIG), "--data-root", str(data), f"run.output_dir={tmp_path}", *ONE_STEP]
    first = run_train_script(*common, "run.name=changed", "train.epochs=2", "train.stop_after_epoch=1")
    # Every long phase shows a progress bar that names it (on stderr, from the main process).
    for phase in ("vMF class means: a full pass over the training set", "epoch 0", "embedding the val split"):
        assert phase in first.stderr, phase
    for path in sorted((data / "0").iterdir())[:3]:
        path.unlink()
    gone = run_train_script("--resume", str(tmp_path / "changed"), expect_success=False)
    assert "the data changed since the run started (train:" in _one_line_error(gone)
    shutil.copytree(
        data / "9", data / "4x"
    )  # a new training class (classes 0-4 train after sorting: 0, 1, 2, 3, 4, 4x)
    added = run_train_script("--resume", str(tmp_path / "changed"), expect_success=False)
    assert "classes added: 4x" in _one_line_error(added) and "architecture" not in added.stderr


def test_resume_of_a_folder_without_a_run_says_so(tmp_path):
    missing = run_train_script("--resume", str(tmp_path / "nowhere"), expect_success=False)
    assert "the folder does not exist; pass a run folder" in _one_line_error(missing)
    (tmp_path / "empty").mkdir()
    empty = run_train_script("--resume", str(tmp_path / "empty"), expect_success=False)
    assert "holds no run (no config.yaml)" in _one_line_error(empty) and "Config file" not in empty.stderr
