"""The studies: the spec base and its checks (:mod:`.spec`), the registry that loads a spec into its study
(:mod:`.registry`), the session a study runs in (:mod:`.session`), the five studies (:mod:`.lr_study`,
:mod:`.al_study`, :mod:`.apga_study`, :mod:`.paser_study`, :mod:`.own_study`), ``medtune.compare``
(:mod:`.compare`), the tuned comparison (:mod:`.tuning`) and the suite of tasks (:mod:`.suite`).

Above :mod:`medtune.cluster.runs` and :mod:`medtune.cluster.ops`, below :mod:`medtune.cluster.cli`.
"""

__all__: list[str] = []
