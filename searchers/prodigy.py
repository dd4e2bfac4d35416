"""Prodigy (``prodigy``): Adam whose step size ``d`` is estimated online, with cosine annealing of its LR factor.

Source: Mishchenko and Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML 2024
(arXiv 2306.06101); the optimizer is the authors' PyPI package ``prodigyopt`` (konstmish/prodigy),
``prodigyopt.Prodigy(params, lr=1.0)``. Its README recommends ``lr=1.0`` and a cosine annealing of that factor
over the run, which is what this method does: ``torch.optim.lr_scheduler.CosineAnnealingLR`` with
``T_max = epochs`` on the group's ``lr``, stepped once per epoch
(:class:`medtune.searchers.lr_schedules.EpochSchedule`).

The step Adam takes is ``d * lr``: ``d`` starts at ``d0`` (1e-6) and grows as the optimizer's distance
estimate grows (it never shrinks), so ``lr`` alone says little. :func:`step_size` is what the study reports
as the trial's LR. The package is imported when an optimizer is built, not when this module is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ProdigyConfig", "is_prodigy", "make_prodigy", "step_size"]


@dataclass(frozen=True)
class ProdigyConfig:
    """``Prodigy``'s settings and the cosine's floor (the spec's ``schedules.prodigy`` section).

    Attributes:
        lr: the LR factor multiplying ``d`` (the authors: leave it at 1.0).
        d0: the initial estimate of ``d``.
        d_coef: scales the estimate of ``d`` (the authors' preferred knob; 0.5 to 2 usually work).
        weight_decay: decoupled (AdamW-style) weight decay, >= 0.
        use_bias_correction: Adam's bias correction (the package's default: off).
        safeguard_warmup: leave ``lr`` out of ``d``'s denominator (the authors advise it with a warm-up).
        eta_min: the cosine's last LR factor, in [0, ``lr``).
    """

    lr: float = 1.0
    d0: float = 1e-6
    d_coef: float = 1.0
    weight_decay: float = 0.0
    use_bias_correction: bool = False
    safeguard_warmup: bool = False
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lr", "d0", "d_coef"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}={value!r} must be a positive finite number")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if not 0 <= self.eta_min < self.lr:
            raise ValueError(f"eta_min={self.eta_min!r} must lie in [0, lr={self.lr!r})")


def make_prodigy(params: Iterable[Any], cfg: ProdigyConfig) -> Any:
    """``prodigyopt.Prodigy`` over ``params`` with ``cfg``'s settings."""
    from prodigyopt import Prodigy

    return Prodigy(params, lr=cfg.lr, d0=cfg.d0, d_coef=cfg.d_coef, weight_decay=cfg.weight_decay,
                   decouple=True, use_bias_correction=cfg.use_bias_correction,
                   safeguard_warmup=cfg.safeguard_warmup)


def is_prodigy(optimizer: Any) -> bool:
    """Whether ``optimizer`` is ``prodigyopt.Prodigy`` (imports nothing)."""
    import sys

    module = sys.modules.get("prodigyopt")
    return module is not None and isinstance(optimizer, module.Prodigy)


def step_size(optimizer: Any) -> float:
    """The effective LR ``d * lr`` of a Prodigy optimizer's first param group."""
    group = optimizer.param_groups[0]
    return float(group["d"]) * float(group["lr"])
