"""PaSeR's three segmentation models, their pre-training, the router's training and the evaluation of every method.

Paper 003 (Pareto-optimal patch routing over segmentation models, PaSeR),
section 3 and its public code (scailab/paser), in three phases:

1. **Pre-training** (:func:`pretrain_models`, once per study): ``f1`` and
   ``f2`` are *patch models* (MONAI 2D UNets) trained with cross-entropy on the
   patches of the training images, as the public code trains its "local"
   models; then ``f0``, a tiny UNet with dropout that segments whole images, is
   distilled from ``f2`` (:func:`distill`): cross-entropy to the ground truth
   plus a temperature-softened KL divergence to f2's stitched patch predictions.
   The result is a dict of ``state_dict`` s that every Tune trial loads
   (:func:`load_models`), so no trial retrains them.
2. **Router** (:func:`train_router`): REINFORCE over the training images
   (:mod:`medtune.searchers.paser`), with a per-patch IoU table computed once (the
   models are frozen in this phase, so looking the IoU up is exact and as
   cheap as it gets).
3. **Joint fine-tuning** (inside :func:`train_router`, ``finetune_epochs``):
   the router samples actions; f1 and f2 take a cross-entropy step on the
   patches routed to them; the router takes a REINFORCE step on the rewards of
   those same predictions. f0 stays frozen (its MC-dropout maps are the
   router's state). Works on copies: the pre-trained models are not touched.

:func:`evaluate` scores one method (``small``, ``medium``, ``large``,
``cascade``, ``random``, ``paser``) on the test images and on the same test
images with unseen noise: ``iou``, ``gflops`` per image as executed,
``iou_per_gflop``, the share of patches per model and the IoU drop.
:func:`run_paser` and :func:`run_baselines` bundle what one Tune trial needs.

Model sizes (:class:`PaSeRModelsConfig`): ``size="cpu"`` (default; the
embedded study on 2 CPU cores) gives f0 15,461, f1 95,489 and f2 851,617
parameters (cost shares 0 / 0.099 / 0.885): f0 as in the paper, f1 and f2
smaller; ``size="paper"`` gives 15,461, 999,125 and 17,186,089, the paper's
16k / 1M / 17M (shares 0 / 0.055 / 0.944). Our choice: MONAI's ``UNet`` with
two stride-2 levels and two residual units per level for every model, so that
the 12x12 input of a patch model (an 8x8 patch of a 32x32 image cut 4x4, plus
a 2-pixel margin) keeps a 3x3 bottleneck (instance norm needs more than one
pixel); MONAI puts dropout after every convolution of f0, where the public
code's tiny UNet has it only after the down blocks.

Plain PyTorch and MONAI: no Ray, no MLflow.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medtune.errors import InputError, did_you_mean
from medtune.searchers.paser import (
    ACTIONS,
    ExplorationSchedule,
    PaSeRConfig,
    RewardBaseline,
    Router,
    Segmentation,
    action_shares,
    cascade,
    cascade_thresholds,
    check_grid,
    costs,
    crop_patches,
    iou,
    mc_dropout,
    patch_reward,
    random_routing,
    reinforce_loss,
    reinforce_step,
    routed_inference,
    router_input,
    run_patch_model,
    sample_actions,
    single_model,
    split_patches,
    stitch_patches,
)
from medtune.trainables.paser_data import PaSeRData
from medtune.util import is_int, is_number

__all__ = [
    "METHODS", "MODEL_NAMES", "PaSeRModelsConfig", "RouterResult", "RouterTables", "SIZES", "build_models",
    "distill", "evaluate", "load_models", "make_unet", "patch_logits", "pretrain", "pretrain_models",
    "router_tables", "run_baselines", "run_paser", "train_router",
]

METHODS: tuple[str, ...] = ("small", "medium", "large", "cascade", "random", "paser")
SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "cpu": ((8, 12, 24), (16, 32, 64), (48, 96, 192)),
    "paper": ((8, 12, 24), (52, 104, 208), (216, 432, 864)),
}
MODEL_NAMES = ("f0", "f1", "f2")


@dataclass(frozen=True)
class PaSeRModelsConfig:
    """The three models' sizes and their pre-training budget.

    Attributes:
        size: ``"cpu"`` (default) or ``"paper"``: channel presets (see the module docstring).
        f0_channels, f1_channels, f2_channels: Override a preset: the UNet's
            channels per level (2 to 5 levels, each >= 1); a model with ``L``
            levels halves the resolution ``L - 1`` times.
        num_res_units: Residual units per UNet block (MONAI ``num_res_units``), >= 0.
        f0_dropout: f0's dropout probability, used for MC dropout (0.5, the public code).
        pretrain_epochs: Epochs of f1 and f2 on the training patches.
        distill_epochs: Epochs of f0 distilled from f2.
        distill_weight: Weight of the KL term in f0's loss, in [0, 1]
            (``(1 - w) * CE + w * KL``, the public code's ``alpha_kd``).
        distill_temperature: Softmax temperature of the distillation (> 0).
        batch_size: Images per step (the patches of a batch go together).
        lr: Adam learning rate.

    Raises:
        InputError: One line naming the field, the value and the fix.
    """

    size: str = "cpu"
    f0_channels: tuple[int, ...] | None = None
    f1_channels: tuple[int, ...] | None = None
    f2_channels: tuple[int, ...] | None = None
    num_res_units: int = 2
    f0_dropout: float = 0.5
    pretrain_epochs: int = 8
    distill_epochs: int = 10
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    batch_size: int = 32
    lr: float = 3e-3

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise InputError(f"size={self.size!r} is not a model size preset; use one of "
                             f"{', '.join(SIZES)}{did_you_mean(self.size, tuple(SIZES))}")
        for name in ("f0_channels", "f1_channels", "f2_channels"):
            value = getattr(self, name)
            if value is None:
                continue
            if (not isinstance(value, (tuple, list)) or not 2 <= len(value) <= 5
                    or not all(is_int(c) and c >= 1 for c in value)):
                raise InputError(f"{name}={value!r} must be 2 to 5 channel counts >= 1, e.g. [16, 32, 64]")
            object.__setattr__(self, name, tuple(value))
        if not is_int(self.num_res_units) or self.num_res_units < 0:
            raise InputError(f"num_res_units={self.num_res_units!r} must be an integer >= 0")
        if not is_number(self.f0_dropout) or not 0 <= self.f0_dropout < 1:
            raise InputError(f"f0_dropout={self.f0_dropout!r} must lie in [0, 1), e.g. 0.5 (0 makes MC dropout "
                             "give no uncertainty)")
        for name in ("pretrain_epochs", "distill_epochs"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise InputError(f"{name}={value!r} must be an integer >= 0")
        if not is_number(self.distill_weight) or not 0 <= self.distill_weight <= 1:
            raise InputError(f"distill_weight={self.distill_weight!r} must lie in [0, 1]")
        if not is_number(self.distill_temperature) or self.distill_temperature <= 0:
            raise InputError(f"distill_temperature={self.distill_temperature!r} must be > 0, e.g. 2")
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise InputError(f"batch_size={self.batch_size!r} must be an integer >= 1")
        if not is_number(self.lr) or self.lr <= 0:
            raise InputError(f"lr={self.lr!r} must be a number > 0, e.g. 3e-3")

    def channels(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """``(f0, f1, f2)`` channels: the preset, with any override applied."""
        preset = SIZES[self.size]
        given = (self.f0_channels, self.f1_channels, self.f2_channels)
        return tuple(g if g is not None else p for g, p in zip(given, preset))  # type: ignore[return-value]


# --------------------------------------------------------------------------- models


def make_unet(channels: Sequence[int], num_res_units: int, dropout: float = 0.0) -> nn.Module:
    """A MONAI 2D UNet, 1 input channel, 2 output logits (background, foreground), stride 2 between levels."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=tuple(channels),
                strides=(2,) * (len(channels) - 1), num_res_units=num_res_units, dropout=dropout)


