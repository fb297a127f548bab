"""Common augmentation interface: mixing guard, configs, torch datasets over a manifest, gallery."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.transforms import v2

from lowres_clip.augment import (
    AugmentError,
    BreakingPairDataset,
    ClassicConfig,
    ClassicGenerator,
    Manifest,
    ManifestMismatchError,
    PreservingDataset,
    augmentation_gallery,
    default_out_dir,
    generate,
    make_generator,
    settings_folder_name,
)
from lowres_clip.augment.manifest import SETTINGS_FILE
from lowres_clip.datasets import load_dataset

TO_TENSOR = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


@pytest.fixture
def made(eurosat_root, tmp_path):
    """Preserving + breaking classic outputs (2 samples, 2 breaking strengths) of 3 sources."""
    ds = load_dataset("eurosat", eurosat_root)
    samples = [ds.split("train")[i] for i in (0, 8, 16)]  # three classes
    gen = ClassicGenerator(ClassicConfig(num_samples=2, breaking_strengths=[0.6, 0.8]))
    out = tmp_path / "aug"
    pres = generate(samples, ds.image_root, ds.classnames, out, "preserving", gen, progress=False)
    brk = generate(samples, ds.image_root, ds.classnames, out, "breaking", gen, progress=False)
    return ds, samples, out, pres, brk


def test_rerun_with_other_settings_is_refused(made):
    ds, samples, out, _, _ = made
    settings = json.loads((out / SETTINGS_FILE).read_text())["settings"]
    assert settings["generator"] == "classic" and settings["breaking_strengths"] == [0.6, 0.8]
    for changed in ({"breaking_strengths": [0.6, 0.7, 0.8]}, {"seed": 1}, {"preserving_strength": 0.2}):
        other = ClassicGenerator(ClassicConfig(num_samples=2, **{"breaking_strengths": [0.6, 0.8], **changed}))
        with pytest.raises(ManifestMismatchError, match=next(iter(changed))) as err:
            generate(samples, ds.image_root, ds.classnames, out, "breaking", other, progress=False)
        assert settings_folder_name(other) in str(err.value)  # the message names the folder to use instead
    # the folder is untouched, and the hash-keyed sibling folder accepts the other settings
    assert len(Manifest.load(out)) == 3 * 2 + 3 * 2 * 2
    other = ClassicGenerator(ClassicConfig(num_samples=2, breaking_strengths=[0.6, 0.7, 0.8]))
    m = generate(samples, ds.image_root, ds.classnames, out.parent / settings_folder_name(other), "breaking", other, progress=False)
    assert len(m) == 3 * 2 * 3


def test_manifest_without_settings_is_refused(made, tmp_path):
    ds, samples, out, _, _ = made
    (out / SETTINGS_FILE).unlink()
    with pytest.raises(ManifestMismatchError, match="no generator.json"):
        generate(samples, ds.image_root, ds.classnames, out, "breaking", make_generator("classic"), progress=False)


def test_settings_hash_folders_and_configs(tmp_path, monkeypatch):
    a, b = make_generator("classic"), make_generator("classic", breaking_strengths=[0.6])
    assert settings_folder_name(a) != settings_folder_name(b)
    assert settings_folder_name(a) == settings_folder_name(make_generator("classic"))
    assert default_out_dir("eurosat", a, tmp_path) == tmp_path / "augment" / "eurosat" / settings_folder_name(a)
    monkeypatch.setenv("LOWRES_CLIP_CACHE", str(tmp_path / "c"))
    assert default_out_dir("eurosat", a).parent == tmp_path / "c" / "augment" / "eurosat"
    assert a.config.num_samples == 5 and a.config.seed == 42
    assert a.config.preserving_strength == 0.3 and a.config.breaking_strengths == (0.6, 0.7, 0.8)
    with pytest.raises(AugmentError, match="lower than every breaking"):
        ClassicConfig(preserving_strength=0.7)
    with pytest.raises(AugmentError, match="kind must be"):
        generate([], tmp_path, [], tmp_path / "x", "strong")
    with pytest.raises(AugmentError, match="Unknown generator"):
        make_generator("gan")


def test_preserving_dataset_items(made):
    ds, samples, out, pres, _ = made
    data = PreservingDataset(pres, TO_TENSOR)
    assert len(data) == 6
    labels = {s.path: s.label for s in samples}
    for i in range(len(data)):
        img, label, idx = data[i]
        assert img.shape == (3, 32, 32) and idx == i
        assert label == labels[data.rows[i].source_path]
    with pytest.raises(AugmentError, match="no preserving rows"):
        PreservingDataset(Manifest.load(out).filter(kind="breaking"))


def test_breaking_pairs_come_from_one_source(made):
    ds, samples, out, _, brk = made
    data = BreakingPairDataset(Manifest.load(out), TO_TENSOR, pairing="two_breaking")  # preserving rows are ignored
    assert len(data) == 3 and sorted(data.sources) == sorted(s.path for s in samples)
    for i in range(len(data)):
        v1, v2, src = data[i]
        assert v1.shape == v2.shape == (3, 32, 32) and src == i
        a, b = data.pair(i)
        assert a != b and data.rows[a].kind == data.rows[b].kind == "breaking"
        assert data.rows[a].source_path == data.rows[b].source_path == data.sources[i]
    draws = [[data.pair(i, torch.Generator().manual_seed(s)) for i in range(3)] for s in (0, 0, 1, 2, 3)]
    assert draws[0] == draws[1] and any(d != draws[0] for d in draws[2:])  # seeded, and varies with the seed


def _epochs(data, epochs: int, **loader_kw) -> list[torch.Tensor]:
    """Each epoch's (view1, view2) batch of a DataLoader over all items, stacked."""
    loader = torch.utils.data.DataLoader(data, batch_size=len(data), **loader_kw)
    out = []
    for _ in range(epochs):
        v1, v2, idx = next(iter(loader))
        assert v1.shape == (3, 3, 32, 32) and idx.tolist() == [0, 1, 2]
        out.append(torch.stack([v1, v2]))
    return out


