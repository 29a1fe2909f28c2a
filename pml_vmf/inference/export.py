"""Exporting an :class:`Embedder` as a self-contained folder, with TorchScript and ONNX copies checked against it."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..files import make_readable, staged_folder
from ..models import CONFIG_FILE, MEANS_FILE, WEIGHTS_FILE, write_model_files
from .embedder import Embedder, UnitEmbeddings, load_embedder

FORMATS = ("safetensors", "torchscript", "onnx")
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
# What an export folder holds (embedder.json first: it marks one); --overwrite replaces only such a folder.
EXPORT_FILES = (CONFIG_FILE, WEIGHTS_FILE, MEANS_FILE, TORCHSCRIPT_FILE, ONNX_FILE)


class ExportCheckError(ValueError):
    """A compiled copy embeds differently from the eager model; nothing was written.

    Attributes:
        differences: ``{format: largest absolute difference}`` of every format checked.
    """

    def __init__(self, message: str, differences: dict) -> None:
        super().__init__(message)
        self.differences = differences


def export_embedder(
    embedder: Embedder,
    folder: Path,
    formats: Sequence[str],
    check_batch: torch.Tensor,
    *,
    atol: float = 1e-4,
    overwrite: bool = False,
) -> dict:
    """Writes the export folder, checking every copy against the eager model on ``check_batch`` first: the folder
    appears complete and checked, or not at all (a failed check or a failed ONNX export leaves nothing behind).

    The folder always holds ``embedder.json`` and ``model.safetensors`` (what :func:`load_embedder` reads); with
    ``torchscript`` also ``model.torchscript.pt`` (``torch.jit.trace``), with ``onnx`` ``model.onnx`` (opset 18,
    dynamic batch; input ``images`` ``(N, 3, H, W)`` normalised as ``embedder.json``'s eval transform says, output
    ``embeddings``, unit vectors).

    Args:
        embedder: what to export (on the CPU).
        folder: the export folder; it must not exist unless ``overwrite``, which replaces it whole.
        formats: a subset of :data:`FORMATS`.
        check_batch: transformed images ``(N, 3, H, W)`` (real ones: random noise hides numeric problems of
            activations that real images reach).
        atol: the largest difference of unit embeddings accepted.
        overwrite: replace an existing folder (once the new one is complete and checked).

    Returns:
        ``{format: largest absolute difference from the eager embeddings}``; safetensors is checked by reloading.

    Raises:
        ValueError: for an unknown format.
        FileExistsError: when ``folder`` exists and ``overwrite`` is false.
        ExportCheckError: when a copy differs by more than ``atol``.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"Unknown export format {', '.join(unknown)}: choose from {', '.join(FORMATS)}.")
    network = UnitEmbeddings(embedder.model.cpu()).eval()
    with (
        staged_folder(Path(folder), overwrite=overwrite, what="export", owned_names=EXPORT_FILES) as staging,
        torch.no_grad(),
    ):
        write_model_files(staging, embedder.model, embedder.config, embedder.class_means, embedder.class_statistics)
        eager = network(check_batch)
        differences = {"safetensors": (load_embedder(staging).embed_tensor(check_batch) - eager).abs().max().item()}
        if "torchscript" in formats:
            # Asked for by name: torch's deprecation notices for torch.jit (three per export) say nothing to act on.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.jit\.")
                torch.jit.trace(network, check_batch[:1]).save(str(staging / TORCHSCRIPT_FILE))
                make_readable(staging / TORCHSCRIPT_FILE)
                traced = torch.jit.load(str(staging / TORCHSCRIPT_FILE))
            differences["torchscript"] = (traced(check_batch) - eager).abs().max().item()
        if "onnx" in formats:
            differences["onnx"] = _export_onnx(network, check_batch, staging / ONNX_FILE, eager)
        failed = [name for name, difference in differences.items() if not difference <= atol]
        if failed:
            raise ExportCheckError(
                f"{', '.join(failed)} differ from the eager model by more than atol {atol} on {len(check_batch)} images "
                f"({', '.join(f'{k} {v:.2e}' for k, v in differences.items())}); nothing was written to {folder}.",
                differences,
            )
    return differences


def _export_onnx(network: torch.nn.Module, check_batch: torch.Tensor, path: Path, eager: torch.Tensor) -> float:
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError('ONNX export is checked with onnxruntime: pip install "pml-vmf[onnx]".') from error
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        network, (check_batch,), str(path), input_names=["images"], output_names=["embeddings"],
        dynamic_shapes={"images": {0: batch}}, opset_version=18, dynamo=True, external_data=False,
    )  # fmt: skip
    make_readable(path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(["embeddings"], {"images": check_batch.numpy()})
    return (torch.from_numpy(output) - eager).abs().max().item()
