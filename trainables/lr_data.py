"""3D segmentation data for the learning-rate study.

Two sources give the same thing, a list of :class:`Case` (one image,
``(D, H, W)`` or ``(C, D, H, W)`` for C modalities, and its integer label map ``(D, H, W)``):

* ``phantom`` (default, nothing to download): :func:`make_phantom` generates a
  stand-in for MSD Task04 Hippocampus, two adjacent structures (label 1
  "anterior" head, label 2 "posterior" tail) in MR-like tissue.
* ``decathlon``: :func:`load_decathlon` reads any MSD task (Task04 Hippocampus,
  Task01 BrainTumour's four MR modalities, ...) from a local folder in its own
  layout (``dataset.json``, ``imagesTr/``, ``labelsTr/``), 3D or 4D multi-modal,
  with MONAI's ``load_decathlon_datalist``, ``LoadImaged`` (``NibabelReader``) and ``EnsureChannelFirstd``.

:func:`split_datalists` checks either source and gives the seeded train/validation/test split (the same for
every trial of a study) as MONAI data lists, :class:`SegmentationSplit`, with the deterministic preprocessing
that each trial runs once per volume in a ``CacheDataset``; :func:`load_split` materialises the same split as
fixed-size, normalised dense arrays.

Every problem with user input raises :class:`~medtune.errors.InputError`
with one line naming the field or file and the fix. MONAI and nibabel are
imported where used, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medtune.config import to_dict
from medtune.errors import InputError, did_you_mean
from medtune.util import float3, int3, is_int, is_number, single_threaded

__all__ = [
    "CACHES", "Case", "CaseHeader", "CropToImageOrLabel", "DataConfig", "PHANTOM_CLASS_NAMES", "PLANS", "SOURCES",
    "SOURCE_DEFAULTS", "SW_MODES", "SegmentationData", "SegmentationSplit", "arrays_as_split",
    "decathlon_class_names", "decathlon_modalities", "load_decathlon", "load_split", "make_phantom",
    "median_spacing", "prepare", "preprocess_decathlon", "preprocessing_transforms", "ras_spacing",
    "scan_decathlon", "split_datalists", "split_indices", "split_key", "validate_decathlon",
]

logger = logging.getLogger(__name__)

SOURCES = ("phantom", "decathlon")
PLANS = ("auto", "off")
CACHES = ("memory", "disk", "none")
SW_MODES = ("gaussian", "constant")
# What a None of these DataConfig fields means, per source: the phantom keeps its settings since the start.
SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "phantom": {"foreground_ratio": 0.5, "sw_overlap": 0.25, "sw_mode": "constant", "augment": False},
    "decathlon": {"foreground_ratio": 1 / 3, "sw_overlap": 0.5, "sw_mode": "gaussian", "augment": True},
}
PHANTOM_CLASS_NAMES = ("background", "anterior", "posterior")


@dataclass(frozen=True)
class DataConfig:
    """Where the segmentation data comes from and how it is split and sized.

    Attributes:
        source: ``"phantom"`` (embedded default) or ``"decathlon"``.
        path: Decathlon task folder; required when ``source == "decathlon"``.
        num_volumes: Phantom only: how many volumes to generate (>= 4).
        val_fraction: Share of cases held out for validation, in (0, 1). The LR
            policies (plateau, the Q-learning agent) watch this split.
        test_fraction: Share of cases held out for the final, untouched test
            evaluation, in [0, 1); 0 means no test split. Nothing is tuned on it.
        seed: Data seed for the phantom generation and the train/val split;
            the same for every trial so trials see identical data.
        spatial_size: Phantom only: ``(D, H, W)`` every phantom volume is padded/cropped to; each entry a
            positive multiple of 4 (two stride-2 levels of the UNet). Decathlon volumes keep their own size
            (nothing cuts them to a fixed size, so no labelled voxel is ever cropped away); the field is
            ignored there, and the driver says so.
        spacing: Decathlon only: voxel size in mm, RAS order, to resample every case to (MONAI ``Spacingd``,
            bilinear for images, nearest-neighbour for labels). ``"median"`` (default): planned from the task
            (``plan: auto``: the median, an anisotropic task's coarse axis at its 10th percentile; ``plan: off``:
            the plain median); ``None``: keep each case's native grid.
        intensity_range: Decathlon CT tasks only (every ``modality`` is ``"CT"``): HU window ``[low, high]``
            clipped and scaled to [0, 1]. MR and other modalities are z-scored over their nonzero voxels,
            per channel.
        crop_foreground: Decathlon only: crop each case to the bounding box of the union of its nonzero image
            voxels (any channel) and its labelled voxels, after ``Orientationd`` and before ``Spacingd``. The
            box holds every labelled voxel by construction; with a noise (MR) or air (CT, -1000) background it
            is the whole volume.
        patch_size: ``(D, H, W)`` patches to train on: ``patches_per_volume`` per volume and epoch, drawn by
            MONAI's ``RandCropByPosNegLabeld`` (``foreground_ratio`` of them centred on foreground), and
            validation and test volumes are scored whole by ``sliding_window_inference`` with this window.
            Phantom: each entry a positive multiple of 4 and at most ``spatial_size``'s; None (default): whole
            volumes. Decathlon: None (default) is planned from the task (``plan: auto``); a Decathlon training
            volume smaller than the patch is zero-padded to it before the crop (scoring needs no padding).
        patches_per_volume: Patches drawn per training volume and epoch (>= 1), with ``patch_size`` only.
        cache_rate: With ``cache: memory``: the share of each split's volumes a trial keeps preprocessed in memory
            (MONAI ``CacheDataset``), in [0, 1]: 1.0 (default) runs the deterministic transforms once per volume and
            trial; below 1 the rest is read and preprocessed again every epoch.
        plan: Decathlon only: ``"auto"`` (default) derives spacing, patch size, batch size and the network's
            strides from a fingerprint of the task (:mod:`medtune.trainables.plan`); ``"off"`` plans nothing
            (``patch_size`` must then be given). Every planned value set in the spec wins over the plan. The
            phantom keeps its fixed settings.
        foreground_ratio: Share of the training patches centred on a labelled voxel, in [0, 1]
            (``RandCropByPosNegLabeld``'s ``pos / (pos + neg)``). None: 1/3 for Decathlon (nnU-Net's
            oversampling), 1/2 for the phantom (its settings since the start).
        sw_overlap: Overlap of the sliding windows that score whole volumes, in [0, 1). None: 0.5 for Decathlon,
            0.25 for the phantom.
        sw_mode: How overlapping windows are blended: ``"gaussian"`` (centre-weighted) or ``"constant"`` (plain
            mean). None: ``"gaussian"`` for Decathlon, ``"constant"`` for the phantom.
        augment: Augment the training patches after the crop (MONAI ``RandFlipd`` per axis,
            ``RandRotate90d`` in-plane where the patch is square, ``RandScaleIntensityd``,
            ``RandShiftIntensityd``, ``RandGaussianNoised``), seeded by the trial's seed and checkpointed. None: on
            for Decathlon, off for the phantom.
        cache: Where a trial keeps its preprocessed volumes: ``"memory"`` (default: MONAI ``CacheDataset`` with
            ``cache_rate``), ``"disk"`` (MONAI ``PersistentDataset`` in the session folder's ``cache/``, so a second
            trial, another worker or a resume preprocesses nothing; memory holds only what a batch needs) or
            ``"none"`` (read and preprocess every volume on every access).

    Raises:
        InputError: One line naming the field, the value and the fix.
    """

    source: str = "phantom"
    path: str | None = None
    num_volumes: int = 24
    val_fraction: float = 0.25
    test_fraction: float = 0.2
    seed: int = 0
    spatial_size: tuple[int, int, int] = (32, 32, 32)
    spacing: tuple[float, float, float] | str | None = "median"
    intensity_range: tuple[float, float] = (-1000.0, 1000.0)
    crop_foreground: bool = True
    patch_size: tuple[int, int, int] | None = None
    patches_per_volume: int = 2
    cache_rate: float = 1.0
    plan: str = "auto"
    foreground_ratio: float | None = None
    sw_overlap: float | None = None
    sw_mode: str | None = None
    augment: bool | None = None
    cache: str = "memory"

    @property
    def given_spacing(self) -> tuple[float, float, float] | None:
        """The spacing the spec fixes; None where it is ``"median"`` (derived from the data) or not set."""
        return None if isinstance(self.spacing, str) else self.spacing

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            hint = did_you_mean(self.source, SOURCES)
            raise InputError(f"source={self.source!r} is not a data source; use one of {', '.join(SOURCES)}{hint}")
        if self.source == "decathlon" and not self.path:
            raise InputError("path is required when source='decathlon'; set path to the Task04_Hippocampus folder")
        if not is_int(self.num_volumes) or self.num_volumes < 4:
            raise InputError(f"num_volumes={self.num_volumes!r} is too small; use an integer >= 4")
        if not isinstance(self.val_fraction, (int, float)) or not 0 < self.val_fraction < 1:
            raise InputError(f"val_fraction={self.val_fraction!r} is out of range; "
                             "use a number strictly between 0 and 1")
        if not isinstance(self.test_fraction, (int, float)) or not 0 <= self.test_fraction < 1:
            raise InputError(f"test_fraction={self.test_fraction!r} is out of range; "
                             "use a number in [0, 1) (0: no test split)")
        if self.val_fraction + self.test_fraction >= 1:
            raise InputError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction!r} leaves no training data; "
                "make their sum below 1"
            )
        if not is_int(self.seed):
            raise InputError(f"seed={self.seed!r} is not an integer; use an integer such as 0")
        size = self.spatial_size
        if isinstance(size, list):
            size = tuple(size)
            object.__setattr__(self, "spatial_size", size)
        if not (isinstance(size, tuple) and len(size) == 3 and all(is_int(s) and s > 0 and s % 4 == 0 for s in size)):
            raise InputError(
                f"spatial_size={self.spatial_size!r} is invalid; use three positive integers each divisible by 4, "
                "e.g. [32, 32, 32]"
            )
        spacing = self.spacing
        if isinstance(spacing, list):
            spacing = tuple(spacing)
            object.__setattr__(self, "spacing", spacing)
        if not (spacing is None or spacing == "median" or (
                isinstance(spacing, tuple) and len(spacing) == 3 and all(is_number(x) and x > 0 for x in spacing))):
            raise InputError(
                f"spacing={self.spacing!r} is invalid; use three positive numbers in mm (e.g. [1.0, 1.0, 1.0]), "
                "'median' (the task's median spacing) or null (keep the native grid)"
            )
        window = tuple(self.intensity_range) if isinstance(self.intensity_range, list) else self.intensity_range
        object.__setattr__(self, "intensity_range", window)
        if not (isinstance(window, tuple) and len(window) == 2 and all(is_number(x) for x in window)
                and window[0] < window[1]):
            raise InputError(
                f"intensity_range={self.intensity_range!r} is invalid; use [low, high] with low < high, "
                "e.g. [-1000, 1000] (CT Hounsfield units)"
            )
        if not isinstance(self.crop_foreground, bool):
            raise InputError(f"crop_foreground={self.crop_foreground!r} must be true or false")
        patch = tuple(self.patch_size) if isinstance(self.patch_size, list) else self.patch_size
        object.__setattr__(self, "patch_size", patch)
        if self.source == "phantom" and patch is not None and not (
                isinstance(patch, tuple) and len(patch) == 3
                and all(is_int(p) and 0 < p <= s and p % 4 == 0 for p, s in zip(patch, size))):
            raise InputError(
                f"patch_size={self.patch_size!r} is invalid; use three positive multiples of 4, each at most "
                f"spatial_size={list(size)!r}, or null to train on whole volumes"
            )
        if self.source == "decathlon" and patch is not None and not (
                isinstance(patch, tuple) and len(patch) == 3 and all(is_int(p) and p > 0 for p in patch)):
            raise InputError(
                f"patch_size={self.patch_size!r} is invalid; use three positive integers (multiples of the "
                "network's total stride), or null to let the plan choose"
            )
        if self.plan not in PLANS:
            raise InputError(f"plan={self.plan!r} is not a plan setting; use one of {', '.join(PLANS)}"
                             f"{did_you_mean(str(self.plan), PLANS)}")
        if self.source == "decathlon" and self.plan == "off" and patch is None:
            raise InputError("patch_size is required with plan='off' for source='decathlon'; set data.patch_size "
                             "(e.g. [64, 64, 64]) or use data.plan=auto")
        if self.cache not in CACHES:
            raise InputError(f"cache={self.cache!r} is not a cache setting; use one of {', '.join(CACHES)}"
                             f"{did_you_mean(str(self.cache), CACHES)}")
        defaults = SOURCE_DEFAULTS[self.source]
        for name in defaults:  # None: the source's own default
            if getattr(self, name) is None:
                object.__setattr__(self, name, defaults[name])
        if not (is_number(self.foreground_ratio) and 0 <= self.foreground_ratio <= 1):
            raise InputError(f"foreground_ratio={self.foreground_ratio!r} is out of range; use a number in [0, 1] "
                             "(1/3: a third of the patches centred on a labelled voxel)")
        if not (is_number(self.sw_overlap) and 0 <= self.sw_overlap < 1):
            raise InputError(f"sw_overlap={self.sw_overlap!r} is out of range; use a number in [0, 1), e.g. 0.5")
        if self.sw_mode not in SW_MODES:
            raise InputError(f"sw_mode={self.sw_mode!r} is not a blending mode; use one of {', '.join(SW_MODES)}"
                             f"{did_you_mean(str(self.sw_mode), SW_MODES)}")
        if not isinstance(self.augment, bool):
            raise InputError(f"augment={self.augment!r} must be true or false")
        if not is_int(self.patches_per_volume) or self.patches_per_volume < 1:
            raise InputError(f"patches_per_volume={self.patches_per_volume!r} must be an integer >= 1")
        if not (is_number(self.cache_rate) and 0 <= self.cache_rate <= 1):
            raise InputError(
                f"cache_rate={self.cache_rate!r} is out of range; use a number in [0, 1] (1.0: cache every volume)"
            )


@dataclass
class Case:
    """One labelled volume.

    Attributes:
        name: Case identifier (file stem for Decathlon, ``phantom_000`` style).
        image: ``float32`` array ``(D, H, W)`` (one channel) or ``(C, D, H, W)`` (C >= 2 modalities).
        label: ``uint8`` array ``(D, H, W)`` with values in ``0..num_classes-1``.
        affine: ``(4, 4)`` voxel-to-world (mm) matrix of the NIfTI file; None for the phantom.
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray | None = None


