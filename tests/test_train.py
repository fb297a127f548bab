"""The one training loop: accuracy rises for every method and a combination on separable synthetic
images, validation-based selection and early stopping, seeds, checkpoints that reproduce logits
exactly, augmentation hooks (label-preserving batches, breaking loss), loss options, precision."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from conftest import class_image
from PIL import Image
from torch.utils.data import Dataset

from lowres_clip import train as train_mod
from lowres_clip.datasets import Sample
from lowres_clip.methods import LoraConfig, MetaAdapterConfig, build_adapted
from lowres_clip.models import load_clip
from lowres_clip.train import (
    CheckpointMismatchError,
    TrainConfig,
    class_balanced_weights,
    evaluate,
    evaluate_features,
    load_trained,
    logit_adjustment,
    save_trained,
    train,
    train_transform,
)
from lowres_clip.utils import AdaptationError, cpu_supports_bf16, resolve_precision

NAMES = ["red", "green", "blue", "yellow"]
TEMPLATES = ["a photo of {}."]
# A closed Meta-Adapter gate starts it at zero-shot accuracy: on the random tiny model an open gate
# is already at its ceiling at initialisation, which would leave nothing for training to show.
CLOSED_GATE = MetaAdapterConfig(gate_bias_init=-3.0)


class Synthetic(Dataset):
    """Coloured, striped images per class (``conftest.class_image``): ``(image, label, index)``."""

    def __init__(self, per_class, transform, seed=0, size=32):
        counts = per_class if isinstance(per_class, list) else [per_class] * len(NAMES)
        self.items = [(c, i) for c, n in enumerate(counts) for i in range(n)]
        self.samples = [Sample(f"{c}/{i}.png", c) for c, i in self.items]  # like ImageDataset.samples
        self.images = [Image.fromarray(class_image(c, i, size, seed)) for c, i in self.items]
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.items[i][0], i


class Views(Dataset):
    """Label-breaking view pairs ``(view1, view2, source_index)`` of the synthetic images."""

    def __init__(self, base: Synthetic):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i][0], self.base[i][0], i


pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def data(bundle):
    return {
        "train": Synthetic(4, train_transform(bundle)),
        "support": Synthetic(4, bundle.preprocess_eval),  # the same samples, evaluation transform
        "val": Synthetic(4, bundle.preprocess_eval, seed=1),
    }


def _cfg(**kw) -> TrainConfig:
    base = dict(iterations=30, lr=1e-2, batch_size=16, eval_every=10, precision="fp32", progress=False)
    return TrainConfig(**{**base, **kw})


def _accuracy(adapted, dataset) -> float:
    out = evaluate(adapted, dataset, progress=False)
    return float((out["logits"].argmax(1) == out["labels"]).float().mean())


# --------------------------------------------------------------------------- helpers
def test_train_transform_follows_clip_lora_and_the_bundle(bundle):
    from torchvision import transforms as T

    tf = train_transform(bundle)
    crop, flip, _, norm = tf.transforms
    assert isinstance(crop, T.RandomResizedCrop) and crop.size == (32, 32) and crop.scale == (0.08, 1.0)
    assert crop.interpolation == T.InterpolationMode.BICUBIC and isinstance(flip, T.RandomHorizontalFlip)
    ref = train_mod.transforms._find_normalize(bundle.preprocess_eval)
    assert (norm.mean, norm.std) == (ref.mean, ref.std)
    assert tf(Image.fromarray(class_image(0, 0, 48))).shape == (3, 32, 32)


def test_precision_resolution():
    assert resolve_precision("fp32", "cpu") is None
    assert resolve_precision("bf16", "cpu") is torch.bfloat16
    assert resolve_precision("auto", "cpu") is (torch.bfloat16 if cpu_supports_bf16() else None)
    print(f"\nCPU bf16 support: {cpu_supports_bf16()}")
    with pytest.raises(AdaptationError, match="needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(AdaptationError, match="Unknown precision 'half'"):
        resolve_precision("half", "cpu")


def test_class_balanced_weights_and_logit_adjustment():
    counts = torch.tensor([10, 1, 0])
    w = class_balanced_weights(counts, beta=0.999)
    assert w[2] == 0 and torch.isclose(w.sum(), torch.tensor(2.0))
    assert torch.isclose(w[1] / w[0], torch.tensor((1 - 0.999**10) / (1 - 0.999)), rtol=1e-4)
    assert torch.allclose(class_balanced_weights(counts, beta=0.0), torch.tensor([1.0, 1.0, 0.0]))
    offsets = logit_adjustment(torch.tensor([3, 1]), tau=2.0)
    assert torch.allclose(offsets, 2.0 * torch.log(torch.tensor([0.75, 0.25])))


def test_config_validation():
    for kw, msg in [(dict(batch_size=0), "batch_size"), (dict(select_metric="f1"), "select_metric"),
                    (dict(precision="fp8"), "Unknown precision"), (dict(preserving_p=1.5), "preserving_p")]:
        with pytest.raises(AdaptationError, match=msg):
            TrainConfig(**kw).validate()


# --------------------------------------------------------------------------- learning
@pytest.mark.parametrize(
    "method, lr, extra",
    [
        ("lora", 1e-2, {}),
        ("bitfit", 1e-2, {}),
        ("meta_adapter", 3e-2, {}),
        ("lora+bitfit+meta_adapter", 1e-2, {}),
        ("lora", 1e-2, dict(balanced_loss=True, logit_adjustment_tau=1.0)),
    ],
)
def test_training_raises_accuracy(bundle, data, method, lr, extra):
    adapted = build_adapted(bundle, NAMES, TEMPLATES, method, meta_cfg=CLOSED_GATE, support=data["support"])
    before = _accuracy(adapted, data["val"])
    result = train(adapted, data["train"], data["val"], _cfg(lr=lr, selection="best_val", **extra))
    after = _accuracy(adapted, data["val"])
    print(f"\n{method} {extra or ''}: {result.parameter_counts['total']} trainable; "
          f"val accuracy {before:.2f} -> {after:.2f} (kept step {result.selected_step}, {result.seconds:.1f}s)")
    assert after > before and after >= 0.5
    assert after == pytest.approx(result.selected_val)  # the selected parameters are the ones kept
    assert result.selected_val == max(h["val"] for h in result.history)
    assert [h["step"] for h in result.history] == [0, 10, 20, 30]


# The reference protocol of the Meta-Adapter alone (the profiles' meta_adapter.train) and the run's budget
REFERENCE = {"lr": 1e-4, "eps": 1e-4, "min_lr": 0.0, "epochs": 5, "batch_size": 64, "crop_scale": (0.5, 1.0)}


@pytest.mark.parametrize("method, meta", [
    ("lora", None),
    ("bitfit", None),
    ("meta_adapter", MetaAdapterConfig(train=REFERENCE, budget="reference")),
    ("meta_adapter", MetaAdapterConfig(train=REFERENCE, budget="run")),
    ("lora+bitfit+meta_adapter", MetaAdapterConfig(train=REFERENCE)),
], ids=["lora", "bitfit", "meta_adapter-reference", "meta_adapter-run", "lora+bitfit+meta_adapter"])
def test_every_trained_parameter_group_moves(bundle, data, method, meta):
    """A few steps move every group of trained parameters (no weight decay, so only gradients move
    them); the record of the movement names each group, its size and how far it went."""
    adapted = build_adapted(bundle, NAMES, TEMPLATES, method, meta_cfg=meta, support=data["support"])
    result = train(adapted, data["train"], data["val"], _cfg(iterations=5, eval_every=5, weight_decay=0.0))
    groups = {adapted.parameter_group(n) for n in adapted.trainable_parameters()}
    assert set(result.movement) == groups and result.unmoved == []
    assert sum(m["params"] for m in result.movement.values()) == result.parameter_counts["total"]
    moved = {g: result.moved_by(g) for g in groups}
    print(f"\n{method} ({meta.budget if meta else '-'}): {result.steps} steps, least moved "
          + ", ".join(f"{g} {v:.2e}" for g, v in sorted(moved.items(), key=lambda kv: kv[1])[:3]))
    assert min(moved.values()) > 1e-4, moved
    if "lora" in method:
        assert result.movement["lora.vision.q_proj.B"]["relative"] is None  # B starts at 0: absolute change
    if "meta_adapter" in method:
        assert {"meta_adapter.q_proj.weight", "meta_adapter.k_proj.weight", "meta_adapter.gate.weight",
                "meta_adapter.gate.bias"} <= groups
    record = result.to_dict()
    assert record["movement"] == result.movement and record["unmoved"] == []


def test_meta_adapter_run_budget_moves_it_far_more_than_the_reference(bundle, data):
    """The reference budget (lr 1e-4, 5 epochs) barely moves the Meta-Adapter; the run's budget
    (here lr 1e-2) trains it: both runs on the same data, same seed."""
    moved = {}
    for budget in ("reference", "run"):
        adapted = build_adapted(bundle, NAMES, TEMPLATES, "meta_adapter", support=data["support"],
                                meta_cfg=MetaAdapterConfig(train=REFERENCE, budget=budget))
        result = train(adapted, data["train"], data["val"], _cfg(iterations=5, eval_every=5))
        assert set(result.overrides) == (set() if budget == "run" else {*REFERENCE, "iterations"})
        moved[budget] = result.moved_by("meta_adapter.q_proj.weight")
    assert moved["run"] > 10 * moved["reference"], moved


@pytest.mark.parametrize("freeze", ["tiny_lr", "no_step"])
def test_a_frozen_optimizer_is_reported_as_not_moved(bundle, data, monkeypatch, freeze):
    """The measure itself can fail: parameters an optimizer does not move are reported as unmoved."""
    if freeze == "no_step":
        monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: None)
    adapted = build_adapted(bundle, NAMES, TEMPLATES, "lora+bitfit+meta_adapter", support=data["support"])
    lr = 1e-12 if freeze == "tiny_lr" else 1e-2
    result = train(adapted, data["train"], data["val"], _cfg(iterations=3, eval_every=3, lr=lr, min_lr=0.0))
    assert result.steps == 3 and result.movement
    assert result.unmoved == sorted(result.movement) == result.unmoved_groups()
    assert all(m["change_norm"] < 1e-9 for m in result.movement.values())


def test_parameter_movement_norms_per_group():
    initial = {"a.x": torch.tensor([3.0, 0.0]), "a.y": torch.tensor([4.0]), "b": torch.zeros(2)}
    final = {"a.x": torch.tensor([3.0, 1.0]), "a.y": torch.tensor([4.0]), "b": torch.tensor([0.0, 2.0])}
    out = train_mod.parameter_movement(initial, final, lambda n: n.split(".")[0])
    assert out["a"] == {"tensors": 2, "params": 3, "initial_norm": 5.0, "change_norm": 1.0, "relative": 0.2}
    assert out["b"] == {"tensors": 1, "params": 2, "initial_norm": 0.0, "change_norm": 2.0, "relative": None}


def test_long_tailed_training_with_balanced_loss(bundle):
    """Uneven shots (4, 3, 2, 1): iterations default to 500 x K with K the head count, Meta-Adapter
    packs an uneven support; class-balanced loss and logit adjustment run end to end."""
    train_set = Synthetic([4, 3, 2, 1], train_transform(bundle))
    support = Synthetic([4, 3, 2, 1], bundle.preprocess_eval)
    adapted = build_adapted(bundle, NAMES, TEMPLATES, "bitfit+meta_adapter", support=support)
    assert adapted.packed.mask.sum(1).tolist() == [4, 3, 2, 1]
    cfg = _cfg(iterations=None, iterations_per_shot=2, balanced_loss=True, logit_adjustment_tau=1.0,
               select_metric="balanced_accuracy", eval_every=4)
    result = train(adapted, train_set, Synthetic(2, bundle.preprocess_eval, seed=1), cfg)
    assert result.iterations == 8 and result.steps == 8


def test_same_seed_same_numbers(bundle, data):
    runs = []
    for seed in (3, 3, 4):
        adapted = build_adapted(bundle, NAMES, TEMPLATES, "lora", seed=0)
        result = train(adapted, data["train"], data["val"], _cfg(iterations=6, eval_every=3, seed=seed))
        runs.append(([h["loss"] for h in result.history[1:]], evaluate(adapted, data["val"], progress=False)["logits"]))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0]


def test_validation_selection_and_early_stopping(bundle, data):
    adapted = build_adapted(bundle, NAMES, TEMPLATES, "bitfit")
    result = train(adapted, data["train"], data["val"], _cfg(lr=1e-12, eval_every=1, patience=2, selection="best_val"))
    assert result.stopped_early and result.steps == 2
    assert result.selected_step == 2 and "ties go to the later step" in result.selection_reason  # equal scores
    no_val = train(build_adapted(bundle, NAMES, TEMPLATES, "bitfit"), data["train"], None,
                   _cfg(iterations=3, selection="best_val"))
    assert no_val.selected_step == 3 and no_val.steps == 3 and no_val.selection == "last"  # no validation: last


def test_zero_shot_has_nothing_to_train(bundle, data):
    result = train(build_adapted(bundle, NAMES, TEMPLATES, "zero_shot"), data["train"], data["val"], _cfg())
    assert result.steps == 0 and result.parameter_counts["total"] == 0


def test_frozen_encoders_evaluate_from_cached_features(bundle, data):
    adapted = build_adapted(bundle, NAMES, TEMPLATES, "meta_adapter", support=data["support"])
    full = evaluate(adapted, data["val"], progress=False)
    from_cache = evaluate_features(adapted, full["features"], full["labels"])
    assert torch.allclose(from_cache["logits"], full["logits"], atol=1e-5)
    assert full["features"].shape == (16, 32) and full["logits"].shape == (16, 4)
    with pytest.raises(AdaptationError, match="cached base-model features cannot be used"):
        evaluate_features(build_adapted(bundle, NAMES, TEMPLATES, "lora"), full["features"], full["labels"])


def test_meta_adapter_training_set_must_be_its_support(bundle, data):
    adapted = build_adapted(bundle, NAMES, TEMPLATES, "meta_adapter", support=data["support"])
    with pytest.raises(AdaptationError, match="needs the training set to be its support set"):
        train(adapted, Synthetic(2, train_transform(bundle)), data["val"], _cfg(iterations=1))


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("method", ["lora+bitfit+meta_adapter", "meta_adapter", "lora"])
def test_save_load_reproduces_logits_exactly(bundle, data, tmp_path, method):
    cfg = _cfg(iterations=4, eval_every=2)
    adapted = build_adapted(bundle, NAMES, TEMPLATES, method, lora_cfg=LoraConfig(rank=3, position="top"),
                            support=data["support"])
    train(adapted, data["train"], data["val"], cfg)
    ref = evaluate(adapted, data["val"], progress=False)
    path = save_trained(adapted, tmp_path / "trained.pt", {"train_config": asdict(cfg), "seed": cfg.seed})
    saved = torch.load(path, weights_only=True)
    assert set(saved["params"]) == set(adapted.trainable_parameters())  # trained parameters only
    assert sum(t.numel() for t in saved["params"].values()) == adapted.parameter_counts()["total"]

    torch.manual_seed(0)  # the same (random) base weights as the fixture, loaded afresh
    loaded = load_trained(load_clip("tiny-vit", "random", device="cpu"), path, method=method)
    out = evaluate(loaded, data["val"], progress=False)
    assert torch.equal(out["logits"], ref["logits"])
    assert loaded.checkpoint_meta["seed"] == cfg.seed and loaded.lora_cfg == adapted.lora_cfg


def test_checkpoint_mismatch_errors(bundle, data, tmp_path):
    adapted = build_adapted(bundle, NAMES, TEMPLATES, "bitfit")
    path = save_trained(adapted, tmp_path / "bitfit.pt")
    with pytest.raises(CheckpointMismatchError, match="holds method 'bitfit', not 'lora'"):
        load_trained(bundle, path, method="lora")
    with pytest.raises(CheckpointMismatchError, match="was trained on tiny-vit"):
        load_trained(load_clip("tiny-rn", "random", device="cpu"), path)
    torch.manual_seed(123)
    with pytest.raises(CheckpointMismatchError, match="other base weights"):
        load_trained(load_clip("tiny-vit", "random", device="cpu"), path)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="Cannot read|not a lowres_clip"):
        load_trained(bundle, tmp_path / "other.pt")


# --------------------------------------------------------------------------- augmentation, precision
def test_preserving_batches_and_breaking_loss_enter_the_loss(bundle, data, monkeypatch):
    import lowres_clip.augment.breaking_loss as bl  # our own module: an import error is a failure, not a skip

    calls = []

    class SpyBreakingLoss(bl.BreakingLoss):
        def forward(self, x_prime, x):
            loss = super().forward(x_prime, x)
            calls.append((x_prime.shape, x.requires_grad, float(loss.detach())))
            return loss

    monkeypatch.setattr(bl, "BreakingLoss", SpyBreakingLoss)

    class CountingSynthetic(Synthetic):
        drawn = 0

        def __getitem__(self, i):
            CountingSynthetic.drawn += 1
            return super().__getitem__(i)

    preserving = CountingSynthetic(4, train_transform(bundle), seed=7)
    preserving.source_paths = [s.path for s in data["train"].samples]  # one preserving image per training image
    adapted = build_adapted(bundle, NAMES, TEMPLATES, "lora")
    cfg = _cfg(iterations=5, eval_every=5, batch_size=8, preserving_p=1.0, breaking_bank_size=16)
    result = train(adapted, data["train"], data["val"], cfg, preserving=preserving, breaking=Views(data["train"]))
    assert result.steps == 5
    assert len(calls) == 5 and calls[0][0] == (8, 32) and calls[0][1]  # gradients reach the image tower
    assert CountingSynthetic.drawn == 5 * 8  # with p = 1 every training image is replaced by its preserving one
    assert result.augmentation["preserving_mode"] == "replace" and result.augmentation["bank_batches"] == 16

    meta_only = build_adapted(bundle, NAMES, TEMPLATES, "meta_adapter", support=data["support"])
    with pytest.raises(AdaptationError, match="does not train the image tower"):
        train(meta_only, data["support"], data["val"], cfg, breaking=Views(data["train"]))


def test_bf16_autocast_on_cpu(bundle, data):
    """bf16 autocast trains on any CPU (emulated where the CPU has no native bf16); ``auto`` picks it
    only on CPUs with native bf16, and the record names the precision actually used."""
    adapted = build_adapted(bundle, NAMES, TEMPLATES, "lora+bitfit")
    result = train(adapted, data["train"], data["val"], _cfg(iterations=3, eval_every=3, precision="bf16"))
    assert result.precision == "bf16"
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history[1:])
    assert resolve_precision("auto", "cpu") == (torch.bfloat16 if cpu_supports_bf16() else None)
    adapted = build_adapted(bundle, NAMES, TEMPLATES, "lora+bitfit")
    auto = train(adapted, data["train"], data["val"], _cfg(iterations=1, eval_every=1, precision="auto"))
    assert auto.precision == ("bf16" if cpu_supports_bf16() else "fp32")
