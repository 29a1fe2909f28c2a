"""A 4-convolution network registered with timm as ``small_cnn``, for the paper's few-layer classification claim."""

from __future__ import annotations

import torch
from timm.models import register_model


class SmallCNN(torch.nn.Module):
    """Four 3x3 convolutions (32, 64, 64, 64 channels) with BatchNorm and ReLU, two max-pools, global average pool.

    Follows timm's feature-extractor interface: ``num_features``, ``forward`` to pooled features when
    ``num_classes=0``, a ``pretrained_cfg`` for :func:`timm.data.resolve_data_config`.
    """

    def __init__(self, num_classes: int = 0, in_chans: int = 3, **_) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list:
            return [torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]

        self.features = torch.nn.Sequential(
            *block(in_chans, 32), torch.nn.MaxPool2d(2), *block(32, 64), torch.nn.MaxPool2d(2),
            *block(64, 64), *block(64, 64), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        )  # fmt: skip
        self.num_features = 64
        self.head = torch.nn.Linear(64, num_classes) if num_classes else torch.nn.Identity()
        self.pretrained_cfg = {
            "input_size": (in_chans, 28, 28), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
            "mean": (0.5,) * in_chans, "std": (0.5,) * in_chans,
        }  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@register_model
def small_cnn(pretrained: bool = False, **kwargs) -> SmallCNN:
    """``timm.create_model("small_cnn", num_classes=0)``: :class:`SmallCNN`, no pretrained weights."""
    if pretrained:
        raise ValueError("small_cnn has no pretrained weights.")
    return SmallCNN(**kwargs)
