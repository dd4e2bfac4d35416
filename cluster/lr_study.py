"""Assemble and run the learning-rate study as Ray Tune experiments in one session.

Every method x seed of the spec is a trial. All methods but ``pbt`` run in one
``Tuner`` (a grid over ``method`` and ``seed``) scheduled by
:class:`QLearningLRScheduler`, which drives only the ``qlearning`` /
``qlearning_warm`` trials; ``pbt`` runs in a second Tuner right after (PBT
restarts trials, so it cannot share the first one's scheduler). Both log to the
same MLflow experiment and session through :class:`~cluster.tracking.MLflowTracker`,
and the comparison is built from MLflow at the end.

The session folder ``OUTPUT/<name>-<timestamp>/`` holds Tune's experiment
state, ``medtune.json`` (what ``medtune resume`` needs), the Q-learning journal
and the report files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from cluster.spec import LRStudySpec
from trainables.errors import InputError
from trainables.typed import from_dict, to_dict

SESSION_FILE = "medtune.json"
JOURNAL_FILE = "qlearning-journal.jsonl"
MEMORY_FILE = "episodic-memory.jsonl"
BACKLOG_FILE = "mlflow-backlog.jsonl"  # MLflow records not delivered yet (server unreachable)  # beside the MLflow store: outlives each experiment
PBT_DIR = "pbt"


def log(msg: str) -> None:
    print(f"[medtune] {msg}", flush=True)


def prepare_data(spec: LRStudySpec):
    """Load (and so validate) the study's data in the driver, before Ray starts."""
    from trainables.data import load_split

    data = load_split(spec.data)
    n_test = 0 if data.test_images is None else len(data.test_images)
    log(
        f"data: {spec.data.source} - {len(data.train_images)} training, {len(data.val_images)} validation and "
        f"{n_test} test volumes of {tuple(data.train_images.shape[2:])}"
    )
    return data


def init_ray(address: str | None) -> None:
    import ray

    # Tune warns when a trial checkpoints every epoch with num_to_keep set; locally the snapshot costs ~10 ms.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        if address.startswith(("http://", "https://")):
            raise InputError(
                f"--address {address!r} is a dashboard URL; `medtune run` needs the cluster address HOST:6379 "
                "(use the dashboard URL with `medtune submit`)"
            )
        try:
            ray.init(address=address, log_to_driver=True)
        except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError, ...
            raise InputError(
                f"cannot connect to the Ray cluster at {address!r} ({str(exc).splitlines()[0][:160]}); "
                "check --address / RAY_ADDRESS, the token (RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH) or start the cluster"
            ) from None
        log(f"connected to the Ray cluster at {address}")
    else:
        ray.init(include_dashboard=False, log_to_driver=True)
        log(f"started a local Ray instance with {int(ray.cluster_resources().get('CPU', 0))} CPUs")


def check_resources(spec: LRStudySpec, remote: bool) -> None:
    """Before any trial: no node can hold one trial -> exit 2 on a local Ray (Tune would wait forever),
    a loud warning on a cluster (an autoscaler may still add such a node)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    want = {"CPU": spec.resources.cpus_per_trial, "GPU": spec.resources.gpus_per_trial}
    if any(all(res.get(k, 0) >= v for k, v in want.items()) for res in nodes):
        return
    biggest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    msg = (f"no node can hold one trial (resources.cpus_per_trial={want['CPU']:g}, gpus_per_trial={want['GPU']:g}; "
           f"the largest node has {biggest.get('CPU', 0):g} CPUs and {biggest.get('GPU', 0):g} GPUs)")
    if not remote:
        raise InputError(f"{msg}; lower resources.cpus_per_trial / gpus_per_trial")
    log(f"WARNING: {msg}; trials wait until the autoscaler adds such a node")


def _trainable(spec: LRStudySpec, data: Any):
    from ray import tune

    from trainables.segmentation import train_segmentation

    resources = {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(train_segmentation, data=data), resources)


def task_key(spec: LRStudySpec) -> str:
    """Curves are comparable (for the episodic memory) when data, model and batch size are the same."""
    key = json.dumps([to_dict(spec.data), to_dict(spec.model), spec.train.batch_size], sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _run_config(spec: LRStudySpec, name: str, storage: Path, info: dict[str, Any], keep: int = 2):
    from ray import tune

    from cluster.tracking import MLflowTracker
    from searchers.qlearning_scheduler import EpisodeRecorder

    session = info["session"]
    return tune.RunConfig(
        name=name,
        storage_path=str(storage),
        callbacks=[
            MLflowTracker(info["tracking_uri"], info["experiment_id"], session,
                          backlog=str(Path(info["memory_path"]).parent / session / BACKLOG_FILE)),
            EpisodeRecorder(info["mailbox"], info["memory_path"], info["task"], session),
        ],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        # PBT clones a member's checkpoint at a perturbation; a copier may start up to one interval later
        # (synchronous PBT, fewer CPUs than members), so keep that many more.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
        verbose=1,
    )


def qlearning_scheduler(spec: LRStudySpec, session_dir: Path, mailbox: str):
    """The session's Q-learning scheduler; also rebuilds the final tables from its journal at the end."""
    from searchers.qlearning_scheduler import METHOD, WARM_METHOD, QLearningLRScheduler

    return QLearningLRScheduler(
        spec.agent_config(),
        state_path=session_dir / JOURNAL_FILE,
        mailbox=mailbox,
        seed=spec.qlearning.seed,
        warm_start=spec.qlearning.warm_start,
        warm_method=WARM_METHOD if WARM_METHOD in spec.methods else METHOD,
    )


