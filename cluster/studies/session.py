"""What every study's session shares: Ray start-up, the MLflow store, the session folder and its ``medtune.json``.

A *session* is one ``medtune run``: the folder ``ROOT/<name>-<timestamp>/``
holds Tune's experiment state, ``medtune.json`` (the resolved spec and where
its runs are tracked, which ``medtune resume`` and ``medtune report --sync``
read) and the report files. ``ROOT`` is the storage root (``--storage`` or the
spec's ``storage:``, see :mod:`medtune.cluster.runs.storage`), else ``--output``; the
default SQLite MLflow store stays under ``--output``. Each study module
(:mod:`medtune.cluster.studies.registry`) builds its Tuners on top of these functions.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medtune.cluster.ops.service import apply_mlflow_credentials, use_loopback_ip
from medtune.cluster.runs.console import ray_logging_level, verbose
from medtune.cluster.runs.storage import SESSION_FILE, resolve_storage
from medtune.cluster.runs.store import check_reachable, default_tracking_uri, ensure_experiment
from medtune.config import from_dict, to_dict
from medtune.errors import InputError

__all__ = [
    "BACKLOG_FILE", "SESSION_KEYS", "backlog_path", "browse_hint", "check_resources", "create_session",
    "finish_session", "init_ray", "is_remote", "keep_sigterm_handler", "log", "log_session_summary",
    "prepare_tracking", "read_session", "reopen_session", "restore_or_build", "show", "sync_backlog",
]

BACKLOG_FILE = "mlflow-backlog.jsonl"  # MLflow records not delivered yet (server unreachable)
SESSION_KEYS = ("session", "tracking_uri", "experiment_id")


_log = logging.getLogger(__name__)


def log(msg: str) -> None:
    """One progress line of the session (the CLI prints it as ``[medtune] msg``)."""
    _log.info("%s", msg)


def show(text: str) -> None:
    """A report's text, printed as it is between blank lines."""
    _log.info("\n%s\n", text, extra={"plain": True})


_sigterm_handler: Any = None  # see keep_sigterm_handler


def keep_sigterm_handler(handler: Any) -> None:
    """Have :func:`init_ray` put ``handler`` back as this process's SIGTERM handler once Ray runs (``ray.init``
    installs one of Ray's own, which aborts the driver with a stack dump); None: leave Ray's. The ``medtune``
    command keeps its own, which stops a run as Ctrl-C does."""
    global _sigterm_handler
    _sigterm_handler = handler


def _restore_sigterm_handler() -> None:
    if _sigterm_handler is not None:  # always: Ray's C++ handler is invisible to signal.getsignal
        try:
            signal.signal(signal.SIGTERM, _sigterm_handler)
        except ValueError:  # not the main thread
            pass


