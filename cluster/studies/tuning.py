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
   (``run_in_session`` of :mod:`medtune.cluster.studies.lr_study`, whose ``tune_lr_study`` drives both steps) trains
   every method on ``tuning.final_seeds`` (seeds the search never used) in one parallel, tracked session,
   scored on the test split as ``medtune run`` is.

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

from medtune.cluster.runs.console import tune_verbosity, verbose
from medtune.cluster.studies.lr_experiment import fit
from medtune.cluster.studies.session import BACKLOG_FILE, log
from medtune.config import to_dict
from medtune.dashboards.tuning_report import TunedReport
from medtune.errors import InputError
from medtune.searchers.search_spaces import NOT_SEARCHED, SPACES, Bound, check_overrides, on_edge, resolve
from medtune.tags import TAG_KIND, TAG_SESSION
from medtune.trainables.lr_control import CONFIG_KEY, LRControlConfig

__all__ = [
    "KIND_PARENT", "KIND_SEARCH", "PRIVATE_AGENT_NOTE", "SEARCH_DIR", "TAG_METHOD", "check_compare_tuning",
    "check_spaces", "compare_key", "final_spec", "method_bounds", "outcomes_methods", "qlearning_values",
    "search_compare", "search_epochs", "search_method", "searched", "to_tune", "tuned_report",
]

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


