"""A suite: one LR comparison over several tasks, judged across them (``medtune suite SPEC``, ``medtune.suite``).

A suite spec names one list of methods and seeds (and, optionally, one epoch budget or the equal-budget protocol)
and several *tasks*, each a study spec (a built-in name or a YAML path: the LR study, a Decathlon folder, a
user's ``trainable:``) with overrides::

    name: my-suite
    methods: [fixed, cosine, schedulefree, greedy, qlearning]
    seeds: [0, 1, 2]
    epochs: 20                 # every task's budget (null: each task's own)
    tuning: null               # a TuningConfig mapping: every task runs the equal-budget protocol instead
    tasks:
      phantom-24:              # a name: letters, digits, '-' and '_'
        spec: lr-schedulers    # default
        set: {data: {spatial_size: [24, 24, 24]}}   # merged into that spec, section by section
      hippocampus:
        set: {data: {source: decathlon, path: /data/Task04_Hippocampus}}
      digits:
        spec: my-digits.yaml   # a spec with trainable: (the own-training study); relative to this file
    smoke: {seeds: [0], epochs: 2}   # dotted keys, applied by --smoke (the tasks' own smoke sections are not)

Every task's spec is built and checked when the suite is loaded (bad input: one line, exit 2, before anything
runs); its name becomes ``<suite>-<task>``, the MLflow experiment of that task.

**Consecutive sessions, not one Ray experiment.** Each task runs as an ordinary session of its study, one after
the other, in the same Ray: its own Tune experiment, Q-learning journal, report and MLflow experiment, exactly
what ``medtune run`` makes of that spec (so ``medtune report <suite>-<task>`` and the dashboard show it like any
other). One Tuner over every task would need one trainable carrying every task's data (a Decathlon task
travels as file paths, the phantom in memory, a user's trainable is another function altogether), one
scheduler keeping one Q-table per task, and one resume state where a broken task blocks the others. Consecutive
sessions cost only the tail of each task (while its last trials finish, slots idle) and a Ray start for a
user's own trainable (its code ships as the runtime environment of a Ray it starts); in exchange a finished
task's session is final and self-contained, which is what makes resuming a suite simple: finished tasks are
kept, the interrupted one resumes from its Tune state, a failed one runs again.

**MLflow**: the experiment ``<suite>`` holds one parent run per suite session (tag ``medtune.kind = suite``)
and under it one nested run per task (``mlflow.parentRunId``, ``medtune.kind = suite-task``) whose tags name the
task, its experiment and its session, and how the session ended. The report is rebuilt from these and the
tasks' own trial runs alone (:func:`build_suite_report`; ``medtune report <suite>``) and logged as the parent
run's artifacts at the end.

**Resume** (``medtune suite [SPEC] --resume [DIR]``): the suite folder ``OUTPUT/<suite>-<time>/suite.json``
records each task's session and exit status. A task that finished (exit 0) with the same resolved spec (every
setting it recorded unchanged) is kept;
an interrupted one (exit 130) of the LR study resumes its session; any other runs again (a new session).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medtune.cluster.runs.storage import storage_path
from medtune.cluster.runs.store import default_tracking_uri, ensure_experiment
from medtune.cluster.studies import registry as studies
from medtune.cluster.studies.session import log, prepare_tracking, show
from medtune.cluster.studies.spec import SpecError, _merged, apply_override, check_name, parse_set, read_spec_file
from medtune.config import from_dict, to_dict
from medtune.dashboards.comparison import INACTIVE, compare_runs, trial_metrics
from medtune.dashboards.runs import mlflow_client, session_runs
from medtune.dashboards.suite_report import OK, SuiteReport, SuiteTask, aggregate
from medtune.dashboards.views import run_status
from medtune.errors import InputError
from medtune.searchers.search_spaces import TuningConfig
from medtune.tags import (
    KIND_SUITE,
    KIND_SUITE_TASK,
    TAG_KIND,
    TAG_PARENT,
    TAG_SESSION,
    TAG_SUITE_EXIT,
    TAG_SUITE_EXPERIMENT,
    TAG_SUITE_MESSAGE,
    TAG_SUITE_SESSION,
    TAG_SUITE_TASK,
)

__all__ = [
    "EPOCHS_KEY", "SUITE_FILE", "SUITE_SET", "SUITE_TAG_PREFIX", "SuiteResult", "SuiteSpec", "SuiteTaskSpec",
    "build_suite_report", "is_suite", "latest_suite_dir", "load_suite", "load_view", "read_suite_dir", "run_suite",
    "same_spec", "suite", "suite_parent", "task_spec",
]

_log = logging.getLogger(__name__)

SUITE_FILE = "suite.json"
SUITE_TAG_PREFIX = "medtune.suite."  # the parent run's methods, seeds, tasks and epochs (comma-separated)
#: The studies a suite can hold (LR comparisons) and where their epoch budget lives.
EPOCHS_KEY = {"lr": ("train", "epochs"), "own": ("epochs",)}
SUITE_SET = ("name", "methods", "seeds")  # the suite sets these on every task


@dataclass(frozen=True)
class SuiteTaskSpec:
    """One task: a study spec (built-in name or YAML path) and the settings merged into it."""

    spec: str = "lr-schedulers"
    set: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec:
            raise ValueError(f"spec={self.spec!r} must name a built-in study spec or a YAML path")
        for key in SUITE_SET:
            if key in self.set:
                raise ValueError(f"set.{key}: the suite sets {key} for every task; remove it from the task")


@dataclass(frozen=True)
class SuiteSpec:
    """A suite (see the module docstring); ``tasks`` maps each task's name to its :class:`SuiteTaskSpec`.

    Attributes:
        name: the suite's name, one word without ``/``, ``\\`` or spaces: the MLflow experiment of the suite's
            parent runs, and the prefix of each task's experiment (``<name>-<task>``) and of the suite folder.
        description: free text, one line, shown next to the spec's name by ``medtune specs``; it changes nothing
            in the run.
        methods: the LR methods every task compares (non-empty); they replace each task's own ``methods``.
        seeds: the seeds every task runs each method with (non-empty); they replace each task's own ``seeds``.
        epochs: every task's epoch budget (>= 1), set as ``train.epochs`` of an LR study task and ``epochs`` of
            an own-training task; null: each task keeps its own.
        tuning: the equal-budget protocol (:class:`~medtune.searchers.search_spaces.TuningConfig`) every task runs
            instead of a plain comparison; null: no search, each method at its spec's settings.
        tasks: ``{task name: {spec: ..., set: ...}}`` (:class:`SuiteTaskSpec`), run one after the other in this
            order; at least one. A name is letters, digits, ``-`` and ``_``.
        smoke: dotted keys and values (``seeds: [0]``, ``epochs: 2``) applied to the suite spec by ``--smoke``;
            the tasks' own ``smoke`` sections are not applied.
    """

    name: str = "lr-suite"
    description: str = ""
    methods: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = None
    tuning: TuningConfig | None = None
    tasks: dict[str, Any] = field(default_factory=dict)
    smoke: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name)
        if not self.methods:
            raise ValueError("methods=[] is empty; list the LR methods every task compares, e.g. [fixed, cosine, "
                             "qlearning]")
        if not self.seeds:
            raise ValueError("seeds=[] is empty; give at least one seed, e.g. [0, 1, 2]")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r} must be >= 1 (or null: each task's own budget)")
        if not isinstance(self.tasks, dict) or not self.tasks:
            raise ValueError("tasks is empty; name at least one task, e.g. tasks: {phantom: {spec: lr-schedulers}}")
        tasks = {}
        for name, value in self.tasks.items():
            if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
                raise ValueError(f"tasks.{name}: a task name must be letters, digits, '-' or '_' (it names the "
                                 "task's MLflow experiment); rename it")
            tasks[name] = value if isinstance(value, SuiteTaskSpec) else from_dict(SuiteTaskSpec, value or {},
                                                                                   f"tasks.{name}")
        object.__setattr__(self, "tasks", tasks)

    def experiment_of(self, task: str) -> str:
        return f"{self.name}-{task}"


def task_spec(suite: SuiteSpec, task: str) -> Any:
    """The study spec of ``task``: its spec file with the task's ``set`` merged in, then the suite's name,
    methods, seeds, epochs and tuning; built and checked by its study.

    Raises:
        SpecError: one line naming ``tasks.<task>`` and the field.
    """
    where = f"tasks.{task}"
    t = suite.tasks[task]
    try:
        data, _source = read_spec_file(t.spec)
    except InputError as exc:
        raise SpecError(f"{where}.spec: {exc}") from None
    data = copy.deepcopy(data)
    if "tasks" in data:
        raise SpecError(f"{where}.spec={t.spec!r} is a suite; a task names a study spec (e.g. lr-schedulers)")
    data.pop("smoke", None)  # the suite's own smoke section shrinks its tasks
    data = _merged(data, copy.deepcopy(t.set))
    study = data.get("study", "own" if "trainable" in data else "lr")
    if study not in EPOCHS_KEY:
        raise SpecError(f"{where}: study={study!r} is not an LR comparison; a suite's tasks are lr or own "
                        "(trainable:) specs")
    data.update(name=suite.experiment_of(task), methods=list(suite.methods), seeds=list(suite.seeds))
    if suite.epochs is not None:
        node = data
        *path, last = EPOCHS_KEY[study]
        for part in path:
            node = node.setdefault(part, {})
        node[last] = suite.epochs
    if suite.tuning is not None:
        data["tuning"] = to_dict(suite.tuning)
    for section, key in (("data", "path"), ("qlearning", "warm_start")):  # absolute, as studies.load_spec keeps them
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value:
            data[section][key] = str(Path(value).expanduser().resolve())
    try:
        return from_dict(studies.get_study(study).spec, data)
    except InputError as exc:
        raise SpecError(f"{where}: {exc}") from None


def load_suite(spec: str, smoke: bool = False, overrides: Sequence[str] = ()) -> tuple[SuiteSpec, dict[str, Any]]:
    """The suite ``spec`` (a YAML path or a built-in name) with ``--smoke`` and ``--set`` applied, and every
    task's study spec built (so bad input stops here, before anything runs).

    Returns:
        The suite and ``{task: study spec}`` in the suite's order.

    Raises:
        SpecError: one line naming the field, the value and the fix.
    """
    data, source = read_spec_file(spec)
    data = copy.deepcopy(data)
    if "tasks" not in data:
        raise SpecError(f"spec {source} has no tasks: it is a study spec, not a suite; run it with medtune run "
                        f"{spec}, or list tasks: in a suite spec")
    if smoke:
        shrink = data.get("smoke") or {}
        if not isinstance(shrink, dict):
            raise SpecError(f"smoke={shrink!r} must be a mapping of dotted keys to values")
        for key, value in shrink.items():
            apply_override(data, str(key), value)
    for item in overrides:
        apply_override(data, *parse_set(item))
    here = None if source.startswith("built-in") else Path(source).resolve().parent
    for task in (data.get("tasks") or {}).values() if isinstance(data.get("tasks"), dict) else ():
        ref = task.get("spec") if isinstance(task, dict) else None
        if here and isinstance(ref, str) and ("/" in ref or ref.endswith((".yaml", ".yml"))) and \
                not Path(ref).expanduser().is_absolute():
            task["spec"] = str(here / ref)  # a task's spec file is relative to the suite's, as base: is
    try:
        suite = from_dict(SuiteSpec, data)
    except InputError as exc:
        raise SpecError(str(exc)) from None
    return suite, {task: task_spec(suite, task) for task in suite.tasks}


# ---------------------------------------------------------------------------------------------------------------
# Running


@dataclass
class SuiteResult:
    """What :func:`run_suite` (and :func:`medtune.suite`) returns: the exit status (0: every task finished, 1: a
    task failed, 130: interrupted; resume with ``medtune suite --resume DIR``), the report (None when it
    could not be built), the suite folder and the parent run."""

    status: int
    report: SuiteReport | None
    suite_dir: Path
    tracking_uri: str
    run_id: str

    @property
    def text(self) -> str:
        return self.report.text() if self.report is not None else ""


def same_spec(old: Any, new: Any) -> bool:
    """Whether a task's recorded resolved spec ``old`` still holds for ``new``: every setting both have is
    equal (a setting a newer medtune added, with its default, is no change that reruns a finished task)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(same_spec(old[k], new[k]) for k in old.keys() & new.keys())
    return old == new


