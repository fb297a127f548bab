"""Protocol fidelity: our pieces against the reference codes, the references written out here
independently (never the project's own functions), each test failing when its feature breaks.

* LoRA layer = ``x (W + B A alpha/sqrt(r))^T + b`` (CLIP-LoRA ``loralib/layers.py``), only A and B train;
  where LoRA sits for each tower type, as literal module lists (tiny-vit, tiny-rn, EfficientNet-Lite0);
* breaking loss = LRV's ``train_one_step`` (``factor * x2 @ cat(x1, bank).T``, bank of batches) over steps;
* label-preserving images: the per-image weighted mean ``sum(w l) / sum(w)`` against numpy, and LRV's
  line as its script runs it (mean reduction first: the weights cancel); LRV's per-image replacement;
  the seed report's extension; breaking pairs as two random views (one image for LRV, two for the seed);
* Meta-Adapter forward = the reference ``MetaAdapter.forward`` (ArsenalCheng/Meta-Adapter) with shared weights;
* the profiles' values against the anchors' literal values (CLIP-LoRA, Meta-Adapter, LRV, seed report),
  each with the file and line it was read from;
* the improvements ranking is sorted by entropy difference (entropy computed here with numpy; not the
  seed's ``-np.argsort`` order);
* checkpoint selection (``last`` / ``best_val``, ties to the later step; the kept parameters equal a
  snapshot taken at the selected validation), templates, both silhouette definitions.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lowres_clip.augment import (
    AugmentError,
    BreakingLoss,
    BreakingPairDataset,
    Manifest,
    ManifestRow,
    PreservingExtension,
    PreservingReplacement,
)
from lowres_clip.config import ConfigError, resolve_config
from lowres_clip.datasets import Sample
from lowres_clip.methods import LoraConfig, MetaAdapterConfig, build_adapted
from lowres_clip.methods.lora import apply_lora
from lowres_clip.methods.meta_adapter import MetaAdapter
from lowres_clip.models import load_clip
from lowres_clip.prompts import PromptError, resolve_templates
from lowres_clip.runs import Predictions
from lowres_clip.registry import effective_train as registry_effective_train
from lowres_clip.settings import AUGMENT_PROTOCOLS, TrainConfig


def effective_train(train, method, meta):
    """The loop a method's label trains with, the Meta-Adapter's settings being ``meta``."""
    return registry_effective_train(train, method, {"meta_adapter": meta}.get)
from lowres_clip.train import TaskLoss, resolve_iterations, select_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- LoRA
def test_lora_layer_is_w_plus_scaled_ba_and_only_a_b_train():
    torch.manual_seed(0)
    bundle = load_clip("tiny-vit", "random", device="cpu")
    cfg = LoraConfig(rank=4, alpha=3.0, dropout=0.25)
    adapted = build_adapted(bundle, ["a", "b"], ["a photo of a {}."], "lora", lora_cfg=cfg)
    trainable = adapted.trainable_parameters()
    assert trainable and all(("lora_A" in n) or ("lora_B" in n) for n in trainable)  # only A and B train
    layer = adapted.model.get_submodule("visual.transformer.resblocks.0.attn.q_proj")
    params = dict(layer.named_parameters())
    a = next(p for n, p in params.items() if "lora_A" in n)
    b = next(p for n, p in params.items() if "lora_B" in n)
    w = next(p for n, p in params.items() if "lora" not in n and n.endswith("weight"))
    bias = next(p for n, p in params.items() if "lora" not in n and n.endswith("bias"))
    assert a.shape == (4, w.shape[1]) and b.shape == (w.shape[0], 4) and not w.requires_grad
    with torch.no_grad():
        b.copy_(torch.randn_like(b))  # B starts at 0; make the update visible
    layer.eval()  # no adapter dropout
    x = torch.randn(5, w.shape[1])
    expected = x @ (w + (b @ a) * 3.0 / math.sqrt(4)).T + bias  # CLIP-LoRA: scaling = alpha / sqrt(r)
    assert torch.allclose(layer(x), expected, atol=1e-5)
    layer(x).sum().backward()
    assert a.grad is not None and b.grad is not None and w.grad is None


def lora_layer_names(model: torch.nn.Module) -> list[str]:
    """The modules that actually hold a LoRA adapter after injection (peft layers have ``lora_A``), sorted."""
    return sorted(n for n, m in model.named_modules() if isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict))


TEXT_QKV = [f"transformer.resblocks.{b}.attn.{p}_proj" for b in (0, 1) for p in "qkv"]  # tiny text tower: 2 blocks


def test_where_lora_sits_for_each_tower_type():
    """ViT and text transformers: q/k/v of every block; a ModifiedResNet (RN50, tiny-rn) image tower:
    only its attention pool's q/k/v (its 1x1 convolutions are not adapted); an attention-free CNN
    (the embedded model's EfficientNet-Lite0): its pointwise convolutions. Expected lists written out."""
    torch.manual_seed(0)
    vit = load_clip("tiny-vit", "random", device="cpu").model  # 2 vision blocks, 2 text blocks
    apply_lora(vit, LoraConfig(encoders="both"))
    assert lora_layer_names(vit) == sorted([
        "visual.transformer.resblocks.0.attn.q_proj", "visual.transformer.resblocks.0.attn.k_proj",
        "visual.transformer.resblocks.0.attn.v_proj", "visual.transformer.resblocks.1.attn.q_proj",
        "visual.transformer.resblocks.1.attn.k_proj", "visual.transformer.resblocks.1.attn.v_proj",
        "transformer.resblocks.0.attn.q_proj", "transformer.resblocks.0.attn.k_proj",
        "transformer.resblocks.0.attn.v_proj", "transformer.resblocks.1.attn.q_proj",
        "transformer.resblocks.1.attn.k_proj", "transformer.resblocks.1.attn.v_proj",
    ])
    rn = load_clip("tiny-rn", "random", device="cpu").model
    apply_lora(rn, LoraConfig(encoders="both"))
    assert lora_layer_names(rn) == sorted(["visual.attnpool.q_proj", "visual.attnpool.k_proj", "visual.attnpool.v_proj",
                                           *TEXT_QKV])
    text_only = load_clip("tiny-vit", "random", device="cpu").model
    apply_lora(text_only, LoraConfig(encoders="text"))
    assert lora_layer_names(text_only) == sorted(TEXT_QKV)

    import timm

    cnn = torch.nn.Module()
    cnn.visual = torch.nn.Module()
    cnn.visual.trunk = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    apply_lora(cnn, LoraConfig(encoders="vision"))
    # stages of 1, 2, 2, 3, 3, 4, 1 blocks; the first block (depthwise-separable) has one pointwise
    # convolution, the inverted residuals two (expansion conv_pw, projection conv_pwl); then conv_head
    trunk = "visual.trunk."
    assert lora_layer_names(cnn) == sorted(trunk + n for n in [
        "blocks.0.0.conv_pw",
        "blocks.1.0.conv_pw", "blocks.1.0.conv_pwl", "blocks.1.1.conv_pw", "blocks.1.1.conv_pwl",
        "blocks.2.0.conv_pw", "blocks.2.0.conv_pwl", "blocks.2.1.conv_pw", "blocks.2.1.conv_pwl",
        "blocks.3.0.conv_pw", "blocks.3.0.conv_pwl", "blocks.3.1.conv_pw", "blocks.3.1.conv_pwl",
        "blocks.3.2.conv_pw", "blocks.3.2.conv_pwl",
        "blocks.4.0.conv_pw", "blocks.4.0.conv_pwl", "blocks.4.1.conv_pw", "blocks.4.1.conv_pwl",
        "blocks.4.2.conv_pw", "blocks.4.2.conv_pwl",
        "blocks.5.0.conv_pw", "blocks.5.0.conv_pwl", "blocks.5.1.conv_pw", "blocks.5.1.conv_pwl",
        "blocks.5.2.conv_pw", "blocks.5.2.conv_pwl", "blocks.5.3.conv_pw", "blocks.5.3.conv_pwl",
        "blocks.6.0.conv_pw", "blocks.6.0.conv_pwl",
        "conv_head",
    ])


# --------------------------------------------------------------------------- breaking loss
def lrv_train_one_step_loss(x1: torch.Tensor, x2: torch.Tensor, feature_bank: list, factor: float,
                            bank_size: int) -> tuple[torch.Tensor, list]:
    """LRV's scripts/train_circuit.py, the contrastive part of train_one_step, written out:
    x1 = features of the breaking image (aug_imgs), x2 = of its augmented copy (aug_imgs2).
    The bank is truncated to its last ``bank_size`` batches (as the seed authors' runner does; LRV's
    own truncation rebinds a local name and has no effect)."""
    aug_features, aug_features2 = F.normalize(x1, dim=-1), F.normalize(x2, dim=-1)
    if len(feature_bank) > 0:
        compared = torch.cat((aug_features, torch.cat(feature_bank, dim=0)), dim=0)
        logits = factor * aug_features2 @ compared.t()
    else:
        logits = factor * aug_features2 @ aug_features.t()
    loss = F.cross_entropy(logits, torch.arange(x1.shape[0]))
    feature_bank = (feature_bank + [aug_features.detach()])[-bank_size:]
    return loss, feature_bank


@pytest.mark.parametrize("variant", ["lrv", "seed"])
def test_breaking_loss_equals_the_reference_over_steps(variant):
    protocol = AUGMENT_PROTOCOLS[variant]
    ours = BreakingLoss(bank_size=3, temperature=protocol.temperature)  # small bank: truncation is exercised
    bank: list = []
    g = torch.Generator().manual_seed(0)
    for step in range(7):
        b = 4 + step % 3  # batches of different sizes
        x1, x2 = torch.randn(b, 16, generator=g, dtype=torch.float64), torch.randn(b, 16, generator=g, dtype=torch.float64)
        expected, bank = lrv_train_one_step_loss(x1, x2, bank, factor=1 / protocol.temperature, bank_size=3)
        got = ours(x2, x1)  # anchor: the copy (x'), positive and bank: the breaking image (x)
        assert got.item() == pytest.approx(expected.item(), rel=1e-10), step
        assert torch.allclose(ours.bank.tensor(), torch.cat(bank))
    assert ours.bank.batches == 3
    assert (protocol.bank_batches, 1 / protocol.temperature) == ((40, 80.0) if variant == "lrv" else (100, 100.0))


# --------------------------------------------------------------------------- label-preserving images
class _Items:
    """``(tensor, label, index)`` items with ``samples`` (training set) or ``source_paths`` (preserving)."""

    def __init__(self, labels, value, sources=None):
        self.labels, self.value = list(labels), value
        self.samples = [Sample(f"img{i}.png", y) for i, y in enumerate(self.labels)]
        if sources is not None:
            self.source_paths = list(sources)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.full((2,), self.value + i, dtype=torch.float32), self.labels[i], i


def per_sample_ce(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of each row in float64: ``log sum exp(z) - z_y`` (max-shifted)."""
    z = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]


def lrv_supervised_loss_as_run(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """LRV's ``train_one_step`` supervised term as its script executes it: ``loss_fn`` is
    ``nn.CrossEntropyLoss()`` (mean reduction), so ``loss_fn(outputs, labels)`` is already one number
    when ``torch.sum(... * weights) / torch.sum(weights)`` multiplies it."""
    mean_ce = F.cross_entropy(logits, labels)
    return torch.sum(mean_ce * weights) / torch.sum(weights)


def test_replaced_images_weigh_less_per_image_which_lrvs_script_never_does():
    """Ours: ``sum(w l) / sum(w)`` over the per-image losses (the weighting LRV's line spells out);
    LRV's script as run: the plain mean, whatever the weights (README, LRV table)."""
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1, 0])
    w = torch.tensor([1.0, 0.65, 1.0, 0.65, 0.65, 1.0], dtype=torch.float64)
    losses = per_sample_ce(logits.numpy(), labels.numpy())
    weighted = float((w.numpy() * losses).sum() / w.numpy().sum())
    mean = float(losses.mean())
    assert TaskLoss()(logits, labels, w).item() == pytest.approx(weighted, rel=1e-6)
    assert lrv_supervised_loss_as_run(logits, labels, w).item() == pytest.approx(mean, rel=1e-12)
    assert abs(weighted - mean) > 1e-3  # the two really differ on these numbers
    assert TaskLoss()(logits, labels, torch.ones(6)).item() == pytest.approx(mean, rel=1e-6)
    assert TaskLoss()(logits, labels).item() == pytest.approx(mean, rel=1e-6)
    cw = np.array([1.0, 2.0, 0.5, 1.5])  # class-balanced weights combine multiplicatively
    both = w.numpy() * cw[labels.numpy()]
    got = TaskLoss(torch.tensor(cw, dtype=torch.float32))(logits, labels, w).item()
    assert got == pytest.approx(float((both * losses).sum() / both.sum()), rel=1e-6)


def test_per_image_replacement_as_lrv():
    train_set = _Items([0, 1, 2, 3], value=0.0)
    sources = ["img0.png", "img0.png", "img1.png", "img2.png", "img2.png", "img3.png"]
    preserving = _Items([0, 0, 1, 2, 2, 3], value=100.0, sources=sources)
    always = PreservingReplacement(train_set, preserving, p=1.0, weight=0.65)
    for i in range(4):
        image, label, idx, weight = always[i]
        j = int(image[0]) - 100  # which preserving image came back
        assert sources[j] == f"img{i}.png" and label == train_set.labels[i] and idx == i and weight == 0.65
    never = PreservingReplacement(train_set, preserving, p=0.0)
    assert [never[i][3] for i in range(4)] == [1.0] * 4 and float(never[2][0][0]) == 2.0
    torch.manual_seed(0)
    lrv = PreservingReplacement(train_set, preserving, p=0.3, weight=0.65)
    replaced = np.mean([lrv[i % 4][3] == 0.65 for i in range(4000)])
    assert replaced == pytest.approx(0.3, abs=0.03)
    with pytest.warns(UserWarning, match="never replaced"):
        PreservingReplacement(train_set, _Items([0], 100.0, sources=["img0.png"]))


def test_extension_as_the_seed_report():
    train_set = _Items([0, 1], value=0.0)
    preserving = _Items([1, 1, 0], value=100.0, sources=["img1.png", "img1.png", "img0.png"])
    ext = PreservingExtension(train_set, preserving)
    assert len(ext) == 5
    assert [ext[i][2] for i in range(5)] == [0, 1, 1, 1, 0]  # preserving items count as their source
    assert all(ext[i][3] == 1.0 for i in range(5))


def _breaking_manifest(tmp_path, per_source=2, size=8, texture=0) -> Manifest:
    """Breaking images of 3 sources; image ``n = per_source * s + k`` is grey level ``20 + 35 n``
    (plus uniform noise of +-``texture``), so its mean colour names it."""
    rows = []
    rng = np.random.default_rng(0)
    for s in range(3):
        for k in range(per_source):
            out = f"breaking/{s}_{k}.png"
            (tmp_path / "breaking").mkdir(exist_ok=True)
            level = 20 + 35 * (per_source * s + k)
            pixels = level + rng.integers(-texture, texture + 1, (size, size, 3)) if texture else np.full((size, size, 3), level)
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / out)
            rows.append(ManifestRow(f"src{s}.png", s, f"c{s}", "breaking", 0.7 + 0.05 * k, k, "classic", "v", "", out, k))
    return Manifest(tmp_path, rows)


