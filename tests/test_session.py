"""``medtune report --sync SESSION_DIR`` on a finished session of every study: the backlog is delivered, the summary
run logged, exit 0.

Each test works on a copy of a smoke session (the session folder and its SQLite store, see tests/conftest.py), so
the shared store the dashboard tests read keeps its own summary runs. The copy's backlog holds one record the
server "missed" (a tag on a trial run), which the sync must deliver before it logs the summary.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from medtune.cluster.cli.main import main
from medtune.cluster.studies.session import BACKLOG_FILE
from medtune.tags import TAG_KIND, TAG_SESSION, TAG_TRIAL

SYNCED_TAG = "medtune.test-synced"


def copy_session(session: Path, dest: Path) -> Path:
    """A copy of ``session`` and of the SQLite store it logged to, under ``dest``; the copy's ``medtune.json``
    and the copied store's artifact locations point into ``dest``. Returns the copied session folder."""
    info = json.loads((session / "medtune.json").read_text())
    store = Path(info["tracking_uri"][len("sqlite:///"):])
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(store, dest / "mlflow.db")
    copied = dest / session.name
    shutil.copytree(session, copied, ignore=shutil.ignore_patterns("checkpoint_*"))
    info["tracking_uri"] = f"sqlite:///{dest / 'mlflow.db'}"
    (copied / "medtune.json").write_text(json.dumps(info, indent=1))
    with sqlite3.connect(dest / "mlflow.db") as db:  # new artifacts (the new summary's) go into the copy
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)",
                   (store.parent.as_uri(), dest.as_uri()))
    db.close()
    return copied


def missed_record(session: Path) -> str:
    """Put one record the server never got into the session's backlog (a tag on its first trial run); returns
    that run's id."""
    from mlflow.tracking import MlflowClient

    info = json.loads((session / "medtune.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    run = client.search_runs([info["experiment_id"]], max_results=1, filter_string=(
        f"tags.`{TAG_SESSION}` = '{info['session']}' and tags.`{TAG_KIND}` = 'trial'"))[0]
    op = {"op": "tag", "trial": run.data.tags[TAG_TRIAL], "key": SYNCED_TAG, "value": "delivered"}
    (session / BACKLOG_FILE).write_text(json.dumps(op) + "\n")
    return run.info.run_id


def summaries(session: Path) -> list:
    from mlflow.tracking import MlflowClient

    info = json.loads((session / "medtune.json").read_text())
    return MlflowClient(info["tracking_uri"]).search_runs([info["experiment_id"]], filter_string=(
        f"tags.`{TAG_SESSION}` = '{info['session']}' and tags.`{TAG_KIND}` = 'summary'"))


def check_sync(session: Path, capsys) -> str:
    """``medtune report --sync`` on ``session`` (a finished one, with a backlog): exit 0, the record delivered,
    one summary run, a new one, holding the HTML report. Returns the command's standard output."""
    from mlflow.tracking import MlflowClient

    assert (session / "report").is_dir()  # finished
    before = {r.info.run_id for r in summaries(session)}
    trial_run = missed_record(session)
    code = main(["report", "--sync", str(session)])
    out, err = capsys.readouterr()
    assert code == 0, out[-3000:] + err[-3000:]
    info = json.loads((session / "medtune.json").read_text())
    client = MlflowClient(info["tracking_uri"])
    assert client.get_run(trial_run).data.tags.get(SYNCED_TAG) == "delivered"
    assert not (session / BACKLOG_FILE).exists()
    assert "delivered 1 of 1 buffered MLflow records" in out
    assert f"logged the summary run of session {info['session']}" in out
    (summary,) = summaries(session)
    assert summary.info.run_id not in before and summary.info.status == "FINISHED"
    assert "report.html" in [a.path for a in client.list_artifacts(summary.info.run_id)]
    return out


@pytest.mark.integration
@pytest.mark.parametrize("smoke", ["lr_smoke", "apga_smoke", "al_smoke", "paser_smoke"])
def test_report_sync_of_a_finished_session_delivers_the_backlog_and_logs_the_summary(smoke, all_studies, request,
                                                                                   tmp_path, capsys):
    session = copy_session(request.getfixturevalue(smoke)["session"], tmp_path)
    check_sync(session, capsys)
