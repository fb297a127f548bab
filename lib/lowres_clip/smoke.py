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


def circuit_diagram(label: int, index: int, size: int, seed: int = 0) -> np.ndarray:
    """A diagram-like RGB image of class ``label``: black wires and component symbols on white.

    The class decides which symbols appear (resistor zigzags, capacitor plates, a chip box, a
    circle, a ground mark: the bits of ``label``) and the wiring's orientation; each image jitters
    positions, line widths and adds scan noise, so the classes are learnable but not identical
    copies. Numbers obtained on such images mean nothing about real circuit diagrams.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, label, index])
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    w = max(1, int(rng.integers(1, 3)) * size // 64)
    j = lambda v: float(v + rng.uniform(-0.04, 0.04)) * size  # noqa: E731 (jittered coordinate)
    horizontal = label % 2 == 0
    for k in range(2 + label % 3):  # wires
        t = (k + 1) / (3 + label % 3)
        d.line([(j(0.05), j(t)), (j(0.95), j(t))] if horizontal else [(j(t), j(0.05)), (j(t), j(0.95))], fill=0, width=w)
    bits = [(label >> b) & 1 for b in range(5)]
    if bits[0]:  # resistor zigzag
        pts = [(j(0.2 + 0.06 * i), j(0.3 + (0.08 if i % 2 else -0.08))) for i in range(8)]
        d.line(pts, fill=0, width=w)
    if bits[1]:  # capacitor plates
        d.line([(j(0.6), j(0.55)), (j(0.6), j(0.8))], fill=0, width=w + 1)
        d.line([(j(0.66), j(0.55)), (j(0.66), j(0.8))], fill=0, width=w + 1)
    if bits[2]:  # chip box with pins
        d.rectangle([j(0.35), j(0.4), j(0.6), j(0.7)], outline=0, width=w)
        for i in range(3):
            d.line([(j(0.3), j(0.45 + 0.1 * i)), (j(0.35), j(0.45 + 0.1 * i))], fill=0, width=w)
    if bits[3]:  # circle (transistor / lamp)
        d.ellipse([j(0.7), j(0.15), j(0.9), j(0.35)], outline=0, width=w)
    if bits[4]:  # ground mark
        for i in range(3):
            d.line([(j(0.15 + 0.03 * i), j(0.8 + 0.04 * i)), (j(0.35 - 0.03 * i), j(0.8 + 0.04 * i))], fill=0, width=w)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 12, (size, size, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_circuits_layout(root: str | Path, split_config: str | Path, label_map: str | Path,
                         size: int = 48, seed: int = 0) -> Path:
    """Write generated diagram-like images (:func:`circuit_diagram`) under the file names of a real
    Circuits split, in the official layout, so the long-tailed Circuits grid runs without the images.

    ``root/circuits/images/<file name of the split>`` (PNG or JPEG by the name's extension), plus
    copies of ``split_config.json`` and ``label_map.json``: the real split's 154 / 100 / 1,078 file
    names, 32 classes and long tail. Nothing is rewritten when the split file is already there.
    Returns ``root``.
    """
    from PIL import Image

    root = Path(root)
    base = root / "circuits"
    split_text, label_text = Path(split_config).read_text(), Path(label_map).read_text()
    if (base / "split_config.json").is_file():
        return root
    split = json.loads(split_text)
    entries = [entry for part in ("train", "val", "test") for entry in split[part]]
    for n, (name, label, *_rest) in enumerate(entries):
        path = base / "images" / name
        image = Image.fromarray(circuit_diagram(int(label), n, size, seed))
        kind = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
        atomic_write(path, lambda tmp, image=image, kind=kind: image.save(tmp, format=kind))
    atomic_write_text(base / "label_map.json", label_text)
    atomic_write_text(base / "split_config.json", split_text)  # last: its presence means the dataset is complete
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
