"""The ``loss.means`` section: the renamed keys of earlier versions, saved run configs, and one reader."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from pml_vmf.errors import ConfigError
from pml_vmf.training.config import RENAMED_KEYS, load_config, save_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("old, new", RENAMED_KEYS.items())
def test_a_renamed_key_is_one_line_naming_its_replacement(old, new):
    value = {"loss.mean_update": "full_pass", "loss.shard_means": "true", "loss.init_full_pass": "false"}.get(old, "2")
    with pytest.raises(ConfigError, match=re.escape(f"{old} is now {new}")) as error:
        load_config(None, [f"{old}={value}"])
    assert "\n" not in str(error.value) and "CHANGELOG.md" in str(error.value)


@pytest.mark.parametrize(
    "text, old",
    [
        ("loss:\n  mean_update: full_pass\n", "loss.mean_update"),
        ("loss:\n  miner_params:\n    vmf: {update_every: 10}\n", "loss.miner_params.vmf.update_every"),
        ("loss:\n  miner_params:\n    vmf: {seed_missing_means: false}\n", "loss.miner_params.vmf.seed_missing_means"),
        ("by_loss:\n  vmf: {loss.full_pass_every: 4}\n", "loss.full_pass_every"),
    ],
    ids=["section", "miner-params", "other-miner-param", "by-loss"],
)
def test_a_config_file_with_a_renamed_key_is_refused_with_its_name(tmp_path, text, old):
    (tmp_path / "old.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(old)):
        load_config(tmp_path / "old.yaml")


def test_a_run_folders_own_config_of_an_earlier_version_is_read_with_the_new_names(tmp_path):
    old = {
        "run": {"name": "old"},
        "loss": {
            "name": "vmf",
            "params": {},
            "miner_params": {"vmf": {"update_every": None, "momentum": 0.5}, "triplet": {"margin": 0.2}},
            "mean_update": "miner",
            "full_pass_every": 8,
            "init_full_pass": False,
            "mean_ema": None,
            "shard_means": True,
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    config = load_config(tmp_path / "config.yaml", saved=True)
    m = config.loss.means
    assert (m.source, m.publish_every, m.momentum, m.full_pass_every, m.init_full_pass, m.ema, m.shard) == (
        "miner", None, 0.5, 8, False, None, True,
    )  # fmt: skip
    assert config.loss.miner_params == {"triplet": {"margin": 0.2}}
    save_config(config, tmp_path / "again.yaml")  # written again in the new names, read again as a user's file
    assert load_config(tmp_path / "again.yaml") == config


def test_only_the_mean_schedule_reads_the_means_section():
    readers = sorted(
        path.relative_to(REPO).as_posix()
        for path in (REPO / "pml_vmf").rglob("*.py")
        if re.search(r"\b(c|config)\.loss\.means\b", path.read_text())  # a config's section, not VMFLoss.means
    )
    assert readers == ["pml_vmf/training/mean_schedule.py"]


def test_the_evaluator_never_writes_the_means():
    evaluator = (REPO / "pml_vmf" / "training" / "evaluator.py").read_text()
    assert not re.search(r"\.set_means\(|means\.copy_\(", evaluator)


def test_the_documented_means_section_is_the_defaults():
    recipes = (REPO / "docs" / "recipes.md").read_text()
    block = re.search(r"```yaml\n(loss:\n  means:\n.*?)```", recipes, flags=re.S).group(1)
    documented = yaml.safe_load(block)["loss"]["means"]
    assert documented == dataclasses.asdict(load_config(None).loss.means)


def test_the_stale_means_warning_is_set_through_the_loss_alone():
    from pml_vmf import GlobalMeanMiner, VMFLoss

    loss = VMFLoss(3, 4)
    assert loss.stale_means_warning_steps == 1000
    GlobalMeanMiner(loss, update_every=100)
    assert loss.stale_means_warning_steps == 2000  # 20 publication intervals
    loss.expect_mean_updates_every(None)
    assert loss.stale_means_warning_steps is None
    GlobalMeanMiner(loss, update_every=10)
    assert loss.stale_means_warning_steps is None  # off stays off
    writers = [
        path.name
        for path in (REPO / "pml_vmf").rglob("*.py")
        if re.search(r"\.stale_means_warning_steps\s*=[^=]", path.read_text()) and path.name != "vmf_loss.py"
    ]
    assert writers == []
