"""Classic generator through the common interface: files, manifest, rerun skip, resume, seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lowres_clip.augment import ClassicConfig, ClassicGenerator, Manifest, generate
from lowres_clip.augment.manifest import MANIFEST_FILE
from lowres_clip.datasets import load_dataset


@pytest.fixture
def sources(eurosat_root):
    """One training image per class of the synthetic EuroSAT (32 px)."""
    ds = load_dataset("eurosat", eurosat_root)
    picked = {}
    for s in ds.split("train"):
        picked.setdefault(s.label, s)
    return ds, [picked[k] for k in sorted(picked)]


def _gen(**kw) -> ClassicGenerator:
    kw.setdefault("num_samples", 2)
    kw.setdefault("breaking_strengths", [0.6, 0.8])
    return ClassicGenerator(ClassicConfig(**kw))


def _arr(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32)


def test_classic_writes_images_and_manifest_and_rerun_skips(sources, tmp_path, monkeypatch):
    ds, samples = sources
    out = tmp_path / "aug"
    pres = generate(samples, ds.image_root, ds.classnames, out, "preserving", _gen(), progress=False)
    brk = generate(samples, ds.image_root, ds.classnames, out, "breaking", _gen(), progress=False)
    assert len(pres) == 4 * 2 and len(brk) == 4 * 2 * 2
    assert {r.strength for r in pres} == {0.3} and {r.strength for r in brk} == {0.6, 0.8}
    lines = (out / MANIFEST_FILE).read_text().splitlines()
    assert len(lines) == 24
    for row in map(json.loads, lines):
        assert row["generator"] == "classic" and row["model_id"] == "classic-v1" and row["prompt"] == ""
        assert set(row) >= {"source_path", "label", "classname", "kind", "strength", "seed", "output_path", "sample_index"}
        assert ds.classnames[row["label"]] == row["classname"]
        assert Image.open(out / row["output_path"]).size == (32, 32)  # classic keeps the source size
    assert Manifest.load(out).rows == pres.rows + brk.rows

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    monkeypatch.setattr(ClassicGenerator, "make", lambda *a, **k: pytest.fail("rerun must not regenerate"))
    again = generate(samples, ds.image_root, ds.classnames, out, "breaking", _gen(), progress=False)
    assert again.rows == brk.rows
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes
    assert len((out / MANIFEST_FILE).read_text().splitlines()) == 24


def test_interrupted_run_resumes_without_duplicates(sources, tmp_path, monkeypatch):
    ds, samples = sources
    out = tmp_path / "aug"
    real_make = ClassicGenerator.make
    calls = {"n": 0}

    def crashing_make(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_make(self, *args, **kwargs)

    monkeypatch.setattr(ClassicGenerator, "make", crashing_make)
    with pytest.raises(KeyboardInterrupt):
        generate(samples, ds.image_root, ds.classnames, out, "breaking", _gen(), progress=False)
    assert len(Manifest.load(out)) == 2 * 2  # two (source, strength) jobs finished
    # a crash between writing an image and appending its row, and a half-written last line
    lines = (out / MANIFEST_FILE).read_text().splitlines()
    (out / MANIFEST_FILE).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    with pytest.warns(UserWarning, match="truncated"):
        assert len(Manifest.load(out)) == 3

    monkeypatch.setattr(ClassicGenerator, "make", real_make)
    calls["n"] = 0
    with pytest.warns(UserWarning, match="truncated"):
        done = generate(samples, ds.image_root, ds.classnames, out, "breaking", _gen(), progress=False)
    final = Manifest.load(out)
    assert len(done) == 16 and len(final) == 16
    assert sorted(r.output_path for r in final) == sorted(r.output_path for r in done)
    assert all(final.file(r).is_file() for r in final)


def test_same_seed_same_images_and_breaking_is_stronger(sources, tmp_path):
    ds, samples = sources
    runs = {}
    for name, seed in (("a", 42), ("b", 42), ("c", 7)):
        m = generate(samples, ds.image_root, ds.classnames, tmp_path / name, "breaking", _gen(seed=seed), progress=False)
        runs[name] = [_arr(m.file(r)) for r in m]
    assert all(np.array_equal(x, y) for x, y in zip(runs["a"], runs["b"]))
    assert not all(np.array_equal(x, y) for x, y in zip(runs["a"], runs["c"]))
    # different sample indices of one source differ
    assert not np.array_equal(runs["a"][0], runs["a"][1])

    out = tmp_path / "a"
    pres = generate(samples, ds.image_root, ds.classnames, out, "preserving", _gen(), progress=False)
    brk = Manifest.load(out).filter(kind="breaking")

    def mean_change(manifest):
        return np.mean([np.abs(_arr(manifest.file(r)) - _arr(ds.image_root / r.source_path)).mean() for r in manifest])

    assert mean_change(pres) < mean_change(brk)


def test_subset_run_reuses_images_of_a_larger_run(sources, tmp_path):
    ds, samples = sources
    out = tmp_path / "aug"
    full = generate(samples, ds.image_root, ds.classnames, out, "preserving", _gen(), progress=False)
    part = generate(samples[:2], ds.image_root, ds.classnames, out, "preserving", _gen(), progress=False)
    assert len(part) == 4 and set(part.rows) <= set(full.rows)
    assert {r.source_path for r in part} == {s.path for s in samples[:2]}


def test_output_size_option(sources, tmp_path):
    ds, samples = sources
    m = generate(samples[:1], ds.image_root, ds.classnames, tmp_path, "breaking", _gen(image_size=48), progress=False)
    assert all(Image.open(m.file(r)).size == (48, 48) for r in m)


@pytest.mark.shared_data
def test_classic_on_real_eurosat_images(shared_data, tmp_path):
    ds = load_dataset("eurosat", shared_data)
    samples = ds.split("train")[:2]
    m = generate(samples, ds.image_root, ds.classnames, tmp_path, "breaking", _gen(), progress=False)
    assert len(m) == 8 and all(m.file(r).is_file() for r in m)
