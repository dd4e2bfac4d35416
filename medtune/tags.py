"""The tags medtune puts on MLflow runs: the contract between the writers (the Tune callback, the summary run)
and the readers (reports, dashboard). One MLflow experiment per spec ``name``; in it, one run per trial
(``medtune.kind = trial``) and one summary run per session (``medtune.kind = summary``), each tagged with its
session.
"""

TAG_SESSION = "medtune.session"  # one `medtune run`: "<name>-<YYYYmmdd-HHMMSS>"
TAG_TRIAL = "medtune.trial_id"  # the Tune trial a run belongs to
TAG_KIND = "medtune.kind"  # "trial" or "summary"
