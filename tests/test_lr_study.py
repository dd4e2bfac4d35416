"""The LR study end to end on a real local Ray and a real MLflow SQLite store.

One smoke run (every method, one seed) is shared by the tests of this module:
the fourteen methods of the default study plus ``qlearning_warm``. The warm agent
starts from a Q-table whose greedy action is ``increase`` in every state, with
epsilon 0, so the scheduler must change that trial's LR at its first decision
(epoch 3, ``min_history`` = 3): the tests check that the new LR reached the
running trial without a restart, and that the cold ``qlearning`` agent learned
into a table of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medtune.searchers.qlearning_agent import ACTIONS, STATES

pytestmark = pytest.mark.integration

MEDTUNE = str(Path(sys.executable).with_name("medtune"))
BASE_LR = 0.001
EPOCHS = 5
METHODS = ["fixed", "step", "exponential", "cosine", "plateau", "warmup_cosine", "onecycle", "poly", "schedulefree",
           "prodigy", "greedy", "effort", "pbt", "qlearning", "qlearning_warm"]


def medtune(*args: str, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([MEDTUNE, *args], capture_output=True, text=True, timeout=timeout, env=env, **kw)


@pytest.fixture(scope="module")
def smoke(lr_smoke):
    """The shared smoke run (tests/conftest.py)."""
    return lr_smoke


def _client(out: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{out / 'mlflow.db'}")


def _trial_runs(client):
    exp = client.get_experiment_by_name("lr-schedulers")
    return client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'")


def test_smoke_run_prints_the_comparison_table_and_the_ui_command(smoke):
    out = smoke["proc"].stdout
    for method in METHODS:
        assert f"\n{method} " in out
    assert "medtune ui --output" in out


def test_smoke_run_output_is_progress_lines_not_tune_tables(smoke):
    """A person reads the log: medtune's own lines and the table, no Tune config boxes or status tables, no
    third-party warnings, a line per finished trial and the trial-epochs announced up front."""
    out, err = smoke["proc"].stdout, smoke["proc"].stderr
    lines = out.splitlines() + err.splitlines()
    assert len(lines) < 150, f"{len(lines)} lines"
    # The report's own "Warning: <method> never changed the LR" lines aside: no third-party warning.
    own = "\n".join(line for line in lines if not line.startswith("Warning: "))
    assert not any(mark in own for mark in ("╭", "Trial status", "Configuration for experiment", "Warning"))
    # One Tuner for every method, PBT's member included: one announcement, one line per trial, one total.
    assert f"[medtune] lr-schedulers: {len(METHODS) * EPOCHS} trial-epochs to run" in out
    assert sum(line.startswith("[medtune] lr-schedulers: finished ") for line in lines) == len(METHODS)
    assert f"[medtune] lr-schedulers: {len(METHODS)} trials finished, 0 failed" in out
    assert "(pbt)" not in out


def test_mlflow_holds_one_run_per_trial_with_every_epoch(smoke):
    client = _client(smoke["out"])
    runs = _trial_runs(client)
    assert sorted(r.data.params["method"] for r in runs) == sorted(METHODS)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["seed"] == "0"
        assert run.data.params["train.epochs"] == str(EPOCHS)
        for key in ("dice", "val_loss", "train_loss", "lr"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (run.data.params["method"], key, steps)


def test_summary_run_holds_the_comparison_plots_and_qtable(smoke):
    client = _client(smoke["out"])
    exp = client.get_experiment_by_name("lr-schedulers")
    (summary,) = client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'summary'")
    names = {a.path for a in client.list_artifacts(summary.info.run_id)}
    assert {"comparison.csv", "dice_curves.png", "lr_traces.png", "qtable.png", "qtable-qlearning_warm.png",
            "qtable.json", "report.html"} <= names
    local = client.download_artifacts(summary.info.run_id, "comparison.csv", str(smoke["root"]))
    import pandas as pd

    table = pd.read_csv(local, index_col=0)
    assert set(table.index) == set(METHODS)
    assert table["final_dice_mean"].between(0, 1).all()


def test_qlearning_changes_the_lr_of_the_running_trial_without_a_restart(smoke):
    client = _client(smoke["out"])
    (run,) = [r for r in _trial_runs(client) if r.data.params["method"] == "qlearning_warm"]
    lr = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "lr")}
    # Decision at the end of epoch 3 (min_history 3): greedy 'increase' -> 0.001 * 1.2 from epoch 4 on;
    # cooldown 1 -> the next decision at the end of epoch 4 increases again for epoch 5.
    assert [lr[e] for e in (1, 2, 3)] == [BASE_LR] * 3
    assert lr[4] == pytest.approx(BASE_LR * 1.2)
    assert lr[5] == pytest.approx(BASE_LR * 1.2 * 1.2)
    # Same worker process and consecutive iterations: the trial was never paused or restarted.
    trial_dir = next(p for p in smoke["session"].iterdir() if p.is_dir() and "method=qlearning_warm" in p.name)
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [r["training_iteration"] for r in results] == list(range(1, EPOCHS + 1))
    assert len({r["pid"] for r in results}) == 1


def test_baseline_trials_follow_their_own_schedules(smoke):
    client = _client(smoke["out"])
    by_method = {r.data.params["method"]: r for r in _trial_runs(client)}
    lr = {m: [x.value for x in sorted(client.get_metric_history(r.info.run_id, "lr"), key=lambda x: x.step)]
          for m, r in by_method.items()}
    assert lr["fixed"] == [BASE_LR] * EPOCHS
    assert lr["exponential"] == pytest.approx([BASE_LR * 0.95**k for k in range(EPOCHS)])
    assert lr["cosine"][0] == BASE_LR and lr["cosine"][-1] < lr["cosine"][1] < BASE_LR
    # nnU-Net's recipe from its own section (0.01), not train.base_lr; MONAI's warm-up (1 epoch in the smoke run,
    # from 0.1 x); OneCycle starts at peak / 25 and its per-batch LR (read at each epoch's start) rises and falls;
    # Schedule-Free AdamW keeps its LR; Prodigy reports d * lr, d0 = 1e-6 at the start.
    assert lr["poly"] == pytest.approx([0.01 * (1 - e / EPOCHS) ** 0.9 for e in range(EPOCHS)])
    assert lr["warmup_cosine"][:2] == pytest.approx([BASE_LR * 0.1, BASE_LR])
    assert lr["warmup_cosine"][-1] < lr["warmup_cosine"][2] < BASE_LR
    assert lr["onecycle"][0] == pytest.approx(BASE_LR / 25) and lr["onecycle"][-1] < lr["onecycle"][1]
    assert lr["onecycle"][0] < max(lr["onecycle"]) <= BASE_LR
    assert lr["schedulefree"] == [0.0025] * EPOCHS
    assert lr["prodigy"][0] == pytest.approx(1e-6) and max(lr["prodigy"]) > 1e-6


def test_warm_started_qtable_is_where_learning_started(smoke):
    tables = json.loads((smoke["session"] / "qtable.json").read_text())["tables"]
    final = tables["qlearning_warm"]
    # Decisions at epochs 3, 4 and 5 (patience = cooldown = 1); the first has no reward yet, so two
    # Q-updates, both of an 'increase'. Every other pair still holds the warm-start value exactly.
    assert final["updates"] == 2
    changed = [(s, a) for s in STATES for a in ACTIONS if final["visits"][s][a]]
    assert 1 <= len(changed) <= 2 and all(a == "increase" for _, a in changed)
    for s in STATES:
        for a in ACTIONS:
            if (s, a) not in changed:
                assert final["q"][s][a] == (1.0 if a == "increase" else 0.0)


def test_report_rebuilds_the_table_from_mlflow_alone(smoke, tmp_path):
    proc = medtune("report", "lr-schedulers", "--output", str(smoke["out"]), "--save", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "qlearning" in proc.stdout and "final Dice" in proc.stdout
    assert (tmp_path / "comparison.csv").read_text() == (smoke["session"] / "report" / "comparison.csv").read_text()


def test_report_of_an_unknown_experiment_exits_2_with_one_line(smoke):
    proc = medtune("report", "lr-schedulerz", "--output", str(smoke["out"]))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "lr-schedulerz" in proc.stderr and "did you mean 'lr-schedulers'" in proc.stderr


def test_cold_agent_learns_into_its_own_table(smoke):
    tables = json.loads((smoke["session"] / "qtable.json").read_text())["tables"]
    cold = tables["qlearning"]
    assert cold["updates"] == 2  # its own decisions at epochs 3, 4, 5
    # it did not start from the warm file: its values are U(0, 0.1) draws, not 0.0 / 1.0
    untouched = [cold["q"][s][a] for s in STATES for a in ACTIONS if not cold["visits"][s][a]]
    assert untouched and all(0.0 < v < 0.1 for v in untouched)


def test_effort_and_pbt_and_greedy_ran_and_finished_curves_fill_the_episodic_memory(smoke):
    client = _client(smoke["out"])
    by_method = {r.data.params["method"]: r for r in _trial_runs(client)}
    for method in ("effort", "pbt", "greedy"):
        steps = [m.step for m in client.get_metric_history(by_method[method].info.run_id, "lr")]
        assert sorted(steps) == list(range(1, EPOCHS + 1))
    memory = [json.loads(l) for l in (smoke["out"] / "episodic-memory.jsonl").read_text().splitlines()]
    assert len(memory) == len(METHODS)  # every trial finished without diverging
    assert all(len(m["curve"]) == EPOCHS and m["task"] == memory[0]["task"] for m in memory)
    # The effort trial ran after others had finished (grid order, two at a time), so it recalled
    # their curves and moved its LR away from the base after its warm-up (2 epochs).
    lr = [x.value for x in sorted(client.get_metric_history(by_method["effort"].info.run_id, "lr"),
                                  key=lambda x: x.step)]
    assert lr[:3] == [BASE_LR] * 3 and lr[3:] != [BASE_LR] * (EPOCHS - 3)


def test_every_method_without_shared_state_repeats_its_curves_exactly_one_trial_at_a_time(smoke, tmp_path):
    """The same spec and seeds give the same numbers: a rerun of the smoke study's order-independent methods, one
    trial at a time (the shared run had two at once, beside the order-dependent methods), logs bit-identical
    per-epoch curves and test Dice."""
    from medtune.dashboards.comparison import ORDER_DEPENDENT

    independent = [m for m in METHODS if m not in ORDER_DEPENDENT]
    out = tmp_path / "rerun"
    proc = medtune("run", "lr-schedulers", "--smoke", "--output", str(out), "--set", f"train.epochs={EPOCHS}",
                   "--set", f"methods=[{','.join(independent)}]", "--set", "resources.max_concurrent=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def curves(client) -> dict:
        got = {}
        for run in _trial_runs(client):
            method = run.data.params["method"]
            if method in independent:
                got[method] = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                                       key=lambda m: m.step)]
                               for key in ("dice", "val_loss", "lr", "test_dice")}
        return got

    first, again = curves(_client(smoke["out"])), curves(_client(out))
    assert sorted(again) == sorted(independent) == sorted(first)
    for method in independent:
        assert len(first[method]["dice"]) == EPOCHS and first[method]["test_dice"], method
        assert again[method] == first[method], method
