"""Run keys, predictions files, records and the mean ± std aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from lowres_clip import runs


def test_run_key_canonical_order():
    assert runs.run_key("eurosat", "ViT-B-16", "openai", "bitfit+lora", 16, 1) == "eurosat/ViT-B-16-openai/lora+bitfit/k16-s1"
    assert runs.parse_run_key("eurosat/ViT-B-16-openai/lora+bitfit/k16-s1")["shots"] == 16


def test_predictions_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    p = runs.Predictions(rng.normal(size=(5, 3)), [0, 1, 2, 0, 1], [f"{i}.png" for i in range(5)],
                         ["a", "b", "c"], "/img", "d/m-w/zero_shot/k1-s1", features=rng.normal(size=(5, 4)))
    q = runs.Predictions.load(p.save(tmp_path / "p.npz"))
    assert np.array_equal(p.logits, q.logits) and q.paths == p.paths and q.classnames == p.classnames
    assert np.array_equal(q.features, p.features) and q.groups is None
    with pytest.raises(ValueError, match="3 logit columns but 2 class names"):
        runs.Predictions(np.zeros((1, 3)), [0], ["x"], ["a", "b"], "/", "k")


def test_record_and_aggregate_mean_std(tmp_path):
    for seed, acc in [(1, 0.5), (2, 0.7), (3, 0.9)]:
        key = runs.run_key("eurosat", "tiny-vit", "random", "lora", 4, seed)
        runs.RunRecord(key, {"top1": acc, "balanced": acc / 2}, {"seed": seed}, seed).save(tmp_path)
    runs.RunRecord(runs.run_key("eurosat", "tiny-vit", "random", "zero_shot", 4, 1),
                   {"top1": 0.25, "balanced": 0.25}, {}, 1).save(tmp_path)
    assert runs.is_finished("eurosat/tiny-vit-random/lora/k4-s2", tmp_path)
    recs = runs.load_records(tmp_path, "eurosat")
    assert len(recs) == 4 and recs[0].versions["torch"] != "absent"
    df = runs.aggregate(recs).set_index("method")
    assert df.loc["lora", "n_seeds"] == 3
    assert df.loc["lora", "top1_mean"] == pytest.approx(0.7)
    assert df.loc["lora", "top1_std"] == pytest.approx(0.2)  # sample std of .5 .7 .9
    assert df.loc["zero_shot", "top1_std"] == 0
    paths = runs.write_tables(runs.aggregate(recs), tmp_path / "tables", "main")
    assert "70.00 ± 20.00" in paths[1].read_text() and r"70.00 $\pm$ 20.00" in paths[2].read_text()
