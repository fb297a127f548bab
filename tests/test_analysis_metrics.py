"""Metrics of crafted predictions agree with scikit-learn; tables, breakdowns and report files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from lowres_clip.analysis import metrics
from lowres_clip.runs import Predictions

CLASSES = ["AnnualCrop", "Forest", "Highway", "SeaLake"]


def crafted(labels, preds, num_classes=4, groups=None, margin=5.0, run_key="eurosat/tiny-vit-random/lora/k4-s0"):
    """Predictions whose argmax is exactly ``preds`` (random logits, predicted class lifted by ``margin``)."""
    rng = np.random.default_rng(0)
    labels = np.asarray(labels)
    logits = rng.normal(size=(len(labels), num_classes)).astype(np.float32)
    logits[np.arange(len(labels)), preds] = logits.max(axis=1) + margin
    return Predictions(logits=logits, labels=labels, paths=[f"img_{i}.png" for i in range(len(labels))],
                       classnames=CLASSES[:num_classes], image_root="/nonexistent", run_key=run_key, groups=groups)


@pytest.fixture
def random_preds():
    rng = np.random.default_rng(42)
    labels = rng.integers(0, 4, 60)
    preds = np.where(rng.random(60) < 0.6, labels, rng.integers(0, 4, 60))
    return crafted(labels, preds)


def test_accuracies_equal_sklearn(random_preds):
    p = random_preds
    assert metrics.accuracy(p) == pytest.approx(skm.accuracy_score(p.labels, p.preds))
    assert metrics.balanced_accuracy(p) == pytest.approx(skm.balanced_accuracy_score(p.labels, p.preds))
    assert metrics.top_k_accuracy(p, 2) == pytest.approx(skm.top_k_accuracy_score(p.labels, p.logits, k=2))
    assert np.isnan(metrics.top_k_accuracy(p, 4))  # k >= C is meaningless


def test_confusion_equals_sklearn(random_preds):
    p = random_preds
    cm = metrics.confusion(p)
    np.testing.assert_array_equal(cm.counts, skm.confusion_matrix(p.labels, p.preds))
    np.testing.assert_allclose(cm.normalized, skm.confusion_matrix(p.labels, p.preds, normalize="true"))
    table = cm.table()
    assert list(table.index) == CLASSES and list(table.columns) == CLASSES
    assert table.loc["Forest", "Highway"] == cm.counts[1, 2]


def test_per_class_table_hand_computed():
    # class 0: 1/2 right, class 1: 2/3, class 2: 1/1, class 3: no test sample
    p = crafted([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 2])
    t = metrics.per_class_table(p)
    assert list(t.columns) == ["index", "class", "correct", "wrong", "total", "accuracy"]
    assert t["correct"].tolist() == [1, 2, 1, 0]
    assert t["wrong"].tolist() == [1, 1, 0, 0]
    assert t["total"].tolist() == [2, 3, 1, 0]
    np.testing.assert_allclose(t["accuracy"].to_numpy()[:3], [0.5, 2 / 3, 1.0])
    assert np.isnan(t["accuracy"].iloc[3])
    # balanced accuracy is the mean of the present classes' recalls
    assert metrics.balanced_accuracy(p) == pytest.approx(np.mean([0.5, 2 / 3, 1.0]))


def test_group_breakdown():
    labels = [0, 0, 0, 0, 1, 1, 2, 3]
    preds = [0, 0, 0, 1, 1, 0, 3, 3]
    p = crafted(labels, preds, groups=["head", "medium", "tail", "tail"])
    g = metrics.group_table(p)
    assert g["group"].tolist() == ["head", "medium", "tail"]
    assert g["accuracy"].tolist() == pytest.approx([0.75, 0.5, 0.5])
    assert g["balanced_accuracy"].tolist() == pytest.approx([0.75, 0.5, 0.5])
    assert g["classes"].tolist() == [1, 1, 2]
    assert metrics.per_class_table(p)["group"].tolist() == ["head", "medium", "tail", "tail"]
    s = metrics.summary(p)
    assert s["top1"] == pytest.approx(5 / 8) and s["top1_tail"] == pytest.approx(0.5)
    assert metrics.group_table(crafted(labels, preds)) is None


def test_most_confused_pairs():
    p = crafted([0, 0, 0, 1, 1, 2], [1, 1, 0, 0, 1, 1])
    mc = metrics.confusion(p).most_confused(2)
    expected = [["AnnualCrop", "Forest", 2], ["Forest", "AnnualCrop", 1]]
    assert mc[["true", "predicted", "count"]].values.tolist() == expected
    assert mc["rate"].tolist() == pytest.approx([2 / 3, 0.5])


def test_invalid_predictions_are_refused():
    p = crafted([0, 1], [0, 1])
    p.labels = np.array([0, 7])
    with pytest.raises(metrics.PredictionsError, match="labels must lie"):
        metrics.accuracy(p)


def test_write_report(tmp_path):
    p = crafted([0, 0, 1, 1, 2, 3], [0, 1, 1, 1, 3, 3], groups=["head", "head", "tail", "tail"])
    paths = metrics.write_report(p, root=tmp_path)
    d = tmp_path / p.run_key
    for name in ("per_class.csv", "per_class.md", "groups.csv", "confusion_counts.csv", "confusion_counts.png",
                 "confusion_normalized.md", "confusion_normalized.png", "per_class_accuracy.png", "most_confused.csv"):
        assert d / name in paths and (d / name).stat().st_size > 0, name
    counts = pd.read_csv(d / "confusion_counts.csv", index_col=0)
    np.testing.assert_array_equal(counts.to_numpy(), metrics.confusion(p).counts)
