"""The PaSeR report's arithmetic on crafted runs (no MLflow): the table, the Pareto front, the verdicts and plots."""

from __future__ import annotations

import base64
import math

import numpy as np
import pandas as pd
import pytest

from medtune.dashboards.paser_report import PaSeRReport, decode_routing, pareto_front, summarise


def runs() -> pd.DataFrame:
    rows = []
    spec = {("small", None): (0.50, 0.01), ("large", None): (0.80, 0.40), ("medium", None): (0.60, 0.20),
            ("cascade", None): (0.55, 0.30), ("paser", 0.5): (0.78, 0.10), ("random", 0.5): (0.70, 0.10)}
    for (method, lam), (iou, gf) in spec.items():
        for seed in range(3):
            jitter = 0.01 * seed if method == "paser" else 0.0
            rows.append({"run_id": f"{method}{seed}", "method": method, "lam": math.nan if lam is None else lam,
                         "seed": seed, "iou": iou + jitter, "gflops": gf, "iou_per_gflop": (iou + jitter) / gf,
                         "share_f0": 0.5, "share_f1": 0.3, "share_f2": 0.2, "iou_drop_pct": 2.0})
    return pd.DataFrame(rows)


def test_summary_rows_and_the_pareto_front():
    table = summarise(runs())
    labels = list(zip(table["method"], table["lam"].fillna(-1)))
    assert labels[0] == ("paser", 0.5) and labels[1] == ("random", 0.5)
    row = table.iloc[0]
    assert row["iou_mean"] == pytest.approx(0.79) and row["iou_std"] == pytest.approx(0.01)
    front = {table.iloc[i]["method"] for i in pareto_front(table)}
    assert front == {"small", "paser", "large"}  # medium, cascade and random are dominated by paser


def test_text_compares_the_router_with_random_at_the_same_cost_and_each_baseline(tmp_path):
    from PIL import Image

    img = np.zeros((2, 8, 8), np.uint8)
    enc = lambda a: base64.b64encode(a.tobytes()).decode()  # noqa: E731
    routing = {"shape": [2, 8, 8], "grid": 2, "images": enc(img + 100), "masks": enc(img), "preds": enc(img),
               "actions": [[0, 1, 2, 0], [2, 2, 1, 0]]}
    report = PaSeRReport("paser", "1", "s", runs(), summarise(runs()), {0.5: routing})
    text = report.text()
    assert "paser BEATS random at its shares" in text
    assert "IoU/GFLOP: paser LOSES TO small" in text and "IoU/GFLOP: paser BEATS large" in text
    decoded = decode_routing(routing)
    assert decoded["actions"].shape == (2, 4) and decoded["images"].shape == (2, 8, 8)
    paths = {p.name: p for p in report.write(tmp_path)}
    assert {"comparison.csv", "runs.csv", "pareto.png", "routing-lam0.5.png", "report.txt"} <= set(paths)
    for name in ("pareto.png", "routing-lam0.5.png"):
        assert np.asarray(Image.open(paths[name]).convert("L")).std() > 5
    assert report.summary_metrics()["iou_per_gflop.paser_lam0.5"] == pytest.approx(7.9)
