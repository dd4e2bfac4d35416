"""One LR experiment, assembled in one place for both of its callers: ``medtune run`` of the LR study
(:mod:`medtune.cluster.studies.lr_study`) and :func:`medtune.compare` (:mod:`medtune.cluster.studies.compare`,
also behind a spec naming its own ``trainable:``).

Every method x seed is a trial of one ``Tuner`` (a grid over ``method`` and ``seed``) under
:class:`~medtune.searchers.study_scheduler.StudyScheduler`: the
:class:`~medtune.searchers.qlearning_scheduler.QLearningLRScheduler` (Q-learning LR control, paper 000) drives the
``qlearning`` / ``qlearning_warm`` trials and writes its journal (:data:`JOURNAL_FILE`) in the session folder,
PBT (Jaderberg et al., arXiv 1711.09846; :func:`~medtune.searchers.pbt.make_pbt`) its population (one ``pbt``
member per seed), and the :class:`~medtune.searchers.qlearning_scheduler.EpisodeRecorder` feeds the episodic
memory (:data:`MEMORY_FILE`, beside the sessions) with the finished curves of the same task
(:func:`task_key`). The run configuration is the same for both callers: the MLflow tracker, FailFast (an error
every trial would repeat stops them all), the progress lines, the trial files, ``max_failures`` retries and
:data:`KEEP_CHECKPOINTS` checkpoints per trial.

What differs between the callers is only the trainable and its config (and the :class:`LRExperiment` each
builds from its spec): the LR study trains :func:`~medtune.trainables.lr_segmentation.train_segmentation` on its
data, ``compare`` the user's function, which must come through ``medtune.LRControl`` (``own_training``).

Ray, Tune and MLflow are imported inside the functions that build a Tuner: loading a spec (which imports the
study modules and this one) stays light.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtune.cluster.runs.console import tune_verbosity
from medtune.cluster.studies.session import BACKLOG_FILE
from medtune.cluster.studies.spec import ResourcesConfig
from medtune.searchers.pbt import PBTConfig, make_pbt
from medtune.searchers.qlearning_agent import METHOD, WARM_METHOD, QLearningConfig

if TYPE_CHECKING:
    from ray import tune

    from medtune.cluster.runs.fail_fast import FailFast
    from medtune.searchers.qlearning_scheduler import QLearningLRScheduler

__all__ = [
    "JOURNAL_FILE", "KEEP_CHECKPOINTS", "LEGACY_TUNERS", "LRExperiment", "MEMORY_FILE", "PBT_DIR", "QTABLE_FILE",
    "STUDY_TUNERS", "build_tuner", "final_qtable", "fit", "qlearning_scheduler", "run_config", "session_keys",
    "task_key", "with_resources",
]

JOURNAL_FILE = "qlearning-journal.jsonl"  # in the session folder: the Q-learning scheduler's durable state
MEMORY_FILE = "episodic-memory.jsonl"  # beside the sessions (the storage root): every session's finished curves
QTABLE_FILE = "qtable.json"  # in the session folder: the final Q-tables, replayed from the journal
PBT_DIR = "pbt"  # a legacy session's second Tuner (PBT alone), inside the session folder
# Tune's experiment snapshot lags the trials by up to ~10 s; a driver killed in that window is restored from the
# checkpoints the snapshot names, so keep enough that rotation has not deleted them yet (2 was seen to fail in CI).
KEEP_CHECKPOINTS = 6
# The Tuners a session runs, in order: "study" (every method, PBT beside the others), or, in an LR study session
# written before that plan (its medtune.json names no "tuners"), "main" (every method but pbt) and then "pbt".
STUDY_TUNERS, LEGACY_TUNERS = ("study",), ("main", "pbt")


@dataclass(frozen=True)
class LRExperiment:
    """What the assembly reads of a caller's spec (``lr_study.experiment`` / ``compare.experiment`` build it).

    Attributes:
        name: the experiment's name (its progress lines start with it).
        methods, seeds: the grid; every method x seed is one trial.
        epochs: each trial's length (the progress lines count ``len(methods) x len(seeds) x epochs`` epochs).
        agent: the shared Q-learning agent; its ``min_lr`` / ``max_lr`` are PBT's bounds too.
        pbt: PBT's settings (``perturbation_interval`` set).
        resources: what each trial asks of the cluster, and how many run at once.
        max_failures: Tune's retries of a failed trial.
        qlearning_seed, warm_start: the shared table's seed and the Q-table it starts from (``qlearning_warm``).
        metric, mode, loss_metric: the result keys the schedulers and the progress lines read, and the direction.
        own_lr: a PBT member whose config has no ``lr`` starts from its optimizer's own LR.
        own_training: a user's trainable (``medtune.compare``): every trial must come through
            ``LRControl.step`` (the scheduler requires its marker) and its MLflow runs log every number it
            reports (the LR study's log :data:`~medtune.cluster.runs.tracking.METRICS`).
    """

    name: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    agent: QLearningConfig
    pbt: PBTConfig
    resources: ResourcesConfig
    max_failures: int
    qlearning_seed: int = 0
    warm_start: str | None = None
    metric: str = "dice"
    mode: str = "max"
    loss_metric: str = "val_loss"
    own_lr: bool = False
    own_training: bool = False


def task_key(parts: list[Any]) -> str:
    """The episodic memory's task key: curves are comparable when ``parts`` (what shapes them) are the same."""
    key = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def session_keys(kind: str, session_dir: Path, task: str) -> dict[str, Any]:
    """The experiment's keys in ``medtune.json``: its Ray mailbox (``medtune-<kind>-<session>``), the episodic
    memory beside the sessions and the task key."""
    return {"mailbox": f"medtune-{kind}-{session_dir.name}", "memory_path": str(session_dir.parent / MEMORY_FILE),
            "task": task}


def qlearning_scheduler(exp: LRExperiment, session_dir: Path, mailbox: str) -> QLearningLRScheduler:
    """The session's Q-learning scheduler (its journal in ``session_dir``); with ``mailbox=""`` it only replays
    the journal (the final tables, :func:`final_qtable`)."""
    from medtune.searchers.qlearning_scheduler import QLearningLRScheduler  # Ray Tune: only when a run is built

    return QLearningLRScheduler(
        exp.agent, state_path=session_dir / JOURNAL_FILE, mailbox=mailbox, seed=exp.qlearning_seed,
        metric=exp.metric, loss_metric=exp.loss_metric, mode=exp.mode, warm_start=exp.warm_start,
        warm_method=WARM_METHOD if WARM_METHOD in exp.methods else METHOD, require_control=exp.own_training,
    )


def final_qtable(exp: LRExperiment, session_dir: Path) -> dict[str, Any] | None:
    """The final Q-tables rebuilt from the session's journal (the scheduler's durable state), written to
    ``session_dir/qtable.json``; None when no method of the experiment is driven by the Q-learning scheduler."""
    from medtune.searchers.qlearning_scheduler import METHODS as DRIVEN  # Ray Tune: only when a run is built

    if not set(exp.methods) & set(DRIVEN):
        return None
    qtable: dict[str, Any] = qlearning_scheduler(exp, session_dir, mailbox="").snapshot()
    (session_dir / QTABLE_FILE).write_text(json.dumps(qtable, indent=1))
    return qtable


def fit(tuner: Any) -> list[Any]:
    """Run ``tuner``; its results (``ray.tune.Result``, one per trial) as a list."""
    return list(tuner.fit())


def with_resources(trainable: Any, resources: ResourcesConfig) -> Any:
    """``trainable`` asking each trial's CPUs and GPUs of the cluster."""
    from ray import tune  # only when a run is built

    return tune.with_resources(trainable, {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial})


def run_config(exp: LRExperiment, name: str, storage: Path, info: dict[str, Any], *, keep: int = KEEP_CHECKPOINTS,
               progress: str | None = None, stopper: Any = None, fail_fast: FailFast | None = None) -> tune.RunConfig:
    """The experiment's ``RunConfig``: Tune's state in ``storage/name``; the callbacks (MLflow tracker, episode
    recorder, progress lines, FailFast, the trial files); ``keep`` checkpoints per trial; ``max_failures``.

    Args:
        info: the session's ``medtune.json`` (``tracking_uri``, ``experiment_id``, ``session``, ``mailbox``,
            ``memory_path``, ``task``).
        progress: the progress lines' name (default ``exp.name``).
        stopper: a Tune stopper FailFast's stop wraps (compare's first-result check), or None.
        fail_fast: tells after ``fit`` whether an error every trial would repeat stopped the run (default: a
            new one).
    """
    from ray import tune

    # Ray and MLflow: only when a run is built, so loading a spec stays light
    from medtune.cluster.runs.fail_fast import FailFast
    from medtune.cluster.runs.progress import ProgressLog, trial_files
    from medtune.cluster.runs.tracking import MLflowTracker
    from medtune.searchers.qlearning_scheduler import EpisodeRecorder

    session = info["session"]
    fail_fast = fail_fast or FailFast()  # an error every trial would repeat stops them all at once
    tracked: dict[str, Any] = {"metrics": None} if exp.own_training else {}  # None: every number reported
    return tune.RunConfig(
        name=name,
        storage_path=str(storage),
        callbacks=[
            MLflowTracker(info["tracking_uri"], info["experiment_id"], session,
                          backlog=str(Path(info["memory_path"]).parent / session / BACKLOG_FILE),
                          stop_note=fail_fast.stop_note, **tracked),
            EpisodeRecorder(info["mailbox"], info["memory_path"], info["task"], session, metric=exp.metric),
            ProgressLog(progress or exp.name, len(exp.methods) * len(exp.seeds) * exp.epochs, exp.metric),
            fail_fast,  # after ProgressLog: the trial's error is said before the stop
            *trial_files(),
        ],
        stop=fail_fast.stopper(stopper),
        failure_config=tune.FailureConfig(max_failures=exp.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
        verbose=tune_verbosity(),
    )


def build_tuner(exp: LRExperiment, trainable: Any, config: dict[str, Any], session_dir: Path, info: dict[str, Any],
                fail_fast: FailFast | None = None, *, kind: str = "study", stopper: Any = None) -> tune.Tuner:
    """The experiment's Tuner of ``kind``: ``study``, every method x seed in one Tuner under
    :class:`~medtune.searchers.study_scheduler.StudyScheduler` (PBT's members first: they are the longest trials,
    waiting at every perturbation); ``main`` / ``pbt``, a legacy LR study session's two (see
    :data:`LEGACY_TUNERS`).

    Args:
        trainable: the function trainable (the resources of ``exp`` are added here).
        config: every trial's config but ``method`` and ``seed`` (the grid adds those).
        session_dir: the session folder; Tune's state is the folder itself (``pbt``: ``session_dir/pbt``).
        info: the session's ``medtune.json`` (see :func:`run_config`).
        fail_fast, stopper: as in :func:`run_config`.
    """
    from ray import tune

    from medtune.searchers.study_scheduler import StudyScheduler  # Ray Tune: only when a run is built

    agent = exp.agent
    name, storage, keep = session_dir.name, session_dir.parent, KEEP_CHECKPOINTS
    if kind == "study":
        methods = sorted(exp.methods, key=lambda m: m != "pbt")
        scheduler: Any = qlearning_scheduler(exp, session_dir, info["mailbox"])
        if "pbt" in methods:  # MemberPBT restarts a copier before its donor trains on: KEEP_CHECKPOINTS suffice
            scheduler = StudyScheduler(scheduler, make_pbt(exp.pbt, agent.min_lr, agent.max_lr, metric=exp.metric,
                                                           seed=exp.qlearning_seed, mode=exp.mode,
                                                           own_lr=exp.own_lr))
    elif kind == "main":
        scheduler = qlearning_scheduler(exp, session_dir, info["mailbox"])
        methods = [m for m in exp.methods if m != "pbt"]
    elif kind == "pbt":
        scheduler = make_pbt(exp.pbt, agent.min_lr, agent.max_lr, metric=exp.metric, seed=exp.qlearning_seed,
                             mode=exp.mode, own_lr=exp.own_lr)
        methods = ["pbt"]
        # No copier-first restarts in a legacy PBT Tuner: a copier may start up to an interval after the donor's
        # clone was taken, so one perturbation interval more is kept.
        name, storage = PBT_DIR, session_dir
        keep = 2 * int(exp.pbt.perturbation_interval or 0) + KEEP_CHECKPOINTS
    else:
        raise ValueError(f"kind={kind!r} must be one of {', '.join(STUDY_TUNERS + LEGACY_TUNERS)}")
    label = exp.name + (" (pbt)" if kind == "pbt" else "")
    counted = replace(exp, methods=tuple(methods))  # the progress lines count this Tuner's trials
    return tune.Tuner(
        with_resources(trainable, exp.resources),
        param_space={"method": tune.grid_search(list(methods)), "seed": tune.grid_search(list(exp.seeds)), **config},
        # A slot's process runs its next trial too (imports paid once; a PBT member restarts in whichever process
        # is free): every trial seeds itself, so its numbers do not depend on the process it lands in.
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=exp.resources.max_concurrent or None,
                                    reuse_actors=kind != "pbt"),
        run_config=run_config(counted, name, storage, info, keep=keep, progress=label, stopper=stopper,
                              fail_fast=fail_fast),
    )
