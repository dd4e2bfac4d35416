"""Everything that talks to Ray as a service: the CLI, spec loading, the study registry, Tuner assembly, the MLflow
tracking callback, the local head and job submission. Every name loads on first use.
"""

from medtune.util import lazy_exports

_PUBLIC = {
    "compare": "medtune.cluster.compare",
    "STUDIES": "medtune.cluster.studies",
    "Study": "medtune.cluster.studies",
    "get_study": "medtune.cluster.studies",
    "load_spec": "medtune.cluster.studies",
    "run": "medtune.cluster.studies",
    "resume": "medtune.cluster.studies",
    "build_report": "medtune.cluster.studies",
    "load_view": "medtune.cluster.studies",
    "SpecError": "medtune.cluster.spec",
    "ResourcesConfig": "medtune.cluster.spec",
    "MLflowTracker": "medtune.cluster.tracking",
    "default_tracking_uri": "medtune.cluster.store",
    "ensure_experiment": "medtune.cluster.store",
    "submit": "medtune.cluster.jobs",
    "main": "medtune.cluster.cli",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
