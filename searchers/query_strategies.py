"""Hand-designed active-learning query strategies: the baselines of DRLA, and two beyond it.

Paper 001 (Wang, Yan et al., "Deep Reinforcement Active Learning for Medical
Image Classification", MICCAI 2020), section 3.2 compares DRLA against:

* ``random``: ``n_s`` samples drawn uniformly from the unlabeled pool.
* ``lc``, least confidence [11]: the samples whose most probable class has the
  lowest probability; score ``1 - max_j S_ij``.
* ``ms``, margin sampling [10]: the samples with the smallest gap between the
  first and second most probable classes; score ``-(p_(1) - p_(2))``.
* ``en``, entropy [12]: the samples with the highest predictive entropy;
  score ``-sum_j S_ij log S_ij`` (``0 log 0 = 0``).
* ``fusion`` [17], as the paper defines it: take the top ``K/2`` samples of
  each of LC, MS and EN, remove the duplicates from those ``3K/2``, and draw
  ``K`` of what is left at random (``K = n_s``).

Beyond the paper (commonly used deep active-learning baselines):

* ``bald`` (Houlsby et al. 2011; Gal et al. 2017, MC dropout): the mutual
  information between the prediction and the weights,
  ``H(mean_t p_t) - mean_t H(p_t)`` over ``T`` stochastic forward passes.
* ``coreset`` (Sener & Savarese 2018): k-center greedy on embeddings; each
  pick is the unlabeled point farthest from its nearest labeled-or-picked point.
* ``badge`` (Ash et al. 2020): k-means++ seeding on last-layer gradient
  embeddings (:mod:`medtune.searchers.badge`).
* ``typiclust`` (Hacohen et al. 2022): the most typical point of each of the
  largest clusters without labels (:mod:`medtune.searchers.typiclust`).
* ``stratified_random``: random within the current model's predicted classes,
  round-robin over them, so every predicted class is sampled (the well-designed
  random baseline that the nnActive benchmark, arXiv 2511.19183, found hard to beat).

BADGE and TypiClust are written here on numpy and scikit-learn rather than
taken from scikit-activeml: its query strategies want its own classifier
wrappers (a ``SkactivemlClassifier`` fitted on the whole pool with
missing-label markers) and read embeddings through that classifier, while our
classifier runs in a Ray actor that already returns the probabilities and
penultimate features these strategies need; each is a few lines on those
arrays, tested against the papers' definitions.

Conventions shared by every function here:

* ``probs`` is the DRLA state ``S`` of Eq. 2, shape ``(n_u, M)``: one row of
  class probabilities per unlabeled sample (rows sum to 1, tolerance 1e-3).
* The return value is an ``int64`` array of positions into the pool (rows of
  ``probs``), in selection order, without repeats. Asking for ``n_s`` larger
  than the pool returns the whole pool; an empty pool returns an empty array.
* Ties are broken deterministically: equal scores go to the lower position.
  Only ``random``, ``fusion``, ``stratified_random``, ``badge`` and
  ``typiclust`` draw random numbers, and only from the
  ``numpy.random.Generator`` they are given.

Where the paper is silent, our choices (documented at each function):
``fusion`` with fewer than ``K`` distinct candidates widens the per-criterion
top lists one rank at a time until ``K`` distinct candidates exist; an odd
``K`` uses ``ceil(K/2)`` per criterion; ``coreset`` with no labeled point starts
from the point farthest from the pool's mean.

Pure numpy: no torch, no Ray, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from medtune.errors import did_you_mean
from medtune.searchers.badge import badge
from medtune.searchers.typiclust import check_embeddings, typiclust

__all__ = [
    "PROBABILITY_STRATEGIES", "STRATEGIES", "bald", "bald_scores", "check_probs", "coreset_k_center",
    "entropy_sampling", "entropy_scores", "fusion", "fusion_candidates", "lc_scores", "least_confidence",
    "margin_sampling", "margin_scores", "random_sampling", "select", "stratified_random", "top_n",
]

V = TypeVar("V")

#: Strategy names as they appear in a study's ``method`` parameter (besides ``drla`` and ``all``).
STRATEGIES: tuple[str, ...] = ("random", "lc", "ms", "en", "fusion", "bald", "coreset", "badge", "typiclust",
                               "stratified_random")
#: The strategies that read only the state ``S`` (plus a random generator).
PROBABILITY_STRATEGIES: tuple[str, ...] = ("random", "lc", "ms", "en", "fusion", "stratified_random")

_ROW_SUM_TOL = 1e-3


# --------------------------------------------------------------------------- checks and ranking


def check_probs(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    """Validate a state matrix ``S`` and return it as ``float64`` ``(n_u, M)``.

    Raises:
        ValueError: for a wrong rank, ``M < 1``, non-finite or negative entries,
            or rows that do not sum to 1 (within 1e-3).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name} has shape {p.shape}; give class probabilities of shape (n_u, M)")
    if p.shape[1] < 1:
        raise ValueError(f"{name} has M={p.shape[1]} classes; give at least one column")
    if p.size and not np.isfinite(p).all():
        raise ValueError(f"{name} holds NaN or infinite values; check the classifier's softmax output")
    if p.size and p.min() < 0:
        raise ValueError(f"{name} holds negative values (min {p.min():.3g}); give probabilities, not logits")
    if p.size:
        worst = float(np.abs(p.sum(axis=1) - 1.0).max())
        if worst > _ROW_SUM_TOL:
            raise ValueError(
                f"{name} rows must sum to 1 (worst row is off by {worst:.3g}); apply softmax to the logits")
    return p


