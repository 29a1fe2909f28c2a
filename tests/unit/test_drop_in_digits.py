"""The README's drop-in swap on real data: one training loop, TripletMarginLoss + miner vs VMFLoss + GlobalMeanMiner."""

import pytest
import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from pml_vmf import GlobalMeanMiner, VMFLoss

EMBEDDING_SIZE, NUM_CLASSES, EPOCHS = 32, 10, 12


def _digits():
    inputs, labels = load_digits(return_X_y=True)
    inputs = torch.tensor(inputs, dtype=torch.float32) / 16.0
    labels = torch.tensor(labels)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    return (inputs[train], labels[train]), (inputs[test], labels[test])


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, EMBEDDING_SIZE))


def _train(model, loss_func, miner, loader) -> "list[float]":
    """The user's loop, untouched by the swap; returns the mean loss of each epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    epoch_losses = []
    for _ in range(EPOCHS):
        total = 0.0
        for inputs, labels in loader:
            embeddings = model(inputs)
            loss = loss_func(embeddings, labels, miner(embeddings, labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        epoch_losses.append(total / len(loader))
    return epoch_losses


@torch.no_grad()
def _retrieval_accuracy(model, train, test) -> dict:
    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"), knn_func=CustomKNN(CosineSimilarity())
    )
    return calculator.get_accuracy(model(test[0]), test[1], model(train[0]), train[1])


@pytest.mark.slow
def test_vmf_drop_in_learns_on_digits(report):
    train, test = _digits()
    results = {}
    for name in ("triplet", "vmf"):
        torch.manual_seed(0)
        model = _model()
        loader = DataLoader(TensorDataset(*train), batch_size=64, shuffle=True)
        if name == "triplet":
            loss_func, miner = losses.TripletMarginLoss(margin=0.1), miners.TripletMarginMiner(margin=0.1)
        else:
            loss_func = VMFLoss(num_classes=NUM_CLASSES, embedding_size=EMBEDDING_SIZE, kappa=16.0)
            miner = GlobalMeanMiner(loss_func, update_every=5)
        epoch_losses = _train(model, loss_func, miner, loader)
        model.eval()
        results[name] = _retrieval_accuracy(model, train, test)
        with torch.no_grad():
            untrained = _retrieval_accuracy(_model().eval(), train, test)
        report(
            f"digits drop-in, {name}: test precision@1 {results[name]['precision_at_1']:.3f}, "
            f"MAP@R {results[name]['mean_average_precision_at_r']:.3f} (untrained MAP@R "
            f"{untrained['mean_average_precision_at_r']:.3f}); loss {epoch_losses[0]:.3f} -> {epoch_losses[-1]:.3f}"
        )
        if name == "vmf":
            with torch.no_grad():
                nearest_mean_accuracy = (loss_func.predict(model(test[0])) == test[1]).float().mean().item()
            report(f"digits drop-in, vmf: nearest-mean test accuracy {nearest_mean_accuracy:.3f} (chance 0.100)")
            assert epoch_losses[-1] < 0.5 * epoch_losses[0]
            assert nearest_mean_accuracy > 0.85
            assert results[name]["precision_at_1"] > 0.85
            assert results[name]["mean_average_precision_at_r"] > untrained["mean_average_precision_at_r"] + 0.2
