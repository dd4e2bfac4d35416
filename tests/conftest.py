"""Smoke runs of every study, shared by the integration tests and the dashboard's browser tests.

Each study's smoke run costs up to a minute and a half of the suite's 2 cores, so each runs once per test session.
All four write into one output folder, as a user's runs do (one MLflow store holding four experiments), which is
what the dashboard tests serve. The study modules read only their own experiment and session folder.

They run one after another in a background thread that starts with the session's first test, while the unit
tests (mostly one core busy) run; the tests that use them run last (``pytest_collection_modifyitems``), and each
of their fixtures waits for all four, so no test writes to the shared store while a smoke run does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Every Ray these tests start (in-process, or in a `medtune` subprocess) runs its workers at nice 0, as
# `medtune run` does: at Ray's default of 15 a loaded machine starves them.
os.environ.setdefault("RAY_worker_niceness", "0")


SMOKES = ("lr_smoke", "apga_smoke", "al_smoke", "paser_smoke")


def _session_dir(out: Path, prefix: str) -> Path:
    return next(p for p in out.iterdir() if p.is_dir() and p.name.startswith(prefix))


def _uses_smoke(item) -> bool:
    return any(name in getattr(item, "fixturenames", ()) for name in SMOKES)


def pytest_collection_modifyitems(session, config, items):
    """The tests that read the smoke runs go last (in their own order), after the tests the runs overlap."""
    items.sort(key=_uses_smoke)  # stable: False (the rest) first


def _lr(root: Path) -> dict:
    """The LR smoke run: every method plus ``qlearning_warm`` (see tests/test_lr_study.py), 5 epochs."""
    from medtune.searchers.qlearning_agent import ACTIONS, STATES
    from tests.test_lr_study import EPOCHS, METHODS, medtune

    out = root / "out"
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


def _smoke(root: Path, spec: str, *overrides: str) -> dict:
    from tests.test_lr_study import medtune

    out = root / "out"
    proc = medtune("run", spec, "--smoke", "--output", str(out), *(a for o in overrides for a in ("--set", o)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"out": out, "session": _session_dir(out, f"{spec}-"), "proc": proc}


RUNS = {
    "lr_smoke": _lr,
    # six methods x two regimes, one seed, 10 images per class in the few-shot regime
    "apga_smoke": lambda root: _smoke(root, "apga", "few_shot=10"),
    "al_smoke": lambda root: _smoke(root, "active-learning"),  # every strategy, one seed
    "paser_smoke": lambda root: _smoke(root, "paser"),  # two lambdas and every baseline, one seed
}


@pytest.fixture(scope="session", autouse=True)
def _smoke_runs(request, tmp_path_factory):
    """Starts the four smoke runs, one after another in a background thread, when the session has a test that
    reads them; yields ``(root, {fixture name: future})``."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("studies")
    if not any(_uses_smoke(item) for item in request.session.items):
        yield root, {}
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="smoke") as pool:
        yield root, {name: pool.submit(run, root) for name, run in RUNS.items()}


def _result(smoke_runs, name: str) -> dict:
    root, futures = smoke_runs
    if not futures:  # collected without any test that reads them: run it here (never in practice)
        return RUNS[name](root)
    for future in futures.values():  # all four: none of them is still writing the shared store after this
        future.exception()
    return futures[name].result()


@pytest.fixture(scope="session")
def studies_root(_smoke_runs) -> Path:
    return _smoke_runs[0]


@pytest.fixture(scope="session")
def lr_smoke(_smoke_runs):
    """The LR smoke run: every method plus ``qlearning_warm``, 5 epochs."""
    return _result(_smoke_runs, "lr_smoke")


@pytest.fixture(scope="session")
def apga_smoke(_smoke_runs):
    """The APGA smoke run: six methods x two regimes, one seed, 10 images per class in the few-shot regime."""
    return _result(_smoke_runs, "apga_smoke")


@pytest.fixture(scope="session")
def al_smoke(_smoke_runs):
    """The active-learning smoke run: every strategy, one seed."""
    return _result(_smoke_runs, "al_smoke")


@pytest.fixture(scope="session")
def paser_smoke(_smoke_runs):
    """The PaSeR smoke run: two lambdas and every baseline, one seed."""
    return _result(_smoke_runs, "paser_smoke")


@pytest.fixture(scope="session")
def all_studies(lr_smoke, apga_smoke, al_smoke, paser_smoke) -> Path:
    """The output folder holding one smoke run of each study (its ``mlflow.db`` has four experiments)."""
    return lr_smoke["out"]


@pytest.fixture(scope="module")
def local_ray(request):
    """A local Ray of 2 CPUs for one test module, its trainables shipped by value (the workers need not import
    ``tests/``)."""
    import ray
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(request.module)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