def build_models(config: PaSeRModelsConfig, image_size: int, paser: PaSeRConfig = PaSeRConfig()) -> list[nn.Module]:
    """``[f0, f1, f2]``, untrained, checked against the image and patch sizes.

    Args:
        config: Sizes.
        image_size: The image side.
        paser: Its ``grid`` and ``margin`` fix the patch models' input side
            ``image_size / grid + 2 * margin``.

    Raises:
        InputError: a bad grid or margin (:func:`~medtune.searchers.paser.check_grid`), or
            an image (f0) or patch-with-margin (f1, f2) side not divisible by
            ``2 ** (levels - 1)`` or leaving a bottleneck of one pixel.
    """
    check_grid(image_size, paser.grid, paser.margin)
    crop = image_size // paser.grid + 2 * paser.margin
    models = []
    for k, ch in enumerate(config.channels()):
        side = image_size if k == 0 else crop
        stride = 2 ** (len(ch) - 1)
        if side % stride or side // stride < 2:
            what = "image" if k == 0 else f"patch with margin ({image_size}/{paser.grid} + 2*{paser.margin})"
            fix = "a larger canvas" if k == 0 else "another grid or margin"
            raise InputError(f"f{k}_channels={list(ch)} has {len(ch)} levels, which do not fit the {side}-pixel "
                             f"{what}; use at most {_max_levels(side)} levels or {fix}")
        models.append(make_unet(ch, config.num_res_units, config.f0_dropout if k == 0 else 0.0))
    return models


