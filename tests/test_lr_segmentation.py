"""The segmentation loop without Ray: exact restart from a checkpoint, divergence, LR policies, and every
network, optimizer and loss the spec can name."""

from __future__ import annotations

import math
import re

import nibabel as nib
import numpy as np
import pytest
import torch

from medtune.errors import InputError
from medtune.searchers.lr_schedules import ScheduleConfig, StepConfig
from medtune.trainables.lr_data import DataConfig, SegmentationData, load_split
from medtune.trainables.lr_networks import NETWORKS, build_network, check_network, network_kwargs
from medtune.trainables.lr_segmentation import ModelConfig, SegmentationRun, TrainConfig, seed_everything

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


# --------------------------------------------------------------------------- networks, optimizers, losses


def tiny_data(channels: int, size: int, n: int = 2, classes: int = 3) -> SegmentationData:
    """``n`` random ``(channels, size, size, size)`` volumes with a labelled cube, one validation volume."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n + 1, channels, size, size, size, generator=g).numpy()
    labels = np.zeros((n + 1, 1, size, size, size), np.int64)
    labels[:, :, 4:12, 4:12, 4:12] = 1
    labels[:, :, 12:20, 4:12, 4:12] = classes - 1
    names = tuple(f"c{k}" for k in range(classes))
    return SegmentationData(images[:n], labels[:n], images[n:], labels[n:], classes, names)


@pytest.mark.parametrize("name", NETWORKS)
def test_each_network_builds_and_takes_a_training_step(name):
    torch.set_num_threads(1)
    # UNETR and BasicUNet need multiples of 16; SwinUNETR multiples of 32, and 64 so that its deepest map
    # (1/32 of the volume) has more than one voxel for instance normalisation.
    size = 64 if name == "SwinUNETR" else 32
    data = tiny_data(channels=2, size=size, n=1)
    cfg = ModelConfig(name=name)
    assert check_network(cfg, 2, 3, (size,) * 3) > 0
    run = SegmentationRun(method="fixed", seed=0, data=data, model_cfg=cfg,
                          train_cfg=TrainConfig(epochs=1, batch_size=1, base_lr=1e-3))
    before = [p.detach().clone() for p in run.model.parameters()]
    loss = run.train_epoch()
    assert math.isfinite(loss) and loss > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))
    dice, val_loss = run.validate()
    assert 0.0 <= dice <= 1.0 and math.isfinite(val_loss)


def test_model_kwargs_reach_the_network():
    net = build_network(ModelConfig(name="SegResNet", kwargs={"init_filters": 16, "blocks_down": [1, 1, 1]}),
                        3, 2, (16, 16, 16))
    assert net.convInit.conv.in_channels == 3 and net.convInit.conv.out_channels == 16
    assert len(net.down_layers) == 3
    assert network_kwargs(ModelConfig(name="UNETR"), 1, 2, (32, 32, 32))["img_size"] == (32, 32, 32)


def test_unknown_network_suggests_the_nearest():
    with pytest.raises(ValueError, match=r"name='SegResNett'.*did you mean 'SegResNet'"):
        ModelConfig(name="SegResNett")


def test_unknown_or_reserved_network_argument_is_named():
    with pytest.raises(ValueError, match=r"kwargs.init_filter=8 is not an argument of .*SegResNet.*'init_filters'"):
        ModelConfig(name="SegResNet", kwargs={"init_filter": 8})
    with pytest.raises(ValueError, match=r"kwargs.in_channels=4 is set by medtune from the data"):
        ModelConfig(kwargs={"in_channels": 4})


def test_network_that_cannot_take_the_volume_size_is_one_input_error():
    with pytest.raises(InputError, match=r"SwinUNETR.*data.spatial_size=\[24, 24, 24\]") as excinfo:
        check_network(ModelConfig(name="SwinUNETR"), 1, 3, (24, 24, 24))
    assert "\n" not in str(excinfo.value)
    with pytest.raises(InputError, match=r"model.name='DynUNet' with model.kwargs=.*cannot be built"):
        check_network(ModelConfig(name="DynUNet", kwargs={"kernel_size": [3]}), 1, 3, (16, 16, 16))


def test_default_run_is_the_original_unet_adam_dice_ce_recipe(data):
    """Defaults must reproduce the study's original model, optimiser and loss bit for bit."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    run = SegmentationRun(method="fixed", seed=5, data=data)
    seed_everything(5)
    reference = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(8, 16, 32), strides=(2, 2),
                     num_res_units=1, dropout=0.0)
    assert type(run.model) is UNet and type(run.loss_fn) is DiceCELoss
    for a, b in zip(reference.state_dict().values(), run.model.state_dict().values()):
        assert torch.equal(a, b)
    assert type(run.optimizer) is torch.optim.Adam
    assert run.optimizer.defaults["lr"] == 1e-3 and run.optimizer.defaults["weight_decay"] == 0.0


