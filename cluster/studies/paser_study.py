"""Assemble and run the PaSeR study (paper 003) as one Ray Tune experiment.

1. The data is generated (or loaded) and checked in the driver.
2. The three models f0, f1, f2 are pre-trained once, by one Ray task, and saved in the
   session folder (``pretrained/models.pt``, reused by ``medtune resume``); a second
   task computes the router tables (f0's MC-dropout maps and every model's per-patch
   IoU), which do not depend on ``lam``. Both reach every trial through the object store.
3. One Tuner runs the grid: ``paser`` x ``lams`` x ``seeds`` and each router-free
   baseline x ``seeds`` (:func:`medtune.trainables.paser_trial.train_paser`).
4. The ``random`` baseline of each ``lam`` and seed, computed inside that paser trial at
   its router's cost, is logged as a run of its own; then the report
   (:mod:`medtune.dashboards.paser_report`) is rebuilt from MLflow and logged as the summary run.
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
from medtune.config import from_dict, to_dict
from medtune.searchers.paser import PaSeRConfig, check_grid
from medtune.trainables.paser_data import PaSeRDataConfig, load_paser_data
from medtune.trainables.paser_models import PaSeRModelsConfig, load_models, pretrain_models, router_tables
from medtune.trainables.paser_trial import train_paser

__all__ = ["ARTIFACTS", "METRICS", "PASER_BASELINES", "SPEC", "PaSeRStudySpec", "arms", "build_report",
           "build_tuner", "log_random_runs", "log_session_summary", "prepare_data", "resume", "run", "shared_models"]


PASER_BASELINES = ("small", "medium", "large", "cascade", "random")


@dataclass(frozen=True)
class PaSeRStudySpec(StudySpec):
    """The PaSeR study (paper 003): a Tune grid over the cost weight ``lams`` x ``seeds`` plus the baselines.

    The three models are pre-trained once and shared by every trial; ``router.lam`` is ignored (each
    trial takes its ``lam`` from ``lams``). ``random`` runs inside each ``lam`` trial, at its router's cost.

    Attributes:
        lams: the router's cost weights, one ``paser`` trial per value and seed, each in [0, 1] (0: accuracy only,
            1: cost only), no duplicates, at least one.
        baselines: the router-free methods run beside PaSeR, some of ``small``, ``medium``, ``large`` (every patch
            to f0, f1 or f2), ``cascade`` (f0, then f1 and f2 on the patches the previous model is unsure of) and
            ``random`` (the router's share of patches per model, drawn at random, scored inside each ``lam``
            trial); empty: none but ``random``.
        data: the images segmented (``digits`` or ``microstructure``), their noise and split.
        models: the three segmentation models' sizes and their pre-training budget.
        router: the router's parameters (patch grid, MC-dropout passes, REINFORCE and fine-tuning budgets, the
            cascade's thresholds); its ``lam`` is ignored.
        pretrain_seed: the seed of the one pre-training of the three models (and of the router tables built from
            them) that every trial shares; the trials' own ``seeds`` do not change it.
    """

    KNOWN_METHODS: ClassVar[Sequence[str]] = PASER_BASELINES
    METHOD_KIND: ClassVar[str] = "a PaSeR baseline"
    TITLE: ClassVar[str] = "the PaSeR study's spec"

    name: str = "paser"
    study: str = "paser"
    lams: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)
    baselines: tuple[str, ...] = PASER_BASELINES
    data: PaSeRDataConfig = field(default_factory=PaSeRDataConfig)
    models: PaSeRModelsConfig = field(default_factory=PaSeRModelsConfig)
    router: PaSeRConfig = field(default_factory=PaSeRConfig)
    pretrain_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()  # name, storage, study, seeds and baselines, max_failures
        if not self.lams:
            raise ValueError("lams=[] is an empty grid; list cost weights in [0, 1], e.g. lams: [0, 0.25, 0.5, 0.9]")
        for lam in self.lams:
            if not isinstance(lam, (int, float)) or not 0 <= lam <= 1:
                raise ValueError(f"lams: {lam!r} is outside [0, 1]; a cost weight lies between 0 (accuracy only) "
                                 "and 1 (cost only)")
        if len(set(self.lams)) != len(self.lams):
            raise ValueError(f"lams={list(self.lams)!r} has duplicates; list each cost weight once")
        try:
            check_grid(self.data.canvas, self.router.grid, self.router.margin)
        except ValueError as exc:
            raise ValueError(f"router.{exc} (data.canvas={self.data.canvas})") from None

    def checked_methods(self) -> tuple[str, ...]:
        """The baselines (none is fine: ``random`` runs inside every ``lam`` trial anyway)."""
        return self.baselines or ("random",)


SPEC = PaSeRStudySpec
METRICS = ("epoch", "iou", "gflops", "iou_per_gflop", "share_f0", "share_f1", "share_f2", "iou_unseen",
           "gflops_unseen", "iou_drop", "iou_drop_pct", "cascade_t1", "cascade_t2", "router_val_iou",
           "router_val_reward", "router_val_cost")
ARTIFACTS = {"routing_json": "routing.json"}
PRETRAINED = "pretrained/models.pt"


def prepare_data(spec: PaSeRStudySpec):
    data = load_paser_data(spec.data)
    log(f"data: {spec.data.source} - {len(data.train_images)} training, {len(data.val_images)} validation and "
        f"{len(data.test_images)} test images of {data.image_size}x{data.image_size}; unseen noise "
        f"{spec.data.unseen_noise} on the test images")
    return data


def _pretrain_task(data: Any, models: dict, router: dict, seed: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    return pretrain_models(data, from_dict(PaSeRModelsConfig, models, "models"), seed,
                           from_dict(PaSeRConfig, router, "router"))


def _tables_task(data: Any, states: dict, models: dict, router: dict, seed: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cfg = from_dict(PaSeRConfig, router, "router")
    nets = load_models(states, from_dict(PaSeRModelsConfig, models, "models"), data.image_size, cfg)
    train = router_tables(nets, data.train_images, data.train_masks, cfg)
    val = router_tables(nets, data.val_images, data.val_masks, cfg) if len(data.val_images) else train
    return train, val


def shared_models(spec: PaSeRStudySpec, session_dir: Path, data: Any) -> tuple[dict, Any]:
    """The pre-trained models (from the session folder when an earlier run saved them) and the router tables."""
    import ray
    import torch

    path = session_dir / PRETRAINED
    # Nothing else runs while the shared models train: give the task a whole node (up to 8 CPUs).
    node_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    cpus = max(spec.resources.cpus_per_trial, min(8, int(node_cpus)))
    threads = max(1, int(cpus))
    options = {"num_cpus": cpus, "num_gpus": 0, "max_retries": 2}
    if path.is_file():
        states = torch.load(path, map_location="cpu", weights_only=False)
        log(f"reusing the pre-trained models in {path}")
    else:
        log(f"pre-training f2, f1, then f0 distilled from f2 ({spec.models.pretrain_epochs} + "
            f"{spec.models.distill_epochs} epochs), once for the whole study")
        states = ray.get(ray.remote(_pretrain_task).options(**options).remote(
            data, to_dict(spec.models), to_dict(spec.router), spec.pretrain_seed, threads))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(states, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)  # written whole or not at all: resume trusts what exists
    sizes = {k: sum(v.numel() for v in states[k].values()) for k in ("f0", "f1", "f2")}
    log("models: " + ", ".join(f"{k} {n / 1e6:.3g}M parameters" for k, n in sizes.items()))
    tables = ray.get(ray.remote(_tables_task).options(**options).remote(
        data, states, to_dict(spec.models), to_dict(spec.router), spec.pretrain_seed, threads))
    return states, tables


def _trainable(spec: PaSeRStudySpec, data: Any, states: dict, tables: Any):
    from ray import tune

    return tune.with_resources(tune.with_parameters(train_paser, data=data, states=states, tables=tables),
                               {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial})


def arms(spec: PaSeRStudySpec) -> list[dict[str, Any]]:
    """The grid's arms: ``paser`` at each ``lam``, then each router-free baseline (``random`` rides with paser)."""
    return ([{"method": "paser", "lam": float(lam)} for lam in spec.lams]
            + [{"method": b, "lam": None} for b in spec.baselines if b != "random"])


