"""Every learning-rate method as one record: what it is, how it steps, what it builds, how it is searched.

Each method medtune compares is one frozen :class:`LRMethod` in :data:`METHODS` (name -> record, in the order
they were registered). Every other table of LR methods is read off these records, at each use:

* the spec and argument checks (:func:`check_method`: unknown names, wrong case, the nearest name);
* :mod:`medtune.searchers.lr_schedules`: the schedules ``EpochSchedule`` runs (records with a ``schedule``),
  those stepped per batch, and the sections of ``ScheduleConfig`` (the records' ``section`` / ``config``);
* :mod:`medtune.searchers.lr_optimizers`: the methods that bring their own optimizer (``optimizer``);
* :mod:`medtune.searchers.search_spaces`: each method's search space, or why it has none;
* :mod:`medtune.trainables.lr_control`: the policy ``LRControl`` builds (``schedule`` or ``make_policy``), the
  methods that need the run's length and those whose LR the Q-learning scheduler sets;
* :mod:`medtune.dashboards.comparison`: the report's classic and learned groups, the methods whose LR is constant
  by design, the order-dependent ones and what to set when a method never acted.

The module-level names those modules keep (``SCHEDULES``, ``SPACES``, ``CLASSIC``, ...) are live views
(:class:`MethodNames`, :class:`MethodMap`) of :data:`METHODS`, so a method registered later is in every one of them.

Adding a method (see the docs' "How to add an LR method"): write its core (a torch scheduler builder with the
signature of :mod:`medtune.searchers.lr_schedule_cores`, or a policy class with ``step``, ``state_dict`` and
``load_state_dict``), give it a record below, and :func:`register` it. :func:`registered` registers records for
the length of a ``with`` block (a test's throw-away method)::

    halving = LRMethod("halving", kind="classic", stepping="epoch", description="halves the LR every epoch",
                       source="a test", not_searched="a test method",
                       schedule=lambda opt, settings, epochs, steps: LambdaLR(opt, lambda e: 0.5 ** e))
    with registered(halving):
        LRControl(optimizer, {"method": "halving"})

``ScheduleConfig``'s sections are made from the records registered when :mod:`medtune.searchers.lr_schedules`
is first imported (the built-in ones here); a record registered later with a ``section`` runs at its config's
defaults (:meth:`LRMethod.settings`).

No Ray, no MLflow here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from medtune.errors import InputError, did_you_mean
from medtune.searchers.effort_controller import EffortConfig, EffortController
from medtune.searchers.greedy_lr import GreedyConfig, GreedyLR
from medtune.searchers.lr_schedule_cores import (
    CosineConfig,
    ExponentialConfig,
    OneCycleConfig,
    PlateauConfig,
    StepConfig,
    WarmupCosineConfig,
    cosine_schedule,
    exponential_schedule,
    no_schedule,
    onecycle_schedule,
    plateau_schedule,
    poly_schedule,
    prodigy_schedule,
    step_schedule,
    warmup_cosine_schedule,
)
from medtune.searchers.poly_lr import PolyConfig, make_poly_sgd, poly_mismatch
from medtune.searchers.prodigy import ProdigyConfig, is_prodigy, make_prodigy
from medtune.searchers.qlearning_agent import METHOD, WARM_METHOD, QLearningConfig, QLearningLRAgent
from medtune.searchers.schedule_free import ScheduleFreeConfig, is_schedule_free, make_schedule_free

__all__ = [
    "DEFAULT_SELECTION", "KINDS", "METHODS", "STEPPINGS", "WATCHES", "LRMethod", "MethodMap", "MethodNames",
    "OwnOptimizer", "Param", "PolicyContext", "ScheduleBuilder", "check_method", "markdown_table", "register",
    "registered", "unregister",
]

KINDS = ("classic", "learned")
STEPPINGS = ("epoch", "batch", "scheduler")  # scheduler: the Q-learning scheduler sets the LR from the driver
WATCHES = ("metric", "loss")
_NAME = re.compile(r"[a-z][a-z0-9_]*")

#: ``(optimizer, settings, epochs, steps_per_epoch) -> torch LR scheduler | None`` (lr_schedule_cores).
ScheduleBuilder = Callable[[Any, Any, int, int | None], Any]


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a method's search space (:mod:`medtune.searchers.search_spaces`).

    Attributes:
        name: what the user calls it in ``tuning.spaces.<method>.<name>``.
        key: the dotted config key it sets in a trial (``train.base_lr``, ``schedules.step.gamma``,
            ``qlearning.alpha``, ``lr_control.schedules.cosine.eta_min``, ...).
        low, high: the bounds, in the units of ``scale``.
        log: sample log-uniformly.
        integer: a whole number.
        scale: None (absolute), ``"lr"`` (low/high are replaced by the run's LR bounds) or ``"epochs"``
            (fractions of the trial's epochs).
        min_value: the smallest value the setting accepts after scaling (e.g. 1 epoch).
    """

    name: str
    key: str
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    integer: bool = False
    scale: str | None = None
    min_value: float | None = None


