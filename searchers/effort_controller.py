"""The effort/performance learning-rate controller (``effort``), derived from paper 004's objective.

Paper 004 (Njaradi, Carrasco-Davis, Latham, Saxe, arXiv 2601.07830) is
available to us only as its abstract. It states that the optimal learning rate
maximises cumulative performance minus a cost of learning effort, and that it
is a closed-loop controller of the current and the expected future performance,
which an episodic memory of similar past learning curves can supply. **The
derivation below is ours**, for a simple model of learning progress; it is not
taken from the paper.

Derivation (ours)
-----------------
Let ``P_s`` be the performance (validation Dice) after epoch ``s`` and ``eta_s``
the learning rate of epoch ``s + 1``. Model progress as closing a fraction of
the gap to an attainable level ``P_bar`` proportional to the learning rate::

    P_{s+1} = P_s + kappa * eta_s * (P_bar - P_s),   i.e.  G_{s+1} = G_s (1 - kappa eta_s),  G_s = P_bar - P_s

and choose ``eta_t .. eta_{T-1}`` to maximise cumulative performance minus a
quadratic effort cost::

    J = sum_{s=t+1}^{T} P_s  -  (c / 2) * sum_{s=t}^{T-1} eta_s^2 .

A gain in ``P_{t+1}`` persists, shrinking with the gap: for ``s > t``,
``dG_s / d eta_t = -kappa * G_t * G_s / G_{t+1}``. Setting ``dJ/d eta_t = 0``::

    c * eta_t = kappa * (G_t / G_{t+1}) * sum_{s=t+1}^{T} G_s
    eta_t*   ~= (kappa / c) * sum_{s=t+1}^{T} (P_bar - E[P_s])          (small steps: G_t / G_{t+1} ~ 1)

The optimal LR is proportional to the **expected cumulative shortfall** of the
remaining run: large while much improvement is still expected, falling to zero
as the expected future performance reaches what is attainable. It is closed
loop: ``E[P_s]`` is predicted from the current curve ``P_1..P_t`` by the
episodic memory (:class:`~medtune.searchers.episodic_memory.EpisodicMemory`, anchored at
``P_t``), and ``P_bar`` is the best level seen or expected.

Two choices make it usable (ours, configurable): ``kappa / c`` is unknown, so it
is set once such that the controller's first decision gives ``base_lr``; that is
the first epoch after ``warmup`` at which the memory holds a comparable curve and
the expected shortfall exceeds ``min_shortfall`` (a flat expectation gives no
scale to measure against). Afterwards ``eta_t = base_lr * S_t / S_ref``,
clamped to ``[min_lr, max_lr]``. Until then the LR is held at ``base_lr``.

A plain PyTorch scheduler::

    ctl = EffortController(EffortConfig(), base_lr=1e-3, min_lr=1e-6, max_lr=1e-2, horizon=60,
                           memory=EpisodicMemory.load("memory.jsonl"), optimizer=opt)
    for epoch in range(60):
        train(); dice = validate()
        ctl.step(dice)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from medtune.searchers.episodic_memory import EpisodicMemory

__all__ = ["EffortConfig", "EffortController"]


@dataclass(frozen=True)
class EffortConfig:
    """The controller's own parameters (the LR bounds and the horizon come from the training setup).

    Attributes:
        warmup: epochs at ``base_lr`` before the first decision (the prefix the memory matches on).
        neighbours: curves recalled per prediction.
        min_shortfall: the expected cumulative shortfall (in Dice-epochs) below which no reference is set.

    Raises:
        ValueError: one line naming the field, its value and the fix.
    """

    warmup: int = 5
    neighbours: int = 3
    min_shortfall: float = 0.01

    def __post_init__(self) -> None:
        if self.min_shortfall <= 0:
            raise ValueError(f"min_shortfall={self.min_shortfall!r} must be > 0")
        if self.warmup < 1:
            raise ValueError(f"warmup={self.warmup!r} must be >= 1 epoch (the memory matches on the prefix)")
        if self.neighbours < 1:
            raise ValueError(f"neighbours={self.neighbours!r} must be >= 1")


class EffortController:
    """Sets the LR to ``base_lr * S_t / S_ref`` from the expected cumulative shortfall ``S_t``.

    Args:
        config: the controller's parameters.
        base_lr: LR during warm-up and at the first decision.
        min_lr, max_lr: the clamp.
        horizon: ``T``, the run's number of epochs.
        memory: past curves; may be replaced between steps (``ctl.memory = ...``) as it grows.
        task: recall only curves of this task key (None: any).
        optimizer: optional; its param groups receive the LR after each :meth:`step`.
    """

    def __init__(
        self,
        config: EffortConfig = EffortConfig(),
        base_lr: float = 1e-3,
        min_lr: float = 1e-6,
        max_lr: float = 1e-2,
        horizon: int = 60,
        memory: EpisodicMemory | None = None,
        task: str | None = None,
        optimizer: Any = None,
    ) -> None:
        if not 0 < min_lr <= base_lr <= max_lr:
            raise ValueError(f"base_lr={base_lr!r} must lie in [min_lr, max_lr] = [{min_lr!r}, {max_lr!r}]")
        if horizon < 1:
            raise ValueError(f"horizon={horizon!r} must be >= 1 epoch")
        self.config = config
        self.base_lr, self.min_lr, self.max_lr, self.horizon = base_lr, min_lr, max_lr, horizon
        self.memory = memory if memory is not None else EpisodicMemory(k=config.neighbours)
        self.task = task
        self.optimizer = optimizer
        self.lr = base_lr
        self.history: list[float] = []
        self.s_ref: float | None = None
        self.last_shortfall: float | None = None
        self._apply()

    @staticmethod
    def shortfall(history: list[float], expected: list[float]) -> float:
        """``S_t = sum_s (P_bar - E[P_s])`` with ``P_bar`` the best level seen or expected."""
        if len(expected) == 0:
            return 0.0
        finite = [v for v in history if math.isfinite(v)]
        p_bar = max(max(expected), max(finite) if finite else 0.0)
        return float(sum(p_bar - e for e in expected))

    def step(self, dice: float) -> float:
        """Observe one epoch's validation Dice; return the LR for the next epoch."""
        c = self.config
        self.history.append(float(dice))
        t = len(self.history)
        if t < c.warmup or t >= self.horizon or not math.isfinite(float(dice)):
            return self.lr
        self.memory.k = c.neighbours
        expected = self.memory.predict(self.history, self.horizon, self.task)
        if expected is None:
            return self.lr  # no comparable past curve: no expectation, hold the LR
        s_t = self.shortfall(self.history, list(expected))
        self.last_shortfall = s_t
        if self.s_ref is None:
            if s_t < c.min_shortfall:
                return self.lr  # nothing expected to gain yet: no scale, hold the LR
            self.s_ref = s_t
        self.lr = min(self.max_lr, max(self.min_lr, self.base_lr * s_t / self.s_ref))
        self._apply()
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "history": list(self.history), "s_ref": self.s_ref,
                "last_shortfall": self.last_shortfall}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.history = [float(v) for v in state["history"]]
        self.s_ref = state["s_ref"]
        self.last_shortfall = state.get("last_shortfall")
        self._apply()

    def _apply(self) -> None:
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
