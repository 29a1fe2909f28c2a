"""Exporting an :class:`Embedder` as a self-contained folder, with TorchScript and ONNX copies checked against it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .embedder import Embedder, UnitEmbeddings

FORMATS = ("safetensors", "torchscript", "onnx")
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"


def export_embedder(embedder: Embedder, folder: Path, formats: Sequence[str], check_batch: torch.Tensor) -> dict:
    """Writes the export folder and checks every compiled copy against the eager model on ``check_batch``.

    The folder always holds ``embedder.json`` and ``model.safetensors`` (what :func:`load_embedder` reads); with
    ``torchscript`` also ``model.torchscript.pt`` (``torch.jit.trace``), with ``onnx`` ``model.onnx`` (opset 18,
    dynamic batch; input ``images`` ``(N, 3, H, W)`` normalised as ``embedder.json``'s eval transform says, output
    ``embeddings``, unit vectors).

    Args:
        embedder: what to export (on the CPU).
        folder: the export folder.
        formats: a subset of :data:`FORMATS`.
        check_batch: transformed images ``(N, 3, H, W)`` (real ones: random noise hides numeric problems of
            activations that real images reach).

    Returns:
        ``{format: largest absolute difference from the eager embeddings}``; safetensors is checked by reloading.

    Raises:
        ValueError: for an unknown format.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"Unknown export format {', '.join(unknown)}: choose from {', '.join(FORMATS)}.")
    from .embedder import load_embedder

    folder = Path(folder)
    embedder.save(folder)
    network = UnitEmbeddings(embedder.model.cpu()).eval()
    with torch.no_grad():
        eager = network(check_batch)
        differences = {"safetensors": (load_embedder(folder).embed_tensor(check_batch) - eager).abs().max().item()}
        if "torchscript" in formats:
            traced = torch.jit.trace(network, check_batch[:1])
            traced.save(str(folder / TORCHSCRIPT_FILE))
            differences["torchscript"] = (torch.jit.load(str(folder / TORCHSCRIPT_FILE))(check_batch) - eager).abs().max().item()
        if "onnx" in formats:
            differences["onnx"] = _export_onnx(network, check_batch, folder / ONNX_FILE, eager)
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
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(["embeddings"], {"images": check_batch.numpy()})
    return (torch.from_numpy(output) - eager).abs().max().item()
