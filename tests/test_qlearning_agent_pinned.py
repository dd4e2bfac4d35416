"""The Q-learning agent's decisions, pinned: long seeded runs must give bit-identical states, actions, LRs,
rewards, Q-tables and RNG draws to the implementation this file's fixture was recorded from.

``tests/data/qlearning_agent_trace.json`` holds :func:`trace` run against the agent of commit efded90 (before its
hot path was made cheaper: ``analyze_trend`` counting moves in one pass, a decision's record built as a dict
literal instead of ``dataclasses.asdict``, the trend read only when a decision can fall). Any later speed-up must
reproduce it exactly. Regenerate it only for a deliberate change of behaviour, by running ``trace`` against the
new module and saying so in the commit::

    python -c "import json, tests.test_qlearning_agent_pinned as t, medtune.searchers.qlearning_agent as m; \\
        open(t.FIXTURE, 'w').write(json.dumps(t.trace(m), separators=(',', ':')) + '\\n')"

Pure Python, well under a second.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

import medtune.searchers.qlearning_agent as agent_module

FIXTURE = Path(__file__).parent / "data" / "qlearning_agent_trace.json"
STATES = agent_module.STATES


def _trend_inputs(rng: random.Random, n: int) -> tuple[list[Any], list[Any]]:
    """Windows that hit every state and the tolerance boundaries (values on a 1e-3 grid), with NaN, inf and ints."""
    kind = rng.randrange(6)
    if kind == 0:  # on the tolerance grid: many deltas of exactly one step, rounded either way
        dice = [round(0.5 + 0.001 * rng.randint(-3, 3), 3) for _ in range(n)]
        loss = [round(1.0 + 0.001 * rng.randint(-3, 3), 3) for _ in range(n)]
    elif kind == 1:  # random walks
        dice, loss = [rng.random()], [rng.uniform(0.1, 3.0)]
        for _ in range(n - 1):
            dice.append(dice[-1] + rng.gauss(0.0, 0.01))
            loss.append(loss[-1] + rng.gauss(0.0, 0.01))
        dice, loss = dice[:n], loss[:n]
    elif kind == 2:  # alternating Dice (oscillating), steady loss
        dice = [0.5 + (0.05 if i % 2 else -0.05) * rng.choice((1, 1, 0)) for i in range(n)]
        loss = [1.0] * n
    elif kind == 3:  # trending with one step against the trend
        sign = rng.choice((1, -1))
        dice = [0.3 + sign * 0.02 * i for i in range(n)]
        loss = [1.0 - sign * 0.02 * i for i in range(n)]
        if n > 2:
            j = rng.randrange(1, n)
            dice[j] -= sign * 0.05
    elif kind == 4:  # integers and constants (plateaus)
        dice = [rng.choice((0, 1)) for _ in range(n)]
        loss = [rng.choice((1, 2, 2.0)) for _ in range(n)]
    else:  # plain noise
        dice = [rng.random() for _ in range(n)]
        loss = [rng.random() * 2 for _ in range(n)]
    if n and rng.random() < 0.1:
        bad = rng.choice((float("nan"), float("inf"), -float("inf")))
        (dice if rng.random() < 0.5 else loss)[rng.randrange(n)] = bad
    return dice, loss


def _curve(rng: random.Random, epochs: int) -> list[tuple[float, float]]:
    """A noisy learning curve; some diverge (NaN epochs) or collapse."""
    top, tau, noise = rng.uniform(0.5, 0.9), rng.uniform(3.0, 20.0), rng.uniform(0.0, 0.03)
    out = []
    for t in range(1, epochs + 1):
        dice = top * (1.0 - math.exp(-t / tau)) + rng.gauss(0.0, noise)
        loss = 1.2 * (1.0 - dice) + 0.1 + rng.gauss(0.0, noise)
        if rng.random() < 0.02:
            dice, loss = float("nan"), float("nan")
        elif rng.random() < 0.05:
            dice, loss = dice - 0.2, loss + 0.3
        out.append((dice, loss))
    return out


def _num(x: float | None) -> Any:
    return x if x is None or math.isfinite(x) else repr(x)


def trace(mod: ModuleType) -> dict[str, Any]:
    """What a seeded set of runs does with ``mod`` (an implementation of the agent module): every trend state,
    every decision, every table (Q-values, visits, epsilon, updates and the next draws of its RNG)."""
    cfg = mod.QLearningConfig
    configs = [
        cfg(),
        cfg(window=3, min_history=2),
        cfg(window=8, consistency=0.6, dice_tol=0.0),
        cfg(loss_tol=0.05, dice_tol=0.01, consistency=1.0),
    ]
    rng = random.Random(20240601)
    states = []
    for _ in range(4000):
        dice, loss = _trend_inputs(rng, rng.randrange(0, 11))
        states.append(str(mod.STATES.index(mod.analyze_trend(dice, loss, rng.choice(configs)))))

    scenarios = {
        "paper": (cfg(), 12, 120),
        # All Q-values equal (greedy ties), heavy exploration, narrow bounds (clamping, bound penalty), no cooldown.
        "ties_bounds": (cfg(q_init_high=0.0, epsilon=0.5, epsilon_decay=0.99, min_lr=1e-4, max_lr=4e-4,
                            base_lr=2e-4, patience=1, cooldown=0), 6, 80),
        "short_window": (cfg(window=3, min_history=2, patience=0, cooldown=2, alpha=0.3, gamma=0.5), 6, 80),
    }
    runs: dict[str, Any] = {}
    for name, (config, n_agents, epochs) in scenarios.items():
        table = mod.QTable(config, seed=len(name))
        agents = [mod.QLearningLRAgent(config, table=table) for _ in range(n_agents)]
        curves = [_curve(rng, epochs) for _ in agents]
        for e in range(epochs):
            for i, (agent, curve) in enumerate(zip(agents, curves)):
                dice, loss = curve[e]
                run = agent.run
                if i % 2 and run.since_decision + 1 < run.wait:  # the scheduler's path: no decision can fall
                    agent.record(dice, loss)
                else:
                    agent.step(dice, loss)
                if e == epochs // 2 and i % 3 == 0:  # a JSON round trip of the run mid-way
                    agent.load_state_dict(json.loads(json.dumps(agent.state_dict())))
        runs[name] = {
            "decisions": [[[d["epoch"], mod.STATES.index(d["state"]), mod.ACTIONS.index(d["action"]),
                            d["lr_before"], d["lr_after"], _num(d["reward"])] for d in a.run.decisions]
                          for a in agents],
            "lrs": [a.lr for a in agents],
            "best": [_num(a.run.best_dice) for a in agents],
            "q": [[table.q[s][a] for a in mod.ACTIONS] for s in mod.STATES],
            "visits": [[table.visits[s][a] for a in mod.ACTIONS] for s in mod.STATES],
            "epsilon": table.epsilon,
            "updates": table.updates,
            "next_draws": [table.rng.getrandbits(64) for _ in range(4)],
        }
    return {"states": "".join(states), "runs": runs}


def test_seeded_runs_reproduce_the_recorded_decisions_exactly():
    expected = json.loads(FIXTURE.read_text())
    got = json.loads(json.dumps(trace(agent_module)))  # the fixture's own encoding (tuples as lists)
    assert got["states"] == expected["states"], next(
        f"analyze_trend case {i}: state {STATES[int(a)]!r}, recorded {STATES[int(b)]!r}"
        for i, (a, b) in enumerate(zip(got["states"], expected["states"])) if a != b)
    for name, run in expected["runs"].items():
        for key, value in run.items():
            assert got["runs"][name][key] == value, f"scenario {name!r}: {key} differs from the recorded run"


def test_the_fixture_exercises_every_state_action_and_both_paths():
    """The pinned runs are worth pinning: every state and action occurs, LRs hit the bounds, rewards are paid."""
    data = json.loads(FIXTURE.read_text())
    assert set(data["states"]) == {str(i) for i in range(len(STATES))}
    decisions = [d for run in data["runs"].values() for agent in run["decisions"] for d in agent]
    assert len(decisions) > 500
    assert {d[2] for d in decisions} == set(range(len(agent_module.ACTIONS)))
    assert {d[1] for d in decisions} >= {0, 1, 2, 4}  # improving, worsening, plateau, mixed decided on
    assert any(d[4] == 4e-4 for d in decisions) and any(d[4] == 1e-4 for d in decisions)  # clamped at both bounds
    assert sum(d[5] is not None for d in decisions) > 400



def test_a_decision_record_has_exactly_the_decision_fields_in_order():
    """The record is built by hand (not ``dataclasses.asdict``): it must stay a Decision's fields, in order (the
    scheduler's journal snapshot stores a decision as its values in that order)."""
    agent = agent_module.QLearningLRAgent(agent_module.QLearningConfig(patience=0), seed=0)
    for i in range(4):
        agent.step(0.1 * i, 1.0 - 0.1 * i)
    assert agent.run.decisions
    for record in agent.run.decisions:
        assert list(record) == [f.name for f in fields(agent_module.Decision)]
    assert agent.decisions[-1] == agent_module.Decision(**agent.run.decisions[-1])
