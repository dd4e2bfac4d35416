"""Population Based Training over the learning rate: the strongest peer of the learned LR controllers.

A thin adapter around Ray Tune's ``PopulationBasedTraining`` (Jaderberg et al.
2017). Its population is the study's seeds: one member per seed, each trained
for the study's ``train.epochs``, so PBT gets the same total epoch budget as
every other method. Every ``perturbation_interval`` epochs the members in the
bottom ``quantile_fraction`` by validation Dice copy the checkpoint of a member
in the top quantile and perturb its LR (x0.8 or x1.2, or a fresh draw from
log-uniform[min_lr, max_lr] with ``resample_probability``), clamped to
``[min_lr, max_lr]`` like every other method's LR. ``synch=True``:
members exploit at the same epoch, so a copied checkpoint is never ahead of or
behind the copier and no epoch is skipped or trained twice.

PBT pauses and restarts trials to change their config; the LR study runs its
members in the same Tuner as every other method, under
:class:`medtune.searchers.study_scheduler.StudyScheduler`, which shows PBT only
its own population.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PBTConfig", "default_interval", "make_pbt"]


@dataclass(frozen=True)
class PBTConfig:
    """PBT's parameters (the ``pbt:`` section of a spec).

    ``perturbation_interval`` None (the default): scaled to the run, ``max(1, epochs // 4)`` epochs
    (:func:`default_interval`), so a short run still exploits; a number is used as it is.

    Attributes:
        perturbation_interval: epochs between two exploit/explore steps (>= 1; Ray Tune's ``perturbation_interval``
            in the trials' ``training_iteration``, one per epoch); every member stops there together (``synch``).
            Null: ``max(1, epochs // 4)``.
        quantile_fraction: the share of the population, in (0, 0.5], in each of the bottom quantile (which copies)
            and the top quantile (which is copied), ranked by the study's metric; Ray Tune rounds its size up, so
            a population of two or three still has one member in each (a single member never exploits).
        resample_probability: the probability, in [0, 1], that an exploring member draws a fresh LR from
            log-uniform ``[min_lr, max_lr]`` instead of multiplying the copied LR by 0.8 or 1.2; 0: always
            perturb, 1: always resample.
    """

    perturbation_interval: int | None = None
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25

    def __post_init__(self) -> None:
        if self.perturbation_interval is not None and self.perturbation_interval < 1:
            raise ValueError(f"perturbation_interval={self.perturbation_interval!r} must be >= 1 epoch")
        if not 0 < self.quantile_fraction <= 0.5:
            raise ValueError(f"quantile_fraction={self.quantile_fraction!r} must lie in (0, 0.5]")
        if not 0 <= self.resample_probability <= 1:
            raise ValueError(f"resample_probability={self.resample_probability!r} must lie in [0, 1]")


def default_interval(epochs: int) -> int:
    """The perturbation interval of a run of ``epochs`` when none is set: four chances to exploit."""
    return max(1, int(epochs) // 4)


def make_pbt(config: PBTConfig, min_lr: float, max_lr: float, metric: str = "dice", seed: int = 0,
             mode: str = "max", own_lr: bool = False):
    """The Tune scheduler: PBT over ``lr`` maximising (``mode='max'``) or minimising ``metric``, synchronous.

    ``own_lr``: a member whose config has no ``lr`` starts from its optimizer's own LR
    (:class:`medtune.searchers.pbt_scheduler.OwnLRPBT`) instead of a random draw.
    """
    import random

    import numpy as np
    from ray import tune

    # Ray Tune: this module's PBTConfig stays importable without Ray, as all of medtune.searchers
    from medtune.searchers.pbt_scheduler import MemberPBT, OwnLRPBT

    # PBT draws its explore/exploit choices from the global RNGs of the driver (``random`` and numpy's,
    # for the resample): seed them so a study's PBT is reproducible.
    random.seed(seed)
    np.random.seed(seed)

    if config.perturbation_interval is None:
        raise ValueError("perturbation_interval is None; resolve it to the run with default_interval(epochs) first")

    def clamp(config: dict) -> dict:
        config["lr"] = min(max_lr, max(min_lr, float(config["lr"])))
        return config

    return (OwnLRPBT if own_lr else MemberPBT)(
        time_attr="training_iteration",
        metric=metric,
        mode=mode,
        perturbation_interval=config.perturbation_interval,
        quantile_fraction=config.quantile_fraction,
        resample_probability=config.resample_probability,
        hyperparam_mutations={"lr": tune.loguniform(min_lr, max_lr)},
        custom_explore_fn=clamp,
        synch=True,
    )
