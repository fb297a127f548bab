"""Every run's separation numbers: clustering scores, modality gap and collapse, recomputed here
independently from the run's saved predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lowres_clip import pipeline
from lowres_clip.analysis.clustering import cluster_scores, stratified_subset
from lowres_clip.analysis.separation import separation_metrics
from lowres_clip.runs import Predictions
from lowres_clip.spec import resolve_run


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_stratified_subset_keeps_class_shares_and_is_deterministic():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    keep = stratified_subset(labels, 100)
    assert np.bincount(labels[keep]).tolist() == [60, 30, 10]
    assert np.array_equal(keep, stratified_subset(labels, 100)) and np.all(np.diff(keep) > 0)
    assert np.array_equal(stratified_subset(labels, 5000), np.arange(1000))  # small sets: every image


def test_separation_of_hand_built_predictions():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 40)
    text = _unit(np.eye(3, 8) + 0.05 * rng.normal(size=(3, 8)))
    feats = _unit(np.eye(3, 8)[labels] * 2 + np.eye(8)[7] + 0.3 * rng.normal(size=(120, 8)))
    logits = 100 * feats @ text.T
    logits[:, 0] += 200 * (np.arange(120) % 4 == 0)  # every 4th image pushed to class 0
    pred = Predictions(logits, labels, [f"{i}.png" for i in range(120)], ["a", "b", "c"], "/x", "k",
                       features=feats, text=text)
    m = separation_metrics(pred, silhouette_images=60)
    matched = np.sum(feats * text[labels], axis=1)  # cosine of each image with its own class text
    assert m["gap_matched_mean"] == pytest.approx(matched.mean(), abs=1e-6)
    assert m["gap_matched_std"] == pytest.approx(matched.std(), abs=1e-6)
    assert m["gap_centroid"] == pytest.approx(np.linalg.norm(feats.mean(0) - text.mean(0)), abs=1e-6)
    assert 0.3 < m["gap_matched_mean"] < 0.95 and m["gap_centroid"] > 0.2  # away from 0 and from 1
    preds = logits.argmax(1)
    share = np.bincount(preds, minlength=3).max() / 120
    assert m["collapse_top_share"] == pytest.approx(share) and share > 0.4  # class 0 took the pushed ones
    q = np.bincount(preds, minlength=3) / 120
    assert m["collapse_entropy"] == pytest.approx(-(q[q > 0] * np.log(q[q > 0])).sum() / np.log(3))
    # silhouettes on the stratified subset = the scores of that subset computed alone
    keep = stratified_subset(labels, 60)
    sub = Predictions(logits[keep], labels[keep], [pred.paths[i] for i in keep], pred.classnames, "/x", "k",
                      features=feats[keep])
    alone = cluster_scores(sub)
    assert m["silhouette_images"] == 60 and m["silhouette_in_full_set_all"] == pytest.approx(alone["silhouette_in_full_set_all"])
    assert m["silhouette_in_full_set_all"] > 0.2  # separated classes
    assert m["ari"] == pytest.approx(cluster_scores(pred)["ari"])  # on every image
    no_text = separation_metrics(Predictions(logits, labels, pred.paths, pred.classnames, "/x", "k", features=feats))
    assert np.isnan(no_text["gap_centroid"]) and not np.isnan(no_text["ari"])


@pytest.mark.parametrize("method", ["lora", "lora+bitfit+meta_adapter"])
def test_every_run_records_its_separation_and_its_class_embeddings(tmp_path: Path, method):
    roots = {k: str(tmp_path / k) for k in ("runs_root", "figures_root", "cache_root")}
    spec = resolve_run("smoke", None, **roots, method=method)
    record, _ = pipeline.run_method(spec)
    pred = Predictions.load(spec.predictions_path)
    assert pred.text is not None and pred.text.shape[0] == len(pred.classnames)
    # the stored class embeddings are the ones the logits used: logits = 100 cos(feature, text)
    np.testing.assert_allclose(pred.logits, 100 * pred.features @ _unit(pred.text).T, atol=2e-3)
    matched = np.sum(pred.features * _unit(pred.text)[pred.labels], axis=1)
    assert record.metrics["gap_matched_mean"] == pytest.approx(float(matched.mean()), abs=1e-5)
    for key in ("silhouette_in_full_set_all", "v_measure", "collapse_top_share", "gap_centroid"):
        assert np.isfinite(record.metrics[key]), key
    assert "separation" in record.timings
