"""Long-tail remedies (``resample``, ``reweight``, ``la``, ``decouple``): each against a formula written
here from its paper, on literal values; the label grammar; every remedy through the run step."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowres_clip import pipeline, registry
from lowres_clip.config import ConfigError
from lowres_clip.methods import build_adapted, remedies
from lowres_clip.models import load_clip
from lowres_clip.settings import TrainConfig
from lowres_clip.spec import resolve_run
from lowres_clip.train import TaskLoss, class_balanced_weights, load_trained, logit_adjustment, save_trained

# ----------------------------------------------------------------------------- grammar
REMEDY_MESSAGE = "a remedy changes how a trained method trains; combine it, e.g. lora+la"


def test_remedies_combine_after_a_trained_method_and_never_stand_alone():
    assert registry.parse_method("lora+la") == ("lora", "la")
    assert registry.canonical("la+lora") == "lora+la"  # remedies after the adapters
    assert registry.canonical("reweight+meta_adapter+bitfit+lora") == "lora+bitfit+meta_adapter+reweight"
    assert registry.canonical("decouple+resample+bitfit") == "bitfit+resample+decouple"
    assert registry.canonical("lora+la+aug-classic") == "lora+la+aug-classic"
    for bad in ("la", "zero_shot+la", "linear_probe+la"):
        with pytest.raises(ConfigError, match=REMEDY_MESSAGE.replace("+", r"\+")):
            registry.parse_method(bad)
    with pytest.raises(ConfigError, match="remedy"):
        resolve_run("smoke", None, method="la")
    m = registry.METHODS
    assert registry.REMEDIES == ("resample", "reweight", "la", "decouple")
    assert all(m[r].role == registry.REMEDY and not m[r].trains for r in registry.REMEDIES)
    assert "la" not in registry.ADAPTERS and not registry.parse_label("lora+la").augmented
    with pytest.raises(ConfigError, match="a remedy combines"):
        registry.register_method(registry.Method("x", registry.NB_LORA, "x", role=registry.REMEDY))


def test_remedy_settings_enter_the_training_protocol_and_the_hash_only_when_named():
    plain, la = resolve_run("smoke", method="lora"), resolve_run("smoke", method="lora+la")
    assert "la" not in plain.settings and la.settings["la"] == {"tau": 1.0}
    assert resolve_run("smoke", {"la.tau": 2.0}, method="lora").config_hash == plain.config_hash
    assert resolve_run("smoke", {"la.tau": 2.0}, method="lora+la").config_hash != la.config_hash
    # the loop's new fields at their former values stay out of the settings
    assert {"resample_q", "balanced_weights"}.isdisjoint(plain.settings["train"])
    assert la.config.effective_train().logit_adjustment_tau == 1.0
    rw = resolve_run("smoke", {"reweight.kind": "inverse"}, method="bitfit+reweight").config.effective_train()
    assert (rw.balanced_loss, rw.balanced_weights) == (True, "inverse")
    assert resolve_run("smoke", {"resample.q": 0.5}, method="lora+resample").config.effective_train().resample_q == 0.5
    # the Meta-Adapter with a remedy keeps its own protocol (it is still the Meta-Adapter alone)
    meta = resolve_run("smoke", method="meta_adapter").config.effective_train()
    meta_la = resolve_run("smoke", method="meta_adapter+la").config.effective_train()
    assert meta_la.lr == meta.lr and meta_la.logit_adjustment_tau == 1.0
    for key, value in (("resample.q", 1.5), ("reweight.kind", "sqrt"), ("la.tau", 0.0), ("decouple.iterations", 0)):
        with pytest.raises(ConfigError, match=key.split(".")[0]):
            resolve_run("smoke", {key: value}, method="lora+" + key.split(".")[0])


# ----------------------------------------------------------------------------- resample
def test_resampling_draws_classes_with_probability_proportional_to_n_to_the_q():
    counts = [40, 12, 5, 3]
    labels = torch.tensor([c for c, n in enumerate(counts) for _ in range(n)])
    draws = 60_000
    for q in (0.0, 0.5, 1.0):
        expected = np.array([n ** q for n in counts]) / sum(n ** q for n in counts)  # Kang et al.: p_c ∝ n_c^q
        sampler = remedies.balanced_sampler(labels, q, seed=7)
        drawn = []
        while len(drawn) < draws:
            drawn += list(sampler)
        freq = np.bincount(labels[drawn[:draws]].numpy(), minlength=4) / draws
        np.testing.assert_allclose(freq, expected, atol=0.01)
        chi2 = float((((freq - expected) * draws) ** 2 / (expected * draws)).sum())
        assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001
        np.testing.assert_allclose(remedies.class_probabilities(torch.tensor(counts), q).numpy(), expected)
    one, two = remedies.balanced_sampler(labels, 0.0, 7), remedies.balanced_sampler(labels, 0.0, 7)
    assert list(one) == list(two) and list(one) != list(remedies.balanced_sampler(labels, 0.0, 8))
    assert len(list(one)) == len(labels)  # a pass has as many draws as items: the same number of iterations
    assert remedies.train_sampler(labels, TrainConfig()) is None  # no resample_q: shuffle


# ----------------------------------------------------------------------------- reweight
def test_reweighting_weights_by_hand_and_the_weighted_cross_entropy():
    counts = torch.tensor([100, 10, 1])
    inv = [1 / 100, 1 / 10, 1 / 1]
    inv = [3 * w / sum(inv) for w in inv]  # normalised to sum C = 3
    np.testing.assert_allclose(remedies.class_weights(counts, "inverse").numpy(), inv, rtol=1e-6)
    np.testing.assert_allclose(inv, [0.027027, 0.27027, 2.7027027], rtol=1e-5)
    beta = 0.99
    eff = [(1 - beta) / (1 - beta ** n) for n in (100, 10, 1)]  # Cui et al.: (1 - beta) / (1 - beta^n)
    eff = [3 * w / sum(eff) for w in eff]
    np.testing.assert_allclose(remedies.class_weights(counts, "effective", beta).numpy(), eff, rtol=1e-6)
    np.testing.assert_allclose(eff, [0.0422375, 0.2800436, 2.6777189], rtol=1e-5)
    np.testing.assert_allclose(remedies.class_weights(counts, "effective", beta).numpy(),
                               class_balanced_weights(counts, beta).numpy())  # the loop's existing weights
    # absent classes get 0 and the sum is over present classes
    np.testing.assert_allclose(remedies.class_weights(torch.tensor([4, 0, 1]), "inverse").numpy(), [0.4, 0.0, 1.6])

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.4, 0.2, 0.9], [1.0, 1.0, 3.0]])
    labels = torch.tensor([0, 1, 2, 2])
    w = remedies.loss_weights(counts, TrainConfig(balanced_loss=True, balanced_weights="inverse"))
    ce = [-math.log(math.exp(row[y]) / sum(math.exp(v) for v in row)) for row, y in zip(logits.tolist(), labels.tolist())]
    by_hand = sum(inv[y] * l for y, l in zip(labels.tolist(), ce)) / sum(inv[y] for y in labels.tolist())
    assert float(TaskLoss(w)(logits, labels)) == pytest.approx(by_hand, rel=1e-6)
    assert remedies.loss_weights(counts, TrainConfig()) is None


# ----------------------------------------------------------------------------- la
def test_logit_adjustment_by_hand():
    counts = torch.tensor([30, 6, 4])
    logits = torch.tensor([[1.0, 2.0, 0.5], [-0.3, 0.0, 0.7]])
    tau = 1.5
    adjusted = logits + logit_adjustment(counts, tau)
    by_hand = [[v + tau * math.log(n / 40) for v, n in zip(row, (30, 6, 4))] for row in logits.tolist()]
    np.testing.assert_allclose(adjusted.numpy(), by_hand, rtol=1e-6)
    np.testing.assert_allclose(by_hand[0], [1.0 - 0.4315231, 2.0 - 2.8457, 0.5 - 3.4538776], atol=1e-4)
    labels = torch.tensor([1, 2])
    loss = TaskLoss(offsets=logit_adjustment(counts, tau))(logits, labels)
    assert float(loss) == pytest.approx(float(F.cross_entropy(torch.tensor(by_hand), labels)), rel=1e-6)


# ----------------------------------------------------------------------------- decouple
def _toy_features(seed=0):
    """Three classes in 8-d; the tail class (3 items) shares half its direction with head class 0."""
    g = torch.Generator().manual_seed(seed)
    e = torch.eye(8)
    means = [e[0], e[1], F.normalize(e[2] + e[0], dim=0)]
    counts = (60, 60, 3)
    feats = torch.cat([F.normalize(m + 0.15 * torch.randn(n, 8, generator=g), dim=-1) for m, n in zip(means, counts)])
    labels = torch.tensor([c for c, n in enumerate(counts) for _ in range(n)])
    init = torch.stack([e[0], e[1], e[3]])  # the imbalanced classifier: class 2 points nowhere near its images
    return feats, labels, init


def _recall(feats, labels, classifier, c):
    pred = (F.normalize(feats, dim=-1) @ F.normalize(classifier, dim=-1).T).argmax(1)
    return float((pred[labels == c] == c).float().mean())


def test_decoupled_classifier_retraining_raises_tail_recall():
    feats, labels, init = _toy_features()
    assert _recall(feats, labels, init, 2) == 0.0  # every tail image goes to head class 0
    new, info = remedies.retrain_classifier(feats, labels, init, iterations=100, lr=1e-2, batch_size=16, seed=1)
    assert _recall(feats, labels, new, 2) == 1.0 and _recall(feats, labels, new, 0) >= 0.95
    assert info["loss_after"] < info["loss_before"] and info["balanced_accuracy_after"] > info["balanced_accuracy_before"]
    w0 = F.normalize(init, dim=-1)
    assert info["change_norm"] == pytest.approx(float((new - w0).double().norm()), rel=1e-6) and info["change_norm"] > 0.3
    assert torch.allclose(new.norm(dim=1), torch.ones(3))
    again, _ = remedies.retrain_classifier(feats, labels, init, iterations=100, lr=1e-2, batch_size=16, seed=1)
    assert torch.equal(new, again)  # seeded


def test_the_retrained_classifier_is_used_and_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    bundle = load_clip("tiny-vit", "random", device="cpu")
    names = ["red", "green", "blue"]
    adapted = build_adapted(bundle, names, ["a photo of {}."], "decouple+lora")
    assert adapted.method == "lora+decouple" and adapted.parts == ("lora", "decouple")
    text = adapted.classifier().clone()
    override = F.normalize(torch.randn(3, text.shape[1]), dim=-1)
    adapted.classifier_override = override
    images = torch.randn(2, 3, bundle.image_size, bundle.image_size)
    with torch.no_grad():
        logits = adapted(images)
        assert torch.allclose(logits, 100 * F.normalize(adapted.encode_images(images), dim=-1) @ override.T, atol=1e-4)
    path = save_trained(adapted, tmp_path / "decouple.pt")
    torch.manual_seed(0)
    loaded = load_trained(load_clip("tiny-vit", "random", device="cpu"), path, method="lora+decouple")
    assert torch.equal(loaded.classifier_override, override) and torch.equal(loaded.classifier(), override)
    with torch.no_grad():
        assert torch.equal(loaded(images), logits)
    loaded.load_trainable_state({k: v for k, v in loaded.trainable_state().items() if k != "classifier_override"})
    assert loaded.classifier_override is None and torch.allclose(loaded.classifier(), text)


# ----------------------------------------------------------------------------- the run step
LONG_TAIL = {"long_tail_ratio": 4, "shots": 8}  # per-class shots 8, 5, 3, 2 (seed 2: classes 1, 2, 3, 0)
OVERRIDES = {"seed": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs of the smoke profile on a long-tailed cell, made once per label for this module."""
    root = tmp_path_factory.mktemp("remedy_runs")
    made: dict[str, tuple] = {}

    def run(method: str):
        if method not in made:
            roots = {k: str(root / k) for k in ("runs_root", "figures_root", "cache_root")}
            spec = resolve_run("smoke", OVERRIDES, **roots, method=method, **LONG_TAIL)
            made[method] = (spec, *pipeline.run_method(spec))
        return made[method]

    return run


