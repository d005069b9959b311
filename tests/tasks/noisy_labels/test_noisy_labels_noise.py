"""Label noise: exact per-class fractions, true class excluded, asymmetric maps, seeding."""

import numpy as np
import pytest

from tasks.noisy_labels.noise import (ASYM_MAPS, SEED_STRIDE, asymmetric_noise, make_noisy_labels, noise_rng,
                                      replicate, round_half_up, symmetric_noise)


def labels_with_counts(counts, seed=0):
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(y)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_symmetric_exact_fraction_per_class_and_true_class_excluded(rate):
    counts = [99, 102, 98, 101, 101, 103, 101, 99, 97, 100]  # digits-like, uneven
    y = labels_with_counts(counts)
    noisy, mask = symmetric_noise(y, rate, 10, noise_rng(3, "digits"))
    for c, n_c in enumerate(counts):
        flipped = mask & (y == c)
        assert flipped.sum() == round_half_up(rate * n_c)
    assert np.all(noisy[mask] != y[mask])            # a flip never lands on the true class
    assert np.array_equal(noisy[~mask], y[~mask])    # the rest is untouched
    assert noisy.min() >= 0 and noisy.max() <= 9


def test_symmetric_targets_are_uniform_over_other_classes():
    y = labels_with_counts([2000] * 5)
    noisy, mask = symmetric_noise(y, 0.5, 5, noise_rng(0, "x"))
    for c in range(5):
        targets = noisy[mask & (y == c)]
        freq = np.bincount(targets, minlength=5) / len(targets)
        assert freq[c] == 0
        others = np.delete(freq, c)
        assert np.allclose(others, 0.25, atol=0.04), freq


def test_round_half_up_is_not_bankers_rounding():
    assert round_half_up(0.5 * 5) == 3 and round(2.5) == 2
    assert round_half_up(0.2 * 101) == 20


def test_asymmetric_map_exact():
    counts = [100, 100, 101, 99, 100, 103, 97, 100, 100, 100]
    y = labels_with_counts(counts)
    cmap = ASYM_MAPS["digits"]  # 7->1, 2->7, 5<->6, 3->8
    noisy, mask = asymmetric_noise(y, 0.4, cmap, noise_rng(1, "digits"))
    for c in range(10):
        sel = y == c
        if c in cmap:
            assert mask[sel].sum() == round_half_up(0.4 * counts[c])
            assert np.all(noisy[sel & mask] == cmap[c])
        else:
            assert not mask[sel].any()
    # the 5<->6 swap flips disjoint sets drawn from the original labels
    assert np.all(y[mask & (noisy == 6)] == 5) and np.all(y[mask & (noisy == 5)] == 6)
    assert np.array_equal(noisy[~mask], y[~mask])


def test_cifar_maps():
    assert ASYM_MAPS["cifar10"] == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    c100 = ASYM_MAPS["cifar100"]
    assert c100[0] == 1 and c100[4] == 0 and c100[99] == 95 and c100[37] == 38
    assert all(c100[c] // 5 == c // 5 and c100[c] != c for c in range(100))


def test_seeding():
    y = labels_with_counts([100] * 10)
    s = {"noise": "symmetric", "rate": 0.5}
    a, ma = make_noisy_labels(y, s, 10, replicate(0), "digits")
    b, mb = make_noisy_labels(y, s, 10, replicate(0), "digits")
    c, _ = make_noisy_labels(y, s, 10, replicate(1), "digits")
    d, _ = make_noisy_labels(y, s, 10, replicate(SEED_STRIDE), "digits")  # network B of pair 0
    e, _ = make_noisy_labels(y, s, 10, replicate(0), "mnist1d")
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)
    assert np.array_equal(a, d)        # seeds s and s+1000 share the noisy labels
    assert not np.array_equal(a, e)    # a different dataset gets its own stream


def test_clean_and_errors():
    y = labels_with_counts([10] * 10)
    for s in ({"noise": "none", "rate": 0.0}, {"noise": "symmetric", "rate": 0.0}):
        noisy, mask = make_noisy_labels(y, s, 10, 0, "digits")
        assert np.array_equal(noisy, y) and not mask.any()
    with pytest.raises(ValueError, match="unknown noise type"):
        make_noisy_labels(y, {"noise": "pairflip", "rate": 0.2}, 10, 0, "digits")
    with pytest.raises(ValueError, match="no asymmetric class map"):
        make_noisy_labels(y, {"noise": "asymmetric", "rate": 0.2}, 10, 0, "nope")