def test_sgd_with_nesterov_momentum_and_other_losses_are_built(data):
    from monai.losses import DiceFocalLoss, DiceLoss

    run = SegmentationRun(method="fixed", seed=0, data=data, model_cfg=MODEL, train_cfg=TrainConfig(
        optimizer="sgd", momentum=0.99, nesterov=True, weight_decay=3e-5, base_lr=1e-2, loss="dice_focal"))
    assert type(run.optimizer) is torch.optim.SGD and type(run.loss_fn) is DiceFocalLoss
    assert run.optimizer.defaults["momentum"] == 0.99 and run.optimizer.defaults["nesterov"] is True
    adamw = SegmentationRun(method="fixed", seed=0, data=data, model_cfg=MODEL,
                            train_cfg=TrainConfig(optimizer="adamw", loss="dice"))
    assert type(adamw.optimizer) is torch.optim.AdamW and type(adamw.loss_fn) is DiceLoss
    assert math.isfinite(run.train_epoch()) and math.isfinite(adamw.train_epoch())


def test_grad_clip_bounds_each_step(data):
    """Plain SGD moves the weights by lr * the clipped gradient, so a step's L2 length is at most lr * grad_clip."""
    lr, clip = 1e-2, 1e-3
    run = SegmentationRun(method="fixed", seed=0, data=data, model_cfg=MODEL,
                          train_cfg=TrainConfig(optimizer="sgd", momentum=0.0, base_lr=lr, batch_size=len(
                              data.train_images), grad_clip=clip))
    before = torch.cat([p.detach().flatten().clone() for p in run.model.parameters()])
    run.train_epoch()  # one batch: one step
    after = torch.cat([p.detach().flatten() for p in run.model.parameters()])
    step = float((after - before).norm())
    assert 0 < step <= lr * clip * (1 + 1e-4)


@pytest.mark.parametrize("kwargs, needle", [
    ({"optimizer": "adamm"}, "did you mean 'adam'"),
    ({"loss": "dice_cee"}, "did you mean 'dice_ce'"),
    ({"optimizer": "adam", "nesterov": True}, "nesterov=True needs optimizer='sgd'"),
    ({"optimizer": "sgd", "momentum": 0.0, "nesterov": True}, "momentum > 0"),
    ({"momentum": 1.0}, "momentum=1.0"),
    ({"grad_clip": -1.0}, "grad_clip=-1.0"),
])
def test_bad_optimizer_settings_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        TrainConfig(**kwargs)


# --------------------------------------------------------------------------- patches and sliding windows


