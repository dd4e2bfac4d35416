"""The classic learning-rate schedules the Q-learning agent is compared against.

Paper 000, section 5.1: fixed, step decay, exponential decay and cosine
annealing; we add reduce-on-plateau, the usual adaptive baseline. Each is a
``torch.optim.lr_scheduler`` stepped once per epoch, behind one interface so
the trainable treats every method alike::

    policy = EpochSchedule("cosine", optimizer, ScheduleConfig(), epochs=30)
    for epoch in range(30):
        train(); dice, val_loss = validate()
        policy.step(dice=dice, val_loss=val_loss)

Edge cases: ``plateau`` watches the validation loss (mode ``min``); a NaN loss
is passed to it unchanged (torch treats it as no improvement). ``cosine``
anneals over the run's ``epochs`` to ``eta_min``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from medtune.searchers.effort_controller import EffortConfig
from medtune.searchers.greedy_lr import GreedyConfig

BASELINES: tuple[str, ...] = ("fixed", "step", "exponential", "cosine", "plateau")


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
class ScheduleConfig:
    """Parameters of every LR policy that runs inside a trial (one section each in a spec)."""

    step: StepConfig = field(default_factory=StepConfig)
    exponential: ExponentialConfig = field(default_factory=ExponentialConfig)
    cosine: CosineConfig = field(default_factory=CosineConfig)
    plateau: PlateauConfig = field(default_factory=PlateauConfig)
    greedy: GreedyConfig = field(default_factory=GreedyConfig)
    effort: EffortConfig = field(default_factory=EffortConfig)


class EpochSchedule:
    """One baseline schedule driving ``optimizer``'s LR, stepped once per epoch.

    Args:
        method: one of :data:`BASELINES`.
        optimizer: the optimizer whose LR is scheduled (its current LR is the base LR).
        config: the schedules' parameters.
        epochs: length of the run (cosine's ``T_max``).
    """

    def __init__(self, method: str, optimizer: torch.optim.Optimizer, config: ScheduleConfig, epochs: int) -> None:
        if method not in BASELINES:
            raise ValueError(f"method={method!r} is not a baseline schedule; use one of {', '.join(BASELINES)}")
        self.method = method
        self.optimizer = optimizer
        sched = torch.optim.lr_scheduler
        if method == "fixed":
            self.scheduler = None
        elif method == "step":
            self.scheduler = sched.StepLR(optimizer, config.step.step_size, gamma=config.step.gamma)
        elif method == "exponential":
            self.scheduler = sched.ExponentialLR(optimizer, gamma=config.exponential.gamma)
        elif method == "cosine":
            self.scheduler = sched.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=config.cosine.eta_min)
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

    def step(self, dice: float, val_loss: float) -> float:
        """Advance one epoch; returns the LR for the next epoch."""
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)
