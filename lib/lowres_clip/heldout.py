"""Held-out training images for choosing a profile's values without the test split.

A profile value that is measured (a learning rate, an image size...) is chosen on images that no
reported number is computed on. :func:`held_out_dataset` splits the dataset's *train* split into

* a **dev** set: ``per_class`` images per class, drawn with a fixed seed, and
* the rest of the train split, from which the K-shot training images of a sweep are drawn,

and returns a :class:`~lowres_clip.datasets.SplitDataset` whose ``train`` is that rest, whose ``val``
is the dataset's own val split and whose ``dev`` split is the held-out images. It has **no test
split**: code that asks for it (``ds.split("test")``) raises, so a sweep built on it cannot read a
test label, even by accident.
"""

from __future__ import annotations

import dataclasses
import random

from .datasets import Sample, SplitDataset

DEV_SEED = 20261207  # fixed before any sweep was run; never tuned
DEV_PER_CLASS = 100


def held_out_dataset(ds: SplitDataset, per_class: int = DEV_PER_CLASS, seed: int = DEV_SEED) -> SplitDataset:
    """``ds`` without its test split, its train split cut into ``train`` (the rest) and ``dev``.

    Args:
        ds: a loaded dataset (any of :func:`lowres_clip.datasets.load_dataset`).
        per_class: dev images per class (fewer when a class has fewer than ``2 * per_class`` train
            images: at most half of a class goes to dev, so K-shot draws stay possible).
        seed: the draw's seed.
    """
    rng = random.Random(seed)
    by_class: list[list[Sample]] = [[] for _ in range(ds.num_classes)]
    for s in ds.split("train"):
        by_class[s.label].append(s)
    dev: set[str] = set()
    for samples in by_class:
        n = min(per_class, len(samples) // 2)
        dev.update(s.path for s in rng.sample(samples, n))
    train = [s for s in ds.split("train") if s.path not in dev]
    dev_samples = [s for s in ds.split("train") if s.path in dev]
    splits = {"train": train, "val": list(ds.split("val")), "dev": dev_samples}
    return dataclasses.replace(ds, name=f"{ds.name}-heldout", splits=splits)