def _check_n_s(n_s: int) -> int:
    if isinstance(n_s, bool) or not isinstance(n_s, (int, np.integer)) or n_s < 0:
        raise ValueError(f"n_s={n_s!r} must be a whole number of samples >= 0")
    return int(n_s)


def top_n(scores: np.ndarray, n_s: int) -> np.ndarray:
    """Positions of the ``n_s`` highest ``scores``, highest first; ties go to the lower position.

    Args:
        scores: ``(n_u,)`` finite scores (higher = more wanted).
        n_s: how many to take; more than ``n_u`` returns all ``n_u``.

    Returns:
        ``int64`` ``(min(n_s, n_u),)``.
    """
    n_s = _check_n_s(n_s)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size and not np.isfinite(s).all():
        raise ValueError("scores hold NaN or infinite values; every sample needs a finite score")
    order = np.argsort(-s, kind="stable")            # stable: equal scores keep position order
    return order[: min(n_s, s.size)].astype(np.int64)


# --------------------------------------------------------------------------- uncertainty scores


def lc_scores(probs: np.ndarray) -> np.ndarray:
    """Least confidence [11]: ``1 - max_j S_ij`` per row, ``(n_u,)``; higher = less confident."""
    p = check_probs(probs)
    return 1.0 - p.max(axis=1) if p.size else np.zeros(len(p))


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """Margin [10]: ``-(p_(1) - p_(2))`` per row, ``(n_u,)``; higher = smaller margin.

    With ``M = 1`` the second probability is taken as 0.
    """
    p = check_probs(probs)
    if not p.size:
        return np.zeros(len(p))
    if p.shape[1] == 1:
        return -p[:, 0]
    two = -np.partition(-p, 1, axis=1)[:, :2]        # the two largest, descending
    return -(two[:, 0] - two[:, 1])


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """Entropy [12]: ``-sum_j S_ij log S_ij`` (nats, ``0 log 0 = 0``) per row, ``(n_u,)``."""
    p = check_probs(probs)
    return _entropy(p, axis=-1)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=axis)


# --------------------------------------------------------------------------- the paper's baselines


def random_sampling(probs: np.ndarray, n_s: int, rng: np.random.Generator) -> np.ndarray:
    """RANDOM: ``n_s`` distinct positions drawn uniformly (``probs`` only gives ``n_u``).

    Args:
        probs: ``(n_u, M)`` state (only its row count is used).
        n_s: samples to select; more than ``n_u`` returns a permutation of the whole pool.
        rng: the study's generator for this run.
    """
    n_s = _check_n_s(n_s)
    n_u = len(check_probs(probs))
    return rng.permutation(n_u)[: min(n_s, n_u)].astype(np.int64)


def least_confidence(probs: np.ndarray, n_s: int) -> np.ndarray:
    """LC: the ``n_s`` samples with the highest ``1 - max_j S_ij``."""
    return top_n(lc_scores(probs), n_s)


def margin_sampling(probs: np.ndarray, n_s: int) -> np.ndarray:
    """MS: the ``n_s`` samples with the smallest top-1 minus top-2 probability."""
    return top_n(margin_scores(probs), n_s)


def entropy_sampling(probs: np.ndarray, n_s: int) -> np.ndarray:
    """EN: the ``n_s`` samples with the highest predictive entropy."""
    return top_n(entropy_scores(probs), n_s)


