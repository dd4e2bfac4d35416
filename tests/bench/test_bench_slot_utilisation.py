"""Slot utilisation and wall time of the LR study (on demand: ``make bench``).

Runs the LR study as ``medtune run`` does (the smoke spec, every method with 1 seed; ``MEDTUNE_BENCH_FULL=1``:
the default spec, about 10 minutes on 2 cores), or reads a finished session (``MEDTUNE_BENCH_SESSION=<session
folder>``), then reads the trial results from the session folder. Slot utilisation = the training time the
trials reported (``time_this_iter_s`` summed over every epoch of every trial) / (slots x the span from the first
epoch's start to the last epoch's end; Tune's ``timestamp`` has whole seconds, so the smoke run's short span is
coarse and a full run's is not). Slots = the trials Ray can run at once (CPUs / ``cpus_per_trial``). A value
below 1 is time a slot sat idle: start-up between trials, a tail with fewer trials than slots, PBT's members
waiting for each other at a perturbation while no other trial could take the slot.

Printed side by side: the study's Tuner(s) (one since PBT runs beside the other methods; a session written
before that has a second, PBT's, in ``pbt/``), the whole study, and the wall time of the run.

Targets (issue "the default study in half the time"): utilisation >= 0.95 for the default study and a smoke wall
time <= 60 s on an idle 2-core machine. Both are printed, not asserted: they depend on how busy the machine is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.bench._common import report

MEDTUNE = str(Path(sys.executable).with_name("medtune"))


def tuner_utilisation(folder: Path, slots: int) -> tuple[float, float, int]:
    """``(training seconds, span seconds, trials)`` of the Tuner whose trial folders are in ``folder``."""
    total, starts, ends = 0.0, [], []
    for path in folder.glob("train_segmentation_*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        total += sum(float(r.get("time_this_iter_s", 0.0)) for r in rows)
        starts.append(rows[0]["timestamp"] - rows[0]["time_this_iter_s"])
        ends.append(rows[-1]["timestamp"])
    return total, (max(ends) - min(starts)) if starts else 0.0, len(starts)


def run_study(tmp_path: Path) -> tuple[Path, float | None, str]:
    """The session folder to measure, the wall time of the run (None for a given session) and its label."""
    given = os.environ.get("MEDTUNE_BENCH_SESSION")
    if given:
        return Path(given).expanduser(), None, "given session"
    full = os.environ.get("MEDTUNE_BENCH_FULL") == "1"
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    proc = subprocess.run([MEDTUNE, "run", "lr-schedulers", "--output", str(tmp_path)] + ([] if full else ["--smoke"]),
                          capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return next(p for p in tmp_path.glob("lr-schedulers-*") if p.is_dir()), wall, "default" if full else "smoke"


def test_slot_utilisation_and_smoke_wall_time(tmp_path):
    session, wall, label = run_study(tmp_path)
    slots = max(1, (os.cpu_count() or 1))  # the default and smoke specs: 1 CPU per trial, max_concurrent 0
    rows, busy, span = [], 0.0, 0.0
    for name, folder in (("study Tuner", session), ("PBT Tuner (a session from before one Tuner)", session / "pbt")):
        trained, took, n = tuner_utilisation(folder, slots)
        if n:
            busy, span = busy + trained, span + took
            rows.append((f"{name} ({n} trials)", f"{trained:.1f} s trained / ({slots} x {took:.1f} s) = "
                                                  f"{trained / (slots * took):.3f}"))
    whole = busy / (slots * span)
    rows.append((f"whole study ({label})", f"{whole:.3f} (target >= 0.95 for the default study)"))
    if wall is not None:
        rows.append((f"{label} wall time", f"{wall:.1f} s" + (" (target <= 60 s)" if label == "smoke" else "")))
    report("LR study slot utilisation", rows,
           f"utilisation {'meets' if whole >= 0.95 else 'misses'} 0.95"
           + ("" if wall is None or label != "smoke" else f"; wall time {'meets' if wall <= 60 else 'misses'} 60 s"))
    assert 0 < whole <= 1.0 + 1e-6  # a sanity bound: a ratio above 1 would mean the timestamps are misread
