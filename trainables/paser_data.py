"""Segmentation data for the PaSeR study (paper 003): noisy digits and a three-phase microstructure.

Paper 003 (Pareto-optimal routing of patches to segmentation models, PaSeR)
evaluates on battery-electrode phase segmentation and on noisy MNIST, and
measures robustness on "unseen noisy contexts". Neither data set can be
downloaded here, so this module generates both, deterministically from a seed:

* ``digits`` (default): the real 8x8 handwritten digits that ship with
  scikit-learn (:func:`~medtune.trainables.classification_data.digits_images`),
  upscaled x2 (bilinear) to 16x16 and placed at a random position on a black
  ``canvas x canvas`` image. Target: the digit's foreground, the upscaled grey
  level above :data:`DIGIT_THRESHOLD`.
* ``microstructure``: a generated three-phase image like a battery electrode
  cross-section: pore (dark), carbon-binder (grey) and active material
  (bright). Two independent smoothed Gaussian random fields are thresholded at
  quantiles: the first gives the active material (volume share
  ``PHASE_FRACTIONS[2]``), the second splits the rest into binder and pore.
  The image is the phases' grey levels, slightly blurred (partial-volume
  effect). Target: **binary**, the pixels of ``target_phase`` (default 1, the
  binder, whose grey level lies between the two others, so the hardest phase
  to separate). Our choice: a binary "phase of interest" keeps every model,
  the entropy map and the IoU in this study binary for both sources; the
  paper scores the battery images with the mean IoU over the phases.

Noise, added to the clean image before clipping to [0, 1]:

* training noise (every split): ``noise`` of strength ``noise_level``;
  its strength varies smoothly across the image (a random 3x3 grid of factors
  in ``[1 - noise_variation, 1]``, bilinearly upsampled). Our choice, not the
  paper's: it gives patches of unequal difficulty inside one image, which is
  what a per-patch router can exploit.
* **unseen noise**: the *clean* test images again, with ``unseen_noise`` of
  strength ``unseen_level`` instead of the training noise
  (:attr:`PaSeRData.test_unseen_images`); the masks are the test masks. It is
  used only for the robustness number (the IoU drop), never for training or
  model selection.

Noise kinds: ``gaussian`` (additive, std = level), ``speckle`` (multiplicative,
``x * (1 + n)`` with std = level, plus a floor of ``level / 4`` additive so a
black background is not noise-free), ``salt_pepper`` (a share ``level`` of the
pixels set to 0 or 1 with equal odds) and ``none``.

Every random decision draws from its own stream of ``seed``
(:func:`~medtune.trainables.classification_data._stream` style), so the clean images
and masks do not depend on the noise settings, and the same config always gives
bit-identical arrays. The splits are a seeded permutation (val and test taken
first, train the rest). No torch, Ray or MLflow here; scikit-learn and scipy
are imported where used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medtune.errors import InputError, did_you_mean
from medtune.trainables.classification_data import digits_images
from medtune.util import is_int, is_number

__all__ = [
    "DIGIT_SIDE", "DIGIT_THRESHOLD", "NOISE_KINDS", "N_DIGITS", "PHASE_FRACTIONS", "PHASE_GREY", "PaSeRData",
    "PaSeRDataConfig", "SOURCES", "add_noise", "clean_digits", "clean_microstructure", "load_paser_data",
    "microstructure_phases",
]

SOURCES: tuple[str, ...] = ("digits", "microstructure")
NOISE_KINDS: tuple[str, ...] = ("gaussian", "speckle", "salt_pepper", "none")
N_DIGITS = 1797
DIGIT_SIDE = 16            # an 8x8 digit upscaled x2
DIGIT_THRESHOLD = 0.3      # foreground: upscaled grey level (0..1) above this
PHASE_FRACTIONS = (0.3, 0.2, 0.5)      # pore, binder, active material (volume shares)
PHASE_GREY = (0.1, 0.45, 0.85)         # their grey levels in the clean image

# Seed-stream tags: one independent random stream per decision.
_PICK, _PLACE, _FIELD, _NOISE, _VARIATION, _UNSEEN, _SPLIT, _JITTER = range(8)


def _stream(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), 30_000 + tag]))


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PaSeRDataConfig:
    """Which images the PaSeR study segments, how noisy, and how they are split.

    Attributes:
        source: ``"digits"`` (default) or ``"microstructure"``.
        canvas: Image side in pixels (square images); >= 16 for ``digits``
            (a digit is 16x16), >= 8 for ``microstructure``. The router's grid
            must divide it (checked by :func:`medtune.searchers.paser.check_grid`).
        n_images: Number of images generated (<= 1797 for ``digits``: each is
            a distinct scikit-learn digit, picked by the seed).
        noise: Training noise kind, one of :data:`NOISE_KINDS`.
        noise_level: Its strength (std for ``gaussian``/``speckle``, pixel share
            for ``salt_pepper``), >= 0 (< 1 for ``salt_pepper``).
        noise_variation: How much the noise strength varies across one image,
            in [0, 1): 0 is uniform, 0.6 lets it fall to 40 % in places.
        unseen_noise: Kind of the held-out noise for the robustness set
            (default ``salt_pepper``: impulse noise, a type never seen in training).
        unseen_level: Its strength (default 0.4: on the default digits it takes
            a patch model's IoU from 0.82 to 0.63 and f0's from 0.81 to 0.71;
            at 0.12 it was *easier* than the training noise, so no robustness test). The pair (``unseen_noise``,
            ``unseen_level``) must differ from (``noise``, ``noise_level``).
        target_phase: ``microstructure`` only: the phase segmented (0 pore,
            1 binder, 2 active material).
        val_fraction: Share of the images in the validation split, in [0, 1).
        test_fraction: Share of the images in the test split, in (0, 1).
        seed: Data seed; the same for all trials of a study.

    Raises:
        InputError: One line naming the field, the value and the fix.
    """

    source: str = "digits"
    canvas: int = 32
    n_images: int = 1000
    noise: str = "gaussian"
    noise_level: float = 0.45
    noise_variation: float = 0.6
    unseen_noise: str = "salt_pepper"
    unseen_level: float = 0.4
    target_phase: int = 1
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InputError(f"source={self.source!r} is not a PaSeR data source; use one of "
                             f"{', '.join(SOURCES)}{did_you_mean(self.source, SOURCES)}")
        smallest = DIGIT_SIDE if self.source == "digits" else 8
        if not is_int(self.canvas) or self.canvas < smallest:
            raise InputError(f"canvas={self.canvas!r} is too small for source={self.source!r}; "
                             f"use an integer >= {smallest}, e.g. 32")
        most = N_DIGITS if self.source == "digits" else 100_000
        if not is_int(self.n_images) or not 3 <= self.n_images <= most:
            raise InputError(f"n_images={self.n_images!r} is out of range; use an integer in [3, {most}]")
        for field_name in ("noise", "unseen_noise"):
            kind = getattr(self, field_name)
            if kind not in NOISE_KINDS:
                raise InputError(f"{field_name}={kind!r} is not a noise kind; use one of "
                                 f"{', '.join(NOISE_KINDS)}{did_you_mean(kind, NOISE_KINDS)}")
        for field_name, kind in (("noise_level", self.noise), ("unseen_level", self.unseen_noise)):
            level = getattr(self, field_name)
            top = 1.0 if kind == "salt_pepper" else math.inf
            if not is_number(level) or not 0 <= level < top:
                rule = "in [0, 1) (the share of pixels hit)" if kind == "salt_pepper" else ">= 0 (a noise std)"
                raise InputError(f"{field_name}={level!r} is out of range for {kind!r} noise; use a number {rule}")
        if not is_number(self.noise_variation) or not 0 <= self.noise_variation < 1:
            raise InputError(f"noise_variation={self.noise_variation!r} is out of range; use a number in [0, 1), "
                             "e.g. 0.6 (0: uniform noise)")
        unseen_none = self.unseen_noise == "none" or self.unseen_level == 0
        if (self.unseen_noise, float(self.unseen_level)) == (self.noise, float(self.noise_level)) or (
                unseen_none and (self.noise == "none" or self.noise_level == 0)):
            raise InputError(f"unseen_noise={self.unseen_noise!r} at unseen_level={self.unseen_level!r} is the "
                             "training noise; pick another kind or level, e.g. unseen_noise='salt_pepper'")
        if not is_int(self.target_phase) or self.target_phase not in (0, 1, 2):
            raise InputError(f"target_phase={self.target_phase!r} is not a phase; use 0 (pore), 1 (binder) "
                             "or 2 (active material)")
        if not is_number(self.val_fraction) or not 0 <= self.val_fraction < 1:
            raise InputError(f"val_fraction={self.val_fraction!r} is out of range; use a number in [0, 1), e.g. 0.1")
        if not is_number(self.test_fraction) or not 0 < self.test_fraction < 1:
            raise InputError(f"test_fraction={self.test_fraction!r} is out of range; "
                             "use a number strictly between 0 and 1, e.g. 0.2")
        n_val, n_test = _split_sizes(self.n_images, self.val_fraction, self.test_fraction)
        if self.n_images - n_val - n_test < 1:
            raise InputError(f"val_fraction={self.val_fraction!r} plus test_fraction={self.test_fraction!r} leave "
                             f"no training image out of n_images={self.n_images}; lower them")
        if not is_int(self.seed):
            raise InputError(f"seed={self.seed!r} is not an integer; use an integer such as 0")


def _split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Images in (val, test): rounded shares, at least one test image, at least one val image if asked for."""
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return n_val, n_test


