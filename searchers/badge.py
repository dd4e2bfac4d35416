"""BADGE: batch active learning by diverse, uncertain gradient lower bounds.

Ash, Zhang, Krishnamurthy, Langford and Agarwal, "Deep Batch Active Learning by
Diverse, Uncertain Gradient Lower Bounds", ICLR 2020, Algorithm 1:

1. For every unlabeled ``x``, with ``p = softmax(W h(x) + b)`` the classifier's
   class probabilities (``M`` classes) and ``h(x)`` its penultimate features
   (``d`` of them), take the hypothetical label ``y_hat = argmax p`` and the
   gradient of the cross-entropy ``l(x, y_hat)`` with respect to the last
   layer's weights ``W`` (``M x d``):

       g_x = (p - onehot(y_hat)) (outer) h(x),   flattened to ``M * d``.

   Its norm is small where the model is confident (``p`` near the one-hot), so
   the norm measures uncertainty and the direction measures what the sample
   would teach the last layer.
2. Pick the batch by k-means++ seeding on ``{g_x}``: the first point is the one
   with the largest gradient norm (as the authors' code does), every next point
   is drawn with probability proportional to ``D(x)^2``, its squared distance to
   the nearest point picked so far. Far-apart, high-norm gradients are favoured;
   near-duplicates of a pick and confident points (``g = 0``) rarely win.

Why our own code, not scikit-activeml's ``Badge``: that class type-checks its
classifier as a ``SkactivemlClassifier`` fitted on the whole pool with
missing-label markers, and reads the embeddings from the classifier's own
``predict_proba``; our classifier lives in a Ray actor that already returns the
probabilities and the penultimate features, so BADGE is the two steps above on
those arrays (numpy only). The bias of the last layer is left out of ``g``, as
in the paper (its gradient ``p - onehot`` would add ``M`` dimensions).

Edge cases: ``n_s`` above the pool returns the whole pool; an empty pool or
``n_s = 0`` returns an empty array; when every remaining point has ``D^2 = 0``
(all confident, or duplicates of picks) the rest of the batch is filled in
pool order (lowest positions first), so the batch is always ``min(n_s, n_u)``
distinct positions. Deterministic given the ``numpy.random.Generator``.

Pure numpy: no torch, no Ray, no MLflow.
"""

from __future__ import annotations

import numpy as np

__all__ = ["badge", "gradient_embedding", "kmeans_pp_seeding"]


def gradient_embedding(probs: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The last-layer gradient embedding ``g = (p - onehot(argmax p)) (outer) h``, per sample.

    Args:
        probs: ``(n, M)`` class probabilities (rows sum to 1).
        features: ``(n, d)`` penultimate features, the input of the last linear layer.

    Returns:
        ``(n, M * d)`` float64; row ``i`` is ``outer(p_i - e_{y_hat_i}, h_i).ravel()`` (class-major).
        Ties in ``argmax p`` go to the lower class.
    """
    p = np.asarray(probs, dtype=np.float64)
    h = np.asarray(features, dtype=np.float64)
    if p.ndim != 2 or h.ndim != 2 or len(p) != len(h):
        raise ValueError(f"probs {p.shape} and features {h.shape} must be (n, M) and (n, d) with the same n")
    if h.size and not np.isfinite(h).all():
        raise ValueError("features hold NaN or infinite values")
    residual = p.copy()
    residual[np.arange(len(p)), p.argmax(axis=1) if p.size else np.zeros(0, np.int64)] -= 1.0
    return (residual[:, :, None] * h[:, None, :]).reshape(len(p), p.shape[1] * h.shape[1])


def kmeans_pp_seeding(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) as BADGE uses it: first the largest norm, then ``D^2`` draws.

    Args:
        points: ``(n, D)`` embeddings.
        k: points to pick; capped at ``n``.
        rng: the ``D^2`` draws.

    Returns:
        ``int64`` ``(min(k, n),)`` distinct positions, in the order picked.
    """
    x = np.asarray(points, dtype=np.float64)
    k = min(int(k), len(x))
    if k <= 0:
        return np.zeros(0, np.int64)
    first = int(np.argmax((x**2).sum(axis=1)))      # argmax: the lower position wins ties
    picked = [first]
    d2 = ((x - x[first]) ** 2).sum(axis=1)
    d2[first] = 0.0
    taken = np.zeros(len(x), bool)
    taken[first] = True
    while len(picked) < k:
        total = d2.sum()
        if total <= 0:                               # everything left coincides with a pick: fill in pool order
            picked.extend(np.flatnonzero(~taken)[: k - len(picked)].tolist())
            break
        i = int(rng.choice(len(x), p=d2 / total))
        picked.append(i)
        taken[i] = True
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(axis=1))
        d2[taken] = 0.0                              # a pick is never drawn again
    return np.asarray(picked, np.int64)


def badge(probs: np.ndarray, features: np.ndarray, n_s: int, rng: np.random.Generator) -> np.ndarray:
    """BADGE (Ash et al. 2020): k-means++ seeding on the last-layer gradient embeddings of the pool.

    Args:
        probs: ``(n_u, M)`` class probabilities of the unlabeled pool.
        features: ``(n_u, d)`` their penultimate features (the same forward pass as ``probs``).
        n_s: samples to select; more than ``n_u`` returns the whole pool.
        rng: the study's generator for this run.

    Returns:
        ``int64`` positions into the pool, in the order picked, without repeats.
    """
    return kmeans_pp_seeding(gradient_embedding(probs, features), n_s, rng)
