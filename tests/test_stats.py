"""harness.stats: exact p-values, Holm, bootstrap CIs, ties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from scipy import stats as sps

from harness.stats import (bootstrap_mean_ci, holm, mean_ci, mean_ci_table, min_detectable_effect,
                           paired_bootstrap_ci, seed_tests, seeds_needed, sign_flip_pvalue, t_interval,
                           tied_with_best)


def brute_force_p(d, alternative):
    """All 2^n sign patterns, written the slow obvious way."""
    d = list(d)
    obs = sum(d) / len(d)
    hits = 0
    total = 0
    for signs in itertools.product([1, -1], repeat=len(d)):
        t = sum(s * x for s, x in zip(signs, d)) / len(d)
        total += 1
        if alternative == "greater":
            hits += t >= obs - 1e-12
        elif alternative == "less":
            hits += t <= obs + 1e-12
        else:
            hits += abs(t) >= abs(obs) - 1e-12
    return hits / total


# -- sign-flip ------------------------------------------------------------------------------

@pytest.mark.parametrize("d, alternative, expected", [
    ([1, 2, 3], "greater", 1 / 8),        # only the all-plus pattern reaches the observed mean
    ([1, 2, 3], "less", 1.0),
    ([1, 2, 3], "two-sided", 2 / 8),      # all-plus and all-minus
    ([1, -2, 3, 4], "greater", 3 / 16),   # sums 10, 8, 6 reach 6
    ([1, 1], "greater", 1 / 4),           # ties count as extreme
    ([-1, -2, -3], "less", 1 / 8),
    ([0, 0, 0], "two-sided", 1.0),
])
def test_sign_flip_exact_hand_computed(d, alternative, expected):
    assert sign_flip_pvalue(d, alternative) == pytest.approx(expected, abs=1e-15)


def test_sign_flip_exact_matches_brute_force_with_float_ties():
    rng = np.random.default_rng(3)
    for n in (5, 9, 12):
        d = np.round(rng.normal(0.3, 1, n), 1)  # rounded: many exact ties between patterns
        for alt in ("greater", "less", "two-sided"):
            assert sign_flip_pvalue(d, alt) == pytest.approx(brute_force_p(d, alt), abs=1e-12)


def test_sign_flip_drops_nonfinite_and_empty_is_nan():
    assert sign_flip_pvalue([1, 2, 3, math.nan], "greater") == pytest.approx(1 / 8)
    assert math.isnan(sign_flip_pvalue([], "greater"))
    with pytest.raises(ValueError):
        sign_flip_pvalue([1.0], "bigger")


def test_sign_flip_monte_carlo_correction_and_accuracy():
    # 20 positive differences: exact p is 2^-20, Monte Carlo can only say (b+1)/(m+1).
    d = np.arange(1, 21, dtype=float)
    p = sign_flip_pvalue(d, "greater", n_perm=999, seed=0)
    assert p == pytest.approx(1 / 1000)
    assert sign_flip_pvalue(d, "greater", n_perm=999, seed=0) == p  # deterministic
    # n = 17 (just above the exact limit): the estimate is close to the exact value.
    rng = np.random.default_rng(7)
    d = rng.normal(0.25, 1.0, 17)
    signs = 1.0 - 2.0 * ((np.arange(2**17)[:, None] >> np.arange(17)) & 1)
    exact = float(np.mean(signs @ d >= d.sum() - 1e-9))
    mc = sign_flip_pvalue(d, "greater", n_perm=20000, seed=1)
    assert abs(mc - exact) < 0.015
    assert 0 < exact < 1


def test_sign_flip_clusters_flip_together():
    # clusters {0: [1, 1], 1: [2, 2]} -> units [2, 4]: sums 6, 2, -2, -6 -> p = 1/4
    assert sign_flip_pvalue([1, 1, 2, 2], "greater", clusters=[0, 0, 1, 1]) == pytest.approx(1 / 4)
    assert sign_flip_pvalue([1, 1, 2, 2], "greater") == pytest.approx(1 / 16)


# -- Holm ---------------------------------------------------------------------------------------

def test_holm_known_vector():
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> running max .06
    out = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(out, [0.03, 0.06, 0.06, 0.02])


def test_holm_nan_passes_through_and_is_not_counted():
    out = holm([0.01, math.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)
    assert math.isnan(out[1])
    assert all(math.isnan(x) for x in holm([math.nan, math.nan]))
    assert len(holm([])) == 0


def test_holm_capped_and_monotone():
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, 30)
    adj = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p) and np.all(adj <= 1)


def test_holm_hand_computed_and_vectorised_with_nan():
    # sorted 0.01, 0.03, 0.04 among m = 3 tested: 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    np.testing.assert_allclose(holm([0.01, 0.04, math.nan, 0.03]), [0.03, 0.06, math.nan, 0.06])
    rows = np.array([[0.01, 0.04, math.nan, 0.03], [0.5, math.nan, math.nan, 0.001]])
    np.testing.assert_allclose(holm(rows), np.stack([holm(r) for r in rows]))
    assert np.isnan(holm([math.nan, math.nan])).all()


# -- seed-level Student-t ---------------------------------------------------------------------

def test_seed_tests_against_scipy():
    x = np.array([0.3, 0.1, 0.5, 0.2, 0.4])
    r = seed_tests(x, min_effect=0.1, direction="greater")
    ref_rep = sps.ttest_1samp(x, 0.1, alternative="greater").pvalue
    ref_ref = sps.ttest_1samp(x, 0.0, alternative="less").pvalue
    assert float(r["p_reproduce"]) == pytest.approx(ref_rep) and float(r["p_refute"]) == pytest.approx(ref_ref)
    ci = sps.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx((ci.low, ci.high))
    less = seed_tests(-x, min_effect=0.1, direction="less")   # mirrored
    assert float(less["p_reproduce"]) == pytest.approx(ref_rep) and float(less["effect"]) == pytest.approx(-0.3)
    assert float(less["ci_low"]) == pytest.approx(-ci.high)


def test_seed_tests_missing_seeds_and_zero_spread():
    r = seed_tests([[1.0, math.nan, 3.0, math.inf], [2.0, 2.0, 2.0, 2.0], [5.0, math.nan, math.nan, math.nan]],
                   min_effect=[0.0, 2.0, 0.0])
    assert r["n"].tolist() == [2, 4, 1]
    assert r["effect"].tolist() == [2.0, 2.0, 5.0]
    # no spread: the mean sits exactly on the reproduce null (nothing rejected) and far above 0
    assert r["p_reproduce"][1] == 1.0 and r["p_refute"][1] == 1.0
    assert float(seed_tests([2.0, 2.0, 2.0], min_effect=1.0)["p_reproduce"]) == 0.0
    assert math.isnan(r["p_reproduce"][2]) and math.isnan(r["ci_low"][2])
    assert t_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in t_interval([1.0]))


def test_min_detectable_effect_and_seeds_needed():
    # n = 8, alpha = 0.05, 80% power: (t_{.95,7} + t_{.8,7}) / sqrt(8) = (1.8946 + 0.8960) / 2.8284
    assert min_detectable_effect(1.0, 8) == pytest.approx((1.894579 + 0.896029) / math.sqrt(8), rel=1e-5)
    assert min_detectable_effect(2.0, 8) == pytest.approx(2 * min_detectable_effect(1.0, 8))
    assert math.isnan(min_detectable_effect(1.0, 1)) and min_detectable_effect(0.0, 5) == 0.0
    n = seeds_needed(0.5, 1.0)
    assert min_detectable_effect(1.0, int(n)) <= 0.5 < min_detectable_effect(1.0, int(n) - 1)
    assert seeds_needed(-0.1, 1.0) == math.inf and seeds_needed(0.3, 0.0) == 3
    assert seeds_needed(1e-6, 1.0) == math.inf   # beyond 10,000 seeds


# -- bootstrap ------------------------------------------------------------------------------

def test_bootstrap_deterministic_and_contains_mean():
    x = np.random.default_rng(1).normal(5.0, 2.0, 40)
    lo, hi = bootstrap_mean_ci(x, n_boot=4000, seed=0)
    assert (lo, hi) == bootstrap_mean_ci(x, n_boot=4000, seed=0)
    assert (lo, hi) != bootstrap_mean_ci(x, n_boot=4000, seed=1)
    assert lo < x.mean() < hi
    # close to the normal-theory interval mean +- 1.96 s / sqrt(n)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)


def test_bootstrap_degenerate_inputs():
    assert all(math.isnan(v) for v in bootstrap_mean_ci([1.0]))
    assert all(math.isnan(v) for v in bootstrap_mean_ci([1.0, math.nan]))
    assert bootstrap_mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_mean_ci([1.0, 2.0], level=95)


def test_clustered_bootstrap_is_wider_when_seeds_are_correlated():
    # 4 seeds x 10 benchmarks; a seed shifts all its benchmarks together.
    rng = np.random.default_rng(0)
    seed_effect = np.array([0.0, 1.0, 2.0, 3.0])
    diffs = np.concatenate([s + rng.normal(0, 0.01, 10) for s in seed_effect])
    clusters = np.repeat(np.arange(4), 10)
    lo_i, hi_i = paired_bootstrap_ci(diffs, n_boot=4000)
    lo_c, hi_c = paired_bootstrap_ci(diffs, clusters=clusters, n_boot=4000)
    assert (hi_c - lo_c) > 2 * (hi_i - lo_i)
    assert lo_c < diffs.mean() < hi_c
    assert all(math.isnan(v) for v in paired_bootstrap_ci(diffs, clusters=[0] * 40))
    with pytest.raises(ValueError):
        paired_bootstrap_ci(diffs, clusters=[0, 1])


def test_clustered_bootstrap_with_singleton_clusters_equals_plain():
    x = np.random.default_rng(2).normal(0, 1, 12)
    assert paired_bootstrap_ci(x, clusters=range(12), n_boot=3000, seed=4) == pytest.approx(
        paired_bootstrap_ci(x, n_boot=3000, seed=4), abs=1e-12)


# -- report helpers -------------------------------------------------------------------------

def test_mean_ci_and_table():
    s = mean_ci([1.0, 2.0, 3.0, math.inf])
    assert s["mean"] == 2.0 and s["n"] == 3 and s["n_nonfinite"] == 1
    assert s["std"] == pytest.approx(1.0)
    # the seed-level t interval: 2 -+ t_{0.975, 2} * 1 / sqrt(3) = 2 -+ 2.4841
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((2 - 2.4841377, 2 + 2.4841377))
    frame = pd.DataFrame({"benchmark": ["b"] * 4, "variant": ["x", "x", "y", "y"], "name": ["acc"] * 4,
                          "value": [1.0, 3.0, 5.0, math.nan]})
    t = mean_ci_table(frame)
    assert list(t["variant"]) == ["x", "y"]
    assert list(t["mean"]) == [2.0, 5.0] and list(t["n"]) == [2, 1]
    assert math.isnan(t.loc[1, "std"]) and t.loc[1, "n_nonfinite"] == 1
    empty = mean_ci_table(frame.iloc[0:0])
    assert len(empty) == 0 and list(empty.columns)[-6:] == ["mean", "ci_low", "ci_high", "n", "std", "n_nonfinite"]


def test_tied_with_best_paired_rule():
    seeds = range(8)
    best = {s: 10.0 + s for s in seeds}
    values = {
        "best": best,
        "clearly_worse": {s: v - 5 for s, v in best.items()},            # d = 5 on every seed: CI [5, 5]
        "noise": {s: v + (0.1 if s % 2 else -0.1) for s, v in best.items()},
        "few_seeds": {s: best[s] - 5 for s in (0, 1, 2)},                # 3 seeds, d = 5 each: not tied
        "mixed": {s: best[s] + (3.0 if s == 0 else -1.0) for s in (0, 1, 2)},  # d = -3, 1, 1: CI spans 0
        "diverged": {s: math.nan for s in seeds},
    }
    assert tied_with_best(values, higher_is_better=True) == {"best", "noise", "mixed"}
    # lower is better: 'clearly_worse' is now the best, and everything else differs by 5 on 8 seeds
    lower = tied_with_best({k: values[k] for k in ("best", "clearly_worse")}, higher_is_better=False)
    assert lower == {"clearly_worse"}


def test_tied_with_best_unpaired_falls_back_to_ci_overlap():
    values = {
        "best": {0: 10.0, 1: 10.2, 2: 9.8},
        "far": {10: 1.0, 11: 1.1},       # no shared seeds, CIs far apart
        "near": {20: 9.9, 21: 10.1},     # overlapping CI
        "single": {30: 0.0},             # CI undefined: nothing says it differs
    }
    assert tied_with_best(values, higher_is_better=True) == {"best", "near", "single"}
    assert tied_with_best({}, True) == set()
