"""The APGA report's arithmetic on crafted trials (no MLflow): the table, the paired verdicts, the collapse warning
and the mask plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medtune.dashboards.apga_report import APGAReport, collapsed, compare, paired_verdict


def trials(acc: dict[str, list[float]], regime: str = "full", keep: dict[str, float] | None = None) -> pd.DataFrame:
    keep = keep or {}
    rows = [{"run_id": f"{m}{s}", "method": m, "regime": regime, "seed": s, "epochs": 3, "accuracy": a,
             "keep_fraction": keep.get(m, 1.0 if m == "none" else 0.7), "finished": True}
            for m, values in acc.items() for s, a in enumerate(values)]
    return pd.DataFrame(rows)


def test_table_has_mean_std_and_paired_difference_to_none():
    t = trials({"none": [0.50, 0.60, 0.70], "apga": [0.55, 0.66, 0.72]})
    table = compare(t).set_index("method")
    assert table.loc["apga", "accuracy_mean"] == pytest.approx(np.mean([0.55, 0.66, 0.72]))
    assert table.loc["apga", "accuracy_std"] == pytest.approx(np.std([0.55, 0.66, 0.72], ddof=1))
    assert table.loc["apga", "vs_none_mean"] == pytest.approx(np.mean([0.05, 0.06, 0.02]))
    assert table.loc["apga", "vs_none_wins"] == "3/3"
    assert list(table.index) == ["apga", "none"]  # best first


def test_verdict_says_beats_only_when_the_paired_interval_excludes_zero():
    clear = trials({"none": [0.50, 0.60, 0.70, 0.55], "apga": [0.55, 0.66, 0.74, 0.60]})
    assert "apga BEATS none" in paired_verdict(clear, "full", "apga", "none")
    worse = trials({"none": [0.50, 0.60, 0.70, 0.55], "apga": [0.45, 0.54, 0.66, 0.50]})
    assert "apga LOSES TO none" in paired_verdict(worse, "full", "apga", "none")
    noisy = trials({"none": [0.50, 0.60, 0.70], "apga": [0.60, 0.50, 0.71]})
    line = paired_verdict(noisy, "full", "apga", "none")
    assert "BEATS" not in line and "LOSES" not in line and "not clearly" in line
    one = trials({"none": [0.5], "apga": [0.6]})
    assert "at least 3 seeds" in paired_verdict(one, "full", "apga", "none")


@pytest.mark.parametrize("keep, kind", [(0.005, "all-zero"), (0.995, "all-one")])
def test_a_collapsed_policy_is_flagged(keep, kind):
    t = trials({"none": [0.5, 0.6], "apga": [0.5, 0.6]}, keep={"apga": keep})
    warnings = collapsed(t)
    assert len(warnings) == 2 and all(kind in w for w in warnings)
    assert collapsed(trials({"none": [0.5], "apga": [0.5]}, keep={"apga": 0.4})) == []


def test_report_text_lists_each_regime_and_the_verdict_and_writes_non_blank_plots(tmp_path):
    import base64

    from PIL import Image

    t = pd.concat([trials({"none": [0.5, 0.6, 0.7], "apga": [0.6, 0.7, 0.8], "cutout": [0.5, 0.6, 0.7]}),
                   trials({"none": [0.3, 0.4, 0.5], "apga": [0.3, 0.4, 0.5]}, regime="few_shot",
                          keep={"apga": 1.0})])
    curves = t.assign(epoch=3)[["run_id", "method", "regime", "seed", "epoch", "accuracy", "keep_fraction"]]
    img = np.zeros((2, 8, 8), np.uint8)
    img[:, 2:6, 2:6] = 255
    keep = np.ones((2, 8, 8), np.uint8)
    keep[:, :4] = 0
    payload = {"shape": [2, 8, 8], "images": base64.b64encode(img.tobytes()).decode(),
               "masks": base64.b64encode(keep.tobytes()).decode()}
    report = APGAReport("apga", "1", "s", t, curves, compare(t), {("full", "apga"): payload, ("full", "none"): payload})
    text = report.text()
    assert text.index("regime full") < text.index("regime few_shot")
    assert "apga" in text and "cutout" in text and "apga vs none" not in text
    assert "APGA against each baseline (full)" in text
    assert "collapsed to all-one" in text  # the few-shot policy keeps everything
    paths = {p.name: p for p in report.write(tmp_path)}
    expected = {"comparison.csv", "trials.csv", "curves.csv", "accuracy_curves.png", "masks-full.png", "report.txt"}
    assert expected <= set(paths)
    pixels = np.asarray(Image.open(paths["masks-full.png"]).convert("RGB")).astype(int)
    assert pixels.std() > 10  # not blank
    reds = (pixels[..., 0] > 120) & (pixels[..., 1] < 60)  # black under the tint: (141, 16, 16)
    assert reds.sum() > 50  # the erased half is tinted red
    assert report.summary_metrics()["accuracy_mean.full.apga"] == pytest.approx(0.7)