def fusion_candidates(probs: np.ndarray, n_s: int) -> np.ndarray:
    """FUSION's candidate set: the deduplicated union of the top ``h`` of LC, MS and EN.

    Paper 001 section 3.2: "FUSION selects top K/2 samples according to LC, MS
    and EN, respectively. After that, FUSION removes the replicate ones from
    the 3K/2 samples, and randomly selects K samples from them".

    Our choices where the paper is silent: ``h = ceil(K/2)`` for an odd ``K``;
    and since the three criteria often agree, the union can hold fewer than
    ``K`` distinct samples (down to ``ceil(K/2)``), so ``h`` grows one rank at a
    time until the union holds at least ``K`` samples (or the whole pool).

    Returns:
        Sorted ``int64`` positions, ``min(n_u, >= K)`` of them, no repeats.
    """
    n_s = _check_n_s(n_s)
    p = check_probs(probs)
    n_u = len(p)
    k = min(n_s, n_u)
    if k == 0:
        return np.zeros(0, np.int64)
    rankings = [top_n(scores, n_u) for scores in (lc_scores(p), margin_scores(p), entropy_scores(p))]
    h = math.ceil(k / 2)
    while True:
        union = np.unique(np.concatenate([r[:h] for r in rankings]))
        if len(union) >= k or h >= n_u:
            return union.astype(np.int64)
        h += 1


def fusion(probs: np.ndarray, n_s: int, rng: np.random.Generator) -> np.ndarray:
    """FUSION [17] as paper 001 defines it: ``K = n_s`` drawn at random from :func:`fusion_candidates`.

    Args:
        probs: ``(n_u, M)`` state.
        n_s: ``K``, the samples to annotate this round.
        rng: the draw of ``K`` among the candidates (candidates are sorted
            first, so the result depends only on the generator's state).

    Returns:
        ``int64`` ``(min(n_s, n_u),)`` distinct positions.
    """
    candidates = fusion_candidates(probs, n_s)
    k = min(_check_n_s(n_s), len(candidates))
    return rng.choice(candidates, size=k, replace=False).astype(np.int64)


# --------------------------------------------------------------------------- beyond the paper


def bald_scores(mc_probs: np.ndarray) -> np.ndarray:
    """BALD mutual information per sample from MC-dropout samples.

    Args:
        mc_probs: ``(T, n_u, M)``, ``T >= 1`` stochastic forward passes (each row a
            probability vector). ``T = 1`` gives all zeros (no disagreement to measure).

    Returns:
        ``(n_u,)`` ``H(mean_t p_t) - mean_t H(p_t)`` in nats, clipped at 0 against rounding.
    """
    mc = np.asarray(mc_probs, dtype=np.float64)
    if mc.ndim != 3 or mc.shape[0] < 1:
        raise ValueError(f"mc_probs has shape {mc.shape}; give T >= 1 probability samples of shape (T, n_u, M)")
    check_probs(mc.reshape(-1, mc.shape[-1]), "mc_probs")
    if mc.shape[1] == 0:
        return np.zeros(0)
    mean_entropy = _entropy(mc, axis=-1).mean(axis=0)
    entropy_of_mean = _entropy(mc.mean(axis=0), axis=-1)
    return np.maximum(entropy_of_mean - mean_entropy, 0.0)


def bald(mc_probs: np.ndarray, n_s: int) -> np.ndarray:
    """BALD: the ``n_s`` samples whose MC-dropout predictions disagree most (:func:`bald_scores`)."""
    return top_n(bald_scores(mc_probs), n_s)


def coreset_k_center(emb_unlabeled: np.ndarray, emb_labeled: np.ndarray, n_s: int) -> np.ndarray:
    """Core-set by k-center greedy (Sener & Savarese 2018) on classifier embeddings.

    Each step picks the unlabeled point whose Euclidean distance to its nearest
    center (the labeled points and the points picked so far) is largest; ties
    go to the lower position. Our choice when there is no labeled point: the
    first pick is the point farthest from the pool's mean.

    Args:
        emb_unlabeled: ``(n_u, d)`` embeddings of the pool.
        emb_labeled: ``(n_l, d)`` embeddings of the labeled set; ``n_l`` may be 0.
        n_s: samples to select; more than ``n_u`` returns the whole pool.

    Returns:
        ``int64`` positions into ``emb_unlabeled``, in the order picked.
    """
    n_s = _check_n_s(n_s)
    u, lab = check_embeddings(emb_unlabeled, emb_labeled)
    k = min(n_s, len(u))
    if k == 0:
        return np.zeros(0, np.int64)
    if len(lab):
        nearest = np.full(len(u), np.inf)
        for start in range(0, len(lab), 1024):        # chunked: n_u x n_l distances never held at once
            block = lab[start : start + 1024]
            d2 = (u**2).sum(1)[:, None] - 2 * u @ block.T + (block**2).sum(1)[None, :]
            nearest = np.minimum(nearest, np.sqrt(np.maximum(d2, 0.0)).min(axis=1))
    else:
        nearest = np.linalg.norm(u - u.mean(axis=0), axis=1)
    picked: list[int] = []
    for _ in range(k):
        i = int(np.argmax(nearest))                  # argmax returns the first maximum: lower position wins ties
        picked.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(u - u[i], axis=1))
        nearest[picked] = -np.inf                    # never pick twice (duplicates have distance 0, not -inf)
    return np.asarray(picked, np.int64)


