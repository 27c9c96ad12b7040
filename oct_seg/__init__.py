"""oct_seg: fluid segmentation in retinal OCT B-scans (Keras 3)."""

__version__ = "0.1.0"
