"""The learning-rate schedules the Q-learning agent is compared against, behind one interface.

Paper 000, section 5.1: fixed, step decay, exponential decay and cosine
annealing (:data:`BASELINES`); we add reduce-on-plateau, the usual adaptive
baseline, and the schedules a researcher would pick today
(:data:`STRONG_BASELINES`). Each is a record of :mod:`medtune.searchers.lr_methods` (every table here is read
off those records) whose core, its typed settings and the torch scheduler it builds, is in
:mod:`medtune.searchers.lr_schedule_cores`:

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
from typing import TYPE_CHECKING, Any

import torch

from medtune.errors import did_you_mean
from medtune.searchers.lr_methods import METHODS, MethodNames
from medtune.searchers.lr_schedule_cores import (
    ANNEAL,
    CosineConfig,
    ExponentialConfig,
    OneCycleConfig,
    PlateauConfig,
    StepConfig,
    WarmupCosineConfig,
)

__all__ = [
    "ANNEAL", "BASELINES", "PER_BATCH", "SCHEDULES", "STRONG_BASELINES", "CosineConfig", "EpochSchedule",
    "ExponentialConfig", "OneCycleConfig", "PlateauConfig", "ScheduleConfig", "StepConfig", "WarmupCosineConfig",
]

#: paper 000's baselines and reduce-on-plateau: the classic records that are not ``strong``.
BASELINES = MethodNames(lambda m: m.kind == "classic" and not m.strong)
#: the schedules and LR-free optimizers a researcher would pick today (records with ``strong=True``).
STRONG_BASELINES = MethodNames(lambda m: m.kind == "classic" and m.strong)
#: what :class:`EpochSchedule` runs: the records with a ``schedule``.
SCHEDULES = MethodNames(lambda m: m.schedule is not None)
#: stepped by :meth:`EpochSchedule.batch_step`, after every optimizer step (``stepping="batch"``).
PER_BATCH = MethodNames(lambda m: m.stepping == "batch")


class ScheduleConfig:
    """Parameters of every LR policy that runs inside a trial: one section per record of
    :mod:`medtune.searchers.lr_methods` with a ``section``, typed by its ``config`` dataclass and defaulting to
    it (``step``, ``exponential``, ``cosine``, ``plateau``, ``warmup_cosine``, ``onecycle``, ``poly``,
    ``schedulefree``, ``prodigy``, ``effort``, ``greedy``). A frozen dataclass, made from the records registered
    when this module is first imported. Each section is read only by the method of its name.

    Attributes:
        step: step decay, the LR times ``gamma`` every ``step_size`` epochs (paper 000, section 5.1).
        exponential: exponential decay, the LR times ``gamma`` every epoch (paper 000, section 5.1).
        cosine: cosine annealing over the run to ``eta_min`` (paper 000, section 5.1).
        plateau: the LR times ``factor`` when the validation loss stops improving (torch ``ReduceLROnPlateau``).
        warmup_cosine: linear warm-up, then a cosine to ``end_lr`` (MONAI ``WarmupCosineSchedule``).
        onecycle: one cycle up to ``peak_lr`` and down, stepped after every batch (Smith and Topin, arXiv
            1708.07120).
        poly: nnU-Net's recipe, poly decay of Nesterov SGD with gradient clipping (its optimizer and LR included).
        schedulefree: Schedule-Free AdamW at a constant LR (Defazio et al., arXiv 2405.15682), its optimizer's
            settings.
        prodigy: the Prodigy optimizer (Mishchenko and Defazio, arXiv 2306.06101), its LR factor cosine-annealed.
        effort: the effort-cost policy that recalls similar curves (after paper 004).
        greedy: GreedyLR, which grows the LR while the loss improves and shrinks it while it worsens (arXiv
            2512.14527).
    """

    if TYPE_CHECKING:  # the sections are made from the records below; a type checker sees any section
        def __init__(self, **sections: Any) -> None: ...

        def __getattr__(self, section: str) -> Any: ...


def _add_sections(cls: type) -> None:
    """Give ``cls`` one field per record section, then make it a frozen dataclass (in place)."""
    sections = {m.section: m.config for m in METHODS.values() if m.section is not None and m.config is not None}
    cls.__annotations__ = dict(sections)
    for name, config in sections.items():
        setattr(cls, name, field(default_factory=config))
    dataclass(frozen=True)(cls)


_add_sections(ScheduleConfig)


class EpochSchedule:
    """One schedule of :data:`SCHEDULES` (its record's ``schedule``) driving ``optimizer``'s LR: :meth:`step` once
    per epoch, and :meth:`batch_step` after every optimizer step (only a ``stepping="batch"`` record, ``onecycle``,
    moves the LR there).

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
            raise ValueError(f"method={method!r} is not a schedule{did_you_mean(method, tuple(SCHEDULES))}; "
                             f"use one of {', '.join(SCHEDULES)}")
        record = METHODS[method]
        assert record.schedule is not None  # SCHEDULES holds the records with a schedule
        self.method = method
        self.optimizer = optimizer
        self._per_batch = record.stepping == "batch"
        self.scheduler: Any = record.schedule(optimizer, record.settings(config), max(1, int(epochs)),
                                              steps_per_epoch)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def per_batch(self) -> bool:
        """Whether the LR moves in :meth:`batch_step` (``onecycle``) rather than in :meth:`step`."""
        return self._per_batch

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
