"""Experiment specs: YAML files (or built-in names) loaded into typed configuration.

A spec is checked completely before Ray starts: unknown keys (with the nearest
valid name), wrong types, out-of-range values, unknown methods, a missing file
or malformed YAML all raise :class:`SpecError`, one line naming the field, the
value and the fix; the CLI prints it and exits with status 2.

Overrides, in order: the spec file, its ``smoke:`` section (with ``--smoke``),
then each ``--set dotted.key=value`` (the value is read as YAML, so
``--set seeds=[0,1]`` and ``--set train.epochs=5`` work).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, make_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medtune.searchers.lr_schedules import ScheduleConfig
from medtune.searchers.pbt import PBTConfig
from medtune.searchers.qlearning_agent import QLearningConfig, load_qtable_file
from medtune.trainables.active_learning import METHODS as AL_METHODS
from medtune.trainables.active_learning import ActiveLearningConfig
from medtune.trainables.augmentation import METHODS as AUGMENTATION_METHODS
from medtune.trainables.augmentation import AugmentationConfig
from medtune.trainables.classification_data import ClassificationDataConfig
from medtune.trainables.data import DataConfig
from medtune.trainables.paser_data import PaSeRDataConfig
from medtune.trainables.paser_models import PaSeRModelsConfig
from medtune.searchers.paser import PaSeRConfig, check_grid
from medtune.errors import InputError, did_you_mean
from medtune.trainables.segmentation import METHODS, ModelConfig, TrainConfig
from medtune.config import from_dict



class SpecError(InputError):
    """A spec medtune cannot run (exit status 2)."""


def _check_seeds_and_methods(seeds: tuple[int, ...], methods: tuple[str, ...], known: tuple[str, ...], what: str) -> None:
    if not seeds:
        raise ValueError("seeds=[] is empty; list at least one seed, e.g. seeds: [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={list(seeds)!r} has duplicates; list each seed once")
    if not methods:
        raise ValueError(f"methods=[] is empty; list some of {', '.join(known)}")
    for m in methods:
        if m not in known:
            raise ValueError(f"methods: {m!r} is not {what}{did_you_mean(m, known)}; use any of {', '.join(known)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods={list(methods)!r} has duplicates; list each method once")


def _check_name(name: str) -> None:
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"name={name!r} must be a non-empty word without '/', '\\' or spaces")


@dataclass(frozen=True)
class ResourcesConfig:
    """What each trial asks of the cluster."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # 0: as many as the resources allow

    def __post_init__(self) -> None:
        if self.cpus_per_trial <= 0:
            raise ValueError(f"cpus_per_trial={self.cpus_per_trial!r} must be > 0")
        if self.gpus_per_trial < 0:
            raise ValueError(f"gpus_per_trial={self.gpus_per_trial!r} must be >= 0 (fractions such as 0.25 are fine)")
        if self.max_concurrent < 0:
            raise ValueError(f"max_concurrent={self.max_concurrent!r} must be >= 0 (0 means no limit)")


def _check_warm_start(self) -> None:
    if self.warm_start is None:
        return
    if not Path(self.warm_start).expanduser().is_file():
        raise ValueError(f"warm_start={self.warm_start!r} is not a file; give the qtable.json of an earlier experiment")
    load_qtable_file(Path(self.warm_start).expanduser(), QLearningConfig())  # one line naming the file if it is no Q-table


# The ``qlearning:`` section: every QLearningConfig field but the LR bounds (those come from ``train``),
# plus where to warm-start from and the seed of the shared table. Derived, so the two never drift apart.
LR_BOUNDS = ("base_lr", "min_lr", "max_lr")
QLearningSpec = make_dataclass(
    "QLearningSpec",
    [(f.name, f.type, field(default=f.default)) for f in fields(QLearningConfig) if f.name not in LR_BOUNDS]
    + [("warm_start", "str | None", field(default=None)), ("seed", "int", field(default=0))],
    frozen=True,
    namespace={"__post_init__": _check_warm_start, "__doc__": "The spec's qlearning section (LR bounds come from train)."},
)
QLearningSpec.__module__ = __name__  # picklable, like every other spec class


