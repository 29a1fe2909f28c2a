"""Files a user may have downloaded are hostile: no load runs code from them, and nothing written is lost or mixed.

Models, exports, indexes and checkpoints: a crafted pickle never runs (a marker file it would create stays absent)
and gets an error that names it; indexes and exports appear whole or not at all; damaged files are named.
"""

import json
import os
import shutil
import stat
import warnings

import pytest
import torch
from accelerate import Accelerator

from pml_vmf import load_embedder
from pml_vmf.errors import DamagedFileError, UnsafeFileError
from pml_vmf.inference import Embedder, EmbedderConfig, EmbeddingIndex, ModelNotFoundError
from pml_vmf.inference.export import ExportCheckError, export_embedder
from pml_vmf.models import create_embedding_model
from pml_vmf.training.checkpoints import CheckpointKeeper
from tests.crafted_files import craft_pickle
from tests.tiny_model import TRANSFORM


def _embedder(width: int = 8, seed: int = 0) -> Embedder:
    torch.manual_seed(seed)
    means = torch.nn.functional.normalize(torch.randn(3, width), dim=1)
    return Embedder(
        create_embedding_model("test_resnet", width), EmbedderConfig("test_resnet", width, TRANSFORM, kappa=8.0), means
    )


def test_the_crafted_file_would_run_code_if_unpickled(tmp_path):
    """The premise of every test below: a plain unpickling of the crafted file creates the marker."""
    marker = tmp_path / "pwned"
    torch.load(craft_pickle(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_a_pickled_model_is_refused_by_name_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    crafted = craft_pickle(tmp_path / "run" / "embedding_model.pt", marker)
    with pytest.raises(UnsafeFileError, match=f"{crafted}.*does not load models from pickles"):
        load_embedder(crafted)
    with pytest.raises(ModelNotFoundError, match="expected a model folder"):
        load_embedder(crafted.parent)  # a run folder with only the pickle: no model folder
    assert not marker.exists()


def _keeper_run(folder):
    """A CheckpointKeeper over a small model, optimizer and a shared object, in this process."""
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    progress = torch.nn.Module()
    progress.register_buffer("epoch", torch.zeros(()))
    model, optimizer = accelerator.prepare(model, optimizer)
    return CheckpointKeeper(accelerator, folder, shared={"progress": progress}), model, progress


def test_a_damaged_last_checkpoint_is_named_and_the_intact_one_is_loaded(tmp_path):
    keeper, model, progress = _keeper_run(tmp_path / "checkpoints")
    for epoch in range(2):
        progress.epoch.fill_(epoch)
        with torch.no_grad():
            model.weight.fill_(epoch)
        keeper.save(f"epoch_{epoch:04d}", is_best=epoch == 0)  # best: epoch 0, last: epoch 1; both kept
    assert keeper.damage(tmp_path / "checkpoints" / "epoch_0001") is None
    damaged = tmp_path / "checkpoints" / "epoch_0001" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.warns(UserWarning, match=f"{damaged} is truncated or altered.*loading .*epoch_0000 instead"):
        loaded = keeper.load("last")
    assert loaded.name == "epoch_0000" and progress.epoch.item() == 0 and model.weight.eq(0).all()
    (tmp_path / "checkpoints" / "epoch_0000" / "progress.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(
        DamagedFileError, match="No intact checkpoint.*model.safetensors is truncated.*progress.pt is truncated"
    ):
        keeper.load("last")


def test_a_lost_checkpoint_index_is_named_and_the_newest_intact_checkpoint_is_loaded(tmp_path):
    keeper, model, progress = _keeper_run(tmp_path / "checkpoints")
    for epoch in range(2):
        progress.epoch.fill_(epoch)
        keeper.save(f"epoch_{epoch:04d}", is_best=True)
    keeper.save("epoch_0002_step_000003", is_best=False)  # mid-epoch, after epoch 1's end: the newest
    progress.epoch.fill_(-1)
    (tmp_path / "checkpoints" / "index.json").unlink()
    with pytest.warns(UserWarning, match="index.json is missing or damaged"):
        assert keeper.load("last").name == "epoch_0002_step_000003"
    assert progress.epoch.item() == 1
    shutil.rmtree(tmp_path / "checkpoints")
    with pytest.raises(FileNotFoundError, match="has not finished an epoch yet"):
        keeper.load("last")


def test_an_index_is_written_whole_or_not_at_all_and_never_replaced_unasked(tmp_path, monkeypatch):
    import faiss

    folder = tmp_path / "index"
    first = EmbeddingIndex(8).add(torch.randn(5, 8), [f"a{i}" for i in range(5)])
    first.save(folder)
    with pytest.raises(FileExistsError, match="already exists and was left as it is.*--overwrite"):
        EmbeddingIndex(8).add(torch.randn(3, 8)).save(folder)
    assert EmbeddingIndex.load(folder).paths == first.paths

    def killed_mid_write(index, path):  # as a kill between index.faiss and paths.json would
        raise KeyboardInterrupt

    monkeypatch.setattr(faiss, "write_index", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingIndex(8).add(torch.randn(3, 8)).save(folder, overwrite=True)
    monkeypatch.undo()
    assert EmbeddingIndex.load(folder).paths == first.paths  # the old index, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no temporary folder left behind
    EmbeddingIndex(8).add(torch.randn(3, 8), ["b0", "b1", "b2"]).save(folder, overwrite=True)
    assert EmbeddingIndex.load(folder).paths == ["b0", "b1", "b2"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "index"
    ]


def test_a_damaged_or_mixed_index_is_named(tmp_path):
    def fresh(name, legacy=False):
        folder = EmbeddingIndex(8).add(torch.randn(6, 8), [f"p{i}" for i in range(6)]).save(tmp_path / name)
        if legacy:  # an index written before index.json recorded its files' sizes and checksums
            meta = json.loads((folder / "index.json").read_text())
            del meta["files"]
            (folder / "index.json").write_text(json.dumps(meta))
        return folder

    truncated = fresh("truncated") / "index.faiss"
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(DamagedFileError, match=f"{truncated} is truncated or altered"):
        EmbeddingIndex.load(truncated.parent)
    flipped = fresh("flipped") / "index.faiss"
    data = bytearray(flipped.read_bytes())
    data[-5] ^= 0xFF  # one byte of a stored vector: faiss would read it without a word
    flipped.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match=f"{flipped} is altered"):
        EmbeddingIndex.load(flipped.parent)
    truncated = fresh("legacy_truncated", legacy=True) / "index.faiss"
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(DamagedFileError, match=f"{truncated} cannot be read by faiss"):
        EmbeddingIndex.load(truncated.parent)
    paths = fresh("paths", legacy=True) / "paths.json"
    paths.write_text(paths.read_text()[:10])
    with pytest.raises(DamagedFileError, match=f"{paths} is not valid JSON"):
        EmbeddingIndex.load(paths.parent)
    mixed = fresh("mixed", legacy=True)
    (mixed / "paths.json").write_text(json.dumps(["x"] * 5))  # another index's paths
    with pytest.raises(DamagedFileError, match="index.faiss vectors 6, paths.json entries 5, index.json size 6"):
        EmbeddingIndex.load(mixed)
    newer = fresh("newer")
    meta = json.loads((newer / "index.json").read_text())
    (newer / "index.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99; this pml-vmf reads up to 1"):
        EmbeddingIndex.load(newer)


@pytest.mark.parametrize(
    "key, value",
    [("format_version", "1"), ("model", 3), ("model_fingerprint", 7), ("dim", -2), ("size", "6"), ("files", [])],
)
def test_odd_index_json_values_are_one_error_that_names_the_key(tmp_path, key, value):
    folder = EmbeddingIndex(8).add(torch.randn(6, 8), [f"p{i}" for i in range(6)]).save(tmp_path / "index")
    meta = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**meta, key: value}))
    with pytest.raises(DamagedFileError, match=f"index.json: {key} must be"):
        EmbeddingIndex.load(folder)


