"""Classification with learned or classic masking augmentation: the training loop of the APGA study.

Paper 002 (APGA, MICCAI 2019), Algorithm 1, against its baselines, all at the
paper's 1:1 ratio of originals to masked images:

* ``none``: the classifier on the originals only.
* ``cutout``: plus the batch with random square holes (MONAI ``RandCoarseDropout``).
* ``gradcam``: plus the batch masked by discretised Grad-CAM maps (MONAI
  ``GradCAM``) of the classifier as it was after pre-training without
  augmentation (a frozen copy): pixels with a normalised saliency above
  ``gradcam_threshold`` are kept.
* ``trivialaugment`` (Müller & Hutter 2021) and ``randaugment`` (Cubuk et al.
  2020): plus the batch with each image augmented by one random operation at a
  random magnitude, or by ``randaugment_ops`` random operations at magnitude
  ``randaugment_magnitude`` (:mod:`medtune.trainables.auto_augment`): the
  augmentations a researcher would pick instead of learning masks. They mask
  nothing, so their keep share is 1.
* ``apga``: per batch, a classifier step on the originals (``L``), the policy's
  adversarial masks erase ``p > 0.5`` and the classifier in eval mode gives
  ``L_adv``, reward ``L_adv - L`` against an exponential-average baseline, the
  policy loss of :mod:`medtune.searchers.apga`, then a classifier step on originals plus
  the aiding masks (keep ``p > 0.5``) of the updated policy.

Every method starts from the same pre-trained classifier (``pretrain_epochs`` on
the originals), so the comparison isolates the augmentation. Plain PyTorch and
MONAI: no Ray, no MLflow (the Tune adapter comes with the study).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medtune.config import from_dict
from medtune.errors import did_you_mean
from medtune.searchers.apga import APGAConfig, RewardBaseline, adversarial_keep, aiding_keep, keep_fraction, policy_loss
from medtune.trainables.auto_augment import AUTO_AUGMENT_METHODS, MAX_RANDAUGMENT_OPS, auto_augment, make_auto_augment
from medtune.trainables.classification_data import ClassificationData

__all__ = [
    "AUGMENT_STREAM", "AugmentationConfig", "AugmentationRun", "CHECKPOINT_FILE", "CLASSIFIERS", "METHODS",
    "gradcam_target_layer", "make_classifier", "make_policy", "pretrain", "train_augmentation",
]

METHODS: tuple[str, ...] = ("none", "cutout", "gradcam", "apga", *AUTO_AUGMENT_METHODS)
#: The stream of the seeds that TrivialAugment / RandAugment draw per batch (apart from batch order and init).
AUGMENT_STREAM = 104729
CLASSIFIERS: tuple[str, ...] = ("densenet", "resnet")


@dataclass(frozen=True)
class AugmentationConfig:
    """Training budget and the methods' parameters (defaults: paper 002 section 3 where it gives them).

    Attributes:
        classifier: the classifier trained, ``densenet`` (default) or ``resnet``: a small 2D MONAI network
            (:func:`make_classifier`).
        pretrain_epochs: epochs of training on the originals alone before any augmentation (Algorithm 1, line
            1), >= 0; every method of a (regime, seed) starts from that classifier. 0: from the random
            initialisation.
        epochs: training epochs of each method after the pre-training (>= 1).
        batch_size: original images per batch (>= 1); a method that augments adds as many masked or augmented
            images (the paper's 1:1 ratio).
        lr: the Adam learning rate of the classifier, in pre-training and training (> 0).
        policy_lr: the Adam learning rate of APGA's segmentation policy (> 0); ``apga`` only.
        cutout_holes: square holes erased per image by ``cutout`` (MONAI ``RandCoarseDropout``), >= 1.
        cutout_size: each hole's side in pixels (>= 1).
        gradcam_threshold: ``gradcam`` keeps the pixels whose normalised Grad-CAM saliency lies above this, in
            (0, 1).
        randaugment_ops: RandAugment's ``N``, the random operations applied to each image, in 1..12
            (``randaugment`` only; the usual 2).
        randaugment_magnitude: RandAugment's ``M`` on its 0..30 scale, in 1..29 (``randaugment`` only; the usual
            9).
        apga: the policy update's parameters (:class:`~medtune.searchers.apga.APGAConfig`); ``apga`` only.
    """

    classifier: str = "densenet"
    pretrain_epochs: int = 5
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    policy_lr: float = 1e-3
    cutout_holes: int = 1
    cutout_size: int = 8
    gradcam_threshold: float = 0.5
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    apga: APGAConfig = field(default_factory=APGAConfig)

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier={self.classifier!r} is not supported"
                             f"{did_you_mean(self.classifier, CLASSIFIERS)}; use one of {', '.join(CLASSIFIERS)}")
        for name in ("epochs", "batch_size", "cutout_holes", "cutout_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1")
        if self.pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs={self.pretrain_epochs!r} must be >= 0")
        for name in ("lr", "policy_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        if not 0 < self.gradcam_threshold < 1:
            raise ValueError(f"gradcam_threshold={self.gradcam_threshold!r} must lie in (0, 1)")
        if isinstance(self.randaugment_ops, bool) or not isinstance(self.randaugment_ops, int) \
                or not 1 <= self.randaugment_ops <= MAX_RANDAUGMENT_OPS:
            raise ValueError(f"randaugment_ops={self.randaugment_ops!r} must be a whole number of operations "
                             f"per image in 1..{MAX_RANDAUGMENT_OPS} (RandAugment's N; the usual 2)")
        if isinstance(self.randaugment_magnitude, bool) or not isinstance(self.randaugment_magnitude, int) \
                or not 1 <= self.randaugment_magnitude <= 29:
            raise ValueError(f"randaugment_magnitude={self.randaugment_magnitude!r} must be a whole number in 1..29 "
                             "(RandAugment's M on its 0..30 scale; the usual 9)")


def make_classifier(kind: str, in_channels: int, num_classes: int) -> torch.nn.Module:
    """A small 2D MONAI DenseNet or ResNet (CPU-sized)."""
    if kind == "densenet":
        from monai.networks.nets import DenseNet

        return DenseNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, init_features=16,
                        growth_rate=8, block_config=(2, 2, 2))
    from monai.networks.nets import ResNet

    return ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[16, 32, 64, 128], spatial_dims=2,
                  n_input_channels=in_channels, num_classes=num_classes)


def make_policy(in_channels: int) -> torch.nn.Module:
    """The segmentation policy: a MONAI 2D UNet; its sigmoid gives ``p`` (B, 1, H, W)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=1, channels=(8, 16, 32), strides=(2, 2),
                num_res_units=1)