def build_tuner(spec: PaSeRStudySpec, session_dir: Path, info: dict[str, Any], data: Any, states: dict, tables: Any):
    from ray import tune

    # Ray: only when a run is built, so loading a spec stays light
    from medtune.cluster.runs.progress import ProgressLog, trial_files
    from medtune.cluster.runs.tracking import MLflowTracker

    arm = tune.grid_search(arms(spec))
    param_space = {
        "study": "paser",
        "arm": arm,
        "method": tune.sample_from(lambda c: c["arm"]["method"]),
        "lam": tune.sample_from(lambda c: c["arm"]["lam"]),
        "seed": tune.grid_search(list(spec.seeds)),
        "router": to_dict(spec.router),
        "models": to_dict(spec.models),
        "data": to_dict(spec.data),
        "threads": max(1, int(spec.resources.cpus_per_trial)),
    }
    return tune.Tuner(
        _trainable(spec, data, states, tables),
        param_space=param_space,
        # Trials reuse their worker processes (imports paid once per slot); each trial seeds itself.
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.resources.max_concurrent or None, reuse_actors=True),
        run_config=tune.RunConfig(
            name=session_dir.name,
            storage_path=str(session_dir.parent),
            callbacks=[MLflowTracker(info["tracking_uri"], info["experiment_id"], info["session"],
                                     backlog=backlog_path(session_dir), metrics=METRICS, artifacts=ARTIFACTS),
                       ProgressLog(spec.name, len(arms(spec)) * len(spec.seeds), "iou",
                                   label_keys=("method", "lam", "seed")),
                       *trial_files()],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            verbose=tune_verbosity(),
        ),
    )


