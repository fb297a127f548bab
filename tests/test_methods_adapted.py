"""AdaptedCLIP / build_adapted: method strings, zero-shot, features-level path, trainable parts and
their counts, text-classifier caching, the bundle left untouched, support-set errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lowres_clip.features import encode_text_classifier
from lowres_clip.methods import (
    BitFitConfig,
    LoraConfig,
    MetaAdapterConfig,
    UnknownMethodError,
    build_adapted,
    adapter_parts,
    cosine_logits,
    zero_shot_classifier,
)
from lowres_clip.utils import AdaptationError

NAMES = ["annual crop", "forest", "highway", "sea or lake"]
TEMPLATES = ["a satellite photo of {}.", "a centered satellite photo of {}."]


pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def images():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _support(bundle, n_per=3):
    g = torch.Generator().manual_seed(4)
    feats = F.normalize(torch.randn(len(NAMES) * n_per, 32, generator=g), dim=-1)
    return feats, torch.arange(len(NAMES)).repeat_interleave(n_per)


def test_adapter_parts_canonical_order_and_errors():
    assert adapter_parts("zero_shot") == ()
    assert adapter_parts("meta_adapter+bitfit+lora") == ("lora", "bitfit", "meta_adapter")
    assert adapter_parts(" bitfit + lora ") == ("lora", "bitfit")
    for bad, hint in [("lora+dora", "unknown method 'dora'"), ("lora+lora", "names a method twice"),
                      ("zero_shot+lora", "stand alone"), ("", "expected a method name"),
                      ("linear_probe", "fit_linear_probe")]:
        with pytest.raises(UnknownMethodError, match=hint.replace("[", r"\[").replace("]", r"\]")):
            adapter_parts(bad)


def test_zero_shot_matches_text_classifier_and_feature_path(bundle, images):
    zs = build_adapted(bundle, NAMES, TEMPLATES, "zero_shot")
    assert zs.model is bundle.model and zs.encoders_frozen  # nothing copied, nothing trained
    assert zs.parameter_counts()["total"] == 0
    weights = zero_shot_classifier(bundle, NAMES, TEMPLATES)
    with torch.no_grad():
        ref = encode_text_classifier(bundle.model, bundle.tokenizer, NAMES, TEMPLATES)
        feats = F.normalize(bundle.model.encode_image(images), dim=-1)
        logits = zs(images)
    assert torch.allclose(weights, ref) and torch.allclose(zs.class_embeddings(), ref)
    assert torch.allclose(logits, 100 * feats @ ref.T, atol=1e-4)
    assert torch.allclose(zs.logits_from_features(feats), logits, atol=1e-5)
    assert torch.allclose(cosine_logits(feats, weights, 100.0), logits, atol=1e-5)


def test_meta_adapter_works_from_cached_features(bundle, images):
    ma = build_adapted(bundle, NAMES, TEMPLATES, "meta_adapter", support=_support(bundle))
    assert ma.encoders_frozen and ma.model is bundle.model
    with torch.no_grad():
        feats = F.normalize(bundle.model.encode_image(images), dim=-1)
        assert torch.allclose(ma.logits_from_features(feats), ma(images), atol=1e-5)
    print(f"\nmeta_adapter trainable: {ma.parameter_counts()}")
    assert ma.parameter_counts()["meta_adapter"] == 2 * 32 * 32 + 32 + 1


@pytest.mark.parametrize(
    "method, expected",
    [
        ("lora", {"lora": 2304, "bitfit": 0, "meta_adapter": 0}),
        ("bitfit", {"lora": 0, "bitfit": 2272, "meta_adapter": 0}),
        ("lora+bitfit", {"lora": 2304, "bitfit": 2272, "meta_adapter": 0}),
        ("bitfit+meta_adapter+lora", {"lora": 2304, "bitfit": 2272, "meta_adapter": 2 * 32 * 32 + 33}),
    ],
)
def test_trainable_parts_and_counts(bundle, images, method, expected):
    """Counts: LoRA r=2 on q/k/v: 3*2*2*(2*64 + 2*32) = 2304; BitFit: 2*11*64 + 2*64 (vision)
    + 2*11*32 + 32 (text) = 2272; Meta-Adapter: 2*D*D + D + 1 with D = 32."""
    support = None
    if "meta_adapter" in method:  # the image tower trains: support images as a dataset of tensors
        support = [(img, i % 4, i) for i, img in enumerate(images)] + [(images[0], 3, 6)]
    ad = build_adapted(bundle, NAMES, TEMPLATES, method, support=support)
    counts = ad.parameter_counts()
    print(f"\n{ad.method}: {counts}")
    assert {k: counts[k] for k in expected} == expected and counts["total"] == sum(expected.values())
    assert ad.model is not bundle.model  # encoder weights will change: the bundle keeps its own
    assert not any("lora_" in n for n, _ in bundle.model.named_parameters())
    ad.train()
    F.cross_entropy(ad(images[:4]), torch.arange(4)).backward()
    grads = {n for n, p in ad.named_parameters() if p.grad is not None}
    assert grads <= set(ad.trainable_parameters())
    assert any("lora_" in n for n in grads) == ("lora" in method)


def test_text_classifier_reencoded_in_training_and_cached_in_eval(bundle, images):
    ad = build_adapted(bundle, NAMES, TEMPLATES, "lora", lora_cfg=LoraConfig(encoders="text"))
    assert ad.text_trainable and not ad.vision_trainable
    ad.train()
    assert ad.class_embeddings().requires_grad  # re-encoded with gradients at every step
    ad.eval()
    cached = ad.class_embeddings()
    assert not cached.requires_grad and ad.class_embeddings() is cached
    with torch.no_grad():
        next(p for n, p in ad.named_parameters() if "lora_B" in n).add_(0.5)
    ad.train()  # entering training marks the cache stale...
    ad.eval()
    assert not torch.allclose(ad.class_embeddings(), cached)  # ...so eval recomputes it


def test_vision_only_methods_cache_the_text_classifier(bundle):
    ad = build_adapted(bundle, NAMES, TEMPLATES, "bitfit", bitfit_cfg=BitFitConfig(encoders="vision"))
    assert ad.vision_trainable and not ad.text_trainable
    ad.train()
    assert ad.class_embeddings() is ad.class_embeddings() and not ad.class_embeddings().requires_grad


def test_support_errors(bundle):
    with pytest.raises(AdaptationError, match="meta_adapter needs a support set"):
        build_adapted(bundle, NAMES, TEMPLATES, "meta_adapter")
    with pytest.raises(AdaptationError, match="pass the support images as a dataset"):
        build_adapted(bundle, NAMES, TEMPLATES, "lora+meta_adapter", support=_support(bundle))
    with pytest.raises(AdaptationError, match="support labels must lie in"):
        feats, labels = _support(bundle)
        build_adapted(bundle, NAMES[:2], TEMPLATES, "meta_adapter", support=(feats, labels))
    with pytest.raises(AdaptationError, match="rank must be a positive integer"):
        build_adapted(bundle, NAMES, TEMPLATES, "lora", lora_cfg=LoraConfig(rank=0))
    with pytest.raises(AdaptationError, match="dropout"):
        build_adapted(bundle, NAMES, TEMPLATES, "meta_adapter", meta_cfg=MetaAdapterConfig(dropout=2.0),
                      support=_support(bundle))