def _which_image(view: torch.Tensor, means: np.ndarray) -> int:
    """The row whose image has the nearest mean (after the same normalisation) to ``view``'s."""
    return int(np.argmin(np.abs(means - float(view.mean()))))


def test_breaking_pairs_are_two_random_views(tmp_path, bundle):
    """``augmented_copy`` (LRV): both views come from one breaking image of the source (any strength,
    any sample), each its own draw of the training transform (random crop + flip), so the two views
    differ; ``two_breaking`` (seed report): two different breaking images of the same source."""
    from lowres_clip.train import train_transform

    manifest = _breaking_manifest(tmp_path, size=32, texture=12)
    root = manifest.root
    means = np.array([float(bundle.preprocess_eval(Image.open(root / r.output_path).convert("RGB")).mean())
                      for r in manifest.rows])
    copy = BreakingPairDataset(manifest, transform=train_transform(bundle))
    assert copy.pairing == "augmented_copy" and len(copy) == 3  # LRV, the default; one item per source
    chosen: dict[int, set[int]] = {i: set() for i in range(3)}
    torch.manual_seed(0)
    for _ in range(12):
        for i in range(3):
            v1, v2, source = copy[i]
            assert source == i and v1.shape == v2.shape == (3, bundle.image_size, bundle.image_size)
            assert not torch.equal(v1, v2), "the copy is another random view, never the same tensor"
            a, b = _which_image(v1, means), _which_image(v2, means)
            assert a == b and manifest.rows[a].source_path == f"src{i}.png"
            chosen[i].add(a)
    assert all(len(rows) == 2 for rows in chosen.values())  # either breaking image of the source is drawn

    plain = BreakingPairDataset(manifest, transform=bundle.preprocess_eval, pairing="two_breaking")
    for i in range(3):
        v1, v2, _ = plain[i]
        a, b = _which_image(v1, means), _which_image(v2, means)
        assert a != b and not torch.equal(v1, v2)
        assert manifest.rows[a].source_path == manifest.rows[b].source_path == f"src{i}.png"
    assert copy.with_pairing("two_breaking").pairing == "two_breaking" and plain.strengths == [0.7, 0.75]
    (tmp_path / "one").mkdir()
    single = _breaking_manifest(tmp_path / "one", per_source=1)  # one breaking image per source
    with pytest.warns(UserWarning, match="left out"):
        with pytest.raises(AugmentError, match="two breaking outputs"):
            BreakingPairDataset(single, pairing="two_breaking")
    assert len(BreakingPairDataset(single)) == 3  # an augmented copy needs one image only


