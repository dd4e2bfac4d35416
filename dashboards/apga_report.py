"""The APGA study's report (paper 002's table), rebuilt from the MLflow store alone.

For each regime (``full``, ``few_shot``) and method (``none``, ``cutout``,
``gradcam``, ``trivialaugment``, ``randaugment``, ``apga``): test accuracy at the last epoch, mean and std over
seeds, the share of pixels the method's masks keep, and each method's paired
difference to ``none`` (same seed, same pre-trained classifier). The verdict
compares APGA with every baseline on those paired differences and says so
when it does not win. Mask images come from each trial's ``masks.json``
artifact (for TrivialAugment and RandAugment, which erase nothing, the
test images as they augment them); a policy whose masks keep (almost) nothing or (almost) everything
is flagged as collapsed.
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtune.dashboards import figures
from medtune.dashboards.plots import plot_accuracy_curves, plot_masks
from medtune.dashboards.runs import mlflow_client, session_runs
from medtune.dashboards.stats import against_strongest
from medtune.dashboards.stats import paired_verdict as paired_line
from medtune.dashboards.views import Block, Image, Plot, Table, Text, View, cell, png, report_text

__all__ = [
    "APGAReport", "BASELINES", "COLLAPSE", "CURVE_METRICS", "REGIMES", "TITLE", "apga_view", "build_report",
    "collapsed", "compare", "decode_masks", "load_trials", "paired_verdict",
]

TITLE = "APGA study: learned augmentation masks against the baselines"

CURVE_METRICS = ("accuracy", "train_loss", "keep_fraction")
COLLAPSE = 0.02  # a policy keeping < 2% or > 98% of the pixels has collapsed to all-zero / all-one masks
BASELINES = ("none", "cutout", "gradcam", "trivialaugment", "randaugment")
REGIMES = ("full", "few_shot")


def load_trials(client, runs: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(trials, curves)``: one row per run (final accuracy, keep share), one row per (run, epoch)."""
    trials, curves = [], []
    for run in runs:
        p = run.data.params
        base = {"run_id": run.info.run_id, "method": p.get("method", "?"), "regime": p.get("regime", "full"),
                "seed": int(p.get("seed", 0))}
        history: dict[int, dict[str, Any]] = {}
        for key in CURVE_METRICS:
            for m in client.get_metric_history(run.info.run_id, key):
                history.setdefault(int(m.step), {**base, "epoch": int(m.step)})[key] = m.value
        rows = [history[e] for e in sorted(history)]
        curves.extend(rows)
        last = rows[-1] if rows else {}
        trials.append({**base, "epochs": len(rows), "accuracy": last.get("accuracy", math.nan),
                       "keep_fraction": last.get("keep_fraction", math.nan),
                       "finished": "final_accuracy" in run.data.metrics})
    trials_df = pd.DataFrame(trials)
    curves_df = pd.DataFrame(curves, columns=["run_id", "method", "regime", "seed", "epoch", *CURVE_METRICS])
    return trials_df.sort_values(["regime", "method", "seed"]).reset_index(drop=True), curves_df


