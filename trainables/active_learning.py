"""The active-learning loop of DRLA (paper 001) and its baselines, as three plain-Python roles.

Paper 001 (Wang, Yan et al., "Deep Reinforcement Active Learning for Medical
Image Classification", MICCAI 2020), Algorithm 1 and section 3.2:

1. Pre-train the classifier on an initial labeled set: a fixed share of every
   class (5% on chestCT, 10% on Retinopathy): ``initial_fraction``.
2. Every round ("epoch" in the paper): compute the state ``S`` (class
   probabilities of the unlabeled pool, ``(n_u, M)``), select ``n_s`` samples
   (DDPG actor for ``drla``, or a hand-designed strategy), have them annotated,
   update the classifier on all labels so far, and measure macro-F1 and
   micro-F1 on the held-out test split.
3. ``drla`` also gets the reward of Eq. 3 and the transition ``(S, a, r, S')``.
4. The comparison reads the scores at 26, 40, 54, 68, 82 and 100% of the
   training set labeled; ``all`` trains once on every label.

The roles, each a plain class with the interface a Ray actor will wrap one to
one (picklable, no Ray or MLflow here):

* :class:`Annotator` (the oracle implementation of the :class:`AnnotationQueue`
  protocol a human annotation queue would implement): reveals only the labels
  asked for, counts and caps the budget, and appends every annotation to a
  durable JSON-lines log (flushed and fsynced before the labels are returned);
  a new instance on an existing log reloads it, so after a crash nothing is
  lost or counted twice. Requests carry an id; repeating a request returns the
  same labels without counting them again.
* :class:`Learner`: a small MONAI ResNet or DenseNet (2D or 3D, from the image
  shape), ``fit`` / ``predict_proba`` (the state) / ``predict_proba_mc`` (BALD)
  / ``embed`` (core-set) / ``evaluate`` / ``save`` / ``load``.
* :func:`run_active_learning`: the loop. It only calls methods of the
  annotator and learner, so thin proxies that forward to Ray actors work
  unchanged. With ``state_dir`` it checkpoints after every round (learner,
  DDPG agent, loop state) and a second call with the same ``state_dir`` and the
  same annotator log continues where the first stopped.

Our choices where the paper is silent (all configurable):

* The classifier is *fine-tuned* each round: the paper's Algorithm 1 line 5
  "updates" ``theta_d`` on the augmented labeled set, so training continues
  from the current weights (``fit_mode="finetune"``) for ``epochs_per_round``
  epochs over all labels so far; ``fit_mode="retrain"`` restarts from the same
  initial weights every round instead.
* The loop lands exactly on every reporting fraction (``round(f * N)``
  labels, ``N`` the training-pool size): the gap to the next one is split into
  ``ceil(gap / n_s)`` rounds of near-equal size, each at most ``n_s`` (so no
  round of a handful of samples just to hit the mark). Rounds never exceed the
  annotation budget; the initial labels count toward it.
* Optimiser: Adam (lr 1e-3) on a small network trained from scratch, not the
  paper's SGD 1e-4 on an ImageNet-pretrained ResNet-50 (CPU-sized study).
* ``all`` annotates the whole pool in one request and trains from the initial
  weights for ``all_epochs`` epochs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from medtune.searchers.ddpg import DDPGAgent, DDPGConfig, reward_eq3
from medtune.searchers.query_strategies import select, top_n
from medtune.errors import InputError, did_you_mean
from medtune.util import atomic_write, is_int, is_number

#: The methods of the study, as in MLflow's ``method`` parameter.
METHODS: tuple[str, ...] = ("random", "lc", "ms", "en", "fusion", "drla", "all", "bald", "coreset")
CLASSIFIERS: tuple[str, ...] = ("resnet", "densenet")
FIT_MODES: tuple[str, ...] = ("finetune", "retrain")
#: Paper 001 Tables 1-2: share of the training set labeled at each column.
PAPER_FRACTIONS: tuple[float, ...] = (0.26, 0.40, 0.54, 0.68, 0.82, 1.0)
#: The keys of every per-round report.
REPORT_KEYS: tuple[str, ...] = ("round", "labeled", "labeled_fraction", "macro_f1", "micro_f1")


def _seed_stream(seed: int, tag: int) -> int:
    """An independent 63-bit seed for stream ``tag`` of ``seed``."""
    return int(np.random.SeedSequence([int(seed) % 2**63, tag]).generate_state(1, np.uint64)[0] >> np.uint64(1))


_INIT_STREAM, _LOOP_STREAM = 21, 22
_FIT_STREAM, _MC_STREAM = 1000, 1001   # + 2 * fits: one fresh stream per fit and per MC call


# =========================================================================== configuration


@dataclass(frozen=True)
class LearnerConfig:
    """The classifier and its training budget per round (CPU-sized; paper 001 used ResNet-50).

    Attributes:
        classifier: ``"resnet"`` (MONAI ResNet, one basic block per stage) or
            ``"densenet"`` (MONAI DenseNet, two layers per block).
        width: channels of the first stage (ResNet stages ``w, 2w, 4w, 8w``;
            DenseNet initial features ``w``, growth ``w/2``).
        dropout: dropout before the linear head, in [0, 1); used in training
            and by MC dropout (``bald``); 0 turns ``bald`` into all-ties.
        initial_epochs: epochs of the pre-training on the initial labeled set.
        epochs_per_round: epochs over all labels so far after each round.
        all_epochs: epochs of the ``all`` method on every label.
        batch_size: mini-batch size.
        lr: Adam learning rate.
        fit_mode: ``"finetune"`` (continue from the current weights, the
            paper's "update") or ``"retrain"`` (restart from the initial weights).

    Raises:
        InputError: one line naming the field, the value and the fix.
    """

    classifier: str = "resnet"
    width: int = 16
    dropout: float = 0.25
    initial_epochs: int = 10
    epochs_per_round: int = 2
    all_epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    fit_mode: str = "finetune"

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise InputError(f"classifier={self.classifier!r} is not supported{did_you_mean(self.classifier, CLASSIFIERS)}; "
                             f"use one of {', '.join(CLASSIFIERS)}")
        if self.fit_mode not in FIT_MODES:
            raise InputError(f"fit_mode={self.fit_mode!r} is unknown{did_you_mean(self.fit_mode, FIT_MODES)}; "
                             f"use one of {', '.join(FIT_MODES)}")
        for name, low in (("width", 2), ("initial_epochs", 1), ("epochs_per_round", 1), ("all_epochs", 1),
                          ("batch_size", 2)):
            v = getattr(self, name)
            if not is_int(v) or v < low:
                raise InputError(f"{name}={v!r} is invalid; use an integer >= {low}")
        if not is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise InputError(f"dropout={self.dropout!r} is out of range; use a probability in [0, 1), e.g. 0.25")
        if not is_number(self.lr) or self.lr <= 0:
            raise InputError(f"lr={self.lr!r} is invalid; use a positive learning rate such as 1e-3")


@dataclass(frozen=True)
class ActiveLearningConfig:
    """The protocol of one active-learning run (paper 001 section 3.2, scaled to a CPU).

    Attributes:
        initial_fraction: share of every class labeled before the first round,
            in (0, 1); the paper uses 0.05 (chestCT) and 0.10 (Retinopathy).
        n_s: samples annotated per round (>= 1); the paper uses 5 and 1 on pools
            of thousands; ours is larger so a study fits in minutes.
        fractions: the shares of the training pool at which the comparison
            reads the scores, strictly increasing in (0, 1]; the loop stops at
            the last one. Paper: 0.26, 0.40, 0.54, 0.68, 0.82, 1.0.
        target_f1: macro-F1 for "labels to target" (``labels_to_target``), in (0, 1].
        mc_samples: ``T``, stochastic forward passes for ``bald`` (>= 2).
        explore: add DDPG's exploration noise when ``drla`` selects.
        learner: :class:`LearnerConfig`.
        ddpg: :class:`~medtune.searchers.ddpg.DDPGConfig`; its ``seed`` is replaced by
            the run's seed.

    Raises:
        InputError: one line naming the field, the value and the fix.
    """

    initial_fraction: float = 0.1
    n_s: int = 50
    fractions: tuple[float, ...] = PAPER_FRACTIONS
    target_f1: float = 0.95
    mc_samples: int = 10
    explore: bool = True
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    ddpg: DDPGConfig = field(default_factory=DDPGConfig)

    def __post_init__(self) -> None:
        if not is_number(self.initial_fraction) or not 0 < self.initial_fraction < 1:
            raise InputError(f"initial_fraction={self.initial_fraction!r} is out of range; "
                             "use a share of each class strictly between 0 and 1, e.g. 0.1 (paper: 0.05 or 0.1)")
        if not is_int(self.n_s) or self.n_s < 1:
            raise InputError(f"n_s={self.n_s!r} is invalid; annotate at least one sample per round (n_s >= 1)")
        fr = self.fractions
        if isinstance(fr, list):
            object.__setattr__(self, "fractions", fr := tuple(fr))
        if not isinstance(fr, tuple) or not fr or not all(is_number(f) for f in fr):
            raise InputError(f"fractions={fr!r} is invalid; give a non-empty list of shares such as "
                             "[0.26, 0.40, 0.54, 0.68, 0.82, 1.0]")
        if not all(0 < f <= 1 for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
            raise InputError(f"fractions={list(fr)!r} must be strictly increasing shares in (0, 1]; "
                             "e.g. [0.26, 0.40, 0.54, 0.68, 0.82, 1.0]")
        if not is_number(self.target_f1) or not 0 < self.target_f1 <= 1:
            raise InputError(f"target_f1={self.target_f1!r} is out of range; use a macro-F1 in (0, 1], e.g. 0.95")
        if not is_int(self.mc_samples) or self.mc_samples < 2:
            raise InputError(f"mc_samples={self.mc_samples!r} is invalid; BALD needs T >= 2 dropout samples")
        if not isinstance(self.explore, bool):
            raise InputError(f"explore={self.explore!r} must be true or false")
        if not isinstance(self.learner, LearnerConfig):
            raise InputError(f"learner={self.learner!r} must be a LearnerConfig")
        if not isinstance(self.ddpg, DDPGConfig):
            raise InputError(f"ddpg={self.ddpg!r} must be a DDPGConfig")


def milestone_counts(pool_size: int, fractions: tuple[float, ...]) -> list[int]:
    """Label counts at the reporting fractions: ``round(f * N)`` (halves up), at least 1, deduplicated."""
    counts = [max(1, int(math.floor(f * pool_size + 0.5))) for f in fractions]
    return sorted(set(min(c, pool_size) for c in counts))


# =========================================================================== labels and the annotator


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
    rng = np.random.default_rng(_seed_stream(seed, _INIT_STREAM))
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
            self._open_log()

    # -- the log -----------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        crc = zlib.crc32(np.ascontiguousarray(self._labels, dtype="<i8").tobytes())
        return {"kind": "header", "version": 1, "pool_size": len(self._labels), "labels_crc32": crc}

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _open_log(self) -> None:
        path = Path(self.log_path)
        if not path.exists() or path.stat().st_size == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append(self._header())
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
            self._append(self._header())
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
            self._append({"kind": "annotation", "request_id": request_id, "indices": idx, "labels": lab})
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


# =========================================================================== the learner


def _stem_is_small(image_shape: tuple[int, ...]) -> bool:
    return min(image_shape[1:]) < 32


def make_al_classifier(kind: str, image_shape: tuple[int, ...], num_classes: int, width: int = 16,
                       dropout: float = 0.25) -> "torch.nn.Module":
    """A small MONAI classifier with an exposed embedding and an MC-dropout head.

    The backbone (2D for ``image_shape = (C, H, W)``, 3D for ``(C, D, H, W)``)
    ends in global pooling; then ``Dropout(dropout)`` and ``Linear(F, M)``.
    Images smaller than 32 pixels a side (digits 8x8, MedMNIST 28) get a 3x3,
    stride-1 stem without max-pooling so the feature maps do not vanish.

    * ``resnet``: MONAI ``ResNet`` with basic blocks, one per stage, channels
      ``w, 2w, 4w, 8w``.
    * ``densenet``: MONAI ``DenseNet`` with ``init_features = w``, growth
      ``max(2, w // 2)`` and up to 3 blocks of 2 layers (fewer on tiny inputs).

    Returns:
        A module with ``forward(x) -> logits (B, M)``, ``features(x) -> (B, F)``
        and a ``dropout`` attribute (switched on alone for MC dropout).
    """
    import torch
    import torch.nn as nn

    spatial_dims = len(image_shape) - 1
    if spatial_dims not in (2, 3):
        raise InputError(f"image shape {tuple(image_shape)} is neither 2D (C, H, W) nor 3D (C, D, H, W)")
    channels = int(image_shape[0])
    small = _stem_is_small(tuple(image_shape))
    if kind == "resnet":
        from monai.networks.nets import ResNet

        backbone = ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(width, 2 * width, 4 * width, 8 * width),
                          spatial_dims=spatial_dims, n_input_channels=channels,
                          conv1_t_size=3 if small else 7, conv1_t_stride=1 if small else 2, no_max_pool=small,
                          feed_forward=False)
    elif kind == "densenet":
        from monai.networks.layers.factories import Conv
        from monai.networks.nets import DenseNet

        side = min(image_shape[1:]) if small else min(image_shape[1:]) // 4
        blocks = int(min(3, max(1, math.floor(math.log2(max(side, 1))) + 1)))
        backbone = DenseNet(spatial_dims=spatial_dims, in_channels=channels, out_channels=num_classes,
                            init_features=width, growth_rate=max(2, width // 2), block_config=(2,) * blocks)
        if small:
            backbone.features.conv0 = Conv[Conv.CONV, spatial_dims](channels, width, kernel_size=3, stride=1,
                                                                    padding=1, bias=False)
            backbone.features.pool0 = nn.Identity()
        backbone.class_layers.out = nn.Identity()
    else:
        raise InputError(f"classifier={kind!r} is not supported{did_you_mean(kind, CLASSIFIERS)}; "
                         f"use one of {', '.join(CLASSIFIERS)}")

    class _Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            with torch.no_grad():
                backbone.eval()
                n_features = backbone(torch.zeros(1, *image_shape)).reshape(1, -1).shape[1]
                backbone.train()
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(n_features, num_classes)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x).reshape(x.shape[0], -1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.dropout(self.features(x)))

    return _Net()


class Learner:
    """Holds the classifier ``f(.; theta_d)``, trains it on labels so far, and produces the DRLA state.

    The learner never sees a training label unless it is passed to :meth:`fit`
    (the annotator holds them); it keeps the test labels for :meth:`evaluate`.

    Args:
        pool_images: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` float32 training pool.
        test_images: ``(n_test, ...)`` held-out images, same shape per image.
        test_labels: ``(n_test,)`` labels in ``0..M-1``.
        num_classes: ``M``.
        config: :class:`LearnerConfig`.
        seed: weight initialisation, batch order, MC-dropout masks.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when available.

    Raises:
        InputError: shapes that do not match, or test labels outside ``0..M-1``.
    """

    def __init__(self, pool_images: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray, num_classes: int,
                 config: LearnerConfig = LearnerConfig(), seed: int = 0, device: str | None = None) -> None:
        import torch

        pool = np.asarray(pool_images, dtype=np.float32)
        test = np.asarray(test_images, dtype=np.float32)
        if pool.ndim not in (4, 5) or len(pool) == 0:
            raise InputError(f"pool images have shape {pool.shape}; give (N, C, H, W) or (N, C, D, H, W) with N >= 1")
        if test.shape[1:] != pool.shape[1:] and len(test):
            raise InputError(f"test images {test.shape[1:]} differ in shape from pool images {pool.shape[1:]}")
        if not is_int(num_classes) or num_classes < 2:
            raise InputError(f"num_classes={num_classes!r} is invalid; use the number of classes M >= 2")
        y = np.asarray(test_labels).astype(np.int64)
        if y.shape != (len(test),):
            raise InputError(f"test labels have shape {y.shape}; give one label per test image ({len(test)})")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise InputError(f"test label {int(y.min() if y.min() < 0 else y.max())} is outside the class range "
                             f"0..{num_classes - 1}; renumber classes 0..M-1")
        self.cfg, self.seed, self.num_classes = config, int(seed), int(num_classes)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.image_shape = tuple(pool.shape[1:])
        # Fresh C-ordered copies: a view such as ``x[:, None]`` has strides torch may read as channels-last,
        # which picks other conv kernels (and other numbers) than the same array after a trip through Ray.
        self.pool = torch.from_numpy(np.array(pool, np.float32, order="C", copy=True))
        self.test_x = torch.from_numpy(np.array(test, np.float32, order="C", copy=True))
        self.test_y = y
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = make_al_classifier(config.classifier, self.image_shape, self.num_classes, config.width,
                                            config.dropout).to(self.device)
        self._init_state = copy.deepcopy(self.model.state_dict())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.fits = 0

    @classmethod
    def from_data(cls, data: Any, config: LearnerConfig = LearnerConfig(), seed: int = 0,
                  device: str | None = None) -> "Learner":
        """Build from a :class:`~medtune.trainables.classification_data.ClassificationData` or its config.

        The training labels are dropped: only the annotator reveals them.
        """
        from medtune.trainables.classification_data import ClassificationDataConfig, load_classification

        if isinstance(data, ClassificationDataConfig):
            data = load_classification(data)
        return cls(data.train_images, data.test_images, data.test_labels, data.num_classes, config, seed, device)

    # -- helpers -------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """``pool_size`` (N), ``num_classes`` (M), ``image_shape``, ``device``, ``fits``.

        What a proxy to a remote actor cannot read as attributes.
        """
        return {"pool_size": len(self.pool), "num_classes": self.num_classes, "image_shape": list(self.image_shape),
                "device": str(self.device), "fits": self.fits}

    def _indices(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.pool)):
            raise IndexError(f"pool indices must lie in 0..{len(self.pool) - 1}")
        return idx

    def _batches(self, x: "torch.Tensor", size: int = 512):
        for start in range(0, len(x), size):
            yield x[start : start + size].to(self.device)

    # -- training -----------------------------------------------------------------
    def fit(self, indices: np.ndarray, labels: np.ndarray, epochs: int | None = None) -> dict[str, float]:
        """Train on the labeled set (Eq. 1, cross-entropy) for ``epochs`` (default ``epochs_per_round``).

        ``fit_mode="finetune"`` continues from the current weights and optimizer
        state; ``"retrain"`` restarts both from the initial weights first.

        Args:
            indices: ``(n_l,)`` pool positions of every labeled sample so far.
            labels: ``(n_l,)`` their labels in ``0..M-1``.
            epochs: passes over the labeled set.

        Returns:
            ``{"loss": mean training loss of the last epoch, "n_labeled": n_l}``.
        """
        import torch
        import torch.nn.functional as F

        idx = self._indices(indices)
        y = np.asarray(labels).astype(np.int64).reshape(-1)
        if len(y) != len(idx) or len(idx) == 0:
            raise ValueError(f"fit needs one label per index and at least one sample; got {len(idx)} and {len(y)}")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")
        epochs = self.cfg.epochs_per_round if epochs is None else int(epochs)
        if self.cfg.fit_mode == "retrain":
            self.model.load_state_dict(self._init_state)
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr)
        x_all, y_all = self.pool[torch.from_numpy(idx)], torch.from_numpy(y)
        n = len(idx)
        n_batches = max(1, math.ceil(n / self.cfg.batch_size))   # near-equal batches: never a lone sample for BN
        last = float("nan")
        self.model.train()
        # Dropout masks come from a stream of (seed, fits): a learner restored from a checkpoint trains exactly
        # as the original would have, whatever torch's global random state is.
        with torch.random.fork_rng(devices=[] if str(self.device) == "cpu" else None):
            torch.manual_seed(_seed_stream(self.seed, _FIT_STREAM + 2 * self.fits))
            for _ in range(epochs):
                order = torch.randperm(n, generator=self.generator)
                losses = []
                for chunk in torch.tensor_split(order, n_batches):
                    xb, yb = x_all[chunk].to(self.device), y_all[chunk].to(self.device)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(self.model(xb), yb)
                    loss.backward()
                    self.optimizer.step()
                    losses.append(float(loss.detach()))
                last = float(np.mean(losses))
        self.fits += 1
        return {"loss": last, "n_labeled": n}

    # -- the state and friends --------------------------------------------------------
    def predict_proba(self, indices: np.ndarray) -> np.ndarray:
        """The DRLA state rows (Eq. 2): softmax probabilities ``(n, M)`` float64 of pool ``indices`` (eval mode)."""
        import torch

        idx = self._indices(indices)
        if idx.size == 0:
            return np.zeros((0, self.num_classes))
        self.model.eval()
        with torch.no_grad():
            x = self.pool[torch.from_numpy(idx)]
            out = [torch.softmax(self.model(xb).double(), dim=1).cpu() for xb in self._batches(x)]
        return torch.cat(out).numpy()

    def predict_proba_mc(self, indices: np.ndarray, T: int) -> np.ndarray:
        """MC-dropout probabilities ``(T, n, M)``: only the head's dropout is on (batch norm stays in eval mode).

        The dropout masks are drawn from a generator seeded by ``seed`` and the
        number of fits so far, so the call is reproducible and leaves torch's
        global random state untouched.
        """
        import torch

        idx = self._indices(indices)
        if not is_int(T) or T < 1:
            raise ValueError(f"T={T!r} must be >= 1 dropout samples")
        if idx.size == 0:
            return np.zeros((T, 0, self.num_classes))
        self.model.eval()
        self.model.dropout.train()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[] if str(self.device) == "cpu" else None):
                torch.manual_seed(_seed_stream(self.seed, _MC_STREAM + 2 * self.fits))
                x = self.pool[torch.from_numpy(idx)]
                out = []
                for _ in range(T):
                    out.append(torch.cat([torch.softmax(self.model(xb).double(), dim=1).cpu() for xb in self._batches(x)]))
        finally:
            self.model.eval()
        return torch.stack(out).numpy()

    def embed(self, indices: np.ndarray) -> np.ndarray:
        """Penultimate features ``(n, F)`` float64 (before dropout and head), for the core-set strategy."""
        import torch

        idx = self._indices(indices)
        self.model.eval()
        if idx.size == 0:
            return np.zeros((0, self.model.head.in_features))
        with torch.no_grad():
            out = [self.model.features(xb).double().cpu() for xb in self._batches(self.pool[torch.from_numpy(idx)])]
        return torch.cat(out).numpy()

    def evaluate(self) -> tuple[float, float]:
        """``(macro_f1, micro_f1)`` on the held-out test split (paper 001 section 3.1; sklearn ``f1_score``).

        Classes absent from both truth and prediction count as F1 0 in the macro mean.
        """
        import torch
        from sklearn.metrics import f1_score

        if len(self.test_x) == 0:
            return float("nan"), float("nan")
        self.model.eval()
        with torch.no_grad():
            pred = torch.cat([self.model(xb).argmax(1).cpu() for xb in self._batches(self.test_x)]).numpy()
        labels = list(range(self.num_classes))
        macro = f1_score(self.test_y, pred, labels=labels, average="macro", zero_division=0)
        micro = f1_score(self.test_y, pred, labels=labels, average="micro", zero_division=0)
        return float(macro), float(micro)

    # -- persistence ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "init": self._init_state,
                "generator": self.generator.get_state(), "fits": self.fits, "seed": self.seed,
                "config": asdict(self.cfg), "num_classes": self.num_classes, "image_shape": list(self.image_shape)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_classes"]) != self.num_classes or tuple(state["image_shape"]) != self.image_shape:
            raise ValueError(f"checkpoint is for {state['num_classes']} classes and images {tuple(state['image_shape'])}, "
                             f"this learner has {self.num_classes} and {self.image_shape}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._init_state = state["init"]
        self.generator.set_state(state["generator"])
        self.fits = int(state["fits"])
        self.seed = int(state["seed"])                  # the dropout streams continue as the original's would

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` atomically (temp file, fsync, rename)."""
        import torch

        atomic_write(Path(path), lambda f: torch.save(self.state_dict(), f))

    def load(self, path: str | os.PathLike) -> None:
        import torch

        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))




# =========================================================================== the loop


@dataclass
class ActiveLearningResult:
    """What one run produced.

    Attributes:
        method, seed: the run.
        history: one report per round (keys :data:`REPORT_KEYS`), round 0 = after pre-training.
        rewards: ``drla`` only: per round ``{"round", "reward", "critic_loss", "actor_loss"}``.
        pool_size: ``N``.
        labels_to_target: first labeled count with ``macro_f1 >= target_f1``, or None.
        seconds: wall time of this call (a resumed run counts only its own part).
        resumed_from: the round a resumed call started after, or None.
    """

    method: str
    seed: int
    history: list[dict[str, Any]]
    rewards: list[dict[str, float]]
    pool_size: int
    labels_to_target: int | None
    seconds: float
    resumed_from: int | None = None


def labels_to_target(history: list[dict[str, Any]], target_f1: float, key: str = "macro_f1") -> int | None:
    """The fewest labels at which ``history`` reached ``target_f1`` (first round with ``key >= target``), or None."""
    for row in history:
        if row[key] >= target_f1:
            return int(row["labeled"])
    return None


def scores_at_fractions(history: list[dict[str, Any]], pool_size: int,
                        fractions: tuple[float, ...] = PAPER_FRACTIONS) -> dict[float, dict[str, float]]:
    """Paper 001 Tables 1-2 for one run: ``{fraction: {"macro_f1", "micro_f1"}}`` at each reporting fraction reached.

    The loop lands exactly on ``round(f * N)`` labels; a fraction never reached is left out.
    """
    by_count = {int(row["labeled"]): row for row in history}
    out = {}
    for f, c in zip(fractions, [max(1, int(math.floor(f * pool_size + 0.5))) for f in fractions]):
        if c in by_count:
            out[f] = {"macro_f1": by_count[c]["macro_f1"], "micro_f1": by_count[c]["micro_f1"]}
    return out


class _LoopStore:
    """Per-round checkpoint files of the loop in ``state_dir``: ``loop.json``, ``learner-<r>.pt``, ``agent-<r>.pt``."""

    def __init__(self, state_dir: str | os.PathLike) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def learner_path(self, r: int) -> str:
        return str(self.dir / f"learner-{r}.pt")

    def agent_path(self, r: int) -> str:
        return str(self.dir / f"agent-{r}.pt")

    def load(self) -> dict[str, Any] | None:
        path = self.dir / "loop.json"
        return json.loads(path.read_text()) if path.exists() else None

    def commit(self, state: dict[str, Any]) -> None:
        """Write ``loop.json`` atomically, then delete the previous round's files."""
        atomic_write(self.dir / "loop.json", lambda f: f.write(json.dumps(state).encode()))
        r = state["round"]
        for old in list(self.dir.glob("learner-*.pt")) + list(self.dir.glob("agent-*.pt")):
            try:
                if int(old.stem.split("-")[1]) < r:
                    old.unlink(missing_ok=True)
            except ValueError:
                pass


def run_active_learning(
    strategy: str,
    seed: int,
    annotator: AnnotationQueue,
    learner: Any,
    config: ActiveLearningConfig = ActiveLearningConfig(),
    report: Callable[[dict[str, Any]], None] | None = None,
    *,
    state_dir: str | os.PathLike | None = None,
    initial: np.ndarray | None = None,
) -> ActiveLearningResult:
    """One active-learning run of ``strategy`` (paper 001 Algorithm 1 for ``drla``).

    Round 0 annotates the initial set (``initial``, else
    ``annotator.initial_indices(config.initial_fraction, seed)``; request id
    ``"init"``), pre-trains for ``initial_epochs`` and evaluates. Each round
    ``r >= 1`` then: state ``S = learner.predict_proba(unlabeled)``; select
    (``drla``: DDPG actor with exploration noise; otherwise
    :func:`medtune.searchers.query_strategies.select`); ``annotator.annotate(chosen,
    "round-r")``; ``learner.fit(all labeled, epochs_per_round)``; evaluate;
    for ``drla``, reward Eq. 3 on ``S``'s rows of the chosen samples, ``S'`` on
    the new pool, and ``agent.observe`` (which runs the DDPG updates);
    checkpoint; ``report(row)``. ``all`` annotates the whole pool at once
    (request ``"all"``) and trains from the initial weights for ``all_epochs``.
    The run stops at the last reporting fraction, when the budget is spent or
    when the pool is empty.

    Faults: with ``state_dir``, the loop writes the learner, the agent and its
    own state after every round (files first, then ``loop.json`` atomically)
    and reports only after that. Calling again with the same ``state_dir``
    (after an actor restart, say) reloads them and continues from the next
    round; a round whose annotation was logged but not checkpointed reuses the
    logged request (``annotator.lookup``), so nothing is annotated or counted
    twice. Reports of finished rounds are not sent again.

    Args:
        strategy: one of :data:`METHODS`.
        seed: the run's seed (initial set, random draws, DDPG agent).
        annotator: an :class:`AnnotationQueue` (plain or proxy).
        learner: a :class:`Learner` or a proxy with the same methods.
        config: :class:`ActiveLearningConfig`.
        report: called with ``{round, labeled, labeled_fraction, macro_f1, micro_f1}`` every round.
        state_dir: checkpoint folder; None disables checkpoints.
        initial: pool positions of the initial labeled set, overriding the annotator's.

    Returns:
        :class:`ActiveLearningResult`.

    Raises:
        InputError: unknown strategy; annotator and learner pools of different
            sizes; ``all`` with a budget below the pool; a checkpoint of another run.
    """
    t0 = time.perf_counter()
    if strategy not in METHODS:
        raise InputError(f"method={strategy!r} is unknown{did_you_mean(strategy, METHODS)}; use one of {', '.join(METHODS)}")
    info = learner.info()
    N, M = int(info["pool_size"]), int(info["num_classes"])
    if int(annotator.pool_size()) != N:
        raise InputError(f"the annotator's pool has {annotator.pool_size()} samples but the learner's has {N}; "
                         "give both the same training pool")
    cfg, lcfg = config, config.learner
    targets = milestone_counts(N, cfg.fractions)
    final = targets[-1]
    store = _LoopStore(state_dir) if state_dir is not None else None
    saved = store.load() if store is not None else None
    agent = DDPGAgent(M, N, dataclasses.replace(cfg.ddpg, seed=int(seed))) if strategy == "drla" else None
    rng = np.random.default_rng(_seed_stream(seed, _LOOP_STREAM))
    history: list[dict[str, Any]] = []
    rewards: list[dict[str, float]] = []
    requests: list[str] = []
    resumed_from = None

    def annotate(ids: np.ndarray, rid: str) -> np.ndarray:
        return np.asarray(annotator.annotate(np.asarray(ids, np.int64), rid), np.int64)

    def row_for(r: int, n_labeled: int) -> dict[str, Any]:
        macro, micro = learner.evaluate()
        return {"round": r, "labeled": n_labeled, "labeled_fraction": n_labeled / N,
                "macro_f1": float(macro), "micro_f1": float(micro)}

    def commit(r: int) -> None:
        if store is None:
            return
        learner.save(store.learner_path(r))
        if agent is not None:
            agent.save(store.agent_path(r))
        store.commit({"method": strategy, "seed": int(seed), "pool_size": N, "round": r, "requests": requests,
                      "history": history, "rewards": rewards, "rng": rng.bit_generator.state})

    if saved is not None:
        if saved["method"] != strategy or saved["seed"] != int(seed) or saved["pool_size"] != N:
            raise InputError(f"state_dir {state_dir} holds run {saved['method']!r} seed {saved['seed']} on {saved['pool_size']} "
                             f"samples, not {strategy!r} seed {seed} on {N}; use a fresh state_dir per run")
        r = int(saved["round"])
        learner.load(store.learner_path(r))
        if agent is not None:
            agent.load(store.agent_path(r))
        history, rewards, requests = saved["history"], saved["rewards"], list(saved["requests"])
        rng.bit_generator.state = saved["rng"]
        resumed_from = r
        parts = [annotator.lookup(rid) for rid in requests]
        if any(p is None for p in parts):
            raise InputError(f"the annotation log lacks request(s) the checkpoint in {state_dir} relies on; "
                             "resume with the run's own annotation log")
        lab_ids = np.concatenate([p[0] for p in parts]).astype(np.int64)
        lab_y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    else:
        r = 0
        if strategy == "all":
            if annotator.remaining() < N:
                raise InputError(f"method 'all' needs every label but the budget has {annotator.remaining()} of {N} left; "
                                 f"raise budget to {N}")
            lab_ids = np.arange(N, dtype=np.int64)
            requests = ["all"]
            lab_y = annotate(lab_ids, "all")
            learner.fit(lab_ids, lab_y, lcfg.all_epochs)
        else:
            prior = annotator.lookup("init")
            if prior is not None:
                lab_ids = prior[0]
            elif initial is not None:
                lab_ids = np.asarray(initial, np.int64)
            elif hasattr(annotator, "initial_indices"):
                lab_ids = np.asarray(annotator.initial_indices(cfg.initial_fraction, int(seed)), np.int64)
            else:
                raise InputError("no initial labeled set: pass initial=... or use an annotator with initial_indices()")
            requests = ["init"]
            lab_y = annotate(lab_ids, "init")
            learner.fit(lab_ids, lab_y, lcfg.initial_epochs)
        history.append(row_for(0, len(lab_ids)))
        commit(0)
        if report is not None:
            report(dict(history[-1]))

    def finished(n_labeled: int) -> bool:
        return n_labeled >= final or n_labeled >= N or annotator.remaining() <= 0

    next_state: np.ndarray | None = None
    while strategy != "all" and not finished(len(lab_ids)):
        r += 1
        rid = f"round-{r}"
        unl = np.setdiff1d(np.arange(N, dtype=np.int64), lab_ids)       # sorted: positions are deterministic
        gap = next(c for c in targets if c > len(lab_ids)) - len(lab_ids)
        n_s = math.ceil(gap / math.ceil(gap / cfg.n_s))          # the gap to the next milestone in even rounds <= n_s
        n_s = int(min(n_s, annotator.remaining(), len(unl)))
        S = next_state if next_state is not None and len(next_state) == len(unl) else None
        action = None
        if strategy in ("lc", "ms", "en", "fusion", "random", "drla") and S is None:
            S = learner.predict_proba(unl)
        if strategy == "drla":
            action = agent.act(S, explore=cfg.explore, ids=unl)
            pos = top_n(action, n_s)
        elif strategy == "bald":
            pos = select("bald", n_s, mc_probs=learner.predict_proba_mc(unl, cfg.mc_samples))
        elif strategy == "coreset":
            pos = select("coreset", n_s, emb_unlabeled=learner.embed(unl), emb_labeled=learner.embed(lab_ids))
        else:
            pos = select(strategy, n_s, probs=S, rng=rng)
        chosen = unl[pos]
        prior = annotator.lookup(rid)
        replayed_other = False
        if prior is not None:                        # logged before a crash: the log is the truth
            replayed_other = not np.array_equal(np.sort(prior[0]), np.sort(chosen))
            chosen = prior[0]
            pos = np.searchsorted(unl, chosen)
        y_new = annotate(chosen, rid)
        requests.append(rid)
        lab_ids = np.concatenate([lab_ids, chosen])
        lab_y = np.concatenate([lab_y, y_new])
        learner.fit(lab_ids, lab_y, lcfg.epochs_per_round)
        history.append(row_for(r, len(lab_ids)))
        next_state = None
        if agent is not None and not replayed_other:   # the logged picks are not this action's: no transition
            rew = reward_eq3(S[pos], y_new)                                   # Eq. 3 under the classifier that made S
            unl_next = np.setdiff1d(unl, chosen)
            next_state = learner.predict_proba(unl_next)                      # S' (Eq. 2 after the update)
            losses = agent.observe(S, action, rew, next_state, finished(len(lab_ids)))
            rewards.append({"round": r, "reward": rew, **losses})
        commit(r)
        if report is not None:
            report(dict(history[-1]))

    return ActiveLearningResult(method=strategy, seed=int(seed), history=history, rewards=rewards, pool_size=N,
                                labels_to_target=labels_to_target(history, cfg.target_f1),
                                seconds=time.perf_counter() - t0, resumed_from=resumed_from)
