"""The studies medtune runs, and how the CLI finds each one's spec, runner, resume and report.

A study module exposes ``SPEC`` (its spec class), ``run(spec, output, tracking_uri,
address, origin) -> int``, ``resume(session_dir, address) -> int``,
``build_report(tracking_uri, experiment, session) -> report`` and
``log_session_summary(session_dir)``. A report has ``text()``, ``write(folder)``
and ``summary_metrics()`` (see :func:`medtune.dashboards.report.log_summary`).

Trial runs in MLflow carry the param ``study`` (runs of the LR study written before
that param existed have none and count as ``lr``), so ``medtune report EXPERIMENT``
picks the right report without being told.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from medtune.errors import InputError, did_you_mean

STUDIES: dict[str, str] = {"lr": "medtune.cluster.lr_study", "apga": "medtune.cluster.apga_study",
                           "active-learning": "medtune.cluster.al_study", "paser": "medtune.cluster.paser_study",
                           "own": "medtune.cluster.own_study"}
SPEC_CLASSES: dict[str, str] = {"lr": "LRStudySpec", "apga": "APGAStudySpec", "active-learning": "ActiveLearningStudySpec",
                               "paser": "PaSeRStudySpec", "own": "medtune.cluster.own_study:OwnTrainingSpec"}


def check_study(study: object) -> str:
    """``study`` if medtune knows it, else one line naming it and the known ones."""
    if study not in STUDIES:
        names = tuple(STUDIES)
        raise InputError(f"study={study!r} is not a study{did_you_mean(str(study), names)}; use one of {', '.join(names)}")
    return str(study)


def spec_class(study: str) -> type:
    """The spec dataclass of ``study`` (in :mod:`medtune.cluster.spec`, or ``module:Class``)."""
    from medtune.cluster import spec

    name = SPEC_CLASSES[check_study(study)]
    if ":" in name:
        module, name = name.split(":")
        return getattr(importlib.import_module(module), name)
    return getattr(spec, name)


def study_module(study: str) -> ModuleType:
    return importlib.import_module(STUDIES[check_study(study)])
