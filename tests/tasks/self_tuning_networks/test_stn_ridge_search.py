"""Claim 1's ridge check (closed form, grid, STN fit) and the search baselines' proposals."""


import numpy as np
import pytest
import torch

from tasks.self_tuning_networks.models import hyperparameters
from tasks.self_tuning_networks.ridge import closed_form, grid_argmin, make_problem, run_ridge
from tasks.self_tuning_networks.search import grid_point, random_point, tpe_point


def test_ridge_closed_form_is_the_minimiser():
    x, y, xv, yv = make_problem(0)
    lam = 7.0
    w = closed_form(x, y, lam)
    # Gradient of (1/2n)(||Xw - y||² + λ||w||²) vanishes at w*(λ); sklearn's Ridge agrees.
    grad = (x.T @ (x @ w - y) + lam * w) / len(y)
    assert np.abs(grad).max() < 1e-10
    from sklearn.linear_model import Ridge

    assert np.allclose(Ridge(alpha=lam, fit_intercept=False).fit(x, y).coef_, w, atol=1e-8)
    lam_star, losses = grid_argmin(x, y, xv, yv)
    assert losses.shape == (2001,) and 1e-3 < lam_star < 1e5
    brute = min(np.logspace(-3, 5, 2001), key=lambda l: np.mean((xv @ closed_form(x, y, l) - yv) ** 2))
    assert lam_star == pytest.approx(brute)


def test_ridge_stn_tracks_the_best_response():
    torch.manual_seed(1)
    hp = dict(ridge_sigma=0.5, ridge_start_lambda=10.0, ridge_lr=0.01, ridge_hyper_lr=0.01, ridge_warmup=600,
              ridge_cycles=300)
    out = run_ridge(hp, 1)
    assert out["ridge_rel_error"] < 0.1  # affine gating fits w*(λ) around the current λ
    assert out["ridge_log10_lambda_gap"] < 0.5 and out["ridge_val_excess"] >= -1e-9


def test_search_points_are_deterministic_and_in_range():
    params = hyperparameters("mlp", {"cutout_max": 4}, {})
    names = [p.name for p in params]
    g = grid_point(params, {"dropout": 0.3, "cutout_frac": 0.5}, {"cutout_max": 4})
    assert g == {"dropout_in": 0.3, "dropout_h1": 0.3, "dropout_h2": 0.3, "cutout": 2.0}
    a, b = random_point(params, 0, 3), random_point(params, 0, 3)
    assert a == b and a != random_point(params, 0, 4) and a != random_point(params, 1, 3)
    for k in range(20):
        p = random_point(params, 0, k)
        assert all(0 <= p[n] <= 0.95 for n in names[:3]) and p["cutout"] in (0, 1, 2, 3, 4)
    hist = [(random_point(params, 0, k), 1.0 + 0.1 * k) for k in range(4)]
    t1, t2 = tpe_point(params, 0, 4, hist), tpe_point(params, 0, 4, hist)
    assert t1 == t2 and float(t1["cutout"]).is_integer() and all(0 <= t1[n] <= 0.95 for n in names[:3])
    assert tpe_point(params, 0, 4, hist[:3]) != t1 or tpe_point(params, 1, 4, hist) != t1
    starts = [tpe_point(params, 0, k, hist[:k]) for k in range(3)]  # start-up trials differ
    assert len({tuple(s.values()) for s in starts}) == 3


def test_benchmark_search_grid_points_for_the_language_model():
    from tasks.self_tuning_networks.lstm import lm_hyperparameters

    settings = {"tune": ["dropouto", "wdrop", "alpha", "beta"], "search_grid": {"dropout": [0.1, 0.5], "ar_tar": [0.0, 2.0]}}
    params = lm_hyperparameters(settings, {"start_dropout": 0.05, "start_ar_tar": 0.05})
    assert [p.name for p in params] == ["alpha", "beta", "dropouto", "wdrop"]  # the official order
    pts = [grid_point(params, {"point": k, "grid_wdrop": 0.2}, settings) for k in range(4)]
    assert pts[1] == {"alpha": 2.0, "beta": 2.0, "dropouto": 0.1, "wdrop": 0.2}  # axes in declaration order
    assert pts[2]["dropouto"] == 0.5 and pts[2]["alpha"] == 0.0
    assert grid_point(params, {"point": 0}, settings)["wdrop"] == 0.05  # not on an axis: its start value
    with pytest.raises(ValueError, match="has 4 points"):
        grid_point(params, {"point": 4}, settings)
    assert 0.0 <= random_point(params, 0, 0)["alpha"] <= 3.0
