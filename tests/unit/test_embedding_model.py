"""The embedding model: timm backbones with their head, weights from a file, the small CNN, the transforms."""

import pytest
import torch
from PIL import Image

from pml_vmf.models import create_embedding_model
from pml_vmf.training import ConfigError


def test_timm_backbone_with_embedding_head_and_frozen_batchnorm():
    model = create_embedding_model("test_resnet", 16, freeze_batchnorm=True)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 16)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_backbones_with_a_pre_logits_layer_get_a_head_of_its_width():
    model = create_embedding_model("mobilenetv3_small_050", 16)  # pooled 288 -> conv_head 1024 with num_classes=0
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 16)


def test_hub_weights_asked_for_offline_fail_at_once_and_say_how_to_pass_a_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="model.pretrained_file=PATH"):
        create_embedding_model("resnet18.a1_in1k", 16, pretrained=True)


def test_backbone_weights_load_from_a_local_file(tmp_path):
    import timm

    source = timm.create_model("test_resnet", num_classes=0)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = create_embedding_model("test_resnet", 16, pretrained_file=str(tmp_path / "weights.pth"))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value)
    with pytest.raises(ConfigError, match="does not exist"):
        create_embedding_model("test_resnet", 16, pretrained_file=str(tmp_path / "absent.pth"))


def test_an_unknown_backbone_suggests_close_names():
    with pytest.raises(ConfigError, match="timm has no model 'resnet_18'"):
        create_embedding_model("resnet_18", 16)


def test_small_cnn_is_a_timm_model_with_four_convolutions():
    import timm

    network = timm.create_model("small_cnn", num_classes=0)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in network.modules()) == 4
    assert create_embedding_model("small_cnn", 16)(torch.randn(2, 3, 28, 28)).shape == (2, 16)


def test_weights_of_another_implementation_are_renamed_by_position():
    import timm

    from pml_vmf.models.pretrained_files import state_dict_by_position

    source_model = timm.create_model("test_resnet", num_classes=0)
    foreign = {f"other.{i}": t for i, t in enumerate(source_model.state_dict().values())}
    target = timm.create_model("test_resnet", num_classes=0)
    target.load_state_dict(state_dict_by_position(foreign, target))
    for key, value in source_model.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)
    with pytest.raises(ValueError, match="not the same architecture"):
        state_dict_by_position(dict(list(foreign.items())[:-1]), target)


def test_normalisation_can_override_the_backbone_config():

    from pml_vmf.data import build_transforms

    model = create_embedding_model("test_resnet", 8)
    _, default = build_transforms(model.backbone, 32)
    _, custom = build_transforms(model.backbone, 32, mean=[0.25, 0.25, 0.25], std=[0.5, 0.5, 0.5])
    image = Image.new("RGB", (40, 40), (255, 255, 255))
    assert torch.allclose(custom(image), torch.full((3, 32, 32), 1.5))  # (1 - 0.25) / 0.5
    assert not torch.allclose(default(image), torch.full((3, 32, 32), 1.5))
