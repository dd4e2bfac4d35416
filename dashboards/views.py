"""What the dashboard and the HTML report show of each study: a :class:`View`, an ordered list of blocks.

A view is built from a study's report object (the same one ``medtune report`` prints), so the page, the HTML
report and the text report cannot disagree. The blocks are plain data (a Plotly figure, a table of display
strings, a PNG, a text), rendered twice: by :mod:`medtune.dashboards.app` into Dash components and by
:mod:`medtune.dashboards.html_report` into one self-contained HTML file. Every block has an ``id`` that the page uses as
its DOM id, so a browser test (or a user's bookmark) can find it.

Per study:

- ``lr``: Dice curves with spread, LR traces, the Q-table heatmap(s), the comparison table, the verdicts.
- ``active-learning``: macro/micro-F1 against the labeled share with spread, the table at each share.
- ``paser``: the Pareto plot of IoU against GFLOPs (every lam and baseline), the table, the routing pictures.
- ``apga``: the accuracy table, accuracy curves, the mask pictures, the collapse warnings.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from medtune.dashboards import figures

STUDY_TITLES = {
    "lr": "Learning-rate study: the Q-learning agent against classic schedules",
    "active-learning": "Active-learning study: DRLA against hand-designed query strategies",
    "paser": "PaSeR study: learned patch routing, IoU against compute",
    "apga": "APGA study: learned augmentation masks against the baselines",
}


def slug(text: str) -> str:
    """``text`` as a DOM id: letters, digits, ``-`` and ``_`` only (method names and lambdas come from MLflow)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "_"


@dataclass
class _Block:
    id: str
    title: str

    def __post_init__(self) -> None:
        self.id = slug(self.id)


@dataclass
class Plot(_Block):
    figure: Any  # plotly.graph_objects.Figure


@dataclass
class Table(_Block):
    """``frame`` holds display strings; its first column names the method (what a reader scans for)."""

    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Image(_Block):
    png: bytes


@dataclass
class Text(_Block):
    text: str
    warning: bool = False


Block = Plot | Table | Image | Text


@dataclass
class View:
    """One experiment's page. ``status`` says how many trials ran, run and failed (empty for a finished report
    without run statuses); ``blocks`` are shown in order."""

    study: str
    title: str
    experiment: str
    session: str
    status: str = ""
    blocks: list[Block] = field(default_factory=list)


def _cell(mean: float, std: float, fmt: str = ".3f") -> str:
    if mean is None or pd.isna(mean):
        return "—"
    return f"{mean:{fmt}} ± {0.0 if pd.isna(std) else std:{fmt.lstrip('+')}}"


def _png(draw: Callable[[Path], Path]) -> bytes:
    """The bytes of a matplotlib picture of :mod:`medtune.dashboards.plots` (they write files)."""
    with tempfile.TemporaryDirectory() as d:
        return Path(draw(Path(d) / "picture.png")).read_bytes()


def _report_text(report: Any) -> Text:
    return Text("report-text", "Full text report with the verdicts", report.text())


# ----------------------------------------------------------------------------- LR study


def lr_view(report: Any) -> View:
    """The LR study (:class:`medtune.dashboards.report.Report`)."""
    from medtune.dashboards.comparison import verdict

    rows = []
    for method, r in report.table.iterrows():
        rows.append({
            "method": str(method), "seeds": str(int(r["seeds"])), "test Dice": _cell(r["test_dice_mean"], r["test_dice_std"]),
            "final Dice": _cell(r["final_dice_mean"], r["final_dice_std"]),
            "best Dice": _cell(r["best_dice_mean"], r["best_dice_std"]),
            f"epochs to Dice ≥ {report.target_dice:g}": f"{_cell(r['epochs_to_target_mean'], r['epochs_to_target_std'], '.1f')} "
                                                        f"({int(r['reached_target'])}/{int(r['seeds'])})",
            "AUC": _cell(r["auc_mean"], r["auc_std"]), "oscillation": _cell(r["oscillation_mean"], r["oscillation_std"]),
            "diverged": f"{int(r['diverged'])}/{int(r['seeds'])}",
        })
    blocks: list[Block] = [
        Table("comparison", "Comparison table", pd.DataFrame(rows),
              "mean ± sample std over seeds; test Dice on the held-out split with the final model, the other columns "
              "on the validation split; best first"),
        Plot("dice-curves", "Validation Dice per epoch", figures.dice_curves(report.curves)),
        Plot("lr-traces", "Learning-rate traces", figures.lr_traces(report.curves)),
    ]
    if report.qtable:
        tables = report.qtable.get("tables") or {"qlearning": report.qtable.get("table", report.qtable)}
        for method, state in tables.items():
            blocks.append(Plot(f"qtable-{method}", f"Q-table of {method}",
                               figures.qtable_heatmap(state, title=f"Q-table of {method}")))
    elif any(m.startswith("qlearning") for m in report.table.index):
        blocks.append(Text("qtable-pending", "Q-table", "The Q-table is logged with the session's summary run, "
                           "when the session finishes."))
    if "qlearning" in report.table.index and len(report.table) > 1:
        blocks.append(Text("verdicts", "Q-learning against the best other method", "\n".join(verdict(report.table))))
    blocks.append(_report_text(report))
    return View("lr", STUDY_TITLES["lr"], report.experiment, report.session, blocks=blocks)


# ----------------------------------------------------------------------------- active learning


