"""Assemble and run the APGA study (paper 002) as one Ray Tune experiment.

1. The data of each regime is loaded (and so checked) in the driver: ``full``
   (every training image) and ``few_shot`` (``spec.few_shot`` per class), one
   held-out test split for both.
2. One classifier per (regime, seed) is pre-trained on the originals
   (Algorithm 1, line 1) by Ray tasks in parallel and saved in the session
   folder (``pretrained/<regime>-seed<seed>.pt``), so every method of that
   seed starts from the same weights and a resumed session does not redo it.
3. One Tuner runs the grid method x regime x seed; each trial
   (:func:`medtune.trainables.augmentation.train_augmentation`) gets the data and the
   pre-trained weights through the object store, reports test accuracy and
   the masks' keep share every epoch, and checkpoints.
4. The report (:mod:`medtune.dashboards.apga_report`) is rebuilt from MLflow and
   logged as the session's summary run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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
from medtune.config import from_dict, to_dict
from medtune.errors import did_you_mean
from medtune.trainables.augmentation import METHODS as AUGMENTATION_METHODS
from medtune.trainables.augmentation import AugmentationConfig, pretrain, train_augmentation
from medtune.trainables.classification_data import ClassificationDataConfig, load_classification

__all__ = ["ARTIFACTS", "METRICS", "PRETRAINED_DIR", "REGIMES", "SPEC", "APGAStudySpec", "build_report",
           "build_tuner", "log_session_summary", "prepare_data", "pretrain_all", "resume", "run"]


REGIMES = ("full", "few_shot")


@dataclass(frozen=True)
class APGAStudySpec(StudySpec):
    """The APGA study (paper 002): every augmentation method x regime x seed in one Tune experiment.

    ``regimes`` are ``full`` (every training image) and ``few_shot`` (``few_shot`` images per class,
    100 as in the paper); both share one held-out test split. ``train.pretrain_epochs`` pre-train one
    classifier per (regime, seed) that all methods of that seed start from.

    Attributes:
        methods: the augmentation methods compared (:data:`medtune.trainables.augmentation.METHODS`: ``none``,
            ``cutout``, ``gradcam``, ``apga``, ``trivialaugment``, ``randaugment``), each run per regime and seed.
        regimes: the training-set sizes, some of ``full`` and ``few_shot``, each once.
        few_shot: training images per class in the ``few_shot`` regime (>= 1; the paper's 100); set here, not
            as ``data.few_shot``, which must stay 0.
        data: the classification images (default: ``cluttered_digits``) and their split.
        train: the training budget and every method's parameters (APGA's policy update included).
    """

    KNOWN_METHODS: ClassVar[Sequence[str]] = AUGMENTATION_METHODS
    METHOD_KIND: ClassVar[str] = "an augmentation method"
    TITLE: ClassVar[str] = "the APGA study's spec"

    name: str = "apga"
    study: str = "apga"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    methods: tuple[str, ...] = AUGMENTATION_METHODS
    regimes: tuple[str, ...] = REGIMES
    few_shot: int = 100
    data: ClassificationDataConfig = field(default_factory=lambda: ClassificationDataConfig(source="cluttered_digits"))
    train: AugmentationConfig = field(default_factory=AugmentationConfig)

    def __post_init__(self) -> None:
        super().__post_init__()  # name, storage, study, seeds and methods, max_failures
        if not self.regimes or len(set(self.regimes)) != len(self.regimes):
            raise ValueError(f"regimes={list(self.regimes)!r} must list some of {', '.join(REGIMES)} once each")
        for r in self.regimes:
            if r not in REGIMES:
                raise ValueError(f"regimes: {r!r} is not a regime{did_you_mean(r, REGIMES)}; use any of "
                                 f"{', '.join(REGIMES)}")
        if "few_shot" in self.regimes and self.few_shot < 1:
            raise ValueError(f"few_shot={self.few_shot!r} must be >= 1 images per class (the paper uses 100)")
        if self.data.few_shot:
            raise ValueError(f"data.few_shot={self.data.few_shot!r}: the study sets it per regime; "
                             "set the top-level few_shot instead and leave data.few_shot at 0")


SPEC = APGAStudySpec
METRICS = ("epoch", "accuracy", "train_loss", "keep_fraction", "final_accuracy")
ARTIFACTS = {"masks_json": "masks.json"}
PRETRAINED_DIR = "pretrained"


def prepare_data(spec: APGAStudySpec) -> dict[str, Any]:
    """``{regime: ClassificationData}``; bad data (or a few-shot size larger than a class) is one line, exit 2."""
    data = {}
    for regime in spec.regimes:
        cfg = replace(spec.data, few_shot=spec.few_shot if regime == "few_shot" else 0)
        data[regime] = d = load_classification(cfg)
        log(f"data ({regime}): {spec.data.source} - {len(d.train_images)} training and {len(d.test_images)} test "
            f"images of {tuple(d.image_shape)}, {d.num_classes} classes")
    return data


def _pretrain_task(data: Any, train: dict[str, Any], seed: int, threads: int) -> dict:
    import ray
    import torch

    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
    return pretrain(data, from_dict(AugmentationConfig, train, "train"), seed, device)


def pretrain_all(spec: APGAStudySpec, session_dir: Path, data: dict[str, Any]) -> dict[str, dict]:
    """The shared pre-trained classifiers, ``{"<regime>/<seed>": state_dict}``: loaded from the session folder
    where a previous (interrupted) run saved them, the others trained now by parallel Ray tasks."""
    import ray
    import torch

    folder = session_dir / PRETRAINED_DIR
    folder.mkdir(exist_ok=True)
    out: dict[str, dict] = {}
    pending = {}
    remote = ray.remote(_pretrain_task).options(
        num_cpus=spec.resources.cpus_per_trial, num_gpus=spec.resources.gpus_per_trial, max_retries=2
    )
    refs = {regime: ray.put(d) for regime, d in data.items()}
    for regime in spec.regimes:
        for seed in spec.seeds:
            path = folder / f"{regime}-seed{seed}.pt"
            if path.is_file():
                out[f"{regime}/{seed}"] = torch.load(path, map_location="cpu", weights_only=True)
            else:
                threads = max(1, int(spec.resources.cpus_per_trial))
                pending[remote.remote(refs[regime], to_dict(spec.train), seed, threads)] = (regime, seed, path)
    if out:
        log(f"reusing {len(out)} pre-trained classifier(s) from {folder}")
    if pending:
        log(f"pre-training {len(pending)} classifier(s) ({spec.train.pretrain_epochs} epochs on the originals, "
            "one per regime x seed, shared by every method)")
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        regime, seed, path = pending.pop(done[0])
        state = ray.get(done[0])
        torch.save(state, path.with_suffix(".tmp"))  # kept: a resumed session does not pre-train again;
        path.with_suffix(".tmp").replace(path)       # written whole or not at all
        out[f"{regime}/{seed}"] = state
    return out


def _trainable(spec: APGAStudySpec, data: dict, pretrained: dict):
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(train_augmentation, data=data, pretrained=pretrained),
        {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial},
    )


def build_tuner(spec: APGAStudySpec, session_dir: Path, info: dict[str, Any], data: dict, pretrained: dict):
    from ray import tune

    # Ray: only when a run is built, so loading a spec stays light
    from medtune.cluster.runs.progress import ProgressLog, trial_files
    from medtune.cluster.runs.tracking import MLflowTracker

    param_space = {
        "study": "apga",
        "method": tune.grid_search(list(spec.methods)),
        "regime": tune.grid_search(list(spec.regimes)),
        "seed": tune.grid_search(list(spec.seeds)),
        "few_shot": spec.few_shot,
        "data": to_dict(spec.data),
        "train": to_dict(spec.train),
        "threads": max(1, int(spec.resources.cpus_per_trial)),
    }
    return tune.Tuner(
        _trainable(spec, data, pretrained),
        param_space=param_space,
        # Trials reuse their worker processes (imports paid once per slot); each trial seeds itself.
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.resources.max_concurrent or None, reuse_actors=True),
        run_config=tune.RunConfig(
            name=session_dir.name,
            storage_path=str(session_dir.parent),
            callbacks=[MLflowTracker(info["tracking_uri"], info["experiment_id"], info["session"],
                                     backlog=backlog_path(session_dir), metrics=METRICS, artifacts=ARTIFACTS),
                       ProgressLog(spec.name, len(spec.methods) * len(spec.regimes) * len(spec.seeds)
                                   * spec.train.epochs, "accuracy", label_keys=("method", "regime", "seed")),
                       *trial_files()],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=tune_verbosity(),
        ),
    )


def _unfinished(spec: APGAStudySpec, results) -> list:
    return [r for r in results if r.error is None and (r.metrics or {}).get("epoch", 0) < spec.train.epochs]


def _finish(spec: APGAStudySpec, session_dir: Path, info: dict[str, Any], results) -> int:
    from medtune.dashboards.apga_report import build_report as build  # plotly: only when a report is made

    notes = [f"mask images: {session_dir / 'report'}/masks-<regime>.png; accuracy curves: accuracy_curves.png"]
    return finish_session(session_dir, info, list(results), _unfinished(spec, results),
                          lambda: build(info["tracking_uri"], spec.name, info["session"]), notes)


def run(
    spec: APGAStudySpec,
    output: str | os.PathLike,
    tracking_uri: str | None = None,
    address: str | None = None,
    origin: dict[str, Any] | None = None,
) -> int:
    """Run the APGA study end to end; returns the exit status.

    Raises:
        InputError: bad data or an unusable tracking store, before any trial starts.
    """
    data = prepare_data(spec)
    session_dir, info = create_session(spec, output, tracking_uri, origin)
    n = len(spec.methods) * len(spec.regimes) * len(spec.seeds)
    log(f"experiment {spec.name!r}: {len(spec.methods)} methods x {len(spec.regimes)} regimes x {len(spec.seeds)} "
        f"seeds = {n} trials, {spec.train.pretrain_epochs} pre-training + {spec.train.epochs} epochs each")
    init_ray(address)
    check_resources(spec.resources, remote=is_remote(address))
    pretrained = pretrain_all(spec, session_dir, data)
    results = build_tuner(spec, session_dir, info, data, pretrained).fit()
    return _finish(spec, session_dir, info, results)


def resume(session_dir: str | os.PathLike, address: str | None = None) -> int:
    """Continue an interrupted APGA session: saved pre-trained classifiers, then ``Tuner.restore``."""
    session_dir, info, spec, data = reopen_session(session_dir, APGAStudySpec, prepare_data, address)
    pretrained = pretrain_all(spec, session_dir, data)  # those saved are reused
    tuner = restore_or_build(session_dir, _trainable(spec, data, pretrained),
                             lambda: build_tuner(spec, session_dir, info, data, pretrained))
    return _finish(spec, session_dir, info, tuner.fit())



def build_report(tracking_uri: str, experiment: str, session: str | None = None):
    from medtune.dashboards.apga_report import build_report as build  # plotly: only when a report is made

    return build(tracking_uri, experiment, session)


def log_session_summary(session_dir: str | os.PathLike) -> None:
    session_summary(session_dir, build_report)