def _max_levels(side: int) -> int:
    """Most UNet levels a ``side``-pixel input takes (each level but the first halves it, bottleneck >= 2)."""
    levels = 1
    while side % (2 ** levels) == 0 and side // (2 ** levels) >= 2:
        levels += 1
    return levels


def load_models(states: dict[str, dict], config: PaSeRModelsConfig, image_size: int,
                paser: PaSeRConfig = PaSeRConfig()) -> list[nn.Module]:
    """``[f0, f1, f2]`` in eval mode from :func:`pretrain_models`' state dicts (keys ``f0``, ``f1``, ``f2``)."""
    models = build_models(config, image_size, paser)
    for name, model in zip(MODEL_NAMES, models):
        model.load_state_dict(states[name])
        model.eval()
    return models


# --------------------------------------------------------------------------- pre-training


def _batches(n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True):
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _as_patches(x: torch.Tensor, y: torch.Tensor, grid: int | None, margin: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 1, H, W) and masks (B, H, W) as patch crops (B*P, 1, h+2m, w+2m) and patch masks (B*P, h, w).

    Unchanged if ``grid`` is None (whole images).
    """
    if grid is None:
        return x, y
    xp = crop_patches(x, grid, margin).flatten(0, 1)
    yp = split_patches(y[:, None], grid).flatten(0, 1)[:, 0]
    return xp, yp


def pretrain(model: nn.Module, images: np.ndarray, masks: np.ndarray, epochs: int, lr: float = 3e-3,
             batch_size: int = 32, seed: int = 0, grid: int | None = None, margin: int = 0,
             teacher_logits: torch.Tensor | None = None, distill_weight: float = 0.5,
             temperature: float = 2.0) -> list[float]:
    """Train ``model`` with cross-entropy (plus distillation when ``teacher_logits`` is given), in place.

    Args:
        model: Logits ``(n, 2, h, w)``.
        images: ``(N, 1, H, W)`` float32; masks: ``(N, H, W)`` int64 in {0, 1}.
        epochs: Passes over the images (0: nothing happens).
        grid: ``None`` trains on whole images (f0); an integer trains on the
            ``grid**2`` patches of each image (f1, f2: patch models), each seen
            with ``margin`` pixels of context and scored on its own pixels only,
            exactly as :func:`~medtune.searchers.paser.execute_routing` runs them.
        teacher_logits: ``(N, 2, H, W)`` soft targets: the loss becomes
            ``(1 - w) * CE + w * T**2 * KL(softmax(teacher / T) || softmax(model / T))``.

    Returns:
        The mean training loss of each epoch.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_all, y_all = torch.as_tensor(images), torch.as_tensor(masks)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        for idx in _batches(len(x_all), batch_size, generator):
            x, y = _as_patches(x_all[idx], y_all[idx], grid, margin)
            logits = run_patch_model(model, x, margin) if grid is not None else model(x)
            loss = F.cross_entropy(logits, y)
            if teacher_logits is not None:
                t = temperature
                kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.softmax(teacher_logits[idx] / t, dim=1),
                              reduction="none").sum(dim=1).mean() * t * t
                loss = (1 - distill_weight) * loss + distill_weight * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        history.append(total / max(count, 1))
    model.eval()
    return history


