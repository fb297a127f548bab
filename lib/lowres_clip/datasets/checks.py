"""Checks on a loaded dataset: absent split files (one line per problem), validation coverage, and
the ``exclude`` list of images a run leaves out."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from .base import DatasetError, SplitDataset


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