@dataclass(frozen=True)
class OwnOptimizer:
    """The optimizer a method trains with, when it brings its own.

    Attributes:
        what: the optimizer as a person would name it (error messages, the docs' table).
        build: ``(params, settings) -> optimizer``, ``settings`` the method's section of ``schedules``.
        mismatch: ``(optimizer, settings) -> why it is not this method's optimizer``, None when it is.
    """

    what: str
    build: Callable[[Iterable[Any], Any], Any]
    mismatch: Callable[[Any, Any], str | None]


@dataclass(frozen=True)
class PolicyContext:
    """What a record's ``make_policy`` gets from ``LRControl``: the optimizer, the method's settings, the run.

    Attributes:
        optimizer: the trial's optimizer (its LR is already ``start_lr``).
        settings: the method's section of ``schedules`` (:meth:`LRMethod.settings`); None without one.
        start_lr, min_lr, max_lr: the starting LR and the clamp of every adaptive method.
        epochs: the run's length (set whenever the record ``needs_epochs``); steps_per_epoch: batches per epoch.
        metric, mode: the watched metric's key and direction (``max`` or ``min``).
        task: the task key of the study (the effort controller's memory).
        qlearning: ``QLearningConfig`` fields but the LR bounds (the private Q-learning agent's settings).
    """

    optimizer: Any
    settings: Any
    start_lr: float
    min_lr: float
    max_lr: float
    epochs: int | None = None
    steps_per_epoch: int | None = None
    metric: str = "dice"
    mode: str = "max"
    task: str | None = None
    qlearning: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LRMethod:
    """One LR method.

    Attributes:
        name: the method's name in specs and configs (lower case, ``[a-z][a-z0-9_]*``).
        kind: ``classic`` (a schedule or LR-free optimizer, decided from the trial's own curve by a fixed rule) or
            ``learned`` (an adaptive controller each study judges against the strongest other method).
        stepping: when its LR moves: ``epoch`` (after each epoch), ``batch`` (after every optimizer step:
            ``LRControl.batch_step``) or ``scheduler`` (the Q-learning scheduler decides in the driver).
        description: one line: what it does.
        source: the paper or library it follows.
        needs_epochs: it plans over the run's length (``lr_control.epochs`` must be set).
        section, config: its section of ``schedules`` and that section's typed (frozen) dataclass; both None
            when it has no settings there.
        schedule: the torch scheduler it runs in ``EpochSchedule`` (:data:`ScheduleBuilder`), or None.
        make_policy: ``PolicyContext -> policy`` for a method decided in the trial by another core (GreedyLR,
            the effort controller, the private Q-learning agent); None when ``schedule`` is set or nothing in the
            trial decides (``pbt``).
        epoch_end: ``(policy, value, loss, mode) -> None``: how ``LRControl`` feeds a ``make_policy`` policy at
            each epoch's end (``value`` the watched metric, ``loss`` the loss metric, NaN when not reported,
            ``mode`` ``max`` or ``min``); None: ``policy.step(value)``.
        optimizer: the optimizer it trains with, when it brings its own (:class:`OwnOptimizer`).
        space: its search space for the tuning protocol; empty when ``not_searched`` says why it has none.
        not_searched: why it has no search space ("" when it has one).
        order_dependent: why its numbers depend on the order in which trials report ("" when they do not: a
            rerun with the same seeds repeats its curves exactly).
        constant_lr: its LR is constant by design, so a run that never changed the LR still acted.
        strong: a strong baseline (a schedule or optimizer a researcher would pick today), beyond paper 000's
            baselines (classic methods only).
        watches: what its decisions read of the epoch's metrics: ``metric`` and / or ``loss``.
        inactive_hint: what to set when a run of it never changed the LR.
        default_selection: in the methods ``medtune.compare`` and an own-training spec run when none are named
            (one of each family: :data:`DEFAULT_SELECTION`).
    """

    name: str
    kind: str
    stepping: str
    description: str
    source: str
    needs_epochs: bool = False
    section: str | None = None
    config: type | None = None
    schedule: ScheduleBuilder | None = None
    make_policy: Callable[[PolicyContext], Any] | None = None
    epoch_end: Callable[[Any, float, float, str], None] | None = None
    optimizer: OwnOptimizer | None = None
    space: tuple[Param, ...] = ()
    not_searched: str = ""
    order_dependent: str = ""
    constant_lr: bool = False
    strong: bool = False
    watches: tuple[str, ...] = ()
    inactive_hint: str = ""
    default_selection: bool = False

    def __post_init__(self) -> None:
        where = f"LRMethod {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"LRMethod name={self.name!r} must be lower case: a letter, then letters, digits, _")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind={self.kind!r} must be one of {', '.join(KINDS)}")
        if self.stepping not in STEPPINGS:
            raise ValueError(f"{where}: stepping={self.stepping!r} must be one of {', '.join(STEPPINGS)}")
        if not self.description.strip() or not self.source.strip():
            raise ValueError(f"{where}: give a one-line description and its source (paper or library)")
        if (self.section is None) != (self.config is None):
            raise ValueError(f"{where}: section={self.section!r} and config={self.config!r} go together")
        if self.schedule is not None and self.make_policy is not None:
            raise ValueError(f"{where}: a schedule or a policy factory, not both")
        if self.epoch_end is not None and self.make_policy is None:
            raise ValueError(f"{where}: epoch_end feeds the policy make_policy builds; give make_policy too")
        if self.stepping == "batch" and self.schedule is None:
            raise ValueError(f"{where}: stepping='batch' needs a schedule (EpochSchedule steps it per batch)")
        if bool(self.space) == bool(self.not_searched):
            raise ValueError(f"{where}: give a search space or, in not_searched, why it has none (not both)")
        bad = [w for w in self.watches if w not in WATCHES]
        if bad:
            raise ValueError(f"{where}: watches={self.watches!r}: {bad[0]!r} is not one of {', '.join(WATCHES)}")

    @property
    def searched(self) -> bool:
        """Whether the tuning protocol searches it (it has a space)."""
        return bool(self.space)

    @property
    def moves_lr(self) -> bool:
        """Whether a run of it is meant to change the LR (so a run that never did is *inactive*)."""
        return not self.constant_lr

    def settings(self, schedules: Any) -> Any:
        """Its section of ``schedules`` (a ``ScheduleConfig``); its config's defaults where ``schedules`` has no
        such section (a method registered after ``ScheduleConfig`` was made); None without a section."""
        if self.section is None or self.config is None:
            return None
        value = getattr(schedules, self.section, None)
        return value if value is not None else self.config()


