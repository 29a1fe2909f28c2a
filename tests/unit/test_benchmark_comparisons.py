"""benchmarks/paired_seeds.py, time_to_accuracy.py and mean_step_cost.py: comparing settings seed by seed, in accuracy
and in time."""

import math

import pytest

from pml_vmf.files import write_rows
from tests.recipe_runs import REPO, load_script

paired_seeds = load_script(REPO / "benchmarks" / "paired_seeds.py")
mean_step_cost = load_script(REPO / "benchmarks" / "mean_step_cost.py")


@pytest.mark.parametrize(
    "config", ["emoji_pretrained", "emoji_pretrained_8ep", "glyphs_pretrained", "glyphs_pretrained_8ep"]
)
def test_each_mean_step_variant_measures_what_its_name_says_whatever_the_configs_schedule(config):
    from pml_vmf.training import load_config
    from pml_vmf.training.builders import check_config

    schedules = {}
    for variant in ("multi_similarity", "vmf_full_pass", "vmf_miner", "vmf_every_8"):
        loaded = load_config(REPO / "recipes" / "configs" / f"{config}.yaml", mean_step_cost.variant_overrides(variant))
        check_config(loaded)  # a shipped config's own full_pass_every once made vmf_full_pass an error
        schedules[variant] = (loaded.loss.name, loaded.loss.means.source, loaded.loss.means.full_pass_every)
    assert schedules["vmf_full_pass"] == ("vmf", "full_pass", None)
    assert schedules["vmf_miner"] == ("vmf", "miner", None) and schedules["vmf_every_8"] == ("vmf", "miner", 8)
    assert schedules["multi_similarity"][0] == "multi_similarity"
    vmf_mean_update = load_script(REPO / "benchmarks" / "vmf_mean_update.py")  # its twin: the schedules' accuracy
    for variant, overrides in vmf_mean_update.VARIANTS.items():
        loaded = load_config(REPO / "recipes" / "configs" / f"{config}.yaml", ["loss.name=vmf", *overrides])
        check_config(loaded)
        assert loaded.loss.means.full_pass_every is None, variant  # the config's own passes would blur the comparison


def test_the_interval_is_students_t_on_the_per_seed_differences():
    result = paired_seeds.paired_difference(
        {0: 3.0, 1: 5.0, 2: 7.0, 9: 1.0}, {0: 2.0, 1: 3.0, 2: 4.0}
    )  # seed 9: unpaired
    assert result.seeds == (0, 1, 2) and result.mean == 2.0  # differences 1, 2, 3: standard deviation 1
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert result.low == pytest.approx(2.0 - half) and result.high == pytest.approx(2.0 + half)
    assert result.verdict == "not resolved"  # [-0.48, 4.48] holds 0
    assert paired_seeds.paired_difference({0: 3.0, 1: 3.1, 2: 3.2}, {0: 2.0, 1: 2.0, 2: 2.0}).verdict == "A ahead"
    assert paired_seeds.paired_difference({0: 1.0, 1: 1.1}, {0: 2.0, 1: 2.0}).verdict == "B ahead"
    assert math.isnan(paired_seeds.paired_difference({0: 1.0}, {0: 2.0}).low)
    with pytest.raises(ValueError, match="share no seed"):
        paired_seeds.paired_difference({0: 1.0}, {1: 1.0})


def _rows(loss, values, phase="final"):
    return [
        {"name": f"{loss}-seed{s}", "phase": phase, "loss": loss, "seed": str(s), "acc": str(v)}
        for s, v in enumerate(values)
    ]


def test_the_cli_pairs_two_losses_of_one_csv_and_names_what_is_wrong(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    write_rows(
        csv,
        [*_rows("vmf", [0.91, 0.92, 0.93]), *_rows("softmax", [0.90, 0.90, 0.90]), *_rows("vmf", [0.5], phase="tune")],
    )
    assert paired_seeds.main([str(csv), "--loss-a", "vmf", "--loss-b", "softmax", "--metric", "acc"]) == 0
    out = capsys.readouterr().out
    assert (
        "| 2 | 0.9300 | 0.9000 | +0.0300 |" in out
        and "mean +0.0200, 95% interval [-0.0048, +0.0448]: not resolved" in out
    )
    for argv, message in (
        ([str(csv), "--metric", "acc"], "final runs of 2 losses"),
        ([str(csv), "--loss-a", "vmf", "--loss-b", "arcface", "--metric", "acc"], "No final run of loss 'arcface'"),
        ([str(csv), "--loss-a", "vmf", "--loss-b", "softmax"], "has no 'mean_average_precision_at_r'"),
        ([str(tmp_path / "missing.csv")], "does not exist"),
    ):
        assert paired_seeds.main(argv) == 2
        assert message in capsys.readouterr().err


def test_time_to_accuracy_races_every_setting_to_the_best_ones_validation_score_seed_by_seed(tmp_path, capsys):
    time_to_accuracy = load_script(REPO / "benchmarks" / "time_to_accuracy.py")
    # vMF: fast epochs, best 0.70 at 300 s (seed 0); multi-similarity: best 0.72 at 400 s, and 0.69 where vMF has 0.70
    curves = {"vmf": {0: [(0, 100, 0.60), (1, 200, 0.69), (2, 300, 0.70)], 1: [(0, 100, 0.65), (1, 200, 0.74)]},
              "multi_similarity": {0: [(0, 150, 0.55), (1, 400, 0.72)], 1: [(0, 150, 0.70), (1, 300, 0.71)]}}  # fmt: skip
    for loss, per_seed in curves.items():
        folder = tmp_path / loss
        finals = [{"name": f"{loss}-seed{s}", "phase": "final", "loss": loss, "seed": s, "mean_average_precision_at_r": 0.5,
                   "seconds_per_epoch": 100} for s in per_seed]  # fmt: skip
        write_rows(folder / "runs.csv", [{**finals[0], "name": "tune", "phase": "tune"}, *finals])
        write_rows(folder / "validation_curves.csv", [
            {"name": f"{loss}-seed{s}", "loss": loss, "seed": s, "epoch": e, "train_seconds": t, "metric": "mean_average_precision_at_r", "value": v}
            for s, curve in per_seed.items() for e, t, v in curve
        ])  # fmt: skip
    argv = [str(tmp_path / "vmf"), str(tmp_path / "multi_similarity"), "--out", str(tmp_path / "race.png")]
    assert time_to_accuracy.main([*argv, "--target", "multi_similarity"]) == 0
    out = capsys.readouterr().out
    assert "| vmf | 2 | 2, 1 | 0.500 ± 0.000 | 0.720 ± 0.028 | 250 | 100.0 |" in out
    assert "| vmf | never | 200 (2 ep) |" in out and "| multi_similarity | 400 (2 ep) | 300 (2 ep) |" in out
    assert (tmp_path / "race.png").stat().st_size > 0
    assert (
        time_to_accuracy.main([*argv, "--target", "arcface"]) == 2
        and "not one of the settings" in capsys.readouterr().err
    )
    assert (
        time_to_accuracy.main([str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
        and "no finished final runs" in capsys.readouterr().err
    )
