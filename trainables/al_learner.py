"""The model side of active learning: the Learner, a small MONAI ResNet or DenseNet classifier.

:class:`Learner` (2D or 3D, from the image shape) offers ``fit``, ``predict_proba`` (the DRLA state, the
class probabilities of the unlabeled pool ``(n_u, M)``), ``predict_proba_mc`` (MC dropout, for BALD), ``embed`` (for
core-set, TypiClust and BADGE), ``evaluate``, ``save`` and ``load``. Plain Python (picklable, no Ray, no MLflow): a Ray
actor wraps it one to one. Optimiser: Adam (lr 1e-3) on a small network trained from scratch, not the paper's SGD 1e-4
on an ImageNet-pretrained ResNet-50 (a CPU-sized study).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from medtune.errors import InputError, did_you_mean
from medtune.trainables.al_config import CLASSIFIERS, FIT_STREAM, MC_STREAM, LearnerConfig, seed_stream
from medtune.trainables.classification_data import ClassificationDataConfig, load_classification
from medtune.util import atomic_write, is_int

if TYPE_CHECKING:
    import torch

__all__ = ["Learner", "make_al_classifier"]


def _stem_is_small(image_shape: tuple[int, ...]) -> bool:
    return min(image_shape[1:]) < 32


def make_al_classifier(kind: str, image_shape: tuple[int, ...], num_classes: int, width: int = 16,
                       dropout: float = 0.25) -> torch.nn.Module:
    """A small MONAI classifier with an exposed embedding and an MC-dropout head.

    The backbone (2D for ``image_shape = (C, H, W)``, 3D for ``(C, D, H, W)``)
    ends in global pooling; then ``Dropout(dropout)`` and ``Linear(F, M)``.
    Images smaller than 32 pixels a side (digits 8x8, MedMNIST 28) get a 3x3,
    stride-1 stem without max-pooling so the feature maps do not vanish.

    * ``resnet``: MONAI ``ResNet`` with basic blocks, one per stage, channels
      ``w, 2w, 4w, 8w``.
    * ``densenet``: MONAI ``DenseNet`` with ``init_features = w``, growth
      ``max(2, w // 2)`` and up to 3 blocks of 2 layers (fewer on tiny inputs).

    Returns:
        A module with ``forward(x) -> logits (B, M)``, ``features(x) -> (B, F)``
        and a ``dropout`` attribute (switched on alone for MC dropout).
    """
    import torch
    import torch.nn as nn

    spatial_dims = len(image_shape) - 1
    if spatial_dims not in (2, 3):
        raise InputError(f"image shape {tuple(image_shape)} is neither 2D (C, H, W) nor 3D (C, D, H, W)")
    channels = int(image_shape[0])
    small = _stem_is_small(tuple(image_shape))
    if kind == "resnet":
        from monai.networks.nets import ResNet

        backbone: nn.Module = ResNet(block="basic", layers=[1, 1, 1, 1],
                                     block_inplanes=[width, 2 * width, 4 * width, 8 * width],
                                     spatial_dims=spatial_dims, n_input_channels=channels,
                                     conv1_t_size=3 if small else 7, conv1_t_stride=1 if small else 2,
                                     no_max_pool=small, feed_forward=False)
    elif kind == "densenet":
        from monai.networks.layers.factories import Conv
        from monai.networks.nets import DenseNet

        side = min(image_shape[1:]) if small else min(image_shape[1:]) // 4
        blocks = int(min(3, max(1, math.floor(math.log2(max(side, 1))) + 1)))
        densenet = DenseNet(spatial_dims=spatial_dims, in_channels=channels, out_channels=num_classes,
                            init_features=width, growth_rate=max(2, width // 2), block_config=(2,) * blocks)
        features, class_layers = cast(nn.Module, densenet.features), cast(nn.Module, densenet.class_layers)
        if small:
            features.conv0 = Conv[Conv.CONV, spatial_dims](channels, width, kernel_size=3, stride=1, padding=1,
                                                           bias=False)
            features.pool0 = nn.Identity()
        class_layers.out = nn.Identity()
        backbone = densenet
    else:
        raise InputError(f"classifier={kind!r} is not supported{did_you_mean(kind, CLASSIFIERS)}; "
                         f"use one of {', '.join(CLASSIFIERS)}")

    class _Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            with torch.no_grad():
                backbone.eval()
                n_features = backbone(torch.zeros(1, *image_shape)).reshape(1, -1).shape[1]
                backbone.train()
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(n_features, num_classes)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x).reshape(x.shape[0], -1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.dropout(self.features(x)))

    return _Net()


class Learner:
    """Holds the classifier ``f(.; theta_d)``, trains it on labels so far, and produces the DRLA state.

    The learner never sees a training label unless it is passed to :meth:`fit`
    (the annotator holds them); it keeps the test labels for :meth:`evaluate`.

    Args:
        pool_images: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` float32 training pool.
        test_images: ``(n_test, ...)`` held-out images, same shape per image.
        test_labels: ``(n_test,)`` labels in ``0..M-1``.
        num_classes: ``M``.
        config: :class:`LearnerConfig`.
        seed: weight initialisation, batch order, MC-dropout masks.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when available.

    Raises:
        InputError: shapes that do not match, or test labels outside ``0..M-1``.
    """

    def __init__(self, pool_images: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray, num_classes: int,
                 config: LearnerConfig = LearnerConfig(), seed: int = 0, device: str | None = None) -> None:
        import torch

        pool = np.asarray(pool_images, dtype=np.float32)
        test = np.asarray(test_images, dtype=np.float32)
        if pool.ndim not in (4, 5) or len(pool) == 0:
            raise InputError(f"pool images have shape {pool.shape}; give (N, C, H, W) or (N, C, D, H, W) with N >= 1")
        if test.shape[1:] != pool.shape[1:] and len(test):
            raise InputError(f"test images {test.shape[1:]} differ in shape from pool images {pool.shape[1:]}")
        if not is_int(num_classes) or num_classes < 2:
            raise InputError(f"num_classes={num_classes!r} is invalid; use the number of classes M >= 2")
        y = np.asarray(test_labels).astype(np.int64)
        if y.shape != (len(test),):
            raise InputError(f"test labels have shape {y.shape}; give one label per test image ({len(test)})")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise InputError(f"test label {int(y.min() if y.min() < 0 else y.max())} is outside the class range "
                             f"0..{num_classes - 1}; renumber classes 0..M-1")
        self.cfg, self.seed, self.num_classes = config, int(seed), int(num_classes)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.image_shape = tuple(pool.shape[1:])
        # Fresh C-ordered copies: a view such as ``x[:, None]`` has strides torch may read as channels-last,
        # which picks other conv kernels (and other numbers) than the same array after a trip through Ray.
        self.pool = torch.from_numpy(np.array(pool, np.float32, order="C", copy=True))
        self.test_x = torch.from_numpy(np.array(test, np.float32, order="C", copy=True))
        self.test_y = y
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            # Any: the network of make_al_classifier, with features(), dropout and head beside forward()
            self.model: Any = make_al_classifier(config.classifier, self.image_shape, self.num_classes, config.width,
                                            config.dropout).to(self.device)
        self._init_state = copy.deepcopy(self.model.state_dict())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.fits = 0

    @classmethod
    def from_data(cls, data: Any, config: LearnerConfig = LearnerConfig(), seed: int = 0,
                  device: str | None = None) -> Learner:
        """Build from a :class:`~medtune.trainables.classification_data.ClassificationData` or its config.

        The training labels are dropped: only the annotator reveals them.
        """
        if isinstance(data, ClassificationDataConfig):
            data = load_classification(data)
        return cls(data.train_images, data.test_images, data.test_labels, data.num_classes, config, seed, device)

    # -- helpers -------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """``pool_size`` (N), ``num_classes`` (M), ``image_shape``, ``device``, ``fits``.

        What a proxy to a remote actor cannot read as attributes.
        """
        return {"pool_size": len(self.pool), "num_classes": self.num_classes, "image_shape": list(self.image_shape),
                "device": str(self.device), "fits": self.fits}

    def _indices(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.pool)):
            raise IndexError(f"pool indices must lie in 0..{len(self.pool) - 1}")
        return idx

    def _batches(self, x: torch.Tensor, size: int = 512):
        for start in range(0, len(x), size):
            yield x[start : start + size].to(self.device)

    # -- training -----------------------------------------------------------------
    def fit(self, indices: np.ndarray, labels: np.ndarray, epochs: int | None = None) -> dict[str, float]:
        """Train on the labeled set (Eq. 1, cross-entropy) for ``epochs`` (default ``epochs_per_round``).

        ``fit_mode="finetune"`` continues from the current weights and optimizer
        state; ``"retrain"`` restarts both from the initial weights first.

        Args:
            indices: ``(n_l,)`` pool positions of every labeled sample so far.
            labels: ``(n_l,)`` their labels in ``0..M-1``.
            epochs: passes over the labeled set.

        Returns:
            ``{"loss": mean training loss of the last epoch, "n_labeled": n_l}``.
        """
        import torch
        import torch.nn.functional as F

        idx = self._indices(indices)
        y = np.asarray(labels).astype(np.int64).reshape(-1)
        if len(y) != len(idx) or len(idx) == 0:
            raise ValueError(f"fit needs one label per index and at least one sample; got {len(idx)} and {len(y)}")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")
        epochs = self.cfg.epochs_per_round if epochs is None else int(epochs)
        if self.cfg.fit_mode == "retrain":
            self.model.load_state_dict(self._init_state)
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr)
        x_all, y_all = self.pool[torch.from_numpy(idx)], torch.from_numpy(y)
        n = len(idx)
        n_batches = max(1, math.ceil(n / self.cfg.batch_size))   # near-equal batches: never a lone sample for BN
        last = float("nan")
        self.model.train()
        # Dropout masks come from a stream of (seed, fits): a learner restored from a checkpoint trains exactly
        # as the original would have, whatever torch's global random state is.
        with torch.random.fork_rng(devices=[] if str(self.device) == "cpu" else None):
            torch.manual_seed(seed_stream(self.seed, FIT_STREAM + 2 * self.fits))
            for _ in range(epochs):
                order = torch.randperm(n, generator=self.generator)
                losses = []
                for chunk in torch.tensor_split(order, n_batches):
                    xb, yb = x_all[chunk].to(self.device), y_all[chunk].to(self.device)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(self.model(xb), yb)
                    loss.backward()
                    self.optimizer.step()
                    losses.append(float(loss.detach()))
                last = float(np.mean(losses))
        self.fits += 1
        return {"loss": last, "n_labeled": n}

    # -- the state and friends --------------------------------------------------------
    def predict_proba(self, indices: np.ndarray) -> np.ndarray:
        """The DRLA state rows (Eq. 2): softmax probabilities ``(n, M)`` float64 of pool ``indices`` (eval mode)."""
        import torch

        idx = self._indices(indices)
        if idx.size == 0:
            return np.zeros((0, self.num_classes))
        self.model.eval()
        with torch.no_grad():
            x = self.pool[torch.from_numpy(idx)]
            out = [torch.softmax(self.model(xb).double(), dim=1).cpu() for xb in self._batches(x)]
        return torch.cat(out).numpy()

    def predict_proba_mc(self, indices: np.ndarray, T: int) -> np.ndarray:
        """MC-dropout probabilities ``(T, n, M)``: only the head's dropout is on (batch norm stays in eval mode).

        The dropout masks are drawn from a generator seeded by ``seed`` and the
        number of fits so far, so the call is reproducible and leaves torch's
        global random state untouched.
        """
        import torch

        idx = self._indices(indices)
        if not is_int(T) or T < 1:
            raise ValueError(f"T={T!r} must be >= 1 dropout samples")
        if idx.size == 0:
            return np.zeros((T, 0, self.num_classes))
        self.model.eval()
        self.model.dropout.train()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[] if str(self.device) == "cpu" else None):
                torch.manual_seed(seed_stream(self.seed, MC_STREAM + 2 * self.fits))
                x = self.pool[torch.from_numpy(idx)]
                out = []
                for _ in range(T):
                    out.append(torch.cat([torch.softmax(self.model(xb).double(), dim=1).cpu()
                                          for xb in self._batches(x)]))
        finally:
            self.model.eval()
        return torch.stack(out).numpy()

    def embed(self, indices: np.ndarray) -> np.ndarray:
        """Penultimate features ``(n, F)`` float64 (before dropout and head): the input ``h`` of the linear head.

        Core-set and TypiClust cluster them; BADGE forms its gradient embedding ``(p - onehot) x h`` from them and
        :meth:`predict_proba` (both eval mode, so dropout is off and ``p = softmax(head(h))`` exactly).
        """
        import torch

        idx = self._indices(indices)
        self.model.eval()
        if idx.size == 0:
            return np.zeros((0, self.model.head.in_features))
        with torch.no_grad():
            out = [self.model.features(xb).double().cpu() for xb in self._batches(self.pool[torch.from_numpy(idx)])]
        return torch.cat(out).numpy()

    def evaluate(self) -> tuple[float, float]:
        """``(macro_f1, micro_f1)`` on the held-out test split (paper 001 section 3.1; sklearn ``f1_score``).

        Classes absent from both truth and prediction count as F1 0 in the macro mean.
        """
        import torch
        from sklearn.metrics import f1_score

        if len(self.test_x) == 0:
            return float("nan"), float("nan")
        self.model.eval()
        with torch.no_grad():
            pred = torch.cat([self.model(xb).argmax(1).cpu() for xb in self._batches(self.test_x)]).numpy()
        labels = list(range(self.num_classes))
        macro = f1_score(self.test_y, pred, labels=labels, average="macro", zero_division=0)
        micro = f1_score(self.test_y, pred, labels=labels, average="micro", zero_division=0)
        return float(macro), float(micro)

    # -- persistence ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "init": self._init_state,
                "generator": self.generator.get_state(), "fits": self.fits, "seed": self.seed,
                "config": asdict(self.cfg), "num_classes": self.num_classes, "image_shape": list(self.image_shape)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_classes"]) != self.num_classes or tuple(state["image_shape"]) != self.image_shape:
            raise ValueError(f"checkpoint is for {state['num_classes']} classes and images "
                             f"{tuple(state['image_shape'])}, "
                             f"this learner has {self.num_classes} and {self.image_shape}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._init_state = state["init"]
        self.generator.set_state(state["generator"])
        self.fits = int(state["fits"])
        self.seed = int(state["seed"])                  # the dropout streams continue as the original's would

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` atomically (temp file, fsync, rename)."""
        import torch

        atomic_write(Path(path), lambda f: torch.save(self.state_dict(), f))

    def load(self, path: str | os.PathLike) -> None:
        import torch

        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
