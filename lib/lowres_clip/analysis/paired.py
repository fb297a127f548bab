"""Paired comparisons of two rows of a results table, from their run records.

A row is the runs of one settings hash (``group_hash``) over seeds. Two rows are compared on the
seeds both have (the same few-shot draws, the same test images):

* over seeds: the Student-t interval of the mean per-seed difference
  (:func:`lowres_clip.analysis.stats.paired_seed_interval`; needs two seeds or more);
* over test images: the paired bootstrap of the seed-averaged difference, resampling images jointly
  across seeds (:func:`lowres_clip.analysis.stats.paired_bootstrap_seeds`), from the per-image
  correctness every record stores (``extra.test_correct``, :func:`lowres_clip.runs.pack_correct`);
  and McNemar's test when one seed is shared.

:meth:`Comparison.interval` is the one a reading is judged by: over seeds when it exists (the
larger source of variation in few-shot studies), else over images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..runs import RunRecord, unpack_correct
from .stats import Interval, McNemarResult, mcnemar, paired_bootstrap_seeds, paired_seed_interval

N_BOOT = 2000  # replicates of the bootstrap over images (the README's intervals)


@dataclass(frozen=True)
class Comparison:
    """Row A minus row B on their shared seeds.

    Attributes:
        seeds: the shared seeds.
        mean: mean per-seed difference (fractions).
        over_seeds: t interval over seeds (undefined with one seed).
        over_images: bootstrap interval over test images (``None`` without per-image correctness).
        mcnemar: McNemar's test of the two runs (one shared seed with per-image correctness), else ``None``.
    """

    seeds: tuple[int, ...]
    mean: float
    over_seeds: Interval
    over_images: Interval | None = None
    mcnemar: McNemarResult | None = None

    def interval(self) -> Interval:
        """The interval a reading is judged by: over seeds when defined, else over images."""
        if self.over_seeds.defined or self.over_images is None:
            return self.over_seeds
        return self.over_images

    def cell(self) -> str:
        """A table cell: ``+0.44 [-4.60, +5.48] (3 seeds)`` or ``+0.44 [-0.61, +1.50] (images, 1 seed)``."""
        iv = self.interval()
        if not iv.defined:
            return f"{100 * self.mean:+.2f} (1 seed, no interval)"
        where = f"{len(self.seeds)} seeds" if iv is self.over_seeds else f"images, {len(self.seeds)} seed" + (
            "s" if len(self.seeds) > 1 else "")
        return f"{iv.format()} ({where})"


def _by_seed(records: Sequence[RunRecord], group_hash: str) -> dict[int, RunRecord]:
    return {int(r.identity["seed"]): r for r in records if r.identity["group_hash"] == group_hash}


def compare_rows(records: Sequence[RunRecord], a_hash: str, b_hash: str, metric: str = "top1",
                 n_boot: int = N_BOOT, confidence: float = 0.95) -> Comparison | None:
    """Row ``a_hash`` minus row ``b_hash`` (``None`` when they share no seed)."""
    a, b = _by_seed(records, a_hash), _by_seed(records, b_hash)
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        return None
    va = [float(a[s].metrics[metric]) for s in seeds]
    vb = [float(b[s].metrics[metric]) for s in seeds]
    over_seeds = paired_seed_interval(va, vb, confidence) if len(seeds) > 1 else Interval(
        float(va[0] - vb[0]), math.nan, math.nan, 1, confidence)
    over_images = test = None
    if metric == "top1":
        ca = [unpack_correct(a[s].extra.get("test_correct")) for s in seeds]
        cb = [unpack_correct(b[s].extra.get("test_correct")) for s in seeds]
        if all(c is not None for c in ca + cb) and len({len(c) for c in ca + cb}) == 1:
            over_images = paired_bootstrap_seeds(np.stack(ca), np.stack(cb), n_boot=n_boot, confidence=confidence)
            if len(seeds) == 1:
                test = mcnemar(ca[0], cb[0])
    return Comparison(seeds, float(np.mean(np.subtract(va, vb))), over_seeds, over_images, test)
