"""nnU-Net's default training recipe as one LR method (``poly``): Nesterov SGD, poly decay, gradient clipping.

Source: Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 18 (2021), and its public code (MIC-DKFZ/nnUNet): ``nnUNetTrainer``'s
``configure_optimizers`` builds ``torch.optim.SGD(lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)``
and a ``PolyLRScheduler`` (``lr_scheduler/polylr.py``) stepped once per epoch,

    lr(e) = lr0 * (1 - e / epochs) ** 0.9        for epoch e = 0, 1, ..., epochs - 1,

and its training step clips the gradients' global L2 norm at 12 before ``optimizer.step()``. The code here is
ours, written from those facts.

Edge cases: epoch 0 trains at ``lr0``; the last epoch (``e = epochs - 1``) at ``lr0 * (1 / epochs) ** 0.9``,
which is above 0; from ``e = epochs`` on the factor is 0 (never negative: ``1 - e / epochs`` is floored at 0).
The clipping lives in the optimizer (:class:`ClippedSGD`), so the recipe is whole in a user's own loop too, and
it sees unscaled gradients under ``torch.amp.GradScaler`` (``scaler.step`` unscales before calling ``step``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ClippedSGD", "PolyConfig", "make_poly_sgd", "poly_factor", "poly_mismatch"]


@dataclass(frozen=True)
class PolyConfig:
    """The recipe's numbers (the spec's ``schedules.poly`` section); the defaults are nnU-Net's.

    Attributes:
        base_lr: ``lr0``, the LR of epoch 0.
        momentum: Nesterov momentum of SGD, in (0, 1).
        weight_decay: SGD's L2 weight decay, >= 0.
        exponent: the poly exponent, > 0.
        grad_clip: the global L2 norm the gradients are clipped to before each step; 0 or None: no clipping.
    """

    base_lr: float = 1e-2
    momentum: float = 0.99
    weight_decay: float = 3e-5
    exponent: float = 0.9
    grad_clip: float | None = 12.0

    def __post_init__(self) -> None:
        if not (self.base_lr > 0 and math.isfinite(self.base_lr)):
            raise ValueError(f"base_lr={self.base_lr!r} must be a positive finite number (nnU-Net: 0.01)")
        if not 0 < self.momentum < 1:
            raise ValueError(f"momentum={self.momentum!r} must lie in (0, 1): Nesterov needs momentum (nnU-Net: 0.99)")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0 (nnU-Net: 3e-5)")
        if not (self.exponent > 0 and math.isfinite(self.exponent)):
            raise ValueError(f"exponent={self.exponent!r} must be > 0 (nnU-Net: 0.9)")
        if self.grad_clip is not None and not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"grad_clip={self.grad_clip!r} must be a positive number, or 0/null for no clipping "
                             "(nnU-Net: 12)")


def poly_factor(epoch: int, epochs: int, exponent: float = 0.9) -> float:
    """``(1 - epoch / epochs) ** exponent``, the LR of 0-based ``epoch`` as a fraction of ``lr0`` (0 from
    ``epoch >= epochs`` on)."""
    return max(0.0, 1.0 - epoch / max(1, epochs)) ** exponent


class ClippedSGD(torch.optim.SGD):
    """``torch.optim.SGD`` that clips the global L2 norm of its parameters' gradients to ``max_norm`` before
    each update (``torch.nn.utils.clip_grad_norm_`` over every parameter of every group, as nnU-Net clips the
    whole network's gradients).

    Args:
        params: the parameters (or param groups), as for ``SGD``.
        max_norm: the norm to clip to; 0 or None: plain SGD.
        **sgd: ``lr``, ``momentum``, ``nesterov``, ``weight_decay`` ... passed to ``SGD``.
    """

    def __init__(self, params: Iterable[Any], max_norm: float | None = None, **sgd: Any) -> None:
        super().__init__(params, **sgd)
        self.max_norm = max_norm

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.max_norm:
            grads = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(grads, self.max_norm)
        super().step()
        return loss


def make_poly_sgd(params: Iterable[Any], cfg: PolyConfig) -> ClippedSGD:
    """The recipe's optimizer over ``params``: Nesterov SGD at ``cfg.base_lr`` with its clipping."""
    return ClippedSGD(params, max_norm=cfg.grad_clip, lr=cfg.base_lr, momentum=cfg.momentum, nesterov=True,
                      weight_decay=cfg.weight_decay)


def poly_mismatch(optimizer: Any, cfg: PolyConfig) -> str | None:
    """What keeps ``optimizer`` from being the recipe's, or None when it is (used to refuse a plain Adam)."""
    if not isinstance(optimizer, torch.optim.SGD):
        return f"it is {type(optimizer).__module__}.{type(optimizer).__name__}, not SGD"
    group = optimizer.param_groups[0]
    want = {"momentum": cfg.momentum, "nesterov": True, "weight_decay": cfg.weight_decay}
    wrong = [f"{k}={group.get(k)!r} (the recipe: {v!r})" for k, v in want.items() if group.get(k) != v]
    if cfg.grad_clip and getattr(optimizer, "max_norm", None) != cfg.grad_clip:
        wrong.append(f"gradient clipping {getattr(optimizer, 'max_norm', None)!r} (the recipe: {cfg.grad_clip!r})")
    return ", ".join(wrong) or None
