"""The plan from a Decathlon task's fingerprint, native-size preprocessing, the disk cache and seeded augmentation."""

from __future__ import annotations

import math
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose

from medtune.errors import InputError
from medtune.trainables.lr_data import DataConfig, split_datalists
from medtune.trainables.lr_networks import ModelConfig, check_network
from medtune.trainables.lr_segmentation import SegmentationRun, TrainConfig, make_dataset
from medtune.trainables.plan import (
    Fingerprint,
    apply_plan,
    fingerprint_decathlon,
    plan_for,
    preprocessed_shape,
)
from tests.helpers_decathlon import write_task

GiB = 2 ** 30


def _labelled(path) -> int:
    return int((np.asanyarray(nib.load(path).dataobj) > 0).sum())


def test_fingerprint_and_plan_of_an_anisotropic_task_keep_the_coarse_axis_and_match_the_preprocessing(tmp_path):
    shapes = [(20, 24, 6), (22, 20, 5), (18, 22, 6), (20, 20, 7)]
    root = write_task(tmp_path / "t", shapes, spacing=(0.8, 0.8, 4.0))
    headers, fp = fingerprint_decathlon(root)
    assert [c["id"] for c in fp.cases] == [h.name for h in headers] and len(fp.cases) == 4
    assert fp.cases[0]["shape"] == [20, 24, 6] and fp.cases[0]["spacing"] == [0.8, 0.8, 4.0]
    assert sum(fp.cases[0]["class_voxels"][1:]) == _labelled(root / "labelsTr" / "case_000.nii.gz")
    plan = plan_for(fp, 4 * GiB, "cpu")
    assert plan.anisotropic and plan.spacing == (0.8, 0.8, 4.0)  # the coarse axis is not resampled to 0.8 mm
    strides = np.array(plan.network["strides"])
    assert (strides[:, 2] == 1).all() and (strides[:, :2] == 2).any()  # never pooled along the 4 mm axis
    total = strides.prod(axis=0)
    assert all(p % t == 0 for p, t in zip(plan.patch_size, total)) and plan.batch_size >= 2
    # the planned shapes are the ones the preprocessing gives, case by case
    cfg = DataConfig(source="decathlon", path=str(root), test_fraction=0.0, spacing=(0.8, 0.8, 3.0),
                     patch_size=(4, 4, 4))
    split = split_datalists(cfg, headers)
    chain = Compose(split.transforms())
    for item in split.train + split.val:
        case = next(c for c in fp.cases if item["image"].endswith(c["id"] + ".nii.gz"))
        out = chain(dict(item))
        assert tuple(out["image"].shape[1:]) == preprocessed_shape(case, (0.8, 0.8, 3.0))
    # a network of the planned strides runs on the planned patch
    _, model = apply_plan(plan, DataConfig(source="decathlon", path=str(root)),
                          ModelConfig(channels=None, strides=None))
    assert check_network(model, 1, 3, plan.patch_size) > 0


def test_the_plan_fits_the_memory_and_every_value_set_in_the_spec_wins(tmp_path):
    root = write_task(tmp_path / "t", [(40, 40, 40)] * 4, modalities=2)
    _, fp = fingerprint_decathlon(root)
    assert len(fp.intensity()) == 2 and fp.intensity()[1]["mean"] == pytest.approx(2 * fp.intensity()[0]["mean"])
    roomy, tight = plan_for(fp, 4 * GiB, "cpu"), plan_for(fp, 20 * 2 ** 20, "cpu")
    assert roomy.patch_size == (40, 40, 40) and np.prod(tight.patch_size) < np.prod(roomy.patch_size)
    assert tight.memory["estimate"] <= 20 * 2 ** 20 and not tight.notes
    cfg = DataConfig(source="decathlon", path=str(root), spacing=(2.0, 2.0, 2.0), patch_size=(16, 16, 8))
    own = plan_for(fp, 4 * GiB, "cpu", cfg=cfg, batch_size=3,
                   model=ModelConfig(channels=(4, 8), strides=((2, 2, 1),)))
    assert own.spacing == (2.0, 2.0, 2.0) and own.patch_size == (16, 16, 8) and own.batch_size == 3
    assert own.network["channels"] == [4, 8] and own.median_shape == (20, 20, 20)
    assert own.source == {"spacing": "spec", "patch_size": "spec", "batch_size": "spec", "network": "spec"}
    table = "\n".join(own.table())
    assert "[16, 16, 8]  [spec]" in table and "3 volumes per step  [spec]" in table
    assert Fingerprint.from_json(fp.to_json()).cases == fp.cases
    # the GPU plan starts wider and allows larger patches
    assert plan_for(fp, 8 * GiB, "cuda").network["channels"][0] == 32