def stratified_random(probs: np.ndarray, n_s: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified random: random within the model's predicted classes, round-robin over the classes.

    Each pool sample is put in the stratum of its predicted class ``argmax_j S_ij``
    (ties to the lower class). Each stratum is shuffled; the non-empty strata are
    put in a random order; then one sample is taken from each stratum in that
    order, round after round, until ``n_s`` are taken. So every predicted class
    gets ``floor`` or ``ceil`` of ``n_s / (number of predicted classes)``, as even
    as the strata allow.

    Edge cases: a class that no sample is predicted as (an empty stratum) takes
    no part; a stratum that runs out is skipped in later rounds (the others go
    on); ``n_s`` below the number of predicted classes samples that many classes,
    chosen at random by the class order; one predicted class is plain random
    sampling; ``n_s`` above the pool returns the whole pool; an empty pool
    returns an empty array.

    Args:
        probs: ``(n_u, M)`` state.
        n_s: samples to select.
        rng: the class order and the draws inside each class.

    Returns:
        ``int64`` ``(min(n_s, n_u),)`` distinct positions, in the order picked.
    """
    n_s = _check_n_s(n_s)
    p = check_probs(probs)
    k = min(n_s, len(p))
    if k == 0:
        return np.zeros(0, np.int64)
    predicted = p.argmax(axis=1)
    classes = np.unique(predicted)                   # the non-empty strata, sorted: the draw depends on rng only
    strata = [rng.permutation(np.flatnonzero(predicted == c)) for c in rng.permutation(classes)]
    picked: list[int] = []
    depth = 0
    while len(picked) < k:
        for stratum in strata:
            if depth < len(stratum) and len(picked) < k:
                picked.append(int(stratum[depth]))
        depth += 1
    return np.asarray(picked, np.int64)


# --------------------------------------------------------------------------- one entry point


def select(
    name: str,
    n_s: int,
    *,
    probs: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    mc_probs: np.ndarray | None = None,
    emb_unlabeled: np.ndarray | None = None,
    emb_labeled: np.ndarray | None = None,
) -> np.ndarray:
    """Run strategy ``name`` with the inputs it needs.

    Args:
        name: one of :data:`STRATEGIES`.
        n_s: samples to select.
        probs: ``(n_u, M)`` state; needed by ``random``, ``lc``, ``ms``, ``en``, ``fusion``,
            ``stratified_random`` and ``badge``.
        rng: needed by ``random``, ``fusion``, ``stratified_random``, ``badge`` and ``typiclust``.
        mc_probs: ``(T, n_u, M)``; needed by ``bald``.
        emb_unlabeled, emb_labeled: ``(n_u, d)`` and ``(n_l, d)`` penultimate features; needed by
            ``coreset`` and ``typiclust`` (``badge`` needs ``emb_unlabeled``, from the same forward
            pass as ``probs``).

    Raises:
        ValueError: for an unknown name (nearest valid name suggested) or a missing input.
    """
    def need(value: V | None, what: str) -> V:
        if value is None:
            raise ValueError(f"strategy {name!r} needs {what}")
        return value

    if name not in STRATEGIES:
        hint = did_you_mean(name, list(STRATEGIES))
        raise ValueError(f"strategy={name!r} is unknown{hint}; use one of {', '.join(STRATEGIES)}")
    if name == "bald":
        return bald(need(mc_probs, "mc_probs (T, n_u, M)"), n_s)
    if name == "coreset":
        unlabeled = need(emb_unlabeled, "emb_unlabeled (n_u, d)")
        return coreset_k_center(unlabeled, need(emb_labeled, "emb_labeled (n_l, d)"), n_s)
    if name == "typiclust":
        unlabeled = need(emb_unlabeled, "emb_unlabeled (n_u, d)")
        labeled = need(emb_labeled, "emb_labeled (n_l, d)")
        generator = need(rng, "rng (a numpy Generator)")
        return typiclust(unlabeled, labeled, _check_n_s(n_s), generator)
    p = need(probs, "probs (n_u, M)")
    if name == "badge":
        unlabeled = need(emb_unlabeled, "emb_unlabeled (n_u, d)")
        generator = need(rng, "rng (a numpy Generator)")
        return badge(check_probs(p), unlabeled, _check_n_s(n_s), generator)
    if name in ("random", "fusion", "stratified_random"):
        generator = need(rng, "rng (a numpy Generator)")
        fn: Callable[..., np.ndarray] = {"random": random_sampling, "fusion": fusion,
                                         "stratified_random": stratified_random}[name]
        return fn(p, n_s, generator)
    return {"lc": least_confidence, "ms": margin_sampling, "en": entropy_sampling}[name](p, n_s)
