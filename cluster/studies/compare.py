"""``medtune.compare``: a researcher's own training function, compared across LR methods like the LR study.

The experiment is the one ``medtune run lr-schedulers`` runs, with the user's trainable in place of the
built-in one: every method x seed is a trial, and every trial runs in one ``Tuner`` under
:class:`~medtune.searchers.study_scheduler.StudyScheduler`:
:class:`~medtune.searchers.qlearning_scheduler.QLearningLRScheduler` drives the ``qlearning`` /
``qlearning_warm`` trials through the study's mailbox and PBT its population (one ``pbt`` member per seed),
beside the other methods, so a slot a waiting member frees goes to another trial. The trials log to one MLflow
experiment (``name``) and session through :class:`~medtune.cluster.runs.tracking.MLflowTracker`: one run per trial with params
(``method``, ``seed``, the ``params`` given and the ``lr_control`` settings) and every number the trial reports
per epoch; at the end one summary run with the comparison (:mod:`medtune.dashboards.metric_report`).

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

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from ray.tune import Stopper

from medtune.cluster.runs.console import quiet_api
from medtune.cluster.runs.fail_fast import FailFast, all_failed_error
from medtune.config import from_dict, to_dict
from medtune.errors import InputError, TrialsFailedError, did_you_mean, error_line
from medtune.searchers.lr_schedules import ScheduleConfig
from medtune.searchers.pbt import PBTConfig, default_interval
from medtune.searchers.qlearning_agent import METHOD, WARM_METHOD, QLearningConfig
from medtune.trainables.lr_control import (
    CHECKPOINT_EVERY, CONFIG_KEY, METHODS, LRControlConfig, check_method, check_metric,
)

logger = logging.getLogger(__name__)

JOURNAL_FILE = "qlearning-journal.jsonl"
MEMORY_FILE = "episodic-memory.jsonl"
KEEP_CHECKPOINTS = 6
QLEARNING_KEYS = tuple(f.name for f in QLearningConfig.__dataclass_fields__.values()
                       if f.name not in ("base_lr", "min_lr", "max_lr"))


@dataclass(frozen=True)
class CompareSpec:
    """Everything one ``compare`` call runs (stored in the session's ``medtune.json``)."""

    name: str
    trainable: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    metric: str
    mode: str
    loss_metric: str
    min_lr: float
    max_lr: float
    lr: float | None = None
    target: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    schedules: ScheduleConfig = field(default_factory=ScheduleConfig)
    qlearning: dict[str, Any] = field(default_factory=dict)
    qlearning_seed: int = 0
    warm_start: str | None = None
    pbt: PBTConfig = field(default_factory=PBTConfig)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0
    max_failures: int = 0
    checkpoint_every: int = CHECKPOINT_EVERY  # epochs between a trial's checkpoints (LRControlConfig)
    study: str = "own"  # the registered study of its sessions (resume, report --sync dispatch on it)
    tuned: dict[str, Any] = field(default_factory=dict)  # {method: {config key: value}} (the tuning protocol)
    adapted: dict[str, Any] = field(default_factory=dict)  # {setting: value} scaled to ``epochs`` (not set by the user)

    def agent_config(self) -> QLearningConfig:
        return QLearningConfig(min_lr=self.min_lr, max_lr=self.max_lr, **self.qlearning)

    def control_config(self, mailbox: str, task: str) -> dict[str, Any]:
        return to_dict(LRControlConfig(epochs=self.epochs, min_lr=self.min_lr, max_lr=self.max_lr, metric=self.metric,
                                       mode=self.mode, loss_metric=self.loss_metric, schedules=self.schedules,
                                       mailbox=mailbox, task=task, checkpoint_every=self.checkpoint_every,
                                       perturbation_interval=self.pbt.perturbation_interval))


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


def _qualname(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}:{getattr(fn, '__qualname__', type(fn).__name__)}"


def make_spec(trainable: Any, methods: Sequence[str], seeds: Sequence[int], epochs: int, metric: Any, mode: str,
              loss_metric: Any, min_lr: float, max_lr: float, lr: float | None, name: str, target: float | None,
              params: dict[str, Any] | None, schedules: Any, qlearning: dict[str, Any] | None, warm_start: str | None,
              pbt: Any, cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int, max_failures: int,
              qlearning_seed: int = 0, checkpoint_every: int = CHECKPOINT_EVERY) -> CompareSpec:
    """Check every argument of :func:`compare` (one :class:`InputError` line each) and build its spec."""
    if not callable(trainable):
        raise InputError(f"trainable={trainable!r} must be a function f(config) that calls medtune.LRControl")
    if isinstance(methods, str) or not methods:
        raise InputError(f"methods={methods!r} must be a non-empty list of LR methods, some of {', '.join(METHODS)}")
    methods = tuple(check_method(m) for m in methods)
    if len(set(methods)) != len(methods):
        raise InputError(f"methods={list(methods)!r} has duplicates; list each method once")
    if isinstance(seeds, (int, str)) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                            for s in seeds):
        raise InputError(f"seeds={seeds!r} must be a non-empty list of integers, e.g. seeds=[0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"seeds={list(seeds)!r} has duplicates; list each seed once")
    check_metric(metric, "metric")
    check_metric(loss_metric, "loss_metric")
    if mode not in ("max", "min"):
        raise InputError(f"mode={mode!r} must be 'max' (higher {metric} is better) or 'min'"
                         f"{did_you_mean(mode, ('max', 'min'))}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InputError(f"epochs={epochs!r} must be a whole number of epochs >= 1")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise InputError(f"checkpoint_every={checkpoint_every!r} must be a whole number of epochs >= 1")
    for key, value in (("min_lr", min_lr), ("max_lr", max_lr)) + ((("lr", lr),) if lr is not None else ()):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
            raise InputError(f"{key}={value!r} must be a positive finite number")
    if min_lr >= max_lr:
        raise InputError(f"min_lr={min_lr!r} must be below max_lr={max_lr!r}")
    if lr is not None and not min_lr <= lr <= max_lr:
        raise InputError(f"lr={lr!r} must lie in [min_lr, max_lr] = [{min_lr!r}, {max_lr!r}]")
    if WARM_METHOD in methods and not warm_start:
        raise InputError("methods: 'qlearning_warm' needs warm_start=, the qtable.json of an earlier comparison")
    if warm_start and not Path(warm_start).expanduser().is_file():
        raise InputError(f"warm_start={warm_start!r} is not a file; give the qtable.json of an earlier comparison")
    if "effort" in methods and mode != "max":
        raise InputError(f"method 'effort' maximises a metric in [0, 1]; {metric!r} has mode='min'. Leave effort out")
    params = dict(params or {})
    reserved = {"method", "seed", "lr", "study", CONFIG_KEY} & set(params)
    if reserved:
        raise InputError(f"params may not set {', '.join(sorted(reserved))}: compare sets those (lr: use lr=)")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise InputError(f"name={name!r} must be a non-empty word without '/', '\\' or spaces")
    qlearning = dict(qlearning or {})
    for key in qlearning:
        if key not in QLEARNING_KEYS:
            raise InputError(f"qlearning.{key} is not a Q-learning setting{did_you_mean(key, QLEARNING_KEYS)}; "
                             f"valid: {', '.join(QLEARNING_KEYS)} (the LR bounds are min_lr= / max_lr=)")
    spec = CompareSpec(
        name=name, trainable=_qualname(trainable), methods=methods, seeds=tuple(seeds), epochs=epochs, metric=metric,
        mode=mode, loss_metric=loss_metric, min_lr=float(min_lr), max_lr=float(max_lr),
        lr=None if lr is None else float(lr), target=target, params=params,
        schedules=schedules if isinstance(schedules, ScheduleConfig) else from_dict(ScheduleConfig, schedules,
                                                                                    "schedules"),
        qlearning=qlearning, qlearning_seed=int(qlearning_seed),
        warm_start=None if not warm_start else str(Path(warm_start).expanduser().resolve()),
        pbt=pbt if isinstance(pbt, PBTConfig) else from_dict(PBTConfig, pbt, "pbt"),
        cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, max_concurrent=max_concurrent,
        max_failures=max_failures, checkpoint_every=checkpoint_every,
    )
    try:
        spec.agent_config()
    except (TypeError, ValueError) as exc:
        raise InputError(f"qlearning.{exc}") from None
    return adapt_to_budget(spec)


def adapt_to_budget(spec: CompareSpec) -> CompareSpec:
    """Scale the decision intervals the user did not set to the run's length, so a short run's learned methods act.

    PBT's ``perturbation_interval`` (unset: None) becomes ``max(1, epochs // 4)``: four chances to exploit. The
    Q-learning agent's ``patience`` and ``cooldown``, when not in ``qlearning``, become
    ``min(default, max(1, epochs // 6))`` (3 and 5 from 30 epochs on, 1 and 1 below 12). Explicit settings win.
    The values that differ from the fixed defaults are kept in ``spec.adapted`` and said in the report.
    """
    from dataclasses import replace

    adapted: dict[str, Any] = {}
    pbt = spec.pbt
    if pbt.perturbation_interval is None:
        pbt = replace(pbt, perturbation_interval=default_interval(spec.epochs))
        if "pbt" in spec.methods:
            adapted["pbt.perturbation_interval"] = pbt.perturbation_interval
    qlearning = dict(spec.qlearning)
    defaults = QLearningConfig.__dataclass_fields__
    for key in ("patience", "cooldown"):
        value = min(defaults[key].default, max(1, spec.epochs // 6))
        if key not in qlearning and value != defaults[key].default:
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


class FirstResultCheck(Stopper):
    """A Tune ``Stopper``: a trial whose first result lacks the metric, the loss or the ``LRControl`` marker is
    stopped at once, and with it every other trial of the Tuner (the same trainable would fail the same way).

    The reason is rebuilt from the stopped trial's result by :func:`problems` after the Tuner returns.
    """

    def __init__(self, metric: str, loss_metric: str) -> None:
        self.metric, self.loss_metric = metric, loss_metric
        self._seen: set[str] = set()
        self._bad = False

    def __call__(self, trial_id: str, result: dict) -> bool:
        from medtune.searchers.qlearning_scheduler import missing_keys

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
    from medtune.searchers.qlearning_scheduler import missing_keys

    keys, other = [], []
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
    import hashlib

    key = json.dumps([spec.trainable, spec.params, spec.epochs, spec.metric], sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _run_config(spec: CompareSpec, name: str, storage: Path, info: dict[str, Any], stopper: Any, keep: int,
                progress: tuple[str, int], fail_fast: FailFast | None = None):
    from ray import tune

    from medtune.cluster.runs.console import tune_verbosity
    from medtune.cluster.runs.progress import ProgressLog, trial_files
    from medtune.cluster.studies.session import BACKLOG_FILE
    from medtune.cluster.runs.tracking import MLflowTracker
    from medtune.searchers.qlearning_scheduler import EpisodeRecorder

    session = info["session"]
    fail_fast = fail_fast or FailFast()  # an error every trial would repeat stops them all at once
    return tune.RunConfig(
        name=name,
        storage_path=str(storage),
        callbacks=[
            MLflowTracker(info["tracking_uri"], info["experiment_id"], session, metrics=None,
                          backlog=str(Path(info["memory_path"]).parent / session / BACKLOG_FILE),
                          stop_note=fail_fast.stop_note),
            EpisodeRecorder(info["mailbox"], info["memory_path"], info["task"], session, metric=spec.metric),
            ProgressLog(progress[0], progress[1], spec.metric),
            fail_fast,  # after ProgressLog: the trial's error is said before the stop
            *trial_files(),
        ],
        stop=fail_fast.stopper(stopper),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
        verbose=tune_verbosity(),
    )


def build_tuner(spec: CompareSpec, trainable: Callable, session_dir: Path, info: dict[str, Any],
                fail_fast: FailFast | None = None):
    """The comparison's one Tuner: every method x seed, PBT's members first (the longest trials); ``fail_fast``
    tells after ``fit`` whether an error every trial would repeat stopped the run."""
    from ray import tune

    from medtune.searchers.pbt import make_pbt
    from medtune.searchers.qlearning_scheduler import QLearningLRScheduler
    from medtune.searchers.study_scheduler import StudyScheduler

    common: dict[str, Any] = {
        **spec.params,
        "study": "own",  # `medtune report` finds the own-training report by this param
        "seed": tune.grid_search(list(spec.seeds)),
        CONFIG_KEY: spec.control_config(info["mailbox"], info["task"]),
    }
    if spec.lr is not None:
        common["lr"] = spec.lr
    if spec.tuned:
        common["tuned"] = spec.tuned
    scheduler = QLearningLRScheduler(
        spec.agent_config(), state_path=session_dir / JOURNAL_FILE, mailbox=info["mailbox"],
        seed=spec.qlearning_seed, metric=spec.metric, loss_metric=spec.loss_metric, mode=spec.mode,
        warm_start=spec.warm_start, warm_method=WARM_METHOD if WARM_METHOD in spec.methods else METHOD,
        require_control=True,
    )
    methods = sorted(spec.methods, key=lambda m: m != "pbt")
    if "pbt" in methods:  # MemberPBT restarts a copier before its donor trains on: KEEP_CHECKPOINTS suffice
        scheduler = StudyScheduler(scheduler, make_pbt(spec.pbt, spec.min_lr, spec.max_lr, metric=spec.metric,
                                                       seed=spec.qlearning_seed, mode=spec.mode,
                                                       own_lr=spec.lr is None))
    resources = {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"method": tune.grid_search(methods), **common},
        # A slot's process runs its next trial too (imports paid once; a PBT member restarts in whichever
        # process is free): every trial seeds itself, so its numbers do not depend on the process.
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=spec.max_concurrent or None,
                                    reuse_actors=True),
        run_config=_run_config(spec, session_dir.name, session_dir.parent, info,
                               FirstResultCheck(spec.metric, spec.loss_metric), KEEP_CHECKPOINTS,
                               (spec.name, len(methods) * len(spec.seeds) * spec.epochs), fail_fast),
    )


@quiet_api
def compare(
    trainable: Callable[[dict[str, Any]], Any],
    methods: Sequence[str] = ("fixed", "cosine", "greedy", "qlearning", "pbt"),
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 30,
    metric: str = "dice",
    mode: str = "max",
    loss_metric: str = "val_loss",
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    lr: float | None = None,
    *,
    name: str = "compare",
    output: str | os.PathLike = "medtune-runs",
    tracking_uri: str | None = None,
    address: str | None = None,
    target: float | None = None,
    params: dict[str, Any] | None = None,
    schedules: ScheduleConfig | dict[str, Any] | None = None,
    qlearning: dict[str, Any] | None = None,
    qlearning_seed: int = 0,
    warm_start: str | None = None,
    pbt: PBTConfig | dict[str, Any] | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_concurrent: int = 0,
    max_failures: int = 0,
    checkpoint_every: int = CHECKPOINT_EVERY,
    storage: str | None = None,
    tune: Any = None,
    verbose: bool = False,
) -> Comparison:
    """Compare LR methods on ``trainable`` in one parallel Ray Tune experiment tracked in MLflow.

    Args:
        trainable: ``f(config)``, a Tune function trainable that calls ``medtune.LRControl`` once per epoch.
        methods: LR methods (:data:`medtune.trainables.lr_control.METHODS`), each run for every seed.
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
    import ray

    from medtune.cluster.studies.session import check_resources, create_session, init_ray, is_remote
    from medtune.cluster.studies.spec import ResourcesConfig
    from medtune.dashboards.metric_report import build_metric_report
    from medtune.dashboards.summary import log_summary
    from medtune.searchers.qlearning_scheduler import METHODS as DRIVEN, QLearningLRScheduler, open_mailbox

    from medtune.cluster.studies.tuning import check_compare_tuning

    tuning = None
    if tune is not None:
        from medtune.searchers.search_spaces import TuningConfig

        tuning = tune if isinstance(tune, TuningConfig) else from_dict(TuningConfig, tune, "tune")
        seeds = list(tuning.final_seeds)
    spec = make_spec(trainable, methods, seeds, epochs, metric, mode, loss_metric, min_lr, max_lr, lr, name, target,
                     params, schedules, qlearning, warm_start, pbt, cpus_per_trial, gpus_per_trial, max_concurrent,
                     max_failures, qlearning_seed, checkpoint_every)
    bounds = check_compare_tuning(spec, tuning) if tuning is not None else {}
    resources = ResourcesConfig(cpus_per_trial, gpus_per_trial, max_concurrent)

    def keys(session_dir: Path) -> dict[str, Any]:
        return {"mailbox": f"medtune-compare-{session_dir.name}", "memory_path": str(session_dir.parent / MEMORY_FILE),
                "task": task_key(spec)}

    session_dir, info = create_session(spec, output, tracking_uri, {"api": "medtune.compare"}, keys,
                                       storage=storage)
    started = not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS"))
    init_ray(address)  # nothing configured: a local Ray of our own, never an instance found on this machine
    try:
        check_resources(resources, remote=is_remote(address))
        box = open_mailbox(info["mailbox"])  # exists before any trial reads it
        logger.info("comparing %d methods x %d seeds of %s on %s (%s)", len(spec.methods), len(spec.seeds),
                    spec.trainable, spec.metric, spec.mode)
        outcomes: list = []
        if tuning is not None:
            from dataclasses import replace

            from medtune.cluster.studies.tuning import qlearning_values, search_compare

            outcomes = search_compare(spec, tuning, bounds, trainable, session_dir, info)
            tuned = {o["method"]: o["values"] for o in outcomes}
            spec = replace(spec, tuned=tuned,
                           qlearning={**spec.qlearning, **qlearning_values(tuned, f"{CONFIG_KEY}.qlearning.")})
        fail_fast = FailFast()
        results = list(build_tuner(spec, trainable, session_dir, info, fail_fast).fit())
        if fail_fast.error() is not None:
            raise fail_fast.error()
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
        qtable = None
        if set(spec.methods) & set(DRIVEN):
            replay = QLearningLRScheduler(spec.agent_config(), state_path=session_dir / JOURNAL_FILE, mailbox="",
                                          seed=spec.qlearning_seed, warm_start=spec.warm_start)
            qtable = replay.snapshot()
            (session_dir / "qtable.json").write_text(json.dumps(qtable, indent=1))
    finally:
        if started:
            ray.shutdown()
    report = build_metric_report(info["tracking_uri"], spec.name, info["session"], spec.metric, spec.mode,
                                 spec.loss_metric, spec.target, qtable, intervals=decision_intervals(spec),
                                 notes=adapted_note(spec))
    if tuning is not None:
        from medtune.cluster.studies.tuning import tuned_report

        report = tuned_report(report, spec, tuning, outcomes)
    log_summary(info["tracking_uri"], report, session_dir / "report")
    for line in failed:
        logger.warning("%s", line)
    return Comparison(report.table, report.verdicts, report.text(), session_dir, info["tracking_uri"], spec.name,
                      info["session"], failed, outcomes)
