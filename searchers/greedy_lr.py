"""GreedyLR: grow the LR while the loss keeps improving, shrink it while it keeps worsening.

After arXiv 2512.14527 ("Dynamic Learning Rate Scheduling based on Loss Changes
Leads to Faster Convergence"): after
``patience`` consecutive improving epochs the LR grows by ``1/F``, after
``patience`` consecutive worsening epochs it shrinks by ``F`` (``0 < F < 1``),
always clamped to ``[min_lr, max_lr]``; no change during the first ``warmup``
epochs, and none for ``cooldown`` epochs after a change.

What counts as improving / worsening (our reading, configurable): the watched
loss (the validation loss in medtune) moves by more than ``threshold`` relative
to the previous epoch; a move within the threshold resets neither counter.
Each counter resets when the opposite event happens and after a change.

A plain PyTorch scheduler::

    sched = GreedyLR(optimizer, GreedyConfig(), min_lr=1e-6, max_lr=1e-2)
    for epoch in range(epochs):
        train(); val_loss = validate()
        sched.step(val_loss)

Edge cases: a NaN or infinite loss counts as worsening (the run is diverging).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["GreedyConfig", "GreedyLR"]


@dataclass(frozen=True)
class GreedyConfig:
    """GreedyLR's parameters (arXiv 2512.14527; see the module docstring).

    Attributes:
        factor: ``F`` in (0, 1): a change multiplies the LR by ``F`` (worsening) or by ``1/F`` (improving), always
            clamped to ``[min_lr, max_lr]``.
        patience: consecutive improving (or worsening) epochs, >= 1, that trigger a change.
        warmup: the first epochs (>= 0) in which the LR is never changed; the counters still count; 0: none.
        cooldown: epochs (>= 0) after a change in which no further change is made; 0: none.
        threshold: the relative change of the watched loss, ``(previous - loss) / |previous|``, that counts as an
            improvement (above it) or a worsening (below minus it), >= 0; a smaller move changes neither counter.
            0 counts every move; a NaN or infinite loss always counts as worsening.

    Raises:
        ValueError: one line naming the field, its value and the fix.
    """

    factor: float = 0.8
    patience: int = 2
    warmup: int = 3
    cooldown: int = 2
    threshold: float = 1e-3

    def __post_init__(self) -> None:
        if not 0 < self.factor < 1:
            raise ValueError(f"factor={self.factor!r} must lie in (0, 1): the LR shrinks by F and grows by 1/F")
        if self.patience < 1:
            raise ValueError(f"patience={self.patience!r} must be >= 1 epoch")
        for name in ("warmup", "cooldown"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0 epochs")
        if self.threshold < 0:
            raise ValueError(f"threshold={self.threshold!r} must be >= 0")


class GreedyLR:
    """GreedyLR driving ``optimizer``'s LR (every param group), stepped once per epoch.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (duck-typed: needs ``param_groups``).
        config: the parameters; the optimizer's current LR is the starting LR (clamped).
        min_lr, max_lr: the clamp (the training setup's LR bounds).

    Attributes:
        good, bad: consecutive improving / worsening epochs counted so far.
        epoch: epochs seen; ``cooldown_left``: epochs left before a change is allowed.
    """

    def __init__(
        self, optimizer: Any, config: GreedyConfig = GreedyConfig(), min_lr: float = 1e-6, max_lr: float = 1e-2
    ) -> None:
        if not 0 < min_lr < max_lr:
            raise ValueError(f"min_lr={min_lr!r} must be positive and below max_lr={max_lr!r}")
        self.optimizer = optimizer
        self.config = config
        self.min_lr, self.max_lr = min_lr, max_lr
        self.lr = min(max(float(optimizer.param_groups[0]["lr"]), min_lr), max_lr)
        self.previous: float | None = None
        self.good = 0
        self.bad = 0
        self.epoch = 0
        self.cooldown_left = 0
        self._apply()

    def step(self, loss: float) -> float:
        """Observe one epoch's loss; return the LR for the next epoch."""
        c = self.config
        self.epoch += 1
        loss = float(loss)
        previous, self.previous = self.previous, loss
        if not math.isfinite(loss):
            self.good, self.bad = 0, self.bad + 1
        elif previous is not None and math.isfinite(previous):
            change = (previous - loss) / max(abs(previous), 1e-12)  # > 0: the loss went down
            if change > c.threshold:
                self.good, self.bad = self.good + 1, 0
            elif change < -c.threshold:
                self.good, self.bad = 0, self.bad + 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            return self.lr
        if self.epoch <= c.warmup:
            return self.lr
        new = self.lr
        if self.good >= c.patience:
            new = min(self.max_lr, self.lr / c.factor)
        elif self.bad >= c.patience:
            new = max(self.min_lr, self.lr * c.factor)
        if new != self.lr:
            self.lr = new
            self.good = self.bad = 0
            self.cooldown_left = c.cooldown
            self._apply()
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in ("optimizer", "config", "min_lr", "max_lr")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._apply()

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
