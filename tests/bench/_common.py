"""Helpers shared by the benchmarks in ``tests/bench``.

Every benchmark measures its candidate and its reference in the same run and
prints one block (:func:`report`) with the raw numbers, the ratio and the
target before asserting the target.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medtune.searchers.qlearning_agent import ACTIONS, STATES


class FakeTrial:
    """What :class:`~medtune.searchers.qlearning_scheduler.QLearningLRScheduler` touches of a Tune Trial."""

    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id = trial_id
        self.config = dict(config)

    def set_config(self, config: dict[str, Any]) -> None:
        self.config = config


def noop_deliver(trial_id: str, lr: float) -> None:
    """A ``deliver=`` that does nothing (no Ray)."""


def write_greedy_qtable(path: str | os.PathLike, action: str = "increase") -> str:
    """A warm-start Q-table whose greedy action is ``action`` in every state."""
    q = {s: {a: (1.0 if a == action else 0.0) for a in ACTIONS} for s in STATES}
    Path(path).write_text(json.dumps({"q": q}))
    return str(path)


def learning_curve(rng: random.Random, epochs: int) -> list[tuple[float, float]]:
    """A plausible noisy (dice, val_loss) curve: saturating Dice, loss falling with it, small noise."""
    top = rng.uniform(0.7, 0.9)
    tau = rng.uniform(4.0, 15.0)
    noise = rng.uniform(0.005, 0.02)
    out = []
    for t in range(1, epochs + 1):
        dice = top * (1.0 - math.exp(-t / tau)) + rng.gauss(0.0, noise)
        loss = 1.2 * (1.0 - dice) + 0.1 + rng.gauss(0.0, noise)
        out.append((min(1.0, max(0.0, dice)), max(1e-3, loss)))
    return out


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # pragma: no cover - torch is a dependency
        gpu = "unknown GPU"
    return f"{os.cpu_count()} CPU cores ({platform.machine()}, Python {platform.python_version()}), {gpu}"


# What each benchmark reported in this pytest session (``tests/bench/conftest.py`` prints them as one table at the
# end and fails the run when one MISSED); CURRENT_TEST is the node id of the benchmark running now.
RECORDS: list[dict[str, str]] = []
CURRENT_TEST: list[str] = [""]


def headline(rows: list[tuple[str, Any]]) -> str:
    """A block's figure: the first row whose key starts with a word in capitals (``RATIO ...``, ``CALLS/S``)."""
    for key, value in rows:
        word = key.split()[0].replace("/", "")
        if len(word) >= 2 and word.isalpha() and word.isupper():
            return f"{key}: {value}"
    return "(see its block)"


def report(title: str, rows: list[tuple[str, Any]], verdict: str, figure: str | None = None) -> None:
    """Print one benchmark block: the machine, raw numbers, ratio, target, verdict; and record it for the table.

    ``figure``: what the closing table shows (default: the first row whose key starts with a word in capitals).
    """
    width = max(len(k) for k, _ in rows)
    lines = [f"===== BENCH {title} =====", f"{'machine'.ljust(width)} : {machine()}"]
    for key, value in rows:
        lines.append(f"{key.ljust(width)} : {value}")
    lines.append(f"{'result'.ljust(width)} : {verdict}")
    lines.append("=" * len(lines[0]))
    print("\n" + "\n".join(lines), flush=True)
    RECORDS.append({"test": CURRENT_TEST[0], "title": title, "figure": figure or headline(rows),
                    "target": str(dict(rows).get("target", "")), "verdict": verdict})
