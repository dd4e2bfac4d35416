"""DRLA's DDPG selector: Eq. 3, Eq. 6-7 updates, autocorrelated noise, pools of changing size (paper 001)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtune.searchers.ddpg import (
    Actor,
    Critic,
    DDPGAgent,
    DDPGConfig,
    OUNoise,
    ReplayBuffer,
    Transition,
    _pad,
    _pad_actions,
    reward_eq3,
    soft_update,
)

torch.set_num_threads(1)


def _pool(n: int, M: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(M, 0.5), size=n).astype(np.float32)


# --------------------------------------------------------------------------- Eq. 3


def test_reward_eq3_by_hand():
    probs = np.array([
        [0.7, 0.2, 0.1],   # predicted 0, true 0: 0.7 - 0.7 = 0
        [0.6, 0.3, 0.1],   # predicted 0, true 1: 0.6 - 0.3 = 0.3
        [0.2, 0.5, 0.3],   # predicted 1, true 2: 0.5 - 0.3 = 0.2
    ])
    assert reward_eq3(probs, np.array([0, 1, 2])) == pytest.approx((0 + 0.3 + 0.2) / 3)
    assert reward_eq3(probs[:1], np.array([0])) == 0.0                 # all correct: no reward
    assert reward_eq3(np.array([[0.99, 0.01]]), np.array([1])) == pytest.approx(0.98)   # confident mistake
    assert reward_eq3(np.zeros((0, 3)), np.zeros(0, np.int64)) == 0.0
    with pytest.raises(ValueError, match="0..2"):
        reward_eq3(probs, np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="must be"):
        reward_eq3(probs, np.array([0, 1]))


# --------------------------------------------------------------------------- Eq. 7


def test_soft_update_blends_with_tau_and_copies_integer_buffers():
    torch.manual_seed(0)
    target, source = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)), \
        torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        target[0].weight.fill_(1.0), source[0].weight.fill_(3.0)
        target[0].bias.fill_(-2.0), source[0].bias.fill_(2.0)
        source[1].running_mean.fill_(1.0)
        source[1].num_batches_tracked.fill_(7)
    soft_update(target, source, tau=0.1)
    assert torch.allclose(target[0].weight, torch.full((2, 3), 0.1 * 3.0 + 0.9 * 1.0))
    assert torch.allclose(target[0].bias, torch.full((2,), 0.1 * 2.0 + 0.9 * -2.0))
    assert torch.allclose(target[1].running_mean, torch.full((2,), 0.1))
    assert int(target[1].num_batches_tracked) == 7
    assert torch.allclose(source[0].weight, torch.full((2, 3), 3.0))    # the source is untouched
    soft_update(target, source, tau=1.0)
    assert torch.allclose(target[0].weight, source[0].weight)


def test_agent_targets_move_by_tau_per_update():
    agent = DDPGAgent(4, 50, DDPGConfig(tau=0.005, seed=1))
    agent.observe(_pool(20), np.full(20, 0.5), 0.3, _pool(15, seed=1), False)   # runs updates_per_step updates
    before_t = [p.detach().clone() for p in agent.critic_target.parameters()]
    batch = list(agent.buffer.items)
    agent.update(batch)
    for t_old, t_new, s in zip(before_t, agent.critic_target.parameters(), agent.critic.parameters()):
        assert torch.allclose(t_new, 0.995 * t_old + 0.005 * s.detach(), atol=1e-6)


# --------------------------------------------------------------------------- Eq. 6


def test_updates_lower_the_critic_loss_on_a_fixed_buffer():
    cfg = DDPGConfig(seed=3, updates_per_step=0)
    agent = DDPGAgent(4, 200, cfg)
    rng = np.random.default_rng(0)
    n = 120
    for t in range(12):                                  # a shrinking pool, as in active learning
        S, S2 = _pool(n, seed=t), _pool(n - 8, seed=100 + t)
        a = rng.uniform(0.05, 0.95, size=n).astype(np.float32)
        agent.observe(S, a, float(rng.uniform(0, 0.5)), S2, t == 11)
        n -= 8
    batch = list(agent.buffer.items)
    losses = [agent.update(batch)["critic_loss"] for _ in range(80)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert all(np.isfinite(losses))


def test_update_needs_a_transition():
    with pytest.raises(RuntimeError, match="empty"):
        DDPGAgent(3, 10).update()


# --------------------------------------------------------------------------- noise


def _lag1(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


def test_ou_noise_is_autocorrelated_and_white_noise_is_not():
    ou = OUNoise(size=3, theta=0.15, sigma=0.2, seed=0)
    xs = np.array([ou.sample() for _ in range(4000)])
    for j in range(3):
        assert _lag1(xs[:, j]) == pytest.approx(0.85, abs=0.05)   # 1 - theta
    white = OUNoise(size=1, theta=1.0, sigma=0.2, seed=0)
    ws = np.array([white.sample()[0] for _ in range(4000)])
    assert abs(_lag1(ws)) < 0.06
    assert np.std(xs[500:, 0]) == pytest.approx(0.2 / np.sqrt(1 - 0.85**2), rel=0.15)


def test_exploration_noise_follows_each_sample_by_id():
    agent = DDPGAgent(3, 10, DDPGConfig(seed=0, noise_sigma=0.5))
    S = _pool(10, M=3)
    clean = agent.act(S)
    noisy = agent.act(S, explore=True)
    logit = lambda a: np.log(a / (1 - a))                                  # noqa: E731
    first = logit(noisy) - logit(clean)
    assert np.allclose(first, agent.noise.x, atol=1e-4)                    # the noise sits on the logits
    # the pool shrinks to samples 2, 5, 7: they keep their own noise coordinates
    sub = np.array([2, 5, 7])
    second = logit(agent.act(S[sub], explore=True, ids=sub)) - logit(agent.act(S[sub]))
    assert np.allclose(second, agent.noise.x[sub], atol=1e-4)
    with pytest.raises(ValueError, match="ids"):
        agent.act(S[sub], explore=True, ids=np.array([2, 5]))


# --------------------------------------------------------------------------- shrinking pools


def test_actor_scores_pools_of_any_size_in_the_open_unit_interval():
    agent = DDPGAgent(5, 400, DDPGConfig(seed=2))
    for n in (1, 7, 300, 0):
        a = agent.act(_pool(n, M=5, seed=n))
        assert a.shape == (n,) and (n == 0 or (a.min() > 0 and a.max() < 1))
    assert agent.select(_pool(7, M=5), 3).tolist() == np.argsort(-agent.act(_pool(7, M=5)), kind="stable")[:3].tolist()
    assert len(agent.select(_pool(2, M=5), 10)) == 2
    with pytest.raises(ValueError, match="M=5"):
        agent.act(_pool(4, M=3))


def test_actor_is_permutation_equivariant_and_padding_changes_nothing():
    torch.manual_seed(0)
    actor, critic = Actor(4, 16), Critic(4, 16)
    small, big = _pool(5, seed=1), _pool(9, seed=2)
    s, m = _pad([small, big], 4)
    with torch.no_grad():
        batched = actor(s, m)
        alone = actor(torch.from_numpy(small)[None], torch.ones(1, 5, dtype=torch.bool))
        assert torch.allclose(batched[0, :5], alone[0], atol=1e-6)         # padding ignored by the pooled context
        perm = np.random.default_rng(0).permutation(9)
        permuted = actor(torch.from_numpy(big[perm])[None], torch.ones(1, 9, dtype=torch.bool))
        assert torch.allclose(permuted[0], batched[1][perm], atol=1e-6)
        a = _pad_actions([np.full(5, 0.3, np.float32), np.linspace(0.1, 0.9, 9, dtype=np.float32)], 9)
        q = critic(s, a, m)
        q_small = critic(torch.from_numpy(small)[None], a[:1, :5], torch.ones(1, 5, dtype=torch.bool))
        q_perm = critic(torch.from_numpy(big[perm])[None], a[1:, perm], torch.ones(1, 9, dtype=torch.bool))
        assert q.shape == (2,)
        assert torch.allclose(q[0], q_small[0], atol=1e-5) and torch.allclose(q[1], q_perm[0], atol=1e-5)


def test_sorted_rows_make_the_policy_blind_to_class_order():
    agent = DDPGAgent(4, 30, DDPGConfig(seed=0, sort_probs=True))
    S = _pool(30)
    assert np.allclose(agent.act(S), agent.act(S[:, ::-1].copy()), atol=1e-6)
    raw = DDPGAgent(4, 30, DDPGConfig(seed=0, sort_probs=False))
    assert not np.allclose(raw.act(S), raw.act(S[:, ::-1].copy()), atol=1e-6)


# --------------------------------------------------------------------------- buffer, persistence, config


def test_replay_buffer_is_fifo_and_samples_distinct_items():
    buf = ReplayBuffer(3)
    for k in range(5):
        buf.push(Transition(np.zeros((k + 1, 2), np.float32), np.zeros(k + 1, np.float32), float(k), np.zeros((k, 2)),
                            False))
    assert len(buf) == 3 and sorted(t.reward for t in buf.items) == [2.0, 3.0, 4.0]
    got = buf.sample(16, np.random.default_rng(0))
    assert len(got) == 3 and len({id(t) for t in got}) == 3


def test_state_dict_round_trip_continues_identically(tmp_path):
    cfg = DDPGConfig(seed=4, updates_per_step=2)
    a1 = DDPGAgent(3, 40, cfg)
    S = _pool(40, M=3)
    a1.observe(S, a1.act(S, explore=True), 0.2, S[:30], False)
    a1.save(tmp_path / "agent.pt")
    a2 = DDPGAgent(3, 40, DDPGConfig(seed=99, updates_per_step=2))
    a2.load(tmp_path / "agent.pt")
    x1, x2 = a1.act(S, explore=True), a2.act(S, explore=True)               # same weights and same noise state
    assert np.array_equal(x1, x2)
    l1 = a1.observe(S[:30], x1[:30], 0.1, S[:20], True)
    l2 = a2.observe(S[:30], x2[:30], 0.1, S[:20], True)
    assert l1 == pytest.approx(l2)
    assert len(a2.buffer) == 2 and a2.updates == a1.updates == 4


@pytest.mark.parametrize("field,value,match", [
    ("tau", 0.0, "tau=0.0"), ("gamma", 1.5, "gamma"), ("actor_lr", -1e-3, "actor_lr"), ("batch_size", 0, "batch_size"),
    ("noise_theta", 0.0, "noise_theta"), ("noise_sigma", -0.1, "noise_sigma"), ("updates_per_step", -1,
                                                                                "updates_per_step"),
])
def test_config_rejects_bad_values_naming_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        DDPGConfig(**{field: value})


def test_defaults_are_the_papers():
    cfg = DDPGConfig()
    assert (cfg.tau, cfg.gamma, cfg.actor_lr, cfg.critic_lr, cfg.batch_size) == (0.005, 0.99, 1e-3, 1e-3, 16)
