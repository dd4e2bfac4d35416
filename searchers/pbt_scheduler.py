"""PopulationBasedTraining whose members start from their own optimizer's LR (Ray Tune adapter).

Tune's ``PopulationBasedTraining`` fills a missing ``config["lr"]`` with a draw from its mutation space when a
trial is added, so a member whose config names no LR would start from a random one. A researcher's own
training starts from its optimizer's LR (:class:`medtune.LRControl`): :class:`OwnLRPBT` leaves such a config
without ``lr`` until the member's first result, then records the ``lr`` that result reports (the LR the
epoch used) as the member's ``config["lr"]``. From then on PBT works as usual: a member that exploits another
copies its checkpoint and a perturbation of its ``config["lr"]``, which ``LRControl`` applies on restart.

Edge case: a first result without ``lr`` leaves the config as it is; PBT then fails on the missing key at the
first perturbation, naming it.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from medtune.tags import EXPLOITS_KEY

__all__ = ["IDENTITY_KEYS", "LR_KEY", "MemberPBT", "OwnLRPBT"]

LR_KEY = "lr"


IDENTITY_KEYS: tuple[str, ...] = ("seed",)  # what makes a member itself: never copied from the member it clones


class MemberPBT(PopulationBasedTraining):
    """PBT whose exploit copies the donor's hyperparameters (and, through its checkpoint, its weights), but keeps
    each member's own ``seed``. Tune's exploit copies the donor's whole config, so a member would otherwise report,
    and be logged and paired by seed, as the member it cloned.

    Each exploit is counted in the member's config (``pbt_exploits``, :data:`medtune.tags.EXPLOITS_KEY`), its
    own count carried over every clone: the MLflow tracker logs it per epoch, so a report can say how often
    each member exploited (a member absent the key never did).

    Copiers restart first: of the members ready to run, one that has just cloned a donor is chosen before any
    other (Tune's PBT picks the least trained, a tie at a synchronous perturbation). So no donor trains on, and
    rotates away the checkpoint it was cloned from, while its copier still waits for a slot; a Tuner keeping a
    few checkpoints per trial is then safe however few slots the population shares.

    Members resumed mid-run exploit only at the same epoch. Tune's PBT starts a resumed population from scratch
    (every member at time 0), though the members restart from checkpoints of different epochs; its barrier
    then lets a member behind perturb the population, and a member that clones one ahead skips the epochs in
    between (seen as missing epochs in MLflow). Here a restored member keeps the epoch it restarts from, the
    barrier is the next perturbation epoch after the furthest member, and a member short of the barrier only
    trains on towards it.

    No member waits for ever: synchronous PBT pauses a member at a perturbation until the members behind it
    arrive. Members resumed from checkpoints of different epochs (a resumed session) can leave the one furthest
    ahead paused at a barrier the others pass below the perturbation interval, and finish; Tune's PBT then
    chooses no member and the Tuner waits for ever. When PBT chooses none while no member is running, the
    least-trained paused member runs (at its last epoch it simply ends).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._copiers: set[str] = set()  # trial ids that cloned a donor and have not reported since

    def _get_new_config(self, trial: Trial, trial_to_clone: Trial) -> tuple[dict, dict]:
        new_config, operations = super()._get_new_config(trial, trial_to_clone)
        for key in IDENTITY_KEYS:
            if key in trial.config:
                new_config[key] = trial.config[key]
        # The member's own count, not the donor's: the tracker logs it as a metric, the reports count exploits.
        new_config[EXPLOITS_KEY] = int(trial.config.get(EXPLOITS_KEY, 0)) + 1
        return new_config, operations

    def _exploit(self, tune_controller: Any, trial: Trial, trial_to_clone: Trial) -> None:
        super()._exploit(tune_controller, trial, trial_to_clone)
        self._copiers.add(trial.trial_id)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        done = int((getattr(trial, "last_result", None) or {}).get(self._time_attr) or 0)
        if done and self._synch:  # a member restored mid-run: it restarts from its checkpoint of epoch `done`
            state = self._trial_state[trial]
            state.last_train_time = done
            # (Ray's trial state infers int from its initial 0; the perturbation interval is a float)
            state.last_perturbation_time = done - done % self._perturbation_interval  # type: ignore[assignment]
            self._next_perturbation_sync = max(self._next_perturbation_sync,
                                               state.last_perturbation_time + self._perturbation_interval)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        self._copiers.discard(trial.trial_id)  # it restarted from the clone
        if (self._synch and self._metric in result
                and result.get(self._time_attr, self._next_perturbation_sync) < self._next_perturbation_sync):
            return TrialScheduler.CONTINUE  # short of the barrier: it trains on towards it, it perturbs nobody
        return super().on_trial_result(tune_controller, trial, result)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        chosen = super().choose_trial_to_run(tune_controller)
        if chosen is None:
            members = tune_controller.get_trials()
            waiting = [t for t in members if t.status in (Trial.PENDING, Trial.PAUSED) and t in self._trial_state]
            if waiting and not any(t.status == Trial.RUNNING for t in members):  # nobody left to reach the barrier
                return min(waiting, key=lambda t: self._trial_state[t].last_train_time)
            return None
        if chosen.trial_id in self._copiers:
            return chosen
        ready = [t for t in tune_controller.get_trials() if t.trial_id in self._copiers
                 and t.status in (Trial.PENDING, Trial.PAUSED)]
        return ready[0] if ready else chosen


class OwnLRPBT(MemberPBT):
    """PBT over ``config["lr"]`` where an unset ``lr`` means "the member's own"; see the module docstring."""

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        had = LR_KEY in trial.config
        super().on_trial_add(tune_controller, trial)
        if not had:  # undo the random draw: the member's own LR becomes known at its first result
            trial.config.pop(LR_KEY, None)
            trial.evaluated_params.pop(LR_KEY, None)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if LR_KEY not in trial.config and result.get(LR_KEY) is not None:
            trial.set_config({**trial.config, LR_KEY: float(result[LR_KEY])})
        return super().on_trial_result(tune_controller, trial, result)
