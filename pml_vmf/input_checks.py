"""Input checks shared by the loss, the miner and the full pass, each failing with a message that says how to fix it."""

import math
import warnings

import torch

from .pml_api import BaseDistance, DotProductSimilarity


def is_finite_number(value) -> bool:
    """An int or float (never a bool) that is finite: what a numeric setting read from JSON or YAML must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int_at_least(value, least: int) -> bool:
    """An int (never a bool) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_num_classes_and_size(num_classes: int, embedding_size: int) -> None:
    """Rejects a class count below two or a non-positive embedding width."""
    if not is_int_at_least(num_classes, 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
    if not is_int_at_least(embedding_size, 1):
        raise ValueError(f"embedding_size must be a positive integer, got {embedding_size!r}.")


def check_cosine_distance(distance: BaseDistance) -> None:
    """Rejects any PML distance that does not compute a cosine similarity.

    The vMF log-likelihood is ``kappa * mu . z`` for unit vectors, so only an L2-normalising dot product with
    power 1 (``CosineSimilarity()``, or ``DotProductSimilarity()`` with its defaults) is the right similarity.
    """
    is_cosine = (
        isinstance(distance, DotProductSimilarity)
        and distance.normalize_embeddings
        and distance.p == 2
        and distance.power == 1
    )
    if not is_cosine:
        raise ValueError(
            f"VMFLoss needs a cosine similarity, got {distance!r} "
            f"(normalize_embeddings={getattr(distance, 'normalize_embeddings', None)}, "
            f"p={getattr(distance, 'p', None)}, power={getattr(distance, 'power', None)}). "
            "Pass distance=CosineSimilarity() or leave distance unset."
        )


def check_batch(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int, embedding_size: int) -> torch.Tensor:
    """Checks the shapes and dtypes of one batch; reads nothing back from the device.

    Returns:
        ``labels`` as int64. Any integer dtype is accepted, as PML's losses accept it (int32 from numpy, uint8);
        ``index_add_`` and ``cross_entropy`` need int64.

    Raises:
        ValueError: naming what is wrong: rank, width or dtype of ``embeddings``, dtype or shape of ``labels``.
    """
    if not torch.is_tensor(embeddings) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if torch.is_tensor(embeddings) else type(embeddings).__name__
        raise ValueError(f"embeddings must be a 2D tensor of shape (batch_size, {embedding_size}), got {shape}.")
    if embeddings.shape[1] != embedding_size:
        raise ValueError(
            f"embeddings have width {embeddings.shape[1]} but embedding_size is {embedding_size}: "
            "make the model's output width match the embedding_size the loss was built with."
        )
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be a floating-point tensor, got dtype {embeddings.dtype}.")
    if labels is None:
        raise ValueError(f"labels are required: pass a 1D integer tensor of class indices in [0, {num_classes}).")
    if (
        not torch.is_tensor(labels)
        or labels.dtype.is_floating_point
        or labels.dtype.is_complex
        or labels.dtype == torch.bool
    ):
        dtype = labels.dtype if torch.is_tensor(labels) else type(labels).__name__
        raise ValueError(
            f"labels must be an integer tensor, got {dtype}. Map each class to an index in [0, {num_classes}) "
            "and pass them as integers (e.g. labels.long())."
        )
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must have shape ({embeddings.shape[0]},) to match the embeddings, got {tuple(labels.shape)}."
        )
    return labels.long()


def check_label_range(labels: torch.Tensor, num_classes: int, *counts: torch.Tensor) -> "list[int]":
    """Checks that labels lie in ``[0, num_classes)``, reading ``counts`` back in the same transfer.

    Every check of a batch shares this one device-to-host copy, so that a CUDA step waits on the device once.

    Returns:
        The values of ``counts`` (scalar tensors) as Python ints.
    """
    if labels.numel() == 0:
        return [0 for _ in counts]
    low, high, *values = torch.stack([t.long() for t in (*torch.aminmax(labels), *counts)]).tolist()
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] (num_classes={num_classes}), got values in [{low}, {high}]. "
            "Remap the dataset's class ids to 0..num_classes-1, or raise num_classes."
        )
    return values


def drop_non_finite_rows(
    embeddings: torch.Tensor, labels: torch.Tensor, finite: torch.Tensor, num_non_finite: int, caller: str
) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """Removes the samples whose embedding holds a NaN or inf, with a warning, so they cannot poison a class mean.

    Args:
        finite: ``(N,)`` bool, True where a row is finite.
        num_non_finite: the number of False entries of ``finite``, already read back by :func:`check_label_range`.

    Returns:
        The finite embeddings, their labels, and the indices of the kept rows in the input.
    """
    if num_non_finite == 0:
        return embeddings, labels, torch.arange(embeddings.shape[0], device=embeddings.device)
    warnings.warn(
        f"{caller}: skipped {num_non_finite} of {embeddings.shape[0]} embeddings with NaN or inf values; they are "
        "not added to the class means. Non-finite embeddings usually mean a diverged step or an fp16 overflow.",
        RuntimeWarning,
        stacklevel=3,
    )
    kept = finite.nonzero().squeeze(1)
    return embeddings[kept], labels[kept], kept