def test_the_loop_applies_the_variant(tmp_path, monkeypatch):
    """LRV: replaced images carry weight 0.65 into the loss and pairs are augmented copies; seed:
    preserving images extend the training set with weight 1 and pairs are two breaking images."""
    torch.manual_seed(0)
    bundle = load_clip("tiny-vit", "random", device="cpu")
    tf = bundle.preprocess_eval

    class Images(_Items):
        def __getitem__(self, i):
            return tf(Image.fromarray(np.full((16, 16, 3), 20 * i + self.value, np.uint8))), self.labels[i], i

    train_set = Images([i % 2 for i in range(8)], value=0)
    preserving = Images([i % 2 for i in range(8)], value=5, sources=[f"img{i}.png" for i in range(8)])
    seen: list[torch.Tensor] = []
    original = TaskLoss.forward

    def spy(self, logits, labels, sample_weights=None):
        seen.append(sample_weights.clone())
        return original(self, logits, labels, sample_weights)

    monkeypatch.setattr(TaskLoss, "forward", spy)
    for variant, p in (("lrv", 1.0), ("seed", None)):
        seen.clear()
        (tmp_path / variant).mkdir()
        brk = BreakingPairDataset(_breaking_manifest(tmp_path / variant), transform=tf)
        adapted = build_adapted(bundle, ["a", "b"], ["a photo of a {}."], "lora")
        cfg = TrainConfig(iterations=2, batch_size=4, eval_every=2, precision="fp32", progress=False,
                          augment_variant=variant, preserving_p=p)
        result = train(adapted, train_set, None, cfg, preserving=preserving, breaking=brk)
        info = result.augmentation
        assert len(seen) == 2
        if variant == "lrv":
            assert all(torch.allclose(w.float(), torch.full((4,), 0.65)) for w in seen)
            assert info["preserving_mode"] == "replace" and info["pairing"] == "augmented_copy"
        else:
            assert all(torch.equal(w.float(), torch.ones(4)) for w in seen)
            assert info["preserving_mode"] == "extend" and info["pairing"] == "two_breaking"
            assert info["bank_batches"] == 100 and info["temperature"] == pytest.approx(0.01)
        json.dumps(result.to_dict())  # lands in the record as extra["train"]


