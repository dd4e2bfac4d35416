"""3D segmentation training with a learning-rate policy: the trainable of the LR study.

A MONAI 3D network (a UNet by default, or any of
:data:`medtune.trainables.lr_networks.NETWORKS`) trained with Dice + cross-entropy (or
Dice, or Dice + focal) and Adam (or AdamW, or SGD) on the study's volumes (paper
000, section 5: MSD Task04 Hippocampus, any Decathlon task, or the embedded
phantom). Every
epoch it validates (mean foreground Dice, validation loss), lets the LR policy
act, checkpoints everything a restart needs (model, optimizer, LR policy, the
RNG states and the shuffling generator) and reports
``dice, val_loss, train_loss, lr, epoch, diverged``; after the last epoch also
``test_dice`` on the held-out test split, which nothing watches during training.

The LR policy runs inside the trial for the baselines of
:mod:`medtune.searchers.lr_schedules`, ``greedy`` (:mod:`medtune.searchers.greedy_lr`) and
``effort`` (:mod:`medtune.searchers.effort_controller`, fed the episodic memory of
finished trials). For ``qlearning`` / ``qlearning_warm`` the trial only *reads*
its LR, once per epoch, from the mailbox that
:class:`medtune.searchers.qlearning_scheduler.QLearningLRScheduler` writes, and for
``pbt`` it takes ``config["lr"]``, which Tune's PopulationBasedTraining mutates
between restarts (the decisions are the schedulers', never the trainable's).

``poly``, ``schedulefree`` and ``prodigy`` bring their own optimizer, built here
from their ``schedules`` section (:func:`medtune.trainables.lr_control.make_optimizer`);
``train.optimizer``, ``momentum``, ``nesterov``, ``weight_decay`` and ``base_lr``
apply to every other method. ``onecycle`` moves the LR after every batch
(``LRControl.batch_step``). Schedule-Free AdamW is switched to train mode for
each epoch's training and to eval mode for validation, testing and the
checkpoint (its averaged weights are the ones scored and saved).

:class:`SegmentationRun` is the plain PyTorch loop (no Ray); :func:`train_segmentation`
is the thin Tune adapter around it.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from medtune.config import from_dict
from medtune.errors import did_you_mean
from medtune.searchers.episodic_memory import EpisodicMemory
from medtune.searchers.lr_schedules import ScheduleConfig
from medtune.searchers.search_spaces import apply_values
from medtune.trainables.lr_control import (
    CHECKPOINT_EVERY,
    CHECKPOINT_EVERY_S,
    OWN_OPTIMIZERS,
    SCHEDULER_DRIVEN,
    LRControl,
    LRControlConfig,
    checkpoint_due,
    make_optimizer,
)
from medtune.trainables.lr_control import (
    METHOD_NAMES as METHODS,
)
from medtune.trainables.lr_data import DataConfig, SegmentationData, SegmentationSplit, arrays_as_split, split_datalists
from medtune.trainables.lr_networks import ModelConfig, build_network
from medtune.util import int3

__all__ = [
    "AUGMENT_SEED", "CHECKPOINT_FILE", "DEFAULT_BATCH_SIZE", "EpochResult", "LOSSES", "OPTIMIZERS", "Pipeline",
    "SegmentationRun", "TrainConfig", "apply_tuned", "augmentation", "augmentation_state", "choose_pipeline",
    "make_dataset", "make_loader", "make_loss", "make_train_optimizer", "patch_collate", "ray_node_id",
    "seed_everything", "set_augmentation_state", "shared_dataset", "train_segmentation", "trial_transforms",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
DEFAULT_BATCH_SIZE = 4  # train.batch_size when the spec leaves it to the plan and there is none (the phantom)
LOSSES = ("dice_ce", "dice", "dice_focal")


def make_train_optimizer(params, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` / ``AdamW`` / ``SGD`` over ``params`` at ``lr`` as ``cfg`` says."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def make_loss(name: str):
    """The MONAI loss ``name`` of :data:`LOSSES`: logits ``(B, C, D, H, W)`` against labels ``(B, 1, D, H, W)``."""
    from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss

    cls = {"dice_ce": DiceCELoss, "dice": DiceLoss, "dice_focal": DiceFocalLoss}[name]
    return cls(to_onehot_y=True, softmax=True)


@dataclass(frozen=True)
class TrainConfig:
    """Budget, optimiser and loss of every trial (the same for every method).

    Attributes:
        epochs: Each trial's length in epochs (>= 1), the same for every method: cosine and the other schedules
            anneal over it, and PBT's default ``perturbation_interval`` is scaled to it.
        base_lr: The starting LR of every trial (> 0, in ``[min_lr, max_lr]``); a tuned ``train.base_lr`` is also
            that method's starting LR. ``poly``, ``schedulefree`` and ``prodigy`` start from their own section's.
        min_lr, max_lr: The LR bounds of the adaptive methods (> 0, ``min_lr < max_lr``): the Q-learning agent,
            GreedyLR and PBT keep the LR within them, and an LR a trial is handed is clipped to them.
        weight_decay: The optimizer's weight decay (L2 penalty for ``adam`` / ``sgd``, decoupled for ``adamw``),
            >= 0; 0 (default): none.
        num_workers: Worker processes of the CPU pipeline's torch ``DataLoader`` (>= 0); 0: batches are built in
            the trial's own process. On CUDA the ``ThreadDataLoader`` ignores it.
        amp: Mixed precision (``torch.autocast`` with a ``GradScaler``) on CUDA; ignored on the CPU.
        target_dice: The validation Dice in (0, 1] that the report's "epochs to target" counts the epochs to.
        optimizer: ``adam`` (default), ``adamw`` or ``sgd`` (torch.optim), all with ``weight_decay``; not for
            ``poly``, ``schedulefree`` and ``prodigy``, which train with their own (their ``schedules``
            section sets it, LR included).
        momentum: ``sgd`` only, in [0, 1).
        nesterov: ``sgd`` only; needs ``momentum > 0``.
        grad_clip: Clip the gradients' global L2 norm to this value before each step; 0 or None: no clipping.
        loss: ``dice_ce`` (default, MONAI ``DiceCELoss``), ``dice`` (``DiceLoss``) or ``dice_focal``
            (``DiceFocalLoss``), each on softmax outputs against one-hot labels.
        deterministic: On CUDA, prefer deterministic kernels (``torch.use_deterministic_algorithms`` with
            ``warn_only``: an op with no deterministic kernel still runs and logs a warning; cuDNN's deterministic
            mode; no ``cudnn.benchmark``) so a rerun gives the same numbers; False trades that for cuDNN's
            fastest kernels. CPU trials are deterministic either way (one seed, a fixed thread
            count: ``resources.cpus_per_trial``).
        checkpoint_every: Under Tune, a trial writes its checkpoint (model, optimizer, LR policy, RNGs) every this
            many epochs, and also at its last epoch, after ``checkpoint_every_s`` seconds of training without
            one, and, for ``pbt`` members, at every perturbation epoch (what PBT clones). A resumed trial
            restarts from its last checkpoint, so it trains again at most that many epochs (a diverged trial
            keeps its last one).
        checkpoint_every_s: The wall-clock bound above, in seconds.
    """

    epochs: int = 30
    batch_size: int | None = None  # planned for a Decathlon task; DEFAULT_BATCH_SIZE (4) otherwise
    base_lr: float = 1e-3
    min_lr: float = 1e-6
    max_lr: float = 1e-2
    weight_decay: float = 0.0
    num_workers: int = 0
    amp: bool = False
    target_dice: float = 0.8
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    grad_clip: float | None = None
    loss: str = "dice_ce"
    deterministic: bool = True
    checkpoint_every: int = CHECKPOINT_EVERY
    checkpoint_every_s: float = CHECKPOINT_EVERY_S

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not supported"
                             f"{did_you_mean(self.optimizer, OPTIMIZERS)}; use one of {', '.join(OPTIMIZERS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not supported{did_you_mean(self.loss, LOSSES)}; "
                             f"use one of {', '.join(LOSSES)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum={self.momentum!r} must lie in [0, 1)")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError(f"nesterov=True needs optimizer='sgd' and momentum > 0 (got optimizer={self.optimizer!r}, "
                             f"momentum={self.momentum!r})")
        if self.grad_clip is not None and not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"grad_clip={self.grad_clip!r} must be a positive number, or 0/null for no clipping")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs!r} must be >= 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be >= 1 (or null: planned for a Decathlon task)")
        for name in ("base_lr", "min_lr", "max_lr"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}={value!r} must be a positive finite number")
        if self.min_lr >= self.max_lr:
            raise ValueError(f"min_lr={self.min_lr!r} must be below max_lr={self.max_lr!r}; "
                             "lower min_lr or raise max_lr")
        if not self.min_lr <= self.base_lr <= self.max_lr:
            raise ValueError(f"base_lr={self.base_lr!r} must lie in [min_lr, max_lr] = [{self.min_lr!r}, "
                             f"{self.max_lr!r}]")
        if self.num_workers < 0:
            raise ValueError(f"num_workers={self.num_workers!r} must be >= 0")
        if isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int) \
                or self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every={self.checkpoint_every!r} must be a whole number of epochs >= 1")
        if not (isinstance(self.checkpoint_every_s, (int, float)) and self.checkpoint_every_s > 0):
            raise ValueError(f"checkpoint_every_s={self.checkpoint_every_s!r} must be a number of seconds > 0")
        if not 0 < self.target_dice <= 1:
            raise ValueError(f"target_dice={self.target_dice!r} must lie in (0, 1]")


@dataclass(frozen=True)
class Pipeline:
    """How a trial feeds its device (MONAI's fast-training recipe on CUDA, the plain one on CPU).

    Attributes:
        loader: ``"ThreadDataLoader"`` (MONAI; batches built in a thread of the trial, no worker processes, so
            the cached GPU tensors are never pickled) on CUDA, ``"DataLoader"`` (torch, ``train.num_workers``
            processes) on CPU.
        to_device: End the cached, deterministic transforms with ``ToDeviced``: the ``CacheDataset`` then holds
            its volumes on the GPU and the random patch sampling runs there.
        cudnn_benchmark: Set ``torch.backends.cudnn.benchmark`` (fixed input sizes: let cuDNN pick its kernels
            by timing them, which is not reproducible): only on CUDA with ``train.deterministic`` off.
        deterministic: On CUDA, restrict torch to deterministic kernels (``train.deterministic``).
        amp: Mixed precision (``torch.autocast`` + ``GradScaler``); ``train.amp`` on CUDA only.
    """

    loader: str
    to_device: bool
    cudnn_benchmark: bool
    amp: bool
    deterministic: bool = False


def choose_pipeline(device: str, amp: bool, deterministic: bool = True) -> Pipeline:
    """The :class:`Pipeline` for ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``), ``train.amp`` and
    ``train.deterministic``."""
    cuda = torch.device(device).type == "cuda"
    return Pipeline(loader="ThreadDataLoader" if cuda else "DataLoader", to_device=cuda,
                    cudnn_benchmark=cuda and not deterministic, amp=bool(amp and cuda),
                    deterministic=cuda and bool(deterministic))


def trial_transforms(split: SegmentationSplit, pipeline: Pipeline, device: str, crop: Any = None) -> list:
    """The transforms of one split's dataset: the split's deterministic preprocessing (cached), then ``ToDeviced``
    to ``device`` when ``pipeline.to_device`` and the cache is in memory (still deterministic, so the cache lives
    there; a disk cache holds CPU tensors), then the random ``crop`` (``RandCropByPosNegLabeld``), which runs on
    every access, after the cache."""
    steps = split.transforms()
    if pipeline.to_device and split.cache == "memory":
        from monai.transforms import ToDeviced

        steps.append(ToDeviced(keys=("image", "label"), device=device))
    return steps + ([crop] if crop is not None else [])


def make_dataset(items: list[dict], transforms: list, cache_rate: float, cache: str = "memory",
                 cache_dir: str | None = None):
    """The MONAI dataset over ``items`` that ``cache`` names.

    ``memory``: ``CacheDataset``, the first ``int(cache_rate * len(items))`` preprocessed once and held
    (``copy_cache=False``: the patch crop copies what it takes, nothing writes into the cache). ``disk``:
    ``PersistentDataset`` writing each item's preprocessed volume to ``cache_dir`` on first use and reading it back
    after (another dataset over the same folder, in this process or another, preprocesses nothing); a temporary
    folder of the process when ``cache_dir`` is None. ``none``: ``Dataset``, every access reads and preprocesses."""
    from monai.data import CacheDataset, Dataset, PersistentDataset
    from monai.transforms import Compose

    if cache == "disk":
        if cache_dir is None:
            import tempfile

            cache_dir = tempfile.mkdtemp(prefix="medtune-cache-")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, transform=Compose(transforms), cache_dir=cache_dir)
    if cache == "none":
        return Dataset(items, transform=Compose(transforms))
    return CacheDataset(items, transform=Compose(transforms), cache_rate=cache_rate, progress=False, copy_cache=False)


# A worker process that Tune reuses (``reuse_actors``) trains one trial after another, nearly always on the same
# split: it keeps the preprocessed caches of the last split it saw, so the deterministic preprocessing (reading,
# resampling, cropping every volume) runs once per process instead of once per trial and once per PBT restart.
# Only the newest split is kept; nothing writes into a cache (``copy_cache=False`` and a patch crop copies).
_PROCESS_CACHES: dict[tuple, Any] = {}


def shared_dataset(split: SegmentationSplit, part: str, pipeline: Pipeline, device: str, crop: Any = None):
    """The dataset of ``split``'s ``part`` (``"train"``, ``"val"`` or ``"test"``) for one trial: the process's
    cached dataset of the deterministic preprocessing (built on first use, see ``_PROCESS_CACHES``; per trial when
    ``split.key`` is None; kept as ``split.cache`` says), wrapped with the trial's own random ``crop`` (the patch
    crop, and the augmentation after it) when it has one.

    The items a trial reads are those of ``make_dataset(items, trial_transforms(..., crop), cache_rate)``: the
    crop runs on every access after the cached part in both, drawing from the crop's own random state."""
    def build():
        cache_dir = str(Path(split.cache_dir) / part) if split.cache_dir else None
        return make_dataset(getattr(split, part), trial_transforms(split, pipeline, device), split.cache_rate,
                            split.cache, cache_dir)

    if split.key is None:
        cached = build()
    else:
        key = (split.key, part, device, pipeline.to_device)
        if any(k[0] != split.key for k in _PROCESS_CACHES):
            _PROCESS_CACHES.clear()  # another split: the old caches go
        if key not in _PROCESS_CACHES:
            _PROCESS_CACHES[key] = build()
        cached = _PROCESS_CACHES[key]
    if crop is None:
        return cached
    from monai.data import Dataset

    return Dataset(cached, transform=crop)