#: Every LR method, name -> record, in registration order (the built-ins are registered at the end of this module).
METHODS: dict[str, LRMethod] = {}
_BUILTIN: set[str] = set()


def register(method: LRMethod) -> LRMethod:
    """Add ``method`` to :data:`METHODS` (last in order); returns it.

    Raises:
        ValueError: a method of that name, or another method with the same ``section``, is registered.
    """
    if not isinstance(method, LRMethod):
        raise TypeError(f"register() takes an LRMethod, not {type(method).__name__}")
    if method.name in METHODS:
        raise ValueError(f"an LR method named {method.name!r} is already registered")
    clash = [m.name for m in METHODS.values() if method.section is not None and m.section == method.section]
    if clash:
        raise ValueError(f"LRMethod {method.name!r}: section {method.section!r} is {clash[0]!r}'s")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> LRMethod:
    """Remove the method ``name`` that :func:`register` added; returns its record. Built-ins stay.

    Raises:
        ValueError: ``name`` is a built-in method; KeyError: it is not registered.
    """
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in LR method; only methods added by register() can be removed")
    return METHODS.pop(name)


@contextmanager
def registered(*methods: LRMethod) -> Iterator[None]:
    """Register ``methods`` for the length of a ``with`` block and remove them after, also on an error.

    A record already registered (the same object: a nested block) is left as it is and not removed.
    """
    added: list[str] = []
    try:
        for method in methods:
            if METHODS.get(method.name) is method:
                continue
            register(method)
            added.append(method.name)
        yield
    finally:
        for name in reversed(added):
            METHODS.pop(name, None)


