"""Scaling-law fits (card §3.2): L(x) = A / x^alpha + E with scipy, and the data-efficiency multiplier that inverts the baseline's data law.

``fit_power_law`` is the paper's ``PowerScalingLaw`` (A, alpha > 0; least squares with
``curve_fit``). The N axis is in millions of parameters and the K axis in members; the
asymptote E does not depend on the unit. With as many points as parameters (3 sizes) the
fit interpolates (no residual degree of freedom): claims resting on such a fit are
undecidable by design at that scale (analysis.py).
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np


def power_law(x, A, alpha, E):
    return A / np.power(x, alpha) + E


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> dict:
    """{A, alpha, E, rmse, ok}: least-squares fit of A / x^alpha + E with A, alpha > 0.

    Starts from a grid of exponents (E from the linear solve at each fixed alpha) so the
    result does not depend on one starting guess; a failed fit returns NaNs and ok=False.
    """
    from scipy.optimize import curve_fit

    x, y = np.asarray(x, float), np.asarray(y, float)
    nan = {"A": math.nan, "alpha": math.nan, "E": math.nan, "rmse": math.nan, "ok": False}
    if len(x) < 3 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.any(x <= 0):
        return nan
    best = None
    for alpha0 in (0.1, 0.3, 0.5, 1.0, 2.0, 4.0):
        # For fixed alpha the model is linear in (A, E): a cheap, good starting point.
        X = np.stack([np.power(x, -alpha0), np.ones_like(x)], axis=1)
        (A0, E0), *_ = np.linalg.lstsq(X, y, rcond=None)
        A0 = max(float(A0), 1e-8)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, _ = curve_fit(power_law, x, y, p0=(A0, alpha0, float(E0)),
                                 bounds=([0.0, 0.0, -np.inf], [np.inf, 20.0, np.inf]), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        rmse = float(np.sqrt(np.mean((power_law(x, *p) - y) ** 2)))
        if best is None or rmse < best["rmse"] - 1e-12:
            best = {"A": float(p[0]), "alpha": float(p[1]), "E": float(p[2]), "rmse": rmse, "ok": True}
    return best or nan


def data_efficiency(loss: float, baseline_law: Mapping[str, float], D: float) -> float:
    """D_eff / D: the data the baseline recipe would need to reach ``loss`` (released ``back_out_data``).

    D_eff = (A_b / (loss - E_b))^(1/alpha_b); infinite when ``loss`` <= E_b (the baseline never gets there).
    """
    A, alpha, E = baseline_law["A"], baseline_law["alpha"], baseline_law["E"]
    if loss <= E:
        return math.inf
    return (A / (loss - E)) ** (1.0 / alpha) / D
