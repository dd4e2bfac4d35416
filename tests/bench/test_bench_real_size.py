"""Real-size Decathlon tasks: the plan's cost, a trial's memory per cache setting, training and scoring speed.

Two tasks at MSD scale are generated and written as NIfTI (uncompressed ``.nii``, int16) in a temp folder:

* BrainTumour-like: 8 cases of 240 x 240 x 155 x 4 MR modalities at 1 mm, zero outside an off-centre "brain"
  ellipsoid of noisy tissue, a three-label tumour inside it;
* Liver-like: 4 CT cases of 512 x 512 x 200 at 0.8 x 0.8 x 2.5 mm (anisotropic), -1000 HU air around a body,
  a liver and a lesion labelled.

Four benchmarks, each measuring medtune against a reference in the same run:

1. Fingerprint and plan: :func:`~medtune.trainables.plan.fingerprint_decathlon` (which also runs every file
   check) and :func:`~medtune.trainables.plan.plan_for` against reading every case once with MONAI's ``LoadImage``
   and nothing else.
   Target: fingerprint + plan <= 2x the bare read.
2. A trial's peak memory with each ``data.cache`` (``memory``, ``disk``, ``none``), one fresh process each, on the
   BrainTumour task (one epoch: patch training and whole-volume scoring of the validation cases). Target: with
   ``disk`` and ``none`` the peak grows by less than the ``memory`` run's minus half of what that run caches
   (memory follows the cache, not the task).
3. Training patches per second: ``SegmentationRun.train_epoch`` (the study's patch sampling, augmentation, loss,
   optimizer) against a bare MONAI loop over the same data lists and transforms (``CacheDataset``, the same
   ``RandCropByPosNegLabeld`` and augmentation, ``DataLoader``, the same initial weights, Adam, ``DiceCELoss``),
   alternating epochs, first dropped. Target: bare patches/s / candidate patches/s <= 1.05.
4. Whole-volume scoring: ``SegmentationRun.validate`` (sliding window over every preprocessed validation volume,
   Dice and loss) against MONAI's bare ``sliding_window_inference`` + ``DiceMetric`` over the same cached volumes
   with the same window, overlap and blending. Target: ratio <= 1.05.

Run: ``.venv/bin/python -m pytest -s -p no:cacheprovider tests/bench/test_bench_real_size.py`` (about 10 minutes on
2 CPU cores; the tasks take about 1.2 GB of temp disk).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.bench._common import median, report

TARGET = 1.05
PATCH = (64, 64, 64)
BATCH = 2
EPOCHS = 4


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def _write_task(root: Path, name: str, modality: dict, labels: dict, cases: list[tuple[np.ndarray, np.ndarray]],
                spacing: tuple[float, float, float]) -> Path:
    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir(parents=True)
    affine = np.diag([*spacing, 1.0])
    training = []
    for i, (image, label) in enumerate(cases):
        fname = f"{name.lower()}_{i:03d}.nii"
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / fname)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / fname)
        training.append({"image": f"./imagesTr/{fname}", "label": f"./labelsTr/{fname}"})
    (root / "dataset.json").write_text(json.dumps({"name": name, "modality": modality, "labels": labels,
                                                   "numTraining": len(cases), "training": training, "test": []}))
    return root


def write_braintumour(root: Path, num_cases: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (240, 240, 155)
    cases = []
    for i in range(num_cases):
        centre = (110 + 5 * i % 20, 130 - 3 * i % 15, 75)
        brain = _ellipsoid(shape, centre, (70, 86, 69))
        tumour_at = (centre[0] + 30, centre[1] - 25, centre[2] + 10)
        label = np.zeros(shape, np.uint8)
        label[_ellipsoid(shape, tumour_at, (18, 16, 14)) & brain] = 1
        label[_ellipsoid(shape, tumour_at, (10, 9, 8)) & brain] = 2
        label[_ellipsoid(shape, tumour_at, (5, 5, 4)) & brain] = 3
        image = np.zeros((*shape, 4), np.int16)
        for c in range(4):
            tissue = rng.normal(400 + 50 * c, 60, shape) + 150 * (label > 0) + 60 * (label == 3)
            image[..., c] = np.where(brain, tissue, 0).astype(np.int16)
        cases.append((image, label))
    return _write_task(root, "BrainTumour", {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                       {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
                       cases, (1.0, 1.0, 1.0))


def write_liver(root: Path, num_cases: int = 4, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    shape = (512, 512, 200)
    cases = []
    for i in range(num_cases):
        body = _ellipsoid(shape[:2], (256, 250 + 4 * i), (200, 150))[..., None] & np.ones(shape, bool)
        liver = _ellipsoid(shape, (200, 230, 100 + 5 * i), (80, 60, 40)) & body
        lesion = _ellipsoid(shape, (180, 220, 100 + 5 * i), (12, 12, 5)) & liver
        label = (liver.astype(np.uint8) + lesion.astype(np.uint8)).astype(np.uint8)
        hu = np.where(body, rng.normal(40, 20, shape), -1000.0) + 20 * liver - 30 * lesion
        cases.append((hu.astype(np.int16), label))
    return _write_task(root, "Liver", {"0": "CT"}, {"0": "background", "1": "liver", "2": "cancer"}, cases,
                       (0.8, 0.8, 2.5))


@pytest.fixture(scope="module")
def tasks():
    with tempfile.TemporaryDirectory(prefix="medtune-bench-msd-") as d:
        t0 = time.perf_counter()
        brain, liver = write_braintumour(Path(d) / "Task01_BrainTumour"), write_liver(Path(d) / "Task03_Liver")
        print(f"\nwrote the two tasks in {time.perf_counter() - t0:.0f} s", flush=True)
        yield {"brain": brain, "liver": liver}


def _bare_read(root: Path) -> float:
    """Seconds to read every image and label once with MONAI's ``LoadImage`` (what any MONAI pipeline pays per
    case), keeping nothing."""
    from monai.transforms import LoadImage

    load = LoadImage(image_only=True, dtype=np.float32)
    t0 = time.perf_counter()
    for folder in ("imagesTr", "labelsTr"):
        for path in sorted((root / folder).iterdir()):
            load(str(path))
    return time.perf_counter() - t0


def test_bench_fingerprint_and_plan_at_msd_scale(tasks):
    from medtune.trainables.plan import fingerprint_decathlon, memory_budget, plan_for

    rows, ratios = [], []
    for name, root in tasks.items():
        bare = _bare_read(root)
        t0 = time.perf_counter()
        _, fp = fingerprint_decathlon(root)
        t1 = time.perf_counter()
        plan = plan_for(fp, memory_budget("cpu"), "cpu")
        t2 = time.perf_counter()
        ratio = (t2 - t0) / bare
        ratios.append(ratio)
        rows += [(f"{name}: cases", f"{len(fp.cases)} of {fp.cases[0]['shape']} at {fp.cases[0]['spacing']} mm"),
                 (f"{name}: fingerprint s", f"{t1 - t0:.2f} (every file check included)"),
                 (f"{name}: plan s", f"{t2 - t1:.3f}"),
                 (f"{name}: bare MONAI LoadImage s", f"{bare:.2f}"),
                 (f"{name}: plan", f"spacing {plan.spacing}, anisotropic {plan.anisotropic}, median shape "
                                   f"{list(plan.median_shape)}, patch {list(plan.patch_size)}, "
                                   f"batch {plan.batch_size}")]
    worst = max(ratios)
    report("fingerprint + plan of MSD-sized tasks vs reading their files", [
        *rows, ("RATIO (fingerprint + plan) / bare read", f"{worst:.2f} (worst task)"), ("target", "<= 2.0")],
        "MET" if worst <= 2.0 else "MISSED")
    assert worst <= 2.0


_TRIAL = r"""
import json, pickle, sys, torch
torch.set_num_threads(1)
from medtune.trainables.lr_segmentation import SegmentationRun

