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

import csv
import hashlib
import json
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .atomic import atomic_write_text

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DATA_ENV = "LOWRES_CLIP_DATA"
IMAGEFOLDER_PREFIX = "imagefolder:"

EUROSAT_SPLIT_FILE = "split_zhou_EuroSAT.json"
EUROSAT_IMAGE_DIR = "2750"
EUROSAT_URL = "https://madm.dfki.de/files/sentinel/EuroSAT.zip"
EUROSAT_SPLIT_GDRIVE_ID = "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"
CIRCUITS_URL = "https://figshare.com (search: 'Low-Resource Image Transfer Evaluation Benchmark')"
CIRCUITS_IMAGE_DIRS = ("data", "images")
"""Folders (inside ``circuits/``) searched for the images, then ``circuits/`` itself: ``data/`` is the
official release's (and LRV's loaders'), ``images/`` this project's synthetic layout."""
CIRCUITS_SPLIT_CSV = ("{split}.csv", "{split}_5_shots.csv", "{split}_split.csv", "split_{split}.csv")

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


def val_coverage_note(ds: SplitDataset) -> str | None:
    """A one-line warning when the validation split lacks images of some classes, else ``None``.

    Validation selects checkpoints (and the linear probe's C); classes without validation images do
    not take part in that choice. Circuits' official val split covers 16 of its 32 classes.
    """
    val = ds.counts("val") if "val" in ds.splits else []
    missing = [ds.classnames[c] for c, n in enumerate(val) if n == 0]
    if not val or not missing:
        return None
    shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return (f"{ds.name}: the validation split has images of only {ds.num_classes - len(missing)} of "
            f"{ds.num_classes} classes (none of {shown}); checkpoint and C selection see only those classes.")


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


def _dataset_dir(root: Path, sub: str, markers: Iterable[str]) -> Path:
    """The dataset folder: ``root/sub`` when it exists, ``root`` itself when it holds one of the
    dataset's ``markers`` (the dataset folder was given), else ``root/sub`` (where it is expected)."""
    if (root / sub).is_dir():
        return root / sub
    if any((root / m).exists() for m in markers):
        return root
    return root / sub


def split_problems(ds: SplitDataset) -> list[str]:
    """Split entries whose image is absent, one line per problem (empty: every file exists).

    A class whose images live in a folder that is absent altogether (``<Class>/<file>`` paths, as in
    EuroSAT and ImageFolders) is reported as "class X has no folder"; other absent files are
    reported together, with a few examples.
    """
    root = ds.image_root
    missing: dict[int, list[str]] = {}
    total = 0
    for ss in ds.splits.values():
        for s in ss:
            total += 1
            if not (root / s.path).is_file():
                missing.setdefault(s.label, []).append(s.path)
    if not missing:
        return []
    n_missing = sum(len(v) for v in missing.values())
    if n_missing == total:
        return [f"{ds.name}: none of the {total} split entries exists under '{root}' (e.g. {next(iter(missing.values()))[0]}). "
                + (ds.layout_hint or "Put the images there or point the data root at the right folder.")]
    lines: list[str] = []
    loose: list[str] = []
    for label, paths in sorted(missing.items()):
        folders = {p.split("/", 1)[0] for p in paths if "/" in p}
        if len(folders) == 1:
            folder = folders.pop()
            if not (root / folder).is_dir():
                name = ds.classnames[label] if 0 <= label < ds.num_classes else str(label)
                lines.append(f"{ds.name}: class {name!r} has no folder '{root / folder}' ({len(paths)} split entries "
                             "point there); restore the folder or point the data root at the complete dataset.")
                continue
        loose += paths
    if loose:
        shown = ", ".join(loose[:5])
        lines.append(f"{ds.name}: {len(loose)} split entries name files absent from '{root}' (e.g. {shown}). "
                     "Put the images there or point the data root at the right folder.")
    return lines


def require_files(ds: SplitDataset) -> None:
    """Raise :class:`DatasetError` (one line per problem) unless every split entry exists."""
    problems = split_problems(ds)
    if problems:
        raise DatasetError("\n".join(problems))


