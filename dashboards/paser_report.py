"""The PaSeR study's report (paper 003), rebuilt from the MLflow store alone.

One row per method and cost weight (``paser`` and ``random`` at each ``lam``;
``small``, ``medium``, ``large`` and ``cascade`` once): IoU, GFLOPs executed
per image, IoU per GFLOP, the share of patches sent to f0 / f1 / f2 and the
IoU drop under the unseen noise, each mean and std over seeds. The verdict
compares, at each ``lam``, the router with ``random`` routing at the
router's shares of patches per model (the same parameter cost; fewer FLOPs, as random runs f0 once;
paired by seed, on IoU) and with every router-free baseline on IoU per
GFLOP; the Pareto plot places every row in the (GFLOPs, IoU) plane.
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
from medtune.dashboards.plots import plot_pareto, plot_routing
from medtune.dashboards.runs import mlflow_client, session_runs
from medtune.dashboards.stats import against_strongest, paired_verdict
from medtune.dashboards.views import Block, Image, Plot, Table, View, cell, png, report_text

__all__ = [
    "FIXED", "METRICS", "PaSeRReport", "TITLE", "build_report", "decode_routing", "load_runs", "pareto_front",
    "paser_view", "summarise",
]

TITLE = "PaSeR study: learned patch routing, IoU against compute"

METRICS = ("iou", "gflops", "iou_per_gflop", "share_f0", "share_f1", "share_f2", "iou_drop_pct")
FIXED = ("small", "medium", "large", "cascade")


def load_runs(client, runs: list) -> pd.DataFrame:
    """One row per run: method, lam (NaN for the router-free baselines), seed and :data:`METRICS`."""
    rows = []
    for run in runs:
        p, m = run.data.params, run.data.metrics
        lam = p.get("lam")
        rows.append({"run_id": run.info.run_id, "method": p.get("method", "?"),
                     "lam": float(lam) if lam not in (None, "None", "") else math.nan,
                     "seed": int(p.get("seed", 0)), **{k: m.get(k, math.nan) for k in METRICS}})
    return pd.DataFrame(rows, columns=["run_id", "method", "lam", "seed", *METRICS])


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (method, lam); ``paser`` rows first by ``lam``, then the baselines."""
    rows = []
    for (method, lam), g in runs.groupby(["method", runs["lam"].fillna(-1.0)], sort=False):
        row = {"method": method, "lam": math.nan if lam == -1.0 else lam, "seeds": len(g)}
        for k in METRICS:
            row[f"{k}_mean"] = g[k].mean()
            row[f"{k}_std"] = g[k].std(ddof=1) if len(g) > 1 else 0.0
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = {"paser": 0, "random": 1, **{m: 2 + i for i, m in enumerate(FIXED)}}
    out["_o"] = out["method"].map(lambda m: order.get(m, 9))
    return out.sort_values(["_o", "lam"]).drop(columns="_o").reset_index(drop=True)


def pareto_front(table: pd.DataFrame) -> list[int]:
    """Row positions not dominated in (lower GFLOPs, higher IoU)."""
    pts = table[["gflops_mean", "iou_mean"]].to_numpy(float)
    keep = []
    for i, (g, u) in enumerate(pts):
        dominated = any((g2 <= g and u2 >= u) and (g2 < g or u2 > u) for j, (g2, u2) in enumerate(pts) if j != i)
        if not dominated and np.isfinite([g, u]).all():
            keep.append(i)
    return keep


def decode_routing(payload: dict[str, Any]) -> dict[str, Any]:
    """``images``, ``masks``, ``preds`` as ``(n, H, W)`` uint8 arrays, ``actions`` ``(n, grid*grid)``, ``grid``."""
    shape = tuple(payload["shape"])
    dec = lambda k: np.frombuffer(base64.b64decode(payload[k]), np.uint8).reshape(shape)  # noqa: E731
    return {"images": dec("images"), "masks": dec("masks"), "preds": dec("preds"),
            "actions": np.asarray(payload["actions"]), "grid": int(payload["grid"])}


def _download_routing(client, runs: pd.DataFrame) -> dict[float, dict]:
    """For each lam: the routing pictures of its lowest seed's paser run."""
    out = {}
    for lam, g in runs[runs["method"] == "paser"].groupby("lam"):
        rid = g.sort_values("seed")["run_id"].iloc[0]
        try:
            with tempfile.TemporaryDirectory() as d:
                out[float(lam)] = json.loads(Path(client.download_artifacts(rid, "routing.json", d)).read_text())
        except Exception:
            continue
    return out


