"""TrivialAugment and RandAugment, the searched-policy-free augmentation baselines of the APGA study.

* ``trivialaugment``: Müller and Hutter, "TrivialAugment: Tuning-free Yet
  State-of-the-Art Data Augmentation", ICCV 2021: per image, one operation drawn
  uniformly from a fixed list, at a magnitude drawn uniformly.
* ``randaugment``: Cubuk, Zoph, Shlens and Le, "RandAugment: Practical
  automated data augmentation with a reduced search space", CVPR Workshops
  2020: per image, ``N`` operations drawn uniformly, all at one global
  magnitude ``M`` (on a 0..30 scale; torchvision's and our defaults: ``N = 2``,
  ``M = 9``).

The operations come from Kornia (``kornia.augmentation.auto.TrivialAugment`` and
``RandAugment``, with Kornia's operation lists and magnitude ranges). We meant to
use ``torchvision.transforms.v2``, but PyPI's torchvision wheels for Linux are
linked against the CUDA build of torch (``libtorch_cuda.so``) and fail to import
with the CPU torch wheel this project pins ("operator torchvision::nms does not
exist"); Kornia is pure PyTorch, so one code path runs on CPU and GPU builds.

Our choices:

* The ops run on the float images in [0, 1] as held (no uint8 round trip:
  Kornia's ops take floats and clamp to [0, 1]); the output keeps the input's
  dtype, shape and range.
* Each image of a batch draws its own operation(s) and magnitude, as both
  papers do (Kornia draws one operation per call, so the batch is augmented one
  image at a time). The ops run on the CPU (tiny images; the same numbers on a
  GPU machine) and move back to the batch's device.
* Randomness: every call takes an explicit integer ``seed`` and draws under
  ``torch.random.fork_rng``, so the result depends only on ``(images, seed)``
  and torch's global random state is left as it was; the training loop draws
  those seeds from its own generator, seeded by the trial seed and saved in its
  checkpoint.
* RandAugment's list is the paper's (section 3: auto-contrast, equalize,
  rotate, solarize, colour, posterize, contrast, brightness, sharpness, shear
  and translate in x and y) as Kornia has it: Kornia's extra ``invert`` and
  ``solarize_add`` (from AutoAugment's list) are dropped; Kornia has no
  identity operation, so the paper's ``identity`` is missing.
* Grey images (one channel): RandAugment's colour (saturation) operation needs
  three channels and is the identity on grey images, so it is dropped from the
  list for them (TrivialAugment's list has no colour operation). That leaves
  13 operations for colour images and 12 for grey ones.

Edge cases: images must be ``(B, C, H, W)`` with ``C`` 1 or 3 (what every data
source of the study gives); ``B = 0`` returns the empty batch.
"""

from __future__ import annotations

import torch

__all__ = [
    "AUTO_AUGMENT_METHODS", "MAX_RANDAUGMENT_OPS", "NOT_IN_RANDAUGMENT_PAPER", "auto_augment", "make_auto_augment",
]

#: The two methods, as in the study's ``method`` parameter.
AUTO_AUGMENT_METHODS: tuple[str, ...] = ("trivialaugment", "randaugment")
#: Kornia's RandAugment operations that are not in Cubuk et al.'s list.
NOT_IN_RANDAUGMENT_PAPER: tuple[str, ...] = ("invert", "solarize_add")
#: The most operations per image RandAugment can draw without repeats on grey images.
MAX_RANDAUGMENT_OPS = 12


def make_auto_augment(method: str, channels: int, ops: int = 2, magnitude: int = 9) -> torch.nn.Module:
    """The Kornia module of ``method`` for images of ``channels`` channels.

    Args:
        method: ``"trivialaugment"`` or ``"randaugment"``.
        channels: 1 (grey) or 3 (colour).
        ops: RandAugment's ``N``, distinct operations per image, 1..12 (:data:`MAX_RANDAUGMENT_OPS`).
        magnitude: RandAugment's ``M`` in 1..29 (Kornia's open interval (0, 30)).

    Raises:
        ValueError: an unknown method, or ``channels`` not 1 or 3.
    """
    from kornia.augmentation.auto import RandAugment, TrivialAugment

    if channels not in (1, 3):
        raise ValueError(f"{method} needs grey (1-channel) or colour (3-channel) images, not {channels} channels")
    if method == "trivialaugment":
        return TrivialAugment()
    if method == "randaugment":
        from kornia.augmentation.auto.rand_augment.rand_augment import default_policy

        policy = [p for p in default_policy
                  if p[0][0] not in NOT_IN_RANDAUGMENT_PAPER and (channels == 3 or p[0][0] != "color")]
        return RandAugment(n=int(ops), m=int(magnitude), policy=policy)
    raise ValueError(f"method={method!r} is not one of {', '.join(AUTO_AUGMENT_METHODS)}")


def auto_augment(op: torch.nn.Module, images: torch.Tensor, seed: int) -> torch.Tensor:
    """``images`` ``(B, C, H, W)`` in [0, 1], each augmented by ``op`` with its own draw; deterministic in ``seed``.

    Returns:
        ``(B, C, H, W)``, the dtype and device of ``images``, values in [0, 1].
    """
    if images.ndim != 4:
        raise ValueError(f"images have shape {tuple(images.shape)}; give a batch (B, C, H, W)")
    if len(images) == 0:
        return images
    x = images.detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        out = torch.cat([op(img[None]) for img in x])
    return out.clamp(0.0, 1.0).to(images.device, images.dtype)
