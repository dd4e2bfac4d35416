"""APGA's policy update on hand-computed values (paper 002, Eq. 6-7, Algorithm 1)."""

from __future__ import annotations

import math

import pytest
import torch

from medtune.searchers.apga import (
    APGAConfig,
    RewardBaseline,
    adversarial_keep,
    aiding_keep,
    apply_mask,
    keep_fraction,
    policy_loss,
    reward,
)


def test_reward_is_the_loss_gained_by_erasing():
    assert reward(1.5, 0.4) == pytest.approx(1.1)  # erasing important pixels raised the loss: positive
    assert reward(0.3, 0.4) == pytest.approx(-0.1)  # erasing made it easier: negative


def test_baseline_is_an_exponential_average_with_decay_one_half():
    b = RewardBaseline(decay=0.5)
    assert b.advantage(1.0) == 0.0 and b.value == 1.0  # starts at the first reward
    assert b.advantage(3.0) == pytest.approx(2.0)  # 3 - 1
    assert b.value == pytest.approx(2.0)  # 0.5 * 1 + 0.5 * 3
    assert b.advantage(0.0) == pytest.approx(-2.0)
    assert b.value == pytest.approx(1.0)


def test_masks_split_at_the_threshold_and_apply_over_channels():
    p = torch.tensor([[[[0.2, 0.5], [0.51, 0.9]]]])
    assert adversarial_keep(p).tolist() == [[[[1.0, 1.0], [0.0, 0.0]]]]  # erase p > 0.5
    assert aiding_keep(p).tolist() == [[[[0.0, 0.0], [1.0, 1.0]]]]  # keep p > 0.5
    x = torch.ones(1, 3, 2, 2) * 2
    out = apply_mask(x, aiding_keep(p))
    assert out.shape == (1, 3, 2, 2) and out[0, :, 0, 0].tolist() == [0.0] * 3 and out[0, :, 1, 1].tolist() == [2.0] * 3
    assert keep_fraction(aiding_keep(p)) == 0.5


def test_policy_loss_value_by_hand():
    p = torch.tensor([[[[0.8, 0.4]]]])
    # actions 1, 0; BCE = -(log 0.8 + log 0.6) / 2; zeros term: -(log 0.2 + log 0.6) / 2
    bce = -(math.log(0.8) + math.log(0.6)) / 2
    zeros = -(math.log(0.2) + math.log(0.6)) / 2
    assert float(policy_loss(p, advantage=2.0, lambda_zeros=0.1)) == pytest.approx(bce * 2.0 + 0.1 * zeros, rel=1e-5)


def _step(logits: torch.Tensor, advantage: float, lambda_zeros: float) -> torch.Tensor:
    logits = logits.clone().requires_grad_(True)
    policy_loss(torch.sigmoid(logits), advantage, lambda_zeros).backward()
    return logits.detach() - 1.0 * logits.grad


def test_a_positive_advantage_reinforces_the_action_taken():
    logits = torch.tensor([[[[1.0, -1.0]]]])  # p = 0.73 (marked important), 0.27 (not)
    new = _step(logits, advantage=1.0, lambda_zeros=0.0)
    assert new[0, 0, 0, 0] > logits[0, 0, 0, 0] and new[0, 0, 0, 1] < logits[0, 0, 0, 1]  # both more decided


def test_a_negative_advantage_discourages_it():
    logits = torch.tensor([[[[1.0, -1.0]]]])
    new = _step(logits, advantage=-1.0, lambda_zeros=0.0)
    assert new[0, 0, 0, 0] < logits[0, 0, 0, 0] and new[0, 0, 0, 1] > logits[0, 0, 0, 1]


def test_the_zeros_term_pulls_every_pixel_towards_unimportant():
    logits = torch.tensor([[[[1.0, -1.0]]]])
    new = _step(logits, advantage=0.0, lambda_zeros=0.1)
    assert (new < logits).all()


@pytest.mark.parametrize("kw, field",
                         [({"lambda_zeros": -0.1}, "lambda_zeros"), ({"baseline_decay": 1.0}, "baseline_decay"),
                                       ({"threshold": 1.0}, "threshold")])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        APGAConfig(**kw)