def test_ct_air_and_zero_background_keep_every_labelled_voxel_and_crop_only_the_zero_one(tmp_path):
    for background in ("air", "zero"):
        root = write_task(tmp_path / background, [(24, 20, 18)] * 3, background=background, corner=True)
        split = split_datalists(DataConfig(source="decathlon", path=str(root), test_fraction=0.0,
                                           patch_size=(8, 8, 8), spacing=None))
        chain = Compose(split.transforms())
        for item in split.train + split.val:
            out = chain(dict(item))
            assert int((out["label"] > 0).sum()) == _labelled(item["label"])
            if background == "air":  # -1000 is nonzero: nothing to crop, and the window maps it to 0
                assert tuple(out["image"].shape[1:]) == (24, 20, 18) and float(out["image"].min()) == 0.0
            else:  # the box of the nonzero voxels (here the labelled ones), kept at its own size
                hit = np.argwhere(np.asarray(nib.load(item["label"]).dataobj) > 0)
                assert tuple(out["image"].shape[1:]) == tuple(hit.max(0) - hit.min(0) + 1)


def test_a_case_smaller_than_the_patch_is_padded_and_trains(tmp_path):
    root = write_task(tmp_path / "t", [(10, 12, 10), (24, 24, 24), (12, 12, 12), (24, 24, 24)])
    cfg = DataConfig(source="decathlon", path=str(root), test_fraction=0.0, val_fraction=0.25, patch_size=(16, 16, 16),
                     spacing=None)
    split = split_datalists(cfg)
    run = SegmentationRun(method="fixed", seed=0, data=split, model_cfg=ModelConfig(), patch_size=cfg.patch_size,
                          train_cfg=TrainConfig(epochs=1, batch_size=2))
    for images, labels in run.loader:
        assert images.shape[1:] == (1, 16, 16, 16) and labels.shape[1:] == (1, 16, 16, 16)
    result = run.run_epoch()
    assert math.isfinite(result.train_loss) and 0 <= result.dice <= 1
    # Padded for training only: the cache keeps each volume's own size, and validation scores the volume itself
    cached = sorted(tuple(run.train_set.data[i]["image"].shape[1:]) for i in range(len(split.train)))
    assert cached[0] < (16, 16, 16) and {tuple(v["image"].shape[1:]) for v in run.val_set} <= {
        (10, 12, 10), (24, 24, 24), (12, 12, 12)}


def test_a_disk_cache_is_read_back_by_a_second_dataset_without_preprocessing(tmp_path):
    root = write_task(tmp_path / "t", [(16, 16, 16)] * 3)
    split = split_datalists(DataConfig(source="decathlon", path=str(root), test_fraction=0.0, patch_size=(8, 8, 8),
                                       cache="disk"))
    first = make_dataset(split.train, split.transforms(), 1.0, "disk", str(tmp_path / "cache"))
    volumes = [first[i]["image"] for i in range(len(split.train))]
    assert len(list((tmp_path / "cache").iterdir())) == len(split.train)
    shutil.rmtree(root)  # a second dataset cannot read or preprocess anything: it reads the cache
    second = make_dataset(split.train, split.transforms(), 1.0, "disk", str(tmp_path / "cache"))
    for i, v in enumerate(volumes):
        assert torch.equal(second[i]["image"], v)
    with pytest.raises(RuntimeError, match="applying transform"):  # without the cache the files are gone
        make_dataset(split.train, split.transforms(), 1.0, "none")[0]
    with pytest.raises(InputError, match="did you mean 'disk'"):
        DataConfig(source="decathlon", path=str(root), cache="disc")


def test_seeded_augmentation_repeats_and_restores_from_a_checkpoint(tmp_path):
    root = write_task(tmp_path / "t", [(20, 20, 20)] * 4)
    split = split_datalists(DataConfig(source="decathlon", path=str(root), test_fraction=0.0, patch_size=(8, 8, 8)))

    def run(seed, augment=True):
        return SegmentationRun(method="fixed", seed=seed, data=split, model_cfg=ModelConfig(), patch_size=(8, 8, 8),
                               augment=augment, train_cfg=TrainConfig(epochs=3, batch_size=2))

    def batches(r):
        return [images.clone() for images, _ in r.loader]

    a, b = run(0), run(0)
    assert a.augmentation is not None and split.cfg.augment  # on by default for a Decathlon task
    assert all(torch.equal(x, y) for x, y in zip(batches(a), batches(b)))
    plain = run(0, augment=False)
    assert not all(torch.equal(x, y) for x, y in zip(batches(run(0)), batches(plain)))
    straight = run(1)
    expected = [straight.run_epoch().train_loss for _ in range(2)]
    first = run(1)
    first.run_epoch()
    torch.save(first.state_dict(), tmp_path / "state.pt")
    second = run(1)
    second.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    assert second.run_epoch().train_loss == pytest.approx(expected[1], rel=1e-6)