def _session_root(spec: Any, output: Path) -> Path:
    storage = getattr(spec, "storage", None)
    if storage:
        return storage_path(storage, "storage")
    return output


def _sessions(root: Path, name: str) -> set[Path]:
    return {p for p in root.glob(f"{name}-*") if p.is_dir() and (p / "medtune.json").is_file()}


def _free_ray_for(spec: Any, address: str | None) -> None:
    """A user's own trainable ships its code as the runtime environment of the Ray it starts: stop the local Ray
    an earlier task started (never a cluster's)."""
    import ray

    if spec.study == "own" and ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS")):
        ray.shutdown()


def _run_task(spec: Any, prior: dict[str, Any] | None, output: Path, uri: str, address: str | None,
              origin: dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) one task's session; returns its record ``{session, session_dir, exit, message, spec}``."""
    root = _session_root(spec, output)
    resolved = to_dict(spec)
    record = {"session": "", "session_dir": "", "exit": 1, "message": "", "spec": resolved}
    resumable = (prior and prior.get("exit") == 130 and same_spec(prior.get("spec"), resolved) and spec.study == "lr"
                 and prior.get("session_dir") and Path(prior["session_dir"]).is_dir())
    before = _sessions(root, spec.name) if root.is_dir() else set()
    _free_ray_for(spec, address)
    try:
        if resumable and prior is not None:
            log(f"task {spec.name}: resuming its interrupted session {prior['session']}")
            record.update(session=prior["session"], session_dir=prior["session_dir"])
            record["exit"] = studies.resume(prior["session_dir"], address=address)
        else:
            record["exit"] = studies.run(spec, output, tracking_uri=uri, address=address, origin=origin)
    except KeyboardInterrupt:
        record.update(exit=130, message="interrupted")
    except InputError as exc:
        record.update(exit=2, message=str(exc).splitlines()[0][:300])
        log(f"task {spec.name} stopped on bad input: {record['message']}")
    except Exception as exc:  # the suite goes on with its other tasks; this one runs again on resume
        _log.debug("task %s failed", spec.name, exc_info=True)
        record.update(exit=1, message=f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}")
        log(f"task {spec.name} failed: {record['message']}")
    if not record["session"]:
        new = sorted(_sessions(root, spec.name) - before) if root.is_dir() else []
        if new:
            record.update(session=new[-1].name, session_dir=str(new[-1]))
    if record["exit"] == 1 and not record["message"]:
        record["message"] = "some trials failed"
    elif record["exit"] == 130 and not record["message"]:
        record["message"] = "interrupted"
    return record


