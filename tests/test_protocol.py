"""Protocol fidelity: our pieces against the reference codes' formulas, written out independently here.

* LoRA layer = ``x (W + B A alpha/sqrt(r))^T + b`` (CLIP-LoRA ``loralib/layers.py``), only A and B train,
  and where LoRA sits for each tower type;
* breaking loss = LRV's ``train_one_step`` (``factor * x2 @ cat(x1, bank).T``, bank of batches) over steps;
* label-preserving images: LRV's per-image replacement and weighted mean ``sum(w l) / sum(w)``; the
  seed report's extension; the two breaking pairings;
* Meta-Adapter forward = the reference ``MetaAdapter.forward`` (ArsenalCheng/Meta-Adapter) with shared weights;
* the improvements ranking is sorted by entropy difference (not the seed's ``-np.argsort`` order);
* checkpoint selection (``last`` / ``best_val``, ties to the later step), templates, variants, the
  Meta-Adapter's own training protocol, both silhouette definitions.
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
from lowres_clip.methods.lora import apply_lora, lora_targets
from lowres_clip.methods.meta_adapter import MetaAdapter
from lowres_clip.models import load_clip
from lowres_clip.prompts import PromptError, resolve_templates
from lowres_clip.runs import Predictions
from lowres_clip.settings import AUGMENT_PROTOCOLS, TrainConfig, effective_train
from lowres_clip.train import TaskLoss, TrainResult, resolve_iterations, select_checkpoint, train

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


def test_where_lora_sits_for_each_tower_type():
    """ViT and text transformers: q/k/v of every block; a ModifiedResNet (RN50, tiny-rn) image tower:
    only its attention pool's q/k/v (its 1x1 convolutions are not adapted)."""
    torch.manual_seed(0)
    rn = load_clip("tiny-rn", "random", device="cpu")
    assert apply_lora(rn.model, LoraConfig(encoders="vision")) == [
        "visual.attnpool.q_proj", "visual.attnpool.k_proj", "visual.attnpool.v_proj"]
    vit = load_clip("tiny-vit", "random", device="cpu")
    targets = apply_lora(vit.model, LoraConfig(encoders="both"))
    assert targets == lora_targets(vit.model, LoraConfig(encoders="both"))
    vision = [t for t in targets if t.startswith("visual.")]
    blocks = {t.rsplit(".attn.", 1)[0] for t in vision}
    assert len(vision) == 3 * len(blocks) and all(t.split(".")[-1] in ("q_proj", "k_proj", "v_proj") for t in vision)
    assert any(not t.startswith("visual.") for t in targets)  # the text tower too


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


def test_weighted_mean_equals_lrv_formula():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 1, 0])
    w = torch.tensor([1.0, 0.65, 1.0, 0.65, 0.65, 1.0])
    per_sample = [-torch.log_softmax(logits[i], 0)[labels[i]] for i in range(6)]
    expected = sum(wi * li for wi, li in zip(w, per_sample)) / w.sum()  # sum(w l) / sum(w)
    assert TaskLoss()(logits, labels, w).item() == pytest.approx(expected.item(), rel=1e-6)
    assert TaskLoss()(logits, labels, torch.ones(6)).item() == pytest.approx(F.cross_entropy(logits, labels).item())
    cw = torch.tensor([1.0, 2.0, 0.5, 1.5])  # class-balanced weights combine multiplicatively
    expected_cw = sum(w[i] * cw[labels[i]] * per_sample[i] for i in range(6)) / (w * cw[labels]).sum()
    assert TaskLoss(cw)(logits, labels, w).item() == pytest.approx(expected_cw.item(), rel=1e-6)


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


def _breaking_manifest(tmp_path, per_source=2) -> Manifest:
    rows = []
    for s in range(3):
        for k in range(per_source):
            out = f"breaking/{s}_{k}.png"
            (tmp_path / "breaking").mkdir(exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 40 * s + 10 * k, np.uint8)).save(tmp_path / out)
            rows.append(ManifestRow(f"src{s}.png", s, f"c{s}", "breaking", 0.7, k, "classic", "v", "", out, k))
    return Manifest(tmp_path, rows)


def test_breaking_pairings(tmp_path):
    manifest = _breaking_manifest(tmp_path)
    copy = BreakingPairDataset(manifest, transform=lambda im: torch.from_numpy(np.array(im)).float())
    assert copy.pairing == "augmented_copy"  # LRV, the default
    for i in range(len(copy)):
        a, b = copy.pair(i)
        v1, v2, _ = copy[i]
        assert a == b and torch.equal(v1, v2)  # one breaking image; the copy differs only by the random transform
    two = copy.with_pairing("two_breaking")
    for i in range(len(two)):
        a, b = two.pair(i)
        assert a != b and two.rows[a].source_path == two.rows[b].source_path
    assert copy.with_pairing("augmented_copy") is copy and two.strengths == [0.7]


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


