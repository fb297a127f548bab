"""Torch datasets over generated images: label-preserving ones join the supervised loss with the
source's label (:class:`PreservingReplacement` as LRV, :class:`PreservingExtension` as the seed
report); label-breaking pairs (one breaking image and an augmented copy of it, or two breaking images)
feed the unsupervised breaking loss (:class:`BreakingPairDataset`,
:mod:`lowres_clip.augment.breaking_loss`)."""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from ..datasets import ImageDataset, Sample
from ..settings import PAIRINGS, AugmentError
from .manifest import Manifest, ManifestRow


def _require_rows(manifest: Manifest, kind: str) -> list[ManifestRow]:
    rows = [r for r in manifest.rows if r.kind == kind]
    if not rows:
        raise AugmentError(f"The manifest of '{manifest.root}' has no {kind} rows; run generate(..., kind={kind!r}) first.")
    return rows


class PreservingDataset(ImageDataset):
    """Label-preserving images of a manifest: ``(image, source label, index)`` like ``ImageDataset``.

    :attr:`source_paths` names each item's source image, so that the training loop can replace a
    training image by one of *its own* label-preserving images (LRV's protocol) or count a
    preserving image as its source for the Meta-Adapter's support masking.

    Args:
        manifest: a manifest (its ``preserving`` rows are used; other rows are ignored).
        transform: image transform (e.g. ``ClipBundle.preprocess_train``).
    """

    def __init__(self, manifest: Manifest, transform: Callable | None = None):
        self.rows = _require_rows(manifest, "preserving")
        super().__init__(manifest.root, [Sample(r.output_path, r.label) for r in self.rows], transform)

    @property
    def source_paths(self) -> list[str]:
        """The source image path (relative to the dataset's image root) of every item."""
        return [r.source_path for r in self.rows]


def _source_index(train_set, preserving) -> list[int]:
    """For every preserving item, the index of its source image in ``train_set`` (-1: not there)."""
    samples = getattr(train_set, "samples", None)
    sources = getattr(preserving, "source_paths", None)
    if samples is None or sources is None:
        raise AugmentError(
            "Label-preserving images must name their source images (PreservingDataset.source_paths) and the "
            "training set its samples (ImageDataset.samples) so that each image is matched to its source; "
            f"got {type(preserving).__name__} and {type(train_set).__name__}."
        )
    where = {s.path: i for i, s in enumerate(samples)}
    return [where.get(p, -1) for p in sources]


class PreservingReplacement:
    """LRV's label-preserving protocol: ``(image, label, index, weight)`` over the training set.

    Item ``i`` is training image ``i`` with weight 1 or, with probability ``p``, one of *its*
    label-preserving images (drawn uniformly) with weight ``weight``; ``index`` is ``i`` either
    way. The training loop averages the cross-entropy as ``sum(w l) / sum(w)`` (LRV
    ``train_circuit.py``: ``torch.sum(loss_fn(outputs, labels) * weights) / torch.sum(weights)``; note
    that its ``nn.CrossEntropyLoss()`` reduces to the mean before the weights multiply, so the script
    as published weights nothing - this class and the loop implement the per-image weighting it
    writes). Coin flips and choices use torch's RNG, like a random transform (see
    :class:`BreakingPairDataset`). Training images without preserving images are never replaced.

    Args:
        train_set: the training images (``ImageDataset``: ``(image, label, index)`` with ``samples``).
        preserving: their label-preserving images (:class:`PreservingDataset`).
        p: replacement probability per image and draw (LRV ``aug_prob`` 0.3).
        weight: loss weight of a replaced image (LRV ``aug_weight`` 0.65).
    """

    def __init__(self, train_set, preserving, p: float = 0.3, weight: float = 0.65):
        if not 0.0 <= p <= 1.0 or weight <= 0:
            raise AugmentError(f"replacement probability must be in [0, 1] and weight > 0, got p={p}, weight={weight}.")
        self.train_set, self.preserving, self.p, self.weight = train_set, preserving, float(p), float(weight)
        self.options: list[list[int]] = [[] for _ in range(len(train_set))]
        for j, i in enumerate(_source_index(train_set, preserving)):
            if i >= 0:
                self.options[i].append(j)
        missing = sum(not o for o in self.options)
        if missing == len(self.options):
            raise AugmentError("No training image has a label-preserving image; generate them for this training set.")
        if missing:
            warnings.warn(f"{missing} of {len(self.options)} training images have no label-preserving image and are "
                          "never replaced.", stacklevel=2)

    def __len__(self) -> int:
        return len(self.train_set)

    def __getitem__(self, i: int):
        options = self.options[i]
        if options and float(torch.rand(())) < self.p:
            j = options[int(torch.randint(len(options), ()))]
            image, label, _ = self.preserving[j]
            return image, label, i, self.weight
        image, label, idx = self.train_set[i]
        return image, label, idx, 1.0


