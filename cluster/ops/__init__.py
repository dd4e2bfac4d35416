"""Operations: a Ray cluster as a service (``medtune cluster up | down | status | join``, :mod:`.service`), MLflow's
login for it (:mod:`.mlflow_auth`), ``ray start`` for a loopback worker (:mod:`.raystart`) and the deployment
templates in ``deploy/`` (KubeRay, ``ray up``).

Below :mod:`medtune.cluster.studies` and above :mod:`medtune.cluster.runs`.
"""

__all__: list[str] = []
