"""Datasets: EuroSAT (CoOp split), Circuits (JSON or CSV split) and any ImageFolder.

Every loader returns a :class:`SplitDataset`: an image root, the ordered class names and
``train`` / ``val`` / ``test`` lists of :class:`Sample` (path relative to the image root, label).
Loaders validate eagerly (missing root, absent files, class-count mismatches) and raise
:class:`DatasetError` with one actionable message, so nothing downstream sees a broken dataset.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .atomic import atomic_write_text

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DATA_ENV = "LOWRES_CLIP_DATA"

EUROSAT_SPLIT_FILE = "split_zhou_EuroSAT.json"
EUROSAT_IMAGE_DIR = "2750"
EUROSAT_URL = "https://madm.dfki.de/files/sentinel/EuroSAT.zip"
EUROSAT_SPLIT_GDRIVE_ID = "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"
CIRCUITS_URL = "https://figshare.com (search: 'Low-Resource Image Transfer Evaluation Benchmark')"


class DatasetError(ValueError):
    """A dataset is missing, incomplete or inconsistent; the message says how to fix it."""


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
    """

    name: str
    image_root: Path
    classnames: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)

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
    repo = Path(__file__).resolve().parents[2]
    shared = repo.parent / "shared" / "data"
    return shared if shared.is_dir() else repo / "data"


