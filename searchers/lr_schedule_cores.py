"""The cores of the in-trial LR schedules: each schedule's typed settings and the torch scheduler it runs.

Paper 000, section 5.1, compares the Q-learning agent against fixed, step decay, exponential decay and cosine
annealing; reduce-on-plateau is the usual adaptive baseline; and the schedules a researcher would pick today are
MONAI's ``WarmupCosineSchedule``, torch's ``OneCycleLR`` (Smith and Topin, "Super-Convergence", arXiv
1708.07120), nnU-Net's poly decay (:mod:`medtune.searchers.poly_lr`) and a cosine of Prodigy's LR factor
(:mod:`medtune.searchers.prodigy`). Each builder here has one signature::

    build(optimizer, settings, epochs, steps_per_epoch) -> torch.optim.lr_scheduler.LRScheduler | None

``settings`` is the schedule's section of ``schedules`` (its config class below; None for ``fixed``),
``epochs >= 1`` the run's length and ``steps_per_epoch`` the batches per epoch (only ``onecycle`` reads it).
None means no schedule (the LR stays as it is). The records of :mod:`medtune.searchers.lr_methods` name these
builders; :class:`medtune.searchers.lr_schedules.EpochSchedule` steps what they return.

Edge cases: ``cosine`` anneals over the run's ``epochs`` to ``eta_min``; ``warmup_cosine`` with
``warmup_epochs >= epochs`` is warm-up only (MONAI clamps it to the run); ``onecycle`` without
``steps_per_epoch`` is a ``ValueError``; ``plateau`` watches the validation loss (mode ``min``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch

from medtune.errors import did_you_mean
from medtune.searchers.poly_lr import PolyConfig, poly_factor
from medtune.searchers.prodigy import ProdigyConfig

__all__ = [
    "ANNEAL", "CosineConfig", "ExponentialConfig", "OneCycleConfig", "PlateauConfig", "StepConfig",
    "WarmupCosineConfig", "cosine_schedule", "exponential_schedule", "no_schedule", "onecycle_schedule",
    "plateau_schedule", "poly_schedule", "prodigy_schedule", "step_schedule", "warmup_cosine_schedule",
]

@dataclass(frozen=True)
class StepConfig:
    """Step decay (``torch.optim.lr_scheduler.StepLR``), a baseline of paper 000, section 5.1.

    Attributes:
        step_size: epochs between two decays (>= 1): the LR is multiplied by ``gamma`` after every
            ``step_size`` epochs.
        gamma: the factor of each decay, in (0, 1]; 1 keeps the LR fixed.
    """

    step_size: int = 10
    gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.step_size < 1:
            raise ValueError(f"step_size={self.step_size!r} must be >= 1 epoch")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma!r} must lie in (0, 1]")


@dataclass(frozen=True)
class ExponentialConfig:
    """Exponential decay (``torch.optim.lr_scheduler.ExponentialLR``), a baseline of paper 000, section 5.1.

    Attributes:
        gamma: the factor the LR is multiplied by after every epoch, in (0, 1]; after ``e`` epochs the LR is
            ``lr * gamma ** e``; 1 keeps it fixed.
    """

    gamma: float = 0.95

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma!r} must lie in (0, 1]")


@dataclass(frozen=True)
class CosineConfig:
    """Cosine annealing over the run (``torch.optim.lr_scheduler.CosineAnnealingLR`` with ``T_max = epochs``), a
    baseline of paper 000, section 5.1.

    Attributes:
        eta_min: the LR the cosine reaches at the run's last epoch (>= 0; 0 anneals to zero).
    """

    eta_min: float = 1e-6

    def __post_init__(self) -> None:
        if self.eta_min < 0:
            raise ValueError(f"eta_min={self.eta_min!r} must be >= 0")


@dataclass(frozen=True)
class PlateauConfig:
    """Reduce-on-plateau of the validation loss (``torch.optim.lr_scheduler.ReduceLROnPlateau``, mode ``min``).

    Attributes:
        factor: the factor the LR is multiplied by on a plateau, in (0, 1).
        patience: epochs without a better validation loss that are tolerated before the LR is cut (>= 0; 0 cuts
            after the first epoch without an improvement).
        min_lr: the floor the cuts never go below (torch's ``min_lr``).
    """

    factor: float = 0.5
    patience: int = 3
    min_lr: float = 1e-6

    def __post_init__(self) -> None:
        if not 0 < self.factor < 1:
            raise ValueError(f"factor={self.factor!r} must lie in (0, 1)")
        if self.patience < 0:
            raise ValueError(f"patience={self.patience!r} must be >= 0")


@dataclass(frozen=True)
class WarmupCosineConfig:
    """``monai.optimizers.WarmupCosineSchedule`` in epochs.

    Attributes:
        warmup_epochs: epochs of linear warm-up; epoch ``e < warmup_epochs`` trains at
            ``lr * (m + (1 - m) * e / warmup_epochs)`` with ``m = warmup_multiplier``.
        warmup_multiplier: the warm-up's first LR as a fraction of ``lr``, in [0, 1]. MONAI's default 0
            would spend epoch 0 at LR 0 when stepped per epoch, so ours is 0.1.
        end_lr: the LR floor after the warm-up (MONAI's ``end_lr``), >= 0.
        cycles: cosine cycles over the rest of the run (0.5: one half-cosine down to ``end_lr``).
    """

    warmup_epochs: int = 5
    warmup_multiplier: float = 0.1
    end_lr: float = 1e-6
    cycles: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.warmup_epochs, bool) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={self.warmup_epochs!r} must be a whole number of epochs >= 0")
        if not 0 <= self.warmup_multiplier <= 1:
            raise ValueError(f"warmup_multiplier={self.warmup_multiplier!r} must lie in [0, 1]")
        if not self.end_lr >= 0:
            raise ValueError(f"end_lr={self.end_lr!r} must be >= 0")
        if not self.cycles > 0:
            raise ValueError(f"cycles={self.cycles!r} must be > 0 (0.5: one half-cosine)")


ANNEAL = ("cos", "linear")


@dataclass(frozen=True)
class OneCycleConfig:
    """``torch.optim.lr_scheduler.OneCycleLR``, stepped once per batch over ``epochs * steps_per_epoch``.

    Attributes:
        peak_lr: the cycle's highest LR (OneCycleLR's ``max_lr``); None: the trial's LR.
        pct_start: the share of the steps spent rising to the peak, in (0, 1).
        div_factor: the first LR is ``peak_lr / div_factor``.
        final_div_factor: the last LR is ``peak_lr / (div_factor * final_div_factor)``.
        anneal_strategy: ``cos`` or ``linear``.
        cycle_momentum: cycle SGD's momentum / Adam's beta1 inversely to the LR (torch's default; it gives a
            momentum-free SGD a momentum).
    """

    peak_lr: float | None = None
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal_strategy: str = "cos"
    cycle_momentum: bool = True

    def __post_init__(self) -> None:
        if self.peak_lr is not None and not (self.peak_lr > 0 and math.isfinite(self.peak_lr)):
            raise ValueError(f"peak_lr={self.peak_lr!r} must be a positive finite number, or null for the trial's LR")
        if not 0 < self.pct_start < 1:
            raise ValueError(f"pct_start={self.pct_start!r} must lie in (0, 1)")
        for name in ("div_factor", "final_div_factor"):
            value = getattr(self, name)
            if not (value >= 1 and math.isfinite(value)):
                raise ValueError(f"{name}={value!r} must be a finite number >= 1")
        if self.anneal_strategy not in ANNEAL:
            raise ValueError(f"anneal_strategy={self.anneal_strategy!r} is not one of {', '.join(ANNEAL)}"
                             f"{did_you_mean(self.anneal_strategy, ANNEAL)}")


_sched = torch.optim.lr_scheduler


def no_schedule(optimizer: Any, settings: Any, epochs: int, steps_per_epoch: int | None) -> None:
    """``fixed`` and ``schedulefree``: the LR stays as it is."""
    return None


def step_schedule(optimizer: Any, settings: StepConfig, epochs: int, steps_per_epoch: int | None) -> Any:
    """Step decay: the LR times ``gamma`` every ``step_size`` epochs (``StepLR``)."""
    return _sched.StepLR(optimizer, settings.step_size, gamma=settings.gamma)


def exponential_schedule(optimizer: Any, settings: ExponentialConfig, epochs: int,
                         steps_per_epoch: int | None) -> Any:
    """Exponential decay: the LR times ``gamma`` every epoch (``ExponentialLR``)."""
    return _sched.ExponentialLR(optimizer, gamma=settings.gamma)


def cosine_schedule(optimizer: Any, settings: CosineConfig, epochs: int, steps_per_epoch: int | None) -> Any:
    """Cosine annealing over the run's ``epochs`` to ``eta_min`` (``CosineAnnealingLR``)."""
    return _sched.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=settings.eta_min)