def make_loader(pipeline: Pipeline, dataset, batch_size: int, shuffle: bool, generator: torch.Generator | None,
                num_workers: int):
    """The loader class :attr:`Pipeline.loader` names, collating with :func:`patch_collate`. MONAI's
    ``ThreadDataLoader`` draws a seed for the dataset's random transforms from ``generator`` and resets it to its
    initial seed, so pass a generator of the trial's own (never None, which means torch's global one)."""
    if pipeline.loader == "ThreadDataLoader":
        from monai.data import ThreadDataLoader

        return ThreadDataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0,
                                collate_fn=patch_collate)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                       num_workers=num_workers, collate_fn=patch_collate)


@dataclass
class EpochResult:
    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    dice: float
    diverged: bool = False
    test_dice: float | None = None  # held-out test Dice, after the last epoch only

    def metrics(self) -> dict[str, float]:
        out = {
            "epoch": self.epoch,
            "lr": self.lr,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "dice": self.dice,
            "diverged": int(self.diverged),
        }
        if self.test_dice is not None:
            out["test_dice"] = self.test_dice
        return out


@dataclass
class SegmentationRun:
    """One training run: model, optimizer, LR policy, data order; no Ray.

    Args:
        method: an LR method of :data:`METHODS`; ``qlearning``, ``qlearning_warm`` and ``pbt`` mean the LR is
            set from outside via :meth:`set_lr`.
        seed: model initialisation and batch order.
        data: the split as MONAI data lists (:class:`~medtune.trainables.lr_data.SegmentationSplit`, what the study
            passes), or dense arrays (:class:`~medtune.trainables.lr_data.SegmentationData`: ``images``
            (N, C, D, H, W) float32, ``labels`` (N, 1, D, H, W) int64). Either way each split becomes a MONAI
            ``CacheDataset`` (``cache_rate`` of it preprocessed once), and the loader is chosen by
            :func:`choose_pipeline`: on CUDA the cache is moved to the GPU (``ToDeviced``) and read by
            ``ThreadDataLoader``, with ``cudnn.benchmark`` and, with ``train.amp``, mixed precision.
        lr: initial learning rate.
        device: ``"cpu"`` or a CUDA device.
        patch_size: ``(d, h, w)`` to train on ``patches_per_volume`` random patches per volume and epoch
            (MONAI ``RandCropByPosNegLabeld``, ``foreground_ratio`` of them on foreground, seeded by ``seed``, its
            state checkpointed; then the augmentation, with ``augment``) and to score with
            ``sliding_window_inference``; None (default): whole volumes, one forward pass each.
        patches_per_volume: with ``patch_size`` only; a batch holds ``batch_size * patches_per_volume`` patches.
        foreground_ratio, sw_overlap, sw_mode, augment: as :class:`~medtune.trainables.lr_data.DataConfig`'s; None:
            the split's data section's (a split of dense arrays: 0.5, 0.25, ``"constant"``, off, the settings the
            phantom always had).
    """

    method: str
    seed: int
    data: SegmentationData | SegmentationSplit
    model_cfg: ModelConfig = field(default_factory=ModelConfig)
    train_cfg: TrainConfig = field(default_factory=TrainConfig)
    schedule_cfg: ScheduleConfig = field(default_factory=ScheduleConfig)
    lr: float | None = None
    device: str = "cpu"
    memory_source: Callable[[], EpisodicMemory] | None = None  # ``effort``: the current episodic memory
    task: str | None = None  # ``effort``: recall only curves of this task key
    patch_size: tuple[int, int, int] | None = None
    patches_per_volume: int = 2
    score_test: bool = True  # False (a search trial): the test split is never read, test() refuses
    qlearning: dict[str, Any] | None = None  # given: qlearning decides with a private agent of these settings
    foreground_ratio: float | None = None
    sw_overlap: float | None = None
    sw_mode: str | None = None
    augment: bool | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not an LR method; use one of {', '.join(METHODS)}")
        seed_everything(self.seed)
        batch_size = self.train_cfg.batch_size
        if batch_size is None:  # not planned (a direct call): the phantom's 4
            batch_size = DEFAULT_BATCH_SIZE
            self.train_cfg = replace(self.train_cfg, batch_size=batch_size)
        self.batch_size = batch_size
        split = self.data if isinstance(self.data, SegmentationSplit) else arrays_as_split(self.data)
        self.split = split
        self.num_classes = split.num_classes
        data_cfg = split.cfg if split.cfg is not None else DataConfig()  # arrays: the phantom's settings
        for name in ("foreground_ratio", "sw_overlap", "sw_mode", "augment"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(data_cfg, name))
        if split.native and not self.patch_size:
            raise ValueError("a Decathlon split keeps each volume's own size: give patch_size (data.patch_size, or "
                             "plan it with medtune.trainables.plan)")
        # Whole-volume scoring: volumes of their own sizes do not stack, so one per batch.
        self.score_batch = 1 if split.native else self.batch_size
        input_size = int3(self.patch_size or split.spatial_size or ())
        self.model = build_network(self.model_cfg, split.in_channels, split.num_classes, input_size).to(self.device)
        if self.method in OWN_OPTIMIZERS:  # the recipe's optimizer, at the recipe's LR
            self.optimizer = make_optimizer(self.method, self.model.parameters(), self.schedule_cfg)
            lr = None
        else:
            lr = self.train_cfg.base_lr if self.lr is None else float(self.lr)
            self.optimizer = make_train_optimizer(self.model.parameters(), self.train_cfg, lr)
        self.loss_fn = make_loss(self.train_cfg.loss)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.epoch = 0
        self.pipeline = choose_pipeline(self.device, self.train_cfg.amp, self.train_cfg.deterministic)
        if self.pipeline.deterministic or self.pipeline.cudnn_benchmark:  # a CUDA trial: each flag set both
            # ways, since a reused worker process keeps the previous trial's (torch.cuda reads
            # CUBLAS_WORKSPACE_CONFIG at its first cuBLAS call, which the first training step makes)
            if self.pipeline.deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = self.pipeline.deterministic
            torch.use_deterministic_algorithms(self.pipeline.deterministic, warn_only=True)
        self.use_amp = self.pipeline.amp
        if torch.device(self.device).type == "cuda":
            torch.backends.cudnn.benchmark = self.pipeline.cudnn_benchmark
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.crop: Any = None
        self.augmentation: Any = None
        if self.patch_size:
            from monai.transforms import RandCropByPosNegLabeld

            assert self.foreground_ratio is not None  # from the data section when not given
            ratio = float(self.foreground_ratio)
            self.crop = RandCropByPosNegLabeld(
                keys=("image", "label"), label_key="label", spatial_size=tuple(self.patch_size),
                pos=1 if ratio == 0.5 else ratio, neg=1 if ratio == 0.5 else 1 - ratio,
                num_samples=self.patches_per_volume,
            )
        if self.augment:
            self.augmentation = augmentation(int3(self.patch_size or split.spatial_size or ()))
        train_crop = self.crop
        # A volume kept at its own size may be smaller than the patch: zero-padded to it for training only (the
        # sliding window pads and crops back by itself, so validation and test Dice count only the volume's voxels).
        pad = None
        if split.native and self.patch_size:
            from monai.transforms import SpatialPadd

            pad = SpatialPadd(keys=("image", "label"), spatial_size=tuple(self.patch_size))
        if self.augmentation is not None or pad is not None:
            from monai.transforms import Compose

            train_crop = Compose([t for t in (pad, self.crop, self.augmentation) if t is not None])
        self.train_set = shared_dataset(split, "train", self.pipeline, self.device, train_crop)
        self.val_set = shared_dataset(split, "val", self.pipeline, self.device)
        self._test_set = None  # cached on first use: only the last epoch scores it
        self.test_reads = 0  # how often the test split was scored (a search trial: never)
        self.loader = make_loader(self.pipeline, self.train_set, self.batch_size, shuffle=True,
                                  generator=self.generator, num_workers=self.train_cfg.num_workers)
        if self.crop is not None:  # after the loaders, which may draw fresh random states for the transforms
            self.crop.set_random_state(seed=self.seed)
        if self.augmentation is not None:  # its own stream, so the crops do not move when augmentation is on
            self.augmentation.set_random_state(seed=(self.seed + AUGMENT_SEED) % 2 ** 32)
        t = self.train_cfg
        # The one LR-policy protocol (medtune.LRControl); this loop reports to Tune itself, and the
        # scheduler-driven methods get their LR through set_lr (train_segmentation reads the mailbox).
        private = self.qlearning is not None and self.method in SCHEDULER_DRIVEN
        self.control = LRControl(
            self.optimizer, method=self.method, lr=lr, report=False, driven=not private,
            memory_source=self.memory_source,
            settings=LRControlConfig(epochs=t.epochs, steps_per_epoch=len(self.loader), min_lr=t.min_lr,
                                     max_lr=t.max_lr, schedules=self.schedule_cfg, task=self.task,
                                     qlearning=dict(self.qlearning or {}) if private else {}),
        )

    @property
    def policy(self) -> Any:
        """The in-trial LR policy (an ``EpochSchedule``, ``GreedyLR`` or ``EffortController``), None when the LR is
        set from outside (``pbt``, ``qlearning``, ``qlearning_warm``)."""
        return self.control.policy

    @property
    def current_lr(self) -> float:
        """The step size of the next batch (Prodigy: ``d * lr``; see ``LRControl.effective_lr``)."""
        return self.control.effective_lr

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    def train_epoch(self) -> float:
        """One pass over the training volumes; returns the mean training loss (NaN stops early)."""
        self.model.train()
        self.control.train()  # Schedule-Free AdamW: the parameters hold the point gradients are taken at
        total, count = 0.0, 0
        for images, labels in self.loader:
            images, labels = images.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(torch.device(self.device).type, enabled=self.use_amp):
                loss = self.loss_fn(self.model(images), labels)
            if not torch.isfinite(loss):
                return float("nan")
            self.scaler.scale(loss).backward()
            if self.train_cfg.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.control.batch_step()  # onecycle moves the LR here
            total += loss.item() * len(images)
            count += len(images)
        return total / max(1, count)

    def validate(self) -> tuple[float, float]:
        """Mean foreground Dice and loss on the validation volumes (what the LR policies watch)."""
        return self._score(self._batches(self.val_set))

    def test(self) -> tuple[float, float] | None:
        """Mean foreground Dice and loss on the held-out test volumes; None without a test split.

        Raises:
            RuntimeError: a search trial (``score_test=False``) asked for it: the search never sees the test split.
        """
        if not self.score_test:
            raise RuntimeError("a search trial may not read the test split (score_test=False)")
        if not self.split.test:
            return None
        self.test_reads += 1
        if self._test_set is None:
            self._test_set = shared_dataset(self.split, "test", self.pipeline, self.device)
        return self._score(self._batches(self._test_set))

    def _batches(self, dataset):
        # A generator of its own: MONAI's loaders re-seed the one they get, which must not be torch's global one.
        return make_loader(self.pipeline, dataset, self.score_batch, shuffle=False,
                           generator=torch.Generator(), num_workers=self.train_cfg.num_workers)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, D, H, W)`` for volumes ``x`` ``(B, C, D, H, W)``: one forward pass, or with
        ``patch_size`` MONAI's ``sliding_window_inference`` over the whole volume (windows of ``patch_size``,
        ``sw_overlap``, blended by ``sw_mode``: 0.25 and a plain mean for the phantom, 0.5 and Gaussian weights
        for a Decathlon task)."""
        if not self.patch_size:
            return self.model(x)
        from monai.inferers import sliding_window_inference

        assert self.sw_overlap is not None and self.sw_mode is not None  # from the data section when not given
        logits = sliding_window_inference(x, tuple(self.patch_size), self.batch_size, self.model,
                                          overlap=self.sw_overlap, mode=self.sw_mode)
        return cast(torch.Tensor, logits)  # the network has one output: a tensor

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """Mean foreground Dice and loss of the current model on arrays ``images`` (N, C, D, H, W) and ``labels``
        (N, 1, D, H, W), whole volumes (sliding windows with ``patch_size``)."""
        x, y, size = torch.as_tensor(images), torch.as_tensor(labels), self.batch_size
        return self._score((x[i : i + size], y[i : i + size]) for i in range(0, len(x), size))

    @torch.no_grad()
    def _score(self, batches) -> tuple[float, float]:
        """Mean foreground Dice (MONAI ``DiceMetric``, over every voxel of each volume) and mean loss over
        ``(images, labels)`` batches."""
        from monai.metrics import DiceMetric
        from monai.networks.utils import one_hot

        self.model.eval()
        self.control.eval()  # Schedule-Free AdamW: score the averaged weights
        metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
        total, count = 0.0, 0
        n_cls = self.num_classes
        for x, y in batches:
            x, y = x.to(self.device), y.to(self.device).long()
            with torch.autocast(torch.device(self.device).type, enabled=self.use_amp):
                logits = self.predict(x)
            logits = logits.float()
            total += float(self.loss_fn(logits, y)) * len(x)
            count += len(x)
            pred = one_hot(logits.argmax(dim=1, keepdim=True), n_cls)
            metric(y_pred=pred, y=one_hot(y, n_cls))
        dice = float(cast(torch.Tensor, metric.aggregate()).item())  # reduction="mean": one tensor
        return dice, total / max(1, count)

    def run_epoch(self) -> EpochResult:
        """Train, validate, let a baseline policy step; the LR reported is the one this epoch used."""
        self.epoch += 1
        lr = self.current_lr
        train_loss = self.train_epoch()
        if not math.isfinite(train_loss):
            return EpochResult(self.epoch, lr, train_loss, float("nan"), float("nan"), diverged=True)
        dice, val_loss = self.validate()
        if not (math.isfinite(val_loss) and math.isfinite(dice)):
            return EpochResult(self.epoch, lr, train_loss, val_loss, dice, diverged=True)
        self.policy_step(dice, val_loss)
        test = self.test() if self.score_test and self.epoch >= self.train_cfg.epochs else None
        return EpochResult(self.epoch, lr, train_loss, val_loss, dice, test_dice=test[0] if test else None)

    def policy_step(self, dice: float, val_loss: float) -> None:
        """Let the in-trial LR policy see the epoch's validation metrics (sets the next epoch's LR)."""
        self.control.step({"dice": dice, "val_loss": val_loss})

    def state_dict(self) -> dict[str, Any]:
        """Everything a restart needs to continue exactly (CPU tensors); Schedule-Free AdamW is put in eval mode
        first, so the model's state is its averaged weights."""
        self.control.eval()
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "policy": self.policy.state_dict() if self.policy else {},
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            # RandCropByPosNegLabeld draws from its inner cropper's RandomState
            "crop_rng": self.crop.cropper.R.get_state() if self.crop is not None else None,
            "augment_rng": augmentation_state(self.augmentation),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.policy is not None:
            self.policy.load_state_dict(state["policy"])
        if state["scaler"] and self.use_amp:  # a checkpoint from a CPU (no AMP) trial has no scaler state
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        cuda_rng = state["cuda_rng"]
        if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        if self.crop is not None and state.get("crop_rng") is not None:
            self.crop.cropper.R.set_state(state["crop_rng"])
        if self.augmentation is not None and state.get("augment_rng") is not None:
            set_augmentation_state(self.augmentation, state["augment_rng"])