def check_method(method: object) -> str:
    """``method`` if it is an LR method, else one :class:`InputError` line with the nearest name.

    Case matters (``Cosine`` is not ``cosine``), and the message says so.
    """
    names = tuple(METHODS)
    if not isinstance(method, str):
        raise InputError(f"method={method!r} must be a string, one of {', '.join(names)}")
    if method not in METHODS:
        hint = (f" (did you mean {method.lower()!r}? method names are lower case)" if method.lower() in METHODS
                else did_you_mean(method, names))
        raise InputError(f"method={method!r} is not an LR method{hint}; use one of {', '.join(names)}")
    return method


class MethodNames(Sequence[str]):
    """The names of the registered methods that ``keep`` accepts, in registration order, read from
    :data:`METHODS` at every use: a read-only sequence that a later :func:`register` extends."""

    def __init__(self, keep: Callable[[LRMethod], bool]) -> None:
        self._keep = keep

    def _names(self) -> tuple[str, ...]:
        return tuple(name for name, method in METHODS.items() if self._keep(method))

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __repr__(self) -> str:
        return repr(self._names())

    def __eq__(self, other: object) -> bool:
        """Equal to a sequence of the same names in the same order (``SCHEDULES == ("fixed", ...)``)."""
        if isinstance(other, Sequence) and not isinstance(other, str):
            return self._names() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a live view: its names change when a method is registered


V = TypeVar("V")


class MethodMap(Mapping[str, V], Generic[V]):
    """``{name: value(record)}`` over the registered methods for which ``value`` is not None, in registration order,
    read from :data:`METHODS` at every use."""

    def __init__(self, value: Callable[[LRMethod], V | None]) -> None:
        self._value = value

    def _items(self) -> dict[str, V]:
        out: dict[str, V] = {}
        for name, method in METHODS.items():
            v = self._value(method)
            if v is not None:
                out[name] = v
        return out

    def __getitem__(self, name: str) -> V:
        return self._items()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


#: The methods ``medtune.compare`` runs when none are named (records with ``default_selection``).
DEFAULT_SELECTION = MethodNames(lambda m: m.default_selection)


