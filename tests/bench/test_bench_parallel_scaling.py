"""Parallel scaling of the LR study on 2 cores: max_concurrent=2 against max_concurrent=1.

The same 4 trials (``fixed``, ``step``, ``cosine``, ``exponential``, seed 0) of the
real study, run through the CLI in a subprocess exactly as a user runs it::

    medtune run lr-schedulers --smoke --set methods=[...] --set train.epochs=35
        --set data.num_volumes=16 --set data.spatial_size=[32,32,32]
        --set resources.max_concurrent=1|2 --output <own tmp dir>

once one trial at a time (reference) and once two at a time (candidate), each
trial with ``cpus_per_trial`` = torch threads = 1, on a local Ray with the
machine's 2 CPUs. 35 epochs make one trial about 10 s.

What is timed is the Tune part, taken from the trials' own clocks, so Ray's
start-up, data preparation and the final report are excluded:

* per trial, its end is the driver's time stamp of its last result (the
  ``ts`` in ms that ``MLflowTracker`` stores with each epoch's metrics) and its
  start is that end minus the trial's own ``time_total_s`` (Tune's result.json);
* span = the first trial's start to the last trial's end.

Beside it the block shows the same span from result.json alone (its
``timestamp`` has 1 s resolution, so +-1 s), the sum of the trials' busy time,
and each whole process's wall time.

Target: span(max_concurrent=1) / span(max_concurrent=2) >= 1.7.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.bench._common import report

TARGET = 1.7
EPOCHS = 35
METHODS = ("fixed", "step", "cosine", "exponential")
MEDTUNE = str(Path(sys.executable).with_name("medtune"))


def _env() -> dict[str, str]:
    env = {**os.environ, "RAY_DEDUP_LOGS": "1"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    return env


def run_study(out: Path, max_concurrent: int) -> dict:
    args = [
        MEDTUNE, "run", "lr-schedulers", "--smoke",
        "--set", f"methods=[{','.join(METHODS)}]",
        "--set", f"train.epochs={EPOCHS}",
        "--set", "data.num_volumes=16",
        "--set", "data.spatial_size=[32,32,32]",
        "--set", f"resources.max_concurrent={max_concurrent}",
        "--output", str(out),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=_env())
    wall = time.perf_counter() - t0
    (out / "medtune-stdout.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"wall": wall, **trial_times(out)}


def trial_times(out: Path) -> dict:
    from mlflow.tracking import MlflowClient

    from medtune.tags import TAG_TRIAL

    sessions = [p for p in out.iterdir() if (p / "medtune.json").is_file()]
    assert len(sessions) == 1, sessions
    results = {}
    for path in sessions[0].glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        last = rows[-1]
        assert last["epoch"] == EPOCHS, (path, last["epoch"])
        results[last["trial_id"]] = {
            "method": path.parent.name.split("method=")[1].split(",")[0],
            "total": float(last["time_total_s"]),
            "ts_end": int(last["timestamp"]),
            "pid": last.get("pid"),
        }
    assert len(results) == len(METHODS), sorted(results)

    # The driver's ms time stamp of every trial's last result, from the session's MLflow store.
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lr-schedulers")
    for run in client.search_runs([exp.experiment_id], filter_string="tags.`medtune.kind` = 'trial'"):
        trial_id = run.data.tags[TAG_TRIAL]
        history = client.get_metric_history(run.info.run_id, "epoch")
        last = max(history, key=lambda m: m.step)
        assert last.step == EPOCHS
        results[trial_id]["end"] = last.timestamp / 1000.0
    assert all("end" in r for r in results.values()), results

    starts = [r["end"] - r["total"] for r in results.values()]
    ends = [r["end"] for r in results.values()]
    coarse_starts = [r["ts_end"] - r["total"] for r in results.values()]
    coarse_ends = [r["ts_end"] for r in results.values()]
    t_first = min(starts)
    return {
        "span": max(ends) - t_first,
        "span_coarse": max(coarse_ends) - min(coarse_starts),
        "busy": sum(r["total"] for r in results.values()),
        "trials": sorted(
            ((r["method"], r["end"] - r["total"] - t_first, r["end"] - t_first, r["total"]) for r in results.values()),
            key=lambda x: x[1],
        ),
        "pids": len({r["pid"] for r in results.values()}),
    }


def _timeline(trials) -> str:
    return "; ".join(f"{m} {a:.1f}->{b:.1f} ({d:.1f} s)" for m, a, b, d in trials)


def test_bench_parallel_scaling_max_concurrent_2_vs_1(tmp_path):
    seq = run_study(tmp_path / "concurrent-1", 1)
    par = run_study(tmp_path / "concurrent-2", 2)

    speedup = seq["span"] / par["span"]
    speedup_coarse = seq["span_coarse"] / par["span_coarse"]
    ok = speedup >= TARGET
    report(
        "parallel scaling: 4 trials with resources.max_concurrent=2 vs 1 (medtune run via the CLI)",
        [
            ("setup", f"methods {','.join(METHODS)}, seed 0, {EPOCHS} epochs, phantom 16 vols 32^3, "
                      "cpus_per_trial 1 (torch threads 1), local Ray with 2 CPUs"),
            ("max_concurrent=1 trials (s from first start)", _timeline(seq["trials"])),
            ("max_concurrent=2 trials (s from first start)", _timeline(par["trials"])),
            ("Tune span, max_concurrent=1", f"{seq['span']:.2f} s (result.json only, 1 s res.: "
                                            f"{seq['span_coarse']:.1f} s)"),
            ("Tune span, max_concurrent=2", f"{par['span']:.2f} s (result.json only, 1 s res.: "
                                            f"{par['span_coarse']:.1f} s)"),
            ("sum of trial time_total_s", f"{seq['busy']:.2f} s (1) vs {par['busy']:.2f} s (2): "
                                          f"per-trial slowdown when paired x{par['busy'] / seq['busy']:.2f}"),
            ("whole process wall", f"{seq['wall']:.2f} s (1) vs {par['wall']:.2f} s (2): "
                                   f"x{seq['wall'] / par['wall']:.2f}"),
            ("SPEEDUP (Tune span)", f"{speedup:.2f}x (result.json only: {speedup_coarse:.2f}x)"),
            ("target", f">= {TARGET:.2f}x"),
        ],
        "MET" if ok else "MISSED",
    )
    assert ok, f"max_concurrent=2 is only {speedup:.2f}x faster than max_concurrent=1 (target >= {TARGET})"