def init_ray(address: str | None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local Ray; bad addresses are one line (exit 2)."""
    # Tune warns when a trial checkpoints every epoch with num_to_keep set; locally the snapshot costs ~10 ms.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        _init_ray(address)
    finally:
        _restore_sigterm_handler()


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        if address.startswith(("http://", "https://")):
            raise InputError(
                f"--address {address!r} is a dashboard URL; `medtune run` needs the cluster address HOST:6379 "
                "(use the dashboard URL with `medtune submit`)"
            )

        use_loopback_ip(address)  # a head on loopback listens on 127.0.0.1 only
        try:
            ray.init(address=address, log_to_driver=verbose(), logging_level=ray_logging_level())
        except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError, ...
            raise InputError(
                f"cannot connect to the Ray cluster at {address!r} ({str(exc).splitlines()[0][:160]}); "
                "check --address / RAY_ADDRESS, the token (RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH) or start the cluster"
            ) from None
        log(f"connected to the Ray cluster at {address}")
    else:
        # address="local": a new instance, never one that another program started on this machine. Ray starts
        # its workers at nice 15; the trials are this run's work, so they compete with other processes at nice 0
        # (at 15 a busy machine starves them: actor starts were seen taking minutes).
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(address="local", include_dashboard=False, log_to_driver=verbose(), logging_level=ray_logging_level())
        log(f"started a local Ray instance with {int(ray.cluster_resources().get('CPU', 0))} CPUs")


def is_remote(address: str | None) -> bool:
    return bool(address or os.environ.get("RAY_ADDRESS"))


def check_resources(resources: Any, remote: bool) -> None:
    """Before any trial: no node can hold one trial -> exit 2 on a local Ray (Tune would wait forever),
    a loud warning on a cluster (an autoscaler may still add such a node).

    Args:
        resources: the spec's ``resources`` section (``cpus_per_trial``, ``gpus_per_trial``).
    """
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    want = {"CPU": resources.cpus_per_trial, "GPU": resources.gpus_per_trial}
    if any(all(res.get(k, 0) >= v for k, v in want.items()) for res in nodes):
        return
    biggest: dict[str, float] = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
    msg = (f"no node can hold one trial (resources.cpus_per_trial={want['CPU']:g}, gpus_per_trial={want['GPU']:g}; "
           f"the largest node has {biggest.get('CPU', 0):g} CPUs and {biggest.get('GPU', 0):g} GPUs)")
    if not remote:
        raise InputError(f"{msg}; lower resources.cpus_per_trial / gpus_per_trial")
    log(f"WARNING: {msg}; trials wait until the autoscaler adds such a node")


def prepare_tracking(uri: str) -> None:
    """Before any trial (run and resume): exit 2 if the server is unreachable; make requests fail fast."""
    apply_mlflow_credentials(uri)  # the recorded cluster's server: log in as its trials user
    check_reachable(uri)
    if uri.startswith(("http://", "https://")):
        # The tracker buffers and retries by itself: a failed request should fail fast, not block training.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # a loaded server can take seconds


def create_session(
    spec: Any,
    output: str | os.PathLike,
    tracking_uri: str | None,
    origin: dict[str, Any] | None,
    extra: Any = None,
    storage: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Check the storage, the output folder and the tracking store, create the MLflow experiment and a new
    session folder under the storage root (``--output`` when there is none).

    Args:
        spec: the study's spec (any spec class with ``name``; its ``storage``, if it has one, is the default
            of ``storage``).
        extra: ``f(session_dir) -> dict`` of study-specific keys for ``medtune.json``.
        storage: the storage root (a folder or ``file://`` URI; see :mod:`medtune.cluster.runs.storage`).

    Returns:
        The session folder and its ``medtune.json`` content (written).

    Raises:
        InputError: the storage cannot be written, ``--output`` is a file, or the tracking store is unusable
            (all before any trial).
    """
    flag = "--storage" if storage is not None else "storage"
    storage = storage if storage is not None else getattr(spec, "storage", None)
    root = resolve_storage(storage, flag)
    output_dir = Path(output).expanduser().resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output {str(output_dir)!r} is a file; give a folder (default ./medtune-runs)")
    uri = tracking_uri or default_tracking_uri(output_dir)
    prepare_tracking(uri)
    output_dir.mkdir(parents=True, exist_ok=True)
    root = root or output_dir
    experiment_id = ensure_experiment(uri, spec.name, output_dir)
    stamp, suffix = time.strftime("%Y%m%d-%H%M%S"), 1
    while True:  # two runs started in the same second get -2, -3, ...
        session = f"{spec.name}-{stamp}" + (f"-{suffix}" if suffix > 1 else "")
        try:
            (root / session).mkdir()
            break
        except FileExistsError:
            suffix += 1
    session_dir = root / session
    info = {
        "session": session,
        "spec": to_dict(spec),
        "tracking_uri": uri,
        "experiment_id": experiment_id,
        "origin": origin or {},
        "custom_uri": bool(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")),
        "storage": str(root),
        **(extra(session_dir) if extra else {}),
    }
    (session_dir / SESSION_FILE).write_text(json.dumps(info, indent=1))
    log(f"session folder: {session_dir}; MLflow: {uri}")
    if root != output_dir and uri.startswith("sqlite:"):
        log(f"note: the MLflow store {uri} is on this machine; for a driver that may restart elsewhere give "
            "--tracking-uri of an MLflow server (`medtune cluster up` runs one) or an --output on the storage")
    return session_dir, info


def read_session(session_dir: str | os.PathLike, required: tuple[str, ...] = (),
                 spec_class: type | None = None) -> dict[str, Any]:
    """The session's ``medtune.json``; one line and exit 2 if it is missing or damaged.

    Args:
        required: keys the caller needs beyond the ones every session has.
        spec_class: the study's spec dataclass; when given, the stored spec must still build into it.
    """
    session_dir = Path(session_dir)
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
        if spec_class is not None:
            from_dict(spec_class, info["spec"])
        for key in SESSION_KEYS + tuple(required):
            if key not in info:
                raise ValueError(f"no {key!r} in it")
    except (ValueError, OSError) as exc:  # json.JSONDecodeError and InputError are ValueErrors
        raise InputError(
            f"{str(info_path)!r} is unreadable or damaged ({str(exc).splitlines()[0][:120]}); "
            "resume needs the medtune.json that `medtune run` wrote"
        ) from None
    # The session's paths follow the folder it is read from (a storage mounted elsewhere, a copied session).
    if isinstance(info.get("memory_path"), str):
        info["memory_path"] = str(session_dir.parent / Path(info["memory_path"]).name)
    info["storage"] = str(session_dir.parent)
    return info


def reopen_session(session_dir: str | os.PathLike, spec_class: type, prepare: Any, address: str | None,
                   required: tuple[str, ...] = ()) -> tuple[Path, dict[str, Any], Any, Any]:
    """What every ``medtune resume`` does first: read ``medtune.json``, rebuild the spec, check the tracking
    store, load the data with ``prepare(spec)``, join Ray and check its resources (bad input: exit 2).

    Returns:
        ``(session_dir, info, spec, data)``.
    """
    session_dir = Path(session_dir).expanduser().resolve()
    info = read_session(session_dir, required, spec_class)
    spec: Any = from_dict(spec_class, info["spec"])
    prepare_tracking(info["tracking_uri"])
    data = prepare(spec)
    init_ray(address)
    check_resources(spec.resources, remote=is_remote(address))
    return session_dir, info, spec, data


def restore_or_build(path: Path, trainable: Any, build: Any):
    """The Tuner at ``path`` restored (unfinished and errored trials resume), or ``build()`` when the session was
    interrupted before that Tuner started."""
    from ray import tune

    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    return build()


def backlog_path(session_dir: str | os.PathLike) -> str:
    return str(Path(session_dir) / BACKLOG_FILE)


def sync_backlog(session_dir: str | os.PathLike) -> int:
    """Deliver a session's MLflow records that the server missed; returns how many are still pending."""
    # imports Ray Tune; every command of the CLI imports this module (SIGTERM handling)
    from medtune.cluster.runs.tracking import MLflowTracker

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


def browse_hint(info: dict[str, Any], session_dir: Path) -> None:
    uri = info["tracking_uri"]
    if uri.startswith(("http://", "https://")):
        log(f"browse every run: {uri} (the MLflow server)")
    else:
        output = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else session_dir.parent
        log(f"browse every run: medtune ui --output {output}"
            + (f" --tracking-uri {uri}" if info.get("custom_uri") else ""))


def finish_session(
    session_dir: Path, info: dict[str, Any], results: list, unfinished: list, build: Any,
    notes: Sequence[str] = (),
) -> int:
    """The end of every study: build the report from MLflow, log the summary run, print the table.

    Args:
        results: the Tune results of the session; ``unfinished`` those interrupted before their last epoch.
        build: ``() -> report`` (reads MLflow).
        notes: extra lines to log after the table.

    Returns:
        The exit status: 0, 1 (failed trials, or MLflow down at the end: the records wait in the backlog),
        130 (interrupted: the table is partial and ``medtune resume`` continues).

    Raises:
        TrialsFailedError: every trial failed (no table; the CLI prints the line and exits 1).
    """
    # Ray Tune and pandas: every command of the CLI imports this module (SIGTERM handling)
    from medtune.cluster.runs.fail_fast import all_failed_error
    from medtune.dashboards.summary import log_summary

    errors = [r for r in results if r.error is not None]
    all_failed = all_failed_error(results)
    if all_failed is not None:  # nothing was measured: one line naming the first error, never a table of failures
        raise all_failed
    try:
        report = build()
    except Exception as exc:  # the tracking server is down at the very end: the runs are safe in the backlog
        log(f"the comparison cannot be built now: MLflow at {info['tracking_uri']} failed "
            f"({str(exc).splitlines()[0][:160]}). Training finished; deliver what is buffered and build the "
            f"report with: medtune report --sync {session_dir}")
        return 1
    if unfinished:
        show(report.text())
        log(f"interrupted: {len(unfinished)} of {len(results)} trials unfinished; the table above is partial "
            f"and no summary run was logged. Continue with: medtune resume {session_dir}")
        return 130
    try:
        log_summary(info["tracking_uri"], report, session_dir / "report")
    except Exception as exc:
        log(f"the summary run could not be logged ({str(exc).splitlines()[0][:160]}); the report files are in "
            f"{session_dir / 'report'}; log it later with: medtune report --sync {session_dir}")
        show(report.text())
        return 1
    show(report.text())
    for note in notes:
        log(note)
    log(f"report files: {session_dir / 'report'}")
    browse_hint(info, session_dir)
    if errors:
        log(f"{len(errors)} trial(s) failed: " + "; ".join(str(r.error).splitlines()[0][:120] for r in errors))
        return 1
    return 0


def log_session_summary(session_dir: str | os.PathLike, build: Any) -> None:
    """(Re)build a finished session's report from MLflow with ``build(uri, experiment, session)`` and log its
    summary run (``medtune report --sync`` after an outage)."""
    # pandas: every command of the CLI imports this module (SIGTERM handling)
    from medtune.dashboards.summary import log_summary

    session_dir = Path(session_dir).expanduser().resolve()
    info = read_session(session_dir)
    report = build(info["tracking_uri"], info["spec"]["name"], info["session"])
    log_summary(info["tracking_uri"], report, session_dir / "report")
