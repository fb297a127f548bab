"""Statistics of differences against references computed independently: scipy's paired t-test and
hand arithmetic for the seed interval, the binomial / chi-square formulas on literal tables for
McNemar, a normal-approximation interval for the bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from lowres_clip.analysis import stats

# per-seed accuracies whose differences are 0.01, 0.02, 0.04 (1, 2, 4 points)
A_SEEDS = [0.80, 0.82, 0.85]
B_SEEDS = [0.79, 0.80, 0.81]


def test_seed_interval_equals_hand_computation():
    iv = stats.paired_seed_interval(A_SEEDS, B_SEEDS)
    # by hand: mean 7/3 points, sd sqrt(7/3) = 1.5275 points, t_{0.975,2} = 4.3027, half-width 3.7945
    assert iv.mean == pytest.approx(0.0233333, abs=1e-6)
    assert iv.half_width == pytest.approx(0.037945, abs=2e-6)
    assert iv.low == pytest.approx(0.0233333 - 0.037945, abs=2e-6)
    assert iv.high == pytest.approx(0.0233333 + 0.037945, abs=2e-6)
    assert (iv.n, iv.confidence, iv.method) == (3, 0.95, "t")
    assert iv.format() == "+2.33 [-1.46, +6.13]"
    assert not iv.excludes_zero and iv.sign == 0


def test_seed_interval_equals_scipy_ttest_rel():
    a = np.array([0.71, 0.74, 0.73, 0.76, 0.72])
    b = np.array([0.66, 0.70, 0.69, 0.69, 0.67])
    for conf in (0.9, 0.95, 0.99):
        ref = sps.ttest_rel(a, b).confidence_interval(confidence_level=conf)
        iv = stats.paired_seed_interval(a, b, confidence=conf)
        assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
        assert iv.mean == pytest.approx(np.mean(a - b))
    assert iv.excludes_zero and iv.sign == 1 and stats.verdict(iv) == "better"
    worse = stats.paired_seed_interval(b, a)
    assert worse.sign == -1 and stats.verdict(worse) == "worse"


def test_seed_interval_is_paired_not_pooled():
    # large spread between seeds, constant difference: paired interval has zero width
    a = np.array([0.50, 0.70, 0.90])
    iv = stats.paired_seed_interval(a + 0.03, a)
    assert iv.mean == pytest.approx(0.03) and iv.half_width == pytest.approx(0.0, abs=1e-12)
    assert iv.excludes_zero


def test_one_seed_has_no_interval():
    iv = stats.paired_seed_interval([0.9], [0.8])
    assert iv.mean == pytest.approx(0.1) and iv.n == 1
    assert not iv.defined and math.isnan(iv.low) and math.isnan(iv.high)
    assert not iv.excludes_zero and stats.verdict(iv) == "no difference shown"
    assert iv.format() == "+10.00 [no interval, n=1]"
    assert stats.reaches(iv, 0.01) == "not shown"


def test_seed_interval_rejects_unpaired_inputs():
    with pytest.raises(stats.StatsInputError, match="paired"):
        stats.paired_seed_interval([0.1, 0.2], [0.1])
    with pytest.raises(stats.StatsInputError, match="confidence"):
        stats.paired_seed_interval([0.1, 0.2], [0.1, 0.3], confidence=95)


def _correlated_runs(n=8100, acc_b=0.70, gain=0.03, seed=1):
    """Run B, and run A that fixes some of B's errors and breaks a few of its right answers."""
    rng = np.random.default_rng(seed)
    b = rng.random(n) < acc_b
    a = b.copy()
    wrong, right = np.flatnonzero(~b), np.flatnonzero(b)
    a[rng.choice(wrong, int(0.2 * len(wrong)), replace=False)] = True
    a[rng.choice(right, int(0.2 * len(wrong) - gain * n), replace=False)] = False
    return a, b


def test_bootstrap_matches_normal_approximation():
    a, b = _correlated_runs()
    d = a.astype(float) - b.astype(float)
    se = d.std() / math.sqrt(d.size)
    z = sps.norm.ppf(0.975)
    iv = stats.paired_bootstrap(a, b, n_boot=10_000, seed=3)
    assert iv.mean == pytest.approx(a.mean() - b.mean()) and iv.mean == pytest.approx(0.03, abs=1e-3)
    assert iv.low == pytest.approx(iv.mean - z * se, abs=0.1 * se)
    assert iv.high == pytest.approx(iv.mean + z * se, abs=0.1 * se)
    assert (iv.n, iv.method) == (8100, "bootstrap") and stats.verdict(iv) == "better"
    # pairing matters: the unpaired standard error is several times larger here
    unpaired_se = math.sqrt(a.var() / a.size + b.var() / b.size)
    assert iv.half_width < 0.5 * z * unpaired_se


def test_bootstrap_is_seeded():
    a, b = _correlated_runs(n=500)
    x = stats.paired_bootstrap(a, b, n_boot=1000, seed=7)
    assert stats.paired_bootstrap(a, b, n_boot=1000, seed=7) == x
    assert stats.paired_bootstrap(a, b, n_boot=1000, seed=8) != x
    d = a.astype(float) - b
    reps = stats.bootstrap_differences(d, n_boot=600, seed=7)
    # replicates resample the images: their spread is the standard error of the mean difference
    assert reps.std() == pytest.approx(d.std() / math.sqrt(d.size), rel=0.15)
    assert reps.mean() == pytest.approx(d.mean(), abs=0.3 * d.std() / math.sqrt(d.size))
    # the first blocks do not depend on how many replicates follow
    assert np.array_equal(stats.bootstrap_differences(d, n_boot=1000, seed=7)[:600], reps)