def test_patch_training_draws_patches_and_restarts_exactly(data, tmp_path):
    def run():
        return SegmentationRun(method="fixed", seed=3, data=data, model_cfg=MODEL, patch_size=(8, 8, 8),
                               patches_per_volume=3, train_cfg=TrainConfig(epochs=4, batch_size=2, base_lr=1e-2))

    images, labels = next(iter(run().loader))
    assert images.shape == (6, 1, 8, 8, 8) and labels.shape == (6, 1, 8, 8, 8)  # 2 volumes x 3 patches
    assert type(images) is torch.Tensor and (labels > 0).flatten(1).any(1).sum() >= 3  # pos=neg=1: half on foreground
    straight = run()
    expected = [straight.run_epoch() for _ in range(3)]
    first = run()
    resumed = [first.run_epoch()]
    torch.save(first.state_dict(), tmp_path / "state.pt")
    torch.manual_seed(999)  # a new process starts with other RNG states
    second = run()
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    resumed += [second.run_epoch(), second.run_epoch()]
    assert [r.epoch for r in resumed] == [1, 2, 3]
    for a, b in zip(expected, resumed):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-6) and a.dice == pytest.approx(b.dice, rel=1e-6)


def test_sliding_window_dice_equals_a_full_volume_pass_when_the_window_covers_it(data):
    full = SegmentationRun(method="fixed", seed=0, data=data, model_cfg=MODEL)
    full.run_epoch()
    window = SegmentationRun(method="fixed", seed=0, data=data, model_cfg=MODEL, patch_size=(16, 16, 16))
    window.model.load_state_dict(full.model.state_dict())
    x = torch.tensor(data.val_images)
    full.model.eval(), window.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(window.predict(x), full.model(x), rtol=1e-5, atol=1e-5)
    assert window.evaluate(data.val_images, data.val_labels) == pytest.approx(
        full.evaluate(data.val_images, data.val_labels), rel=1e-6)


def test_sliding_window_scores_volumes_larger_than_the_patch(data):
    run = SegmentationRun(method="fixed", seed=0, data=data, model_cfg=MODEL, patch_size=(8, 8, 8))
    x = torch.tensor(data.val_images)
    with torch.no_grad():
        assert run.predict(x).shape == (len(x), 3, 16, 16, 16)
    dice, loss = run.evaluate(data.val_images, data.val_labels)
    assert 0 <= dice <= 1 and math.isfinite(loss)


def test_schedulefree_trains_in_train_mode_and_scores_and_saves_its_averaged_weights(data):
    """The trainable switches Schedule-Free AdamW to eval mode before scoring: the weights it scores (and
    checkpoints) are the average x, not the interpolation y that training steps at."""
    from schedulefree import AdamWScheduleFree

    run = SegmentationRun(method="schedulefree", seed=0, data=data, model_cfg=MODEL,
                          train_cfg=TrainConfig(epochs=2, batch_size=2, optimizer="sgd"))  # its own optimizer
    assert isinstance(run.optimizer, AdamWScheduleFree)
    first = next(run.model.parameters())
    run.train_epoch()
    assert run.optimizer.param_groups[0]["train_mode"]
    y = first.detach().clone()
    scored = []
    original = run.predict
    run.predict = lambda x: (scored.append(first.detach().clone()), original(x))[1]
    run.validate()
    assert not run.optimizer.param_groups[0]["train_mode"]
    assert not torch.equal(scored[0], y) and torch.equal(scored[0], first)  # scored on x
    assert torch.equal(run.state_dict()["model"][next(iter(run.model.state_dict()))], first.detach())
    run.train_epoch()  # back to y for training, and a real step
    assert run.optimizer.param_groups[0]["train_mode"]


def test_own_optimizer_methods_get_their_optimizer_and_onecycle_moves_per_batch(data):
    from medtune.searchers.poly_lr import ClippedSGD

    poly = SegmentationRun(method="poly", seed=0, data=data, model_cfg=MODEL, lr=1e-3,
                           train_cfg=TrainConfig(epochs=4, batch_size=2))
    assert isinstance(poly.optimizer, ClippedSGD) and poly.current_lr == 0.01  # schedules.poly, not lr=1e-3
    assert [poly.run_epoch().lr for _ in range(2)] == pytest.approx([0.01, 0.01 * 0.75 ** 0.9])
    one = SegmentationRun(method="onecycle", seed=0, data=data, model_cfg=MODEL,
                          train_cfg=TrainConfig(epochs=2, batch_size=2, base_lr=1e-2))
    steps = len(one.loader)
    assert steps == 2 and one.current_lr == pytest.approx(1e-2 / 25)
    one.train_epoch()
    assert one.control.policy.scheduler.last_epoch == steps  # stepped once per batch


# --------------------------------------------------------------------------- CacheDataset pipeline, CPU and CUDA


def test_cuda_trials_cache_on_the_gpu_and_use_the_thread_loader_cpu_trials_do_not(data):
    from monai.data import ThreadDataLoader
    from monai.transforms import RandCropByPosNegLabeld, ToDeviced

    from medtune.trainables.lr_data import arrays_as_split
    from medtune.trainables.lr_segmentation import choose_pipeline, make_dataset, make_loader, trial_transforms

    cuda, cpu = choose_pipeline("cuda", amp=True, deterministic=False), choose_pipeline("cpu", amp=True)
    assert (cuda.loader, cuda.to_device, cuda.cudnn_benchmark, cuda.amp) == ("ThreadDataLoader", True, True, True)
    assert (cpu.loader, cpu.to_device, cpu.cudnn_benchmark, cpu.amp) == ("DataLoader", False, False, False)
    assert choose_pipeline("cuda:1", amp=False).amp is False and choose_pipeline("cuda:1", amp=False).to_device
    # reproducible by default: deterministic kernels, no cuDNN autotuning (it picks kernels by timing them)
    fixed = choose_pipeline("cuda", amp=False)
    assert fixed.deterministic and not fixed.cudnn_benchmark and not cpu.deterministic
    split = arrays_as_split(data)
    crop = RandCropByPosNegLabeld(keys=("image", "label"), label_key="label", spatial_size=(8, 8, 8))
    steps = trial_transforms(split, cuda, "cuda", crop)
    assert isinstance(steps[-2], ToDeviced) and steps[-1] is crop  # cached on the device, then the random crop
    assert str(steps[-2].converter.device) == "cuda"
    assert not any(isinstance(s, ToDeviced) for s in trial_transforms(split, cpu, "cpu", crop))
    dataset = make_dataset(split.train, trial_transforms(split, cpu, "cpu"), 1.0)  # a CPU cache for both loaders
    assert isinstance(make_loader(cuda, dataset, 2, True, torch.Generator(), 3), ThreadDataLoader)
    plain = make_loader(cpu, dataset, 2, True, torch.Generator(), 0)
    assert type(plain) is torch.utils.data.DataLoader
    images, labels = next(iter(plain))
    assert images.shape == (2, 1, 16, 16, 16) and labels.dtype == torch.int64


def test_cache_rate_bounds_what_is_cached_and_changes_no_number():
    from medtune.trainables.lr_data import split_datalists

    def epoch(rate):
        split = split_datalists(DataConfig(num_volumes=6, val_fraction=0.34, seed=3, spatial_size=(16, 16, 16),
                                           test_fraction=0.0, cache_rate=rate))
        run = SegmentationRun(method="fixed", seed=2, data=split, model_cfg=MODEL,
                              train_cfg=TrainConfig(epochs=1, batch_size=2, base_lr=1e-2))
        return run.train_set, run.run_epoch()

    full_set, full = epoch(1.0)
    half_set, half = epoch(0.5)
    assert full_set.cache_num == 4 and half_set.cache_num == 2 and len(half_set) == 4
    assert half.train_loss == pytest.approx(full.train_loss, rel=1e-6) and half.dice == pytest.approx(full.dice)