# --------------------------------------------------------------------------- Meta-Adapter
def reference_meta_adapter(q_w, k_w, alpha_w, alpha_b, query, key, dim):
    """ArsenalCheng/Meta-Adapter main.py, MetaAdapter.forward(query, key, value=key), one head, in einsum."""
    res = query  # [B, C]
    kv = torch.cat([query[:, None], key], dim=1)  # key = value = cat([query, key]) : [B, K+1, C]
    q = query @ q_w.T  # q_proj(query)
    k = kv @ k_w.T  # k_proj(key); the values are not projected
    attn_weight = (torch.einsum("bc,bkc->bk", q, k) / math.sqrt(dim)).softmax(-1)
    attn = torch.einsum("bk,bkc->bc", attn_weight, kv)
    alpha = torch.sigmoid(res @ alpha_w.T + alpha_b)  # [B, 1]
    return F.normalize(res + alpha * attn, p=2, dim=-1)


def test_meta_adapter_forward_equals_the_reference():
    c, k, d = 5, 4, 32
    g = torch.Generator().manual_seed(3)
    text = F.normalize(torch.randn(c, d, generator=g), dim=-1)
    support = F.normalize(torch.randn(c, k, d, generator=g), dim=-1)
    ours = MetaAdapter(d, dropout=0.0, seed=1).eval()
    with torch.no_grad():
        ours.gate.bias.fill_(0.3)
    expected = reference_meta_adapter(ours.q_proj.weight, ours.k_proj.weight, ours.gate.weight, ours.gate.bias,
                                      text, support, d)
    assert torch.allclose(ours(text, support), expected, atol=1e-6)


