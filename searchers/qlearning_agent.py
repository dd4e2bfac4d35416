"""Q-learning learning-rate agent (RLLRAgent), a pure-Python core.

Paper 000, "Adaptive Learning Rate Optimization via Reinforcement Learning for
Medical Image Segmentation".

The MDP of section 3, exactly:

* **S**: ``improving``, ``worsening``, ``plateau``, ``oscillating``, ``mixed``,
  ``insufficient_data``, read off the last ``window`` = 5 epochs of validation
  Dice and validation loss (section 4.3).
* **A**: ``maintain``, ``decrease`` (x0.5), ``increase`` (x1.2), the new LR
  clamped to ``[min_lr, max_lr]`` (section 3.3).
* **R**: ``10 * dice_change + 5 * loss_change`` (section 3.4) plus a bonus for a
  new best Dice and a penalty when the LR sits near a bound.
* Q-update ``Q(s,a) += alpha * (r + gamma * max_a' Q(s',a') - Q(s,a))``
  (section 3.5), epsilon-greedy with ``epsilon = max(epsilon_min, epsilon *
  epsilon_decay)`` (section 3.6), Q-table initialised ``U(0, 0.1)`` (4.2), and
  the defaults of section 4.1: ``base_lr`` 1e-4 in [1e-6, 1e-2], patience 3,
  cooldown 5, alpha 0.1, gamma 0.9, epsilon 0.2, decay 0.95.

What the paper leaves open, and what we chose (all configurable):

* ``insufficient_data`` while fewer than ``min_history`` = 3 epochs are known.
* A move counts only beyond a tolerance (``dice_tol``, ``loss_tol``, both 1e-3,
  the loss one relative to the loss's size); ``plateau`` = no move in either
  metric; ``improving`` / ``worsening`` = at least ``consistency`` = 75 % of the
  Dice moves and of the loss moves go the same way and the net change agrees;
  ``oscillating`` = the Dice moves flip sign at every step (at least 3 moves);
  anything else is ``mixed``.
* The reward of a decision is paid at the next decision, on the change of Dice
  and loss between the two (the interval the action governed). The best-Dice
  bonus is ``best_dice_bonus`` = 0.5; the bound penalty ``bound_penalty`` = 0.5
  applies when the LR is within a factor ``bound_margin`` = 2 of either bound;
  ``epsilon_min`` = 0.01.
* ``patience``: epochs between two decisions; ``cooldown``: epochs to wait
  instead after a decision that changed the LR.

The Q-table (:class:`QTable`) is separate from the per-run agent
(:class:`QLearningLRAgent`) so that several runs can pool their experience in
one table, as the Ray Tune scheduler does. Outside Ray the agent is a plain
PyTorch LR scheduler::

    agent = QLearningLRAgent(QLearningConfig(base_lr=1e-3), optimizer=opt)
    for epoch in range(epochs):
        train_one_epoch(); dice, val_loss = validate()
        agent.step(dice=dice, val_loss=val_loss)   # sets opt's LR for the next epoch

All state is JSON-serialisable (:meth:`QLearningLRAgent.state_dict`).
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ACTIONS", "Decision", "METHOD", "PAPER_BASE_LR", "QLearningConfig", "QLearningLRAgent", "QTable", "STATES",
    "WARM_METHOD", "analyze_trend", "load_qtable_file",
]

STATES: tuple[str, ...] = (
    "improving",
    "worsening",
    "plateau",
    "oscillating",
    "mixed",
    "insufficient_data",
)
ACTIONS: tuple[str, ...] = ("maintain", "decrease", "increase")
# The names of the agent's methods in a study: cold, and warm-started from an earlier experiment's Q-table.
METHOD = "qlearning"
WARM_METHOD = "qlearning_warm"
PAPER_BASE_LR = 1e-4  # section 4.1: the starting LR when neither base_lr nor an optimizer gives one


@dataclass(frozen=True)
class QLearningConfig:
    """Hyper-parameters of the agent; defaults are the paper's section 4.1.

    ``base_lr`` None (the default) means: start from the optimizer's own LR when the agent is given one, else
    from the paper's 1e-4 (:data:`PAPER_BASE_LR`); a number is used as it is.

    Attributes:
        min_lr, max_lr: the LR bounds every action's new LR is clamped to (positive, ``min_lr < max_lr``; section
            4.1: [1e-6, 1e-2]).
        patience: epochs between two decisions (>= 0; section 4.1: 3); 0 decides after every epoch.
        cooldown: epochs to wait instead of ``patience`` after a decision that changed the LR (>= 0; section 4.1:
            5).
        alpha: the Q-update's learning rate, in [0, 1] (section 3.5; 4.1: 0.1); 0 never changes the table.
        gamma: the discount of the next state's best Q-value, in [0, 1] (section 3.5; 4.1: 0.9); 0 learns the
            immediate reward only.
        epsilon: the starting probability of a random action (epsilon-greedy, section 3.6; 4.1: 0.2), in [0, 1].
        epsilon_decay: the factor epsilon is multiplied by after every action the table selects (random or greedy),
            in [0, 1] (section 3.6; 4.1: 0.95); 1 keeps it constant.
        epsilon_min: the floor of the decayed epsilon, in [0, ``epsilon``] (our choice: 0.01).
        decrease_factor: the LR factor of the ``decrease`` action, in (0, 1) (section 3.3: 0.5).
        increase_factor: the LR factor of the ``increase`` action, > 1 (section 3.3: 1.2).
        window: the last epochs the state is read from (>= ``min_history``; section 4.3: 5).
        min_history: epochs needed before a trend is read (>= 2); fewer give the state ``insufficient_data``
            (our choice: 3).
        dice_tol: an epoch-to-epoch Dice change counts as a move only beyond this, in Dice units (>= 0; our
            choice: 1e-3); no move in Dice or loss is the state ``plateau``.
        loss_tol: the same for the validation loss, relative to the window's mean absolute loss (>= 0; 1e-3).
        consistency: the share of the moves, in [0, 1], that must go one way (and the net change agree) for
            ``improving`` or ``worsening`` (our choice: 0.75).
        dice_weight: the reward's weight of the Dice change since the last decision (section 3.4: 10).
        loss_weight: the reward's weight of the validation-loss decrease since the last decision (section 3.4: 5).
        best_dice_bonus: added to the reward when the Dice is a new best of the run (our choice: 0.5).
        bound_penalty: subtracted from the reward when the LR lies within a factor ``bound_margin`` of
            ``min_lr`` or ``max_lr`` (our choice: 0.5); 0 disables it.
        bound_margin: that factor, >= 1 (our choice: 2); 1 penalises only an LR at a bound.
        q_init_high: the Q-table starts ``U(0, q_init_high)`` in every cell (section 4.2: 0.1), >= 0; 0 starts at
            zero, ties then broken at random.

    Raises:
        ValueError: one line naming the field, its value and the fix.
    """

    base_lr: float | None = None  # None: the optimizer's own LR, or PAPER_BASE_LR without an optimizer
    min_lr: float = 1e-6
    max_lr: float = 1e-2
    patience: int = 3
    cooldown: int = 5
    alpha: float = 0.1
    gamma: float = 0.9
    epsilon: float = 0.2
    epsilon_decay: float = 0.95
    epsilon_min: float = 0.01
    decrease_factor: float = 0.5
    increase_factor: float = 1.2
    window: int = 5
    min_history: int = 3
    dice_tol: float = 1e-3
    loss_tol: float = 1e-3
    consistency: float = 0.75
    dice_weight: float = 10.0
    loss_weight: float = 5.0
    best_dice_bonus: float = 0.5
    bound_penalty: float = 0.5
    bound_margin: float = 2.0
    q_init_high: float = 0.1

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"{name}={getattr(self, name)!r} {why}")

        for name in ("base_lr", "min_lr", "max_lr"):
            value = getattr(self, name)
            if value is None and name == "base_lr":
                continue
            if not (value > 0 and math.isfinite(value)):
                raise bad(name, "must be a positive finite number")
        if self.min_lr >= self.max_lr:
            raise bad("min_lr", f"must be below max_lr={self.max_lr!r}; lower min_lr or raise max_lr")
        if self.base_lr is not None and not self.min_lr <= self.base_lr <= self.max_lr:
            raise bad("base_lr", f"must lie in [min_lr, max_lr] = [{self.min_lr!r}, {self.max_lr!r}]")
        for name in ("patience", "cooldown"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0 epochs")
        if self.min_history < 2:
            raise bad("min_history", "must be >= 2 (a trend needs two epochs)")
        if self.window < self.min_history:
            raise bad("window", f"must be >= min_history={self.min_history}")
        for name in ("alpha", "epsilon", "epsilon_min", "consistency"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must lie in [0, 1]")
        for name in ("gamma", "epsilon_decay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must lie in [0, 1]")
        if self.epsilon_min > self.epsilon:
            raise bad("epsilon_min",
                      f"must be <= epsilon={self.epsilon!r} (exploration only decays); lower epsilon_min")
        if not 0.0 < self.decrease_factor < 1.0:
            raise bad("decrease_factor", "must lie in (0, 1); it multiplies the LR on 'decrease'")
        if self.increase_factor <= 1.0:
            raise bad("increase_factor", "must be > 1; it multiplies the LR on 'increase'")
        if self.bound_margin < 1.0:
            raise bad("bound_margin", "must be >= 1 (a factor away from the bound)")
        for name in ("dice_tol", "loss_tol", "q_init_high"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")


# ---------------------------------------------------------------------------
# State: the trend analysis of section 4.3
# ---------------------------------------------------------------------------


def _count_moves(values: list[float], tol: float, improve_sign: int) -> tuple[int, int, bool]:
    """Epoch-to-epoch moves beyond ``tol``: (better, worse, whether consecutive moves always flip sign).

    A change ``delta = (cur - prev) * improve_sign`` is a move when ``abs(delta) > tol``, better when
    ``delta > 0``. One pass, no lists: this runs on every decision of every trial of a study.
    """
    up = down = 0
    flips, last = True, 0
    prev = values[0]
    for cur in values[1:]:
        delta = (cur - prev) * improve_sign
        prev = cur
        if abs(delta) <= tol:
            continue
        move = 1 if delta > 0 else -1
        if move > 0:
            up += 1
        else:
            down += 1
        if move == last:
            flips = False
        last = move
    return up, down, flips


def _consistent(agree: int, total: int, net: float, sign: int, consistency: float) -> bool:
    """At least ``consistency`` of the ``total`` moves (``agree`` of them) go the way ``sign`` says, and so does
    the net change. No move at all is not consistent."""
    return total > 0 and agree / total >= consistency and net * sign > 0


def analyze_trend(
    dice: list[float], val_loss: list[float], config: QLearningConfig = QLearningConfig()
) -> str:
    """Classify the last ``config.window`` epochs into one of :data:`STATES`.

    Args:
        dice: validation Dice per epoch, oldest first (any length).
        val_loss: validation loss per epoch, same length as ``dice``.
        config: tolerances, window and consistency threshold.

    Returns:
        A state name. NaN or infinite values in the window give ``mixed``
        (the trend is unreadable, but there is data).
    """
    if len(dice) != len(val_loss):
        raise ValueError(f"dice has {len(dice)} epochs but val_loss has {len(val_loss)}")
    if len(dice) < config.min_history:
        return "insufficient_data"
    d = [float(x) for x in dice[-config.window :]]
    l = [float(x) for x in val_loss[-config.window :]]
    if not (all(map(math.isfinite, d)) and all(map(math.isfinite, l))):
        return "mixed"
    loss_scale = max(1e-12, sum(map(abs, l)) / len(l))
    d_up, d_down, d_flips = _count_moves(d, config.dice_tol, +1)
    l_up, l_down, _ = _count_moves(l, config.loss_tol * loss_scale, -1)  # "up" = the loss went down (better)
    d_moves, l_moves = d_up + d_down, l_up + l_down
    if not d_moves and not l_moves:
        return "plateau"
    dice_net = d[-1] - d[0]
    loss_net = l[0] - l[-1]  # > 0 means the loss went down (better)
    c = config.consistency
    # A metric with no move at all counts as "not against" the trend.
    if _consistent(d_up, d_moves, dice_net, +1, c) and (_consistent(l_up, l_moves, loss_net, +1, c) or not l_moves):
        return "improving"
    if _consistent(d_down, d_moves, dice_net, -1, c) and (_consistent(l_down, l_moves, loss_net, -1, c)
                                                          or not l_moves):
        return "worsening"
    if d_moves >= 3 and d_flips:
        return "oscillating"
    return "mixed"


# ---------------------------------------------------------------------------
# The Q-table, shareable between runs
# ---------------------------------------------------------------------------


class QTable:
    """Q-values, visit counts and the exploration rate, shared by any number of agents.

    Args:
        config: the agent configuration (``alpha``, ``gamma``, ``epsilon*``, ``q_init_high``).
        seed: seeds the U(0, q_init_high) initialisation and the epsilon-greedy draws.

    Attributes:
        q: ``q[state][action]`` -> float, initialised U(0, 0.1) (paper 4.2).
        visits: ``visits[state][action]`` -> number of Q-updates of that pair.
        epsilon: current exploration rate.
        updates: total number of Q-updates applied.
    """

    def __init__(self, config: QLearningConfig = QLearningConfig(), seed: int | None = None) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.q: dict[str, dict[str, float]] = {
            s: {a: self.rng.uniform(0.0, config.q_init_high) for a in ACTIONS} for s in STATES
        }
        self.visits: dict[str, dict[str, int]] = {s: {a: 0 for a in ACTIONS} for s in STATES}
        self.epsilon = config.epsilon
        self.updates = 0

    def greedy(self, state: str) -> str:
        """Best action in ``state``; ties broken at random (paper 4.4)."""
        row = self.q[state]
        best = max(row.values())
        return self.rng.choice([a for a in ACTIONS if row[a] == best])

    def select(self, state: str) -> str:
        """Epsilon-greedy action, then epsilon decays (paper 3.6)."""
        if self.rng.random() < self.epsilon:
            action = self.rng.choice(ACTIONS)
        else:
            action = self.greedy(state)
        self.epsilon = max(self.config.epsilon_min, self.epsilon * self.config.epsilon_decay)
        return action

    def update(self, state: str, action: str, reward: float, next_state: str) -> float:
        """One Q-learning update (paper 3.5); returns the TD error.

        A non-finite reward (diverged run) is skipped and returns NaN, so one
        broken trial cannot poison the shared table.
        """
        if not math.isfinite(reward):
            return float("nan")
        old = self.q[state][action]
        td = reward + self.config.gamma * max(self.q[next_state].values()) - old
        self.q[state][action] = old + self.config.alpha * td
        self.visits[state][action] += 1
        self.updates += 1
        return td

    def state_dict(self, include_rng: bool = True) -> dict[str, Any]:
        """JSON-serialisable snapshot; with the RNG (the default) a restore replays exactly."""
        state: dict[str, Any] = {
            "q": {s: dict(r) for s, r in self.q.items()},
            "visits": {s: dict(r) for s, r in self.visits.items()},
            "epsilon": self.epsilon,
            "updates": self.updates,
        }
        if include_rng:
            version, internal, gauss = self.rng.getstate()
            state["rng"] = [version, list(internal), gauss]
        return state

    def load_state_dict(self, state: dict[str, Any], *, keep_rng: bool = False) -> None:
        """Restore :meth:`state_dict` output; ``keep_rng`` keeps this table's own RNG (warm start)."""
        for s in STATES:
            for a in ACTIONS:
                self.q[s][a] = float(state["q"][s][a])
                self.visits[s][a] = int(state.get("visits", {}).get(s, {}).get(a, 0))
        self.epsilon = float(state.get("epsilon", self.epsilon))
        self.updates = int(state.get("updates", 0))
        if "rng" in state and not keep_rng:
            version, internal, gauss = state["rng"]
            self.rng.setstate((version, tuple(internal), gauss))