@dataclass
class PaSeRData:
    """The study's images and binary masks, split.

    Attributes:
        train_images, val_images, test_images: ``float32`` ``(N, 1, H, W)`` in
            [0, 1], with the training noise. ``val_images`` has ``N == 0`` when
            ``val_fraction`` is 0.
        train_masks, val_masks, test_masks: ``int64`` ``(N, H, W)`` in {0, 1}.
        test_unseen_images: ``float32`` ``(N_test, 1, H, W)``: the clean test
            images with the unseen noise instead; scored against ``test_masks``.
        source: Which generator made them.
    """

    train_images: np.ndarray
    train_masks: np.ndarray
    val_images: np.ndarray
    val_masks: np.ndarray
    test_images: np.ndarray
    test_masks: np.ndarray
    test_unseen_images: np.ndarray
    source: str

    @property
    def image_size(self) -> int:
        """The (square) image side ``H == W``."""
        return int(self.train_images.shape[-1])

    @property
    def num_classes(self) -> int:
        """Always 2 (background, foreground): the study is binary."""
        return 2


# --------------------------------------------------------------------------- generators


def clean_digits(n_images: int, canvas: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scikit-learn digits, upscaled to 16x16 and placed at random on a black canvas.

    Args:
        n_images: How many (<= 1797); which digits is a seeded choice without repeats.
        canvas: Canvas side (>= 16).
        seed: Seed of the choice and the positions.

    Returns:
        ``images`` ``float32`` ``(n, canvas, canvas)`` in [0, 1] (no noise) and
        ``masks`` ``int64`` ``(n, canvas, canvas)``: 1 where the upscaled grey
        level exceeds :data:`DIGIT_THRESHOLD`.
    """
    from scipy.ndimage import zoom


    small = digits_images()[0][:, 0]                                   # (1797, 8, 8) in [0, 1]
    pick = _stream(seed, _PICK).permutation(len(small))[:n_images]
    big = np.clip(zoom(small[pick], (1, 2, 2), order=1, grid_mode=True, mode="nearest"), 0.0, 1.0)
    images = np.zeros((n_images, canvas, canvas), np.float32)
    corners = _stream(seed, _PLACE).integers(0, canvas - DIGIT_SIDE + 1, size=(n_images, 2))
    for i, (r, c) in enumerate(corners):
        images[i, r:r + DIGIT_SIDE, c:c + DIGIT_SIDE] = big[i]
    return images, (images > DIGIT_THRESHOLD).astype(np.int64)


def _smooth_field(rng: np.random.Generator, n: int, side: int, sigma: float) -> np.ndarray:
    """``(n, side, side)`` white noise smoothed by a periodic Gaussian of std ``sigma`` pixels (FFT)."""
    white = rng.standard_normal((n, side, side))
    k = np.fft.fftfreq(side)
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))
    return np.fft.ifft2(np.fft.fft2(white) * kernel).real


def _quantile_per_image(field: np.ndarray, q: float, where: np.ndarray | None = None) -> np.ndarray:
    """Per-image ``q``-quantile of ``field`` (n, H, W) over the pixels in ``where``; shape (n, 1, 1)."""
    flat = field.reshape(len(field), -1)
    if where is None:
        return np.quantile(flat, q, axis=1)[:, None, None]
    keep = where.reshape(len(field), -1)
    out = np.empty(len(field))
    for i in range(len(field)):
        out[i] = np.quantile(flat[i][keep[i]], q) if keep[i].any() else np.inf
    return out[:, None, None]


def microstructure_phases(n_images: int, canvas: int, seed: int) -> np.ndarray:
    """Three-phase label maps like a battery electrode: ``int64`` ``(n, canvas, canvas)`` in {0, 1, 2}.

    Phase 2 (active material) is the top ``PHASE_FRACTIONS[2]`` of one smoothed
    random field; the remaining pixels are split by a second, finer field into
    binder (1, share ``PHASE_FRACTIONS[1]`` of the whole image) and pore (0).
    Correlation lengths scale with the canvas (``canvas / 10`` and ``canvas / 16``
    pixels), so the texture looks alike at any size.
    """
    rng = _stream(seed, _FIELD)
    coarse = _smooth_field(rng, n_images, canvas, max(1.0, canvas / 10))
    fine = _smooth_field(rng, n_images, canvas, max(0.7, canvas / 16))
    pore, binder, active = PHASE_FRACTIONS
    phases = np.zeros((n_images, canvas, canvas), np.int64)
    is_active = coarse > _quantile_per_image(coarse, 1 - active)
    phases[is_active] = 2
    rest = ~is_active
    is_binder = rest & (fine > _quantile_per_image(fine, pore / (pore + binder), where=rest))
    phases[is_binder] = 1
    return phases


def clean_microstructure(n_images: int, canvas: int, seed: int,
                         target_phase: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Clean microstructure images and the binary mask of ``target_phase``.

    Returns:
        ``images`` ``float32`` ``(n, canvas, canvas)``: the phases' grey levels
        (:data:`PHASE_GREY`, each image's contrast jittered by +-10 %), blurred
        with a Gaussian of std 0.6 px; ``masks`` ``int64`` ``(n, canvas, canvas)``
        in {0, 1}.
    """
    from scipy.ndimage import gaussian_filter

    phases = microstructure_phases(n_images, canvas, seed)
    grey = np.asarray(PHASE_GREY, np.float64)[phases]
    jitter = _stream(seed, _JITTER).uniform(0.9, 1.1, size=(n_images, 1, 1))
    grey = 0.5 + (grey - 0.5) * jitter
    images = gaussian_filter(grey, sigma=(0, 0.6, 0.6), mode="reflect")
    return np.clip(images, 0.0, 1.0).astype(np.float32), (phases == target_phase).astype(np.int64)


def _variation_map(rng: np.random.Generator, n: int, side: int, variation: float) -> np.ndarray:
    """Per-pixel strength factors in [1 - variation, 1]: a random 3x3 grid, bilinearly upsampled. (n, side, side)."""
    if variation == 0:
        return np.ones((n, side, side))
    from scipy.ndimage import zoom

    coarse = rng.uniform(1 - variation, 1.0, size=(n, 3, 3))
    return np.clip(zoom(coarse, (1, side / 3, side / 3), order=1, grid_mode=True, mode="nearest"), 1 - variation, 1.0)


def add_noise(clean: np.ndarray, kind: str, level: float, rng: np.random.Generator,
              strength: np.ndarray | None = None) -> np.ndarray:
    """``clean`` (n, H, W) in [0, 1] with noise ``kind`` of strength ``level`` (times ``strength``), clipped to [0, 1].

    See the module docstring for the kinds. ``strength`` (n, H, W) scales the
    noise per pixel (for ``salt_pepper``, the hit probability). Returns float32.
    """
    if kind not in NOISE_KINDS:
        raise InputError(f"noise={kind!r} is not a noise kind; use one of {', '.join(NOISE_KINDS)}")
    s = level * (np.ones_like(clean, dtype=np.float64) if strength is None else strength)
    if kind == "none" or level == 0:
        out = clean.astype(np.float64)
    elif kind == "gaussian":
        out = clean + s * rng.standard_normal(clean.shape)
    elif kind == "speckle":
        out = clean * (1 + s * rng.standard_normal(clean.shape)) + (s / 4) * rng.standard_normal(clean.shape)
    else:  # salt_pepper
        hit = rng.random(clean.shape) < s
        salt = rng.random(clean.shape) < 0.5
        out = np.where(hit, salt.astype(np.float64), clean)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def load_paser_data(cfg: PaSeRDataConfig = PaSeRDataConfig()) -> PaSeRData:
    """Generate, add noise and split, all from ``cfg.seed``.

    Args:
        cfg: The data settings (checked when built).

    Returns:
        :class:`PaSeRData`, bit-identical for equal configs. The clean images,
        the masks and the split do not depend on the noise settings.
    """
    if cfg.source == "digits":
        clean, masks = clean_digits(cfg.n_images, cfg.canvas, cfg.seed)
    else:
        clean, masks = clean_microstructure(cfg.n_images, cfg.canvas, cfg.seed, cfg.target_phase)
    n = len(clean)
    strength = _variation_map(_stream(cfg.seed, _VARIATION), n, cfg.canvas, cfg.noise_variation)
    noisy = add_noise(clean, cfg.noise, cfg.noise_level, _stream(cfg.seed, _NOISE), strength)

    n_val, n_test = _split_sizes(n, cfg.val_fraction, cfg.test_fraction)
    order = _stream(cfg.seed, _SPLIT).permutation(n)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    unseen = add_noise(clean[test], cfg.unseen_noise, cfg.unseen_level, _stream(cfg.seed, _UNSEEN))
    return PaSeRData(
        train_images=noisy[train][:, None], train_masks=masks[train],
        val_images=noisy[val][:, None], val_masks=masks[val],
        test_images=noisy[test][:, None], test_masks=masks[test],
        test_unseen_images=unseen[:, None], source=cfg.source,
    )