def test_identical_runs_give_zero_width_interval_at_zero():
    a, _ = _correlated_runs(n=300)
    iv = stats.paired_bootstrap(a, a, n_boot=500)
    assert (iv.mean, iv.low, iv.high) == (0.0, 0.0, 0.0)
    assert stats.verdict(iv) == "no difference shown"


def test_bootstrap_rejects_non_correctness():
    with pytest.raises(stats.StatsInputError, match="correctness"):
        stats.paired_bootstrap([0.5, 1.0], [1, 0])
    with pytest.raises(stats.StatsInputError, match="paired"):
        stats.paired_bootstrap([1, 0, 1], [1, 0])


def test_seed_joint_bootstrap_matches_normal_approximation_of_seed_mean():
    seeds = [_correlated_runs(n=4000, gain=g, seed=s) for s, g in enumerate((0.02, 0.04, 0.05))]
    a = np.stack([x for x, _ in seeds])
    b = np.stack([y for _, y in seeds])
    dbar = (a.astype(float) - b).mean(axis=0)
    se = dbar.std() / math.sqrt(dbar.size)
    z = sps.norm.ppf(0.975)
    iv = stats.paired_bootstrap_seeds(a, b, n_boot=10_000, seed=0)
    per_seed = a.mean(axis=1) - b.mean(axis=1)
    assert iv.mean == pytest.approx(per_seed.mean()) and iv.mean == pytest.approx(0.03667, abs=1e-3)
    assert iv.low == pytest.approx(iv.mean - z * se, abs=0.1 * se)
    assert iv.high == pytest.approx(iv.mean + z * se, abs=0.1 * se)
    # one seed: the single-run paired bootstrap
    assert stats.paired_bootstrap_seeds(a[:1], b[:1], n_boot=800, seed=4) == \
        stats.paired_bootstrap(a[0], b[0], n_boot=800, seed=4)
    with pytest.raises(stats.StatsInputError, match="seeds, images"):
        stats.paired_bootstrap_seeds(a[0], b[0])


def _runs_with_table(b: int, c: int, both: int = 30, neither: int = 7):
    """Correctness vectors with b (A right, B wrong) and c (A wrong, B right) discordant images."""
    a = np.array([1] * b + [0] * c + [1] * both + [0] * neither)
    bb = np.array([0] * b + [1] * c + [1] * both + [0] * neither)
    perm = np.random.default_rng(0).permutation(len(a))
    return a[perm], bb[perm]


def test_mcnemar_exact_on_literal_table():
    a, b = _runs_with_table(10, 2)
    r = stats.mcnemar(a, b)
    # 2 * P[Bin(12, 1/2) <= 2] = 2 * (1 + 12 + 66) / 4096
    assert (r.b, r.c, r.exact) == (10, 2, True)
    assert r.pvalue == pytest.approx(158 / 4096, rel=1e-12) and r.pvalue == pytest.approx(0.03857, abs=1e-5)
    assert r.pvalue == pytest.approx(sps.binomtest(10, 12, 0.5).pvalue, rel=1e-12)
    assert r.statistic == 2
    swapped = stats.mcnemar(b, a)
    assert (swapped.b, swapped.c) == (2, 10) and swapped.pvalue == pytest.approx(r.pvalue)


def test_mcnemar_chi_square_on_literal_table():
    a, b = _runs_with_table(40, 20)
    r = stats.mcnemar(a, b)  # b + c = 60 >= 25: chi-square with continuity correction
    stat = (40 - 20 - 1) ** 2 / 60
    assert not r.exact and r.statistic == pytest.approx(stat)
    # chi-square with 1 df: P[X > s] = erfc(sqrt(s / 2))
    assert r.pvalue == pytest.approx(math.erfc(math.sqrt(stat / 2)), rel=1e-10)
    assert r.pvalue == pytest.approx(0.01417, abs=1e-4)
    forced = stats.mcnemar(a, b, exact=True)
    assert forced.exact and forced.pvalue == pytest.approx(sps.binomtest(40, 60, 0.5).pvalue, rel=1e-12)
    small = stats.mcnemar(*_runs_with_table(10, 2), exact=False)
    assert not small.exact and small.pvalue == pytest.approx(math.erfc(math.sqrt((8 - 1) ** 2 / 12 / 2)))


def test_mcnemar_without_discordant_images():
    a, b = _runs_with_table(0, 0)
    r = stats.mcnemar(a, b)
    assert (r.b, r.c, r.pvalue) == (0, 0, 1.0)


def test_reaches_uses_lower_end_against_margin():
    iv = stats.Interval(mean=-0.004, low=-0.009, high=0.001, n=3, confidence=0.95)
    assert stats.reaches(iv, 0.01) == "reaches"
    assert stats.reaches(iv, 0.005) == "not shown"
    assert stats.reaches(stats.Interval(-0.05, -0.07, -0.03, 3, 0.95), 0.01) == "falls short"
    assert stats.verdict(iv) == "no difference shown"
    with pytest.raises(stats.StatsInputError, match="margin"):
        stats.reaches(iv, -0.01)


def test_new_analysis_modules_import_without_torch():
    """stats, gap and longtail load on their own (no package __init__) without importing torch."""
    import subprocess
    import sys
    from pathlib import Path

    folder = Path(stats.__file__).parent
    code = (
        "import importlib.util, sys\n"
        f"for name in ('stats', 'gap', 'longtail'):\n"
        f"    spec = importlib.util.spec_from_file_location('m_' + name, r'{folder}' + '/' + name + '.py')\n"
        "    module = sys.modules['m_' + name] = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        "print('torch' in sys.modules, 'open_clip' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
