"""BitFit: exactly the intended biases are trained (counts computed analytically), a step changes
biases only, groups and encoders select the right subsets, bad names raise clear errors."""

from __future__ import annotations

import copy

import pytest
import torch

from lowres_clip.methods.bitfit import BitFitConfig, apply_bitfit, bias_group, bitfit_parameters
from lowres_clip.methods.lora import LoraConfig, apply_lora
from lowres_clip.utils import AdaptationError

V, T = 64, 32  # tiny-vit widths: vision 64 (2 blocks, mlp 4x), text 32 (2 blocks, mlp 4x)


pytestmark = pytest.mark.usefixtures("one_thread")




def _block(d: int, groups: set[str]) -> int:
    """Biases of one open_clip residual block of width d: attention in_proj (3d) + out_proj (d);
    mlp c_fc (4d) + c_proj (d); norms ln_1, ln_2 (d each)."""
    return ("attention" in groups) * 4 * d + ("mlp" in groups) * 5 * d + ("norm" in groups) * 2 * d


def _expected(encoders: str, groups: set[str]) -> int:
    vision = 2 * _block(V, groups) + ("norm" in groups) * 2 * V  # + ln_pre, ln_post
    text = 2 * _block(T, groups) + ("norm" in groups) * T  # + ln_final
    return (encoders in ("vision", "both")) * vision + (encoders in ("text", "both")) * text


@pytest.mark.parametrize(
    "encoders, groups",
    [("both", "all"), ("vision", "all"), ("text", "all"), ("both", ["attention"]), ("vision", ["mlp", "norm"])],
)
def test_bitfit_selects_the_intended_biases(bundle, encoders, groups):
    model = copy.deepcopy(bundle.model)
    for p in model.parameters():
        p.requires_grad_(False)
    names = apply_bitfit(model, BitFitConfig(encoders=encoders, groups=groups))
    gset = {"attention", "mlp", "norm", "other"} if groups == "all" else set(groups)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"\nBitFit {encoders}/{groups}: {n} trainable parameters in {len(names)} tensors")
    assert n == _expected(encoders, gset)
    assert all(name.endswith("bias") for name in names)
    assert "logit_bias" not in names


def test_bias_groups_after_lora_separation(bundle):
    model = copy.deepcopy(bundle.model)
    apply_lora(model, LoraConfig(encoders="vision"))
    names = bitfit_parameters(model, BitFitConfig(encoders="vision", groups=["attention"]))
    assert sum(model.get_parameter(n).numel() for n in names) == 2 * 4 * V  # q, k, v, out biases still count
    assert bias_group(model, "visual.transformer.resblocks.0.attn.q_proj.base_layer.bias") == "attention"
    assert bias_group(model, "visual.transformer.resblocks.0.mlp.c_fc.bias") == "mlp"
    assert bias_group(model, "visual.ln_post.bias") == "norm"


def test_a_training_step_changes_biases_only(bundle):
    model = copy.deepcopy(bundle.model)
    for p in model.parameters():
        p.requires_grad_(False)
    names = set(apply_bitfit(model, BitFitConfig()))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    images = torch.randn(4, 3, 32, 32)
    tokens = bundle.tokenizer(["forest", "river", "highway", "sea"])
    logits = 100 * model.encode_image(images, normalize=True) @ model.encode_text(tokens, normalize=True).T
    torch.nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= names
    assert all(n.endswith("bias") for n in changed)


@pytest.mark.parametrize(
    "cfg, message",
    [
        (BitFitConfig(groups=["attention", "ffn"]), "Unknown BitFit groups ['ffn']"),
        (BitFitConfig(groups="everything"), "Unknown BitFit groups ['everything']"),
        (BitFitConfig(encoders="image"), "Unknown encoders 'image'"),
        (BitFitConfig(groups=["other"], encoders="text"), "selects no bias"),
    ],
)
def test_bad_bitfit_configs_raise_clear_errors(bundle, cfg, message):
    with pytest.raises(AdaptationError) as err:
        bitfit_parameters(bundle.model, cfg)
    assert message in str(err.value)


def test_bert_bias_groups():
    """HF BERT (the embedded MiniLM text tower): per layer, attention = query/key/value/output.dense,
    mlp = intermediate.dense + output.dense, norm = the two LayerNorms."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.text = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=48, vocab_size=50), add_pooling_layer=False)
    count = {g: sum(model.get_parameter(n).numel()
                    for n in bitfit_parameters(model, BitFitConfig(encoders="text", groups=[g])))
             for g in ("attention", "mlp", "norm")}
    assert count == {"attention": 2 * 4 * 16, "mlp": 2 * (48 + 16), "norm": 2 * 2 * 16 + 16}  # + embeddings LN