def al_view(report: Any) -> View:
    """The active-learning study (:class:`medtune.dashboards.al_report.ActiveLearningReport`)."""
    tables = []
    for key in ("macro", "micro"):
        rows = []
        for _, r in report.table.iterrows():
            row = {"method": r["method"]}
            for f in report.fractions:
                row[f"{f:.0%}"] = _cell(r[f"{key}@{f:g}_mean"], r[f"{key}@{f:g}_std"])
            if key == "macro":
                v = r["labels_to_target_mean"]
                row[f"labels to {report.target:.3f}"] = ("" if r["method"] == "all" else
                                                          "never" if pd.isna(v) else f"{v:.0f}")
            rows.append(row)
        tables.append(Table(f"{key}-f1", f"Test {key}-F1 at each share of the pool labeled", pd.DataFrame(rows),
                            "mean ± std over seeds" + (f"; labels to reach {report.target_rule}" if key == "macro" else "")))
    blocks: list[Block] = [tables[0], Plot("f1-curves", "F1 against the labeled share", figures.f1_curves(report.curves)),
                           tables[1], _report_text(report)]
    return View("active-learning", STUDY_TITLES["active-learning"], report.experiment, report.session, blocks=blocks)


# ----------------------------------------------------------------------------- PaSeR


def paser_view(report: Any) -> View:
    """The PaSeR study (:class:`medtune.dashboards.paser_report.PaSeRReport`)."""
    from medtune.dashboards.paser_report import decode_routing, pareto_front
    from medtune.dashboards.plots import plot_routing

    front = pareto_front(report.table) if len(report.table) else []
    labels = [report._label(r) for _, r in report.table.iterrows()]
    rows = []
    for i, (_, r) in enumerate(report.table.iterrows()):
        rows.append({
            "method": labels[i], "seeds": str(int(r["seeds"])), "IoU": _cell(r["iou_mean"], r["iou_std"]),
            "GFLOPs / image": _cell(r["gflops_mean"], r["gflops_std"], ".4f"),
            "IoU / GFLOP": _cell(r["iou_per_gflop_mean"], r["iou_per_gflop_std"], ".1f"),
            "f0 / f1 / f2 patches": f"{r['share_f0_mean']:.0%} / {r['share_f1_mean']:.0%} / {r['share_f2_mean']:.0%}"
            if pd.notna(r["share_f0_mean"]) else "",
            "IoU drop, unseen noise": _cell(r["iou_drop_pct_mean"], r["iou_drop_pct_std"], "+.1f") + " %",
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
                            _png(lambda p, r=routing, lam=lam: plot_routing(r, p, title=f"PaSeR routing at lam={lam:g}"))))
    blocks.append(_report_text(report))
    return View("paser", STUDY_TITLES["paser"], report.experiment, report.session, blocks=blocks)


# ----------------------------------------------------------------------------- APGA


def apga_view(report: Any) -> View:
    """The APGA study (:class:`medtune.dashboards.apga_report.APGAReport`)."""
    from medtune.dashboards.apga_report import collapsed, decode_masks
    from medtune.dashboards.plots import plot_masks

    rows = []
    for _, r in report.table.iterrows():
        rows.append({
            "method": r["method"], "regime": r["regime"], "accuracy": _cell(r["accuracy_mean"], r["accuracy_std"]),
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
        blocks.append(Image(f"masks-{regime}", f"Masks, regime {regime} (first seed; red = erased)",
                            _png(lambda p, d=decoded, g=regime: plot_masks(d, p, title=f"masks ({g}, first seed)"))))
    warnings = collapsed(report.trials) if len(report.trials) else []
    if warnings:
        blocks.append(Text("warnings", "Warnings", "\n".join(warnings), warning=True))
    blocks.append(_report_text(report))
    return View("apga", STUDY_TITLES["apga"], report.experiment, report.session, blocks=blocks)


# Report class name -> its view (the report modules import nothing of this one, nor it of them).
BUILDERS: dict[str, Callable[[Any], View]] = {"Report": lr_view, "ActiveLearningReport": al_view,
                                              "PaSeRReport": paser_view, "APGAReport": apga_view}


def view_of(report: Any, status: str = "") -> View:
    """The view of any study's report; ``status`` is shown under the title."""
    try:
        build = BUILDERS[type(report).__name__]
    except KeyError:
        raise TypeError(f"no view for a {type(report).__name__}") from None
    view = build(report)
    view.status = status
    return view


def run_status(runs: list) -> str:
    """``"12 runs: 9 finished, 3 running"`` from MLflow runs' statuses."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.info.status] = counts.get(run.info.status, 0) + 1
    words = {"FINISHED": "finished", "RUNNING": "running", "FAILED": "failed", "KILLED": "killed",
             "SCHEDULED": "scheduled"}
    order = list(words)
    parts = [f"{n} {words.get(s, s.lower())}" for s, n in
             sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))]
    return f"{len(runs)} run{'' if len(runs) == 1 else 's'}: {', '.join(parts)}"


def load_view(tracking_uri: str, experiment: str, session: str | None = None) -> View:
    """Build ``experiment``'s view (its latest session unless ``session``) from the MLflow store.

    Raises:
        InputError: unknown experiment, or one with no trial runs.
    """
    from medtune.cluster.studies import study_module
    from medtune.dashboards.report import _client, session_runs, study_of

    _, session, runs = session_runs(_client(tracking_uri), tracking_uri, experiment, session)
    report = study_module(study_of(runs)).build_report(tracking_uri, experiment, session)
    return view_of(report, run_status(runs))
