"""Data: readers, the Duke DME converter, synthetic phantoms, tf.data pipeline, patient folds."""
from oct_seg.data.duke import convert_duke
from oct_seg.data.phantom import make_phantom, write_phantom_dataset
from oct_seg.data.pipeline import (Augment, add_gaussian_noise, fit_to_size, make_dataset,
                                   make_patch_dataset)
from oct_seg.data.readers import DataError, ScanSet, read_dataset, read_image, read_mask
from oct_seg.data.retouch import convert_retouch
from oct_seg.data.splits import check_folds, make_folds, read_splits, write_splits

__all__ = [
    "Augment", "DataError", "ScanSet", "add_gaussian_noise", "check_folds", "convert_duke", "convert_retouch",
    "fit_to_size", "make_dataset", "make_folds", "make_patch_dataset", "make_phantom", "read_dataset", "read_image",
    "read_mask", "read_splits", "write_phantom_dataset", "write_splits",
]