def gradcam_target_layer(kind: str) -> str:
    """The layer Grad-CAM reads: the first one at 1/4 of the input's resolution.

    Our choice: the last feature maps of these small classifiers are 1/16 of the input (2x2 on a 32x32
    image), too coarse for a pixel mask once upsampled, so Grad-CAM reads the block at 1/4 (8x8).
    """
    return "features.denseblock1" if kind == "densenet" else "layer2"


def _batches(n: int, batch_size: int, generator: torch.Generator):
    order = torch.randperm(n, generator=generator)
    return [order[start : start + batch_size] for start in range(0, n, batch_size)]


def pretrain(data: ClassificationData, config: AugmentationConfig, seed: int, device: str = "cpu") -> dict:
    """Algorithm 1, line 1: the classifier trained on the originals for ``config.pretrain_epochs`` epochs.

    Every method of one seed starts from this state, so the comparison isolates the augmentation.
    Deterministic by ``seed`` (initialisation and batch order). Returns a CPU ``state_dict``.
    """
    torch.manual_seed(seed)
    model = make_classifier(config.classifier, data.train_images.shape[1], data.num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(seed + 7919)  # its own stream: the run's batch order is untouched
    x_all, y_all = torch.tensor(data.train_images), torch.tensor(data.train_labels)
    model.train()
    for _ in range(config.pretrain_epochs):
        for idx in _batches(len(x_all), config.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x_all[idx].to(device)), y_all[idx].to(device)).backward()
            optimizer.step()
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class AugmentationRun:
    """One (method, seed) run: pre-train, then train with the method's augmentation, scoring test accuracy.

    Args:
        method: one of :data:`METHODS`.
        seed: initialisation and batch order.
        data: images (N, C, H, W) float32 in [0, 1] and int64 labels, split into train / test.
        config: budget and parameters.
        pretrained: a classifier ``state_dict`` to start from instead of pre-training here (shared by methods).
    """

    def __init__(self, method: str, seed: int, data: ClassificationData,
                 config: AugmentationConfig = AugmentationConfig(),
                 pretrained: dict | None = None, device: str = "cpu") -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not an augmentation method{did_you_mean(method, METHODS)}; "
                             f"use one of {', '.join(METHODS)}")
        self.method, self.seed, self.data, self.cfg, self.device = method, seed, data, config, device
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        channels = data.train_images.shape[1]
        self.classifier = make_classifier(config.classifier, channels, data.num_classes).to(device)
        self.optimizer = torch.optim.Adam(self.classifier.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.train_x = torch.tensor(data.train_images)
        self.train_y = torch.tensor(data.train_labels)
        self.epoch = 0
        self.keep_fractions: list[float] = []
        if pretrained is None:
            pretrained = pretrain(data, config, seed, device)
        self.classifier.load_state_dict(pretrained)
        self.reference = copy.deepcopy(self.classifier).eval()  # the no-augmentation model Grad-CAM reads
        self.policy: torch.nn.Module | None = None
        self.policy_optimizer: torch.optim.Optimizer | None = None
        self.baseline: RewardBaseline | None = None
        if method == "apga":
            self.policy = make_policy(channels).to(device)
            self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.policy_lr)
            self.baseline = RewardBaseline(config.apga.baseline_decay)
        if method == "cutout":
            from monai.transforms import RandCoarseDropout

            self.cutout = RandCoarseDropout(holes=config.cutout_holes, spatial_size=config.cutout_size, prob=1.0,
                                            fill_value=0.0)
            self.cutout.set_random_state(seed=seed)
        self.augment = self.augment_generator = None
        if method in AUTO_AUGMENT_METHODS:
            self.augment = make_auto_augment(method, channels, config.randaugment_ops, config.randaugment_magnitude)
            stream = np.random.SeedSequence([int(seed) % 2**63, AUGMENT_STREAM]).generate_state(1, np.uint64)[0]
            self.augment_generator = torch.Generator().manual_seed(int(stream >> np.uint64(1)))
        if method == "gradcam":
            from monai.visualize import GradCAM

            self.gradcam = GradCAM(nn_module=self.reference, target_layers=gradcam_target_layer(config.classifier))

    # -- one step of each kind -------------------------------------------------
    def _classifier_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.classifier.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.classifier(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        """The keep-mask (B, 1, H, W) the method applies to ``x`` for its augmented half."""
        if self.method == "cutout":
            return torch.stack([(torch.as_tensor(self.cutout(torch.ones_like(img[:1]))) > 0).float() for img in x])
        if self.method == "gradcam":
            with torch.enable_grad():
                cam = self.gradcam(x=x.clone().requires_grad_(True))
            return (cam > self.cfg.gradcam_threshold).float().detach()
        if self.method == "apga":
            with torch.no_grad():
                return aiding_keep(torch.sigmoid(self._apga()[0](x)), self.cfg.apga.threshold)
        raise ValueError(f"method {self.method!r} has no masks")

    def augmented(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """TrivialAugment / RandAugment of ``x`` (B, C, H, W); the seed comes from the run's stream unless given."""
        if self.augment is None:
            raise ValueError(f"method {self.method!r} does not augment images; it masks them")
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.augment_generator))
        return auto_augment(self.augment, x, seed)

    def _apga(self) -> tuple[torch.nn.Module, torch.optim.Optimizer, RewardBaseline]:
        """The APGA policy network, its optimizer and its reward baseline (method ``apga`` only)."""
        if self.policy is None or self.policy_optimizer is None or self.baseline is None:
            raise ValueError(f"method {self.method!r} has no APGA policy")
        return self.policy, self.policy_optimizer, self.baseline

    def _apga_policy_step(self, x: torch.Tensor, y: torch.Tensor, loss_original: float) -> None:
        c = self.cfg.apga
        policy, optimizer, baseline = self._apga()
        p = torch.sigmoid(policy(x))
        keep = adversarial_keep(p.detach(), c.threshold)
        self.classifier.eval()
        with torch.no_grad():
            loss_adv = F.cross_entropy(self.classifier(x * keep), y).item()
        advantage = baseline.advantage(loss_adv - loss_original)
        optimizer.zero_grad(set_to_none=True)
        policy_loss(p, advantage, c.lambda_zeros, c.threshold).backward()
        optimizer.step()

    def _augmented_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if self.method == "none":
            return self._classifier_step(x, y)
        if self.augment is not None:
            return self._classifier_step(torch.cat([x, self.augmented(x)]), torch.cat([y, y]))  # 1:1 as the masks
        if self.method == "apga":
            loss = self._classifier_step(x, y)  # Algorithm 1, line 6
            self._apga_policy_step(x, y, loss)  # lines 7-15
        keep = self.masks(x)
        self.keep_fractions.append(keep_fraction(keep))
        return self._classifier_step(torch.cat([x, x * keep]), torch.cat([y, y]))  # 1:1 originals and masked

    def _epoch(self, step) -> float:
        losses = [step(self.train_x[idx].to(self.device), self.train_y[idx].to(self.device))
                  for idx in _batches(len(self.train_x), self.cfg.batch_size, self.generator)]
        return float(np.mean(losses))

    # -- public ---------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        """One epoch with the method's augmentation; returns ``train_loss``, ``accuracy`` (test) and
        ``keep_fraction``."""
        self.epoch += 1
        self.keep_fractions = []
        loss = self._epoch(self._augmented_step)
        return {
            "epoch": self.epoch,
            "train_loss": loss,
            "accuracy": self.accuracy(self.data.test_images, self.data.test_labels),
            "keep_fraction": float(np.mean(self.keep_fractions)) if self.keep_fractions else 1.0,
        }

    @torch.no_grad()
    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        self.classifier.eval()
        correct = 0
        for start in range(0, len(images), 256):
            x = torch.tensor(images[start : start + 256]).to(self.device)
            correct += int((self.classifier(x).argmax(1).cpu() == torch.tensor(labels[start : start + 256])).sum())
        return correct / max(1, len(images))

    # -- examples and state ------------------------------------------------------
    def mask_examples(self, n: int = 8) -> dict:
        """The first ``n`` test images and the keep-masks the method gives them (all ones for ``none``).

        For ``trivialaugment`` and ``randaugment`` the images are the test images as the method augments them (a
        fixed draw, seed 0, apart from the training stream) and the masks all ones: they erase nothing.

        Returns:
            ``{"method", "shape": [n, H, W], "images": base64 uint8, "masks": base64 uint8}``, JSON-ready and
            small (a few kB): the first channel of each image scaled to 0..255, masks 0/1.
        """
        import base64

        x = torch.tensor(self.data.test_images[:n]).to(self.device)
        if self.augment is not None:
            x = self.augmented(x, seed=0)
        keep = torch.ones_like(x[:, :1]) if self.method == "none" or self.augment is not None else self.masks(x)
        images = (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        masks = keep[:, 0].to(torch.uint8).cpu().numpy()
        return {
            "method": self.method,
            "shape": list(images.shape),
            "images": base64.b64encode(images.tobytes()).decode(),
            "masks": base64.b64encode(masks.tobytes()).decode(),
        }

    def state_dict(self) -> dict:
        """Everything a restarted trial needs to go on exactly: nets, optimizers, baseline, RNG states."""
        return {
            "epoch": self.epoch,
            "classifier": self.classifier.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "policy": None if self.policy is None else self.policy.state_dict(),
            "policy_optimizer": None if self.policy_optimizer is None else self.policy_optimizer.state_dict(),
            "baseline": None if self.baseline is None else self.baseline.value,
            "cutout_rng": self.cutout.R.get_state() if self.method == "cutout" else None,
            "augment_generator": None if self.augment_generator is None else self.augment_generator.get_state(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.policy is not None:
            policy, optimizer, baseline = self._apga()
            policy.load_state_dict(state["policy"])
            optimizer.load_state_dict(state["policy_optimizer"])
            baseline.value = state["baseline"]
        if self.method == "cutout":
            self.cutout.R.set_state(state["cutout_rng"])
        if self.augment_generator is not None:
            self.augment_generator.set_state(state["augment_generator"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])


CHECKPOINT_FILE = "state.pt"


def train_augmentation(config: dict, data: dict | None = None, pretrained: dict | None = None) -> None:
    """Ray Tune function trainable for one (method, regime, seed) of the APGA study.

    Args:
        config: ``method``, ``seed``, ``regime`` (``full`` or ``few_shot``), ``train`` (an
            :class:`AugmentationConfig` as a dict), ``threads`` (torch intra-op threads).
        data: ``{regime: ClassificationData}``, shared through the object store (``tune.with_parameters``).
        pretrained: ``{"<regime>/<seed>": classifier state_dict}``, the shared pre-trained classifiers.

    Reports ``epoch``, ``accuracy`` (test), ``train_loss`` and ``keep_fraction`` every epoch with a
    checkpoint; the last epoch adds ``final_accuracy`` and ``masks_json`` (:meth:`AugmentationRun.mask_examples`).
    """
    import json
    import logging
    import os
    import tempfile
    from pathlib import Path

    import ray
    from ray import tune


    logging.getLogger("ray.train").setLevel(logging.WARNING)
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    cfg = from_dict(AugmentationConfig, config.get("train"), "train")
    regime, seed = config["regime"], int(config["seed"])
    device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
    if data is None or pretrained is None:
        raise ValueError("train_augmentation needs data and pretrained: tune.with_parameters(train_augmentation, "
                         "data=..., pretrained=...)")
    run = AugmentationRun(config["method"], seed, data[regime], cfg, pretrained=pretrained[f"{regime}/{seed}"],
                          device=device)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            run.load_state_dict(torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=False))
    while run.epoch < cfg.epochs:
        metrics: dict[str, Any] = run.train_epoch()
        if run.epoch == cfg.epochs:
            metrics["final_accuracy"] = metrics["accuracy"]
            metrics["masks_json"] = json.dumps(run.mask_examples())
        with tempfile.TemporaryDirectory() as d:
            torch.save(run.state_dict(), os.path.join(d, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