def test_breaking_pairs_reproducible_and_new_each_epoch(made):
    _, _, out, _, _ = made
    data = BreakingPairDataset(Manifest.load(out), TO_TENSOR)
    torch.manual_seed(0)  # in-process loading: the global seed decides
    first = _epochs(data, 4)
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(first, _epochs(data, 4)))
    assert any(not torch.equal(e, first[0]) for e in first[1:])
    # worker processes: the loader's seeded generator decides
    runs = [_epochs(data, 2, num_workers=1, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_breaking_pairs_need_two_outputs(made, tmp_path):
    ds, samples, *_ = made
    gen = make_generator("classic", num_samples=1, breaking_strengths=[0.6])
    m = generate(samples, ds.image_root, ds.classnames, tmp_path / "one", "breaking", gen, progress=False)
    with pytest.warns(UserWarning, match="fewer than two"), pytest.raises(AugmentError, match="two breaking outputs"):
        BreakingPairDataset(m, pairing="two_breaking")
    assert len(BreakingPairDataset(m, pairing="augmented_copy")) == len(samples)  # one image per source suffices


def test_gallery_shows_sources_with_variants(made, tmp_path):
    ds, samples, out, pres, brk = made
    fig = augmentation_gallery(pres + brk, max_sources=2)
    title = fig._suptitle.get_text()
    assert "classic (classic-v1)" in title
    axes = fig.get_axes()
    assert len(axes) == 2 * (1 + 2 + 3)  # source + 2 preserving + 3 breaking per row
    captions = [ax.get_title() for ax in axes]
    assert captions[0].startswith("source") and captions[1].startswith("preserving s=0.3")
    assert sum(c.startswith("breaking") for c in captions) == 6
    fig.savefig(tmp_path / "gallery.png")
    assert (tmp_path / "gallery.png").stat().st_size > 0
    loaded = Manifest.load(out)  # no image_root known: must be given
    with pytest.raises(AugmentError, match="image_root"):
        augmentation_gallery(loaded)
    fig = augmentation_gallery(loaded, image_root=ds.image_root, sources=[samples[2].path])
    assert len(fig.get_axes()) == 1 + 2 + 3
