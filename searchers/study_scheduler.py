"""One Tune scheduler for a whole LR study: PBT's population beside every other method in one Tuner (Ray adapter).

PBT (:class:`medtune.searchers.pbt_scheduler.MemberPBT`) pauses its members at every perturbation and restarts
them from (possibly cloned) checkpoints; the Q-learning scheduler drives the ``qlearning`` trials and never
pauses one. Run as two Tuners one after the other, each Tuner ends in its own tail with slots idle, and
synchronous PBT leaves a slot idle whenever a member waits for the others at a perturbation while no other
trial may use the slot. :class:`StudyScheduler` runs both in one Tuner, so a slot a waiting member frees goes to
another method's trial at once.

Routing: a trial whose ``config["method"]`` is ``member_method`` (``"pbt"``) is PBT's, every other trial the
other scheduler's. Each scheduler sees the Tuner through a view that lists only its own trials, so PBT's
quantiles, its synchronisation barrier and its fair-share choice are computed over the population alone, exactly
as in a Tuner of its own.

Which trial runs next (:meth:`StudyScheduler.choose_trial_to_run`), when a slot frees:

1. a PBT member that PBT would run now (a copier that has just cloned a donor first, then the least-trained
   member that is not waiting at the barrier). Members are the longest trials of the study (they train the same
   epochs and wait at every perturbation), so they go first, and the study does not end in a tail of waiting
   members;
2. otherwise what the other scheduler picks among its own trials (first in, first out).

Edge cases: a study without ``pbt`` trials behaves exactly like the other scheduler alone; members never see a
decision of the other scheduler, nor other trials a decision of PBT. Results do not depend on this plan for any
method without shared state (each trial seeds itself and trains the same epochs wherever and whenever it runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

__all__ = ["StudyScheduler"]


class _Only:
    """A view of Tune's controller that lists only the trials ``keep`` accepts; everything else passes through."""

    def __init__(self, controller: Any, keep: Callable[[Trial], bool]) -> None:
        self._controller, self._keep = controller, keep

    def get_trials(self) -> list[Trial]:
        return [t for t in self._controller.get_trials() if self._keep(t)]

    def get_live_trials(self) -> set[Trial] | list[Trial]:
        return [t for t in self._controller.get_live_trials() if self._keep(t)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


class StudyScheduler(TrialScheduler):
    """PBT for the ``member_method`` trials and ``others`` for the rest, in one Tuner; see the module docstring.

    Args:
        others: the scheduler of every trial that is not a PBT member (e.g. the Q-learning scheduler).
        members: the PBT scheduler of the population.
        member_method: the ``config["method"]`` of the population's trials.
    """

    _supports_buffered_results = False  # both PBT and the Q-learning scheduler decide on every single result

    def __init__(self, others: TrialScheduler, members: TrialScheduler, member_method: str = "pbt") -> None:
        super().__init__()
        self.others, self.members, self.member_method = others, members, member_method

    def is_member(self, trial: Trial) -> bool:
        return (trial.config or {}).get("method") == self.member_method

    def _for(self, trial: Trial) -> TrialScheduler:
        return self.members if self.is_member(trial) else self.others

    def _view(self, controller: Any, scheduler: TrialScheduler) -> Any:  # duck-types the TuneController
        if scheduler is self.members:
            return _Only(controller, self.is_member)
        return _Only(controller, lambda t: not self.is_member(t))

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return all([s.set_search_properties(metric, mode, **spec) for s in (self.others, self.members)])

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        s = self._for(trial)
        s.on_trial_add(self._view(tune_controller, s), trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        s = self._for(trial)
        s.on_trial_error(self._view(tune_controller, s), trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        s = self._for(trial)
        return s.on_trial_result(self._view(tune_controller, s), trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        s = self._for(trial)
        s.on_trial_complete(self._view(tune_controller, s), trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        s = self._for(trial)
        s.on_trial_remove(self._view(tune_controller, s), trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        member = self.members.choose_trial_to_run(self._view(tune_controller, self.members))
        if member is not None:
            return member
        return self.others.choose_trial_to_run(self._view(tune_controller, self.others))

    def debug_string(self) -> str:
        return f"{self.others.debug_string()}\n{self.members.debug_string()}"