@dataclass
class PaSeRReport:
    experiment: str
    experiment_id: str
    session: str
    runs: pd.DataFrame
    table: pd.DataFrame
    routing: dict[float, dict] = field(default_factory=dict)

    def _label(self, r: pd.Series) -> str:
        return r["method"] if pd.isna(r["lam"]) else f"{r['method']} lam={r['lam']:g}"

    def view(self) -> View:
        """This report as the dashboard and the HTML report draw it."""
        return paser_view(self)

    def text(self) -> str:
        lines = [f"PaSeR study {self.experiment!r}, session {self.session} ({len(self.runs)} runs): test images, "
                 "mean +/- std over seeds; GFLOPs executed per image",
                 f"  {'method':18s} {'IoU':>15s} {'GFLOPs':>17s} {'IoU/GFLOP':>17s} {'f0/f1/f2 patches':>17s} "
                 f"{'IoU drop, unseen noise':>22s}"]
        front = set(pareto_front(self.table))
        for i, r in self.table.iterrows():
            shares = f"{r['share_f0_mean']:.0%}/{r['share_f1_mean']:.0%}/{r['share_f2_mean']:.0%}"
            lines.append(
                f"{'*' if i in front else ' '} {self._label(r):18s} {r['iou_mean']:.3f} +/- {r['iou_std']:.3f} "
                f"{r['gflops_mean']:8.4f} +/- {r['gflops_std']:.4f} {r['iou_per_gflop_mean']:8.1f} +/- "
                f"{r['iou_per_gflop_std']:6.1f} {shares:>17s} "
                f"{r['iou_drop_pct_mean']:+9.1f}% +/- {r['iou_drop_pct_std']:.1f}")
        lines.append("  (* on the Pareto front of IoU against GFLOPs)")
        per_seed = self.runs.set_index("seed")
        paser = self.runs[self.runs["method"] == "paser"]
        for lam in sorted(paser["lam"].unique()):
            lines += ["", f"PaSeR at lam={lam:g}:"]
            mine = paser[paser["lam"] == lam].set_index("seed")
            rnd = self.runs[(self.runs["method"] == "random") & (self.runs["lam"] == lam)].set_index("seed")
            if len(rnd):
                lines.append("  IoU: " + paired_verdict("paser", "random at its shares", mine["iou"], rnd["iou"]))
            scores = {b: per_seed[per_seed["method"] == b]["iou_per_gflop"] for b in FIXED}
            if any(len(v) for v in scores.values()):
                scores["paser"] = mine["iou_per_gflop"]
                lines.append("  IoU/GFLOP: paser " + against_strongest("paser", scores, "IoU/GFLOP", fmt="+.1f"))
            for b in FIXED:
                other = per_seed[per_seed["method"] == b]
                if len(other):
                    lines.append("  IoU/GFLOP: " + paired_verdict("paser", b, mine["iou_per_gflop"],
                                                                  other["iou_per_gflop"], fmt="+.1f"))
        return "\n".join(lines)

    def write(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, df in (("comparison.csv", self.table), ("runs.csv", self.runs)):
            df.to_csv(folder / name, index=False)
            paths.append(folder / name)
        labels = [self._label(r) for _, r in self.table.iterrows()]
        paths.append(plot_pareto(self.table, labels, pareto_front(self.table), folder / "pareto.png"))
        for lam, payload in sorted(self.routing.items()):
            paths.append(plot_routing(decode_routing(payload), folder / f"routing-lam{lam:g}.png",
                                      title=f"PaSeR routing at lam={lam:g}"))
        (folder / "report.txt").write_text(self.text() + "\n")
        paths.append(folder / "report.txt")
        return paths

    def summary_metrics(self) -> dict[str, float]:
        out = {}
        for _, r in self.table.iterrows():
            key = r["method"] if pd.isna(r["lam"]) else f"{r['method']}_lam{r['lam']:g}"
            for k in ("iou", "gflops", "iou_per_gflop"):
                if pd.notna(r[f"{k}_mean"]):
                    out[f"{k}.{key}"] = float(r[f"{k}_mean"])
        return out


def build_report(tracking_uri: str, experiment: str, session: str | None = None) -> PaSeRReport:
    """Rebuild the PaSeR comparison of ``experiment`` (its latest session unless ``session``) from MLflow.

    Raises:
        InputError: unknown experiment, or no trial runs in it.
    """
    client = mlflow_client(tracking_uri)
    exp, session, runs = session_runs(client, tracking_uri, experiment, session)
    df = load_runs(client, runs)
    return PaSeRReport(experiment, exp.experiment_id, session, df, summarise(df), _download_routing(client, df))


def paser_view(report: PaSeRReport) -> View:
    """The PaSeR study (:class:`medtune.dashboards.paser_report.PaSeRReport`)."""
    front = pareto_front(report.table) if len(report.table) else []
    labels = [report._label(r) for _, r in report.table.iterrows()]
    rows = []
    for i, (_, r) in enumerate(report.table.iterrows()):
        rows.append({
            "method": labels[i], "seeds": str(int(r["seeds"])), "IoU": cell(r["iou_mean"], r["iou_std"]),
            "GFLOPs / image": cell(r["gflops_mean"], r["gflops_std"], ".4f"),
            "IoU / GFLOP": cell(r["iou_per_gflop_mean"], r["iou_per_gflop_std"], ".1f"),
            "f0 / f1 / f2 patches": f"{r['share_f0_mean']:.0%} / {r['share_f1_mean']:.0%} / {r['share_f2_mean']:.0%}"
            if pd.notna(r["share_f0_mean"]) else "",
            "IoU drop, unseen noise": cell(r["iou_drop_pct_mean"], r["iou_drop_pct_std"], "+.1f") + " %",
            "Pareto front": "yes" if i in front else "",
        })
    blocks: list[Block] = [
        Plot("pareto", "Pareto front: IoU against GFLOPs", figures.pareto(report.table, labels, front)),
        Table("comparison", "Comparison table", pd.DataFrame(rows),
              "test images, mean ± std over seeds; GFLOPs executed per image; random runs at each router's shares"),
    ]
    for lam, payload in sorted(report.routing.items()):
        routing = decode_routing(payload)
        blocks.append(Image(f"routing-lam{lam:g}", f"Routing at lam = {lam:g}",
                            png(partial(plot_routing, routing, title=f"PaSeR routing at lam={lam:g}"))))
    blocks.append(report_text(report))
    return View("paser", TITLE, report.experiment, report.session, blocks=blocks)
