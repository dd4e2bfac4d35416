"""PaSeR: a learned router that sends each image patch to a small, medium or large segmentation model.

Paper 003 (Reinforcement Learning as a Parsimonious Alternative to Prediction
Cascades, arXiv 2402.11760: Pareto-optimal routing of patches, "PaSeR"), with
the details the authors' public code (scailab/paser) shows:

* The image ``x`` (B, C, H, W) is cut into a ``grid x grid`` grid of
  ``P = grid**2`` patches (:func:`split_patches`, row-major patch index
  ``p = row * grid + col``).
* The small model ``f0`` (about 16k parameters, with dropout) segments the
  **whole** image. ``T`` Monte-Carlo dropout passes give its mean foreground
  probability and the entropy of that mean (:func:`mc_dropout`); together they
  are the router's 2-channel input.
* The router ``f_RL`` (:class:`Router`) gives, per patch, logits over the
  actions ``a in {0: keep f0, 1: f1, 2: f2}``; ``f1`` (about 1M parameters)
  and ``f2`` (about 17M) are *patch models*, trained and run on the bare patch.
* Per-patch reward (Eq. 2): ``R = (1 - lam) * (IoU(routed) - IoU(f0)) - lam * C(a)``
  (:func:`patch_reward`), with the cost ``C`` (Eq. 3) the model's share of the
  parameters of all models and ``C(f0) = 0`` (:func:`model_costs`; the share of
  measured FLOPs is an option).
* REINFORCE (:func:`reinforce_loss`): ``-(log pi(a | s) * (R - b))`` averaged
  over patches, where ``b`` is a running mean of the reward
  (:class:`RewardBaseline`), each explored action importance-weighted; exploration (:class:`ExplorationSchedule`)
  replaces the policy's action by a uniform one with a probability
  ``epsilon`` that decays linearly over the router's epochs (the public code
  exploits with a probability rising 0.7 -> 0.95, i.e. epsilon 0.3 -> 0.05).
* At inference (:func:`routed_inference`) the router's most likely action is
  taken per patch and **only** the chosen model runs on each chosen patch: the
  patches routed to ``f_k`` are gathered into one batch and ``f_k`` is called
  once (not at all if no patch chose it); the keep-``f0`` patches reuse f0's
  MC-dropout prediction. A patch model sees its patch plus ``margin`` pixels
  of context on each side (:func:`crop_patches`, reflect-padded at the image
  border) and only the patch's own pixels of its output are kept. The public
  code runs bare patches (``margin = 0``, its patches are 56x64 pixels); on
  the 8x8 patches of a 32x32 image a bare patch model loses to f0, which sees
  the whole image, so we default to ``margin = 2`` (our choice), which costs a
  factor ``((h + 2m) / h) ** 2`` (2.25 here) per patch, counted in the FLOPs.
  FLOPs are counted as executed with
  :class:`torch.utils.flop_counter.FlopCounterMode`: f0's ``T`` passes, the
  router and every patch model call.
* Baselines on the same patches: :func:`single_model` (``small``: f0, one
  deterministic pass; ``medium``/``large``: f1/f2 on every patch),
  :func:`cascade` (f0, then f1 on the patches whose mean f0 entropy exceeds
  ``t1``, then f2 on those whose mean f1 entropy exceeds ``t2``;
  :func:`cascade_thresholds` picks ``t1``/``t2`` as quantiles on validation
  images) and :func:`random_routing` (actions drawn i.i.d. with given shares,
  e.g. the router's, so the cost matches).

Our choices where the paper is silent (each said again where it is made):
the IoU is the binary foreground IoU, 1.0 for a patch where prediction and
target are both empty; the router reads f0's mean *probability* (the public
code stacks the arg-max) and the entropy in bits (in [0, 1]); the baseline
``b`` is an exponential average of the batch's mean reward; ``beta`` weights an
entropy bonus (the paper reports ``beta = 0.01`` from a grid search without, in
the text we have, saying what it weighs); exploration flips one coin per patch
(the public code flips one per batch) and the policy gradient weights each
action by ``pi / mu``, the policy's over the exploring policy's probability
(the public code does not, which lets the logits diverge); inference takes the arg-max action (the
public code samples).

Pure torch: no Ray, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from medtune.errors import InputError, did_you_mean
from medtune.util import is_int, is_number

__all__ = [
    "ACTIONS", "COST_KINDS", "ExplorationSchedule", "PaSeRConfig", "RewardBaseline", "Router", "Segmentation",
    "action_shares", "binary_entropy", "cascade", "cascade_thresholds", "check_grid", "costs", "count_flops",
    "crop_patches", "execute_routing", "iou", "mc_dropout", "model_costs", "param_count", "patch_mean",
    "patch_reward", "random_routing", "reinforce_loss", "reinforce_step", "routed_inference", "router_input",
    "run_patch_model", "sample_actions", "single_model", "split_patches", "stitch_patches", "table_rewards",
]

R = TypeVar("R")

COST_KINDS: tuple[str, ...] = ("params", "flops")
ACTIONS: tuple[str, ...] = ("f0", "f1", "f2")   # keep the small model's prediction, or run f1 / f2 on the patch


# --------------------------------------------------------------------------- config


def check_grid(image_size: int, grid: object, margin: int = 0) -> None:
    """Raise a one-line :class:`InputError` unless ``grid`` splits a ``image_size`` square into equal patches.

    Args:
        image_size: The image side ``H == W`` in pixels.
        grid: Patches per side (``P = grid**2`` patches).
        margin: Context pixels around a patch; must not exceed the patch side.

    Raises:
        InputError: ``grid`` not an integer >= 1 (an empty grid) or not a divisor of ``image_size``,
            or ``margin`` larger than the patch side.
    """
    if not is_int(grid) or grid < 1:
        raise InputError(f"grid={grid!r} is an empty or invalid patch grid; use an integer >= 1 that divides the "
                         f"image size, e.g. 4")
    if image_size % grid:
        divisors = [d for d in range(1, image_size + 1) if image_size % d == 0]
        raise InputError(f"grid={grid} does not divide the image size {image_size}; use one of "
                         f"{', '.join(map(str, divisors))}")
    if margin > image_size // grid:
        raise InputError(f"margin={margin} exceeds the {image_size // grid}-pixel patch of grid={grid}; "
                         f"use a margin <= {image_size // grid}")


@dataclass(frozen=True)
class PaSeRConfig:
    """The router's parameters (paper 003 / the public code's defaults where they exist).

    Attributes:
        grid: Patches per side; ``grid**2`` patches per image (4, the public code).
        margin: Context pixels on each side of a patch that f1 and f2 see
            (0: bare patches, the public code); at most the patch side.
        lam: Cost weight ``lam`` in [0, 1] of the reward (Eq. 2); 0 ignores
            cost, 1 ignores accuracy.
        cost: ``"params"`` (Eq. 3, the paper) or ``"flops"`` (share of measured FLOPs).
        T: Monte-Carlo dropout passes of f0 (the paper: 5, no better with 20).
        epsilon_start, epsilon_end: Exploration probability, linear over
            ``router_epochs`` (public code: 0.3 -> 0.05).
        router_epochs: Epochs of REINFORCE over the training images.
        batch_size: Images per router step (32, the paper).
        lr: Adam learning rate of the router.
        beta: Weight of the entropy bonus (our reading of the paper's beta = 0.01).
        baseline_decay: Decay of the running reward baseline, in [0, 1).
        router_width: Channels of the router's convolutions.
        finetune_epochs: Epochs of the joint fine-tuning of f1, f2 and the
            router (0 skips it; the paper: 200 on a GPU).
        finetune_lr: Adam learning rate of f1 and f2 while fine-tuning.
        cascade_quantiles: The cascade baseline's entropy thresholds as
            quantiles (of f0's, then f1's patch entropies) on validation images:
            0.5 sends half the patches on at each stage.

    Raises:
        InputError: One line naming the field, the value and the fix.
    """

    grid: int = 4
    margin: int = 2
    lam: float = 0.5
    cost: str = "params"
    T: int = 5
    epsilon_start: float = 0.3
    epsilon_end: float = 0.05
    router_epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    beta: float = 0.01
    baseline_decay: float = 0.9
    router_width: int = 16
    finetune_epochs: int = 1
    finetune_lr: float = 1e-4
    cascade_quantiles: tuple[float, float] = (0.5, 0.5)

    def __post_init__(self) -> None:
        if not is_int(self.grid) or self.grid < 1:
            raise InputError(f"grid={self.grid!r} is an empty or invalid patch grid; use an integer >= 1, e.g. 4")
        if not is_int(self.margin) or self.margin < 0:
            raise InputError(f"margin={self.margin!r} must be an integer >= 0 (context pixels around a patch)")
        if not is_number(self.lam) or not 0 <= self.lam <= 1:
            raise InputError(f"lam={self.lam!r} is outside [0, 1]; use a cost weight between 0 (accuracy only) "
                             "and 1 (cost only), e.g. 0.5")
        if self.cost not in COST_KINDS:
            raise InputError(f"cost={self.cost!r} is not a cost kind; use one of "
                             f"{', '.join(COST_KINDS)}{did_you_mean(self.cost, COST_KINDS)}")
        for name in ("T", "router_epochs", "batch_size", "router_width"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise InputError(f"{name}={value!r} must be an integer >= 1")
        if not is_int(self.finetune_epochs) or self.finetune_epochs < 0:
            raise InputError(f"finetune_epochs={self.finetune_epochs!r} must be an integer >= 0 (0 skips fine-tuning)")
        for name in ("epsilon_start", "epsilon_end"):
            value = getattr(self, name)
            if not is_number(value) or not 0 <= value <= 1:
                raise InputError(f"{name}={value!r} is not a probability; use a number in [0, 1]")
        for name in ("lr", "finetune_lr"):
            value = getattr(self, name)
            if not is_number(value) or value <= 0:
                raise InputError(f"{name}={value!r} must be a number > 0, e.g. 1e-3")
        if not is_number(self.beta) or self.beta < 0:
            raise InputError(f"beta={self.beta!r} must be >= 0 (the entropy bonus weight; 0 turns it off)")
        if not is_number(self.baseline_decay) or not 0 <= self.baseline_decay < 1:
            raise InputError(f"baseline_decay={self.baseline_decay!r} must lie in [0, 1)")
        q = self.cascade_quantiles
        if (not isinstance(q, (tuple, list)) or len(q) != 2
                or not all(is_number(v) and 0 <= v <= 1 for v in q)):
            raise InputError(f"cascade_quantiles={q!r} must be two numbers in [0, 1], e.g. [0.5, 0.5]")
        object.__setattr__(self, "cascade_quantiles", tuple(float(v) for v in q))


# --------------------------------------------------------------------------- patches and IoU


def split_patches(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut images into a ``grid x grid`` grid of patches.

    Args:
        x: ``(B, C, H, W)``; ``grid`` must divide ``H`` and ``W``.
        grid: Patches per side.

    Returns:
        ``(B, grid*grid, C, H/grid, W/grid)``, patch ``p = row * grid + col``
        (row-major). A view-free copy; :func:`stitch_patches` inverts it exactly.
    """
    b, c, h, w = x.shape
    if h % grid or w % grid:
        raise InputError(f"grid={grid} does not divide the image size {h}x{w}; use a divisor of both sides")
    ph, pw = h // grid, w // grid
    return x.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, ph, pw)


