"""Comparisons built from MLflow: a report per study (table, verdicts, plots, its view), the paired statistics,
the live Dash page and the self-contained HTML report. Every name loads on first use.
"""

from medtune.util import lazy_exports

_PUBLIC = {
    "Report": "medtune.dashboards.lr_report",
    "ActiveLearningReport": "medtune.dashboards.al_report",
    "APGAReport": "medtune.dashboards.apga_report",
    "PaSeRReport": "medtune.dashboards.paser_report",
    "compare_runs": "medtune.dashboards.comparison",
    "verdict": "medtune.dashboards.comparison",
    "format_table": "medtune.dashboards.comparison",
    "paired_verdict": "medtune.dashboards.stats",
    "against_strongest": "medtune.dashboards.stats",
    "View": "medtune.dashboards.views",
    "run_status": "medtune.dashboards.views",
    "render": "medtune.dashboards.html_report",
    "write": "medtune.dashboards.html_report",
    "log_summary": "medtune.dashboards.summary",
    "mlflow_client": "medtune.dashboards.runs",
    "session_runs": "medtune.dashboards.runs",
    "create_app": "medtune.dashboards.app",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
