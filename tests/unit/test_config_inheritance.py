"""Configs that name a ``base`` config: the merge, its errors, and the shipped configs' resolved values."""

import json
from pathlib import Path

import pytest

from pml_vmf.errors import ConfigError
from pml_vmf.training.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "recipes" / "configs").glob("*.yaml"))
# Every shipped config resolved, recorded when the pretrained configs were written out in full. A change to a base
# config changes its children: update this file only for a change meant for all of them.
RESOLVED = json.loads((Path(__file__).parent / "data" / "resolved_configs.json").read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_resolves_to_its_recorded_values_key_by_key(path):
    resolved = json.loads(json.dumps(load_config(path).to_dict()))
    expected = RESOLVED[path.name]
    for section in sorted(set(expected) | set(resolved)):
        assert resolved.get(section) == expected.get(section), f"{path.name}: section {section} changed"


def test_the_pretrained_configs_inherit_and_state_only_what_differs():
    for name in ("emoji_pretrained.yaml", "glyphs_pretrained.yaml", "glyphs_pretrained_8ep.yaml"):
        text = (REPO / "recipes" / "configs" / name).read_text()
        assert "\nbase: " in text
        assert len([line for line in text.splitlines() if line and not line.startswith("#")]) <= 20, name


def test_a_child_overrides_key_by_key_and_keeps_what_it_leaves_out(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "run: {name: parent}\nloss:\n  name: vmf\n  params:\n    vmf: {kappa: 8.0, margin: 0.1}\ntrain: {epochs: 8}\n"
    )
    (tmp_path / "child").mkdir()
    (tmp_path / "child" / "c.yaml").write_text("base: ../base.yaml\nloss:\n  params:\n    vmf: {kappa: 16.0}\n")
    config = load_config(tmp_path / "child" / "c.yaml", ["train.epochs=3"])
    assert config.loss.params["vmf"] == {"kappa": 16.0, "margin": 0.1}
    assert config.run.name == "parent" and config.train.epochs == 3


def test_bases_chain_and_the_nearest_file_wins(tmp_path):
    (tmp_path / "a.yaml").write_text("train: {epochs: 1, batch_size: 16}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain: {epochs: 2}\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\nrun: {name: c}\n")
    config = load_config(tmp_path / "c.yaml")
    assert (config.train.epochs, config.train.batch_size, config.run.name) == (2, 16, "c")


@pytest.mark.parametrize(
    "files, match",
    [
        ({"c.yaml": "base: missing.yaml\n"}, r"base 'missing.yaml' does not exist"),
        ({"c.yaml": "base: d.yaml\n", "d.yaml": "base: c.yaml\n"}, r"inherits from itself"),
        ({"c.yaml": "base: [a.yaml]\n"}, r"base names one config file"),
        ({"c.yaml": "base: a.yaml\n", "a.yaml": "trian: {epochs: 1}\n"}, r"trian"),
    ],
    ids=["missing", "circle", "not-a-path", "base-key-misspelt"],
)
def test_a_bad_base_is_one_line_that_names_the_file(tmp_path, files, match):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match) as error:
        load_config(tmp_path / "c.yaml")
    assert "\n" not in str(error.value)
