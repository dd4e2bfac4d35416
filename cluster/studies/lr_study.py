"""Assemble and run the learning-rate study as Ray Tune experiments in one session.

Every method x seed of the spec is a trial, and every trial runs in one ``Tuner`` (a grid over ``method`` and
``seed``) under :class:`~medtune.searchers.study_scheduler.StudyScheduler`: the Q-learning scheduler drives the
``qlearning`` / ``qlearning_warm`` trials, PBT its population (one ``pbt`` member per seed), and a slot a waiting
PBT member frees goes to another trial at once, so no slot idles while trials are pending. The trials log to one
MLflow experiment and session through :class:`~medtune.cluster.runs.tracking.MLflowTracker`, and the comparison is
built from MLflow at the end. (Sessions written before this plan ran ``pbt`` as a second Tuner in
``<session>/pbt``; ``medtune resume`` still continues them that way.)

The session folder ``ROOT/<name>-<timestamp>/`` (``ROOT``: the storage root, else
``--output``; see :mod:`medtune.cluster.runs.storage`) holds Tune's experiment state,
``medtune.json`` (what ``medtune resume`` needs), the Q-learning journal and the
report files; the episodic memory is ``ROOT/episodic-memory.jsonl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from medtune.cluster.runs.storage import SESSION_FILE
from medtune.cluster.studies.lr_experiment import (
    JOURNAL_FILE,
    KEEP_CHECKPOINTS,
    LEGACY_TUNERS,
    MEMORY_FILE,
    PBT_DIR,
    STUDY_TUNERS,
    LRExperiment,
    final_qtable,
    fit,
    session_keys,
    with_resources,
)
from medtune.cluster.studies.lr_experiment import build_tuner as build_lr_tuner
from medtune.cluster.studies.lr_experiment import task_key as lr_task_key
from medtune.cluster.studies.session import (
    check_resources,
    create_session,
    finish_session,
    init_ray,
    is_remote,
    log,
    prepare_tracking,
    read_session,
    restore_or_build,
)
from medtune.cluster.studies.session import log_session_summary as session_summary
from medtune.cluster.studies.spec import StudySpec
from medtune.cluster.studies.tuning import (
    PRIVATE_AGENT_NOTE,
    SEARCH_DIR,
    check_spaces,
    final_spec,
    method_bounds,
    search_epochs,
    search_method,
    searched,
)
from medtune.config import from_dict, to_dict
from medtune.dashboards.tuning_report import TunedReport
from medtune.errors import InputError
from medtune.searchers.lr_schedules import ScheduleConfig
from medtune.searchers.pbt import PBTConfig, default_interval
from medtune.searchers.qlearning_agent import QLearningConfig, load_qtable_file
from medtune.searchers.search_spaces import NOT_SEARCHED, SPACES, TuningConfig, apply_values
from medtune.trainables.lr_data import DataConfig, split_datalists
from medtune.trainables.lr_networks import DEFAULT_CHANNELS, DEFAULT_STRIDES, check_network
from medtune.trainables.lr_segmentation import DEFAULT_BATCH_SIZE, METHODS, ModelConfig, TrainConfig, train_segmentation
from medtune.trainables.plan import (
    PLAN_FILE,
    apply_plan,
    fingerprint_decathlon,
    memory_budget,
    plan_for,
    planning_indices,
    read_fingerprint,
    write_plan,
)
from medtune.util import int3

if TYPE_CHECKING:
    from ray import tune

    from medtune.cluster.runs.fail_fast import FailFast

__all__ = [
    "JOURNAL_FILE", "KEEP_CHECKPOINTS", "LEGACY_TUNERS", "LR_SESSION_KEYS", "MEMORY_FILE", "PBT_DIR", "SPEC",
    "STUDY_TUNERS", "LRStudySpec", "QLearningSpec", "build_report", "build_tuner", "experiment",
    "log_session_summary", "lr_session_keys", "plan_study", "prepare_study", "record_plan", "resume",
    "resume_lr_study", "run", "run_in_session", "run_lr_study", "task_key", "trial_config", "trial_memory",
    "tune_lr_study", "tuner_kinds", "tuner_path", "with_plan",
]


def _check_warm_start(self) -> None:
    if self.warm_start is None:
        return
    if not Path(self.warm_start).expanduser().is_file():
        raise ValueError(f"warm_start={self.warm_start!r} is not a file; give the qtable.json of an earlier experiment")
    # one line naming the file if it is no Q-table
    load_qtable_file(Path(self.warm_start).expanduser(), QLearningConfig())


# The ``qlearning:`` section: every QLearningConfig field but the LR bounds (those come from ``train``),
# plus where to warm-start from and the seed of the shared table. Derived, so the two never drift apart.
LR_BOUNDS = ("base_lr", "min_lr", "max_lr")
QLEARNING_SPEC_DOC = """The spec's qlearning section (LR bounds come from train).

    Every other key is :class:`~medtune.searchers.qlearning_agent.QLearningConfig`'s, documented there.

    Attributes:
        warm_start: the ``qtable.json`` of an earlier experiment that the ``qlearning_warm`` trials start their
            shared Q-table from (checked to be a Q-table when the spec is loaded); null: none, and then
            ``qlearning_warm`` may not be among the methods.
        seed: the seed of the Q-tables the ``qlearning`` / ``qlearning_warm`` trials share (their
            ``U(0, q_init_high)`` initialisation and epsilon-greedy draws), and of PBT's perturbation draws.
    """
if TYPE_CHECKING:  # what the type checker sees of the class make_dataclass builds below (it cannot read that)
    @dataclass(frozen=True)
    class QLearningSpec(QLearningConfig):
        warm_start: str | None = None
        seed: int = 0
else:
    QLearningSpec = make_dataclass(
        "QLearningSpec",
        [(f.name, f.type, field(default=f.default)) for f in fields(QLearningConfig) if f.name not in LR_BOUNDS]
        + [("warm_start", "str | None", field(default=None)), ("seed", "int", field(default=0))],
        frozen=True,
        namespace={"__post_init__": _check_warm_start,
                   "__doc__": QLEARNING_SPEC_DOC},
    )
    QLearningSpec.__module__ = __name__  # picklable, like every other spec class


@dataclass(frozen=True)
class LRStudySpec(StudySpec):
    """The learning-rate study: every method x every seed in one Tune experiment.

    Attributes:
        data: the segmentation data (the embedded phantom or a Medical Decathlon task), its split and sizes.
        model: the MONAI 3D network every trial trains and its shape.
        train: each trial's budget, optimizer, loss and LR bounds, the same for every method.
        schedules: the settings of the in-trial LR schedules and policies, one section per method that has any.
        qlearning: the Q-learning agent's settings (paper 000), its LR bounds taken from ``train``, plus the seed
            of the shared Q-table and the table a warm start reads.
        pbt: Population Based Training's settings (the ``pbt`` method: one member per seed).
    """

    KNOWN_METHODS: ClassVar[Sequence[str]] = METHODS
    METHOD_KIND: ClassVar[str] = "an LR method"
    TITLE: ClassVar[str] = "the LR study's spec"

    name: str = "lr-schedulers"
    study: str = "lr"
    methods: tuple[str, ...] = tuple(METHODS)  # every record of medtune.searchers.lr_methods
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedules: ScheduleConfig = field(default_factory=ScheduleConfig)
    qlearning: QLearningSpec = field(default_factory=QLearningSpec)
    pbt: PBTConfig = field(default_factory=PBTConfig)
    tuning: TuningConfig | None = None  # set: `medtune run` runs the equal-budget protocol (studies.tuning)
    tuned: dict[str, Any] = field(default_factory=dict)  # {method: {dotted key: value}}: per-method settings

    def __post_init__(self) -> None:
        super().__post_init__()  # name, storage, study, seeds and methods, max_failures
        if self.pbt.perturbation_interval is None:  # not set: scaled to the run's length (searchers.pbt)
            interval = default_interval(self.train.epochs)
            object.__setattr__(self, "pbt", replace(self.pbt, perturbation_interval=interval))
        if "qlearning_warm" in self.methods and not self.qlearning.warm_start:
            raise ValueError(
                "methods: 'qlearning_warm' needs qlearning.warm_start; give the qtable.json of an earlier "
                "experiment, e.g. --set qlearning.warm_start=medtune-runs/<session>/qtable.json"
            )
        try:
            self.agent_config()
        except ValueError as exc:
            raise ValueError(f"qlearning.{exc}") from None
        self._check_tuned()
        if self.tuning is not None:
            check_spaces(self)

    def _check_tuned(self) -> None:
        """Every ``tuned`` method is in ``methods`` and its settings build the sections they set."""
        sections = {"train": TrainConfig, "schedules": ScheduleConfig, "qlearning": QLearningSpec}
        for method, values in self.tuned.items():
            if method not in self.methods:
                raise ValueError(f"tuned.{method}: {method!r} is not one of the methods ({', '.join(self.methods)})")
            if not isinstance(values, dict):
                raise ValueError(f"tuned.{method}={values!r} must map dotted keys to values")
            bad = [k for k in values if k.split(".")[0] not in sections]
            if bad:
                raise ValueError(f"tuned.{method}.{bad[0]} must set a train., schedules. or qlearning. key")
            merged = apply_values({k: to_dict(getattr(self, k)) for k in sections}, values)
            for name, cls in sections.items():
                from_dict(cls, merged[name], f"tuned.{method}: {name}")

    def agent_config(self) -> QLearningConfig:
        """The Q-learning agent's configuration: the ``qlearning`` section plus the LR bounds of ``train``."""
        q = {k: v for k, v in self.qlearning.__dict__.items() if k not in ("seed", "warm_start")}
        bounds = {k: getattr(self.train, k) for k in LR_BOUNDS}
        return QLearningConfig(**bounds, **q)