@torch.no_grad()
def patch_logits(model: nn.Module, images: torch.Tensor, grid: int, margin: int = 0, chunk: int = 64
                 ) -> torch.Tensor:
    """A patch model's logits on every patch, stitched back: ``(N, 1, H, W)`` -> ``(N, 2, H, W)``."""
    model.eval()
    out = []
    for start in range(0, len(images), chunk):
        crops = crop_patches(images[start:start + chunk], grid, margin)
        b, p = crops.shape[:2]
        logits = run_patch_model(model, crops.flatten(0, 1), margin)
        out.append(stitch_patches(logits.reshape(b, p, *logits.shape[1:]), grid))
    return torch.cat(out)


def distill(f0: nn.Module, f2: nn.Module, images: np.ndarray, masks: np.ndarray, epochs: int, grid: int,
            margin: int = 0, lr: float = 3e-3, batch_size: int = 32, seed: int = 0, weight: float = 0.5,
            temperature: float = 2.0) -> list[float]:
    """Distil the whole-image ``f0`` from the patch model ``f2`` (public code: ``global_distill``), in place.

    f2's patch logits on every training image are computed once (f2 is frozen
    here) and stitched into whole-image soft targets. Returns the loss per epoch.
    """
    teacher = patch_logits(f2, torch.as_tensor(images), grid, margin)
    return pretrain(f0, images, masks, epochs, lr, batch_size, seed, grid=None, teacher_logits=teacher,
                    distill_weight=weight, temperature=temperature)


def pretrain_models(data: PaSeRData, config: PaSeRModelsConfig = PaSeRModelsConfig(), seed: int = 0,
                    paser: PaSeRConfig = PaSeRConfig()) -> dict[str, dict]:
    """Phase 1, once per study: f2 and f1 on the training patches, then f0 distilled from f2.

    Args:
        data: The study's data (training split only is used).
        config: Sizes and budget.
        seed: Initialisation and batch order.
        paser: Its ``grid`` and ``margin``: f1 and f2 learn on these patches with this context.

    Returns:
        ``{"f0": state_dict, "f1": ..., "f2": ..., "history": {"f0": [...], ...}}``;
        ``history`` holds the loss per epoch. Tensors are on the CPU, so the
        dict can be saved with ``torch.save`` or put in Ray's object store.
    """
    torch.manual_seed(seed)
    f0, f1, f2 = build_models(config, data.image_size, paser)
    x, y, grid, margin = data.train_images, data.train_masks, paser.grid, paser.margin
    history = {
        "f2": pretrain(f2, x, y, config.pretrain_epochs, config.lr, config.batch_size, seed + 2, grid, margin),
        "f1": pretrain(f1, x, y, config.pretrain_epochs, config.lr, config.batch_size, seed + 1, grid, margin),
    }
    history["f0"] = distill(f0, f2, x, y, config.distill_epochs, grid, margin, config.lr, config.batch_size, seed,
                            config.distill_weight, config.distill_temperature)
    states = {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
              for name, m in zip(MODEL_NAMES, (f0, f1, f2))}
    states["history"] = history
    return states


# --------------------------------------------------------------------------- the router


