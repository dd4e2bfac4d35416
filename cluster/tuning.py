"""The equal-budget tuning protocol: every method's own hyperparameters searched, then judged on fresh seeds.

``medtune tune SPEC`` (or ``medtune run`` / ``medtune submit`` of a spec with a ``tuning:`` section):

1. **Search**, one method after the other, each with the same budget (``tuning.trials`` trials of
   ``tuning.epochs`` epochs, one training seed ``tuning.search_seed``): Ray Tune over the method's space
   (:mod:`medtune.searchers.search_spaces`), with Optuna's TPE (``ray.tune.search.optuna.OptunaSearch``;
   Bergstra et al., NeurIPS 2011) or random search, and ASHA early stopping
   (``ray.tune.schedulers.ASHAScheduler``; Li et al., arXiv 1810.05934) when ``tuning.asha``. Trials are
   judged on the **validation** Dice only: the trainable runs with ``search: true``, which never reads the
   test split. ``qlearning`` search trials decide with a private agent each (no shared scheduler), so every
   configuration is judged on its own. ``pbt`` (itself a search) and ``qlearning_warm`` are not searched.
2. **Final runs**: the best configuration of each method (the best validation Dice at the last epoch among the
   trials that ran every epoch) becomes that method's ``tuned`` settings, and the study's own run path
   (``run_in_session`` of :mod:`medtune.cluster.lr_study`, whose ``tune_lr_study`` drives both steps) trains every method on ``tuning.final_seeds`` (seeds the
   search never used) in one parallel, tracked session, scored on the test split as ``medtune run`` is.

MLflow: per method one parent run (``medtune.kind = search-parent``) holding the space, the chosen
configuration and the budget spent, and one run per search trial nested under it (``mlflow.parentRunId``,
``medtune.kind = search``); the final runs are the session's ordinary trial runs. The report
(:mod:`medtune.dashboards.tuning_report`) adds the chosen configurations, the search curves, the budget each
method got and a warning for a choice on the edge of its space. Resuming covers the final runs only (the
session's spec holds the tuned settings once the search is done); an interrupted search starts again.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from medtune.cluster.session import log
from medtune.config import to_dict
from medtune.searchers.search_spaces import NOT_SEARCHED, SPACES, Bound, check_overrides, on_edge, resolve
from medtune.tags import TAG_KIND, TAG_SESSION

SEARCH_DIR = "search"
KIND_SEARCH, KIND_PARENT = "search", "search-parent"
TAG_METHOD = "medtune.method"
PRIVATE_AGENT_NOTE = ("qlearning: each search trial decided with a private agent of its configuration (no shared "
                      "scheduler), so each configuration was judged on its own; the final runs share the "
                      "session's Q-learning scheduler at the chosen settings")


def search_epochs(spec: Any) -> int:
    return spec.tuning.epochs or spec.train.epochs


def searched(spec: Any) -> list[str]:
    """The spec's methods that have a search space (in spec order)."""
    return [m for m in spec.methods if m in SPACES]


def method_bounds(spec: Any, method: str) -> tuple[Bound, ...]:
    return resolve(method, spec.train.min_lr, spec.train.max_lr, search_epochs(spec),
                   spec.tuning.spaces.get(method))


def check_spaces(spec: Any) -> None:
    """Before any trial: every ``tuning.spaces`` override names a method of the spec and a parameter of it,
    and every searched method's bounds resolve (raises :class:`InputError`, one line)."""
    check_overrides(spec.tuning.spaces, tuple(spec.methods))
    for method in searched(spec):
        method_bounds(spec, method)


def to_tune(bounds: tuple[Bound, ...]) -> dict[str, Any]:
    """``ray.tune`` distributions of ``bounds``: ``loguniform`` / ``uniform``, ``lograndint`` / ``randint``
    (upper bound inclusive here, exclusive in Tune), the value itself when ``low == high``."""
    from ray import tune

    out: dict[str, Any] = {}
    for b in bounds:
        if b.fixed:
            out[b.key] = int(b.low) if b.integer else b.low
        elif b.integer:
            out[b.key] = (tune.lograndint if b.log else tune.randint)(int(b.low), int(b.high) + 1)
        else:
            out[b.key] = (tune.loguniform if b.log else tune.uniform)(b.low, b.high)
    return out


