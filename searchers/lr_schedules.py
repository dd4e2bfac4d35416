"""The learning-rate schedules the Q-learning agent is compared against, behind one interface.

Paper 000, section 5.1: fixed, step decay, exponential decay and cosine
annealing (:data:`BASELINES`); we add reduce-on-plateau, the usual adaptive
baseline, and the schedules a researcher would pick today
(:data:`STRONG_BASELINES`):

* ``warmup_cosine``: MONAI's ``monai.optimizers.WarmupCosineSchedule`` (linear
  warm-up from ``warmup_multiplier * lr`` over ``warmup_epochs``, then a cosine
  to ``end_lr``), stepped per epoch;
* ``onecycle``: ``torch.optim.lr_scheduler.OneCycleLR`` (Smith and Topin,
  "Super-Convergence", arXiv 1708.07120), stepped **per batch** through
  :meth:`EpochSchedule.batch_step`; it needs ``epochs`` and ``steps_per_epoch``;
* ``poly``: nnU-Net's poly decay (:mod:`medtune.searchers.poly_lr`), per epoch;
* ``schedulefree``: no schedule (:mod:`medtune.searchers.schedule_free`);
* ``prodigy``: cosine annealing of Prodigy's LR factor (:mod:`medtune.searchers.prodigy`).

``poly``, ``schedulefree`` and ``prodigy`` also imply their own optimizer
(:mod:`medtune.searchers.lr_optimizers` builds and checks it); the schedule
here only moves its LR. Each is a ``torch.optim.lr_scheduler``::

    policy = EpochSchedule("cosine", optimizer, ScheduleConfig(), epochs=30)
    for epoch in range(30):
        for batch in loader:
            train_step(batch); policy.batch_step()   # moves the LR only for onecycle
        dice, val_loss = validate()
        policy.step(dice=dice, val_loss=val_loss)    # moves it for every other schedule

Edge cases: ``plateau`` watches the validation loss (mode ``min``); a NaN loss
is passed to it unchanged (torch treats it as no improvement). ``cosine``
anneals over the run's ``epochs`` to ``eta_min``. ``warmup_cosine`` with
``warmup_epochs >= epochs`` is warm-up only (MONAI clamps it to the run).
``onecycle`` stepped more than ``epochs * steps_per_epoch`` times is an error
(torch's ``ValueError``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
import math
from typing import Any

import torch

from medtune.errors import did_you_mean
from medtune.searchers.effort_controller import EffortConfig
from medtune.searchers.greedy_lr import GreedyConfig
from medtune.searchers.poly_lr import PolyConfig, poly_factor
from medtune.searchers.prodigy import ProdigyConfig
from medtune.searchers.schedule_free import ScheduleFreeConfig

BASELINES: tuple[str, ...] = ("fixed", "step", "exponential", "cosine", "plateau")
STRONG_BASELINES: tuple[str, ...] = ("warmup_cosine", "onecycle", "poly", "schedulefree", "prodigy")
SCHEDULES: tuple[str, ...] = BASELINES + STRONG_BASELINES  # what EpochSchedule runs
PER_BATCH: tuple[str, ...] = ("onecycle",)  # stepped by batch_step, after every optimizer step


@dataclass(frozen=True)
class StepConfig:
    step_size: int = 10
    gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.step_size < 1:
            raise ValueError(f"step_size={self.step_size!r} must be >= 1 epoch")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma!r} must lie in (0, 1]")


@dataclass(frozen=True)
class ExponentialConfig:
    gamma: float = 0.95

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma!r} must lie in (0, 1]")


@dataclass(frozen=True)
class CosineConfig:
    eta_min: float = 1e-6

    def __post_init__(self) -> None:
        if self.eta_min < 0:
            raise ValueError(f"eta_min={self.eta_min!r} must be >= 0")


@dataclass(frozen=True)
class PlateauConfig:
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


@dataclass(frozen=True)
class ScheduleConfig:
    """Parameters of every LR policy that runs inside a trial (one section each in a spec)."""

    step: StepConfig = field(default_factory=StepConfig)
    exponential: ExponentialConfig = field(default_factory=ExponentialConfig)
    cosine: CosineConfig = field(default_factory=CosineConfig)
    plateau: PlateauConfig = field(default_factory=PlateauConfig)
    warmup_cosine: WarmupCosineConfig = field(default_factory=WarmupCosineConfig)
    onecycle: OneCycleConfig = field(default_factory=OneCycleConfig)
    poly: PolyConfig = field(default_factory=PolyConfig)
    schedulefree: ScheduleFreeConfig = field(default_factory=ScheduleFreeConfig)
    prodigy: ProdigyConfig = field(default_factory=ProdigyConfig)
    greedy: GreedyConfig = field(default_factory=GreedyConfig)
    effort: EffortConfig = field(default_factory=EffortConfig)


class EpochSchedule:
    """One schedule of :data:`SCHEDULES` driving ``optimizer``'s LR: :meth:`step` once per epoch, and
    :meth:`batch_step` after every optimizer step (only ``onecycle`` moves the LR there).

    Args:
        method: one of :data:`SCHEDULES`.
        optimizer: the optimizer whose LR is scheduled (its current LR is the base LR; ``onecycle``'s peak
            unless ``onecycle.peak_lr`` is set).
        config: the schedules' parameters.
        epochs: length of the run (``cosine``'s and ``prodigy``'s ``T_max``, ``warmup_cosine``'s ``t_total``,
            ``poly``'s horizon, ``onecycle``'s with ``steps_per_epoch``).
        steps_per_epoch: optimizer steps (batches) per epoch; ``onecycle`` needs it.

    Raises:
        ValueError: an unknown method, or ``onecycle`` without ``steps_per_epoch``.
    """

    def __init__(self, method: str, optimizer: torch.optim.Optimizer, config: ScheduleConfig, epochs: int,
                 steps_per_epoch: int | None = None) -> None:
        if method not in SCHEDULES:
            raise ValueError(f"method={method!r} is not a schedule{did_you_mean(method, SCHEDULES)}; "
                             f"use one of {', '.join(SCHEDULES)}")
        self.method = method
        self.optimizer = optimizer
        epochs = max(1, int(epochs))
        sched = torch.optim.lr_scheduler
        if method in ("fixed", "schedulefree"):
            self.scheduler = None
        elif method == "step":
            self.scheduler = sched.StepLR(optimizer, config.step.step_size, gamma=config.step.gamma)
        elif method == "exponential":
            self.scheduler = sched.ExponentialLR(optimizer, gamma=config.exponential.gamma)
        elif method == "cosine":
            self.scheduler = sched.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=config.cosine.eta_min)
        elif method == "prodigy":
            self.scheduler = sched.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=config.prodigy.eta_min)
        elif method == "poly":
            self.scheduler = sched.LambdaLR(optimizer, partial(poly_factor, epochs=epochs,
                                                               exponent=config.poly.exponent))
        elif method == "warmup_cosine":
            from monai.optimizers import WarmupCosineSchedule

            c = config.warmup_cosine
            self.scheduler = WarmupCosineSchedule(optimizer, warmup_steps=c.warmup_epochs, t_total=epochs,
                                                  end_lr=c.end_lr, cycles=c.cycles,
                                                  warmup_multiplier=c.warmup_multiplier)
        elif method == "onecycle":
            if not steps_per_epoch or steps_per_epoch < 1:
                raise ValueError(f"onecycle steps once per batch and needs steps_per_epoch (got {steps_per_epoch!r})")
            c = config.onecycle
            peak = c.peak_lr if c.peak_lr is not None else float(optimizer.param_groups[0]["lr"])
            self.scheduler = sched.OneCycleLR(optimizer, max_lr=peak, total_steps=epochs * int(steps_per_epoch),
                                              pct_start=c.pct_start, anneal_strategy=c.anneal_strategy,
                                              div_factor=c.div_factor, final_div_factor=c.final_div_factor,
                                              cycle_momentum=c.cycle_momentum)
        else:
            self.scheduler = sched.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=config.plateau.factor,
                patience=config.plateau.patience,
                min_lr=config.plateau.min_lr,
            )

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def per_batch(self) -> bool:
        """Whether the LR moves in :meth:`batch_step` (``onecycle``) rather than in :meth:`step`."""
        return self.method in PER_BATCH

    def batch_step(self) -> float:
        """After one optimizer step: advance a per-batch schedule; returns the LR of the next batch."""
        if self.per_batch:
            self.scheduler.step()
        return self.lr

    def step(self, dice: float, val_loss: float) -> float:
        """Advance one epoch; returns the LR for the next epoch."""
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        elif self.scheduler is not None and not self.per_batch:
            self.scheduler.step()
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)
