"""The fused LoRA training path computes CLIP-LoRA exactly: outputs and gradients equal the plain
formulation ``x (W + s B A)^T`` (through open_clip's own ``nn.MultiheadAttention``), with dropout
equal to ``(x * keep / (1 - p)) A^T B^T`` for the masks it drew; only A and B train; cheap masks
have the right probability; fallbacks; the text tower's padding cut changes nothing."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from lowres_clip.features import encode_text
from lowres_clip.methods import build_adapted
from lowres_clip.methods import lora_fused
from lowres_clip.methods.lora import LoraConfig, SeparateQKVAttention, apply_lora, lora_layers, merge_lora
from lowres_clip.methods.lora_fused import adjacent_view, fused_lora, keep_mask, keep_values
from lowres_clip.models import load_clip

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return load_clip("tiny-vit", "random", device="cpu")


def _inputs(bundle):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, bundle.image_size, bundle.image_size, generator=g)
    tokens = bundle.tokenizer(["a photo of a forest", "a highway", "sea or lake"])
    return images, tokens


def _adapted(bundle, seed: int = 0, **cfg) -> nn.Module:
    """A copy of the tiny model with LoRA (dropout in eval mode) and non-zero B."""
    model = copy.deepcopy(bundle.model).eval()
    apply_lora(model, LoraConfig(**cfg), seed=seed)
    torch.manual_seed(seed + 3)
    for layer in lora_layers(model):
        nn.init.normal_(layer.lora_B["default"].weight, std=0.3)
        layer.lora_dropout.eval()
    return model


def _lora_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def _plain_reference(bundle, adapted: nn.Module, images, tokens):
    """Logits of the ORIGINAL open_clip model (packed nn.MultiheadAttention) whose in-proj weights are
    ``W + s B A`` built from leaf copies of the adapters; returns (logits, {adapter name: leaf})."""
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in _lora_params(adapted).items()}
    scale = lora_layers(adapted)[0].scaling["default"]
    weights = {}
    for name, module in bundle.model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            d = module.embed_dim
            parts = []
            for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                a = leaves[f"{name}.{proj}.lora_A.default.weight"]
                b = leaves[f"{name}.{proj}.lora_B.default.weight"]
                parts.append(module.in_proj_weight[i * d:(i + 1) * d] + scale * (b @ a))
            weights[f"{name}.in_proj_weight"] = torch.cat(parts)

    out = functional_call(bundle.model, weights, args=(), kwargs={"image": images, "text": tokens})
    return out, leaves


def _clip_logits(out) -> torch.Tensor:
    """open_clip's forward returns (image features, text features, logit scale) normalised."""
    image, text = out[0], out[1]
    return image @ text.T


# --------------------------------------------------------------------------- equivalence
def test_fused_path_equals_plain_formulation_outputs_and_gradients(bundle):
    images, tokens = _inputs(bundle)
    adapted = _adapted(bundle)
    attns = [m for m in adapted.modules() if isinstance(m, SeparateQKVAttention)]
    assert attns and all(m.uses_fused_path() for m in attns)  # the fused path is taken

    logits = _clip_logits(adapted(image=images, text=tokens))
    (logits ** 2).sum().backward()
    ref_out, leaves = _plain_reference(bundle, adapted, images, tokens)
    ref_logits = _clip_logits(ref_out)
    (ref_logits ** 2).sum().backward()

    assert torch.allclose(logits, ref_logits, **TOL)
    params = _lora_params(adapted)
    assert set(params) == set(leaves) and len(params) == 2 * 3 * 4  # A and B of q/k/v, 4 blocks
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.allclose(p.grad, leaves[name].grad, rtol=1e-4, atol=1e-6), name
    # the frozen weights never receive gradients; only A and B are trainable
    assert {n for n, p in adapted.named_parameters() if p.requires_grad} == set(params)
    assert all(p.grad is None for n, p in adapted.named_parameters() if n not in params)


def test_fused_and_generic_path_agree_for_other_placements(bundle):
    """q and v only (one projection without an adapter), rank 3, standard scaling: fused == peft's own
    forward, outputs and gradients."""
    images, tokens = _inputs(bundle)
    results = []
    for fused in (True, False):
        model = _adapted(bundle, params=("q", "v"), rank=3, scaling="standard")
        with fused_lora(fused):
            logits = _clip_logits(model(image=images, text=tokens))
            (logits ** 2).sum().backward()
        results.append((logits.detach(), {n: p.grad for n, p in _lora_params(model).items()}))
    (l1, g1), (l2, g2) = results
    assert torch.allclose(l1, l2, **TOL)
    assert g1.keys() == g2.keys() and all(torch.allclose(g1[k], g2[k], rtol=1e-4, atol=1e-6) for k in g1)


