"""An LR study interrupted mid-run (Ctrl-C) and resumed keeps its Q-table and its MLflow runs.

The interrupt comes during the first Tuner (every method but pbt), so resume must restore that
Tuner and then start the PBT Tuner that never ran; that population of two exploits every 2 epochs.

Real local Ray, real MLflow SQLite store, real ``medtune`` processes: the run is
stopped with SIGINT once the scheduler's journal shows Q-updates, then
``medtune resume`` finishes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medtune.searchers.qlearning_agent import ACTIONS, STATES

pytestmark = pytest.mark.integration

MEDTUNE = str(Path(sys.executable).with_name("medtune"))
EPOCHS = 12


def _env():
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _journal_tail(session: Path) -> dict | None:
    path = session / "qlearning-journal.jsonl"
    if not path.exists():
        return None
    lines = [l for l in path.read_text().splitlines() if l.strip()]
    for line in reversed(lines):  # the last decision record (observations carry no table)
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "table" in record:
            return record
    return None


def test_interrupted_study_resumes_with_its_qtable(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [MEDTUNE, "run", "lr-schedulers", "--smoke", "--output", str(out),
         "--set", "methods=[fixed,qlearning,pbt]", "--set", "pbt.quantile_fraction=0.5", "--set", "seeds=[0,1]", "--set", f"train.epochs={EPOCHS}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )
    try:
        deadline = time.time() + 300
        at_interrupt = None
        while time.time() < deadline and proc.poll() is None:
            sessions = [p for p in out.glob("lr-schedulers-*") if p.is_dir()] if out.exists() else []
            tail = _journal_tail(sessions[0]) if sessions else None
            if tail and tail["table"]["updates"] >= 3:
                at_interrupt = tail
                break
            time.sleep(0.5)
        assert at_interrupt is not None, "no Q-updates appeared in the journal"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert "Continue with: medtune resume" in output
    session = sessions[0]
    # Whatever the journal held when the driver stopped is what resume must start from: the last
    # decision record (observation records carry no table).
    records = [json.loads(l) for l in (session / "qlearning-journal.jsonl").read_text().splitlines() if l.strip()]
    saved = [r for r in records if "table" in r][-1]["table"]

    resumed = subprocess.run([MEDTUNE, "resume", str(session)], capture_output=True, text=True, timeout=600, env=_env())
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming with the Q-learning journal" in resumed.stdout

    final = json.loads((session / "qtable.json").read_text())["table"]
    # Learning carried over: the update count continues from the saved one ...
    assert final["updates"] > saved["updates"]
    for s in STATES:
        for a in ACTIONS:
            assert final["visits"][s][a] >= saved["visits"][s][a]
            # ... and a pair not updated since the interrupt still holds exactly its saved value
            # (a table re-initialised at resume would hold fresh U(0, 0.1) draws instead).
            if final["visits"][s][a] == saved["visits"][s][a]:
                assert final["q"][s][a] == saved["q"][s][a]

    # MLflow: one run per trial, every epoch exactly once, across the interruption.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lr-schedulers")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")
    assert len(trials) == 6  # fixed, qlearning and the PBT population (started only on resume), 2 seeds each
    for run in trials:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "dice")]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (run.data.params["method"], steps)
        assert run.info.status == "FINISHED"
    # PBT (2 members, interval 2, bottom half exploits) really exploited and explored: the copier's
    # LR moved away from the base while its epochs stayed contiguous (checked above).
    pbt_lrs = [[m.value for m in client.get_metric_history(r.info.run_id, "lr")]
               for r in trials if r.data.params["method"] == "pbt"]
    assert any(len(set(lrs)) > 1 for lrs in pbt_lrs), pbt_lrs
    summaries = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'summary'")
    assert len(summaries) == 1  # only the finished session logs a summary
