"""Smoke runs of every study, shared by the integration tests and the dashboard's browser tests.

Each study's smoke run costs a minute or more of the suite's 2 cores, so each runs once per test session. All
four write into one output folder, as a user's runs do (one MLflow store holding four experiments), which is
what the dashboard tests serve. The study modules read only their own experiment and session folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Every Ray these tests start (in-process, or in a `medtune` subprocess) runs its workers at nice 0, as
# `medtune run` does: at Ray's default of 15 a loaded machine starves them.
os.environ.setdefault("RAY_worker_niceness", "0")


def _session_dir(out: Path, prefix: str) -> Path:
    return next(p for p in out.iterdir() if p.is_dir() and p.name.startswith(prefix))


@pytest.fixture(scope="session")
def studies_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studies")


@pytest.fixture(scope="session")
def lr_smoke(studies_root):
    """The LR smoke run: every method plus ``qlearning_warm`` (see tests/test_integration_lr.py), 5 epochs."""
    from medtune.searchers.qlearning_agent import ACTIONS, STATES
    from tests.test_integration_lr import EPOCHS, METHODS, medtune

    root, out = studies_root, studies_root / "out"
    qtable = {"q": {s: {a: (1.0 if a == "increase" else 0.0) for a in ACTIONS} for s in STATES}}
    (root / "warm.json").write_text(json.dumps(qtable))
    proc = medtune(
        "run", "lr-schedulers", "--smoke", "--output", str(out),
        "--set", f"train.epochs={EPOCHS}",
        "--set", f"methods=[{','.join(METHODS)}]",
        "--set", f"qlearning.warm_start={root / 'warm.json'}",
        "--set", "qlearning.epsilon=0", "--set", "qlearning.epsilon_min=0",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"root": root, "out": out, "session": _session_dir(out, "lr-schedulers-"), "proc": proc}


def _smoke(studies_root: Path, spec: str, *overrides: str) -> dict:
    from tests.test_integration_lr import medtune

    out = studies_root / "out"
    proc = medtune("run", spec, "--smoke", "--output", str(out), *(a for o in overrides for a in ("--set", o)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"out": out, "session": _session_dir(out, f"{spec}-"), "proc": proc}


@pytest.fixture(scope="session")
def apga_smoke(studies_root):
    """The APGA smoke run: six methods x two regimes, one seed, 10 images per class in the few-shot regime."""
    return _smoke(studies_root, "apga", "few_shot=10")


@pytest.fixture(scope="session")
def al_smoke(studies_root):
    """The active-learning smoke run: every strategy, one seed."""
    return _smoke(studies_root, "active-learning")


@pytest.fixture(scope="session")
def paser_smoke(studies_root):
    """The PaSeR smoke run: two lambdas and every baseline, one seed."""
    return _smoke(studies_root, "paser")


@pytest.fixture(scope="session")
def all_studies(lr_smoke, apga_smoke, al_smoke, paser_smoke) -> Path:
    """The output folder holding one smoke run of each study (its ``mlflow.db`` has four experiments)."""
    return lr_smoke["out"]
