"""The MLflow tracker's queue without a server: order, outage buffering, the backlog file, refused records,
a start that half-succeeded, and epochs a previous driver already logged."""

from __future__ import annotations

import json
from types import SimpleNamespace

from mlflow.exceptions import MlflowException

from medtune.cluster.runs.tracking import MLflowTracker


class FakeClient:
    """Just enough of MlflowClient; ``down`` makes every call fail like a dead server."""

    def __init__(self):
        self.down = False
        self.fail_params_once = False
        self.runs: dict[str, dict] = {}
        self.calls: list[str] = []
        self.threads: set[str] = set()  # the names of the threads that sent requests

    def _check(self, name):
        import threading

        self.calls.append(name)
        self.threads.add(threading.current_thread().name)
        if self.down:
            raise ConnectionError("connection refused")

    def search_runs(self, experiment_ids, filter_string, max_results):
        self._check("search_runs")
        trial = filter_string.split("medtune.trial_id` = '")[1].rstrip("'")
        return [SimpleNamespace(info=SimpleNamespace(run_id=rid))
                for rid, r in self.runs.items() if r["trial"] == trial]

    def create_run(self, experiment_id, run_name, tags):
        self._check("create_run")
        rid = f"run{len(self.runs)}"
        self.runs[rid] = {"trial": tags["medtune.trial_id"], "params": {}, "metrics": [], "status": "RUNNING",
                          "tags": {}}
        return SimpleNamespace(info=SimpleNamespace(run_id=rid))

    def get_run(self, run_id):
        self._check("get_run")
        return SimpleNamespace(data=SimpleNamespace(params=dict(self.runs[run_id]["params"])))

    def update_run(self, run_id, status):
        self._check("update_run")
        self.runs[run_id]["status"] = status

    def log_batch(self, run_id, metrics=(), params=()):
        self._check("log_batch")
        if params and self.fail_params_once:
            self.fail_params_once = False
            raise ConnectionError("timed out after the server created the run")
        for p in params:
            if p.key in self.runs[run_id]["params"]:
                raise MlflowException("Changing param values is not allowed", error_code="INVALID_PARAMETER_VALUE")
            self.runs[run_id]["params"][p.key] = p.value
        self.runs[run_id]["metrics"] += [(m.key, m.step) for m in metrics]

    def get_metric_history(self, run_id, key):
        self._check("get_metric_history")
        return [SimpleNamespace(value=s, step=s) for k, s in self.runs[run_id]["metrics"] if k == key]

    def set_tag(self, run_id, key, value):
        self._check("set_tag")
        self.runs[run_id]["tags"][key] = value

    def set_terminated(self, run_id, status):
        self._check("set_terminated")
        self.runs[run_id]["status"] = status


def trial(tid="t1", method="fixed"):
    return SimpleNamespace(trial_id=tid, config={"method": method, "seed": 0, "train": {"epochs": 3}})


def make(tmp_path, client=None):
    tracker = MLflowTracker("http://unused", "0", "session-a", backlog=str(tmp_path / "mlflow-backlog.jsonl"))
    tracker._client = client or FakeClient()
    return tracker, tracker._client


def epochs(client, rid="run0"):
    return sorted(s for k, s in client.runs[rid]["metrics"] if k == "epoch")


def test_healthy_server_gets_start_params_metrics_and_end_in_order(tmp_path):
    tracker, client = make(tmp_path)
    t = trial()
    tracker.on_trial_start(0, [], t)
    for e in (1, 2, 3):
        tracker.on_trial_result(0, [], t, {"epoch": e, "dice": 0.1 * e})
    tracker.on_trial_complete(0, [], t)
    run = client.runs["run0"]
    assert run["params"]["method"] == "fixed" and run["params"]["train.epochs"] == "3"
    assert epochs(client) == [1, 2, 3] and run["status"] == "FINISHED"
    assert tracker.pending == 0 and not (tmp_path / "mlflow-backlog.jsonl").exists()