def build_tuner(kind: str, spec: LRStudySpec, session_dir: Path, info: dict[str, Any], data: Any):
    """The study's Tuner of ``kind``: ``main`` (every method but pbt, with the Q-learning scheduler)
    or ``pbt`` (the PBT population, one member per seed). Both log to the same session and experiment."""
    from ray import tune

    from searchers.pbt import make_pbt

    common = {
        "seed": tune.grid_search(list(spec.seeds)),
        "lr": spec.train.base_lr,
        "data": to_dict(spec.data),
        "model": to_dict(spec.model),
        "train": to_dict(spec.train),
        "schedules": to_dict(spec.schedules),
        "qlearning": to_dict(spec.qlearning),
        "pbt": to_dict(spec.pbt),
        "mailbox": info["mailbox"],
        "task": info["task"],
        "threads": max(1, int(spec.resources.cpus_per_trial)),
    }
    if kind == "main":
        scheduler = qlearning_scheduler(spec, session_dir, info["mailbox"])
        methods = [m for m in spec.methods if m != "pbt"]
        name, storage, keep = session_dir.name, session_dir.parent, 2
    else:
        scheduler = make_pbt(spec.pbt, spec.train.min_lr, spec.train.max_lr, seed=spec.qlearning.seed)
        methods = ["pbt"]
        name, storage, keep = PBT_DIR, session_dir, 2 * spec.pbt.perturbation_interval + 2
    tune_config = tune.TuneConfig(
        scheduler=scheduler, max_concurrent_trials=spec.resources.max_concurrent or None, reuse_actors=False
    )
    return tune.Tuner(
        _trainable(spec, data),
        param_space={"method": tune.grid_search(methods), **common},
        tune_config=tune_config,
        run_config=_run_config(spec, name, storage, info, keep),
    )


def tuner_kinds(spec: LRStudySpec) -> list[str]:
    kinds = ["main"] if any(m != "pbt" for m in spec.methods) else []
    return kinds + (["pbt"] if "pbt" in spec.methods else [])


def tuner_path(kind: str, session_dir: Path) -> Path:
    return session_dir if kind == "main" else session_dir / PBT_DIR


def _unfinished(spec: LRStudySpec, results) -> list:
    """Results of trials that stopped before their last epoch without diverging or failing (interrupted)."""
    return [
        r for r in results
        if r.error is None and not (r.metrics or {}).get("diverged")
        and (r.metrics or {}).get("epoch", 0) < spec.train.epochs
    ]


