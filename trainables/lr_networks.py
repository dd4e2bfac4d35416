"""The LR study's segmentation network: any of seven MONAI 3D networks, named in the spec.

``model.name`` picks the class of :mod:`monai.networks.nets` and ``model.kwargs``
is passed through to it. ``in_channels``, ``out_channels`` and ``spatial_dims``
(and UNETR's ``img_size``) always come from the data, never from the spec. Each
network starts from small, CPU-sized arguments (:data:`DEFAULT_KWARGS`), which
``model.kwargs`` overrides key by key; UNet, AttentionUnet and DynUNet take their
widths and strides from ``model.channels`` / ``model.strides``.

:func:`check_network` builds the network once and runs it on one zero volume, so
a bad argument or a volume size the network cannot take is one
:class:`~medtune.errors.InputError` line on the driver, before any trial starts.
MONAI and torch are imported where used.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from medtune.errors import InputError, did_you_mean

__all__ = [
    "DEFAULT_CHANNELS", "DEFAULT_KWARGS", "DEFAULT_STRIDES", "ModelConfig", "NETWORKS", "RESERVED", "build_network",
    "check_network", "network_kwargs",
]

NETWORKS = ("UNet", "BasicUNet", "SegResNet", "DynUNet", "AttentionUnet", "UNETR", "SwinUNETR")
# Set from the data (or not supported by the study's training loop); never from model.kwargs.
RESERVED = ("spatial_dims", "in_channels", "out_channels", "img_size", "deep_supervision")
DEFAULT_CHANNELS, DEFAULT_STRIDES = (8, 16, 32), (2, 2)

# Small CPU-sized starting points for the networks that do not read model.channels / model.strides.
DEFAULT_KWARGS: dict[str, dict[str, Any]] = {
    "BasicUNet": {"features": (8, 8, 16, 32, 64, 8)},
    "SegResNet": {"init_filters": 8},
    "UNETR": {"feature_size": 8, "hidden_size": 96, "mlp_dim": 192, "num_heads": 4},
    "SwinUNETR": {"feature_size": 12, "depths": (1, 1, 1, 1)},
}


def _network_class(name: str) -> type:
    from monai.networks import nets

    return getattr(nets, name)


@dataclass(frozen=True)
class ModelConfig:
    """Which MONAI 3D network the study trains and how it is shaped.

    Attributes:
        name: One of :data:`NETWORKS`; ``"UNet"`` (default) is the study's original model.
        channels: Widths per level: ``UNet``'s and ``AttentionUnet``'s ``channels`` and ``DynUNet``'s
            ``filters``. The default (8, 16, 32) is a tiny CPU-sized model. None (the LR study's spec): planned
            from a Decathlon task (:mod:`medtune.trainables.plan`), (8, 16, 32) for the phantom.
        strides: Down-sampling strides between levels (``len(channels) - 1`` entries), each an integer or one per
            axis (``[2, 2, 1]``); ``DynUNet`` gets ``[1, *strides]`` and ``upsample_kernel_size=strides``. None:
            planned as ``channels``, (2, 2) for the phantom.
        num_res_units: ``UNet`` only.
        dropout: ``UNet`` and ``AttentionUnet`` only, in [0, 1).
        kwargs: Passed to the network's constructor, overriding everything above; each key must be an
            argument of that class and none of :data:`RESERVED` (those come from the data).

    Raises:
        ValueError: One line naming the field, the value and the fix (the spec loader prefixes ``model.``).
    """

    name: str = "UNet"
    channels: tuple[int, ...] | None = None  # planned for a Decathlon task; DEFAULT_CHANNELS otherwise
    strides: tuple[int | tuple[int, int, int], ...] | None = None  # as channels; DEFAULT_STRIDES otherwise
    num_res_units: int = 1
    dropout: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in NETWORKS:
            raise ValueError(
                f"name={self.name!r} is not a network medtune builds{did_you_mean(self.name, NETWORKS)}; "
                f"use one of {', '.join(NETWORKS)}"
            )
        if (self.channels is None) != (self.strides is None):
            raise ValueError(f"channels={self.channels!r} and strides={self.strides!r}: set both (they go together) "
                             "or neither (planned)")
        if self.channels is not None and self.strides is not None:  # (both or neither, checked above)
            channels, strides = tuple(self.channels), tuple(self.strides)
            object.__setattr__(self, "channels", channels)
            object.__setattr__(self, "strides", strides)
            if len(channels) < 2 or any(c < 1 for c in channels):
                raise ValueError(f"channels={list(channels)!r} must list at least two positive widths")
            if len(strides) != len(channels) - 1:
                raise ValueError(
                    f"strides={list(strides)!r} must have len(channels) - 1 = {len(channels) - 1} entries"
                )
            for s in strides:
                if not (isinstance(s, int) and s >= 1) and not (
                        isinstance(s, (tuple, list)) and len(s) == 3 and all(isinstance(x, int) and x >= 1 for x in s)):
                    raise ValueError(f"strides={list(strides)!r}: each entry must be a positive integer or "
                                     "three of them (one per axis)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout!r} must lie in [0, 1)")
        if not isinstance(self.kwargs, dict):
            raise ValueError(f"kwargs={self.kwargs!r} must be a mapping of {self.name} arguments")
        if not self.kwargs:
            return  # nothing to look up: MONAI's networks need not be imported
        params = [p for p in inspect.signature(_network_class(self.name)).parameters if p != "self"]
        for key, value in self.kwargs.items():
            if key in RESERVED:
                raise ValueError(
                    f"kwargs.{key}={value!r} is set by medtune from the data (or not supported); remove it"
                )
            if key not in params:
                valid = [p for p in params if p not in RESERVED]
                raise ValueError(
                    f"kwargs.{key}={value!r} is not an argument of monai.networks.nets.{self.name}"
                    f"{did_you_mean(key, valid)}; valid: {', '.join(valid)}"
                )


def network_kwargs(cfg: ModelConfig, in_channels: int, out_channels: int,
                   spatial_size: tuple[int, int, int]) -> dict[str, Any]:
    """The constructor arguments of ``cfg.name`` for volumes of ``in_channels`` x ``spatial_size``.

    Args:
        cfg: The model section.
        in_channels: Image channels (modalities), >= 1.
        out_channels: Classes including background, >= 2.
        spatial_size: ``(D, H, W)`` of the training volumes (UNETR's ``img_size``).

    Returns:
        Keyword arguments, ``cfg.kwargs`` applied last.
    """
    name = cfg.name
    io = {"spatial_dims": 3, "in_channels": in_channels, "out_channels": out_channels}
    # not planned (the phantom, or a direct call): the small default
    channels = cfg.channels if cfg.channels is not None else DEFAULT_CHANNELS
    strides = cfg.strides if cfg.strides is not None else DEFAULT_STRIDES
    own: dict[str, Any]
    if name == "UNet":
        own = {"channels": tuple(channels), "strides": tuple(strides),
               "num_res_units": cfg.num_res_units, "dropout": cfg.dropout}
    elif name == "AttentionUnet":
        own = {"channels": tuple(channels), "strides": tuple(strides), "dropout": cfg.dropout}
    elif name == "DynUNet":
        own = {"kernel_size": [3] * len(channels), "strides": [1, *strides],
               "upsample_kernel_size": list(strides), "filters": list(channels)}
    elif name == "UNETR":
        own = {"img_size": tuple(spatial_size), **DEFAULT_KWARGS[name]}
    else:
        own = dict(DEFAULT_KWARGS[name])
    return {**io, **own, **cfg.kwargs}


def build_network(cfg: ModelConfig, in_channels: int, out_channels: int, spatial_size: tuple[int, int, int]):
    """Build the configured MONAI network (a ``torch.nn.Module`` mapping ``(B, in_channels, D, H, W)`` to
    ``(B, out_channels, D, H, W)`` logits). Draws its initial weights from torch's global RNG."""
    return _network_class(cfg.name)(**network_kwargs(cfg, in_channels, out_channels, spatial_size))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_network(cfg: ModelConfig, in_channels: int, out_channels: int, spatial_size: tuple[int, int, int],
                  what: str = "data.spatial_size") -> int:
    """Build the network once and run it on one zero volume ``(1, in_channels, *spatial_size)``.

    Meant for the driver, before any trial starts. Uses its own torch RNG state, leaving the global one as it was.

    Returns:
        The number of trainable parameters.

    Raises:
        InputError: One line naming ``model.name`` / ``model.kwargs`` when the constructor refuses its arguments,
            or ``what`` (``data.spatial_size``, or ``data.patch_size`` for patches) when the network cannot take
            volumes of that size (e.g. UNETR needs multiples of 16, SwinUNETR multiples of 32).
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        try:
            net = build_network(cfg, in_channels, out_channels, spatial_size)
        except ImportError as exc:  # MONAI's OptionalImportError for einops and the like
            raise InputError(
                f"model.name={cfg.name!r} needs an optional package ({str(exc).split('.')[0]}); pip install it"
            ) from None
        except Exception as exc:  # MONAI raises ValueError, TypeError, AssertionError ... for bad arguments
            raise InputError(
                f"model.name={cfg.name!r} with model.kwargs={cfg.kwargs!r} cannot be built ({_one_line(exc)}); "
                "fix model.kwargs"
            ) from None
        try:
            with torch.no_grad():
                out = net.eval()(torch.zeros(1, in_channels, *spatial_size))
        except Exception as exc:
            raise InputError(
                f"model.name={cfg.name!r} cannot run on volumes of {what}={list(spatial_size)!r} with "
                f"{in_channels} channel(s) ({_one_line(exc)}); change {what} or model.kwargs"
            ) from None
    expected = (1, out_channels, *spatial_size)
    if tuple(out.shape) != expected:
        raise InputError(
            f"model.name={cfg.name!r} gives outputs of shape {tuple(out.shape)} for {what}="
            f"{list(spatial_size)!r}, not {expected}; change {what} or model.kwargs"
        )
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
