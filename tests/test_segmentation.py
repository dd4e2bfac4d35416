"""The segmentation loop without Ray: exact restart from a checkpoint, divergence, LR policies."""

from __future__ import annotations

import math

import pytest
import torch

from medtune.searchers.lr_schedules import ScheduleConfig, StepConfig
from medtune.trainables.data import DataConfig, load_split
from medtune.trainables.segmentation import ModelConfig, SegmentationRun, TrainConfig

DATA_CFG = DataConfig(num_volumes=6, val_fraction=0.34, seed=3, spatial_size=(16, 16, 16))
MODEL = ModelConfig(channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return load_split(DATA_CFG)


def make_run(data, method="step", epochs=4, **kw) -> SegmentationRun:
    return SegmentationRun(
        method=method,
        seed=11,
        data=data,
        model_cfg=MODEL,
        train_cfg=TrainConfig(epochs=epochs, batch_size=2, base_lr=1e-2, **kw),
        schedule_cfg=ScheduleConfig(step=StepConfig(step_size=1, gamma=0.5)),
    )


def test_restart_from_checkpoint_continues_exactly(data, tmp_path):
    straight = make_run(data)
    results_straight = [straight.run_epoch() for _ in range(4)]

    first = make_run(data)
    results_first = [first.run_epoch() for _ in range(2)]
    torch.save(first.state_dict(), tmp_path / "state.pt")
    # A new process would start with other RNG states: disturb them before restoring.
    torch.manual_seed(999)
    torch.rand(10)
    second = make_run(data)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    results_second = [second.run_epoch() for _ in range(2)]

    resumed = results_first + results_second
    assert [r.epoch for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(results_straight, resumed):
        assert a.lr == b.lr
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-6, abs=1e-7)
        assert a.dice == pytest.approx(b.dice, rel=1e-6, abs=1e-7)
    for p, q in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_step_policy_halves_the_lr_every_epoch_inside_the_run(data):
    run = make_run(data)
    lrs = [run.run_epoch().lr for _ in range(3)]
    assert lrs == pytest.approx([1e-2, 5e-3, 2.5e-3])


def test_qlearning_run_takes_its_lr_from_outside_only(data):
    run = make_run(data, method="qlearning")
    assert run.policy is None
    first = run.run_epoch()
    run.set_lr(3e-3)
    second = run.run_epoch()
    assert (first.lr, second.lr) == (1e-2, 3e-3)
    assert run.current_lr == 3e-3  # nothing inside the run changed it


def test_nan_loss_marks_the_epoch_diverged(data):
    run = make_run(data, method="fixed")
    real = run.loss_fn
    run.loss_fn = lambda logits, y: real(logits, y) * float("nan")
    result = run.run_epoch()
    assert result.diverged
    assert math.isnan(result.train_loss)
    assert result.metrics()["diverged"] == 1


def test_healthy_epoch_reports_every_metric(data):
    metrics = make_run(data, method="cosine").run_epoch().metrics()
    assert set(metrics) == {"epoch", "lr", "train_loss", "val_loss", "dice", "diverged"}
    assert 0.0 <= metrics["dice"] <= 1.0 and metrics["diverged"] == 0
    assert math.isfinite(metrics["val_loss"]) and metrics["train_loss"] > 0


def test_unknown_method_is_rejected(data):
    with pytest.raises(ValueError, match="cosin"):
        make_run(data, method="cosin")


def test_only_the_last_epoch_scores_the_held_out_test_split(data):
    run = make_run(data, method="fixed", epochs=2)
    first, last = run.run_epoch(), run.run_epoch()
    assert "test_dice" not in first.metrics()
    dice, _ = run.evaluate(data.test_images, data.test_labels)
    assert last.metrics()["test_dice"] == pytest.approx(dice)
