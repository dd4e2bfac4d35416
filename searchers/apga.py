"""Adversarial Policy Gradient Augmentation (APGA): the pure core of the policy's update.

Paper 002 (Cheng, Iriondo et al., MICCAI 2019), section 2 and Algorithm 1, with
the details the authors' public code (Adversarial-Policy-Gradient-Augmentation, apga_mura.py) shows:

* The segmentation policy ``M_p`` gives each pixel a probability ``p`` of being
  important for the classification (shape ``(B, 1, H, W)``, values in (0, 1)).
* **Adversarial masks** erase what the policy thinks is important: keep the
  pixels with ``p <= 0.5``, zero those with ``p > 0.5`` (Algorithm 1, lines 8-9).
  The classifier, in eval mode, scores the erased batch: ``L_adv``.
* **Reward** (Eq. 6): ``R_t = L_adv - L_orig``; the better the policy finds the
  important pixels, the more the loss grows when they are erased.
* **Baseline** ``b_t``: an exponential moving average of the reward with decay
  0.5, subtracted to reduce variance (section 3).
* **Policy loss** (Eq. 7): ``BCE(p, a_t) * (R_t - b_t) + lambda_zeros * BCE(p, 0)``
  with the action taken ``a_t = 1[p > 0.5]`` (detached) and ``lambda_zeros`` =
  0.1; the second term penalises marking every pixel important (which would
  erase the whole image for a large, meaningless reward).
* **Aiding masks** keep what the policy thinks is important (``p > 0.5``) for the
  classifier's second step, on a batch of originals and masked images 1:1
  (Algorithm 1, lines 16-17).

Our choice where the paper is silent: the baseline starts at the first reward
(so the first advantage is 0), not at 0, which keeps the first update from being
driven by the reward's raw scale.

Pure torch: no Ray, no MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "APGAConfig", "RewardBaseline", "adversarial_keep", "aiding_keep", "apply_mask", "keep_fraction", "policy_loss",
    "reward",
]


@dataclass(frozen=True)
class APGAConfig:
    """The policy update's parameters (paper 002 section 3 defaults).

    Attributes:
        lambda_zeros: the weight of the ``BCE(p, 0)`` term of the policy loss (Eq. 7; 0.1 as in the paper), >= 0:
            it penalises marking every pixel important. 0 drops the term.
        baseline_decay: the decay of the reward baseline's moving average, ``b <- decay * b + (1 - decay) * R``,
            in [0, 1) (section 3: 0.5); 0 makes the baseline the last reward.
        threshold: the policy probability, in (0, 1), above which a pixel counts as important: the adversarial
            mask erases it, the aiding mask keeps it, and it is the action ``a_t`` (Algorithm 1: 0.5).

    Raises:
        ValueError: one line naming the field, its value and the fix.
    """

    lambda_zeros: float = 0.1
    baseline_decay: float = 0.5
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.lambda_zeros < 0:
            raise ValueError(f"lambda_zeros={self.lambda_zeros!r} must be >= 0 (the weight of the all-zeros penalty)")
        if not 0 <= self.baseline_decay < 1:
            raise ValueError(f"baseline_decay={self.baseline_decay!r} must lie in [0, 1)")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold={self.threshold!r} must lie in (0, 1)")


def adversarial_keep(p: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """1 where a pixel is kept by the adversarial mask (``p <= threshold``), 0 where it is erased. Same shape as
    ``p``."""
    return (p <= threshold).to(p.dtype)


def aiding_keep(p: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """1 where a pixel is kept by the aiding mask (``p > threshold``): what the policy finds important."""
    return (p > threshold).to(p.dtype)


def apply_mask(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x * keep``, ``keep`` broadcast over channels: ``x`` (B, C, H, W), ``keep`` (B, 1, H, W)."""
    return x * keep


def reward(loss_adversarial: float, loss_original: float) -> float:
    """Eq. 6: ``R_t = L_adv - L_orig``."""
    return float(loss_adversarial) - float(loss_original)


class RewardBaseline:
    """Exponential moving average of the reward: ``b <- decay * b + (1 - decay) * R``.

    :meth:`advantage` returns ``R - b`` with ``b`` as it was *before* this reward, then updates ``b``.
    The first call sets ``b`` to that reward (advantage 0).
    """

    def __init__(self, decay: float = 0.5) -> None:
        self.decay = decay
        self.value: float | None = None

    def advantage(self, r: float) -> float:
        if self.value is None:
            self.value = float(r)
            return 0.0
        adv = float(r) - self.value
        self.value = self.decay * self.value + (1 - self.decay) * float(r)
        return adv


def policy_loss(p: torch.Tensor, advantage: float, lambda_zeros: float = 0.1, threshold: float = 0.5) -> torch.Tensor:
    """Eq. 7: ``BCE(p, 1[p > threshold]) * advantage + lambda_zeros * BCE(p, 0)``, a scalar to minimise.

    Args:
        p: the policy's probabilities, (B, 1, H, W), requiring grad.
        advantage: ``R_t - b_t``.
        lambda_zeros: weight of the penalty on marking pixels important.
    """
    action = (p > threshold).to(p.dtype).detach()
    p = p.clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(p, action) * advantage + lambda_zeros * F.binary_cross_entropy(p, torch.zeros_like(p))


def keep_fraction(keep: torch.Tensor) -> float:
    """The share of pixels a mask keeps (reported per method; 0 or 1 means the policy collapsed)."""
    return float(keep.float().mean())
