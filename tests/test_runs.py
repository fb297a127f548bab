"""Run identity (RunSpec), predictions files, records and aggregation by settings hash."""

from __future__ import annotations

import numpy as np
import pytest

from lowres_clip import runs
from lowres_clip.spec import RunSpec, distinguishing, resolve_run


def spec(tmp_path, overrides=None, **params) -> RunSpec:
    return resolve_run("smoke", overrides, runs_root=str(tmp_path / "runs"), figures_root=str(tmp_path / "figures"), **params)


def test_key_is_readable_and_canonical(tmp_path):
    s = spec(tmp_path, method="bitfit+lora", shots=16, seed=1)
    assert s.key == "eurosat/tiny-vit-random/lora+bitfit/k16-s1"
    assert s.id == f"{s.key}/{s.variant}" and len(s.variant) == 8
    assert s.run_dir == tmp_path / "runs" / s.key / s.variant
    assert s.record_path.parent == s.checkpoint_path.parent == s.predictions_path.parent == s.run_dir
    assert s.figure_dir == tmp_path / "figures" / s.id
    assert spec(tmp_path, method="lora", long_tail_ratio=4.0).key.endswith("/k2-lt4-s1")


def test_settings_hash_covers_result_settings_only(tmp_path):
    base = spec(tmp_path, method="lora")
    # the same settings map to the same run, wherever outputs go and whatever device or workers
    same = resolve_run("smoke", {"train.num_workers": 3, "train.progress": True}, method="lora", device="cpu",
                       runs_root="/elsewhere", cache_root="/cache")
    assert same.config_hash == base.config_hash and same.id == base.id
    for overrides, params in [({"lora.rank": 4}, {}), ({"train.lr": 0.5}, {}), ({}, {"long_tail_ratio": 2.0}),
                              ({}, {"test_subset": 10}), ({}, {"image_size": 64}), ({}, {"ensemble": True})]:
        other = spec(tmp_path, overrides, method="lora", **params)
        assert other.config_hash != base.config_hash and other.run_dir != base.run_dir, (overrides, params)
    # settings of methods the run does not use do not change it
    zs = spec(tmp_path, method="zero_shot")
    assert spec(tmp_path, {"lora.rank": 8, "train.lr": 0.5}, method="zero_shot").config_hash == zs.config_hash
    # seeds: same group (table row), different runs
    s2 = spec(tmp_path, method="lora", seed=2)
    assert s2.group_hash == base.group_hash and s2.config_hash != base.config_hash and s2.variant == base.variant
    k1 = spec(tmp_path, method="lora", shots=1)
    assert k1.curve_hash == base.curve_hash and k1.group_hash != base.group_hash


def test_a_field_added_later_keeps_the_hash_of_runs_made_before_it(tmp_path):
    """``meta_adapter.budget`` (added after the study was recorded): ``reference``, what the code did
    before, leaves the settings (and hash) as they were; ``run`` is a new setting, a new folder; a
    table names the run that departs from the absent value, even when it is the most common one."""
    for method in ("meta_adapter", "lora+bitfit+meta_adapter"):
        ref = spec(tmp_path, method=method)
        assert "budget" not in ref.settings["meta_adapter"] and ref.config.meta_adapter.budget == "reference"
        assert spec(tmp_path, {"meta_adapter.budget": "reference"}, method=method).config_hash == ref.config_hash
        run = spec(tmp_path, {"meta_adapter.budget": "run"}, method=method)
        assert run.settings["meta_adapter"]["budget"] == "run" and run.run_dir != ref.run_dir and run.key == ref.key
    settings = [spec(tmp_path, overrides, method="meta_adapter").settings
                for overrides in ({}, {"meta_adapter.budget": "run"}, {"meta_adapter.budget": "run"})]
    assert distinguishing(settings) == ["", "meta_adapter.budget=run", "meta_adapter.budget=run"]