class PreservingExtension:
    """The seed report's label-preserving protocol: ``(image, label, index, weight)`` over the training
    images followed by every label-preserving image (weight 1 each).

    A preserving item's ``index`` is its source's index in ``train_set`` (so the Meta-Adapter leaves
    the source out of the query's support), and its label is the source's. The seed authors'
    ``datasets/circuits.py`` appends each preserving image as one more training item.

    Args:
        train_set: the training images (``ImageDataset`` with ``samples``).
        preserving: their label-preserving images (:class:`PreservingDataset`).
    """

    def __init__(self, train_set, preserving):
        self.train_set, self.preserving = train_set, preserving
        self.source = _source_index(train_set, preserving)
        if any(i < 0 for i in self.source):
            bad = next(p for p, i in zip(preserving.source_paths, self.source) if i < 0)
            raise AugmentError(f"label-preserving image of '{bad}', which is not in the training set; generate the "
                               "images for this training set.")

    def __len__(self) -> int:
        return len(self.train_set) + len(self.preserving)

    def __getitem__(self, i: int):
        if i < len(self.train_set):
            image, label, idx = self.train_set[i]
            return image, label, idx, 1.0
        j = i - len(self.train_set)
        image, label, _ = self.preserving[j]
        return image, label, self.source[j], 1.0


class BreakingPairDataset:
    """Pairs of label-breaking views per source image: ``(view1, view2, source_index)``.

    ``pairing`` says what the two views are:

    * ``augmented_copy`` (LRV's code, the default): one label-breaking image of the source (any
      strength, any sample) and an augmented copy of that same image; here the copy is a second,
      independent draw of the random ``transform`` (LRV loads copies made offline by a generator
      that its repository does not include);
    * ``two_breaking`` (the seed report's code): two *different* label-breaking images of the source.

    One item per source image with enough outputs (one, or two for ``two_breaking``). Item ``i``
    draws its images with torch's RNG, like a random transform: a ``DataLoader`` with a seeded
    ``generator`` gives reproducible pairs and new pairs every epoch (workers are seeded from it);
    with ``num_workers=0`` the global seed decides. ``source_index`` is ``i``; :attr:`sources` maps
    it to the source path. Sources without enough outputs are dropped with a warning.

    Args:
        manifest: a manifest (its ``breaking`` rows are used).
        transform: image transform applied to both views (drawn independently for each view).
        pairing: ``augmented_copy`` or ``two_breaking``.
    """

    def __init__(self, manifest: Manifest, transform: Callable | None = None, pairing: str = "augmented_copy"):
        if pairing not in PAIRINGS:
            raise AugmentError(f"Unknown breaking pairing {pairing!r}; choose one of {PAIRINGS}.")
        self.manifest, self.transform, self.pairing = manifest, transform, pairing
        need = 2 if pairing == "two_breaking" else 1
        groups: dict[str, list[int]] = {}
        rows = _require_rows(manifest, "breaking")
        for n, r in enumerate(rows):
            groups.setdefault(r.source_path, []).append(n)
        dropped = [p for p, g in groups.items() if len(g) < need]
        if dropped:
            warnings.warn(f"{len(dropped)} sources have fewer than two breaking outputs and are left out (e.g. {dropped[0]}).", stacklevel=2)
        self.sources = [p for p, g in groups.items() if len(g) >= need]
        if not self.sources:
            raise AugmentError("No source has two breaking outputs; generate with num_samples >= 2 or several breaking "
                               "strengths, or use the 'augmented_copy' pairing.")
        self._groups = [groups[p] for p in self.sources]
        self.rows = rows
        self.images = ImageDataset(manifest.root, [Sample(r.output_path, r.label) for r in rows], transform)

    def with_pairing(self, pairing: str) -> "BreakingPairDataset":
        """The same images and transform with another ``pairing`` (``self`` when it is already that)."""
        return self if pairing == self.pairing else BreakingPairDataset(self.manifest, self.transform, pairing)

    @property
    def strengths(self) -> list[float]:
        """The distinct generator strengths of the label-breaking images, ascending."""
        return sorted({r.strength for r in self.rows})

    def __len__(self) -> int:
        return len(self.sources)

    def pair(self, i: int, generator: torch.Generator | None = None) -> tuple[int, int]:
        """Row indices (into :attr:`rows`) of the two views of source ``i`` (equal for ``augmented_copy``)."""
        group = self._groups[i]
        order = torch.randperm(len(group), generator=generator).tolist()
        a = group[order[0]]
        return (a, a) if self.pairing == "augmented_copy" else (a, group[order[1]])

    def __getitem__(self, i: int):
        a, b = self.pair(i)
        if a == b:
            image = self.images.load_image(a)
            t = self.transform or (lambda x: x)
            return t(image), t(image), i
        return self.images[a][0], self.images[b][0], i
