"""pml-vmf: the von Mises-Fisher loss of Zhe, Chen & Yan (arXiv 1802.09662) for pytorch-metric-learning."""

__version__ = "0.1.0.dev0"

from .class_means import ClassMeanEstimate, compute_class_means, estimate_class_means, estimate_concentration
from .global_mean_miner import GlobalMeanMiner
from .vmf_loss import VMFLoss



def load_embedder(path, device="cpu"):
    """Loads a trained embedding model for use: see :func:`pml_vmf.inference.load_embedder` (needs the recipes
    extra, ``pip install "pml-vmf[recipes]"``, for timm)."""
    from .inference import load_embedder as load

    return load(path, device)


__all__ = [
    "ClassMeanEstimate",
    "GlobalMeanMiner",
    "VMFLoss",
    "compute_class_means",
    "estimate_class_means",
    "estimate_concentration",
    "load_embedder",
]
