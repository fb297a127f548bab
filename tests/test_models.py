"""Model loading: tiny random models, offline errors, unknown names."""

from __future__ import annotations

import pytest
import torch

from lowres_clip.models import ModelUnavailableError, describe, load_clip
from lowres_clip.spec import weights_id


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_tiny_models_encode(name):
    b = load_clip(name, "random", device="cpu")
    x = torch.randn(2, 3, b.image_size, b.image_size)
    with torch.no_grad():
        img = b.model.encode_image(x)
        txt = b.model.encode_text(b.tokenizer(["a photo of a cat", "a dog"]))
    assert img.shape == (2, 32) and txt.shape == (2, 32)
    assert b.weights_id == "random" and describe(b)["parameters"] > 0


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(ModelUnavailableError, match="Unknown open_clip model 'ViT-B-33'.*ViT-B-32"):
        load_clip("ViT-B-33", "openai")


def test_unknown_tag_lists_available():
    with pytest.raises(ModelUnavailableError, match="Unknown weights tag 'nope'.*openai"):
        load_clip("RN50", "nope")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_clip("tiny-vit", str(tmp_path / "missing.pt"))


def test_offline_tag_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as err:
        load_clip("RN50", "openai", device="cpu")
    advice = str(err.value).splitlines()[0]  # the first line is the advice; details follow
    assert "'openai'" in advice and "'RN50'" in advice and "weights=/path/to/RN50-openai.bin" in advice


def test_local_checkpoint_file_roundtrip(tmp_path):
    a = load_clip("tiny-vit", "random", device="cpu")
    path = tmp_path / "tiny.pt"
    torch.save(a.model.state_dict(), path)
    b = load_clip("tiny-vit", str(path), device="cpu")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.model.encode_image(x), b.model.encode_image(x))
    assert weights_id(str(path)).startswith("file-tiny-")


def test_image_size_override_sets_transforms_and_model():
    from PIL import Image

    small = load_clip("tiny-rn", "random", device="cpu", image_size=96)
    assert small.image_size == 96
    x = small.preprocess_eval(Image.new("RGB", (64, 64), (10, 200, 30)))
    assert x.shape == (3, 96, 96)
    with torch.no_grad():
        assert small.model.encode_image(x[None]).shape == (1, 32)
