"""From a trained run to answers: export, load, embed a folder, index, search, classify; and their errors."""

import json
import math
import shutil

import faiss
import numpy as np
import pytest
import torch
from PIL import Image

from pml_vmf import load_embedder
from pml_vmf.data import DatasetNotFoundError
from pml_vmf.inference import EmbeddingIndex, ModelNotFoundError, recall_against_exact
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
    return out, completed.stdout


def _digit_batch(embedder: Embedder, digits_folder, count: int = 6) -> torch.Tensor:
    paths = sorted((digits_folder / "3").iterdir())[:count]
    return torch.stack([embedder.transform(Image.open(p).convert("RGB")) for p in paths])


@pytest.mark.slow
def test_export_folder_reloads_to_the_same_embeddings_and_carries_what_use_needs(exported, uninterrupted_run, digits_folder):
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
    run_script(INDEX, "--model", str(folder), "--images", str(images), "--out", str(tmp_path / "index"), "--num-workers", "0")
    output = run_script(SEARCH, "--index", str(tmp_path / "index"), "--query", str(query), "-k", "3", "--classify",
                        "--grid", str(tmp_path / "grid.png")).stdout  # fmt: skip
    lines = [line.split() for line in output.splitlines() if line.startswith("  0.") or line.startswith("  1.")]
    assert lines[0][1] == str(original), output  # the copy's nearest image is its original, at cosine 1
    assert float(lines[0][0]) > 0.9999 and float(lines[0][0]) >= float(lines[1][0]) >= float(lines[2][0])
    assert all("/nested/8/" in line[1] for line in lines), output  # and the next are eights, not ones
    assert "class: " in output and "vMF posterior" in output
    assert (tmp_path / "grid.png").is_file()
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["index.faiss", "index.json", "paths.json"]  # read-only is fine
    meta = json.loads((tmp_path / "index" / "index.json").read_text())
    assert meta["size"] == sum(1 for label in ("1", "8") for _ in (digits_folder / label).iterdir())
    assert meta["format_version"] == 1 and len(meta["model_fingerprint"]) == 64


def test_classify_is_the_nearest_mean_with_its_vmf_posterior():
    config = EmbedderConfig("test_resnet", 4, {"input_size": [3, 32, 32], "interpolation": "bilinear", "mean": [0.5] * 3,
                            "std": [0.5] * 3, "crop_pct": 1.0, "crop_mode": "center"}, kappa=5.0)  # fmt: skip
    means = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 0]])  # class 2 has no mean: never predicted
    embedder = Embedder(create_embedding_model("test_resnet", 4), config, means)
    z = torch.tensor([[0.6, 0.8, 0, 0], [0, 0, 1.0, 0]])
    labels, probabilities = embedder.classify(z)
    assert labels.tolist() == [1, 0]
    by_hand = math.exp(5 * 0.8) / (math.exp(5 * 0.8) + math.exp(5 * 0.6))
    assert probabilities[0].item() == pytest.approx(by_hand, rel=1e-6)
    assert probabilities[1].item() == pytest.approx(0.5, rel=1e-6)  # equidistant from both means
    no_means = Embedder(create_embedding_model("test_resnet", 4), EmbedderConfig("test_resnet", 4, config.eval_transform, loss="triplet"))
    with pytest.raises(ValueError, match="trained with triplet and has no vMF class means"):
        no_means.classify(z)


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


def test_approximate_indexes_keep_recall_against_exact_search():
    torch.manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(50, 32), dim=1)
    data = centers.repeat_interleave(40, 0) + 0.3 * torch.randn(2000, 32)  # clustered, like embeddings
    queries = data[:100] + 0.05 * torch.randn(100, 32)
    exact = EmbeddingIndex(32).add(data).search(queries, 10)
    ivf_all = EmbeddingIndex(32, "ivf", nlist=20, nprobe=20).add(data).search(queries, 10)  # every list: exact
    assert recall_against_exact(ivf_all, exact) == 1.0
    hnsw = EmbeddingIndex(32, "hnsw", ef_search=128).add(data).search(queries, 10)
    assert recall_against_exact(hnsw, exact) > 0.9
    torch.testing.assert_close(exact.scores[:, 0], exact.scores.max(dim=1).values)  # best first, cosine in [-1, 1]
    assert exact.scores.max() <= 1 + 1e-5