# Anchors' values, each read in the reference repository (path:line at the commits fetched for this test).
CLIP_LORA = {  # MaxZanella/CLIP-LoRA
    "lr": 2e-4, "iterations_per_shot": 500, "batch_size": 32,  # run_utils.py:28-30; lora.py:73 total = n_iters * shots
    "rank": 2, "alpha": 1.0, "dropout": 0.25,  # run_utils.py:35-37
    "params": ["q", "k", "v"], "encoders": "both", "position": "all",  # run_utils.py:32-34
    "weight_decay": 1e-2, "betas": (0.9, 0.999), "min_lr": 1e-6,  # lora.py:75-76 (AdamW, cosine to eta_min 1e-6)
    "crop_scale": (0.08, 1.0),  # main.py:39 RandomResizedCrop(scale=(0.08, 1))
    "selection": "last",  # lora.py:37 VALIDATION = False
}
META_ADAPTER = {  # ArsenalCheng/Meta-Adapter
    "lr": 1e-4, "epochs": 5,  # configs/eurosat.yaml lr: 0.0001, train_epoch: 5
    "eps": 1e-4,  # main.py:77 AdamW(..., eps=1e-4)
    "min_lr": 0.0,  # main.py:78 CosineAnnealingLR without eta_min
    "batch_size": 64, "crop_scale": (0.5, 1.0),  # main.py:165-177 batch_size=64, RandomResizedCrop(scale=(0.5, 1))
}
LRV = {  # xiaobai1217/Low-Resource-Vision
    "preserving_p": 0.3, "preserving_weight": 0.65, "logit_factor": 80.0,  # scripts/train_circuit.py:73-75
    "breaking_lambda": 0.1, "bank_batches": 40,  # scripts/train_circuit.py:72, :76
    "preserving_strength": 0.3, "num_samples": 5,  # scripts/dataloader_circuit.py:25, :38 randint(0, 4)
    "breaking_strengths": [0.7, 0.75, 0.8],  # scripts/dataloader_circuit.py:26, :43 options[randint(0, 2)]
    "steps": 50, "eta": 0.0, "guidance": 5.0, "seed": 42,  # img2img_circuit.py --ddim_steps, --ddim_eta, --scale, --seed
}
SEED_REPORT = {  # OmarFacchini/LowResourcesFewShot-CLIP
    "bank_batches": 100, "breaking_lambda": 0.1, "logit_factor": 100.0,  # main.py:45-46, :73 logit_scale = 100
    "breaking_strengths": [0.6], "preserving_strength": 0.3,  # modules/data_generation/img2img_circuit.py:283
    "num_samples": 3,  # modules/data_generation/README.md: --n_samples 3
}


