"""``medtune.compare``: a researcher's own training function, compared across LR methods like the LR study.

The experiment is the one ``medtune run lr-schedulers`` runs, assembled by the same code
(:mod:`medtune.cluster.studies.lr_experiment`), with the user's trainable in place of the built-in one: every
method x seed is a trial, and every trial runs in one ``Tuner`` under
:class:`~medtune.searchers.study_scheduler.StudyScheduler`:
:class:`~medtune.searchers.qlearning_scheduler.QLearningLRScheduler` drives the ``qlearning`` /
``qlearning_warm`` trials through the study's mailbox and PBT its population (one ``pbt`` member per seed),
beside the other methods, so a slot a waiting member frees goes to another trial. The trials log to one MLflow
experiment (``name``) and session through :class:`~medtune.cluster.runs.tracking.MLflowTracker`: one run per
trial with params (``method``, ``seed``, the ``params`` given and the ``lr_control`` settings) and every number
the trial reports per epoch; at the end one summary run with the comparison (:mod:`medtune.dashboards.metric_report`).

The trainable is a Tune function trainable ``f(config)`` that builds its optimizer, creates
``medtune.LRControl(optimizer, config)`` and calls ``control.step(metrics)`` once per epoch. It reads its own
settings from ``config`` (``params``) and its seed from ``config["seed"]``; everything else in the config is
``LRControl``'s.

Checked before any trial (:class:`~medtune.errors.InputError`, one line): method names (case included, the
nearest suggested), seeds, the metric names (strings), ``mode``, the LR bounds, ``qlearning_warm`` without a
warm start. Checked during the run: every trial's first result must hold ``metric`` and ``loss_metric`` and
come through ``LRControl.step``; a trial whose first result does not is stopped, the others are stopped
with it, and ``compare`` raises one ``InputError`` line naming the missing key and the keys the trial did
report (a trial whose ``LRControl.step`` raised is reported the same way).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from medtune.cluster.runs.console import quiet_api
from medtune.cluster.studies.lr_experiment import LRExperiment, final_qtable, fit, session_keys
from medtune.cluster.studies.lr_experiment import build_tuner as build_lr_tuner
from medtune.cluster.studies.lr_experiment import task_key as lr_task_key
from medtune.cluster.studies.session import check_resources, create_session, init_ray, is_remote
from medtune.cluster.studies.spec import ResourcesConfig, StudySpec, unknown_setting
from medtune.cluster.studies.tuning import check_compare_tuning, qlearning_values, search_compare, tuned_report
from medtune.config import from_dict, to_dict
from medtune.dashboards.summary import log_summary
from medtune.errors import InputError, did_you_mean, error_line
from medtune.searchers.lr_methods import DEFAULT_SELECTION
from medtune.searchers.lr_schedules import ScheduleConfig
from medtune.searchers.pbt import PBTConfig, default_interval
from medtune.searchers.qlearning_agent import METHOD, WARM_METHOD, QLearningConfig
from medtune.searchers.search_spaces import TuningConfig
from medtune.trainables.lr_control import (
    CHECKPOINT_EVERY,
    CONFIG_KEY,
    METHOD_NAMES,
    LRControlConfig,
    check_method,
    check_metric,
)

if typing.TYPE_CHECKING:
    from ray import tune

    from medtune.cluster.runs.fail_fast import FailFast

__all__ = [
    "COMPARE_SIGNATURE", "CompareSpec", "Comparison", "FirstResultCheck", "adapt_to_budget", "adapted_note",
    "build_tuner", "compare", "decision_intervals", "experiment", "make_spec", "problems", "task_key",
]

logger = logging.getLogger(__name__)

QLEARNING_KEYS = tuple(f.name for f in QLearningConfig.__dataclass_fields__.values()
                       if f.name not in ("base_lr", "min_lr", "max_lr"))
DEFAULT_METHODS = tuple(DEFAULT_SELECTION)  # the records of medtune.searchers.lr_methods


@dataclass(frozen=True)
class CompareSpec(StudySpec):
    """Everything one :func:`compare` call runs (stored in the session's ``medtune.json``); its fields are
    ``compare``'s keyword arguments (``resources`` as ``cpus_per_trial``, ``gpus_per_trial``,
    ``max_concurrent``; ``trainable`` the function's ``module:qualname``), checked here, at construction:
    every bad value is one :class:`~medtune.errors.InputError` line (``ValueError`` from the
    :class:`~medtune.cluster.studies.spec.StudySpec` checks).

    Attributes:
        max_failures: how many times Ray Tune retries a failed trial before it counts it as failed (>= 0); 0
            (this spec's default) never retries, so a broken trainable fails fast.
        trainable: the user's Tune function trainable as ``package.module:function`` (imported, from the current
            folder first, when the spec is checked); it must call ``medtune.LRControl`` once per epoch.
        methods: the LR methods to compare (:data:`medtune.trainables.lr_control.METHOD_NAMES`), each run once per
            seed; ``qlearning_warm`` needs ``warm_start``, ``effort`` needs ``mode: max``.
        epochs: each trial's length in epochs (>= 1): the trainable runs this many, cosine anneals over them.
        metric: the result key the table ranks the methods by (e.g. ``dice``), which the trainable reports.
        mode: ``max`` (a higher ``metric`` is better) or ``min``.
        loss_metric: the validation loss key of the results, which plateau, GreedyLR and the Q-learning agent
            watch.
        min_lr, max_lr: every adaptive method's LR bounds (positive, ``min_lr < max_lr``); PBT resamples in them.
        lr: the starting LR of every trial, in ``[min_lr, max_lr]``; null: each trial starts from its optimizer's
            own LR (``poly``, ``schedulefree`` and ``prodigy`` always do).
        target: the ``metric`` level that "epochs to target" counts to; null: the median of the trials' best
            values.
        params: extra config keys the trainable reads (logged as MLflow params); ``method``, ``seed``, ``lr`` and
            ``study`` are set by medtune and may not appear.
        schedules: the settings of the in-trial LR policies (step, cosine, plateau, GreedyLR, ...).
        qlearning: the Q-learning agent's settings, any :class:`~medtune.searchers.qlearning_agent.QLearningConfig`
            field but the LR bounds (those are ``min_lr`` / ``max_lr``); empty: its defaults.
        qlearning_seed: the seed of the Q-table the ``qlearning`` trials share (its initialisation and
            epsilon-greedy draws), and of PBT's perturbation draws.
        warm_start: a ``qtable.json`` of an earlier comparison to start ``qlearning_warm`` from; null: none (then
            ``qlearning_warm`` may not be among the methods).
        pbt: the settings of Population Based Training (the ``pbt`` method).
    """

    KNOWN_METHODS: ClassVar[Sequence[str]] = METHOD_NAMES
    METHOD_KIND: ClassVar[str] = "an LR method"
    TITLE: ClassVar[str] = "the own-training spec"

    name: str = "compare"
    study: str = "own"  # the registered study of its sessions (resume, report --sync dispatch on it)
    max_failures: int = 0
    trainable: str = ""
    methods: tuple[str, ...] = DEFAULT_METHODS
    epochs: int = 30
    metric: str = "dice"
    mode: str = "max"
    loss_metric: str = "val_loss"
    min_lr: float = 1e-6
    max_lr: float = 1.0
    lr: float | None = None
    target: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    schedules: ScheduleConfig = field(default_factory=ScheduleConfig)
    qlearning: dict[str, Any] = field(default_factory=dict)
    qlearning_seed: int = 0
    warm_start: str | None = None
    pbt: PBTConfig = field(default_factory=PBTConfig)
    checkpoint_every: int = CHECKPOINT_EVERY  # epochs between a trial's checkpoints (LRControlConfig)
    tuned: dict[str, Any] = field(default_factory=dict)  # {method: {config key: value}} (the tuning protocol)
    adapted: dict[str, Any] = field(default_factory=dict)  # {setting: value} scaled to ``epochs`` (not set by the user)

    def __post_init__(self) -> None:
        methods, seeds = self.methods, self.seeds
        if isinstance(methods, str) or not methods:
            raise InputError(f"methods={methods!r} must be a non-empty list of LR methods, some of "
                             f"{', '.join(METHOD_NAMES)}")
        if isinstance(seeds, (int, str)) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                for s in seeds):
            raise InputError(f"seeds={seeds!r} must be a non-empty list of integers, e.g. seeds=[0, 1, 2]")
        object.__setattr__(self, "methods", tuple(check_method(m) for m in methods))
        object.__setattr__(self, "seeds", tuple(seeds))
        super().__post_init__()  # name, storage, study, seeds and methods, max_failures
        self._check_run()
        lrs = (("min_lr", self.min_lr), ("max_lr", self.max_lr)) + ((("lr", self.lr),) if self.lr is not None else ())
        for key, value in lrs:
            object.__setattr__(self, key, float(value))
        if self.warm_start:
            object.__setattr__(self, "warm_start", str(Path(self.warm_start).expanduser().resolve()))
        object.__setattr__(self, "params", dict(self.params or {}))
        object.__setattr__(self, "qlearning", dict(self.qlearning or {}))
        object.__setattr__(self, "qlearning_seed", int(self.qlearning_seed))
        try:
            self.agent_config()
        except (TypeError, ValueError) as exc:
            raise InputError(f"qlearning.{exc}") from None

    def _check_run(self) -> None:
        """The checks of the metric, the budget, the LR bounds, the warm start, ``params`` and ``qlearning``."""
        check_metric(self.metric, "metric")
        check_metric(self.loss_metric, "loss_metric")
        if self.mode not in ("max", "min"):
            raise InputError(f"mode={self.mode!r} must be 'max' (higher {self.metric} is better) or 'min'"
                             f"{did_you_mean(self.mode, ('max', 'min'))}")
        for key in ("epochs", "checkpoint_every"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{key}={value!r} must be a whole number of epochs >= 1")
        lrs = (("min_lr", self.min_lr), ("max_lr", self.max_lr)) + ((("lr", self.lr),) if self.lr is not None else ())
        for key, value in lrs:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0
                                                                                       and math.isfinite(value)):
                raise InputError(f"{key}={value!r} must be a positive finite number")
        if self.min_lr >= self.max_lr:
            raise InputError(f"min_lr={self.min_lr!r} must be below max_lr={self.max_lr!r}")
        if self.lr is not None and not self.min_lr <= self.lr <= self.max_lr:
            raise InputError(f"lr={self.lr!r} must lie in [min_lr, max_lr] = [{self.min_lr!r}, {self.max_lr!r}]")
        if WARM_METHOD in self.methods and not self.warm_start:
            raise InputError("methods: 'qlearning_warm' needs warm_start=, the qtable.json of an earlier comparison")
        if self.warm_start and not Path(self.warm_start).expanduser().is_file():
            raise InputError(f"warm_start={self.warm_start!r} is not a file; give the qtable.json of an earlier "
                             "comparison")
        if "effort" in self.methods and self.mode != "max":
            raise InputError(f"method 'effort' maximises a metric in [0, 1]; {self.metric!r} has mode='min'. "
                             "Leave effort out")
        reserved = {"method", "seed", "lr", "study", CONFIG_KEY} & set(self.params or {})
        if reserved:
            raise InputError(f"params may not set {', '.join(sorted(reserved))}: compare sets those (lr: use lr=)")
        for key in self.qlearning or {}:
            if key not in QLEARNING_KEYS:
                raise InputError(f"qlearning.{key} is not a Q-learning setting{did_you_mean(key, QLEARNING_KEYS)}; "
                                 f"valid: {', '.join(QLEARNING_KEYS)} (the LR bounds are min_lr= / max_lr=)")

    def agent_config(self) -> QLearningConfig:
        return QLearningConfig(min_lr=self.min_lr, max_lr=self.max_lr, **self.qlearning)

    def control_config(self, mailbox: str, task: str) -> dict[str, Any]:
        control: dict[str, Any] = to_dict(LRControlConfig(
            epochs=self.epochs, min_lr=self.min_lr, max_lr=self.max_lr, metric=self.metric, mode=self.mode,
            loss_metric=self.loss_metric, schedules=self.schedules, mailbox=mailbox, task=task,
            checkpoint_every=self.checkpoint_every, perturbation_interval=self.pbt.perturbation_interval))
        return control

    def arguments(self) -> dict[str, Any]:
        """The :func:`compare` keyword arguments this spec holds (``resources`` as its three settings)."""
        values = {name: getattr(self, name) for name in ARGUMENT_FIELDS}
        return {**values, **{name: getattr(self.resources, name) for name in RESOURCE_ARGUMENTS}}


@dataclass
class Comparison:
    """What :func:`compare` returns.

    Attributes:
        table: one row per method (best first), columns ``seeds``, ``test_<metric>_mean/std``,
            ``final_<metric>_mean/std``, ``best_<metric>_mean/std``, ``epochs_to_target_mean/std``,
            ``reached_target``, ``auc_mean/std``, ``oscillation_mean/std``, ``diverged``.
        verdicts: ``{learned method: lines}``, each against the best other method and the best classic one.
        text: the printed report (table, verdicts, the missing held-out note when it applies).
        session_dir: the session folder (Tune state, journal, report files).
        tracking_uri, experiment, session: where the MLflow runs are.
        failed: one line per trial that failed for a reason other than a missing key.
        tuning: with ``tune=``: one outcome per searched method (``chosen``, ``best_val``, ``trials``,
            ``epochs``, ``wall_s``, ``curve``, ``edges``; see :mod:`medtune.cluster.studies.tuning`).
    """

    table: pd.DataFrame
    verdicts: dict[str, list[str]]
    text: str
    session_dir: Path
    tracking_uri: str
    experiment: str
    session: str
    failed: list[str] = field(default_factory=list)
    tuning: list[dict[str, Any]] = field(default_factory=list)


# compare's arguments are CompareSpec's fields: the first ones positional (after the trainable), the resources
# section spread into its settings; a few fields are not arguments (the session's own, and what a run records).
POSITIONAL = ("methods", "seeds", "epochs", "metric", "mode", "loss_metric", "min_lr", "max_lr", "lr")
NOT_ARGUMENTS = ("study", "description", "smoke", "trainable", "resources", "tuned", "adapted")
RESOURCE_ARGUMENTS = tuple(f.name for f in fields(ResourcesConfig))
ARGUMENT_FIELDS = tuple(f.name for f in fields(CompareSpec) if f.name not in NOT_ARGUMENTS)


def _parameters(cls: type, names: Sequence[str], kind: Any) -> list[inspect.Parameter]:
    """``inspect.Parameter``s of ``cls``'s fields ``names``: a field built by a factory shows ``None`` (its
    default), which also accepts a mapping of a configuration's fields; a tuple field accepts any sequence."""
    hints, by_name = typing.get_type_hints(cls), {f.name: f for f in fields(cls)}
    out = []
    for name in names:
        f, tp = by_name[name], hints[name]
        default: Any = f.default
        if typing.get_origin(tp) is tuple:
            tp = Sequence[typing.get_args(tp)[0]]  # type: ignore[misc]  # a runtime annotation
        if default is MISSING:  # a factory builds it
            default = None
            tp = tp | dict[str, Any] | None if is_dataclass(tp) else tp | None
        out.append(inspect.Parameter(name, kind, default=default, annotation=tp))
    return out