def _searcher(t: Any, free: bool):
    """Optuna's TPE (its first third of the trials random, at least 1, at most Optuna's default 10), or random
    search (``BasicVariantGenerator``); random when nothing is free to search."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if t.searcher == "random" or not free:
        return BasicVariantGenerator(random_state=t.seed)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    startup = max(1, min(10, t.trials // 3))
    if not verbose():  # Optuna logs "A new study created in memory" per method at INFO; --verbose keeps it
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=t.seed, n_startup_trials=startup))


def _parent_run(info: dict[str, Any], method: str, bounds: tuple[Bound, ...], t: Any, epochs: int) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(info["tracking_uri"])
    run = client.create_run(info["experiment_id"], run_name=f"search-{method}",
                            tags={TAG_SESSION: info["session"], TAG_KIND: KIND_PARENT, TAG_METHOD: method})
    params = {"method": method, "trials": t.trials, "epochs": epochs, "searcher": t.searcher,
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
    for key in ("best_val", "trials", "epochs", "wall_s"):
        value = outcome[key]
        if value is not None and math.isfinite(float(value)):
            client.log_metric(run_id, key, float(value))
    for step, point in enumerate(outcome["curve"], start=1):
        if point["best_so_far"] is not None:
            client.log_metric(run_id, "best_val_so_far", point["best_so_far"], step=step)
    client.set_terminated(run_id, status="FINISHED")


def _plain(value: Any) -> Any:
    """A sampled value as a plain Python number (Optuna and Tune may hand back numpy scalars)."""
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        return value
    return int(value) if float(value).is_integer() and "int" in type(value).__name__ else float(value)


def _score(result: Any, metric: str) -> float:
    value = (result.metrics or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def search_method(tuning: Any, method: str, bounds: tuple[Bound, ...], base_space: dict[str, Any], trainable: Any,
                  info: dict[str, Any], storage_dir: Path, *, metric: str, mode: str, epochs: int,
                  max_concurrent: int = 0, max_failures: int = 0, key: Any = None,
                  metrics: tuple[str, ...] | None = None) -> dict[str, Any]:
    """One method's search: ``tuning.trials`` trials of ``trainable`` over ``bounds`` (Ray Tune, the searcher and
    ASHA of ``tuning``), judged on ``metric`` (the validation score), each trial nested in MLflow under a
    parent run of the method.

    Args:
        base_space: the trials' config without the searched values (``search: True`` in it); the sampled values
            go to ``base_space["tuned"][method]``, ``{key(bound.key): value}``.
        key: maps a space's dotted key to the trainable's config key (default: itself).
        metrics: the result keys the trials' MLflow runs log (None: every number reported).

    Returns:
        The outcome: the chosen ``values`` (config keys) and ``chosen`` (parameter names), ``best_val``, the
        curve, the budget spent (``trials``, ``epochs``, ``wall_s``), ``edges`` (warnings), ``space``,
        ``search_seeds``, ``parent_run_id`` and ``test_keys`` (test scores a search trial reported anyway).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    # Ray, Tune and MLflow: only when a search runs, so loading a spec stays light
    from medtune.cluster.runs.progress import ProgressLog, trial_files
    from medtune.cluster.runs.tracking import MLflowTracker

    key = key or (lambda k: k)
    parent = _parent_run(info, method, bounds, tuning, epochs)
    free = any(not b.fixed for b in bounds)
    space = {**base_space, "tuned": {method: to_tune(tuple(replace(b, key=key(b.key)) for b in bounds))}}
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=max(1, epochs // 4), reduction_factor=3)
                 if tuning.asha and epochs > 1 else FIFOScheduler())
    tracker = MLflowTracker(info["tracking_uri"], info["experiment_id"], info["session"],
                            backlog=str(storage_dir.parent / BACKLOG_FILE), metrics=metrics,
                            tags={TAG_KIND: KIND_SEARCH, "mlflow.parentRunId": parent, TAG_METHOD: method})
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(metric=metric, mode=mode, search_alg=_searcher(tuning, free), scheduler=scheduler,
                                    num_samples=tuning.trials, reuse_actors=True,
                                    max_concurrent_trials=tuning.max_concurrent or max_concurrent or None),
        run_config=tune.RunConfig(
            name=method, storage_path=str(storage_dir),
            callbacks=[tracker, ProgressLog(f"search {method}", tuning.trials * epochs, metric), *trial_files()],
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=tune_verbosity(),
        ),
    )
    start = time.monotonic()
    results = fit(tuner)
    wall = time.monotonic() - start
    sign = 1.0 if mode == "max" else -1.0
    rows: list[dict[str, Any]] = []
    test_keys: set[str] = set()
    for i, r in enumerate(results, start=1):
        m = r.metrics or {}
        test_keys |= {k for k in m if k.startswith("test_")}
        values = ((r.config or {}).get("tuned") or {}).get(method) or {}
        rows.append({"trial": i, "values": {k: _plain(v) for k, v in values.items()},
                     "score": _score(r, metric), "epochs": int(m.get("epoch", 0) or 0),
                     "seed": (r.config or {}).get("seed"),
                     "full": int(m.get("epoch", 0) or 0) >= epochs and r.error is None})
    pool = [row for row in rows if row["full"] and not math.isnan(row["score"])] or \
           [row for row in rows if not math.isnan(row["score"])]
    if not pool:
        raise RuntimeError(f"every search trial of {method} failed or diverged; widen or move its space "
                           f"(tuning.spaces.{method}) and run again")
    best = max(pool, key=lambda row: sign * row["score"])
    curve, running = [], None
    for row in rows:
        if row in pool and (running is None or sign * row["score"] > sign * running):
            running = row["score"]
        curve.append({"trial": row["trial"], "val_score": None if math.isnan(row["score"]) else row["score"],
                      "epochs": row["epochs"], "best_so_far": running})
    names = {key(b.key): b.name for b in bounds}
    outcome: dict[str, Any] = {
        "method": method, "values": best["values"], "chosen": {names[k]: v for k, v in best["values"].items()},
        "best_val": best["score"], "metric": metric, "trials": len(rows), "epochs": sum(r["epochs"] for r in rows),
        "wall_s": wall, "curve": curve, "edges": on_edge(bounds, _unmap(bounds, best["values"], key)),
        "space": {b.name: [b.low, b.high, b.log] for b in bounds}, "search_seeds": sorted({r["seed"] for r in rows}),
        "parent_run_id": parent, "test_keys": sorted(test_keys),
    }
    _close_parent(info, parent, outcome)
    log(f"search {method}: best validation {metric} {best['score']:.4f} of {len(rows)} trials "
        f"({outcome['epochs']} epochs, {wall:.0f} s): "
        + ", ".join(f"{k}={v:.4g}" for k, v in outcome["chosen"].items()))
    return outcome


def _unmap(bounds: tuple[Bound, ...], values: dict[str, Any], key: Any) -> dict[str, Any]:
    """``values`` under config keys back under the space's own keys (what :func:`on_edge` reads)."""
    return {b.key: values[key(b.key)] for b in bounds if key(b.key) in values}


