"""The hand-designed query strategies on crafted probability matrices (paper 001 section 3.2, plus BALD and
core-set)."""

from __future__ import annotations

import numpy as np
import pytest

from medtune.searchers.query_strategies import (
    bald,
    bald_scores,
    coreset_k_center,
    entropy_sampling,
    entropy_scores,
    fusion,
    fusion_candidates,
    least_confidence,
    margin_sampling,
    random_sampling,
    select,
    top_n,
)

# Rows crafted so the three criteria disagree:
#   row 0: confident                       LC 0.10  MS -0.85 EN low
#   row 1: two-way tie (0.5/0.5/0)         LC 0.50  MS  0.00 (smallest margin)   EN ln 2
#   row 2: flat over 3 classes             LC 0.667 (least confident)  MS 0     EN ln 3 (highest)
#   row 3: 0.45/0.44/0.11                  LC 0.55  MS -0.01  EN mid
#   row 4: 0.6/0.2/0.2                     LC 0.40  MS -0.40  EN mid
P = np.array([
    [0.90, 0.05, 0.05],
    [0.50, 0.50, 0.00],
    [1 / 3, 1 / 3, 1 / 3],
    [0.45, 0.44, 0.11],
    [0.60, 0.20, 0.20],
])


def test_least_confidence_picks_the_lowest_top_probability():
    assert least_confidence(P, 2).tolist() == [2, 3]      # 1 - 1/3 = 0.667, then 1 - 0.45 = 0.55


def test_margin_picks_the_smallest_gap_between_the_two_best_classes():
    # rows 1 and 2 both have margin 0: the tie goes to the lower position; then row 3 (0.01)
    assert margin_sampling(P, 3).tolist() == [1, 2, 3]


def test_entropy_picks_the_flattest_rows():
    e = entropy_scores(P)
    assert e[2] == pytest.approx(np.log(3)) and e[1] == pytest.approx(np.log(2))   # 0 log 0 = 0, no NaN
    assert entropy_sampling(P, 2).tolist() == [2, 3]      # H(row 3) = 0.98 > ln 2 = 0.69
    assert entropy_sampling(P, 3).tolist() == [2, 3, 4]


def test_ties_are_broken_by_position_and_repeatable():
    same = np.tile([[0.5, 0.5]], (4, 1))
    assert least_confidence(same, 2).tolist() == [0, 1]
    assert top_n(np.array([1.0, 3.0, 3.0, 2.0]), 3).tolist() == [1, 2, 3]


def test_n_s_above_the_pool_returns_the_whole_pool_and_empty_pools_work():
    assert sorted(least_confidence(P, 50).tolist()) == [0, 1, 2, 3, 4]
    assert sorted(random_sampling(P, 50, np.random.default_rng(0)).tolist()) == [0, 1, 2, 3, 4]
    assert sorted(fusion(P, 50, np.random.default_rng(0)).tolist()) == [0, 1, 2, 3, 4]
    assert least_confidence(np.zeros((0, 3)), 4).tolist() == []
    assert least_confidence(P, 0).tolist() == []


def test_random_is_seeded_and_distinct():
    a = random_sampling(np.full((100, 2), 0.5), 30, np.random.default_rng(7))
    b = random_sampling(np.full((100, 2), 0.5), 30, np.random.default_rng(7))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 30


def test_bad_probabilities_are_rejected():
    with pytest.raises(ValueError, match="sum to 1"):
        least_confidence(np.array([[0.7, 0.7]]), 1)
    with pytest.raises(ValueError, match="NaN"):
        entropy_sampling(np.array([[np.nan, 1.0]]), 1)
    with pytest.raises(ValueError, match="shape"):
        margin_sampling(np.array([0.5, 0.5]), 1)
    with pytest.raises(ValueError, match="n_s"):
        least_confidence(P, -1)


def test_fusion_takes_top_half_of_each_criterion_and_deduplicates():
    # K = 4, K/2 = 2: LC top-2 {2, 3}, MS top-2 {1, 2}, EN top-2 {2, 3} -> 6 picks, 3 distinct: {1, 2, 3}.
    # Fewer than K distinct, so (our rule) each list widens one rank: LC {2,3,1}, MS {1,2,3}, EN {2,3,4} -> {1,2,3,4}.
    assert fusion_candidates(P, 4).tolist() == [1, 2, 3, 4]
    # K = 2, K/2 = 1: LC {2}, MS {1}, EN {2} -> {1, 2}: exactly K, no widening, the duplicate 2 counted once
    assert fusion_candidates(P, 2).tolist() == [1, 2]
    for seed in range(5):
        got = fusion(P, 2, np.random.default_rng(seed))
        assert sorted(got.tolist()) == [1, 2]                 # all candidates are taken when |candidates| == K