def _finish(spec: LRStudySpec, session_dir: Path, info: dict[str, Any], results) -> int:
    """Write the final Q-table, build the report from MLflow, log the summary run, print the table."""
    from dashboards.report import build_report, log_summary
    from searchers.qlearning_scheduler import METHODS

    # The journal is the scheduler's durable state; rebuild the final tables from it.
    replay = qlearning_scheduler(spec, session_dir, mailbox="")
    qtable = replay.snapshot() if set(spec.methods) & set(METHODS) else None
    if qtable is not None:
        (session_dir / "qtable.json").write_text(json.dumps(qtable, indent=1))
    errors = [r for r in results if r.error is not None]
    unfinished = _unfinished(spec, results)
    try:
        report = build_report(info["tracking_uri"], spec.name, info["session"], qtable=qtable)
    except Exception as exc:  # the tracking server is down at the very end: the runs are safe in the backlog
        log(f"the comparison cannot be built now: MLflow at {info['tracking_uri']} failed "
            f"({str(exc).splitlines()[0][:160]}). Training finished; deliver what is buffered and build the "
            f"report with: medtune report --sync {session_dir}")
        return 1
    if unfinished:
        print()
        print(report.text())
        print()
        log(f"interrupted: {len(unfinished)} of {len(results)} trials unfinished; the table above is partial "
            f"and no summary run was logged. Continue with: medtune resume {session_dir}")
        return 130
    try:
        log_summary(info["tracking_uri"], report, session_dir / "report")
    except Exception as exc:
        log(f"the summary run could not be logged ({str(exc).splitlines()[0][:160]}); the report files are in "
            f"{session_dir / 'report'}; log it later with: medtune report --sync {session_dir}")
        print(report.text())
        return 1
    print()
    print(report.text())
    print()
    if qtable is not None:
        log(f"final Q-table ({qtable['table']['updates']} updates): {session_dir / 'qtable.json'}")
    log(f"report files: {session_dir / 'report'}")
    uri = info["tracking_uri"]
    if uri.startswith(("http://", "https://")):
        log(f"browse every run: {uri} (the MLflow server)")
    else:
        log(f"browse every run: medtune ui --output {session_dir.parent}"
            + (f" --tracking-uri {uri}" if info.get("custom_uri") else ""))
    if errors:
        log(f"{len(errors)} trial(s) failed: " + "; ".join(str(r.error).splitlines()[0][:120] for r in errors))
        return 1
    return 0


