"""Few-shot sampling exactly as CoOp draws it, and a long-tailed variant.

CoOp protocol (KaiyangZhou/CoOp ``datasets/eurosat.py`` and the other dataset classes, on
Dassl's ``DatasetBase.generate_fewshot_dataset``): after ``set_random_seed(seed)`` (which calls
``random.seed(seed)``), CoOp builds the dataset, whose constructor makes, in this order,

1. ``train = generate_fewshot_dataset(train, num_shots=K)``;
2. ``val = generate_fewshot_dataset(val, num_shots=min(K, 4))``.

Each call groups its list by label with ``split_dataset_by_label`` (a ``defaultdict(list)``: classes
in the order their first image appears in the split file, images in file order; a class absent from
the list is skipped and draws nothing), and for each class takes ``random.sample(items, n)`` when it
has ``n`` or more images, else all its images in file order (``repeat=False``: the calls never pass
``repeat``, so nothing is drawn with replacement and no random number is used for such a class). The
sampled lists are those draws concatenated class after class. One global ``random`` stream serves
both calls, so every train draw precedes every val draw. The balanced sampler here does exactly
that with ``random.Random(seed)`` (the same stream as ``random.seed(seed)``), so for the same split
file, K and seed it returns CoOp's train and val lists, in CoOp's order
(``tests/test_sampling.py`` checks it against a literal transcription of Dassl's code, on generated
data and on the real EuroSAT split). CoOp samples the val shots but never selects a model with them
(Dassl's ``TEST.FINAL_MODEL = "last_step"``; its test split is ``test``); here they serve the
``best_val`` selection rule and the validation history. What CoOp does not do: it caches the draw
as a pickle per ``(K, seed)`` under ``split_fewshot/`` (here: ``{name}.json`` under ``save_dir``),
and it neither warns about nor records classes with fewer than K images (here: ``report`` and a
warning).

Saved splits carry the sampler that drew them (:data:`SAMPLER`); a split saved by another sampler
(older files have none), or drawn from other data, is drawn again and overwritten, never reused.

Long-tailed variant (our extension, not CoOp's): per-class shots decay exponentially from K (head)
to ``K / ratio`` (tail, at least 1) over a class order; ``ratio = K`` gives 1 shot for the tail
class. The same seeded stream first shuffles the classes (``rng.shuffle(list(range(C)))``); for
datasets with a natural long tail (Circuits) that order is then sorted by the classes' own
frequencies (most frequent first; the shuffle breaks ties). The shots are then drawn as in the
balanced case, train then val, with the per-class counts ``n_c`` (train) and ``min(n_c, 4)`` (val)
instead of K and ``min(K, 4)``. Classes are labelled ``head`` / ``medium`` / ``tail`` by thirds of
that order, or, for datasets with a natural long tail, by their own frequencies
(:meth:`lowres_clip.datasets.SplitDataset.natural_groups`: more than 100 images head, fewer than 20
tail), for balanced K-shot splits too: results break down by group.

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
# The sampler's identity, saved with every split: "coop/2" draws as Dassl's generate_fewshot_dataset
# (all train classes, then all val classes, classes in order of first appearance). Splits saved
# without it (the former sampler interleaved train and val per class, classes by label) are redrawn.
SAMPLER = "coop/2"


def cell_name(shots: int, seed: int, long_tail_ratio: float | None = None) -> str:
    """``k{shots}-s{seed}`` (``k{shots}-lt{ratio}-s{seed}`` for long-tailed sampling): the one writer
    of a grid cell's name (run keys and data folders through :attr:`lowres_clip.spec.RunSpec.cell`,
    saved splits through :attr:`FewShotSplit.name`)."""
    lt = f"-lt{long_tail_ratio:g}" if long_tail_ratio else ""
    return f"k{shots}{lt}-s{seed}"


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
        sampler: the sampler that drew the split (:data:`SAMPLER`; ``""`` for files saved before
            samplers were recorded).
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
    sampler: str = ""

    @property
    def name(self) -> str:
        return f"{self.dataset}-{cell_name(self.k, self.seed, self.long_tail_ratio)}"

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
        d.setdefault("sampler", "")  # saved before the sampler was recorded: not the current one
        return cls(**d)


def long_tail_profile(num_classes: int, k: int, ratio: float) -> list[int]:
    """Shots for classes ranked head to tail: ``max(1, round(k * ratio ** (-r / (C - 1))))``."""
    if ratio < 1:
        raise ValueError(f"long_tail_ratio must be >= 1 (head/tail shots), got {ratio}")
    if num_classes == 1:
        return [k]
    return [max(1, round(k * ratio ** (-r / (num_classes - 1)))) for r in range(num_classes)]


def _by_class_in_order(samples: list[Sample]) -> dict[int, list[Sample]]:
    """Samples grouped by label: classes in order of first appearance, samples in list order
    (Dassl's ``split_dataset_by_label``)."""
    out: dict[int, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.label, []).append(s)
    return out


def _draw_per_class(samples: list[Sample], shots: list[int], rng: random.Random) -> list[Sample]:
    """Dassl's ``generate_fewshot_dataset`` with a per-class count: for each class of ``samples``
    (first-appearance order), ``rng.sample(items, n)`` when it has ``n = shots[label]`` or more
    images, else all of them (no draw); the draws concatenated."""
    out: list[Sample] = []
    for label, items in _by_class_in_order(samples).items():
        n = shots[label]
        out += rng.sample(items, n) if len(items) >= n else list(items)
    return out


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
    path = Path(save_dir) / f"{ds.name}-{cell_name(k, seed, long_tail_ratio)}.json" if save_dir else None
    if path is not None and path.is_file():
        saved = FewShotSplit.load(path)
        if saved.source_fingerprint != src:
            warnings.warn(f"Saved split {path} was drawn from other data; resampling.")
        elif saved.sampler != SAMPLER:
            warnings.warn(f"Saved split {path} was drawn by sampler {saved.sampler or 'unrecorded (before coop/2)'!r}, "
                          f"not {SAMPLER!r}; resampling.")
        else:
            if saved.groups is None and not long_tail_ratio:  # saved before natural groups existed
                saved.groups = ds.natural_groups()
            return saved
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
    # CoOp: every train class first, then every val class, from one stream (see the module doc)
    train = _draw_per_class(ds.split("train"), shots, rng)
    val = _draw_per_class(ds.split("val"), [min(n, VAL_SHOTS_CAP) for n in shots], rng)
    have = ds.counts("train")
    report = [f"class {c} '{ds.classnames[c]}': {have[c]} train images < {shots[c]} shots"
              for c in range(C) if have[c] < shots[c]]
    if report:
        warnings.warn(f"{ds.name} K={k}: {len(report)} classes have fewer images than asked: " + "; ".join(report[:5]))
    coverage = val_coverage_note(ds)
    if coverage:
        warnings.warn(coverage)
        report.append(coverage)
    split = FewShotSplit(ds.name, k, seed, train, val, shots, long_tail_ratio, groups, report, src, SAMPLER)
    if path is not None:
        split.save(path)
    return split