def test_paper_profile_follows_clip_lora():
    cfg = resolve_config("paper", method="lora")
    t, lora = cfg.effective_train(), cfg.lora
    assert (t.lr, t.iterations, t.iterations_per_shot, t.batch_size) == (
        CLIP_LORA["lr"], None, CLIP_LORA["iterations_per_shot"], CLIP_LORA["batch_size"])
    assert resolve_iterations(t, torch.arange(10).repeat_interleave(16)) == 500 * 16  # 500 x K at K = 16
    assert resolve_iterations(t, torch.arange(10)) == 500  # K = 1
    assert (lora.rank, lora.alpha, lora.dropout) == (CLIP_LORA["rank"], CLIP_LORA["alpha"], CLIP_LORA["dropout"])
    assert (list(lora.params), lora.encoders, lora.position) == (CLIP_LORA["params"], CLIP_LORA["encoders"], CLIP_LORA["position"])
    assert lora.scaling == "clip-lora"  # alpha / sqrt(r): loralib/layers.py:42 (the layer test above checks the formula)
    assert (t.weight_decay, tuple(t.betas), t.min_lr, tuple(t.crop_scale), t.selection) == (
        CLIP_LORA["weight_decay"], CLIP_LORA["betas"], CLIP_LORA["min_lr"], CLIP_LORA["crop_scale"], CLIP_LORA["selection"])
    assert resolve_config("paper", method="lora+bitfit").effective_train() == t  # combinations: the same loop


@pytest.mark.parametrize("profile", ["paper", "cpu"])
def test_meta_adapter_alone_follows_its_reference(profile):
    cfg = resolve_config(profile, method="meta_adapter")
    t = cfg.effective_train()
    assert (t.lr, t.eps, t.epochs, t.iterations, t.min_lr, t.batch_size, tuple(t.crop_scale)) == (
        META_ADAPTER["lr"], META_ADAPTER["eps"], META_ADAPTER["epochs"], None, META_ADAPTER["min_lr"],
        META_ADAPTER["batch_size"], META_ADAPTER["crop_scale"])
    assert cfg.meta_adapter.dropout == 0.0  # the reference MetaAdapter has no dropout (main.py:27-63)
    assert resolve_iterations(t, torch.arange(10).repeat_interleave(16)) == 5 * math.ceil(160 / 64)  # 5 epochs of 160 shots
    combined = resolve_config(profile, method="lora+meta_adapter").effective_train()
    assert combined == resolve_config(profile, method="lora").effective_train()  # combinations keep the run's loop
    assert combined.lr != META_ADAPTER["lr"]


def _tiny_shots(seed: int):
    """The tiny random ViT and 8 random images of 2 classes as ``(image, label, index)`` items."""
    torch.manual_seed(0)
    bundle = load_clip("tiny-vit", "random", device="cpu")
    images = torch.rand(8, 3, bundle.image_size, bundle.image_size, generator=torch.Generator().manual_seed(seed))

    class Shots(_Items):
        def __getitem__(self, i):
            return images[i], self.labels[i], i

    return bundle, Shots([0, 1] * 4, 0.0)


def test_meta_adapter_override_drives_the_loop():
    """The Meta-Adapter's own ``train`` overrides reach the loop: 3 epochs of batch 4 over 8 shots are
    6 steps, whatever the run's ``iterations`` says."""
    with pytest.raises(ConfigError, match="meta_adapter.train.lrr"):
        resolve_config("paper", overrides={"meta_adapter.train": {"lrr": 1.0}})
    bundle, shots = _tiny_shots(0)
    adapted = build_adapted(bundle, ["a", "b"], ["a photo of a {}."], "meta_adapter",
                            meta_cfg=MetaAdapterConfig(train={"lr": 1e-3, "epochs": 3, "batch_size": 4}), support=shots)
    result = train(adapted, shots, None, TrainConfig(iterations=50, precision="fp32", progress=False))
    assert result.iterations == result.steps == 3 * 2
    assert result.overrides == {"lr": 1e-3, "epochs": 3, "batch_size": 4, "iterations": None}