def test_index_round_trips_through_its_folder(tmp_path):
    vectors = torch.randn(30, 8)
    index = EmbeddingIndex(8, "hnsw").add(vectors, [f"img{i}.png" for i in range(30)])
    index.save(tmp_path / "idx", model="m")
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.paths == index.paths and loaded.kind == "hnsw" and loaded.meta["model"] == "m"
    assert loaded.search(vectors[:2], 1).paths == [["img0.png"], ["img1.png"]]
    assert isinstance(loaded._index, faiss.IndexHNSWFlat)


def test_bad_input_gets_errors_that_say_what_is_wrong(tmp_path):
    with pytest.raises(ModelNotFoundError, match="expected a model folder holding embedder.json"):
        load_embedder(tmp_path / "missing")
    index = EmbeddingIndex(8).add(torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"shape \(2, 16\), but this index holds 8-d embeddings"):
        index.search(torch.randn(2, 16))
    with pytest.raises(ValueError, match="5 embeddings but 4 paths"):
        EmbeddingIndex(8).add(torch.randn(5, 8), ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="kind must be one of flat, ivf, hnsw"):
        EmbeddingIndex(8, "lsh")
    with pytest.raises(ValueError, match="index is empty"):
        EmbeddingIndex(8).search(torch.randn(1, 8))
    with pytest.raises(FileNotFoundError, match="No index at"):
        EmbeddingIndex.load(tmp_path)


@pytest.mark.slow
def test_scripts_refuse_missing_models_empty_folders_and_queries_that_are_not_images(exported, digits_folder, tmp_path):
    folder, _ = exported
    empty = tmp_path / "empty"
    empty.mkdir()
    missing_model = run_script(INDEX, "--model", str(tmp_path / "nope"), "--images", str(digits_folder / "1"),
                               "--out", str(tmp_path / "i"), expect_success=False)  # fmt: skip
    assert missing_model.returncode == 2 and "No model at" in missing_model.stderr
    no_images = run_script(INDEX, "--model", str(folder), "--images", str(empty), "--out", str(tmp_path / "i"), expect_success=False)
    assert no_images.returncode == 2 and "No readable images" in no_images.stderr
    run_script(INDEX, "--model", str(folder), "--images", str(digits_folder / "1"), "--out", str(tmp_path / "i"), "--num-workers", "0")
    not_an_image = tmp_path / "photo.jpg"
    not_an_image.write_text("this is text")
    bad_query = run_script(SEARCH, "--index", str(tmp_path / "i"), "--query", str(not_an_image), expect_success=False)
    assert bad_query.returncode == 2 and "is not an image PIL can read" in bad_query.stderr
    other = create_embedding_model("test_resnet", 16)  # a model of another width than the index
    Embedder(other, EmbedderConfig("test_resnet", 16, load_embedder(folder).config.eval_transform)).save(tmp_path / "wide")
    query = sorted((digits_folder / "1").iterdir())[0]
    mismatch = run_script(SEARCH, "--index", str(tmp_path / "i"), "--model", str(tmp_path / "wide"), "--query", str(query), expect_success=False)
    assert mismatch.returncode == 2 and "is not the model" in mismatch.stderr and "fingerprints" in mismatch.stderr
    with pytest.raises(DatasetNotFoundError):
        load_embedder(folder).embed_folder(empty)


def test_the_embedders_network_plugs_into_pmls_inference_model():
    """PML's InferenceModel (its kNN and MatchFinder tools) takes the network as its trunk, normalising as we do."""
    from pytorch_metric_learning.utils.inference import InferenceModel

    torch.manual_seed(0)
    transform = {"input_size": [3, 32, 32], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0, "crop_mode": "center"}
    embedder = Embedder(create_embedding_model("test_resnet", 8), EmbedderConfig("test_resnet", 8, transform))
    images = torch.randn(6, 3, 32, 32)
    inference = InferenceModel(trunk=embedder.model, normalize_embeddings=True)
    torch.testing.assert_close(inference.get_embeddings(images), embedder.embed_tensor(images), atol=1e-6, rtol=0)
