"""Throughput of ``QLearningLRScheduler.on_trial_result`` with 1,000 qlearning trials.

1,000 :class:`FakeTrial` objects report round-robin (epoch 1 of every trial,
then epoch 2, ...) realistic noisy learning curves (saturating Dice with
per-trial ceiling, speed and noise; validation loss following it), 50 epochs
each: 50,000 calls. Default paper configuration (patience 3, cooldown 5,
epsilon 0.2), ``deliver=`` a no-op (no Ray), the journal written to a file as in
production. Results are generated before the clock starts.

Disabling the journal is not possible without changing the source, so instead
of a journal-off rate the block shows, side by side, the per-call time of the
calls that decided (and so wrote a journal record) and of those that did not,
the share of calls that decided, the share of time they took, and the journal's
size.

Target: >= 10,000 calls/s.
"""

from __future__ import annotations

import random
import time

from tests.bench._common import FakeTrial, learning_curve, median, noop_deliver, pct, report

N_TRIALS = 1000
N_EPOCHS = 50
TARGET = 10_000.0


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
    t_start = perf()  # the rate includes this loop's own bookkeeping (conservative)
    for trial, result in calls:
        t0 = perf()
        scheduler.on_trial_result(None, trial, result)
        dt = perf() - t0
        (decided if _journaled(scheduler, trial, result) else quiet).append(dt)
    elapsed = perf() - t_start

    n_calls = len(calls)
    lines = journal.read_text().splitlines()
    size = journal.stat().st_size
    changes = sum(1 for a in scheduler.agents.values() for d in a.run.decisions if d["lr_after"] != d["lr_before"])
    rate = n_calls / elapsed
    t_decided, t_quiet = sum(decided), sum(quiet)
    ok = rate >= TARGET
    us = 1e6
    report(
        "QLearningLRScheduler.on_trial_result throughput, 1,000 qlearning trials, journal on",
        [
            ("calls", f"{n_calls:,} ({N_TRIALS} trials x {N_EPOCHS} epochs, round-robin) in {elapsed:.3f} s"),
            ("CALLS/S", f"{rate:,.0f}"),
            ("decided calls (full record)", f"{len(decided):,} = {len(decided) / n_calls:.1%} of calls, "
                                          f"{t_decided / (t_decided + t_quiet):.1%} of the time; "
                                          f"{len(lines):,} journal records"),
            ("LR changes", f"{changes:,}"),
            ("per call, decided", f"median {median(decided) * us:.1f} us, p99 {pct(decided, 0.99) * us:.1f} us, "
                                  f"max {max(decided) * us:.0f} us"),
            ("per call, not decided", f"median {median(quiet) * us:.1f} us, p99 {pct(quiet, 0.99) * us:.1f} us"),
            ("rate if decided calls cost as much as quiet ones",
             f"{n_calls / (median(quiet) * n_calls):,.0f}/s (estimate, from the medians)"),
            ("journal size", f"{size / 2**20:.1f} MiB ({size / max(1, len(lines)):,.0f} B/record; "
                             f"first record {len(lines[0]):,} B, last {len(lines[-1]):,} B)"),
            ("final table", f"{scheduler.table.updates:,} Q-updates, epsilon {scheduler.table.epsilon:.3f}"),
            ("target", f">= {TARGET:,.0f} calls/s"),
        ],
        "MET" if ok else "MISSED",
    )
    assert len(lines) == n_calls  # one record per epoch: a full one on decisions, a small observation otherwise
    assert sum('"agent"' in line for line in lines) == len(decided)
    assert ok, f"{rate:,.0f} calls/s (target >= {TARGET:,.0f})"


def _journaled(scheduler, trial, result) -> bool:
    """Whether the call that just handled ``result`` decided (and so appended a full journal record)."""
    decisions = scheduler.agents[trial.trial_id].run.decisions
    return bool(decisions) and decisions[-1]["epoch"] == scheduler.agents[trial.trial_id].run.epochs