LR_SESSION_KEYS = ("mailbox", "memory_path", "task")


def trial_memory(spec: LRStudySpec) -> tuple[int, str]:
    """``(bytes, device)`` one trial may use: its share of a GPU (``resources.gpus_per_trial``), or half this
    machine's memory split between the trials that run at once on it."""
    r = spec.resources
    if r.gpus_per_trial > 0:
        return memory_budget("cuda", share=r.gpus_per_trial), "cuda"
    slots = max(1, int((os.cpu_count() or 1) // max(1, r.cpus_per_trial)))
    concurrent = min(len(spec.methods) * len(spec.seeds), slots, r.max_concurrent or slots)
    return memory_budget("cpu", concurrent=concurrent), "cpu"


def plan_study(spec: LRStudySpec, session_dir: Path | None = None) -> tuple[LRStudySpec, Any]:
    """Fill what the spec leaves to the plan: for a Decathlon task with ``data.plan: auto``, fingerprint it (or
    reuse ``session_dir``'s ``fingerprint.json``) and set spacing, patch size, batch size and the network from
    :func:`~medtune.trainables.plan.plan_for`, printing the plan's table; otherwise (the phantom, ``plan: off``)
    the fixed defaults (``train.batch_size`` 4, ``model.channels`` (8, 16, 32), ``model.strides`` (2, 2)).

    Returns:
        The spec with every planned value set, and ``(headers, fingerprint, plan)`` (None without a plan).
    """
    planned = None
    if spec.data.source == "decathlon" and spec.data.plan == "auto":
        assert spec.data.path is not None  # DataConfig refuses source decathlon without a path
        headers, fp = fingerprint_decathlon(spec.data.path, read_fingerprint(session_dir))
        memory, device = trial_memory(spec)
        plan = plan_for(fp, memory, device, model=spec.model, cfg=spec.data, batch_size=spec.train.batch_size,
                        indices=planning_indices(len(fp.cases), spec.data))
        data, model = apply_plan(plan, spec.data, spec.model)
        spec = replace(spec, data=data, model=model, train=replace(spec.train, batch_size=plan.batch_size))
        for line in plan.table():
            log(line)
        planned = (headers, fp, plan)
    model = spec.model
    if model.channels is None:
        model = replace(model, channels=DEFAULT_CHANNELS, strides=DEFAULT_STRIDES)
    train = spec.train if spec.train.batch_size is not None else replace(spec.train, batch_size=DEFAULT_BATCH_SIZE)
    return replace(spec, model=model, train=train), planned


def prepare_study(spec: LRStudySpec, session_dir: Path | None = None) -> tuple[LRStudySpec, Any, Any]:
    """Check the study's data in the driver, before Ray starts, plan it (:func:`plan_study`) and build the network
    once on it (``in_channels`` from the data's modalities, ``out_channels`` from its classes, on the training
    patch or volume).

    Returns:
        ``(spec, data, planned)``: the spec with its planned values, the split as MONAI data lists
        (:func:`~medtune.trainables.lr_data.split_datalists`: a Decathlon task travels to the trials as file paths,
        and each trial caches its volumes itself) and what :func:`plan_study` returns beside the spec."""

    spec, planned = plan_study(spec, session_dir)
    data = split_datalists(spec.data, headers=planned[0] if planned else None)
    cache = {"memory": f"{spec.data.cache_rate:.0%} cached in memory per trial", "disk": "cached on disk",
             "none": "not cached"}[spec.data.cache]
    if data.native:
        sizes = "their own sizes (nothing cropped; data.spatial_size is the phantom's)"
    else:
        sizes = str(tuple(data.spatial_size or ()))
    log(f"data: {spec.data.source} - {len(data.train)} training, {len(data.val)} validation and "
        f"{len(data.test)} test volumes of {sizes} with {data.in_channels} channel(s), {cache}")
    patch = spec.data.patch_size
    seen = patch or spec.data.spatial_size  # what the network sees in training
    assert seen is not None  # a Decathlon task is planned (a patch), the phantom has its spatial_size
    n_params = check_network(spec.model, data.in_channels, data.num_classes, int3(seen),
                             what="data.patch_size" if patch else "data.spatial_size")
    log(f"model: {spec.model.name} with {n_params:,} parameters")
    return spec, data, planned


def record_plan(session_dir: Path, data: Any, planned: Any) -> None:
    """Write the plan into the session folder (``fingerprint.json``, kept for a resume, and ``plan.json``; an
    existing ``plan.json``, a resumed session's, is kept) and point a disk cache at ``session_dir/cache``."""

    if data.cache == "disk":
        data.cache_dir = str(session_dir / "cache" / str(data.key))
    if planned is not None and not (session_dir / PLAN_FILE).is_file():
        write_plan(session_dir, planned[1], planned[2])


class _WithPlan:
    """A report whose files include the session's ``plan.json`` (so the summary run logs it)."""

    def __init__(self, report: Any, plan: Path):
        self._report, self._plan = report, plan

    def write(self, folder: Any) -> list:
        return [*self._report.write(folder), self._plan]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._report, name)


def with_plan(report: Any, session_dir: Path) -> Any:
    """``report``, with the session's ``plan.json`` among its files when the session has one (a planned task)."""
    plan = session_dir / PLAN_FILE
    return _WithPlan(report, plan) if plan.is_file() else report


def _trainable(spec: LRStudySpec, data: Any) -> Any:
    """The study's trainable, the data shipped with it, asking each trial's resources."""
    from ray import tune  # only when a run is built: loading a spec stays light

    return with_resources(tune.with_parameters(train_segmentation, data=data), spec.resources)


def task_key(spec: LRStudySpec) -> str:
    """Curves are comparable (for the episodic memory) when data, model and batch size are the same
    (``data.cache_rate`` and ``data.cache`` change memory and speed, not the curves, so they are left out)."""
    data = {k: v for k, v in to_dict(spec.data).items() if k not in ("cache_rate", "cache")}
    return lr_task_key([data, to_dict(spec.model), spec.train.batch_size])


def experiment(spec: LRStudySpec) -> LRExperiment:
    """The study as the LR experiment assembly reads it (:mod:`medtune.cluster.studies.lr_experiment`): the Dice
    maximised, the validation loss watched, the agent's LR bounds those of ``train``."""
    return LRExperiment(
        name=spec.name, methods=spec.methods, seeds=spec.seeds, epochs=spec.train.epochs, agent=spec.agent_config(),
        pbt=spec.pbt, resources=spec.resources, max_failures=spec.max_failures, qlearning_seed=spec.qlearning.seed,
        warm_start=spec.qlearning.warm_start, metric="dice", mode="max", loss_metric="val_loss",
    )


def trial_config(spec: LRStudySpec, info: dict[str, Any]) -> dict[str, Any]:
    """Every trial's config but ``method`` and ``seed``: the spec's sections, the mailbox, the task key."""
    return {
        "study": "lr",
        "lr": spec.train.base_lr,
        "data": to_dict(spec.data),
        "model": to_dict(spec.model),
        "train": to_dict(spec.train),
        "schedules": to_dict(spec.schedules),
        "qlearning": to_dict(spec.qlearning),
        "pbt": to_dict(spec.pbt),
        "tuned": spec.tuned,
        "mailbox": info["mailbox"],
        "task": info["task"],
        "threads": max(1, int(spec.resources.cpus_per_trial)),
    }


def build_tuner(kind: str, spec: LRStudySpec, session_dir: Path, info: dict[str, Any], data: Any,
                fail_fast: FailFast | None = None) -> tune.Tuner:
    """The study's Tuner of ``kind`` (:data:`~medtune.cluster.studies.lr_experiment.STUDY_TUNERS`, or a legacy
    session's two), assembled by :func:`medtune.cluster.studies.lr_experiment.build_tuner`. ``fail_fast`` tells
    after ``fit`` whether an error every trial would repeat stopped the Tuner."""
    from ray import tune  # only when a run is built: loading a spec stays light

    trainable = tune.with_parameters(train_segmentation, data=data)
    return build_lr_tuner(experiment(spec), trainable, trial_config(spec, info), session_dir, info, fail_fast,
                          kind=kind)


def tuner_kinds(spec: LRStudySpec, info: dict[str, Any]) -> list[str]:
    """The Tuners the session of ``info`` runs, in order (a legacy session's two without an empty one)."""
    kinds = list(info.get("tuners") or LEGACY_TUNERS)
    if kinds == list(LEGACY_TUNERS):
        kinds = (["main"] if any(m != "pbt" for m in spec.methods) else []) + (["pbt"] if "pbt" in spec.methods else [])
    return kinds


def tuner_path(kind: str, session_dir: Path) -> Path:
    return session_dir / PBT_DIR if kind == "pbt" else session_dir


def _unfinished(spec: LRStudySpec, results) -> list:
    """Results of trials that stopped before their last epoch without diverging or failing (interrupted)."""
    return [
        r for r in results
        if r.error is None and not (r.metrics or {}).get("diverged")
        and (r.metrics or {}).get("epoch", 0) < spec.train.epochs
    ]


def _finish(spec: LRStudySpec, session_dir: Path, info: dict[str, Any], results, wrap: Any = None) -> int:
    """Write the final Q-table, build the report from MLflow, log the summary run, print the table."""
    from medtune.dashboards.lr_report import build_report  # matplotlib: only when a report is made

    qtable = final_qtable(experiment(spec), session_dir)  # rebuilt from the journal, the scheduler's durable state
    notes = [f"final Q-table ({qtable['table']['updates']} updates): {session_dir / 'qtable.json'}"] if qtable else []
    return finish_session(
        session_dir, info, results, _unfinished(spec, results),
        lambda: with_plan((wrap or (lambda r: r))(
            build_report(info["tracking_uri"], spec.name, info["session"], qtable=qtable)), session_dir),
        notes,
    )


def lr_session_keys(spec: LRStudySpec, session_dir: Path) -> dict[str, Any]:
    """The LR study's own keys in ``medtune.json``: its Ray mailbox, the episodic memory and the task key."""
    return {**session_keys("lr", session_dir, task_key(spec)), "tuners": list(STUDY_TUNERS)}


def run_lr_study(
    spec: LRStudySpec,
    output: str | os.PathLike,
    tracking_uri: str | None = None,
    address: str | None = None,
    origin: dict[str, Any] | None = None,
) -> int:
    """Run the study end to end; returns the process exit status.

    Raises:
        InputError: bad data or an unusable tracking store, before any trial starts.
        InputError: also a trial's, at its first epoch (:mod:`medtune.cluster.runs.fail_fast`): every trial is
            stopped then; another error every trial would repeat stops them too, logs its line and returns 1.
    """
    if spec.tuning is not None:
        return tune_lr_study(spec, output, tracking_uri, address, origin)
    spec, data, planned = prepare_study(spec)  # validates and plans the data before anything starts
    session_dir, info = create_session(spec, output, tracking_uri, origin, lambda d: lr_session_keys(spec, d))
    record_plan(session_dir, data, planned)
    init_ray(address)
    check_resources(spec.resources, remote=is_remote(address))
    return run_in_session(spec, session_dir, info, data)


def run_in_session(spec: LRStudySpec, session_dir: Path, info: dict[str, Any], data: Any, wrap: Any = None) -> int:
    """Every trial of ``spec`` in a created session (Ray started), then the report; the exit status.

    Args:
        wrap: ``report -> report`` applied to the comparison before it is printed and logged (the tuning
            protocol adds its section this way).
    """
    n = len(spec.methods) * len(spec.seeds)
    log(f"experiment {spec.name!r}: {len(spec.methods)} methods x {len(spec.seeds)} seeds = {n} trials, "
        f"{spec.train.epochs} epochs each")
    if "pbt" in spec.methods:
        log(f"PBT population of {len(spec.seeds)} (one member per seed) beside the other methods, in the same Tuner")
    from medtune.cluster.runs.fail_fast import FailFast  # imports Ray Tune: here, so loading a spec stays light

    results: list[Any] = []
    for kind in tuner_kinds(spec, info):
        fail_fast = FailFast()
        results.extend(fit(build_tuner(kind, spec, session_dir, info, data, fail_fast)))
        stopped = fail_fast.error()  # every trial would have failed the same way: that line, no report
        if isinstance(stopped, InputError):
            raise stopped
        if stopped is not None:
            log(str(stopped))
            return 1
        if _unfinished(spec, results):
            break  # interrupted: the next Tuner starts on `medtune resume`
    return _finish(spec, session_dir, info, results, wrap)


def tune_lr_study(spec: Any, output: Any, tracking_uri: str | None = None, address: str | None = None,
                  origin: dict[str, Any] | None = None) -> int:
    """The equal-budget protocol (:mod:`medtune.cluster.studies.tuning`): search every method of ``spec`` with the same
    budget in one session, then run the final comparison on fresh seeds there; the exit status.

    Raises:
        InputError: no method of the spec has a search space, bad data or tracking store (before any trial).
    """
    from medtune.cluster.runs.tracking import METRICS  # imports Ray Tune: here, so loading a spec stays light

    if not searched(spec):
        raise InputError(f"tuning: none of the methods {', '.join(spec.methods)} has a search space; add one of "
                         f"{', '.join(SPACES)}")
    spec, data, planned = prepare_study(spec)
    session_dir, info = create_session(spec, output, tracking_uri, origin, lambda d: lr_session_keys(spec, d))
    record_plan(session_dir, data, planned)
    t = spec.tuning
    log(f"tuning {len(searched(spec))} methods with the same budget: {t.trials} {t.searcher} trials x "
        f"{search_epochs(spec)} epochs each (ASHA {'on' if t.asha else 'off'}, search seed {t.search_seed}); "
        f"then {len(t.final_seeds)} final seeds {list(t.final_seeds)} per method")
    init_ray(address)
    check_resources(spec.resources, remote=is_remote(address))
    epochs, outcomes = search_epochs(spec), []
    base = {
        "study": "lr", "seed": t.search_seed, "lr": spec.train.base_lr,
        "data": to_dict(spec.data), "model": to_dict(spec.model), "train": {**to_dict(spec.train), "epochs": epochs},
        "schedules": to_dict(spec.schedules), "qlearning": to_dict(spec.qlearning), "pbt": to_dict(spec.pbt),
        "search": True, "mailbox": None, "task": info["task"], "threads": max(1, int(spec.resources.cpus_per_trial)),
    }
    for m in searched(spec):
        outcomes.append(search_method(
            t, m, method_bounds(spec, m), {**base, "method": m}, _trainable(spec, data), info,
            session_dir / SEARCH_DIR, metric="dice", mode="max", epochs=epochs,
            max_concurrent=spec.resources.max_concurrent, max_failures=spec.max_failures, metrics=METRICS))
    final = final_spec(spec, outcomes)
    info["spec"] = to_dict(final)  # resume continues the final runs, with the tuned settings
    info["tuning"] = {"settings": to_dict(spec.tuning), "outcomes": outcomes}
    (session_dir / SESSION_FILE).write_text(json.dumps(info, indent=1, default=str))
    notes = [f"{m}: not searched ({NOT_SEARCHED[m]})" for m in spec.methods if m in NOT_SEARCHED]
    if "qlearning" in searched(spec):
        notes.append(PRIVATE_AGENT_NOTE)
    if "effort" in searched(spec):
        notes.append("effort: its search trials recalled no episodic memory and fed none (each judged on its own); "
                     "the final runs recall the finished curves as in medtune run")
    settings = {"trials": t.trials, "epochs": search_epochs(spec), "searcher": t.searcher, "asha": t.asha,
                "metric": "dice", "search_seed": t.search_seed, "final_seeds": list(t.final_seeds)}
    return run_in_session(final, session_dir, info, data,
                          wrap=lambda report: TunedReport(report, outcomes, settings, notes))


def log_session_summary(session_dir: str | os.PathLike) -> None:
    """(Re)build a finished session's report from MLflow, with its final Q-table, and log its summary run
    (``medtune report --sync``)."""
    from medtune.dashboards.lr_report import build_report as build  # matplotlib: only when a report is made

    session_dir = Path(session_dir).expanduser().resolve()
    read_session(session_dir, LR_SESSION_KEYS)
    qpath = session_dir / "qtable.json"
    qtable = json.loads(qpath.read_text()) if qpath.is_file() else None
    session_summary(session_dir, lambda uri, experiment, session: with_plan(
        build(uri, experiment, session, qtable=qtable), session_dir))


def resume_lr_study(session_dir: str | os.PathLike, address: str | None = None) -> int:
    """Continue an interrupted session (``Tuner.restore``) with the Q-table its journal holds."""
    from ray import tune  # only when a run is built: loading a spec stays light

    session_dir = Path(session_dir).expanduser().resolve()
    info = read_session(session_dir, LR_SESSION_KEYS)
    spec = from_dict(LRStudySpec, info["spec"])
    prepare_tracking(info["tracking_uri"])
    if not any(tune.Tuner.can_restore(str(tuner_path(k, session_dir))) for k in tuner_kinds(spec, info)):
        raise InputError(f"{str(session_dir)!r} holds no Tune experiment state to resume; start it again with "
                         "medtune run")
    _, data, planned = prepare_study(spec, session_dir)  # the spec holds the session's planned values already
    record_plan(session_dir, data, planned)
    journal = session_dir / JOURNAL_FILE
    if journal.exists():
        log(f"resuming with the Q-learning journal {journal}")
    init_ray(address)
    check_resources(spec.resources, remote=is_remote(address))
    results = []
    for kind in tuner_kinds(spec, info):
        tuner = restore_or_build(tuner_path(kind, session_dir), _trainable(spec, data),
                                 lambda kind=kind: build_tuner(kind, spec, session_dir, info, data))
        results.extend(fit(tuner))
        if _unfinished(spec, results):
            break
    return _finish(spec, session_dir, info, results)


# The study interface of :mod:`medtune.cluster.studies.registry`.
SPEC = LRStudySpec
run = run_lr_study
resume = resume_lr_study


def build_report(tracking_uri: str, experiment: str, session: str | None = None) -> Any:
    from medtune.dashboards.lr_report import build_report as build  # matplotlib: only when a report is made

    return build(tracking_uri, experiment, session)
