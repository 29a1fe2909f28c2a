"""Generated odd values through every JSON and YAML file the project reads: each is accepted or refused with one
line (a ValueError, FileNotFoundError or their subclasses: ConfigError, DamagedFileError), never another exception."""

import json
import math

import pytest
import torch
import yaml

from pml_vmf import load_embedder
from pml_vmf.inference import EmbeddingIndex
from pml_vmf.training.builders import check_config
from pml_vmf.training.config import RecipeConfig, _valid_keys, load_config
from tests.unit.test_file_trust import _embedder, _keeper_run

ODD_VALUES = [
    None,
    True,
    False,
    -1,
    0,
    7,
    -2.5,
    1e308,
    math.nan,
    math.inf,
    "",
    "x",
    "1e-1",
    [],
    [0],
    [1, 2, 3, 4],
    ["a"],
    {},
    {"a": 1},
    10**20,
]
EXPECTED = (ValueError, FileNotFoundError)


def _one_line(error: BaseException) -> None:
    assert isinstance(error, EXPECTED), f"{type(error).__name__}: {error}"
    assert len(str(error).strip().splitlines()) == 1, str(error)


def _json_safe(value):
    return value if not (isinstance(value, float) and not math.isfinite(value)) else str(value)


@pytest.mark.parametrize(
    "key", [k for k in _valid_keys(RecipeConfig()) if k not in ("by_loss", "loss.params", "loss.miner_params")]
)
def test_config_keys(tmp_path, key):
    *sections, name = key.split(".")
    for value in ODD_VALUES:
        tree = {name: _json_safe(value)}
        for section in reversed(sections):
            tree = {section: tree}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(tree))
        try:
            check_config(load_config(path, []))
        except Exception as error:  # noqa: BLE001 - the assertion is on its type
            _one_line(error)


def _edit_json(path, key, value):
    data = json.loads(path.read_text())
    if key is None:
        data = value
    else:
        data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("key", ["backbone", "embedding_size", "eval_transform", "freeze_batchnorm", "global_pool",
                                 "feature_layernorm", "class_names", "kappa", "loss", "open_set", "format_version", "extra",
                                 None])  # fmt: skip
def test_embedder_json(tmp_path, key):
    for i, value in enumerate(ODD_VALUES):
        folder = _embedder().save(tmp_path / f"model{i}")
        _edit_json(folder / "embedder.json", key, value)
        try:
            load_embedder(folder)
        except Exception as error:  # noqa: BLE001
            _one_line(error)


@pytest.mark.parametrize("key", ["kappas", "temperature", "score", "threshold", "tpr", "known_images"])
def test_embedder_json_open_set(tmp_path, key):
    calibrated = {"kappas": "shared", "temperature": 1.5, "score": "max_cosine", "threshold": 0.2, "tpr": 0.95,
                  "known_images": 10}  # fmt: skip
    for i, value in enumerate(ODD_VALUES):
        folder = _embedder().save(tmp_path / f"model{i}")
        _edit_json(folder / "embedder.json", "open_set", {**calibrated, key: _json_safe(value)})
        try:
            load_embedder(folder).classify(torch.randn(2, 8))
        except Exception as error:  # noqa: BLE001
            _one_line(error)


@pytest.mark.parametrize("file, key", [("index.json", k) for k in ("format_version", "dim", "kind", "size", "nlist", "nprobe", "hnsw_m",
                                       "ef_search", "model", "model_fingerprint", "files", None)] + [("paths.json", None)])  # fmt: skip
def test_index_files(tmp_path, file, key):
    for i, value in enumerate(ODD_VALUES):
        folder = EmbeddingIndex(8).add(torch.randn(4, 8), ["a", "b", "c", "d"]).save(tmp_path / f"index{i}")
        _edit_json(folder / file, key, value)
        try:
            EmbeddingIndex.load(folder)
        except Exception as error:  # noqa: BLE001
            _one_line(error)


def test_checkpoint_bookkeeping(tmp_path):
    folder = tmp_path / "checkpoints"
    keeper, model, progress = _keeper_run(folder)
    keeper.save("epoch_0000", is_best=True)
    manifest = folder / "epoch_0000" / "manifest.json"
    original = manifest.read_text()
    for value in ODD_VALUES:
        for edit in ({"model.safetensors": value}, value):
            manifest.write_text(
                json.dumps(
                    _json_safe(edit) if not isinstance(edit, dict) else {k: _json_safe(v) for k, v in edit.items()}
                )
            )
            problem = keeper.damage(folder / "epoch_0000")
            assert problem is None or isinstance(problem, str)
            try:
                keeper.load("last")
            except Exception as error:  # noqa: BLE001
                _one_line(error)
        manifest.write_text(original)
        for edit in ({"last": value, "best": "epoch_0000"}, {"last": "epoch_0000", "best": value}, value):
            (folder / "index.json").write_text(
                json.dumps(
                    _json_safe(edit) if not isinstance(edit, dict) else {k: _json_safe(v) for k, v in edit.items()}
                )
            )
            assert isinstance(keeper.index(), dict)
            assert keeper.load("last") == folder / "epoch_0000"