def _reference_attention(x, attn: SeparateQKVAttention, keeps, p: float):
    """Plain per-projection CLIP-LoRA attention: ``x W^T + b + s (x * keep / (1 - p)) A^T B^T``."""
    outs = []
    for proj, keep in zip((attn.q_proj, attn.k_proj, attn.v_proj), keeps):
        base = proj.get_base_layer()
        a, b = proj.lora_A["default"].weight, proj.lora_B["default"].weight
        s = proj.scaling["default"]
        outs.append(F.linear(x, base.weight, base.bias) + s * ((x * keep / (1 - p)) @ a.T) @ b.T)
    bsz, n, e = x.shape
    h = attn.num_heads
    q, k, v = (t.view(bsz, n, h, e // h).transpose(1, 2) for t in outs)
    probs = ((q @ k.transpose(-1, -2)) / math.sqrt(e // h)).softmax(-1)
    return attn.out_proj((probs @ v).transpose(1, 2).reshape(bsz, n, e))


def test_fused_dropout_equals_reference_with_the_same_masks(bundle, monkeypatch):
    """With dropout active, the fused block equals the plain formulation using the masks it drew:
    three independent masks (one per adapter), inverted scaling 1 / (1 - p), on the adapter input."""
    model = _adapted(bundle, dropout=0.25)
    for layer in lora_layers(model):
        layer.lora_dropout.train()
    attn = model.visual.transformer.resblocks[0].attn
    drawn = []
    real = lora_fused.keep_values

    def recording(*args, **kwargs):
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(lora_fused, "keep_values", recording)
    x = torch.randn(2, 5, attn.embed_dim, requires_grad=True)
    out, _ = attn(x, x, x, need_weights=False)
    (out ** 2).sum().backward()
    fused_grads = {n: p.grad.clone() for n, p in _lora_params(attn).items()}
    fused_x_grad = x.grad.clone()
    assert len(drawn) == 1 and drawn[0].shape == (3, 10, attn.embed_dim)
    keeps = drawn[0].view(3, 2, 5, attn.embed_dim)
    assert not torch.equal(keeps[0], keeps[1]) and not torch.equal(keeps[1], keeps[2])  # independent masks

    for p in attn.parameters():
        p.grad = None
    x.grad = None
    ref = _reference_attention(x, attn, keeps, 0.25)
    (ref ** 2).sum().backward()
    assert torch.allclose(out, ref, **TOL)
    assert torch.allclose(x.grad, fused_x_grad, rtol=1e-4, atol=1e-6)
    for n, p in _lora_params(attn).items():
        assert torch.allclose(p.grad, fused_grads[n], rtol=1e-4, atol=1e-6), n


def test_fused_path_under_bf16_autocast_matches_generic_path(bundle):
    images, tokens = _inputs(bundle)
    model = _adapted(bundle)
    with torch.autocast("cpu", torch.bfloat16):
        with fused_lora(True):
            fused = _clip_logits(model(image=images, text=tokens)).float()
        with fused_lora(False):
            generic = _clip_logits(model(image=images, text=tokens)).float()
    assert fused.dtype == torch.float32 and torch.isfinite(fused).all()
    assert torch.allclose(fused, generic, rtol=0.05, atol=0.05)


# --------------------------------------------------------------------------- trainable set, fallbacks
def test_adapted_clip_trains_only_adapters_with_dropout_on(bundle):
    images, _ = _inputs(bundle)
    adapted = build_adapted(bundle, ["forest", "highway", "sea"], ["a photo of {}."], "lora")
    adapted.train()
    for layer in lora_layers(adapted.model):
        nn.init.normal_(layer.lora_B["default"].weight, std=0.1)
    F.cross_entropy(adapted(images), torch.tensor([0, 1, 2])).backward()
    trainable = adapted.trainable_parameters()
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())
    assert all(p.grad is None for n, p in adapted.named_parameters() if n not in trainable)


def test_bitfit_biases_get_the_same_gradients_through_the_fused_path(bundle):
    images, _ = _inputs(bundle)
    grads = []
    for fused in (True, False):
        torch.manual_seed(0)
        adapted = build_adapted(bundle, ["forest", "highway", "sea"], ["a photo of {}."], "lora+bitfit")
        for layer in lora_layers(adapted.model):
            nn.init.normal_(layer.lora_B["default"].weight, std=0.1)
        adapted.eval()  # no dropout: both paths are deterministic (the text classifier is cached)
        with fused_lora(fused):
            F.cross_entropy(adapted(images), torch.tensor([0, 1, 2])).backward()
        grads.append({n: p.grad for n, p in adapted.trainable_parameters().items() if n.startswith("model.visual.")})
    qkv_bias = [n for n in grads[0] if n.endswith(("q_proj.base_layer.bias", "v_proj.base_layer.bias"))]
    assert len(qkv_bias) == 4 and all(grads[0][n].abs().sum() > 0 for n in qkv_bias)
    assert all(g is not None for g in grads[0].values()) and grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6) for n in grads[0])


def test_merged_weights_need_weights_and_cross_attention_take_the_generic_path(bundle):
    model = _adapted(bundle)
    attn = model.visual.transformer.resblocks[0].attn
    x, y = torch.randn(2, 5, attn.embed_dim), torch.randn(2, 5, attn.embed_dim)
    with torch.no_grad():
        fused, _ = attn(x, x, x, need_weights=False)
        with_weights, weights = attn(x, x, x, need_weights=True)
        assert weights is not None and torch.allclose(with_weights, fused, **TOL)
        cross, _ = attn(x, y, y, need_weights=False)
        with fused_lora(False):
            assert torch.allclose(attn(x, y, y, need_weights=False)[0], cross, **TOL)
        merge_lora(model)
        assert not attn.uses_fused_path()
        assert torch.allclose(attn(x, x, x, need_weights=False)[0], fused, **TOL)


def test_frozen_qkv_weights_are_packed_and_repacked_after_a_move(bundle):
    model = _adapted(bundle)
    attn = model.visual.transformer.resblocks[0].attn
    weights = lambda: [m.get_base_layer().weight for m in (attn.q_proj, attn.k_proj, attn.v_proj)]  # noqa: E731
    assert adjacent_view(weights()) is not None  # one [3E, E] storage, used without a copy
    images, tokens = _inputs(bundle)
    with torch.no_grad():
        before = _clip_logits(model(image=images, text=tokens))
        model.double()  # every parameter gets its own storage
        assert adjacent_view(weights()) is None
    with torch.inference_mode():  # never repacks into inference tensors (training would then fail)
        assert torch.allclose(_clip_logits(model(image=images.double(), text=tokens)).float(), before, **TOL)
    assert adjacent_view(weights()) is None
    after = _clip_logits(model(image=images.double(), text=tokens))
    after.sum().backward()
    assert adjacent_view(weights()) is not None  # repacked on first use, same values
    assert torch.allclose(after.detach().float(), before, **TOL)


# --------------------------------------------------------------------------- dropout masks
@pytest.mark.parametrize("p", [0.25, 0.1, 0.5, 0.0])
def test_keep_masks_have_the_dropout_probability_and_follow_the_seed(p):
    n = 400_000
    torch.manual_seed(7)
    mask = keep_mask((n,), p)
    values = keep_values((n,), p, torch.bfloat16)
    assert mask.dtype == torch.bool and values.dtype == torch.bfloat16
    assert set(values.unique().tolist()) <= {0.0, 1.0}
    sigma = math.sqrt(max(p * (1 - p), 1e-12) / n)
    for kept in (mask.float().mean().item(), values.float().mean().item()):
        assert abs(kept - (1 - p)) <= 5 * sigma + 1e-9
    torch.manual_seed(7)
    assert torch.equal(keep_mask((n,), p), mask)  # same seed, same mask


def test_keep_mask_rejects_bad_probabilities():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        keep_mask((3,), 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        keep_values((3,), -0.1, torch.float32)


def test_fused_lora_rejects_unknown_attention_backend():
    with pytest.raises(ValueError, match="Unknown attention backend"):
        with fused_lora(True, attention="flash"):
            pass


# --------------------------------------------------------------------------- text padding
def test_text_tower_without_padding_gives_the_same_features_and_gradients(bundle):
    _, tokens = _inputs(bundle)
    assert (tokens == 0).all(dim=0).any()  # there is padding to cut
    model = _adapted(bundle)
    full = model.encode_text(tokens)
    (full ** 2).sum().backward()
    ref = {n: p.grad.clone() for n, p in _lora_params(model).items() if not n.startswith("visual.")}
    for p in model.parameters():
        p.grad = None
    cut = encode_text(model, tokens)
    (cut ** 2).sum().backward()
    assert torch.allclose(cut, full, **TOL)
    for n, g in ref.items():
        assert torch.allclose(dict(model.named_parameters())[n].grad, g, rtol=1e-4, atol=1e-6), n
