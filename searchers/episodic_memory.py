"""Episodic memory of learning curves: "how did runs that started like this one go on?"

Paper 004 (arXiv 2601.07830, abstract only) proposes that an agent can
estimate its expected future performance by recalling similar past learning
experiences. This is our implementation of that idea for Dice curves:

* The memory stores finished curves (validation Dice per epoch, index 0 =
  epoch 1) with a ``task`` key, so only comparable runs are recalled (same
  data, model and batch size).
* :meth:`EpisodicMemory.predict` takes the current run's prefix
  ``P_1..P_t`` and recalls the ``k`` stored curves whose first ``t`` epochs are
  nearest to it (root-mean-square distance), weights them by
  ``1 / (distance + eps)``, and returns their continuation ``P_{t+1}..P_T``
  shifted so it starts from the current run's own level (each neighbour's
  continuation is offset by ``P_t - neighbour_t``), clipped to [0, 1].
  A stored curve shorter than ``T`` is held at its last value.

Edge cases: an empty memory, or no stored curve at least ``t`` epochs long,
returns ``None`` (the caller decides what to do without expectations). NaN
values in stored curves are carried forward from the last finite value.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Episode", "EpisodicMemory"]


@dataclass(frozen=True)
class Episode:
    """One finished learning curve."""

    curve: tuple[float, ...]
    task: str = ""
    source: str = ""  # e.g. "lr-schedulers-20261121-101500/fixed-seed0"


def _clean(curve: list[float] | tuple[float, ...]) -> tuple[float, ...]:
    out, last = [], 0.0
    for v in curve:
        v = float(v)
        last = v if math.isfinite(v) else last
        out.append(last)
    return tuple(out)


class EpisodicMemory:
    """Stored Dice curves and nearest-prefix recall.

    Args:
        episodes: initial content.
        k: neighbours recalled per prediction (fewer if the memory is smaller).
    """

    def __init__(self, episodes: list[Episode] | None = None, k: int = 3) -> None:
        if k < 1:
            raise ValueError(f"k={k!r} must be >= 1 neighbour")
        self.k = k
        self.episodes: list[Episode] = []
        for e in episodes or []:
            self.add(e.curve, e.task, e.source)

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, curve: list[float] | tuple[float, ...], task: str = "", source: str = "") -> None:
        """Store a finished curve (ignored when empty)."""
        if len(curve):
            self.episodes.append(Episode(_clean(curve), task, source))

    def neighbours(self, prefix: list[float], task: str | None = None) -> list[tuple[float, Episode]]:
        """The ``k`` stored curves nearest to ``prefix`` as ``(rms distance, episode)``, nearest first."""
        t = len(prefix)
        if t == 0:
            return []
        p = np.asarray(_clean(prefix))
        scored = []
        for e in self.episodes:
            if (task is not None and e.task != task) or len(e.curve) < t:
                continue
            d = float(np.sqrt(np.mean((np.asarray(e.curve[:t]) - p) ** 2)))
            scored.append((d, e))
        scored.sort(key=lambda x: x[0])
        return scored[: self.k]

    def predict(self, prefix: list[float], horizon: int, task: str | None = None) -> np.ndarray | None:
        """Expected Dice for epochs ``t+1..horizon`` (shape ``(horizon - t,)``), or None.

        Args:
            prefix: the current run's Dice so far, ``P_1..P_t``.
            horizon: ``T``, the run's last epoch.
            task: recall only episodes of this task (None: any).
        """
        t = len(prefix)
        if horizon <= t:
            return np.zeros(0)
        near = self.neighbours(prefix, task)
        if not near:
            return None
        now = _clean(prefix)[-1]
        weights, paths = [], []
        for d, e in near:
            c = np.asarray(e.curve)
            future = np.array([c[min(s, len(c) - 1)] for s in range(t, horizon)])
            paths.append(future + (now - c[t - 1]))
            weights.append(1.0 / (d + 1e-3))
        w = np.asarray(weights) / np.sum(weights)
        return np.clip(np.tensordot(w, np.asarray(paths), axes=1), 0.0, 1.0)

    # -- persistence (JSON lines; one episode a line, appended) --------------
    @classmethod
    def load(cls, path: str | os.PathLike, k: int = 3) -> EpisodicMemory:
        """Read a memory file; a missing file is an empty memory, a torn line is skipped."""
        memory = cls(k=k)
        p = Path(path)
        if p.is_file():
            for line in p.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    memory.add(rec["curve"], rec.get("task", ""), rec.get("source", ""))
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        return memory

    @staticmethod
    def append(path: str | os.PathLike, curve: list[float], task: str, source: str) -> None:
        """Append one finished curve to a memory file (created if missing)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"curve": [float(v) for v in curve], "task": task, "source": source}
        with open(p, "a") as f:
            f.write(json.dumps(record) + "\n")
