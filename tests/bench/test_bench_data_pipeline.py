"""The LR study's data pipeline: per-epoch time against a bare MONAI loop, and a trial's memory against its cache.

1. Epoch time. Candidate: ``SegmentationRun.run_epoch()`` (the study's trainable epoch: patch training, validation
   by ``sliding_window_inference``, the LR policy's step) on a Decathlon task written with nibabel, read through
   ``split_datalists`` (``load_decathlon_datalist``, ``LoadImaged`` + ``EnsureChannelFirstd``, the deterministic
   transforms in a ``CacheDataset``, ``RandCropByPosNegLabeld`` after the cache). Reference: a bare MONAI loop
   written here from MONAI's parts: the same transforms in its own ``CacheDataset``, ``monai.data.DataLoader``
   with MONAI's default collate, the same network (same initial weights), Adam, ``DiceCELoss``, then
   ``sliding_window_inference`` + ``DiceMetric`` on the validation volumes. The two alternate epoch by epoch in one
   process (candidate, bare, candidate, ...), torch threads = 1, first epoch of each dropped.
   Target: median candidate epoch / median bare epoch <= 1.05.

2. Memory. In a fresh process per setting, a trial (``SegmentationRun`` + two epochs) on a larger tiny task,
   with ``data.cache_rate`` 1.0 and 0.25: peak resident memory (``ru_maxrss``) against the bytes its
   ``CacheDataset``s hold, and against the same process before any volume was read. What is checked: the
   growth of the peak over that baseline follows the cache (the 0.25 run saves at least half of the
   cache it does not hold), i.e. memory is bounded by what is cached, not by the task's size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench._common import median, pct, report

TARGET = 1.05
EPOCHS = 10


def _task(root: Path, num_cases: int, shape: tuple[int, int, int]) -> Path:
    from tests.helpers_decathlon import write_offcentre_decathlon

    return write_offcentre_decathlon(root, num_cases=num_cases, shape=shape)


def _bare_loop(split, patch, k, batch_size, model, seed):
    """A plain MONAI training loop over the same data lists and transforms; returns ``epoch() -> seconds``."""
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot
    from monai.transforms import Compose, RandCropByPosNegLabeld

    crop = RandCropByPosNegLabeld(keys=("image", "label"), label_key="label", spatial_size=patch, pos=1, neg=1,
                                  num_samples=k)
    train = CacheDataset(split.train, Compose(split.transforms() + [crop]), progress=False, copy_cache=False)
    val = CacheDataset(split.val, Compose(split.transforms()), progress=False, copy_cache=False)
    g = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=g)
    val_loader = DataLoader(val, batch_size=batch_size)
    crop.set_random_state(seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    n = split.num_classes

    def epoch() -> float:
        t0 = time.perf_counter()
        model.train()
        for batch in train_loader:
            x, y = batch["image"], batch["label"].long()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            loss.item()
        model.eval()
        metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
        with torch.no_grad():
            for batch in val_loader:
                x, y = batch["image"], batch["label"].long()
                logits = sliding_window_inference(x, patch, batch_size, model, overlap=0.25)
                float(loss_fn(logits, y))
                metric(one_hot(logits.argmax(1, keepdim=True), n), one_hot(y, n))
        metric.aggregate().item()
        return time.perf_counter() - t0

    return epoch


def test_bench_pipeline_epoch_against_a_bare_monai_loop():
    import torch

    from medtune.trainables.lr_data import DataConfig, split_datalists
    from medtune.trainables.lr_networks import ModelConfig, build_network
    from medtune.trainables.lr_segmentation import SegmentationRun, TrainConfig

    torch.set_num_threads(1)
    shape, patch, k, batch = (48, 48, 48), (16, 16, 16), 4, 2
    with tempfile.TemporaryDirectory() as d:
        root = _task(Path(d) / "big", num_cases=20, shape=shape)
        cfg = DataConfig(source="decathlon", path=str(root), test_fraction=0.0, val_fraction=0.2,
                         spatial_size=shape, patch_size=patch, patches_per_volume=k)
        split = split_datalists(cfg)
        model_cfg = ModelConfig(channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
        run = SegmentationRun(method="fixed", seed=0, data=split, model_cfg=model_cfg, patch_size=patch,
                              patches_per_volume=k, train_cfg=TrainConfig(epochs=10 * EPOCHS, batch_size=batch))
        bare_model = build_network(model_cfg, split.in_channels, split.num_classes, patch)  # same weights:
        bare_model.load_state_dict(run.model.state_dict())
        bare = _bare_loop(split, patch, k, batch, bare_model, seed=0)
        cand_t, bare_t = [], []
        for _ in range(EPOCHS):
            t0 = time.perf_counter()
            result = run.run_epoch()
            cand_t.append(time.perf_counter() - t0)
            bare_t.append(bare())
    assert not result.diverged
    cand_t, bare_t = cand_t[1:], bare_t[1:]
    ratio = median(cand_t) / median(bare_t)
    ok = ratio <= TARGET
    report(
        "LR study epoch (SegmentationRun: CacheDataset + patches + sliding window) vs bare MONAI loop",
        [
            ("setup", f"Decathlon-layout task, {len(split.train)} train / {len(split.val)} val volumes {shape}, "
                      f"patches {patch} x {k}/volume, batch {batch}, UNet {model_cfg.channels}, threads 1, "
                      f"{EPOCHS} alternating epochs, first dropped"),
            ("candidate epoch s", " ".join(f"{x:.3f}" for x in cand_t)),
            ("bare MONAI epoch s", " ".join(f"{x:.3f}" for x in bare_t)),
            ("median candidate s", f"{median(cand_t):.4f} (p90 {pct(cand_t, 0.9):.4f})"),
            ("median bare s", f"{median(bare_t):.4f} (p90 {pct(bare_t, 0.9):.4f})"),
            ("RATIO candidate/bare", f"{ratio:.3f}"),
            ("target", f"<= {TARGET:.2f}"),
        ],
        "MET" if ok else "MISSED",
    )
    assert ok, f"the trainable's epoch is {ratio:.3f}x the bare MONAI loop's (target <= {TARGET})"


_TRIAL = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from medtune.trainables.lr_data import DataConfig, split_datalists
from medtune.trainables.lr_networks import ModelConfig
from medtune.trainables.lr_segmentation import SegmentationRun, TrainConfig

root, rate = sys.argv[1], float(sys.argv[2])
shape, patch = (96, 96, 96), (32, 32, 32)
cfg = DataConfig(source="decathlon", path=root, test_fraction=0.0, val_fraction=0.25, spatial_size=shape,
                 patch_size=patch, patches_per_volume=2, cache_rate=rate)
split = split_datalists(cfg)  # the driver's part: checks every file, keeps only paths
model_cfg = ModelConfig(channels=(4, 8), strides=(2,), num_res_units=0)
import monai.networks.nets, monai.inferers  # imports, not data, in the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
run = SegmentationRun(method="fixed", seed=0, data=split, model_cfg=model_cfg, patch_size=patch,
                      patches_per_volume=2, train_cfg=TrainConfig(epochs=2, batch_size=2))
cached = 0
for ds in (run.train_set, run.val_set):
    for item in ds._cache[: ds.cache_num]:
        cached += sum(v.element_size() * v.nelement() for v in item.values() if torch.is_tensor(v))
for _ in range(2):
    run.run_epoch()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "cached": cached,
                  "cache_num": run.train_set.cache_num + run.val_set.cache_num,
                  "volumes": len(split.train) + len(split.val)}))
"""


