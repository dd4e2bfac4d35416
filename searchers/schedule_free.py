"""Schedule-Free AdamW (``schedulefree``): an LR-schedule-free optimizer, run at a constant LR.

Source: Defazio et al., "The Road Less Scheduled", NeurIPS 2024 (arXiv 2405.15682); the optimizer is the
authors' PyPI package ``schedulefree`` (facebookresearch/schedule_free), ``schedulefree.AdamWScheduleFree``.
It keeps two sequences per parameter: ``z`` (the SGD-like base iterate) and the average ``x`` that is
evaluated; gradients are taken at their interpolation ``y = (1 - beta1) * z + beta1 * x``. So the weights held
by the model depend on the optimizer's mode:

* ``optimizer.train()`` before training: the parameters hold ``y`` (``step`` refuses to run otherwise);
* ``optimizer.eval()`` before validation, testing and saving a checkpoint: the parameters hold ``x``.

No LR schedule is applied (the method's point); the package's own linear warm-up over ``warmup_steps``
optimizer steps is available. Edge cases: a parameter never stepped has no ``z`` and does not move on a mode
switch; BatchNorm running statistics are those of ``y`` (the LR study's networks use instance norm, which keeps
none). The package is imported when an optimizer is built, not when this module is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ScheduleFreeConfig", "in_train_mode", "is_schedule_free", "make_schedule_free", "set_mode"]


@dataclass(frozen=True)
class ScheduleFreeConfig:
    """``AdamWScheduleFree``'s settings (the spec's ``schedules.schedulefree`` section; package defaults).

    Attributes:
        lr: the constant LR (the package's default 0.0025; its authors suggest 1x to 10x Adam's usual LR).
        betas: ``(beta1, beta2)``: ``beta1`` interpolates between ``z`` and ``x``, ``beta2`` is Adam's.
        weight_decay: decoupled weight decay, >= 0.
        warmup_steps: linear warm-up over this many optimizer steps (batches); 0: none.
    """

    lr: float = 0.0025
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr={self.lr!r} must be a positive finite number (the package's default: 0.0025)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas={list(self.betas)!r} must be two numbers in [0, 1), e.g. [0.9, 0.999]")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if isinstance(self.warmup_steps, bool) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps!r} must be a whole number of optimizer steps >= 0")


def make_schedule_free(params: Iterable[Any], cfg: ScheduleFreeConfig) -> Any:
    """``schedulefree.AdamWScheduleFree`` over ``params``, in train mode (ready for the first step)."""
    from schedulefree import AdamWScheduleFree

    optimizer = AdamWScheduleFree(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                                  warmup_steps=cfg.warmup_steps)
    optimizer.train()
    return optimizer


def is_schedule_free(optimizer: Any) -> bool:
    """Whether ``optimizer`` is Schedule-Free AdamW (imports the package only when it is loaded already)."""
    import sys

    module = sys.modules.get("schedulefree")
    return module is not None and isinstance(optimizer, module.AdamWScheduleFree)


def in_train_mode(optimizer: Any) -> bool:
    """True when a schedule-free ``optimizer`` holds ``y`` in its parameters (after ``train()``)."""
    return bool(optimizer.param_groups[0].get("train_mode", False))


def set_mode(optimizer: Any, train: bool) -> None:
    """``optimizer.train()`` or ``optimizer.eval()`` for a schedule-free optimizer; nothing for any other."""
    if is_schedule_free(optimizer):
        optimizer.train() if train else optimizer.eval()
