"""The locally-optimal neighbour search, the scaling-law fits and the data-efficiency inversion."""

import math

import numpy as np
import pytest

from tasks.infinite_compute import search
from tasks.infinite_compute.fits import data_efficiency, fit_power_law, power_law

GRIDS = {"epochs": [4, 8, 16, 32, 64], "lr": [0.001, 0.003, 0.01], "wd": [0.1, 0.4, 1.6, 6.4]}


def bowl(p, centre=(2, 1, 3)):
    """A loss with a unique minimum at grid indices ``centre``."""
    idx = [GRIDS[a].index(p[a]) for a in ("epochs", "lr", "wd")]
    return 2.0 + sum((i - c) ** 2 * w for i, c, w in zip(idx, centre, (0.1, 0.2, 0.05)))


def run_chain(loss, start, grids, budget=40):
    evaluated = []
    for _ in range(budget):
        p = search.next_probe(evaluated, start, grids)
        if p is None:
            break
        evaluated.append((p, loss(p)))
    return evaluated


def test_neighbours_stay_on_the_grid():
    nb = search.neighbours({"epochs": 4, "lr": 0.003, "wd": 6.4}, GRIDS)
    assert {"epochs": 8, "lr": 0.003, "wd": 6.4} in nb and {"epochs": 4, "lr": 0.003, "wd": 1.6} in nb
    assert len(nb) == 4  # no epochs 2, no wd 25.6
    assert len(search.neighbours({"epochs": 16, "lr": 0.003}, {k: GRIDS[k] for k in ("epochs", "lr")})) == 4


def test_search_reaches_and_certifies_the_optimum():
    start = {"epochs": 16, "lr": 0.003, "wd": 0.4}
    evaluated = run_chain(bowl, start, GRIDS)
    assert evaluated[0][0] == start
    cert = search.certificate(evaluated, GRIDS)
    assert cert["certified"] and cert["point"] == {"epochs": 16, "lr": 0.003, "wd": 6.4}
    assert search.next_probe(evaluated, start, GRIDS) is None
    assert len({search.key(p) for p, _ in evaluated}) == len(evaluated)  # never trains a point twice
    assert len(evaluated) < 5 * 3 * 4  # far fewer than the full grid


def test_a_truncated_chain_is_not_certified():
    start = {"epochs": 4, "lr": 0.001, "wd": 0.1}
    evaluated = run_chain(bowl, start, GRIDS, budget=3)
    assert not search.certificate(evaluated, GRIDS)["certified"]


def test_u_shape_neighbours():
    evaluated = run_chain(bowl, {"epochs": 16, "lr": 0.003, "wd": 0.4}, GRIDS)
    best = search.certificate(evaluated, GRIDS)["point"]
    lo, hi = search.axis_neighbour_losses(evaluated, best, GRIDS, "epochs")
    assert lo > bowl(best) and hi > bowl(best)


def test_fit_recovers_known_parameters():
    x = np.array([0.03, 0.07, 0.12, 0.28, 0.6])
    y = power_law(x, 0.05, 1.02, 3.43)
    fit = fit_power_law(x, y)
    assert fit["ok"] and fit["E"] == pytest.approx(3.43, abs=1e-4)
    assert fit["A"] == pytest.approx(0.05, rel=1e-3) and fit["alpha"] == pytest.approx(1.02, rel=1e-3)
    k = np.arange(1, 6)
    fk = fit_power_law(k, power_law(k, 0.3, 1.0, 2.1))
    assert fk["E"] == pytest.approx(2.1, abs=1e-5)
    assert not fit_power_law([1, 2], [3, 2])["ok"] and math.isnan(fit_power_law([1, 2], [3, 2])["E"])


def test_data_efficiency_inverts_the_baseline_law():
    law = {"A": 50.0, "alpha": 0.25, "E": 1.9}
    D = 2e8
    assert data_efficiency(power_law(D, **{"A": 50.0, "alpha": 0.25, "E": 1.9}), law, D) == pytest.approx(1.0)
    assert data_efficiency(power_law(5 * D, 50.0, 0.25, 1.9), law, D) == pytest.approx(5.0)
    assert data_efficiency(1.8, law, D) == math.inf