def test_bench_trial_memory_against_its_cache():
    mib = 2 ** 20
    with tempfile.TemporaryDirectory() as d:
        root = _task(Path(d) / "big", num_cases=24, shape=(96, 96, 96))
        out = {}
        for rate in (1.0, 0.25):
            proc = subprocess.run([sys.executable, "-c", _TRIAL, str(root), str(rate)], capture_output=True,
                                  text=True, check=True, cwd=Path(__file__).resolve().parents[2])
            out[rate] = json.loads(proc.stdout.strip().splitlines()[-1])
    full, part = out[1.0], out[0.25]
    grow_full, grow_part = full["peak"] - full["base"], part["peak"] - part["base"]
    saved, not_cached = grow_full - grow_part, full["cached"] - part["cached"]
    dense = full["volumes"] * 96 ** 3 * (4 + 8)  # what dense float32 images + int64 labels of the task would take
    ok = saved >= 0.5 * not_cached
    report(
        "trial peak RSS vs its CacheDataset (24 volumes 96^3, 18 train / 6 val, patches 32^3, 2 epochs)",
        [
            ("dense arrays of the task MiB", f"{dense / mib:.1f} (float32 images + int64 labels)"),
            *[(f"cache_rate {r}: cached", f"{o['cache_num']} volumes, {o['cached'] / mib:.1f} MiB")
              for r, o in out.items()],
            *[(f"cache_rate {r}: RSS MiB", f"baseline {o['base'] / mib:.0f}, peak {o['peak'] / mib:.0f}, "
                                         f"growth {(o['peak'] - o['base']) / mib:.0f}") for r, o in out.items()],
            ("growth - cache MiB", f"{(grow_full - full['cached']) / mib:.0f} at 1.0, "
                                   f"{(grow_part - part['cached']) / mib:.0f} at 0.25 "
                                   "(model, activations, one volume)"),
            ("saved by 0.25 MiB", f"{saved / mib:.0f} of {not_cached / mib:.0f} not cached"),
            ("target", "0.25 saves at least half of what it does not cache"),
        ],
        "MET" if ok else "MISSED",
    )
    assert ok