def prodigy_schedule(optimizer: Any, settings: ProdigyConfig, epochs: int, steps_per_epoch: int | None) -> Any:
    """Cosine annealing of Prodigy's LR factor over the run to ``eta_min``."""
    return _sched.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=settings.eta_min)


def poly_schedule(optimizer: Any, settings: PolyConfig, epochs: int, steps_per_epoch: int | None) -> Any:
    """nnU-Net's poly decay: ``lr * (1 - epoch / epochs) ** exponent`` (``LambdaLR``)."""
    return _sched.LambdaLR(optimizer, partial(poly_factor, epochs=epochs, exponent=settings.exponent))


def warmup_cosine_schedule(optimizer: Any, settings: WarmupCosineConfig, epochs: int,
                           steps_per_epoch: int | None) -> Any:
    """MONAI's ``WarmupCosineSchedule`` in epochs (linear warm-up, then a cosine to ``end_lr``)."""
    from monai.optimizers import WarmupCosineSchedule  # MONAI loads only when this schedule runs

    c = settings
    return WarmupCosineSchedule(optimizer, warmup_steps=c.warmup_epochs, t_total=epochs, end_lr=c.end_lr,
                                cycles=c.cycles, warmup_multiplier=c.warmup_multiplier)


def onecycle_schedule(optimizer: Any, settings: OneCycleConfig, epochs: int, steps_per_epoch: int | None) -> Any:
    """torch's ``OneCycleLR`` over ``epochs * steps_per_epoch`` optimizer steps, its peak ``peak_lr`` (None: the
    optimizer's LR).

    Raises:
        ValueError: no ``steps_per_epoch``.
    """
    if not steps_per_epoch or steps_per_epoch < 1:
        raise ValueError(f"onecycle steps once per batch and needs steps_per_epoch (got {steps_per_epoch!r})")
    c = settings
    peak = c.peak_lr if c.peak_lr is not None else float(optimizer.param_groups[0]["lr"])
    anneal: Literal["cos", "linear"] = "cos" if c.anneal_strategy == "cos" else "linear"  # one of ANNEAL (checked)
    return _sched.OneCycleLR(optimizer, max_lr=peak, total_steps=epochs * int(steps_per_epoch),
                             pct_start=c.pct_start, anneal_strategy=anneal, div_factor=c.div_factor,
                             final_div_factor=c.final_div_factor, cycle_momentum=c.cycle_momentum)


def plateau_schedule(optimizer: Any, settings: PlateauConfig, epochs: int, steps_per_epoch: int | None) -> Any:
    """Reduce-on-plateau of the validation loss (``ReduceLROnPlateau``, mode ``min``)."""
    return _sched.ReduceLROnPlateau(optimizer, mode="min", factor=settings.factor, patience=settings.patience,
                                    min_lr=settings.min_lr)
