"""Classification with learned or classic masking augmentation: the training loop of the APGA study.

Paper 002 (APGA, MICCAI 2019), Algorithm 1, against its baselines, all at the
paper's 1:1 ratio of originals to masked images:

* ``none``: the classifier on the originals only.
* ``cutout``: plus the batch with random square holes (MONAI ``RandCoarseDropout``).
* ``gradcam``: plus the batch masked by discretised Grad-CAM maps (MONAI
  ``GradCAM``) of the classifier as it was after pre-training without
  augmentation (a frozen copy): pixels with a normalised saliency above
  ``gradcam_threshold`` are kept.
* ``apga``: per batch, a classifier step on the originals (``L``), the policy's
  adversarial masks erase ``p > 0.5`` and the classifier in eval mode gives
  ``L_adv``, reward ``L_adv - L`` against an exponential-average baseline, the
  policy loss of :mod:`searchers.apga`, then a classifier step on originals plus
  the aiding masks (keep ``p > 0.5``) of the updated policy.

Every method starts from the same pre-trained classifier (``pretrain_epochs`` on
the originals), so the comparison isolates the augmentation. Plain PyTorch and
MONAI: no Ray, no MLflow (the Tune adapter comes with the study).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from searchers.apga import APGAConfig, RewardBaseline, adversarial_keep, aiding_keep, keep_fraction, policy_loss
from trainables.classification_data import ClassificationData

METHODS: tuple[str, ...] = ("none", "cutout", "gradcam", "apga")
CLASSIFIERS: tuple[str, ...] = ("densenet", "resnet")


@dataclass(frozen=True)
class AugmentationConfig:
    """Training budget and the methods' parameters (defaults: paper 002 section 3 where it gives them)."""

    classifier: str = "densenet"
    pretrain_epochs: int = 5
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    policy_lr: float = 1e-3
    cutout_holes: int = 1
    cutout_size: int = 8
    gradcam_threshold: float = 0.5
    apga: APGAConfig = field(default_factory=APGAConfig)

    def __post_init__(self) -> None:
        from trainables.errors import did_you_mean

        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier={self.classifier!r} is not supported{did_you_mean(self.classifier, CLASSIFIERS)};"
                             f" use one of {', '.join(CLASSIFIERS)}")
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


def make_classifier(kind: str, in_channels: int, num_classes: int) -> torch.nn.Module:
    """A small 2D MONAI DenseNet or ResNet (CPU-sized)."""
    if kind == "densenet":
        from monai.networks.nets import DenseNet

        return DenseNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, init_features=16,
                        growth_rate=8, block_config=(2, 2, 2))
    from monai.networks.nets import ResNet

    return ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=(16, 32, 64, 128), spatial_dims=2,
                  n_input_channels=in_channels, num_classes=num_classes)


def make_policy(in_channels: int) -> torch.nn.Module:
    """The segmentation policy: a MONAI 2D UNet; its sigmoid gives ``p`` (B, 1, H, W)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=1, channels=(8, 16, 32), strides=(2, 2),
                num_res_units=1)


def gradcam_target_layer(kind: str) -> str:
    return "class_layers.relu" if kind == "densenet" else "layer4"


class AugmentationRun:
    """One (method, seed) run: pre-train, then train with the method's augmentation, scoring test accuracy.

    Args:
        method: one of :data:`METHODS`.
        seed: initialisation and batch order.
        data: images (N, C, H, W) float32 in [0, 1] and int64 labels, split into train / test.
        config: budget and parameters.
        pretrained: a classifier ``state_dict`` to start from instead of pre-training here (shared by methods).
    """

    def __init__(self, method: str, seed: int, data: ClassificationData, config: AugmentationConfig = AugmentationConfig(),
                 pretrained: dict | None = None, device: str = "cpu") -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not an augmentation method; use one of {', '.join(METHODS)}")
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
        if pretrained is not None:
            self.classifier.load_state_dict(pretrained)
        else:
            for _ in range(config.pretrain_epochs):
                self._epoch(lambda x, y: self._classifier_step(x, y))
        self.reference = copy.deepcopy(self.classifier).eval()  # the no-augmentation model Grad-CAM reads
        self.policy = self.policy_optimizer = self.baseline = None
        if method == "apga":
            self.policy = make_policy(channels).to(device)
            self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.policy_lr)
            self.baseline = RewardBaseline(config.apga.baseline_decay)
        if method == "cutout":
            from monai.transforms import RandCoarseDropout

            self.cutout = RandCoarseDropout(holes=config.cutout_holes, spatial_size=config.cutout_size, prob=1.0,
                                            fill_value=0.0)
            self.cutout.set_random_state(seed=seed)
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
            return torch.stack([(self.cutout(torch.ones_like(img[:1])) > 0).float() for img in x])
        if self.method == "gradcam":
            with torch.enable_grad():
                cam = self.gradcam(x=x.clone().requires_grad_(True))
            return (cam > self.cfg.gradcam_threshold).float().detach()
        if self.method == "apga":
            with torch.no_grad():
                return aiding_keep(torch.sigmoid(self.policy(x)), self.cfg.apga.threshold)
        raise ValueError(f"method {self.method!r} has no masks")

    def _apga_policy_step(self, x: torch.Tensor, y: torch.Tensor, loss_original: float) -> None:
        c = self.cfg.apga
        p = torch.sigmoid(self.policy(x))
        keep = adversarial_keep(p.detach(), c.threshold)
        self.classifier.eval()
        with torch.no_grad():
            loss_adv = F.cross_entropy(self.classifier(x * keep), y).item()
        advantage = self.baseline.advantage(loss_adv - loss_original)
        self.policy_optimizer.zero_grad(set_to_none=True)
        policy_loss(p, advantage, c.lambda_zeros, c.threshold).backward()
        self.policy_optimizer.step()

    def _augmented_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if self.method == "none":
            return self._classifier_step(x, y)
        if self.method == "apga":
            loss = self._classifier_step(x, y)  # Algorithm 1, line 6
            self._apga_policy_step(x, y, loss)  # lines 7-15
        keep = self.masks(x)
        self.keep_fractions.append(keep_fraction(keep))
        return self._classifier_step(torch.cat([x, x * keep]), torch.cat([y, y]))  # 1:1 originals and masked

    def _epoch(self, step) -> float:
        order = torch.randperm(len(self.train_x), generator=self.generator)
        losses = []
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            losses.append(step(self.train_x[idx].to(self.device), self.train_y[idx].to(self.device)))
        return float(np.mean(losses))

    # -- public ---------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        """One epoch with the method's augmentation; returns ``train_loss``, ``accuracy`` (test) and ``keep_fraction``."""
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
