"""Linear probe: C chosen on the validation split, logits for every class, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowres_clip.methods.linear_probe import MISSING_CLASS_LOGIT, fit_linear_probe
from lowres_clip.utils import AdaptationError


def _features(n_per: int, classes: list[int], seed: int, d: int = 12, noise: float = 0.25):
    g = torch.Generator().manual_seed(100)
    centers = F.normalize(torch.randn(5, d, generator=g), dim=-1)
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor(classes).repeat_interleave(n_per)
    return F.normalize(centers[labels] + noise * torch.randn(len(labels), d, generator=g), dim=-1), labels


def test_probe_selects_c_on_validation_and_beats_chance():
    x, y = _features(4, [0, 1, 2, 3, 4], seed=0)
    xv, yv = _features(4, [0, 1, 2, 3, 4], seed=1)
    xt, yt = _features(20, [0, 1, 2, 3, 4], seed=2)
    probe = fit_linear_probe(x, y, xv, yv, show_progress=False)
    assert probe.val_accuracy == max(acc for _, acc in probe.search)
    assert len(probe.search) >= 7 and probe.C in dict(probe.search)
    logits = probe.predict_logits(xt)
    assert logits.shape == (100, 5) and logits.dtype == torch.float32
    acc = float((logits.argmax(1) == yt).float().mean())
    print(f"\nlinear probe: C={probe.C:.3g}, val {probe.val_accuracy:.2f}, test {acc:.2f}")
    assert acc > 0.6
    again = fit_linear_probe(x.numpy(), y.numpy(), xv.numpy(), yv.numpy(), show_progress=False)
    assert again.C == probe.C  # deterministic; numpy input accepted


def test_missing_classes_and_binary_problems():
    x, y = _features(4, [0, 2], seed=0)
    probe = fit_linear_probe(x, y, num_classes=4, show_progress=False)  # no validation: CoOp's default C
    logits = probe.predict_logits(x)
    assert logits.shape == (8, 4)
    assert torch.all(logits[:, [1, 3]] == MISSING_CLASS_LOGIT)
    assert np.isnan(probe.val_accuracy)
    assert float((logits.argmax(1) == y).float().mean()) > 0.8
    expected = torch.from_numpy(probe.model.predict_proba(x.numpy())).float()
    assert torch.allclose(logits[:, [0, 2]].softmax(1), expected, atol=1e-5)


def test_bad_inputs():
    x, y = _features(3, [0], seed=0)
    with pytest.raises(AdaptationError, match="at least two classes"):
        fit_linear_probe(x, y, show_progress=False)
    with pytest.raises(AdaptationError, match="training features"):
        fit_linear_probe(x, y[:2], show_progress=False)
    x, y = _features(3, [0, 1], seed=0)
    with pytest.raises(AdaptationError, match="C grid"):
        fit_linear_probe(x, y, x, y, grid=[0.0, 1.0], show_progress=False)


def test_span_fit_selects_what_the_full_fit_selects(monkeypatch):
    """Few shots, many dimensions (N < D): fitting in the span of the training features is the same
    optimisation problem, so every C scores the same and the same C is chosen; the lifted model
    predicts on the original features."""
    import time

    from lowres_clip.methods import linear_probe as lp

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 256, generator=g)

    def feats(n: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        y = torch.arange(6).repeat_interleave(n)
        return F.normalize(0.35 * centers[y] + torch.randn(len(y), 256, generator=gen), dim=-1), y

    (x, y), (xv, yv), (xt, _) = feats(3, 1), feats(3, 2), feats(5, 3)
    assert lp.span_basis(x.numpy()).shape == (256, 18)
    t0 = time.perf_counter()
    fast = fit_linear_probe(x, y, xv, yv, grid=(1e-2, 1.0, 1e2), bisection_steps=3, show_progress=False)
    t_fast = time.perf_counter() - t0
    monkeypatch.setattr(lp, "span_basis", lambda x: None)  # the original full-dimensional fits
    t0 = time.perf_counter()
    full = fit_linear_probe(x, y, xv, yv, grid=(1e-2, 1.0, 1e2), bisection_steps=3, show_progress=False)
    t_full = time.perf_counter() - t0
    print(f"\nspan fit {t_fast:.2f} s, full fit {t_full:.2f} s")
    assert fast.C == full.C and fast.search == full.search
    assert fast.model.coef_.shape == full.model.coef_.shape == (6, 256)
    np.testing.assert_allclose(fast.predict_logits(xt).numpy(), full.predict_logits(xt).numpy(), atol=2e-3)
