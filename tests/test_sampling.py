"""Few-shot sampling (CoOp protocol) and the long-tailed variant."""

from __future__ import annotations

from collections import Counter

import pytest

from lowres_clip.datasets import load_dataset
from lowres_clip.sampling import FewShotSplit, few_shot, long_tail_profile


def test_k_shot_counts_and_val_cap(eurosat_root):
    ds = load_dataset("eurosat", eurosat_root)
    for k in (1, 2, 4, 8):
        fs = few_shot(ds, k, seed=1)
        assert Counter(s.label for s in fs.train) == {c: k for c in range(4)}
        assert Counter(s.label for s in fs.val) == {c: min(k, 4) for c in range(4)}
        assert set(fs.train) <= set(ds.split("train")) and set(fs.val) <= set(ds.split("val"))


def test_same_seed_same_shots_other_seed_other_shots(eurosat_root):
    ds = load_dataset("eurosat", eurosat_root)
    assert few_shot(ds, 4, seed=1).train == few_shot(ds, 4, seed=1).train
    assert few_shot(ds, 4, seed=1).train != few_shot(ds, 4, seed=2).train


def test_short_classes_take_what_they_have_and_report(eurosat_root):
    ds = load_dataset("eurosat", eurosat_root)
    with pytest.warns(UserWarning, match="fewer images than asked"):
        fs = few_shot(ds, 16, seed=1)
    assert len(fs.train) == 32 and len(fs.report) == 4
    assert "8 train images < 16 shots" in fs.report[0]


def test_saved_split_is_reloaded(eurosat_root, tmp_path):
    ds = load_dataset("eurosat", eurosat_root)
    fs = few_shot(ds, 2, seed=5, save_dir=tmp_path / "splits")
    path = tmp_path / "splits" / "eurosat-k2-s5.json"
    assert path.is_file()
    assert FewShotSplit.load(path) == fs
    assert few_shot(ds, 2, seed=5, save_dir=tmp_path / "splits") == fs


def test_long_tail_profile_and_groups(eurosat_root):
    assert long_tail_profile(5, 16, 16) == [16, 8, 4, 2, 1]
    assert long_tail_profile(3, 8, 2) == [8, 6, 4]
    ds = load_dataset("eurosat", eurosat_root)
    fs = few_shot(ds, 8, seed=1, long_tail_ratio=8)
    counts = Counter(s.label for s in fs.train)
    assert sorted(counts.values(), reverse=True) == [8, 4, 2, 1]
    assert sorted(fs.shots_per_class, reverse=True) == [8, 4, 2, 1]
    assert fs.groups is not None and set(fs.groups) <= {"head", "medium", "tail"}
    head = max(range(4), key=lambda c: fs.shots_per_class[c])
    tail = min(range(4), key=lambda c: fs.shots_per_class[c])
    assert fs.groups[head] == "head" and fs.groups[tail] == "tail"


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_bad_k(eurosat_root, k):
    ds = load_dataset("eurosat", eurosat_root)
    with pytest.raises(ValueError, match="positive integer"):
        few_shot(ds, k, seed=1)


@pytest.mark.shared_data
def test_real_eurosat_sampler_deterministic_across_runs(shared_data, tmp_path):
    ds = load_dataset("eurosat", shared_data)
    a = few_shot(ds, 16, seed=1)
    b = few_shot(ds, 16, seed=1)
    assert a.train == b.train and len(a.train) == 160 and len(a.val) == 40
    assert a.report == []
