"""Benchmark of the PaSeR study (issue 5): routed inference against the large model, wall time beside GFLOPs.

Candidate: PaSeR's routed inference (f0 with T MC-dropout passes, the router, then only the chosen model on
each chosen patch). Reference: ``large`` (f2 on every patch, with the same context margin). Same 200 test
images, same CPU thread, interleaved repeats (candidate first on odd repeats) so machine load drifts hit
both; the ratio is median routed / median large. The GFLOPs ratio (executed, ``torch.utils.flop_counter``)
is printed beside it: routing saves wall time only where the skipped work outweighs f0's passes, the
router and the per-model gather/stitch.

Two routings are timed: the router trained here (briefly, ``lam`` = 0.25) and a fixed mix (50% f0, 30% f1,
20% f2 at random), so the result does not hinge on what a short training learned.
"""

from __future__ import annotations

import time

import torch

from tests.bench._common import median, report

REPEATS = 5


def test_routed_inference_wall_time_against_large_beside_the_gflops_ratio():
    from medtune.searchers.paser import PaSeRConfig, random_routing, routed_inference, single_model
    from medtune.trainables.paser_data import PaSeRDataConfig, load_paser_data
    from medtune.trainables.paser_models import PaSeRModelsConfig, load_models, pretrain_models, train_router

    torch.set_num_threads(1)
    data = load_paser_data(PaSeRDataConfig(n_images=1000))
    cfg = PaSeRConfig(lam=0.25, router_epochs=5, finetune_epochs=0)
    models_cfg = PaSeRModelsConfig(pretrain_epochs=2, distill_epochs=2)
    models = load_models(pretrain_models(data, models_cfg, 0, cfg), models_cfg, data.image_size, cfg)
    router = train_router(models, data, cfg, seed=0).router
    x = torch.as_tensor(data.test_images)
    generator = torch.Generator().manual_seed(0)

    runs = {
        "large": lambda: single_model(models, 2, x, cfg.grid, cfg.margin),
        "routed (trained router)": lambda: routed_inference(models, router, x, cfg.grid, cfg.T, cfg.margin),
        "routed (50/30/20 mix)": lambda: random_routing(models, x, cfg.grid, (0.5, 0.3, 0.2), generator, cfg.margin),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    flops: dict[str, int] = {}
    shares: dict[str, list[float]] = {}
    for rep in range(REPEATS):
        order = list(runs) if rep % 2 else list(reversed(runs))
        for name in order:
            t0 = time.perf_counter()
            seg = runs[name]()
            times[name].append(time.perf_counter() - t0)
            flops[name] = seg.flops
            shares[name] = [float((seg.actions == k).float().mean()) for k in range(3)]
    n = len(x)
    rows = [("images", n), ("repeats", REPEATS)]
    for name in runs:
        rows.append((f"{name}: median s / GFLOPs per image / patches f0,f1,f2",
                     f"{median(times[name]):.3f} / {flops[name] / n / 1e9:.4f} / "
                     + ",".join(f"{s:.0%}" for s in shares[name])))
    for name in list(runs)[1:]:
        rows.append((f"{name} vs large: wall ratio | GFLOPs ratio",
                     f"{median(times[name]) / median(times['large']):.2f} | {flops[name] / flops['large']:.2f}"))
    report("PaSeR routed inference vs large (CPU, 1 thread)", rows,
           "printed side by side; no target: the issue asks for the two ratios")
    assert all(f > 0 for f in flops.values())
    assert all(median(t) > 0 for t in times.values())
    # The fixed mix executes f0 once plus f1 and f2 on 50% of the patches: fewer FLOPs than f2 everywhere.
    assert flops["routed (50/30/20 mix)"] < flops["large"]
