"""recipes/train.py end to end on real data (UCI digits as an image folder): metrics, resume, several processes."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pml_vmf.training.run_folder import RunFolder
from tests.multiprocess import accelerate_launch
from tests.recipe_runs import DIGITS_CONFIG, REPO, TRAIN_SCRIPT, run_train_script

WORKER = REPO / "tests" / "workers" / "recipe_run.py"

# vMF's options together: a learned kappa (gradients averaged over processes), the cosine margin, the per-step EMA
# of the means (over the global batch), ProxyNCA++'s head, and the cheap mean step (the miner's epoch sums with a
# full pass after the epoch, read from decoded-image caches, with channels-last weights).
VMF_OPTIONS = (
    "loss.params.vmf.learn_kappa=true", "loss.params.vmf.margin=0.1", "loss.means.ema=0.9",
    "model.global_pool=avgmax", "model.feature_layernorm=true",
    "loss.means.source=miner", "loss.means.full_pass_every=1", "data.cache_eval_images=true", "run.channels_last=true",
)  # fmt: skip


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.multiprocess
def test_train_script_under_accelerate_launch_beats_the_untrained_backbone(digits_folder, tmp_path, report):
    common = ["--config", str(DIGITS_CONFIG), "--data-root", str(digits_folder), f"run.output_dir={tmp_path}"]
    run_train_script(*common, "run.name=untrained", "train.epochs=0")
    # Two processes with 2 x 50-image batches: the 896 test images leave accelerate a last batch to pad.
    output = accelerate_launch(TRAIN_SCRIPT, *common, "run.name=trained", "train.epochs=2", "eval.batch_size=50")
    untrained, trained = _metrics(tmp_path / "untrained"), _metrics(tmp_path / "trained")
    report(
        f"digits recipe, test_resnet, 2 epochs on 2 processes: MAP@R {trained['mean_average_precision_at_r']:.3f} "
        f"(untrained {untrained['mean_average_precision_at_r']:.3f}), Recall@1 {trained['recall_at_1']:.3f}"
    )
    assert trained["mean_average_precision_at_r"] > untrained["mean_average_precision_at_r"]
    num_test_images = sum(1 for label in "56789" for _ in (digits_folder / label).iterdir())
    assert trained["num_query"] == trained["num_unique_query"] == num_test_images  # every test image exactly once
    for key in ("precision_at_1", "r_precision", "recall_at_1", "recall_at_2", "recall_at_4"):
        assert 0.0 <= trained[key] <= 1.0
    run = tmp_path / "trained"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "model/embedder.json",
        "model/model.safetensors",
        "plots/training_curves.png",
        "plots/retrieval_grid.png",
    ):
        assert (run / name).is_file(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in lines] == ["val", "val", "test"]
    assert "Test metrics of the best checkpoint" in output


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize(
    "loss_name, options",
    [("vmf", ()), ("contrastive", ()), ("normalized_softmax", ()), ("vmf", VMF_OPTIONS)],
    ids=["vmf", "contrastive", "normalized_softmax", "vmf-options"],
)  # fmt: skip
def test_two_processes_train_the_same_parameters_as_one(loss_name, options, digits_folder, tmp_path):
    overrides = [
        f"data.root={digits_folder}", f"loss.name={loss_name}", "train.max_steps_per_epoch=4", "train.epochs=1",
        "model.freeze_batchnorm=true",
        "data.val_fraction=0.0", "run.name=run", *options,
    ]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    accelerate_launch(WORKER, str(DIGITS_CONFIG), str(one), *overrides, num_processes=1)
    accelerate_launch(WORKER, str(DIGITS_CONFIG), str(two), *overrides, num_processes=2)
    single = torch.load(one / "rank0.pt", weights_only=False)
    ranks = [torch.load(two / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["world_size"] == 2
    moved = max((single["model"][k] - single["initial"][k]).abs().max().item() for k in single["initial"])
    assert moved > 1e-3, "training did not change the parameters: the comparison would be vacuous"
    for key, value in single["model"].items():
        for rank in ranks:
            torch.testing.assert_close(rank["model"][key], value, atol=1e-4, rtol=0, msg=f"{loss_name} {key}")
    for key, value in single["loss"].items():  # vMF means, or the proxies
        for rank in ranks:
            torch.testing.assert_close(rank["loss"][key], value, atol=1e-4, rtol=0, msg=f"{loss_name} {key}")
    torch.testing.assert_close(ranks[0]["loss"], ranks[1]["loss"], atol=0, rtol=0)
    if options:  # the learned kappa moved from its start (16), identically on every process
        assert abs(single["loss"]["log_kappa"].exp().item() - 16.0) > 1e-3
    assert ranks[0]["metrics"]["num_query"] == ranks[0]["metrics"]["num_unique_query"] == single["metrics"]["num_query"]


def test_unknown_config_key_is_an_error_that_lists_the_valid_ones(tmp_path):
    completed = run_train_script("--config", str(DIGITS_CONFIG), "train.epohcs=3", expect_success=False)
    assert completed.returncode == 2
    assert "Unknown config key 'train.epohcs'" in completed.stderr and "train.epochs" in completed.stderr


def test_missing_dataset_folder_says_what_is_missing(tmp_path):
    completed = run_train_script(
        "--config", str(REPO / "recipes" / "configs" / "cub200.yaml"), "--data-root", str(tmp_path / "nowhere"),
        f"run.output_dir={tmp_path}", expect_success=False,
    )  # fmt: skip
    assert completed.returncode == 2
    assert "CUB-200-2011 folder" in completed.stderr and "does not exist" in completed.stderr


def test_a_new_run_never_overwrites_one_that_holds_a_checkpoint(digits_folder, tmp_path):
    (tmp_path / "digits" / "checkpoints" / "epoch_0000").mkdir(parents=True)
    (tmp_path / "digits" / "config.yaml").write_text("run: {name: digits}\n")
    completed = run_train_script(
        "--config",
        str(DIGITS_CONFIG),
        "--data-root",
        str(digits_folder),
        f"run.output_dir={tmp_path}",
        expect_success=False,
    )
    assert completed.returncode == 2 and "already holds a run" in completed.stderr
    assert (tmp_path / "digits" / "config.yaml").read_text() == "run: {name: digits}\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    "loss_name, backbone", [("vmf", "test_resnet"), ("triplet", "test_resnet"), ("softmax", "small_cnn")]
)
def test_closed_set_runs_report_classification_accuracy(loss_name, backbone, digits_closed_set_folder, tmp_path):
    # Losses with a classifier pick their checkpoint by its validation accuracy, as a classification benchmark does.
    select_by = "mean_average_precision_at_r" if loss_name == "triplet" else "classifier_accuracy"
    run_train_script(
        "--config", str(DIGITS_CONFIG), "--data-root", str(digits_closed_set_folder), f"run.output_dir={tmp_path}", f"run.name={loss_name}",
        "data.protocol=closed_set", f"loss.name={loss_name}", "train.epochs=2", f"model.backbone={backbone}", f"eval.select_by={select_by}",
    )  # fmt: skip
    metrics = _metrics(tmp_path / loss_name)
    validation = [r for r in RunFolder(tmp_path / loss_name).read_metrics_log() if r.get("split") == "val"]
    assert len(validation) == 2 and all(0 <= r.get("classifier_accuracy", 0) <= 1 for r in validation)
    assert ("classifier_accuracy" in validation[0]) == (loss_name != "triplet")
    scores = [r[select_by] for r in validation]
    assert metrics["epoch"] == scores.index(max(scores)), (select_by, scores)  # the first best epoch is tested
    # 10 classes: chance is 0.1; vMF uses its own means, other losses the means of a full pass.
    assert metrics["nearest_mean_accuracy"] > 0.5, metrics
    if loss_name == "triplet":  # no class weights: only the nearest mean of a full pass classifies
        assert "classifier_accuracy" not in metrics
    else:  # vMF: its means; softmax: its linear layer
        assert metrics["classifier_accuracy"] > 0.5, metrics
    if loss_name == "vmf":  # scored with the means of a mean step on the tested checkpoint, as the method ends
        assert metrics["classifier_accuracy"] == pytest.approx(metrics["nearest_mean_accuracy"])
        assert 0.1 < metrics["classifier_accuracy_stale_means"] <= 1  # the means the checkpoint held: a diagnostic
        means = load_file(tmp_path / loss_name / "model" / "class_means.safetensors")["class_means"]
        assert means.norm(dim=1).sub(1).abs().max() < 1e-5  # the exported model carries the full-pass means
    else:
        assert "classifier_accuracy_stale_means" not in metrics


@pytest.mark.slow
def test_a_vmf_head_with_sampled_negative_classes_trains_in_the_recipe(digits_folder, tmp_path):
    common = [
        "--config",
        str(DIGITS_CONFIG),
        "--data-root",
        str(digits_folder),
        f"run.output_dir={tmp_path}",
        "data.val_fraction=0.0",
    ]
    run_train_script(
        *common, "run.name=sampled", "train.epochs=1", "train.max_steps_per_epoch=3", "loss.params.vmf.sample_rate=0.5"
    )
    metrics = _metrics(tmp_path / "sampled")
    assert 0.0 < metrics["mean_average_precision_at_r"] <= 1.0
    saved = load_file(str(tmp_path / "sampled" / "model" / "class_means.safetensors"))["class_means"]
    assert saved.ne(0).any(dim=1).all(), "every training class has a mean in the saved model"