def test_an_outage_buffers_to_disk_and_delivers_everything_once_when_the_server_is_back(tmp_path, monkeypatch):
    tracker, client = make(tmp_path)
    t = trial()
    tracker.on_trial_start(0, [], t)
    tracker.on_trial_result(0, [], t, {"epoch": 1, "dice": 0.1})
    client.down = True
    for e in (2, 3, 4):
        tracker.on_trial_result(0, [], t, {"epoch": e, "dice": 0.1})
    assert tracker.pending == 3
    on_disk = [json.loads(l) for l in (tmp_path / "mlflow-backlog.jsonl").read_text().splitlines()]
    assert [op["step"] for op in on_disk] == [2, 3, 4]  # a driver dying now would lose nothing
    calls = len(client.calls)
    tracker.on_trial_result(0, [], t, {"epoch": 5, "dice": 0.1})
    assert len(client.calls) == calls  # backing off: no request until the retry is due
    client.down = False
    tracker.on_trial_complete(0, [], t)  # not due yet: stays queued
    assert tracker.flush(force=True) == 0
    assert epochs(client) == [1, 2, 3, 4, 5] and client.runs["run0"]["status"] == "FINISHED"
    assert not (tmp_path / "mlflow-backlog.jsonl").exists()


def test_a_new_driver_delivers_the_backlog_of_the_one_that_died(tmp_path):
    first, client = make(tmp_path)
    t = trial()
    first.on_trial_start(0, [], t)
    client.down = True
    first.on_trial_result(0, [], t, {"epoch": 1, "dice": 0.1})
    first.on_trial_result(0, [], t, {"epoch": 2, "dice": 0.1})
    # the driver dies here; `medtune report --sync` (or a resumed driver) picks the backlog up
    client.down = False
    second, _ = make(tmp_path, client)
    assert second.flush(force=True) == 0
    assert epochs(client) == [1, 2]


def test_a_start_that_half_succeeded_completes_its_params_on_retry(tmp_path):
    tracker, client = make(tmp_path)
    client.fail_params_once = True  # run created, then the params request fails
    t = trial()
    tracker.on_trial_start(0, [], t)
    assert tracker.pending == 1 and client.runs["run0"]["params"] == {}
    tracker.flush(force=True)
    assert client.runs["run0"]["params"]["method"] == "fixed" and len(client.runs) == 1


def test_epochs_a_previous_driver_logged_are_not_logged_twice_after_resume(tmp_path):
    first, client = make(tmp_path)
    t = trial()
    first.on_trial_start(0, [], t)
    for e in (1, 2, 3):
        first.on_trial_result(0, [], t, {"epoch": e, "dice": 0.1})
    resumed, _ = make(tmp_path, client)  # a new driver: knows nothing of what was logged
    resumed.on_trial_start(0, [], t)
    for e in (3, 4):  # the trial restored from its epoch-2 checkpoint re-reports epoch 3
        resumed.on_trial_result(0, [], t, {"epoch": e, "dice": 0.1})
    assert epochs(client) == [1, 2, 3, 4]


