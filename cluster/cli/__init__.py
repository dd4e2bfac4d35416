"""The command line: ``medtune run | resume | report | suite | tune | ui | dashboard | cluster | submit | jobs``
(:mod:`.main`) and the client that submits a study to a Ray cluster as a job (:mod:`.jobs`).

The top layer of :mod:`medtune.cluster`: it may import every other part of it, and nothing imports it.
"""

__all__: list[str] = []
