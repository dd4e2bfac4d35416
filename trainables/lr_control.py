"""``LRControl``: the learning-rate control a researcher's own training loop calls once per epoch.

One object, created from the loop's optimizer and its Tune config, applies whichever LR method the trial
runs and sets the optimizer's LR for the next epoch::

    def train(config):                      # a Tune function trainable, or a plain function
        model = Net(); opt = torch.optim.SGD(model.parameters(), lr=0.05)
        control = medtune.LRControl(opt, config)
        start = control.resume(model)       # 0, or the epoch a restored / PBT-cloned trial continues after
        for epoch in range(start, epochs):
            train_one_epoch(model, opt)
            control.step({"accuracy": acc, "val_loss": loss}, model=model)   # reports, checkpoints, sets the LR

The methods (:data:`METHOD_NAMES`, one record each in :mod:`medtune.searchers.lr_methods`):

* the in-trial baselines of :mod:`medtune.searchers.lr_schedules` (``fixed``, ``step``, ``exponential``,
  ``cosine``, ``plateau``), ``greedy`` (:class:`~medtune.searchers.greedy_lr.GreedyLR`, watches the loss) and
  ``effort`` (:class:`~medtune.searchers.effort_controller.EffortController`, watches the metric, fed the
  episodic memory of finished trials when the study keeps one): the decision is taken here, in the trial;
* ``qlearning`` / ``qlearning_warm``: the decision is the
  :class:`~medtune.searchers.qlearning_scheduler.QLearningLRScheduler`'s, taken in the driver when the epoch's
  result is reported; :meth:`LRControl.step` reports the result and then reads the new LR from the study's
  mailbox (function trainables report synchronously, so the decision on epoch ``t`` is there before epoch
  ``t + 1``). Outside Tune, or in a Tune run without the scheduler's mailbox, a private
  :class:`~medtune.searchers.qlearning_agent.QLearningLRAgent` decides in the loop instead (logged once);
* ``pbt``: Tune's PopulationBasedTraining restarts the trial from a checkpoint with a new ``config["lr"]``;
  :meth:`LRControl.load_state_dict` (and so :meth:`LRControl.resume`) applies it after the optimizer's state
  is loaded. Outside Tune it is ``fixed``;
* the strong baselines of :mod:`medtune.searchers.lr_schedules`: ``warmup_cosine`` (MONAI's
  ``WarmupCosineSchedule``, per epoch) and ``onecycle`` (torch's ``OneCycleLR``, **per batch**: call
  :meth:`LRControl.batch_step` after every ``optimizer.step()``, and give ``steps_per_epoch``), with any
  optimizer; and three methods that bring their own optimizer (:data:`OWN_OPTIMIZERS`): ``poly`` (nnU-Net's
  recipe: Nesterov SGD, poly decay, gradient clipping), ``schedulefree`` (Schedule-Free AdamW: call
  ``optimizer.train()`` before training and ``optimizer.eval()`` before validation and checkpoints) and
  ``prodigy`` (Prodigy with cosine annealing). Build their optimizer with :func:`make_optimizer`; any other
  optimizer is refused with an :class:`~medtune.errors.InputError` that says so. They start from that
  optimizer's LR (their section of ``schedules``); ``config["lr"]`` and the LR bounds do not apply to them.

A loop written once for every method::

    opt = medtune.make_optimizer(config["method"], model.parameters(), config,
                                 default=lambda params: torch.optim.SGD(params, lr=0.05))
    control = medtune.LRControl(opt, config, steps_per_epoch=len(loader))
    for epoch in range(control.resume(model), control.epochs):
        model.train(); control.train()                      # optimizer.train() for schedulefree
        for x, y in loader:
            opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
            control.batch_step()                            # onecycle's LR moves here
        model.eval(); control.eval()                        # optimizer.eval() for schedulefree
        control.step(validate(model), model=model)

What a method watches is named by the configuration, not by the code: ``metric`` (default ``dice``, with its
``mode``, ``max`` or ``min``) and ``loss_metric`` (default ``val_loss``, lower is better). In a medtune study
(``medtune.compare``) both must be in every epoch's metrics (the comparison reads the one, the Q-learning agent
and GreedyLR the other), elsewhere what the method watches; a missing key is an
:class:`~medtune.errors.InputError` at once, naming the key and the keys given. A NaN or
infinite metric or loss marks the epoch ``diverged`` (reported as ``diverged=1``): no policy sees it and the
LR is left as it is; the loop decides whether to stop (:attr:`LRControl.diverged`).

Where the starting LR comes from: the ``lr`` argument, else ``config["lr"]`` (a study sets it), else the
optimizer's own LR (``param_groups[0]["lr"]``). The bounds default to ``[own / 1000, own * 10]`` (``own``: the
optimizer's LR); a start outside explicit bounds is an error, never a silent clamp. Every param group gets the same LR.

The Tune config keys (all optional, set by :func:`medtune.compare` and the LR study): ``method``, ``lr``, the
``lr_control`` section (:class:`LRControlConfig` as a dict), ``tuned`` (``{method: {dotted key: value}}``, set
into the config before it is read: see :func:`with_tuned`) and ``search`` (True in a search trial of the tuning
protocol: the loop should skip its test score; ``qlearning`` then decides with a private agent, as there is no
mailbox). This module imports Ray only inside a Tune trial.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any

from medtune.config import from_dict
from medtune.errors import InputError, did_you_mean
from medtune.searchers.effort_controller import EffortController
from medtune.searchers.episodic_memory import EpisodicMemory
from medtune.searchers.lr_methods import METHODS as LR_METHODS
from medtune.searchers.lr_methods import MethodNames, PolicyContext, check_method
from medtune.searchers.lr_optimizers import OWN_OPTIMIZERS, build_optimizer, optimizer_mismatch
from medtune.searchers.lr_schedules import PER_BATCH, EpochSchedule, ScheduleConfig
from medtune.searchers.prodigy import is_prodigy, step_size
from medtune.searchers.qlearning_agent import QLearningConfig
from medtune.searchers.schedule_free import in_train_mode, is_schedule_free, set_mode
from medtune.searchers.search_spaces import apply_values

__all__ = [
    "CHECKPOINT_EVERY", "CHECKPOINT_EVERY_S", "CHECKPOINT_FILE", "CONFIG_KEY", "CONTROL_KEY", "METHOD_NAMES", "MODES",
    "NEEDS_EPOCHS", "OWN_OPTIMIZERS", "SCHEDULER_DRIVEN", "TUNED_KEY", "LRControl", "LRControlConfig", "check_method",
    "check_metric", "checkpoint_due", "make_optimizer", "tune_trial_id", "with_tuned",
]

logger = logging.getLogger(__name__)

#: The LR methods' names (the records of medtune.searchers.lr_methods, read at each use).
METHOD_NAMES = MethodNames(lambda m: True)
#: The methods whose LR is set by the Q-learning scheduler (records with ``stepping="scheduler"``).
SCHEDULER_DRIVEN = MethodNames(lambda m: m.stepping == "scheduler")
#: The methods that plan over the run's length (records with ``needs_epochs``).
NEEDS_EPOCHS = MethodNames(lambda m: m.needs_epochs)
CONFIG_KEY = "lr_control"  # the Tune config section holding an LRControlConfig
CONTROL_KEY = "lr_control"  # result key set to 1 by LRControl.step: the trial's LR is under control
CHECKPOINT_FILE = "lr_control_state.pt"
# When a trial checkpoints (LRControlConfig and TrainConfig share them): every this many epochs, and after this many
# seconds of training without a checkpoint.
CHECKPOINT_EVERY = 5
CHECKPOINT_EVERY_S = 300.0
MODES = ("max", "min")
_BOUNDS = ("base_lr", "min_lr", "max_lr")


def check_metric(name: object, what: str = "metric") -> str:
    """A result key: a non-empty string without ``/`` (Tune flattens nested results with ``/``)."""
    if not isinstance(name, str) or not name or "/" in name:
        raise InputError(f"{what}={name!r} must be the name (a non-empty string without '/') of a key your "
                         f"training reports each epoch, e.g. {what}='accuracy'")
    return name


def checkpoint_due(epoch: int, every: int, last: int | None = None, pbt_interval: int | None = None,
                   waited_s: float = 0.0, every_s: float = math.inf, driven: bool = False) -> bool:
    """Whether the epoch just finished (``epoch``, 1-based) is one a trial checkpoints: every ``every`` epochs,
    the last one (``last``, when the run's length is known), PBT's perturbation epochs (multiples of
    ``pbt_interval``: PBT clones the checkpoint of that epoch), and once ``waited_s`` seconds of training without
    a checkpoint reach ``every_s``. The one rule of the study's trainable and of :class:`LRControl`.

    ``driven``: the trial's LR is set from outside every epoch (:data:`SCHEDULER_DRIVEN`, the Q-learning
    scheduler's mailbox, which holds only its latest decision): every epoch, since a restart from an older
    checkpoint would train the epochs in between again at an LR decided after them."""
    return (driven or epoch % every == 0 or (last is not None and epoch >= last)
            or (pbt_interval is not None and epoch % pbt_interval == 0) or waited_s >= every_s)


@dataclass(frozen=True)
class LRControlConfig:
    """What the LR methods need to know about the run (the ``lr_control`` section of a Tune config).

    Attributes:
        epochs: the run's length (``cosine``'s ``T_max``, ``effort``'s horizon, the length of ``poly``,
            ``warmup_cosine``, ``onecycle`` and ``prodigy``'s cosine); None is allowed for methods that do not
            need it.
        steps_per_epoch: optimizer steps (batches) per epoch; ``onecycle`` needs it (or
            ``LRControl(steps_per_epoch=...)``).
        min_lr, max_lr: the clamp of every adaptive method; None: the optimizer's own LR / 1000 and * 10.
        metric: the key of the validation metric in the epoch's metrics; ``mode``: ``max`` or ``min``.
        loss_metric: the key of the validation loss (lower is better); may equal ``metric`` when ``mode='min'``.
        schedules: the parameters of the in-trial policies (a ``ScheduleConfig`` or a mapping of its sections).
        qlearning: ``QLearningConfig`` fields (but the LR bounds) of the private agent that decides for
            ``qlearning`` outside the scheduler (its table is seeded with 0); the scheduler has its own.
        mailbox: the Q-learning scheduler's mailbox (set by the study; None outside one).
        task: ``effort``: recall only learning curves of this task key.
        checkpoint_every: with ``step(..., model=model)`` inside Tune, the epoch's checkpoint is written every
            this many epochs, and also at the last epoch (``epochs``, when set), after ``checkpoint_every_s``
            seconds of training without one, and for ``pbt`` at every perturbation epoch (multiples of
            ``perturbation_interval``; every epoch when that is not set). A restored trial trains again at most
            that many epochs. A diverged epoch writes none (the last good checkpoint stays).
        checkpoint_every_s: the wall-clock bound above, in seconds.
        perturbation_interval: PBT's, in epochs (set by the study for its ``pbt`` members; None: unknown).

    Raises:
        InputError: one line naming the field, its value and the fix.
    """

    epochs: int | None = None
    steps_per_epoch: int | None = None
    min_lr: float | None = None
    max_lr: float | None = None
    metric: str = "dice"
    mode: str = "max"
    loss_metric: str = "val_loss"
    schedules: ScheduleConfig = field(default_factory=ScheduleConfig)
    qlearning: dict[str, Any] = field(default_factory=dict)
    mailbox: str | None = None
    task: str | None = None
    checkpoint_every: int = CHECKPOINT_EVERY
    checkpoint_every_s: float = CHECKPOINT_EVERY_S
    perturbation_interval: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.schedules, dict):  # LRControlConfig(schedules={"cosine": {...}}) as from a config
            object.__setattr__(self, "schedules", from_dict(ScheduleConfig, self.schedules, "schedules"))
        if not isinstance(self.schedules, ScheduleConfig):
            raise InputError(f"schedules={self.schedules!r} must be a ScheduleConfig or a mapping of its sections")
        check_metric(self.metric, "metric")
        check_metric(self.loss_metric, "loss_metric")
        if self.mode not in MODES:
            raise InputError(f"mode={self.mode!r} must be 'max' (higher {self.metric} is better) or 'min'"
                             f"{did_you_mean(self.mode, MODES)}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or self.epochs < 1):
            raise InputError(f"epochs={self.epochs!r} must be >= 1")
        if self.steps_per_epoch is not None and (isinstance(self.steps_per_epoch, bool) or self.steps_per_epoch < 1):
            raise InputError(f"steps_per_epoch={self.steps_per_epoch!r} must be >= 1 (the batches in one epoch)")
        for name in ("checkpoint_every", "perturbation_interval"):
            value = getattr(self, name)
            if (value is not None or name == "checkpoint_every") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name}={value!r} must be a whole number of epochs >= 1")
        every_s = self.checkpoint_every_s
        if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) or not every_s > 0:
            raise InputError(f"checkpoint_every_s={every_s!r} must be a number of seconds > 0")
        for name in ("min_lr", "max_lr"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise InputError(f"{name}={value!r} must be a positive finite number")
        if self.min_lr is not None and self.max_lr is not None and self.min_lr >= self.max_lr:
            raise InputError(f"min_lr={self.min_lr!r} must be below max_lr={self.max_lr!r}")
        bad = [k for k in self.qlearning if k not in QLearningConfig.__dataclass_fields__ or k in _BOUNDS]
        if bad:
            valid = [k for k in QLearningConfig.__dataclass_fields__ if k not in _BOUNDS]
            raise InputError(f"qlearning.{bad[0]} is not a Q-learning setting{did_you_mean(bad[0], valid)}; "
                             f"valid: {', '.join(valid)} (the LR bounds are min_lr / max_lr)")


TUNED_KEY = "tuned"  # {method: {dotted config key: value}}: the tuned settings of each method (medtune.compare)


def with_tuned(config: Mapping[str, Any], method: str | None = None) -> dict[str, Any]:
    """``config`` with ``config["tuned"][method]`` set into it (``lr``, ``lr_control.schedules.cosine.eta_min``,
    ``lr_control.qlearning.alpha``, ...): how the tuning protocol of :func:`medtune.compare` hands each method
    its chosen (or, in a search trial, sampled) settings. Without tuned settings the config is returned as it is.
    """
    config = dict(config)
    values = (config.get(TUNED_KEY) or {}).get(method if method is not None else config.get("method")) or {}
    return apply_values(config, values) if values else config


def _schedules(config: Any) -> ScheduleConfig:
    """The ``schedules`` of a Tune config (its ``lr_control`` section), an ``LRControlConfig``, a
    ``ScheduleConfig`` or a mapping of its sections; None: the defaults."""
    if config is None:
        return ScheduleConfig()
    if isinstance(config, ScheduleConfig):
        return config
    if isinstance(config, LRControlConfig):
        return config.schedules
    if isinstance(config, Mapping):
        if CONFIG_KEY in config or "method" in config:  # a trial's Tune config
            return from_dict(LRControlConfig, with_tuned(config).get(CONFIG_KEY), CONFIG_KEY).schedules
        return from_dict(ScheduleConfig, dict(config), "schedules")
    raise InputError(f"config={config!r} must be the trial's Tune config, an LRControlConfig or a ScheduleConfig")


def make_optimizer(method: str, params: Any, config: Any = None, *, default: Callable[[Any], Any] | None = None):
    """The optimizer a trial of ``method`` trains with: the method's own for ``poly`` (nnU-Net's Nesterov SGD
    with gradient clipping), ``schedulefree`` (``schedulefree.AdamWScheduleFree``, returned in train mode)
    and ``prodigy`` (``prodigyopt.Prodigy``), built from their section of ``schedules``; for every other method
    ``default(params)``, your own.

    Args:
        method: an LR method (checked, the nearest name suggested).
        params: ``model.parameters()`` or param groups.
        config: the trial's Tune config (reads ``lr_control.schedules``), an :class:`LRControlConfig`, a
            ``ScheduleConfig``, or None for the defaults.
        default: ``params -> optimizer`` for the methods without an optimizer of their own.

    Raises:
        InputError: an unknown method; or a method without an optimizer of its own and no ``default``.
    """
    method = check_method(method)
    if method in OWN_OPTIMIZERS:
        return build_optimizer(method, params, _schedules(config))
    if default is None:
        raise InputError(f"method {method!r} trains with your own optimizer; pass default=lambda params: "
                         f"torch.optim.SGD(params, lr=...) (only {', '.join(OWN_OPTIMIZERS)} build their own)")
    return default(params)


def tune_trial_id() -> str | None:
    """The id of the Tune trial this code runs in, or None outside one (Ray is not imported to find out)."""
    if "ray" not in sys.modules:
        return None
    try:
        from ray.train._internal.session import get_session

        if get_session() is None:
            return None
    except ImportError:  # pragma: no cover - a Ray without the private module: ask the public context
        pass
    from ray import tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "get_trial_id is meant to only be called inside ..."
        return tune.get_context().get_trial_id()


class LRControl:
    """Applies one LR method to ``optimizer``, stepped once per epoch with the epoch's metrics.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (duck-typed: ``param_groups`` and ``state_dict``).
        config: the trial's Tune config (``method``, ``lr``, ``lr_control``), or None.
        method: overrides ``config["method"]``; the default is ``fixed``.
        settings: overrides ``config["lr_control"]``.
        lr: the starting LR (else ``config["lr"]``, else the optimizer's own LR); the methods with their own
            optimizer (:data:`OWN_OPTIMIZERS`) start from their optimizer's LR and take no ``lr``.
        steps_per_epoch: optimizer steps per epoch (``onecycle``); overrides ``settings.steps_per_epoch``.
        memory_source: ``effort``: ``() -> EpisodicMemory``, called before each step (else the study's
            mailbox, else an empty memory).
        report: whether :meth:`step` reports to Tune; default: inside a Tune trial.
        driven: ``qlearning`` / ``qlearning_warm`` only: True: the LR is set from outside (the scheduler's
            mailbox, read by :meth:`step` when it reports, or :meth:`set_lr`); False: a private agent decides
            in the loop; default: driven inside a Tune trial whose config names a mailbox.

    Raises:
        InputError: an unknown method (nearest name suggested), a bad setting, a start LR outside the bounds,
            a schedule over the run (``cosine``, ``effort``, ``warmup_cosine``, ``onecycle``, ``poly``,
            ``prodigy``) without ``epochs``, ``onecycle`` without ``steps_per_epoch``, ``effort`` with
            ``mode='min'``, an optimizer that is not the one ``poly`` / ``schedulefree`` / ``prodigy`` needs.
    """

    def __init__(
        self,
        optimizer: Any,
        config: Mapping[str, Any] | None = None,
        *,
        method: str | None = None,
        settings: LRControlConfig | None = None,
        lr: float | None = None,
        memory_source: Callable[[], EpisodicMemory] | None = None,
        report: bool | None = None,
        driven: bool | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        config = dict(config or {})
        self.optimizer = optimizer
        self.method = check_method(method if method is not None else config.get("method", "fixed"))
        config = with_tuned(config, self.method)
        self.settings = settings if settings is not None else from_dict(LRControlConfig, config.get(CONFIG_KEY),
                                                                        CONFIG_KEY)
        if steps_per_epoch is not None:
            try:
                self.settings = dataclasses.replace(self.settings, steps_per_epoch=steps_per_epoch)
            except TypeError:
                raise InputError(f"steps_per_epoch={steps_per_epoch!r} must be a whole number >= 1") from None
        own_optimizer = self.method in OWN_OPTIMIZERS
        if own_optimizer:
            self._check_optimizer(lr)
        self.trial_id = tune_trial_id()
        self.report = self.trial_id is not None if report is None else bool(report)
        own = float(optimizer.param_groups[0]["lr"])
        self._config_lr = None if config.get("lr") is None else float(config["lr"])
        start = float(lr) if lr is not None else (self._config_lr if self._config_lr is not None else own)
        s = self.settings
        # Relative default bounds follow the optimizer's own LR, so a PBT restart with a mutated lr keeps them.
        self.min_lr = s.min_lr if s.min_lr is not None else own / 1000
        self.max_lr = s.max_lr if s.max_lr is not None else own * 10
        if not self.min_lr < self.max_lr:
            raise InputError(f"lr_control.min_lr={self.min_lr!r} must be below max_lr={self.max_lr!r}")
        if own_optimizer:  # the recipe's LR (Prodigy's factor 1.0 is no LR in the bounds' sense)
            if self._config_lr is not None and self._config_lr != own:
                logger.info("LRControl: %s starts from its optimizer's LR %g, not config['lr'] %g", self.method,
                            own, self._config_lr)
            start = own
        elif not (start > 0 and math.isfinite(start)) or not self.min_lr <= start <= self.max_lr:
            raise InputError(f"the starting LR {start!r} must lie in [min_lr, max_lr] = [{self.min_lr!r}, "
                             f"{self.max_lr!r}]; change the optimizer's lr or the bounds")
        self.epoch = 0
        self.diverged = False
        self._memory_source = memory_source
        self._box: Any = None  # the mailbox's actor handle, once found
        self._warned = False
        self._batches = 0  # batch_step calls in the current epoch
        self._last_checkpoint = monotonic()  # when the trial's state was last saved (or this run started)
        self._driven = (self.trial_id is not None and bool(self.settings.mailbox)) if driven is None else bool(driven)
        self.set_lr(start)
        self.policy = self._policy(start)

    # -- construction ----------------------------------------------------------
    def _check_optimizer(self, lr: float | None) -> None:
        """``poly`` / ``schedulefree`` / ``prodigy``: the optimizer must be the method's own, at its own LR."""
        m = self.method
        problem = optimizer_mismatch(m, self.optimizer, self.settings.schedules)
        if problem:
            raise InputError(
                f"method {m!r} trains with {OWN_OPTIMIZERS[m]}, but this optimizer does not fit ({problem}); "
                f"build it with medtune.make_optimizer({m!r}, model.parameters(), config)"
            )
        own = float(self.optimizer.param_groups[0]["lr"])
        if lr is not None and float(lr) != own:
            raise InputError(f"method {m!r} starts from its optimizer's LR {own!r} (lr_control.schedules.{m}); "
                             f"lr={lr!r} does not apply to it: leave lr out, or change schedules.{m}")

    def _policy(self, start: float) -> Any:
        """The method's in-trial policy, from its record: an :class:`EpochSchedule` of its ``schedule``, or what its
        ``make_policy`` builds (None: the LR is set from outside, ``pbt`` and ``qlearning`` with the mailbox)."""
        s, m = self.settings, self.method
        record = LR_METHODS[m]
        if record.needs_epochs and s.epochs is None:
            raise InputError(f"method {m!r} needs the run's length; set lr_control.epochs (settings.epochs)")
        if record.stepping == "batch" and s.steps_per_epoch is None:
            raise InputError(f"method {m!r} steps its LR once per batch and needs the batches per epoch: "
                             f"LRControl(optimizer, config, steps_per_epoch=len(loader)) (or "
                             "lr_control.steps_per_epoch), and control.batch_step() after every optimizer.step()")
        if record.schedule is not None:
            try:
                return EpochSchedule(m, self.optimizer, s.schedules, s.epochs or 1, s.steps_per_epoch)
            except ValueError as exc:  # torch's own checks (e.g. OneCycleLR's momentum on a momentum-free optimizer)
                raise InputError(f"method {m!r}: {exc}") from None
        if record.make_policy is None or (record.stepping == "scheduler" and self._driven):
            return None
        if record.stepping == "scheduler":
            logger.info("LRControl: %s without the Q-learning scheduler's mailbox: a private agent decides the LR "
                        "in this loop", m)
        policy = record.make_policy(PolicyContext(
            optimizer=self.optimizer, settings=record.settings(s.schedules), start_lr=start, min_lr=self.min_lr,
            max_lr=self.max_lr, epochs=s.epochs, steps_per_epoch=s.steps_per_epoch, metric=s.metric, mode=s.mode,
            task=s.task, qlearning=s.qlearning))
        if isinstance(policy, EffortController) and self._memory_source is None and s.mailbox and self.report:
            from medtune.searchers.qlearning_scheduler import read_episodes  # imports Ray: a study's trial only

            mailbox, task = s.mailbox, s.task
            self._memory_source = lambda: read_episodes(mailbox, task)
        return policy

    # -- the LR ----------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The LR the next epoch uses (the optimizer's first param group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    @property
    def effective_lr(self) -> float:
        """The step size the optimizer takes: :attr:`lr`, but ``d * lr`` for Prodigy (its ``lr`` is a factor
        of the step size ``d`` it estimates). This is the ``lr`` reported."""
        return step_size(self.optimizer) if is_prodigy(self.optimizer) else self.lr

    @property
    def epochs(self) -> int | None:
        """The run's length as the study set it (``lr_control.epochs``), for the loop's ``range``."""
        return self.settings.epochs

    @property
    def driven(self) -> bool:
        """Whether the LR is decided outside this process (the Q-learning scheduler through the mailbox)."""
        return self.method in SCHEDULER_DRIVEN and self.policy is None

    # -- one batch -------------------------------------------------------------
    def batch_step(self) -> float:
        """Call after every ``optimizer.step()``: a per-batch method (``onecycle``) moves the LR here; for every
        other method it only counts the batch. Returns the LR of the next batch.

        Raises:
            InputError: more calls than ``epochs * steps_per_epoch`` (``steps_per_epoch`` is too small).
        """
        self._batches += 1
        p = self.policy
        if isinstance(p, EpochSchedule) and p.per_batch:
            try:
                p.batch_step()
            except ValueError as exc:  # OneCycleLR stepped past its total_steps
                raise InputError(
                    f"method {self.method!r}: batch_step() was called more often than epochs x steps_per_epoch = "
                    f"{self.settings.epochs} x {self.settings.steps_per_epoch} ({exc}); give the loader's true "
                    "length as steps_per_epoch"
                ) from None
        return self.lr

    def train(self) -> None:
        """Before the epoch's training: ``optimizer.train()`` for Schedule-Free AdamW (its parameters then hold
        the point gradients are taken at); nothing for any other optimizer."""
        set_mode(self.optimizer, True)

    def eval(self) -> None:
        """Before validation, testing and saving: ``optimizer.eval()`` for Schedule-Free AdamW (its parameters
        then hold the averaged weights that are scored); nothing for any other optimizer."""
        set_mode(self.optimizer, False)

    # -- one epoch -------------------------------------------------------------
    def step(self, metrics: Mapping[str, Any], checkpoint: Any = None, model: Any = None) -> float:
        """Close one epoch: let the method act, report to Tune (inside a trial), set and return the next LR.

        Args:
            metrics: this epoch's results, ``{name: number}``; must hold ``metric`` and ``loss_metric`` in a
                medtune study (``medtune.compare``), else whatever the method watches. Other keys are reported as
                they are; a ``test_<metric>`` after the last epoch is the held-out score the comparison prefers.
            checkpoint: a ``ray.tune.Checkpoint`` reported with the result (the loop's own); or
            model: a ``torch.nn.Module`` whose state, with the optimizer's and this object's, is saved as the
                epoch's checkpoint (what :meth:`resume` loads) when one is due: every
                ``settings.checkpoint_every`` epochs, at the last, after ``checkpoint_every_s`` seconds without
                one, at PBT's perturbation epochs (:class:`LRControlConfig`). Ignored outside Tune.

        Returns:
            The LR of the next epoch, already in the optimizer.

        Raises:
            InputError: a key the method or the comparison needs is missing (names it and the keys given).
        """
        s = self.settings
        # In a medtune study (a mailbox) every trial must report both keys: the table reads the metric, the
        # Q-learning agent and GreedyLR the loss, and one trainable serves every method. Elsewhere: what it watches.
        needed = [s.metric, s.loss_metric] if self.report and s.mailbox else self._watched()
        missing = [k for k in dict.fromkeys(needed) if k not in metrics]
        if missing:
            role = {s.metric: "metric", s.loss_metric: "loss_metric"}
            raise InputError(
                f"LRControl.step: the epoch's metrics lack {', '.join(f'{k!r} ({role[k]})' for k in missing)}; "
                f"they hold {', '.join(map(repr, metrics)) or 'nothing'}. Report it, or name your keys with "
                "metric= / loss_metric="
            )
        self._check_epoch()
        self.epoch += 1
        used = self.effective_lr
        value = float(metrics[s.metric]) if s.metric in metrics else math.nan
        loss = float(metrics[s.loss_metric]) if s.loss_metric in metrics else math.nan
        watched = [v for k, v in ((s.metric, value), (s.loss_metric, loss)) if k in needed]
        self.diverged = not all(math.isfinite(v) for v in watched)
        if not self.diverged:
            self._policy_step(value, loss)
        if self.report:
            self._report(metrics, used, checkpoint, model)
            if self.driven and not self.diverged and self.settings.mailbox:
                self._read_mailbox()
        return self.lr

    def _check_epoch(self) -> None:
        """What a per-batch method and Schedule-Free AdamW need from the loop, checked at each epoch's end."""
        batches, self._batches = self._batches, 0
        if self.method in PER_BATCH and batches == 0:
            raise InputError(f"method {self.method!r} steps its LR once per batch, but batch_step() was not called "
                             "this epoch; call control.batch_step() after every optimizer.step()")
        if is_schedule_free(self.optimizer) and in_train_mode(self.optimizer):
            raise InputError("method 'schedulefree': the optimizer is in train mode at the epoch's end, so the "
                             "metrics were measured (and the checkpoint would be taken) on the wrong weights; call "
                             "optimizer.eval() (or control.eval()) before validating and optimizer.train() "
                             "(control.train()) before training")

    def _watched(self) -> list[str]:
        """The keys the method's decisions read (its record's ``watches``)."""
        s = self.settings
        keys = {"metric": s.metric, "loss": s.loss_metric}
        return [keys[w] for w in LR_METHODS[self.method].watches]

    def _policy_step(self, value: float, loss: float) -> None:
        p = self.policy
        if isinstance(p, EpochSchedule):
            p.step(dice=value, val_loss=loss)
            return
        if p is None:
            return
        if self._memory_source is not None and hasattr(p, "memory"):  # effort recalls the curves finished so far
            p.memory = self._memory_source()
        epoch_end = LR_METHODS[self.method].epoch_end
        if epoch_end is None:
            p.step(value)
        else:
            epoch_end(p, value, loss, self.settings.mode)

    def _report(self, metrics: Mapping[str, Any], used: float, checkpoint: Any, model: Any) -> None:
        from ray import tune

        # epoch is this object's count (1-based, kept across restores): the schedulers and MLflow key on it
        result = {**metrics, "epoch": self.epoch, "lr": used, "diverged": int(self.diverged), CONTROL_KEY: 1}
        if checkpoint is None and model is not None:
            if not self._checkpoint_due():
                tune.report(result)
                return
            import torch

            with tempfile.TemporaryDirectory() as d:
                state = {"model": model.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "lr_control": self.state_dict()}
                torch.save(state, os.path.join(d, CHECKPOINT_FILE))
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
            self._last_checkpoint = monotonic()
            return
        if checkpoint is None and self.method == "pbt" and not self._warned:
            self._warned = True
            logger.warning("LRControl: a pbt trial reports no checkpoint, so PBT cannot clone it; pass "
                           "step(metrics, model=model) (and call resume(model) at the start)")
        tune.report(result, checkpoint=checkpoint)

    def _checkpoint_due(self) -> bool:
        """Whether the epoch just closed carries the ``model=`` checkpoint (``LRControlConfig.checkpoint_every``)."""
        s = self.settings
        if self.diverged:
            return False  # the last good checkpoint stays
        pbt = self.method == "pbt"
        if pbt and s.perturbation_interval is None:
            return True  # PBT may clone the state of any epoch: without its interval, every epoch
        return checkpoint_due(self.epoch, s.checkpoint_every, s.epochs, s.perturbation_interval if pbt else None,
                              monotonic() - self._last_checkpoint, s.checkpoint_every_s,
                              driven=self.method in SCHEDULER_DRIVEN)

    def _read_mailbox(self) -> None:
        import ray

        mailbox = self.settings.mailbox
        if not mailbox:
            return
        if self._box is None:
            try:
                self._box = ray.get_actor(mailbox)
            except ValueError:
                logger.debug("LRControl: no mailbox %r yet; the LR stays %g", self.settings.mailbox, self.lr)
                return
        lr: Any = ray.get(self._box.get.remote(self.trial_id))
        if lr is not None:
            self.set_lr(lr)

    # -- checkpoints -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The method's state, the epoch count and the LR (plain values; torch-saveable)."""
        return {"method": self.method, "epoch": self.epoch, "lr": self.lr,
                "policy": self.policy.state_dict() if self.policy is not None else {}}

    def load_state_dict(self, state: Mapping[str, Any], config_lr: float | None = None) -> None:
        """Restore :meth:`state_dict` output and re-apply the LR; call it *after* ``optimizer.load_state_dict``
        (an optimizer's state carries the LR it was saved with).

        ``pbt`` takes the LR of the (possibly mutated) ``config["lr"]`` instead, clamped to the bounds;
        ``config_lr`` passes it when the object was built without the config.
        """
        if state.get("method", self.method) != self.method:
            raise InputError(f"the checkpoint's LR state is of method {state.get('method')!r}, this trial runs "
                             f"{self.method!r}; resume it with its own method")
        self.epoch = int(state.get("epoch", 0))
        if self.policy is not None and state.get("policy"):
            self.policy.load_state_dict(dict(state["policy"]))
        self.set_lr(float(state["lr"]))
        if self.method == "pbt":
            lr = config_lr if config_lr is not None else self._config_lr
            if lr is not None:
                self.set_lr(min(self.max_lr, max(self.min_lr, float(lr))))

    def resume(self, model: Any = None) -> int:
        """Inside Tune: load the trial's checkpoint written by :meth:`step` (``model``, the optimizer, this
        object; for ``pbt`` the new ``config["lr"]``); returns the number of epochs already done (0: none).

        Outside Tune, or without a checkpoint, nothing changes and 0 is returned.
        """
        if not self.report:
            return 0
        import torch
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return 0
        with checkpoint.as_directory() as d:
            path = Path(d) / CHECKPOINT_FILE
            if not path.is_file():
                raise InputError(f"the trial's checkpoint has no {CHECKPOINT_FILE}; it was not written by "
                                 "LRControl.step(..., model=...): restore your own checkpoint, then call "
                                 "load_state_dict")
            state = torch.load(path, map_location="cpu", weights_only=False)
        if model is not None:
            model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.load_state_dict(state["lr_control"])
        self._last_checkpoint = monotonic()  # the state it continues from is saved
        if self.driven and self.settings.mailbox:  # a decision taken on the checkpointed epoch's result
            self._read_mailbox()
        return self.epoch
