"""Long-tail groups, per-group accuracy and collapse on literal examples computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lowres_clip.analysis import longtail

SHOTS = [16, 6, 2, 1]
GROUPS = ["head", "medium", "tail", "tail"]   # as the split labels them
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 3])
PREDS = np.array([0, 0, 1, 1, 0, 2, 0, 0])
# by hand: recalls 2/3, 1/2, 1/2, 0; predicted counts 5, 2, 1, 0


def test_per_class_recall_table():
    df = longtail.per_class_recall(SHOTS, LABELS, PREDS, GROUPS, classnames=["a", "b", "c", "d"])
    assert list(df["class"]) == [0, 1, 2, 3] and list(df["name"]) == ["a", "b", "c", "d"]
    assert list(df["support"]) == [3, 2, 2, 1] and list(df["correct"]) == [2, 1, 1, 0]
    assert df["recall"].tolist() == pytest.approx([2 / 3, 1 / 2, 1 / 2, 0.0])
    assert list(df["predicted"]) == [5, 2, 1, 0]
    shuffled = longtail.per_class_recall([1, 16, 2, 6], LABELS, PREDS, GROUPS)  # sorted by shots, most first
    assert list(shuffled["class"]) == [1, 3, 2, 0] and list(shuffled["shots"]) == [16, 6, 2, 1]


def test_summary_accuracy_balanced_and_groups():
    s = longtail.longtail_summary(SHOTS, LABELS, PREDS, GROUPS)
    assert s.accuracy == pytest.approx(4 / 8)
    assert s.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2 + 1 / 2 + 0) / 4)
    g = s.groups.set_index("group")
    assert list(g.index) == ["head", "medium", "tail"]
    assert g.loc["tail", "support"] == 3 and g.loc["tail", "classes"] == 2
    assert g.loc["tail", "accuracy"] == pytest.approx(1 / 3)            # 1 of 3 tail images
    assert g.loc["tail", "balanced_accuracy"] == pytest.approx(1 / 4)   # mean of recalls 1/2, 0
    assert g.loc["head", "accuracy"] == pytest.approx(2 / 3) and g.loc["medium", "accuracy"] == pytest.approx(1 / 2)
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["accuracy_tail"] == pytest.approx(1 / 3) and d["collapse_top_share"] == pytest.approx(5 / 8)


def test_given_groups_replace_the_rule():
    s = longtail.longtail_summary(SHOTS, LABELS, PREDS, groups=["head", "head", "tail", "tail"])
    g = s.groups.set_index("group")
    assert list(g.index) == ["head", "tail"]
    assert g.loc["head", "accuracy"] == pytest.approx(3 / 5)


def test_class_without_test_images_is_left_out_of_balanced_accuracy():
    s = longtail.longtail_summary([4, 4, 4], np.array([0, 0, 1]), np.array([0, 1, 1]), ["head"] * 3)
    assert s.balanced_accuracy == pytest.approx((1 / 2 + 1) / 2)
    assert s.accuracy == pytest.approx(2 / 3)


def test_collapse_measures():
    c = longtail.prediction_collapse(LABELS, PREDS, 4)
    q = np.array([5, 2, 1]) / 8
    h = float(-(q * np.log(q)).sum())
    assert (c.top_class, c.top_share) == (0, pytest.approx(5 / 8))
    assert c.entropy == pytest.approx(h) and c.normalized_entropy == pytest.approx(h / math.log(4))
    ql = np.array([3, 2, 2, 1]) / 8
    assert c.label_top_share == pytest.approx(3 / 8)
    assert c.label_normalized_entropy == pytest.approx(float(-(ql * np.log(ql)).sum()) / math.log(4))
    collapsed = longtail.prediction_collapse(LABELS, np.full(8, 2), 4)
    assert (collapsed.top_class, collapsed.top_share, collapsed.entropy) == (2, 1.0, 0.0)
    uniform = longtail.prediction_collapse(LABELS, np.array([0, 1, 2, 3] * 2), 4)
    assert uniform.normalized_entropy == pytest.approx(1.0) and uniform.top_share == pytest.approx(1 / 4)


def test_rejects_predictions_outside_the_classes():
    with pytest.raises(longtail.LongTailInputError, match="predictions"):
        longtail.longtail_summary(SHOTS, LABELS, PREDS + 3, GROUPS)
    with pytest.raises(longtail.LongTailInputError, match="one length"):
        longtail.per_class_recall(SHOTS, LABELS, PREDS[:-1], GROUPS)