def _task_run(client, experiment_id: str, parent: str, suite_session: str, task: str, experiment: str,
              record: dict[str, Any], run_id: str | None) -> str:
    """Create or update the task's nested run under the suite's parent run."""
    tags = {TAG_PARENT: parent, TAG_KIND: KIND_SUITE_TASK, TAG_SESSION: suite_session, TAG_SUITE_TASK: task,
            TAG_SUITE_EXPERIMENT: experiment, TAG_SUITE_SESSION: record["session"],
            TAG_SUITE_EXIT: str(record["exit"]), TAG_SUITE_MESSAGE: record["message"]}
    if run_id is None:
        run_id = client.create_run(experiment_id, run_name=task, tags=tags).info.run_id
    else:
        client.update_run(run_id, status="RUNNING")
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    status = {0: "FINISHED", 130: "KILLED"}.get(record["exit"], "FAILED")
    client.set_terminated(run_id, status=status)
    return run_id


def _new_suite_dir(output: Path, name: str) -> Path:
    stamp, suffix = time.strftime("%Y%m%d-%H%M%S"), 1
    while True:
        folder = output / (f"{name}-{stamp}" + (f"-{suffix}" if suffix > 1 else ""))
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            suffix += 1


def latest_suite_dir(output: str | os.PathLike, name: str) -> Path:
    """The newest suite folder of ``name`` under ``output``.

    Raises:
        InputError: there is none.
    """
    found = sorted(p for p in Path(output).expanduser().resolve().glob(f"{name}-*") if (p / SUITE_FILE).is_file())
    if not found:
        raise InputError(f"--resume: no suite folder of {name!r} under --output {str(output)!r}; give the folder "
                         "`medtune suite` printed (--resume DIR)")
    return found[-1]


