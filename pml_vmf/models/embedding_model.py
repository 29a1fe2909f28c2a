"""The embedding network: a timm backbone (``num_classes=0``) and a linear embedding head."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import timm
import torch
from timm.layers import freeze_batch_norm_2d

from ..errors import ConfigError


class EmbeddingModel(torch.nn.Module):
    """``backbone`` pooled features -> ``feature_norm`` -> ``head`` (linear) -> embeddings, not normalised (losses
    normalise).

    Attributes:
        backbone: a timm model created with ``num_classes=0``.
        head: ``Linear(width, embedding_size)``, ``width`` being the backbone's output width: timm's
            ``head_hidden_size`` where the model has one (MobileNetV3, whose ``num_classes=0`` output passes a
            pre-logits layer), else ``num_features``.
        feature_norm: ``LayerNorm`` without affine when built with ``feature_layernorm``, else ``Identity``.
    """

    def __init__(self, backbone: torch.nn.Module, embedding_size: int, feature_layernorm: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        # ProxyNCA++'s head normalises the pooled features without an affine (no parameters, no state).
        self.feature_norm = (
            torch.nn.LayerNorm(width, elementwise_affine=False) if feature_layernorm else torch.nn.Identity()
        )
        self.head = torch.nn.Linear(width, embedding_size)

    @property
    def embedding_size(self) -> int:
        return self.head.out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_norm(self.backbone(images)))


def _hub_is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def create_embedding_model(
    backbone: str,
    embedding_size: int,
    *,
    pretrained: bool = False,
    pretrained_file: Optional[str] = None,
    freeze_batchnorm: bool = False,
    global_pool: Optional[str] = None,
    feature_layernorm: bool = False,
) -> EmbeddingModel:
    """Builds any timm backbone by name with an embedding head.

    Args:
        backbone: a timm model name; pin a weight tag when ``pretrained`` (``resnet50.tv_in1k``, not ``resnet50``).
        embedding_size: the width of the embeddings.
        pretrained: load timm's weights for the tag from the Hugging Face hub.
        pretrained_file: load the backbone weights from this local file instead (a timm state dict, ``.pth`` or
            ``.safetensors``); works offline.
        freeze_batchnorm: replace BatchNorm layers by frozen ones (fixed statistics and affine weights), the usual
            setting for fine-tuning with small per-class batches, and what makes one process and many identical.
        global_pool: timm's global pooling (``avg``, ``max``, ``avgmax``, ``catavgmax``); None keeps the backbone's.
            ProxyNCA++ (Teh et al., ECCV 2020) pools with max + average: ``avgmax`` with ``feature_layernorm``.
        feature_layernorm: LayerNorm without affine parameters between the pooled features and the linear head.

    Raises:
        ConfigError: for a backbone timm does not know, a missing weight file, or hub weights asked for offline.
    """
    if backbone.split(".")[0] not in timm.list_models():
        close = timm.list_models(f"*{backbone.split('.')[0].split('_')[0]}*")[:10]
        raise ConfigError(f"timm has no model {backbone!r}. Did you mean one of: {', '.join(close)}?")
    kwargs: dict = {}
    if pretrained_file is not None:
        if not Path(pretrained_file).is_file():
            raise ConfigError(f"model.pretrained_file {pretrained_file} does not exist.")
        kwargs = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_file)))
    elif pretrained:
        if _hub_is_offline():
            raise ConfigError(
                f"model.pretrained=true asks the Hugging Face hub for {backbone!r} weights, but HF_HUB_OFFLINE is set. "
                "Download the weights where there is a connection and pass them with model.pretrained_file=PATH, "
                "or train from scratch with model.pretrained=false."
            )
        kwargs = dict(pretrained=True)
    if global_pool is not None:
        kwargs["global_pool"] = global_pool
    try:
        network = timm.create_model(backbone, num_classes=0, **kwargs)
    except (TypeError, ValueError, AssertionError) as error:
        if global_pool is None:
            raise
        raise ConfigError(
            f"model.global_pool={global_pool!r} is not a pooling {backbone} takes ({error}); timm's are avg, max, avgmax, catavgmax."
        ) from error
    if freeze_batchnorm:
        network = freeze_batch_norm_2d(network)
    return EmbeddingModel(network, embedding_size, feature_layernorm=feature_layernorm)
