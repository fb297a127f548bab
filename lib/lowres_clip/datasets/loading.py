"""Loading a dataset by name: the loaders by name, name checks and :func:`load_dataset`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from .base import DatasetError, IMAGEFOLDER_PREFIX, SplitDataset, default_data_root
from .checks import apply_exclude, require_files
from .circuits import load_circuits
from .eurosat import load_eurosat
from .imagefolder import load_imagefolder

LOADERS: dict[str, Callable[..., SplitDataset]] = {
    "eurosat": load_eurosat,
    "circuits": load_circuits,
}


def dataset_name_problem(name: str) -> str | None:
    """One line saying why ``name`` is not a dataset name, or ``None`` when it is one."""
    if not isinstance(name, str) or not name:
        return f"dataset: expected a name such as 'eurosat', got {name!r}."
    if name.startswith(IMAGEFOLDER_PREFIX):
        return None if name[len(IMAGEFOLDER_PREFIX):].strip() else \
            f"dataset {name!r}: give the folder, e.g. 'imagefolder:/data/my_images'."
    if name not in LOADERS:
        return f"Unknown dataset {name!r}; choose one of {sorted(LOADERS)} or 'imagefolder:<path>'."
    return None


def load_dataset(name: str, root: str | Path | None = None, exclude: Iterable[str] = (),
                 check_files: bool = True, **kwargs) -> SplitDataset:
    """Load a dataset by name (``eurosat``, ``circuits``, or ``imagefolder:<path>``).

    Args:
        name: the dataset.
        root: data root (``eurosat`` / ``circuits``); defaults to :func:`default_data_root`
            (``$LOWRES_CLIP_DATA``). Unused for ImageFolders (the path is in the name).
        exclude: image paths (relative to the image root) left out of every split, e.g. a corrupt
            file that cannot be replaced (:func:`apply_exclude`).
        check_files: verify that every remaining split entry exists.
        **kwargs: loader options (ImageFolder: ``split_file``, ``seed``, ``fractions``, ``resplit``).
    """
    problem = dataset_name_problem(name)
    if problem:
        raise DatasetError(problem)
    if name.startswith(IMAGEFOLDER_PREFIX):
        ds = load_imagefolder(name[len(IMAGEFOLDER_PREFIX):], check_files=False, **kwargs)
    else:
        ds = LOADERS[name](default_data_root() if root is None else root, check_files=False, **kwargs)
    ds = apply_exclude(ds, exclude)
    if check_files:
        require_files(ds)
    return ds
