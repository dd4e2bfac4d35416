"""Tests for medtune.trainables.lr_data: phantom, split, array preparation, Decathlon loader, DataConfig."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from medtune.errors import InputError
from medtune.trainables.lr_data import (
    DataConfig,
    load_decathlon,
    load_split,
    make_phantom,
    prepare,
    split_indices,
    validate_decathlon,
)
from tests.helpers_decathlon import write_decathlon


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(6, seed=3)


# --------------------------------------------------------------------------- phantom


def test_phantom_same_seed_gives_identical_arrays(phantom):
    again = make_phantom(6, seed=3)
    for a, b in zip(phantom, again):
        assert a.name == b.name
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)


def test_phantom_different_seed_differs(phantom):
    other = make_phantom(6, seed=4)
    assert any(a.image.shape != b.image.shape or not np.array_equal(a.image, b.image) for a, b in zip(phantom, other))


def test_phantom_dtypes_and_label_values(phantom):
    for case in phantom:
        assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
        assert case.image.shape == case.label.shape and case.image.ndim == 3
        assert set(np.unique(case.label)) == {0, 1, 2}
        assert np.isfinite(case.image).all()


def test_phantom_structures_are_adjacent(phantom):
    for case in phantom:
        one = case.label == 1
        padded = np.pad(case.label, 1)
        touches = np.zeros_like(one)
        for axis in range(3):
            for shift in (-1, 1):
                neighbour = np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
                touches |= one & (neighbour == 2)
        assert touches.any(), case.name


def test_phantom_dims_vary_across_cases(phantom):
    shapes = {case.image.shape for case in phantom}
    assert len(shapes) > 1
    assert all(28 <= s <= 38 for shape in shapes for s in shape)


def test_phantom_structures_brighter_than_background(phantom):
    for case in phantom:
        assert case.image[case.label > 0].mean() > case.image[case.label == 0].mean()


# --------------------------------------------------------------------------- split


@pytest.mark.parametrize("n, frac", [(2, 0.25), (5, 0.5), (24, 0.25), (10, 0.99), (10, 0.01)])
def test_split_is_disjoint_covering_and_nonempty(n, frac):
    train, val = split_indices(n, frac, seed=0)
    assert len(train) >= 1 and len(val) >= 1
    assert set(train).isdisjoint(val)
    assert sorted([*train, *val]) == list(range(n))


def test_split_is_deterministic_per_seed():
    a, b = split_indices(24, 0.25, seed=7), split_indices(24, 0.25, seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[1]) == 6
    assert any(not np.array_equal(a[1], split_indices(24, 0.25, seed=s)[1]) for s in range(8, 12))


@pytest.mark.parametrize("n", [0, 1])
def test_split_rejects_fewer_than_two_cases(n):
    with pytest.raises(InputError, match="at least 2"):
        split_indices(n, 0.25, seed=0)


# --------------------------------------------------------------------------- prepare / load_split


def test_prepare_shapes_dtypes_and_normalisation(phantom):
    images, labels = prepare(phantom, (32, 32, 32))
    assert images.shape == labels.shape == (len(phantom), 1, 32, 32, 32)
    assert images.dtype == np.float32 and labels.dtype == np.int64
    assert set(np.unique(labels)) <= {0, 1, 2}
    # each volume was z-scored before padding, so the mean stays near 0
    assert np.abs(images.mean(axis=(1, 2, 3, 4))).max() < 0.2


def test_prepare_pads_and_crops_without_touching_label_values():
    small = make_phantom(1, seed=0)[0]
    images, labels = prepare([small], (40, 24, 36))
    assert images.shape == (1, 1, 40, 24, 36)
    assert set(np.unique(labels)) <= set(np.unique(small.label))


def test_prepare_empty_list():
    images, labels = prepare([], (8, 8, 8))
    assert images.shape == (0, 1, 8, 8, 8) and labels.shape == (0, 1, 8, 8, 8)


def test_load_split_phantom_is_reproducible():
    cfg = DataConfig(num_volumes=8, val_fraction=0.25, test_fraction=0.0, seed=1, spatial_size=(32, 32, 32))
    a, b = load_split(cfg), load_split(cfg)
    assert a.test_images is None and a.test_labels is None
    assert a.train_images.shape == (6, 1, 32, 32, 32) and a.val_labels.shape == (2, 1, 32, 32, 32)
    assert a.num_classes == 3 and a.class_names == ("background", "anterior", "posterior")
    np.testing.assert_array_equal(a.val_images, b.val_images)
    np.testing.assert_array_equal(a.train_labels, b.train_labels)


def test_load_split_holds_out_a_disjoint_test_split_of_the_whole():
    cfg = DataConfig(num_volumes=32, val_fraction=0.25, test_fraction=0.2, seed=0, spatial_size=(16, 16, 16))
    d = load_split(cfg)
    # 32 * 0.2 = 6.4 -> 6 test cases; of the 26 left, 26 * 0.25 / 0.8 = 8.1 -> 8 validation; 18 train.
    assert (len(d.train_images), len(d.val_images), len(d.test_images)) == (18, 8, 6)
    assert d.test_labels.shape == (6, 1, 16, 16, 16)
    seen = {a.tobytes() for a in np.concatenate([d.train_images, d.val_images])}
    assert not any(t.tobytes() in seen for t in d.test_images)


def test_fractions_that_leave_no_training_data_are_rejected():
    with pytest.raises(InputError, match="val_fraction \\+ test_fraction"):
        DataConfig(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(InputError, match="test_fraction=1.0"):
        DataConfig(test_fraction=1.0)


# --------------------------------------------------------------------------- Decathlon


def _assert_one_line_naming(excinfo, name: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    assert name in message, message


def test_decathlon_loads_cases(tmp_path):
    root = write_decathlon(tmp_path / "Task04_Hippocampus", num_cases=3)
    cases = load_decathlon(root)
    assert [c.name for c in cases] == ["hippocampus_000", "hippocampus_001", "hippocampus_002"]
    assert all(c.image.shape == (12, 14, 10) and c.image.dtype == np.float32 for c in cases)
    assert all(set(np.unique(c.label)) == {0, 1, 2} and c.label.dtype == np.uint8 for c in cases)
    assert validate_decathlon(root) == 3


def test_decathlon_load_split_uses_declared_class_names(tmp_path):
    root = write_decathlon(tmp_path / "task", num_cases=4)
    data = load_split(DataConfig(source="decathlon", path=str(root), test_fraction=0.0))
    assert data.class_names == ("background", "Anterior", "Posterior") and data.num_classes == 3
    # Decathlon volumes keep their own size (spatial_size is the phantom's)
    assert data.train_images.shape == (3, 1, 12, 14, 10) and data.val_images.shape == (1, 1, 12, 14, 10)


def test_decathlon_squeezes_trailing_singleton_channel(tmp_path):
    root = write_decathlon(tmp_path / "task", num_cases=2)
    path = root / "imagesTr" / "hippocampus_000.nii.gz"
    data = np.asanyarray(nib.load(path).dataobj)[..., None]
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    assert load_decathlon(root)[0].image.shape == (12, 14, 10)


def test_decathlon_missing_folder(tmp_path):
    with pytest.raises(InputError) as excinfo:
        load_decathlon(tmp_path / "nowhere")
    _assert_one_line_naming(excinfo, "nowhere")


def test_decathlon_missing_dataset_json(tmp_path):
    root = write_decathlon(tmp_path / "task")
    (root / "dataset.json").unlink()
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "dataset.json")


@pytest.mark.parametrize("content", [
    "{not json",
    json.dumps({"labels": {"0": "background"}}),
    json.dumps({"training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]}),
    json.dumps({"labels": {"0": "background"}, "training": [{"image": "./imagesTr/a.nii.gz"}]}),
], ids=["bad-json", "no-training", "no-labels", "entry-without-label"])
def test_decathlon_malformed_dataset_json(tmp_path, content):
    root = write_decathlon(tmp_path / "task")
    (root / "dataset.json").write_text(content)
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "dataset.json")


def test_decathlon_missing_referenced_file(tmp_path):
    root = write_decathlon(tmp_path / "task")
    (root / "labelsTr" / "hippocampus_002.nii.gz").unlink()
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_002.nii.gz")


@pytest.mark.parametrize("garbage", [b"this is not a nifti file at all" * 10, b""], ids=["garbage", "empty"])
def test_decathlon_corrupt_nifti(tmp_path, garbage):
    root = write_decathlon(tmp_path / "task")
    (root / "imagesTr" / "hippocampus_001.nii.gz").write_bytes(garbage)
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_001.nii.gz")


def test_decathlon_truncated_gzip(tmp_path):
    root = write_decathlon(tmp_path / "task")
    path = root / "imagesTr" / "hippocampus_001.nii.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_001.nii.gz")


def test_decathlon_shape_mismatch_names_both_shapes(tmp_path):
    root = write_decathlon(tmp_path / "task")
    nib.save(nib.Nifti1Image(np.zeros((12, 14, 11), np.uint8), np.eye(4)), root / "labelsTr" / "hippocampus_000.nii.gz")
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_000.nii.gz")
    assert "(12, 14, 11)" in str(excinfo.value) and "(12, 14, 10)" in str(excinfo.value)


def test_decathlon_undeclared_label_value(tmp_path):
    root = write_decathlon(tmp_path / "task")
    path = root / "labelsTr" / "hippocampus_003.nii.gz"
    label = np.asanyarray(nib.load(path).dataobj).copy()
    label[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(label, np.eye(4)), path)
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_003.nii.gz")
    assert "[5]" in str(excinfo.value) and "[0, 1, 2]" in str(excinfo.value)


def test_decathlon_rejects_non_3d_volume(tmp_path):
    root = write_decathlon(tmp_path / "task")
    nib.save(nib.Nifti1Image(np.zeros((12, 14), np.float32), np.eye(4)), root / "imagesTr" / "hippocampus_000.nii.gz")
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_000.nii.gz")


# --------------------------------------------------------------------------- DataConfig


def test_config_defaults_are_valid():
    cfg = DataConfig()
    assert cfg.source == "phantom" and cfg.spatial_size == (32, 32, 32)


def test_config_unknown_source_suggests_nearest():
    with pytest.raises(InputError, match=r"source='phantm'.*did you mean 'phantom'") as excinfo:
        DataConfig(source="phantm")
    assert "\n" not in str(excinfo.value)


def test_config_is_a_value_error_for_callers_that_catch_value_error():
    with pytest.raises(ValueError):
        DataConfig(source="decathlon")


@pytest.mark.parametrize("frac", [0, 1, 1.5, -0.1])
def test_config_rejects_val_fraction_outside_open_unit_interval(frac):
    with pytest.raises(InputError, match="val_fraction"):
        DataConfig(val_fraction=frac)


@pytest.mark.parametrize("size", [(30, 32, 32), (32, 32), (32, 32, 0), (32.0, 32, 32)])
def test_config_rejects_bad_spatial_size(size):
    with pytest.raises(InputError, match="spatial_size.*divisible by 4"):
        DataConfig(spatial_size=size)


def test_config_converts_list_spatial_size_to_tuple():
    assert DataConfig(spatial_size=[16, 24, 32]).spatial_size == (16, 24, 32)


def test_config_requires_path_for_decathlon_and_enough_phantom_volumes():
    with pytest.raises(InputError, match="path is required"):
        DataConfig(source="decathlon")
    with pytest.raises(InputError, match="num_volumes"):
        DataConfig(num_volumes=3)


# --------------------------------------------------------------------------- Decathlon: bad voxels, headers, modalities


def _rewrite(path, data=None, affine=None):
    """Save ``path`` again with new voxels and/or a new affine (the other kept)."""
    old = nib.load(path)
    data = np.asanyarray(old.dataobj).copy() if data is None else data
    nib.save(nib.Nifti1Image(data, old.affine if affine is None else affine), path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_decathlon_non_finite_image_voxels_are_refused(tmp_path, bad):
    root = write_decathlon(tmp_path / "task")
    path = root / "imagesTr" / "hippocampus_002.nii.gz"
    image = np.asanyarray(nib.load(path).dataobj).copy()
    image[3, 4, 5] = bad
    _rewrite(path, image)
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_002.nii.gz")
    assert "NaN or infinite" in str(excinfo.value) and "1 " in str(excinfo.value)


def test_decathlon_singular_affine_is_refused(tmp_path):
    root = write_decathlon(tmp_path / "task")
    path = root / "imagesTr" / "hippocampus_001.nii.gz"
    img = nib.Nifti1Image(np.asanyarray(nib.load(path).dataobj).copy(), np.eye(4))
    img.set_qform(None, code=0)  # nibabel refuses a singular qform; a broken header's sform still reaches us
    img.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)  # the second voxel axis has zero length
    nib.save(img, path)
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_001.nii.gz")
    assert "singular affine" in str(excinfo.value)


def test_decathlon_label_with_non_integer_values_is_refused(tmp_path):
    root = write_decathlon(tmp_path / "task")
    path = root / "labelsTr" / "hippocampus_000.nii.gz"
    label = np.asanyarray(nib.load(path).dataobj).astype(np.float32)
    label[label == 1] = 1.5  # e.g. a label map resampled with linear interpolation
    _rewrite(path, label)
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_000.nii.gz")
    assert "non-integer" in str(excinfo.value) and "1.5" in str(excinfo.value)


def test_decathlon_float_label_close_to_integers_is_rounded_not_truncated(tmp_path):
    root = write_decathlon(tmp_path / "task", num_cases=2)
    path = root / "labelsTr" / "hippocampus_000.nii.gz"
    exact = np.asanyarray(nib.load(path).dataobj).copy()
    _rewrite(path, (exact.astype(np.float32) - 1e-5).clip(0))  # 0.99999 must stay 1, not become 0
    np.testing.assert_array_equal(load_decathlon(root)[0].label, exact)


def test_decathlon_channel_count_differing_from_dataset_json_is_refused(tmp_path):
    root = write_decathlon(tmp_path / "task", modalities=2)
    path = root / "imagesTr" / "hippocampus_003.nii.gz"
    _rewrite(path, np.asanyarray(nib.load(path).dataobj)[..., :1].copy())  # one modality dropped
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_003.nii.gz")
    assert "1 channel(s)" in str(excinfo.value) and "'modality' lists 2" in str(excinfo.value)


def test_decathlon_channel_count_differing_between_cases_is_refused(tmp_path):
    root = write_decathlon(tmp_path / "task", modalities=3)
    meta = json.loads((root / "dataset.json").read_text())
    del meta["modality"]  # nothing declared: the cases must still agree with each other
    (root / "dataset.json").write_text(json.dumps(meta))
    path = root / "imagesTr" / "hippocampus_002.nii.gz"
    _rewrite(path, np.asanyarray(nib.load(path).dataobj)[..., :2].copy())
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_002.nii.gz")
    assert "2 channel(s)" in str(excinfo.value) and "hippocampus_000.nii.gz has 3" in str(excinfo.value)


def test_decathlon_4d_multimodal_images_become_input_channels(tmp_path):
    root = write_decathlon(tmp_path / "task", num_cases=4, modalities=2)
    cases = load_decathlon(root)
    assert all(c.image.shape == (2, 12, 14, 10) and c.label.shape == (12, 14, 10) for c in cases)
    np.testing.assert_allclose(cases[0].image[1], 2 * cases[0].image[0], rtol=1e-6)
    data = load_split(DataConfig(source="decathlon", path=str(root), test_fraction=0.0))
    assert data.in_channels == 2
    assert data.train_images.shape == (3, 2, 12, 14, 10) and data.train_labels.shape == (3, 1, 12, 14, 10)
    # z-scored per channel: channel 1 (twice channel 0) gives the same normalised values
    np.testing.assert_allclose(data.train_images[:, 0], data.train_images[:, 1], atol=1e-5)


def test_decathlon_label_that_is_4d_is_refused(tmp_path):
    root = write_decathlon(tmp_path / "task")
    path = root / "labelsTr" / "hippocampus_001.nii.gz"
    _rewrite(path, np.stack([np.asanyarray(nib.load(path).dataobj)] * 2, axis=-1))
    with pytest.raises(InputError) as excinfo:
        validate_decathlon(root)
    _assert_one_line_naming(excinfo, "hippocampus_001.nii.gz")
    assert "expected a 3D volume" in str(excinfo.value)


def test_phantom_data_has_one_input_channel():
    data = load_split(DataConfig(num_volumes=4, test_fraction=0.0, spatial_size=(16, 16, 16)))
    assert data.in_channels == 1 and data.train_images.shape[1] == 1


# ---------------------------------------------------------------------- Decathlon: spacing, orientation, intensities


def _case(image, label, affine):
    from medtune.trainables.lr_data import Case

    return Case("c", np.asarray(image, np.float32), np.asarray(label, np.uint8), np.asarray(affine, np.float64))


def _box_case(affine=None, shape=(12, 14, 10), value=100.0):
    affine = np.eye(4) if affine is None else affine
    label = np.zeros(shape, np.uint8)
    label[4:8, 4:10, 3:7] = 1
    image = np.full(shape, value, np.float32) + 50 * label
    return _case(image, label, affine)


def test_ras_and_median_spacing_follow_the_axes():
    from medtune.trainables.lr_data import median_spacing, ras_spacing

    swapped = np.array([[0, 2.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 1.5, 0], [0, 0, 0, 1]])  # voxel axis 0 runs along A
    np.testing.assert_allclose(ras_spacing(swapped), [2.0, 3.0, 1.5])
    cases = [_box_case(np.diag([s, 1.0, 1.0, 1.0])) for s in (1.0, 2.0, 2.0)]
    assert median_spacing(cases) == (2.0, 1.0, 1.0)


def test_spacing_resamples_images_bilinear_and_labels_nearest():
    from medtune.trainables.lr_data import preprocess_decathlon

    case = _box_case(np.diag([2.0, 1.0, 1.0, 1.0]))
    cfg = DataConfig(source="decathlon", path="x", spacing=(1.0, 1.0, 1.0), crop_foreground=False)
    out = preprocess_decathlon([case], cfg, ("MRI",))[0]
    assert out.image.shape[0] in (23, 24) and out.image.shape[1:] == (14, 10)  # 12 voxels of 2 mm -> ~24 of 1 mm
    assert out.label.shape == out.image.shape and set(np.unique(out.label)) == {0, 1}  # nearest: no 0.5s
    assert abs(int(out.label.sum()) - 2 * int(case.label.sum())) <= int(case.label.sum()) // 2
    native = preprocess_decathlon([case], DataConfig(source="decathlon", path="x", spacing=None,
                                                     crop_foreground=False), ("MRI",))[0]
    assert native.image.shape == (12, 14, 10)


def test_orientation_brings_a_flipped_image_to_ras():
    from medtune.trainables.lr_data import preprocess_decathlon

    case = _box_case()
    case.image[0] += np.arange(14, dtype=np.float32)[:, None]  # mark the first slice along x
    flipped = _case(case.image[::-1].copy(), case.label[::-1].copy(), np.diag([-1.0, 1.0, 1.0, 1.0]))
    cfg = DataConfig(source="decathlon", path="x", spacing=None, crop_foreground=False)
    a, b = preprocess_decathlon([case, flipped], cfg, ("MRI",))
    np.testing.assert_allclose(a.image, b.image, atol=1e-5)
    np.testing.assert_array_equal(a.label, b.label)


def test_mr_is_z_scored_over_nonzero_voxels_and_cropped_to_them():
    from medtune.trainables.lr_data import preprocess_decathlon

    case = _box_case()
    case.image[:2] = 0  # an empty (skull-stripped) border
    case.image[:, :, 9] = 0
    cfg = DataConfig(source="decathlon", path="x", spacing=None)
    out = preprocess_decathlon([case], cfg, ("FLAIR",))[0]
    assert out.image.shape == (10, 14, 9) and out.label.shape == (10, 14, 9)
    assert out.label.sum() == case.label.sum()
    assert abs(out.image.mean()) < 1e-5 and abs(out.image.std() - 1) < 1e-3
    kept = preprocess_decathlon([case], DataConfig(source="decathlon", path="x", spacing=None,
                                                   crop_foreground=False), ("FLAIR",))[0]
    assert kept.image.shape == (12, 14, 10) and (kept.image[:2] == 0).all()  # zeros are left out of the z-score


def test_ct_is_clipped_and_scaled_by_the_intensity_range():
    from medtune.trainables.lr_data import preprocess_decathlon

    case = _box_case(value=-2000.0)  # air below the window
    case.image[case.label == 1] = 40.0
    cfg = DataConfig(source="decathlon", path="x", spacing=None, crop_foreground=False,
                     intensity_range=(-160.0, 240.0))
    out = preprocess_decathlon([case], cfg, ("CT",))[0]
    assert out.image.min() == 0.0 and out.image.max() <= 1.0
    np.testing.assert_allclose(out.image[case.label == 1], 0.5)  # 40 HU is the middle of [-160, 240]


def test_decathlon_load_split_resamples_to_the_median_spacing(tmp_path):
    root = write_decathlon(tmp_path / "task", num_cases=4)
    path = root / "imagesTr" / "hippocampus_000.nii.gz"
    for folder in ("imagesTr", "labelsTr"):  # one case at 2 mm along x: the median stays 1 mm
        p = root / folder / path.name
        nib.save(nib.Nifti1Image(np.asanyarray(nib.load(p).dataobj), np.diag([2.0, 1.0, 1.0, 1.0])), p)
    cfg = DataConfig(source="decathlon", path=str(root), test_fraction=0.0, crop_foreground=False)
    data = load_split(cfg)  # each side zero-padded to its largest volume so it stacks
    volumes = [*data.train_labels, *data.val_labels]
    extents = sorted(int(np.any(v[0] > 0, axis=(1, 2)).sum()) for v in volumes)
    assert extents[:3] == [4, 4, 4] and extents[3] in (7, 8, 9)  # the 2 mm case's structure doubles along x


@pytest.mark.parametrize("kwargs, needle", [
    ({"spacing": (1.0, 0.0, 1.0)}, "spacing="),
    ({"spacing": "mean"}, "'median'"),
    ({"intensity_range": (100.0, -100.0)}, "intensity_range="),
    ({"crop_foreground": 1}, "crop_foreground=1"),
    ({"patch_size": (16, 16, 40)}, "at most spatial_size=[32, 32, 32]"),
    ({"patch_size": (16, 16, 10)}, "multiples of 4"),
    ({"patch_size": (16, 16, 16), "patches_per_volume": 0}, "patches_per_volume=0"),
])
def test_config_rejects_bad_preprocessing_and_patch_settings(kwargs, needle):
    with pytest.raises(InputError, match=re.escape(needle)):
        DataConfig(**kwargs)


def test_the_split_arrays_do_not_depend_on_the_machine_s_thread_count():
    """A multi-threaded torch reduction splits its sum by thread: without the one-thread preparation the
    z-scored phantom differs in its last bits between 1 and 2 threads (measured), and so does every result."""
    import dataclasses

    import torch

    from medtune.trainables.lr_data import DataConfig, load_split

    cfg = dataclasses.replace(DataConfig(), num_volumes=6)
    before = torch.get_num_threads()
    got = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            d = load_split(cfg)
            got.append([d.train_images, d.val_images, d.test_images, d.train_labels])
            assert torch.get_num_threads() == n  # the caller's count is restored
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*got):
        assert a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------- data lists for CacheDataset


def test_decathlon_split_is_file_lists_read_by_monai_and_equals_the_arrays(tmp_path):
    from medtune.trainables.lr_data import split_datalists

    root = write_decathlon(tmp_path / "task", num_cases=5, modalities=2)
    cfg = DataConfig(source="decathlon", path=str(root), spatial_size=(16, 16, 12))
    split = split_datalists(cfg)
    items = split.train + split.val + split.test
    assert len(items) == 5 and all(isinstance(i["image"], str) and i["image"].endswith(".nii.gz") for i in items)
    assert {i["image"].rsplit("/", 1)[1] for i in items} == {f"hippocampus_{k:03d}.nii.gz" for k in range(5)}
    assert split.in_channels == 2 and split.cfg.spacing == (1.0, 1.0, 1.0)  # median resolved in the driver
    dense = load_split(cfg)
    again = split.materialise()
    np.testing.assert_array_equal(dense.train_images, again.train_images)
    np.testing.assert_array_equal(dense.test_labels, again.test_labels)


def test_decathlon_split_checks_every_file_before_anything_is_cached(tmp_path):
    from medtune.trainables.lr_data import split_datalists

    root = write_decathlon(tmp_path / "task", num_cases=4)
    path = root / "imagesTr" / "hippocampus_003.nii.gz"
    image = np.asanyarray(nib.load(path).dataobj).copy()
    image[1, 1, 1] = np.nan
    _rewrite(path, image)
    with pytest.raises(InputError) as excinfo:
        split_datalists(DataConfig(source="decathlon", path=str(root)))
    _assert_one_line_naming(excinfo, "hippocampus_003.nii.gz")


@pytest.mark.parametrize("rate", [-0.1, 1.5, "all", True])
def test_config_rejects_a_cache_rate_outside_the_unit_interval(rate):
    with pytest.raises(InputError, match=re.escape(f"cache_rate={rate!r}")):
        DataConfig(cache_rate=rate)
    assert DataConfig().cache_rate == 1.0 and DataConfig(cache_rate=0).cache_rate == 0


def test_a_split_names_a_file_that_this_node_cannot_see(tmp_path):
    from medtune.trainables.lr_data import split_datalists

    root = write_decathlon(tmp_path / "task", num_cases=4)
    split = split_datalists(DataConfig(source="decathlon", path=str(root)))
    split.check_files()
    victim = split.val[0]["label"]
    (tmp_path / "task" / "labelsTr" / victim.rsplit("/", 1)[1]).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(victim)):
        split.check_files("node abc")
    split_datalists(DataConfig(num_volumes=4)).check_files()  # the phantom's items are arrays: nothing to see