def hwm():  # this process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))


with open(sys.argv[1], "rb") as f:  # what the driver hands a trial: the planned spec and the split's data lists
    spec, split = pickle.load(f)
import monai.networks.nets, monai.inferers  # imports, not data, in the baseline
base = hwm()
run = SegmentationRun(method="fixed", seed=0, data=split, model_cfg=spec.model, train_cfg=spec.train,
                      patch_size=spec.data.patch_size, patches_per_volume=spec.data.patches_per_volume,
                      score_test=False)
run.run_epoch()
peak = hwm()
cached = 0
for ds in (run.train_set, run.val_set):
    inner = getattr(ds, "data", ds)  # the trial's crop wraps the cached dataset
    for item in getattr(inner, "_cache", [])[: getattr(inner, "cache_num", 0)]:
        cached += sum(v.element_size() * v.nelement() for v in item.values() if torch.is_tensor(v))
print(json.dumps({"base": base, "peak": peak, "cached": cached, "volumes": len(split.train) + len(split.val)}))
"""


def test_bench_trial_memory_per_cache_setting(tasks, tmp_path):
    import pickle

    from medtune.cluster.studies.lr_study import prepare_study, record_plan
    from medtune.cluster.studies.registry import load_spec

    mib = 2 ** 20
    out = {}
    session = tmp_path / "session"  # one session folder: the fingerprint is taken once, the disk cache lives here
    session.mkdir()
    for cache in ("memory", "disk", "none"):
        # The driver's part, in this process: check and plan the task, keep only the data lists.
        spec = load_spec("lr-schedulers", overrides=[
            "data.source=decathlon", f"data.path={tasks['brain']}", f"data.cache={cache}",
            f"data.patch_size={list(PATCH)}", f"train.batch_size={BATCH}", "methods=[fixed]", "seeds=[0]"])
        spec, split, planned = prepare_study(spec, session)
        record_plan(session, split, planned)
        handed = tmp_path / f"{cache}.pkl"
        handed.write_bytes(pickle.dumps((spec, split)))
        t0 = time.perf_counter()  # the trial's part, in a fresh process
        proc = subprocess.run([sys.executable, "-c", _TRIAL, str(handed)], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[2])
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[cache] = json.loads(proc.stdout.strip().splitlines()[-1])
        out[cache]["seconds"] = time.perf_counter() - t0
    grow = {c: o["peak"] - o["base"] for c, o in out.items()}
    cached = out["memory"]["cached"]
    limit = grow["memory"] - 0.5 * cached
    ok = grow["disk"] < limit and grow["none"] < limit
    task_bytes = out["memory"]["volumes"] * 240 * 240 * 155 * (4 * 4 + 1)
    report("a trial's peak RSS per data.cache (BrainTumour-sized, 8 cases, patches 64^3, one epoch)", [
        ("task as float32 MiB", f"{task_bytes / mib:.0f} (train + validation cases, before cropping)"),
        ("memory cache holds MiB", f"{cached / mib:.0f}"),
        *[(f"data.cache={c}: RSS MiB", f"baseline {o['base'] / mib:.0f}, peak {o['peak'] / mib:.0f}, growth "
                                       f"{grow[c] / mib:.0f}, {o['seconds']:.0f} s") for c, o in out.items()],
        ("GROWTH disk / none MiB", f"{grow['disk'] / mib:.0f} / {grow['none'] / mib:.0f} "
                                   f"(limit {limit / mib:.0f})"),
        ("target", "disk and none grow less than memory's growth minus half its cache"),
    ], "MET" if ok else "MISSED")
    assert ok


def _brain_run(root: Path):
    import torch

    from medtune.cluster.studies.lr_study import prepare_study
    from medtune.cluster.studies.registry import load_spec
    from medtune.trainables.lr_segmentation import SegmentationRun

    torch.set_num_threads(1)
    spec = load_spec("lr-schedulers", overrides=[
        "data.source=decathlon", f"data.path={root}", f"data.patch_size={list(PATCH)}", f"train.batch_size={BATCH}",
        "methods=[fixed]", "seeds=[0]"])
    spec, split, _ = prepare_study(spec)
    run = SegmentationRun(method="fixed", seed=0, data=split, model_cfg=spec.model, train_cfg=spec.train,
                          patch_size=spec.data.patch_size, patches_per_volume=spec.data.patches_per_volume,
                          score_test=False)
    return spec, split, run


def test_bench_training_patches_per_second_against_bare_monai(tasks):
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.transforms import Compose

    from medtune.trainables.lr_networks import build_network
    from medtune.trainables.lr_segmentation import augmentation

    spec, split, run = _brain_run(tasks["brain"])
    k = spec.data.patches_per_volume
    ratio = run.crop.cropper.pos_ratio
    crop = type(run.crop)(keys=("image", "label"), label_key="label", spatial_size=PATCH, pos=ratio, neg=1 - ratio,
                          num_samples=k)
    steps = [crop] + ([augmentation(PATCH)] if run.augmentation is not None else [])
    train = CacheDataset(split.train, Compose(split.transforms() + steps), progress=False, copy_cache=False)
    loader = DataLoader(train, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = build_network(spec.model, split.in_channels, split.num_classes, PATCH)
    model.load_state_dict(run.model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def bare() -> float:
        t0 = time.perf_counter()
        model.train()
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch["image"]), batch["label"].long())
            loss.backward()
            opt.step()
            loss.item()
        return time.perf_counter() - t0

    patches = len(split.train) * k
    cand, ref = [], []
    for _ in range(EPOCHS):
        t0 = time.perf_counter()
        run.train_epoch()
        cand.append(time.perf_counter() - t0)
        ref.append(bare())
    cand, ref = cand[1:], ref[1:]
    ratio = median(cand) / median(ref)
    report("training patches/s: SegmentationRun vs a bare MONAI loop (BrainTumour-sized, 64^3)", [
        ("setup", f"{len(split.train)} training volumes x {k} patches {list(PATCH)}, batch {BATCH}, "
                  f"augment {run.augmentation is not None}, {spec.model.name} {list(spec.model.channels)}, threads 1"),
        ("candidate patches/s", " ".join(f"{patches / t:.2f}" for t in cand)),
        ("bare MONAI patches/s", " ".join(f"{patches / t:.2f}" for t in ref)),
        ("RATIO bare/candidate patches/s", f"{ratio:.3f}"),
        ("target", f"<= {TARGET}"),
    ], "MET" if ratio <= TARGET else "MISSED")
    assert ratio <= TARGET


def test_bench_whole_volume_scoring_against_bare_sliding_window(tasks):
    import torch
    from monai.data import DataLoader
    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    spec, split, run = _brain_run(tasks["brain"])
    run.validate()  # fills the cache of the validation volumes for both
    n = split.num_classes

    @torch.no_grad()
    def bare() -> float:
        t0 = time.perf_counter()
        run.model.eval()
        metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
        for batch in DataLoader(run.val_set, batch_size=1):
            x, y = batch["image"], batch["label"].long()
            logits = sliding_window_inference(x, PATCH, BATCH, run.model, overlap=run.sw_overlap, mode=run.sw_mode)
            float(run.loss_fn(logits, y))
            metric(one_hot(logits.argmax(1, keepdim=True), n), one_hot(y, n))
        metric.aggregate().item()
        return time.perf_counter() - t0

    cand, ref = [], []
    for i in range(5):  # alternating, each side first in turn
        if i % 2:
            ref.append(bare())
        t0 = time.perf_counter()
        run.validate()
        cand.append(time.perf_counter() - t0)
        if not i % 2:
            ref.append(bare())
    shapes = [tuple(item["image"].shape[1:]) for item in run.val_set]
    ratio = median(cand) / median(ref)
    report("whole-volume scoring: SegmentationRun.validate vs bare sliding_window_inference", [
        ("setup", f"{len(shapes)} validation volumes {shapes}, window {list(PATCH)}, overlap {run.sw_overlap}, "
                  f"{run.sw_mode} blending"),
        ("candidate s per volume", " ".join(f"{t / len(shapes):.2f}" for t in cand)),
        ("bare MONAI s per volume", " ".join(f"{t / len(shapes):.2f}" for t in ref)),
        ("RATIO candidate/bare", f"{ratio:.3f}"),
        ("target", f"<= {TARGET}"),
    ], "MET" if ratio <= TARGET else "MISSED")
    assert ratio <= TARGET
