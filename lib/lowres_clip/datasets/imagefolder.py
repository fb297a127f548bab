"""Any ``root/<class>/<image>`` folder, with a seeded split made once and saved (and refused when the
folder changed since)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from ..atomic import atomic_write_text
from .base import (
    DatasetError, IMAGE_EXTENSIONS, SPLITS, SPLIT_META_KEY, Sample, SplitDataset, _check_labels, _read_json,
    _require_dir,
)
from .checks import require_files


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
