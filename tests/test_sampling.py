"""Few-shot sampling (CoOp protocol, checked draw for draw against Dassl's algorithm) and the
long-tailed variant."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from lowres_clip.datasets import Sample, SplitDataset, load_dataset
from lowres_clip.sampling import SAMPLER, FewShotSplit, few_shot, long_tail_profile


# ----------------------------------------------------------------------------- CoOp reference
class Item:
    """Stands in for Dassl's ``Datum``: an image path, a label and a class name."""

    def __init__(self, impath: str, label: int, classname: str = ""):
        self.impath, self.label, self.classname = impath, label, classname


def dassl_fewshot(data_source: list[Item], num_shots: int, repeat: bool = False) -> list[Item]:
    """Dassl's ``DatasetBase.generate_fewshot_dataset`` for one data source, step by step: group the
    items by label in a ``defaultdict(list)`` (classes in order of first appearance), then per class
    ``random.sample`` of the global ``random`` module when the class has enough items, else
    ``random.choices`` with ``repeat``, else the class's items as they are."""
    if num_shots < 1:
        return data_source
    by_label: defaultdict[int, list[Item]] = defaultdict(list)
    for item in data_source:
        by_label[item.label].append(item)
    chosen: list[Item] = []
    for _, items in by_label.items():
        if len(items) >= num_shots:
            chosen.extend(random.sample(items, num_shots))
        elif repeat:
            chosen.extend(random.choices(items, k=num_shots))
        else:
            chosen.extend(items)
    return chosen


