"""What every study's spec shares: reading YAML files and built-in names, ``--set`` overrides, and
:class:`StudySpec`, the base of every study's spec dataclass (its opening fields: name, study, description,
seeds, resources, max_failures, storage, smoke, and their checks). Each study's spec dataclass lives in its
own study module, and :func:`medtune.cluster.studies.registry.load_spec` builds the right one.

A spec is checked completely before Ray starts: unknown keys (with the nearest
valid name), wrong types, out-of-range values, unknown methods, a missing file
or malformed YAML all raise :class:`SpecError`, one line naming the field, the
value and the fix; the CLI prints it and exits with status 2.

Overrides, in order: the spec file, its ``smoke:`` section (with ``--smoke``),
then each ``--set dotted.key=value`` (the value is read as YAML, so
``--set seeds=[0,1]`` and ``--set train.epochs=5`` work).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import yaml

from medtune.cluster.runs.storage import storage_path
from medtune.errors import InputError, did_you_mean

__all__ = [
    "ResourcesConfig", "SpecError", "StudySpec", "apply_override", "builtin_specs", "check_name",
    "check_seeds_and_methods", "check_storage", "check_trainable_study", "parse_set", "read_spec_file",
    "unknown_setting",
]


class SpecError(InputError):
    """A spec medtune cannot run (exit status 2)."""


def check_seeds_and_methods(seeds: tuple[int, ...], methods: tuple[str, ...], known: Sequence[str],
                            what: str) -> None:
    if not seeds:
        raise ValueError("seeds=[] is empty; list at least one seed, e.g. seeds: [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={list(seeds)!r} has duplicates; list each seed once")
    if not methods:
        raise ValueError(f"methods=[] is empty; list some of {', '.join(known)}")
    for m in methods:
        if m not in known:
            raise ValueError(f"methods: {m!r} is not {what}{did_you_mean(m, tuple(known))}; use any of "
                             f"{', '.join(known)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods={list(methods)!r} has duplicates; list each method once")


def check_trainable_study(data: dict[str, Any]) -> None:
    """A spec naming ``trainable:`` is its own study (``own``): one line when it also names another ``study:``."""
    study = data.get("study")
    if "trainable" in data and study is not None and study != "own":
        raise SpecError(
            f"trainable={data['trainable']!r} names your own training function, which is a study of its own: a spec "
            f"with trainable: needs no study: (it is study: own), so remove study: {study!r}; or remove trainable: "
            f"to run the built-in {study!r} study"
        )


def check_storage(storage: str | None) -> None:
    """A spec's ``storage:`` must name a folder path or a ``file://`` URI (written to only when the run starts)."""
    if storage is not None:
        storage_path(storage, "storage")


def check_name(name: object) -> None:
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ValueError(f"name={name!r} must be a non-empty word without '/', '\\' or spaces")


@dataclass(frozen=True)
class ResourcesConfig:
    """What each trial asks of the cluster.

    Attributes:
        cpus_per_trial: CPU cores Ray reserves for each trial (> 0; fractions are allowed); the studies also size
            a trial's data-loading and torch threads from it (at least 1).
        gpus_per_trial: GPUs Ray reserves for each trial (>= 0): a fraction such as 0.25 lets four trials share
            one GPU, above 1 it must be a whole number. 0 runs the trials on the CPU.
        max_concurrent: the most trials Ray Tune runs at once (>= 0); 0 means no limit beyond the resources.
    """

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0

    def __post_init__(self) -> None:
        if self.cpus_per_trial <= 0:
            raise ValueError(f"cpus_per_trial={self.cpus_per_trial!r} must be > 0")
        if self.gpus_per_trial < 0:
            raise ValueError(f"gpus_per_trial={self.gpus_per_trial!r} must be >= 0 (fractions such as 0.25 are fine)")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):  # Ray's rule for a trial
            raise ValueError(f"gpus_per_trial={self.gpus_per_trial!r}: above 1 it must be a whole number of GPUs "
                             "(fractions such as 0.25 share one GPU)")
        if self.max_concurrent < 0:
            raise ValueError(f"max_concurrent={self.max_concurrent!r} must be >= 0 (0 means no limit)")


def unknown_setting(key: str, names: list[str] | tuple[str, ...], prefix: str = "") -> InputError:
    """The one line for a setting ``key`` that is none of ``names``: the nearest name suggested, the valid ones
    listed (an unknown spec key, ``from_dict``'s, and an unknown keyword of :func:`medtune.compare` alike)."""
    return InputError(f"{prefix}{key} is not a known setting{did_you_mean(key, names)}; "
                      f"valid keys here: {', '.join(names)}")