@dataclass
class RouterTables:
    """What the router learns from, computed once per image set with frozen models.

    Attributes:
        state: ``(N, 2, H, W)`` router input (f0's MC-dropout probability and entropy).
        f0_pred: ``(N, H, W)`` f0's MC-dropout prediction (prob > 0.5).
        inter, union: ``(N, P, 3)`` foreground intersection and union pixel
            counts of each model's prediction with the mask, per patch.
    """

    state: torch.Tensor
    f0_pred: torch.Tensor
    inter: torch.Tensor
    union: torch.Tensor

    @property
    def iou(self) -> torch.Tensor:
        """``(N, P, 3)`` per-patch IoU, 1.0 where the union is empty."""
        return torch.where(self.union > 0, self.inter / self.union.clamp(min=1), torch.ones_like(self.union))

    def image_iou(self, actions: torch.Tensor) -> torch.Tensor:
        """``(N,)`` whole-image IoU of the routing ``actions`` ``(N, P)`` (exact: sums of patch counts)."""
        i = self.inter.gather(2, actions[..., None])[..., 0].sum(dim=1)
        u = self.union.gather(2, actions[..., None])[..., 0].sum(dim=1)
        return torch.where(u > 0, i / u.clamp(min=1), torch.ones_like(u))


def _overlap(pred: torch.Tensor, mask: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch foreground intersection and union counts, ``(N, P)`` each."""
    p = split_patches((pred != 0).float()[:, None], grid).flatten(2)
    t = split_patches((mask != 0).float()[:, None], grid).flatten(2)
    return (p * t).sum(dim=2), ((p + t) > 0).float().sum(dim=2)


@torch.no_grad()
def router_tables(models: Sequence[nn.Module], images: np.ndarray, masks: np.ndarray, config: PaSeRConfig,
                  chunk: int = 64) -> RouterTables:
    """f0's MC-dropout maps and every model's per-patch overlap with the masks (models frozen)."""
    x_all, y_all = torch.as_tensor(images), torch.as_tensor(masks)
    states, preds, inters, unions = [], [], [], []
    for start in range(0, len(x_all), chunk):
        x, y = x_all[start:start + chunk], y_all[start:start + chunk]
        prob, entropy = mc_dropout(models[0], x, config.T)
        f0_pred = (prob > 0.5).long()
        counts = [_overlap(f0_pred, y, config.grid)]
        for k in range(1, len(models)):
            models[k].eval()
            logits = patch_logits(models[k], x, config.grid, config.margin)
            counts.append(_overlap(logits.argmax(dim=1), y, config.grid))
        states.append(router_input(prob, entropy))
        preds.append(f0_pred)
        inters.append(torch.stack([c[0] for c in counts], dim=2))
        unions.append(torch.stack([c[1] for c in counts], dim=2))
    return RouterTables(torch.cat(states), torch.cat(preds), torch.cat(inters), torch.cat(unions))


@dataclass
class RouterResult:
    """What :func:`train_router` returns.

    Attributes:
        router: The trained policy (eval mode).
        models: ``[f0, f1, f2]`` after joint fine-tuning (copies; the same
            objects as passed in when ``finetune_epochs == 0``).
        cost: ``(3,)`` the cost vector used in the reward.
        curve: One dict per epoch: ``phase`` (``router``/``finetune``),
            ``epoch``, ``epsilon``, ``reward`` (mean over sampled patches),
            ``share_f0..2`` (sampled), and on validation images with the arg-max
            action: ``val_reward``, ``val_iou``, ``val_cost``, ``val_share_f0..2``.
        val_shares: ``[share_f0, share_f1, share_f2]`` of the final router's
            arg-max actions on validation images (the ``random`` baseline's
            probabilities; the training images when there is no validation split).
    """

    router: Router
    models: list[nn.Module]
    cost: torch.Tensor
    curve: list[dict] = field(default_factory=list)
    val_shares: list[float] = field(default_factory=list)


@torch.no_grad()
def _greedy_summary(router: Router, tables: RouterTables, cost: torch.Tensor, lam: float) -> dict[str, float]:
    router.eval()
    actions = router(tables.state).argmax(dim=-1)
    rewards = patch_reward(tables.iou.gather(2, actions[..., None])[..., 0], tables.iou[..., 0], cost[actions], lam)
    out = {"val_reward": float(rewards.mean()), "val_iou": float(tables.image_iou(actions).mean()),
           "val_cost": float(cost[actions].mean())}
    out.update({f"val_{k}": v for k, v in action_shares(actions).items()})
    return out


def _mean_rows(rows: list[dict]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


def train_router(models: Sequence[nn.Module], data: PaSeRData, config: PaSeRConfig = PaSeRConfig(),
                 seed: int = 0, tables: tuple[RouterTables, RouterTables] | None = None) -> RouterResult:
    """Phases 2 and 3: REINFORCE the router on the training images, then fine-tune f1, f2 and it jointly.

    Args:
        models: ``[f0, f1, f2]`` pre-trained (:func:`load_models`); not modified.
        data: Training images teach; validation images (training ones if
            there are none) give the curve's ``val_*`` numbers. Never the test set.
        config: ``lam``, grid, T, schedule and budgets.
        seed: Router initialisation, sampling, exploration and batch order.
        tables: ``(train, val)`` from :func:`router_tables` for these models and
            this ``T``/``grid``/``margin``, to compute them once per study rather
            than once per trial (the tables do not depend on ``lam``; every trial
            then shares one draw of f0's dropout masks). Computed here if ``None``.

    Returns:
        :class:`RouterResult`.
    """
    check_grid(data.image_size, config.grid, config.margin)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    crop = data.image_size // config.grid + 2 * config.margin
    cost = costs(models, config.cost, (1, crop, crop))
    has_val = len(data.val_images) > 0
    if tables is None:
        train = router_tables(models, data.train_images, data.train_masks, config)
        val = router_tables(models, data.val_images, data.val_masks, config) if has_val else train
    else:
        train, val = tables

    router = Router(config.grid, len(models), config.router_width)
    optimizer = torch.optim.Adam(router.parameters(), lr=config.lr)
    baseline = RewardBaseline(config.baseline_decay)
    schedule = ExplorationSchedule(config.epsilon_start, config.epsilon_end, config.router_epochs)
    iou_table, n = train.iou, len(train.state)
    curve: list[dict] = []
    for epoch in range(config.router_epochs):
        eps = schedule.epsilon(epoch)
        rows = [reinforce_step(router, optimizer, train.state[idx], iou_table[idx], cost, config.lam, eps, baseline,
                               config.beta, generator)
                for idx in _batches(n, config.batch_size, generator)]
        curve.append({"phase": "router", "epoch": epoch, "epsilon": eps, **_mean_rows(rows),
                      **_greedy_summary(router, val, cost, config.lam)})

    models = list(models)
    if config.finetune_epochs > 0:
        models = [models[0]] + [copy.deepcopy(m) for m in models[1:]]
        curve += _finetune(models, router, optimizer, baseline, train, data, cost, config, generator)
        if has_val:        # f1/f2 changed: the validation table is stale
            val = router_tables(models, data.val_images, data.val_masks, config)
        curve[-1].update(_greedy_summary(router, val, cost, config.lam))
    router.eval()
    with torch.no_grad():
        shares = action_shares(router(val.state).argmax(dim=-1), len(models))
    return RouterResult(router, models, cost, curve, [shares[f"share_f{k}"] for k in range(len(models))])


def _finetune(models: list[nn.Module], router: Router, router_optimizer: torch.optim.Optimizer,
              baseline: RewardBaseline, train: RouterTables, data: PaSeRData, cost: torch.Tensor,
              config: PaSeRConfig, generator: torch.Generator) -> list[dict]:
    """Joint fine-tuning (paper: "we jointly update the large models and RL model"): f1, f2 and the router, f0 frozen.

    Per batch: the router samples actions (exploration ``epsilon_end``); each
    patch model takes one cross-entropy step on the patches routed to it; the
    routed prediction (those models' outputs before their step, f0's MC
    prediction elsewhere) gives the per-patch rewards of a REINFORCE step.
    """
    grid = config.grid
    x_all, y_all = torch.as_tensor(data.train_images), torch.as_tensor(data.train_masks)
    params = [p for m in models[1:] for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.finetune_lr)
    curve = []
    for epoch in range(config.finetune_epochs):
        rows = []
        for idx in _batches(len(x_all), config.batch_size, generator):
            x, y, state = x_all[idx], y_all[idx], train.state[idx]
            router.train()
            logits = router(state)
            actions = sample_actions(logits, config.epsilon_end, generator)
            crops = crop_patches(x, grid, config.margin)                         # (B, P, 1, h+2m, w+2m)
            target = split_patches(y[:, None], grid)[:, :, 0]                    # (B, P, h, w)
            routed = split_patches(train.f0_pred[idx][:, None], grid).clone()     # (B, P, 1, h, w)
            loss = x.new_zeros(())
            for k in range(1, len(models)):
                chosen = actions == k
                if not bool(chosen.any()):
                    continue
                models[k].train()
                out = run_patch_model(models[k], crops[chosen], config.margin)
                loss = loss + F.cross_entropy(out, target[chosen]) * float(chosen.float().mean())
                routed[chosen] = out.detach().argmax(dim=1, keepdim=True)
            if loss.requires_grad:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            pred = stitch_patches(routed, grid)[:, 0]
            inter, union = _overlap(pred, y, grid)
            iou_routed = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
            rewards = patch_reward(iou_routed, train.iou[idx][..., 0], cost[actions], config.lam)
            b = baseline.update(rewards)
            policy_loss = reinforce_loss(logits, actions, rewards, b, config.beta, config.epsilon_end)
            router_optimizer.zero_grad(set_to_none=True)
            policy_loss.backward()
            router_optimizer.step()
            rows.append({"reward": float(rewards.mean()), "loss": float(policy_loss.detach()),
                         "seg_loss": float(loss.detach()), **action_shares(actions, len(models))})
        for m in models[1:]:
            m.eval()
        curve.append({"phase": "finetune", "epoch": config.router_epochs + epoch, "epsilon": config.epsilon_end,
                      **_mean_rows(rows)})
    return curve


# --------------------------------------------------------------------------- evaluation


def _run_method(method: str, models: Sequence[nn.Module], x: torch.Tensor, config: PaSeRConfig,
                router: nn.Module | None, shares: Sequence[float] | None, thresholds: tuple[float, float] | None,
                generator: torch.Generator) -> Segmentation:
    grid, margin = config.grid, config.margin
    if method in ("small", "medium", "large"):
        return single_model(models, METHODS.index(method), x, grid, margin)
    if method == "cascade":
        if thresholds is None:
            raise InputError("method='cascade' needs thresholds= (cascade_thresholds on held-out images)")
        t1, t2 = thresholds
        return cascade(models, x, grid, config.T, t1, t2, margin=margin)
    if method == "random":
        if shares is None:
            raise InputError("method='random' needs shares= (the router's share of patches per model)")
        return random_routing(models, x, grid, shares, generator, margin)
    if router is None:
        raise InputError("method='paser' needs router=; train one with train_router first")
    return routed_inference(models, router, x, grid, config.T, margin)


def evaluate(method: str, models: Sequence[nn.Module], data: PaSeRData, config: PaSeRConfig = PaSeRConfig(),
             router: nn.Module | None = None, shares: Sequence[float] | None = None,
             thresholds: tuple[float, float] | None = None, seed: int = 0, chunk: int = 50) -> dict[str, float]:
    """Score one method on the test images and on the same images with unseen noise.

    Args:
        method: One of :data:`METHODS`.
        models: ``[f0, f1, f2]`` (for ``paser``: the fine-tuned ones from :class:`RouterResult`).
        data: Uses ``test_images``, ``test_unseen_images`` and ``test_masks``;
            ``cascade`` picks its thresholds on ``val_images`` (training images
            if there are none) unless ``thresholds`` is given.
        router: Required for ``paser``.
        shares: Required for ``random``: the probabilities of f0, f1, f2
            (e.g. :attr:`RouterResult.val_shares`).
        seed: The random routing's draws and the MC-dropout masks.

    Returns:
        ``iou`` (mean image foreground IoU), ``gflops`` (GFLOPs executed per
        image), ``iou_per_gflop`` (``iou / gflops``), ``share_f0..2`` (patches
        per model), ``iou_unseen``, ``gflops_unseen``, ``iou_drop``
        (``iou - iou_unseen``), ``iou_drop_pct`` (``100 * iou_drop / iou``),
        ``n_images``; ``cascade_t1``/``cascade_t2`` for ``cascade``.

    Raises:
        InputError: An unknown method, or a missing ``router``/``shares``.
    """
    if method not in METHODS:
        raise InputError(f"method={method!r} is not a PaSeR method; use one of "
                         f"{', '.join(METHODS)}{did_you_mean(method, METHODS)}")
    if method == "paser" and router is None:
        raise InputError("method='paser' needs router=; train one with train_router first")
    if method == "random" and shares is None:
        raise InputError("method='random' needs shares= (the router's share of patches per model)")
    check_grid(data.image_size, config.grid, config.margin)
    extra: dict[str, float] = {}
    if method == "cascade" and thresholds is None:
        torch.manual_seed(seed)
        held = data.val_images if len(data.val_images) else data.train_images
        thresholds = cascade_thresholds(models, torch.as_tensor(held), config.grid, config.T,
                                        config.cascade_quantiles, config.margin)
    if method == "cascade" and thresholds is not None:
        extra = {"cascade_t1": float(thresholds[0]), "cascade_t2": float(thresholds[1])}

    def score(images: np.ndarray) -> tuple[float, float, torch.Tensor]:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        x_all, y_all = torch.as_tensor(images), torch.as_tensor(data.test_masks)
        ious, actions, flops = [], [], 0
        for start in range(0, len(x_all), chunk):
            seg = _run_method(method, models, x_all[start:start + chunk], config, router, shares, thresholds,
                              generator)
            ious.append(iou(seg.pred, y_all[start:start + chunk]))
            actions.append(seg.actions)
            flops += seg.flops
        return float(torch.cat(ious).mean()), flops / len(x_all) / 1e9, torch.cat(actions)

    iou_test, gflops, actions = score(data.test_images)
    iou_unseen, gflops_unseen, _ = score(data.test_unseen_images)
    out = {"iou": iou_test, "gflops": gflops, "iou_per_gflop": iou_test / gflops if gflops > 0 else math.nan,
           **action_shares(actions, len(ACTIONS)), "iou_unseen": iou_unseen, "gflops_unseen": gflops_unseen,
           "iou_drop": iou_test - iou_unseen,
           "iou_drop_pct": 100.0 * (iou_test - iou_unseen) / iou_test if iou_test > 0 else math.nan,
           "n_images": float(len(data.test_images))}
    out.update(extra)
    return out


def run_paser(states: dict[str, dict], data: PaSeRData, config: PaSeRConfig = PaSeRConfig(),
              models_config: PaSeRModelsConfig = PaSeRModelsConfig(), seed: int = 0,
              tables: tuple[RouterTables, RouterTables] | None = None) -> dict:
    """One Tune trial's work for one (``lam``, seed): train the router, score ``paser`` and ``random`` at its cost.

    ``random`` routes with the router's validation shares through the same
    (fine-tuned) models, so the two differ only in *which* patches go where.
    ``tables``: see :func:`train_router`.

    Returns:
        ``{"paser": metrics, "random": metrics, "curve": [...], "cost": [C0, C1, C2]}``
        (metrics as :func:`evaluate`).
    """
    models = load_models(states, models_config, data.image_size, config)
    result = train_router(models, data, config, seed, tables)
    return {
        "paser": evaluate("paser", result.models, data, config, router=result.router, seed=seed),
        "random": evaluate("random", result.models, data, config, shares=result.val_shares, seed=seed),
        "curve": result.curve,
        "cost": [float(c) for c in result.cost],
    }


def run_baselines(states: dict[str, dict], data: PaSeRData, config: PaSeRConfig = PaSeRConfig(),
                  models_config: PaSeRModelsConfig = PaSeRModelsConfig(), seed: int = 0) -> dict[str, dict]:
    """The router-free baselines (``small``, ``medium``, ``large``, ``cascade``) on the pre-trained models.

    They do not depend on ``lam``; only the MC-dropout masks (f0 in the
    cascade) depend on ``seed``.
    """
    models = load_models(states, models_config, data.image_size, config)
    return {m: evaluate(m, models, data, config, seed=seed) for m in ("small", "medium", "large", "cascade")}