@dataclass
class SegmentationData:
    """Train/validation arrays ready for a 3D network.

    Attributes:
        train_images, val_images, test_images: ``float32`` ``(N, C, D, H, W)``, z-scored per volume (per
            channel when C > 1); C is the number of modalities (``test_*`` is None without a test split).
        train_labels, val_labels, test_labels: ``int64`` ``(N, 1, D, H, W)``.
        num_classes: Number of classes including background (3 for Task04).
        class_names: One name per class, index = label value.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None

    @property
    def in_channels(self) -> int:
        """Image channels C (modalities), the network's ``in_channels``."""
        return int(self.train_images.shape[1])


# --------------------------------------------------------------------------- phantom


def _smooth_field(rng: np.random.Generator, grid: np.ndarray, n_waves: int, max_freq: float) -> np.ndarray:
    """Sum of random plane cosines: a smooth field of unit-ish amplitude.

    Args:
        grid: ``(3, D, H, W)`` voxel coordinates.
        n_waves: Number of cosines; more gives a less regular pattern.
        max_freq: Highest spatial frequency in cycles per voxel.

    Returns:
        ``(D, H, W)`` float64 array with standard deviation about 1.
    """
    field = np.zeros(grid.shape[1:])
    for _ in range(n_waves):
        direction = rng.normal(size=3)
        freq = direction / np.linalg.norm(direction) * rng.uniform(0.3, 1.0) * max_freq
        field += np.cos(2 * np.pi * np.tensordot(freq, grid, axes=1) + rng.uniform(0, 2 * np.pi))
    return field * np.sqrt(2.0 / n_waves)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Rotation matrix from three random Euler angles within ``+-max_deg``."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _phantom_case(rng: np.random.Generator, name: str) -> Case:
    shape = tuple(int(s) for s in rng.integers(28, 39, size=3))
    grid = np.indices(shape, dtype=np.float64)  # (3, D, H, W)

    # Curved, tapered ellipsoid whose long axis u runs roughly along H (anterior at u < 0).
    center = np.array(shape) / 2 + rng.uniform(-2.5, 2.5, size=3)
    rot = _rotation(rng, max_deg=30)
    local = np.tensordot(rot.T[[1, 0, 2]], grid - center[:, None, None, None], axes=1)  # rows: u, v, w
    u, v, w = local
    a = rng.uniform(9.0, 12.0)                     # half length
    b = rng.uniform(3.3, 4.6)                      # half thickness along v
    c = b * rng.uniform(0.7, 1.0)                  # half thickness along w
    bend = rng.uniform(0.015, 0.05) * rng.choice([-1, 1])
    taper = rng.uniform(0.15, 0.4)                 # head thicker than tail
    scale = 1.0 - taper * np.clip(u / a, -1, 1)
    q = np.sqrt((u / a) ** 2 + ((v - bend * u**2) / (b * scale)) ** 2 + (w / (c * scale)) ** 2)
    inside = q <= 1.0
    split = a * rng.uniform(-0.2, -0.05)           # head/body boundary, just anterior of the middle
    head = inside & (u < split)
    label = np.where(head, 1, np.where(inside, 2, 0)).astype(np.uint8)

    # Tissue: textured background, a dark CSF-like pocket beside the body, grey-matter-like blobs around it.
    tissue = 0.42 + 0.05 * _smooth_field(rng, grid, 12, 0.18)
    csf_at = center + rot[:, 0] * rng.choice([-1, 1]) * (b + rng.uniform(2.5, 4.0))
    csf = np.sqrt((((grid - csf_at[:, None, None, None]) / rng.uniform(2.0, 3.5, (3, 1, 1, 1))) ** 2).sum(0))
    tissue = np.where(csf < 1, 0.15, tissue)
    for _ in range(int(rng.integers(2, 5))):
        r = rng.uniform(2.0, 4.0)
        angle = rng.uniform(0, 2 * np.pi)
        side = np.cos(angle) * rot[:, 0] + np.sin(angle) * rot[:, 2]   # perpendicular to the long axis
        at = center + side * (1.4 * b + r + rng.uniform(1, 4)) + rot[:, 1] * rng.uniform(-0.7, 0.7) * a
        blob = np.sqrt(((grid - at[:, None, None, None]) ** 2).sum(0)) / r
        tissue += (rng.uniform(0.50, 0.58) - tissue) / (1 + np.exp((blob - 1) * 6))
    soft = 1 / (1 + np.exp((q - 1) * 10))          # partial-volume edge
    bright = rng.uniform(0.64, 0.70)
    image = tissue + (bright + 0.03 * head - tissue) * soft   # head a touch brighter than the tail

    # Smooth multiplicative bias field, then Rician-like noise (magnitude of complex Gaussian).
    image = image * np.exp(0.15 * _smooth_field(rng, grid, 3, 0.04))
    sigma = rng.uniform(0.03, 0.06)
    image = np.hypot(image + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    return Case(name=name, image=(image * 1000).astype(np.float32), label=label)


def make_phantom(num_volumes: int, seed: int) -> list[Case]:
    """Generate a hippocampus-like two-structure phantom data set.

    Each volume has its own dims (each axis 28..38 voxels) and holds a curved,
    tapered, elongated body split across its long axis into a thicker head
    (label 1, "anterior") and a thinner tail (label 2, "posterior") that touch.
    Size, elongation, curvature, split point, rotation (within +-30 degrees)
    and position vary per case. Intensities are MR-like: structure slightly
    brighter than textured surrounding tissue (the head a touch brighter than
    the tail), a dark CSF-like pocket nearby, unlabelled grey-matter-like
    blobs a little dimmer than the structure, a smooth multiplicative bias
    field and Rician-like noise; values are scaled to roughly 0..1000 like
    raw MR.

    Args:
        num_volumes: Number of cases to generate (>= 0).
        seed: Seed; the same seed gives bit-identical arrays.

    Returns:
        ``num_volumes`` cases named ``phantom_000``... with ``float32`` images
        and ``uint8`` labels in ``{0, 1, 2}``, both ``(D, H, W)``.
    """
    rng = np.random.default_rng(seed)
    return [_phantom_case(rng, f"phantom_{i:03d}") for i in range(num_volumes)]


# --------------------------------------------------------------------------- Decathlon


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_dataset_json(root: Path) -> tuple[list[dict[str, str]], tuple[str, ...], tuple[str, ...] | None]:
    """Check the folder and ``dataset.json``; return its ``training`` entries as MONAI's
    ``load_decathlon_datalist`` resolves them (``{"image": abs path, "label": abs path}``), the class names and the
    modality names in channel order (None when ``dataset.json`` has no ``modality`` mapping)."""
    from monai.data import load_decathlon_datalist

    if not root.is_dir():
        raise InputError(f"Decathlon folder {root} does not exist; point path at the Task04_Hippocampus folder")
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise InputError(f"{meta_path} is missing; the Decathlon task folder must hold dataset.json, imagesTr/, "
                         "labelsTr/")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{meta_path} is not valid JSON ({_one_line(exc)}); restore the file from the task archive") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), dict) or not meta["labels"]:
        raise InputError(f"{meta_path} has no 'labels' mapping; add e.g. \"labels\": {{\"0\": \"background\", ...}}")
    try:
        labels = {int(k): str(v) for k, v in meta["labels"].items()}
    except ValueError:
        raise InputError(
            f"{meta_path} 'labels' keys {list(meta['labels'])} are not integers; use \"0\", \"1\", ...") from None
    if sorted(labels) != list(range(len(labels))):
        raise InputError(f"{meta_path} 'labels' keys {sorted(labels)} are not 0..{len(labels) - 1}; "
                         "number classes from 0")
    modality = meta.get("modality")
    if modality is not None and (not isinstance(modality, dict) or not modality):
        raise InputError(f"{meta_path} 'modality' is {modality!r}; "
                         f"use a mapping such as {{\"0\": \"FLAIR\", \"1\": \"T1w\"}}")
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        raise InputError(
            f"{meta_path} has no non-empty 'training' list; add entries {{\"image\": ..., \"label\": ...}}")
    for i, entry in enumerate(training):
        if not (isinstance(entry, dict) and isinstance(entry.get("image"), str)
                and isinstance(entry.get("label"), str)):
            raise InputError(f"{meta_path} training[{i}] is {entry!r}; each entry needs 'image' and 'label' paths")
    items = [{"image": str(d["image"]), "label": str(d["label"])}
             for d in load_decathlon_datalist(meta_path, is_segmentation=True, data_list_key="training", base_dir=root)]
    names = None
    if modality:
        try:
            names = tuple(str(modality[k]) for k in sorted(modality, key=int))
        except ValueError:
            raise InputError(
                f"{meta_path} 'modality' keys {list(modality)} are not integers; use \"0\", \"1\", ...") from None
    return items, tuple(labels[k] for k in range(len(labels))), names


def _reader(dtype: Any = None):
    """MONAI's ``LoadImaged`` (``NibabelReader``, voxels as MetaTensors with their affine) and
    ``EnsureChannelFirstd`` on ``image`` and ``label``: 3D ``(X, Y, Z)`` becomes ``(1, X, Y, Z)``, 4D multi-modal
    ``(X, Y, Z, C)`` becomes ``(C, X, Y, Z)``. ``dtype`` None keeps the file's voxel type (for the checks)."""
    from monai.data import NibabelReader
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    keys = ("image", "label")
    return [LoadImaged(keys=keys, reader=NibabelReader, image_only=True, dtype=dtype, allow_missing_keys=True),
            EnsureChannelFirstd(keys=keys, allow_missing_keys=True)]


def _read_nifti(path: Path, what: str, reader: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one NIfTI file with MONAI (:func:`_reader`) and check it.

    Images may be 3D ``(X, Y, Z)`` or 4D multi-modal ``(X, Y, Z, C)`` (the Decathlon layout); both come back
    channel-first ``(C, X, Y, Z)`` (C = 1 for 3D, and for a trailing singleton axis). Labels must be 3D (a
    trailing singleton axis is accepted).

    Returns:
        ``(voxels, affine)``: ``(C, X, Y, Z)`` in the file's dtype and the ``(4, 4)`` float64 affine
        that MONAI's reader gives the MetaTensor.

    Raises:
        InputError: one line naming ``path`` for a missing or unreadable file, a singular or non-finite affine,
            a shape that is neither, a non-numeric dtype, or NaN/Inf voxels.
    """
    if not path.is_file():
        raise InputError(f"{what} file {path} is missing; fix the path in dataset.json or restore the file")
    load, channel_first = reader or _reader()
    try:
        volume = channel_first(load({what: str(path)}))[what]
        affine = np.asarray(volume.affine, dtype=np.float64)
        data = volume.numpy()
    except Exception as exc:  # nibabel, gzip, zlib and EOF errors all mean the same to the user
        reason = "MONAI's NibabelReader could not read it" if "suitable reader" in str(exc) else _one_line(exc)
        raise InputError(f"{what} file {path} is not a readable NIfTI ({reason}); replace it") from None
    if not np.isfinite(affine).all():
        raise InputError(f"{what} file {path} has a non-finite affine; fix the header's qform/sform")
    singular = np.linalg.svd(affine[:3, :3], compute_uv=False)
    if singular[0] == 0 or singular[-1] <= 1e-8 * singular[0]:
        raise InputError(
            f"{what} file {path} has a singular affine (voxel axes {singular.round(6).tolist()} long); "
            "fix the header's qform/sform (pixdim) so every voxel axis has a non-zero length"
        )
    if data.ndim != 4 or (what == "label" and data.shape[0] != 1):
        shape = data.shape[1:] if data.shape[0] == 1 else (*data.shape[1:], data.shape[0])  # as stored
        expected = ("a 3D volume (D, H, W) or a 4D multi-modal one (D, H, W, C)" if what == "image"
                    else "a 3D volume (D, H, W)")
        raise InputError(f"{what} file {path} has shape {shape}; expected {expected}")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise InputError(f"{what} file {path} holds {data.dtype} voxels; expected a numeric (integer or float) volume")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(f"{what} file {path} has {bad} NaN or infinite voxel(s); fix or replace the file")
    return data, affine


def _integer_labels(label: np.ndarray, path: Path) -> np.ndarray:
    """Round a label map to integers; refuse values more than 1e-3 away from an integer (e.g. an interpolated map)."""
    if np.issubdtype(label.dtype, np.integer):
        return label
    rounded = np.rint(label)
    off = np.abs(label - rounded) > 1e-3
    if off.any():
        examples = np.unique(label[off])[:3].tolist()
        raise InputError(
            f"label file {path} has non-integer values such as {examples}; labels must be class indices, "
            "so resample the label map with nearest-neighbour interpolation"
        )
    return rounded


@dataclass(frozen=True)
class CaseHeader:
    """What the checks keep of one Decathlon case: its files, channel count and affine (no voxels).

    Attributes:
        name: File stem (``hippocampus_003``).
        image, label: Absolute paths as ``load_decathlon_datalist`` resolved them.
        channels: Image channels (modalities).
        affine: ``(4, 4)`` voxel-to-world (mm) of the image.
    """

    name: str
    image: str
    label: str
    channels: int
    affine: np.ndarray


def _iter_decathlon(root: str | Path) -> Iterator[tuple[CaseHeader, np.ndarray, np.ndarray]]:
    """Read and check every case, one at a time: ``(header, image (C, X, Y, Z) float32, label (X, Y, Z) uint8)``."""
    root = Path(root)
    items, class_names, modalities = _read_dataset_json(root)
    n_modalities = None if modalities is None else len(modalities)
    declared = np.arange(len(class_names))
    reader = _reader()
    first: tuple[int, Path] | None = None  # (channels, image path) of the first case
    for item in items:
        image_path, label_path = Path(item["image"]), Path(item["label"])
        image, affine = _read_nifti(image_path, "image", reader)
        label = _integer_labels(_read_nifti(label_path, "label", reader)[0][0], label_path)
        channels = image.shape[0]
        if n_modalities is not None and channels != n_modalities:
            raise InputError(
                f"image file {image_path} has {channels} channel(s) but dataset.json 'modality' lists {n_modalities}; "
                "every image needs one channel per modality (fix the image or the 'modality' entry)"
            )
        if first is None:
            first = (channels, image_path)
        elif channels != first[0]:
            raise InputError(
                f"image file {image_path} has {channels} channel(s) but {first[1].name} has {first[0]}; "
                "every case needs the same modalities"
            )
        spatial = image.shape[-3:]
        if spatial != label.shape:
            raise InputError(
                f"label file {label_path} has shape {label.shape} but image {image_path.name} has {spatial}; "
                "they must match voxel for voxel"
            )
        values = np.unique(label)
        bad = values[~np.isin(values, declared)]
        if bad.size:
            raise InputError(
                f"label file {label_path} has values {bad.tolist()} outside the declared classes "
                f"{declared.tolist()} in dataset.json; fix the label map or the 'labels' entry"
            )
        name = image_path.name.removesuffix(".gz").removesuffix(".nii")
        header = CaseHeader(name, str(image_path), str(label_path), int(channels), affine)
        yield header, image.astype(np.float32), label.astype(np.uint8)


def load_decathlon(root: str | Path) -> list[Case]:
    """Load any Decathlon (MSD) task from its own layout: 3D or 4D multi-modal images.

    Expects ``root/dataset.json`` with ``labels`` (``{"0": "background", ...}``,
    keys 0..K-1), ``training`` (list of ``{"image": "./imagesTr/x.nii.gz",
    "label": "./labelsTr/x.nii.gz"}``, relative to ``root``; resolved by MONAI's
    ``load_decathlon_datalist``) and optionally ``modality`` (``{"0": "FLAIR", ...}``:
    one image channel per entry). Files are read by MONAI's ``LoadImaged``
    (``NibabelReader``) and ``EnsureChannelFirstd``: 4D images ``(X, Y, Z, C)``
    become channel-first ``(C, X, Y, Z)``; a trailing singleton axis gives 3D.
    Label maps stored as floats are rounded to integers.

    Args:
        root: The task folder.

    Returns:
        Cases in ``dataset.json`` order; images ``float32`` ``(D, H, W)`` (one channel) or ``(C, D, H, W)``,
        labels ``uint8`` ``(D, H, W)``.

    Raises:
        InputError: One line naming the folder or file for: missing folder,
            missing or malformed ``dataset.json``, missing referenced file,
            unreadable NIfTI, a singular or non-finite affine, an image that is
            neither 3D nor 4D (or a label that is not 3D), NaN/Inf voxels, a
            channel count that differs from ``modality`` or between cases,
            image/label shape mismatch, label values that are not integers or
            lie outside the declared classes.
    """
    return [Case(h.name, image[0] if h.channels == 1 else image, label, h.affine)
            for h, image, label in _iter_decathlon(root)]


def scan_decathlon(root: str | Path, visit: Any = None) -> list[CaseHeader]:
    """Run every :func:`load_decathlon` check, one case at a time, keeping only each case's header.

    Meant for the driver, before any trial starts: memory is one case at a time, whatever the task's size.

    Args:
        root: The task folder.
        visit: ``(header, image (C, X, Y, Z) float32, label (X, Y, Z) uint8) -> None``, called on each case while
            it is in memory (the plan's fingerprint reads the task in the same pass).

    Raises:
        InputError: As :func:`load_decathlon`.
    """
    headers = []
    for header, image, label in _iter_decathlon(root):
        if visit is not None:
            visit(header, image, label)
        headers.append(header)
    return headers


def decathlon_class_names(root: str | Path) -> tuple[str, ...]:
    """Class names from ``root/dataset.json`` ``labels``, index = label value (as written there)."""
    return _read_dataset_json(Path(root))[1]


def decathlon_modalities(root: str | Path) -> tuple[str, ...] | None:
    """Modality names from ``root/dataset.json`` ``modality`` in channel order (``("CT",)`` for Task03 Liver),
    None when it has none."""
    return _read_dataset_json(Path(root))[2]


def ras_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along the R, A, S axes of an image with ``affine`` ``(4, 4)`` (what ``Orientation``
    to RAS gives its axes), shape ``(3,)``."""
    import nibabel as nib

    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    out = np.empty(3)
    out[nib.orientations.io_orientation(affine)[:, 0].astype(int)] = zooms
    return out


def median_spacing(cases: list[Case]) -> tuple[float, float, float]:
    """The median RAS voxel size over ``cases`` (each with an affine), per axis, in mm."""
    return float3(np.median([ras_spacing(c.affine) for c in cases if c.affine is not None], axis=0))


class CropToImageOrLabel:
    """Crop ``image`` and ``label`` (channel-first MetaTensors) to the bounding box of the union of the image's
    nonzero voxels (any channel) and the labelled voxels: no labelled voxel is ever outside it. An image and label
    with nothing nonzero are kept whole. (MONAI's ``CropForegroundd`` looks at one key only.)"""

    def __call__(self, data: dict) -> dict:
        from monai.transforms import SpatialCrop
        from monai.transforms.utils import generate_spatial_bounding_box

        image, label = data["image"], data["label"]
        mask = (image != 0).any(0, keepdims=True) | (label > 0)
        start, end = generate_spatial_bounding_box(mask)
        if not any(e > s for s, e in zip(start, end)):
            return data
        crop = SpatialCrop(roi_start=start, roi_end=end)
        return {**data, "image": crop(image), "label": crop(label)}


def _decathlon_steps(cfg: DataConfig, spacing: tuple[float, float, float] | None,
                     modalities: tuple[str, ...] | None) -> list:
    """MONAI's ``Orientationd``, :class:`CropToImageOrLabel` (when ``cfg.crop_foreground``), ``Spacingd``
    (skipped for ``spacing`` None) and the CT window or MR z-score, on channel-first ``image`` and ``label``.
    Nothing cuts a volume to a fixed size: every labelled voxel is kept."""
    from monai.transforms import Lambda, NormalizeIntensityd, Orientationd, ScaleIntensityRanged, Spacingd

    is_ct = bool(modalities) and all(m.strip().upper() == "CT" for m in modalities or ())
    keys = ("image", "label")
    steps: list = [Orientationd(keys=keys, axcodes="RAS", labels=None)]
    if cfg.crop_foreground:  # a MONAI Transform, so the caches keep what follows it
        steps.append(Lambda(func=CropToImageOrLabel()))
    if spacing is not None:
        steps.append(Spacingd(keys=keys, pixdim=spacing, mode=("bilinear", "nearest"), dtype=np.float32))
    if is_ct:
        low, high = cfg.intensity_range
        steps.append(ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    else:
        steps.append(NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True))
    return steps


def preprocess_decathlon(cases: list[Case], cfg: DataConfig, modalities: tuple[str, ...] | None) -> list[Case]:
    """Resample, reorient, crop and normalise Decathlon cases with MONAI's dictionary transforms.

    Per case, in this order (images are already channel-first, made so by ``EnsureChannelFirst`` in the
    reader; labels get their channel axis here): ``Orientationd`` to RAS, :class:`CropToImageOrLabel` (the
    union of nonzero image and labelled voxels, when ``cfg.crop_foreground``), ``Spacingd`` to ``cfg.spacing``
    (``"median"``: :func:`median_spacing` of ``cases``; None: skipped) with bilinear images and
    nearest-neighbour labels, then intensities: for a CT task (every modality
    ``"CT"``) ``ScaleIntensityRanged`` clipping ``cfg.intensity_range`` to [0, 1]; otherwise
    ``NormalizeIntensityd`` z-scoring the nonzero voxels of each channel. An all-zero image is kept whole
    (nothing to crop to) and stays zero.

    Args:
        cases: Validated cases with affines, images ``(D, H, W)`` or ``(C, D, H, W)``.
        cfg: The data section.
        modalities: ``dataset.json`` modality names, or None (treated as MR).

    Returns:
        New cases (``affine`` the resampled one), images ``float32`` ``(C, D', H', W')`` (``(D', H', W')`` when
        C = 1), labels ``uint8`` ``(D', H', W')``, ready for :func:`prepare` with ``normalise=False``.
    """
    from monai.data import MetaTensor
    from monai.transforms import Compose

    spacing = median_spacing(cases) if cfg.spacing == "median" else cfg.given_spacing
    pipeline = Compose(_decathlon_steps(cfg, spacing, modalities))
    out = []
    for case in cases:
        image = case.image[None] if case.image.ndim == 3 else case.image
        item = pipeline({  # MONAI converts an ndarray affine; its annotation says Tensor
            "image": MetaTensor(image.astype(np.float32), affine=case.affine),  # type: ignore[arg-type]
            "label": MetaTensor(case.label[None].astype(np.float32), affine=case.affine),  # type: ignore[arg-type]
        })
        img = item["image"].numpy().astype(np.float32)
        label = np.rint(item["label"].numpy()[0]).astype(np.uint8)
        out.append(Case(case.name, img[0] if img.shape[0] == 1 else img, label,
                        np.asarray(item["image"].affine, dtype=np.float64)))
    return out


def validate_decathlon(root: str | Path) -> int:
    """Run every :func:`load_decathlon` check, one case at a time, keeping nothing; returns the number of cases.

    Raises:
        InputError: As :func:`load_decathlon`.
    """
    return len(scan_decathlon(root))


# --------------------------------------------------------------------------- split and arrays


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of ``range(n)``.

    The validation side gets ``round(n * val_fraction)`` cases, clipped to
    ``1..n-1`` so neither side is empty.

    Returns:
        ``(train_idx, val_idx)``, sorted ``int64`` arrays, disjoint, covering ``range(n)``.

    Raises:
        InputError: If ``n < 2``.
    """
    if n < 2:
        raise InputError(f"{n} case(s) cannot be split into training and validation; provide at least 2 cases")
    n_val = min(max(int(round(n * val_fraction)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def prepare(cases: list[Case], spatial_size: tuple[int, int, int],
            normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Stack cases into network-ready arrays.

    Each image is z-scored over its own voxels (MONAI ``NormalizeIntensity``; per channel for C > 1)
    and then centre-padded/cropped to ``spatial_size`` (``ResizeWithPadOrCrop``;
    padding is 0, i.e. the image mean, and background for labels). Labels are
    only padded/cropped, never interpolated. A constant image becomes all zeros.

    Args:
        cases: Cases of any (possibly differing) ``(D, H, W)``, all with the same channel count C (images
            ``(D, H, W)`` for C = 1, ``(C, D, H, W)`` otherwise); may be empty.
        spatial_size: Output ``(D, H, W)``.
        normalise: z-score each image; False for cases :func:`preprocess_decathlon` already normalised.

    Returns:
        ``images`` ``float32`` ``(N, C, *spatial_size)`` (C = 1 for an empty list) and ``labels`` ``int64``
        ``(N, 1, *spatial_size)``.
    """
    from monai.transforms import NormalizeIntensity, ResizeWithPadOrCrop

    resize = ResizeWithPadOrCrop(spatial_size)
    channels = 1 if not cases or cases[0].image.ndim == 3 else cases[0].image.shape[0]
    zscore = NormalizeIntensity(channel_wise=channels > 1) if normalise else (lambda x: x)
    images = np.zeros((len(cases), channels, *spatial_size), np.float32)
    labels = np.zeros((len(cases), 1, *spatial_size), np.int64)
    for i, case in enumerate(cases):
        image = case.image[None] if case.image.ndim == 3 else case.image
        img = zscore(image.astype(np.float32))
        # ResizeWithPadOrCrop takes ndarrays too; its annotation says Tensor
        images[i] = np.asarray(resize(img), dtype=np.float32)  # type: ignore[arg-type]
        labels[i] = np.asarray(resize(case.label[None].astype(np.int64)))  # type: ignore[arg-type]
    return images, labels


def preprocessing_transforms(cfg: DataConfig, spacing: tuple[float, float, float] | None,
                             modalities: tuple[str, ...] | None, in_channels: int) -> list:
    """The deterministic MONAI chain from a data-list item to a network-ready volume (what a trial caches).

    Items are ``{"image", "label"}``. Decathlon: file paths, read by :func:`_reader` (``LoadImaged`` with
    ``NibabelReader``, ``EnsureChannelFirstd``), labels rounded to integers, then ``Orientationd``,
    :class:`CropToImageOrLabel`, ``Spacingd`` (to ``spacing``; None: skipped) and the CT or MR intensities, as
    :func:`preprocess_decathlon`; the volume keeps its own size (a trial pads a training volume smaller than the patch
    before cropping, :class:`~medtune.trainables.lr_segmentation.SegmentationRun`). Phantom: channel-first arrays,
    z-scored over all voxels
    (``NormalizeIntensityd``, per channel when ``in_channels`` > 1) and padded/cropped
    (``ResizeWithPadOrCropd``) to ``cfg.spatial_size``. Both end with ``image`` ``float32``, ``label`` ``uint8``
    ``(1, D, H, W)`` (cast to int64 per batch, a third of the cache that int64 would take).
    """
    import torch
    from monai.transforms import EnsureTyped, Lambdad, NormalizeIntensityd, ResizeWithPadOrCropd

    keys = ("image", "label")
    if cfg.source == "decathlon":
        steps = [*_reader(np.float32), *_decathlon_steps(cfg, spacing, modalities)]
    else:  # in-memory arrays, read-only views of Ray's object store in a trial: copied before anything else
        steps = [Lambdad(keys=keys, func=_writable_copy),
                 NormalizeIntensityd(keys="image", channel_wise=in_channels > 1),
                 ResizeWithPadOrCropd(keys=keys, spatial_size=cfg.spatial_size)]
    return steps + [
        Lambdad(keys="label", func=_round_labels),  # float label maps: rounded, never truncated
        EnsureTyped(keys="image", data_type="tensor", dtype=torch.float32, track_meta=False),
        EnsureTyped(keys="label", data_type="tensor", dtype=torch.uint8, track_meta=False),
    ]


def _round_labels(label):
    return label.round()


def _writable_copy(x):
    return np.array(x)


@dataclass
class SegmentationSplit:
    """The study's split as MONAI data lists plus the deterministic preprocessing that turns each item into a
    volume, so a trial caches what it needs (``CacheDataset``) instead of receiving dense arrays.

    Attributes:
        cfg: The data section, ``spacing`` resolved (``"median"`` replaced by the task's median in mm).
        train, val, test: Items ``{"image", "label"}``: Decathlon file paths, or the phantom's channel-first
            arrays (``float32`` ``(1, D, H, W)``, ``uint8`` ``(1, D, H, W)``); ``test`` empty without a test split.
        num_classes, class_names: As :class:`SegmentationData`.
        in_channels: Image channels C (modalities).
        spatial_size: ``(D, H, W)`` of every preprocessed volume (the phantom's ``spatial_size``); for a
            Decathlon task, whose volumes keep their own sizes, the patch size (None before it is planned).
        cache_rate: ``cfg.cache_rate``: the share of each split a trial's ``CacheDataset`` holds.
        modalities: ``dataset.json`` modality names, or None.
        key: What identifies this split's content (a digest of ``cfg``), so a worker process that trains one
            trial after another can keep its preprocessed cache; None: never shared (arrays handed in).
        cache: ``cfg.cache``: ``"memory"``, ``"disk"`` or ``"none"``.
        cache_dir: With ``cache: disk``: the folder of the preprocessed volumes (the driver sets it in the
            session folder); None: a temporary folder per process.
    """

    cfg: DataConfig | None
    train: list[dict]
    val: list[dict]
    test: list[dict]
    num_classes: int
    class_names: tuple[str, ...]
    in_channels: int
    spatial_size: tuple[int, int, int] | None
    cache_rate: float = 1.0
    modalities: tuple[str, ...] | None = None
    key: str | None = None
    cache: str = "memory"
    cache_dir: str | None = None

    @property
    def native(self) -> bool:
        """True when volumes keep their own (differing) sizes: a Decathlon task."""
        return self.cfg is not None and self.cfg.source == "decathlon"

    def check_files(self, where: str = "this node") -> None:
        """Raise ``FileNotFoundError`` naming the first item file that ``where`` cannot see (a trial on another
        node of a cluster reads the Decathlon folder at the driver's path)."""
        for item in (*self.train, *self.val, *self.test):
            for key in ("image", "label"):
                if isinstance(item[key], str) and not Path(item[key]).is_file():
                    raise FileNotFoundError(
                        f"{where} cannot read {item[key]}: on a multi-node cluster every node needs the Decathlon "
                        "folder at the same path as the driver (shared storage or a copy)"
                    )

    def transforms(self) -> list:
        """:func:`preprocessing_transforms` for this split (fresh instances)."""
        assert self.cfg is not None  # a split of arrays (no cfg) is an _ArraySplit, which has its own
        return preprocessing_transforms(self.cfg, self.cfg.given_spacing, self.modalities, self.in_channels)

    def materialise(self) -> SegmentationData:
        """Run the preprocessing over every item and stack the dense arrays (:class:`SegmentationData`). Volumes
        of differing sizes (a Decathlon task) are zero-padded at their far ends to the largest of the split, never
        cropped."""
        from monai.transforms import Compose

        chain = Compose(self.transforms())

        def stack(items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
            out = [chain(dict(item)) for item in items]
            size = (tuple(np.max([item["image"].shape[1:] for item in out], axis=0)) if out
                    else self.spatial_size or (0, 0, 0))
            images = np.zeros((len(out), self.in_channels, *size), np.float32)
            labels = np.zeros((len(out), 1, *size), np.int64)
            for i, item in enumerate(out):
                d, h, w = item["image"].shape[1:]
                images[i, :, :d, :h, :w], labels[i, :, :d, :h, :w] = item["image"].numpy(), item["label"].numpy()
            return images, labels

        train, val = stack(self.train), stack(self.val)
        test = stack(self.test) if self.test else (None, None)
        return SegmentationData(*train, *val, self.num_classes, self.class_names, *test)


def arrays_as_split(data: SegmentationData) -> SegmentationSplit:
    """Wrap already prepared arrays (``(N, C, D, H, W)``, ``(N, 1, D, H, W)``) as a :class:`SegmentationSplit`
    whose preprocessing only re-types them; a trial then caches them as it caches any split."""
    size = int3(data.train_images.shape[2:])

    def items(images, labels):
        if images is None:
            return []
        return [{"image": np.asarray(x, np.float32), "label": np.asarray(y, np.uint8)} for x, y in zip(images, labels)]

    return _ArraySplit(
        cfg=None, train=items(data.train_images, data.train_labels), val=items(data.val_images, data.val_labels),
        test=items(data.test_images, data.test_labels), num_classes=data.num_classes,
        class_names=tuple(data.class_names), in_channels=data.in_channels, spatial_size=size,
    )


class _ArraySplit(SegmentationSplit):
    def transforms(self) -> list:
        import torch
        from monai.transforms import EnsureTyped, Lambdad

        return [Lambdad(keys=("image", "label"), func=_writable_copy),
                EnsureTyped(keys="image", data_type="tensor", dtype=torch.float32, track_meta=False),
                EnsureTyped(keys="label", data_type="tensor", dtype=torch.uint8, track_meta=False)]


def split_datalists(cfg: DataConfig, headers: list[CaseHeader] | None = None) -> SegmentationSplit:
    """Check the configured source and split it into MONAI data lists, holding no preprocessed volumes.

    Decathlon: every file is read and checked one case at a time (:func:`scan_decathlon`), keeping only the
    headers; ``"median"`` spacing becomes the median of the training and validation cases. Phantom: the raw
    generated volumes are the items. The split is :func:`load_split`'s (test first with ``seed + 1``, then
    train/validation with ``seed``).

    Args:
        cfg: The data section.
        headers: Decathlon: the :func:`scan_decathlon` of ``cfg.path`` when the caller has it already (the plan
            scans the task once); None: scanned here.

    Raises:
        InputError: From the Decathlon checks or when there are fewer than 2 cases.
    """
    if cfg.source == "phantom":
        cases = make_phantom(cfg.num_volumes, cfg.seed)
        items: list[dict[str, Any]] = [{"image": c.image[None], "label": c.label[None]} for c in cases]
        class_names: tuple[str, ...] = PHANTOM_CLASS_NAMES
        modalities, channels, headers = None, 1, None
    else:
        assert cfg.path is not None  # DataConfig requires a path for the Decathlon source
        headers = scan_decathlon(cfg.path) if headers is None else headers
        items = [{"image": h.image, "label": h.label} for h in headers]
        class_names, modalities = decathlon_class_names(cfg.path), decathlon_modalities(cfg.path)
        channels = headers[0].channels
    rest, test_idx = np.arange(len(items)), np.array([], dtype=np.int64)
    if cfg.test_fraction > 0:
        keep, test_idx = split_indices(len(items), cfg.test_fraction, cfg.seed + 1)
        rest = rest[keep]
    if headers is not None:  # the median spacing of the training and validation cases only
        spacing = cfg.spacing
        if spacing == "median":
            spacing = float3(np.median([ras_spacing(headers[i].affine) for i in rest], axis=0))
        logger.info("decathlon: resampling to %s mm", "the native grid" if spacing is None else list(spacing))
        cfg = replace(cfg, spacing=spacing)
    train_pos, val_pos = split_indices(len(rest), cfg.val_fraction / (1 - cfg.test_fraction), cfg.seed)
    return SegmentationSplit(
        cfg=cfg, train=[items[i] for i in rest[train_pos]], val=[items[i] for i in rest[val_pos]],
        test=[items[i] for i in test_idx], num_classes=len(class_names), class_names=tuple(class_names),
        in_channels=int(channels), cache_rate=float(cfg.cache_rate), modalities=modalities, key=split_key(cfg),
        spatial_size=((int3(cfg.patch_size) if cfg.patch_size else None) if headers is not None
                      else int3(cfg.spatial_size)),
        cache=cfg.cache,
    )


def split_key(cfg: DataConfig) -> str:
    """A digest of the (resolved) data section: the same one always yields the same split and preprocessing."""
    import hashlib
    import json


    return hashlib.sha1(json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


@single_threaded
def load_split(cfg: DataConfig) -> SegmentationData:
    """Load the configured source, split it with ``cfg.seed`` and prepare every side as dense arrays.

    The test cases are drawn first (``seed + 1``), then the rest is split into
    training and validation (``seed``), so each fraction is of the whole set.

    The arrays are :meth:`SegmentationSplit.materialise` of :func:`split_datalists`: phantom volumes are
    z-scored and padded/cropped; Decathlon cases go through MONAI's reader and the transforms of
    :func:`preprocess_decathlon` (``"median"`` spacing is the median of the training and validation cases) and keep
    their size, zero-padded to the largest of their side so they stack. Trials do not use this: they cache the data
    lists themselves (``CacheDataset``).

    The same ``cfg`` always gives the same arrays, so every trial of a study
    trains and validates on identical data, on any machine: the preparation runs
    on one torch thread (:func:`medtune.util.single_threaded`), since a
    multi-threaded reduction's last bits depend on the thread count.

    Raises:
        InputError: From the Decathlon loader or when there are fewer than 2 cases.
    """
    return split_datalists(cfg).materialise()
