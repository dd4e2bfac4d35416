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
  / ``embed`` (core-set, TypiClust, BADGE) / ``evaluate`` / ``save`` / ``load``.
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

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medtune.errors import InputError, did_you_mean
from medtune.searchers.ddpg import DDPGAgent, reward_eq3
from medtune.searchers.query_strategies import select, top_n
from medtune.trainables.al_annotator import AnnotationQueue
from medtune.trainables.al_config import (
    LOOP_STREAM,
    METHODS,
    PAPER_FRACTIONS,
    ActiveLearningConfig,
    milestone_counts,
    seed_stream,
)
from medtune.util import atomic_write

__all__ = ["ActiveLearningResult", "labels_to_target", "run_active_learning", "scores_at_fractions"]


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
        raise InputError(f"method={strategy!r} is unknown{did_you_mean(strategy, METHODS)}; "
                         f"use one of {', '.join(METHODS)}")
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
    rng = np.random.default_rng(seed_stream(seed, LOOP_STREAM))
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

    if saved is not None and store is not None:
        if saved["method"] != strategy or saved["seed"] != int(seed) or saved["pool_size"] != N:
            raise InputError(f"state_dir {state_dir} holds run {saved['method']!r} seed {saved['seed']} "
                             f"on {saved['pool_size']} samples, not {strategy!r} seed {seed} on {N}; "
                             "use a fresh state_dir per run")
        r = int(saved["round"])
        learner.load(store.learner_path(r))
        if agent is not None:
            agent.load(store.agent_path(r))
        history, rewards, requests = saved["history"], saved["rewards"], list(saved["requests"])
        rng.bit_generator.state = saved["rng"]
        resumed_from = r
        looked_up = [annotator.lookup(rid) for rid in requests]
        parts = [p for p in looked_up if p is not None]
        if len(parts) != len(looked_up):
            raise InputError(f"the annotation log lacks request(s) the checkpoint in {state_dir} relies on; "
                             "resume with the run's own annotation log")
        lab_ids = np.concatenate([p[0] for p in parts]).astype(np.int64)
        lab_y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    else:
        r = 0
        if strategy == "all":
            if annotator.remaining() < N:
                raise InputError(f"method 'all' needs every label but the budget has {annotator.remaining()} of {N} "
                                 f"left; raise budget to {N}")
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
        if strategy in ("lc", "ms", "en", "fusion", "random", "drla", "stratified_random", "badge") and S is None:
            S = learner.predict_proba(unl)
        if strategy == "drla":
            assert agent is not None and S is not None  # made above for drla
            action = agent.act(S, explore=cfg.explore, ids=unl)
            pos = top_n(action, n_s)
        elif strategy == "bald":
            pos = select("bald", n_s, mc_probs=learner.predict_proba_mc(unl, cfg.mc_samples))
        elif strategy == "coreset":
            pos = select("coreset", n_s, emb_unlabeled=learner.embed(unl), emb_labeled=learner.embed(lab_ids))
        elif strategy == "typiclust":
            pos = select("typiclust", n_s, emb_unlabeled=learner.embed(unl), emb_labeled=learner.embed(lab_ids),
                         rng=rng)
        elif strategy == "badge":      # g = (p - onehot) x h from the state and the features of the same eval pass
            pos = select("badge", n_s, probs=S, emb_unlabeled=learner.embed(unl), rng=rng)
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
        # the logged picks are not this action's: no transition (S and action: set for drla, the agent's method)
        if agent is not None and not replayed_other and S is not None and action is not None:
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
