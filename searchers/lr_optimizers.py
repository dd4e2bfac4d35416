"""The LR methods that come with their own optimizer: build it, and tell whether a given one is it.

``poly`` is nnU-Net's recipe (Nesterov SGD with gradient clipping, :mod:`medtune.searchers.poly_lr`),
``schedulefree`` is Schedule-Free AdamW (:mod:`medtune.searchers.schedule_free`) and ``prodigy`` is Prodigy
(:mod:`medtune.searchers.prodigy`). Running one of them with another optimizer (``schedulefree`` with a
plain Adam, say) would be a different method under the same name, so the trial-side control refuses an
optimizer for which :func:`optimizer_mismatch` has something to say.
"""

from __future__ import annotations

from typing import Any, Iterable

from medtune.searchers.lr_schedules import ScheduleConfig
from medtune.searchers.poly_lr import make_poly_sgd, poly_mismatch
from medtune.searchers.prodigy import is_prodigy, make_prodigy
from medtune.searchers.schedule_free import is_schedule_free, make_schedule_free

# method -> what it trains with, as a person would name it
OWN_OPTIMIZERS: dict[str, str] = {
    "poly": "nnU-Net's SGD (Nesterov momentum, weight decay, gradient-norm clipping)",
    "schedulefree": "Schedule-Free AdamW (schedulefree.AdamWScheduleFree)",
    "prodigy": "Prodigy (prodigyopt.Prodigy)",
}


def build_optimizer(method: str, params: Iterable[Any], config: ScheduleConfig) -> Any:
    """The optimizer ``method`` trains with, over ``params``, from its section of ``config``.

    Raises:
        ValueError: ``method`` is not one of :data:`OWN_OPTIMIZERS`.
    """
    if method == "poly":
        return make_poly_sgd(params, config.poly)
    if method == "schedulefree":
        return make_schedule_free(params, config.schedulefree)
    if method == "prodigy":
        return make_prodigy(params, config.prodigy)
    raise ValueError(f"method={method!r} has no optimizer of its own; those that do: {', '.join(OWN_OPTIMIZERS)}")


def optimizer_mismatch(method: str, optimizer: Any, config: ScheduleConfig) -> str | None:
    """Why ``optimizer`` is not the one ``method`` needs, or None when it is (or the method needs none)."""
    name = f"{type(optimizer).__module__}.{type(optimizer).__name__}"
    if method == "poly":
        return poly_mismatch(optimizer, config.poly)
    if method == "schedulefree" and not is_schedule_free(optimizer):
        return f"it is {name}"
    if method == "prodigy" and not is_prodigy(optimizer):
        return f"it is {name}"
    return None
