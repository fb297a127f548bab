"""Modality gap on hand-built features whose cosines and centroids are known in closed form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lowres_clip.analysis import gap


def unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_orthogonal_modalities_have_gap_sqrt2():
    e1, e2 = np.eye(4)[0], np.eye(4)[1]
    x = np.tile(e1, (5, 1))
    t = np.tile(e2, (3, 1))
    r = gap.modality_gap(x, np.array([0, 1, 2, 2, 1]), t)
    assert r.matched_mean == pytest.approx(0.0) and r.matched_std == pytest.approx(0.0)
    assert r.wrong_max_mean == pytest.approx(0.0) and r.margin_mean == pytest.approx(0.0)
    assert r.gap == pytest.approx(math.sqrt(2)) and r.paired_gap == pytest.approx(math.sqrt(2))


def test_closed_form_cosines_and_both_centroids():
    theta = math.radians(30)
    # text: class 0 = e1, class 1 = e2; class-0 images at angle theta from e1 toward e2, class-1 image = e3
    t = np.eye(3)[:2]
    c0 = [math.cos(theta), math.sin(theta), 0.0]
    x = np.array([c0, c0, [0.0, 0.0, 1.0]])
    y = np.array([0, 0, 1])
    r = gap.modality_gap(x, y, t)
    assert r.matched == pytest.approx([math.cos(theta), math.cos(theta), 0.0])
    assert r.wrong_max == pytest.approx([math.sin(theta), math.sin(theta), 0.0])
    assert r.matched_mean == pytest.approx(2 * math.cos(theta) / 3)
    assert r.matched_std == pytest.approx(math.sqrt(2) * math.cos(theta) / 3)  # values c, c, 0
    assert r.margin_mean == pytest.approx(2 * (math.cos(theta) - math.sin(theta)) / 3)
    img = np.array([2 * math.cos(theta), 2 * math.sin(theta), 1.0]) / 3
    assert r.gap == pytest.approx(np.linalg.norm(img - [0.5, 0.5, 0.0]))          # classes count once
    assert r.paired_gap == pytest.approx(np.linalg.norm(img - [2 / 3, 1 / 3, 0.0]))  # weighted by labels
    assert r.gap != pytest.approx(r.paired_gap)
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d and all(type(v) in (int, float) for v in d.values())
    assert d["gap"] == r.gap and d["n"] == 3


def _cones(rng, n=400, c=5, d=16, spread=0.3):
    """Images around one direction, class text embeddings around another (a gap by construction)."""
    u, v = np.eye(d)[0], np.eye(d)[1]
    y = rng.integers(0, c, n)
    protos = unit(rng.normal(size=(c, d)))
    x = unit(u + spread * protos[y] + 0.1 * rng.normal(size=(n, d)))
    t = unit(v + spread * protos)
    return x, y, t


def test_shifting_images_toward_text_reduces_gap():
    x, y, t = _cones(np.random.default_rng(0))
    base = gap.modality_gap(x, y, t)
    assert base.gap > 0.5
    delta = t.mean(axis=0) - x.mean(axis=0)
    gaps = [gap.modality_gap(unit(x + lam * delta), y, t).gap for lam in (0.25, 0.5, 1.0)]
    assert base.gap > gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.5 * base.gap


def test_rejects_unnormalised_or_mismatched_inputs():
    x, y, t = _cones(np.random.default_rng(1), n=10)
    with pytest.raises(gap.GapInputError, match="L2-normalised"):
        gap.modality_gap(2 * x, y, t)
    with pytest.raises(gap.GapInputError, match="labels must lie"):
        gap.modality_gap(x, y + 5, t)
    with pytest.raises(gap.GapInputError, match="one label per image"):
        gap.modality_gap(x, y[:-1], t)


def test_histogram_figure_one_axes_one_histogram_per_method():
    rng = np.random.default_rng(2)
    x, y, t = _cones(rng)
    results = {"zero_shot": gap.modality_gap(x, y, t),
               "lora": gap.modality_gap(unit(x + 0.5 * (t.mean(0) - x.mean(0))), y, t)}
    fig = gap.matched_cosine_figure(results, bins=20)
    (ax,) = fig.axes
    legend = [tx.get_text() for tx in ax.get_legend().get_texts()]
    assert len(legend) == 2 and legend[0].startswith("zero_shot") and legend[1].startswith("lora")
    assert f"{results['lora'].gap:.3f}" in legend[1]
    assert len(ax.patches) == 2
    # each step outline spans the shared range of all matched cosines
    lo = min(r.matched.min() for r in results.values())
    hi = max(r.matched.max() for r in results.values())
    for p in ax.patches:
        xs = p.get_xy()[:, 0]
        assert xs.min() == pytest.approx(lo) and xs.max() == pytest.approx(hi)
