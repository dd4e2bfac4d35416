"""One Tuner for the whole LR study: PBT's members and every other trial, each seen only by its own scheduler."""

from types import SimpleNamespace

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from medtune.searchers.pbt_scheduler import MemberPBT
from medtune.searchers.study_scheduler import StudyScheduler


class _Trial:
    def __init__(self, trial_id, method, status=Trial.PENDING, seed=0):
        self.trial_id, self.status = trial_id, status
        self.config = {"method": method, "seed": seed, "lr": 1e-3}
        self.evaluated_params = {}
        self.experiment_tag = trial_id
        self.run_metadata = SimpleNamespace(checkpoint_manager=SimpleNamespace(
            checkpoint_config=SimpleNamespace(num_to_keep=6), _latest_checkpoint_result=None))

    def set_config(self, config):
        self.config = config

    def set_experiment_tag(self, tag):
        self.experiment_tag = tag

    def is_finished(self):
        return self.status in (Trial.TERMINATED, Trial.ERROR)

    def __repr__(self):
        return self.trial_id


class _Controller:
    search_alg = None

    def __init__(self, trials):
        self.trials = trials

    def get_trials(self):
        return list(self.trials)

    def get_live_trials(self):
        return [t for t in self.trials if not t.is_finished()]

    def pause_trial(self, trial, should_checkpoint=True):
        trial.status = Trial.PAUSED


