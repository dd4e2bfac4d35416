"""Write a tiny MSD-Decathlon-layout task folder (Task04_Hippocampus style) for tests.

Used by the data-loader tests and the CLI tests; a plain module so both can
``from tests.helpers_decathlon import write_decathlon``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

LABELS = {"0": "background", "1": "Anterior", "2": "Posterior"}


def write_decathlon(root: str | Path, num_cases: int = 4, shape: tuple[int, int, int] = (12, 14, 10),
                    seed: int = 0, modalities: int = 1) -> Path:
    """Create ``root/dataset.json``, ``root/imagesTr/`` and ``root/labelsTr/`` with ``num_cases`` cases.

    Each case ``hippocampus_{i:03d}.nii.gz`` has a float32 image of ``shape``
    and a uint8 label map holding 0, 1 and 2 (two touching boxes, brighter in
    the image). With ``modalities > 1`` the images are 4D ``(*shape, modalities)``
    like Task01 BrainTumour's, channel ``k`` scaled by ``k + 1``, and
    ``dataset.json`` lists that many modalities. Tests break the folder
    afterwards to exercise the errors.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    training = []
    for i in range(num_cases):
        label = np.zeros(shape, np.uint8)
        d, h, w = (s // 2 for s in shape)
        label[d - 2:d + 2, h - 4:h, w - 2:w + 2] = 1
        label[d - 2:d + 2, h:h + 4, w - 2:w + 2] = 2
        image = (rng.normal(100, 10, shape) + 80 * (label > 0)).astype(np.float32)
        if modalities > 1:
            image = np.stack([image * (k + 1) for k in range(modalities)], axis=-1)
        name = f"hippocampus_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    modality = {"0": "MRI"} if modalities == 1 else {str(k): f"MR{k}" for k in range(modalities)}
    meta = {"name": "Hippocampus", "modality": modality, "labels": LABELS,
            "numTraining": num_cases, "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def write_offcentre_decathlon(root: str | Path, num_cases: int = 4, shape: tuple[int, int, int] = (48, 48, 48),
                              seed: int = 0) -> Path:
    """A "large" tiny task: like :func:`write_decathlon`, but the two touching boxes (labels 1 and 2) sit near a
    corner of a volume several times a test patch in each axis, so a centre crop would miss them. The image is
    noisy tissue (nonzero everywhere, so foreground cropping keeps the whole volume), brighter on the boxes."""
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    training = []
    for i in range(num_cases):
        label = np.zeros(shape, np.uint8)
        x, y, z = 4 + i % 2, shape[1] - 14, 5
        label[x:x + 8, y:y + 5, z:z + 8] = 1
        label[x:x + 8, y + 5:y + 10, z:z + 8] = 2
        image = (rng.normal(100, 10, shape) + 80 * (label > 0)).astype(np.float32)
        name = f"big_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "OffCentre", "modality": {"0": "MRI"}, "labels": LABELS, "numTraining": num_cases,
            "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def write_task(root: str | Path, shapes: list[tuple[int, int, int]], spacing: tuple[float, float, float] = (1, 1, 1),
               background: str = "noise", modalities: int = 1, corner: bool = False, seed: int = 0) -> Path:
    """A tiny task of one case per entry of ``shapes`` (voxel counts along the file axes), voxel size ``spacing``
    (mm, a diagonal affine). ``background``: ``"noise"`` (MR-like noise, nonzero everywhere), ``"air"`` (CT-like:
    -1000 HU, ``dataset.json`` modality CT) or ``"zero"`` (skull-stripped). The labelled box (labels 1 and 2, each
    2 x 3 x 2 voxels or more) sits in the middle, or near the last corner with ``corner``. 4D images with
    ``modalities > 1``."""
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    training = []
    for i, shape in enumerate(shapes):
        label = np.zeros(shape, np.uint8)
        if corner:
            x, y, z = (s - max(4, s // 6) - 1 for s in shape)
        else:
            x, y, z = (s // 2 - 1 for s in shape)
        label[x:x + 2, y:y + 3, z:z + 2] = 1
        label[x:x + 2, y + 3:y + 6, z:z + 2] = 2
        if background == "air":
            image = np.full(shape, -1000.0, np.float32)
            body = tuple(slice(s // 4, s - 1) for s in shape)
            image[body] = rng.normal(40, 10, image[body].shape)
            image[label > 0] = 120
        elif background == "zero":
            image = np.zeros(shape, np.float32)
            image[label > 0] = 200
        else:
            image = (rng.normal(100, 10, shape) + 80 * (label > 0)).astype(np.float32)
        if modalities > 1:
            image = np.stack([image * (k + 1) for k in range(modalities)], axis=-1)
        name = f"case_{i:03d}.nii.gz"
        affine = np.diag([*map(float, spacing), 1.0])
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    modality = {"0": "CT"} if background == "air" else {str(k): f"MR{k}" for k in range(modalities)}
    meta = {"name": "Tiny", "modality": modality, "labels": LABELS, "numTraining": len(shapes),
            "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root
