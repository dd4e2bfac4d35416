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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from medtune.cluster.runs.console import ray_logging_level, verbose
from medtune.cluster.studies.session import log, read_session, show
from medtune.cluster.studies.session import log_session_summary as session_summary
from medtune.cluster.studies.spec import ResourcesConfig, check_storage
from medtune.errors import InputError, TrialsFailedError
from medtune.searchers.lr_schedules import ScheduleConfig
from medtune.searchers.pbt import PBTConfig
from medtune.searchers.search_spaces import TuningConfig
from medtune.trainables.lr_control import CHECKPOINT_EVERY

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
class OwnTrainingSpec:
    """A spec naming the user's own trainable; the fields are :func:`medtune.compare`'s arguments."""

    name: str = "own-training"
    study: str = STUDY
    description: str = ""
    trainable: str = ""
    metric: str = "dice"
    mode: str = "max"
    loss_metric: str = "val_loss"
    methods: tuple[str, ...] = ("fixed", "cosine", "greedy", "qlearning", "pbt")
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 30
    min_lr: float = 1e-6
    max_lr: float = 1.0
    lr: float | None = None
    target: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    schedules: ScheduleConfig = field(default_factory=ScheduleConfig)
    qlearning: dict[str, Any] = field(default_factory=dict)
    qlearning_seed: int = 0
    warm_start: str | None = None
    pbt: PBTConfig = field(default_factory=PBTConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 0
    checkpoint_every: int = CHECKPOINT_EVERY  # epochs between a trial's checkpoints (compare's checkpoint_every)
    storage: str | None = None  # the session state's root (default: --output); see medtune.cluster.runs.storage
    smoke: dict[str, Any] = field(default_factory=dict)
    tuning: TuningConfig | None = None  # set: the equal-budget protocol (medtune.compare(..., tune=...))

    def __post_init__(self) -> None:
        from medtune.cluster.studies.compare import make_spec

        if self.study != STUDY:
            raise InputError(f"study={self.study!r}: this is the own-training spec; set study: {STUDY}")
        if not self.trainable:
            raise InputError("trainable is missing; name your training function, e.g. trainable: mytrain.loop:train")
        check_storage(self.storage)
        fn, _ = resolve_trainable(self.trainable)
        spec = make_spec(fn, **self.compare_kwargs())  # every check of medtune.compare, before Ray starts
        if self.tuning is not None:
            from medtune.cluster.studies.tuning import check_compare_tuning

            check_compare_tuning(spec, self.tuning)

    def compare_kwargs(self) -> dict[str, Any]:
        r = self.resources
        return dict(methods=list(self.methods), seeds=list(self.seeds), epochs=self.epochs, metric=self.metric,
                    mode=self.mode, loss_metric=self.loss_metric, min_lr=self.min_lr, max_lr=self.max_lr, lr=self.lr,
                    name=self.name, target=self.target, params=self.params, schedules=self.schedules,
                    qlearning=self.qlearning, warm_start=self.warm_start, pbt=self.pbt,
                    cpus_per_trial=r.cpus_per_trial, gpus_per_trial=r.gpus_per_trial,
                    max_concurrent=r.max_concurrent, max_failures=self.max_failures,
                    qlearning_seed=self.qlearning_seed, checkpoint_every=self.checkpoint_every)


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
    import ray

    from medtune.cluster.studies.compare import compare

    fn, code = resolve_trainable(spec.trainable)
    started = _init_ray(address, code)
    try:
        result = compare(fn, **spec.compare_kwargs(), output=output, tracking_uri=tracking_uri, address=address,
                         storage=spec.storage, tune=spec.tuning)
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
    from medtune.dashboards.metric_report import build_metric_report

    from medtune.dashboards.runs import mlflow_client, session_runs

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