def test_trials_of_one_process_share_the_split_s_preprocessed_cache_and_train_exactly_as_with_their_own():
    """A reused worker process keeps the split's caches: the next trial (and a PBT restart) preprocesses nothing,
    and every number is the one a trial building its own caches gets, patches included."""
    from medtune.trainables import lr_segmentation as segmentation
    from medtune.trainables.lr_data import split_datalists

    cfg = DataConfig(num_volumes=6, val_fraction=0.34, seed=3, spatial_size=(16, 16, 16), test_fraction=0.2)
    split = split_datalists(cfg)
    assert split.key == split_datalists(cfg).key and split.key != split_datalists(
        DataConfig(num_volumes=6, val_fraction=0.34, seed=4, spatial_size=(16, 16, 16), test_fraction=0.2)).key

    def run(data):
        return SegmentationRun(method="fixed", seed=2, data=data, model_cfg=MODEL, patch_size=(8, 8, 8),
                               patches_per_volume=2, train_cfg=TrainConfig(epochs=2, batch_size=2, base_lr=1e-2))

    def curve(r):
        out = [r.run_epoch() for _ in range(2)]
        return [(e.train_loss, e.val_loss, e.dice, e.test_dice) for e in out]

    segmentation._PROCESS_CACHES.clear()
    first = run(split)
    cached = {k: id(v) for k, v in segmentation._PROCESS_CACHES.items()}
    assert {k[1] for k in cached} == {"train", "val"}
    expected = curve(first)  # scores the test split at its last epoch: its cache joins
    second = run(split)  # the next trial in the same process
    assert {k: id(v) for k, v in segmentation._PROCESS_CACHES.items() if k[1] != "test"} == cached
    assert second.train_set.data is first.train_set.data  # the same cached volumes under its own crop
    assert curve(second) == expected
    # A split handed in as arrays (no key) caches per trial, with the same numbers for the same volumes.
    from dataclasses import replace

    own = run(replace(split, key=None))
    assert own.train_set.data is not first.train_set.data and curve(own) == expected
    # Item by item, a shared cache under a crop gives what a CacheDataset ending in that crop gives.
    from monai.transforms import RandCropByPosNegLabeld

    crops = [RandCropByPosNegLabeld(keys=("image", "label"), label_key="label", spatial_size=(8, 8, 8),
                                    num_samples=2) for _ in range(2)]
    pipeline = first.pipeline
    alone = segmentation.make_dataset(split.train, segmentation.trial_transforms(split, pipeline, "cpu", crops[0]), 1.0)
    shared = segmentation.shared_dataset(split, "train", pipeline, "cpu", crops[1])
    for c in crops:  # as a trial seeds its crop, once its datasets and loaders exist
        c.set_random_state(seed=7)
    for i in range(len(split.train)):
        for a, b in zip(alone[i], shared[i]):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    # Another split replaces the process's caches instead of piling up beside them.
    other = split_datalists(DataConfig(num_volumes=6, val_fraction=0.34, seed=5, spatial_size=(16, 16, 16)))
    run(other)
    assert {k[0] for k in segmentation._PROCESS_CACHES} == {other.key}


