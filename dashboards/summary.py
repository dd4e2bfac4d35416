"""The session's summary run: the report's files, its self-contained HTML page and its summary metrics in MLflow.

Works for any study's report (anything with ``write(folder)``, ``view()``, ``summary_metrics()``,
``experiment_id`` and ``session``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medtune.dashboards import html_report
from medtune.dashboards.runs import mlflow_client
from medtune.tags import TAG_KIND, TAG_SESSION

__all__ = ["log_summary"]

log = logging.getLogger(__name__)


def log_summary(tracking_uri: str, report: Any, folder: str | Path) -> str:
    """Create the session's summary run holding the report's artifacts and its HTML report (any study's report);
    returns its run id.

    A session has one summary: an earlier one (a finished session resumed again) is deleted.
    """
    paths = report.write(folder)  # everything is written before the old summary goes
    try:
        paths.append(html_report.write(report.view(), Path(folder) / "report.html"))
    except Exception as exc:  # the tables and plots above still make a summary
        log.warning("the HTML report could not be written (%s: %s); the summary run has "
                                            "the other files", type(exc).__name__, exc)
    client = mlflow_client(tracking_uri)
    for old in client.search_runs(
        [report.experiment_id],
        filter_string=f"tags.`{TAG_KIND}` = 'summary' and tags.`{TAG_SESSION}` = '{report.session}'",
    ):
        client.delete_run(old.info.run_id)
    run = client.create_run(
        report.experiment_id,
        run_name=f"summary-{report.session}",
        tags={TAG_SESSION: report.session, TAG_KIND: "summary"},
    )
    rid = run.info.run_id
    for path in paths:
        client.log_artifact(rid, str(path))
    for key, value in report.summary_metrics().items():
        client.log_metric(rid, key, value)
    client.set_terminated(rid, status="FINISHED")
    return rid