def coop_fewshot(split: dict[str, list], k: int, seed: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """What CoOp's EuroSAT dataset class holds as ``train_x`` and ``val`` for ``--seed seed`` and
    ``DATASET.NUM_SHOTS k``: ``set_random_seed`` seeds the global ``random``; ``read_split`` turns the
    json lists into items in file order; then ``train`` with K shots and ``val`` with ``min(K, 4)``
    (no ``repeat`` argument in either call)."""
    state = random.getstate()
    try:
        random.seed(seed)
        train = [Item(p, int(y), c) for p, y, c in split["train"]]
        val = [Item(p, int(y), c) for p, y, c in split["val"]]
        train = dassl_fewshot(train, num_shots=k)
        val = dassl_fewshot(val, num_shots=min(k, 4))
    finally:
        random.setstate(state)
    return [(i.impath, i.label) for i in train], [(i.impath, i.label) for i in val]


def as_pairs(samples: list[Sample]) -> list[tuple[str, int]]:
    return [(s.path, s.label) for s in samples]


def shuffled_split(seed: int = 0) -> dict[str, list]:
    """A CoOp-style split json with the traps of the real ones: classes interleaved and first seen in
    another order than their labels, a class with fewer train images than K, a class absent from val."""
    rng = random.Random(seed)
    sizes = {"train": [9, 3, 12, 7, 20], "val": [5, 0, 2, 6, 4]}  # class 1: 3 train images, none in val
    split: dict[str, list] = {}
    for part, counts in sizes.items():
        rows = [[f"c{y}/{part}_{y}_{i}.jpg", y, f"class {y}"] for y, n in enumerate(counts) for i in range(n)]
        rng.shuffle(rows)
        split[part] = rows
    split["test"] = [["c0/test.jpg", 0, "class 0"]]
    return split


def dataset_of(split: dict[str, list], name: str = "eurosat") -> SplitDataset:
    splits = {part: [Sample(p, int(y)) for p, y, _ in rows] for part, rows in split.items()}
    names = sorted({(int(y), c) for rows in split.values() for _, y, c in rows})
    return SplitDataset(name, Path("/nowhere"), [c for _, c in names], splits)


@pytest.mark.parametrize("k, seed", [(1, 1), (2, 1), (4, 2), (5, 3), (8, 1), (16, 2)])
def test_balanced_sampler_draws_what_coop_draws(k, seed):
    """Same split file, K and seed: the same train and val lists as CoOp (Dassl), in the same order."""
    split = shuffled_split()
    first_seen = list(dict.fromkeys(y for _, y, _ in split["train"]))
    assert first_seen != sorted(first_seen)  # the data exercise Dassl's class order
    expected_train, expected_val = coop_fewshot(split, k, seed)
    with pytest.warns(UserWarning):  # class 1 has fewer images than K (K > 3) or no val images
        fs = few_shot(dataset_of(split), k, seed)
    assert as_pairs(fs.train) == expected_train
    assert as_pairs(fs.val) == expected_val
    assert fs.sampler == SAMPLER


def test_a_short_class_keeps_its_images_in_file_order_without_drawing():
    """Dassl's calls pass no ``repeat``: a class with fewer than K images gives all of them, in
    file order, and consumes no random number (the next class's draw is unaffected)."""
    split = shuffled_split()
    with pytest.warns(UserWarning, match="fewer images than asked"):
        fs = few_shot(dataset_of(split), 8, seed=1)
    short = [p for p, y, _ in split["train"] if y == 1]
    assert [s.path for s in fs.train if s.label == 1] == short and len(short) == 3
    assert "class 1 'class 1': 3 train images < 8 shots" in fs.report
    assert not any(s.label == 1 for s in fs.val)  # no val images of class 1: nothing drawn for it


def test_interleaving_train_and_val_per_class_is_not_coop():
    """The former sampler (per class: train draw, then val draw, classes by label) gives other
    shots for the same seed: the reference tells the two apart."""
    split = shuffled_split()
    ds = dataset_of(split)
    rng = random.Random(1)
    train: list[tuple[str, int]] = []
    for c in range(ds.num_classes):
        pool = [s for s in ds.split("train") if s.label == c]
        train += as_pairs(rng.sample(pool, 2))
        vpool = [s for s in ds.split("val") if s.label == c]
        if len(vpool) >= 2:
            rng.sample(vpool, 2)
    assert train != coop_fewshot(split, 2, 1)[0]


@pytest.mark.shared_data
@pytest.mark.parametrize("k, seed", [(1, 1), (4, 2), (16, 3)])
def test_real_eurosat_shots_are_coops(shared_data, k, seed):
    """On the real CoOp split file: the image lists CoOp's EuroSAT class would hold."""
    split = json.loads((shared_data / "eurosat" / "split_zhou_EuroSAT.json").read_text())
    expected_train, expected_val = coop_fewshot(split, k, seed)
    fs = few_shot(load_dataset("eurosat", shared_data, check_files=False), k, seed)
    assert len(expected_train) == 10 * k and len(expected_val) == 10 * min(k, 4)
    assert as_pairs(fs.train) == expected_train
    assert as_pairs(fs.val) == expected_val


def test_a_split_saved_by_another_sampler_is_drawn_again(eurosat_root, tmp_path):
    ds = load_dataset("eurosat", eurosat_root)
    fs = few_shot(ds, 2, seed=5, save_dir=tmp_path)
    path = tmp_path / "eurosat-k2-s5.json"
    saved = json.loads(path.read_text())
    assert saved["sampler"] == SAMPLER
    old = dict(saved, train=saved["train"][::-1])  # as the former sampler would have left it: no "sampler"
    del old["sampler"]
    path.write_text(json.dumps(old))
    with pytest.warns(UserWarning, match="drawn by sampler"):
        again = few_shot(ds, 2, seed=5, save_dir=tmp_path)
    assert again == fs and json.loads(path.read_text())["sampler"] == SAMPLER  # redrawn and rewritten
    path.write_text(json.dumps(dict(old, sampler="coop/1")))
    with pytest.warns(UserWarning, match="'coop/1'"):
        assert few_shot(ds, 2, seed=5, save_dir=tmp_path) == fs


# ----------------------------------------------------------------------------- counts and long tail


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


def test_the_sampler_is_part_of_a_runs_settings(monkeypatch, tmp_path):
    """Runs made with other shots for the same seed are other runs: a record made by another sampler
    is neither reused nor taken for the current code's (``results.stale_records``)."""
    from lowres_clip import spec as spec_module

    roots = {"runs_root": str(tmp_path / "runs"), "figures_root": str(tmp_path / "figures")}
    now = spec_module.resolve_run("smoke", None, method="lora", **roots)
    now_sampler, now_hash, now_dir = now.settings["sampler"], now.config_hash, now.run_dir
    monkeypatch.setattr(spec_module, "SAMPLER", "coop/1")
    before = spec_module.resolve_run("smoke", None, method="lora", **roots)
    assert now_sampler == SAMPLER and before.settings["sampler"] == "coop/1"
    assert before.config_hash != now_hash and before.run_dir != now_dir
