"""Paired comparisons of two table rows from their records: over seeds, over test images, McNemar."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from lowres_clip.analysis.paired import compare_rows
from lowres_clip.runs import pack_correct, unpack_correct


def _record(group, seed, correct):
    return SimpleNamespace(identity={"group_hash": group, "seed": seed}, metrics={"top1": float(np.mean(correct))},
                           extra={"test_correct": pack_correct(correct)})


def test_pack_correct_round_trip():
    c = np.random.default_rng(0).random(8101) < 0.7
    packed = pack_correct(c)
    assert packed["n"] == 8101 and len(packed["bits"]) < 1500
    assert np.array_equal(unpack_correct(packed), c) and unpack_correct(None) is None


def test_one_shared_seed_is_judged_over_images_with_mcnemar():
    rng = np.random.default_rng(3)
    b = rng.random(4000) < 0.6
    a = b.copy()
    flip = rng.choice(4000, 300, replace=False)
    a[flip[:240]] = True  # A right where B may be wrong: mostly improvements
    a[flip[240:]] = False
    records = [_record("A", 1, a), _record("B", 1, b), _record("B", 2, b)]  # seed 2 of B has no partner
    cmp = compare_rows(records, "A", "B")
    assert cmp.seeds == (1,) and not cmp.over_seeds.defined and cmp.interval() is cmp.over_images
    diff = a.mean() - b.mean()
    se = np.std(a.astype(float) - b, ddof=1) / np.sqrt(4000)  # normal approximation, written here
    assert cmp.mean == pytest.approx(diff) and diff > 2 * se  # a difference away from 0
    assert cmp.over_images.low == pytest.approx(diff - 1.96 * se, abs=0.4 * se)
    assert cmp.over_images.high == pytest.approx(diff + 1.96 * se, abs=0.4 * se)
    n01, n10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    chi2 = (abs(n01 - n10) - 1) ** 2 / (n01 + n10)
    assert cmp.mcnemar.pvalue == pytest.approx(sps.chi2.sf(chi2, 1), rel=1e-6)
    assert cmp.cell() == f"{cmp.over_images.format()} (images, 1 seed)" and cmp.over_images.mean == pytest.approx(diff)


def test_several_seeds_are_judged_over_seeds():
    rng = np.random.default_rng(5)
    records, diffs = [], []
    for seed, shift in zip((1, 2, 3), (0.02, 0.05, 0.03)):
        b = rng.random(2000) < 0.5
        a = b | (rng.random(2000) < shift)
        records += [_record("A", seed, a), _record("B", seed, b)]
        diffs.append(a.mean() - b.mean())
    cmp = compare_rows(records, "A", "B")
    h = sps.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    assert cmp.interval() is cmp.over_seeds
    assert (cmp.over_seeds.low, cmp.over_seeds.high) == pytest.approx((np.mean(diffs) - h, np.mean(diffs) + h))
    assert cmp.over_images is not None and cmp.over_images.n == 2000 and cmp.mcnemar is None
    assert compare_rows(records, "A", "missing") is None