def log_random_runs(spec: PaSeRStudySpec, session_dir: Path, info: dict[str, Any], results) -> int:
    """The ``random`` baseline of every finished paser trial as an MLflow run of its own (idempotent)."""
    if "random" not in spec.baselines:
        return 0
    from medtune.cluster.runs.tracking import MLflowTracker  # Ray: only when a run is built

    tracker = MLflowTracker(info["tracking_uri"], info["experiment_id"], info["session"],
                            backlog=backlog_path(session_dir))
    n = 0
    for r in results:
        m, config = r.metrics or {}, r.config or {}
        if config.get("method") != "paser" or "random_iou" not in m:
            continue
        params = {k: v for k, v in config.items() if k not in ("arm", "threads")}
        params["method"] = "random"
        values = {"epoch": 1, **{k[len("random_"):]: v for k, v in m.items() if k.startswith("random_")}}
        tracker.log_run(f"{m.get('trial_id', r.path)}-random", f"random-lam{config['lam']}-seed{config['seed']}",
                        params, values)
        n += 1
    tracker.flush(force=True)
    return n


def _unfinished(results) -> list:
    return [r for r in results if r.error is None and "iou" not in (r.metrics or {})]


def _finish(spec: PaSeRStudySpec, session_dir: Path, info: dict[str, Any], results) -> int:
    from medtune.dashboards.paser_report import build_report as build  # plotly: only when a report is made

    results = list(results)
    log_random_runs(spec, session_dir, info, results)
    notes = [f"Pareto plot: {session_dir / 'report' / 'pareto.png'}; routing images: routing-lam<lam>.png"]
    return finish_session(session_dir, info, results, _unfinished(results),
                          lambda: build(info["tracking_uri"], spec.name, info["session"]), notes)


def run(spec: PaSeRStudySpec, output: str | os.PathLike, tracking_uri: str | None = None,
        address: str | None = None, origin: dict[str, Any] | None = None) -> int:
    """Run the PaSeR study end to end; returns the exit status.

    Raises:
        InputError: bad data or an unusable tracking store, before any trial starts.
    """
    data = prepare_data(spec)
    session_dir, info = create_session(spec, output, tracking_uri, origin)
    n = len(arms(spec)) * len(spec.seeds)
    log(f"experiment {spec.name!r}: paser at lam in {list(spec.lams)} and {len(arms(spec)) - len(spec.lams)} "
        f"baselines x {len(spec.seeds)} seeds = {n} trials (random runs inside each paser trial)")
    init_ray(address)
    check_resources(spec.resources, remote=is_remote(address))
    states, tables = shared_models(spec, session_dir, data)
    return _finish(spec, session_dir, info, build_tuner(spec, session_dir, info, data, states, tables).fit())


def resume(session_dir: str | os.PathLike, address: str | None = None) -> int:
    """Continue an interrupted PaSeR session with the models it pre-trained."""
    session_dir, info, spec, data = reopen_session(session_dir, PaSeRStudySpec, prepare_data, address)
    states, tables = shared_models(spec, session_dir, data)
    tuner = restore_or_build(session_dir, _trainable(spec, data, states, tables),
                             lambda: build_tuner(spec, session_dir, info, data, states, tables))
    return _finish(spec, session_dir, info, tuner.fit())



def build_report(tracking_uri: str, experiment: str, session: str | None = None):
    from medtune.dashboards.paser_report import build_report as build  # plotly: only when a report is made

    return build(tracking_uri, experiment, session)


def log_session_summary(session_dir: str | os.PathLike) -> None:
    session_summary(session_dir, build_report)