@dataclass(frozen=True)
class StudySpec:
    """The opening every study's spec shares, checked at construction (before Ray starts).

    A study's spec subclasses it (``@dataclass(frozen=True)``), sets its own defaults of ``name`` and
    ``study`` (the registered study name, :mod:`medtune.cluster.studies.registry`), adds its fields and its
    own checks in a ``__post_init__`` that calls this one first. The class attributes name what the seed and
    method check needs: ``KNOWN_METHODS`` (the valid method names), ``METHOD_KIND`` (how a method is called in
    the error line, "an LR method") and ``TITLE`` (what the spec is, "the LR study's spec").

    Checks (each a one-line ``ValueError``, an :class:`~medtune.errors.InputError` through ``from_dict``):
    ``name`` one word, ``storage`` a folder path or ``file://`` URI, ``study`` this spec's own, ``seeds`` and
    the methods (:meth:`checked_methods`) non-empty, known and without duplicates, ``max_failures >= 0``;
    ``resources`` checks itself (:class:`ResourcesConfig`).

    Attributes:
        name: the run's name, one word without ``/``, ``\\`` or spaces: the MLflow experiment the trials are
            logged to and the prefix of each session folder (``<name>-<YYYYmmdd-HHMMSS>``).
        study: the registered study this spec is for (``lr``, ``active-learning``, ``apga``, ``paser``,
            ``own``); a study's spec accepts only its own name, which is its default.
        description: free text, one line, shown next to the spec's name by ``medtune specs``; it changes nothing
            in the run.
        seeds: the random seeds (at least one, no duplicates): every method runs once per seed, and the report
            compares the methods over them.
        resources: what each trial asks of the cluster (:class:`ResourcesConfig`).
        max_failures: how many times Ray Tune retries a trial that failed (an exception or a lost worker) before
            it counts it as failed (>= 0; 0 never retries).
        smoke: dotted keys and values (``train.epochs: 1``) applied on top of the spec when it is run with
            ``--smoke``, to shrink every budget for a quick end-to-end check; ignored otherwise.
    """

    KNOWN_METHODS: ClassVar[Sequence[str]] = ()
    METHOD_KIND: ClassVar[str] = "a method"
    TITLE: ClassVar[str] = "a study's spec"

    name: str = "study"
    study: str = ""
    description: str = ""
    seeds: tuple[int, ...] = (0, 1, 2)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 2
    storage: str | None = None  # the session state's root (default: --output); see medtune.cluster.runs.storage
    smoke: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name)
        check_storage(self.storage)
        own = type(self).__dataclass_fields__["study"].default
        if self.study != own:
            raise ValueError(f"study={self.study!r}: this is {self.TITLE}; set study: {own}")
        check_seeds_and_methods(self.seeds, self.checked_methods(), self.KNOWN_METHODS, self.METHOD_KIND)
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise ValueError(f"max_failures={self.max_failures!r} must be >= 0")

    def checked_methods(self) -> tuple[str, ...]:
        """The method names the seed and method check reads (the spec's ``methods``)."""
        return tuple(getattr(self, "methods", ()))


def builtin_specs() -> list[str]:
    """Names of the specs shipped in ``cluster/specs``."""
    root = resources.files("medtune.cluster") / "specs"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys on top: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def read_spec_file(spec: str, _seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """Raw mapping of a spec given as a path or a built-in name, and where it came from.

    A spec may start from another with ``base: NAME_OR_PATH`` (a built-in name, or a path relative to the
    spec's folder): its own keys then go on top of the base's, section by section (``smoke`` too), so a
    variant names only what differs. A chain that comes back to a spec already in it is an error.
    """
    data, source = _read_one(spec)
    base = data.pop("base", None)
    if base is None:
        return data, source
    if not isinstance(base, str) or not base:
        raise SpecError(f"spec {source}: base={base!r} must name a built-in spec or a YAML path")
    key = source if source.startswith("built-in") else str(Path(source).resolve())  # d/../d/a.yaml is d/a.yaml
    if key in _seen:
        raise SpecError(f"spec {source}: its base chain comes back to itself ({' -> '.join([*_seen, key])}); "
                        "remove one base")
    is_path = "/" in base or base.endswith((".yaml", ".yml"))
    if is_path and not Path(base).expanduser().is_absolute() and not source.startswith("built-in"):
        base = str(Path(source).parent / base)  # relative to the spec that names it
    parent, _ = read_spec_file(base, (*_seen, key))
    return _merged(parent, data), source


def _read_one(spec: str) -> tuple[dict[str, Any], str]:
    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in spec:
        if not path.is_file():
            raise SpecError(f"spec file {str(path)!r} does not exist; give a YAML path or one of "
                            f"{', '.join(builtin_specs())}")
        source = str(path)
        text = path.read_text()
    elif spec in builtin_specs():
        source = f"built-in spec {spec!r}"
        text = (resources.files("medtune.cluster") / "specs" / f"{spec}.yaml").read_text()
    else:
        raise SpecError(
            f"spec {spec!r} is neither a file nor a built-in spec{did_you_mean(spec, builtin_specs())}; "
            f"built-ins: {', '.join(builtin_specs())}"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"spec {source} is not valid YAML{where}: {problem}; fix the YAML syntax there") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"spec {source} must be a YAML mapping of settings, not {type(data).__name__}")
    return data, source


def apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings on the way."""
    parts = key.split(".")
    if not all(parts):
        raise SpecError(f"--set key {key!r} is malformed; write --set section.field=value")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section; set it directly")
        node = child
    node[parts[-1]] = value


def parse_set(item: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` -> ``("train.epochs", 5)``; the value is read as YAML."""
    if "=" not in item:
        raise SpecError(f"--set {item!r} has no '='; write --set key=value, e.g. --set train.epochs=5")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value
