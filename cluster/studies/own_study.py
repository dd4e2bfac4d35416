"""A researcher's own training named in a spec: ``trainable: package.module:function`` (the ``own`` study).

The spec holds what :func:`medtune.compare` takes, so ``medtune run my-spec.yaml`` and ``medtune submit
my-spec.yaml`` run the same comparison as the Python call::

    name: digits
    trainable: mypackage.training:train      # a Tune function trainable that calls medtune.LRControl
    metric: accuracy
    mode: max
    loss_metric: val_loss
    methods: [fixed, cosine, greedy, qlearning, pbt]
    seeds: [0, 1, 2]
    epochs: 30
    checkpoint_every: 5                      # a trial's checkpoint every 5 epochs (and its last)
    params: {width: 16}                      # extra config keys the function reads
    smoke: {epochs: 3, seeds: [0]}

A spec with ``trainable:`` and no ``study:`` is this study. The function is imported when the spec is loaded,
from the folder medtune runs in or from the installed packages; a reference that does not import is one
:class:`~medtune.errors.InputError` line before Ray starts. Ray's workers get the code as a runtime
environment ``py_modules`` entry (the top-level package folder, or the single ``.py`` file), on a local Ray, on
a cluster (``--address``) and in a submitted job alike, so nothing has to be installed on the nodes.

Resuming such a session is not supported: run it again.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtune.cluster.runs.console import ray_logging_level, verbose
from medtune.cluster.studies.compare import CompareSpec, compare
from medtune.cluster.studies.session import log, read_session, show
from medtune.cluster.studies.session import log_session_summary as session_summary
from medtune.cluster.studies.tuning import check_compare_tuning
from medtune.dashboards.runs import mlflow_client, session_runs
from medtune.errors import InputError, TrialsFailedError
from medtune.searchers.search_spaces import TuningConfig

__all__ = [
    "SPEC", "STUDY", "OwnTrainingSpec", "build_report", "log_session_summary", "parse_reference",
    "resolve_trainable", "resume", "run",
]

STUDY = "own"


def parse_reference(ref: object) -> tuple[str, str]:
    """``"pkg.mod:fn"`` -> ``("pkg.mod", "fn")``; anything else is one InputError line."""
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
        raise InputError(f"trainable={ref!r} must read package.module:function, e.g. trainable: mytrain.loop:train")
    module, name = ref.split(":")
    if not all(part.isidentifier() for part in module.split(".")) or not name.isidentifier():
        raise InputError(f"trainable={ref!r} must read package.module:function with Python names")
    return module, name


def resolve_trainable(ref: str) -> tuple[Callable[[dict[str, Any]], Any], str]:
    """The function ``ref`` names and the path Ray's workers need (top-level package folder or ``.py`` file).

    The current folder is searched first (as ``python -m`` would), then the installed packages.

    Raises:
        InputError: the module does not import, has no such function, or it is not callable.
    """
    module_name, name = parse_reference(ref)
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        raise InputError(f"trainable {ref!r}: module {module_name!r} does not import ({type(exc).__name__}: "
                         f"{first}); run medtune from the folder that holds it, or install it") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise InputError(f"trainable {ref!r}: {module_name} has no function {name!r}")
    top = importlib.import_module(module_name.split(".")[0])
    where = getattr(top, "__path__", None)
    path = list(where)[0] if where else getattr(top, "__file__", None)
    if path is None:
        raise InputError(f"trainable {ref!r}: {module_name.split('.')[0]!r} has no file Ray could ship")
    return fn, str(Path(path).resolve())


@dataclass(frozen=True)
class OwnTrainingSpec(CompareSpec):
    """A spec naming the user's own trainable: :func:`medtune.compare`'s arguments (the fields of
    :class:`~medtune.cluster.studies.compare.CompareSpec`, its checks included, ``resources`` a section as in
    every study's spec), ``trainable`` as ``package.module:function`` (imported when the spec is checked) and
    ``tuning`` (``compare``'s ``tune=``)."""

    name: str = "own-training"
    tuning: TuningConfig | None = None  # set: the equal-budget protocol (medtune.compare(..., tune=...))

    def __post_init__(self) -> None:
        if not self.trainable:
            raise InputError("trainable is missing; name your training function, e.g. trainable: mytrain.loop:train")
        for key in ("tuned", "adapted"):  # what a comparison records, never a spec's setting
            if getattr(self, key):
                raise InputError(f"{key}={getattr(self, key)!r} is set by medtune itself, not in a spec; remove it "
                                 "(tuning: runs the equal-budget protocol)")
        super().__post_init__()  # every check of medtune.compare, before Ray starts
        resolve_trainable(self.trainable)
        if self.tuning is not None:
            check_compare_tuning(self, self.tuning)

    def compare_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`medtune.compare` this spec holds."""
        return self.arguments()


def _init_ray(address: str | None, code: str) -> bool:
    """Start or join Ray with the trainable's code as ``py_modules``; returns whether this call started it."""
    import ray
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    if ray.is_initialized():
        return False
    # A submitted job's runtime environment already ships the code (medtune submit adds it).
    runtime_env = None if RAY_JOB_CONFIG_JSON_ENV_VAR in os.environ else {"py_modules": [code]}
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        os.environ.setdefault("RAY_worker_niceness", "0")  # trials at nice 0, as in every local medtune run
        ray.init(address="local", include_dashboard=False, log_to_driver=verbose(), logging_level=ray_logging_level(),
                 runtime_env=runtime_env)
        return True
    if address.startswith(("http://", "https://")):
        raise InputError(f"--address {address!r} is a dashboard URL; `medtune run` needs the cluster address "
                         "HOST:6379 (use the dashboard URL with `medtune submit`)")
    try:
        ray.init(address=address, log_to_driver=verbose(), logging_level=ray_logging_level(), runtime_env=runtime_env)
    except Exception as exc:
        raise InputError(f"cannot connect to the Ray cluster at {address!r} ({str(exc).splitlines()[0][:160]}); "
                         "check --address / RAY_ADDRESS or start the cluster") from None
    return False


def run(spec: OwnTrainingSpec, output: str | os.PathLike, tracking_uri: str | None = None,
        address: str | None = None, origin: dict[str, Any] | None = None) -> int:
    """``medtune run`` of an own-training spec: :func:`medtune.compare`, the report printed; the exit status."""
    import ray  # only when a comparison runs: loading a spec stays light

    fn, code = resolve_trainable(spec.trainable)
    started = _init_ray(address, code)
    try:
        result = compare(fn, **spec.compare_kwargs(), output=output, tracking_uri=tracking_uri, address=address,
                         tune=spec.tuning)  # the spec's storage is among its compare arguments
    except TrialsFailedError as exc:  # every trial failed (or was stopped): that line, no table
        log(str(exc))
        return 1
    finally:
        if started:
            ray.shutdown()
    show(result.text)
    log(f"report files: {result.session_dir / 'report'}")
    return 1 if result.failed else 0


def resume(session_dir: str | os.PathLike, address: str | None = None) -> int:
    raise InputError(f"{str(session_dir)!r} is an own-training session; resuming one is not supported yet, "
                     "run its spec again")


def build_report(tracking_uri: str, experiment: str, session: str | None = None):
    """The session's comparison, in its own metric (read back from the runs' ``lr_control.*`` params)."""
    from medtune.dashboards.metric_report import build_metric_report  # plotly: only when a report is made

    _, session, runs = session_runs(mlflow_client(tracking_uri), tracking_uri, experiment, session)
    params = runs[0].data.params
    return build_metric_report(tracking_uri, experiment, session, params.get("lr_control.metric", "dice"),
                               params.get("lr_control.mode", "max"), params.get("lr_control.loss_metric"))


def log_session_summary(session_dir: str | os.PathLike) -> None:
    """(Re)build a finished session's comparison as :func:`medtune.compare` built it (the spec's metric, mode,
    loss metric and target, the final Q-table) and log its summary run (``medtune report --sync``)."""
    from medtune.dashboards.metric_report import build_metric_report  # pandas and plotly: only when a report is made

    session_dir = Path(session_dir).expanduser().resolve()
    spec = read_session(session_dir)["spec"]
    qpath = session_dir / "qtable.json"
    qtable = json.loads(qpath.read_text()) if qpath.is_file() else None
    session_summary(session_dir, lambda uri, experiment, session: build_metric_report(
        uri, experiment, session, spec.get("metric", "dice"), spec.get("mode", "max"), spec.get("loss_metric"),
        spec.get("target"), qtable))


SPEC = OwnTrainingSpec