def test_paths_json_linked_to_an_endless_file_is_read_no_further_than_its_recorded_size(tmp_path):
    folder = EmbeddingIndex(8).add(torch.randn(6, 8), [f"p{i}" for i in range(6)]).save(tmp_path / "index")
    meta = json.loads((folder / "index.json").read_text())
    del meta["files"]  # even without a recorded size (an older index), the read is bounded
    (folder / "index.json").write_text(json.dumps(meta))
    (folder / "paths.json").unlink()
    (folder / "paths.json").symlink_to("/dev/zero")
    with pytest.raises(DamagedFileError, match="paths.json is larger than"):
        EmbeddingIndex.load(folder)


def test_an_export_is_checked_before_it_appears_and_never_mixed_with_an_older_one(tmp_path, monkeypatch):
    from pml_vmf.inference import export as export_module

    folder, batch = tmp_path / "export", torch.randn(3, 3, 32, 32)
    export_embedder(_embedder(), folder, ["safetensors", "torchscript"], batch)
    with pytest.raises(FileExistsError, match="already exists"):
        export_embedder(_embedder(seed=1), folder, ["safetensors"], batch)
    export_embedder(_embedder(seed=1), folder, ["safetensors"], batch, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["class_means.safetensors", "embedder.json", "model.safetensors"]
    assert load_embedder(folder).fingerprint == _embedder(seed=1).fingerprint != _embedder(seed=0).fingerprint
    for file in folder.iterdir():  # as readable as any other output, not 0600
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~_umask(), file

    def onnx_fails(*args):
        raise RuntimeError("the ONNX exporter failed")

    monkeypatch.setattr(export_module, "_export_onnx", onnx_fails)
    with pytest.raises(RuntimeError, match="ONNX exporter failed"):
        export_embedder(_embedder(seed=2), tmp_path / "new", ["safetensors", "onnx"], batch)
    with pytest.raises(ExportCheckError, match="nothing was written"):
        export_embedder(_embedder(seed=2), tmp_path / "new", ["safetensors"], batch, atol=-1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no partial folder, no temporary one


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_model_folder_from_a_newer_version_loads_and_a_damaged_one_is_named(tmp_path):
    folder = _embedder().save(tmp_path / "model")
    config = json.loads((folder / "embedder.json").read_text())
    (folder / "embedder.json").write_text(json.dumps({**config, "added_in_a_later_version": 1}))
    with pytest.warns(UserWarning, match="ignoring keys this pml-vmf does not know: added_in_a_later_version"):
        assert load_embedder(folder).fingerprint == _embedder().fingerprint
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(DamagedFileError, match=f"{weights} cannot be read as safetensors"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_embedder(folder)
    (folder / "embedder.json").write_text("{not json")
    with pytest.raises(DamagedFileError, match="embedder.json is not valid JSON"):
        load_embedder(folder)


@pytest.mark.parametrize("damage", ["lost", "truncated", "names a folder that is gone"])
def test_a_lost_checkpoint_index_never_prunes_the_best_checkpoint(tmp_path, damage):
    """The next save after index.json was lost keeps the best epoch: by the run's progress when it is given, and
    by pruning nothing when it is not."""
    folder = tmp_path / "checkpoints"
    keeper, model, progress = _keeper_run(folder)
    for epoch in range(2):
        keeper.save(f"epoch_{epoch:04d}", is_best=epoch == 0)  # best: epoch 0, last: epoch 1
    index = folder / "index.json"
    if damage == "lost":
        index.unlink()
    elif damage == "truncated":
        index.write_text(index.read_text()[:9])
    else:
        index.write_text('{"last": "epoch_0001", "best": "epoch_0007"}')
    keeper.save("epoch_0002", is_best=False, best_name="epoch_0000")
    assert json.loads(index.read_text()) == {"last": "epoch_0002", "best": "epoch_0000"}
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["epoch_0000", "epoch_0002"]
    index.unlink()
    keeper.save("epoch_0003", is_best=False)  # no hint: nothing is pruned
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["epoch_0000", "epoch_0002", "epoch_0003"]
    assert keeper.repair_index(folder / "epoch_0003", "epoch_0000") is not None
    assert json.loads(index.read_text()) == {"last": "epoch_0003", "best": "epoch_0000"}


def test_checkpoints_outside_the_run_folder_are_never_loaded_or_pruned(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    keeper, model, progress = _keeper_run(folder)
    keeper.save("epoch_0000", is_best=True)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(folder / "epoch_0000", elsewhere / "epoch_0005")
    (folder / "index.json").write_text(json.dumps({"last": str(elsewhere / "epoch_0005"), "best": "epoch_0000"}))
    with pytest.warns(UserWarning, match="missing or damaged"):
        assert keeper.load("last") == folder / "epoch_0000"  # the absolute path is not followed
    (folder / "epoch_0007").symlink_to(elsewhere / "epoch_0005", target_is_directory=True)
    (folder / "index.json").write_text(json.dumps({"last": "epoch_0007", "best": "epoch_0000"}))
    with pytest.warns(UserWarning, match="is a link, not a checkpoint folder of this run"):
        assert keeper.load("last") == folder / "epoch_0000"
    keeper.save("epoch_0008", is_best=True)  # prunes epoch_0000; the link is left, and what it points to
    assert (elsewhere / "epoch_0005" / "manifest.json").is_file() and (folder / "epoch_0007").is_symlink()


@pytest.mark.parametrize(
    "edit, named",
    [
        ({"embedding_size": -3}, "embedding_size must be"),
        ({"embedding_size": "8"}, "embedding_size must be"),
        ({"backbone": 5}, "backbone must be"),
        ({"format_version": "1"}, "format_version must be an integer"),
        ({"kappa": -1}, "kappa must be a positive number"),
        ({"kappa": float("nan")}, "kappa must be a positive number"),
        ({"class_names": "abc"}, "class_names must be a list of strings"),
        ({"eval_transform": {**TRANSFORM, "input_size": [3, 100000, 100000]}}, "input_size must be"),
        ({"eval_transform": {**TRANSFORM, "interpolation": "magic"}}, "interpolation must be one of"),
        ({"eval_transform": {k: v for k, v in TRANSFORM.items() if k != "mean"}}, "eval_transform lacks mean"),
        ({"class_names": ["a", "b"]}, "names 2 classes but"),
    ],
)
def test_odd_embedder_json_values_are_one_error_that_names_the_key(tmp_path, edit, named):
    folder = _embedder().save(tmp_path / "model")
    config = json.loads((folder / "embedder.json").read_text())
    (folder / "embedder.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(DamagedFileError, match=named):
        load_embedder(folder)


@pytest.mark.parametrize(
    "manifest", [[], {"model.safetensors": {"sha256": "x"}}, {"../../elsewhere": {"bytes": 1, "sha256": "x"}}, {}]
)
def test_malformed_checkpoint_bookkeeping_is_named_not_a_traceback(tmp_path, manifest):
    folder = tmp_path / "checkpoints"
    keeper, model, progress = _keeper_run(folder)
    keeper.save("epoch_0000", is_best=True)
    (folder / "epoch_0000" / "manifest.json").write_text(json.dumps(manifest))
    assert "manifest.json is damaged" in keeper.damage(folder / "epoch_0000")
    with pytest.raises(DamagedFileError, match="No intact checkpoint"):
        keeper.load("last")
    (folder / "index.json").write_text('{"last": 5}')
    assert keeper.index() == {}


def test_a_file_that_is_not_what_its_name_says_is_named_even_with_a_matching_manifest(tmp_path):
    from pml_vmf.files import file_sha256

    folder = tmp_path / "checkpoints"
    keeper, model, progress = _keeper_run(folder)
    keeper.save("epoch_0000", is_best=True)
    weights = folder / "epoch_0000" / "model.safetensors"
    weights.write_bytes(b"not a safetensors file at all")
    manifest = json.loads((folder / "epoch_0000" / "manifest.json").read_text())
    manifest["model.safetensors"] = {"bytes": weights.stat().st_size, "sha256": file_sha256(weights)}
    (folder / "epoch_0000" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DamagedFileError, match="holds a file its loader cannot read"):
        keeper.load("last")
