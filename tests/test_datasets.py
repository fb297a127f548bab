"""Data layer: EuroSAT, Circuits (JSON and CSV), ImageFolder, bad input, real EuroSAT."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import EUROSAT_CLASSES, make_circuits
from lowres_clip import datasets
from lowres_clip.datasets import DatasetError, ImageDataset, load_dataset


def test_eurosat_synthetic_layout(eurosat_root):
    ds = load_dataset("eurosat", eurosat_root)
    assert ds.classnames == [n for _, n in EUROSAT_CLASSES]
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [32, 16, 16]
    assert ds.counts("train") == [8, 8, 8, 8]
    # both the data root and the eurosat folder itself are accepted
    assert load_dataset("eurosat", eurosat_root / "eurosat").splits == ds.splits


def test_image_dataset_returns_tensor_label_index(eurosat_root):
    import torchvision.transforms as T

    ds = load_dataset("eurosat", eurosat_root)
    data = ImageDataset(ds.image_root, ds.split("val"), T.ToTensor())
    img, label, idx = data[3]
    assert isinstance(img, torch.Tensor) and img.shape == (3, 32, 32)
    assert label == ds.split("val")[3].label and idx == 3


@pytest.mark.parametrize("form", ["json", "csv"])
def test_circuits_both_forms(tmp_path, form):
    make_circuits(tmp_path, form=form)
    ds = load_dataset("circuits", tmp_path)
    assert ds.num_classes == 5 and ds.classnames[2] == "LED"
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [15, 10, 10]
    assert ds.image_root.name == "images"


def test_imagefolder_split_is_generated_once_and_saved(tmp_path):
    from conftest import class_image, write_image

    root = tmp_path / "folder"
    for c in ("cat", "dog", "eel"):
        for i in range(10):
            write_image(root / c / f"{i}.png", class_image(ord(c[0]) % 7, i))
    split_file = tmp_path / "split.json"
    a = datasets.load_imagefolder(root, split_file=split_file, seed=3)
    assert split_file.is_file()
    assert a.classnames == ["cat", "dog", "eel"]
    assert sum(len(v) for v in a.splits.values()) == 30
    mtime = split_file.stat().st_mtime_ns
    b = datasets.load_imagefolder(root, split_file=split_file, seed=3)
    assert b.splits == a.splits and split_file.stat().st_mtime_ns == mtime
    c = datasets.load_imagefolder(root, split_file=tmp_path / "other.json", seed=4)
    assert c.splits != a.splits  # another seed, another split
    assert load_dataset(f"imagefolder:{root}", split_file=split_file).splits == a.splits


# ----------------------------------------------------------------------------- bad input
def test_missing_root_says_what_to_put_where(tmp_path):
    with pytest.raises(DatasetError, match="2750.*split_zhou_EuroSAT.json"):
        load_dataset("eurosat", tmp_path / "nowhere")


def test_split_entries_naming_absent_files(eurosat_root):
    missing = eurosat_root / "eurosat" / "2750" / "Forest"
    victim = sorted(missing.iterdir())[0]
    victim.unlink()
    with pytest.raises(DatasetError, match=r"1 split entries name files absent.*Forest"):
        load_dataset("eurosat", eurosat_root)


def test_unreadable_image_names_the_file(eurosat_root):
    ds = load_dataset("eurosat", eurosat_root)
    bad = ds.image_root / ds.split("test")[0].path
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="Cannot read image.*" + bad.name):
        ImageDataset(ds.image_root, ds.split("test"))[0]


def test_class_count_mismatch_between_split_and_label_map(tmp_path):
    base = make_circuits(tmp_path, form="json")
    lm = json.loads((base / "label_map.json").read_text())
    lm.pop(str(len(lm) - 1))
    (base / "label_map.json").write_text(json.dumps(lm))
    with pytest.raises(DatasetError, match="outside the 4 classes"):
        load_dataset("circuits", tmp_path)


def test_unknown_dataset_name():
    with pytest.raises(DatasetError, match="Unknown dataset 'mnist'"):
        load_dataset("mnist", "/tmp")


def test_download_offline_explains(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError, match="Could not download EuroSAT.*2750"):
        datasets.download_eurosat(tmp_path)


# ----------------------------------------------------------------------------- real data
@pytest.mark.shared_data
def test_real_eurosat_coop_split(shared_data):
    ds = load_dataset("eurosat", shared_data)
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [13500, 5400, 8100]
    assert ds.classnames == [
        "Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road",
        "Industrial Buildings", "Pasture Land", "Permanent Crop Land", "Residential Buildings",
        "River", "Sea or Lake",
    ]
    img, label, _ = ImageDataset(ds.image_root, ds.split("test")[:1])[0]
    assert img.size == (64, 64) and label == ds.split("test")[0].label


@pytest.mark.shared_data
def test_real_circuits_split_without_images(shared_data):
    ds = datasets.load_circuits(shared_data, check_files=False)
    assert ds.num_classes == 32
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [154, 100, 1078]
    assert ds.classnames[1] == "audio amplifier/amplifier"
