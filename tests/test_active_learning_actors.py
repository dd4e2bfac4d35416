"""Killing the Learner and the Annotator actors mid-run on a real local Ray (issue 4, "Faults and bad input").

Shows, on the real actors of :mod:`medtune.trainables.active_learning_actors` (``start_actors`` + ``run_on_actors``),
that a DRLA run whose Learner actor is killed after round 1 and whose Annotator actor is killed after
round 2 (``ray.kill(..., no_restart=False)``: Ray restarts both from their constructors):

* recovers twice (``on_recover``) and finishes at the last reporting fraction, resuming the second
  time from round 2's checkpoint;
* loses and double-counts no annotation: the durable JSON-lines log holds each pool index once, its
  count equals the restarted Annotator's ``spent()`` and the final labeled count, and its request ids
  are ``init, round-1, ...`` with no gap and no repeat;
* reports every round exactly once, in order;
* ends with exactly the run an uninterrupted in-process run with the same seed gives: the same samples
  annotated in every request, the same labeled counts, bit-identical macro- and micro-F1 per round and
  the same DDPG rewards. (Exact because the Learner checkpoint carries weights, optimizer, batch-order
  generator and the fit counter that seeds the dropout streams, and both runs use one torch thread.)

A second run kills the Learner after round 1 and waits until Ray has restarted it before the loop goes
on: no call fails then, yet the loop must notice the fresh Learner (recover once) and end with the same
run. (This fails on the current ``ActorProxy``/``run_on_actors``, which only react to ``RayActorError``:
see the test's docstring.)

Also (unit level, no Ray cluster): the placement-group bundles of a trial (``bundles(cpus, gpus)``, as
``medtune.cluster.studies.al_study`` hands them to Tune) add up to the trial's CPUs and put its GPUs on the Learner's
bundle only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import pytest

from medtune.trainables.active_learning import run_active_learning
from medtune.trainables.al_annotator import Annotator
from medtune.trainables.al_config import ActiveLearningConfig, LearnerConfig
from medtune.trainables.al_learner import Learner

pytestmark = pytest.mark.integration

SEED = 0
METHOD = "drla"
# digits, 40 training images per class: a pool of 400; 10% per class to start, then 26/54/100% with n_s = 100
CFG = ActiveLearningConfig(initial_fraction=0.1, n_s=100, fractions=(0.26, 0.54, 1.0),
                           learner=LearnerConfig(width=8, initial_epochs=3, epochs_per_round=1, all_epochs=2))
EXPECTED_LABELED = [40, 104, 160, 216, 308, 400]   # 40 -> 104 in one round, then gaps of 112 and 184 in two each


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.setenv("RAY_DEDUP_LOGS", "0")
        if ray.is_initialized():
            ray.shutdown()
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            yield ray
        finally:
            ray.shutdown()


def canonical(d):
    """``d`` with fresh C-order image arrays, i.e. the strides the actors get from the object store.

    A ``(N, 1, H, W)`` array's size-1 channel axis may carry any stride (``digits_images`` gives
    ``(256, 4, 32, 4)``); torch then takes it for channels-last and runs another conv kernel, whose
    float results differ in the last bits from the NCHW kernel the actors' deserialised copies get.
    The in-process reference must see the same layout as the actors to be comparable bit for bit.
    """
    copy = lambda a: np.array(a, order="C", copy=True)                     # noqa: E731
    return dataclasses.replace(d, train_images=copy(d.train_images), val_images=copy(d.val_images),
                               test_images=copy(d.test_images))


@pytest.fixture(scope="module")
def data():
    from medtune.trainables.classification_data import ClassificationDataConfig, load_classification

    d = canonical(load_classification(ClassificationDataConfig(source="digits", few_shot=40)))
    assert len(d.train_labels) == 400
    return d


def _read_log(path) -> tuple[dict, list[dict]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return records[0], records[1:]


def _pid(ray, handle) -> int:
    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=600)  # slow starts on a busy machine


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The same run, uninterrupted, in this process with plain objects: ``(result, log records)``."""
    import torch

    torch.set_num_threads(1)                                      # as the Learner actor (threads = int(cpus) = 1)
    root = tmp_path_factory.mktemp("reference")
    result = run_active_learning(
        METHOD, SEED, Annotator(data.train_labels, None, root / "annotations.jsonl", data.num_classes),
        Learner(data.train_images, data.test_images, data.test_labels, data.num_classes, CFG.learner, SEED, "cpu"),
        CFG, state_dir=root / "state")
    assert [r["labeled"] for r in result.history] == EXPECTED_LABELED
    return result, _read_log(root / "annotations.jsonl")[1]


