"""Few-shot sampling as CoOp does it, and a long-tailed variant.

CoOp protocol: K images per class from ``train``, ``min(K, 4)`` per class from ``val``, chosen by
seed and saved, so that every method sees the same shots. A class with fewer than K images takes
what it has; the sampler records that in ``report`` (and warns).

Long-tailed variant: per-class shots decay exponentially from K (head) to ``K / ratio`` (tail,
at least 1) over a class order; ``ratio = K`` gives 1 shot for the tail class. The order is seeded
and random, except for datasets with a natural long tail (Circuits), where it follows the classes'
own frequencies (most frequent first; the seed breaks ties). Classes are labelled ``head`` /
``medium`` / ``tail`` by thirds of that order, or, for datasets with a natural long tail, by their
own frequencies (:meth:`lowres_clip.datasets.SplitDataset.natural_groups`: more than 100 images
head, fewer than 20 tail), for balanced K-shot splits too: results break down by group.

Notes on the split (classes with fewer images than asked, a validation split that covers only some
classes: :func:`lowres_clip.datasets.val_coverage_note`) go to ``report`` and are warned about.
"""

from __future__ import annotations

import json
import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import atomic_write_text
from .datasets import GROUPS, Sample, SplitDataset, ids_fingerprint, val_coverage_note

VAL_SHOTS_CAP = 4


@dataclass
class FewShotSplit:
    """The shots every method of one (dataset, K, seed) cell sees.

    Attributes:
        dataset: dataset name.
        k: requested shots per class (head shots for the long-tailed variant).
        seed: sampling seed.
        train: sampled training samples.
        val: sampled validation samples (``min(K, 4)`` per class).
        shots_per_class: requested train shots per class (after the long-tail profile).
        long_tail_ratio: imbalance ratio (head/tail shots) or ``None`` for balanced K-shot.
        groups: per-class ``head``/``medium``/``tail`` labels (long-tailed splits and datasets with a
            natural long tail, else ``None``).
        report: human-readable notes, e.g. classes that had fewer images than asked for, or a
            validation split without images of some classes.
        source_fingerprint: hash of the train+val lists the shots were drawn from.
    """

    dataset: str
    k: int
    seed: int
    train: list[Sample]
    val: list[Sample]
    shots_per_class: list[int]
    long_tail_ratio: float | None = None
    groups: list[str] | None = None
    report: list[str] = field(default_factory=list)
    source_fingerprint: str = ""

    @property
    def name(self) -> str:
        lt = f"-lt{self.long_tail_ratio:g}" if self.long_tail_ratio else ""
        return f"{self.dataset}-k{self.k}{lt}-s{self.seed}"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        d = asdict(self)
        d["train"] = [[s.path, s.label] for s in self.train]
        d["val"] = [[s.path, s.label] for s in self.val]
        return atomic_write_text(path, json.dumps(d, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "FewShotSplit":
        d = json.loads(Path(path).read_text())
        d["train"] = [Sample(p, int(y)) for p, y in d["train"]]
        d["val"] = [Sample(p, int(y)) for p, y in d["val"]]
        return cls(**d)


def long_tail_profile(num_classes: int, k: int, ratio: float) -> list[int]:
    """Shots for classes ranked head to tail: ``max(1, round(k * ratio ** (-r / (C - 1))))``."""
    if ratio < 1:
        raise ValueError(f"long_tail_ratio must be >= 1 (head/tail shots), got {ratio}")
    if num_classes == 1:
        return [k]
    return [max(1, round(k * ratio ** (-r / (num_classes - 1)))) for r in range(num_classes)]


def _by_class(samples: list[Sample], num_classes: int) -> list[list[Sample]]:
    out: list[list[Sample]] = [[] for _ in range(num_classes)]
    for s in samples:
        out[s.label].append(s)
    return out


def _draw(pool: list[Sample], n: int, rng: random.Random) -> list[Sample]:
    return rng.sample(pool, n) if len(pool) >= n else list(pool)


def few_shot(
    ds: SplitDataset,
    k: int,
    seed: int,
    long_tail_ratio: float | None = None,
    save_dir: str | Path | None = None,
) -> FewShotSplit:
    """Sample (or load the saved) K-shot train/val split of ``ds``.

    Args:
        ds: the dataset.
        k: shots per class (1, 2, 4, 8, 16 in the study; any K >= 1 works).
        seed: sampling seed; the same seed always gives the same shots.
        long_tail_ratio: if set, per-class shots decay from K to K/ratio (see module doc).
        save_dir: folder where the split is saved as ``{name}.json`` and reloaded from next time.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"shots K must be a positive integer, got {k!r}")
    src = ids_fingerprint(ds.split("train") + ds.split("val"))
    lt = f"-lt{long_tail_ratio:g}" if long_tail_ratio else ""
    path = Path(save_dir) / f"{ds.name}-k{k}{lt}-s{seed}.json" if save_dir else None
    if path is not None and path.is_file():
        saved = FewShotSplit.load(path)
        if saved.source_fingerprint == src:
            if saved.groups is None and not long_tail_ratio:  # saved before natural groups existed
                saved.groups = ds.natural_groups()
            return saved
        warnings.warn(f"Saved split {path} was drawn from other data; resampling.")
    rng = random.Random(seed)
    C = ds.num_classes
    natural = ds.natural_groups()
    if long_tail_ratio:
        order = list(range(C))
        rng.shuffle(order)
        if natural is not None:  # the dataset's own frequencies rank the classes; the seed breaks ties
            totals = ds.total_counts()
            order.sort(key=lambda c: -totals[c])
        profile = long_tail_profile(C, k, long_tail_ratio)
        shots = [0] * C
        groups = [""] * C
        for rank, c in enumerate(order):
            shots[c] = profile[rank]
            groups[c] = GROUPS[min(2, rank * 3 // C)]
        if natural is not None:
            groups = list(natural)
    else:
        shots, groups = [k] * C, (list(natural) if natural is not None else None)
    train_pool = _by_class(ds.split("train"), C)
    val_pool = _by_class(ds.split("val"), C)
    train: list[Sample] = []
    val: list[Sample] = []
    report: list[str] = []
    for c in range(C):
        drawn = _draw(train_pool[c], shots[c], rng)
        if len(drawn) < shots[c]:
            report.append(f"class {c} '{ds.classnames[c]}': {len(drawn)} train images < {shots[c]} shots")
        train += drawn
        val += _draw(val_pool[c], min(shots[c], VAL_SHOTS_CAP), rng)
    if report:
        warnings.warn(f"{ds.name} K={k}: {len(report)} classes have fewer images than asked: " + "; ".join(report[:5]))
    coverage = val_coverage_note(ds)
    if coverage:
        warnings.warn(coverage)
        report.append(coverage)
    split = FewShotSplit(ds.name, k, seed, train, val, shots, long_tail_ratio, groups, report, src)
    if path is not None:
        split.save(path)
    return split
