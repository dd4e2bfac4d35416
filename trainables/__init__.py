"""What runs inside a trial: the data (the phantom, Decathlon folders, classification images, PaSeR segmentation),
the 3D segmentation loop of the LR study (any of seven
MONAI networks), the active-learning roles and their Ray actors, the APGA loop and the
PaSeR models. Every name loads on first use.
"""

from medtune.util import lazy_exports

_PUBLIC = {
    "LRControl": "medtune.trainables.lr_control",
    "LRControlConfig": "medtune.trainables.lr_control",
    "make_optimizer": "medtune.trainables.lr_control",
    "DataConfig": "medtune.trainables.lr_data",
    "SegmentationData": "medtune.trainables.lr_data",
    "load_split": "medtune.trainables.lr_data",
    "SegmentationSplit": "medtune.trainables.lr_data",
    "split_datalists": "medtune.trainables.lr_data",
    "make_phantom": "medtune.trainables.lr_data",
    "load_decathlon": "medtune.trainables.lr_data",
    "ModelConfig": "medtune.trainables.lr_segmentation",
    "build_network": "medtune.trainables.lr_networks",
    "TrainConfig": "medtune.trainables.lr_segmentation",
    "train_segmentation": "medtune.trainables.lr_segmentation",
    "ClassificationDataConfig": "medtune.trainables.classification_data",
    "ClassificationData": "medtune.trainables.classification_data",
    "load_classification": "medtune.trainables.classification_data",
    "ActiveLearningConfig": "medtune.trainables.al_config",
    "Annotator": "medtune.trainables.al_annotator",
    "AnnotationQueue": "medtune.trainables.al_annotator",
    "Learner": "medtune.trainables.al_learner",
    "run_active_learning": "medtune.trainables.active_learning",
    "train_active_learning": "medtune.trainables.active_learning_actors",
    "AugmentationConfig": "medtune.trainables.augmentation",
    "train_augmentation": "medtune.trainables.augmentation",
    "PaSeRDataConfig": "medtune.trainables.paser_data",
    "load_paser_data": "medtune.trainables.paser_data",
    "PaSeRModelsConfig": "medtune.trainables.paser_models",
    "train_router": "medtune.trainables.paser_models",
    "train_paser": "medtune.trainables.paser_trial",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
