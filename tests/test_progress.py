"""Tests for medtune.cluster.runs.progress.ProgressLog, fed fake trials and results (no Ray cluster)."""

from __future__ import annotations

import logging

import pytest

from medtune.cluster.runs.progress import ProgressLog


class Trial:
    def __init__(self, trial_id: str, method: str, seed: int, status: str = "RUNNING"):
        self.trial_id, self.status, self.path = trial_id, status, f"/runs/{trial_id}"
        self.config = {"method": method, "seed": seed, "lr": 1e-3}


@pytest.fixture
def lines(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("medtune"), "propagate", True)  # the CLI's setup may have turned it off
    caplog.set_level(logging.INFO, logger="medtune.cluster.runs.progress")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "medtune.cluster.runs.progress"]


def test_a_line_at_most_every_interval_with_epochs_done_estimate_and_each_running_trial(lines, monkeypatch):
    clock = iter([0.0, 50.0, 51.0, 52.0, 62.0, 63.0])
    monkeypatch.setattr("medtune.cluster.runs.progress.time.monotonic", lambda: next(clock))
    log = ProgressLog("study", trial_epochs=20, metric="dice", every_s=10)
    trials = [Trial("a", "fixed", 0), Trial("b", "cosine", 1)]
    log.setup()                                                                    # t = 0
    assert lines() == ["study: 20 trial-epochs to run"]
    log.on_trial_result(0, trials, trials[0], {"epoch": 1, "dice": 0.25, "lr": 1e-3})   # t = 50: a line (start-up)
    assert "50 s in, estimating the time left" in lines()[1]  # one epoch after 50 s of start-up: no guess yet
    log.on_trial_result(0, trials, trials[1], {"epoch": 1, "dice": 0.5, "lr": 2e-4})    # t = 51
    log.on_trial_result(0, trials, trials[0], {"epoch": 2, "dice": 0.3, "lr": 1e-3})    # t = 52
    assert len(lines()) == 2
    log.on_trial_result(0, trials, trials[1], {"epoch": 3, "dice": 0.6, "lr": 2e-4})    # t = 62: a line
    (line,) = lines()[2:]
    # 3 epochs past each trial's first in the 12 s since the first result: 4 s each, 15 left -> 60 s
    assert line.startswith("study: 5/20 trial-epochs (25%), 2 running, 0 finished, 0 failed; 62 s in, about 60 s left")
    assert "fixed seed 0 epoch 2 dice 0.300 lr 1.0e-03" in line
    assert "cosine seed 1 epoch 3 dice 0.600 lr 2.0e-04" in line


def test_finished_and_failed_trials_are_said_at_once(lines):
    log = ProgressLog("study", trial_epochs=None, metric="macro_f1", epoch_key="round")
    log.setup()
    trials = [Trial("a", "lc", 0, "TERMINATED"), Trial("b", "drla", 0, "ERROR")]
    log.on_trial_result(0, trials, trials[0], {"round": 3, "macro_f1": 0.8125})
    log.on_trial_complete(0, trials, trials[0])
    log.on_trial_error(0, trials, trials[1])
    log.on_experiment_end(trials)
    assert lines()[0] == "study: finished lc seed 0 after 3 epochs, macro_f1 0.812 (1/2 trials done)"
    assert lines()[1].startswith("study: trial drla seed 0 failed") and "/runs/b" in lines()[1]
    assert lines()[2].startswith("study: 1 trials finished, 1 failed, in")


def test_a_restarted_trial_does_not_count_its_epochs_twice():
    log = ProgressLog("study", trial_epochs=10, metric="dice")
    log.setup()
    t = Trial("a", "fixed", 0)
    for epoch in (1, 2, 3, 2, 3, 4):  # restored from the checkpoint of epoch 1 after a crash at 3
        log.on_trial_result(0, [t], t, {"epoch": epoch, "dice": 0.1})
    assert log.line([t], now=log.started + 1).startswith("study: 4/10 trial-epochs")


def test_a_bad_total_is_refused():
    with pytest.raises(ValueError, match="trial_epochs=0"):
        ProgressLog("study", trial_epochs=0, metric="dice")
