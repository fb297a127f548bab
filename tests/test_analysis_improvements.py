"""Improvements between two runs: exact entropy-difference ranking, refusal of mismatched runs, figures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import class_image, write_image
from scipy.stats import entropy

from lowres_clip.analysis import improvements as imp
from lowres_clip.analysis.attention import AttentionSource
from lowres_clip.runs import Predictions

CLASSES = ["Forest", "Highway", "SeaLake"]
LABELS = [1, 1, 2, 0, 0, 2]
LOGITS_A = np.array([
    [2.0, 1.9, 1.8],  # wrong, very unsure
    [10., 0.0, 0.0],  # wrong, sure
    [3.0, 0.0, 2.5],  # wrong, fairly unsure
    [0.0, 5.0, 0.0],  # wrong
    [5.0, 0.0, 0.0],  # right
    [4.0, 0.0, 3.0],  # wrong, fairly unsure
], dtype=np.float32)
LOGITS_B = np.array([
    [0.0, 10., 0.0],  # right, sure
    [0.0, 10., 0.0],  # right, sure
    [0.9, 0.0, 1.0],  # right but unsure: H_A - H_B < 0
    [0.0, 5.0, 0.0],  # still wrong
    [5.0, 0.0, 0.0],  # right
    [0.0, 0.0, 8.0],  # right, sure
], dtype=np.float32)


def _run(root, logits, method, labels=LABELS, paths=None, classes=CLASSES) -> Predictions:
    paths = paths or [f"{i}.png" for i in range(len(labels))]
    return Predictions(logits, np.array(labels), list(paths), list(classes), str(root),
                       f"eurosat/tiny-vit-random/{method}/k1-s0")


@pytest.fixture
def runs(tmp_path):
    for i, y in enumerate(LABELS):
        write_image(tmp_path / f"{i}.png", class_image(y, i, size=32))
    return _run(tmp_path, LOGITS_A, "zero_shot"), _run(tmp_path, LOGITS_B, "lora")


def _h(logits):
    logits = np.asarray(logits, dtype=np.float64)
    z = np.exp(logits - logits.max())
    return entropy(z / z.sum())


def test_ranking_exact_order(runs):
    a, b = runs
    df = imp.rank_improvements(a, b)
    expected = sorted([0, 1, 2, 5], key=lambda i: -(_h(LOGITS_A[i]) - _h(LOGITS_B[i])))
    assert expected == [0, 5, 1, 2]  # the crafted order: largest H_A - H_B first
    assert df["index"].tolist() == expected
    np.testing.assert_allclose(df["entropy_diff"], df["entropy_a"] - df["entropy_b"])
    np.testing.assert_allclose(df["entropy_a"], [_h(LOGITS_A[i]) for i in expected], rtol=1e-6)
    assert df["entropy_diff"].is_monotonic_decreasing
    assert df["entropy_diff"].iloc[-1] < 0  # sample 2: fixed, but B is less sure than A
    assert df["class_a"].tolist() == ["Forest"] * 4 and (df["pred_b"] == df["label"]).all()
    assert imp.rank_improvements(a, b, k=2)["index"].tolist() == [0, 5]
    # regressions are improvements the other way round: none here (sample 4 is right in both)
    assert imp.rank_improvements(b, a).empty


def test_mismatched_runs_are_refused(runs, tmp_path):
    a, b = runs
    cases = {
        "different test sets": _run(tmp_path, LOGITS_B, "lora", paths=[f"{i}.png" for i in reversed(range(6))]),
        "different test sets ": _run(tmp_path, LOGITS_B[:5], "lora", labels=LABELS[:5]),
        "different class lists": _run(tmp_path, LOGITS_B, "lora", classes=["x", "y", "z"]),
        "disagree on the labels": _run(tmp_path, LOGITS_B, "lora", labels=[0, 1, 2, 0, 0, 2]),
    }
    for message, other in cases.items():
        with pytest.raises(imp.MismatchedRunsError, match=message.strip()):
            imp.rank_improvements(a, other)
    assert issubclass(imp.MismatchedRunsError, ValueError)


def test_figures(runs, tmp_path):
    from lowres_clip.features import encode_text_classifier
    from lowres_clip.models import load_clip

    a, b = runs
    fig = imp.improvements_figure(a, b, k=3)
    assert len(fig.axes) == 3 * 2  # image + probabilities per row
    torch.manual_seed(0)
    bundle = load_clip("tiny-vit", device="cpu")
    with torch.no_grad():
        text = encode_text_classifier(bundle.model, bundle.tokenizer, CLASSES, ["a photo of {}."])
    src = AttentionSource.from_bundle(bundle, text)
    fig2 = imp.improvements_figure(a, b, k=2, attention_a=src, attention_b=src)
    assert len(fig2.axes) == 2 * 4  # image, attention A, attention B, probabilities
    none = dataclasses.replace(b, logits=LOGITS_A.copy())
    empty = imp.improvements_figure(a, none)
    assert any("no sample" in t.get_text() for ax in empty.axes for t in ax.texts)
    paths = imp.write_improvements(a, b, k=2, root=tmp_path / "figures", name="improvements_vs_zero_shot")
    d = tmp_path / "figures" / b.run_key
    assert sorted(p.name for p in paths) == ["improvements_vs_zero_shot.csv", "improvements_vs_zero_shot.md",
                                             "improvements_vs_zero_shot.png"]
    assert all((d / p.name).stat().st_size > 0 for p in paths)
