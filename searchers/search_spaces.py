"""The search space of every LR method, for the equal-budget tuning protocol (``medtune tune``).

Each method's own hyperparameters, declared as plain data in its record (``space`` of
:mod:`medtune.searchers.lr_methods`; :class:`Param`; read here as :data:`SPACES`), with the helpers the protocol
needs: the bounds of one run (:func:`resolve`, with the spec's overrides), a sample inside them (:func:`sample`),
the values written into a trial's config sections (:func:`apply_values`) and the check that a chosen
configuration sits on the edge of its space (:func:`on_edge`). No Ray here: the cluster layer turns
:class:`Bound` into ``ray.tune`` distributions.

The protocol is the "equal budget" rule of hyperparameter-optimisation benchmarks (for example AlgoPerf's
tuning rules, Dahl et al., arXiv 2306.07179): every method gets the same number of search trials of the same
length over its own space, judged on the validation split, and the chosen configuration is then retrained with
fresh seeds and scored once on the test split.

Scales: a parameter's bounds are absolute, or relative to the run (``scale="lr"``: the study's
``[min_lr, max_lr]``; ``scale="epochs"``: fractions of the search trial's epochs, rounded, at least ``1``
where the setting needs a whole epoch). ``log=True`` samples log-uniformly (bounds > 0). Integer parameters
sample every whole number in ``[low, high]``. A space whose bounds collapse (``low == high``, e.g. an
epoch fraction of a 2-epoch smoke run) is that one value.

``pbt`` has no space: Population Based Training is itself a search over ``lr`` during training (Jaderberg et
al., arXiv 1711.09846), so the protocol runs it once per final seed at its own settings. ``qlearning_warm``
neither: its point is the table it starts from, not its settings.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medtune.errors import InputError, did_you_mean
from medtune.searchers.lr_methods import MethodMap, Param

__all__ = [
    "NOT_SEARCHED", "SEARCHERS", "SPACES", "Bound", "Param", "TuningConfig", "apply_values", "check_overrides",
    "on_edge", "resolve", "sample",
]

SEARCHERS = ("tpe", "random")


@dataclass(frozen=True)
class Bound:
    """A parameter's bounds for one run (scales resolved): sample ``[low, high]``; ``low == high``: fixed."""

    name: str
    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @property
    def fixed(self) -> bool:
        return self.low == self.high


#: method -> its search space: the records' ``space`` (:mod:`medtune.searchers.lr_methods`), read at each use.
SPACES: MethodMap[tuple[Param, ...]] = MethodMap(lambda m: m.space or None)
#: method -> why it has no search space (the records' ``not_searched``).
NOT_SEARCHED: MethodMap[str] = MethodMap(lambda m: m.not_searched or None)


@dataclass(frozen=True)
class TuningConfig:
    """The ``tuning:`` section of a spec: the same search budget for every method.

    Attributes:
        trials: search trials per method (every method the same).
        epochs: epochs of each search trial; None: the spec's training epochs.
        searcher: ``tpe`` (Optuna's Tree-structured Parzen Estimator) or ``random``.
        asha: stop poor search trials early (ASHA, Li et al., arXiv 1810.05934) at rungs of the validation
            metric.
        seed: the searchers' seed.
        search_seed: the training seed of every search trial (one seed: the configurations differ, nothing else).
        final_seeds: the seeds of the retrained best configurations; the search seed may not be one of them.
        spaces: ``{method: {param: {low, high, log}}}``: overrides of :data:`SPACES`, in absolute units.
        max_concurrent: search trials of one method at a time (0: as many as fit).
    """

    trials: int = 8
    epochs: int | None = None
    searcher: str = "tpe"
    asha: bool = True
    seed: int = 0
    search_seed: int = 0
    final_seeds: tuple[int, ...] = (100, 101, 102)
    spaces: dict[str, Any] = field(default_factory=dict)
    max_concurrent: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or self.trials < 1:
            raise InputError(f"tuning.trials={self.trials!r} must be >= 1 search trial per method")
        if self.epochs is not None and (isinstance(self.epochs, bool) or self.epochs < 1):
            raise InputError(f"tuning.epochs={self.epochs!r} must be >= 1, or null for train.epochs")
        if self.searcher not in SEARCHERS:
            hint = did_you_mean(self.searcher, SEARCHERS)
            raise InputError(f"tuning.searcher={self.searcher!r} is not a searcher{hint}; use one of "
                             f"{', '.join(SEARCHERS)}")
        seeds = self.final_seeds
        if not seeds or len(set(seeds)) != len(seeds):
            raise InputError(f"tuning.final_seeds={list(seeds)!r} must be a non-empty list of distinct seeds")
        if self.search_seed in seeds:
            raise InputError(f"tuning.final_seeds={list(seeds)!r} holds the search seed {self.search_seed}; the "
                             "final runs need seeds the search never used: drop it or change tuning.search_seed")
        if self.max_concurrent < 0:
            raise InputError(f"tuning.max_concurrent={self.max_concurrent!r} must be >= 0")
        check_overrides(self.spaces)


