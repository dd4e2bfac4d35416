"""The active-learning study's configuration (paper 001, DRLA): the methods, the Learner's settings and the loop's.

Paper 001 (Wang, Yan et al., "Deep Reinforcement Active Learning for Medical Image Classification", MICCAI
2020) reports macro- and micro-F1 at 26, 40, 54, 68, 82 and 100% of the training set labeled
(:data:`PAPER_FRACTIONS`). Every check runs at construction and fails with one
:class:`~medtune.errors.InputError` line. The random streams of the roles derive from one seed through
:func:`seed_stream`, so a restarted role draws the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medtune.errors import InputError, did_you_mean
from medtune.searchers.ddpg import DDPGConfig
from medtune.util import is_int, is_number

__all__ = [
    "ActiveLearningConfig", "CLASSIFIERS", "FIT_MODES", "FIT_STREAM", "INIT_STREAM", "LOOP_STREAM", "LearnerConfig",
    "MC_STREAM", "METHODS", "PAPER_FRACTIONS", "REPORT_KEYS", "milestone_counts", "seed_stream",
]

#: The methods of the study, as in MLflow's ``method`` parameter.
METHODS: tuple[str, ...] = ("random", "lc", "ms", "en", "fusion", "drla", "all", "bald", "coreset", "badge",
                            "typiclust", "stratified_random")
CLASSIFIERS: tuple[str, ...] = ("resnet", "densenet")
FIT_MODES: tuple[str, ...] = ("finetune", "retrain")
#: Paper 001 Tables 1-2: share of the training set labeled at each column.
PAPER_FRACTIONS: tuple[float, ...] = (0.26, 0.40, 0.54, 0.68, 0.82, 1.0)
#: The keys of every per-round report.
REPORT_KEYS: tuple[str, ...] = ("round", "labeled", "labeled_fraction", "macro_f1", "micro_f1")


def seed_stream(seed: int, tag: int) -> int:
    """An independent 63-bit seed for stream ``tag`` of ``seed``."""
    return int(np.random.SeedSequence([int(seed) % 2**63, tag]).generate_state(1, np.uint64)[0] >> np.uint64(1))


INIT_STREAM, LOOP_STREAM = 21, 22
FIT_STREAM, MC_STREAM = 1000, 1001   # + 2 * fits: one fresh stream per fit and per MC call


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
            raise InputError(f"classifier={self.classifier!r} is not supported"
                             f"{did_you_mean(self.classifier, CLASSIFIERS)}; use one of {', '.join(CLASSIFIERS)}")
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
