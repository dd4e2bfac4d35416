"""Throughput of ``QLearningLRScheduler.on_trial_result`` with 1,000 qlearning trials.

1,000 :class:`FakeTrial` objects report round-robin (epoch 1 of every trial,
then epoch 2, ...) realistic noisy learning curves (saturating Dice with
per-trial ceiling, speed and noise; validation loss following it), 50 epochs
each: 50,000 calls. Default paper configuration (patience 3, cooldown 5,
epsilon 0.2), ``deliver=`` a no-op (no Ray), the journal written to a file as in
production. Results are generated before the clock starts.

The block shows, side by side, the per-call time of the calls that decided and
of those that did not, the share of calls that decided and of the time they
took, the bytes the journal received in all (records and snapshots) and its
size at the end (bounded by the snapshot, whatever the number of results).

Targets: >= 30,000 calls/s; the journal written per result at most a tenth of
the old format's 692 bytes.
"""

from __future__ import annotations

import random
import time

from tests.bench._common import FakeTrial, learning_curve, median, noop_deliver, pct, report

N_TRIALS = 1000
N_EPOCHS = 50
TARGET = 30_000.0
OLD_BYTES_PER_RESULT = 692  # the journal before the compact format (a full state on every decision)


def test_bench_scheduler_on_trial_result_throughput(tmp_path):
    from medtune.searchers.qlearning_agent import QLearningConfig
    from medtune.searchers.qlearning_scheduler import QLearningLRScheduler

    journal = tmp_path / "state" / "qlearning-journal.jsonl"
    scheduler = QLearningLRScheduler(QLearningConfig(), state_path=journal, mailbox="unused", seed=0,
                                     deliver=noop_deliver)
    rng = random.Random(0)
    trials = [FakeTrial(f"trial_{i:05d}", {"method": "qlearning", "seed": i % 3, "lr": 1e-4}) for i in range(N_TRIALS)]
    curves = [learning_curve(rng, N_EPOCHS) for _ in trials]
    calls = []
    for e in range(N_EPOCHS):
        for trial, curve in zip(trials, curves):
            dice, loss = curve[e]
            calls.append((trial, {"epoch": e + 1, "training_iteration": e + 1, "dice": dice, "val_loss": loss,
                                  "train_loss": loss * 0.9, "lr": trial.config["lr"], "time_this_iter_s": 1.0}))

    decided, quiet = [], []
    perf = time.perf_counter
    written, snapshots, tail_bytes = 0, 0, 0
    t_start = perf()  # the rate includes this loop's own bookkeeping (conservative)
    for trial, result in calls:
        t0 = perf()
        scheduler.on_trial_result(None, trial, result)
        dt = perf() - t0
        (decided if _decided(scheduler, trial) else quiet).append(dt)
        if scheduler._tail_bytes < tail_bytes:  # a snapshot replaced the journal
            written += tail_bytes + scheduler._snapshot_bytes
            snapshots += 1
            tail_bytes = scheduler._tail_bytes
        tail_bytes = scheduler._tail_bytes
    elapsed = perf() - t_start
    written += tail_bytes

    n_calls = len(calls)
    lines = journal.read_text().splitlines()
    size = journal.stat().st_size
    per_result = written / n_calls
    changes = sum(1 for a in scheduler.agents.values() for d in a.run.decisions if d["lr_after"] != d["lr_before"])
    rate = n_calls / elapsed
    t_decided, t_quiet = sum(decided), sum(quiet)
    ok = rate >= TARGET and per_result <= OLD_BYTES_PER_RESULT / 10
    us = 1e6
    report(
        "QLearningLRScheduler.on_trial_result throughput, 1,000 qlearning trials, journal on",
        [
            ("calls", f"{n_calls:,} ({N_TRIALS} trials x {N_EPOCHS} epochs, round-robin) in {elapsed:.3f} s"),
            ("CALLS/S", f"{rate:,.0f}"),
            ("decided calls", f"{len(decided):,} = {len(decided) / n_calls:.1%} of calls, "
                              f"{t_decided / (t_decided + t_quiet):.1%} of the time"),
            ("LR changes", f"{changes:,}"),
            ("per call, decided", f"median {median(decided) * us:.1f} us, p99 {pct(decided, 0.99) * us:.1f} us, "
                                  f"max {max(decided) * us:.0f} us"),
            ("per call, not decided", f"median {median(quiet) * us:.1f} us, p99 {pct(quiet, 0.99) * us:.1f} us"),
            ("rate if decided calls cost as much as quiet ones",
             f"{n_calls / (median(quiet) * n_calls):,.0f}/s (estimate, from the medians)"),
            ("JOURNAL B/RESULT", f"{per_result:.1f} B written per result ({written / 2**20:.2f} MiB in all, "
                                 f"{snapshots} snapshots; the old format: {OLD_BYTES_PER_RESULT} B)"),
            ("journal at the end", f"{size / 2**20:.2f} MiB: a snapshot of {len(lines[0]) / 2**20:.2f} MiB and "
                                   f"{len(lines) - 1:,} records ({scheduler.journal_snapshot_every:,} at least "
                                   f"between snapshots)"),
            ("final table", f"{scheduler.table.updates:,} Q-updates, epsilon {scheduler.table.epsilon:.3f}"),
            ("target", f">= {TARGET:,.0f} calls/s, <= {OLD_BYTES_PER_RESULT / 10:.0f} journal B/result"),
        ],
        "MET" if ok else "MISSED",
        figure=f"{rate:,.0f} calls/s, {per_result:.0f} journal B/result",
    )
    assert snapshots >= 1 and lines[0].startswith('{"snapshot"')  # the journal was bounded by snapshots
    assert ok, f"{rate:,.0f} calls/s (target >= {TARGET:,.0f}), {per_result:.1f} journal B/result"


def _decided(scheduler, trial) -> bool:
    """Whether the call that just handled ``trial``'s result decided."""
    run = scheduler.agents[trial.trial_id].run
    return bool(run.decisions) and run.decisions[-1]["epoch"] == run.epochs