@pytest.mark.parametrize("method", ["lora+resample", "bitfit+reweight", "lora+la", "lora+decouple"])
def test_each_remedy_runs_and_its_record_says_what_it_did(runs, method):
    spec, record, preds = runs(method)
    remedy = method.split("+")[-1]
    train = record.extra["train"]
    assert record.identity["method"] == method and train["method"] == method
    done = train["remedies"][remedy]
    shots = done.get("class_counts")
    if shots is not None:
        assert sorted(shots) == [2, 3, 5, 8]  # the long-tailed training set
    if remedy == "resample":
        assert train["overrides"] == {"resample_q": 0.0} and done["q"] == 0.0
        np.testing.assert_allclose(done["class_probabilities"], [0.25] * 4)
        # 18 items, batches of 8: 3 steps a pass, so 12 steps draw 4 passes of 18 items
        assert sum(done["drawn"]) == 4 * 18
        tail = int(np.argmin(shots))  # 2 of 18 items, drawn about a quarter of the time instead of 1/9
        assert done["drawn"][tail] > 1.5 * 72 * shots[tail] / 18
    elif remedy == "reweight":
        assert train["overrides"]["balanced_loss"] is True and done["kind"] == "effective"
        np.testing.assert_allclose(done["class_weights"], class_balanced_weights(torch.tensor(shots), 0.999).numpy(), rtol=1e-6)
    elif remedy == "la":
        assert train["overrides"] == {"logit_adjustment_tau": 1.0}
        np.testing.assert_allclose(done["offsets"], np.log(np.array(shots) / sum(shots)), rtol=1e-6)
    else:
        assert done["iterations"] == 100 and done["features"] == record.extra["train_shots"] == 18
        assert done["change_norm"] > 0 and done["loss_after"] < done["loss_before"]
        loaded = load_trained(pipeline.common.load_model(spec), spec.checkpoint_path, method=method)
        assert loaded.classifier_override is not None
        np.testing.assert_allclose(preds.text, loaded.classifier_override.numpy(), atol=1e-6)  # the logits used it


def test_logit_adjustment_predicts_the_tail_more_often(runs):
    """On the long-tailed smoke cell, LoRA with the logit-adjusted loss sends more test images to the
    two classes with the fewest shots than LoRA alone (balanced test set)."""
    _, la_record, la = runs("lora+la")
    _, _, plain = runs("lora")
    shots = np.array(la_record.extra["train"]["remedies"]["la"]["class_counts"])
    tail = np.argsort(shots)[:2]
    predicted = lambda p: int(np.isin(p.logits.argmax(1), tail).sum())  # noqa: E731
    assert predicted(la) > predicted(plain)