def test_meta_adapter_trains_with_its_own_protocol():
    base = TrainConfig(iterations=150, lr=1e-2, batch_size=32)
    meta = MetaAdapterConfig(train={"lr": 1e-4, "eps": 1e-4, "epochs": 5, "batch_size": 64, "crop_scale": (0.5, 1.0)})
    eff = effective_train(base, "meta_adapter", meta)
    assert (eff.lr, eff.eps, eff.epochs, eff.iterations, eff.batch_size, eff.crop_scale) == (1e-4, 1e-4, 5, None, 64, (0.5, 1.0))
    assert effective_train(base, "lora+meta_adapter", meta) is base  # combinations keep the run's schedule
    run_budget = MetaAdapterConfig(train=meta.train, budget="run")  # alone with the run's schedule, as in a combination
    assert effective_train(base, "meta_adapter", run_budget) is base
    assert resolve_config("cpu", {"meta_adapter.budget": "run"}, method="meta_adapter").effective_train() == \
        resolve_config("cpu", method="lora").train
    with pytest.raises(ConfigError, match="budget must be one of"):
        resolve_config("cpu", {"meta_adapter.budget": "long"}, method="meta_adapter")
    assert resolve_iterations(eff, torch.arange(10).repeat(16)) == 5 * math.ceil(160 / 64)  # 5 epochs of 160 shots
    cfg = resolve_config("paper", method="meta_adapter")
    assert cfg.meta_adapter.dropout == 0.0 and cfg.effective_train().crop_scale == (0.5, 1.0)
    assert resolve_config("paper", method="lora").effective_train().lr == 2e-4
    with pytest.raises(ConfigError, match="meta_adapter.train.lrr"):
        resolve_config("paper", overrides={"meta_adapter.train": {"lrr": 1.0}})

    torch.manual_seed(0)
    bundle = load_clip("tiny-vit", "random", device="cpu")
    data = _Items([0, 1] * 4, 0.0)
    images = torch.rand(8, 3, bundle.image_size, bundle.image_size, generator=torch.Generator().manual_seed(0))

    class Shots(_Items):
        def __getitem__(self, i):
            return images[i], self.labels[i], i

    shots = Shots(data.labels, 0.0)
    adapted = build_adapted(bundle, ["a", "b"], ["a photo of a {}."], "meta_adapter",
                            meta_cfg=MetaAdapterConfig(train={"lr": 1e-3, "epochs": 3, "batch_size": 4}), support=shots)
    result = train(adapted, shots, None, TrainConfig(iterations=50, precision="fp32", progress=False))
    assert result.iterations == result.steps == 3 * 2
    assert result.overrides == {"lr": 1e-3, "epochs": 3, "batch_size": 4, "iterations": None}


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
    assert {"selection", "selected_step", "selected_val", "selection_reason"} <= set(TrainResult("lora", 1).to_dict())


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


def test_augmentation_variant_is_in_the_config():
    cfg = resolve_config("paper", method="lora+aug-diffusion")
    assert cfg.augmentation.variant == "lrv" and cfg.train.augment_variant == "lrv"
    assert cfg.augmentation.generator_options()["breaking_strengths"] == [0.7, 0.75, 0.8]
    seed = cfg.replace(**{"augmentation.variant": "seed"})
    assert seed.train.augment_variant == "seed" and seed.to_dict()["augmentation"]["variant"] == "seed"
    assert seed.augmentation.generator_options()["breaking_strengths"] == [0.6]
    assert seed.train.augment_protocol().preserving_mode == "extend"
    own = seed.replace(**{"train.breaking_bank_size": 7, "augmentation.generator": {"num_samples": 2}})
    assert own.train.augment_protocol().bank_batches == 7 and own.augmentation.generator_options()["num_samples"] == 2
    with pytest.raises(ConfigError, match="variant"):
        cfg.replace(**{"augmentation.variant": "paper"})


# --------------------------------------------------------------------------- analysis
def test_improvements_sorted_by_entropy_difference():
    from lowres_clip.analysis.improvements import rank_improvements, softmax_entropy

    labels = np.zeros(5, dtype=int)
    a_logits = np.array([[0, 1.0], [0, 3.0], [0, 0.2], [0, 5.0], [0, 2.0]])  # all wrong in A
    b_logits = np.array([[4.0, 0], [1.0, 0], [6.0, 0], [0.5, 0], [9.0, 0]])  # all right in B
    run = lambda logits, key: Predictions(logits.astype(np.float32), labels, [f"{i}.png" for i in range(5)],
                                          ["x", "y"], "/none", key)
    table = rank_improvements(run(a_logits, "eurosat/m-w/zero_shot/k1-s1"), run(b_logits, "eurosat/m-w/lora/k1-s1"))
    diff = softmax_entropy(a_logits) - softmax_entropy(b_logits)
    assert table["index"].tolist() == list(np.argsort(-diff, kind="stable"))
    assert np.all(np.diff(table["entropy_diff"].to_numpy()) <= 0)
    seed_order = np.arange(5)[-np.argsort(np.abs(diff))]  # the seed's plot_improvements.py line
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