def test_large_offcentre_task_trains_on_patches_and_scores_the_whole_volume(tmp_path):
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    from medtune.trainables.lr_data import split_datalists
    from tests.helpers_decathlon import write_offcentre_decathlon

    root = write_offcentre_decathlon(tmp_path / "big", num_cases=4, shape=(48, 48, 48))
    cfg = DataConfig(source="decathlon", path=str(root), test_fraction=0.0, val_fraction=0.25,
                     patch_size=(12, 12, 12), patches_per_volume=2, foreground_ratio=0.5)
    split = split_datalists(cfg)
    run = SegmentationRun(method="fixed", seed=0, data=split, model_cfg=MODEL, patch_size=cfg.patch_size,
                          patches_per_volume=2, train_cfg=TrainConfig(epochs=1, batch_size=3, base_lr=1e-2))
    hits = []
    for _ in range(4):  # pos=neg=1: about half the patches are centred on the small off-centre structure
        for images, labels in run.loader:
            assert images.shape[1:] == (1, 12, 12, 12) and labels.shape[1:] == (1, 12, 12, 12)
            hits += (labels > 0).flatten(1).any(1).tolist()
    assert len(hits) == 4 * 3 * 2 and sum(hits) >= 0.35 * len(hits)  # a uniform 12^3 patch hits it ~15% of the time
    result = run.run_epoch()
    assert math.isfinite(result.train_loss) and 0 <= result.dice <= 1
    val = run.val_set[0]
    file_label = np.asanyarray(nib.load(split.val[0]["label"]).dataobj)
    assert val["label"].shape == (1, 48, 48, 48) and int((val["label"] > 0).sum()) == int((file_label > 0).sum())
    centre = val["label"][0, 18:30, 18:30, 18:30]
    assert not (centre > 0).any()  # a centre crop of the patch size would see no foreground at all
    with torch.no_grad():  # the score covers every voxel: recompute it on the whole volume by hand
        logits = run.predict(val["image"][None])
    assert logits.shape == (1, 3, 48, 48, 48)
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    metric(one_hot(logits.argmax(1, keepdim=True), 3), one_hot(val["label"][None].long(), 3))
    assert run.validate()[0] == pytest.approx(float(metric.aggregate()), abs=1e-6)


def test_the_lr_spec_takes_fractional_gpus_and_a_cache_rate():
    from medtune.cluster.studies.registry import load_spec

    spec = load_spec("lr-schedulers", smoke=True, overrides=["resources.gpus_per_trial=0.25", "data.cache_rate=0.5"])
    assert spec.resources.gpus_per_trial == 0.25 and spec.data.cache_rate == 0.5
    assert load_spec("lr-schedulers").data.cache_rate == 1.0


def test_the_thread_loader_leaves_torch_global_rng_alone(data):
    from medtune.trainables.lr_data import arrays_as_split
    from medtune.trainables.lr_segmentation import choose_pipeline, make_dataset, trial_transforms

    cuda = choose_pipeline("cuda", amp=False)
    split = arrays_as_split(data)
    dataset = make_dataset(split.val, trial_transforms(split, choose_pipeline("cpu", False), "cpu"), 1.0)
    torch.manual_seed(5)
    torch.rand(3)
    expected = torch.rand(4)
    torch.manual_seed(5)
    torch.rand(3)
    run = SegmentationRun(method="fixed", seed=0, data=data, model_cfg=MODEL)
    run.pipeline = cuda  # what validate() builds on a GPU trial, over a CPU cache
    assert type(run._batches(dataset)).__name__ == "ThreadDataLoader"
    torch.manual_seed(5)
    torch.rand(3)
    run._batches(dataset)
    assert torch.equal(torch.rand(4), expected)  # not reset to the seed's start


def test_a_search_trial_never_reads_the_test_split_and_its_qlearning_decides_with_a_private_agent(data):
    from medtune.searchers.qlearning_agent import QLearningLRAgent

    search = SegmentationRun(method="qlearning", seed=1, data=data, model_cfg=MODEL,
                             train_cfg=TrainConfig(epochs=1, batch_size=4), score_test=False,
                             qlearning={"patience": 1, "cooldown": 0, "alpha": 0.3})
    assert isinstance(search.policy, QLearningLRAgent) and search.policy.config.alpha == 0.3
    assert search.run_epoch().test_dice is None and search.test_reads == 0  # its last epoch
    with pytest.raises(RuntimeError, match="may not read the test split"):
        search.test()
    final = SegmentationRun(method="qlearning", seed=1, data=data, model_cfg=MODEL,
                            train_cfg=TrainConfig(epochs=1, batch_size=4))
    assert final.policy is None  # the shared scheduler sets its LR
    assert final.run_epoch().test_dice is not None and final.test_reads == 1