def read_suite_dir(suite_dir: str | os.PathLike) -> dict[str, Any]:
    """A suite folder's ``suite.json``; one line and exit 2 when it is missing or damaged."""
    path = Path(suite_dir).expanduser().resolve() / SUITE_FILE
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not {"suite", "tracking_uri", "run_id", "tasks"} <= set(state):
            raise ValueError("keys missing")
    except (OSError, ValueError) as exc:
        raise InputError(f"--resume {str(suite_dir)!r} is not a suite folder ({SUITE_FILE} unreadable: "
                         f"{str(exc).splitlines()[0][:100]}); give the folder `medtune suite` printed") from None
    return state


def run_suite(suite: SuiteSpec, specs: dict[str, Any], output: str | os.PathLike = "medtune-runs",
              tracking_uri: str | None = None, address: str | None = None, origin: dict[str, Any] | None = None,
              resume: str | os.PathLike | None = None) -> SuiteResult:
    """Run every task of ``suite`` (``specs`` from :func:`load_suite`) as consecutive sessions under one MLflow
    parent run, then print and log the cross-task report.

    Args:
        resume: a suite folder to continue (finished tasks with an unchanged spec are kept).

    Raises:
        InputError: an unusable output folder or tracking store, or a ``resume`` folder of another suite (before
            any task runs).
    """
    output = Path(output).expanduser().resolve()
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {str(output)!r} is a file; give a folder (default ./medtune-runs)")
    if resume is not None:
        suite_dir = Path(resume).expanduser().resolve()
        state = read_suite_dir(suite_dir)
        if state["suite"] != suite.name:
            raise InputError(f"--resume {str(suite_dir)!r} is a folder of suite {state['suite']!r}, not "
                             f"{suite.name!r}; give that suite's spec or its own folder")
        if tracking_uri and tracking_uri != state["tracking_uri"]:
            raise InputError(f"--tracking-uri {tracking_uri!r} differs from the suite's {state['tracking_uri']!r}; "
                             "leave it out to resume")
        uri = state["tracking_uri"]
    else:
        uri = tracking_uri or default_tracking_uri(output)
        state = {"suite": suite.name, "tracking_uri": uri, "run_id": "", "tasks": {}}
        suite_dir = None
    prepare_tracking(uri)
    output.mkdir(parents=True, exist_ok=True)
    experiment_id = ensure_experiment(uri, suite.name, output)
    client = mlflow_client(uri)
    if suite_dir is None:
        suite_dir = _new_suite_dir(output, suite.name)
        run = client.create_run(experiment_id, run_name=suite_dir.name,
                                tags={TAG_KIND: KIND_SUITE, TAG_SESSION: suite_dir.name})
        state["run_id"] = run.info.run_id
    else:
        client.update_run(state["run_id"], status="RUNNING")
    # tags, not params: a resumed suite may have changed them (MLflow params cannot change)
    for key, value in (("methods", ",".join(suite.methods)), ("seeds", ",".join(map(str, suite.seeds))),
                       ("tasks", ",".join(suite.tasks)), ("epochs", str(suite.epochs))):
        client.set_tag(state["run_id"], f"{SUITE_TAG_PREFIX}{key}", value[:5000])
    state["session"] = suite_dir.name
    state["spec"] = to_dict(suite)
    state["origin"] = origin or state.get("origin") or {}
    state_path = suite_dir / SUITE_FILE
    state_path.write_text(json.dumps(state, indent=1))
    log(f"suite {suite.name!r}: {len(specs)} tasks ({', '.join(specs)}) x {len(suite.methods)} methods x "
        f"{len(suite.seeds)} seeds; folder {suite_dir}; MLflow: {uri}")
    status = 0
    for i, (task, spec) in enumerate(specs.items(), 1):
        prior = state["tasks"].get(task)
        if prior and prior.get("exit") == 0 and same_spec(prior.get("spec"), to_dict(spec)):
            log(f"task {i}/{len(specs)} {task}: finished earlier (session {prior['session']}), kept")
            continue
        log(f"task {i}/{len(specs)} {task}: {spec.name}")
        record = _run_task(spec, prior, output, uri, address, {**(origin or {}), "suite": suite_dir.name,
                                                                "task": task})
        record["run_id"] = _task_run(client, experiment_id, state["run_id"], suite_dir.name, task, spec.name,
                                     record, (prior or {}).get("run_id"))
        state["tasks"][task] = record
        state_path.write_text(json.dumps(state, indent=1, default=str))
        if record["exit"] == 130:
            status = 130
            log(f"interrupted in task {task}; the finished tasks are kept. Continue with: medtune suite "
                f"--resume {suite_dir}")
            break
        if record["exit"] != 0:
            status = 1
    # a task that finished earlier and is not in the spec any more stays out of this suite's report
    for gone in [t for t in state["tasks"] if t not in specs]:
        log(f"task {gone}: no longer in the suite spec; left out of its report")
        run_id = state["tasks"].pop(gone).get("run_id")
        if run_id:
            client.delete_run(run_id)
    state_path.write_text(json.dumps(state, indent=1, default=str))
    report = None
    try:
        report = build_suite_report(uri, suite.name, suite_dir.name)
        paths = report.write(suite_dir / "report")
        for path in paths:
            client.log_artifact(state["run_id"], str(path))
        for key, number in report.summary_metrics().items():
            client.log_metric(state["run_id"], key, number)
        show(report.text())
        log(f"report files: {suite_dir / 'report'}; one task's view: medtune report {suite.name}-<task>")
    except Exception as exc:
        _log.debug("the suite report failed", exc_info=True)
        log(f"the suite's report could not be built ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            f"rebuild it with: medtune report {suite.name}")
        status = status or 1
    client.set_terminated(state["run_id"], status={0: "FINISHED", 130: "KILLED"}.get(status, "FAILED"))
    if status == 1:
        bad = [f"{t} ({r['message'] or 'exit ' + str(r['exit'])})" for t, r in state["tasks"].items() if r["exit"]]
        log(f"{len(bad)} task(s) did not finish: {'; '.join(bad)}; after fixing, rerun only them with: "
            f"medtune suite SPEC --resume {suite_dir}")
    return SuiteResult(status, report, suite_dir, uri, state["run_id"])


# ---------------------------------------------------------------------------------------------------------------
# The report, from MLflow alone


def suite_parent(client, experiment: str, session: str | None = None):
    """The suite's parent run in ``experiment`` (its latest session unless ``session``), or None when the
    experiment is no suite's."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    flt = f"tags.`{TAG_KIND}` = '{KIND_SUITE}'"
    if session:
        flt += f" and tags.`{TAG_SESSION}` = '{session}'"
    runs = client.search_runs([exp.experiment_id], filter_string=flt, max_results=1000)
    return max(runs, key=lambda r: r.data.tags.get(TAG_SESSION, "")) if runs else None


def is_suite(tracking_uri: str, experiment: str) -> bool:
    """Whether ``experiment`` holds a suite's parent run (``medtune report`` and the dashboard dispatch on it)."""
    return suite_parent(mlflow_client(tracking_uri), experiment) is not None


def _task_rows(client, uri: str, task: str, experiment: str, session: str) -> tuple[list[dict[str, Any]], str, str]:
    """The long-table rows of one task session, its direction and its report's text."""
    _, session, runs = session_runs(client, uri, experiment, session)
    report = studies.build_report(uri, experiment, session)
    metric, mode = getattr(report, "metric", "dice"), getattr(report, "mode", "max")
    target = getattr(report, "target", getattr(report, "target_dice", 0.0))
    trials = trial_metrics(report.curves, target, metric, mode).set_index("run_id")
    # the task report's own mark where it has one (a learned method that changed no LR; pbt: never exploited)
    table = getattr(report, "table", None)
    if table is None or "status" not in table:
        table = compare_runs(report.curves, target, metric, mode)
    inactive = {str(m) for m, s in table["status"].items() if s == INACTIVE}
    rows = []
    for run in runs:
        rid, params = run.info.run_id, run.data.params
        method, seed = params.get("method", "?"), int(params.get("seed", 0))
        score = float(trials.loc[rid, f"test_{metric}"]) if rid in trials.index else math.nan
        status = OK
        if run.info.status in ("FAILED", "KILLED"):
            status = "failed"
        elif method in inactive:
            status = "inactive"
        rows.append({"task": task, "method": method, "seed": seed, "score": score, "status": status})
    return rows, mode, report.text()


def build_suite_report(tracking_uri: str, suite: str, session: str | None = None) -> SuiteReport:
    """The suite's report (its latest session unless ``session``), rebuilt from MLflow alone: the parent run,
    its nested task runs and each task's own trial runs.

    Raises:
        InputError: ``suite`` holds no suite parent run (or not that session).
    """
    client = mlflow_client(tracking_uri)
    parent = suite_parent(client, suite, session)
    if parent is None:
        raise InputError(f"experiment {suite!r} holds no suite{f' session {session!r}' if session else ''}; run "
                         f"`medtune suite SPEC` first")
    params = {k[len(SUITE_TAG_PREFIX):]: v for k, v in parent.data.tags.items() if k.startswith(SUITE_TAG_PREFIX)}
    methods = [m for m in params.get("methods", "").split(",") if m]
    seeds = [int(s) for s in params.get("seeds", "").split(",") if s]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'", max_results=1000)
    order = [t for t in params.get("tasks", "").split(",") if t]
    children.sort(key=lambda r: order.index(r.data.tags[TAG_SUITE_TASK]) if r.data.tags.get(TAG_SUITE_TASK) in order
                  else len(order))
    rows, modes, tasks = [], {}, []
    for child in children:
        tags = child.data.tags
        name, experiment, task_session = tags.get(TAG_SUITE_TASK, "?"), tags.get(TAG_SUITE_EXPERIMENT, ""), \
            tags.get(TAG_SUITE_SESSION, "")
        entry = SuiteTask(name, experiment, task_session, int(tags.get(TAG_SUITE_EXIT, 1)),
                          tags.get(TAG_SUITE_MESSAGE, ""))
        task_rows: list[dict[str, Any]] = []
        if task_session:
            try:
                task_rows, modes[name], entry.text = _task_rows(client, tracking_uri, name, experiment,
                                                                task_session)
            except InputError as exc:  # a session that logged no trial: every method is marked there
                entry.message = entry.message or str(exc).splitlines()[0][:200]
        have = {r["method"] for r in task_rows}
        task_rows += [{"task": name, "method": m, "seed": s, "score": math.nan, "status": "failed"}
                      for m in methods if m not in have for s in seeds]
        rank = {m: i for i, m in enumerate(methods)}  # the suite's method order, whatever order runs came in
        rows += sorted(task_rows, key=lambda r: (rank.get(r["method"], len(rank)), r["method"], r["seed"]))
        tasks.append(entry)
    long = pd.DataFrame(rows, columns=["task", "method", "seed", "score", "status"])
    return SuiteReport(suite, parent.info.experiment_id, parent.data.tags.get(TAG_SESSION, ""), tasks,
                       aggregate(long, modes))


def load_view(tracking_uri: str, experiment: str, session: str | None = None):
    """The dashboard's view of ``experiment``: a suite's page when it holds a suite, else its study's
    (:func:`medtune.cluster.studies.registry.load_view`)."""
    client = mlflow_client(tracking_uri)
    parent = suite_parent(client, experiment, session)
    if parent is None:
        return studies.load_view(tracking_uri, experiment, session)
    view = build_suite_report(tracking_uri, experiment, parent.data.tags.get(TAG_SESSION)).view()
    view.status = run_status(client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'")).replace(
        " run", " task", 1)
    return view


def suite(spec: str = "lr-suite", smoke: bool = False, overrides: Sequence[str] = (),
          output: str | os.PathLike = "medtune-runs", tracking_uri: str | None = None, address: str | None = None,
          resume: str | os.PathLike | bool | None = None) -> SuiteResult:
    """``medtune suite SPEC`` from Python: load the suite (a YAML path or a built-in name such as ``lr-suite``),
    run its tasks one after the other and return the cross-task result.

    Args:
        smoke: apply the suite's ``smoke:`` section; overrides: ``"dotted.key=value"`` items (e.g.
            ``"tasks.phantom-24.set.data.num_volumes=8"``).
        resume: a suite folder to continue, or True for the latest one of this suite under ``output``.

    Raises:
        InputError: bad input, one line, before any task runs.
    """
    loaded, specs = load_suite(spec, smoke, overrides)
    if resume is True:
        resume = latest_suite_dir(output, loaded.name)
    return run_suite(loaded, specs, output, tracking_uri, address,
                     {"spec": spec, "smoke": smoke, "overrides": list(overrides)}, resume=resume or None)
