"""Attention maps: input-sized, finite, in [0, 1], class-dependent; ViT rollout works through
nn.MultiheadAttention, peft LoRA and custom q/k/v modules; CNNs (ModifiedResNet, timm) use Grad-CAM."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lowres_clip.analysis import attention
from lowres_clip.features import encode_text_classifier
from lowres_clip.models import load_clip

CLASSES = ["forest", "river", "sea or lake", "highway"]


def _text(bundle) -> torch.Tensor:
    with torch.no_grad():
        return encode_text_classifier(bundle.model, bundle.tokenizer, CLASSES, ["a satellite photo of {}."])


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    bundle = load_clip("tiny-vit", device="cpu")
    return bundle, _text(bundle)


@pytest.fixture(scope="module")
def rn():
    torch.manual_seed(0)
    bundle = load_clip("tiny-rn", device="cpu")
    # open_clip zero-initialises the last BatchNorm of every bottleneck, which makes the residual
    # branches (and random-weight Grad-CAM) degenerate; give the BatchNorms seeded random affines.
    gen = torch.Generator().manual_seed(0)
    for m in bundle.model.visual.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=gen) + 0.5
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)
    return bundle, _text(bundle)


def _images(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("which", ["vit", "rn"])
def test_maps_input_sized_finite_and_class_dependent(which, request):
    bundle, text = request.getfixturevalue(which)
    x = _images(bundle.image_size)
    m0 = attention.attention_maps(bundle.model, x, text, [0, 0])
    m1 = attention.attention_maps(bundle.model, x, text, [1, 1])
    assert m0.shape == (2, bundle.image_size, bundle.image_size)
    for m in (m0, m1):
        assert np.isfinite(m).all() and m.min() >= 0.0 and m.max() <= 1.0
        assert (m.max(axis=(1, 2)) == pytest.approx(1.0))  # not flat: gradients reached the tower
    assert np.abs(m0 - m1).max() > 0.02  # another target class, another map
    single = attention.attention_map(bundle.model, x[0], text, target=0)
    np.testing.assert_allclose(single, m0[0], atol=1e-5)  # batching does not mix samples
    assert attention.resolve_method(bundle.model) == ("rollout" if which == "vit" else "gradcam")


def test_rollout_leaves_model_state_untouched(vit):
    bundle, text = vit
    model = bundle.model
    model.train()
    try:
        before = [p.detach().clone() for p in model.parameters()]
        attention.attention_maps(model, _images(32), text, None)  # None: predicted classes
        assert model.training
        assert all(p.grad is None for p in model.parameters())
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    finally:
        model.eval()


class QKVAttention(nn.Module):
    """A LoRA-style replacement of nn.MultiheadAttention with separate q/k/v/out Linear layers."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        d = mha.embed_dim
        self.num_heads = mha.num_heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d) for _ in range(3))
        self.out_proj = nn.Linear(d, d)
        with torch.no_grad():
            for i, lin in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                lin.weight.copy_(mha.in_proj_weight[i * d:(i + 1) * d])
                lin.bias.copy_(mha.in_proj_bias[i * d:(i + 1) * d])
            self.out_proj.load_state_dict(mha.out_proj.state_dict())

    def forward(self, q_x, k_x=None, v_x=None, need_weights=False, attn_mask=None):
        b, n, d = q_x.shape
        h = self.num_heads

        def split(t):
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        out = nn.functional.scaled_dot_product_attention(split(self.q_proj(q_x)), split(self.k_proj(k_x)),
                                                         split(self.v_proj(v_x)), attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d)), None