class _Recorder(TrialScheduler):
    """Remembers which trials each hook saw, and which trials the controller it was handed listed."""

    def __init__(self, decision, choice=None):
        super().__init__()
        self.decision, self.choice, self.calls = decision, choice, []

    def _saw(self, hook, controller, trial=None):
        self.calls.append((hook, getattr(trial, "trial_id", None), sorted(t.trial_id for t in controller.get_trials())))

    def on_trial_add(self, tune_controller, trial):
        self._saw("add", tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        self._saw("result", tune_controller, trial)
        return self.decision

    def on_trial_complete(self, tune_controller, trial, result):
        self._saw("complete", tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self._saw("error", tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial):
        self._saw("remove", tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        self._saw("choose", tune_controller)
        return self.choice

    def debug_string(self):
        return "recorder"


def test_each_trial_reaches_only_its_own_scheduler_which_sees_only_its_own_trials():
    fixed, q, m0, m1 = (_Trial("f", "fixed"), _Trial("q", "qlearning"), _Trial("p0", "pbt"),
                        _Trial("p1", "pbt", seed=1))
    controller = _Controller([fixed, q, m0, m1])
    others, members = _Recorder(TrialScheduler.CONTINUE), _Recorder(TrialScheduler.PAUSE)
    study = StudyScheduler(others, members)
    for t in (fixed, q, m0, m1):
        study.on_trial_add(controller, t)
    assert study.on_trial_result(controller, m0, {"dice": 0.5}) == TrialScheduler.PAUSE
    assert study.on_trial_result(controller, q, {"dice": 0.5}) == TrialScheduler.CONTINUE
    study.on_trial_complete(controller, fixed, {})
    study.on_trial_error(controller, m1)
    study.on_trial_remove(controller, q)
    assert [(h, t) for h, t, _ in others.calls] == [("add", "f"), ("add", "q"), ("result", "q"), ("complete", "f"),
                                                   ("remove", "q")]
    assert [(h, t) for h, t, _ in members.calls] == [("add", "p0"), ("add", "p1"), ("result", "p0"), ("error", "p1")]
    assert {tuple(seen) for _, _, seen in others.calls} == {("f", "q")}
    assert {tuple(seen) for _, _, seen in members.calls} == {("p0", "p1")}


def test_a_member_ready_to_run_goes_first_and_otherwise_the_other_scheduler_picks_among_its_own():
    fixed, m0 = _Trial("f", "fixed"), _Trial("p0", "pbt", status=Trial.PAUSED)
    controller = _Controller([fixed, m0])
    assert StudyScheduler(_Recorder(None, choice=fixed), _Recorder(None, choice=m0)).choose_trial_to_run(
        controller) is m0
    # PBT holds its paused member at the barrier (chooses none): the slot goes to the other trial, and FIFO
    # never sees (so never restarts) the waiting member.
    study = StudyScheduler(FIFOScheduler(), _Recorder(None, choice=None))
    assert study.choose_trial_to_run(controller) is fixed
    fixed.status = Trial.RUNNING
    assert study.choose_trial_to_run(controller) is None


def _pbt():
    return MemberPBT(time_attr="training_iteration", metric="dice", mode="max", perturbation_interval=2,
                     quantile_fraction=0.5, hyperparam_mutations={"lr": [1e-4, 1e-3, 1e-2]},
                     resample_probability=0.0, synch=True, log_config=False)


def test_a_member_that_cloned_a_donor_restarts_before_the_donor_trains_on():
    donor, copier = _Trial("p0", "pbt", status=Trial.PAUSED), _Trial("p1", "pbt", status=Trial.PAUSED, seed=1)
    controller, pbt = _Controller([donor, copier]), _pbt()
    for t in (donor, copier):
        pbt.on_trial_add(controller, t)
        pbt._trial_state[t].last_score, pbt._trial_state[t].last_train_time = (0.8 if t is donor else 0.2), 2
    pbt._trial_state[donor].last_checkpoint = "checkpoint of p0 at epoch 2"
    pbt._trial_state[donor].last_result = {"dice": 0.8}
    pbt._next_perturbation_sync = 4  # both members stand at the barrier of epoch 2, which has been passed
    assert pbt.choose_trial_to_run(controller) is donor  # Tune's PBT alone: the first of the tied members
    pbt._exploit(controller, copier, donor)
    assert copier.config["seed"] == 1 and copier.config["lr"] in (1e-4, 1e-3, 1e-2)
    assert pbt.choose_trial_to_run(controller) is copier  # the copier restarts from the clone first
    copier.status = Trial.RUNNING
    pbt.on_trial_result(controller, copier, {"training_iteration": 3, "dice": 0.3})
    assert pbt.choose_trial_to_run(controller) is donor  # once it has reported, the donor may go on


def test_a_new_session_runs_one_tuner_and_a_session_from_before_resumes_its_two():
    from pathlib import Path

    from medtune.cluster.studies.lr_study import LRStudySpec, lr_session_keys, tuner_kinds, tuner_path

    spec = LRStudySpec(methods=("fixed", "pbt"))
    session = Path("/runs/lr-schedulers-1")
    assert tuner_kinds(spec, lr_session_keys(spec, session)) == ["study"]
    assert tuner_path("study", session) == session
    legacy = {"mailbox": "m", "memory_path": "/runs/episodic-memory.jsonl", "task": "t"}  # no "tuners" key
    assert tuner_kinds(spec, legacy) == ["main", "pbt"] and tuner_path("pbt", session) == session / "pbt"
    assert tuner_kinds(LRStudySpec(methods=("fixed",)), legacy) == ["main"]
    assert tuner_kinds(LRStudySpec(methods=("pbt",)), legacy) == ["pbt"]


def test_a_member_paused_at_a_barrier_nobody_else_will_reach_is_released():
    """After a resume, members restart from different epochs: the one ahead waits at a perturbation the other
    passes below the interval and finishes. It must still run (and end), not wait for ever."""
    ahead, behind = _Trial("p0", "pbt", status=Trial.PAUSED), _Trial("p1", "pbt", status=Trial.RUNNING, seed=1)
    controller, pbt = _Controller([ahead, behind]), _pbt()
    for t in (ahead, behind):
        pbt.on_trial_add(controller, t)
    pbt._trial_state[ahead].last_train_time, pbt._trial_state[behind].last_train_time = 6, 5
    pbt._next_perturbation_sync = 6  # p0 stands at the barrier of epoch 6, p1 trains towards it
    assert pbt.choose_trial_to_run(controller) is None  # p1 is running: p0 waits for it, as Tune's PBT does
    behind.status = Trial.TERMINATED  # p1 reached its last epoch without stopping at the barrier
    assert pbt.choose_trial_to_run(controller) is ahead


def test_members_resumed_from_different_epochs_meet_at_the_next_perturbation_before_any_exploit():
    """A resumed population: p0 restarts after epoch 5, p1 after epoch 3 (interval 2). Tune's PBT would let p1
    perturb at epoch 4 and clone p0's later checkpoint, skipping epochs; here p1 trains on to epoch 6 first."""
    ahead, behind = _Trial("p0", "pbt", status=Trial.PAUSED), _Trial("p1", "pbt", status=Trial.PAUSED, seed=1)
    ahead.last_result, behind.last_result = {"training_iteration": 5}, {"training_iteration": 3}
    controller, pbt = _Controller([ahead, behind]), _pbt()
    for t in (ahead, behind):
        pbt.on_trial_add(controller, t)
    assert pbt._next_perturbation_sync == 6
    assert (pbt._trial_state[ahead].last_train_time, pbt._trial_state[behind].last_train_time) == (5, 3)
    behind.status = Trial.RUNNING
    for epoch in (4, 5):  # short of the barrier: no perturbation, no state saved, nobody cloned
        assert pbt.on_trial_result(controller, behind, {"training_iteration": epoch, "dice": 0.1}) == \
            TrialScheduler.CONTINUE
        assert pbt._trial_state[behind].last_train_time == 3 and pbt._num_perturbations == 0
    ahead.status = Trial.RUNNING
    # p0 reaches the barrier first and waits there for p1
    assert pbt.on_trial_result(controller, ahead, {"training_iteration": 6, "dice": 0.9}) == TrialScheduler.PAUSE
    fresh = _Trial("p2", "pbt")  # a member with no result yet leaves the barrier where it is
    pbt.on_trial_add(controller, fresh)
    assert pbt._next_perturbation_sync == 6 and pbt._trial_state[fresh].last_train_time == 0
