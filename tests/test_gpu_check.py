"""``make gpu-check`` (tests/bench/gpu_check.py): safe on a machine without a GPU, and its readers of Tune's output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.bench.gpu_check import GPUSampler, epoch_times

SCRIPT = Path(__file__).parent / "bench" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: make gpu-check measures it")
def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_0():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA device"), proc.stdout


def test_epoch_times_reads_each_trials_result_json(tmp_path):
    for method, times in (("fixed", [2.0, 0.5, 0.4]), ("poly", [1.5, 0.3])):
        trial = tmp_path / "session" / f"train_{method}_00000"
        trial.mkdir(parents=True)
        rows = [{"time_this_iter_s": t, "config": {"method": method}} for t in times]
        (trial / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    found = epoch_times(tmp_path)
    assert sorted(found.values()) == [[1.5, 0.3], [2.0, 0.5, 0.4]]
    assert {key.split("/")[0] for key in found} == {"fixed", "poly"}


def test_gpu_sampler_summary_reports_mean_and_peak():
    sampler = GPUSampler()
    assert sampler.summary() == "no nvidia-smi samples"
    sampler.samples = [(50.0, 1000.0), (100.0, 3000.0)]
    assert sampler.summary() == "GPU util mean 75% peak 100%, memory peak 3000 MiB (2 samples)"


def test_the_braintumour_plan_fits_a_patch_to_a_gpus_memory_share():
    from medtune.trainables.plan import plan_for
    from tests.bench.gpu_check import braintumour_fingerprint

    fp = braintumour_fingerprint()
    whole, quarter = (plan_for(fp, memory_bytes=int(80 * 2**30 * s), device="cuda") for s in (0.85, 0.2))
    for plan in (whole, quarter):
        assert plan.memory["estimate"] <= plan.memory["budget"]
        assert all(p <= b for p, b in zip(plan.patch_size, (140, 172, 138)))  # never beyond the brain's box
    assert len(whole.network["channels"]) >= 4  # a deep enough net for a 1 mm brain
    assert np.prod(whole.patch_size) > np.prod(quarter.patch_size)  # more memory, a larger patch
    for plan in (whole, quarter):
        assert len(plan.cases) == 8 and all(c["shape"] == [140, 172, 138] for c in plan.cases)