def _check_labels(name: str, splits: dict[str, list[Sample]], num_classes: int) -> None:
    bad = {s.label for ss in splits.values() for s in ss if not 0 <= s.label < num_classes}
    if bad:
        raise DatasetError(
            f"{name}: split labels {sorted(bad)[:10]} fall outside the {num_classes} classes of "
            "the label map; the split and the label map do not belong together."
        )


def _normalise(path: str, image_root: Path) -> str:
    p = str(path).strip().replace("\\", "/")
    if os.path.isabs(p):
        try:
            p = Path(p).resolve().relative_to(image_root.resolve()).as_posix()
        except ValueError:
            pass
    return p[2:] if p.startswith("./") else p


def apply_exclude(ds: SplitDataset, exclude: Iterable[str]) -> SplitDataset:
    """``ds`` without the images named in ``exclude`` (paths relative to the image root, or
    absolute paths inside it), in every split.

    Raises:
        DatasetError: an entry names no image of any split (a typo would silently exclude nothing).
    """
    wanted = {_normalise(p, ds.image_root) for p in exclude if str(p).strip()}
    if not wanted:
        return ds
    known = {s.path for ss in ds.splits.values() for s in ss}
    unknown = sorted(wanted - known)
    if unknown:
        raise DatasetError(f"{ds.name}: exclude names {len(unknown)} path(s) that are in no split, e.g. {unknown[0]!r}; "
                           f"give paths relative to '{ds.image_root}' as the error that named the image shows them.")
    splits = {k: [s for s in v if s.path not in wanted] for k, v in ds.splits.items()}
    return replace(ds, splits=splits, excluded=tuple(sorted(wanted)))


# ----------------------------------------------------------------------------- EuroSAT
def eurosat_instructions(base: Path) -> str:
    """Where EuroSAT's files go, for the dataset folder ``base`` (``<data root>/eurosat``)."""
    return (
        f"EuroSAT expects '{base}/{EUROSAT_IMAGE_DIR}/<Class>/<Class>_<n>.jpg' (the folder inside "
        f"the official EuroSAT.zip, {EUROSAT_URL}) and '{base}/{EUROSAT_SPLIT_FILE}' (CoOp's split, "
        f"Google Drive id {EUROSAT_SPLIT_GDRIVE_ID}). Online, run "
        f"`python -m lowres_clip.cli download eurosat --root {base.parent}`."
    )


def load_eurosat(root: str | Path, check_files: bool = True) -> SplitDataset:
    """EuroSAT RGB with the CoOp split (train 13,500 / val 5,400 / test 8,100).

    Args:
        root: the data root holding ``eurosat/`` (with ``2750/`` and ``split_zhou_EuroSAT.json``),
            or that ``eurosat`` folder itself.
        check_files: verify that every split entry exists on disk.
    """
    base = _dataset_dir(Path(root), "eurosat", (EUROSAT_IMAGE_DIR, EUROSAT_SPLIT_FILE))
    _require_dir(base, "EuroSAT folder", eurosat_instructions(base))
    split_file = base / EUROSAT_SPLIT_FILE
    image_root = base / EUROSAT_IMAGE_DIR
    if not split_file.is_file() or not image_root.is_dir():
        absent = [str(p) for p in (image_root, split_file) if not p.exists()]
        raise DatasetError(f"EuroSAT is incomplete: {' and '.join(absent)} absent. " + eurosat_instructions(base))
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
    ds = SplitDataset("eurosat", image_root, classnames, splits, layout_hint=eurosat_instructions(base))
    _check_labels("eurosat", splits, len(classnames))
    if check_files:
        require_files(ds)
    return ds


def download_eurosat(root: str | Path) -> Path:
    """Download EuroSAT RGB and CoOp's split into ``root/eurosat``; offline, explain what to put where.

    A download that fails leaves no empty ``eurosat`` folder behind.
    """
    from torchvision.datasets.utils import download_and_extract_archive, download_file_from_google_drive

    dest = Path(root) / "eurosat"
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if not (dest / EUROSAT_IMAGE_DIR).is_dir():
            download_and_extract_archive(EUROSAT_URL, download_root=str(dest), remove_finished=True)
        if not (dest / EUROSAT_SPLIT_FILE).is_file():
            download_file_from_google_drive(EUROSAT_SPLIT_GDRIVE_ID, str(dest), EUROSAT_SPLIT_FILE)
    except Exception as exc:  # network errors come in many types
        if created and dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        raise DatasetError(f"Could not download EuroSAT ({type(exc).__name__}: {exc}). " + eurosat_instructions(dest)) from exc
    return dest


