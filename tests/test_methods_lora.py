"""LoRA (CLIP-LoRA on peft): exact separation of packed attention, identity at init, merging,
placement, parameter counts (computed analytically), gradients, bad inputs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from lowres_clip.methods.lora import (
    LoraConfig,
    SeparateQKVAttention,
    apply_lora,
    lora_layers,
    lora_sites,
    merge_lora,
    merged_lora,
    select_blocks,
    separate_attention,
)
from lowres_clip.models import load_clip
from lowres_clip.utils import AdaptationError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundles():
    torch.manual_seed(0)
    return {name: load_clip(name, "random", device="cpu") for name in ("tiny-vit", "tiny-rn")}


def _logits(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images, normalize=True) @ model.encode_text(tokens, normalize=True).T


def _inputs(bundle):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, bundle.image_size, bundle.image_size, generator=g)
    tokens = bundle.tokenizer(["a photo of a forest", "a highway", "sea or lake"])
    return images, tokens


# --------------------------------------------------------------------------- separation
@pytest.mark.parametrize("batch_first", [True, False])
def test_separated_attention_equals_multihead_attention(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    sep = SeparateQKVAttention.from_mha(mha).eval()
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    bool_mask = torch.rand(2 * 4, 5, 5) > 0.7
    bool_mask[..., 0] = False  # every query keeps one key
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    cases = [dict(), dict(attn_mask=causal), dict(attn_mask=bool_mask), dict(key_padding_mask=padding)]
    for kw in cases:
        ref, ref_w = mha(x, x, x, need_weights=True, **kw)
        out, w = sep(x, x, x, need_weights=True, **kw)
        fast, none = sep(x, x, x, need_weights=False, **kw)
        assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(w, ref_w, atol=1e-5)
        assert torch.allclose(fast, ref, atol=1e-5) and none is None


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_separation_keeps_logits(bundles, name):
    b = bundles[name]
    images, tokens = _inputs(b)
    model = copy.deepcopy(b.model)
    replaced = separate_attention(model)
    # tiny-vit: 2 vision + 2 text blocks; tiny-rn: the attention pool + 2 text blocks
    assert replaced == (4 if name == "tiny-vit" else 3)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    assert torch.allclose(_logits(model, images, tokens), _logits(b.model, images, tokens), atol=1e-5)


# --------------------------------------------------------------------------- identity, merge, counts
def _expected_lora_count(name: str, rank: int) -> int:
    """3 adapters (q, k, v) of rank r on d x d maps: 3 * 2 * r * d per block.

    tiny-vit: vision width 64, 2 blocks; tiny-rn: one attention pool of width 8 * 32 = 256;
    text (both): width 32, 2 blocks."""
    vision = 2 * 3 * 2 * rank * 64 if name == "tiny-vit" else 1 * 3 * 2 * rank * 256
    text = 2 * 3 * 2 * rank * 32
    return vision + text


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_lora_identity_at_init_counts_and_merge(bundles, name):
    b = bundles[name]
    images, tokens = _inputs(b)
    base = _logits(b.model, images, tokens)
    model = copy.deepcopy(b.model)
    apply_lora(model, LoraConfig())
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    print(f"\n{name}: LoRA r=2 q/k/v both towers: {sum(trainable.values())} trainable parameters")
    assert all("lora_" in n for n in trainable)
    assert sum(trainable.values()) == _expected_lora_count(name, 2)
    assert torch.allclose(_logits(model, images, tokens), base, atol=1e-5)  # B = 0 at init

    torch.manual_seed(3)
    for layer in lora_layers(model):
        nn.init.normal_(layer.lora_B["default"].weight, std=0.5)
    unmerged = _logits(model, images, tokens)
    assert not torch.allclose(unmerged, base, atol=1e-3)
    assert merge_lora(model) == len(lora_layers(model)) > 0
    assert torch.allclose(_logits(model, images, tokens), unmerged, atol=1e-5)


def test_lora_scaling_is_clip_lora(bundles):
    model = copy.deepcopy(bundles["tiny-vit"].model)
    apply_lora(model, LoraConfig(rank=4, alpha=2.0))
    assert [layer.scaling["default"] for layer in lora_layers(model)] == pytest.approx([2.0 / 4 ** 0.5] * 12)
    model = copy.deepcopy(bundles["tiny-vit"].model)
    apply_lora(model, LoraConfig(rank=4, alpha=2.0, scaling="standard"))
    assert [layer.scaling["default"] for layer in lora_layers(model)] == pytest.approx([0.5] * 12)


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (LoraConfig(encoders="vision"), 2 * 3 * 2 * 2 * 64),
        (LoraConfig(encoders="text", rank=4), 2 * 3 * 2 * 4 * 32),
        (LoraConfig(position="bottom"), 1 * 3 * 2 * 2 * 64 + 1 * 3 * 2 * 2 * 32),
        (LoraConfig(position="top", params=("q", "v")), 1 * 2 * 2 * 2 * 64 + 1 * 2 * 2 * 2 * 32),
        (LoraConfig(params=("q", "k", "v", "o")), 2 * 4 * 2 * 2 * 64 + 2 * 4 * 2 * 2 * 32),
        (LoraConfig(position=[1], encoders="vision"), 1 * 3 * 2 * 2 * 64),
    ],
)
def test_lora_counts_by_placement(bundles, cfg, expected):
    model = copy.deepcopy(bundles["tiny-vit"].model)
    targets = apply_lora(model, cfg)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"\ntiny-vit {cfg.encoders}/{cfg.position}/{list(cfg.params)} r={cfg.rank}: {n} trainable ({len(targets)} modules)")
    assert n == expected


def test_text_lora_never_touches_the_image_tower(bundles):
    model = copy.deepcopy(bundles["tiny-vit"].model)
    targets = apply_lora(model, LoraConfig(encoders="text"))
    assert targets and all(t.startswith("transformer.") for t in targets)
    assert not any("lora_" in n for n, _ in model.visual.named_parameters())
    assert any(isinstance(m, nn.MultiheadAttention) for m in model.visual.modules())  # vision left packed


def test_lora_gradients_reach_only_adapters(bundles):
    b = bundles["tiny-vit"]
    images, tokens = _inputs(b)
    model = copy.deepcopy(b.model)
    apply_lora(model, LoraConfig(dropout=0.0))
    for layer in lora_layers(model):  # non-zero B so that A receives gradients too
        nn.init.normal_(layer.lora_B["default"].weight, std=0.1)
    (model.encode_image(images) @ model.encode_text(tokens).T).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {n for n, p in model.named_parameters() if "lora_" in n}


# --------------------------------------------------------------------------- placement
def test_select_blocks_matches_clip_lora_for_12_blocks():
    assert select_blocks(12, "bottom") == [0, 1, 2, 3]
    assert select_blocks(12, "mid") == [4, 5, 6, 7]
    assert select_blocks(12, "up") == select_blocks(12, "top") == [8, 9, 10, 11]
    assert select_blocks(12, "half-bottom") == [0, 1, 2, 3, 4, 5]
    assert select_blocks(12, "half-up") == select_blocks(12, "half-top") == [6, 7, 8, 9, 10, 11]
    assert select_blocks(12, "all") == list(range(12))
    assert select_blocks(2, "bottom") == [0] and select_blocks(2, "top") == [1]
    assert select_blocks(1, "half-top") == [0]
    assert select_blocks(5, [4, 0]) == [0, 4]


def test_hf_bert_text_tower_and_cnn_image_tower():
    """MiniLM-style BERT text tower (query/key/value/output.dense) and an EfficientNet-Lite0 image
    tower (pointwise 1x1 convolutions) as in the embedded CPU model."""
    timm = pytest.importorskip("timm")
    from transformers import BertConfig, BertModel

    class TwoTowers(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = nn.Module()
            self.visual.trunk = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
            self.text = nn.Module()
            self.text.transformer = BertModel(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                                         intermediate_size=64, vocab_size=100))

    torch.manual_seed(0)
    model = TwoTowers().eval()
    images, ids = torch.randn(2, 3, 64, 64), torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        ref_img, ref_txt = model.visual.trunk(images), model.text.transformer(input_ids=ids).last_hidden_state
    convs = {n: m for n, m in model.named_modules() if n.rpartition(".")[2] in ("conv_pw", "conv_pwl", "conv_head")}
    rank = 2
    expected_cnn = sum(rank * (m.in_channels + m.out_channels) for m in convs.values())
    expected_bert = 3 * 4 * rank * (32 + 32)  # 3 layers x (q, k, v, o) x r x (in + out)
    blocks = lora_sites(model, "vision")
    assert list(blocks)[-1] == "visual.trunk.conv_head" and len(blocks) == 17  # 16 blocks + conv_head
    apply_lora(model, LoraConfig(rank=rank, params=("q", "k", "v", "o")))
    counts = {t: sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith(t))
              for t in ("visual", "text")}
    print(f"\nEfficientNet-Lite0 pointwise-conv LoRA: {counts['visual']}; BERT q/k/v/o LoRA: {counts['text']}")
    assert counts == {"visual": expected_cnn, "text": expected_bert}
    with torch.no_grad():
        assert torch.allclose(model.visual.trunk(images), ref_img, atol=1e-5)
        assert torch.allclose(model.text.transformer(input_ids=ids).last_hidden_state, ref_txt, atol=1e-5)


def _trained_cnn_lora(seed: int = 0):
    """An EfficientNet-Lite0 tower with LoRA on its 1x1 convolutions and non-zero (as if trained) B."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(seed)
    model = nn.Module()
    model.visual = nn.Module()
    model.visual.trunk = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    apply_lora(model, LoraConfig(rank=2, encoders="vision"))
    with torch.no_grad():
        for layer in lora_layers(model):
            for b in layer.lora_B.values():
                b.weight.normal_(0, 0.05)
    return model.eval()


