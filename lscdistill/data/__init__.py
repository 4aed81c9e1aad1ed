"""Labeled data for extraction and training: scikit-learn's digits, image files through timm's readers (a folder
of class sub-folders, a ``.tar`` of one), or precomputed features; a torch ``Dataset`` per source and one
``DataLoader`` per split of a run (:class:`SplitLoader`).

Every source knows its labels up front (``labels [N]``), so a run can select, cap and shard samples exactly
(each sample in exactly one shard, none repeated) before any batch is read. Training augmentation is timm's
(:class:`Augment`), seeded per sample and epoch: the same batches with any number of workers and after a resume.

The modules: :mod:`.loader` (the :class:`LabeledData` base, :class:`SplitLoader`), :mod:`.transforms`
(:class:`Preprocess`, :class:`Augment`), :mod:`.images` and :mod:`.digits` (image sources), :mod:`.features`
(feature matrices) and :mod:`.labels` (label checks, instance labels, selection and shards).
"""

from .digits import DIGITS_IMG_SIZE, digits_split, is_digits
from .features import FeatureData, load_features
from .images import ImageData, load_images
from .labels import select_indices, use_instance_labels
from .loader import MAX_DEFAULT_WORKERS, LabeledData, SplitLoader, default_workers
from .transforms import Augment, Preprocess, resolve_preprocess

__all__ = [
    "DIGITS_IMG_SIZE",
    "MAX_DEFAULT_WORKERS",
    "Augment",
    "FeatureData",
    "ImageData",
    "LabeledData",
    "Preprocess",
    "SplitLoader",
    "default_workers",
    "digits_split",
    "is_digits",
    "load_features",
    "load_images",
    "resolve_preprocess",
    "select_indices",
    "use_instance_labels",
]