def prepare_tracking(uri: str) -> None:
    """Before any trial (run and resume): exit 2 if the server is unreachable; make requests fail fast."""
    from cluster.store import check_reachable

    check_reachable(uri)
    if uri.startswith(("http://", "https://")):
        # The tracker buffers and retries by itself: a failed request should fail fast, not block training.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def session_info(
    spec: LRStudySpec, session_dir: Path, tracking_uri: str, experiment_id: str, origin: dict | None = None
) -> dict[str, Any]:
    """What the session's Tuners, ``medtune resume`` and the report need (written as ``medtune.json``)."""
    return {
        "session": session_dir.name,
        "spec": to_dict(spec),
        "tracking_uri": tracking_uri,
        "experiment_id": experiment_id,
        "mailbox": f"medtune-lr-{session_dir.name}",
        "memory_path": str(session_dir.parent / MEMORY_FILE),
        "task": task_key(spec),
        "origin": origin or {},
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
    from cluster.store import default_tracking_uri, ensure_experiment

    output_dir = Path(output).expanduser().resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output {str(output_dir)!r} is a file; give a folder (default ./medtune-runs)")
    data = prepare_data(spec)  # validates the data before anything starts
    uri = tracking_uri or default_tracking_uri(output_dir)
    prepare_tracking(uri)
    output_dir.mkdir(parents=True, exist_ok=True)
    experiment_id = ensure_experiment(uri, spec.name, output_dir)
    stamp, suffix = time.strftime("%Y%m%d-%H%M%S"), 1
    while True:  # two runs started in the same second get -2, -3, ...
        session = f"{spec.name}-{stamp}" + (f"-{suffix}" if suffix > 1 else "")
        try:
            (output_dir / session).mkdir()
            break
        except FileExistsError:
            suffix += 1
    session_dir = output_dir / session
    info = session_info(spec, session_dir, uri, experiment_id, origin)
    info["custom_uri"] = bool(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    (session_dir / SESSION_FILE).write_text(json.dumps(info, indent=1))
    n = len(spec.methods) * len(spec.seeds)
    log(f"experiment {spec.name!r}: {len(spec.methods)} methods x {len(spec.seeds)} seeds = {n} trials, "
        f"{spec.train.epochs} epochs each")
    log(f"session folder: {session_dir}; MLflow: {uri}")
    init_ray(address)
    check_resources(spec, remote=bool(address or os.environ.get("RAY_ADDRESS")))
    results = []
    for kind in tuner_kinds(spec):
        if kind == "pbt":
            log(f"PBT population of {len(spec.seeds)} (a second Tuner: PBT restarts trials, so it cannot share "
                "the Q-learning scheduler's Tuner)")
        results.extend(build_tuner(kind, spec, session_dir, info, data).fit())
        if _unfinished(spec, results):
            break  # interrupted: the next Tuner starts on `medtune resume`
    return _finish(spec, session_dir, info, results)


def read_session(session_dir: Path) -> dict[str, Any]:
    """The session's ``medtune.json``, checked; one line and exit 2 if it is missing or damaged."""
    info_path = session_dir / SESSION_FILE
    if not info_path.is_file():
        raise InputError(
            f"{str(session_dir)!r} is not a medtune session folder (no {SESSION_FILE}); "
            "give the folder `medtune run` printed, e.g. medtune-runs/lr-schedulers-20260101-120000"
        )
    try:
        info = json.loads(info_path.read_text())
        if not isinstance(info, dict) or not isinstance(info.get("spec"), dict) or not info["spec"]:
            raise ValueError("no spec in it")
        from_dict(LRStudySpec, info["spec"])
        for key in ("session", "tracking_uri", "experiment_id", "mailbox", "memory_path", "task"):
            if key not in info:
                raise ValueError(f"no {key!r} in it")
    except (ValueError, OSError) as exc:  # json.JSONDecodeError and InputError are ValueErrors
        raise InputError(
            f"{str(info_path)!r} is unreadable or damaged ({str(exc).splitlines()[0][:120]}); "
            "resume needs the medtune.json that `medtune run` wrote"
        ) from None
    return info


def sync_backlog(session_dir: str | os.PathLike) -> int:
    """Deliver a session's MLflow records that the server missed; returns how many are still pending."""
    from cluster.tracking import MLflowTracker

    session_dir = Path(session_dir).expanduser().resolve()
    info = read_session(session_dir)
    backlog = session_dir / BACKLOG_FILE
    if not backlog.is_file():
        log(f"nothing to deliver: {session_dir} has no {BACKLOG_FILE}")
        return 0
    tracker = MLflowTracker(info["tracking_uri"], info["experiment_id"], info["session"], backlog=str(backlog))
    tracker._load_backlog()
    total = tracker.pending
    left = tracker.flush()
    log(f"delivered {total - left} of {total} buffered MLflow records to {info['tracking_uri']}"
        + (f"; {left} still pending (is the server up?)" if left else ""))
    return left


def log_session_summary(session_dir: str | os.PathLike) -> None:
    """(Re)build a finished session's report from MLflow and log its summary run (after ``report --sync``)."""
    from dashboards.report import build_report, log_summary

    session_dir = Path(session_dir).expanduser().resolve()
    info = read_session(session_dir)
    qpath = session_dir / "qtable.json"
    qtable = json.loads(qpath.read_text()) if qpath.is_file() else None
    report = build_report(info["tracking_uri"], info["spec"]["name"], info["session"], qtable=qtable)
    log_summary(info["tracking_uri"], report, session_dir / "report")


def resume_lr_study(session_dir: str | os.PathLike, address: str | None = None) -> int:
    """Continue an interrupted session (``Tuner.restore``) with the Q-table its journal holds."""
    from ray import tune

    session_dir = Path(session_dir).expanduser().resolve()
    info = read_session(session_dir)
    spec = from_dict(LRStudySpec, info["spec"])
    prepare_tracking(info["tracking_uri"])
    if not any(tune.Tuner.can_restore(str(tuner_path(k, session_dir))) for k in tuner_kinds(spec)):
        raise InputError(f"{str(session_dir)!r} holds no Tune experiment state to resume; start it again with medtune run")
    data = prepare_data(spec)
    journal = session_dir / JOURNAL_FILE
    if journal.exists():
        log(f"resuming with the Q-learning journal {journal}")
    init_ray(address)
    check_resources(spec, remote=bool(address or os.environ.get("RAY_ADDRESS")))
    results = []
    for kind in tuner_kinds(spec):
        path = tuner_path(kind, session_dir)
        if tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(
                str(path), trainable=_trainable(spec, data), resume_unfinished=True, resume_errored=True
            )
        else:  # interrupted before this Tuner started
            tuner = build_tuner(kind, spec, session_dir, info, data)
        results.extend(tuner.fit())
        if _unfinished(spec, results):
            break
    return _finish(spec, session_dir, info, results)
