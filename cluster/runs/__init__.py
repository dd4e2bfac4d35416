"""What a run writes and shows: the MLflow tracking callback (:mod:`.tracking`), the tracking store and the session
folders' storage (:mod:`.store`, :mod:`.storage`), the fail-fast callback that stops a run whose every trial would
fail (:mod:`.fail_fast`), the console's verbosity (:mod:`.console`) and the progress lines (:mod:`.progress`).

The bottom layer of :mod:`medtune.cluster`: it imports none of ``cli``, ``ops`` or ``studies``.
"""

__all__: list[str] = []
