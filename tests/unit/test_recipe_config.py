"""Recipe configs, the loss registry and the timm model: every shipped config loads, bad input is a clear error."""

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from pml_vmf.models import create_embedding_model
from pml_vmf.training import LOSSES, ConfigError, RecipeConfig, build_training_loss, load_config, save_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "recipes" / "configs").glob("*.yaml"))


def test_every_protocol_has_a_shipped_config():
    assert {p.stem for p in CONFIGS} >= {"cub200", "cars196", "sop", "inshop", "image_folder", "fashion_mnist"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    config = load_config(path)
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == dataclasses.replace(config, by_loss={})  # resolved: by_loss applied
    assert config.loss.name in LOSSES
    if config.model.pretrained:
        assert "." in config.model.backbone, "pin the timm weight tag of pretrained backbones"


@pytest.mark.parametrize("data_set", ["emoji", "glyphs"])
@pytest.mark.parametrize("loss", ["vmf", "multi_similarity"])
def test_the_convergence_recipe_is_the_8_epoch_protocol_plus_what_was_benchmarked(data_set, loss):
    # BENCHMARKS.md's convergence rows ran the 8-epoch config with these keys: the shipped recipe must train the same
    configs = CONFIGS[0].parent
    patience = {"emoji": 3, "glyphs": "null"}[data_set]
    benchmarked = [
        "train.epochs=30",
        f"train.early_stopping_patience={patience}",
        "run.channels_last=true",
        "loss.means.source=miner",
        "loss.means.full_pass_every=8",
        "loss.means.publish_every=null",
        "loss.params.vmf.kappa=auto",  # level with the tuned 8 on both sets' validation classes (8-epoch protocol)
    ]
    if loss == "vmf":
        benchmarked += ["optim.head_warmup_epochs=0", "model.global_pool=avgmax", "model.feature_layernorm=true"]
    same_name = [f"loss.name={loss}", "run.name=run"]
    recipe = load_config(configs / f"{data_set}_pretrained.yaml", same_name)
    protocol = load_config(configs / f"{data_set}_pretrained_8ep.yaml", same_name + benchmarked)
    assert dataclasses.replace(recipe, by_loss={}) == dataclasses.replace(protocol, by_loss={})


def test_overrides_are_parsed_as_yaml_and_applied_last():
    config = load_config(
        CONFIGS[0], ["optim.lr=3e-4", "eval.recall_at=[1, 10]", "loss.params.vmf.kappa=8", "data.root=null"]
    )
    assert config.optim.lr == 3e-4 and config.eval.recall_at == [1, 10] and config.data.root is None
    assert config.loss.params["vmf"]["kappa"] == 8


def test_switching_the_loss_keeps_each_loss_its_own_parameters():
    config = load_config(CONFIGS[0], ["loss.name=multi_similarity", "loss.params.multi_similarity.alpha=4"])
    assert config.loss.params["vmf"] == {"kappa": 16.0, "margin": 0.0} and config.loss.params["multi_similarity"] == {
        "alpha": 4
    }


@pytest.mark.parametrize("override", ["train.epohcs=3", "modle.backbone=resnet18", "data.image_size.x=1"])
def test_an_unknown_key_lists_the_valid_ones(override):
    with pytest.raises(ConfigError, match="Unknown config key|is not") as error:
        load_config(None, [override])
    if "Unknown" in str(error.value):
        assert "train.epochs" in str(error.value) and "model.backbone" in str(error.value)


def test_a_value_of_the_wrong_kind_is_an_error():
    with pytest.raises(ConfigError, match="train.epochs' takes a int"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="is a section"):
        load_config(None, ["train=3"])


def test_yaml_syntax_errors_name_the_file_and_line(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("train:\n  epochs: 3\n  batch_size: [32\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML: .*line 3"):
        load_config(config)
    with pytest.raises(ConfigError, match="eval.recall_at=.* its value is not valid YAML"):
        load_config(None, ["eval.recall_at=[1, 2"])


def test_an_unknown_key_in_a_yaml_file_is_an_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: 2\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="'train.lr'"):
        load_config(tmp_path / "bad.yaml")


def test_defaults_are_the_documented_dataclass():
    assert RecipeConfig().loss.name == "vmf" and RecipeConfig().train.samples_per_class == 4


def test_head_warmup_holds_the_backbone_learning_rate_at_zero_then_follows_the_cosine():
    from pml_vmf.training.builders import lr_lambdas as _lr_lambdas

    backbone, head = _lr_lambdas(2, total_steps=100, head_warmup_steps=10, cosine=True)
    assert [backbone(s) for s in (0, 9)] == [0.0, 0.0] and backbone(10) == head(10) > 0.9
    assert head(0) == 1.0 and head(100) == pytest.approx(0.0)


def test_each_loss_gets_its_own_settings_from_one_config(tmp_path):
    path = tmp_path / "shared.yaml"
    path.write_text(
        "optim: {head_warmup_epochs: 1}\n"
        "by_loss:\n  vmf: {optim.head_warmup_epochs: 0, model: {global_pool: avgmax, feature_layernorm: true}}\n"
    )
    vmf, triplet = (load_config(path, [f"loss.name={name}"]) for name in ("vmf", "triplet"))
    assert (vmf.optim.head_warmup_epochs, vmf.model.global_pool, vmf.model.feature_layernorm) == (0, "avgmax", True)
    assert (triplet.optim.head_warmup_epochs, triplet.model.global_pool, triplet.model.feature_layernorm) == (
        1,
        None,
        False,
    )
    # the command line wins over the entry, and can edit the entry itself
    assert load_config(path, ["model.global_pool=max"]).model.global_pool == "max"
    assert load_config(path, ["by_loss.vmf.model.global_pool=avg"]).model.global_pool == "avg"
    assert (
        load_config(path, ["by_loss.triplet.optim.head_warmup_epochs=3", "loss.name=triplet"]).optim.head_warmup_epochs
        == 3
    )
    # the saved config holds the resolved values without the entry, which read again would undo the override
    save_config(load_config(path, ["model.global_pool=max"]), tmp_path / "saved.yaml")
    saved = load_config(tmp_path / "saved.yaml")
    assert (saved.model.global_pool, saved.optim.head_warmup_epochs, saved.by_loss) == ("max", 0, {})
    # the scheduler reads the resolved warm-up: the backbone's first learning rate is 0 only for the loss that warms up
    from pml_vmf.training.builders import build_scheduler

    for config, backbone_lr in ((vmf, 1.0), (triplet, 0.0)):
        optimizer = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]} for _ in range(2)], lr=1.0)
        build_scheduler(config, optimizer, steps_per_epoch=10)
        assert [group["lr"] for group in optimizer.param_groups] == [backbone_lr, 1.0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.protocol=class_disjoint"], "needs data.protocol=closed_set"),
        (["data.val_by=classes"], "val_by classes"),
        (["loss.name=triplet"], "triplet has no class weights"),
    ],
)
def test_selecting_by_classifier_accuracy_where_it_cannot_be_measured_is_refused(overrides, message, tmp_path):
    from accelerate import Accelerator

    from pml_vmf.training.builders import build_loss, build_splits
    from pml_vmf.training.evaluator import RunEvaluator

    for split in ("train", "test"):
        for name in ("ant", "bee", "cat"):
            for n in range(4):
                (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8)).save(tmp_path / split / name / f"{n}.png")
    base = [
        "data.dataset=image_folder",
        f"data.root={tmp_path}",
        "data.protocol=closed_set",
        "data.val_fraction=0.25",
        "eval.select_by=classifier_accuracy",
    ]
    accelerator = Accelerator(cpu=True)
    for extra, refused in (([], False), (overrides, True)):
        config = load_config(None, [*base, *extra])
        splits = build_splits(config)
        evaluator = RunEvaluator(config, accelerator, None, splits, {}, num_classes=3)
        if refused:
            with pytest.raises(ConfigError, match=message):
                evaluator.check_select_by(build_loss(config, 3, accelerator).loss)
        else:  # the closed set validated by images, with vMF: measurable
            evaluator.check_select_by(build_loss(config, 3, accelerator).loss)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss.means.full_pass_every=0"], "loss.means.full_pass_every is a number of epochs, at least 1"),
        (["loss.means.publish_every=0"], "loss.means.publish_every is a number of steps, at least 1"),
        (["loss.means.full_pass_every=2", "loss.means.source=full_pass"], "already passes after every epoch"),
        (["loss.means.source=full_pass", "loss.means.init_full_pass=false"], "would be zero for the whole first epoch"),
        (["loss.means.source=sometimes"], "loss.means.source must be miner or full_pass"),
        (["loss.means.momentum=1"], r"loss.means.momentum is the share of the old mean kept, in \[0, 1\)"),
        (["loss.means.ema=1.5"], r"loss.means.ema is the share of the old mean kept"),
        (
            ["loss.name=triplet", "loss.means.shard=true"],
            "loss.means.shard acts on vMF's class means; triplet has none",
        ),
        (["optim.optimizer=adam"], "optim.optimizer must be adamw or sgd"),
        (["loss.params={vfm: {kappa: 8}}"], "vfm is not one"),
        (["by_loss.vfm.optim.head_warmup_epochs=0"], "by_loss is keyed by loss name"),
        (
            ["by_loss.vmf.optim.head_warmup_epochs=-1"],
            "optim.head_warmup_epochs must be an integer of at least 0, got -1",
        ),
        (["by_loss.triplet.model.global_poll=avg"], "by_loss.triplet: Unknown config key 'model.global_poll'"),
        (["by_loss.triplet.train.epochs=many"], "by_loss.triplet: Config key 'train.epochs' takes an? int"),
        (["by_loss.vmf.loss.name=triplet"], "by_loss.vmf sets loss.name"),
        (["by_loss.vmf=3"], "by_loss.vmf holds config keys for vmf's runs"),
        (["train.early_stopping_patience=0"], "at least 1"),
        (["train.early_stopping_patience=true"], "'train.early_stopping_patience' takes a int or null, got True"),
        (["train.batch_size=-4"], "train.batch_size must be an integer of at least 1, got -4"),
        (["train.samples_per_class=0"], "train.samples_per_class must be an integer of at least 1"),
        (["data.image_size=0"], "data.image_size must be an integer of at least 1"),
        (["train.epochs=-1"], "train.epochs must be an integer of at least 0"),
        (["train.max_steps_per_epoch=0"], "train.max_steps_per_epoch must be at least 1"),
        (
            ["eval.select_by=map_at_r"],
            "eval.select_by picks the tested checkpoint by a validation metric: one of precision_at_1",
        ),
        (["eval.select_by=recall_at_16"], "recall_at_8, classifier_accuracy"),
    ],
)
def test_contradictory_or_misspelt_settings_are_rejected_before_anything_loads(overrides, message):
    from pml_vmf.training.builders import check_config

    with pytest.raises(ConfigError, match=message):
        check_config(load_config(None, overrides))


def test_the_backbone_can_learn_slower_than_the_head():
    from pml_vmf.training.builders import build_optimizer

    config = load_config(
        None, ["model.backbone=test_resnet", "model.embedding_size=8", "optim.lr=1e-3", "optim.backbone_lr=1e-4"]
    )
    model = create_embedding_model("test_resnet", 8)
    optimizer = build_optimizer(config, model, build_training_loss("normalized_softmax", 4, 8))
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-3, config.optim.loss_lr]
    default = build_optimizer(load_config(None, ["optim.lr=1e-3"]), model, build_training_loss("vmf", 4, 8))
    assert [g["lr"] for g in default.param_groups] == [1e-3, 1e-3]
