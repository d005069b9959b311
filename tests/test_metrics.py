"""harness.metrics: local evaluate modules equal hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness import metrics


def test_accuracy_percent():
    assert metrics.compute("accuracy", predictions=[0, 1, 2, 2], references=[0, 1, 1, 2]) == 75.0


def test_nll_matches_log_softmax():
    z = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = [0, 2]
    expect = -(2.0 - math.log(math.exp(2) + 1 + math.exp(-1)) + (0 - math.log(3))) / 2
    assert metrics.compute("nll", predictions=z, references=y) == pytest.approx(expect, rel=1e-12)
    big = np.array([[1000.0, 0.0]])
    assert metrics.compute("nll", predictions=big, references=[0]) == pytest.approx(0.0, abs=1e-12)


def test_ece_two_bins_by_hand():
    # confidences 0.9 (correct), 0.9 (wrong), 0.6 (correct): bins (0.8,0.9] and (0.53,0.6]
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])
    z = np.log(p)
    ece = metrics.compute("ece", predictions=z, references=[0, 1, 0], n_bins=15)
    expect = 100 * ((2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.6))
    assert ece == pytest.approx(expect, rel=1e-9)


def test_unknown_metric():
    with pytest.raises(KeyError, match="local modules"):
        metrics.load("bleu")
