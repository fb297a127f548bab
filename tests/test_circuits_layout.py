"""Circuits without its images: generated diagram-like images under the real split's file names and
class sizes (the real long tail), and the long-tailed Circuits study on them, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lowres_clip.config import load_profile
from lowres_clip.datasets import load_dataset
from lowres_clip.runs import load_records
from lowres_clip.smoke import circuit_diagram, make_circuits_layout

from conftest import SHARED_DATA

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    real = SHARED_DATA / "circuits"
    if not (real / "split_config.json").is_file():
        pytest.skip("no Circuits split under ../shared/data")
    root = tmp_path_factory.mktemp("circuits-layout")
    return make_circuits_layout(root, real / "split_config.json", real / "label_map.json")


def test_layout_has_the_real_split_file_names_sizes_and_formats(layout, shared_data):
    real = json.loads((shared_data / "circuits" / "split_config.json").read_text())
    ds = load_dataset("circuits", layout)
    assert ds.num_classes == 32
    for part, count in (("train", 154), ("val", 100), ("test", 1078)):
        got = ds.split(part)
        assert len(got) == count == len(real[part])
        assert [s.path for s in got] == [e[0] for e in real[part]]
        assert Counter(s.label for s in got) == Counter(e[1] for e in real[part])
    jpeg = next(e[0] for e in real["test"] if e[0].endswith(".jpeg"))
    with Image.open(layout / "circuits" / "images" / jpeg) as im:
        assert im.format == "JPEG"
    groups = ds.natural_groups()
    assert (groups.count("head"), groups.count("medium"), groups.count("tail")) == (4, 10, 18)


def test_generated_classes_are_learnable_and_images_of_a_class_vary():
    def small(img):  # grey, 6 x 6 average pooling: what a nearest-centroid rule sees
        return img.astype(float).mean(axis=2).reshape(8, 6, 8, 6).mean(axis=(1, 3)).ravel()

    classes = (1, 6, 12, 26)
    train = {c: np.stack([small(circuit_diagram(c, i, 48)) for i in range(20)]) for c in classes}
    centroids = np.stack([train[c].mean(0) for c in classes])
    hits = [np.argmin(((centroids - small(circuit_diagram(c, 100 + i, 48))) ** 2).sum(1)) == k
            for k, c in enumerate(classes) for i in range(10)]
    assert np.mean(hits) >= 0.8  # chance: 0.25
    a, a2 = circuit_diagram(5, 1, 48), circuit_diagram(5, 2, 48)
    assert not np.array_equal(a, a2) and (a < 128).mean() > 0.02  # varied, and drawn lines, not a blank page
    assert np.array_equal(circuit_diagram(5, 1, 48), a)  # deterministic


def test_long_tailed_circuits_study_runs_end_to_end(layout, tmp_path):
    """The smoke profile's settings with a Circuits grid (K = 16 keeps every train image): the study
    runner, notebooks and all, on the generated layout."""
    raw = yaml.safe_load(load_profile("smoke").path.read_text())
    raw["grid"].update(datasets=["circuits"], shots=[16], seeds=[1], methods=["zero_shot", "linear_probe", "lora"])
    raw["grid"]["failure_pairs"] = []
    profile = tmp_path / "circuits-smoke.yaml"
    profile.write_text(yaml.safe_dump(raw))
    roots = [f"--{k}-root" for k in ("runs", "figures", "cache")]
    args = [sys.executable, "-m", "lowres_clip.study", "--profile", str(profile), "--dataset", "circuits",
            "--data-root", str(layout), "--notebooks-out", str(tmp_path / "nb")]
    for flag in roots:
        args += [flag, str(tmp_path / flag.strip("-").replace("-root", ""))]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = {r.identity["method"]: r for r in load_records(tmp_path / "runs", "circuits")}
    assert set(records) == {"zero_shot", "linear_probe", "lora"}
    for method, r in records.items():
        m = r.metrics
        assert m["n"] == 1078 and {"top1_head", "top1_medium", "top1_tail", "collapse_top_share"} <= set(m), method
        assert r.extra["train_shots"] == 154  # K=16 keeps every train image (2-5 per class)
    probe = records["linear_probe"].metrics
    assert probe["balanced"] > 3 / 29  # learnable generated classes: well above chance over the 29 test classes