def test_a_refused_record_is_set_aside_and_does_not_block_the_rest(tmp_path, caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("medtune"), "propagate", True)  # the CLI's setup may have turned it off
    caplog.set_level(logging.WARNING, logger="medtune.cluster.runs.tracking")
    tracker, client = make(tmp_path)
    t = trial()
    tracker.on_trial_start(0, [], t)
    tracker._push({"op": "metrics", "trial": "t1", "step": 2, "ts": 0, "values": {"dice": "not a number"}})
    tracker.on_trial_result(0, [], t, {"epoch": 3, "dice": 0.3})
    assert tracker.pending == 0 and epochs(client) == [3]
    dead = [json.loads(l) for l in (tmp_path / "mlflow-deadletter.jsonl").read_text().splitlines()]
    assert dead[0]["step"] == 2 and "error" in dead[0]
    assert any("MLflow refused a metrics record" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


class GatedClient(FakeClient):
    """A FakeClient whose every call waits until ``gate`` is set: a slow or hanging tracking server."""

    def __init__(self):
        super().__init__()
        import threading

        self.gate = threading.Event()

    def _check(self, name):
        import threading

        if threading.current_thread() is threading.main_thread():  # a hook that sends itself would wait here
            self.threads.add("MainThread")
            raise ConnectionError("a hook sent a request itself")
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        super()._check(name)


def test_while_a_tuner_runs_results_do_not_wait_for_mlflow_and_every_record_is_written_ahead(tmp_path):
    client = GatedClient()
    tracker, _ = make(tmp_path, client)
    tracker.setup()
    try:
        t = trial()
        tracker.on_trial_start(0, [], t)
        for e in (1, 2, 3):  # with the server stuck in its first request, a synchronous send would block here
            tracker.on_trial_result(0, [], t, {"epoch": e, "dice": 0.1 * e})
        assert client.calls == []  # nothing reached the server yet
        on_disk = [json.loads(l) for l in (tmp_path / "mlflow-backlog.jsonl").read_text().splitlines()]
        assert [op["op"] for op in on_disk] == ["start", "metrics", "metrics", "metrics"]
        assert [op["step"] for op in on_disk[1:]] == [1, 2, 3]  # a driver killed now loses nothing

        # ... which a new driver delivers, in order, from the backlog alone
        other = FakeClient()
        second, _ = make(tmp_path, other)
        assert second.flush(force=True) == 0
        assert epochs(other) == [1, 2, 3] and other.calls[0] == "search_runs"
    finally:
        client.gate.set()
    import time

    tracker.on_trial_complete(0, [], t)
    deadline = time.time() + 60
    while tracker.pending and time.time() < deadline:
        time.sleep(0.01)
    assert client.threads == {"medtune-mlflow"}  # every request came from the sender, none from a hook
    tracker.on_experiment_end([])
    assert epochs(client) == [1, 2, 3] and client.runs["run0"]["status"] == "FINISHED"
    assert tracker.pending == 0 and tracker._sender is None
    assert not (tmp_path / "mlflow-backlog.jsonl").exists()


def test_the_sender_thread_delivers_as_results_come_and_outlasts_an_outage(tmp_path):
    import time

    tracker, client = make(tmp_path)
    tracker.setup()
    t = trial()
    tracker.on_trial_start(0, [], t)
    tracker.on_trial_result(0, [], t, {"epoch": 1, "dice": 0.1})
    deadline = time.time() + 60
    while tracker.pending and time.time() < deadline:  # the thread sends without any further hook call
        time.sleep(0.01)
    assert tracker.pending == 0 and epochs(client) == [1]
    assert client.threads == {"medtune-mlflow"}
    client.down = True
    for e in (2, 3):
        tracker.on_trial_result(0, [], t, {"epoch": e, "dice": 0.1})
    while not tracker._outage and time.time() < deadline:
        time.sleep(0.01)
    assert tracker._outage and tracker.pending == 2
    client.down = False
    tracker.on_trial_complete(0, [], t)
    tracker.on_experiment_end([])  # stops the thread, then sends what is left at once
    assert epochs(client) == [1, 2, 3] and client.runs["run0"]["status"] == "FINISHED"
    assert tracker.pending == 0 and not (tmp_path / "mlflow-backlog.jsonl").exists()


def test_after_a_quiet_spell_a_result_goes_at_once_and_a_burst_waits_for_the_gather_interval(tmp_path, monkeypatch):
    import time

    import medtune.cluster.runs.tracking as tracking

    monkeypatch.setattr(tracking, "GATHER_S", 60.0)  # so long that only a send without waiting can be seen
    tracker, client = make(tmp_path)
    t = trial()
    tracker.on_trial_start(0, [], t)  # before the Tuner: sent before the hook returns
    tracker.setup()
    try:
        tracker.on_trial_result(0, [], t, {"epoch": 1, "dice": 0.1})
        deadline = time.time() + 20
        while tracker.pending and time.time() < deadline:
            time.sleep(0.01)
        assert tracker.pending == 0 and epochs(client) == [1]  # the thread had sent nothing yet: no wait
        for e in (2, 3):
            tracker.on_trial_result(0, [], t, {"epoch": e, "dice": 0.1 * e})
        time.sleep(1.0)
        assert tracker.pending == 2 and epochs(client) == [1]  # sent 1 s ago: these gather
        client.calls.clear()
    finally:
        tracker.on_experiment_end([])  # stops the thread, then sends what is left at once
    assert epochs(client) == [1, 2, 3] and client.calls.count("log_batch") == 1  # epochs 2 and 3, one request


def test_the_tracker_still_pickles_after_its_thread_started(tmp_path):
    import pickle

    tracker, _ = make(tmp_path)
    tracker.setup()
    copy = pickle.loads(pickle.dumps(tracker))
    tracker.on_experiment_end([])
    assert copy._sender is None and copy.backlog == tracker.backlog


class Stop:
    """Stands for the fail-fast callback: ``note`` is what a stopped trial carries once the run was stopped."""

    def __init__(self):
        self.note = None

    def stop_note(self):
        return self.note


def test_trials_ending_after_a_stop_are_killed_with_the_reason_and_a_restored_tracker_keeps_the_hook(tmp_path):
    import pickle

    stop = Stop()
    tracker, client = make(tmp_path)
    tracker.stop_note = stop.stop_note
    a, b = trial("t1"), trial("t2", "cosine")
    for t in (a, b):
        tracker.on_trial_start(0, [], t)
        tracker.on_trial_result(0, [], t, {"epoch": 1, "dice": 0.1})
    c = trial("t3", "step")
    tracker.on_trial_start(0, [], c)
    tracker.on_trial_complete(0, [], a)  # before any stop: it finished
    stop.note = "stopped unfinished: trial fixed-seed0 raised ImportError: x at its first epoch"
    tracker.on_trial_complete(0, [], b)  # after: stopped with the run, never shown as finished
    tracker.on_experiment_end([a, b, c])  # c got no callback of its own: ended with the run
    assert [client.runs[r]["status"] for r in ("run0", "run1", "run2")] == ["FINISHED", "KILLED", "KILLED"]
    assert client.runs["run1"]["tags"]["medtune.error"] == client.runs["run2"]["tags"]["medtune.error"] == stop.note
    restored = pickle.loads(pickle.dumps(tracker))  # as Tune restores it on `medtune resume`
    assert restored.stop_note() == stop.note
    state = tracker.__getstate__()
    del state["stop_note"]  # a session saved by a version without the hook
    old = MLflowTracker.__new__(MLflowTracker)
    old.__setstate__(state)
    old._client = FakeClient()
    old.on_trial_start(0, [], a)
    old.on_trial_complete(0, [], a)
    assert old._client.runs["run0"]["status"] == "FINISHED"


def test_queued_epochs_of_a_trial_go_as_one_request_and_each_run_keeps_its_order(tmp_path):
    tracker, client = make(tmp_path)
    a, b = trial("t1"), trial("t2", "cosine")
    tracker.on_trial_start(0, [], a)
    tracker.on_trial_start(0, [], b)
    client.down = True  # the records queue up, interleaved, as results of two trials arrive
    for e in (1, 2, 3):
        tracker.on_trial_result(0, [], a, {"epoch": e, "dice": 0.1})
        tracker.on_trial_result(0, [], b, {"epoch": e, "dice": 0.2})
    tracker.on_trial_complete(0, [], a)
    tracker.on_trial_result(0, [], a, {"epoch": 4, "dice": 0.1})  # a restarted trial: after its end record
    client.down = False
    client.calls.clear()
    assert tracker.flush(force=True) == 0
    assert client.calls.count("log_batch") == 3  # t1 epochs 1-3, t2 epochs 1-3, then t1's epoch 4 after its end
    assert epochs(client, "run0") == [1, 2, 3, 4] and epochs(client, "run1") == [1, 2, 3]
    assert client.runs["run0"]["status"] == "FINISHED"


def test_a_refused_record_inside_a_batch_is_the_only_one_set_aside(tmp_path):
    tracker, client = make(tmp_path)
    t = trial()
    tracker.on_trial_start(0, [], t)
    client.down = True
    tracker.on_trial_result(0, [], t, {"epoch": 1, "dice": 0.1})
    tracker._push({"op": "metrics", "trial": "t1", "step": 2, "ts": 0, "values": {"dice": "not a number"}})
    tracker.on_trial_result(0, [], t, {"epoch": 3, "dice": 0.3})
    client.down = False
    assert tracker.flush(force=True) == 0
    assert epochs(client) == [1, 3]
    dead = [json.loads(l) for l in (tmp_path / "mlflow-deadletter.jsonl").read_text().splitlines()]
    assert [d["step"] for d in dead] == [2]
    assert not (tmp_path / "mlflow-backlog.jsonl").exists()