def test_fusion_draws_k_at_random_from_a_larger_candidate_set():
    # K = 2, K/2 = 1, and each criterion has a different favourite:
    probs = np.array([
        [0.97, 0.01, 0.01, 0.01],   # 0: confident
        [0.38, 0.31, 0.31, 0.00],   # 1: LC's pick (1 - 0.38 = 0.62 is the largest)
        [0.49, 0.48, 0.03, 0.00],   # 2: MS's pick (margin 0.01)
        [0.40, 0.20, 0.20, 0.20],   # 3: EN's pick (1.33 nats)
        [0.97, 0.01, 0.01, 0.01],   # 4: confident
    ])
    assert (least_confidence(probs, 1)[0], margin_sampling(probs, 1)[0], entropy_sampling(probs, 1)[0]) == (1, 2, 3)
    assert fusion_candidates(probs, 2).tolist() == [1, 2, 3]   # 3K/2 = 3 distinct: more than K, no widening
    draws = [tuple(sorted(fusion(probs, 2, np.random.default_rng(s)).tolist())) for s in range(30)]
    assert all(len(d) == 2 and set(d) <= {1, 2, 3} for d in draws)
    assert len(set(draws)) == 3                               # K drawn at random among the candidates
    assert fusion(probs, 2, np.random.default_rng(5)).tolist() == fusion(probs, 2, np.random.default_rng(5)).tolist()


def test_bald_prefers_samples_whose_dropout_predictions_disagree():
    # sample 0: every pass says 50/50 (aleatoric, MI 0); sample 1: passes flip between confident classes (MI high);
    # sample 2: passes agree and are confident (MI 0)
    mc = np.array([
        [[0.5, 0.5], [0.99, 0.01], [0.98, 0.02]],
        [[0.5, 0.5], [0.05, 0.95], [0.98, 0.02]],
        [[0.5, 0.5], [0.99, 0.01], [0.98, 0.02]],
        [[0.5, 0.5], [0.05, 0.95], [0.98, 0.02]],
    ])
    s = bald_scores(mc)
    assert s[0] == pytest.approx(0.0, abs=1e-12) and s[2] == pytest.approx(0.0, abs=1e-12)
    assert s[1] == pytest.approx(0.565, abs=2e-3)             # H(.52, .48) - (H(.99, .01) + H(.05, .95)) / 2
    assert bald(mc, 1).tolist() == [1]
    assert entropy_sampling(mc.mean(0), 1).tolist() == [0]    # entropy of the mean alone prefers the 50/50 one
    with pytest.raises(ValueError, match="T >= 1"):
        bald_scores(mc[0])


def test_coreset_k_center_greedy_on_toy_points():
    labeled = np.array([[0.0, 0.0]])
    pool = np.array([[1.0, 0.0], [10.0, 0.0], [10.0, 1.0], [5.0, 0.0], [0.0, 6.0]])
    # farthest from (0,0): (10,1) at 10.05; then distances to {(0,0),(10,1)}: (0,6) 6.0 wins over (5,0) 5.0
    assert coreset_k_center(pool, labeled, 2).tolist() == [2, 4]
    assert coreset_k_center(pool, labeled, 3).tolist() == [2, 4, 3]
    # no labeled point: start from the point farthest from the pool's mean (5.2, 1.4): (0,6) at 6.94
    assert coreset_k_center(pool, np.zeros((0, 2)), 1).tolist() == [4]
    assert sorted(coreset_k_center(pool, labeled, 10).tolist()) == [0, 1, 2, 3, 4]


