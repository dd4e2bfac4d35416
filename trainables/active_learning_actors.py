"""The DRLA active-learning loop on Ray actors: the Tune trainable of the active-learning study.

Each (method, seed) trial owns two actors, placed in the trial's placement
group (bundle 0 is the trial itself, bundle 1 the Learner, bundle 2 the
Annotator):

* **Annotator** (:class:`~medtune.trainables.al_annotator.Annotator`): holds the
  oracle labels, reveals only the indices asked for, caps the budget and
  appends every annotation to a durable JSON-lines log before answering. Its
  interface is the :class:`~medtune.trainables.al_annotator.AnnotationQueue` a human
  annotation queue would implement.
* **Learner** (:class:`~medtune.trainables.al_learner.Learner`): holds the MONAI
  classifier, trains, predicts the class probabilities (the DRLA state) and
  evaluates, on the GPU of its bundle when it has one.

The loop itself (:func:`~medtune.trainables.active_learning.run_active_learning`,
with the DDPG agent or a strategy) runs in the trial and calls the actors
through :class:`ActorProxy`, which forwards each method call.

Faults: both actors are created with ``max_restarts``; Ray restarts a killed
actor by calling its constructor again with the same arguments, so the
Annotator replays its log and the Learner starts fresh. A call that meets a
dead actor raises ``RayActorError``; a call that meets an actor restarted since
the proxy was made (each life has its own incarnation id) raises
:class:`ActorRestarted`, so a restart is never missed. :func:`run_on_actors` then
waits for the actor and calls ``run_active_learning`` again with the same
``state_dir``, which reloads the Learner's and the agent's last round checkpoint
and reuses logged annotations, so nothing is annotated or counted twice.

``state_dir`` and the annotation log must be on storage every node sees (the
session folder, like Tune's ``storage_path``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medtune.config import from_dict
from medtune.trainables.active_learning import ActiveLearningResult, run_active_learning
from medtune.trainables.al_annotator import Annotator
from medtune.trainables.al_config import ActiveLearningConfig
from medtune.trainables.al_learner import Learner

__all__ = [
    "ANNOTATOR_SHARE", "ActorProxy", "ActorRestarted", "LEARNER_SHARE", "LOOP_SHARE", "MAX_RECOVERIES", "bundles",
    "run_on_actors", "start_actors", "train_active_learning",
]

log = logging.getLogger(__name__)

MAX_RECOVERIES = 5
_PINNED: dict[str, tuple] = {}  # actor id -> the object-store arguments its restarts need
# Bundle shares of a trial's CPUs: the loop (DDPG, selection) is light, the Learner trains, the Annotator only answers.
LOOP_SHARE, LEARNER_SHARE, ANNOTATOR_SHARE = 0.2, 0.75, 0.05


def bundles(cpus: float, gpus: float) -> list[dict[str, float]]:
    """The placement-group bundles of one trial: loop, Learner (with the trial's GPUs), Annotator.

    Shares are rounded to Ray's 1e-4 resolution and the Annotator gets the remainder, so the bundles sum to
    exactly ``cpus``.
    """
    loop, learner_cpus = round(cpus * LOOP_SHARE, 4), round(cpus * LEARNER_SHARE, 4)
    learner = {"CPU": learner_cpus}
    if gpus:
        learner["GPU"] = gpus
    return [{"CPU": loop}, learner, {"CPU": round(cpus - loop - learner_cpus, 4)}]


class ActorRestarted(RuntimeError):
    """The actor behind a proxy was restarted by Ray since the proxy was made: its state is gone."""


class _Incarnated:
    """Gives an actor an id per life, so a caller notices a restart even when no call failed."""

    def _start_incarnation(self) -> None:
        import uuid

        self._incarnation = uuid.uuid4().hex

    def incarnation(self) -> str:
        return self._incarnation

    def call(self, incarnation: str, name: str, args: tuple, kwargs: dict) -> Any:
        if incarnation != self._incarnation:
            raise ActorRestarted(f"{type(self).__name__} was restarted (state reset); resume from the checkpoint")
        return getattr(self, name)(*args, **kwargs)

    def ping(self) -> bool:
        return True


class ActorProxy:
    """Forwards ``proxy.name(*args)`` to the actor, checking it is still the life this proxy was made for.

    A restarted actor answers :class:`ActorRestarted` (inside a ``RayTaskError``) instead of running the call
    on its fresh state; :func:`run_on_actors` treats that like a dead actor.
    """

    def __init__(self, handle: Any) -> None:
        import ray

        self._handle = handle
        self._incarnation = ray.get(handle.incarnation.remote())

    def __getattr__(self, name: str) -> Callable[..., Any]:
        import ray

        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: ray.get(self._handle.call.remote(self._incarnation, name, args, kwargs))


class _LearnerActor(Learner, _Incarnated):
    def __init__(self, *args: Any, threads: int = 1, **kwargs: Any) -> None:
        import ray
        import torch

        torch.set_num_threads(max(1, threads))
        device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        super().__init__(*args, device=device, **kwargs)  # type: ignore[misc]  # args stop before device
        self._start_incarnation()


class _AnnotatorActor(Annotator, _Incarnated):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_incarnation()


def start_actors(data: Any, config: ActiveLearningConfig, seed: int, log_path: str, budget: int | None,
                 cpus: float = 1.0, gpus: float = 0.0, name: str = "") -> tuple[Any, Any]:
    """Create the trial's Annotator and Learner actors (in the current placement group when there is one).

    Args:
        data: the study's :class:`~medtune.trainables.classification_data.ClassificationData`.
        log_path: the Annotator's durable log.
        budget: labels the Annotator may give out (None: the whole pool).
        name: a suffix for the actors' names (visible in ``ray list actors``); unique per attempt, so a retried
            trial never meets the name of its previous attempt's actors before Ray has released it.

    Returns:
        ``(annotator, learner)`` actor handles.
    """
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = ray.util.get_current_placement_group()
    shares = bundles(cpus, gpus)

    def placed(index: int) -> dict[str, Any]:
        if pg is None:
            return {}
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)}

    # Ray restarts an actor by running its constructor again on the same arguments. Arguments that live in the
    # object store must outlive the first construction (ray-project/ray#53727), so they are put there here and
    # pinned for as long as this process holds the actors.
    pool, test_x, test_y, labels = (ray.put(a) for a in (data.train_images, data.test_images, data.test_labels,
                                                         data.train_labels))
    learner_res = shares[1]
    learner = ray.remote(_LearnerActor).options(
        num_cpus=learner_res["CPU"], num_gpus=learner_res.get("GPU", 0), max_restarts=MAX_RECOVERIES,
        name=f"medtune-learner-{name}" if name else None, **placed(1),
    ).remote(pool, test_x, test_y, data.num_classes, config.learner, seed,
             threads=max(1, int(learner_res["CPU"] + 0.5)))
    annotator = ray.remote(_AnnotatorActor).options(
        num_cpus=shares[2]["CPU"], max_restarts=MAX_RECOVERIES,
        name=f"medtune-annotator-{name}" if name else None, **placed(2),
    ).remote(labels, budget, log_path, data.num_classes)
    # an ActorHandle (Ray's stubs allow the class as well)
    _PINNED[learner._actor_id.hex()] = (pool, test_x, test_y, labels)  # type: ignore[union-attr]
    return annotator, learner


def _wait_alive(handles: list[Any], timeout: float = 600.0) -> None:  # a restart imports torch: slow on a busy machine
    import ray

    deadline = time.time() + timeout
    for h in handles:
        while True:
            try:
                ray.get(h.ping.remote(), timeout=30)
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)


def run_on_actors(method: str, seed: int, annotator: Any, learner: Any, config: ActiveLearningConfig,
                  state_dir: str, report: Callable[[dict[str, Any]], None] | None = None,
                  on_recover: Callable[[int, str], None] | None = None) -> ActiveLearningResult:
    """``run_active_learning`` through the actors, recovering from actor deaths.

    Each time an actor dies mid-run, wait until Ray has restarted it and run the loop again from
    ``state_dir`` (at most :data:`MAX_RECOVERIES` times).
    """
    import ray

    recoveries = 0
    while True:
        try:
            return run_active_learning(method, seed, ActorProxy(annotator), ActorProxy(learner), config, report,
                                       state_dir=state_dir)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            restarted = isinstance(exc, ActorRestarted) or isinstance(getattr(exc, "cause", None), ActorRestarted)
            if isinstance(exc, ray.exceptions.RayTaskError) and not restarted:
                raise

            recoveries += 1
            if recoveries > MAX_RECOVERIES:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            log.warning(f"an actor of {method} seed {seed} died ({first}); restarting it and resuming from "
                  f"round checkpoint {state_dir} (recovery {recoveries}/{MAX_RECOVERIES})")
            _wait_alive([annotator, learner])
            if on_recover is not None:
                on_recover(recoveries, first)


def train_active_learning(config: dict[str, Any], data: Any = None) -> None:
    """Ray Tune function trainable for one (method, seed) of the active-learning study.

    Args:
        config: ``method``, ``seed``, ``loop`` (an :class:`ActiveLearningConfig` as a dict), ``budget``
            (0: the whole pool), ``state_root`` (the session folder's shared area), ``cpus``, ``gpus``.
        data: the study's :class:`~medtune.trainables.classification_data.ClassificationData` (object store).

    Reports every round ``epoch`` (round + 1, the MLflow step), ``round``, ``labeled``,
    ``labeled_fraction``, ``macro_f1``, ``micro_f1``, plus ``recoveries`` (actor restarts so far), and
    then once more the last round with ``done=1`` and ``labels_to_target`` (-1: ``loop.target_f1`` not reached).
    """
    import uuid

    from ray import tune


    cfg = from_dict(ActiveLearningConfig, config.get("loop"), "loop")
    method, seed = config["method"], int(config["seed"])
    root = Path(config["state_root"]) / f"{method}-seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    annotator, learner = start_actors(data, cfg, seed, str(root / "annotations.jsonl"),
                                      int(config.get("budget") or 0) or None,
                                      float(config.get("cpus", 1.0)), float(config.get("gpus", 0.0)),
                                      name=f"{tune.get_context().get_trial_id()}-{uuid.uuid4().hex[:6]}")
    recovered = {"n": 0}

    def report(row: dict[str, Any]) -> None:
        tune.report({**row, "epoch": int(row["round"]) + 1, "recoveries": recovered["n"]})

    result = run_on_actors(method, seed, annotator, learner, cfg, str(root / "state"), report,
                           on_recover=lambda n, _: recovered.__setitem__("n", n))
    # The end, for Tune's result (not a new MLflow step: the tracker skips an epoch it already has).
    last = result.history[-1]
    tune.report({**last, "epoch": int(last["round"]) + 1, "recoveries": recovered["n"], "done": 1,
                 "labels_to_target": -1 if result.labels_to_target is None else result.labels_to_target})
