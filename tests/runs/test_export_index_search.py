"""From a trained run to answers through the scripts: export, index, search, classify, on 1 and 2 processes."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pml_vmf import load_embedder
from pml_vmf.data import DatasetNotFoundError
from pml_vmf.inference import EmbeddingIndex
from pml_vmf.inference.embedder import Embedder, EmbedderConfig
from pml_vmf.models import create_embedding_model
from tests.multiprocess import accelerate_launch
from tests.recipe_runs import REPO, run_script

EXPORT, INDEX, SEARCH = (REPO / "recipes" / f"{name}.py" for name in ("export", "index", "search"))


@pytest.fixture(scope="module")
def exported(uninterrupted_run, digits_folder, tmp_path_factory):
    """The digits run (vMF, test_resnet) exported in all three formats, checked on real digit images."""
    out = tmp_path_factory.mktemp("export") / "digits"
    completed = run_script(
        EXPORT, "--run", str(uninterrupted_run), "--out", str(out), "--check-images", str(digits_folder / "7"),
        "--format", "safetensors", "torchscript", "onnx",
    )  # fmt: skip
    assert "deprecated" not in completed.stderr, completed.stderr  # torch.jit's notices are not the user's to act on
    return out, completed.stdout


def _digit_batch(embedder: Embedder, digits_folder, count: int = 6) -> torch.Tensor:
    paths = sorted((digits_folder / "3").iterdir())[:count]
    return torch.stack([embedder.transform(Image.open(p).convert("RGB")) for p in paths])


@pytest.mark.slow
def test_export_folder_reloads_to_the_same_embeddings_and_carries_what_use_needs(
    exported, uninterrupted_run, digits_folder
):
    folder, output = exported
    for name in ("embedder.json", "model.safetensors", "class_means.safetensors", "model.torchscript.pt", "model.onnx"):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "embedder.json").read_text())
    assert config["backbone"] == "test_resnet" and config["embedding_size"] == 32 and config["kappa"] == 16.0
    assert config["class_names"] == ["0", "1", "2", "3", "4"] and config["eval_transform"]["input_size"] == [3, 32, 32]
    from_export, from_run = load_embedder(folder), load_embedder(uninterrupted_run)
    batch = _digit_batch(from_run, digits_folder)
    torch.testing.assert_close(from_export.embed_tensor(batch), from_run.embed_tensor(batch), atol=0, rtol=0)
    torch.testing.assert_close(from_export.class_means, from_run.class_means, atol=0, rtol=0)
    # the script checked each format against the eager model on 8 real images, at 1e-4 on unit vectors
    for name in ("safetensors", "torchscript", "onnx"):
        assert f"{name}: largest difference from the eager model on 8 real images" in output


@pytest.mark.slow
def test_torchscript_and_onnx_match_the_eager_model_on_other_images_and_batch_sizes(exported, digits_folder):
    import onnxruntime

    folder, _ = exported
    embedder = load_embedder(folder)
    batch = _digit_batch(embedder, digits_folder, count=5)  # a batch size the export never saw
    eager = embedder.embed_tensor(batch)
    scripted = torch.jit.load(str(folder / "model.torchscript.pt"))(batch)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(["embeddings"], {"images": batch.numpy()})
    torch.testing.assert_close(scripted, eager, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.from_numpy(onnx_out), eager, atol=1e-4, rtol=0)
    assert torch.allclose(eager.norm(dim=1), torch.ones(5))


@pytest.mark.slow
def test_index_then_search_finds_the_copied_image_first_then_its_class(exported, digits_folder, tmp_path):
    folder, _ = exported
    images = tmp_path / "collection"
    for label in ("1", "8"):
        shutil.copytree(digits_folder / label, images / "nested" / label)
    (images / "README.txt").write_text("not an image")
    original = sorted((images / "nested" / "8").iterdir())[3]
    query = tmp_path / "query.png"
    Image.open(original).convert("RGB").save(query)  # the same pixels in another file (an RGB re-encoding)
    run_script(
        INDEX, "--model", str(folder), "--images", str(images), "--out", str(tmp_path / "index"), "--num-workers", "0"
    )
    output = run_script(SEARCH, "--index", str(tmp_path / "index"), "--query", str(query), "-k", "3", "--classify",
                        "--grid", str(tmp_path / "grid.png")).stdout  # fmt: skip
    lines = [line.split() for line in output.splitlines() if line.startswith("  0.") or line.startswith("  1.")]
    assert lines[0][1] == str(original), output  # the copy's nearest image is its original, at cosine 1
    assert float(lines[0][0]) > 0.9999 and float(lines[0][0]) >= float(lines[1][0]) >= float(lines[2][0])
    assert all("/nested/8/" in line[1] for line in lines), output  # and the next are eights, not ones
    assert "class: " in output and "vMF posterior" in output
    assert (tmp_path / "grid.png").is_file()
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == [
        "index.faiss",
        "index.json",
        "paths.json",
    ]  # read-only is fine
    meta = json.loads((tmp_path / "index" / "index.json").read_text())
    assert meta["size"] == sum(1 for label in ("1", "8") for _ in (digits_folder / label).iterdir())
    assert meta["format_version"] == 1 and len(meta["model_fingerprint"]) == 64


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_embed_a_folder_exactly_as_one(exported, digits_folder, tmp_path):
    folder, _ = exported
    images = digits_folder / "5"  # 182 images: two processes, batches of 16, a last batch to pad
    for processes in (1, 2):
        accelerate_launch(INDEX, "--model", str(folder), "--images", str(images), "--out", str(tmp_path / f"p{processes}"),
                          "--batch-size", "16", "--num-workers", "0", num_processes=processes)  # fmt: skip
    one, two = (EmbeddingIndex.load(tmp_path / f"p{n}") for n in (1, 2))
    assert one.paths == two.paths and len(set(one.paths)) == len(one.paths) == len(list(images.iterdir()))
    vectors = [index._index.reconstruct_n(0, len(index)) for index in (one, two)]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_scripts_refuse_missing_models_empty_folders_and_queries_that_are_not_images(exported, digits_folder, tmp_path):
    folder, _ = exported
    empty = tmp_path / "empty"
    empty.mkdir()
    missing_model = run_script(INDEX, "--model", str(tmp_path / "nope"), "--images", str(digits_folder / "1"),
                               "--out", str(tmp_path / "i"), expect_success=False)  # fmt: skip
    assert missing_model.returncode == 2 and "No model at" in missing_model.stderr
    no_images = run_script(
        INDEX, "--model", str(folder), "--images", str(empty), "--out", str(tmp_path / "i"), expect_success=False
    )
    assert no_images.returncode == 2 and "No readable images" in no_images.stderr
    run_script(
        INDEX,
        "--model",
        str(folder),
        "--images",
        str(digits_folder / "1"),
        "--out",
        str(tmp_path / "i"),
        "--num-workers",
        "0",
    )
    not_an_image = tmp_path / "photo.jpg"
    not_an_image.write_text("this is text")
    bad_query = run_script(SEARCH, "--index", str(tmp_path / "i"), "--query", str(not_an_image), expect_success=False)
    assert bad_query.returncode == 2 and "is not an image PIL can read" in bad_query.stderr
    other = create_embedding_model("test_resnet", 16)  # a model of another width than the index
    Embedder(other, EmbedderConfig("test_resnet", 16, load_embedder(folder).config.eval_transform)).save(
        tmp_path / "wide"
    )
    query = sorted((digits_folder / "1").iterdir())[0]
    mismatch = run_script(
        SEARCH,
        "--index",
        str(tmp_path / "i"),
        "--model",
        str(tmp_path / "wide"),
        "--query",
        str(query),
        expect_success=False,
    )
    assert mismatch.returncode == 2 and "is not the model" in mismatch.stderr and "fingerprints" in mismatch.stderr
    with pytest.raises(DatasetNotFoundError):
        load_embedder(folder).embed_folder(empty)


@pytest.mark.slow
def test_overwrite_never_deletes_an_input_or_a_run_folder(uninterrupted_run, digits_folder, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(digits_folder / "7", images / "7")
    before = sorted(p.name for p in (images / "7").iterdir())
    indexed = run_script(
        INDEX,
        "--model",
        str(uninterrupted_run),
        "--images",
        str(images),
        "--out",
        str(images),
        "--overwrite",
        expect_success=False,
    )
    assert indexed.returncode == 2 and "not an index folder this tool wrote" in indexed.stderr
    assert sorted(p.name for p in (images / "7").iterdir()) == before
    run = tmp_path / "run"
    shutil.copytree(uninterrupted_run, run)
    held = sorted(p.name for p in run.iterdir())
    exported = run_script(EXPORT, "--run", str(run), "--out", str(run), "--overwrite", expect_success=False)
    assert exported.returncode == 2 and "not an export folder this tool wrote" in exported.stderr
    assert sorted(p.name for p in run.iterdir()) == held


@pytest.mark.slow
def test_a_damaged_image_under_index_default_workers_is_one_line(uninterrupted_run, digits_folder, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(digits_folder / "3", images / "3")
    noise = (np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(images / "3" / "broken.jpg")
    data = (images / "3" / "broken.jpg").read_bytes()
    (images / "3" / "broken.jpg").write_bytes(data[: len(data) // 2])  # damaged past its header
    completed = run_script(
        INDEX,
        "--model",
        str(uninterrupted_run),
        "--images",
        str(images),
        "--out",
        str(tmp_path / "index"),
        expect_success=False,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = [line for line in completed.stderr.strip().splitlines() if line.startswith("index.py:")]
    assert len(lines) == 1 and "broken.jpg" in lines[0] and "Traceback" not in completed.stderr


def _copy_classes(digits_folder, labels, out, every: int = 5):
    for label in labels:
        (out / label).mkdir(parents=True)
        for image in sorted((digits_folder / label).iterdir())[::every]:
            shutil.copy(image, out / label / image.name)
    return out


@pytest.mark.slow
def test_a_run_saves_each_classs_spread_and_a_calibrated_model_answers_unknown(
    uninterrupted_run, digits_folder, tmp_path
):
    import re

    CALIBRATE = REPO / "recipes" / "calibrate.py"
    embedder = load_embedder(uninterrupted_run)
    counts, lengths = embedder.class_statistics["class_counts"], embedder.class_statistics["resultant_lengths"]
    assert counts.shape == (5,) and (counts > 0).all() and ((lengths > 0) & (lengths <= 1)).all()
    # The wiring, not a measurement: the run trained on these images of classes 0-4 (the benchmark holds them out).
    known = _copy_classes(digits_folder, ["0", "1", "2", "3", "4"], tmp_path / "known")
    unknown = _copy_classes(digits_folder, ["5", "8"], tmp_path / "unknown")
    out = tmp_path / "calibrated"
    output = run_script(CALIBRATE, "--model", str(uninterrupted_run), "--known", str(known), "--unknown", str(unknown),
                        "--out", str(out), "--tpr", "0.9").stdout  # fmt: skip
    assert re.search(r"temperature \S+: negative log-likelihood \S+ -> \S+, expected calibration error", output), output
    assert re.search(r"images of unseen classes: AUROC 0\.\d{4}; the threshold accepts \d+\.\d%", output), output
    open_set = json.loads((out / "embedder.json").read_text())["open_set"]
    assert open_set["kappas"] == "shared" and open_set["tpr"] == 0.9 and open_set["score"] == "max_cosine"
    calibrated = load_embedder(out)
    known_embeddings, _ = calibrated.embed_folder(known, progress=False)
    accepted = (calibrated.classify(known_embeddings)[0] != -1).double().mean()
    assert 0.88 <= accepted <= 0.92  # the share it was asked to accept, on the images it was chosen on
    run_script(
        INDEX, "--model", str(out), "--images", str(unknown), "--out", str(tmp_path / "index"), "--num-workers", "0"
    )
    query = sorted((unknown / "8").iterdir())[0]
    answer = run_script(SEARCH, "--index", str(tmp_path / "index"), "--query", str(query), "--classify").stdout
    assert re.search(
        r"class: (unknown \(of no known class: max_cosine \S+ below the threshold \S+\)|[0-4] \(vMF posterior)",
        answer,
    ), answer
    refused = run_script(CALIBRATE, "--model", str(out), "--known", str(unknown), "--out", str(tmp_path / "again"),
                         expect_success=False)  # fmt: skip
    assert refused.returncode == 2 and "not classes of the model (5, 8)" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    kept = run_script(CALIBRATE, "--model", str(out), "--known", str(known), "--out", str(uninterrupted_run),
                      "--overwrite", expect_success=False)  # fmt: skip
    assert kept.returncode == 2 and "not a model folder this tool wrote" in kept.stderr
