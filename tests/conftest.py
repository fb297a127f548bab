"""Shared fixtures: synthetic datasets laid out exactly like the real ones, and the real-data root;
the hooks of :mod:`ci_skips` (with ``$CI`` set, a skipped test fails)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

import ci_skips

# hooks: with $CI set, a skipped test fails (tests/ci_skips.py)
pytest_runtest_makereport = ci_skips.pytest_runtest_makereport
pytest_make_collect_report = ci_skips.pytest_make_collect_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EUROSAT_CLASSES = [
    ("AnnualCrop", "Annual Crop Land"),
    ("Forest", "Forest"),
    ("Highway", "Highway or Road"),
    ("SeaLake", "Sea or Lake"),
]


def class_image(label: int, i: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """A small RGB image whose colour and stripe pattern depend on the class (separable data)."""
    rng = np.random.default_rng(seed * 100_003 + label * 1009 + i)
    base = np.array([(label * 67) % 256, (label * 131 + 60) % 256, (label * 199 + 120) % 256], dtype=np.float32)
    img = np.ones((size, size, 3), np.float32) * base
    stripes = (np.arange(size) // (2 + label % 4)) % 2
    img[stripes.astype(bool)] *= 0.6
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_image(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_eurosat(root: Path, per_split=(8, 4, 4), size: int = 32) -> Path:
    """EuroSAT layout: ``root/eurosat/2750/<Class>/<Class>_<n>.jpg`` + CoOp split json."""
    base = root / "eurosat"
    split = {"train": [], "val": [], "test": []}
    n = 0
    for label, (folder, name) in enumerate(EUROSAT_CLASSES):
        for s, count in zip(split, per_split):
            for _ in range(count):
                n += 1
                rel = f"{folder}/{folder}_{n}.jpg"
                write_image(base / "2750" / rel, class_image(label, n, size))
                split[s].append([rel, label, name])
    (base / "split_zhou_EuroSAT.json").write_text(json.dumps(split))
    return base


def make_circuits(root: Path, form: str = "json", num_classes: int = 5, size: int = 32) -> Path:
    """Circuits layout: images in ``images/``; JSON (split_config + label_map) or CSV form."""
    base = root / "circuits"
    names = ["others", "audio amplifier/amplifier", "LED", "timer", "relay", "fan"][:num_classes]
    split = {"train": [], "val": [], "test": []}
    n = 0
    for label in range(num_classes):
        for s, count in zip(split, (3, 2, 2)):
            for _ in range(count):
                n += 1
                fname = f"{n}.png" if n % 2 else f"{n}.jpg"
                write_image(base / "images" / fname, class_image(label, n, size))
                split[s].append([fname, label, str(label)])
    if form == "json":
        (base / "split_config.json").write_text(json.dumps(split))
        (base / "label_map.json").write_text(json.dumps({str(i): c for i, c in enumerate(names)}))
    else:
        with (base / "label_map.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class_id", "class_name"])
            w.writerows([[i, c] for i, c in enumerate(names)])
        for s, entries in split.items():
            with (base / f"{s}.csv").open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "filename", "class_id"])
                w.writerows([[i, e[0], e[1]] for i, e in enumerate(entries)])
    return base


@pytest.fixture
def eurosat_root(tmp_path: Path) -> Path:
    """A tiny synthetic EuroSAT (4 classes) in the official layout; returns the data root."""
    make_eurosat(tmp_path)
    return tmp_path


@pytest.fixture
def circuits_root(tmp_path: Path) -> Path:
    make_circuits(tmp_path)
    return tmp_path


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` when present, else the test is skipped."""
    if not (SHARED_DATA / "eurosat" / "split_zhou_EuroSAT.json").is_file():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Feature caches of tests never touch the user's cache."""
    if "LOWRES_CLIP_CACHE_KEEP" not in os.environ:
        monkeypatch.setenv("LOWRES_CLIP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run much faster single-threaded (CI has 2 shared cores); use via
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bundle():
    """A tiny random-weight ViT CLIP (seeded), shared by the tests of one module."""
    import torch

    from lowres_clip.models import load_clip

    torch.manual_seed(0)
    return load_clip("tiny-vit", "random", device="cpu")
