"""The hand-designed query strategies on crafted probability matrices (paper 001 section 3.2, plus BALD and core-set)."""

from __future__ import annotations

import numpy as np
import pytest

from medtune.searchers.query_strategies import (bald, bald_scores, coreset_k_center, entropy_sampling, entropy_scores, fusion,
                                        fusion_candidates, least_confidence, margin_sampling, random_sampling, select,
                                        top_n)

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
