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


def _clustered_embedder(tmp_path):
    """A vMF model of 4 classes in 16 dimensions, saved with its class statistics; and held-out known queries drawn
    around its means, of two spreads."""
    generator = torch.Generator().manual_seed(3)
    means = torch.nn.functional.normalize(torch.randn(4, 16, generator=generator), dim=1)
    spread = torch.tensor([0.1, 0.1, 0.3, 0.3])  # classes 2 and 3 are loose

    def draw(n: int, labels: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(n, 16, generator=generator) * spread[labels][:, None]
        return torch.nn.functional.normalize(means[labels] + noise, dim=1)

    train_labels = torch.arange(4).repeat_interleave(200)
    train = draw(800, train_labels)
    sums = torch.zeros(4, 16).index_add_(0, train_labels, train)
    statistics = {"class_counts": torch.full((4,), 200.0), "resultant_lengths": sums.norm(dim=1) / 200}
    config = EmbedderConfig("test_resnet", 16, TRANSFORM, kappa=10.0, class_names=["a", "b", "c", "d"], loss="vmf")
    folder = Embedder(create_embedding_model("test_resnet", 16), config, sums, statistics).save(tmp_path / "m")
    known_labels = torch.arange(4).repeat(100)
    return folder, draw(400, known_labels), known_labels, generator


def test_calibration_travels_in_embedder_json_and_classify_answers_unknown_below_its_threshold(tmp_path):
    from pml_vmf.inference import UNKNOWN

    folder, known, known_labels, generator = _clustered_embedder(tmp_path)
    embedder = load_embedder(folder)
    assert embedder.class_statistics is not None and embedder.config.open_set is None
    uncalibrated_labels, _ = embedder.classify(known)
    assert (uncalibrated_labels != UNKNOWN).all()  # no calibration: every query gets a known class
    settings = embedder.calibrate(
        known[:200], known_labels[:200], tpr=0.9, kappas="per_class", score="vmf_log_likelihood"
    )
    assert settings["kappas"] == "per_class" and settings["known_images"] == 200 and settings["temperature"] > 0
    embedder.save(folder, overwrite=True)
    reloaded = load_embedder(folder)
    assert reloaded.config.open_set == settings
    labels, probabilities = reloaded.classify(known[200:])  # held out of the calibration too
    accepted = labels != UNKNOWN
    assert 0.8 <= accepted.double().mean() <= 0.98
    assert (labels[accepted] == known_labels[200:][accepted]).double().mean() > 0.95
    assert ((probabilities > 0) & (probabilities <= 1)).all()
    unknown = torch.nn.functional.normalize(torch.randn(200, 16, generator=generator), dim=1)  # of no class
    assert (reloaded.classify(unknown)[0] == UNKNOWN).double().mean() > 0.9


def test_per_class_kappas_fit_held_out_images_better_than_one_shared_kappa(tmp_path):
    from pml_vmf.evaluation.open_set_metrics import negative_log_likelihood

    folder, known, known_labels, _ = _clustered_embedder(tmp_path)
    embedder = load_embedder(folder)
    per_class = embedder.class_model("per_class")
    assert per_class.kappas[0] > 3 * per_class.kappas[2]  # the tight classes are estimated tighter
    shared = embedder.class_model("shared")
    assert (shared.kappas == 10.0).all()
    nll = {
        name: negative_log_likelihood(model.log_posterior(known), known_labels)
        for name, model in (("per_class", per_class), ("shared", shared))
    }
    assert nll["per_class"] < nll["shared"]


def test_a_model_without_class_statistics_says_how_to_get_them(tmp_path):
    config = EmbedderConfig("test_resnet", 4, TRANSFORM, kappa=5.0)
    means = torch.eye(3, 4)
    folder = Embedder(create_embedding_model("test_resnet", 4), config, means).save(tmp_path / "m")
    embedder = load_embedder(folder)
    assert embedder.class_statistics is None
    with pytest.raises(ValueError, match="no class statistics .* train it again .* or use kappas='shared'"):
        embedder.calibrate(torch.eye(3, 4), torch.arange(3), kappas="per_class")
    defaults = embedder.calibrate(torch.eye(3, 4), torch.arange(3))  # the loss's kappa and the nearest mean's cosine
    assert defaults["kappas"] == "shared" and defaults["score"] == "max_cosine"
    no_vmf = Embedder(
        create_embedding_model("test_resnet", 4), EmbedderConfig("test_resnet", 4, TRANSFORM, loss="triplet")
    )
    with pytest.raises(ValueError, match="has no vMF class means and kappa.*loss.name=vmf"):
        no_vmf.calibrate(torch.eye(3, 4), torch.arange(3))


def test_damaged_class_statistics_are_one_line_naming_the_file(tmp_path):
    from safetensors.torch import load_file, save_file

    from pml_vmf.errors import DamagedFileError

    folder, *_ = _clustered_embedder(tmp_path)
    tensors = load_file(str(folder / "class_means.safetensors"))
    for name, bad in (("resultant_lengths", torch.full((4,), 1.5)), ("class_counts", torch.ones(3))):
        save_file({**tensors, name: bad.double()}, str(folder / "class_means.safetensors"))
        with pytest.raises(DamagedFileError, match=r"class_means.safetensors .*export the model again") as caught:
            load_embedder(folder)
        assert "\n" not in str(caught.value)
