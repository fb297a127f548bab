"""Feature cache: keyed, atomic, recomputed when a key part changes; text classifier."""

from __future__ import annotations

import pytest
import torch

from lowres_clip.datasets import load_dataset
from lowres_clip.features import FeatureCache, image_features, text_classifier
from lowres_clip.prompts import format_prompts, get_templates




def test_image_features_cached_and_normalised(eurosat_root, tmp_path, bundle):
    ds = load_dataset("eurosat", eurosat_root)
    cache = FeatureCache(tmp_path / "c")
    f1, y1 = image_features(bundle, ds, "val", cache=cache)
    assert f1.shape == (16, 32) and torch.allclose(f1.norm(dim=-1), torch.ones(16), atol=1e-5)
    assert (cache.hits, cache.misses) == (0, 1)
    f2, y2 = image_features(bundle, ds, "val", cache=cache)
    assert (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(f1, f2) and torch.equal(y1, y2)
    # another sample list, another split name, another transform: new entries
    image_features(bundle, ds, "val", samples=ds.split("val")[:5], cache=cache)
    image_features(bundle, ds, "test", cache=cache)
    image_features(bundle, ds, "val", cache=cache, transform=bundle.preprocess_train)
    assert cache.misses == 4
    assert len(list((tmp_path / "c" / "image").glob("*.pt"))) == 4


def test_interrupted_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "c")
    parts = {"model": "m", "weights": "w", "dataset": "d", "split": "s"}

    def boom(obj, f):
        open(f, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.put("image", parts, {"features": torch.zeros(2)})
    assert list((tmp_path / "c" / "image").iterdir()) == []
    assert cache.get("image", parts) is None


def test_text_classifier_ensemble_and_cache(tmp_path, bundle):
    cache = FeatureCache(tmp_path / "c")
    names = ["Forest", "River", "Highway"]
    single = text_classifier(bundle, "eurosat", names, get_templates("eurosat"), cache)
    ens = text_classifier(bundle, "eurosat", names, get_templates("eurosat", ensemble=True), cache)
    assert single.shape == ens.shape == (3, 32)
    assert not torch.allclose(single, ens)
    assert torch.allclose(ens.norm(dim=-1), torch.ones(3), atol=1e-5)
    again = text_classifier(bundle, "eurosat", names, get_templates("eurosat"), cache)
    assert torch.equal(single, again) and cache.hits == 1


def test_prompts_are_data():
    assert get_templates("eurosat") == ["a centered satellite photo of {}."]
    assert get_templates("circuits") == ["a circuit diagram of {}."]
    assert len(get_templates("circuits", ensemble=True)) > 1
    assert format_prompts(["LED"], ["a circuit diagram of {}."]) == [["a circuit diagram of LED."]]
    with pytest.raises(ValueError, match="placeholder"):
        format_prompts(["LED"], ["no placeholder"])


def _open_clip_eval_transform(size: int):
    """The evaluation transform open_clip builds (resize shortest side, bicubic; centre crop; RGB;
    to tensor; normalise), written out here with open_clip's own pieces."""
    from open_clip.transform import image_transform

    return image_transform(size, is_train=False, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


@pytest.mark.parametrize("size", [48, 37])
def test_prepared_images_equal_the_transform_bit_for_bit(eurosat_root, tmp_path, size):
    from lowres_clip.datasets import ImageDataset
    from lowres_clip.features import PreparedImages, prepared_images

    ds = load_dataset("eurosat", eurosat_root)
    samples = ds.split("test")
    transform = _open_clip_eval_transform(size)  # 32 px images upsampled, as EuroSAT's 64 px to 128
    cache = FeatureCache(tmp_path / "c")
    prepared = prepared_images(ds, "test", samples, transform, cache)
    assert isinstance(prepared, PreparedImages) and cache.misses == 1
    plain = ImageDataset(ds.image_root, samples, transform)
    for i in range(len(samples)):
        x, y, j = prepared[i]
        ref, ref_y, ref_j = plain[i]
        assert x.dtype == ref.dtype and torch.equal(x, ref), i
        assert (y, j) == (ref_y, ref_j)
    assert float(prepared[0][0].std()) > 0.1  # real images, not a constant
    again = prepared_images(ds, "test", samples, transform, cache)
    assert cache.hits == 1 and torch.equal(again.pixels, prepared.pixels)


def test_prepared_images_fall_back_for_a_random_transform(eurosat_root, tmp_path):
    from torchvision import transforms as T

    from lowres_clip.datasets import ImageDataset
    from lowres_clip.features import prepared_images, split_transform

    ds = load_dataset("eurosat", eurosat_root)
    random_crop = T.Compose([T.RandomResizedCrop(32), T.ToTensor()])
    assert split_transform(random_crop) is None
    assert isinstance(prepared_images(ds, "test", ds.split("test"), random_crop, FeatureCache(tmp_path)), ImageDataset)
    pil, tail = split_transform(_open_clip_eval_transform(32))
    assert [type(t).__name__ for t in pil.transforms] == ["Resize", "CenterCrop", "MaybeConvertMode"]
    assert [type(t).__name__ for t in tail] == ["Normalize"]
