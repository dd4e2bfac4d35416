"""The study registry: one :class:`Study` per study name, and the entry points that dispatch on it.

A study is a plug-in. Its module under ``medtune.cluster`` (``lr_study``, ``al_study``, ``apga_study``, ``paser_study``,
``own_study`` for a user's own trainable) defines its spec dataclass,
``run(spec, output, tracking_uri, address, origin) -> int``, ``resume(session_dir, address) -> int``,
``build_report(tracking_uri, experiment, session) -> report`` and ``log_session_summary(session_dir)`` (the spec class
as ``SPEC``); :meth:`Study.of` reads them. A report has ``text()``, ``write(folder)``, ``summary_metrics()`` and
``view()`` (what the dashboard and the HTML report draw). Adding a study means adding its files and one line to
:data:`STUDIES`; nothing else keys on its name.

Trial runs in MLflow carry the param ``study`` (runs of the LR study written before that param existed have none
and count as ``lr``), so :func:`build_report` picks the right report without being told.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from medtune.cluster.runs.console import quiet_api
from medtune.cluster.runs.storage import check_writable, find_session, resolve_storage, storage_path
from medtune.cluster.studies import al_study, apga_study, lr_study, own_study, paser_study
from medtune.cluster.studies.session import log, read_session
from medtune.cluster.studies.spec import SpecError, apply_override, check_trainable_study, parse_set, read_spec_file
from medtune.config import from_dict
from medtune.dashboards.runs import mlflow_client, session_runs, study_of
from medtune.dashboards.views import View, run_status
from medtune.errors import InputError, did_you_mean

__all__ = [
    "FORMER_NAMES", "STUDIES", "Study", "build_report", "get_study", "load_spec", "load_view", "locate_session",
    "resume", "run", "session_study",
]


@dataclass(frozen=True)
class Study:
    """What medtune needs of one study. ``name`` is the spec's ``study:`` value and the runs' ``study`` param."""

    name: str
    spec: type
    run: Callable[..., int]
    resume: Callable[..., int]
    build_report: Callable[..., Any]
    log_session_summary: Callable[[str | os.PathLike], None]

    @classmethod
    def of(cls, module: ModuleType) -> Study:
        """The study a module defines; its name is the default ``study`` of its spec class."""
        spec = module.SPEC
        return cls(spec.__dataclass_fields__["study"].default, spec, module.run, module.resume, module.build_report,
                   module.log_session_summary)


STUDIES: dict[str, Study] = {s.name: s for s in map(Study.of, (
    lr_study,
    al_study,
    apga_study,
    paser_study,
    own_study,
))}


def get_study(name: object) -> Study:
    """The registered study ``name``; one line naming it and the known ones if there is none."""
    if name not in STUDIES:
        names = tuple(STUDIES)
        raise InputError(
            f"study={name!r} is not a study{did_you_mean(str(name), names)}; use one of {', '.join(names)}")
    return STUDIES[name]  # type: ignore[index]


# Names that sessions written by earlier versions carry for a registered study: ``medtune.compare`` stored
# ``study: compare`` before its sessions were named for the own-training study that owns them.
FORMER_NAMES: dict[str, str] = {"compare": "own"}


def session_study(info: dict[str, Any]) -> Study:
    """The study a session's ``medtune.json`` belongs to (an earlier version's name, :data:`FORMER_NAMES`,
    included)."""
    name = info["spec"].get("study", "lr")
    return get_study(FORMER_NAMES.get(name, name))


def load_spec(spec: str, smoke: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Load a spec (a YAML path or a built-in name), apply ``smoke`` and ``--set`` overrides, and check it.

    Args:
        spec: a path to a YAML file, or a built-in name such as ``lr-schedulers`` (``medtune specs`` lists them).
        smoke: apply the spec's ``smoke:`` section (every budget shrunk).
        overrides: ``"dotted.key=value"`` items, the value read as YAML.

    Returns:
        The study's typed spec (a frozen dataclass).

    Raises:
        SpecError: one line naming the field, the value and the fix.
    """
    data, _source = read_spec_file(spec)
    data = copy.deepcopy(data)
    if "tasks" in data:
        raise SpecError(f"spec {_source} is a suite (it lists tasks); run it with: medtune suite {spec}")
    if smoke:
        smoke_overrides = data.get("smoke") or {}
        if not isinstance(smoke_overrides, dict):
            raise SpecError(f"smoke={smoke_overrides!r} must be a mapping of dotted keys to values")
        for key, value in smoke_overrides.items():
            apply_override(data, str(key), value)
    for item in overrides:
        apply_override(data, *parse_set(item))
    # Paths are kept absolute, so `medtune resume` works from any folder.
    for section, key in (("data", "path"), ("qlearning", "warm_start")):
        value = (data.get(section) or {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value:
            data[section][key] = str(Path(value).expanduser().resolve())
    if isinstance(data.get("storage"), str) and data["storage"] and "://" not in data["storage"]:
        data["storage"] = str(Path(data["storage"]).expanduser().resolve())
    check_trainable_study(data)
    try:
        # A spec naming its own `trainable:` is the own-training study.
        return from_dict(get_study(data.get("study", "own" if "trainable" in data else "lr")).spec, data)
    except InputError as exc:
        raise SpecError(str(exc)) from None


@quiet_api
def run(spec: Any, output: str | os.PathLike = "medtune-runs", tracking_uri: str | None = None,
        address: str | None = None, origin: dict[str, Any] | None = None, storage: str | None = None,
        verbose: bool = False) -> int:
    """Run a loaded spec (see :func:`load_spec`) as one tracked session; returns the exit status (0 success,
    1 failed trials, 130 interrupted). The session folder lives under ``storage`` (overriding the spec's
    ``storage:``), else under ``output``, which always holds the default MLflow store. It prints what
    ``medtune run`` prints; ``verbose``: also Ray's, Tune's and MLflow's own output.

    Raises:
        InputError: the storage cannot be written (checked before anything starts), or any bad input.
    """
    if storage is not None:
        spec = replace(spec, storage=str(resolve_storage(storage, "--storage")))
    return get_study(spec.study).run(spec, output, tracking_uri=tracking_uri, address=address, origin=origin)


def locate_session(session: str | os.PathLike | None = None, storage: str | None = None) -> Path:
    """The session folder ``medtune resume`` continues: ``session`` itself (a folder), or, with ``storage``,
    the session of that name under the storage root (its latest session when ``session`` is None).

    Raises:
        InputError: neither is given, the storage cannot be used, or it holds no such session.
    """
    if storage is None:
        if session is None:
            raise InputError("give the session folder `medtune run` printed, or --storage ROOT to resume "
                             "the latest session stored there")
        return Path(session).expanduser().resolve()
    root = storage_path(storage, "--storage")
    if not root.is_dir():  # resume creates nothing: a storage that is not there holds no session
        raise InputError(f"--storage {storage!r} is not a folder here; give the storage the run used "
                         "(is it mounted on this machine?)")
    check_writable(root, storage)  # resume appends to the journal and writes checkpoints
    name = None if session is None else Path(session).name  # a name, or a folder inside the storage
    if session is not None and Path(session).expanduser().is_dir() and \
            Path(session).expanduser().resolve().parent != root:
        raise InputError(f"{str(session)!r} is not under --storage {storage!r}; give a session name stored there "
                         "(or the folder alone, without --storage)")
    return find_session(root, name, storage)


@quiet_api
def resume(session_dir: str | os.PathLike | None = None, address: str | None = None,
           storage: str | None = None, verbose: bool = False) -> int:
    """Finish an interrupted session from its folder (the one ``run`` printed), or from the storage alone
    (see :func:`locate_session`); returns the exit status. ``verbose`` as in :func:`run`."""
    session_dir = locate_session(session_dir, storage)
    info = read_session(session_dir)
    if storage is not None:
        log(f"resuming session {session_dir.name} from the storage {storage}")
    return session_study(info).resume(session_dir, address=address)


def build_report(tracking_uri: str, experiment: str, session: str | None = None) -> Any:
    """The comparison report of ``experiment`` (its latest session unless ``session``), from MLflow alone.

    Raises:
        InputError: unknown experiment (nearest name suggested), or one with no trial runs.
    """
    _, session, runs = session_runs(mlflow_client(tracking_uri), tracking_uri, experiment, session)
    return get_study(study_of(runs)).build_report(tracking_uri, experiment, session)


def load_view(tracking_uri: str, experiment: str, session: str | None = None) -> View:
    """``experiment``'s dashboard view (its latest session unless ``session``), with its runs' status line.

    Raises:
        InputError: unknown experiment, or one with no trial runs.
    """
    _, session, runs = session_runs(mlflow_client(tracking_uri), tracking_uri, experiment, session)
    view = get_study(study_of(runs)).build_report(tracking_uri, experiment, session).view()
    view.status = run_status(runs)
    return view