AUGMENT_SEED = 7919  # the augmentation's seed is the trial's plus this: a stream apart from the crop's


def augmentation(patch: tuple[int, int, int]):
    """The training patches' augmentation (MONAI, on ``image`` and ``label`` after the crop): a flip along each
    axis (p 0.5 each), a 90-degree rotation in each plane whose two sides are equal in ``patch`` (a rotation
    elsewhere would change the patch's shape), intensity scale and shift by up to 10% (p 0.5 each), Gaussian
    noise of std 0.1 (p 0.15); intensities on the image only. Seed it with ``set_random_state``."""
    from monai.transforms import (
        Compose,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ("image", "label")
    steps: list = [RandFlipd(keys=keys, prob=0.5, spatial_axis=a) for a in range(3)]
    steps += [RandRotate90d(keys=keys, prob=0.5, spatial_axes=(a, b))
              for a, b in ((0, 1), (0, 2), (1, 2)) if patch[a] == patch[b]]
    steps += [RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
              RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
              RandGaussianNoised(keys="image", prob=0.15, std=0.1)]
    return Compose(steps)


def augmentation_state(aug) -> list | None:
    """The random states of an :func:`augmentation`'s transforms (for the checkpoint), None without one."""
    if aug is None:
        return None
    return [r.get_state() for r in _random_states(aug)]


def set_augmentation_state(aug, state: list) -> None:
    """Restore what :func:`augmentation_state` saved."""
    for r, s in zip(_random_states(aug), state):
        r.set_state(s)


def _random_states(aug) -> list:
    """Every ``RandomState`` an :func:`augmentation` draws from: the Compose's, each transform's and those of the
    array transforms inside them (``RandScaleIntensityd`` keeps a ``RandScaleIntensity``, and so on)."""
    from monai.transforms import Randomizable

    states = [aug.R]
    for t in aug.transforms:
        states.append(t.R)
        states += [v.R for v in vars(t).values() if isinstance(v, Randomizable)]
    return states


def patch_collate(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate ``{"image", "label"}`` items, or ``RandCropByPosNegLabeld`` outputs (a list per volume of such
    patches), into plain tensors ``images`` ``(B * k, C, d, h, w)`` and ``labels`` ``(B * k, 1, d, h, w)`` int64."""
    items = [item for sample in batch for item in (sample if isinstance(sample, list) else [sample])]
    images = torch.stack([torch.as_tensor(i["image"]).as_subclass(torch.Tensor) for i in items])
    labels = torch.stack([torch.as_tensor(i["label"]).as_subclass(torch.Tensor) for i in items]).long()
    return images, labels


def ray_node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


CHECKPOINT_FILE = "state.pt"


def apply_tuned(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's config with its method's tuned settings in place: ``config["tuned"][method]`` is
    ``{dotted key: value}`` (``train.base_lr``, ``schedules.step.gamma``, ``qlearning.alpha``, ...), set into
    the config's sections; a tuned ``train.base_lr`` is also the trial's starting ``lr``. Without tuned
    settings for the method the config is returned as it is."""
    values = (config.get("tuned") or {}).get(config.get("method")) or {}
    if not values:
        return config
    out = apply_values(config, values)
    if "train.base_lr" in values:
        out["lr"] = float(values["train.base_lr"])
    return out


def train_segmentation(config: dict[str, Any], data: SegmentationSplit | SegmentationData | None = None) -> None:
    """Ray Tune function trainable for one (method, seed) of the LR study.

    Args:
        config: ``method``, ``seed``, ``lr`` (initial LR), ``data``/``model``/``train``/``schedules``
            sections as plain dicts, ``mailbox`` (the LR mailbox name, read by ``qlearning`` trials),
            ``threads`` (torch intra-op threads), ``tuned`` (``{method: {dotted key: value}}``, the tuned
            settings, see :func:`apply_tuned`), ``search`` (True: a search trial of ``medtune tune``: the test
            split is never read and ``qlearning`` decides with a private agent of the config's ``qlearning``
            settings, not the shared scheduler).
        data: the split as data lists (:class:`~medtune.trainables.lr_data.SegmentationSplit`: file paths for a
            Decathlon task, nothing preprocessed), shared through the object store (``tune.with_parameters``);
            built from ``config["data"]`` when omitted. The trial caches it itself (``CacheDataset``).

    Reports every epoch, with a checkpoint when one is due (``train.checkpoint_every``); a NaN/inf loss reports
    ``diverged=1`` and ends the trial (its last checkpoint stays).
    """
    import logging

    from ray import tune


    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no "Checkpoint successfully created" per epoch

    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    config = apply_tuned(config)
    search = bool(config.get("search"))
    data_cfg = from_dict(DataConfig, config.get("data"), "data")
    if data is None:
        data = split_datalists(data_cfg)
    if isinstance(data, SegmentationSplit):
        data.check_files(f"node {ray_node_id()}")
    import ray

    # the Q-learning scheduler's module imports Ray Tune: loading a spec (the driver, before Ray) must not
    from medtune.searchers.qlearning_scheduler import read_episodes, read_mailbox

    # The GPU Ray assigned to this trial, if any (a CPU trial on a GPU node must not take cuda:0). Ray makes only
    # that GPU visible, also for a fraction of one (resources.gpus_per_trial: 0.25 puts four trials on a device).
    device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
    run = SegmentationRun(
        method=config["method"],
        seed=int(config["seed"]),
        data=data,
        model_cfg=from_dict(ModelConfig, config.get("model"), "model"),
        train_cfg=from_dict(TrainConfig, config.get("train"), "train"),
        schedule_cfg=from_dict(ScheduleConfig, config.get("schedules"), "schedules"),
        lr=config.get("lr"),
        device=device,
        memory_source=(lambda: read_episodes(config["mailbox"], config.get("task"))) if config.get("mailbox") else None,
        task=config.get("task"),
        patch_size=data_cfg.patch_size,
        patches_per_volume=data_cfg.patches_per_volume,
        score_test=not search,
        qlearning=({k: v for k, v in (config.get("qlearning") or {}).items() if k not in ("seed", "warm_start")}
                   if search else None),
    )
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            run.load_state_dict(torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=False))
        if run.method == "pbt":  # PBT restarts the trial from a (possibly cloned) checkpoint with a mutated lr
            t = run.train_cfg
            run.set_lr(min(t.max_lr, max(t.min_lr, float(config["lr"]))))
    trial_id = tune.get_context().get_trial_id()
    node_id = ray_node_id()
    mailbox = None if search else config.get("mailbox")
    # Checkpoints when needed (train.checkpoint_every): every that many epochs, after checkpoint_every_s
    # seconds without one, at the last epoch, and for a PBT member at every perturbation epoch (PBT pauses its
    # members there and clones the checkpoint of that epoch).
    ckpt_every = run.train_cfg.checkpoint_every
    pbt_every = int((config.get("pbt") or {}).get("perturbation_interval") or 0) if run.method == "pbt" else 0
    last_checkpoint = time.monotonic()
    while run.epoch < run.train_cfg.epochs:
        if run.method in SCHEDULER_DRIVEN and mailbox:
            lr = read_mailbox(mailbox, trial_id)
            if lr is not None:
                run.set_lr(lr)
        result = run.run_epoch()
        metrics = {**result.metrics(), "node_id": node_id}  # where it ran: Tune keeps it in result.json
        if result.diverged:  # end this trial cleanly; keep the last good checkpoint
            tune.report(metrics)
            return
        epoch = run.epoch
        if checkpoint_due(epoch, ckpt_every, run.train_cfg.epochs, pbt_every or None,
                          time.monotonic() - last_checkpoint, run.train_cfg.checkpoint_every_s,
                          driven=run.method in SCHEDULER_DRIVEN):
            with tempfile.TemporaryDirectory() as d:
                torch.save(run.state_dict(), os.path.join(d, CHECKPOINT_FILE))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
            last_checkpoint = time.monotonic()
        else:
            tune.report(metrics)
