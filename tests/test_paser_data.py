"""PaSeR's data (paper 003): noisy digits and a three-phase microstructure, deterministic, split, with unseen noise."""

from __future__ import annotations

import numpy as np
import pytest

from medtune.errors import InputError
from medtune.trainables.paser_data import (
    PHASE_FRACTIONS,
    PaSeRDataConfig,
    add_noise,
    clean_digits,
    load_paser_data,
    microstructure_phases,
)

SMALL = dict(n_images=40, canvas=32, val_fraction=0.1, test_fraction=0.25)


def one_line_error(match: str, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        PaSeRDataConfig(**kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    for part in match.split("|"):
        assert part in message, f"{part!r} not in {message!r}"
    return message


@pytest.fixture(scope="module", params=["digits", "microstructure"])
def source(request):
    return request.param


@pytest.fixture(scope="module")
def data(source):
    return load_paser_data(PaSeRDataConfig(source=source, **SMALL))


def test_shapes_dtypes_and_split_sizes(data):
    assert data.train_images.shape == (26, 1, 32, 32) and data.train_masks.shape == (26, 32, 32)
    assert data.val_images.shape == (4, 1, 32, 32) and data.val_masks.shape == (4, 32, 32)
    assert data.test_images.shape == (10, 1, 32, 32) and data.test_masks.shape == (10, 32, 32)
    assert data.test_unseen_images.shape == data.test_images.shape
    for images in (data.train_images, data.val_images, data.test_images, data.test_unseen_images):
        assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1
    for masks in (data.train_masks, data.val_masks, data.test_masks):
        assert masks.dtype == np.int64 and set(np.unique(masks)) <= {0, 1}
    assert data.image_size == 32 and data.num_classes == 2


def test_masks_are_neither_empty_nor_full(data):
    share = data.train_masks.mean()
    assert 0.03 < share < 0.5
    assert (data.train_masks.reshape(len(data.train_masks), -1).sum(1) > 0).all()  # every image has foreground


def test_same_config_gives_identical_arrays_and_another_seed_does_not(source):
    a = load_paser_data(PaSeRDataConfig(source=source, **SMALL))
    b = load_paser_data(PaSeRDataConfig(source=source, **SMALL))
    c = load_paser_data(PaSeRDataConfig(source=source, seed=1, **SMALL))
    for name in ("train_images", "train_masks", "val_images", "test_images", "test_masks", "test_unseen_images"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.train_masks, c.train_masks)


def test_noise_settings_do_not_move_the_clean_images_or_the_split(source):
    a = load_paser_data(PaSeRDataConfig(source=source, **SMALL))
    b = load_paser_data(PaSeRDataConfig(source=source, noise_level=0.2, unseen_noise="speckle", **SMALL))
    assert np.array_equal(a.train_masks, b.train_masks) and np.array_equal(a.test_masks, b.test_masks)
    assert not np.array_equal(a.train_images, b.train_images)


def test_unseen_noise_differs_from_the_training_noise(data):
    assert not np.allclose(data.test_unseen_images, data.test_images)
    # default unseen noise is salt and pepper: many pixels exactly 0 or 1 where the Gaussian test noise has few
    unseen_extreme = np.isin(data.test_unseen_images, (0.0, 1.0)).mean()
    assert unseen_extreme > 0.05


def test_the_digits_are_real_digits_inside_the_canvas():
    images, masks = clean_digits(5, 32, seed=0)
    assert images.shape == masks.shape == (5, 32, 32)
    for img, mask in zip(images, masks):
        rows, cols = np.nonzero(img)
        assert rows.max() - rows.min() < 16 and cols.max() - cols.min() < 16   # one 16x16 digit
        assert np.array_equal(mask, (img > 0.3).astype(np.int64))


def test_microstructure_has_three_phases_at_the_set_volume_shares():
    phases = microstructure_phases(20, 32, seed=0)
    shares = np.bincount(phases.reshape(-1), minlength=3) / phases.size
    assert shares == pytest.approx(PHASE_FRACTIONS, abs=0.02)


@pytest.mark.parametrize("kind", ["gaussian", "speckle", "salt_pepper"])
def test_noise_kinds_change_the_image_and_stay_in_range(kind):
    clean = np.full((2, 8, 8), 0.5, np.float32)
    noisy = add_noise(clean, kind, 0.2, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.min() >= 0 and noisy.max() <= 1
    assert not np.allclose(noisy, clean)
    assert np.array_equal(add_noise(clean, "none", 0.2, np.random.default_rng(0)), clean)


def test_bad_settings_are_one_line_naming_field_value_and_fix():
    one_line_error("source='digit'|did you mean 'digits'", source="digit")
    one_line_error("canvas=8|>= 16", canvas=8)
    one_line_error("n_images=5000|[3, 1797]", n_images=5000)
    one_line_error("noise='gauss'|did you mean 'gaussian'", noise="gauss")
    one_line_error("noise_level=-0.1|>= 0", noise_level=-0.1)
    one_line_error("unseen_level=1.5|[0, 1)", unseen_noise="salt_pepper", unseen_level=1.5)
    one_line_error("unseen_noise='gaussian'|training noise", unseen_noise="gaussian", unseen_level=0.45)
    one_line_error("test_fraction=0|between 0 and 1", test_fraction=0)
    one_line_error("leave no training image", n_images=10, val_fraction=0.5, test_fraction=0.5)
    one_line_error("target_phase=3", source="microstructure", target_phase=3)
