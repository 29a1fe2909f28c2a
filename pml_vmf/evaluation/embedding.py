"""Embedding a dataset on one process or many, every sample exactly once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Callable, Optional

import torch


@torch.no_grad()
def embed_dataset(
    model: torch.nn.Module,
    dataloader: Iterable,
    *,
    device: torch.device,
    gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    autocast: Optional[Callable] = None,
) -> tuple:
    """Embeds every batch ``(images, labels, indices)`` of ``dataloader`` in eval mode.

    Args:
        model: maps images to embeddings.
        dataloader: an accelerate-prepared loader under several processes.
        device: where the model runs.
        gather: ``accelerator.gather_for_metrics``, which returns the global batch and drops the samples accelerate
            repeated to even out the last one; None on one process.
        autocast: a context manager factory for mixed precision (``accelerator.autocast``).

    Returns:
        ``(embeddings, labels, indices)`` in float32 on the CPU, the same on every process, sorted by dataset index.
    """
    # Restore each module's own mode afterwards: a wrapper built for this call (in training mode, as new modules
    # are) must not switch the network it wraps into training mode.
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    parts: dict = {"embeddings": [], "labels": [], "indices": []}
    try:
        for images, labels, indices in dataloader:
            if autocast is not None:
                with autocast():
                    embeddings = model(images.to(device))
            else:
                embeddings = model(images.to(device))
            embeddings, labels, indices = embeddings.float(), labels.to(device), indices.to(device)
            if gather is not None:
                embeddings, labels, indices = gather(embeddings), gather(labels), gather(indices)
            parts["embeddings"].append(embeddings.cpu())
            parts["labels"].append(labels.cpu())
            parts["indices"].append(indices.cpu())
    finally:
        for module, training in modes:
            module.training = training
    indices = torch.cat(parts["indices"])
    order = torch.argsort(indices)
    return torch.cat(parts["embeddings"])[order], torch.cat(parts["labels"])[order], indices[order]
