"""From a trained run to answers: export, load, embed a folder, index, search, classify; and their errors."""

import math

import faiss
import pytest
import torch

from pml_vmf import load_embedder
from pml_vmf.inference import EmbeddingIndex, ModelNotFoundError, recall_against_exact
from pml_vmf.inference.embedder import Embedder, EmbedderConfig
from pml_vmf.models import create_embedding_model
from tests.tiny_model import TRANSFORM


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
    no_means = Embedder(
        create_embedding_model("test_resnet", 4),
        EmbedderConfig("test_resnet", 4, config.eval_transform, loss="triplet"),
    )
    with pytest.raises(ValueError, match="trained with triplet and has no vMF class means"):
        no_means.classify(z)


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


def test_the_embedders_network_plugs_into_pmls_inference_model():
    """PML's InferenceModel (its kNN and MatchFinder tools) takes the network as its trunk, normalising as we do."""
    from pytorch_metric_learning.utils.inference import InferenceModel

    torch.manual_seed(0)
    embedder = Embedder(create_embedding_model("test_resnet", 8), EmbedderConfig("test_resnet", 8, TRANSFORM))
    images = torch.randn(6, 3, 32, 32)
    inference = InferenceModel(trunk=embedder.model, normalize_embeddings=True)
    torch.testing.assert_close(inference.get_embeddings(images), embedder.embed_tensor(images), atol=1e-6, rtol=0)


def test_embedding_a_folder_leaves_the_model_in_eval_mode(tmp_path):
    """The folder's embeddings and later single images run BatchNorm in eval mode: an image is its own best match."""
    from PIL import Image

    torch.manual_seed(0)
    embedder = Embedder(create_embedding_model("test_resnet", 8), EmbedderConfig("test_resnet", 8, TRANSFORM))
    for i in range(3):
        Image.fromarray((torch.rand(32, 32, 3) * 255).byte().numpy()).save(tmp_path / f"{i}.png")
    gallery, paths = embedder.embed_folder(tmp_path, progress=False)
    assert not any(module.training for module in embedder.model.modules())
    single = embedder.embed_images([paths[0]])  # one image: BatchNorm in training mode would fail or differ
    torch.testing.assert_close(single[0], gallery[0], atol=1e-5, rtol=0)


def test_load_embedder_without_the_recipes_extra_names_what_to_install(tmp_path):
    import subprocess
    import sys

    probe = f"import sys; sys.modules['timm'] = None\nimport pml_vmf\npml_vmf.load_embedder({str(tmp_path)!r})"
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    assert 'pip install "pml-vmf[recipes]"' in completed.stderr.strip().splitlines()[-1]
