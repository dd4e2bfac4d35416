"""TypiClust: typical points of uncovered clusters, the low-budget active-learning strategy.

Hacohen, Dekel and Weinshall, "Active Learning on a Budget: Opposite Strategies
Suit High and Low Budgets", ICML 2022, section 4 (TPC_RP):

1. Cluster the embeddings of every point, labeled and unlabeled, with k-means
   into ``K = |L| + B`` clusters (``B`` the batch, here ``n_s``).
2. Repeat ``B`` times: take the cluster with the fewest labeled points (so an
   uncovered one first), the largest among equals; in it, pick the unlabeled
   point of highest typicality

       Typicality(x) = ( (1/k) sum_{x_i in kNN(x)} ||x - x_i|| )^-1,

   its ``k`` nearest neighbours taken within the cluster, ``k = min(20, size - 1)``
   (the paper uses 20); the pick then counts as labeled in its cluster.

Our choices where the paper is silent or where our setting differs:

* The embeddings are the classifier's penultimate features (the path core-set
  uses), not the paper's self-supervised SimCLR/DINO features: the study has no
  self-supervised model. Clustering runs with scikit-learn's ``KMeans``
  (``n_init=1``, seeded from the run's generator); the authors' code also
  switches to MiniBatchKMeans and caps ``K`` at 500 for speed, which the pool
  sizes here do not need, so ``K = min(|L| + B, number of distinct points)``.
* Highest typicality is the lowest mean kNN distance (the same order without
  dividing by a distance of 0); equal values go to the lower pool position. A
  cluster of one point has no neighbours: its point is taken as it is.
* A cluster with no unlabeled point left is skipped; the authors' minimum
  cluster size (5) is not applied, since ``K`` near the pool size makes small
  clusters the rule, not noise.

Why our own code, not scikit-activeml's ``TypiClust``: it expects the whole pool
with missing-label markers and its own seeding conventions; the algorithm is the
two steps above on scikit-learn's ``KMeans`` and ``NearestNeighbors``.

Edge cases: ``n_s`` above the pool returns the whole pool; an empty pool or
``n_s = 0`` returns an empty array. Deterministic given the generator.

numpy + scikit-learn: no torch, no Ray, no MLflow.
"""

from __future__ import annotations

import numpy as np

__all__ = ["K_NEIGHBOURS", "check_embeddings", "typicality", "typiclust"]

#: The paper's neighbourhood size for typicality.
K_NEIGHBOURS = 20


def typicality(points: np.ndarray, k: int = K_NEIGHBOURS) -> np.ndarray:
    """``1 / mean distance to the k nearest other points`` per row of ``points`` ``(n, d)``.

    ``k`` is capped at ``n - 1``; a single point gets ``inf`` (nothing to be far from), and so does a point
    whose ``k`` neighbours all coincide with it.
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(points, dtype=np.float64)
    k = min(int(k), len(x) - 1)
    if k < 1:
        return np.full(len(x), np.inf)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    mean = dist[:, 1:].mean(axis=1)                  # column 0 is the point itself (distance 0)
    with np.errstate(divide="ignore"):
        return np.where(mean > 0, 1.0 / np.where(mean > 0, mean, 1.0), np.inf)


def check_embeddings(emb_unlabeled, emb_labeled) -> tuple[np.ndarray, np.ndarray]:
    """``(u, lab)``: the unlabeled ``(n_u, d)`` and labeled ``(n_l, d)`` embeddings as float64 (an empty labeled
    set becomes ``(0, d)``); a wrong shape, a width mismatch or a NaN/inf value is a ``ValueError``."""
    u = np.asarray(emb_unlabeled, dtype=np.float64)
    lab = np.asarray(emb_labeled, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"emb_unlabeled has shape {u.shape}; give embeddings of shape (n_u, d)")
    if lab.size == 0:
        lab = np.zeros((0, u.shape[1]))
    if lab.ndim != 2 or lab.shape[1] != u.shape[1]:
        raise ValueError(f"emb_labeled has shape {lab.shape}; give (n_l, {u.shape[1]}) like emb_unlabeled")
    if not (np.isfinite(u).all() and np.isfinite(lab).all()):
        raise ValueError("embeddings hold NaN or infinite values")
    return u, lab


def typiclust(emb_unlabeled: np.ndarray, emb_labeled: np.ndarray, n_s: int, rng: np.random.Generator,
              k: int = K_NEIGHBOURS) -> np.ndarray:
    """TypiClust (Hacohen et al. 2022): the most typical point of each of the largest uncovered clusters.

    Args:
        emb_unlabeled: ``(n_u, d)`` embeddings of the pool.
        emb_labeled: ``(n_l, d)`` embeddings of the labeled set; ``n_l`` may be 0.
        n_s: ``B``, samples to select; more than ``n_u`` returns the whole pool.
        rng: seeds k-means.
        k: neighbours for typicality (paper: 20), capped at the cluster size minus one.

    Returns:
        ``int64`` positions into ``emb_unlabeled``, in the order picked, without repeats.
    """
    from sklearn.cluster import KMeans

    u, lab = check_embeddings(emb_unlabeled, emb_labeled)
    if isinstance(n_s, bool) or not isinstance(n_s, (int, np.integer)) or n_s < 0:
        raise ValueError(f"n_s={n_s!r} must be a whole number of samples >= 0")
    budget = min(int(n_s), len(u))
    if budget == 0:
        return np.zeros(0, np.int64)
    if budget == len(u):
        return np.arange(len(u), dtype=np.int64)
    x = np.concatenate([u, lab])
    n_distinct = len(np.unique(x, axis=0))
    n_clusters = max(1, min(len(lab) + budget, n_distinct))
    km = KMeans(n_clusters=n_clusters, n_init=1, random_state=int(rng.integers(2**31 - 1)))
    cluster = km.fit_predict(x)
    labeled = np.zeros(len(x), bool)
    labeled[len(u):] = True
    sizes = np.bincount(cluster, minlength=n_clusters)
    covered = np.bincount(cluster[labeled], minlength=n_clusters)
    typical = np.empty(len(x))
    for c in range(n_clusters):
        members = np.flatnonzero(cluster == c)
        if len(members):
            typical[members] = typicality(x[members], k)
    picked: list[int] = []
    while len(picked) < budget:
        open_clusters = np.unique(cluster[:len(u)][~labeled[:len(u)]])
        # fewest labeled first, then the largest, then the lower cluster id
        c = int(min(open_clusters, key=lambda j: (covered[j], -sizes[j], j)))
        candidates = np.flatnonzero((cluster == c) & ~labeled)
        i = int(candidates[np.argmax(typical[candidates])])   # argmax: the lower position wins ties
        picked.append(i)
        labeled[i] = True
        covered[c] += 1
    return np.asarray(picked, np.int64)