def test_augmentation_variants_follow_lrv_and_the_seed_report():
    from lowres_clip.strict import from_dict
    from lowres_clip.config import generator_config_class

    for variant, ref in (("lrv", LRV), ("seed", SEED_REPORT)):
        cfg = resolve_config("paper", method="lora+aug-diffusion", overrides={"augmentation.variant": variant})
        protocol = cfg.train_settings().augment_protocol()
        gen = from_dict(generator_config_class("diffusion"), cfg.augmentation.generator_options())
        assert protocol.variant == variant
        assert (protocol.breaking_lambda, protocol.bank_batches) == (ref["breaking_lambda"], ref["bank_batches"])
        assert 1 / protocol.temperature == pytest.approx(ref["logit_factor"])
        assert list(gen.breaking_strengths) == ref["breaking_strengths"] and gen.preserving_strength == ref["preserving_strength"]
        assert gen.num_samples == ref["num_samples"]
        if variant == "lrv":
            assert (protocol.preserving_mode, protocol.preserving_p, protocol.preserving_weight, protocol.pairing) == (
                "replace", LRV["preserving_p"], LRV["preserving_weight"], "augmented_copy")
            assert (gen.num_inference_steps, gen.eta, gen.guidance_scale, gen.seed) == (
                LRV["steps"], LRV["eta"], LRV["guidance"], LRV["seed"])
        else:
            assert (protocol.preserving_mode, protocol.pairing) == ("extend", "two_breaking")
    assert resolve_config("paper", method="lora+aug-diffusion").augmentation.variant == "lrv"  # the default
    assert resolve_config("cpu", method="lora+aug-classic").train_settings().augment_protocol().variant == "lrv"
    own = resolve_config("paper", method="lora+aug-diffusion", overrides={"train.breaking_bank_size": 7})
    assert own.train_settings().augment_protocol().bank_batches == 7 != LRV["bank_batches"]  # a run may override one value
    with pytest.raises(ConfigError, match="variant"):
        resolve_config("paper", overrides={"augmentation.variant": "paper"})


# --------------------------------------------------------------------------- checkpoint selection
def _history(vals):
    return [{"step": s, "val": v} for s, v in vals]


def test_selection_rules():
    h = _history([(0, 0.5), (250, 0.7), (500, 0.7), (750, 0.6)])
    assert select_checkpoint(h, "best_val")[0] == 500  # tie: the later step
    assert select_checkpoint(h, "last")[0] == 750
    tie_with_zero = _history([(0, 0.7), (250, 0.7), (500, 0.6)])
    assert select_checkpoint(tie_with_zero, "best_val")[0] == 250  # the untrained weights never win a tie
    zero = _history([(0, 0.8), (250, 0.7), (500, 0.7)])
    step, reason = select_checkpoint(zero, "best_val")
    assert step == 0 and "untrained" in reason and "strictly better" in reason
    assert select_checkpoint(_history([(0, math.nan), (3, math.nan)]), "best_val")[0] == 3
    with pytest.raises(ValueError, match="selection"):
        select_checkpoint(h, "best")
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=2).validate()  # early stopping only with best_val


