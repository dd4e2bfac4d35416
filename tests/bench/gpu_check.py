"""The GPU check: the LR study's CUDA path, run for real and measured (``make gpu-check``).

On a machine where torch sees a CUDA device it runs, within about 8 minutes:

1. The smoke LR study on CUDA with mixed precision (``train.amp=true``) at 1, 2 and 4 trials per GPU
   (``resources.gpus_per_trial`` 1, 0.5 and 0.25), four trials each: ``fixed`` and the three methods that bring
   their own optimizer (``poly``: Nesterov SGD, ``schedulefree``: Schedule-Free AdamW, ``prodigy``), through the
   ``medtune`` command as a user runs it, each in its own output folder. ``--size N`` raises the phantom's
   volumes from the smoke 24^3 to N^3 so the GPU has something to do.
2. Per packing: the wall time, each trial's median epoch time (Tune's ``time_this_iter_s`` over epochs 2..),
   the end of the study's own output (each method's Dice table), and ``nvidia-smi``'s GPU utilisation and memory sampled
   every 0.5 s while the study ran (mean and peak).
3. The plan medtune derives for a BrainTumour-sized task (4 MR modalities, 240 x 240 x 155 at 1 mm) with this
   GPU's memory at each packing: patch size, batch size, network and the estimated memory of a step.

Without a CUDA device it prints one line saying so and exits 0, so it is safe to run anywhere. Any study that
fails makes it exit 1 after the summary (the failing command and its last output are printed).

Usage::

    make gpu-check                          # or: python tests/bench/gpu_check.py [--size 48] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PACKINGS = (1.0, 0.5, 0.25)  # resources.gpus_per_trial: 1, 2 and 4 trials per GPU
METHODS = ("fixed", "poly", "schedulefree", "prodigy")
BRAINTUMOUR = {"shape": (240, 240, 155), "spacing": (1.0, 1.0, 1.0)}


class GPUSampler:
    """``nvidia-smi`` polled in a thread: utilisation (%) and memory used (MiB) of every visible GPU."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
                for line in out.strip().splitlines():
                    util, mem = (float(x) for x in line.split(","))
                    self.samples.append((util, mem))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(self.period_s)

    def __enter__(self) -> GPUSampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def summary(self) -> str:
        if not self.samples:
            return "no nvidia-smi samples"
        util = [u for u, _ in self.samples]
        mem = [m for _, m in self.samples]
        return (f"GPU util mean {statistics.mean(util):.0f}% peak {max(util):.0f}%, "
                f"memory peak {max(mem):.0f} MiB ({len(util)} samples)")


def epoch_times(out: Path) -> dict[str, list[float]]:
    """``{trial folder: [time_this_iter_s of each epoch]}`` from the Tune ``result.json`` files under ``out``."""
    times: dict[str, list[float]] = {}
    for path in out.rglob("result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        key = f"{rows[0].get('config', {}).get('method', '?')}/{path.parent.name[:28]}" if rows else path.parent.name
        times[key] = [float(r["time_this_iter_s"]) for r in rows if "time_this_iter_s" in r]
    return times


def run_study(medtune: list[str], gpus: float, size: int, out: Path) -> tuple[int, float, str, str]:
    """One smoke LR study on CUDA with AMP at ``gpus`` per trial; returns (exit status, seconds, summary, tail)."""
    cmd = [*medtune, "run", "lr-schedulers", "--smoke", "--output", str(out),
           "--set", f"methods=[{','.join(METHODS)}]", "--set", "train.amp=true",
           "--set", f"resources.gpus_per_trial={gpus}", "--set", "resources.cpus_per_trial=2",
           "--set", "train.epochs=6"]
    if size:
        cmd += ["--set", f"data.spatial_size=[{size},{size},{size}]"]
    start = time.monotonic()
    with GPUSampler() as sampler:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - start
    tail = (proc.stdout + proc.stderr)[-3000:]
    return proc.returncode, seconds, sampler.summary(), tail


def braintumour_fingerprint(num_cases: int = 8):
    """A fingerprint shaped like MSD Task01 BrainTumour's: 4 MR modalities, 240 x 240 x 155 voxels at 1 mm, the
    skull-stripped brain (the nonzero box) about 140 x 172 x 138 of it, four label values."""
    from medtune.trainables.plan import Fingerprint

    case = {"shape": list(BRAINTUMOUR["shape"]), "spacing": list(BRAINTUMOUR["spacing"]), "box": [140, 172, 138],
            "affine": [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]],
            "class_voxels": [3_280_000, 60_000, 20_000, 20_000],
            "intensity": [{"p00_5": 0.0, "p99_5": 1000.0, "mean": 400.0, "std": 150.0, "n": 10_000}] * 4}
    cases = [{"id": f"BRATS_{i:03d}", **case} for i in range(num_cases)]
    return Fingerprint(cases, ["FLAIR", "T1w", "t1gd", "T2w"],
                       ["background", "edema", "non-enhancing tumor", "enhancing tumour"], "BrainTumour-sized")


def plan_lines() -> list[str]:
    """The plan medtune derives for a BrainTumour-sized task on this GPU, for 1, 2 and 4 trials per GPU."""
    from medtune.trainables.plan import memory_budget, plan_for

    fingerprint = braintumour_fingerprint()
    lines = ["plan for a BrainTumour-sized task (4 x 240 x 240 x 155 at 1 mm):"]
    for share in PACKINGS:
        plan = plan_for(fingerprint, memory_bytes=memory_budget("cuda", share=share), device="cuda")
        net = plan.network
        lines.append(f"  gpus_per_trial={share}: patch {list(plan.patch_size)}, batch {plan.batch_size}, "
                     f"{net['name']} channels {net.get('channels')} strides {net.get('strides')}, "
                     f"about {plan.memory['estimate'] / 2**30:.1f} of {plan.memory['budget'] / 2**30:.1f} GiB")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48, help="phantom volume edge in voxels (0: the smoke 24^3)")
    parser.add_argument("--out", default=None, help="keep the studies' output here (default: a temp folder)")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device visible to torch {torch.__version__} "
              f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); nothing to check here")
        return 0
    name = torch.cuda.get_device_name(0)
    total = torch.cuda.get_device_properties(0).total_memory
    print(f"gpu-check: {name}, {total / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}",
          flush=True)
    script = Path(sys.executable).with_name("medtune")
    medtune = [str(script)] if script.exists() else [shutil.which("medtune") or "medtune"]
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="medtune-gpu-check-"))
    failed = []
    for gpus in PACKINGS:
        out = root / f"gpus-{gpus}"
        status, seconds, gpu, tail = run_study(medtune, gpus, args.size, out)
        per_trial = round(1 / gpus)
        print(f"\n== {per_trial} trial(s) per GPU (gpus_per_trial={gpus}): exit {status}, {seconds:.0f} s; {gpu}")
        for trial, times in sorted(epoch_times(out).items()):
            later = times[1:] or times
            print(f"   {trial}: {len(times)} epochs, median epoch {statistics.median(later):.3f} s"
                  if later else f"   {trial}: no epochs")
        if status != 0:
            failed.append(gpus)
        print(tail[-1500:])  # the study's own table (each method's Dice), or its error
    print("\n" + "\n".join(plan_lines()))
    if failed:
        print(f"gpu-check: the studies at gpus_per_trial={failed} failed (output above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