_RUN_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, default, annotation in (
        ("output", "medtune-runs", str | os.PathLike), ("tracking_uri", None, str | None),
        ("address", None, str | None), ("tune", None, TuningConfig | dict[str, Any] | None), ("verbose", False, bool),
    )
]
SPEC_SIGNATURE = inspect.Signature([
    inspect.Parameter("trainable", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                      annotation=Callable[[dict[str, Any]], Any]),
    *_parameters(CompareSpec, POSITIONAL, inspect.Parameter.POSITIONAL_OR_KEYWORD),
    *_parameters(CompareSpec, [n for n in ARGUMENT_FIELDS if n not in POSITIONAL], inspect.Parameter.KEYWORD_ONLY),
    *_parameters(ResourcesConfig, RESOURCE_ARGUMENTS, inspect.Parameter.KEYWORD_ONLY),
])
COMPARE_SIGNATURE = SPEC_SIGNATURE.replace(parameters=[*SPEC_SIGNATURE.parameters.values(), *_RUN_PARAMETERS],
                                           return_annotation=Comparison)


def bind_arguments(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every argument of ``signature`` (defaults filled in) from a call's ``args`` and ``kwargs``.

    Raises:
        InputError: an unknown keyword (one line, the nearest name suggested, as an unknown spec key), too many
            positional arguments, or one given twice.
    """
    names = [n for n in signature.parameters if n != "trainable"]
    for key in kwargs:
        if key not in signature.parameters:
            raise unknown_setting(key, names)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise InputError(f"{exc}; see help(medtune.compare) for its arguments") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def _qualname(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}:{getattr(fn, '__qualname__', type(fn).__name__)}"


def make_spec(trainable: Any, *args: Any, **kwargs: Any) -> CompareSpec:
    """Check :func:`compare`'s arguments but ``output``, ``tracking_uri``, ``address``, ``tune`` and ``verbose``
    (one :class:`InputError` line each) and build its spec, the intervals left unset scaled to the budget
    (:func:`adapt_to_budget`). ``None`` for a configuration (``params``, ``schedules``, ``qlearning``, ``pbt``)
    means its default."""
    values = bind_arguments(SPEC_SIGNATURE, (trainable, *args), kwargs)
    fn = values.pop("trainable")
    if not callable(fn):
        raise InputError(f"trainable={fn!r} must be a function f(config) that calls medtune.LRControl")
    try:
        resources = ResourcesConfig(**{name: values.pop(name) for name in RESOURCE_ARGUMENTS})
    except ValueError as exc:
        raise InputError(str(exc)) from None
    hints = typing.get_type_hints(CompareSpec)
    for name, value in list(values.items()):
        if value is None and CompareSpec.__dataclass_fields__[name].default is MISSING:
            del values[name]  # None: the factory's default
        elif is_dataclass(hints[name]) and not isinstance(value, hints[name]):
            values[name] = from_dict(hints[name], value, name)
    try:
        spec = CompareSpec(trainable=_qualname(fn), resources=resources, **values)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return adapt_to_budget(spec)


def adapt_to_budget(spec: CompareSpec) -> CompareSpec:
    """Scale the decision intervals the user did not set to the run's length, so a short run's learned methods act.

    PBT's ``perturbation_interval`` (unset: None) becomes ``max(1, epochs // 4)``: four chances to exploit. The
    Q-learning agent's ``patience`` and ``cooldown``, when not in ``qlearning``, become
    ``min(default, max(1, epochs // 6))`` (3 and 5 from 30 epochs on, 1 and 1 below 12). Explicit settings win.
    The values that differ from the fixed defaults are kept in ``spec.adapted`` and said in the report.
    """
    adapted: dict[str, Any] = {}
    pbt = spec.pbt
    if pbt.perturbation_interval is None:
        pbt = replace(pbt, perturbation_interval=default_interval(spec.epochs))
        if "pbt" in spec.methods:
            adapted["pbt.perturbation_interval"] = pbt.perturbation_interval
    qlearning = dict(spec.qlearning)
    defaults = QLearningConfig()
    for key in ("patience", "cooldown"):
        default: int = getattr(defaults, key)
        value = min(default, max(1, spec.epochs // 6))
        if key not in qlearning and value != default:
            qlearning[key] = value
            if {METHOD, WARM_METHOD} & set(spec.methods):
                adapted[f"qlearning.{key}"] = value
    return replace(spec, pbt=pbt, qlearning=qlearning, adapted=adapted)


def adapted_note(spec: CompareSpec) -> list[str]:
    """The report's line naming the settings :func:`adapt_to_budget` scaled to the run (none if none)."""
    if not spec.adapted:
        return []
    values = ", ".join(f"{k} {v}" for k, v in spec.adapted.items())
    return [f"Adapted to the {spec.epochs}-epoch budget (not set, so scaled: PBT's interval epochs // 4, the "
            f"Q-learning agent's patience and cooldown at most epochs // 6, at least 1): {values}. Set them "
            "(pbt=, qlearning=) to override."]


def decision_intervals(spec: CompareSpec) -> dict[str, int]:
    """Epochs before each learned method's first decision (what a warning about an inactive method names)."""
    patience = spec.agent_config().patience
    return {"pbt": int(spec.pbt.perturbation_interval or 0), "qlearning": patience, "qlearning_warm": patience}


class FirstResultCheck:
    """A Tune stopper (``__call__`` and ``stop_all``, the interface of ``ray.tune.Stopper``, which FailFast's stop
    wraps, so this module needs no Ray to import): a trial whose first result lacks the metric, the loss or the
    ``LRControl`` marker is stopped at once, and with it every other trial of the Tuner (the same trainable
    would fail the same way).

    The reason is rebuilt from the stopped trial's result by :func:`problems` after the Tuner returns.
    """

    def __init__(self, metric: str, loss_metric: str) -> None:
        self.metric, self.loss_metric = metric, loss_metric
        self._seen: set[str] = set()
        self._bad = False

    def __call__(self, trial_id: str, result: dict) -> bool:
        from medtune.searchers.qlearning_scheduler import missing_keys  # imports Ray Tune: a spec loads without

        if trial_id in self._seen:
            return False
        self._seen.add(trial_id)
        if missing_keys(result, self.metric, self.loss_metric, require_control=True):
            self._bad = True
            return True
        return False

    def stop_all(self) -> bool:
        return self._bad


def _error_line(error: Any) -> str:
    """The line of a trial's error that names the problem: the InputError's, else the last line."""
    return error_line(error)


def problems(results: list, metric: str, loss_metric: str) -> tuple[list[str], list[str]]:
    """``(key problems, other failures)``: one line per trial, from the Tune results alone."""
    from medtune.searchers.qlearning_scheduler import missing_keys  # imports Ray Tune: a spec loads without

    keys: list[str] = []
    other: list[str] = []
    for r in results:
        config = r.config or {}
        trial = f"{config.get('method', '?')}-seed{config.get('seed', '?')}"
        if r.error is not None:
            line = _error_line(r.error)
            (keys if "LRControl" in line else other).append(f"trial {trial} failed: {line}")
            continue
        metrics = dict(r.metrics or {})
        if "training_iteration" not in metrics:
            keys.append(f"trial {trial} reported nothing; call control.step(metrics) once per epoch "
                        "(control = medtune.LRControl(optimizer, config))")
            continue
        problem = missing_keys(metrics, metric, loss_metric, require_control=True)
        if problem:
            keys.append(f"trial {trial} was stopped: {problem}")
    return keys, other


def task_key(spec: CompareSpec) -> str:
    """Curves are comparable (for the episodic memory) when trainable, params and budget are the same."""
    return lr_task_key([spec.trainable, spec.params, spec.epochs, spec.metric])


def experiment(spec: CompareSpec) -> LRExperiment:
    """The comparison as the LR experiment assembly reads it (:mod:`medtune.cluster.studies.lr_experiment`)."""
    return LRExperiment(
        name=spec.name, methods=spec.methods, seeds=spec.seeds, epochs=spec.epochs, agent=spec.agent_config(),
        pbt=spec.pbt, resources=spec.resources, max_failures=spec.max_failures, qlearning_seed=spec.qlearning_seed,
        warm_start=spec.warm_start, metric=spec.metric, mode=spec.mode, loss_metric=spec.loss_metric,
        own_lr=spec.lr is None, own_training=True,
    )


def trial_config(spec: CompareSpec, info: dict[str, Any]) -> dict[str, Any]:
    """Every trial's config but ``method`` and ``seed``: the user's ``params``, the LRControl section, ``lr``
    when given, the tuned settings."""
    config: dict[str, Any] = {
        **spec.params,
        "study": "own",  # `medtune report` finds the own-training report by this param
        CONFIG_KEY: spec.control_config(info["mailbox"], info["task"]),
    }
    if spec.lr is not None:
        config["lr"] = spec.lr
    if spec.tuned:
        config["tuned"] = spec.tuned
    return config


def build_tuner(spec: CompareSpec, trainable: Callable, session_dir: Path, info: dict[str, Any],
                fail_fast: FailFast | None = None) -> tune.Tuner:
    """The comparison's one Tuner (:func:`~medtune.cluster.studies.lr_experiment.build_tuner`), its trials
    checked at their first result (:class:`FirstResultCheck`); ``fail_fast`` tells after ``fit`` whether an
    error every trial would repeat stopped the run."""
    return build_lr_tuner(experiment(spec), trainable, trial_config(spec, info), session_dir, info, fail_fast,
                          stopper=FirstResultCheck(spec.metric, spec.loss_metric))


@quiet_api
def compare(trainable: Callable[[dict[str, Any]], Any], *args: Any, verbose: bool = False, **kwargs: Any) -> Comparison:
    """Compare LR methods on ``trainable`` in one parallel Ray Tune experiment tracked in MLflow.

    Args:
        trainable: ``f(config)``, a Tune function trainable that calls ``medtune.LRControl`` once per epoch.
        methods: LR methods (:data:`medtune.trainables.lr_control.METHOD_NAMES`), each run for every seed.
            ``poly``, ``schedulefree`` and ``prodigy`` need the trainable to build its optimizer with
            ``medtune.make_optimizer``; ``onecycle`` needs ``LRControl(..., steps_per_epoch=...)`` and
            ``control.batch_step()`` after every optimizer step.
        seeds: ``config["seed"]`` of the trials (use it to seed your model and data order).
        epochs: each trial's length (the trainable runs this many epochs; cosine anneals over it).
        metric, mode: the result key the table ranks by and its direction (``max``: higher is better).
        loss_metric: the validation loss key (plateau, GreedyLR and the Q-learning agent watch it).
        min_lr, max_lr: every adaptive method's LR bounds (PBT resamples in them).
        lr: the starting LR of every trial; None (default): each trial starts from its optimizer's own LR.
            ``poly``, ``schedulefree`` and ``prodigy`` always start from their own optimizer's LR.
        name: the MLflow experiment; output: the folder of sessions and the default SQLite store;
        tracking_uri: the MLflow store (default ``MLFLOW_TRACKING_URI``, else ``OUTPUT/mlflow.db``).
        address: a Ray cluster (default ``RAY_ADDRESS``, else a new local Ray, started and shut down here; an
            instance another process started on this machine is never joined by accident).
        target: the metric level of "epochs to target" (None: the median of the trials' best values).
        params: extra config keys the trainable reads (logged as MLflow params).
        schedules, qlearning, pbt: settings of the in-trial policies, the Q-learning agent (any
            ``QLearningConfig`` field but the LR bounds) and PBT; qlearning_seed: the shared table's seed;
        warm_start: a ``qtable.json`` (needed by ``qlearning_warm``).
        cpus_per_trial, gpus_per_trial, max_concurrent, max_failures: Tune's resources and retries.
        checkpoint_every: a trial's ``LRControl.step(..., model=)`` checkpoints every this many epochs (and at
            its last epoch, after 5 minutes without one, and for ``pbt`` at every perturbation epoch), so a
            restarted trial trains again at most that many epochs.
        storage: the folder (or ``file://`` URI) that holds the session folder instead of ``output``; on a
            cluster one every node reaches at the same path (see :mod:`medtune.cluster.runs.storage`).
        tune: the equal-budget protocol (a :class:`~medtune.searchers.search_spaces.TuningConfig` or a mapping
            of its fields): every method with a search space is first searched (``trials`` x ``epochs``, on
            ``metric`` only, the trials' config holding ``search: True`` so the trainable skips its test
            score, ``qlearning`` with a private agent), then the comparison runs each method at its chosen
            settings on ``tune.final_seeds`` (which replace ``seeds``). None (default): no search.
        verbose: also show Ray's, Tune's and MLflow's own output (status tables, tracebacks, the trials' own
            prints); False (default): medtune's progress lines alone, as ``medtune run`` prints them, and a
            failed trial in one line (its full traceback in the trial folder's ``error.txt``).

    Returns:
        :class:`Comparison`: the table (a DataFrame), the verdicts, the report text and where it is stored.

    Raises:
        InputError: a bad argument (before Ray starts), or a trial whose results lack ``metric`` /
            ``loss_metric`` or that never calls ``LRControl.step`` (after that trial's first epoch; every
            other trial is stopped then).
        TrialsFailedError: every trial failed (one line: the first trial's error, its type and message, and
            the trial); no table is built, the trial runs in MLflow say FAILED with their error.
        RunStoppedError: a trial raised, at its first epoch, an error every trial would repeat (an import,
            name, attribute, type or key error, a shape mismatch): every trial was stopped at once
            (:mod:`medtune.cluster.runs.fail_fast`).
    """
    import ray  # only when a comparison runs: loading a spec stays light

    from medtune.cluster.runs.fail_fast import FailFast, all_failed_error  # Ray Tune, as above
    from medtune.dashboards.metric_report import build_metric_report  # plotly: only when a report is made
    from medtune.searchers.qlearning_scheduler import open_mailbox  # Ray Tune, as above

    arguments = bind_arguments(COMPARE_SIGNATURE, (trainable, *args), {**kwargs, "verbose": verbose})
    output, tracking_uri, address, tune = (arguments.pop(k) for k in ("output", "tracking_uri", "address", "tune"))
    arguments.pop("verbose")
    tuning = None
    if tune is not None:
        tuning = tune if isinstance(tune, TuningConfig) else from_dict(TuningConfig, tune, "tune")
        arguments["seeds"] = list(tuning.final_seeds)
    spec = make_spec(**arguments)
    bounds = check_compare_tuning(spec, tuning) if tuning is not None else {}
    lr_exp = experiment(spec)

    def keys(session_dir: Path) -> dict[str, Any]:
        return session_keys("compare", session_dir, task_key(spec))

    session_dir, info = create_session(spec, output, tracking_uri, {"api": "medtune.compare"}, keys,
                                       storage=spec.storage)
    started = not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS"))
    init_ray(address)  # nothing configured: a local Ray of our own, never an instance found on this machine
    try:
        check_resources(spec.resources, remote=is_remote(address))
        box = open_mailbox(info["mailbox"])  # exists before any trial reads it
        logger.info("comparing %d methods x %d seeds of %s on %s (%s)", len(spec.methods), len(spec.seeds),
                    spec.trainable, spec.metric, spec.mode)
        outcomes: list = []
        if tuning is not None:
            outcomes = search_compare(spec, tuning, bounds, trainable, session_dir, info)
            tuned = {o["method"]: o["values"] for o in outcomes}
            spec = replace(spec, tuned=tuned,
                           qlearning={**spec.qlearning, **qlearning_values(tuned, f"{CONFIG_KEY}.qlearning.")})
            lr_exp = experiment(spec)
        fail_fast = FailFast()
        results = fit(build_tuner(spec, trainable, session_dir, info, fail_fast))
        stopped = fail_fast.error()
        if stopped is not None:
            raise stopped
        key_problems, failed = problems(results, spec.metric, spec.loss_metric)
        if key_problems:
            for line in key_problems:
                logger.error("%s", line)
            more = f" (and {len(key_problems) - 1} more trials)" if len(key_problems) > 1 else ""
            raise InputError(key_problems[0] + more)
        all_failed = all_failed_error(results)
        if all_failed is not None:
            raise all_failed  # no result to show: never a table of zeros
        del box
        qtable = final_qtable(lr_exp, session_dir)
    finally:
        if started:
            ray.shutdown()
    report = build_metric_report(info["tracking_uri"], spec.name, info["session"], spec.metric, spec.mode,
                                 spec.loss_metric, spec.target, qtable, intervals=decision_intervals(spec),
                                 notes=adapted_note(spec))
    if tuning is not None:
        report = tuned_report(report, spec, tuning, outcomes)
    log_summary(info["tracking_uri"], report, session_dir / "report")
    for line in failed:
        logger.warning("%s", line)
    return Comparison(report.table, report.verdicts, report.text(), session_dir, info["tracking_uri"], spec.name,
                      info["session"], failed, outcomes)


# help(medtune.compare) and inspect show the arguments CompareSpec declares (the function takes **kwargs, so an
# unknown keyword is compare's own one-line InputError, not Python's TypeError).
compare.__signature__ = COMPARE_SIGNATURE  # type: ignore[attr-defined]