def test_cnn_lora_dropout_is_an_inverted_dropout_with_cheap_masks():
    """peft's dropout modules become MaskDropout: in training each element is kept with probability
    1 - p and scaled by 1 / (1 - p) (mean preserved), the gradient passes through the kept elements
    only; in eval mode it is the identity."""
    from lowres_clip.methods.lora_fused import MaskDropout

    model = _trained_cnn_lora()
    drops = [d for layer in lora_layers(model) for d in layer.lora_dropout.values()]
    assert drops and all(type(d) is MaskDropout and d.p == 0.25 for d in drops)
    drop = drops[0].train()
    torch.manual_seed(3)
    x = torch.ones(64, 32, 16, 16, requires_grad=True)
    y = drop(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.75) < 0.005  # 524,288 draws: 5 standard deviations is 0.003
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.75))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * keep / 0.75)/dx = keep / 0.75
    drop.eval()
    assert drop(x) is x


def test_merged_lora_evaluates_the_same_function_and_restores_weights():
    """Inside merged_lora the adapters are folded into the base weights: same outputs as the
    unmerged layers; afterwards the base weights are bit for bit the old ones and training works."""
    model = _trained_cnn_lora()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        ref = model.visual.trunk(images)
        with merged_lora(model) as n:
            assert n == len(lora_layers(model)) > 0 and all(m.merged for m in lora_layers(model))
            merged = model.visual.trunk(images)
    assert torch.allclose(merged, ref, atol=1e-4, rtol=1e-4)
    assert not any(m.merged for m in lora_layers(model))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(RuntimeError, match="boom"), merged_lora(model):  # restored on errors too
        raise RuntimeError("boom")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "cfg, message",
    [
        (LoraConfig(rank=0), "rank must be a positive integer"),
        (LoraConfig(rank=-2), "rank must be a positive integer"),
        (LoraConfig(position="middle"), "Unknown LoRA position 'middle'"),
        (LoraConfig(params=("q", "z")), "Unknown LoRA params ['z']"),
        (LoraConfig(encoders="audio"), "Unknown encoders 'audio'"),
        (LoraConfig(scaling="sqrt"), "Unknown LoRA scaling"),
        (LoraConfig(position=[0, 7]), "out of range"),
        (LoraConfig(position="mid"), "selects no block"),  # depth 2 has no middle third
    ],
)
def test_bad_lora_configs_raise_clear_errors(bundles, cfg, message):
    model = copy.deepcopy(bundles["tiny-vit"].model)
    with pytest.raises(AdaptationError) as err:
        apply_lora(model, cfg)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)
