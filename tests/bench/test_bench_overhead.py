"""Per-epoch overhead of running the LR study's trainable under Ray Tune + MLflow.

Candidate: the real ``medtune.trainables.lr_segmentation.train_segmentation`` in a real Tune
run assembled by the production ``medtune.cluster.studies.lr_study.build_tuner`` (one trial,
method ``fixed``, the ``QLearningLRScheduler``, the real ``MLflowTracker`` on a
real SQLite store, a checkpoint every ``train.checkpoint_every`` epochs (default 5) and at the last one).

Reference: the same MONAI loop run bare, ``SegmentationRun.run_epoch()`` called
directly in this process (no Ray, no MLflow, no checkpoint), same data
(``load_split``), same model and training config, torch threads = 1.

The bare loop runs twice, before and after the Tune run (Ray's background
processes are up for both), and the first epoch of every run is dropped
(warm-up). Under Tune two per-epoch times are taken:

* the trial's own ``time_this_iter_s``. For a function trainable on Ray 2.60 this
  is the duration of the actor's ``train()`` call: the training thread is held in
  ``tune.report`` until the driver asks for the next result, so it covers the
  epoch, ``torch.save`` and the checkpoint persistence, but NOT the driver's
  handling of the result (scheduler, MLflow ``log_batch``, experiment snapshot)
  nor the round trip;
* the interval between two results as the driver sees them (a callback appended
  after the tracker): the real wall time per epoch, everything included.

The target is asserted on the second, the stricter one:
median driver interval / median bare epoch <= 1.05.
"""

from __future__ import annotations

import time
from statistics import mean

from tests.bench._common import median, pct, report

EPOCHS = 12
TARGET = 1.05


class ResultClock:
    """A Tune callback that records when the driver has handled each result."""

    def __init__(self) -> None:
        from ray.tune import Callback

        class _Cb(Callback):
            def __init__(cb) -> None:
                cb.stamps: list[tuple[int, float]] = []

            def on_trial_result(cb, iteration, trials, trial, result, **info):
                cb.stamps.append((int(result["epoch"]), time.perf_counter()))

        self.callback = _Cb()


def bare_epochs(spec, data) -> list[float]:
    import torch

    from medtune.trainables.lr_segmentation import SegmentationRun

    torch.set_num_threads(1)
    run = SegmentationRun(
        method="fixed", seed=0, data=data, model_cfg=spec.model, train_cfg=spec.train,
        schedule_cfg=spec.schedules, lr=spec.train.base_lr, device="cpu",
    )
    times = []
    for _ in range(spec.train.epochs):
        t0 = time.perf_counter()
        run.run_epoch()
        times.append(time.perf_counter() - t0)
    return times[1:]  # drop the warm-up epoch


def test_bench_tune_mlflow_overhead_per_epoch(tmp_path, monkeypatch):
    import ray
    from mlflow.tracking import MlflowClient

    from medtune.cluster.studies.lr_study import LRStudySpec, build_tuner, init_ray, lr_session_keys, prepare_study
    from medtune.cluster.studies.session import create_session
    from medtune.trainables.lr_data import DataConfig
    from medtune.trainables.lr_segmentation import TrainConfig

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    spec = LRStudySpec(
        name="bench-overhead",
        seeds=(0,),
        methods=("fixed",),
        data=DataConfig(num_volumes=24, spatial_size=(32, 32, 32)),
        train=TrainConfig(epochs=EPOCHS),
    )
    spec, data, _ = prepare_study(spec)  # the planned values resolved (UNet channels, batch size), as a run does
    session_dir, info = create_session(spec, tmp_path / "out", None, None, lambda d: lr_session_keys(spec, d))
    init_ray(None)
    try:
        bare = bare_epochs(spec, data)

        tuner = build_tuner("study", spec, session_dir, info, data)
        clock = ResultClock()
        tuner._local_tuner.get_run_config().callbacks.append(clock.callback)
        results = tuner.fit()

        bare += bare_epochs(spec, data)
    finally:
        ray.shutdown()

    assert len(results) == 1 and results[0].error is None, results[0].error
    df = results[0].metrics_dataframe.sort_values("epoch")
    assert list(df["epoch"]) == list(range(1, EPOCHS + 1))
    tune_iter = [float(x) for x in df["time_this_iter_s"].iloc[1:]]  # drop the warm-up epoch
    stamps = sorted(clock.callback.stamps)
    driver_gaps = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])]  # epochs 2..EPOCHS

    # The tracker really logged every epoch to the SQLite store.
    client = MlflowClient(info["tracking_uri"])
    runs = client.search_runs([info["experiment_id"]])
    assert len(runs) == 1
    assert len(client.get_metric_history(runs[0].info.run_id, "dice")) == EPOCHS
    checkpoints = sorted(p.name for p in session_dir.rglob("checkpoint_*") if p.is_dir())

    m_bare, m_tune, m_driver = median(bare), median(tune_iter), median(driver_gaps)
    ratio_iter = m_tune / m_bare
    ratio = m_driver / m_bare
    ok = ratio <= TARGET
    report(
        "per-epoch overhead: train_segmentation under Tune + MLflowTracker vs bare SegmentationRun.run_epoch",
        [
            ("setup", f"phantom 24 vols {spec.data.spatial_size}, 18 train / 6 val, UNet {spec.model.channels}, "
                      f"batch {spec.train.batch_size}, threads 1, {EPOCHS} epochs, first epoch dropped"),
            ("bare epoch s (2 runs)", " ".join(f"{x:.3f}" for x in bare)),
            ("tune time_this_iter_s", " ".join(f"{x:.3f}" for x in tune_iter)),
            ("tune driver gaps s", " ".join(f"{x:.3f}" for x in driver_gaps)),
            ("median bare s", f"{m_bare:.4f} (p90 {pct(bare, 0.9):.4f})"),
            ("median tune s", f"{m_tune:.4f} (p90 {pct(tune_iter, 0.9):.4f})"),
            ("median driver gap s", f"{m_driver:.4f} (p90 {pct(driver_gaps, 0.9):.4f})"),
            ("mean bare/iter/gap s", f"{mean(bare):.4f} / {mean(tune_iter):.4f} / {mean(driver_gaps):.4f}"),
            ("overhead per epoch s", f"{m_driver - m_bare:+.4f} wall (driver gap), {m_tune - m_bare:+.4f} in-worker"),
            ("ratio time_this_iter/bare", f"{ratio_iter:.3f}"),
            ("RATIO driver gap/bare", f"{ratio:.3f}"),
            ("checkpoints kept", ", ".join(checkpoints)),
            ("target", f"driver-gap ratio <= {TARGET:.2f}"),
        ],
        "MET" if ok else "MISSED",
    )
    assert ok, f"Tune+MLflow epoch is {ratio:.3f}x the bare epoch (target <= {TARGET})"
