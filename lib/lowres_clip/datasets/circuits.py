"""Circuits (official CSV or JSON split)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

from .base import (
    DatasetError, SPLITS, Sample, SplitDataset, _check_labels, _dataset_dir, _read_json, _require_dir,
)
from .checks import require_files
from .download import circuits_instructions

CIRCUITS_IMAGE_DIRS = ("data", "images")
"""Folders (inside ``circuits/``) searched for the images, then ``circuits/`` itself: ``data/`` is the
official release's (and LRV's loaders'), ``images/`` this project's synthetic layout."""
CIRCUITS_SPLIT_CSV = ("{split}.csv", "{split}_5_shots.csv", "{split}_split.csv", "split_{split}.csv")


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