def test_killed_learner_and_annotator_are_recovered_without_losing_or_double_counting(ray_cluster, data, reference,
                                                                                      tmp_path):
    from medtune.trainables.active_learning_actors import run_on_actors, start_actors

    ray = ray_cluster
    reference, ref_records = reference

    # the run on actors, killing the Learner after round 1 and the Annotator after round 2
    log = tmp_path / "run" / "annotations.jsonl"
    annotator, learner = start_actors(data, CFG, SEED, str(log), None)
    pids_before = {"annotator": _pid(ray, annotator), "learner": _pid(ray, learner)}
    reports: list[dict] = []
    killed: list[tuple[str, int]] = []
    recoveries: list[int] = []

    def report(row: dict) -> None:
        reports.append(dict(row))
        if row["round"] == 1 and not any(k == "learner" for k, _ in killed):
            killed.append(("learner", row["round"]))
            ray.kill(learner, no_restart=False)
        elif row["round"] == 2 and not any(k == "annotator" for k, _ in killed):
            killed.append(("annotator", row["round"]))
            ray.kill(annotator, no_restart=False)

    result = run_on_actors(METHOD, SEED, annotator, learner, CFG, str(tmp_path / "run" / "state"), report,
                           on_recover=lambda n, _msg: recoveries.append(n))

    # both actors really died and were restarted by Ray; the loop recovered from each death once
    assert killed == [("learner", 1), ("annotator", 2)]
    assert _pid(ray, learner) != pids_before["learner"]
    assert _pid(ray, annotator) != pids_before["annotator"]
    assert recoveries == [1, 2], "on_recover must be called once per actor death"
    assert result.resumed_from == 2                               # the second recovery resumed after round 2

    # the run finished at the last fraction
    assert result.history[-1]["labeled"] == 400 and result.history[-1]["labeled_fraction"] == 1.0

    # the annotation log: one header, then each pool index exactly once; budget == log == labeled
    header, records = _read_log(log)
    assert header["kind"] == "header" and header["pool_size"] == 400
    assert all(rec["kind"] == "annotation" for rec in records)
    indices = [i for rec in records for i in rec["indices"]]
    assert len(indices) == len(set(indices)), "an index was annotated twice"
    spent = ray.get(annotator.spent.remote())                     # asked of the restarted Annotator
    assert len(indices) == spent == result.history[-1]["labeled"] == 400
    assert ray.get(annotator.remaining.remote()) == 0
    ids = [rec["request_id"] for rec in records]
    assert ids == ["init"] + [f"round-{r}" for r in range(1, len(EXPECTED_LABELED))]
    assert ray.get(annotator.request_ids.remote()) == ids         # the restarted Annotator replayed the log
    for rec in records:                                           # the labels logged are the oracle's
        assert rec["labels"] == data.train_labels[rec["indices"]].tolist()

    # every round reported once, in order, with what the loop returned
    assert [r["round"] for r in reports] == list(range(len(EXPECTED_LABELED)))
    assert reports == result.history

    # the same run as without faults: same samples per request, counts, F1 (exact) and rewards
    assert [(r["request_id"], r["indices"]) for r in records] == [(r["request_id"], r["indices"]) for r in ref_records]
    assert [r["labeled"] for r in result.history] == EXPECTED_LABELED
    assert [(r["macro_f1"], r["micro_f1"]) for r in result.history] == \
        [(r["macro_f1"], r["micro_f1"]) for r in reference.history]
    # DDPG: the resumed agent saw the same transitions (rewards of rounds 3.. come from the resumed call)
    assert [r["round"] for r in result.rewards] == list(range(1, len(EXPECTED_LABELED)))
    assert [r["reward"] for r in result.rewards] == [r["reward"] for r in reference.rewards]
    assert np.isfinite([r["critic_loss"] for r in result.rewards]).all()


