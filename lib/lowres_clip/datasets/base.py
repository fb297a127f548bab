"""What every loader returns: :class:`SplitDataset` of :class:`Sample` lists, :class:`DatasetError`, the
head/medium/tail frequency groups, the default data root and helpers the loaders share."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DATA_ENV = "LOWRES_CLIP_DATA"
IMAGEFOLDER_PREFIX = "imagefolder:"
HEAD_MIN_IMAGES = 100
TAIL_MAX_IMAGES = 20
GROUPS = ("head", "medium", "tail")
SPLIT_META_KEY = "lowres_clip"


class DatasetError(ValueError):
    """A dataset is missing, incomplete or inconsistent; the message says how to fix it (one line per problem)."""


@dataclass(frozen=True)
class Sample:
    """One image: ``path`` relative to the dataset's image root, integer ``label``."""

    path: str
    label: int


@dataclass
class SplitDataset:
    """A dataset with fixed splits.

    Attributes:
        name: short dataset name (``eurosat``, ``circuits`` or the ImageFolder's folder name).
        image_root: folder the sample paths are relative to.
        classnames: class names ordered by label.
        splits: ``{"train"|"val"|"test": [Sample, ...]}``.
        natural_long_tail: the class frequencies are a property of the dataset worth reporting
            (Circuits): :meth:`natural_groups` gives head/medium/tail groups from them.
        layout_hint: where the loader expects the files (appended to "nothing found" messages).
        excluded: image paths left out of every split (``exclude`` of :func:`load_dataset`).
    """

    name: str
    image_root: Path
    classnames: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    natural_long_tail: bool = False
    layout_hint: str = ""
    excluded: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def split(self, split: str) -> list[Sample]:
        if split not in self.splits:
            raise DatasetError(f"{self.name}: no split {split!r}; available: {sorted(self.splits)}")
        return self.splits[split]

    def counts(self, split: str) -> list[int]:
        """Number of samples per class in ``split``."""
        out = [0] * self.num_classes
        for s in self.split(split):
            out[s.label] += 1
        return out

    def total_counts(self) -> list[int]:
        """Number of images per class over all splits (the class's frequency in the dataset)."""
        return [sum(c) for c in zip(*(self.counts(s) for s in self.splits))]

    def natural_groups(self) -> list[str] | None:
        """Head/medium/tail group of every class from the dataset's own frequencies
        (:func:`frequency_groups` of :meth:`total_counts`), or ``None`` for datasets without a
        natural long tail (EuroSAT, ImageFolders)."""
        return frequency_groups(self.total_counts()) if self.natural_long_tail else None


def frequency_groups(counts: Sequence[int], head_min: int = HEAD_MIN_IMAGES, tail_max: int = TAIL_MAX_IMAGES) -> list[str]:
    """Head/medium/tail labels from per-class image counts, by fixed thresholds.

    A class is ``head`` with more than ``head_min`` images (default 100), ``tail`` with fewer than
    ``tail_max`` (default 20) and ``medium`` otherwise: the many/medium/few-shot thresholds of
    ImageNet-LT (Liu et al., CVPR 2019). For Circuits the counts are the images per class over
    train+val+test (train alone is capped at 5 per class, so it cannot rank the classes): 4 head,
    10 medium and 18 tail classes.
    """
    if tail_max > head_min:
        raise ValueError(f"tail_max ({tail_max}) must not exceed head_min ({head_min}).")
    return ["head" if n > head_min else "tail" if n < tail_max else "medium" for n in counts]


def ids_fingerprint(samples: Sequence[Sample]) -> str:
    """A short stable hash of an ordered list of samples (used in cache keys)."""
    h = hashlib.sha1()
    for s in samples:
        h.update(f"{s.path}\t{s.label}\n".encode())
    return h.hexdigest()[:16]


def default_data_root() -> Path:
    """``$LOWRES_CLIP_DATA`` if set, else ``../shared/data`` beside the repo if present, else ``data/``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    shared = repo.parent / "shared" / "data"
    return shared if shared.is_dir() else repo / "data"


def _require_dir(path: Path, what: str, hint: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{what} not found at '{path}'. {hint}")


def _dataset_dir(root: Path, sub: str, markers: Iterable[str]) -> Path:
    """The dataset folder: ``root/sub`` when it exists, ``root`` itself when it holds one of the
    dataset's ``markers`` (the dataset folder was given), else ``root/sub`` (where it is expected)."""
    if (root / sub).is_dir():
        return root / sub
    if any((root / m).exists() for m in markers):
        return root
    return root / sub


def _check_labels(name: str, splits: dict[str, list[Sample]], num_classes: int) -> None:
    bad = {s.label for ss in splits.values() for s in ss if not 0 <= s.label < num_classes}
    if bad:
        raise DatasetError(
            f"{name}: split labels {sorted(bad)[:10]} fall outside the {num_classes} classes of "
            "the label map; the split and the label map do not belong together."
        )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"Cannot read '{path}': {exc}") from exc
