"""The open-set benchmark on recipe runs (benchmarks/open_set.py --runs): a run's model folder measured on a set with
held-out images of its classes and unseen classes."""

import csv
import shutil

import pytest
from open_set import measure_runs, summary  # benchmarks/, on pytest's pythonpath

from tests.recipe_runs import DIGITS_CONFIG, SHORT_RUN, run_train_script


@pytest.mark.slow
def test_a_recipe_runs_model_is_measured_on_its_known_classes_only(uninterrupted_run, digits_folder, tmp_path):
    # The wiring, not a measurement: calibration and known images are training images of the run here.
    root = tmp_path / "set"
    for label in "0123456789":
        images = sorted((digits_folder / label).iterdir())
        parts = ["train", "calibration", "known"] if label in "01234" else ["test"]
        for part in parts:
            (root / part / label).mkdir(parents=True)
            for image in images[:: 1 if part in ("train", "test") else 10]:
                shutil.copy(image, root / part / label / image.name)
    (root / "train" / "extra").mkdir()  # a class the run never trained on (a held-out validation class): left out
    shutil.copy(sorted((digits_folder / "9").iterdir())[0], root / "train" / "extra" / "a.png")
    proxies = tmp_path / "runs" / "proxies"
    run_train_script("--config", str(DIGITS_CONFIG), "--data-root", str(digits_folder), *SHORT_RUN,
                     f"run.output_dir={proxies.parent}", "run.name=proxies", "loss.name=normalized_softmax")  # fmt: skip
    out = tmp_path / "rows.csv"
    measure_runs([uninterrupted_run, proxies], root, "digits_folder", 5, out)
    rows = list(csv.DictReader(out.open()))
    assert {r["loss"] for r in rows} == {"vmf", "normalized_softmax"} and {r["data"] for r in rows} == {"digits_folder"}
    for loss in ("vmf", "normalized_softmax"):  # the proxies of the best checkpoint give msp, energy and logits
        scores = {r["name"] for r in rows if r["kind"] == "score" and r["loss"] == loss}
        assert scores == {"vmf_log_likelihood", "vmf_max_posterior", "max_cosine", "knn", "msp", "energy"}
        posteriors = {r["name"] for r in rows if r["kind"] == "posterior" and r["loss"] == loss}
        assert posteriors == {"vmf_per_class", "vmf_shared", "logits"}
    assert all(0 <= float(r["auroc"]) <= 1 for r in rows if r["kind"] == "score")
    # the class in train/ the run did not train on is the validation's unknown, against the calibration images
    assert {r["name"] for r in rows if r["kind"] == "validation_score" and r["loss"] == "vmf"} == scores
    assert "| vmf | " in summary(out)