def qlearning_values(tuned: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The tuned ``qlearning`` settings (keys under ``prefix``) as the shared scheduler's section."""
    return {k[len(prefix):]: v for k, v in tuned.get("qlearning", {}).items() if k.startswith(prefix)}


def final_spec(spec: Any, outcomes: list[dict[str, Any]]) -> Any:
    """The spec of the final runs: the final seeds, each method's chosen settings as its ``tuned`` overrides
    (qlearning's also as the shared scheduler's ``qlearning`` section), no ``tuning`` left."""
    tuned = {o["method"]: o["values"] for o in outcomes}
    q = qlearning_values(tuned, "qlearning.")
    return replace(spec, seeds=tuple(spec.tuning.final_seeds), tuned=tuned, qlearning=replace(spec.qlearning, **q),
                   tuning=None)


# -- medtune.compare(..., tune=...): a user's own trainable ---------------------------------------------------------
def compare_key(key: str) -> str:
    """A space's key as a user trainable's config key: ``train.base_lr`` -> ``lr`` (LRControl's start LR),
    ``schedules.*`` / ``qlearning.*`` -> ``lr_control.schedules.*`` / ``lr_control.qlearning.*``."""
    if key == "train.base_lr":
        return "lr"
    return f"lr_control.{key}"


def check_compare_tuning(spec: Any, tuning: Any) -> dict[str, tuple[Bound, ...]]:
    """Before Ray starts: the overrides name the comparison's methods and parameters; the bounds of every
    searched method (at least one) resolve. Raises :class:`~medtune.errors.InputError`."""
    check_overrides(tuning.spaces, tuple(spec.methods))
    bounds = {m: resolve(m, spec.min_lr, spec.max_lr, tuning.epochs or spec.epochs, tuning.spaces.get(m))
              for m in spec.methods if m in SPACES}
    if not bounds:
        raise InputError(f"tune: none of the methods {', '.join(spec.methods)} has a search space; add one of "
                         f"{', '.join(SPACES)}")
    return bounds


def search_compare(spec: Any, tuning: Any, bounds: dict[str, tuple[Bound, ...]], trainable: Any, session_dir: Path,
                   info: dict[str, Any]) -> list[dict[str, Any]]:
    """The search of every method of a :func:`medtune.compare` call (Ray started), in method order."""
    from ray import tune  # only when a search runs: loading a spec stays light

    epochs = tuning.epochs or spec.epochs
    control = to_dict(LRControlConfig(epochs=epochs, min_lr=spec.min_lr, max_lr=spec.max_lr, metric=spec.metric,
                                      mode=spec.mode, loss_metric=spec.loss_metric, schedules=spec.schedules,
                                      qlearning=spec.qlearning, mailbox=None, task=info["task"],
                                      checkpoint_every=spec.checkpoint_every))
    base = {**spec.params, "study": "own", "seed": tuning.search_seed, "search": True, CONFIG_KEY: control}
    if spec.lr is not None:
        base["lr"] = spec.lr
    resources = tune.with_resources(trainable, {"cpu": spec.resources.cpus_per_trial,
                                                "gpu": spec.resources.gpus_per_trial})
    return [search_method(tuning, m, b, {**base, "method": m}, resources, info, session_dir / SEARCH_DIR,
                          metric=spec.metric, mode=spec.mode, epochs=epochs,
                          max_concurrent=spec.resources.max_concurrent,
                          max_failures=spec.max_failures, key=compare_key)
            for m, b in bounds.items()]


def tuned_report(report: Any, spec: Any, tuning: Any, outcomes: list[dict[str, Any]]) -> Any:
    """The comparison ``report`` with its tuning section (:class:`~medtune.dashboards.tuning_report.TunedReport`)."""
    settings = {"trials": tuning.trials, "epochs": tuning.epochs or spec.epochs, "searcher": tuning.searcher,
                "asha": tuning.asha, "metric": spec.metric, "search_seed": tuning.search_seed,
                "final_seeds": list(tuning.final_seeds)}
    notes = [f"{m}: not searched ({NOT_SEARCHED[m]})" for m in spec.methods if m in NOT_SEARCHED]
    if "qlearning" in outcomes_methods(outcomes):
        notes.append(PRIVATE_AGENT_NOTE)
    return TunedReport(report, outcomes, settings, notes)


def outcomes_methods(outcomes: list[dict[str, Any]]) -> list[str]:
    return [o["method"] for o in outcomes]
