"""Tests for medtune.trainables.classification_data: digits, cluttered digits, folder and MedMNIST loaders, splits,
config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtune.errors import InputError
from medtune.trainables.classification_data import (
    ClassificationDataConfig,
    cluttered_digits,
    digits_images,
    load_classification,
    load_image_folder,
    load_medmnist,
    split_stratified,
    take_few_shot,
)

N_DIGITS = 1797


def raises_one_line(func, *args, match: str, **kwargs) -> str:
    """Call ``func`` expecting an InputError whose one-line message contains every ``|``-separated part of ``match``."""
    with pytest.raises(InputError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    for part in match.split("|"):
        assert part in message, f"{part!r} not in {message!r}"
    return message


@pytest.fixture(scope="module")
def digits():
    return digits_images()


@pytest.fixture(scope="module")
def cluttered():
    return cluttered_digits(seed=5, canvas=32, clutter=4, noise=0.05)


# --------------------------------------------------------------------------- digits and cluttered digits


def test_digits_images_shapes_range_and_labels(digits):
    images, labels = digits
    assert images.shape == (N_DIGITS, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (N_DIGITS,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(np.unique(labels)) == set(range(10))


def test_cluttered_digits_same_seed_gives_identical_arrays(cluttered):
    again = cluttered_digits(seed=5, canvas=32, clutter=4, noise=0.05)
    np.testing.assert_array_equal(cluttered[0], again[0])
    np.testing.assert_array_equal(cluttered[1], again[1])


def test_cluttered_digits_different_seed_differs(cluttered):
    other = cluttered_digits(seed=6, canvas=32, clutter=4, noise=0.05)
    assert not np.array_equal(cluttered[0], other[0])


def test_cluttered_digits_shapes_range_and_labels_follow_digits(cluttered, digits):
    images, labels = cluttered
    assert images.shape == (N_DIGITS, 1, 32, 32) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(labels, digits[1])
    assert labels.dtype == np.int64
    wide = cluttered_digits(seed=0, canvas=48, clutter=1, noise=0.0)[0]
    assert wide.shape == (N_DIGITS, 1, 48, 48)


def test_cluttered_digits_clean_canvas_holds_exactly_the_upscaled_digit(digits):
    small = digits[0][:, 0]
    clean = cluttered_digits(seed=2, canvas=16, clutter=0, noise=0.0)[0][:, 0]
    np.testing.assert_array_equal(clean, np.kron(small, np.ones((2, 2), np.float32)))


def test_cluttered_digits_places_digit_at_varying_positions(digits):
    clean = cluttered_digits(seed=2, canvas=32, clutter=0, noise=0.0)[0][:, 0]
    small = digits[0][:, 0]
    # Each clean image holds the whole upscaled digit (4 pixels per original pixel) and nothing else.
    np.testing.assert_allclose(clean.sum(axis=(1, 2)), 4 * small.sum(axis=(1, 2)), rtol=1e-5)
    rows = np.argmax(clean.any(axis=2), axis=1)        # first inked row per image
    cols = np.argmax(clean.any(axis=1), axis=1)
    assert len(np.unique(rows)) > 8 and len(np.unique(cols)) > 8


def test_cluttered_digits_clutter_is_added_over_the_clean_digit():
    clean = cluttered_digits(seed=4, canvas=32, clutter=0, noise=0.0)[0]
    busy = cluttered_digits(seed=4, canvas=32, clutter=4, noise=0.0)[0]
    differs = (busy != clean).reshape(len(clean), -1).any(axis=1)
    assert differs.all()                               # every image got visible clutter
    assert (busy >= clean).all()                       # the digit itself is never erased
    added = (busy - clean).sum(axis=(1, 2, 3))
    assert added.min() > 1.0                           # more than a stray pixel of ink


def test_cluttered_digits_noise_changes_background():
    quiet = cluttered_digits(seed=4, canvas=32, clutter=0, noise=0.0)[0]
    noisy = cluttered_digits(seed=4, canvas=32, clutter=0, noise=0.1)[0]
    background = quiet == 0
    assert noisy[background].mean() > 0.02             # clipped Gaussian noise lifts the black background
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0


@pytest.mark.parametrize(
    "kwargs, field",
    [({"canvas": 15}, "canvas=15"), ({"clutter": -1}, "clutter=-1"), ({"noise": -0.1}, "noise=-0.1")],
)
def test_cluttered_digits_rejects_bad_arguments(kwargs, field):
    raises_one_line(cluttered_digits, 0, match=field, **kwargs)


# --------------------------------------------------------------------------- stratified split and few-shot


LABELS = np.array([0] * 10 + [1] * 7 + [2] * 2 + [3] * 1 + [4] * 25)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.9])
def test_split_stratified_covers_every_class_on_both_sides_and_is_disjoint(fraction):
    keep, held = split_stratified(LABELS, fraction, seed=1)
    assert len(np.intersect1d(keep, held)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([keep, held])), np.arange(len(LABELS)))
    assert keep.dtype == np.int64 and held.dtype == np.int64
    for c in (0, 1, 2, 4):                             # every class with >= 2 samples is on both sides
        assert (LABELS[keep] == c).any() and (LABELS[held] == c).any()
    assert (LABELS[keep] == 3).sum() == 1 and not (LABELS[held] == 3).any()   # a singleton stays on the keep side


def test_split_stratified_holds_out_the_fraction_of_each_class():
    keep, held = split_stratified(LABELS, 0.3, seed=1)
    counts = np.bincount(LABELS[held], minlength=5)
    np.testing.assert_array_equal(counts, [3, 2, 1, 0, 8])   # round(n * 0.3), clipped to 1..n-1


def test_split_stratified_is_seeded():
    a = split_stratified(LABELS, 0.3, seed=1)
    b = split_stratified(LABELS, 0.3, seed=1)
    c = split_stratified(LABELS, 0.3, seed=2)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.2])
def test_split_stratified_rejects_fraction_out_of_range(fraction):
    raises_one_line(split_stratified, LABELS, fraction, 0, match=f"fraction={fraction!r}")


def test_take_few_shot_keeps_exactly_per_class_and_is_seeded():
    labels = LABELS[LABELS != 3]
    idx = take_few_shot(labels, 2, seed=7)
    assert len(np.unique(idx)) == len(idx)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [2, 2, 2, 0, 2])
    np.testing.assert_array_equal(idx, take_few_shot(labels, 2, seed=7))
    assert any(not np.array_equal(idx, take_few_shot(labels, 2, seed=s)) for s in range(8, 12))


def test_take_few_shot_subsets_are_nested_for_one_seed():
    labels = np.repeat(np.arange(3), 20)
    small, large = take_few_shot(labels, 3, seed=0), take_few_shot(labels, 10, seed=0)
    assert set(small) <= set(large)


def test_take_few_shot_error_names_the_class_and_its_size():
    raises_one_line(take_few_shot, LABELS, 2, 0, match="class 3 has only 1 training image|few_shot=2|few_shot to 1")
    raises_one_line(take_few_shot, LABELS, 2, 0, class_names=("a", "b", "c", "rare", "e"), match="class 3 ('rare')")
    # several classes short: the smallest is named, so the suggested few_shot works for all
    raises_one_line(take_few_shot, LABELS, 3, 0, match="class 3 has only 1|2 classes fall short|few_shot to 1")


def test_take_few_shot_rejects_zero():
    raises_one_line(take_few_shot, LABELS, 0, 0, match="few_shot=0")


# --------------------------------------------------------------------------- image folder


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def gray(value: int, size=(6, 5)) -> np.ndarray:
    """A (H, W) uint8 image, constant except a gradient so flips/transposes would show."""
    h, w = size
    arr = np.full((h, w), value, np.uint8)
    arr[0, :] = np.arange(w, dtype=np.uint8)
    return arr


@pytest.fixture
def tree(tmp_path):
    """Two classes x three 6x5 grey PNGs; 'zebra' is written first so sorting by name matters."""
    root = tmp_path / "tree"
    for cls, base in (("zebra", 200), ("apple", 100)):
        for i in range(3):
            write_png(root / cls / f"img{i}.png", gray(base + i))
    (root / "apple" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_image_folder_loads_grey_tree_with_sorted_classes(tree, monkeypatch):
    listing = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(sorted(listing(self), reverse=True)))
    images, labels, names = load_image_folder(tree)
    assert names == ("apple", "zebra")
    assert images.shape == (6, 1, 6, 5) and images.dtype == np.float32
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    assert labels.dtype == np.int64
    np.testing.assert_allclose(images[0, 0], gray(100) / 255.0)
    np.testing.assert_allclose(images[5, 0], gray(202) / 255.0)


def test_image_folder_loads_rgb_channels_first(tmp_path):
    rgb = np.zeros((4, 7, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 255, 51
    for cls in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / cls / f"{i}.png", rgb)
    images, labels, names = load_image_folder(tmp_path)
    assert images.shape == (6, 3, 4, 7)
    np.testing.assert_allclose(images[:, 0], 1.0)
    np.testing.assert_allclose(images[:, 1], 0.0)
    np.testing.assert_allclose(images[:, 2], 0.2)


def test_image_folder_missing_folder(tmp_path):
    raises_one_line(load_image_folder, tmp_path / "nope", match=f"{tmp_path / 'nope'}|does not exist")


def test_image_folder_without_class_folders(tmp_path):
    write_png(tmp_path / "loose.png", gray(1))
    raises_one_line(load_image_folder, tmp_path, match=f"{tmp_path}|no class folders")


def test_image_folder_empty_class(tree):
    (tree / "mango").mkdir()
    raises_one_line(load_image_folder, tree, match=f"{tree / 'mango'}|no images")


def test_image_folder_class_with_only_non_images_counts_as_empty(tree):
    (tree / "mango").mkdir()
    (tree / "mango" / "readme.txt").write_text("x")
    raises_one_line(load_image_folder, tree, match=f"{tree / 'mango'}|no images")


def test_image_folder_unreadable_image(tree):
    bad = tree / "zebra" / "broken.png"
    bad.write_bytes(b"this is not a png")
    raises_one_line(load_image_folder, tree, match=f"{bad}|cannot be read")


def test_image_folder_mixed_sizes_names_one_file_of_each(tree):
    odd = tree / "zebra" / "big.png"
    write_png(odd, gray(5, size=(9, 9)))
    raises_one_line(load_image_folder, tree, match=f"{tree / 'apple' / 'img0.png'}|{odd}|5x6|9x9")


def test_image_folder_mixed_channels_names_one_file_of_each(tree):
    odd = tree / "zebra" / "colour.png"
    write_png(odd, np.zeros((6, 5, 3), np.uint8))
    raises_one_line(load_image_folder, tree, match=f"{tree / 'apple' / 'img0.png'}|{odd}|channel")


# --------------------------------------------------------------------------- MedMNIST


def medmnist_arrays(image_shape=(5, 4), n=(6, 3, 4), num_classes=3, label_shape="column", seed=0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(count, *image_shape), dtype=np.uint8)
        labels = np.arange(count) % num_classes
        arrays[f"{split}_labels"] = labels.astype(np.uint8)[:, None] if label_shape == "column" else labels
    return arrays


def write_npz(path: Path, arrays: dict) -> Path:
    np.savez_compressed(path, **arrays)
    return path


@pytest.mark.parametrize(
    "image_shape, expected",
    [((5, 4), (1, 5, 4)), ((5, 4, 3), (3, 5, 4)), ((4, 5, 6), (1, 4, 5, 6))],
    ids=["2d-grey", "2d-rgb", "3d"],
)
def test_medmnist_loads_channels_first_in_unit_range(tmp_path, image_shape, expected):
    arrays = medmnist_arrays(image_shape=image_shape)
    data = load_medmnist(write_npz(tmp_path / "x.npz", arrays))
    assert data["num_classes"] == 3
    for split, count in (("train", 6), ("val", 3), ("test", 4)):
        images, labels = data[split]
        assert images.shape == (count, *expected) and images.dtype == np.float32
        assert labels.shape == (count,) and labels.dtype == np.int64
        np.testing.assert_array_equal(labels, arrays[f"{split}_labels"].ravel())
        raw = arrays[f"{split}_images"].astype(np.float32) / 255.0
        if image_shape[-1] == 3:
            raw = raw.transpose(0, 3, 1, 2)
        np.testing.assert_allclose(images.reshape(raw.shape), raw, rtol=1e-6)


def test_medmnist_accepts_flat_labels(tmp_path):
    data = load_medmnist(write_npz(tmp_path / "x.npz", medmnist_arrays(label_shape="flat")))
    assert data["train"][1].shape == (6,)


def test_medmnist_missing_file(tmp_path):
    raises_one_line(load_medmnist, tmp_path / "absent.npz", match=f"{tmp_path / 'absent.npz'}|does not exist")


def test_medmnist_not_an_npz(tmp_path):
    text = tmp_path / "text.npz"
    text.write_text("hello")
    raises_one_line(load_medmnist, text, match=f"{text}|not an .npz")
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as fh:
        np.save(fh, np.zeros(3))
    raises_one_line(load_medmnist, npy, match=f"{npy}|not an .npz")


def test_medmnist_missing_keys_are_named(tmp_path):
    arrays = medmnist_arrays()
    del arrays["val_labels"], arrays["test_images"]
    path = write_npz(tmp_path / "x.npz", arrays)
    message = raises_one_line(load_medmnist, path, match=f"{path}|val_labels|test_images")
    assert "train_images," not in message.split(";")[0]   # only the missing keys are named before the fix


def test_medmnist_negative_labels(tmp_path):
    arrays = medmnist_arrays(label_shape="flat")
    arrays["train_labels"] = arrays["train_labels"].astype(np.int64)
    arrays["train_labels"][2] = -1
    path = write_npz(tmp_path / "x.npz", arrays)
    raises_one_line(load_medmnist, path, match=f"{path}|train_labels|negative label -1")


def test_medmnist_length_mismatch(tmp_path):
    arrays = medmnist_arrays()
    arrays["test_labels"] = arrays["test_labels"][:-1]
    path = write_npz(tmp_path / "x.npz", arrays)
    raises_one_line(load_medmnist, path, match=f"{path}|4 test_images|3 test_labels")


def test_medmnist_empty_class(tmp_path):
    arrays = medmnist_arrays(label_shape="flat")
    arrays["train_labels"] = np.array([0, 0, 2, 2, 0, 2])   # class 1 has no training image
    path = write_npz(tmp_path / "x.npz", arrays)
    raises_one_line(load_medmnist, path, match=f"{path}|class(es) [1]")


def test_medmnist_class_only_in_test_counts_as_empty_training_class(tmp_path):
    arrays = medmnist_arrays(label_shape="flat")
    arrays["test_labels"] = np.array([0, 1, 2, 3])
    path = write_npz(tmp_path / "x.npz", arrays)
    raises_one_line(load_medmnist, path, match=f"{path}|class(es) [3]")


# --------------------------------------------------------------------------- load_classification


def _rows(images: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in images}


def test_load_classification_digits_default_splits_stratified():
    data = load_classification(ClassificationDataConfig())
    assert data.num_classes == 10 and data.class_names == tuple("0123456789")
    assert data.image_shape == (1, 8, 8)
    assert len(data.train_labels) + len(data.test_labels) == N_DIGITS
    assert abs(len(data.test_labels) - 0.3 * N_DIGITS) <= 10
    assert data.val_images.shape == (0, 1, 8, 8) and data.val_labels.shape == (0,)
    assert set(data.test_labels) == set(range(10)) and set(data.train_labels) == set(range(10))


def test_load_classification_val_and_few_shot_never_touch_test():
    base = ClassificationDataConfig(source="cluttered_digits", seed=3)
    plain = load_classification(base)
    tuned = load_classification(ClassificationDataConfig(source="cluttered_digits", seed=3, val_fraction=0.2,
                                                         few_shot=20))
    np.testing.assert_array_equal(plain.test_images, tuned.test_images)
    np.testing.assert_array_equal(plain.test_labels, tuned.test_labels)
    np.testing.assert_array_equal(np.bincount(tuned.train_labels), [20] * 10)
    expected_val = np.floor(np.bincount(plain.train_labels) * 0.2 + 0.5)   # a share of each training class
    np.testing.assert_array_equal(np.bincount(tuned.val_labels), expected_val)
    assert set(tuned.val_labels) == set(range(10))
    # validation and the few-shot set come from the training side only, and never overlap each other or test
    train, val, test = _rows(tuned.train_images), _rows(tuned.val_images), _rows(plain.test_images)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val <= _rows(plain.train_images)


def test_load_classification_is_deterministic_and_seeded():
    cfg = ClassificationDataConfig(source="digits", seed=1, val_fraction=0.1, few_shot=5)
    a, b = load_classification(cfg), load_classification(cfg)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.val_labels, b.val_labels)
    c = load_classification(ClassificationDataConfig(source="digits", seed=2, val_fraction=0.1, few_shot=5))
    assert not np.array_equal(a.test_images, c.test_images)


def test_load_classification_digits_and_cluttered_hold_out_the_same_digits():
    plain = load_classification(ClassificationDataConfig(source="digits", seed=4))
    busy = load_classification(ClassificationDataConfig(source="cluttered_digits", seed=4))
    np.testing.assert_array_equal(plain.test_labels, busy.test_labels)
    assert busy.image_shape == (1, 32, 32)


def test_load_classification_few_shot_error_names_the_class(tree):
    cfg = ClassificationDataConfig(source="folder", path=str(tree), test_fraction=0.3, few_shot=3)
    raises_one_line(load_classification, cfg, match="class 0 ('apple')|only 2 training image|few_shot=3")


def test_load_classification_folder(tree):
    data = load_classification(ClassificationDataConfig(source="folder", path=str(tree)))
    assert data.class_names == ("apple", "zebra") and data.num_classes == 2
    np.testing.assert_array_equal(np.bincount(data.train_labels), [2, 2])
    np.testing.assert_array_equal(np.bincount(data.test_labels), [1, 1])


def test_load_classification_medmnist_keeps_the_files_split(tmp_path):
    arrays = medmnist_arrays()
    path = write_npz(tmp_path / "m.npz", arrays)
    data = load_classification(ClassificationDataConfig(source="medmnist", path=str(path), few_shot=1))
    np.testing.assert_array_equal(data.test_labels, arrays["test_labels"].ravel())
    np.testing.assert_allclose(data.test_images[:, 0], arrays["test_images"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.val_labels, arrays["val_labels"].ravel())
    np.testing.assert_array_equal(np.bincount(data.train_labels), [1, 1, 1])
    assert data.num_classes == 3 and data.class_names == ("0", "1", "2")


# --------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "digit"}, "source='digit'|did you mean 'digits'"),
        ({"source": "cluttered"}, "source='cluttered'|did you mean 'cluttered_digits'"),
        ({"source": "folder"}, "path is required|source='folder'"),
        ({"source": "medmnist"}, "path is required|source='medmnist'"),
        ({"few_shot": -1}, "few_shot=-1"),
        ({"few_shot": 2.5}, "few_shot=2.5"),
        ({"test_fraction": 0}, "test_fraction=0"),
        ({"test_fraction": 1.0}, "test_fraction=1.0"),
        ({"val_fraction": 1}, "val_fraction=1"),
        ({"val_fraction": -0.1}, "val_fraction=-0.1"),
        ({"canvas": 12}, "canvas=12"),
        ({"clutter": -2}, "clutter=-2"),
        ({"noise": -0.5}, "noise=-0.5"),
        ({"seed": "a"}, "seed='a'"),
        ({"source": "medmnist", "path": "x.npz", "val_fraction": 0.2}, "val_fraction=0.2|own validation split"),
    ],
)
def test_config_rejects_bad_values_with_one_line(kwargs, match):
    raises_one_line(ClassificationDataConfig, match=match, **kwargs)


def test_config_accepts_pathlike_path(tmp_path):
    cfg = ClassificationDataConfig(source="folder", path=tmp_path)
    assert cfg.path == str(tmp_path)


def test_module_imports_no_torch_ray_or_mlflow():
    code = (
        "import sys, medtune.trainables.classification_data; "
        "print([m for m in ('torch', 'ray', 'mlflow', 'sklearn', 'PIL') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
