"""Top-k most confident correct / incorrect predictions: exact rankings, per class, grid figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import class_image, write_image

from lowres_clip.analysis import topk
from lowres_clip.analysis.attention import AttentionSource
from lowres_clip.runs import Predictions

CLASSES = ["Forest", "Highway", "SeaLake"]
LABELS = [0, 0, 1, 1, 2, 2]
LOGITS = np.array([
    [9, 1, 0],  # correct, true logit 9
    [5, 1, 0],  # correct, 5
    [7, 2, 0],  # wrong (0 for 1), wrong-class logit 7
    [0, 8, 0],  # correct, 8
    [0, 3, 1],  # wrong (1 for 2), 3
    [6, 0, 1],  # wrong (0 for 2), 6
], dtype=np.float32)


@pytest.fixture
def run(tmp_path) -> Predictions:
    paths = []
    for i, y in enumerate(LABELS):
        paths.append(f"{CLASSES[y]}/{i}.png")
        write_image(tmp_path / paths[-1], class_image(y, i, size=40))
    return Predictions(LOGITS, np.array(LABELS), paths, CLASSES, str(tmp_path), "eurosat/tiny-vit-random/lora/k1-s0")


def test_rankings_overall_and_per_class(run):
    assert topk.top_k(run, 3, correct=True)["index"].tolist() == [0, 3, 1]
    wrong = topk.top_k(run, 3, correct=False)
    assert wrong["index"].tolist() == [2, 5, 4]
    assert wrong["score"].tolist() == [7, 6, 3]
    assert wrong["pred_class"].tolist() == ["Forest", "Forest", "Highway"]
    assert topk.top_k(run, 1, correct=False)["index"].tolist() == [2]
    assert topk.top_k(run, 5, correct=False, cls="SeaLake")["index"].tolist() == [5, 4]
    assert topk.top_k(run, 5, correct=False, cls=0).empty
    per = topk.top_k(run, 1, correct=False, per_class=True)
    assert per[["label", "index"]].values.tolist() == [[1, 2], [2, 5]]
    per_ok = topk.top_k(run, 2, correct=True, per_class=True)
    assert per_ok[["label", "index"]].values.tolist() == [[0, 0], [0, 1], [1, 3]]


def test_sample_table_probabilities(run):
    t = topk.sample_table(run)
    p = torch.softmax(torch.tensor(LOGITS, dtype=torch.float64), dim=1).numpy()
    np.testing.assert_allclose(t["p_true"], p[np.arange(6), LABELS])
    assert t["correct"].tolist() == [True, True, False, True, False, False]


def test_unknown_class(run):
    with pytest.raises(topk.UnknownClassError, match="unknown class"):
        topk.top_k(run, 2, cls="Desert")
    with pytest.raises(topk.UnknownClassError, match="out of range"):
        topk.top_k(run, 2, cls=7)


def test_figures_without_and_with_attention(run, tmp_path):
    from lowres_clip.features import encode_text_classifier
    from lowres_clip.models import load_clip

    fig = topk.topk_figure(run, 3, correct=False)
    assert len([ax for ax in fig.axes if ax.images]) == 3
    assert "Forest" in fig.axes[0].get_title()
    torch.manual_seed(0)
    bundle = load_clip("tiny-vit", device="cpu")
    with torch.no_grad():
        text = encode_text_classifier(bundle.model, bundle.tokenizer, CLASSES, ["a photo of {}."])
    fig2 = topk.topk_figure(run, 3, correct=False, attention=AttentionSource.from_bundle(bundle, text))
    assert len([ax for ax in fig2.axes if ax.images]) == 6  # image + attention per sample
    empty = topk.topk_figure(run, 3, correct=False, cls="Forest")
    assert any("no incorrect" in t.get_text() for ax in empty.axes for t in ax.texts)
    paths = topk.write_topk(run, 3, root=tmp_path / "figures")
    names = sorted(p.name for p in paths)
    assert names == ["topk_correct.png", "topk_correct_per_class.csv", "topk_incorrect.png",
                     "topk_incorrect_per_class.csv"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_missing_image_gives_placeholder(run):
    run.image_root = "/nonexistent"
    with pytest.warns(UserWarning, match="placeholder"):
        fig = topk.topk_figure(run, 1, correct=True)
    assert len(fig.axes[0].images) == 1
