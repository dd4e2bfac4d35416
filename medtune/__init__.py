"""medtune: reinforcement-learning training control for medical imaging, compared against strong baselines in
parallel on Ray Tune and tracked in MLflow.

The package is layered, bottom up: this root (errors, typed configuration, small helpers; no Ray, no MLflow),
:mod:`medtune.searchers` (what decides: LR agents and schedules, selectors, routers), :mod:`medtune.trainables`
and :mod:`medtune.dashboards` side by side (what runs in a trial; comparisons built from MLflow), and
:mod:`medtune.cluster` on top (the CLI, specs, the study registry, Tuner assembly, the Ray service).

``import medtune`` imports neither Ray nor MLflow. The names below that live in a higher layer are loaded when
first used, so ``medtune.load_spec`` works without importing the cluster layer up front.
"""

from __future__ import annotations

from medtune.errors import InputError
from medtune.util import lazy_exports

__version__ = "0.2.0"

# name -> the module that defines it, imported on first access
_PUBLIC = {
    "QLearningConfig": "medtune.searchers.qlearning_agent",
    "QLearningLRAgent": "medtune.searchers.qlearning_agent",
    "GreedyLR": "medtune.searchers.greedy_lr",
    "EffortController": "medtune.searchers.effort_controller",
    "EpisodicMemory": "medtune.searchers.episodic_memory",
    "DDPGAgent": "medtune.searchers.ddpg",
    "DDPGConfig": "medtune.searchers.ddpg",
    "QLearningLRScheduler": "medtune.searchers.qlearning_scheduler",
    "LRControl": "medtune.trainables.lr_control",
    "LRControlConfig": "medtune.trainables.lr_control",
    "make_optimizer": "medtune.trainables.lr_control",
    "TuningConfig": "medtune.searchers.search_spaces",
    "compare": "medtune.cluster.studies.compare",
    "suite": "medtune.cluster.studies.suite",
    "load_spec": "medtune.cluster.studies.registry",
    "run": "medtune.cluster.studies.registry",
    "resume": "medtune.cluster.studies.registry",
    "build_report": "medtune.cluster.studies.registry",
}

__all__ = ["__version__", "InputError", *_PUBLIC]
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
