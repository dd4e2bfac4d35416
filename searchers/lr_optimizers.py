"""The LR methods that come with their own optimizer: build it, and tell whether a given one is it.

``poly`` is nnU-Net's recipe (Nesterov SGD with gradient clipping, :mod:`medtune.searchers.poly_lr`),
``schedulefree`` is Schedule-Free AdamW (:mod:`medtune.searchers.schedule_free`) and ``prodigy`` is Prodigy
(:mod:`medtune.searchers.prodigy`): the records of :mod:`medtune.searchers.lr_methods` with an ``optimizer``.
Running one of them with another optimizer (``schedulefree`` with a plain Adam, say) would be a different method
under the same name, so the trial-side control refuses an optimizer for which :func:`optimizer_mismatch` has
something to say.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from medtune.searchers.lr_methods import METHODS, MethodMap
from medtune.searchers.lr_schedules import ScheduleConfig

__all__ = ["OWN_OPTIMIZERS", "build_optimizer", "optimizer_mismatch"]

#: method -> what it trains with, as a person would name it (the records' ``optimizer.what``)
OWN_OPTIMIZERS: MethodMap[str] = MethodMap(lambda m: m.optimizer.what if m.optimizer is not None else None)


def build_optimizer(method: str, params: Iterable[Any], config: ScheduleConfig) -> Any:
    """The optimizer ``method`` trains with, over ``params``, from its section of ``config``.

    Raises:
        ValueError: ``method`` is not one of :data:`OWN_OPTIMIZERS`.
    """
    record = METHODS.get(method)
    if record is None or record.optimizer is None:
        raise ValueError(f"method={method!r} has no optimizer of its own; those that do: "
                         f"{', '.join(OWN_OPTIMIZERS)}")
    return record.optimizer.build(params, record.settings(config))


def optimizer_mismatch(method: str, optimizer: Any, config: ScheduleConfig) -> str | None:
    """Why ``optimizer`` is not the one ``method`` needs, or None when it is (or the method needs none)."""
    record = METHODS.get(method)
    if record is None or record.optimizer is None:
        return None
    return record.optimizer.mismatch(optimizer, record.settings(config))