def test_is_finished_means_finished_with_these_settings(tmp_path):
    s = spec(tmp_path, method="lora")
    assert not s.is_finished()
    runs.RunRecord.for_run(s, {"top1": 0.5}).save(s.record_path)
    assert s.is_finished()
    text = s.record_path.read_text().replace(s.config_hash, "deadbeef")
    s.record_path.write_text(text)  # a record written under other settings is not reused
    assert not s.is_finished()


def test_distinguishing_names_what_differs():
    a = {"method": "lora", "lora": {"rank": 2, "alpha": 1}, "seed": 1, "shots": 4}
    b = {"method": "lora", "lora": {"rank": 4, "alpha": 1}, "seed": 2, "shots": 8}
    assert distinguishing([a, b]) == ["", "lora.rank=4"]
    assert distinguishing([a, b, dict(a, seed=5)]) == ["", "lora.rank=4", ""]
    assert distinguishing([a, dict(a, seed=3)]) == ["", ""]


def test_predictions_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    p = runs.Predictions(rng.normal(size=(5, 3)), [0, 1, 2, 0, 1], [f"{i}.png" for i in range(5)],
                         ["a", "b", "c"], "/data", "eurosat/m-w/lora/k1-s1/abcd1234", features=rng.normal(size=(5, 4)))
    q = runs.Predictions.load(p.save(tmp_path / "p.npz"))
    np.testing.assert_array_equal(p.logits, q.logits)
    assert q.paths == p.paths and q.run_key == p.run_key
    with pytest.raises(ValueError, match="class names"):
        runs.Predictions(np.zeros((1, 3)), [0], ["x"], ["a", "b"], "/", "k")


def test_aggregate_groups_by_settings_hash_and_tables(tmp_path):
    for seed, acc in [(1, 0.5), (2, 0.7)]:
        s = spec(tmp_path, method="lora", shots=4, seed=seed)
        runs.RunRecord.for_run(s, {"top1": acc, "balanced": acc / 2}).save(s.record_path)
    z = spec(tmp_path, method="zero_shot", shots=4)
    runs.RunRecord.for_run(z, {"top1": 0.25, "balanced": 0.25}).save(z.record_path)
    recs = runs.load_records(tmp_path / "runs", "eurosat")
    df = runs.aggregate(recs).set_index("method")
    assert df.loc["lora", "n_seeds"] == 2 and df.loc["lora", "top1_mean"] == pytest.approx(0.6)
    assert df.loc["lora", "seeds"] == "1,2" and df.loc["zero_shot", "top1_std"] == 0.0
    paths = runs.write_tables(runs.aggregate(recs), tmp_path / "tables", "main")
    assert "60.00 ± 14.14" in paths[1].read_text()
    (tmp_path / "runs" / "eurosat" / "old" / "record.json").parent.mkdir(parents=True)
    (tmp_path / "runs" / "eurosat" / "old" / "record.json").write_text('{"run_key": "x"}')
    with pytest.warns(UserWarning, match="older format"):
        assert len(runs.load_records(tmp_path / "runs", "eurosat")) == 3


def test_excluded_images_get_their_own_splits(tmp_path):
    plain = spec(tmp_path, method="lora")
    excluded = spec(tmp_path, method="lora", exclude=["Forest/Forest_1.jpg"])
    assert excluded.config_hash != plain.config_hash and excluded.split_dir != plain.split_dir
    assert excluded.split_dir.parent == plain.split_dir


def test_failure_files_name_the_baselines_variant():
    """Two baselines that differ only in a setting (same label, other variant) get their own failure
    files: the improvements, regressions and summary of one never overwrite the other's."""
    adapted = resolve_run("smoke", None, method="lora+aug-classic")
    plain = resolve_run("smoke", None, method="lora")
    ranked = resolve_run("smoke", {"lora.rank": 4}, method="lora")
    assert plain.label == ranked.label and plain.variant != ranked.variant
    for kind in ("improvements", "regressions", "failure"):
        assert adapted.failure_name(kind, plain) != adapted.failure_name(kind, ranked)
    assert adapted.failure_summary_path(plain) != adapted.failure_summary_path(ranked)
    assert adapted.failure_summary_path(plain).name == f"failure_vs_lora-{plain.variant}.json"