def _searcher(spec: Any, free: bool):
    """Optuna's TPE (its first third of the trials random, at least 1, at most Optuna's default 10), or random
    search (``BasicVariantGenerator``); random when nothing is free to search."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    t = spec.tuning
    if t.searcher == "random" or not free:
        return BasicVariantGenerator(random_state=t.seed)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    startup = max(1, min(10, t.trials // 3))
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=t.seed, n_startup_trials=startup))


def _parent_run(info: dict[str, Any], method: str, bounds: tuple[Bound, ...], spec: Any) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(info["tracking_uri"])
    run = client.create_run(info["experiment_id"], run_name=f"search-{method}",
                            tags={TAG_SESSION: info["session"], TAG_KIND: KIND_PARENT, TAG_METHOD: method})
    t = spec.tuning
    params = {"method": method, "trials": t.trials, "epochs": search_epochs(spec), "searcher": t.searcher,
              "asha": t.asha, "search_seed": t.search_seed,
              **{f"space.{b.name}": f"[{b.low:.4g}, {b.high:.4g}]{' log' if b.log else ''}" for b in bounds}}
    for key, value in params.items():
        client.log_param(run.info.run_id, key, str(value))
    return run.info.run_id


def _close_parent(info: dict[str, Any], run_id: str, outcome: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(info["tracking_uri"])
    for name, value in outcome["chosen"].items():
        client.log_param(run_id, f"chosen.{name}", str(value))
    for key in ("best_val_dice", "trials", "epochs", "wall_s"):
        value = outcome[key]
        if value is not None and math.isfinite(float(value)):
            client.log_metric(run_id, key, float(value))
    for step, point in enumerate(outcome["curve"], start=1):
        if point["best_so_far"] is not None:
            client.log_metric(run_id, "best_val_dice_so_far", point["best_so_far"], step=step)
    client.set_terminated(run_id, status="FINISHED")


def _plain(value: Any) -> Any:
    """A sampled value as a plain Python number (Optuna and Tune may hand back numpy scalars)."""
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        return value
    return int(value) if float(value).is_integer() and "int" in type(value).__name__ else float(value)


def _score(result: Any) -> float:
    value = (result.metrics or {}).get("dice")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def search_method(spec: Any, method: str, session_dir: Path, info: dict[str, Any], trainable: Any) -> dict[str, Any]:
    """One method's search (the study's ``trainable``, run with ``search: true``); returns its outcome: the
    chosen ``values`` (dotted keys) and ``chosen`` (parameter names), the curve, the budget spent, edge
    warnings."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from medtune.cluster.console import tune_verbosity
    from medtune.cluster.progress import ProgressLog
    from medtune.cluster.session import BACKLOG_FILE
    from medtune.cluster.tracking import MLflowTracker

    t, epochs = spec.tuning, search_epochs(spec)
    bounds = method_bounds(spec, method)
    parent = _parent_run(info, method, bounds, spec)
    free = any(not b.fixed for b in bounds)
    space = {
        "study": "lr", "method": method, "seed": t.search_seed, "lr": spec.train.base_lr,
        "data": to_dict(spec.data), "model": to_dict(spec.model), "train": {**to_dict(spec.train), "epochs": epochs},
        "schedules": to_dict(spec.schedules), "qlearning": to_dict(spec.qlearning), "pbt": to_dict(spec.pbt),
        "tuned": {method: to_tune(bounds)}, "search": True, "mailbox": None, "task": info["task"],
        "threads": max(1, int(spec.resources.cpus_per_trial)),
    }
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=max(1, epochs // 4), reduction_factor=3)
                 if t.asha and epochs > 1 else FIFOScheduler())
    tracker = MLflowTracker(info["tracking_uri"], info["experiment_id"], info["session"],
                            backlog=str(session_dir / BACKLOG_FILE),
                            tags={TAG_KIND: KIND_SEARCH, "mlflow.parentRunId": parent, TAG_METHOD: method})
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(metric="dice", mode="max", search_alg=_searcher(spec, free), scheduler=scheduler,
                                    num_samples=t.trials, reuse_actors=True,
                                    max_concurrent_trials=t.max_concurrent or spec.resources.max_concurrent or None),
        run_config=tune.RunConfig(
            name=method, storage_path=str(session_dir / SEARCH_DIR),
            callbacks=[tracker, ProgressLog(f"search {method}", t.trials * epochs, "dice")],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=tune_verbosity(),
        ),
    )
    start = time.monotonic()
    results = list(tuner.fit())
    wall = time.monotonic() - start
    rows = []
    for i, r in enumerate(results, start=1):
        m = r.metrics or {}
        values = ((r.config or {}).get("tuned") or {}).get(method) or {}
        rows.append({"trial": i, "values": {k: _plain(v) for k, v in values.items()},
                     "score": _score(r), "epochs": int(m.get("epoch", 0) or 0), "seed": (r.config or {}).get("seed"),
                     "full": int(m.get("epoch", 0) or 0) >= epochs and r.error is None})
    pool = [row for row in rows if row["full"] and not math.isnan(row["score"])] or \
           [row for row in rows if not math.isnan(row["score"])]
    if not pool:
        raise RuntimeError(f"every search trial of {method} failed or diverged; widen or move its space "
                           f"(tuning.spaces.{method}) and run again")
    best = max(pool, key=lambda row: row["score"])
    curve, running = [], None
    for row in rows:
        if row in pool and (running is None or row["score"] > running):
            running = row["score"]
        curve.append({"trial": row["trial"], "val_dice": None if math.isnan(row["score"]) else row["score"],
                      "epochs": row["epochs"], "best_so_far": running})
    names = {b.key: b.name for b in bounds}
    outcome = {
        "method": method, "values": best["values"], "chosen": {names[k]: v for k, v in best["values"].items()},
        "best_val_dice": best["score"], "trials": len(rows), "epochs": sum(r["epochs"] for r in rows),
        "wall_s": wall, "curve": curve, "edges": on_edge(bounds, best["values"]),
        "space": {b.name: [b.low, b.high, b.log] for b in bounds}, "search_seeds": sorted({r["seed"] for r in rows}),
        "parent_run_id": parent,
    }
    _close_parent(info, parent, outcome)
    log(f"search {method}: best validation Dice {best['score']:.4f} of {len(rows)} trials "
        f"({outcome['epochs']} epochs, {wall:.0f} s): "
        + ", ".join(f"{k}={v:.4g}" for k, v in outcome["chosen"].items()))
    return outcome


def final_spec(spec: Any, outcomes: list[dict[str, Any]]) -> Any:
    """The spec of the final runs: the final seeds, each method's chosen settings as its ``tuned`` overrides
    (qlearning's also as the shared scheduler's ``qlearning`` section), no ``tuning`` left."""
    tuned = {o["method"]: o["values"] for o in outcomes}
    q = {k.split(".", 1)[1]: v for k, v in tuned.get("qlearning", {}).items() if k.startswith("qlearning.")}
    return replace(spec, seeds=tuple(spec.tuning.final_seeds), tuned=tuned, qlearning=replace(spec.qlearning, **q),
                   tuning=None)