def test_custom_qkv_attention_gives_same_rollout(vit):
    bundle, text = vit
    x = _images(32)
    reference = attention.attention_maps(bundle.model, x, text, [2, 3])
    model = copy.deepcopy(bundle.model)
    for blk in model.visual.transformer.resblocks:
        blk.attn = QKVAttention(blk.attn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to Grad-CAM
        maps = attention.attention_maps(model, x, text, [2, 3])
    np.testing.assert_allclose(maps, reference, atol=1e-4)


def test_peft_lora_attention_is_supported(vit):
    from peft import LoraConfig, inject_adapter_in_model

    bundle, text = vit
    model = copy.deepcopy(bundle.model)
    torch.manual_seed(0)
    model.visual = inject_adapter_in_model(LoraConfig(r=2, target_modules=["attn"], init_lora_weights=False),
                                           model.visual)
    x = _images(32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maps = attention.attention_maps(model, x, text, [0, 1])
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()
    # the LoRA weights change the explanation
    assert np.abs(maps - attention.attention_maps(bundle.model, x, text, [0, 1])).max() > 1e-3


class OpaqueAttention(nn.Module):
    """An attention module whose probabilities cannot be recovered (forces the fallback)."""

    def __init__(self, mha):
        super().__init__()
        self.inner = mha

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


def test_unknown_attention_falls_back_to_token_gradcam(vit):
    bundle, text = vit
    model = copy.deepcopy(bundle.model)
    for blk in model.visual.transformer.resblocks:
        blk.attn = OpaqueAttention(blk.attn)
    with pytest.warns(UserWarning, match="Grad-CAM"):
        maps = attention.attention_maps(model, _images(32), text, [0, 1])
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()
    explicit = attention.attention_maps(bundle.model, _images(32), text, [0, 1], method="gradcam")
    np.testing.assert_allclose(maps, explicit, atol=1e-5)


def test_rollout_refused_for_cnn_and_bad_targets(rn, vit):
    bundle, text = rn
    with pytest.raises(attention.AttentionError, match="rollout needs"):
        attention.attention_maps(bundle.model, _images(64), text, [0, 0], method="rollout")
    with pytest.raises(attention.AttentionError, match="target classes"):
        attention.attention_maps(vit[0].model, _images(32), vit[1], [0, 9])
    with pytest.raises(attention.AttentionError, match="unknown attention method"):
        attention.resolve_method(vit[0].model, "lime")


def test_timm_cnn_tower_uses_last_conv_stage():
    from open_clip.timm_model import TimmModel

    class TimmClip(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = TimmModel("efficientnet_lite0", embed_dim=16, image_size=64)

        def encode_image(self, x):
            return self.visual(x)

    torch.manual_seed(0)
    model = TimmClip().eval()
    x = _images(64)
    # EfficientNet's last conv stage: conv_head -> bn2 (BatchNorm + activation), then global pooling
    assert attention.find_last_conv_layer(model.visual, x) == "trunk.bn2"
    text = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    m0 = attention.attention_maps(model, x, text, [0, 0])
    m1 = attention.attention_maps(model, x, text, [1, 1])
    assert m0.shape == (2, 64, 64) and np.isfinite(m0).all()
    assert np.abs(m0 - m1).max() > 0.02


def test_attention_source_on_pil_images(vit):
    bundle, text = vit
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(3)]
    src = attention.AttentionSource.from_bundle(bundle, text)
    src.batch_size = 2
    shown, maps = src.explain(images, [0, 1, 2])
    assert [im.size for im in shown] == [(32, 32)] * 3
    assert [m.shape for m in maps] == [(32, 32)] * 3
    ov = attention.overlay(shown[0], maps[0])
    assert ov.shape == (32, 32, 3) and ov.dtype == np.uint8


def test_timm_vit_tower_uses_token_gradcam():
    import timm
    from open_clip.timm_model import TimmModel

    class TimmVitClip(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = TimmModel("vit_tiny_patch16_224", embed_dim=16, image_size=32)
            # a 32-pixel trunk (2 x 2 patches) keeps the test fast; same widths as the 224 one
            self.visual.trunk = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0)

        def encode_image(self, x):
            return self.visual(x)

    torch.manual_seed(0)
    model = TimmVitClip().eval()
    assert attention.tower_kind(model) == "timm-vit" and attention.resolve_method(model) == "gradcam"
    text = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    x = _images(32)
    m0 = attention.attention_maps(model, x, text, [0, 0])
    m1 = attention.attention_maps(model, x, text, [1, 1])
    assert m0.shape == (2, 32, 32) and np.isfinite(m0).all()
    assert np.abs(m0 - m1).max() > 0.02


def test_project_lora_module_is_supported(vit):
    """The project's LoRA (separate q/k/v/out attention + peft layers) keeps exact rollout."""
    from lowres_clip.methods.lora import LoraConfig, apply_lora, lora_layers

    bundle, text = vit
    x = _images(32)
    reference = attention.attention_maps(bundle.model, x, text, [0, 1])
    model = copy.deepcopy(bundle.model)
    apply_lora(model, LoraConfig(params=("q", "k", "v", "o")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to Grad-CAM
        np.testing.assert_allclose(attention.attention_maps(model, x, text, [0, 1]), reference, atol=1e-4)  # B = 0
        gen = torch.Generator().manual_seed(0)
        for layer in lora_layers(model):
            for lin in layer.lora_B.values():
                lin.weight.data = 0.5 * torch.randn(lin.weight.shape, generator=gen)
        adapted = attention.attention_maps(model, x, text, [0, 1])
    assert np.abs(adapted - reference).max() > 1e-3