@dataclass(frozen=True)
class LRStudySpec:
    """The learning-rate study: every method x every seed in one Tune experiment."""

    name: str = "lr-schedulers"
    study: str = "lr"
    description: str = ""
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedules: ScheduleConfig = field(default_factory=ScheduleConfig)
    qlearning: QLearningSpec = field(default_factory=QLearningSpec)
    pbt: PBTConfig = field(default_factory=PBTConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 2
    smoke: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.study != "lr":
            raise ValueError(f"study={self.study!r}: this is the LR study's spec; set study: lr")
        _check_seeds_and_methods(self.seeds, self.methods, METHODS, "an LR method")
        if "qlearning_warm" in self.methods and not self.qlearning.warm_start:
            raise ValueError(
                "methods: 'qlearning_warm' needs qlearning.warm_start; give the qtable.json of an earlier "
                "experiment, e.g. --set qlearning.warm_start=medtune-runs/<session>/qtable.json"
            )
        if self.max_failures < 0:
            raise ValueError(f"max_failures={self.max_failures!r} must be >= 0")

    def agent_config(self) -> QLearningConfig:
        """The Q-learning agent's configuration: the ``qlearning`` section plus the LR bounds of ``train``."""
        q = {k: v for k, v in self.qlearning.__dict__.items() if k not in ("seed", "warm_start")}
        bounds = {k: getattr(self.train, k) for k in LR_BOUNDS}
        return QLearningConfig(**bounds, **q)


REGIMES = ("full", "few_shot")


@dataclass(frozen=True)
class APGAStudySpec:
    """The APGA study (paper 002): every augmentation method x regime x seed in one Tune experiment.

    ``regimes`` are ``full`` (every training image) and ``few_shot`` (``few_shot`` images per class,
    100 as in the paper); both share one held-out test split. ``train.pretrain_epochs`` pre-train one
    classifier per (regime, seed) that all methods of that seed start from.
    """

    name: str = "apga"
    study: str = "apga"
    description: str = ""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    methods: tuple[str, ...] = AUGMENTATION_METHODS
    regimes: tuple[str, ...] = REGIMES
    few_shot: int = 100
    data: ClassificationDataConfig = field(default_factory=lambda: ClassificationDataConfig(source="cluttered_digits"))
    train: AugmentationConfig = field(default_factory=AugmentationConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 2
    smoke: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.study != "apga":
            raise ValueError(f"study={self.study!r}: this is the APGA study's spec; set study: apga")
        _check_seeds_and_methods(self.seeds, self.methods, AUGMENTATION_METHODS, "an augmentation method")
        if not self.regimes or len(set(self.regimes)) != len(self.regimes):
            raise ValueError(f"regimes={list(self.regimes)!r} must list some of {', '.join(REGIMES)} once each")
        for r in self.regimes:
            if r not in REGIMES:
                raise ValueError(f"regimes: {r!r} is not a regime{did_you_mean(r, REGIMES)}; use any of {', '.join(REGIMES)}")
        if "few_shot" in self.regimes and self.few_shot < 1:
            raise ValueError(f"few_shot={self.few_shot!r} must be >= 1 images per class (the paper uses 100)")
        if self.data.few_shot:
            raise ValueError(f"data.few_shot={self.data.few_shot!r}: the study sets it per regime; "
                             "set the top-level few_shot instead and leave data.few_shot at 0")
        if self.max_failures < 0:
            raise ValueError(f"max_failures={self.max_failures!r} must be >= 0")


@dataclass(frozen=True)
class ActiveLearningStudySpec:
    """The active-learning study (paper 001): every selection strategy x seed in one Tune experiment.

    Each trial owns an Annotator and a Learner actor (see :mod:`medtune.trainables.active_learning_actors`);
    ``budget`` caps the labels each Annotator gives out (0: the whole training pool).
    """

    name: str = "active-learning"
    study: str = "active-learning"
    description: str = ""
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = AL_METHODS
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    loop: ActiveLearningConfig = field(default_factory=ActiveLearningConfig)
    budget: int = 0
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 2
    smoke: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.study != "active-learning":
            raise ValueError(f"study={self.study!r}: this is the active-learning study's spec; set study: active-learning")
        _check_seeds_and_methods(self.seeds, self.methods, AL_METHODS, "a selection strategy")
        if self.budget < 0:
            raise ValueError(f"budget={self.budget!r} must be >= 0 labels (0: the whole training pool)")
        if self.max_failures < 0:
            raise ValueError(f"max_failures={self.max_failures!r} must be >= 0")


PASER_BASELINES = ("small", "medium", "large", "cascade", "random")


@dataclass(frozen=True)
class PaSeRStudySpec:
    """The PaSeR study (paper 003): a Tune grid over the cost weight ``lams`` x ``seeds`` plus the baselines.

    The three models are pre-trained once and shared by every trial; ``router.lam`` is ignored (each
    trial takes its ``lam`` from ``lams``). ``random`` runs inside each ``lam`` trial, at its router's cost.
    """

    name: str = "paser"
    study: str = "paser"
    description: str = ""
    seeds: tuple[int, ...] = (0, 1, 2)
    lams: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)
    baselines: tuple[str, ...] = PASER_BASELINES
    data: PaSeRDataConfig = field(default_factory=PaSeRDataConfig)
    models: PaSeRModelsConfig = field(default_factory=PaSeRModelsConfig)
    router: PaSeRConfig = field(default_factory=PaSeRConfig)
    pretrain_seed: int = 0
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 2
    smoke: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.study != "paser":
            raise ValueError(f"study={self.study!r}: this is the PaSeR study's spec; set study: paser")
        if not self.lams:
            raise ValueError("lams=[] is an empty grid; list cost weights in [0, 1], e.g. lams: [0, 0.25, 0.5, 0.9]")
        for lam in self.lams:
            if not isinstance(lam, (int, float)) or not 0 <= lam <= 1:
                raise ValueError(f"lams: {lam!r} is outside [0, 1]; a cost weight lies between 0 (accuracy only) "
                                 "and 1 (cost only)")
        if len(set(self.lams)) != len(self.lams):
            raise ValueError(f"lams={list(self.lams)!r} has duplicates; list each cost weight once")
        _check_seeds_and_methods(self.seeds, self.baselines or ("random",), PASER_BASELINES, "a PaSeR baseline")
        try:
            check_grid(self.data.canvas, self.router.grid, self.router.margin)
        except ValueError as exc:
            raise ValueError(f"router.{exc} (data.canvas={self.data.canvas})") from None
        if self.max_failures < 0:
            raise ValueError(f"max_failures={self.max_failures!r} must be >= 0")


def builtin_specs() -> list[str]:
    """Names of the specs shipped in ``cluster/specs``."""
    root = resources.files("medtune.cluster") / "specs"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_spec_file(spec: str) -> tuple[dict[str, Any], str]:
    """Raw mapping of a spec given as a path or a built-in name, and where it came from."""
    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in spec:
        if not path.is_file():
            raise SpecError(f"spec file {str(path)!r} does not exist; give a YAML path or one of {', '.join(builtin_specs())}")
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
        raise SpecError(f"spec {source} is not valid YAML{where}: {problem}; fix the YAML syntax there")
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


def load_spec(spec: str, smoke: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Load, override and check a spec; raises :class:`SpecError` with one line."""
    data, _source = read_spec_file(spec)
    data = copy.deepcopy(data)
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
    from medtune.cluster.studies import check_study, spec_class

    try:
        cls = spec_class(check_study(data.get("study", "own" if "trainable" in data else "lr")))
        parsed = from_dict(cls, data)
    except InputError as exc:
        raise SpecError(str(exc)) from None
    if isinstance(parsed, LRStudySpec):
        try:
            parsed.agent_config()
        except ValueError as exc:
            raise SpecError(f"qlearning.{exc}") from None
    return parsed
