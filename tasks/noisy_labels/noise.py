"""Synthetic label noise, following the paper's repository (data/preprocess_*_noise_cifar.py).

Rules (card §4):

* **symmetric r**: in every class c, exactly ``round_half_up(r * n_c)`` training examples are
  relabelled, each uniformly to one of the *other* C-1 classes (the true class is excluded);
* **asymmetric r**: in every class c that the class map moves, exactly ``round_half_up(r * n_c)``
  examples are relabelled to ``map[c]``; other classes keep their labels. The examples to flip
  are drawn from the *original* labels, so a swap (5<->6) flips disjoint sets.
* ``none`` / rate 0: the labels are returned unchanged.

Only the training split is ever noised; validation and test stay clean.

Randomness: one ``numpy.random.Generator`` (PCG64) seeded with
``[noise_seed, NOISE_STREAM, dataset-hash]``, so a (seed, dataset, setting) always gives the
same noisy labels and different seeds give different ones. The task passes
``noise_seed = run_seed % SEED_STRIDE`` (see ``replicate``): seeds s and s + 1000 (the
stage-one networks A and B of one co-teaching pair) train on the *same* noisy labels, as in
the paper (one noisy dataset, two networks with different random seeds).
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np

#: Seeds s and s + SEED_STRIDE share the noisy labels (they are one replicate).
SEED_STRIDE = 1000
#: Separates the noise stream from any other use of the same seed.
NOISE_STREAM = 0x6E6F697365  # "noise"

#: Asymmetric class maps. digits: card §9; CIFAR-10: truck->automobile, bird->airplane,
#: deer->horse, cat<->dog (HF/torchvision ids: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer,
#: 5 dog, 6 frog, 7 horse, 8 ship, 9 truck); CIFAR-100: next class within blocks of 5 ids.
ASYM_MAPS: dict[str, dict[int, int]] = {
    "digits": {7: 1, 2: 7, 5: 6, 6: 5, 3: 8},
    "mnist1d": {7: 1, 2: 7, 5: 6, 6: 5, 3: 8},
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
    "cifar100": {c: (c // 5) * 5 + (c + 1) % 5 for c in range(100)},
}


def replicate(seed: int) -> int:
    """The replicate index of a run seed: the seed that fixes its noisy labels."""
    return int(seed) % SEED_STRIDE


def round_half_up(x: float) -> int:
    """Python's round() rounds half to even; the number of flips rounds half up."""
    return int(np.floor(x + 0.5))


def noise_rng(seed: int, dataset: str) -> np.random.Generator:
    tag = int.from_bytes(hashlib.sha256(dataset.encode()).digest()[:4], "little")
    return np.random.Generator(np.random.PCG64([int(seed), NOISE_STREAM, tag]))


def _flip_setup(labels, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both noise models' start: int64 labels, a copy to flip, an all-False flip mask."""
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    return labels, labels.copy(), np.zeros(len(labels), dtype=bool)


def symmetric_noise(labels: np.ndarray, rate: float, num_classes: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly round(rate * n_c) labels of each class c to a uniformly chosen other class."""
    labels, noisy, mask = _flip_setup(labels, rate)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        n_flip = round_half_up(rate * len(idx))
        if n_flip == 0:
            continue
        chosen = rng.permutation(idx)[:n_flip]
        offset = rng.integers(1, num_classes, size=n_flip)  # 1..C-1: never the true class
        noisy[chosen] = (c + offset) % num_classes
        mask[chosen] = True
    return noisy, mask


def asymmetric_noise(labels: np.ndarray, rate: float, class_map: Mapping[int, int],
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly round(rate * n_c) labels of each mapped class c to class_map[c]."""
    labels, noisy, mask = _flip_setup(labels, rate)
    for c in sorted(class_map):
        target = class_map[c]
        if target == c:
            continue
        idx = np.flatnonzero(labels == c)  # original labels: a swap flips disjoint sets
        n_flip = round_half_up(rate * len(idx))
        chosen = rng.permutation(idx)[:n_flip]
        noisy[chosen] = target
        mask[chosen] = True
    return noisy, mask


def make_noisy_labels(labels: np.ndarray, settings: Mapping, num_classes: int, seed: int,
                      dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Noisy training labels and the corruption mask for a benchmark's settings.

    ``settings``: ``{noise: symmetric|asymmetric|none, rate: float}``. ``seed`` is the
    replicate seed (``replicate(run_seed)``).
    """
    kind = str(settings.get("noise", "none")).lower()
    rate = float(settings.get("rate", 0.0))
    labels = np.asarray(labels, dtype=np.int64)
    if kind in ("none", "clean") or rate == 0.0:
        return labels.copy(), np.zeros(len(labels), dtype=bool)
    rng = noise_rng(seed, dataset)
    if kind in ("symmetric", "sym"):
        return symmetric_noise(labels, rate, num_classes, rng)
    if kind in ("asymmetric", "asym"):
        if dataset not in ASYM_MAPS:
            raise ValueError(f"no asymmetric class map for dataset {dataset!r} (known: {sorted(ASYM_MAPS)})")
        return asymmetric_noise(labels, rate, ASYM_MAPS[dataset], rng)
    raise ValueError(f"unknown noise type {kind!r}: use symmetric, asymmetric or none")
