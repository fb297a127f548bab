"""Synthetic datasets for smoke runs and tests, written in the official layouts, and the data root
of a run (:func:`resolve_data_root`: the synthetic data when a smoke run names none).

:func:`make_smoke_dataset` writes a tiny 4-class dataset whose classes are learnable from colour and
stripe direction (:func:`class_pattern`), in EuroSAT's or Circuits' layout, so every step of the
study runs end to end on a CPU in seconds. Numbers obtained on it mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_write, atomic_write_text
from .datasets import default_data_root
from .spec import RunSpec

SMOKE_CLASSES = {
    "eurosat": [("AnnualCrop", "Annual Crop Land"), ("Forest", "Forest"), ("Highway", "Highway or Road"),
                ("SeaLake", "Sea or Lake")],
    "circuits": [("0", "others"), ("1", "audio amplifier/amplifier"), ("2", "LED"), ("3", "timer")],
}


def class_pattern(label: int, index: int, size: int, seed: int = 0) -> np.ndarray:
    """A small RGB image whose colour and stripe direction/period identify ``label`` (learnable data)."""
    rng = np.random.default_rng([seed, label, index])
    hue = np.array([(label * 89 + 40) % 256, (label * 157 + 90) % 256, (label * 211 + 150) % 256], np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    coord = (xx, yy, xx + yy, xx - yy)[label % 4]
    stripes = ((coord // (2 + label % 3)) % 2).astype(np.float32)[..., None]
    img = hue * (0.55 + 0.45 * stripes) + rng.normal(0, 10, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_smoke_dataset(root: str | Path, dataset: str = "eurosat", per_split: Sequence[int] = (8, 4, 6),
                       size: int = 32, seed: int = 0) -> Path:
    """Write a tiny synthetic dataset (4 classes) in the official layout of ``dataset``; returns ``root``.

    ``eurosat``: ``root/eurosat/2750/<Class>/<Class>_<n>.png`` + ``split_zhou_EuroSAT.json``;
    ``circuits``: ``root/circuits/images/<n>.png`` + ``split_config.json`` + ``label_map.json``.
    Nothing is rewritten when the split file already exists.
    """
    from PIL import Image

    if dataset not in SMOKE_CLASSES:
        raise ValueError(f"smoke data exists for {sorted(SMOKE_CLASSES)}, not {dataset!r}; give data_root.")
    root = Path(root)
    base = root / dataset
    split_file = base / ("split_zhou_EuroSAT.json" if dataset == "eurosat" else "split_config.json")
    if split_file.is_file():
        return root
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    n = 0
    for label, (folder, name) in enumerate(SMOKE_CLASSES[dataset]):
        for part, count in zip(split, per_split):
            for _ in range(count):
                n += 1
                rel = f"{folder}/{folder}_{n}.png" if dataset == "eurosat" else f"{n}.png"
                path = base / ("2750" if dataset == "eurosat" else "images") / rel
                img = Image.fromarray(class_pattern(label, n, size, seed))
                atomic_write(path, img.save)  # parallel notebooks may write the same files
                split[part].append([rel, label, name])
    if dataset == "circuits":
        atomic_write_text(base / "label_map.json", json.dumps({str(i): c[1] for i, c in enumerate(SMOKE_CLASSES[dataset])}))
    atomic_write_text(split_file, json.dumps(split))  # last: its presence means the dataset is complete
    return root


def resolve_data_root(spec: RunSpec, create: bool = True) -> Path:
    """The run's data root: ``data_root``; with ``smoke`` and none, the synthetic dataset under the
    cache root (generated when ``create``); else :func:`lowres_clip.datasets.default_data_root`."""
    cfg = spec.config
    if cfg.data_root:
        return Path(cfg.data_root)
    if cfg.smoke:
        root = spec.cache_root / "smoke-data"
        return make_smoke_dataset(root, cfg.dataset) if create else root
    return default_data_root()