def check_overrides(spaces: Mapping[str, Any], methods: tuple[str, ...] | None = None) -> None:
    """Check ``tuning.spaces``: known methods and parameters (the nearest name suggested), ``{low, high, log}``.

    Raises:
        InputError: one line naming the key, the value and the fix.
    """
    if not isinstance(spaces, Mapping):
        raise InputError(f"tuning.spaces={spaces!r} must map methods to {{param: {{low, high, log}}}}")
    for method, params in spaces.items():
        if method in NOT_SEARCHED:
            raise InputError(f"tuning.spaces.{method}: {method} has no search space ({NOT_SEARCHED[method]})")
        if method not in SPACES:
            raise InputError(f"tuning.spaces.{method} is not a method with a search space"
                             f"{did_you_mean(method, tuple(SPACES))}; use one of {', '.join(SPACES)}")
        if methods is not None and method not in methods:
            raise InputError(f"tuning.spaces.{method}: {method!r} is not in the spec's methods "
                             f"({', '.join(methods)}); add it or drop its space")
        if not isinstance(params, Mapping):
            raise InputError(f"tuning.spaces.{method}={params!r} must map parameters to {{low, high, log}}")
        names = tuple(p.name for p in SPACES[method])
        for name, bounds in params.items():
            if name not in names:
                raise InputError(f"tuning.spaces.{method}.{name} is not a hyperparameter of {method}"
                                 f"{did_you_mean(name, names)}; its space has {', '.join(names)}")
            where = f"tuning.spaces.{method}.{name}"
            if not isinstance(bounds, Mapping):
                raise InputError(f"{where}={bounds!r} must be a mapping {{low: ..., high: ..., log: true|false}}")
            for key in bounds:
                if key not in ("low", "high", "log"):
                    raise InputError(f"{where}.{key} is not a bound{did_you_mean(key, ('low', 'high', 'log'))}; "
                                     "use low, high, log")
            for key in ("low", "high"):
                value = bounds.get(key)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                          or not math.isfinite(value)):
                    raise InputError(f"{where}.{key}={value!r} must be a finite number")
            if "log" in bounds and not isinstance(bounds["log"], bool):
                raise InputError(f"{where}.log={bounds['log']!r} must be true or false")


def resolve(method: str, min_lr: float, max_lr: float, epochs: int,
            overrides: Mapping[str, Any] | None = None) -> tuple[Bound, ...]:
    """The bounds of ``method``'s space for a run with LR bounds ``[min_lr, max_lr]`` and ``epochs`` epochs.

    Args:
        overrides: ``{param: {low, high, log}}`` (absolute units), checked by :func:`check_overrides`.

    Returns:
        One :class:`Bound` per parameter, in :data:`SPACES` order; empty for a method without a space.

    Raises:
        InputError: bad overrides, ``low > high``, or a log scale with ``low <= 0``.
    """
    if method not in SPACES:
        return ()
    overrides = dict(overrides or {})
    check_overrides({method: overrides})
    out = []
    for p in SPACES[method]:
        if p.scale == "lr":
            low, high = float(min_lr), float(max_lr)
        elif p.scale == "epochs":
            floor = p.min_value if p.min_value is not None else 0
            low = max(floor, round(p.low * epochs))
            high = max(low, round(p.high * epochs))
        else:
            low, high = p.low, p.high
        o = overrides.get(p.name, {})
        low, high = float(o.get("low", low)), float(o.get("high", high))
        log = bool(o.get("log", p.log))
        where = f"tuning.spaces.{method}.{p.name}"
        if low > high:
            raise InputError(f"{where}: low={low!r} is above high={high!r}; swap them")
        if log and low <= 0:
            raise InputError(f"{where}: a log scale needs low > 0 (got {low!r}); raise low or set log: false")
        if p.integer:
            low, high = float(math.ceil(low)), float(math.floor(high))
            if low > high:
                raise InputError(f"{where}: [{o.get('low')}, {o.get('high')}] holds no whole number")
        out.append(Bound(p.name, p.key, low, high, log, p.integer))
    return tuple(out)


def sample(bounds: tuple[Bound, ...], rng: random.Random) -> dict[str, Any]:
    """One configuration drawn uniformly (log-uniformly where ``log``) inside ``bounds``: ``{key: value}``."""
    out: dict[str, Any] = {}
    for b in bounds:
        if b.fixed:
            value: Any = b.low
        elif b.log:
            value = math.exp(rng.uniform(math.log(b.low), math.log(b.high)))
        else:
            value = rng.uniform(b.low, b.high)
        if b.integer:
            value = int(min(b.high, max(b.low, round(value))))
        else:
            value = float(min(b.high, max(b.low, value)))
        out[b.key] = value
    return out


def apply_values(sections: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested config ``sections`` with every dotted ``key: value`` of ``values`` set in it.

    Raises:
        InputError: a key whose parent is not a mapping in ``sections`` (names the key).
    """
    import copy

    out = copy.deepcopy(dict(sections))
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise InputError(f"tuned key {key!r}: {part!r} is not a section of the trial's config")
            node = child
        node[leaf] = value
    return out


def on_edge(bounds: tuple[Bound, ...], values: Mapping[str, Any], tolerance: float = 0.05) -> list[str]:
    """The parameters whose chosen value lies within ``tolerance`` of a bound, measured in the parameter's own
    scale (log10 for a log scale, whole numbers for integers); fixed parameters are never on an edge.

    Returns:
        One line per such parameter: ``name=value is at the low/high edge [low, high]``.
    """
    lines = []
    for b in bounds:
        if b.fixed or b.key not in values:
            continue
        v = float(values[b.key])
        f = math.log10 if b.log else (lambda x: x)
        low, high, x = f(b.low), f(b.high), f(max(v, b.low) if b.log else v)
        span = high - low
        margin = tolerance * span
        if b.integer:  # a whole-number space: its end values are its edges
            margin = max(margin, 0.0)
        side = "low" if x - low <= margin else ("high" if high - x <= margin else None)
        if side:
            lines.append(f"{b.name}={v:.4g} is at the {side} edge of [{b.low:.4g}, {b.high:.4g}]")
    return lines
