"""Everything that talks to Ray as a service: the CLI, spec loading, the study registry, Tuner assembly, the MLflow
tracking callback, the local head and job submission. Every name loads on first use.
"""

from medtune.util import lazy_exports

_PUBLIC = {
    "compare": "medtune.cluster.studies.compare",
    "STUDIES": "medtune.cluster.studies.registry",
    "Study": "medtune.cluster.studies.registry",
    "get_study": "medtune.cluster.studies.registry",
    "load_spec": "medtune.cluster.studies.registry",
    "run": "medtune.cluster.studies.registry",
    "resume": "medtune.cluster.studies.registry",
    "build_report": "medtune.cluster.studies.registry",
    "load_view": "medtune.cluster.studies.registry",
    "SpecError": "medtune.cluster.studies.spec",
    "ResourcesConfig": "medtune.cluster.studies.spec",
    "MLflowTracker": "medtune.cluster.runs.tracking",
    "default_tracking_uri": "medtune.cluster.runs.store",
    "ensure_experiment": "medtune.cluster.runs.store",
    "submit": "medtune.cluster.cli.jobs",
    "main": "medtune.cluster.cli.main",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