def test_coreset_never_picks_a_duplicate_twice():
    pool = np.array([[3.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    got = coreset_k_center(pool, np.array([[0.0, 0.0]]), 3)
    assert got.tolist() == [0, 2, 1]                          # the twin of a picked point has distance 0, comes last


def test_select_dispatches_and_names_missing_inputs():
    assert select("lc", 2, probs=P).tolist() == [2, 3]
    assert select("ms", 1, probs=P).tolist() == [1]
    with pytest.raises(ValueError, match="did you mean 'fusion'"):
        select("fuson", 1, probs=P)
    with pytest.raises(ValueError, match="needs rng"):
        select("random", 1, probs=P)
    with pytest.raises(ValueError, match="needs mc_probs"):
        select("bald", 1, probs=P)


# =========================================================================== BADGE, TypiClust, stratified random


def test_badge_gradient_embedding_is_the_last_layer_cross_entropy_gradient():
    import torch

    from medtune.searchers.badge import gradient_embedding

    torch.manual_seed(0)
    head = torch.nn.Linear(4, 3)
    h = torch.randn(5, 4, dtype=torch.float64)
    head = head.double()
    logits = head(h)
    p = torch.softmax(logits, 1)
    g = gradient_embedding(p.detach().numpy(), h.numpy())
    assert g.shape == (5, 3 * 4)
    for i in range(5):                                   # autograd of CE at the predicted label, weights only
        head.zero_grad()
        torch.nn.functional.cross_entropy(head(h[i : i + 1]), p[i : i + 1].argmax(1)).backward()
        np.testing.assert_allclose(g[i], head.weight.grad.numpy().ravel(), atol=1e-12)
    assert not gradient_embedding(np.array([[0.0, 1.0, 0.0]]), np.array([[5.0, 5.0]])).any()   # confident: g = 0


def _badge_case():
    # Rows: 0 uncertain, big features; 1 a near-duplicate of 0; 2 as uncertain, pointing the other way;
    # 3 confident (one-hot probabilities): zero gradient whatever its features.
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    feats = np.array([[10.0, 0.0], [10.0 - 1e-3, 0.0], [-10.0, 0.0], [50.0, 50.0]])
    return probs, feats


def test_badge_first_pick_is_the_largest_gradient_never_the_confident_point():
    from medtune.searchers.badge import badge

    probs, feats = _badge_case()
    feats = feats.copy()
    feats[2, 0] = -11.0                                  # a unique largest norm
    for seed in range(5):
        assert badge(probs, feats, 1, np.random.default_rng(seed)).tolist() == [2]


def test_badge_picks_far_apart_points_not_near_duplicates():
    from medtune.searchers.badge import badge

    probs, feats = _badge_case()
    firsts, seconds = set(), []
    for seed in range(200):
        got = badge(probs, feats, 2, np.random.default_rng(seed)).tolist()
        firsts.add(got[0])
        seconds.append(got[1])
        assert set(got) != {0, 1}                        # the twin has D^2 ~ 1e-6 against ~400 and ~100
    assert firsts == {0}                                 # norms 0 and 2 tie: the lower position
    # D^2 from row 0: row 2 at 20^2 = 400 (x 0.5^2 x 2 gradients), the confident row 3 at 10^2: 4:1 odds
    assert seconds.count(2) > 2 * seconds.count(3) > 0
    assert sorted(badge(probs, feats, 9, np.random.default_rng(0)).tolist()) == [0, 1, 2, 3]
    assert badge(probs[:0], feats[:0], 3, np.random.default_rng(0)).tolist() == []


def test_badge_fills_in_pool_order_when_every_gradient_is_zero():
    from medtune.searchers.badge import badge

    confident = np.tile([[0.0, 1.0]], (4, 1))
    assert badge(confident, np.ones((4, 3)), 3, np.random.default_rng(0)).tolist() == [0, 1, 2]


def _blobs():
    """Three blobs far apart, sizes 12, 8, 5: a centre, 4 points at radius 1, the rest at radius 3.

    With k = 4 the centre is the densest point of its blob (mean kNN distance 1; a radius-1 point has 1.46).
    """
    parts, centres = [], []
    for x0, size in ((0.0, 12), (100.0, 8), (200.0, 5)):
        angles = [np.pi / 2 * j for j in range(4)]
        outer = [2 * np.pi * j / (size - 5) + 0.3 for j in range(size - 5)]
        pts = [[0.0, 0.0]] + [[np.cos(a), np.sin(a)] for a in angles] + [[3 * np.cos(a), 3 * np.sin(a)] for a in outer]
        centres.append(sum(len(q) for q in parts))
        parts.append(np.asarray(pts) + [x0, 0.0])
    return np.concatenate(parts), centres


def test_typiclust_picks_one_typical_point_per_cluster_largest_first():
    from medtune.searchers.typiclust import typicality, typiclust

    pool, centres = _blobs()
    got = typiclust(pool, np.zeros((0, 2)), 3, np.random.default_rng(0), k=4)
    # K = 0 + 3 clusters = the blobs; the largest uncovered first; in each the most typical point
    blob = np.repeat([0, 1, 2], [12, 8, 5])
    assert blob[got].tolist() == [0, 1, 2]
    for i, b in zip(got, range(3)):
        members = np.flatnonzero(blob == b)
        assert i == members[np.argmax(typicality(pool[members], 4))]
    assert got.tolist() == centres                       # each blob's centre: its densest point


def test_typiclust_skips_covered_clusters_and_handles_edges():
    from medtune.searchers.typiclust import typiclust

    pool, _ = _blobs()
    blob = np.repeat([0, 1, 2], [12, 8, 5])
    labeled = np.array([[0.5, 0.5]])                     # blob 0 is covered: K = 1 + 2 = 3 clusters
    got = typiclust(pool, labeled, 2, np.random.default_rng(1), k=4)
    assert blob[got].tolist() == [1, 2]
    assert sorted(typiclust(pool, labeled, 99, np.random.default_rng(0)).tolist()) == list(range(len(pool)))
    assert typiclust(pool, labeled, 0, np.random.default_rng(0)).tolist() == []
    twins = np.zeros((4, 2))                             # one distinct point: one cluster, still 2 distinct picks
    assert sorted(typiclust(twins, np.zeros((0, 2)), 2, np.random.default_rng(0)).tolist()) == [0, 1]
    again = typiclust(pool, labeled, 2, np.random.default_rng(1), k=4)
    assert again.tolist() == got.tolist()                # the same generator state, the same batch


def test_stratified_random_covers_every_predicted_class_evenly():
    from medtune.searchers.query_strategies import stratified_random

    # predicted classes: 0 x 10, 1 x 3, 2 x 0 (empty), 3 x 7
    pred = np.r_[np.zeros(10, int), np.ones(3, int), np.full(7, 3)]
    probs = np.full((20, 4), 0.1)
    probs[np.arange(20), pred] = 0.7
    for seed in range(5):
        got = stratified_random(probs, 6, np.random.default_rng(seed))
        assert len(set(got.tolist())) == 6
        assert np.bincount(pred[got], minlength=4).tolist() == [2, 2, 0, 2]
    got = stratified_random(probs, 12, np.random.default_rng(0))     # class 1 runs out after 3: the others go on
    assert np.bincount(pred[got], minlength=4).tolist() == [5, 3, 0, 4] or \
        np.bincount(pred[got], minlength=4).tolist() == [4, 3, 0, 5]
    few = stratified_random(probs, 2, np.random.default_rng(0))      # fewer picks than classes: 2 distinct classes
    assert len(set(pred[few].tolist())) == 2
    assert sorted(stratified_random(probs, 50, np.random.default_rng(0)).tolist()) == list(range(20))
    one_class = np.tile([[0.9, 0.1]], (6, 1))                        # one class: plain random, seeded
    a = stratified_random(one_class, 3, np.random.default_rng(3))
    assert a.tolist() == stratified_random(one_class, 3, np.random.default_rng(3)).tolist() and len(set(a)) == 3
    assert stratified_random(np.zeros((0, 2)), 3, np.random.default_rng(0)).tolist() == []


def test_new_strategies_dispatch_and_wrong_case_suggests_the_name():
    from medtune.errors import InputError
    from medtune.trainables.active_learning import run_active_learning
    from medtune.trainables.al_config import METHODS

    probs, feats = _badge_case()
    rng = np.random.default_rng(0)
    assert select("badge", 1, probs=probs, emb_unlabeled=feats, rng=rng).tolist() == [0]
    assert len(select("stratified_random", 2, probs=probs, rng=rng)) == 2
    assert len(select("typiclust", 2, emb_unlabeled=feats, emb_labeled=feats[:1], rng=rng)) == 2
    with pytest.raises(ValueError, match="needs emb_unlabeled"):
        select("badge", 1, probs=probs, rng=rng)
    with pytest.raises(ValueError, match="did you mean 'badge'"):
        select("BADGE", 1, probs=probs)
    with pytest.raises(InputError, match="did you mean 'typiclust'"):
        run_active_learning("TypiClust", 0, None, None)
    assert {"badge", "typiclust", "stratified_random"} <= set(METHODS)