# =========================================================================== placement-group bundles (no Ray cluster)


@pytest.mark.parametrize("cpus", [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
@pytest.mark.parametrize("gpus", [0.0, 0.5, 1.0])
def test_trial_bundles_sum_to_the_trial_cpus_and_give_the_gpu_to_the_learner(cpus, gpus):
    from medtune.cluster.studies.al_study import ActiveLearningStudySpec, _trainable
    from medtune.trainables.active_learning_actors import bundles

    b = bundles(cpus, gpus)
    assert len(b) == 3                                            # 0: the loop (trial), 1: Learner, 2: Annotator
    assert all(bundle["CPU"] > 0 for bundle in b)
    assert sum(bundle["CPU"] for bundle in b) == pytest.approx(cpus, abs=1e-9), b
    assert b[1]["CPU"] == max(bundle["CPU"] for bundle in b)      # the Learner trains: the biggest share
    if gpus:
        assert b[1]["GPU"] == gpus
    else:
        assert "GPU" not in b[1]
    assert "GPU" not in b[0] and "GPU" not in b[2]

    # what the study hands to Tune for every trial
    spec = ActiveLearningStudySpec()
    spec = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, cpus_per_trial=cpus,
                                                                   gpus_per_trial=gpus))
    pgf = _trainable(spec, None)._resources
    assert pgf.bundles == [{k: v for k, v in bundle.items()} for bundle in b]
    assert pgf.required_resources.get("CPU") == pytest.approx(cpus, abs=1e-9)
    assert pgf.required_resources.get("GPU", 0.0) == gpus


def test_a_learner_restarted_between_two_calls_is_noticed_and_reloaded(ray_cluster, data, reference, tmp_path):
    """The Learner dies and Ray has restarted it (fresh weights) before the loop's next call.

    No call fails then (the next one reaches the new, healthy process), so nothing raises
    ``RayActorError``; the loop must still notice that its Learner lost its state and reload the round
    checkpoint. Otherwise it goes on training a freshly initialised network and the F1 curve is wrong.
    """
    from medtune.trainables.active_learning_actors import run_on_actors, start_actors

    ray = ray_cluster
    reference, ref_records = reference
    annotator, learner = start_actors(data, CFG, SEED, str(tmp_path / "annotations.jsonl"), None)
    old_pid = _pid(ray, learner)
    recoveries: list[int] = []
    killed: list[int] = []

    def report(row: dict) -> None:
        if row["round"] == 1 and not killed:
            killed.append(1)
            ray.kill(learner, no_restart=False)
            deadline = time.time() + 120
            while True:                                           # until the restarted process answers
                try:
                    if _pid(ray, learner) != old_pid:
                        break
                except ray.exceptions.RayActorError:
                    pass
                assert time.time() < deadline, "Ray did not restart the Learner"
                time.sleep(0.2)

    result = run_on_actors(METHOD, SEED, annotator, learner, CFG, str(tmp_path / "state"), report,
                           on_recover=lambda n, _msg: recoveries.append(n))
    assert _pid(ray, learner) != old_pid
    assert recoveries == [1], "the restarted Learner was used without reloading its checkpoint"
    _, records = _read_log(tmp_path / "annotations.jsonl")
    assert [(r["request_id"], r["indices"]) for r in records] == [(r["request_id"], r["indices"]) for r in ref_records]
    assert [(r["labeled"], r["macro_f1"], r["micro_f1"]) for r in result.history] == \
        [(r["labeled"], r["macro_f1"], r["micro_f1"]) for r in reference.history]
