"""pml-vmf: the von Mises-Fisher loss of Zhe, Chen & Yan (arXiv 1802.09662) for pytorch-metric-learning."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"

# Imported on first use (PEP 562), so that `import pml_vmf.training.config` (a script's --help) does not load torch.
_EXPORTS = {
    "ClassMeanEstimate": ".class_means",
    "compute_class_means": ".class_means",
    "estimate_class_means": ".class_means",
    "estimate_concentration": ".class_means",
    "GlobalMeanMiner": ".global_mean_miner",
    "PartialFCVMFLoss": ".partial_fc",
    "VMFLoss": ".vmf_loss",
}

if TYPE_CHECKING:
    from .class_means import ClassMeanEstimate, compute_class_means, estimate_class_means, estimate_concentration
    from .global_mean_miner import GlobalMeanMiner
    from .partial_fc import PartialFCVMFLoss
    from .vmf_loss import VMFLoss


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_embedder(path, device="cpu"):
    """Loads a trained embedding model for use: see :func:`pml_vmf.inference.load_embedder` (needs the recipes
    extra, ``pip install "pml-vmf[recipes]"``, for timm)."""
    try:
        from .inference import load_embedder as load
    except ModuleNotFoundError as error:
        if error.name not in ("timm", "torchvision", "safetensors", "PIL"):
            raise
        raise ModuleNotFoundError(
            f'load_embedder needs {error.name}, which comes with the recipes extra: pip install "pml-vmf[recipes]" '
            '(from a clone: pip install -e ".[recipes]").',
            name=error.name,
        ) from error
    return load(path, device)


__all__ = [
    "ClassMeanEstimate",
    "GlobalMeanMiner",
    "PartialFCVMFLoss",
    "VMFLoss",
    "compute_class_means",
    "estimate_class_means",
    "estimate_concentration",
    "load_embedder",
]