def load_qtable_file(path: str | os.PathLike, config: QLearningConfig, seed: int | None = None) -> QTable:
    """Read a Q-table JSON written by medtune (``qtable.json`` or a scheduler state file).

    Raises:
        ValueError: one line naming the file when it is missing, not JSON, or lacks a
            value for some state/action pair.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"Q-table file {str(p)!r} does not exist; give the qtable.json of an earlier experiment") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"Q-table file {str(p)!r} is not readable JSON ({exc}); give a qtable.json written by medtune") from exc
    table_state: Any = data.get("table", data) if isinstance(data, dict) else None
    try:
        for s in STATES:
            for a in ACTIONS:
                float(table_state["q"][s][a])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"Q-table file {str(p)!r} lacks a numeric q[state][action] for every state in {', '.join(STATES)}"
        ) from None
    table = QTable(config, seed=seed)
    table.load_state_dict(table_state, keep_rng=True)
    # A warm start transfers what was learned (the values), not the earlier experiment's bookkeeping.
    table.visits = {s: {a: 0 for a in ACTIONS} for s in STATES}
    table.updates = 0
    table.epsilon = config.epsilon
    return table


# ---------------------------------------------------------------------------
# The per-run agent
# ---------------------------------------------------------------------------


@dataclass
class Decision:
    """One decision of the agent, kept for reports and tests."""

    epoch: int
    state: str
    action: str
    lr_before: float
    lr_after: float
    reward: float | None  # reward paid for the *previous* decision, None for the first


@dataclass
class _RunState:
    lr: float
    epochs: int = 0  # epochs observed so far
    dice: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_dice: float | None = None  # None until a finite Dice is seen (keeps the state strict JSON)
    since_decision: int = 0
    wait: int = 0  # epochs to wait before the next decision: patience, or cooldown after a change
    last_state: str | None = None
    last_action: str | None = None
    last_dice: float | None = None
    last_loss: float | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)


class QLearningLRAgent:
    """The RLLRAgent of paper 000 for one training run.

    Args:
        config: hyper-parameters (defaults: the paper's section 4.1).
        table: a :class:`QTable` to learn into; shared tables pool experience
            across runs. A new private table is made when omitted (seeded with
            ``seed``).
        optimizer: optional ``torch.optim.Optimizer`` whose ``param_groups``
            receive the new LR after every :meth:`step`; its own LR is the
            starting LR unless ``config.base_lr`` is set.
        seed: seed of the private table when ``table`` is omitted.

    Edge cases:
        A NaN or infinite Dice or loss is recorded, yields no Q-update and no
        LR change (the run is diverging; the trainable stops it).
    """

    def __init__(
        self,
        config: QLearningConfig = QLearningConfig(),
        table: QTable | None = None,
        optimizer: Any = None,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.table = table if table is not None else QTable(config, seed=seed)
        self.optimizer = optimizer
        self.run = _RunState(lr=self.start_lr(config, optimizer), wait=config.patience)
        self._apply_lr()

    @staticmethod
    def start_lr(config: QLearningConfig, optimizer: Any = None) -> float:
        """``config.base_lr`` if set, else the optimizer's LR (``param_groups[0]``), else :data:`PAPER_BASE_LR`.

        Raises:
            ValueError: the optimizer's LR lies outside ``[min_lr, max_lr]`` (never silently clamped).
        """
        if config.base_lr is not None:
            return float(config.base_lr)
        if optimizer is None:
            return PAPER_BASE_LR
        lr = float(optimizer.param_groups[0]["lr"])
        if not config.min_lr <= lr <= config.max_lr:
            raise ValueError(f"the optimizer's lr={lr!r} lies outside [min_lr, max_lr] = [{config.min_lr!r}, "
                             f"{config.max_lr!r}]; widen the bounds in QLearningConfig or set base_lr")
        return lr

    # -- public -----------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate the next epoch should use."""
        return self.run.lr

    @property
    def decisions(self) -> list[Decision]:
        return [Decision(**d) for d in self.run.decisions]

    def state(self) -> str:
        """The current MDP state from the history seen so far."""
        return analyze_trend(self.run.dice, self.run.val_loss, self.config)

    def reward(self, dice: float, val_loss: float, lr: float) -> float:
        """Reward for the interval since the last decision (section 3.4).

        ``10 * (dice - last_dice) + 5 * (last_loss - val_loss)``, plus
        ``best_dice_bonus`` when ``dice`` is a new best, minus ``bound_penalty``
        when ``lr`` is within a factor ``bound_margin`` of ``min_lr`` or ``max_lr``.
        """
        c, r = self.config, self.run
        dice_change = dice - (r.last_dice if r.last_dice is not None else dice)
        loss_change = (r.last_loss if r.last_loss is not None else val_loss) - val_loss
        reward = c.dice_weight * dice_change + c.loss_weight * loss_change
        if r.best_dice is None or dice > r.best_dice:
            reward += c.best_dice_bonus
        if lr <= c.min_lr * c.bound_margin or lr >= c.max_lr / c.bound_margin:
            reward -= c.bound_penalty
        return reward

    def step(self, dice: float, val_loss: float) -> float:
        """Observe one finished epoch; maybe decide; return the LR for the next epoch.

        Args:
            dice: validation mean foreground Dice of the epoch just finished.
            val_loss: validation loss of that epoch.

        Returns:
            The (possibly new) learning rate, already written to the optimizer if one was given.
        """
        dice, val_loss = float(dice), float(val_loss)
        self.observe(dice, val_loss)
        r = self.run
        finite = math.isfinite(dice) and math.isfinite(val_loss)
        if finite and r.since_decision >= r.wait:  # the trend is read only when a decision can fall
            state = self.state()
            if state != "insufficient_data":
                self._decide(state, dice, val_loss)
        if finite:
            r.best_dice = dice if r.best_dice is None else max(r.best_dice, dice)
        return r.lr

    def record(self, dice: float, val_loss: float) -> None:
        """An epoch on which no decision was taken (a journal replaying the epochs between two decisions)."""
        self.observe(dice, val_loss)
        if math.isfinite(dice) and math.isfinite(val_loss):
            r = self.run
            r.best_dice = dice if r.best_dice is None else max(r.best_dice, dice)

    def observe(self, dice: float, val_loss: float) -> None:
        """The bookkeeping half of :meth:`step` (history and counters), with no decision.

        ``best_dice`` is left to the caller: :meth:`step` updates it after a possible decision
        (the reward compares against the best *before* this epoch), :meth:`record` at once.
        """
        r, c = self.run, self.config
        r.dice.append(float(dice))
        r.val_loss.append(float(val_loss))
        if len(r.dice) > c.window:
            del r.dice[: -c.window]
            del r.val_loss[: -c.window]
        r.epochs += 1
        r.since_decision += 1

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state of this run (not the shared table).

        A shallow copy: the lists are copied, the decision records (never changed once written) are shared.
        """
        state = dict(vars(self.run))
        for key in ("dice", "val_loss", "decisions"):
            state[key] = list(state[key])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run = _RunState(**state)
        self._apply_lr()

    # -- internals --------------------------------------------------------
    def _decide(self, state: str, dice: float, val_loss: float) -> None:
        r, c = self.run, self.config
        reward = None
        if r.last_state is not None and r.last_action is not None:
            reward = self.reward(dice, val_loss, r.lr)
            self.table.update(r.last_state, r.last_action, reward, state)
        action = self.table.select(state)
        lr_before = r.lr
        if action == "decrease":
            r.lr = max(c.min_lr, r.lr * c.decrease_factor)
        elif action == "increase":
            r.lr = min(c.max_lr, r.lr * c.increase_factor)
        # A Decision's fields as a plain dict (what state_dict and the journal carry); built directly, as
        # dataclasses.asdict would cost more than the rest of the decision.
        r.decisions.append({"epoch": r.epochs, "state": state, "action": action, "lr_before": lr_before,
                            "lr_after": r.lr, "reward": reward})
        r.last_state, r.last_action = state, action
        r.last_dice, r.last_loss = dice, val_loss
        r.since_decision = 0
        r.wait = c.cooldown if r.lr != lr_before else c.patience
        self._apply_lr()

    def _apply_lr(self) -> None:
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.run.lr

