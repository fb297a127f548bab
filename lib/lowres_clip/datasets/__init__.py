"""Datasets: EuroSAT (CoOp split), Circuits (official CSV or JSON split) and any ImageFolder.

Every loader returns a :class:`SplitDataset`: an image root, the ordered class names and
``train`` / ``val`` / ``test`` lists of :class:`Sample` (path relative to the image root, label).
Loaders validate eagerly (missing root, absent files, class folders, class-count mismatches) and
raise :class:`DatasetError` with actionable messages, one line per problem, so nothing downstream
sees a broken dataset. Images a run must leave out (e.g. a corrupt file that cannot be replaced) are
named in ``exclude`` (paths relative to the image root; :func:`load_dataset`, ``RunConfig.exclude``).
The exact folder layouts are in ``docs-data.md``; ``python -m lowres_clip.cli check-data`` checks a
dataset, images decoded (:mod:`lowres_clip.imagecheck`).
"""

from __future__ import annotations

from .base import (
    DATA_ENV, DatasetError, GROUPS, HEAD_MIN_IMAGES, IMAGEFOLDER_PREFIX, IMAGE_EXTENSIONS, SPLITS,
    SPLIT_META_KEY, Sample, SplitDataset, TAIL_MAX_IMAGES, default_data_root, frequency_groups,
    ids_fingerprint,
)
from .checks import apply_exclude, require_files, split_problems, val_coverage_note
from .download import (
    CIRCUITS_URL, EUROSAT_IMAGE_DIR, EUROSAT_SPLIT_FILE, EUROSAT_SPLIT_GDRIVE_ID, EUROSAT_URL,
    circuits_instructions, download_eurosat, eurosat_instructions,
)
from .eurosat import load_eurosat
from .circuits import CIRCUITS_IMAGE_DIRS, CIRCUITS_SPLIT_CSV, load_circuits
from .imagefolder import imagefolder_listing, listing_fingerprint, load_imagefolder
from .loading import LOADERS, dataset_name_problem, load_dataset
from .torch_dataset import ImageDataset

__all__ = [
    "apply_exclude", "CIRCUITS_IMAGE_DIRS", "circuits_instructions", "CIRCUITS_SPLIT_CSV", "CIRCUITS_URL",
    "DATA_ENV", "dataset_name_problem", "DatasetError", "default_data_root", "download_eurosat",
    "EUROSAT_IMAGE_DIR", "eurosat_instructions", "EUROSAT_SPLIT_FILE", "EUROSAT_SPLIT_GDRIVE_ID",
    "EUROSAT_URL", "frequency_groups", "GROUPS", "HEAD_MIN_IMAGES", "ids_fingerprint", "IMAGE_EXTENSIONS",
    "ImageDataset", "imagefolder_listing", "IMAGEFOLDER_PREFIX", "listing_fingerprint", "load_circuits",
    "load_dataset", "load_eurosat", "load_imagefolder", "LOADERS", "require_files", "Sample",
    "SPLIT_META_KEY", "split_problems", "SplitDataset", "SPLITS", "TAIL_MAX_IMAGES", "val_coverage_note",
]