def _require_dir(path: Path, what: str, hint: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{what} not found at '{path}'. {hint}")


def _check_files(name: str, image_root: Path, splits: dict[str, list[Sample]]) -> None:
    missing = [s.path for ss in splits.values() for s in ss if not (image_root / s.path).is_file()]
    if missing:
        shown = ", ".join(missing[:5])
        raise DatasetError(
            f"{name}: {len(missing)} split entries name files absent from '{image_root}' "
            f"(e.g. {shown}). Put the images there or point the data root at the right folder."
        )


def _check_labels(name: str, splits: dict[str, list[Sample]], num_classes: int) -> None:
    bad = {s.label for ss in splits.values() for s in ss if not 0 <= s.label < num_classes}
    if bad:
        raise DatasetError(
            f"{name}: split labels {sorted(bad)[:10]} fall outside the {num_classes} classes of "
            "the label map; the split and the label map do not belong together."
        )


# ----------------------------------------------------------------------------- EuroSAT
def eurosat_instructions(root: Path) -> str:
    return (
        f"EuroSAT expects '{root}/{EUROSAT_IMAGE_DIR}/<Class>/<Class>_<n>.jpg' (the folder inside "
        f"the official EuroSAT.zip, {EUROSAT_URL}) and '{root}/{EUROSAT_SPLIT_FILE}' (CoOp's split, "
        f"Google Drive id {EUROSAT_SPLIT_GDRIVE_ID}). Online, run "
        f"`python -m lowres_clip.cli download eurosat --root {root}`."
    )


def _resolve(root: Path, sub: str) -> Path:
    """Accept both the dataset folder itself and its parent data root."""
    return root / sub if (root / sub).is_dir() else root


def load_eurosat(root: str | Path, check_files: bool = True) -> SplitDataset:
    """EuroSAT RGB with the CoOp split (train 13,500 / val 5,400 / test 8,100).

    Args:
        root: the ``eurosat`` folder (holding ``2750/`` and ``split_zhou_EuroSAT.json``) or its parent.
        check_files: verify that every split entry exists on disk.
    """
    root = _resolve(Path(root), "eurosat")
    _require_dir(root, "EuroSAT root", eurosat_instructions(root))
    split_file = root / EUROSAT_SPLIT_FILE
    image_root = root / EUROSAT_IMAGE_DIR
    if not split_file.is_file() or not image_root.is_dir():
        raise DatasetError("EuroSAT is incomplete. " + eurosat_instructions(root))
    raw = _read_json(split_file)
    names: dict[int, str] = {}
    splits: dict[str, list[Sample]] = {}
    for split in SPLITS:
        entries = raw.get(split)
        if entries is None:
            raise DatasetError(f"{split_file} has no '{split}' list; expected CoOp's split format.")
        splits[split] = [Sample(str(p), int(y)) for p, y, *_ in entries]
        for p, y, *rest in entries:
            if rest:
                names.setdefault(int(y), str(rest[0]))
    classnames = [names[i] for i in sorted(names)]
    if sorted(names) != list(range(len(names))):
        raise DatasetError(f"{split_file}: labels are not 0..C-1: {sorted(names)}")
    ds = SplitDataset("eurosat", image_root, classnames, splits)
    _check_labels("eurosat", splits, len(classnames))
    if check_files:
        _check_files("eurosat", image_root, splits)
    return ds


def download_eurosat(root: str | Path) -> Path:
    """Download EuroSAT RGB and CoOp's split into ``root/eurosat``; offline, explain what to put where."""
    from torchvision.datasets.utils import download_and_extract_archive, download_file_from_google_drive

    dest = Path(root) / "eurosat"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if not (dest / EUROSAT_IMAGE_DIR).is_dir():
            download_and_extract_archive(EUROSAT_URL, download_root=str(dest), remove_finished=True)
        if not (dest / EUROSAT_SPLIT_FILE).is_file():
            download_file_from_google_drive(EUROSAT_SPLIT_GDRIVE_ID, str(dest), EUROSAT_SPLIT_FILE)
    except Exception as exc:  # network errors come in many types
        raise DatasetError(f"Could not download EuroSAT ({type(exc).__name__}: {exc}). " + eurosat_instructions(dest)) from exc
    return dest


# ----------------------------------------------------------------------------- Circuits
def circuits_instructions(root: Path) -> str:
    return (
        f"Circuits expects images in '{root}/images/' (or directly in '{root}') and either "
        f"'{root}/split_config.json' + '{root}/label_map.json' or the official CSV form "
        f"'{root}/label_map.csv' + '{root}/{{train,val,test}}.csv' (id, filename, class id). "
        f"The images are distributed only through the paper's figshare record: {CIRCUITS_URL}."
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"Cannot read '{path}': {exc}") from exc


def _read_csv_rows(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except OSError as exc:
        raise DatasetError(f"Cannot read '{path}': {exc}") from exc
    if rows and not rows[0][-1].strip().lstrip("-").isdigit():
        rows = rows[1:]  # header
    return rows


def _find_split_csv(root: Path, split: str) -> Path | None:
    for cand in (f"{split}.csv", f"{split}_split.csv", f"split_{split}.csv"):
        if (root / cand).is_file():
            return root / cand
    return None


def load_circuits(root: str | Path, check_files: bool = True) -> SplitDataset:
    """Circuits (Zhang, Doughty, Snoek, CVPR 2024): 32 classes, train 154 / val 100 / test 1,078.

    Accepts the JSON form (``split_config.json`` + ``label_map.json``) and the official CSV form
    (``label_map.csv`` + per-split CSVs of id, filename, class id). Images sit in ``images/`` or
    in the root itself.
    """
    root = _resolve(Path(root), "circuits")
    _require_dir(root, "Circuits root", circuits_instructions(root))
    if (root / "split_config.json").is_file() and (root / "label_map.json").is_file():
        lm = _read_json(root / "label_map.json")
        classnames = [lm[k] for k in sorted(lm, key=int)]
        raw = _read_json(root / "split_config.json")
        splits = {}
        for split in SPLITS:
            if split not in raw:
                raise DatasetError(f"{root / 'split_config.json'} has no '{split}' list.")
            splits[split] = [Sample(str(e[0]), int(e[1])) for e in raw[split]]
    elif (root / "label_map.csv").is_file():
        rows = _read_csv_rows(root / "label_map.csv")
        pairs = {}
        for r in rows:
            # either (class id, name) or (name, class id)
            a, b = r[0].strip(), r[1].strip()
            cid, name = (int(a), b) if a.lstrip("-").isdigit() else (int(b), a)
            pairs[cid] = name
        classnames = [pairs[i] for i in sorted(pairs)]
        splits = {}
        for split in SPLITS:
            path = _find_split_csv(root, split)
            if path is None:
                raise DatasetError(f"Circuits: no CSV for split '{split}'. " + circuits_instructions(root))
            splits[split] = [Sample(r[1].strip(), int(r[2])) for r in _read_csv_rows(path)]
    else:
        raise DatasetError("Circuits split files not found. " + circuits_instructions(root))
    image_root = root / "images" if (root / "images").is_dir() else root
    _check_labels("circuits", splits, len(classnames))
    if check_files:
        _check_files("circuits", image_root, splits)
    return SplitDataset("circuits", image_root, classnames, splits)


# ----------------------------------------------------------------------------- ImageFolder
def load_imagefolder(
    root: str | Path,
    split_file: str | Path | None = None,
    seed: int = 1,
    fractions: tuple[float, float, float] = (0.5, 0.2, 0.3),
) -> SplitDataset:
    """Any ``root/<class>/<image>`` folder, with a seeded train/val/test split made once and saved.

    The split is written (CoOp's JSON format) to ``split_file`` (default
    ``root/split_lowres_clip_s{seed}.json``) the first time and read back afterwards, so every
    later run and every method sees the same split.
    """
    root = Path(root)
    _require_dir(root, "ImageFolder root", "Expected one subfolder per class holding images.")
    split_path = Path(split_file) if split_file else root / f"split_lowres_clip_s{seed}.json"
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"ImageFolder root '{root}' has no class subfolders.")
    if not split_path.is_file():
        if abs(sum(fractions) - 1.0) > 1e-6:
            raise DatasetError(f"split fractions must sum to 1, got {fractions}")
        rng = random.Random(seed)
        out: dict[str, list] = {s: [] for s in SPLITS}
        for label, cname in enumerate(classes):
            files = sorted(
                f"{cname}/{p.name}" for p in (root / cname).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
            )
            rng.shuffle(files)
            n_train = max(1, round(len(files) * fractions[0]))
            n_val = round(len(files) * fractions[1])
            parts = (files[:n_train], files[n_train : n_train + n_val], files[n_train + n_val :])
            for split, part in zip(SPLITS, parts):
                out[split] += [[p, label, cname] for p in part]
        split_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(split_path, json.dumps(out, indent=1))
    raw = _read_json(split_path)
    splits = {s: [Sample(str(e[0]), int(e[1])) for e in raw[s]] for s in SPLITS}
    _check_labels(root.name, splits, len(classes))
    _check_files(root.name, root, splits)
    return SplitDataset(root.name, root, classes, splits)


# ----------------------------------------------------------------------------- registry
LOADERS: dict[str, Callable[..., SplitDataset]] = {
    "eurosat": load_eurosat,
    "circuits": load_circuits,
}


def load_dataset(name: str, root: str | Path | None = None, **kwargs) -> SplitDataset:
    """Load a dataset by name (``eurosat``, ``circuits``, or ``imagefolder:<path>``).

    ``root`` defaults to :func:`default_data_root` (``$LOWRES_CLIP_DATA``).
    """
    if name.startswith("imagefolder:"):
        return load_imagefolder(name.split(":", 1)[1], **kwargs)
    if name not in LOADERS:
        raise DatasetError(f"Unknown dataset {name!r}; choose one of {sorted(LOADERS)} or 'imagefolder:<path>'.")
    if root is None:
        root = default_data_root()
    return LOADERS[name](root, **kwargs)


# ----------------------------------------------------------------------------- torch view
class ImageDataset:
    """A torch ``Dataset`` over samples: returns ``(image_tensor, label, index)``.

    A missing or unreadable image raises :class:`DatasetError` naming the file.
    """

    def __init__(self, image_root: str | Path, samples: Sequence[Sample], transform: Callable | None = None):
        self.image_root = Path(image_root)
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, i: int):
        from PIL import Image, UnidentifiedImageError

        path = self.image_root / self.samples[i].path
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"Cannot read image '{path}': {exc}") from exc

    def __getitem__(self, i: int):
        img = self.load_image(i)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.samples[i].label, i
