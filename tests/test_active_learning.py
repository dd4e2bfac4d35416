"""The active-learning roles without Ray: Annotator (budget, durable log, restart), Learner, the loop (paper 001)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from medtune.config import from_dict
from medtune.errors import InputError
from medtune.trainables.active_learning import labels_to_target, run_active_learning, scores_at_fractions
from medtune.trainables.al_annotator import (
    AnnotationError,
    AnnotationQueue,
    Annotator,
    BudgetExceeded,
    check_labels,
    stratified_initial,
)
from medtune.trainables.al_config import METHODS, ActiveLearningConfig, LearnerConfig, milestone_counts
from medtune.trainables.al_learner import Learner, make_al_classifier

torch.set_num_threads(1)

LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


# =========================================================================== Annotator


def test_annotator_reveals_only_what_is_asked_and_counts_it(tmp_path):
    ann = Annotator(LABELS, budget=6, log_path=tmp_path / "log.jsonl")
    assert isinstance(ann, AnnotationQueue)
    assert ann.annotate(np.array([4, 2]), "r1").tolist() == [1, 2]
    assert ann.spent() == 2 and ann.remaining() == 4
    idx, lab = ann.labeled()
    assert idx.tolist() == [4, 2] and lab.tolist() == [1, 2]
    assert ann.lookup("r1")[0].tolist() == [4, 2] and ann.lookup("nope") is None


def test_budget_is_capped_and_an_over_budget_request_reveals_nothing(tmp_path):
    log = tmp_path / "log.jsonl"
    ann = Annotator(LABELS, budget=3, log_path=log)
    ann.annotate([0, 1], "a")
    with pytest.raises(BudgetExceeded, match="2 of 3 spent, 1 left"):
        ann.annotate([2, 3], "b")
    assert ann.spent() == 2 and ann.lookup("b") is None
    assert len(log.read_text().splitlines()) == 2                 # header + request "a" only
    ann.annotate([2], "c")
    assert ann.remaining() == 0
    with pytest.raises(BudgetExceeded):
        ann.annotate([5])


def test_every_annotation_is_on_disk_before_it_is_returned(tmp_path):
    log = tmp_path / "log.jsonl"
    ann = Annotator(LABELS, log_path=log)
    labels = ann.annotate([7, 8], "round-1")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[0]["kind"] == "header" and records[0]["pool_size"] == 10
    assert records[-1] == {"kind": "annotation", "request_id": "round-1", "indices": [7, 8], "labels": labels.tolist()}


def test_reload_after_a_crash_gives_identical_state(tmp_path):
    log = tmp_path / "log.jsonl"
    ann = Annotator(LABELS, budget=8, log_path=log)
    ann.annotate([0, 3], "init")
    ann.annotate([5], "round-1")
    ann.annotate([9, 1])                                           # auto id
    del ann                                                        # "crash": nothing but the log survives
    again = Annotator(LABELS, budget=8, log_path=log)
    assert again.spent() == 5 and again.remaining() == 3
    assert again.labeled()[0].tolist() == [0, 3, 5, 9, 1] and again.labeled()[1].tolist() == [0, 0, 2, 0, 1]
    assert again.request_ids() == ["init", "round-1", "auto-2"]
    with pytest.raises(AnnotationError, match="already annotated"):
        again.annotate([5], "round-2")


def test_a_repeated_request_is_answered_again_without_counting_twice(tmp_path):
    log = tmp_path / "log.jsonl"
    ann = Annotator(LABELS, log_path=log)
    first = ann.annotate([6, 2], "round-3")
    assert ann.annotate([6, 2], "round-3").tolist() == first.tolist()
    assert ann.spent() == 2 and len(log.read_text().splitlines()) == 2
    restarted = Annotator(LABELS, log_path=log)                    # the retry arrives after a restart
    assert restarted.annotate([6, 2], "round-3").tolist() == first.tolist() and restarted.spent() == 2
    with pytest.raises(AnnotationError, match="other indices"):
        restarted.annotate([6, 1], "round-3")


def test_a_torn_last_line_is_dropped_and_a_corrupt_middle_line_is_an_error(tmp_path):
    log = tmp_path / "log.jsonl"
    Annotator(LABELS, log_path=log).annotate([1], "a")
    with open(log, "a") as f:
        f.write('{"kind": "annotation", "request_id": "b", "indi')   # crash in the middle of a write
    ann = Annotator(LABELS, log_path=log)
    assert ann.spent() == 1 and ann.lookup("b") is None
    assert log.read_text().endswith("\n")
    ann.annotate([2], "b")                                          # appends cleanly after the truncation
    assert Annotator(LABELS, log_path=log).spent() == 2
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(AnnotationError, match="line 2"):
        Annotator(LABELS, log_path=log)


def test_bad_requests_are_rejected_with_a_clear_error(tmp_path):
    ann = Annotator(LABELS, log_path=tmp_path / "log.jsonl")
    with pytest.raises(AnnotationError, match="index 10 is outside the pool 0..9"):
        ann.annotate([3, 10])
    with pytest.raises(AnnotationError, match="outside the pool"):
        ann.annotate([-1])
    with pytest.raises(AnnotationError, match="appears twice"):
        ann.annotate([4, 4])
    with pytest.raises(AnnotationError, match="integer"):
        ann.annotate([0.5])
    assert ann.spent() == 0


def test_a_log_of_other_labels_is_refused(tmp_path):
    log = tmp_path / "log.jsonl"
    Annotator(LABELS, log_path=log).annotate([0], "a")
    with pytest.raises(InputError, match="another pool"):
        Annotator(LABELS[::-1].copy(), log_path=log)


def test_annotator_is_picklable_for_an_actor(tmp_path):
    ann = Annotator(LABELS, budget=5, log_path=tmp_path / "log.jsonl")
    ann.annotate([1, 2], "a")
    copy = pickle.loads(pickle.dumps(ann))
    assert copy.spent() == 2 and copy.annotate([1, 2], "a").tolist() == [1, 2]


@pytest.mark.parametrize("labels,num_classes,match", [
    (np.array([0, 1, 3, 1]), 3, "label 3 is outside the class range 0..2"),
    (np.array([0, -1, 1]), None, "label -1 is outside"),
    (np.array([0, 2, 2, 0]), None, r"class\(es\) \[1\] have no sample"),
    (np.array([0, 1, 1]), 3, r"class\(es\) \[2\]"),
    (np.array([0.5, 1.0]), None, "dtype"),
])
def test_bad_labels_are_one_line_input_errors(labels, num_classes, match):
    with pytest.raises(InputError, match=match):
        Annotator(labels, num_classes=num_classes)
    with pytest.raises(InputError) as info:
        check_labels(labels, num_classes)
    assert "\n" not in str(info.value)


def test_a_budget_larger_than_the_pool_is_an_input_error():
    with pytest.raises(InputError, match="budget=11 is larger than the pool"):
        Annotator(LABELS, budget=11)
    with pytest.raises(InputError, match="budget=0"):
        Annotator(LABELS, budget=0)


def test_stratified_initial_takes_a_share_of_every_class():
    labels = np.repeat(np.arange(3), [20, 40, 5])
    init = stratified_initial(labels, 0.1, seed=0)
    assert np.bincount(labels[init]).tolist() == [2, 4, 1]         # 5 * 0.1 rounds to 0.5 -> at least 1
    assert init.tolist() == stratified_initial(labels, 0.1, seed=0).tolist()
    assert init.tolist() != stratified_initial(labels, 0.1, seed=1).tolist()


# =========================================================================== configuration


@pytest.mark.parametrize("kwargs,match", [
    ({"n_s": 0}, "n_s=0 is invalid"),
    ({"initial_fraction": 0.0}, "initial_fraction=0.0"),
    ({"fractions": (0.4, 0.26)}, "strictly increasing"),
    ({"fractions": (0.5, 1.2)}, r"\(0, 1\]"),
    ({"target_f1": 1.5}, "target_f1"),
    ({"mc_samples": 1}, "mc_samples"),
])
def test_active_learning_config_is_checked_at_construction(kwargs, match):
    with pytest.raises(InputError, match=match) as info:
        ActiveLearningConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_learner_config_names_the_nearest_classifier_and_from_dict_names_the_path():
    with pytest.raises(InputError, match="did you mean 'densenet'"):
        LearnerConfig(classifier="densnet")
    with pytest.raises(InputError, match="learner.epochs_per_round=0"):
        from_dict(ActiveLearningConfig, {"learner": {"epochs_per_round": 0}})
    cfg = from_dict(ActiveLearningConfig, {"n_s": 5, "fractions": [0.5, 1.0], "ddpg": {"tau": 0.01}})
    assert cfg.fractions == (0.5, 1.0) and cfg.ddpg.tau == 0.01


def test_milestones_and_tables():
    assert milestone_counts(1258, (0.26, 0.40, 1.0)) == [327, 503, 1258]
    history = [{"round": 0, "labeled": 10, "labeled_fraction": 0.1, "macro_f1": 0.5, "micro_f1": 0.6},
               {"round": 1, "labeled": 26, "labeled_fraction": 0.26, "macro_f1": 0.8, "micro_f1": 0.82},
               {"round": 2, "labeled": 40, "labeled_fraction": 0.40, "macro_f1": 0.9, "micro_f1": 0.91}]
    assert labels_to_target(history, 0.8) == 26 and labels_to_target(history, 0.95) is None
    assert scores_at_fractions(history, 100, (0.26, 0.40, 0.54)) == {
        0.26: {"macro_f1": 0.8, "micro_f1": 0.82}, 0.40: {"macro_f1": 0.9, "micro_f1": 0.91}}


# =========================================================================== Learner


@pytest.fixture(scope="module")
def digits_small():
    from medtune.trainables.classification_data import digits_images

    images, labels = digits_images()
    rng = np.random.default_rng(0)
    per_class = [rng.permutation(np.flatnonzero(labels == c))[:30] for c in range(10)]
    train = rng.permutation(np.concatenate([p[:20] for p in per_class]))     # 20 per class
    test = np.concatenate([p[20:] for p in per_class])                       # 10 per class
    return images[train], labels[train], images[test], labels[test]


TINY = LearnerConfig(width=4, initial_epochs=2, epochs_per_round=1, all_epochs=2, batch_size=32)


@pytest.mark.parametrize("kind,shape", [("resnet", (1, 8, 8)), ("densenet", (1, 8, 8)), ("resnet", (1, 6, 8, 8)),
                                        ("densenet", (1, 6, 8, 8)), ("densenet", (3, 32, 32))])
def test_classifier_builds_for_2d_and_3d_and_small_images(kind, shape):
    net = make_al_classifier(kind, shape, 3, width=4)
    x = torch.rand(2, *shape)
    assert net(x).shape == (2, 3) and net.features(x).shape[0] == 2


def test_learner_predicts_the_state_and_restores_from_a_checkpoint(digits_small, tmp_path):
    x, y, tx, ty = digits_small
    learner = Learner(x, tx, ty, 10, TINY, seed=0, device="cpu")
    learner.fit(np.arange(50), y[:50], epochs=2)
    p = learner.predict_proba(np.arange(60, 80))
    assert p.shape == (20, 10) and np.allclose(p.sum(1), 1)
    mc = learner.predict_proba_mc(np.arange(60, 80), 4)
    assert mc.shape == (4, 20, 10) and not np.allclose(mc[0], mc[1])           # dropout on
    assert np.array_equal(mc, learner.predict_proba_mc(np.arange(60, 80), 4))  # but reproducible
    assert np.allclose(learner.predict_proba(np.arange(60, 80)), p)           # and switched off again
    assert learner.embed(np.arange(5)).shape == (5, 32)                        # ResNet stage 4: 8 * width
    macro, micro = learner.evaluate()
    assert 0 <= macro <= 1 and 0 <= micro <= 1
    learner.save(tmp_path / "l.pt")
    other = Learner(x, tx, ty, 10, TINY, seed=5, device="cpu")
    other.load(tmp_path / "l.pt")
    assert np.allclose(other.predict_proba(np.arange(60, 80)), p)
    learner.fit(np.arange(50), y[:50])
    other.fit(np.arange(50), y[:50])                                           # same batches after restore
    assert np.allclose(other.predict_proba(np.arange(5)), learner.predict_proba(np.arange(5)), atol=1e-6)
    with pytest.raises(IndexError):
        learner.predict_proba(np.array([200]))


def test_learner_rejects_test_labels_outside_the_class_range(digits_small):
    x, _, tx, ty = digits_small
    with pytest.raises(InputError, match="outside the class range 0..8"):
        Learner(x, tx, ty, 9, TINY)


# =========================================================================== the loop


def _run(method, digits_small, tmp_path, *, config=None, report=None, log="log.jsonl", state="state", learner=None,
         seed=0):
    x, y, tx, ty = digits_small
    cfg = config or ActiveLearningConfig(initial_fraction=0.1, n_s=40, fractions=(0.3, 0.5), learner=TINY)
    ann = Annotator(y, log_path=tmp_path / log)
    learner = learner or Learner(x, tx, ty, 10, cfg.learner, seed=seed, device="cpu")
    return ann, run_active_learning(method, seed, ann, learner, cfg, report,
                                    state_dir=None if state is None else tmp_path / state)


def test_two_rounds_of_random_report_growing_labeled_fractions(digits_small, tmp_path):
    reports = []
    ann, res = _run("random", digits_small, tmp_path, report=reports.append)
    # 200 samples, 10% per class to start (20), then milestones 30% = 60 and 50% = 100 with n_s = 40
    assert [r["labeled"] for r in reports] == [20, 60, 100]
    assert [r["labeled_fraction"] for r in reports] == [0.1, 0.3, 0.5]
    assert [r["round"] for r in reports] == [0, 1, 2]
    assert all(set(r) == {"round", "labeled", "labeled_fraction", "macro_f1", "micro_f1"} for r in reports)
    assert all(0 <= r["macro_f1"] <= 1 for r in reports)
    assert ann.spent() == 100 and ann.request_ids() == ["init", "round-1", "round-2"]
    assert set(scores_at_fractions(res.history, 200, (0.3, 0.5))) == {0.3, 0.5}


@pytest.mark.parametrize("method", [m for m in METHODS if m != "random"])
def test_every_method_runs_a_round(method, digits_small, tmp_path):
    cfg = ActiveLearningConfig(initial_fraction=0.1, n_s=30, fractions=(0.25,), mc_samples=3, learner=TINY)
    ann, res = _run(method, digits_small, tmp_path, config=cfg, state=None)
    expected = [200] if method == "all" else [20, 50]
    assert [r["labeled"] for r in res.history] == expected and ann.spent() == expected[-1]
    if method == "drla":
        assert len(res.rewards) == 1 and 0 <= res.rewards[0]["reward"] < 1 and "critic_loss" in res.rewards[0]


def test_the_loop_stops_at_the_budget(digits_small, tmp_path):
    x, y, tx, ty = digits_small
    cfg = ActiveLearningConfig(initial_fraction=0.1, n_s=40, fractions=(0.5,), learner=TINY)
    ann = Annotator(y, budget=45)
    res = run_active_learning("lc", 0, ann, Learner(x, tx, ty, 10, TINY, device="cpu"), cfg)
    assert [r["labeled"] for r in res.history] == [20, 45] and ann.remaining() == 0
    with pytest.raises(InputError, match="method 'all' needs every label"):
        run_active_learning("all", 0, Annotator(y, budget=45), Learner(x, tx, ty, 10, TINY, device="cpu"), cfg)
    with pytest.raises(InputError, match="did you mean 'fusion'"):
        run_active_learning("fuson", 0, ann, Learner(x, tx, ty, 10, TINY, device="cpu"), cfg)


class _Crash(RuntimeError):
    pass


class _FlakyLearner:
    """A proxy that forwards to a Learner and dies once in ``fit`` of a chosen call (after the annotation)."""

    def __init__(self, inner, die_on_fit):
        self.inner, self.die_on_fit, self.fits = inner, die_on_fit, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def fit(self, *args, **kwargs):
        self.fits += 1
        if self.fits == self.die_on_fit:
            raise _Crash("learner actor died")
        return self.inner.fit(*args, **kwargs)


@pytest.mark.parametrize("method", ["drla", "fusion"])
def test_a_crashed_run_resumes_without_losing_or_double_counting_annotations(method, digits_small, tmp_path):
    x, y, tx, ty = digits_small
    cfg = ActiveLearningConfig(initial_fraction=0.1, n_s=20, fractions=(0.2, 0.4), learner=TINY)
    _, clean = _run(method, digits_small, tmp_path / "clean", config=cfg)

    # crash 1: the learner dies in round 2's fit, after round 2 was annotated and logged
    flaky = _FlakyLearner(Learner(x, tx, ty, 10, TINY, seed=0, device="cpu"), die_on_fit=3)
    with pytest.raises(_Crash):
        _run(method, digits_small, tmp_path / "crash", config=cfg, learner=flaky)
    log = tmp_path / "crash" / "log.jsonl"
    ids = [json.loads(line)["request_id"] for line in log.read_text().splitlines()[1:]]
    assert ids == ["init", "round-1", "round-2"]

    # restart both actors (fresh objects: only the log and the checkpoints survive); crash 2 in a report
    def dying_report(row):
        if row["round"] == 2:
            raise _Crash("driver died")
    with pytest.raises(_Crash):
        _run(method, digits_small, tmp_path / "crash", config=cfg, report=dying_report)

    ann, resumed = _run(method, digits_small, tmp_path / "crash", config=cfg)
    assert resumed.resumed_from == 2
    assert ann.spent() == 80 == clean.history[-1]["labeled"]
    ids = [json.loads(line)["request_id"] for line in log.read_text().splitlines()[1:]]
    assert ids == ["init", "round-1", "round-2", "round-3"]                    # each request logged once
    assert len(set(ann.labeled()[0].tolist())) == 80
    assert [r["labeled"] for r in resumed.history] == [20, 40, 60, 80]
    for a, b in zip(resumed.history, clean.history):                          # the same run as without faults
        assert a["macro_f1"] == pytest.approx(b["macro_f1"], abs=1e-9)
    if method == "drla":
        assert [r["reward"] for r in resumed.rewards] == pytest.approx([r["reward"] for r in clean.rewards])


def test_a_checkpoint_of_another_run_is_refused(digits_small, tmp_path):
    cfg = ActiveLearningConfig(initial_fraction=0.1, n_s=40, fractions=(0.2,), learner=TINY)
    _run("lc", digits_small, tmp_path, config=cfg)
    with pytest.raises(InputError, match="fresh state_dir"):
        _run("ms", digits_small, tmp_path, config=cfg, log="other.jsonl")
