"""A training plan derived from a Decathlon task's fingerprint (what nnU-Net and MONAI Auto3DSeg call planning).

:func:`fingerprint_decathlon` reads every case once (in the same pass as the loader's checks) and keeps, per case,
its shape and spacing (RAS), the extent of its nonzero-or-labelled box, its class voxel counts and per-modality
intensity statistics on the labelled voxels (0.5 and 99.5 percentiles, mean, std). :func:`plan_for` derives from
the training and validation cases:

* the target spacing: the median per axis; an anisotropic task (largest / smallest median spacing > 3) keeps its
  coarse axis coarse, at the 10th percentile of that axis's spacings (never finer than the other axes), as
  nnU-Net does;
* the median shape after cropping and resampling (shapes computed from the headers with MONAI's own
  ``compute_shape_offset``, so they are the shapes the preprocessing gives);
* the patch size: the median shape, shrunk along its physically longest axis until it fits the memory budget and
  the device's voxel cap, then rounded to a multiple of the network's total stride;
* the batch size (volumes per step, >= 2): as many as fit the budget, at most 5% of the training voxels per step
  (nnU-Net's rule) and at most the training cases;
* for MONAI ``UNet`` / ``AttentionUnet`` / ``DynUNet``: per-level, per-axis strides (an axis is halved while its
  feature map stays >= 8 voxels and its spacing is within twice the finest one, as nnU-Net does) and widths
  doubling from the base width up to 320; ``DynUNet`` also gets per-level kernels (1 along an axis still coarser
  than twice the finest spacing, else 3).

Pure: numpy, nibabel's orientation helpers, MONAI's shape helpers and psutil; no Ray, no MLflow.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medtune.trainables.lr_data import (
    CaseHeader,
    DataConfig,
    decathlon_class_names,
    decathlon_modalities,
    scan_decathlon,
    split_indices,
)
from medtune.trainables.lr_networks import ModelConfig
from medtune.util import float3, int3

__all__ = [
    "ANISOTROPY", "BASE_CHANNELS", "BYTES_PER_FEATURE_VOXEL", "FINGERPRINT_FILE", "FINGERPRINT_VERSION",
    "FIXED_STRIDE", "Fingerprint", "MAX_BATCH", "MAX_CHANNELS", "MAX_LEVELS", "MIN_BATCH", "MIN_FEATURE",
    "PLANNED_NETS", "PLAN_FILE", "Plan", "SAMPLES_PER_CASE", "VOXEL_CAP", "apply_plan", "estimate_bytes",
    "fingerprint_decathlon", "fit_network", "memory_budget", "network_strides", "plan_for", "planning_indices",
    "preprocessed_shape", "read_fingerprint", "target_spacing", "widths", "write_plan",
]

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
PLAN_FILE = "plan.json"
FINGERPRINT_VERSION = 1
ANISOTROPY = 3.0          # largest / smallest median spacing above which a task is anisotropic
SAMPLES_PER_CASE = 10_000  # foreground voxels per case and modality the intensity statistics read
MIN_FEATURE = 4           # the smallest feature-map edge at the bottom of the network (nnU-Net's)
MAX_LEVELS = 5            # at most this many down-sampling levels
MAX_CHANNELS = 320        # nnU-Net's widest level
BASE_CHANNELS = {"cpu": 8, "cuda": 32}  # the first level's width the plan starts from (a tiny CPU net; nnU-Net's)
# A patch's voxel cap per device: on a CPU the training time, not the memory, is the limit.
VOXEL_CAP = {"cpu": 64 ** 3, "cuda": 160 ** 3}
# Peak bytes of a forward + backward pass per feature-map voxel (sum over levels of voxels x channels), fp32,
# measured on MONAI's UNet (num_res_units=1) with torch's memory profiler: about 90.
BYTES_PER_FEATURE_VOXEL = 96
MIN_BATCH = 2
MAX_BATCH = 16
# Networks whose down-sampling is fixed (the plan cannot set their strides): their total stride per axis.
FIXED_STRIDE = {"BasicUNet": 16, "SegResNet": 8, "UNETR": 16, "SwinUNETR": 32}
PLANNED_NETS = ("UNet", "AttentionUnet", "DynUNet")


# --------------------------------------------------------------------------- fingerprint


@dataclass
class Fingerprint:
    """What the plan reads of a task, JSON-serialisable (``fingerprint.json`` in the session folder).

    Attributes:
        cases: Per case, in ``dataset.json`` order: ``id``, ``shape`` and ``spacing`` (RAS axes, mm), ``box`` (RAS
            extent of the union of nonzero image voxels and labelled voxels), ``affine`` (4 x 4), ``class_voxels``
            (voxels per label value) and ``intensity`` (per modality: ``p00_5``, ``p99_5``, ``mean``, ``std`` of
            the labelled voxels, from up to 10,000 of them; None without labelled voxels).
        modalities: ``dataset.json`` modality names (None: none given).
        class_names: ``dataset.json`` label names.
        path: The task folder.
    """

    cases: list[dict[str, Any]]
    modalities: list[str] | None
    class_names: list[str]
    path: str
    version: int = FINGERPRINT_VERSION

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "path": self.path, "modalities": self.modalities,
                           "class_names": self.class_names, "cases": self.cases}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        d = json.loads(text)
        return cls(cases=d["cases"], modalities=d["modalities"], class_names=d["class_names"], path=d["path"],
                   version=d.get("version", 0))

    def intensity(self, indices: list[int] | None = None) -> list[dict[str, float] | None]:
        """Per modality over the cases ``indices`` (all when None): the 0.5 / 99.5 percentiles (the median of the
        per-case ones), the voxel-weighted mean and the pooled std of the labelled voxels."""
        cases = [self.cases[i] for i in (range(len(self.cases)) if indices is None else indices)]
        out: list[dict[str, float] | None] = []
        for c in range(len(cases[0]["intensity"]) if cases else 0):
            stats = [case["intensity"][c] for case in cases if case["intensity"][c] is not None]
            if not stats:
                out.append(None)
                continue
            n = np.array([s["n"] for s in stats], float)
            mean = float((n * [s["mean"] for s in stats]).sum() / n.sum())
            var = float((n * ([s["std"] ** 2 + (s["mean"] - mean) ** 2 for s in stats])).sum() / n.sum())
            out.append({"p00_5": float(np.median([s["p00_5"] for s in stats])),
                        "p99_5": float(np.median([s["p99_5"] for s in stats])), "mean": mean, "std": math.sqrt(var)})
        return out


class _Collector:
    """The ``visit`` of :func:`~medtune.trainables.lr_data.scan_decathlon` that fingerprints each case it reads."""

    def __init__(self, num_classes: int, seed: int = 0):
        self.num_classes = num_classes
        self.rng = np.random.default_rng(seed)
        self.cases: list[dict[str, Any]] = []

    def __call__(self, header: CaseHeader, image: np.ndarray, label: np.ndarray) -> None:
        import nibabel as nib

        ornt = nib.orientations.io_orientation(header.affine)
        axes = ornt[:, 0].astype(int)  # file axis i becomes RAS axis axes[i]
        zooms = np.sqrt((np.asarray(header.affine)[:3, :3] ** 2).sum(axis=0))
        shape, spacing, box = np.empty(3, int), np.empty(3), np.empty(3, int)
        shape[axes], spacing[axes] = image.shape[1:], zooms
        mask = (image != 0).any(0) | (label > 0)
        if mask.any():
            extent = []
            for a in range(3):
                hit = np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))
                extent.append(int(hit[-1] - hit[0] + 1))
            box[axes] = extent
        else:
            box[axes] = image.shape[1:]
        fg = label > 0
        intensity: list[dict[str, float] | None] = []
        for channel in image:
            values = channel[fg]
            if values.size == 0:
                intensity.append(None)
                continue
            if values.size > SAMPLES_PER_CASE:
                values = self.rng.choice(values, SAMPLES_PER_CASE, replace=False)
            p_lo, p_hi = np.percentile(values, [0.5, 99.5])
            intensity.append({"p00_5": float(p_lo), "p99_5": float(p_hi), "mean": float(values.mean()),
                              "std": float(values.std()), "n": int(values.size)})
        self.cases.append({
            "id": header.name, "shape": shape.tolist(), "spacing": [round(float(x), 6) for x in spacing],
            "box": box.tolist(), "affine": np.asarray(header.affine, float).tolist(),
            "class_voxels": np.bincount(label.ravel(), minlength=self.num_classes).tolist(), "intensity": intensity,
        })


def fingerprint_decathlon(root: str | Path, cached: Fingerprint | None = None) -> tuple[list[CaseHeader], Fingerprint]:
    """Check every case of the task (:func:`~medtune.trainables.lr_data.scan_decathlon`) and fingerprint it in the
    same pass; with ``cached`` (a session's ``fingerprint.json``, same folder and cases) only the checks run.

    Returns:
        The case headers (for :func:`~medtune.trainables.lr_data.split_datalists`) and the fingerprint.

    Raises:
        InputError: As the loader's checks.
    """
    names = decathlon_class_names(root)
    collector = None if cached is not None else _Collector(len(names))
    headers = scan_decathlon(root, visit=collector)
    if cached is not None and [c["id"] for c in cached.cases] == [h.name for h in headers]:
        return headers, cached
    if collector is None:  # the folder changed since the cache was written: fingerprint it again
        return fingerprint_decathlon(root)
    modalities = decathlon_modalities(root)
    return headers, Fingerprint(collector.cases, list(modalities) if modalities else None, list(names), str(root))


# --------------------------------------------------------------------------- derivations


def target_spacing(spacings: np.ndarray) -> tuple[tuple[float, float, float], bool]:
    """The median spacing per axis of ``spacings`` ``(N, 3)``; an anisotropic task (largest / smallest median
    > :data:`ANISOTROPY`) keeps its coarse axis at the 10th percentile of that axis's spacings, never finer than
    its other axes (nnU-Net's rule). Returns ``(spacing, anisotropic)``."""
    spacings = np.asarray(spacings, float)
    target = np.median(spacings, axis=0)
    anisotropic = bool(target.max() / target.min() > ANISOTROPY)
    if anisotropic:
        axis = int(np.argmax(target))
        others = np.delete(target, axis)
        target[axis] = max(float(np.percentile(spacings[:, axis], 10)), float(others.max()))
    return float3(round(x, 6) for x in target), anisotropic


def _ras_affine(affine: np.ndarray) -> np.ndarray:
    """The linear part of ``affine`` after MONAI's ``Orientationd`` to RAS (axes permuted and flipped)."""
    import nibabel as nib

    affine = np.asarray(affine, float)
    ornt = nib.orientations.io_orientation(affine)
    out = np.eye(4)
    for i, (axis, flip) in enumerate(ornt):
        out[:3, int(axis)] = affine[:3, i] * flip
    return out


def preprocessed_shape(case: dict[str, Any], spacing: tuple[float, float, float] | None,
                       crop: bool = True) -> tuple[int, int, int]:
    """The ``(D, H, W)`` the preprocessing gives ``case`` (a :class:`Fingerprint` case): oriented to RAS, cropped
    to its box (with ``crop``), resampled to ``spacing`` (None: not resampled), as MONAI's ``Spacingd`` computes
    it (``zoom_affine`` and ``compute_shape_offset``)."""
    from monai.data.utils import compute_shape_offset, zoom_affine

    shape = case["box"] if crop else case["shape"]
    if spacing is None:
        return int3(shape)
    affine = _ras_affine(np.asarray(case["affine"]))
    new_affine = zoom_affine(affine, np.asarray(spacing, float), diagonal=False)
    out, _ = compute_shape_offset(list(shape), affine, new_affine, False)
    return int3(out)


def network_strides(patch: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[list[tuple[int, int, int]],
                                                                                  list[tuple[int, int, int]]]:
    """Per-level strides and kernels for ``patch`` at ``spacing`` (nnU-Net's pooling rule): at each level the axes
    whose feature map stays >= 2 x :data:`MIN_FEATURE` and whose spacing is within twice the finest of those axes
    are halved, up to :data:`MAX_LEVELS` levels; a level's kernel is 1 along an axis still coarser than twice the
    finest spacing, else 3. Returns ``(strides, kernels)``: ``len(kernels) == len(strides) + 1``, and at least one
    level (stride 2 on the largest axis) for a tiny patch."""
    size, sp = np.array(patch, float), np.array(spacing, float)
    strides: list[tuple[int, int, int]] = []
    kernels = [int3(3 if s <= 2 * sp.min() else 1 for s in sp)]
    for _ in range(MAX_LEVELS):
        can = [a for a in range(3) if size[a] / 2 >= MIN_FEATURE]
        if not can:
            break
        finest = min(sp[a] for a in can)
        pool = [a for a in can if sp[a] <= 2 * finest]
        strides.append(int3(2 if a in pool else 1 for a in range(3)))
        for a in pool:
            size[a] /= 2
            sp[a] *= 2
        kernels.append(int3(3 if s <= 2 * sp.min() else 1 for s in sp))
    if not strides:
        big = int(np.argmax(size))
        strides.append(int3(2 if a == big else 1 for a in range(3)))
        kernels.append((3, 3, 3))
    return strides, kernels


def _total_stride(strides: list[tuple[int, int, int]]) -> np.ndarray:
    return np.prod(np.array(strides), axis=0) if strides else np.ones(3, int)


def _round_patch(patch: np.ndarray, total: np.ndarray) -> np.ndarray:
    return np.maximum(total, (patch // total) * total).astype(int)


def fit_network(patch: tuple[int, int, int], spacing: tuple[float, float, float],
                name: str) -> tuple[tuple[int, int, int], list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Round ``patch`` down to a multiple of the network's total stride (at least one stride), with the strides and
    kernels of :func:`network_strides` for planned networks or the fixed stride of the others; returns
    ``(patch, strides, kernels)`` (strides and kernels empty for a network of fixed stride)."""
    p = np.array(patch, int)
    if name not in PLANNED_NETS:
        return int3(_round_patch(p, np.full(3, FIXED_STRIDE[name]))), [], []
    for _ in range(4):  # rounding can drop a level; settle in a few passes
        strides, kernels = network_strides(tuple(p), spacing)
        rounded = _round_patch(p, _total_stride(strides))
        if (rounded == p).all():
            break
        p = rounded
    return int3(p), strides, kernels


def widths(levels: int, base: int) -> tuple[int, ...]:
    """``levels + 1`` widths doubling from ``base``, capped at :data:`MAX_CHANNELS`."""
    return tuple(min(MAX_CHANNELS, base * 2 ** i) for i in range(levels + 1))


def estimate_bytes(patch: tuple[int, int, int], patches: int, channels: tuple[int, ...],
                   strides: list[tuple[int, int, int]], in_channels: int, num_classes: int) -> int:
    """Peak training memory of one step on ``patches`` patches: :data:`BYTES_PER_FEATURE_VOXEL` per feature-map
    voxel, plus the batch, and the weights with their gradients and two optimizer moments (an estimate)."""
    size = np.array(patch, float)
    features = size.prod() * channels[0]
    for level, stride in enumerate(strides):
        size = size / np.array(stride)
        features += size.prod() * channels[min(level + 1, len(channels) - 1)]
    params = sum(9 * 3 * a * b for a, b in zip(channels[:-1], channels[1:])) * 4  # about 4 3x3x3 convs per pair
    io = np.prod(patch) * (in_channels + num_classes) * 4
    return int(patches * (features * BYTES_PER_FEATURE_VOXEL + io) + 16 * params)


def memory_budget(device: str = "cpu", share: float = 1.0, concurrent: int = 1) -> int:
    """Bytes one trial may use: ``share`` of the GPU's memory (``device`` ``"cuda"``; ``share`` is
    ``resources.gpus_per_trial``), or half the machine's memory (psutil's total, not what is free at the moment, so a
    rerun of the same spec on the same machine gets the same plan) split between ``concurrent`` trials."""
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 16 * 2 ** 30
        return int(total * 0.85 * min(1.0, share))
    import psutil

    return int(psutil.virtual_memory().total * 0.5 / max(1, concurrent))


# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """The planned settings of a task and where each comes from.

    Attributes:
        spacing: Target voxel size (mm, RAS), or None (native grid).
        anisotropic: The task's median spacing is anisotropic (its coarse axis kept coarse).
        median_shape: Median ``(D, H, W)`` of the planning cases after preprocessing.
        patch_size: Training patch and sliding window.
        batch_size: Volumes per training step (each gives ``patches_per_volume`` patches).
        network: ``name``, ``channels``, ``strides`` (per level and axis), ``kernels`` (DynUNet), or a ``note``.
        memory: ``budget`` and ``estimate`` bytes of a training step, ``device``.
        cases: Per case: ``id``, ``shape`` (after preprocessing), ``spacing`` (native, mm), ``split``.
        intensity: Per modality statistics on the labelled voxels (:meth:`Fingerprint.intensity`).
        class_voxels: Labelled voxels per class over the planning cases.
        source: Per planned setting, ``"plan"`` or ``"spec"`` (set in the spec, which wins).
        notes: Lines worth printing (a patch that does not fit, the memory cache's size).
    """

    spacing: tuple[float, float, float] | None
    anisotropic: bool
    median_shape: tuple[int, int, int]
    patch_size: tuple[int, int, int]
    batch_size: int
    network: dict[str, Any]
    memory: dict[str, Any]
    cases: list[dict[str, Any]]
    intensity: list[dict[str, float] | None]
    class_voxels: list[int]
    source: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spacing": list(self.spacing) if self.spacing else None, "anisotropic": self.anisotropic,
            "median_shape": list(self.median_shape), "patch_size": list(self.patch_size),
            "batch_size": self.batch_size, "network": self.network, "memory": self.memory,
            "intensity": self.intensity, "class_voxels": self.class_voxels, "source": self.source,
            "notes": self.notes, "cases": self.cases,
        }

    def table(self) -> list[str]:
        """The plan as one small table, a line per setting, each saying whether the plan or the spec set it."""
        def mb(x: float) -> str:
            return f"{x / 2 ** 20:,.0f} MiB"

        net = self.network
        if net.get("strides"):
            arch = f"{net['name']} channels {list(net['channels'])}, strides {[list(s) for s in net['strides']]}"
        else:
            arch = f"{net['name']} ({net.get('note', 'its own strides')})"
        rows = [
            ("spacing", "native grid" if self.spacing is None else f"{list(self.spacing)} mm"
             + (" (anisotropic: coarse axis kept)" if self.anisotropic else ""), self.source.get("spacing", "plan")),
            ("median shape", f"{list(self.median_shape)} after preprocessing, {len(self.cases)} cases", "data"),
            ("patch size", str(list(self.patch_size)), self.source.get("patch_size", "plan")),
            ("batch size", f"{self.batch_size} volumes per step", self.source.get("batch_size", "plan")),
            ("network", arch, self.source.get("network", "plan")),
            ("memory", f"about {mb(self.memory['estimate'])} per step of the {mb(self.memory['budget'])} budget "
             f"({self.memory['device']})", "estimate"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = ["plan (data.plan=auto; a value set in the spec wins):"]
        lines += [f"  {name:<{width}}  {value}  [{src}]" for name, value, src in rows]
        return lines + [f"  note: {n}" for n in self.notes]


def plan_for(fp: Fingerprint, memory_bytes: int, device: str = "cpu", *, model: ModelConfig | None = None,
             cfg: DataConfig | None = None, batch_size: int | None = None,
             indices: list[int] | None = None) -> Plan:
    """The plan for fingerprint ``fp`` and a trial of ``memory_bytes`` on ``device`` (``"cpu"`` or ``"cuda"``).

    Args:
        fp: The task's fingerprint.
        memory_bytes: What one trial may use (:func:`memory_budget`).
        device: ``"cpu"`` or ``"cuda"`` (the base width and the voxel cap differ).
        model: The model section: ``channels`` / ``strides`` set there win over the planned network; None: a
            ``UNet`` with both planned.
        cfg: The data section: an explicit ``spacing`` (a list, or None for the native grid) and ``patch_size``
            win; ``patches_per_volume`` sizes a step.
        batch_size: ``train.batch_size`` when the spec sets it (wins); None: planned.
        indices: The cases to plan from (the training and validation cases); None: all.

    Returns:
        The :class:`Plan`.
    """
    model = model or ModelConfig(channels=None, strides=None)
    cfg = cfg or DataConfig(source="decathlon", path=fp.path)
    device = "cuda" if str(device).startswith("cuda") else "cpu"
    use = list(range(len(fp.cases))) if indices is None else list(indices)
    planning = [fp.cases[i] for i in use]
    source: dict[str, str] = {}
    spacing: tuple[float, float, float] | None
    if cfg.spacing == "median":
        spacing, anisotropic = target_spacing(np.array([c["spacing"] for c in planning]))
    else:
        spacing = cfg.given_spacing
        anisotropic, source["spacing"] = False, "spec"
    shapes = np.array([preprocessed_shape(c, spacing, cfg.crop_foreground) for c in planning])
    median = int3(np.median(shapes, axis=0))
    in_ch, n_cls = len(planning[0]["intensity"]), len(fp.class_names)
    ppv = cfg.patches_per_volume
    own_net = model.channels is not None or model.strides is not None or model.name not in PLANNED_NETS
    base = BASE_CHANNELS[device]
    notes: list[str] = []

    def network(patch):
        if model.name not in PLANNED_NETS:
            p, _, _ = fit_network(patch, spacing or (1.0, 1.0, 1.0), model.name)
            return p, {"name": model.name, "note": f"fixed total stride {FIXED_STRIDE[model.name]}"}
        if own_net:
            strides = [tuple(s) if isinstance(s, (list, tuple)) else (s, s, s) for s in (model.strides or (2, 2))]
            return tuple(int(x) for x in _round_patch(np.array(patch), _total_stride(strides))), {
                "name": model.name, "channels": list(model.channels or (8, 16, 32)),
                "strides": [list(s) for s in strides]}
        p, strides, kernels = fit_network(patch, spacing or (1.0, 1.0, 1.0), model.name)
        net = {"name": model.name, "channels": list(widths(len(strides), base)),
               "strides": [list(s) for s in strides]}
        if model.name == "DynUNet":
            net["kernels"] = [list(k) for k in kernels]
        return p, net

    def cost(patch, net, patches):
        strides = [tuple(s) for s in net.get("strides") or [(2, 2, 2)] * 3]
        channels = tuple(net.get("channels") or [base * 2 ** i for i in range(len(strides) + 1)])
        return estimate_bytes(patch, patches, channels, strides, in_ch, n_cls)

    if cfg.patch_size is not None:
        patch, net = tuple(cfg.patch_size), network(tuple(cfg.patch_size))[1]
        source["patch_size"] = "spec"
    else:
        target = np.array(median, float)
        sp = np.array(spacing or (1.0, 1.0, 1.0))
        patch, net = network(tuple(int(x) for x in target))
        while (np.prod(patch) > VOXEL_CAP[device] or cost(patch, net, MIN_BATCH * ppv) > memory_bytes) \
                and target.max() > MIN_FEATURE * 2:
            axis = int(np.argmax(target * sp))  # shrink the physically longest side by a tenth
            target[axis] = max(MIN_FEATURE * 2, math.floor(target[axis] * 0.9))
            patch, net = network(tuple(int(x) for x in target))
        if cost(patch, net, MIN_BATCH * ppv) > memory_bytes:
            notes.append(f"even the smallest patch {list(patch)} needs more than the memory budget; "
                         "lower patches_per_volume or give the trial more memory")
    if own_net:
        source["network"] = "spec"
    if batch_size is not None:
        batch, source["batch_size"] = int(batch_size), "spec"
    else:
        n_train = max(1, len(planning) - max(1, round(len(planning) * cfg.val_fraction / (1 - cfg.test_fraction))))
        per_step = cost(patch, net, ppv)
        fits = max(1, int(memory_bytes // max(1, per_step)))
        share = max(1, int(0.05 * shapes.prod(axis=1).sum() // (np.prod(patch) * ppv)))
        batch = max(MIN_BATCH, min(fits, share, MAX_BATCH, n_train))
    cache = sum(int(np.prod(s)) * (4 * in_ch + 1) for s in shapes)
    if cfg.cache == "memory" and cache * cfg.cache_rate > memory_bytes:
        notes.append(f"the memory cache would hold about {cache * cfg.cache_rate / 2 ** 30:.1f} GiB per trial; "
                     "set data.cache=disk (or a lower data.cache_rate) to bound it")
    cases = []
    for i, case in enumerate(fp.cases):
        cases.append({"id": case["id"], "shape": list(preprocessed_shape(case, spacing, cfg.crop_foreground)),
                      "spacing": case["spacing"], "planned_from": i in use})
    counts = np.sum([c["class_voxels"] for c in planning], axis=0).astype(int).tolist()
    return Plan(
        spacing=float3(spacing) if spacing else None, anisotropic=anisotropic, median_shape=median,
        patch_size=int3(patch), batch_size=int(batch), network=net,
        memory={"budget": int(memory_bytes), "estimate": int(cost(patch, net, batch * ppv)), "device": device},
        cases=cases, intensity=fp.intensity(use), class_voxels=counts, source=source, notes=notes,
    )


def planning_indices(n: int, cfg: DataConfig) -> list[int]:
    """The training and validation cases of a task of ``n`` cases (the test cases, drawn as
    :func:`~medtune.trainables.lr_data.split_datalists` draws them, take no part in the plan)."""
    if cfg.test_fraction > 0:
        keep, _ = split_indices(n, cfg.test_fraction, cfg.seed + 1)
        return [int(i) for i in keep]
    return list(range(n))


def apply_plan(plan: Plan, data: DataConfig, model: ModelConfig) -> tuple[DataConfig, ModelConfig]:
    """The data and model sections with the plan's values in place of the unset ones (spacing, patch size,
    channels, strides, DynUNet kernels)."""
    data = replace(data, spacing=plan.spacing, patch_size=int3(plan.patch_size))
    if plan.network.get("strides") and plan.source.get("network") != "spec":
        kwargs = dict(model.kwargs)
        if "kernels" in plan.network and "kernel_size" not in kwargs:
            kwargs["kernel_size"] = [tuple(k) for k in plan.network["kernels"]]
        model = replace(model, channels=tuple(plan.network["channels"]),
                        strides=tuple(tuple(s) for s in plan.network["strides"]), kwargs=kwargs)
    return data, model


def read_fingerprint(folder: str | Path | None) -> Fingerprint | None:
    """The ``fingerprint.json`` a session folder holds, or None (none, unreadable or of another version)."""
    if folder is None:
        return None
    path = Path(folder) / FINGERPRINT_FILE
    try:
        fp = Fingerprint.from_json(path.read_text())
    except (OSError, ValueError, KeyError):
        return None
    return fp if fp.version == FINGERPRINT_VERSION else None


def write_plan(folder: str | Path, fp: Fingerprint, plan: Plan) -> Path:
    """Write ``fingerprint.json`` and ``plan.json`` into ``folder``; returns the plan's path."""
    folder = Path(folder)
    (folder / FINGERPRINT_FILE).write_text(fp.to_json())
    path = folder / PLAN_FILE
    path.write_text(json.dumps(plan.to_dict(), indent=1))
    return path

