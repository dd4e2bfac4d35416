"""2D image-classification data for the APGA (paper 002) and active-learning (paper 001) studies.

Four sources give the same thing, float32 images in [0, 1], channels first, with
int64 class indices ``0..K-1``:

* ``digits`` (default, nothing to download): :func:`digits_images`, the real
  8x8 handwritten digits that ship with scikit-learn (1797 images, 10 classes).
* ``cluttered_digits`` (the APGA default): :func:`cluttered_digits`, the same
  digits upscaled to 16x16 at a random place on a larger canvas among
  fragments of other digits and noise, so that hiding pixels can help a
  classifier, which is APGA's premise.
* ``folder``: :func:`load_image_folder`, a class-per-folder tree of PNG, JPEG
  or BMP files (``root/<class>/<image>``).
* ``medmnist``: :func:`load_medmnist`, a MedMNIST ``.npz`` file with its own
  train/val/test split (2D gray, 2D RGB or 3D volumes).

:func:`load_classification` turns a :class:`ClassificationDataConfig` into a
:class:`ClassificationData`: a seeded stratified test split (unless the source
has one of its own), then an optional validation split and an optional
few-shot subset, both taken from the training side only. The test side is
never touched after it is drawn, and the same config always gives the same
arrays, so every trial of a study sees identical data.

Every problem with user input raises :class:`~medtune.errors.InputError`
with one line naming the field, file or folder and the fix. Pillow and
scikit-learn are imported where used; this module never imports torch, Ray or
MLflow.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtune.errors import InputError, did_you_mean
from medtune.util import is_int, is_number

__all__ = [
    "ClassificationData", "ClassificationDataConfig", "DIGIT_CLASS_NAMES", "DIGIT_SIDE", "FRAGMENT_CROP",
    "FRAGMENT_SIDE", "IMAGE_SUFFIXES", "MEDMNIST_KEYS", "SOURCES", "cluttered_digits", "digits_images",
    "load_classification", "load_image_folder", "load_medmnist", "split_stratified", "take_few_shot",
]

SOURCES = ("digits", "cluttered_digits", "folder", "medmnist")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MEDMNIST_KEYS = ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels")
DIGIT_CLASS_NAMES = tuple(str(d) for d in range(10))

DIGIT_SIDE = 16      # a cluttered digit is the 8x8 digit upscaled x2
FRAGMENT_CROP = 6    # a distractor is a 6x6 crop of another digit ...
FRAGMENT_SIDE = 12   # ... upscaled x2

# Seed-stream tags: each random decision draws from its own stream of ``cfg.seed``,
# so changing one knob (say clutter) leaves every other draw unchanged.
_PLACE, _CLUTTER, _NOISE = 0, 1, 2
_TEST_SPLIT, _VAL_SPLIT, _FEW_SHOT = 11, 12, 13


def _stream(seed: int, tag: int) -> int:
    """A 63-bit seed for the independent random stream ``tag`` of ``seed``."""
    return int(np.random.SeedSequence([int(seed), tag]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ClassificationDataConfig:
    """Where the classification images come from and how they are split.

    Attributes:
        source: ``"digits"`` (scikit-learn's handwritten digits, default),
            ``"cluttered_digits"`` (the APGA default), ``"folder"`` (a
            class-per-folder image tree) or ``"medmnist"`` (a MedMNIST ``.npz``).
        path: The image tree's root (``folder``) or the ``.npz`` file
            (``medmnist``); required for those two, ignored by the digit sources.
        canvas: ``cluttered_digits`` only: canvas side in pixels (>= 16, the
            size of an upscaled digit).
        clutter: ``cluttered_digits`` only: distractor fragments per image (>= 0).
        noise: ``cluttered_digits`` only: standard deviation of the Gaussian
            noise added to the [0, 1] image before clipping (>= 0).
        test_fraction: Share of each class held out as the test set, in (0, 1),
            for sources without a split of their own; ignored for ``medmnist``,
            whose file carries its own test split.
        val_fraction: Share of each training class moved to a validation set,
            in [0, 1); 0 means no validation set. Must be 0 for ``medmnist``,
            whose file carries its own validation split.
        few_shot: 0 keeps every training image; ``k > 0`` keeps ``k`` seeded
            training images per class (the test and validation sets keep all).
        seed: Data seed for the clutter generation and every split; the same for
            all trials of a study so they see identical data.

    Raises:
        InputError: One line naming the field, the value and the fix.
    """

    source: str = "digits"
    path: str | None = None
    canvas: int = 32
    clutter: int = 4
    noise: float = 0.05
    test_fraction: float = 0.3
    val_fraction: float = 0.0
    few_shot: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            hint = did_you_mean(self.source, SOURCES)
            raise InputError(
                f"source={self.source!r} is not a classification data source; "
                f"use one of {', '.join(SOURCES)}{hint}"
            )
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))
        if self.path is not None and not isinstance(self.path, str):
            raise InputError(
                f"path={self.path!r} is not a file or folder path; "
                "give a string such as 'data/pneumoniamnist.npz'"
            )
        if self.source in ("folder", "medmnist") and not self.path:
            what = ("the root of the class-per-folder image tree" if self.source == "folder"
                    else "the MedMNIST .npz file")
            raise InputError(f"path is required when source={self.source!r}; set path to {what}")
        if not is_int(self.canvas) or self.canvas < DIGIT_SIDE:
            raise InputError(
                f"canvas={self.canvas!r} is too small; "
                f"use an integer >= {DIGIT_SIDE} (a digit is {DIGIT_SIDE}x{DIGIT_SIDE})"
            )
        if not is_int(self.clutter) or self.clutter < 0:
            raise InputError(f"clutter={self.clutter!r} is invalid; use a whole number of distractor fragments >= 0")
        if not is_number(self.noise) or self.noise < 0:
            raise InputError(f"noise={self.noise!r} is invalid; use a noise standard deviation >= 0, e.g. 0.05")
        if not is_number(self.test_fraction) or not 0 < self.test_fraction < 1:
            raise InputError(
                f"test_fraction={self.test_fraction!r} is out of range; "
                "use a number strictly between 0 and 1, e.g. 0.3"
            )
        if not is_number(self.val_fraction) or not 0 <= self.val_fraction < 1:
            raise InputError(
                f"val_fraction={self.val_fraction!r} is out of range; "
                "use a number in [0, 1) (0: no validation set)"
            )
        if self.source == "medmnist" and self.val_fraction > 0:
            raise InputError(
                f"val_fraction={self.val_fraction!r} with source='medmnist': the .npz file carries its own validation "
                "split; set val_fraction to 0"
            )
        if not is_int(self.few_shot) or self.few_shot < 0:
            raise InputError(
                f"few_shot={self.few_shot!r} is invalid; "
                "use 0 (all training images) or a number of images per class >= 1"
            )
        if not is_int(self.seed):
            raise InputError(f"seed={self.seed!r} is not an integer; use an integer such as 0")


@dataclass
class ClassificationData:
    """Train/validation/test arrays ready for a 2D (or 3D) classifier.

    Attributes:
        train_images, val_images, test_images: ``float32`` ``(N, C, H, W)`` in
            [0, 1] (``(N, 1, D, H, W)`` for MedMNIST 3D). ``val_images`` has
            ``N == 0`` when no validation set was asked for.
        train_labels, val_labels, test_labels: ``int64`` ``(N,)`` in ``0..num_classes-1``.
        num_classes: Number of classes ``K``; every class has at least one training image.
        class_names: One name per class, index = label value (the folder names
            for ``folder``, ``"0"``.. otherwise).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image, ``(C, H, W)`` (or ``(1, D, H, W)``)."""
        return tuple(self.train_images.shape[1:])


# --------------------------------------------------------------------------- digits


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits as images (shipped with the package, no download).

    Returns:
        ``images`` ``float32`` ``(1797, 1, 8, 8)`` in [0, 1] (the 0..16 grey
        levels divided by 16) and ``labels`` ``int64`` ``(1797,)`` in 0..9
        (174 to 183 per class).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    return images, digits.target.astype(np.int64)


def _windows(corners: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays for one ``side x side`` window per image.

    Args:
        corners: ``(N, 2)`` top-left ``(row, col)`` of each window.

    Returns:
        ``rows`` ``(N, side, 1)`` and ``cols`` ``(N, 1, side)``, to index an
        ``(N, H, W)`` array together with ``arange(N)[:, None, None]``.
    """
    offsets = np.arange(side)
    return (corners[:, 0, None] + offsets)[:, :, None], (corners[:, 1, None] + offsets)[:, None, :]


def cluttered_digits(
    seed: int, canvas: int = 32, clutter: int = 4, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits on a cluttered, noisy canvas (the APGA default data).

    Each of the 1797 digits is upscaled 8x8 -> 16x16 (``np.kron``, nearest
    neighbour) and placed at a uniformly random position on a black
    ``canvas x canvas`` image. ``clutter`` distractors follow: each a random
    6x6 crop of another, randomly chosen digit image (any class, never the
    image itself; every such crop holds ink), upscaled to 12x12 and placed at a
    random position, where it may overlap the digit or other fragments
    (overlaps keep the brighter pixel). Then Gaussian noise of std ``noise``
    is added and the image is clipped to [0, 1]. Labels are the original ones,
    in the original order, so a split drawn from the labels picks the same
    digits as for ``digits``.

    Placements, fragments and noise come from three independent streams of
    ``seed``: the digit positions do not depend on ``clutter`` or ``noise``,
    so ``cluttered_digits(seed, canvas, 0, 0.0)`` is the clean counterpart of
    any ``cluttered_digits(seed, canvas, ...)``, pixel for pixel.

    Args:
        seed: Seed; the same arguments give bit-identical arrays.
        canvas: Canvas side (>= 16; 16 leaves the digit no room to move).
        clutter: Distractor fragments per image (>= 0).
        noise: Noise standard deviation on the [0, 1] scale (>= 0).

    Returns:
        ``images`` ``float32`` ``(1797, 1, canvas, canvas)`` in [0, 1] and
        ``labels`` ``int64`` ``(1797,)`` in 0..9.

    Raises:
        InputError: For ``canvas < 16``, ``clutter < 0`` or ``noise < 0``.
    """
    if not is_int(canvas) or canvas < DIGIT_SIDE:
        raise InputError(
            f"canvas={canvas!r} is too small; "
            f"use an integer >= {DIGIT_SIDE} (a digit is {DIGIT_SIDE}x{DIGIT_SIDE})"
        )
    if not is_int(clutter) or clutter < 0:
        raise InputError(f"clutter={clutter!r} is invalid; use a whole number of distractor fragments >= 0")
    if not is_number(noise) or noise < 0:
        raise InputError(f"noise={noise!r} is invalid; use a noise standard deviation >= 0, e.g. 0.05")
    small, labels = digits_images()
    small = small[:, 0]                                           # (N, 8, 8)
    n = len(small)
    up = np.ones((2, 2), np.float32)
    out = np.zeros((n, canvas, canvas), np.float32)

    place = np.random.default_rng(_stream(seed, _PLACE)).integers(0, canvas - DIGIT_SIDE + 1, size=(n, 2))
    rows, cols = _windows(place, DIGIT_SIDE)
    out[np.arange(n)[:, None, None], rows, cols] = np.kron(small, up)

    if clutter > 0:
        rng = np.random.default_rng(_stream(seed, _CLUTTER))
        other = rng.integers(0, n - 1, size=(n, clutter))
        other += other >= np.arange(n)[:, None]                   # skip the image itself
        crop_at = rng.integers(0, 8 - FRAGMENT_CROP + 1, size=(n, clutter, 2))
        put_at = rng.integers(0, canvas - FRAGMENT_SIDE + 1, size=(n, clutter, 2))
        image = np.arange(n)[:, None, None]
        for k in range(clutter):                                  # one fragment per image per pass
            crop_rows, crop_cols = _windows(crop_at[:, k], FRAGMENT_CROP)
            fragments = np.kron(small[other[:, k, None, None], crop_rows, crop_cols], up)   # (N, 12, 12)
            rows, cols = _windows(put_at[:, k], FRAGMENT_SIDE)
            out[image, rows, cols] = np.maximum(out[image, rows, cols], fragments)

    if noise > 0:
        out += np.random.default_rng(_stream(seed, _NOISE)).normal(0.0, noise, size=out.shape).astype(np.float32)
        np.clip(out, 0.0, 1.0, out=out)
    return out[:, None], labels


# --------------------------------------------------------------------------- image folder


def _read_image(path: Path) -> np.ndarray:
    """Read one image as ``float32`` ``(C, H, W)`` in [0, 1]; C = 1 (grey) or 3 (colour)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("1", "L", "LA"):
                return (np.asarray(img.convert("L"), np.float32) / 255.0)[None]
            if mode.startswith("I"):                               # 16-bit grey PNG: I;16 or I
                arr = np.asarray(img).astype(np.float32)
                if arr.min() < 0 or arr.max() > 65535:
                    raise InputError(f"image {path} has grey values outside 0..65535; save it as 8- or 16-bit grey")
                return (arr / 65535.0)[None]
            if mode == "F":
                raise InputError(f"image {path} holds floating-point pixels; save it as 8-bit grey or RGB")
            # RGB, RGBA (alpha dropped), palette, CMYK, YCbCr ...
            return np.asarray(img.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"image {path} cannot be read ({_one_line(exc)}); replace or delete the file") from None


def load_image_folder(root: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Load a class-per-folder image tree: ``root/<class name>/<image>.png|jpg|jpeg|bmp``.

    Classes are the sub-folders of ``root`` sorted by name (label 0 is the
    first); folders and files whose names start with ``.`` and files with other
    suffixes are skipped, as are files directly in ``root``. Images are read
    with Pillow, in file-name order within each class: grey (1-bit, 8-bit or
    16-bit) gives one channel, colour (RGB, RGBA with alpha dropped, palette)
    three. All images must share one size and one channel count; nothing is
    resized.

    Args:
        root: The tree's root folder.

    Returns:
        ``images`` ``float32`` ``(N, C, H, W)`` in [0, 1], ``labels`` ``int64``
        ``(N,)`` and the class names (folder names), index = label.

    Raises:
        InputError: One line naming the folder or file for: a missing folder,
            no class folders, a class folder without images, an unreadable
            image, mixed image sizes (one file of each size named) and mixed
            channel counts (one file of each named).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist; point path at a folder holding one sub-folder per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise InputError(
            f"image folder {root} has no class folders; put the images of each class in root/<class name>/")
    images: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[Path, np.ndarray] | None = None
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p for p in class_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise InputError(
                f"class folder {class_dir} holds no images ({'/'.join(IMAGE_SUFFIXES)}); "
                "add images or remove the folder"
            )
        for path in files:
            image = _read_image(path)
            if first is None:
                first = (path, image)
            ref_path, ref = first
            if image.shape[1:] != ref.shape[1:]:
                raise InputError(
                    f"images differ in size: {ref_path} is {ref.shape[2]}x{ref.shape[1]} but {path} is "
                    f"{image.shape[2]}x{image.shape[1]} (width x height); resize all images to one size"
                )
            if image.shape[0] != ref.shape[0]:
                kind = {1: "grey", 3: "colour"}
                raise InputError(
                    f"images mix channel counts: {ref_path} is {kind[ref.shape[0]]} ({ref.shape[0]} channel(s)) "
                    f"but {path} is {kind[image.shape[0]]} ({image.shape[0]}); convert all images to grey or all to RGB"
                )
            images.append(image)
            labels.append(label)
    stacked = np.stack(images).astype(np.float32, copy=False)
    return stacked, np.asarray(labels, np.int64), tuple(p.name for p in class_dirs)


# --------------------------------------------------------------------------- MedMNIST


def _medmnist_images(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    """MedMNIST images to ``float32`` in [0, 1], channels first.

    ``(N, H, W)`` -> ``(N, 1, H, W)``; ``(N, H, W, 3)`` -> ``(N, 3, H, W)``;
    ``(N, H, W, 1)`` -> ``(N, 1, H, W)``; any other 4D ``(N, D, H, W)`` is a 3D
    volume -> ``(N, 1, D, H, W)`` (so a volume whose last axis has length 3 or
    1 would be misread; MedMNIST volumes are 28 or 64 wide).
    """
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise InputError(
                f"{path} {key} has values {arr.min()}..{arr.max()} outside 0..255; store 8-bit images (uint8)"
            )
        out = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1):
            raise InputError(f"{path} {key} holds floats outside [0, 1] (or NaN); "
                             "store uint8 images or floats in [0, 1]")
        out = arr.astype(np.float32)
    else:
        raise InputError(f"{path} {key} has dtype {arr.dtype}; store uint8 images")
    if out.ndim == 3:
        return out[:, None]
    if out.ndim == 4 and out.shape[-1] in (1, 3):
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    if out.ndim == 4:
        return out[:, None]
    raise InputError(
        f"{path} {key} has shape {arr.shape}; expected (N, H, W), (N, H, W, 3) or 3D volumes (N, D, H, W)"
    )


def _medmnist_labels(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    """MedMNIST labels ``(N, 1)`` or ``(N,)`` to ``int64`` ``(N,)``."""
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(
            f"{path} {key} has shape {arr.shape}; expected one class index per image, (N,) or (N, 1) "
            "(multi-label files such as ChestMNIST are not supported)"
        )
    if np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{path} {key} has dtype {arr.dtype}; store integer class indices")
    if arr.size and arr.min() < 0:
        raise InputError(f"{path} {key} has negative label {int(arr.min())}; number classes 0..K-1")
    return arr.astype(np.int64)


def load_medmnist(path: str | Path) -> dict:
    """Load a MedMNIST ``.npz`` file with its own train/val/test split.

    The file holds ``train_images``, ``train_labels``, ``val_images``,
    ``val_labels``, ``test_images`` and ``test_labels``. Images are ``uint8``
    (floats already in [0, 1] are accepted too): 2D grey ``(N, H, W)``, 2D
    colour ``(N, H, W, 3)`` or 3D volumes ``(N, D, H, W)``. Labels are
    ``(N, 1)`` or ``(N,)`` non-negative integers (single-label tasks only).

    Args:
        path: The ``.npz`` file.

    Returns:
        ``{"train": (images, labels), "val": (...), "test": (...), "num_classes": K}``
        with images ``float32`` in [0, 1], channels first (``(N, 1, H, W)``,
        ``(N, 3, H, W)`` or ``(N, 1, D, H, W)``), labels ``int64`` ``(N,)``,
        and ``K = max label + 1`` over all splits. A split may be empty except
        ``train``.

    Raises:
        InputError: One line naming the file for: a missing file, a file that
            is not an ``.npz``, missing keys (named), negative labels, an
            images/labels length mismatch, splits with different image shapes,
            an empty training set, or a class index in ``0..K-1`` without a
            training image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"MedMNIST file {path} does not exist; point path at a .npz file such as pneumoniamnist.npz")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not an .npz archive; give the MedMNIST .npz file (e.g. pneumoniamnist.npz)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in MEDMNIST_KEYS if k not in npz.files]
            if missing:
                raise InputError(
                    f"{path} lacks key(s) {', '.join(missing)}; "
                    f"a MedMNIST .npz holds {', '.join(MEDMNIST_KEYS)}"
                )
            raw = {k: npz[k] for k in MEDMNIST_KEYS}
    except InputError:
        raise
    except Exception as exc:  # zip, zlib, format and pickle errors all mean the same to the user
        raise InputError(f"{path} is not a readable .npz ({_one_line(exc)}); re-download or re-save the file") from None

    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "val", "test"):
        images = _medmnist_images(raw[f"{split}_images"], path, f"{split}_images")
        labels = _medmnist_labels(raw[f"{split}_labels"], path, f"{split}_labels")
        if len(images) != len(labels):
            raise InputError(
                f"{path} has {len(images)} {split}_images but {len(labels)} {split}_labels; they must pair one to one"
            )
        splits[split] = (images, labels)
    shapes = {split: splits[split][0].shape[1:] for split in splits if len(splits[split][0])}
    if len(set(shapes.values())) > 1:
        raise InputError(f"{path} splits differ in image shape ({shapes}); every split must hold images of one shape")
    train_labels = splits["train"][1]
    if not len(train_labels):
        raise InputError(f"{path} has no training images; train_images must not be empty")
    num_classes = 1 + max(int(labels.max()) for _, labels in splits.values() if len(labels))
    absent = np.setdiff1d(np.arange(num_classes), train_labels)
    if absent.size:
        raise InputError(
            f"{path} has no training image of class(es) {absent.tolist()} (labels run 0..{num_classes - 1}); "
            "renumber classes 0..K-1 without gaps"
        )
    return {**splits, "num_classes": num_classes}


# --------------------------------------------------------------------------- splits


def _class_positions(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(class, indices of that class)`` for each class present, in ascending class order."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(f"labels have shape {labels.shape}; give one class index per sample, shape (N,)")
    return [(int(c), np.flatnonzero(labels == c)) for c in np.unique(labels)]


def split_stratified(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: hold out ``fraction`` of every class.

    A class of ``n`` samples gives ``round(n * fraction)`` (halves round up) to
    the held-out side, clipped to ``1..n-1`` so both sides get at least one of
    each class with ``n >= 2``; a class with a single sample stays on the keep
    side. Per-class rounding means the held-out total can differ from
    ``fraction * N`` by up to half a sample per class.

    Args:
        labels: ``(N,)`` class indices (any integers; N may be 0).
        fraction: Held-out share, strictly between 0 and 1.
        seed: Seed; the same labels, fraction and seed give the same split.

    Returns:
        ``(keep_idx, held_idx)``: sorted ``int64`` positions into ``labels``,
        disjoint, together covering ``range(N)``.

    Raises:
        InputError: For a fraction outside (0, 1) or labels that are not 1D.
    """
    if not is_number(fraction) or not 0 < fraction < 1:
        raise InputError(f"fraction={fraction!r} is out of range; use a number strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    keep, held = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for _, idx in _class_positions(labels):
        n = len(idx)
        n_held = 0 if n < 2 else min(max(int(math.floor(n * fraction + 0.5)), 1), n - 1)
        order = rng.permutation(idx)
        held.append(order[:n_held])
        keep.append(order[n_held:])
    return np.sort(np.concatenate(keep)).astype(np.int64), np.sort(np.concatenate(held)).astype(np.int64)


def take_few_shot(
    labels: np.ndarray, per_class: int, seed: int, class_names: tuple[str, ...] | None = None
) -> np.ndarray:
    """Seeded few-shot subset: ``per_class`` samples of every class present.

    Each class's samples are shuffled once with ``seed`` and the first
    ``per_class`` kept, so with one seed the subsets for growing ``per_class``
    are nested (the 10-shot set lies inside the 100-shot set).

    Args:
        labels: ``(N,)`` class indices.
        per_class: Samples to keep per class (>= 1).
        seed: Seed.
        class_names: Optional names (index = label) used in the error message.

    Returns:
        Sorted ``int64`` positions into ``labels``, ``per_class`` per class.

    Raises:
        InputError: If ``per_class < 1``, or, when classes have fewer than
            ``per_class`` samples, naming the smallest such class and its size
            (the largest ``per_class`` that would work).
    """
    if not is_int(per_class) or per_class < 1:
        raise InputError(f"few_shot={per_class!r} is invalid; use a number of images per class >= 1")
    classes = _class_positions(labels)
    short = [(len(idx), c) for c, idx in classes if len(idx) < per_class]
    if short:
        size, c = min(short)
        name = f" ({class_names[c]!r})" if class_names is not None and 0 <= c < len(class_names) else ""
        others = f" ({len(short)} classes fall short)" if len(short) > 1 else ""
        raise InputError(
            f"class {c}{name} has only {size} training image(s), fewer than few_shot={per_class}{others}; "
            f"set few_shot to {size} or less"
        )
    rng = np.random.default_rng(seed)
    chosen = [np.zeros(0, np.int64)] + [rng.permutation(idx)[:per_class] for _, idx in classes]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


# --------------------------------------------------------------------------- everything together


def load_classification(cfg: ClassificationDataConfig) -> ClassificationData:
    """Load the configured source and split it into train / validation / test.

    1. Test: ``medmnist`` keeps the file's own train/val/test; every other
       source holds out ``cfg.test_fraction`` of each class
       (:func:`split_stratified`).
    2. Validation: with ``cfg.val_fraction > 0``, that share of each training
       class moves to the validation set (``medmnist`` uses the file's).
    3. Few-shot: with ``cfg.few_shot = k > 0``, ``k`` images per class of what
       is left of the training set are kept (:func:`take_few_shot`).

    Steps 2 and 3 only ever touch the training side, and each step draws from
    its own stream of ``cfg.seed``, so the test set is the same whatever
    ``val_fraction`` and ``few_shot`` are, and ``digits`` and
    ``cluttered_digits`` with one seed hold out the same digits.

    Returns:
        A :class:`ClassificationData`; ``val_images`` is empty
        (``(0, *image_shape)``) when there is no validation set.

    Raises:
        InputError: From the folder or MedMNIST loader, or when ``few_shot``
            exceeds a class's training images (naming the class).
    """
    if cfg.source == "medmnist":
        assert cfg.path is not None  # the config requires a path for this source
        loaded = load_medmnist(cfg.path)
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = loaded["train"], loaded["val"], loaded["test"]
        num_classes = loaded["num_classes"]
        class_names = tuple(str(c) for c in range(num_classes))
    else:
        if cfg.source == "digits":
            images, labels = digits_images()
            class_names = DIGIT_CLASS_NAMES
        elif cfg.source == "cluttered_digits":
            images, labels = cluttered_digits(cfg.seed, cfg.canvas, cfg.clutter, cfg.noise)
            class_names = DIGIT_CLASS_NAMES
        else:
            assert cfg.path is not None  # the config requires a path for this source
            images, labels, class_names = load_image_folder(cfg.path)
        num_classes = len(class_names)
        keep, held = split_stratified(labels, cfg.test_fraction, _stream(cfg.seed, _TEST_SPLIT))
        train_x, train_y, test_x, test_y = images[keep], labels[keep], images[held], labels[held]
        val_x, val_y = train_x[:0], train_y[:0]
        if cfg.val_fraction > 0:
            keep, held = split_stratified(train_y, cfg.val_fraction, _stream(cfg.seed, _VAL_SPLIT))
            train_x, train_y, val_x, val_y = train_x[keep], train_y[keep], train_x[held], train_y[held]
    if cfg.few_shot > 0:
        keep = take_few_shot(train_y, cfg.few_shot, _stream(cfg.seed, _FEW_SHOT), class_names)
        train_x, train_y = train_x[keep], train_y[keep]
    return ClassificationData(
        train_images=train_x,
        train_labels=train_y,
        val_images=val_x,
        val_labels=val_y,
        test_images=test_x,
        test_labels=test_y,
        num_classes=num_classes,
        class_names=tuple(class_names),
    )