# ----------------------------------------------------------------------------- Circuits
def circuits_instructions(base: Path) -> str:
    """Where Circuits' files go, for the dataset folder ``base`` (``<data root>/circuits``)."""
    return (
        f"Circuits expects its images in '{base}/data/' (as the official release; '{base}/images/' or "
        f"'{base}' itself also work) and either the official CSV form '{base}/label_map.csv' + "
        f"'{base}/{{train,val,test}}.csv' (rows: id, filename, class id; a header row is optional; "
        f"'{{split}}_5_shots.csv' names work too) or the JSON form '{base}/split_config.json' + "
        f"'{base}/label_map.json'. The images are distributed only through the paper's figshare "
        f"record: {CIRCUITS_URL}."
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"Cannot read '{path}': {exc}") from exc


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def _read_csv_rows(path: Path, is_header: Callable[[list[str]], bool] | None = None) -> list[list[str]]:
    """Non-empty rows of a CSV file, without its header row (``is_header`` of the first row;
    default: a header's last column is not an integer)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = [[c.strip() for c in r] for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except OSError as exc:
        raise DatasetError(f"Cannot read '{path}': {exc}") from exc
    is_header = is_header or (lambda r: not _is_int(r[-1]))
    if rows and is_header(rows[0]):
        rows = rows[1:]
    return rows


def _find_split_csv(root: Path, split: str) -> Path | None:
    for pattern in CIRCUITS_SPLIT_CSV:
        if (root / pattern.format(split=split)).is_file():
            return root / pattern.format(split=split)
    return None


def _circuits_label_map_csv(path: Path) -> list[str]:
    rows = _read_csv_rows(path, is_header=lambda r: not any(_is_int(c) for c in r))
    pairs: dict[int, str] = {}
    for i, r in enumerate(rows):
        if len(r) < 2:
            raise DatasetError(f"{path}: row {i + 1} {r!r} is not 'class id, class name'.")
        a, b = r[0], r[1]  # either (class id, name) or (name, class id)
        cid, name = (int(a), b) if _is_int(a) else (int(b), a)
        pairs[cid] = name
    if sorted(pairs) != list(range(len(pairs))):
        raise DatasetError(f"{path}: class ids are not 0..C-1: {sorted(pairs)[:10]}...")
    return [pairs[i] for i in sorted(pairs)]


def _circuits_split_csv(path: Path) -> list[Sample]:
    out = []
    for i, r in enumerate(_read_csv_rows(path)):
        if len(r) >= 3:  # id, filename, class id
            out.append(Sample(r[1], int(r[2])))
        elif len(r) == 2:  # filename, class id
            out.append(Sample(r[0], int(r[1])))
        else:
            raise DatasetError(f"{path}: row {i + 1} {r!r} is not 'id, filename, class id'.")
    return out


def _circuits_image_root(base: Path, splits: dict[str, list[Sample]]) -> Path:
    """The first of ``data/``, ``images/``, the folder itself that holds images of the split."""
    candidates = [base / d for d in CIRCUITS_IMAGE_DIRS if (base / d).is_dir()] + [base]
    probe = [s.path for ss in splits.values() for s in ss[:5]]
    for cand in candidates:
        if any((cand / p).is_file() for p in probe):
            return cand
    return candidates[0]


def load_circuits(root: str | Path, check_files: bool = True) -> SplitDataset:
    """Circuits (Zhang, Doughty, Snoek, CVPR 2024): 32 classes, train 154 / val 100 / test 1,078.

    Accepts the official CSV form (``label_map.csv`` + per-split CSVs of id, filename, class id, with
    or without a header row; ``{split}.csv`` or LRV's ``{split}_5_shots.csv``) and the JSON form
    (``split_config.json`` + ``label_map.json``). Images sit in ``data/`` (official), ``images/`` or
    the folder itself. The dataset is naturally long-tailed: see
    :meth:`SplitDataset.natural_groups` and :func:`frequency_groups`.

    Args:
        root: the data root holding ``circuits/``, or that folder itself.
        check_files: verify that every split entry exists on disk.
    """
    base = _dataset_dir(Path(root), "circuits", ("label_map.csv", "label_map.json", "split_config.json"))
    _require_dir(base, "Circuits folder", circuits_instructions(base))
    if (base / "split_config.json").is_file() and (base / "label_map.json").is_file():
        lm = _read_json(base / "label_map.json")
        classnames = [lm[k] for k in sorted(lm, key=int)]
        raw = _read_json(base / "split_config.json")
        splits = {}
        for split in SPLITS:
            if split not in raw:
                raise DatasetError(f"{base / 'split_config.json'} has no '{split}' list.")
            splits[split] = [Sample(str(e[0]), int(e[1])) for e in raw[split]]
    elif (base / "label_map.csv").is_file():
        classnames = _circuits_label_map_csv(base / "label_map.csv")
        splits = {}
        for split in SPLITS:
            path = _find_split_csv(base, split)
            if path is None:
                raise DatasetError(f"Circuits: no CSV for split '{split}' in '{base}'. " + circuits_instructions(base))
            splits[split] = _circuits_split_csv(path)
    else:
        raise DatasetError("Circuits split files not found. " + circuits_instructions(base))
    _check_labels("circuits", splits, len(classnames))
    ds = SplitDataset("circuits", _circuits_image_root(base, splits), classnames, splits, natural_long_tail=True,
                      layout_hint=circuits_instructions(base))
    if check_files:
        require_files(ds)
    return ds


# ----------------------------------------------------------------------------- ImageFolder
def imagefolder_listing(root: Path) -> dict[str, list[str]]:
    """``{class folder: sorted image paths relative to root}`` of an ImageFolder (hidden entries skipped)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    return {c: sorted(f"{c}/{p.name}" for p in (root / c).iterdir()
                      if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
            for c in classes}


def listing_fingerprint(listing: dict[str, list[str]]) -> str:
    """A short hash of an ImageFolder listing (class names and file names)."""
    h = hashlib.sha1()
    for c in sorted(listing):
        h.update(f"{c}\n".encode())
        for p in listing[c]:
            h.update(f"\t{p}\n".encode())
    return h.hexdigest()[:16]


def _saved_listing(raw: dict) -> tuple[list[str] | None, dict[str, list[str]]]:
    """Class names and listing a saved split was made from (older splits: from their entries)."""
    meta = raw.get(SPLIT_META_KEY) or {}
    listing: dict[str, list[str]] = {}
    names: dict[int, str] = {}
    for s in SPLITS:
        for e in raw.get(s, []):
            cname = str(e[2]) if len(e) > 2 else str(e[0]).split("/", 1)[0]
            names.setdefault(int(e[1]), cname)
            listing.setdefault(cname, []).append(str(e[0]))
    classnames = meta.get("classnames") or ([names[i] for i in sorted(names)] if sorted(names) == list(range(len(names))) else None)
    for c in meta.get("classnames", []):
        listing.setdefault(c, [])
    return classnames, {c: sorted(v) for c, v in listing.items()}


def _listing_changes(saved_classes: list[str] | None, saved: dict[str, list[str]], now: dict[str, list[str]]) -> list[str]:
    """What changed between the listing a split was made from and the folder now (empty: nothing)."""
    out = []
    added_c, removed_c = sorted(set(now) - set(saved)), sorted(set(saved) - set(now))
    if added_c:
        out.append(f"class folders added: {added_c[:5]}" + (f" and {len(added_c) - 5} more" if len(added_c) > 5 else ""))
    if removed_c:
        out.append(f"class folders removed: {removed_c[:5]}" + (f" and {len(removed_c) - 5} more" if len(removed_c) > 5 else ""))
    if saved_classes is not None and saved_classes != sorted(now) and not (added_c or removed_c):
        out.append(f"class order changed: {saved_classes[:5]}... -> {sorted(now)[:5]}...")
    files_now = {p for c in now if c in saved for p in now[c]}
    files_then = {p for c in saved if c in now for p in saved[c]}
    added_f, removed_f = sorted(files_now - files_then), sorted(files_then - files_now)
    if added_f:
        out.append(f"{len(added_f)} files added (e.g. {added_f[0]})")
    if removed_f:
        out.append(f"{len(removed_f)} files removed (e.g. {removed_f[0]})")
    return out


def _make_imagefolder_split(listing: dict[str, list[str]], seed: int, fractions: tuple[float, float, float]) -> dict:
    rng = random.Random(seed)
    out: dict = {s: [] for s in SPLITS}
    for label, cname in enumerate(sorted(listing)):
        files = list(listing[cname])
        rng.shuffle(files)
        n_train = max(1, round(len(files) * fractions[0]))
        n_val = round(len(files) * fractions[1])
        parts = (files[:n_train], files[n_train : n_train + n_val], files[n_train + n_val :])
        for split, part in zip(SPLITS, parts):
            out[split] += [[p, label, cname] for p in part]
    out[SPLIT_META_KEY] = {"classnames": sorted(listing), "listing_sha1": listing_fingerprint(listing),
                           "files": sum(len(v) for v in listing.values()), "seed": seed, "fractions": list(fractions)}
    return out


def load_imagefolder(
    root: str | Path,
    split_file: str | Path | None = None,
    seed: int = 1,
    fractions: tuple[float, float, float] = (0.5, 0.2, 0.3),
    resplit: bool = False,
    check_files: bool = True,
) -> SplitDataset:
    """Any ``root/<class>/<image>`` folder, with a seeded train/val/test split made once and saved.

    The split is written (CoOp's JSON format plus a ``lowres_clip`` entry holding the class names and
    a fingerprint of the folder listing) to ``split_file`` (default ``root/split_lowres_clip_s{seed}.json``)
    the first time and read back afterwards, so every later run and every method sees the same split.
    Labels index the class list, so a saved split is reused only while the folder still lists the
    same classes and files; otherwise loading fails and says what changed, unless ``resplit``
    (``python -m lowres_clip.cli check-data imagefolder:<path> --resplit``) draws a new split.
    """
    root = Path(root)
    _require_dir(root, "ImageFolder root", "Expected one subfolder per class holding images (see docs-data.md).")
    split_path = Path(split_file) if split_file else root / f"split_lowres_clip_s{seed}.json"
    listing = imagefolder_listing(root)
    if not listing:
        raise DatasetError(f"ImageFolder root '{root}' has no class subfolders; expected '{root}/<class>/<image>'.")
    empty = [c for c, files in listing.items() if not files]
    if empty:
        raise DatasetError(f"ImageFolder '{root}': class folders without images: {empty[:5]}; "
                           f"add images ({', '.join(IMAGE_EXTENSIONS)}) or remove the folders.")
    if split_path.is_file() and not resplit:
        raw = _read_json(split_path)
        saved_meta = raw.get(SPLIT_META_KEY) or {}
        if saved_meta.get("listing_sha1") != listing_fingerprint(listing):
            saved_classes, saved = _saved_listing(raw)
            changes = _listing_changes(saved_classes, saved, listing)
            if changes or saved_classes is None:
                raise DatasetError(
                    f"ImageFolder '{root}' changed since its split '{split_path}' was saved: {'; '.join(changes) or 'unknown class list'}. "
                    "The split's labels index the old class list, so reusing it would mislabel images. Restore the folder, or "
                    f"draw a new split with `python -m lowres_clip.cli check-data imagefolder:{root} --resplit` "
                    "(results made with the old split are not comparable)."
                )
    else:
        if abs(sum(fractions) - 1.0) > 1e-6:
            raise DatasetError(f"split fractions must sum to 1, got {fractions}")
        raw = _make_imagefolder_split(listing, seed, fractions)
        try:
            split_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(split_path, json.dumps(raw, indent=1))
        except OSError as exc:
            raise DatasetError(f"Cannot write the ImageFolder split '{split_path}' ({exc}); make the folder writable "
                               "or pass split_file=<writable path>.") from exc
    classes = sorted(listing)
    splits = {s: [Sample(str(e[0]), int(e[1])) for e in raw[s]] for s in SPLITS}
    _check_labels(root.name, splits, len(classes))
    ds = SplitDataset(root.name, root, classes, splits, layout_hint="Expected '<root>/<class>/<image>' (see docs-data.md).")
    if check_files:
        require_files(ds)
    return ds


# ----------------------------------------------------------------------------- registry
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
