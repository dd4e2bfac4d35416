"""Assemble and run the active-learning study (paper 001, DRLA) as one Ray Tune experiment.

One trial per strategy x seed (:func:`medtune.trainables.active_learning_actors.train_active_learning`),
each owning its Annotator and Learner actors through the trial's placement group
(bundles: the loop, the Learner, the Annotator). The data is loaded and checked
in the driver; every trial's annotation log and round checkpoints live in the
session folder (``SESSION/al/<method>-seed<seed>/``), so a restarted actor, a
retried trial and ``medtune resume`` all continue without annotating twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medtune.cluster.runs.console import tune_verbosity
from medtune.cluster.studies.session import (
    backlog_path,
    check_resources,
    create_session,
    finish_session,
    init_ray,
    is_remote,
    log,
    reopen_session,
    restore_or_build,
)
from medtune.cluster.studies.session import log_session_summary as session_summary
from medtune.cluster.studies.spec import StudySpec
from medtune.config import to_dict
from medtune.errors import InputError
from medtune.trainables.active_learning_actors import bundles, train_active_learning
from medtune.trainables.al_annotator import check_labels
from medtune.trainables.al_config import METHODS as AL_METHODS
from medtune.trainables.al_config import ActiveLearningConfig
from medtune.trainables.classification_data import ClassificationDataConfig, load_classification

__all__ = ["METRICS", "SPEC", "STATE_DIR", "ActiveLearningStudySpec", "build_report", "build_tuner",
           "log_session_summary", "prepare_data", "resume", "run"]


@dataclass(frozen=True)
class ActiveLearningStudySpec(StudySpec):
    """The active-learning study (paper 001): every selection strategy x seed in one Tune experiment.

    Each trial owns an Annotator and a Learner actor (see :mod:`medtune.trainables.active_learning_actors`);
    ``budget`` caps the labels each Annotator gives out (0: the whole training pool).

    Attributes:
        methods: the selection strategies compared (:data:`medtune.trainables.al_config.METHODS`: ``random``,
            ``lc``, ``ms``, ``en``, ``fusion``, ``drla``, ``all``, ``bald``, ``coreset``, ``badge``,
            ``typiclust``, ``stratified_random``), each run once per seed.
        data: the classification pool (source, split, image size) the strategies label from.
        loop: the protocol of each run: the initial labeled share, samples per round, the pool shares scored, the
            learner and DDPG (``drla``).
        budget: the most labels each trial's Annotator gives out, in images (>= 0, at most the training pool);
            0: the whole training pool.
    """

    KNOWN_METHODS: ClassVar[Sequence[str]] = AL_METHODS
    METHOD_KIND: ClassVar[str] = "a selection strategy"
    TITLE: ClassVar[str] = "the active-learning study's spec"

    name: str = "active-learning"
    study: str = "active-learning"
    methods: tuple[str, ...] = AL_METHODS
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    loop: ActiveLearningConfig = field(default_factory=ActiveLearningConfig)
    budget: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()  # name, storage, study, seeds and methods, max_failures
        if self.budget < 0:
            raise ValueError(f"budget={self.budget!r} must be >= 0 labels (0: the whole training pool)")


SPEC = ActiveLearningStudySpec
METRICS = ("epoch", "round", "labeled", "labeled_fraction", "macro_f1", "micro_f1", "recoveries")
STATE_DIR = "al"


def prepare_data(spec: ActiveLearningStudySpec):
    """Load and check the pool: labels in range, no empty class, a budget the pool can meet (exit 2 otherwise)."""
    data = load_classification(spec.data)
    check_labels(data.train_labels, data.num_classes)
    n = len(data.train_labels)
    if spec.budget > n:
        raise InputError(f"budget={spec.budget} is larger than the training pool ({n} samples); "
                         f"set budget to at most {n} (0: the whole pool)")
    if spec.budget and "all" in spec.methods and spec.budget < n:
        raise InputError(f"budget={spec.budget} is below the pool ({n}) but method 'all' needs every label; "
                         "drop 'all' from methods or set budget to 0")
    log(f"data: {spec.data.source} - a pool of {n} training images of {tuple(data.image_shape)} "
        f"({data.num_classes} classes) and {len(data.test_images)} test images")
    return data


def _trainable(spec: ActiveLearningStudySpec, data: Any):
    from ray import tune

    pg = tune.PlacementGroupFactory(bundles(spec.resources.cpus_per_trial, spec.resources.gpus_per_trial))
    return tune.with_resources(tune.with_parameters(train_active_learning, data=data), pg)


def build_tuner(spec: ActiveLearningStudySpec, session_dir: Path, info: dict[str, Any], data: Any):
    from ray import tune

    # Ray: only when a run is built, so loading a spec stays light
    from medtune.cluster.runs.progress import ProgressLog, trial_files
    from medtune.cluster.runs.tracking import MLflowTracker

    param_space = {
        "study": "active-learning",
        "method": tune.grid_search(list(spec.methods)),
        "seed": tune.grid_search(list(spec.seeds)),
        "data": to_dict(spec.data),
        "loop": to_dict(spec.loop),
        "budget": spec.budget,
        "state_root": str(session_dir / STATE_DIR),
        "cpus": spec.resources.cpus_per_trial,
        "gpus": spec.resources.gpus_per_trial,
    }
    return tune.Tuner(
        _trainable(spec, data),
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.resources.max_concurrent or None, reuse_actors=False),
        run_config=tune.RunConfig(
            name=session_dir.name,
            storage_path=str(session_dir.parent),
            callbacks=[MLflowTracker(info["tracking_uri"], info["experiment_id"], info["session"],
                                     backlog=backlog_path(session_dir), metrics=METRICS),
                       ProgressLog(spec.name, None, "macro_f1", label_keys=("method", "seed")), *trial_files()],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            verbose=tune_verbosity(),
        ),
    )


def _unfinished(results) -> list:
    return [r for r in results if r.error is None and not (r.metrics or {}).get("done")]


def _finish(spec: ActiveLearningStudySpec, session_dir: Path, info: dict[str, Any], results) -> int:
    from medtune.dashboards.al_report import build_report as build  # plotly: only when a report is made

    notes = [f"annotation logs: {session_dir / STATE_DIR}/<method>-seed<seed>/annotations.jsonl"]
    return finish_session(session_dir, info, list(results), _unfinished(results),
                          lambda: build(info["tracking_uri"], spec.name, info["session"]), notes)


def run(spec: ActiveLearningStudySpec, output: str | os.PathLike, tracking_uri: str | None = None,
        address: str | None = None, origin: dict[str, Any] | None = None) -> int:
    """Run the active-learning study end to end; returns the exit status.

    Raises:
        InputError: bad data, budget or tracking store, before any trial starts.
    """
    data = prepare_data(spec)
    session_dir, info = create_session(spec, output, tracking_uri, origin)
    n = len(spec.methods) * len(spec.seeds)
    log(f"experiment {spec.name!r}: {len(spec.methods)} strategies x {len(spec.seeds)} seeds = {n} trials, "
        f"each with an Annotator and a Learner actor; n_s={spec.loop.n_s} per round up to "
        f"{spec.loop.fractions[-1]:.0%} of the pool")
    init_ray(address)
    check_resources(spec.resources, remote=is_remote(address))
    return _finish(spec, session_dir, info, build_tuner(spec, session_dir, info, data).fit())


def resume(session_dir: str | os.PathLike, address: str | None = None) -> int:
    """Continue an interrupted session: each trial resumes from its annotation log and round checkpoint."""
    session_dir, info, spec, data = reopen_session(session_dir, ActiveLearningStudySpec, prepare_data, address)
    tuner = restore_or_build(session_dir, _trainable(spec, data), lambda: build_tuner(spec, session_dir, info, data))
    return _finish(spec, session_dir, info, tuner.fit())



def build_report(tracking_uri: str, experiment: str, session: str | None = None):
    from medtune.dashboards.al_report import build_report as build  # plotly: only when a report is made

    return build(tracking_uri, experiment, session)


def log_session_summary(session_dir: str | os.PathLike) -> None:
    session_summary(session_dir, build_report)