def markdown_table() -> str:
    """A Markdown table of every registered method: name, kind, stepping, own optimizer, searched (or why not),
    description, source; one row per method in registration order."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| method | kind | stepping | own optimizer | searched | description | source |",
            "|---|---|---|---|---|---|---|"]
    for m in METHODS.values():
        searched = "yes: " + ", ".join(p.name for p in m.space) if m.space else f"no: {m.not_searched}"
        own = m.optimizer.what if m.optimizer is not None else "—"
        rows.append("| " + " | ".join(cell(c) for c in (f"`{m.name}`", m.kind, m.stepping, own, searched,
                                                         m.description, m.source)) + " |")
    return "\n".join(rows) + "\n"


# -- the cores the records name -----------------------------------------------------------------------------------

def _greedy_policy(ctx: PolicyContext) -> GreedyLR:
    return GreedyLR(ctx.optimizer, ctx.settings, ctx.min_lr, ctx.max_lr)


def _effort_policy(ctx: PolicyContext) -> EffortController:
    if ctx.mode != "max":
        raise InputError(f"method 'effort' maximises a metric in [0, 1]; {ctx.metric!r} has mode='min'. "
                         "Report a higher-is-better metric, or leave effort out")
    return EffortController(ctx.settings, base_lr=ctx.start_lr, min_lr=ctx.min_lr, max_lr=ctx.max_lr,
                            horizon=ctx.epochs if ctx.epochs is not None else 1, task=ctx.task,
                            optimizer=ctx.optimizer)


def _qlearning_policy(ctx: PolicyContext) -> QLearningLRAgent:
    """The private agent that decides in the loop when no Q-learning scheduler does (its table seeded with 0)."""
    try:
        cfg = QLearningConfig(base_lr=ctx.start_lr, min_lr=ctx.min_lr, max_lr=ctx.max_lr, **dict(ctx.qlearning or {}))
    except ValueError as exc:
        raise InputError(f"lr_control.qlearning.{exc}") from None
    return QLearningLRAgent(cfg, optimizer=ctx.optimizer, seed=0)


def _greedy_epoch_end(policy: GreedyLR, value: float, loss: float, mode: str) -> None:
    policy.step(loss)  # GreedyLR watches the loss only


def _qlearning_epoch_end(policy: QLearningLRAgent, value: float, loss: float, mode: str) -> None:
    policy.step(dice=value if mode == "max" else -value, val_loss=loss)  # the agent's reward rises with ``dice``


def _optimizer_name(optimizer: Any) -> str:
    return f"it is {type(optimizer).__module__}.{type(optimizer).__name__}"


_POLY_SGD = OwnOptimizer("nnU-Net's SGD (Nesterov momentum, weight decay, gradient-norm clipping)", make_poly_sgd,
                        poly_mismatch)
_SCHEDULE_FREE_ADAMW = OwnOptimizer(
    "Schedule-Free AdamW (schedulefree.AdamWScheduleFree)", make_schedule_free,
    lambda optimizer, settings: None if is_schedule_free(optimizer) else _optimizer_name(optimizer))
_PRODIGY = OwnOptimizer("Prodigy (prodigyopt.Prodigy)", make_prodigy,
                       lambda optimizer, settings: None if is_prodigy(optimizer) else _optimizer_name(optimizer))


def _lr(name: str, key: str) -> Param:
    return Param(name, key, log=True, scale="lr")


_BASE_LR = _lr("base_lr", "train.base_lr")
_QTABLE = "one Q-table pooled over the study's {} trials, updated in the order their epochs arrive"
_QLEARNING_HINT = "set qlearning.patience and qlearning.cooldown below the epochs (e.g. 1 for a short run)"

# -- the built-in methods, in the order specs, tables and reports list them -------------------------------------------

_BUILTINS = (
    LRMethod("fixed", "classic", "epoch", "one LR for the whole run", "paper 000, section 5.1",
             schedule=no_schedule, space=(_BASE_LR,), constant_lr=True, default_selection=True),
    LRMethod("step", "classic", "epoch", "the LR times gamma every step_size epochs",
             "paper 000, section 5.1 (torch StepLR)", section="step", config=StepConfig, schedule=step_schedule,
             space=(_BASE_LR,
                    Param("step_size", "schedules.step.step_size", 0.1, 0.6, integer=True, scale="epochs",
                          min_value=1),
                    Param("gamma", "schedules.step.gamma", 0.1, 0.9)),
             inactive_hint="set schedules.step.step_size below the epochs"),
    LRMethod("exponential", "classic", "epoch", "the LR times gamma every epoch",
             "paper 000, section 5.1 (torch ExponentialLR)", section="exponential", config=ExponentialConfig,
             schedule=exponential_schedule,
             space=(_BASE_LR, Param("gamma", "schedules.exponential.gamma", 0.8, 0.999))),
    LRMethod("cosine", "classic", "epoch", "cosine annealing over the run to eta_min",
             "paper 000, section 5.1 (torch CosineAnnealingLR)", needs_epochs=True, section="cosine",
             config=CosineConfig, schedule=cosine_schedule, default_selection=True,
             space=(_BASE_LR, Param("eta_min", "schedules.cosine.eta_min", 1e-7, 1e-4, log=True))),
    LRMethod("plateau", "classic", "epoch", "the LR times factor when the validation loss stops improving",
             "torch ReduceLROnPlateau", section="plateau", config=PlateauConfig, schedule=plateau_schedule,
             space=(_BASE_LR, Param("factor", "schedules.plateau.factor", 0.1, 0.9),
                    Param("patience", "schedules.plateau.patience", 1, 10, integer=True)),
             watches=("loss",), inactive_hint="lower schedules.plateau.patience"),
    LRMethod("warmup_cosine", "classic", "epoch", "linear warm-up, then a cosine to end_lr",
             "MONAI WarmupCosineSchedule", needs_epochs=True, section="warmup_cosine", config=WarmupCosineConfig,
             schedule=warmup_cosine_schedule, strong=True,
             space=(_BASE_LR, Param("warmup_epochs", "schedules.warmup_cosine.warmup_epochs", 0.0, 0.3, integer=True,
                                    scale="epochs", min_value=0)),
             inactive_hint="check schedules.warmup_cosine (warmup_epochs, end_lr)"),
    LRMethod("onecycle", "classic", "batch", "one cycle up to peak_lr and down, stepped after every batch",
             "Smith and Topin, arXiv 1708.07120 (torch OneCycleLR)", needs_epochs=True, section="onecycle",
             config=OneCycleConfig, schedule=onecycle_schedule, strong=True,
             space=(_lr("peak_lr", "schedules.onecycle.peak_lr"),
                    Param("pct_start", "schedules.onecycle.pct_start", 0.1, 0.5))),
    LRMethod("poly", "classic", "epoch", "nnU-Net's recipe: poly decay of Nesterov SGD with gradient clipping",
             "Isensee et al., Nature Methods 18 (2021)", needs_epochs=True, section="poly", config=PolyConfig,
             schedule=poly_schedule, optimizer=_POLY_SGD, strong=True,
             space=(Param("base_lr", "schedules.poly.base_lr", 1e-3, 1e-1, log=True),)),
    LRMethod("schedulefree", "classic", "epoch", "Schedule-Free AdamW at a constant LR (no schedule)",
             "Defazio et al., arXiv 2405.15682 (schedulefree)", section="schedulefree", config=ScheduleFreeConfig,
             schedule=no_schedule, optimizer=_SCHEDULE_FREE_ADAMW, constant_lr=True, strong=True,
             space=(Param("lr", "schedules.schedulefree.lr", 1e-4, 1e-2, log=True),)),
    LRMethod("prodigy", "classic", "epoch", "Prodigy's estimated step size, its LR factor cosine-annealed",
             "Mishchenko and Defazio, arXiv 2306.06101 (prodigyopt)", needs_epochs=True, section="prodigy",
             config=ProdigyConfig, schedule=prodigy_schedule, optimizer=_PRODIGY, strong=True,
             space=(Param("d_coef", "schedules.prodigy.d_coef", 0.1, 10.0, log=True),)),
    LRMethod(METHOD, "learned", "scheduler", "tabular Q-learning over the trend of Dice and loss (x0.5, x1, x1.2)",
             "paper 000 (Q-learning LR agent)", make_policy=_qlearning_policy, epoch_end=_qlearning_epoch_end,
             space=(_BASE_LR,
                    Param("alpha", "qlearning.alpha", 0.01, 0.5, log=True),
                    Param("epsilon", "qlearning.epsilon", 0.01, 0.5),
                    Param("patience", "qlearning.patience", 1, 6, integer=True),
                    Param("cooldown", "qlearning.cooldown", 0, 8, integer=True),
                    Param("dice_weight", "qlearning.dice_weight", 1.0, 20.0, log=True),
                    Param("loss_weight", "qlearning.loss_weight", 1.0, 20.0, log=True)),
             order_dependent=_QTABLE.format("qlearning"), watches=("metric", "loss"), inactive_hint=_QLEARNING_HINT,
             default_selection=True),
    LRMethod(WARM_METHOD, "learned", "scheduler", "qlearning starting from an earlier study's Q-table",
             "paper 000 (Q-learning LR agent, warm start)", make_policy=_qlearning_policy,
             epoch_end=_qlearning_epoch_end,
             not_searched="a warm start is about the table it starts from; it runs at the qlearning settings",
             order_dependent="one Q-table pooled over the study's qlearning_warm trials, updated in arrival order",
             watches=("metric", "loss"), inactive_hint=_QLEARNING_HINT),
    LRMethod("effort", "learned", "epoch", "maximises performance minus an effort cost, recalling similar curves",
             "after paper 004 (Njaradi et al., arXiv 2601.07830); the derivation is ours", needs_epochs=True,
             section="effort", config=EffortConfig, make_policy=_effort_policy,
             space=(_BASE_LR,
                    Param("warmup", "schedules.effort.warmup", 0.05, 0.3, integer=True, scale="epochs",
                          min_value=1),
                    Param("neighbours", "schedules.effort.neighbours", 1, 8, integer=True)),
             order_dependent="recalls the curves of the trials that had finished when it started",
             watches=("metric",), inactive_hint="lower schedules.effort.warmup"),
    LRMethod("greedy", "learned", "epoch", "grows the LR while the loss improves, shrinks it while it worsens",
             "GreedyLR, arXiv 2512.14527", section="greedy", config=GreedyConfig, make_policy=_greedy_policy,
             epoch_end=_greedy_epoch_end,
             space=(_BASE_LR, Param("factor", "schedules.greedy.factor", 0.5, 0.95),
                    Param("patience", "schedules.greedy.patience", 1, 6, integer=True)),
             watches=("loss",), inactive_hint="lower schedules.greedy.patience and schedules.greedy.warmup",
             default_selection=True),
    LRMethod("pbt", "learned", "epoch", "members copy better members' weights and perturb their LR",
             "Jaderberg et al., arXiv 1711.09846 (Ray Tune PopulationBasedTraining)",
             not_searched="PBT is itself a search over lr during training; it runs at its own settings",
             order_dependent="members copy the weights of whichever members have reported when an exploit is due",
             inactive_hint="set pbt.perturbation_interval below the epochs (e.g. epochs // 4)", default_selection=True),
)

for _method in _BUILTINS:
    register(_method)
    _BUILTIN.add(_method.name)