def crop_patches(x: torch.Tensor, grid: int, margin: int = 0) -> torch.Tensor:
    """Each patch with ``margin`` pixels of context on every side: what a patch model sees.

    Args:
        x: ``(B, C, H, W)``; ``grid`` must divide ``H`` and ``W``; ``margin <= H / grid``.
        grid: Patches per side.
        margin: Context pixels; beyond the image border the context is the
            image mirrored (``reflect`` padding). 0 gives :func:`split_patches`.

    Returns:
        ``(B, grid*grid, C, H/grid + 2*margin, W/grid + 2*margin)``, patch order of
        :func:`split_patches`; the centre ``[margin:-margin, margin:-margin]`` of
        crop ``p`` is patch ``p``.
    """
    if margin == 0:
        return split_patches(x, grid)
    b, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    padded = F.pad(x, (margin, margin, margin, margin), mode="reflect")
    windows = padded.unfold(2, ph + 2 * margin, ph).unfold(3, pw + 2 * margin, pw)   # (B, C, g, g, ph+2m, pw+2m)
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(b, grid * grid, c, ph + 2 * margin, pw + 2 * margin)


def stitch_patches(patches: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`split_patches`: ``(B, grid*grid, C, h, w)`` -> ``(B, C, grid*h, grid*w)``."""
    b, p, c, ph, pw = patches.shape
    if p != grid * grid:
        raise ValueError(f"{p} patches do not form a {grid}x{grid} grid")
    return patches.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * ph, grid * pw)


def iou(pred: torch.Tensor, target: torch.Tensor, grid: int | None = None) -> torch.Tensor:
    """Binary foreground IoU (Jaccard index) per image, or per patch.

    Args:
        pred, target: ``(B, H, W)``, integer or bool; nonzero is foreground.
        grid: ``None`` for one IoU per image, else the patch grid.

    Returns:
        ``(B,)`` or ``(B, grid*grid)`` float32: ``|pred & target| / |pred | target|``.
        Edge case (our choice): where the union is empty (both empty), the
        IoU is 1.0, a perfect answer to an empty patch.
    """
    p = (pred != 0).float()[:, None]
    t = (target != 0).float()[:, None]
    if grid is not None:
        p, t = split_patches(p, grid), split_patches(t, grid)
    dims = tuple(range(2, p.dim()))
    inter = (p * t).sum(dim=dims)
    union = ((p + t) > 0).float().sum(dim=dims)
    out = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return out[:, 0] if grid is None else out


# --------------------------------------------------------------------------- cost and reward


def param_count(model: nn.Module) -> int:
    """Learnable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(fn: Callable[..., R], *args: Any, **kwargs: Any) -> tuple[R, int]:
    """Run ``fn(*args, **kwargs)`` under :class:`FlopCounterMode`; return ``(result, flops)``.

    FLOPs as torch counts them: convolutions and matrix products at 2 per
    multiply-add (biases, norms, activations and element-wise ops are not counted).
    """
    counter = FlopCounterMode(display=False)
    with counter:
        out = fn(*args, **kwargs)
    return out, int(counter.get_total_flops())


def model_costs(sizes: Sequence[float]) -> torch.Tensor:
    """Eq. 3: each model's share of the total size, with ``C(f0) = 0``.

    Args:
        sizes: One size per model ``f0 .. fm`` (parameters, or FLOPs on one
            patch); the total includes f0, as in the public code.

    Returns:
        ``(m + 1,)`` float32: ``[0, s1 / S, ..., sm / S]`` with ``S = sum(sizes)``.

    Example: parameters 16_571, 1_080_595, 17_275_459 give [0, 0.0588, 0.9403].
    """
    total = float(sum(sizes))
    if total <= 0:
        raise ValueError(f"model sizes {list(sizes)} sum to {total}; every model needs parameters")
    return torch.tensor([0.0] + [float(s) / total for s in sizes[1:]], dtype=torch.float32)


def costs(models: Sequence[nn.Module], kind: str = "params", patch_shape: tuple[int, int, int] | None = None
          ) -> torch.Tensor:
    """The cost vector ``C`` (Eq. 3) for ``models = [f0, f1, f2]``.

    Args:
        models: The segmentation models, f0 first.
        kind: ``"params"`` (the paper) or ``"flops"``: FLOPs of one forward pass
            on one patch model input of shape ``patch_shape = (C, h + 2m, w + 2m)``
            (f0 measured on the same input, though it runs on whole images; its
            cost is 0 anyway).

    Returns:
        ``(len(models),)`` float32, ``C[0] = 0``.
    """
    if kind == "params":
        return model_costs([param_count(m) for m in models])
    if kind != "flops":
        raise InputError(f"cost={kind!r} is not a cost kind; use one of {', '.join(COST_KINDS)}")
    if patch_shape is None:
        raise ValueError("cost='flops' needs patch_shape=(C, h, w)")
    x = torch.zeros(1, *patch_shape)
    sizes = []
    for m in models:
        was_training = m.training
        m.eval()
        with torch.no_grad():
            sizes.append(count_flops(m, x)[1])
        m.train(was_training)
    return model_costs(sizes)


def patch_reward(iou_routed: torch.Tensor, iou_f0: torch.Tensor, cost: torch.Tensor | float, lam: float
                 ) -> torch.Tensor:
    """Eq. 2, per patch: ``(1 - lam) * (iou_routed - iou_f0) - lam * cost``.

    All tensors broadcast (typically ``(B, P)``); a patch kept on f0 has
    ``iou_routed == iou_f0`` and cost 0, so reward 0.
    """
    return (1 - lam) * (iou_routed - iou_f0) - lam * cost


# --------------------------------------------------------------------------- f0's uncertainty and the router


def _dropout_train(model: nn.Module) -> list[nn.Module]:
    """Put ``model`` in eval mode but its dropout layers in train mode; return those layers."""
    model.eval()
    layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    for layer in layers:
        layer.train()
    return layers


@torch.no_grad()
def mc_dropout(f0: nn.Module, x: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo dropout (section 3): ``T`` stochastic passes of ``f0`` with dropout on, norms in eval mode.

    Args:
        f0: A segmentation model with dropout, logits ``(B, 2, H, W)``.
        x: ``(B, C, H, W)``.
        T: Passes (>= 1). With no dropout layer in ``f0`` all passes agree.

    Returns:
        ``prob`` ``(B, H, W)``: the mean over passes of the softmax foreground
        probability; ``entropy`` ``(B, H, W)``: the entropy of that mean, in
        nats, in [0, ln 2]. The model is left in eval mode.
    """
    _dropout_train(f0)
    prob = torch.zeros(x.shape[0], *x.shape[2:], device=x.device)
    for _ in range(T):
        prob += F.softmax(f0(x), dim=1)[:, 1]
    f0.eval()
    prob /= T
    q = prob.clamp(1e-7, 1 - 1e-7)
    entropy = -(q * q.log() + (1 - q) * (1 - q).log())
    return prob, entropy


def router_input(prob: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    """The router's state: ``(B, 2, H, W)``, f0's mean foreground probability and its entropy in bits (/ ln 2)."""
    return torch.stack((prob, entropy / math.log(2)), dim=1)


class Router(nn.Module):
    """``f_RL``: a small CNN from f0's (probability, entropy) maps to per-patch action logits.

    A stride-2 3x3 stem (our choice: it quarters the router's FLOPs, which at
    full resolution would rival the small model's), two 3x3 convolutions with a
    residual connection (a one-block ResNet, as the public code's tiny ResNet),
    an average pool down to one cell per patch (each cell sees its patch and a
    few pixels beyond it through the convolutions), then two 1x1 convolutions
    to ``n_actions`` logits.

    Args:
        grid: Patches per side.
        n_actions: Models to choose among (3: keep f0, f1, f2).
        width: Channels of the hidden layers.

    Shapes:
        input ``(B, 2, H, W)`` with ``grid`` dividing ``H`` and ``W`` ->
        logits ``(B, grid*grid, n_actions)`` (patch order of :func:`split_patches`).
    """

    def __init__(self, grid: int, n_actions: int = len(ACTIONS), width: int = 16) -> None:
        super().__init__()
        self.grid = grid
        self.stem = nn.Conv2d(2, width, 3, stride=2, padding=1)
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, n_actions, 1))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        h = self.stem(s)
        h = h + self.block(h)
        logits = self.head(self.pool(h))                        # (B, A, grid, grid)
        return logits.flatten(2).transpose(1, 2)                # (B, grid*grid, A)


# --------------------------------------------------------------------------- REINFORCE


@dataclass(frozen=True)
class ExplorationSchedule:
    """Linear decay of the exploration probability over the router's epochs.

    ``epsilon(e) = start + (end - start) * e / (epochs - 1)`` for ``e`` in
    ``0 .. epochs-1`` (``start`` when ``epochs == 1``; ``end`` beyond the last epoch).
    """

    start: float
    end: float
    epochs: int

    def epsilon(self, epoch: int) -> float:
        if self.epochs <= 1:
            return self.start
        frac = min(max(epoch, 0), self.epochs - 1) / (self.epochs - 1)
        return self.start + (self.end - self.start) * frac


def sample_actions(logits: torch.Tensor, epsilon: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per patch: with probability ``epsilon`` a uniform action, else one sampled from ``softmax(logits)``.

    Args:
        logits: ``(B, P, A)``.
        epsilon: Exploration probability in [0, 1].

    Returns:
        ``(B, P)`` int64 actions in ``0 .. A-1``.
    """
    probs = F.softmax(logits.detach().float(), dim=-1).cpu()          # sampled on the CPU: a CPU generator works
    b, p, a = probs.shape
    policy = torch.multinomial(probs.reshape(b * p, a), 1, generator=generator).reshape(b, p)
    uniform = torch.randint(0, a, (b, p), generator=generator)
    explore = torch.rand((b, p), generator=generator) < epsilon
    return torch.where(explore, uniform, policy).to(logits.device)


class RewardBaseline:
    """Running mean ``b`` of the reward, subtracted to lower the variance of REINFORCE.

    ``update(r)`` returns ``b`` as it was *before* this batch (the first call
    returns the batch's own mean reward, so the first advantage is centred),
    then sets ``b <- decay * b + (1 - decay) * mean(r)``.
    """

    def __init__(self, decay: float = 0.9) -> None:
        self.decay = decay
        self.value: float | None = None

    def update(self, rewards: torch.Tensor) -> float:
        mean = float(rewards.mean())
        before = mean if self.value is None else self.value
        self.value = mean if self.value is None else self.decay * self.value + (1 - self.decay) * mean
        return before


def reinforce_loss(logits: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, baseline: float = 0.0,
                   beta: float = 0.0, epsilon: float = 0.0) -> torch.Tensor:
    """REINFORCE (policy gradient) loss to minimise, averaged over patches.

    ``mean(-(w * log pi(a | s) * (R - b))) - beta * mean(H(pi(. | s)))``, with
    the importance weight ``w = pi(a | s) / mu(a | s)`` (no gradient) where
    ``mu = (1 - epsilon) * pi + epsilon / A`` is the exploring policy that
    really drew the actions (:func:`sample_actions`); ``w = 1`` when
    ``epsilon = 0``. Our choice: the public code treats explored actions as if
    the policy had drawn them, which lets a punished action the policy almost
    never takes push its log-probability without bound (the logits diverge);
    the weight makes the gradient the unbiased one and bounds it.

    Args:
        logits: ``(B, P, A)`` router output, requiring grad.
        actions: ``(B, P)`` actions taken (sampled or explored).
        rewards: ``(B, P)`` their rewards (:func:`patch_reward`), no grad.
        baseline: ``b``.
        beta: Entropy bonus weight (>= 0).
        epsilon: The exploration probability the actions were drawn with.
    """
    dist = torch.distributions.Categorical(logits=logits)
    log_prob = dist.log_prob(actions)
    weight = torch.ones_like(log_prob)
    if epsilon > 0:
        p = log_prob.detach().exp()
        weight = p / ((1 - epsilon) * p + epsilon / logits.shape[-1])
    loss = -(weight * log_prob * (rewards.detach() - baseline)).mean()
    if beta:
        loss = loss - beta * dist.entropy().mean()
    return loss


def table_rewards(iou_table: torch.Tensor, actions: torch.Tensor, cost: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 2 looked up in a table of per-patch IoUs.

    Args:
        iou_table: ``(B, P, A)``: the IoU of each model's prediction on each patch
            (column 0: f0's). Exact while the models are frozen, because a
            patch's routed prediction depends only on its own action.
        actions: ``(B, P)``.
        cost: ``(A,)`` the cost vector.

    Returns:
        ``(B, P)`` rewards.
    """
    routed = iou_table.gather(2, actions[..., None])[..., 0]
    return patch_reward(routed, iou_table[..., 0], cost[actions], lam)


def reinforce_step(router: nn.Module, optimizer: torch.optim.Optimizer, state: torch.Tensor, iou_table: torch.Tensor,
                   cost: torch.Tensor, lam: float, epsilon: float, baseline: RewardBaseline, beta: float = 0.0,
                   generator: torch.Generator | None = None) -> dict[str, float]:
    """One router update on a batch: sample (with exploration), reward from the IoU table, REINFORCE step.

    Args:
        router: The policy; ``state`` ``(B, 2, H, W)`` -> logits ``(B, P, A)``.
        iou_table: ``(B, P, A)`` per-patch IoUs of every model (see :func:`table_rewards`).
        cost: ``(A,)``.
        lam, epsilon, beta: Eq. 2's weight, the exploration probability, the entropy bonus.
        baseline: Updated in place.

    Returns:
        ``reward`` (mean over patches), ``loss``, ``share_f0/f1/f2`` of the sampled actions.
    """
    router.train()
    logits = router(state)
    actions = sample_actions(logits, epsilon, generator)
    rewards = table_rewards(iou_table, actions, cost, lam)
    b = baseline.update(rewards)
    loss = reinforce_loss(logits, actions, rewards, b, beta, epsilon)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    out = {"reward": float(rewards.mean()), "loss": float(loss.detach())}
    out.update(action_shares(actions, logits.shape[-1]))
    return out


def action_shares(actions: torch.Tensor, n_actions: int = len(ACTIONS)) -> dict[str, float]:
    """Share of patches per action: ``{"share_f0": .., "share_f1": .., "share_f2": ..}`` (sums to 1)."""
    counts = torch.bincount(actions.reshape(-1), minlength=n_actions).float()
    counts = counts / counts.sum().clamp(min=1)
    return {f"share_f{k}": float(counts[k]) for k in range(n_actions)}


# --------------------------------------------------------------------------- running the models on patches


@dataclass
class Segmentation:
    """One method's output on a batch.

    Attributes:
        pred: ``(B, H, W)`` int64 in {0, 1}.
        actions: ``(B, P)`` int64: the model that produced each patch (0 f0, 1 f1, 2 f2).
        flops: FLOPs executed for the whole batch (:func:`count_flops`), 0 if not counted.
    """

    pred: torch.Tensor
    actions: torch.Tensor
    flops: int = 0


def run_patch_model(model: nn.Module, crops: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """A patch model's logits on the patches inside ``crops``.

    Args:
        crops: ``(n, C, h + 2m, w + 2m)`` patches with context (:func:`crop_patches`).
        margin: ``m``; the context is cut off the output.

    Returns:
        ``(n, 2, h, w)``; the model is not called when ``n == 0``.
    """
    n, _, ch, cw = crops.shape
    if n == 0:
        return crops.new_zeros((0, 2, ch - 2 * margin, cw - 2 * margin))
    logits = model(crops)
    return logits[..., margin:ch - margin, margin:cw - margin] if margin else logits


@torch.no_grad()
def execute_routing(models: Sequence[nn.Module], x: torch.Tensor, actions: torch.Tensor, grid: int,
                    f0_pred: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """Run only the chosen model on each chosen patch and stitch the predictions.

    Args:
        models: ``[f0, f1, ...]``; ``models[k]`` for ``k >= 1`` is a patch model.
        x: ``(B, C, H, W)``.
        actions: ``(B, P)``; 0 keeps ``f0_pred`` on that patch.
        grid: Patches per side.
        f0_pred: ``(B, H, W)`` f0's prediction (computed by the caller, whose cost it is).
        margin: Context pixels the patch models see (:func:`crop_patches`).

    Returns:
        ``(B, H, W)`` int64. Each model ``k >= 1`` is called at most once, on the
        batch of all patches routed to it, and not at all if none is.
    """
    crops = crop_patches(x, grid, margin)                                # (B, P, C, h+2m, w+2m)
    out = split_patches(f0_pred[:, None].long(), grid).clone()           # (B, P, 1, h, w)
    for k in range(1, len(models)):
        chosen = actions == k
        if not bool(chosen.any()):
            continue
        models[k].eval()
        out[chosen] = run_patch_model(models[k], crops[chosen], margin).argmax(dim=1, keepdim=True)
    return stitch_patches(out, grid)[:, 0]


@torch.no_grad()
def routed_inference(models: Sequence[nn.Module], router: nn.Module, x: torch.Tensor, grid: int, T: int,
                     margin: int = 0) -> Segmentation:
    """PaSeR at inference: f0 with ``T`` MC-dropout passes, the router's arg-max action per patch, the chosen models.

    Args:
        models: ``[f0, f1, f2]``.
        router: ``(B, 2, H, W)`` -> ``(B, P, 3)`` logits.
        x: ``(B, C, H, W)``.
        grid: Patches per side (must match the router's).
        T: MC-dropout passes.
        margin: Context pixels the patch models see.

    Returns:
        :class:`Segmentation` with the FLOPs executed: f0's ``T`` passes, the
        router, and each patch model on its patches only.
    """
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        prob, entropy = mc_dropout(models[0], x, T)
        router.eval()
        actions = router(router_input(prob, entropy)).argmax(dim=-1)
        return execute_routing(models, x, actions, grid, (prob > 0.5).long(), margin), actions

    (pred, actions), flops = count_flops(run)
    return Segmentation(pred, actions, flops)


@torch.no_grad()
def single_model(models: Sequence[nn.Module], k: int, x: torch.Tensor, grid: int, margin: int = 0) -> Segmentation:
    """Baselines ``small`` (k = 0: f0, one deterministic pass on the image), ``medium``/``large`` (f1/f2 everywhere).

    ``medium`` and ``large`` run their model on every patch (with ``margin``), as routing them everywhere would.
    """
    def run() -> torch.Tensor:
        if k == 0:
            models[0].eval()
            return models[0](x).argmax(dim=1)
        actions = torch.full((x.shape[0], grid * grid), k, dtype=torch.long, device=x.device)
        return execute_routing(models, x, actions, grid, x.new_zeros((x.shape[0], *x.shape[2:]), dtype=torch.long),
                               margin)

    pred, flops = count_flops(run)
    return Segmentation(pred, torch.full((x.shape[0], grid * grid), k, dtype=torch.long), flops)


@torch.no_grad()
def random_routing(models: Sequence[nn.Module], x: torch.Tensor, grid: int, shares: Sequence[float],
                   generator: torch.Generator | None = None, margin: int = 0) -> Segmentation:
    """Baseline ``random``: each patch's action drawn i.i.d. with probabilities ``shares`` (e.g. the router's).

    f0 runs one deterministic pass (no entropy is needed); matching the
    router's shares matches its expected cost ``sum_k shares[k] * C(k)``.
    """
    probs = torch.as_tensor(list(shares), dtype=torch.float32).clamp(min=0)
    if probs.sum() <= 0:
        raise ValueError(f"shares={list(shares)} must have a positive sum")
    b, p = x.shape[0], grid * grid
    actions = torch.multinomial((probs / probs.sum()).expand(b * p, -1), 1, replacement=True,
                                generator=generator).reshape(b, p).to(x.device)

    def run() -> torch.Tensor:
        models[0].eval()
        return execute_routing(models, x, actions, grid, models[0](x).argmax(dim=1), margin)

    pred, flops = count_flops(run)
    return Segmentation(pred, actions, flops)


def patch_mean(values: torch.Tensor, grid: int) -> torch.Tensor:
    """Mean of a ``(B, H, W)`` map over each patch: ``(B, grid*grid)``."""
    return split_patches(values[:, None], grid).flatten(2).mean(dim=2)


def binary_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)`` over dim 1: ``(n, 2, h, w)`` -> ``(n, h, w)``."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


@torch.no_grad()
def cascade(models: Sequence[nn.Module], x: torch.Tensor, grid: int, T: int, t1: float, t2: float,
            margin: int = 0) -> Segmentation:
    """Baseline ``cascade``: f0 (MC dropout) everywhere; f1 where f0 is unsure; f2 where f1 is still unsure.

    A patch goes on to f1 when the mean of f0's MC-dropout entropy over the
    patch exceeds ``t1``, and on to f2 when the mean of f1's softmax entropy
    over the patch exceeds ``t2``; each patch keeps the prediction of the last
    model that ran on it. The models run in sequence, which is the waste the
    paper's router avoids: f1's work on a patch sent on to f2 is thrown away.

    Returns:
        :class:`Segmentation`; ``actions`` is the last model per patch.
    """
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        prob, entropy = mc_dropout(models[0], x, T)
        crops = crop_patches(x, grid, margin)
        out = split_patches((prob > 0.5).long()[:, None], grid).clone()
        actions = torch.zeros(x.shape[0], grid * grid, dtype=torch.long, device=x.device)
        to_f1 = patch_mean(entropy, grid) > t1
        if bool(to_f1.any()):
            models[1].eval()
            logits1 = run_patch_model(models[1], crops[to_f1], margin)
            out[to_f1] = logits1.argmax(dim=1, keepdim=True)
            actions[to_f1] = 1
            unsure = binary_entropy(logits1).flatten(1).mean(dim=1) > t2
            if bool(unsure.any()):
                to_f2 = to_f1.clone()
                to_f2[to_f1] = unsure
                models[2].eval()
                out[to_f2] = run_patch_model(models[2], crops[to_f2], margin).argmax(dim=1, keepdim=True)
                actions[to_f2] = 2
        return stitch_patches(out, grid)[:, 0], actions

    (pred, actions), flops = count_flops(run)
    return Segmentation(pred, actions, flops)


@torch.no_grad()
def cascade_thresholds(models: Sequence[nn.Module], x: torch.Tensor, grid: int, T: int,
                       quantiles: tuple[float, float] = (0.5, 0.5), margin: int = 0) -> tuple[float, float]:
    """The cascade's thresholds from validation images (never the test set).

    ``t1`` is the ``quantiles[0]`` quantile of f0's per-patch mean entropy;
    ``t2`` the ``quantiles[1]`` quantile of f1's per-patch mean entropy on the
    patches above ``t1``. Quantile 1.0 gives ``inf`` (nothing goes on).

    Args:
        x: ``(N, C, H, W)`` validation images (N >= 1).
    """
    def quantile(v: torch.Tensor, q: float) -> float:
        return math.inf if q >= 1 or v.numel() == 0 else float(torch.quantile(v, q))

    prob, entropy = mc_dropout(models[0], x, T)
    e0 = patch_mean(entropy, grid)
    t1 = quantile(e0.reshape(-1), quantiles[0])
    above = e0 > t1
    models[1].eval()
    e1 = binary_entropy(run_patch_model(models[1], crop_patches(x, grid, margin)[above], margin)).flatten(1).mean(dim=1)
    return t1, quantile(e1, quantiles[1])
