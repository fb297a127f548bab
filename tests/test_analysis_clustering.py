"""Clustering scores agree with scikit-learn, degenerate cases give NaN, UMAP is seeded, figures are written."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from lowres_clip.analysis import clustering
from lowres_clip.runs import Predictions

CLASSES = ["a", "b", "c"]


def make_run(n_per_class=12, wrong_every=4, seed=0, classes=3) -> Predictions:
    """Well-separated feature clusters; every ``wrong_every``-th sample is predicted as the next class
    and its feature lies in that class's cluster (it looks like the other class)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8, dtype=np.float32)[:max(classes, 2)] * 4
    labels = np.repeat(np.arange(classes), n_per_class)
    preds = labels.copy()
    preds[::wrong_every] = (labels[::wrong_every] + 1) % max(classes, 2)
    feats = centres[preds] + rng.normal(0, 0.5, (len(labels), 8)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    logits = np.eye(max(classes, 2), dtype=np.float32)[preds][:, :classes] * 10
    return Predictions(logits, labels, [f"{i}.png" for i in range(len(labels))], CLASSES[:classes], "/none",
                       "eurosat/tiny-vit-random/lora/k4-s0", features=feats)


def test_scores_equal_sklearn():
    p = make_run()
    s = clustering.cluster_scores(p)
    ok = p.preds == p.labels
    assert s["silhouette_in_full_set_all"] == pytest.approx(skm.silhouette_score(p.features, p.labels, metric="cosine"))
    per_sample = skm.silhouette_samples(p.features, p.labels, metric="cosine")
    assert s["silhouette_in_full_set_correct"] == pytest.approx(per_sample[ok].mean())
    assert s["silhouette_in_full_set_wrong"] == pytest.approx(per_sample[~ok].mean())
    assert s["silhouette_in_full_set_correct"] > 0.5 > 0 > s["silhouette_in_full_set_wrong"]  # wrong ones sit in other clusters
    assert s["ari"] == pytest.approx(skm.adjusted_rand_score(p.labels, p.preds))
    h, c, v = skm.homogeneity_completeness_v_measure(p.labels, p.preds)
    assert (s["homogeneity"], s["completeness"], s["v_measure"]) == pytest.approx((h, c, v))


def test_degenerate_cases_give_nan():
    one = make_run(classes=1)
    s = clustering.cluster_scores(one)
    assert all(math.isnan(v) for v in s.values()), s
    perfect = make_run(wrong_every=10_000)
    perfect.logits = np.eye(3, dtype=np.float32)[perfect.labels]  # no wrong sample at all
    s = clustering.cluster_scores(perfect)
    assert math.isnan(s["silhouette_in_full_set_wrong"]) and math.isnan(s["silhouette_within_subset_wrong"])
    assert s["v_measure"] == pytest.approx(1.0)
    no_feats = make_run()
    no_feats.features = None
    s = clustering.cluster_scores(no_feats)
    assert math.isnan(s["silhouette_in_full_set_all"]) and math.isnan(s["silhouette_within_subset_all"])
    assert not math.isnan(s["ari"])
    with pytest.raises(clustering.FeaturesMissingError, match="no image features"):
        clustering.cluster_figure(no_feats)


def test_embedding_seeded_and_small_n_fallback():
    p = make_run()
    a = clustering.embed_2d(p.features, seed=3)
    b = clustering.embed_2d(p.features, seed=3)
    assert a.shape == (36, 2) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b)
    with pytest.warns(UserWarning, match="PCA"):
        tiny = clustering.embed_2d(p.features[:3])
    assert tiny.shape == (3, 2) and np.isfinite(tiny).all()
    assert clustering.embed_2d(p.features[:1], method="pca").shape == (1, 2)


def test_figures_written(tmp_path):
    p = make_run()
    coords = clustering.embed_2d(p.features, method="pca")
    fig = clustering.cluster_figure(p, coords)
    assert len(fig.axes) == 3
    assert [len(ax.collections) for ax in fig.axes] == [3, 3, 2]
    pfig = clustering.cluster_figure_plotly(p, coords)
    assert len(pfig.data) == 3 + 3 + 2
    scores, paths = clustering.write_clustering(p, root=tmp_path)
    d = tmp_path / p.run_key
    for name in ("clusters.png", "clusters.html", "cluster_scores.csv", "cluster_scores.md"):
        assert d / name in paths and (d / name).stat().st_size > 0
    assert scores == clustering.cluster_scores(p)
