"""The tags medtune puts on MLflow runs: the contract between the writers (the Tune callback, the summary run)
and the readers (reports, dashboard). One MLflow experiment per spec ``name``; in it, one run per trial
(``medtune.kind = trial``) and one summary run per session (``medtune.kind = summary``), each tagged with its
session.
"""

__all__ = [
    "EXPLOITS_KEY", "KIND_SUITE", "KIND_SUITE_TASK", "TAG_ERROR", "TAG_KIND", "TAG_PARENT", "TAG_SESSION",
    "TAG_SUITE_EXIT", "TAG_SUITE_EXPERIMENT", "TAG_SUITE_MESSAGE", "TAG_SUITE_SESSION", "TAG_SUITE_TASK",
    "TAG_TRIAL",
]

TAG_SESSION = "medtune.session"  # one `medtune run`: "<name>-<YYYYmmdd-HHMMSS>"
TAG_TRIAL = "medtune.trial_id"  # the Tune trial a run belongs to
TAG_KIND = "medtune.kind"  # "trial" or "summary"
TAG_ERROR = "medtune.error"  # on a failed trial's run (status FAILED): its error, one line
EXPLOITS_KEY = "pbt_exploits"  # a PBT member's exploits so far: in its config, logged as a per-epoch metric
# A suite (``medtune suite``): in the suite's experiment, one parent run (``medtune.kind = suite``) per suite
# session, and under it (``mlflow.parentRunId``) one run per task (``medtune.kind = suite-task``) tagged with:
KIND_SUITE, KIND_SUITE_TASK = "suite", "suite-task"
TAG_SUITE_TASK = "medtune.suite.task"  # the task's name
TAG_SUITE_EXPERIMENT = "medtune.suite.experiment"  # its MLflow experiment
TAG_SUITE_SESSION = "medtune.suite.session"  # its session ("" when none was created)
TAG_SUITE_EXIT = "medtune.suite.exit"  # how its session ended: 0, 1, 2 or 130
TAG_SUITE_MESSAGE = "medtune.suite.message"  # why, when it did not finish
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag
