"""Evaluation: Recall@K against a brute-force count, faiss and the blocked torch search agree, nearest mean."""

import pytest
import torch
import torch.nn.functional as F

from pml_vmf.evaluation import build_accuracy_calculator, nearest_mean_accuracy, retrieval_metrics
from pml_vmf.evaluation.retrieval_metrics import faiss_available


def _clustered(num_classes: int = 12, per_class: int = 6, dim: int = 16, noise: float = 0.9, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=generator), labels


def _brute_force_recall(query, labels, k, reference=None, reference_labels=None):
    leave_one_out = reference is None
    reference = query if leave_one_out else reference
    reference_labels = labels if leave_one_out else reference_labels
    similarity = F.normalize(query, dim=1) @ F.normalize(reference, dim=1).T
    if leave_one_out:
        similarity.fill_diagonal_(-float("inf"))
    top = similarity.topk(k, dim=1).indices
    return (reference_labels[top] == labels[:, None]).any(dim=1).float().mean().item()


@pytest.mark.parametrize("knn", ["torch"] + (["faiss"] if faiss_available() else []))
def test_recall_at_k_matches_a_brute_force_count(knn):
    embeddings, labels = _clustered()
    metrics = retrieval_metrics(build_accuracy_calculator((1, 2, 4, 8), knn=knn, knn_batch_size=7), embeddings, labels)
    for k in (1, 2, 4, 8):
        assert metrics[f"recall_at_{k}"] == pytest.approx(_brute_force_recall(embeddings, labels, k))
    assert metrics["recall_at_1"] == pytest.approx(metrics["precision_at_1"])
    assert {"r_precision", "mean_average_precision_at_r", "NMI"} <= set(metrics)


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
def test_faiss_and_the_blocked_torch_search_give_the_same_metrics():
    embeddings, labels = _clustered(noise=1.5)
    query, reference = embeddings[::2], embeddings[1::2]
    results = [
        retrieval_metrics(build_accuracy_calculator((1, 4), ("precision_at_1", "mean_average_precision_at_r"), knn=knn, knn_batch_size=5),
                          query, labels[::2], reference, labels[1::2])
        for knn in ("faiss", "torch")
    ]  # fmt: skip
    assert results[0] == pytest.approx(results[1])
    assert results[0]["recall_at_4"] == pytest.approx(
        _brute_force_recall(query, labels[::2], 4, reference, labels[1::2])
    )


def test_recall_k_larger_than_any_class_is_still_exact():
    embeddings, labels = _clustered(num_classes=30, per_class=3)
    metrics = retrieval_metrics(
        build_accuracy_calculator((1, 20), ("mean_average_precision_at_r",), knn="torch"), embeddings, labels
    )
    assert metrics["recall_at_20"] == pytest.approx(_brute_force_recall(embeddings, labels, 20))


def test_nearest_mean_accuracy_never_predicts_a_class_without_mean():
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    embeddings = torch.tensor([[0.9, 0.1], [0.2, 0.8], [-1.0, -1.0]])
    assert nearest_mean_accuracy(embeddings, torch.tensor([0, 1, 2]), means) == pytest.approx(2 / 3)


def test_bad_knn_choice_is_an_error():
    with pytest.raises(ValueError, match="eval.knn must be"):
        build_accuracy_calculator(knn="annoy")


@pytest.mark.parametrize("k", [None, "max_bin_count", 3])
@pytest.mark.parametrize("knn", ["torch"] + (["faiss"] if faiss_available() else []))
@pytest.mark.parametrize("leave_one_out", [True, False])
def test_blocked_metrics_equal_pml_accuracy_calculator_on_the_whole_set(leave_one_out, knn, k):
    """Every k-NN metric the recipe offers, for each of PML's k settings. The noise is large enough that many queries
    have no same-class hit among the largest class's size: with k=None their reciprocal rank comes from deeper."""
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    embeddings, labels = _clustered(num_classes=15, per_class=5, noise=4.0)
    labels[:3] = torch.tensor([100, 101, 102])  # classes with one image: lone queries, left out by both
    names = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "mean_reciprocal_rank")
    pml = AccuracyCalculator(include=names, k=k, knn_func=CustomKNN(CosineSimilarity()), device=torch.device("cpu"))
    ours = build_accuracy_calculator((1,), names, knn=knn, knn_batch_size=8)
    ours.k = k
    embeddings = F.normalize(embeddings, dim=1)
    if leave_one_out:
        expected, found = pml.get_accuracy(embeddings, labels), retrieval_metrics(ours, embeddings, labels)
    else:
        args = (embeddings[::2], labels[::2], embeddings[1::2], labels[1::2])
        expected, found = pml.get_accuracy(*args, ref_includes_query=False), retrieval_metrics(ours, *args)
    for name in names:
        assert found[name] == pytest.approx(expected[name], abs=1e-6), name
    if k is None:
        max_bin = AccuracyCalculator(include=names, k="max_bin_count", knn_func=CustomKNN(CosineSimilarity()))
        truncated = (
            max_bin.get_accuracy(embeddings, labels)
            if leave_one_out
            else max_bin.get_accuracy(*args, ref_includes_query=False)
        )
        # Not vacuous: some first hits lie beyond the largest class, where a search of that depth scores them 0.
        assert expected["mean_reciprocal_rank"] > truncated["mean_reciprocal_rank"] + 1e-3


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
def test_faiss_reference_index_is_built_once_per_evaluation():
    import faiss

    built = []

    def counting_flat_index(dim):
        built.append(dim)
        return faiss.IndexFlatL2(dim)

    embeddings, labels = _clustered(num_classes=20, per_class=5)
    calculator = build_accuracy_calculator(
        (1, 4), ("precision_at_1", "mean_reciprocal_rank"), knn="faiss", knn_batch_size=7
    )
    calculator.knn_func.index_init_fn = counting_flat_index
    metrics = retrieval_metrics(calculator, embeddings, labels)  # 100 queries in 15 blocks, some searched deeper
    assert built == [16]
    assert metrics["recall_at_4"] == pytest.approx(_brute_force_recall(embeddings, labels, 4))


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
def test_faiss_falls_back_to_the_cpu_index_with_a_message_when_the_gpu_is_full(monkeypatch, caplog):
    from pml_vmf.evaluation import faiss_index

    def out_of_memory(cpu_index, device_id):
        raise RuntimeError(
            "Error in void* faiss::gpu::StandardGpuResourcesImpl::allocMemory: cudaMalloc error 2: out of memory"
        )

    monkeypatch.setattr(faiss_index.FaissIndexKNN, "_gpu_device", staticmethod(lambda reference: 0))
    monkeypatch.setattr(faiss_index, "_gpu_index", out_of_memory)
    embeddings, labels = _clustered()
    with caplog.at_level("WARNING", logger=faiss_index.__name__):
        metrics = retrieval_metrics(build_accuracy_calculator((1, 2), knn="faiss"), embeddings, labels)
    assert "searching on the CPU instead" in caplog.text and "out of memory" in caplog.text
    assert metrics["recall_at_2"] == pytest.approx(_brute_force_recall(embeddings, labels, 2))
