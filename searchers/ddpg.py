"""DDPG sample selector of DRLA (deep reinforcement active learning), a pure torch/numpy core.

Paper 001 (Wang, Yan et al., "Deep Reinforcement Active Learning for Medical
Image Classification", MICCAI 2020), section 2.3 and Algorithm 1:

* **State** ``S`` (Eq. 2): the classifier's class probabilities on every
  unlabeled sample, ``(n_u, M)``.
* **Action** ``a = pi(S; theta_a)`` in ``(0, 1)^{n_u}``: one sigmoid score per
  unlabeled sample; the ``n_s`` highest-scoring samples are annotated.
* **Reward** (Eq. 3, :func:`reward_eq3`): the mean over the selected samples of
  ``Pr(k_hat_i) - Pr(k_i)``, predicted-class minus true-class probability under
  the classifier that produced ``S``; 0 for a correct prediction, large for a
  confident mistake.
* **Critic** ``Q(S, a; theta_c)`` trained on Eq. 6,
  ``(gamma * Q'(S', pi'(S'; theta_a'); theta_c') + r - Q(S, a; theta_c))^2``,
  with target actor and critic; **actor** trained on Eq. 4, ``max Q(S, pi(S))``.
* **Target update** (Eq. 7): ``theta' <- tau * theta + (1 - tau) * theta'``
  (the paper calls ``tau`` lambda); :func:`soft_update`.
* Section 3.2: three fully connected layers each for actor and critic, Adam
  with lr 1e-3, ``gamma = 0.99``, ``tau = 0.005``, batch 16, a replay buffer of
  ``(S, a, S', r)`` sampled uniformly, and autocorrelated exploration noise
  (their ref. [18], Wawrzynski 2015): :class:`OUNoise`.

**How the networks handle a pool that shrinks every round (our choice; the
paper is silent).** ``n_u`` drops by ``n_s`` every round, so neither network
can read ``S`` as a fixed-size vector. Both are *set functions* of the rows:

* Actor: one MLP with weights shared by all samples scores row ``i`` from its
  own probability vector plus a pooled context of the whole pool (the mean and
  the max over samples of every feature), ``[x_i, mean_j x_j, max_j x_j] ->
  3 x Linear -> logit_i``, then ``a_i = sigmoid(logit_i)``. The score of a
  sample thus depends on how it compares with the rest of the pool, and the
  actor accepts any ``n_u`` (including a padded batch of pools of different sizes).
* Critic: a per-sample encoder (2 Linear layers) reads ``[x_i, context, a_i]``;
  its outputs are pooled over samples (mean, max, and the mean weighted by
  ``a_i``, which summarises the samples the action favours) and a third Linear
  layer gives the scalar ``Q``. Permutation-invariant and size-independent.
* By default each row is sorted in descending order before it enters the
  networks (``sort_probs``), which makes the policy invariant to the class
  order: every hand-designed uncertainty (LC, MS, EN) is a function of the
  sorted row, and with a few dozen transitions per run a class-specific policy
  cannot be learned. Set ``sort_probs=False`` to feed ``S`` as is.
* Transitions of different ``n_u`` share a mini-batch by zero-padding to the
  largest pool in the batch with a mask that every pooling honours.

**Other choices where the paper is silent:** the exploration noise is added to
the actor's logits (before the sigmoid), so a noisy action stays in (0, 1);
the noise has one Ornstein-Uhlenbeck coordinate per pool sample (by its global
id), stepped once per round, so a sample's exploration bonus persists across
rounds; ``updates_per_step`` gradient updates (each followed by the soft target
update) run after every stored transition once the buffer holds
``warmup`` transitions; the last round's transition is terminal (``done``:
no bootstrap).

Pure torch/numpy: no Ray, no MLflow.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medtune.searchers.query_strategies import top_n
from medtune.util import atomic_write

__all__ = [
    "Actor", "Critic", "DDPGAgent", "DDPGConfig", "OUNoise", "ReplayBuffer", "Transition", "reward_eq3",
    "soft_update",
]

# --------------------------------------------------------------------------- reward


def reward_eq3(probs_selected: np.ndarray, true_labels: np.ndarray) -> float:
    """Eq. 3 of paper 001: ``r = 1/n_s * sum_i [Pr(k_hat_i | x_i) - Pr(k_i | x_i)]``.

    ``k_hat_i = argmax_j Pr(j | x_i)`` is the predicted class (the paper prints
    ``max_j``; the class, not its probability, is meant) and ``k_i`` the true
    label from the annotator. Each term is 0 for a correctly classified sample
    and in ``(0, 1]`` for a mistake, so ``r`` lies in ``[0, 1)``.

    Args:
        probs_selected: ``(n_s, M)`` rows of the state ``S`` (the classifier
            *before* the update that uses these labels) for the selected samples.
        true_labels: ``(n_s,)`` integer labels in ``0..M-1``.

    Returns:
        The reward; 0.0 when ``n_s = 0`` (nothing selected, nothing learned).

    Raises:
        ValueError: shapes that do not pair, or labels outside ``0..M-1``.
    """
    p = np.asarray(probs_selected, dtype=np.float64)
    k = np.asarray(true_labels)
    if p.ndim != 2 or k.ndim != 1 or len(p) != len(k):
        raise ValueError(f"probs_selected {p.shape} and true_labels {k.shape} must be (n_s, M) and (n_s,)")
    if len(k) == 0:
        return 0.0
    if not np.issubdtype(k.dtype, np.integer) or k.min() < 0 or k.max() >= p.shape[1]:
        raise ValueError(f"true_labels must be integers in 0..{p.shape[1] - 1}; got {k.min()}..{k.max()}")
    rows = np.arange(len(k))
    return float(np.mean(p[rows, p.argmax(axis=1)] - p[rows, k]))


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class DDPGConfig:
    """Hyper-parameters of the DRLA agent; defaults are paper 001 section 3.2 where it gives them.

    Attributes:
        tau: soft target update rate (Eq. 7's lambda), in (0, 1]. Paper: 0.005.
        gamma: discount ("delay parameter"), in [0, 1]. Paper: 0.99.
        actor_lr, critic_lr: Adam learning rates. Paper: 1e-3 both.
        batch_size: transitions per update. Paper: 16.
        buffer_capacity: replay buffer size (FIFO). Ours.
        hidden: width of the hidden layers (actor and critic). Ours.
        noise_theta, noise_sigma: OU noise ``x <- (1 - theta) x + sigma * eps``
            (mean reversion and scale, on the logit). Ours (Lillicrap et al.'s 0.15, 0.2).
        updates_per_step: gradient updates after each stored transition. Ours.
        warmup: transitions stored before the first update. Ours.
        sort_probs: sort each state row descending before the networks (class-order invariance). Ours.
        seed: initialisation, replay sampling and noise.

    Raises:
        ValueError: one line naming the field, its value and the fix.
    """

    tau: float = 0.005
    gamma: float = 0.99
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    batch_size: int = 16
    buffer_capacity: int = 10_000
    hidden: int = 64
    noise_theta: float = 0.15
    noise_sigma: float = 0.2
    updates_per_step: int = 4
    warmup: int = 1
    sort_probs: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"{name}={getattr(self, name)!r} {why}")

        def number(name: str) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(name, "must be a finite number")
            return float(v)

        def whole(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise bad(name, f"must be an integer >= {low}")

        if not 0 < number("tau") <= 1:
            raise bad("tau", "must lie in (0, 1]; the paper uses 0.005")
        if not 0 <= number("gamma") <= 1:
            raise bad("gamma", "must lie in [0, 1]; the paper uses 0.99")
        for name in ("actor_lr", "critic_lr"):
            if not number(name) > 0:
                raise bad(name, "must be > 0; the paper uses 1e-3")
        whole("batch_size", 1)
        whole("buffer_capacity", 1)
        whole("hidden", 1)
        whole("updates_per_step", 0)
        whole("warmup", 1)
        if not 0 < number("noise_theta") <= 1:
            raise bad("noise_theta", "must lie in (0, 1]; 1 gives white noise, small values slow drift")
        if not number("noise_sigma") >= 0:
            raise bad("noise_sigma", "must be >= 0 (0 turns exploration off)")
        if not isinstance(self.sort_probs, bool):
            raise bad("sort_probs", "must be true or false")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise bad("seed", "must be an integer")


# --------------------------------------------------------------------------- networks


def _pool(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean and max over samples.

    Args:
        h: ``(B, N, H)`` per-sample features (padded).
        mask: ``(B, N)`` bool, True for real samples.

    Returns:
        ``mean``, ``max``: ``(B, H)`` each; an empty pool gives zeros.
    """
    m = mask.unsqueeze(-1).to(h.dtype)
    count = m.sum(dim=1).clamp_min(1.0)
    mean = (h * m).sum(dim=1) / count
    if h.shape[1]:
        mx = h.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    else:
        mx = h.new_zeros(h.shape[0], h.shape[2])
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    return mean, mx


def _features(state: torch.Tensor, mask: torch.Tensor, sort_probs: bool) -> torch.Tensor:
    """``[x_i, mean_j x_j, max_j x_j]`` per sample: ``(B, N, M)`` -> ``(B, N, 3M)``."""
    x = torch.sort(state, dim=-1, descending=True).values if sort_probs else state
    mean, mx = _pool(x, mask)
    n = x.shape[1]
    return torch.cat([x, mean.unsqueeze(1).expand(-1, n, -1), mx.unsqueeze(1).expand(-1, n, -1)], dim=-1)


class Actor(nn.Module):
    """Per-sample scorer with shared weights and pooled context: ``(B, N, M)`` -> logits ``(B, N)``.

    Three fully connected layers (paper 001 section 3.2) applied to every row's
    ``[x_i, mean, max]``; ``sigmoid`` of the output is the action.
    """

    def __init__(self, M: int, hidden: int = 64, sort_probs: bool = True) -> None:
        super().__init__()
        self.M, self.sort_probs = M, sort_probs
        self.net = nn.Sequential(
            nn.Linear(3 * M, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def logits(self, state: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores ``(B, N)``; padded positions hold garbage the caller ignores."""
        return self.net(_features(state, mask, self.sort_probs)).squeeze(-1)

    def forward(self, state: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The action ``a in (0, 1)^N`` per pool, ``(B, N)``."""
        return torch.sigmoid(self.logits(state, mask))


class Critic(nn.Module):
    """Set-pooling critic: ``Q(S, a)`` for padded pools ``(B, N, M)`` and actions ``(B, N)`` -> ``(B,)``."""

    def __init__(self, M: int, hidden: int = 64, sort_probs: bool = True) -> None:
        super().__init__()
        self.M, self.sort_probs = M, sort_probs
        self.encoder = nn.Sequential(nn.Linear(3 * M + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(3 * hidden, 1)

    def forward(self, state: torch.Tensor, action: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(torch.cat([_features(state, mask, self.sort_probs), action.unsqueeze(-1)], dim=-1))
        mean, mx = _pool(h, mask)
        w = action * mask.to(action.dtype)
        weighted = (h * w.unsqueeze(-1)).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1e-6)
        return self.head(torch.cat([mean, mx, weighted], dim=-1)).squeeze(-1)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Eq. 7: ``theta_target <- tau * theta_source + (1 - tau) * theta_target``, in place.

    Parameters and floating-point buffers are blended; integer buffers are copied.
    """
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.mul_(1.0 - tau).add_(s, alpha=tau)
        for tb, sb in zip(target.buffers(), source.buffers()):
            if tb.is_floating_point():
                tb.mul_(1.0 - tau).add_(sb, alpha=tau)
            else:
                tb.copy_(sb)


# --------------------------------------------------------------------------- noise and replay


class OUNoise:
    """Ornstein-Uhlenbeck (discretised: AR(1)) autocorrelated noise, one coordinate per pool sample.

    ``x_{t+1} = (1 - theta) * x_t + sigma * eps_t``, ``eps_t ~ N(0, I)``,
    ``x_0 = 0``: the lag-1 autocorrelation of the stationary process is
    ``1 - theta`` and its standard deviation ``sigma / sqrt(1 - (1 - theta)^2)``.
    The autocorrelated exploration of paper 001's ref. [18] (Wawrzynski 2015)
    is of this family. ``theta = 1`` gives white noise.

    Args:
        size: number of coordinates (the pool size ``N``; each sample keeps its own).
        theta, sigma: see above.
        seed: the generator's seed.
    """

    def __init__(self, size: int, theta: float = 0.15, sigma: float = 0.2, seed: int = 0) -> None:
        self.size, self.theta, self.sigma = int(size), float(theta), float(sigma)
        self.rng = np.random.default_rng(seed)
        self.x = np.zeros(self.size)

    def sample(self) -> np.ndarray:
        """Advance one step and return the new ``(size,)`` noise (a copy)."""
        self.x = (1.0 - self.theta) * self.x + self.sigma * self.rng.standard_normal(self.size)
        return self.x.copy()

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x.tolist(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x = np.asarray(state["x"], dtype=np.float64)
        self.size = len(self.x)
        self.rng.bit_generator.state = state["rng"]


@dataclass
class Transition:
    """One step ``(S, a, r, S', done)`` of DRLA's MDP; sizes change from step to step.

    Attributes:
        state: ``(n_u, M)`` float32.
        action: ``(n_u,)`` float32, the (noisy) scores the selection used.
        reward: Eq. 3.
        next_state: ``(n_u', M)`` float32, ``n_u' = n_u - n_s`` (may be 0 at the end).
        done: True for the last round (no bootstrapping from ``S'``).
    """

    state: np.ndarray
    action: np.ndarray
    reward: float
    next_state: np.ndarray
    done: bool


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


class ReplayBuffer:
    """FIFO replay buffer of variable-size :class:`Transition` s, sampled uniformly (paper 001, after [6])."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.items: list[Transition] = []
        self.next_slot = 0

    def __len__(self) -> int:
        return len(self.items)

    def push(self, t: Transition) -> None:
        if len(self.items) < self.capacity:
            self.items.append(t)
        else:
            self.items[self.next_slot] = t
        self.next_slot = (self.next_slot + 1) % self.capacity

    def sample(self, batch_size: int, rng: np.random.Generator) -> list[Transition]:
        """``min(batch_size, len)`` distinct transitions, uniformly."""
        idx = rng.choice(len(self.items), size=min(batch_size, len(self.items)), replace=False)
        return [self.items[i] for i in idx]

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "next_slot": self.next_slot,
            "items": [
                {"state": _tensor(t.state), "action": _tensor(t.action), "reward": float(t.reward),
                 "next_state": _tensor(t.next_state), "done": bool(t.done)}
                for t in self.items
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.next_slot = int(state["capacity"]), int(state["next_slot"])
        self.items = [
            Transition(d["state"].numpy(), d["action"].numpy(), float(d["reward"]), d["next_state"].numpy(),
                       bool(d["done"]))
            for d in state["items"]
        ]


def _pad(states: list[np.ndarray], M: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack pools of different sizes: ``(B, N_max, M)`` zero-padded and the ``(B, N_max)`` mask."""
    n_max = max((len(s) for s in states), default=0)
    out = torch.zeros(len(states), n_max, M)
    mask = torch.zeros(len(states), n_max, dtype=torch.bool)
    for b, s in enumerate(states):
        out[b, : len(s)] = torch.as_tensor(s, dtype=torch.float32)
        mask[b, : len(s)] = True
    return out, mask


def _pad_actions(actions: list[np.ndarray], n_max: int) -> torch.Tensor:
    out = torch.zeros(len(actions), n_max)
    for b, a in enumerate(actions):
        out[b, : len(a)] = torch.as_tensor(a, dtype=torch.float32)
    return out


# --------------------------------------------------------------------------- the agent


class DDPGAgent:
    """DRLA's actor-critic sample selector (paper 001 Algorithm 1, lines 3 and 7-11).

    Usage per active-learning round::

        a = agent.act(S, explore=True, ids=pool_ids)    # (n_u,) scores in (0, 1)
        chosen = top_n(a, n_s)                           # or agent.select(S, n_s, ...)
        ... annotate, update the classifier, compute S' and r = reward_eq3(S[chosen], labels) ...
        agent.observe(S, a, r, S_next, done)             # stores and runs updates_per_step updates

    Args:
        M: number of classes (columns of the state).
        pool_size: ``N``, the initial pool size; the noise keeps one coordinate
            per pool sample, addressed by ``ids`` (global positions ``0..N-1``).
        config: :class:`DDPGConfig`.
        device: torch device for the networks.
    """

    def __init__(self, M: int, pool_size: int, config: DDPGConfig = DDPGConfig(), device: str = "cpu") -> None:
        if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 1:
            raise ValueError(f"M={M!r} must be the number of classes, >= 1")
        if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)) or pool_size < 0:
            raise ValueError(f"pool_size={pool_size!r} must be an integer >= 0")
        self.M, self.pool_size, self.cfg, self.device = int(M), int(pool_size), config, device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.actor = Actor(self.M, config.hidden, config.sort_probs).to(device)
            self.critic = Critic(self.M, config.hidden, config.sort_probs).to(device)
            self.actor_target = Actor(self.M, config.hidden, config.sort_probs).to(device)
            self.critic_target = Critic(self.M, config.hidden, config.sort_probs).to(device)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.buffer = ReplayBuffer(config.buffer_capacity)
        self.noise = OUNoise(self.pool_size, config.noise_theta, config.noise_sigma, seed=config.seed + 1)
        self.rng = np.random.default_rng(config.seed + 2)
        self.updates = 0
        self.last_losses: dict[str, float] = {}

    # -- acting ------------------------------------------------------------------
    def _state_tensor(self, state: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        s = np.asarray(state, dtype=np.float32)
        if s.ndim != 2 or s.shape[1] != self.M:
            raise ValueError(f"state has shape {s.shape}; the agent expects (n_u, M={self.M})")
        if s.size and not np.isfinite(s).all():
            raise ValueError("state holds NaN or infinite values; check the classifier's probabilities")
        x = torch.from_numpy(s).to(self.device).unsqueeze(0)
        return x, torch.ones(1, len(s), dtype=torch.bool, device=self.device)

    @torch.no_grad()
    def act(self, state: np.ndarray, explore: bool = False, ids: np.ndarray | None = None) -> np.ndarray:
        """The action ``a = sigmoid(logits + noise)`` for one pool.

        Args:
            state: ``(n_u, M)`` class probabilities of the unlabeled samples (Eq. 2); any ``n_u >= 0``.
            explore: add the OU noise (advancing it one step) to the logits.
            ids: ``(n_u,)`` global pool positions of the rows, for the noise
                coordinates; default ``0..n_u-1`` (which needs ``n_u <= pool_size``).

        Returns:
            ``(n_u,)`` float32 scores in (0, 1).
        """
        x, mask = self._state_tensor(state)
        self.actor.eval()
        logits = self.actor.logits(x, mask)[0].double().cpu().numpy()
        if explore and len(logits):
            ids = np.arange(len(logits)) if ids is None else np.asarray(ids, dtype=np.int64)
            if ids.shape != logits.shape or (ids.size and (ids.min() < 0 or ids.max() >= self.pool_size)):
                raise ValueError(
                    f"ids must be {logits.shape[0]} positions in 0..{self.pool_size - 1} (one per state row)"
                )
            logits = logits + self.noise.sample()[ids]
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def select(self, state: np.ndarray, n_s: int, explore: bool = False, ids: np.ndarray | None = None) -> np.ndarray:
        """Positions (rows of ``state``) of the ``n_s`` highest action scores; ties to the lower position.

        The action used is kept in :attr:`last_action` for :meth:`observe`.
        """
        self.last_action = self.act(state, explore=explore, ids=ids)
        return top_n(self.last_action, n_s)

    # -- learning ----------------------------------------------------------------
    def observe(self, state: np.ndarray, action: np.ndarray, reward: float, next_state: np.ndarray,
                done: bool) -> dict[str, float]:
        """Store ``(S, a, r, S', done)`` (Algorithm 1, line 7) and run ``updates_per_step`` updates (lines 8-11).

        Returns:
            The mean ``critic_loss`` and ``actor_loss`` of the updates run (empty when none ran).
        """
        s = np.asarray(state, dtype=np.float32)
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        s2 = np.asarray(next_state, dtype=np.float32).reshape(-1, self.M)
        if s.ndim != 2 or s.shape[1] != self.M or len(a) != len(s):
            raise ValueError(f"state {s.shape} and action {a.shape} must be (n_u, {self.M}) and (n_u,)")
        if not math.isfinite(float(reward)):
            raise ValueError(f"reward={reward!r} must be finite")
        self.buffer.push(Transition(s, a, float(reward), s2, bool(done)))
        if len(self.buffer) < self.cfg.warmup:
            return {}
        losses = [self.update() for _ in range(self.cfg.updates_per_step)]
        if not losses:
            return {}
        self.last_losses = {k: float(np.mean([l[k] for l in losses])) for k in losses[0]}
        return self.last_losses

    def update(self, batch: list[Transition] | None = None) -> dict[str, float]:
        """One DDPG update on a mini-batch: critic on Eq. 6, actor on Eq. 4, then Eq. 7 on both targets.

        Args:
            batch: transitions to use; default ``batch_size`` drawn uniformly from the buffer.

        Returns:
            ``{"critic_loss": ..., "actor_loss": ...}``: the critic's squared TD
            error before its step and ``-Q(S, pi(S))`` before the actor's step.

        Raises:
            RuntimeError: when the buffer is empty and no batch is given.
        """
        if batch is None:
            if not len(self.buffer):
                raise RuntimeError("the replay buffer is empty; observe() a transition before update()")
            batch = self.buffer.sample(self.cfg.batch_size, self.rng)
        s, m = _pad([t.state for t in batch], self.M)
        s2, m2 = _pad([t.next_state for t in batch], self.M)
        a = _pad_actions([t.action for t in batch], s.shape[1])
        s, m, s2, m2, a = (v.to(self.device) for v in (s, m, s2, m2, a))
        r = torch.tensor([t.reward for t in batch], dtype=torch.float32, device=self.device)
        done = torch.tensor([t.done for t in batch], dtype=torch.float32, device=self.device)
        self.actor.train()
        self.critic.train()

        with torch.no_grad():                                   # Eq. 6's target, from the target networks
            a2 = self.actor_target(s2, m2) * m2.to(torch.float32)
            y = r + self.cfg.gamma * (1.0 - done) * self.critic_target(s2, a2, m2)
        critic_loss = torch.mean((self.critic(s, a, m) - y) ** 2)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        actor_loss = -self.critic(s, self.actor(s, m) * m.to(torch.float32), m).mean()   # Eq. 4
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        soft_update(self.actor_target, self.actor, self.cfg.tau)   # Eq. 7
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        self.updates += 1
        return {"critic_loss": float(critic_loss.detach()), "actor_loss": float(actor_loss.detach())}

    # -- persistence -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, targets, optimizers, buffer, noise, generator."""
        return {
            "M": self.M,
            "pool_size": self.pool_size,
            "config": asdict(self.cfg),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(),
            "noise": self.noise.state_dict(),
            "rng": self.rng.bit_generator.state,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["M"]) != self.M:
            raise ValueError(f"checkpoint is for M={state['M']} classes, this agent has M={self.M}")
        self.pool_size = int(state["pool_size"])
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.buffer.load_state_dict(state["buffer"])
        self.noise.load_state_dict(state["noise"])
        self.rng.bit_generator.state = state["rng"]
        self.updates = int(state["updates"])

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (temp file, fsync, rename)."""
        atomic_write(path, lambda f: torch.save(self.state_dict(), f))

    def load(self, path: str | os.PathLike) -> None:
        """Restore from a file written by :meth:`save`."""
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
