"""The labels side of active learning: label checks, the stratified initial set, and the Annotator.

:class:`Annotator` is the oracle implementation of the :class:`AnnotationQueue` protocol that a human
annotation queue would implement: it reveals only the labels asked for, counts and caps the budget, and
appends every annotation to a durable JSON-lines log (flushed and fsynced before the labels are returned). A
new instance on an existing log reloads it, so after a crash nothing is lost or counted twice. Requests carry
an id; repeating a request returns the same labels without counting them again. Plain Python (picklable, no
Ray, no MLflow): a Ray actor wraps it one to one.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medtune.errors import InputError
from medtune.trainables.al_config import INIT_STREAM, seed_stream
from medtune.util import is_int, is_number

__all__ = ["AnnotationError", "AnnotationQueue", "Annotator", "BudgetExceeded", "check_labels", "stratified_initial"]


class AnnotationError(ValueError):
    """A request the annotator cannot serve: bad, repeated or already-annotated indices, or a corrupt log."""


class BudgetExceeded(AnnotationError):
    """The request would take more labels than the annotation budget has left (nothing was revealed)."""


def check_labels(labels: np.ndarray, num_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Validate the oracle labels of a pool.

    Args:
        labels: ``(N,)`` integer class indices.
        num_classes: ``M``; default ``max(labels) + 1``.

    Returns:
        ``(labels as int64, M)``.

    Raises:
        InputError: one line for: not 1D, not integers, an empty pool, a label
            outside ``0..M-1``, or a class in ``0..M-1`` with no sample.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise InputError(f"labels have shape {y.shape}; give one class index per pool sample, shape (N,)")
    if y.size == 0:
        raise InputError("labels are empty; the pool needs at least one sample per class")
    if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels have dtype {y.dtype}; give integer class indices 0..M-1")
    M = int(y.max()) + 1 if num_classes is None else num_classes
    if not is_int(M) or M < 2:
        raise InputError(f"num_classes={M!r} is invalid; a classification task needs at least 2 classes")
    bad = y[(y < 0) | (y >= M)]
    if bad.size:
        raise InputError(f"label {int(bad[0])} is outside the class range 0..{M - 1} ({bad.size} such label(s)); "
                         "renumber classes 0..M-1 or raise num_classes")
    empty = np.setdiff1d(np.arange(M), y)
    if empty.size:
        raise InputError(f"class(es) {empty.tolist()} have no sample in the pool (classes 0..{M - 1}); "
                         "add samples of every class or renumber classes without gaps")
    return y.astype(np.int64), int(M)


def stratified_initial(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The initial labeled set of paper 001: ``fraction`` of every class, drawn with ``seed``.

    Class ``c`` with ``n_c`` samples gives ``max(1, round(fraction * n_c))``
    (halves up) samples, so every class starts with at least one label.

    Returns:
        Sorted ``int64`` pool positions.
    """
    if not is_number(fraction) or not 0 < fraction < 1:
        raise InputError(f"initial_fraction={fraction!r} is out of range; use a share strictly between 0 and 1")
    y = np.asarray(labels)
    rng = np.random.default_rng(seed_stream(seed, INIT_STREAM))
    chosen = [np.zeros(0, np.int64)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = min(len(idx), max(1, int(math.floor(fraction * len(idx) + 0.5))))
        chosen.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@runtime_checkable
class AnnotationQueue(Protocol):
    """What the loop needs from whoever annotates: an oracle here, a human queue in production.

    Indices are positions ``0..N-1`` in the training pool. Implementations must
    make every returned label durable before returning it, count each pool
    sample at most once against the budget, and answer a repeated
    ``request_id`` with the labels of its first answer.
    """

    def pool_size(self) -> int:
        """``N``, the number of samples in the pool."""

    def annotate(self, indices: np.ndarray, request_id: str | None = None) -> np.ndarray:
        """Labels ``(n,)`` int64 of ``indices`` ``(n,)``; raises :class:`BudgetExceeded` / :class:`AnnotationError`."""

    def lookup(self, request_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(indices, labels)`` of an earlier request, or None if it was never answered."""

    def labeled(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, labels)`` of everything annotated so far, in annotation order."""

    def spent(self) -> int:
        """Labels given out so far."""

    def remaining(self) -> int:
        """Labels the budget still allows."""


class Annotator:
    """Oracle annotator: holds the true labels and reveals them on request, durably and within budget.

    The log (JSON lines) starts with a header
    ``{"kind": "header", "pool_size": N, "labels_crc32": ...}`` and holds one line
    per answered request ``{"kind": "annotation", "request_id": ..., "indices":
    [...], "labels": [...]}``, each written, flushed and fsynced *before* the
    labels are returned. A new ``Annotator`` on an existing log checks that the
    log belongs to these labels and replays it, so the labeled set, the budget
    spent and the request ids survive a crash; a torn last line (a crash in the
    middle of a write, whose labels were therefore never returned) is dropped.

    Args:
        labels: ``(N,)`` oracle labels of the pool.
        budget: labels that may be given out in total (the initial set
            included); default ``N``. Must be in ``1..N``.
        log_path: the JSON-lines log; None keeps everything in memory only.
        num_classes: ``M``; default ``max(labels) + 1``.

    Raises:
        InputError: bad labels (:func:`check_labels`), a budget outside ``1..N``,
            or a log that belongs to other labels.
        AnnotationError: a log corrupted before its last line.
    """

    def __init__(self, labels: np.ndarray, budget: int | None = None, log_path: str | os.PathLike | None = None,
                 num_classes: int | None = None) -> None:
        self._labels, self.num_classes = check_labels(labels, num_classes)
        n = len(self._labels)
        budget = n if budget is None else budget
        if not is_int(budget) or budget < 1:
            raise InputError(f"budget={budget!r} is invalid; allow at least one annotation (1..{n})")
        if budget > n:
            raise InputError(f"budget={budget} is larger than the pool ({n} samples); set budget to at most {n}")
        self.budget = int(budget)
        self.log_path = None if log_path is None else os.fspath(log_path)
        self._requests: dict[str, tuple[list[int], list[int]]] = {}
        self._order: list[str] = []
        self._owner: dict[int, str] = {}                       # pool index -> request that annotated it
        if self.log_path is not None:
            self._open_log(self.log_path)

    # -- the log -----------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        crc = zlib.crc32(np.ascontiguousarray(self._labels, dtype="<i8").tobytes())
        return {"kind": "header", "version": 1, "pool_size": len(self._labels), "labels_crc32": crc}

    def _append(self, log_path: str, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _open_log(self, log_path: str) -> None:
        path = Path(log_path)
        if not path.exists() or path.stat().st_size == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append(log_path, self._header())
            try:                                                # make the new file's name durable too
                fd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass
            return
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        if lines[-1] != b"":                                    # torn last write: never acknowledged, drop it
            keep = len(raw) - len(lines[-1])
            with open(path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
        lines = [ln for ln in lines[:-1]]
        records = []
        for number, ln in enumerate(lines, 1):
            try:
                records.append(json.loads(ln))
            except json.JSONDecodeError:
                raise AnnotationError(f"annotation log {path} line {number} is not JSON; restore the log from a backup "
                                      "or move it aside to start over") from None
        if not records:
            self._append(log_path, self._header())
            return
        header = records[0]
        expected = self._header()
        if header.get("kind") != "header" or header.get("pool_size") != expected["pool_size"] \
                or header.get("labels_crc32") != expected["labels_crc32"]:
            raise InputError(f"annotation log {path} belongs to another pool (header {header}); "
                             "point log_path at this study's log or at a new file")
        for rec in records[1:]:
            if rec.get("kind") != "annotation":
                raise AnnotationError(f"annotation log {path} holds an unknown record {rec!r}")
            idx, lab = [int(i) for i in rec["indices"]], [int(v) for v in rec["labels"]]
            if any(self._labels[i] != v for i, v in zip(idx, lab)):
                raise InputError(f"annotation log {path} disagrees with the oracle labels (request "
                                 f"{rec['request_id']!r}); the log belongs to other data")
            self._record(str(rec["request_id"]), idx, lab)

    def _record(self, request_id: str, idx: list[int], lab: list[int]) -> None:
        self._requests[request_id] = (idx, lab)
        self._order.append(request_id)
        for i in idx:
            self._owner[i] = request_id

    # -- the protocol --------------------------------------------------------------
    def pool_size(self) -> int:
        return len(self._labels)

    def annotate(self, indices: np.ndarray, request_id: str | None = None) -> np.ndarray:
        """Reveal the labels of ``indices`` (durably logged first).

        Args:
            indices: ``(n,)`` distinct pool positions not annotated before.
            request_id: an id for this request (e.g. ``"round-3"``); repeating a
                request with the same id and indices returns the same labels
                without counting them again. None: a fresh id is generated.

        Returns:
            ``(n,)`` int64 labels, in the order of ``indices``.

        Raises:
            AnnotationError: indices not 1D integers, out of range, repeated in
                the request, already annotated (naming the earlier request), or
                a known ``request_id`` with different indices.
            BudgetExceeded: more indices than :meth:`remaining` (nothing is revealed).
        """
        arr = np.asarray(indices)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise AnnotationError(f"indices must be a 1D list of integer pool positions; got shape {arr.shape}, "
                                  f"dtype {arr.dtype}")
        idx = [int(i) for i in arr]
        if request_id is not None:
            request_id = str(request_id)
            if request_id in self._requests:
                known_idx, known_lab = self._requests[request_id]
                if known_idx != idx:
                    raise AnnotationError(f"request_id={request_id!r} was already answered for other indices; "
                                          "use a new request id for a new request")
                return np.asarray(known_lab, np.int64)
        n = len(self._labels)
        outside = [i for i in idx if not 0 <= i < n]
        if outside:
            raise AnnotationError(f"index {outside[0]} is outside the pool 0..{n - 1}; ask only for pool positions")
        if len(set(idx)) != len(idx):
            dup = next(i for i in idx if idx.count(i) > 1)
            raise AnnotationError(f"index {dup} appears twice in one request; ask for each sample once")
        done = [i for i in idx if i in self._owner]
        if done:
            raise AnnotationError(f"index {done[0]} was already annotated (request {self._owner[done[0]]!r}); "
                                  f"{len(done)} of the {len(idx)} requested samples are labeled already")
        if len(idx) > self.remaining():
            raise BudgetExceeded(f"request for {len(idx)} labels exceeds the annotation budget "
                                 f"({self.spent()} of {self.budget} spent, {self.remaining()} left)")
        if not idx:
            return np.zeros(0, np.int64)
        if request_id is None:
            request_id = f"auto-{len(self._order)}"
            while request_id in self._requests:
                request_id += "+"
        lab = [int(self._labels[i]) for i in idx]
        if self.log_path is not None:
            self._append(self.log_path, {"kind": "annotation", "request_id": request_id, "indices": idx, "labels": lab})
        self._record(request_id, idx, lab)
        return np.asarray(lab, np.int64)

    def lookup(self, request_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        got = self._requests.get(str(request_id))
        return None if got is None else (np.asarray(got[0], np.int64), np.asarray(got[1], np.int64))

    def labeled(self) -> tuple[np.ndarray, np.ndarray]:
        idx = [i for rid in self._order for i in self._requests[rid][0]]
        lab = [v for rid in self._order for v in self._requests[rid][1]]
        return np.asarray(idx, np.int64), np.asarray(lab, np.int64)

    def spent(self) -> int:
        return len(self._owner)

    def remaining(self) -> int:
        return self.budget - self.spent()

    def request_ids(self) -> list[str]:
        """Ids of the answered requests, in order."""
        return list(self._order)

    def initial_indices(self, fraction: float, seed: int) -> np.ndarray:
        """The paper's stratified initial set (:func:`stratified_initial`); an oracle can draw it per class."""
        return stratified_initial(self._labels, fraction, seed)
