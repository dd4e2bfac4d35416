"""Assemble and run the learning-rate study as Ray Tune experiments in one session.

Every method x seed of the spec is a trial, and every trial runs in one ``Tuner`` (a grid over ``method`` and
``seed``) under :class:`~medtune.searchers.study_scheduler.StudyScheduler`: the Q-learning scheduler drives the
``qlearning`` / ``qlearning_warm`` trials, PBT its population (one ``pbt`` member per seed), and a slot a waiting
PBT member frees goes to another trial at once, so no slot idles while trials are pending. The trials log to one
MLflow experiment and session through :class:`~medtune.cluster.tracking.MLflowTracker`, and the comparison is
built from MLflow at the end. (Sessions written before this plan ran ``pbt`` as a second Tuner in
``<session>/pbt``; ``medtune resume`` still continues them that way.)

The session folder ``ROOT/<name>-<timestamp>/`` (``ROOT``: the storage root, else
``--output``; see :mod:`medtune.cluster.storage`) holds Tune's experiment state,
``medtune.json`` (what ``medtune resume`` needs), the Q-learning journal and the
report files; the episodic memory is ``ROOT/episodic-memory.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from medtune.cluster.session import (
    BACKLOG_FILE,
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
from medtune.errors import InputError
from medtune.config import from_dict, to_dict
from dataclasses import dataclass, field, fields, make_dataclass
from medtune.cluster.console import tune_verbosity
from medtune.cluster.tuning import check_spaces
from medtune.cluster.spec import ResourcesConfig, check_name, check_seeds_and_methods, check_storage
from medtune.searchers.lr_schedules import ScheduleConfig
from medtune.searchers.pbt import PBTConfig
from medtune.searchers.qlearning_agent import QLearningConfig, load_qtable_file
from medtune.searchers.search_spaces import TuningConfig
from medtune.trainables.data import DataConfig
from medtune.trainables.segmentation import METHODS, ModelConfig, TrainConfig


def _check_warm_start(self) -> None:
    if self.warm_start is None:
        return
    if not Path(self.warm_start).expanduser().is_file():
        raise ValueError(f"warm_start={self.warm_start!r} is not a file; give the qtable.json of an earlier experiment")
    load_qtable_file(Path(self.warm_start).expanduser(), QLearningConfig())  # one line naming the file if it is no Q-table


# The ``qlearning:`` section: every QLearningConfig field but the LR bounds (those come from ``train``),
# plus where to warm-start from and the seed of the shared table. Derived, so the two never drift apart.
LR_BOUNDS = ("base_lr", "min_lr", "max_lr")
QLearningSpec = make_dataclass(
    "QLearningSpec",
    [(f.name, f.type, field(default=f.default)) for f in fields(QLearningConfig) if f.name not in LR_BOUNDS]
    + [("warm_start", "str | None", field(default=None)), ("seed", "int", field(default=0))],
    frozen=True,
    namespace={"__post_init__": _check_warm_start, "__doc__": "The spec's qlearning section (LR bounds come from train)."},
)
QLearningSpec.__module__ = __name__  # picklable, like every other spec class


@dataclass(frozen=True)
class LRStudySpec:
    """The learning-rate study: every method x every seed in one Tune experiment."""

    name: str = "lr-schedulers"
    study: str = "lr"
    description: str = ""
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedules: ScheduleConfig = field(default_factory=ScheduleConfig)
    qlearning: QLearningSpec = field(default_factory=QLearningSpec)
    pbt: PBTConfig = field(default_factory=PBTConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 2
    storage: str | None = None  # the session state's root (default: --output); see medtune.cluster.storage
    smoke: dict[str, Any] = field(default_factory=dict)
    tuning: TuningConfig | None = None  # set: `medtune run` runs the equal-budget protocol (medtune.cluster.tuning)
    tuned: dict[str, Any] = field(default_factory=dict)  # {method: {dotted key: value}}: per-method settings

    def __post_init__(self) -> None:
        check_name(self.name)
        check_storage(self.storage)
        if self.study != "lr":
            raise ValueError(f"study={self.study!r}: this is the LR study's spec; set study: lr")
        check_seeds_and_methods(self.seeds, self.methods, METHODS, "an LR method")
        if "qlearning_warm" in self.methods and not self.qlearning.warm_start:
            raise ValueError(
                "methods: 'qlearning_warm' needs qlearning.warm_start; give the qtable.json of an earlier "
                "experiment, e.g. --set qlearning.warm_start=medtune-runs/<session>/qtable.json"
            )
        if self.max_failures < 0:
            raise ValueError(f"max_failures={self.max_failures!r} must be >= 0")
        try:
            self.agent_config()
        except ValueError as exc:
            raise ValueError(f"qlearning.{exc}") from None
        self._check_tuned()
        if self.tuning is not None:
            check_spaces(self)

    def _check_tuned(self) -> None:
        """Every ``tuned`` method is in ``methods`` and its settings build the sections they set."""
        from medtune.searchers.search_spaces import apply_values

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

JOURNAL_FILE = "qlearning-journal.jsonl"
MEMORY_FILE = "episodic-memory.jsonl"
PBT_DIR = "pbt"


def prepare_data(spec: LRStudySpec):
    """Check the study's data in the driver, before Ray starts, and build the network once on it
    (``in_channels`` from the data's modalities, ``out_channels`` from its classes).

    Returns the split as MONAI data lists (:func:`~medtune.trainables.data.split_datalists`): a Decathlon task
    travels to the trials as file paths, and each trial caches its volumes itself (``CacheDataset``)."""
    from medtune.trainables.data import split_datalists
    from medtune.trainables.networks import check_network

    data = split_datalists(spec.data)
    log(
        f"data: {spec.data.source} - {len(data.train)} training, {len(data.val)} validation and "
        f"{len(data.test)} test volumes of {tuple(data.spatial_size)} with {data.in_channels} channel(s), "
        f"{spec.data.cache_rate:.0%} cached per trial"
    )
    n_params = check_network(spec.model, data.in_channels, data.num_classes,
                             tuple(spec.data.patch_size or spec.data.spatial_size))  # what the network sees in training
    log(f"model: {spec.model.name} with {n_params:,} parameters")
    return data


def _trainable(spec: LRStudySpec, data: Any):
    from ray import tune

    from medtune.trainables.segmentation import train_segmentation

    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(train_segmentation, data=data), resources)


def task_key(spec: LRStudySpec) -> str:
    """Curves are comparable (for the episodic memory) when data, model and batch size are the same
    (``data.cache_rate`` changes memory and speed, not the curves, so it is left out)."""
    data = {k: v for k, v in to_dict(spec.data).items() if k != "cache_rate"}
    key = json.dumps([data, to_dict(spec.model), spec.train.batch_size], sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


# Tune's experiment snapshot lags the trials by up to ~10 s; a driver killed in that window is restored from the
# checkpoints the snapshot names, so keep enough that rotation has not deleted them yet (2 was seen to fail in CI).
KEEP_CHECKPOINTS = 6


def _run_config(spec: LRStudySpec, name: str, storage: Path, info: dict[str, Any], keep: int = KEEP_CHECKPOINTS,
                progress: tuple[str, int] = ("", 0)):
    from ray import tune

    from medtune.cluster.progress import ProgressLog, trial_files
    from medtune.cluster.tracking import MLflowTracker
    from medtune.searchers.qlearning_scheduler import EpisodeRecorder

    session = info["session"]
    return tune.RunConfig(
        name=name,
        storage_path=str(storage),
        callbacks=[
            MLflowTracker(info["tracking_uri"], info["experiment_id"], session,
                          backlog=str(Path(info["memory_path"]).parent / session / BACKLOG_FILE)),
            EpisodeRecorder(info["mailbox"], info["memory_path"], info["task"], session),
            ProgressLog(progress[0] or spec.name, progress[1] or None, "dice"),
            *trial_files(),
        ],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        # KEEP_CHECKPOINTS, or for a legacy session's PBT Tuner (no copier-first restarts there) one perturbation
        # interval more: a copier there may start up to an interval after the donor's clone was taken.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
        verbose=tune_verbosity(),
    )


def qlearning_scheduler(spec: LRStudySpec, session_dir: Path, mailbox: str):
    """The session's Q-learning scheduler; also rebuilds the final tables from its journal at the end."""
    from medtune.searchers.qlearning_scheduler import METHOD, WARM_METHOD, QLearningLRScheduler

    return QLearningLRScheduler(
        spec.agent_config(),
        state_path=session_dir / JOURNAL_FILE,
        mailbox=mailbox,
        seed=spec.qlearning.seed,
        warm_start=spec.qlearning.warm_start,
        warm_method=WARM_METHOD if WARM_METHOD in spec.methods else METHOD,
    )


# The Tuners a session runs, in order: "study" (every method, PBT beside the others), or, in a session written
# before that plan (its medtune.json names no "tuners"), "main" (every method but pbt) and then "pbt".
STUDY_TUNERS, LEGACY_TUNERS = ("study",), ("main", "pbt")


def build_tuner(kind: str, spec: LRStudySpec, session_dir: Path, info: dict[str, Any], data: Any):
    """The study's Tuner of ``kind`` (see ``STUDY_TUNERS``): ``study``, every method in one Tuner under
    :class:`~medtune.searchers.study_scheduler.StudyScheduler`; ``main`` / ``pbt``, a legacy session's two."""
    from ray import tune

    from medtune.searchers.pbt import make_pbt
    from medtune.searchers.study_scheduler import StudyScheduler

    common = {
        "study": "lr",
        "seed": tune.grid_search(list(spec.seeds)),
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
    name, storage, keep = session_dir.name, session_dir.parent, KEEP_CHECKPOINTS
    if kind == "study":
        # PBT's members first: they are the study's longest trials (they wait at every perturbation).
        methods = sorted(spec.methods, key=lambda m: m != "pbt")
        scheduler = qlearning_scheduler(spec, session_dir, info["mailbox"])
        if "pbt" in methods:  # MemberPBT restarts a copier before its donor trains on: KEEP_CHECKPOINTS suffice
            scheduler = StudyScheduler(scheduler, make_pbt(spec.pbt, spec.train.min_lr, spec.train.max_lr,
                                                           seed=spec.qlearning.seed))
    elif kind == "main":
        scheduler = qlearning_scheduler(spec, session_dir, info["mailbox"])
        methods = [m for m in spec.methods if m != "pbt"]
    else:
        scheduler = make_pbt(spec.pbt, spec.train.min_lr, spec.train.max_lr, seed=spec.qlearning.seed)
        methods = ["pbt"]
        name, storage, keep = PBT_DIR, session_dir, 2 * spec.pbt.perturbation_interval + KEEP_CHECKPOINTS
    # Trials reuse their worker processes (torch and MONAI are imported once per slot, not once per trial; a
    # PBT member restarts in whichever process is free); every trial seeds itself, so its numbers do not depend
    # on the process it lands in.
    tune_config = tune.TuneConfig(
        scheduler=scheduler, max_concurrent_trials=spec.resources.max_concurrent or None, reuse_actors=kind != "pbt"
    )
    return tune.Tuner(
        _trainable(spec, data),
        param_space={"method": tune.grid_search(methods), **common},
        tune_config=tune_config,
        run_config=_run_config(spec, name, storage, info, keep,
                               progress=(spec.name + (" (pbt)" if kind == "pbt" else ""),
                                         len(methods) * len(spec.seeds) * spec.train.epochs)),
    )


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
    from medtune.dashboards.report import build_report
    from medtune.searchers.qlearning_scheduler import METHODS

    # The journal is the scheduler's durable state; rebuild the final tables from it.
    replay = qlearning_scheduler(spec, session_dir, mailbox="")
    qtable = replay.snapshot() if set(spec.methods) & set(METHODS) else None
    if qtable is not None:
        (session_dir / "qtable.json").write_text(json.dumps(qtable, indent=1))
    notes = [f"final Q-table ({qtable['table']['updates']} updates): {session_dir / 'qtable.json'}"] if qtable else []
    return finish_session(
        session_dir, info, results, _unfinished(spec, results),
        lambda: (wrap or (lambda r: r))(build_report(info["tracking_uri"], spec.name, info["session"], qtable=qtable)),
        notes,
    )


def lr_session_keys(spec: LRStudySpec, session_dir: Path) -> dict[str, Any]:
    """The LR study's own keys in ``medtune.json``: its Ray mailbox, the episodic memory and the task key."""
    return {
        "mailbox": f"medtune-lr-{session_dir.name}",
        "memory_path": str(session_dir.parent / MEMORY_FILE),
        "task": task_key(spec),
        "tuners": list(STUDY_TUNERS),
    }


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
    """
    if spec.tuning is not None:
        return tune_lr_study(spec, output, tracking_uri, address, origin)
    data = prepare_data(spec)  # validates the data before anything starts
    session_dir, info = create_session(spec, output, tracking_uri, origin, lambda d: lr_session_keys(spec, d))
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
    results = []
    for kind in tuner_kinds(spec, info):
        results.extend(build_tuner(kind, spec, session_dir, info, data).fit())
        if _unfinished(spec, results):
            break  # interrupted: the next Tuner starts on `medtune resume`
    return _finish(spec, session_dir, info, results, wrap)


def tune_lr_study(spec: Any, output: Any, tracking_uri: str | None = None, address: str | None = None,
                  origin: dict[str, Any] | None = None) -> int:
    """The equal-budget protocol (:mod:`medtune.cluster.tuning`): search every method of ``spec`` with the same
    budget in one session, then run the final comparison on fresh seeds there; the exit status.

    Raises:
        InputError: no method of the spec has a search space, bad data or tracking store (before any trial).
    """
    from medtune.cluster.storage import SESSION_FILE
    from medtune.cluster.tracking import METRICS
    from medtune.cluster.tuning import (PRIVATE_AGENT_NOTE, SEARCH_DIR, final_spec, method_bounds, search_epochs,
                                        search_method, searched)
    from medtune.dashboards.tuning_report import TunedReport
    from medtune.searchers.search_spaces import NOT_SEARCHED, SPACES

    if not searched(spec):
        raise InputError(f"tuning: none of the methods {', '.join(spec.methods)} has a search space; add one of "
                         f"{', '.join(SPACES)}")
    data = prepare_data(spec)
    session_dir, info = create_session(spec, output, tracking_uri, origin, lambda d: lr_session_keys(spec, d))
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
    """(Re)build a finished session's report from MLflow and log its summary run (after ``report --sync``)."""
    from medtune.dashboards.report import build_report, log_summary

    session_dir = Path(session_dir).expanduser().resolve()
    info = read_session(session_dir, LR_SESSION_KEYS)
    qpath = session_dir / "qtable.json"
    qtable = json.loads(qpath.read_text()) if qpath.is_file() else None
    report = build_report(info["tracking_uri"], info["spec"]["name"], info["session"], qtable=qtable)
    log_summary(info["tracking_uri"], report, session_dir / "report")


def resume_lr_study(session_dir: str | os.PathLike, address: str | None = None) -> int:
    """Continue an interrupted session (``Tuner.restore``) with the Q-table its journal holds."""
    from ray import tune

    session_dir = Path(session_dir).expanduser().resolve()
    info = read_session(session_dir, LR_SESSION_KEYS)
    spec = from_dict(LRStudySpec, info["spec"])
    prepare_tracking(info["tracking_uri"])
    if not any(tune.Tuner.can_restore(str(tuner_path(k, session_dir))) for k in tuner_kinds(spec, info)):
        raise InputError(f"{str(session_dir)!r} holds no Tune experiment state to resume; start it again with medtune run")
    data = prepare_data(spec)
    journal = session_dir / JOURNAL_FILE
    if journal.exists():
        log(f"resuming with the Q-learning journal {journal}")
    init_ray(address)
    check_resources(spec.resources, remote=is_remote(address))
    results = []
    for kind in tuner_kinds(spec, info):
        tuner = restore_or_build(tuner_path(kind, session_dir), _trainable(spec, data),
                                 lambda: build_tuner(kind, spec, session_dir, info, data))
        results.extend(tuner.fit())
        if _unfinished(spec, results):
            break
    return _finish(spec, session_dir, info, results)


# The study interface of :mod:`medtune.cluster.studies`.
SPEC = LRStudySpec
run = run_lr_study
resume = resume_lr_study


def build_report(tracking_uri: str, experiment: str, session: str | None = None):
    from medtune.dashboards.report import build_report as build

    return build(tracking_uri, experiment, session)
