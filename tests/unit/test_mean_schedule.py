"""The vMF mean schedule: when the means are published, full passes, the EMA, and other losses left alone."""

import torch

from pml_vmf.training import build_training_loss, load_config


def test_vmf_without_a_step_schedule_publishes_its_means_once_per_epoch():
    training_loss = build_training_loss("vmf", 2, 4, miner_params={"update_every": None})
    labels = torch.tensor([0, 0, 1, 1])
    batches = [torch.randn(4, 4) for _ in range(3)]
    for embeddings in batches:
        training_loss(embeddings, labels)
    units = torch.nn.functional.normalize(torch.stack(batches), dim=2).view(3, 2, 2, 4)  # batch, class, sample, dim
    first_batch_means = torch.nn.functional.normalize(units[0].sum(1))
    torch.testing.assert_close(training_loss.loss.means, first_batch_means)  # seeded, not yet updated
    _schedule(training_loss).end_epoch(0)
    torch.testing.assert_close(training_loss.loss.means, torch.nn.functional.normalize(units.sum((0, 2))))


def test_vmf_with_a_step_schedule_leaves_the_means_alone_at_the_end_of_an_epoch():
    training_loss = build_training_loss("vmf", 2, 4, miner_params={"update_every": 50})
    training_loss(torch.randn(4, 4), torch.tensor([0, 0, 1, 1]))
    seeded = training_loss.loss.means.clone()
    training_loss(torch.randn(4, 4), torch.tensor([0, 0, 1, 1]))
    _schedule(training_loss).end_epoch(0)
    torch.testing.assert_close(training_loss.loss.means, seeded)


def _schedule(training_loss, **settings):
    from pml_vmf.training.mean_schedule import VMFMeanSchedule

    def no_full_pass():
        raise AssertionError("this schedule makes no full pass")

    return VMFMeanSchedule(training_loss, settings.pop("full_pass", no_full_pass), lambda t: t, **settings)


def test_the_mean_schedule_is_the_one_place_the_vmf_means_change():
    from pml_vmf.class_means import ClassMeanEstimate
    from pml_vmf.training.builders import check_config
    from pml_vmf.training.mean_schedule import MeanSchedule, build_mean_schedule

    # vMF's settings in a config that trains several losses (emoji_pretrained.yaml) leave another loss alone
    config = load_config(None, ["loss.name=triplet", "loss.means.full_pass_every=8"])
    check_config(config)
    triplet = build_mean_schedule(config, build_training_loss("triplet", 2, 4), None, None)
    assert type(triplet) is MeanSchedule and not triplet.holds_means and triplet.end_epoch(0) == {}
    passes = []

    def full_pass():
        passes.append(len(passes))
        means = torch.eye(4)[:2] * (len(passes) + 1)  # a different estimate at each pass
        ones = torch.ones(2)
        return ClassMeanEstimate(means, ones.long(), ones, ones)

    training_loss = build_training_loss("vmf", 2, 4, use_miner=False)
    schedule = _schedule(training_loss, full_pass=full_pass, source="full_pass", init_full_pass=True)
    assert training_loss.loss.stale_means_warning_steps is None  # refreshed every epoch, however long
    schedule.before_training(global_step=5)  # a resumed run: its means come from the checkpoint
    assert passes == []
    schedule.before_training(global_step=0)
    torch.testing.assert_close(training_loss.loss.means, torch.eye(4)[:2] * 2)
    record = schedule.end_epoch(0)
    assert passes == [0, 1] and set(record) >= {"vmf/resultant_length_mean", "vmf/concentration_mean"}
    torch.testing.assert_close(training_loss.loss.means, torch.eye(4)[:2] * 3)
    assert record["vmf/full_pass"] == 1.0
    ema = _schedule(training_loss, init_full_pass=False, ema=0.5)
    ema.after_step(torch.tensor([[0.0, 1, 0, 0], [0, 0, 1, 0]]), torch.tensor([0, 1]))
    expected = torch.nn.functional.normalize(torch.tensor([[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0]]), dim=1)
    torch.testing.assert_close(training_loss.loss.means, expected)


def test_full_pass_every_n_epochs_replaces_the_miners_means_on_those_epochs_only():
    from pml_vmf.class_means import ClassMeanEstimate

    pass_means = torch.eye(4)[:2]
    passes = []

    def full_pass():
        passes.append(True)
        ones = torch.ones(2)
        return ClassMeanEstimate(pass_means.clone(), ones.long(), ones, ones)

    training_loss = build_training_loss("vmf", 2, 4, miner_params={"update_every": None})
    schedule = _schedule(training_loss, full_pass=full_pass, init_full_pass=False, full_pass_every=3)
    labels = torch.tensor([0, 0, 1, 1])
    for epoch in range(6):
        embeddings = torch.randn(4, 4)
        training_loss(embeddings, labels)
        record = schedule.end_epoch(epoch)
        epoch_means = torch.nn.functional.normalize(torch.nn.functional.normalize(embeddings).view(2, 2, 4).sum(1))
        expected = pass_means if epoch in (2, 5) else epoch_means  # the miner's sums hold this epoch's batch only
        torch.testing.assert_close(training_loss.loss.means, expected)
        assert record["vmf/full_pass"] == float(epoch in (2, 5)) and len(passes) == (epoch + 1) // 3