def _trainable(adapted) -> dict[str, torch.Tensor]:
    """Copies of the parameters that require gradients, read off the module itself."""
    return {n: p.detach().clone() for n, p in adapted.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("scores, selected", [
    ([0.2, 0.5, 0.9, 0.4, 0.6], 4),  # best in the middle
    ([0.2, 0.7, 0.5, 0.7, 0.6], 6),  # a tie: the later step
    ([0.8, 0.5, 0.7, 0.4, 0.6], 0),  # the untrained parameters strictly better than every trained step
])
def test_best_val_keeps_the_parameters_of_the_selected_step(monkeypatch, scores, selected):
    """With ``best_val`` the model ``train`` returns holds exactly the parameters it had when the
    selected step was validated: a snapshot taken here at every validation is the reference."""
    import lowres_clip.train.loop as train_module  # train() looks _validator up in its module

    bundle, shots = _tiny_shots(1)
    adapted = build_adapted(bundle, ["a", "b"], ["a photo of a {}."], "lora")
    snapshots: list[dict[str, torch.Tensor]] = []
    original = train_module._validator

    def scripted(model, val_set, cfg, dtype):
        real = original(model, val_set, cfg, dtype)

        def score() -> float:
            real()  # the real validation runs too (it must leave the parameters as they are)
            snapshots.append(_trainable(model))
            return scores[len(snapshots) - 1]

        return score

    monkeypatch.setattr(train_module, "_validator", scripted)
    cfg = TrainConfig(iterations=8, eval_every=2, lr=1e-2, batch_size=4, selection="best_val", precision="fp32",
                      progress=False)
    result = train(adapted, shots, shots, cfg)
    assert [h["step"] for h in result.history] == [0, 2, 4, 6, 8] and len(snapshots) == 5
    assert result.selected_step == selected and result.selected_val == scores[selected // 2]
    kept = _trainable(adapted)
    reference = snapshots[selected // 2]
    assert kept.keys() == reference.keys() and kept
    assert all(torch.equal(kept[n], reference[n]) for n in kept)
    others = [i for i in range(5) if i != selected // 2]
    assert all(any(not torch.equal(kept[n], snapshots[i][n]) for n in kept) for i in others)  # the steps differ


# --------------------------------------------------------------------------- templates and variants
def test_templates_per_profile_and_dataset():
    for dataset in ("eurosat", "circuits"):
        cfg = resolve_config("paper", dataset=dataset)
        assert cfg.templates() == ["a photo of a {}."] and cfg.to_dict()["template"] == "clip"
    assert resolve_templates("eurosat") == ["a centered satellite photo of {}."]  # the dataset default
    assert resolve_templates("eurosat", "coop_eurosat") == ["a centered satellite photo of {}."]
    assert resolve_templates("circuits", "a schematic of a {}.") == ["a schematic of a {}."]
    assert len(resolve_templates("eurosat", None, ensemble=True)) > 1
    with pytest.raises(PromptError, match="unknown template"):
        resolve_templates("eurosat", "satelite")
    with pytest.raises(ConfigError, match="template"):
        resolve_config("paper", ensemble=True)  # template and ensemble both chosen


# --------------------------------------------------------------------------- analysis
def entropy_nats(logits: np.ndarray) -> np.ndarray:
    """Entropy of the softmax of each row, in nats, in float64."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)


def test_improvements_sorted_by_entropy_difference():
    from lowres_clip.analysis.improvements import rank_improvements

    assert entropy_nats(np.array([[0.0, 0.0]]))[0] == pytest.approx(math.log(2))  # the reference itself
    labels = np.zeros(7, dtype=int)
    a_logits = np.array([[0, 1.0, 0], [0, 3.0, 0], [0, 0.2, 0], [0, 5.0, 1], [0, 2.0, 2.0],
                         [2.0, 0, 0], [0, 1.0, 0]])  # rows 0-4 wrong in A, row 5 right in A
    b_logits = np.array([[4.0, 0, 0], [1.0, 0, 0], [6.0, 0, 0], [0.5, 0, 0], [9.0, 0, 1.0],
                         [5.0, 0, 0], [0, 3.0, 0]])  # rows 0-5 right in B, row 6 wrong in B
    run = lambda logits, key: Predictions(logits.astype(np.float32), labels, [f"{i}.png" for i in range(7)],
                                          ["x", "y", "z"], "/none", key)
    table = rank_improvements(run(a_logits, "eurosat/m-w/zero_shot/k1-s1"), run(b_logits, "eurosat/m-w/lora/k1-s1"))
    improved = np.arange(5)  # wrong in A and right in B
    diff = entropy_nats(a_logits.astype(np.float32))[improved] - entropy_nats(b_logits.astype(np.float32))[improved]
    expected = improved[np.argsort(-diff, kind="stable")]
    assert table["index"].tolist() == expected.tolist()
    assert np.allclose(table["entropy_diff"], np.sort(diff)[::-1], atol=1e-6)
    assert np.allclose(table["entropy_a"], entropy_nats(a_logits.astype(np.float32))[expected], atol=1e-6)
    seed_order = improved[-np.argsort(np.abs(diff))]  # the seed's plot_improvements.py line
    assert seed_order.tolist() != table["index"].tolist()


def test_both_silhouette_definitions():
    from sklearn import metrics as skm

    from lowres_clip.analysis.clustering import silhouettes

    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 4
    labels = np.repeat(np.arange(3), 10)
    placed = labels.copy()
    placed[::4] = (labels[::4] + 1) % 3  # every 4th image lies in the next class's cluster (and is wrong)
    x = centres[placed] + rng.normal(0, 0.5, (30, 4))
    ok = placed == labels
    s = silhouettes(x, labels, ok)
    per_sample = skm.silhouette_samples(x, labels, metric="cosine")
    assert s["silhouette_in_full_set_wrong"] == pytest.approx(per_sample[~ok].mean())
    assert s["silhouette_within_subset_wrong"] == pytest.approx(skm.silhouette_score(x[~ok], labels[~ok], metric="euclidean"))
    assert s["silhouette_within_subset_all"] == pytest.approx(skm.silhouette_score(x, labels, metric="euclidean"))
    # the wrong images sit in other clusters (full-set score < 0) but, alone, are grouped by true class (> 0)
    assert s["silhouette_in_full_set_wrong"] < 0 < s["silhouette_within_subset_wrong"]


def test_meta_adapter_run_budget_trains_with_the_run_loop():
    """``meta_adapter.budget: run``: the Meta-Adapter alone gets the run's loop, as inside a combination."""
    base = TrainConfig(iterations=150, lr=1e-2, batch_size=32)
    meta = MetaAdapterConfig(train={"lr": 1e-4, "eps": 1e-4, "epochs": 5, "batch_size": 64, "crop_scale": (0.5, 1.0)})
    assert effective_train(base, "meta_adapter", meta).lr == META_ADAPTER["lr"]
    assert effective_train(base, "meta_adapter", MetaAdapterConfig(train=meta.train, budget="run")) is base
    assert resolve_config("cpu", {"meta_adapter.budget": "run"}, method="meta_adapter").effective_train() == \
        resolve_config("cpu", method="lora").train_settings()
    with pytest.raises(ConfigError, match="budget must be one of"):
        resolve_config("cpu", {"meta_adapter.budget": "long"}, method="meta_adapter")
