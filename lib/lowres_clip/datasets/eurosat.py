"""EuroSAT RGB with CoOp's split."""

from __future__ import annotations

from pathlib import Path

from .base import (
    DatasetError, SPLITS, Sample, SplitDataset, _check_labels, _dataset_dir, _read_json, _require_dir,
)
from .checks import require_files
from .download import EUROSAT_IMAGE_DIR, EUROSAT_SPLIT_FILE, eurosat_instructions


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