def compare(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (regime, method): accuracy mean/std/n, keep share, and the paired difference to ``none``."""
    rows = []
    for (regime, method), g in trials.groupby(["regime", "method"], sort=False):
        row = {"regime": regime, "method": method, "accuracy_mean": g["accuracy"].mean(),
               "accuracy_std": g["accuracy"].std(ddof=1) if len(g) > 1 else 0.0, "n": len(g),
               "keep_mean": g["keep_fraction"].mean()}
        ref = trials[(trials["regime"] == regime) & (trials["method"] == "none")].set_index("seed")["accuracy"]
        paired = (g.set_index("seed")["accuracy"] - ref).dropna()
        row["vs_none_mean"] = paired.mean() if method != "none" and len(paired) else math.nan
        row["vs_none_wins"] = f"{int((paired > 0).sum())}/{len(paired)}" if method != "none" and len(paired) else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {r: i for i, r in enumerate(REGIMES)}
    table["_order"] = table["regime"].map(lambda r: order.get(r, len(order)))
    table = table.sort_values(["_order", "accuracy_mean"], ascending=[True, False], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def paired_verdict(trials: pd.DataFrame, regime: str, method: str, other: str) -> str:
    """One line: ``method`` against ``other`` in ``regime``, paired by seed
    (:func:`medtune.dashboards.stats.paired_verdict`)."""
    t = trials[trials["regime"] == regime]
    return paired_line(method, other, t[t["method"] == method].set_index("seed")["accuracy"],
                  t[t["method"] == other].set_index("seed")["accuracy"])


def collapsed(trials: pd.DataFrame) -> list[str]:
    """Warnings for APGA runs whose masks keep (almost) nothing or (almost) everything."""
    out = []
    for _, r in trials[trials["method"] == "apga"].iterrows():
        k = r["keep_fraction"]
        if pd.notna(k) and (k < COLLAPSE or k > 1 - COLLAPSE):
            kind = "all-zero (erases the image)" if k < COLLAPSE else "all-one (keeps the image)"
            effect = ("its masked half is (almost) blank images: a label-smoothing-like regulariser, not the paper's "
                      "aiding masks" if k < COLLAPSE else "its masked half repeats the originals")
            out.append(f"WARNING: the APGA policy collapsed to {kind} masks in regime {r['regime']}, seed {r['seed']} "
                       f"(keeps {k:.1%} of pixels); {effect}. Raise train.apga.lambda_zeros against all-one masks, "
                       "lower it against all-zero ones.")
    return out


def decode_masks(payload: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(images, masks)``, both ``(n, H, W)`` uint8, from a trial's ``masks.json``."""
    shape = tuple(payload["shape"])
    images = np.frombuffer(base64.b64decode(payload["images"]), np.uint8).reshape(shape)
    masks = np.frombuffer(base64.b64decode(payload["masks"]), np.uint8).reshape(shape)
    return images, masks


def _download_masks(client, trials: pd.DataFrame) -> dict[tuple[str, str], dict]:
    """For each (regime, method): the masks of its lowest seed."""
    out = {}
    for (regime, method), g in trials.groupby(["regime", "method"]):
        run_id = g.sort_values("seed")["run_id"].iloc[0]
        try:
            with tempfile.TemporaryDirectory() as d:
                out[(regime, method)] = json.loads(Path(client.download_artifacts(run_id, "masks.json", d)).read_text())
        except Exception:
            continue  # an unfinished trial has none
    return out


@dataclass
class APGAReport:
    experiment: str
    experiment_id: str
    session: str
    trials: pd.DataFrame
    curves: pd.DataFrame
    table: pd.DataFrame
    masks: dict[tuple[str, str], dict] = field(default_factory=dict)

    def view(self) -> View:
        """This report as the dashboard and the HTML report draw it."""
        return apga_view(self)

    def text(self) -> str:
        lines = [f"APGA study {self.experiment!r}, session {self.session} ({len(self.trials)} trials): "
                 "test accuracy at the last epoch, mean +/- std over seeds"]
        for regime, g in self.table.groupby("regime", sort=False):
            lines += ["", f"regime {regime}:",
                      f"  {'method':14s} {'accuracy':>17s} {'n':>3s} {'keeps':>7s} {'vs none':>8s} {'wins':>5s}"]
            for _, r in g.iterrows():
                vs = "" if pd.isna(r["vs_none_mean"]) else f"{r['vs_none_mean']:+.3f}"
                lines.append(f"  {r['method']:14s} {r['accuracy_mean']:8.3f} +/- {r['accuracy_std']:.3f} "
                             f"{int(r['n']):3d} {r['keep_mean']:7.1%} {vs:>8s} {r['vs_none_wins']:>5s}")
            methods = set(g["method"])
            if "apga" in methods:
                t = self.trials[self.trials["regime"] == regime]
                scores = {m: t[t["method"] == m].set_index("seed")["accuracy"] for m in pd.unique(t["method"])}
                lines += [f"  APGA {against_strongest('apga', scores, 'test accuracy')}",
                          f"  APGA against each baseline ({regime}):"]
                lines += ["    " + paired_verdict(self.trials, regime, "apga", b) for b in sorted(methods - {"apga"})]
        unfinished = self.trials[~self.trials["finished"]]
        if len(unfinished):
            lines += ["", f"NOTE: {len(unfinished)} trial(s) did not finish; their last epoch is shown."]
        warnings = collapsed(self.trials)
        if warnings:
            lines += [""] + warnings
        return "\n".join(lines)

    def write(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, df in (("comparison.csv", self.table), ("trials.csv", self.trials), ("curves.csv", self.curves)):
            df.to_csv(folder / name, index=False)
            paths.append(folder / name)
        paths.append(plot_accuracy_curves(self.curves, folder / "accuracy_curves.png"))
        for regime in sorted({r for r, _ in self.masks}):
            decoded = {m: decode_masks(p) for (r, m), p in sorted(self.masks.items()) if r == regime}
            paths.append(plot_masks(decoded, folder / f"masks-{regime}.png", title=f"masks ({regime}, first seed)"))
        (folder / "report.txt").write_text(self.text() + "\n")
        paths.append(folder / "report.txt")
        return paths

    def summary_metrics(self) -> dict[str, float]:
        return {f"accuracy_mean.{r['regime']}.{r['method']}": float(r["accuracy_mean"])
                for _, r in self.table.iterrows()}


def build_report(tracking_uri: str, experiment: str, session: str | None = None) -> APGAReport:
    """Rebuild the APGA comparison of ``experiment`` (its latest session unless ``session``) from MLflow.

    Raises:
        InputError: unknown experiment, or no trial runs in it.
    """
    client = mlflow_client(tracking_uri)
    exp, session, runs = session_runs(client, tracking_uri, experiment, session)
    trials, curves = load_trials(client, runs)
    return APGAReport(experiment, exp.experiment_id, session, trials, curves, compare(trials),
                      _download_masks(client, trials))


def apga_view(report: APGAReport) -> View:
    """The APGA study (:class:`medtune.dashboards.apga_report.APGAReport`)."""
    rows = []
    for _, r in report.table.iterrows():
        rows.append({
            "method": r["method"], "regime": r["regime"], "accuracy": cell(r["accuracy_mean"], r["accuracy_std"]),
            "seeds": str(int(r["n"])), "pixels kept": f"{r['keep_mean']:.1%}" if pd.notna(r["keep_mean"]) else "—",
            "vs none": "" if pd.isna(r["vs_none_mean"]) else f"{r['vs_none_mean']:+.3f}",
            "seeds better than none": r["vs_none_wins"],
        })
    blocks: list[Block] = [
        Table("accuracy", "Accuracy table", pd.DataFrame(rows),
              "test accuracy at the last epoch, mean ± std over seeds, best first within each regime; "
              "'vs none' is the mean paired difference"),
        Plot("accuracy-curves", "Test accuracy per epoch", figures.accuracy_curves(report.curves)),
    ]
    for regime in sorted({r for r, _ in report.masks}):
        decoded = {m: decode_masks(p) for (r, m), p in sorted(report.masks.items()) if r == regime}
        blocks.append(Image(f"masks-{regime}", f"Masks, regime {regime} (first seed; red = erased; "
                            "TrivialAugment and RandAugment rows show their augmented images)",
                            png(partial(plot_masks, decoded, title=f"masks ({regime}, first seed)"))))
    warnings = collapsed(report.trials) if len(report.trials) else []
    if warnings:
        blocks.append(Text("warnings", "Warnings", "\n".join(warnings), warning=True))
    blocks.append(report_text(report))
    return View("apga", TITLE, report.experiment, report.session, blocks=blocks)
