"""Black-box search baselines: the points their trials train with.

* grid: a shared dropout rate for every dropout layer x cutout size (card §8 (a)); the grid is
  declared in task.yaml, so each point is an independent variant.
* random: trial k of seed s draws its point from ``numpy.random.default_rng([s, k, RANDOM_STREAM])``
  over the tuned space (each dropout rate in [0, 0.95], cutout in {0..max}).
* tpe: Optuna's TPE. Trial k requires trials 0..k-1 (a chain in the DAG); it replays their
  (point, validation NLL) into a fresh in-memory study and asks for the next point with a sampler
  seeded by (s, k), so the proposal is a deterministic function of the recorded history.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import numpy as np

from .models import DROPOUT_MAX
from .stn import HParam

RANDOM_STREAM = 7919
TPE_STARTUP = 3  # random proposals before TPE models the history (Optuna's default 10 > our 9 trials)


def grid_point(params: Sequence[HParam], hp: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, float]:
    """A grid trial's point. Its axes come from the trial's own hyperparameters (``dropout``,
    ``cutout_frac``: the small-scale grids) or, when the trial has a ``point`` index, from the
    benchmark's ``search_grid`` (axes expanded in declaration order: one scale can hold benchmarks
    with different grids of the same size). Axis names: a tuned hyperparameter's own name;
    ``dropout`` = one shared rate for every ``dropout*`` hyperparameter; ``cutout_frac`` = cutout
    side as a fraction of the benchmark's ``cutout_max`` (so one grid serves 8x8 and 28x28
    images); ``ar_tar`` = α and β together. Tuned hyperparameters on no axis keep ``grid_<name>``
    or their start value."""
    if "point" in hp:
        grid = settings.get("search_grid")
        if not grid:
            raise ValueError("grid_trial[point=k] needs the benchmark's 'search_grid' (axis -> values) in task.yaml")
        points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
        k = int(hp["point"])
        if not 0 <= k < len(points):
            raise ValueError(f"grid_trial[point={k}]: the benchmark's search_grid has {len(points)} points (0..{len(points) - 1})")
        axes = points[k]
    else:
        axes = {k: hp[k] for k in ("dropout", "cutout_frac") if k in hp}
    point = {}
    for p in params:
        n = p.name
        if n in axes:
            point[n] = float(axes[n])
        elif n.startswith("dropout") and "dropout" in axes:
            point[n] = float(axes["dropout"])
        elif n == "cutout" and "cutout_frac" in axes:
            point[n] = float(round(float(axes["cutout_frac"]) * int(settings["cutout_max"])))
        elif n in ("alpha", "beta") and "ar_tar" in axes:
            point[n] = float(axes["ar_tar"])
        else:
            point[n] = float(hp.get(f"grid_{n}", p.start))
    return point


def _bounds(p) -> tuple[float, float]:
    return (p.low, min(p.high, DROPOUT_MAX)) if p.kind == "rate" else (p.low, p.high)


def random_point(params: Sequence[HParam], seed: int, trial: int) -> dict[str, float]:
    """Uniform over each tuned range (rates capped at 0.95; integers uniform over their values)."""
    rng = np.random.default_rng([seed, trial, RANDOM_STREAM])
    out = {}
    for p in params:
        lo, hi = _bounds(p)
        out[p.name] = float(rng.integers(int(lo), int(hi) + 1)) if p.kind == "int" else float(rng.uniform(lo, hi))
    return out


def tpe_point(params: Sequence[HParam], seed: int, trial: int,
              history: Sequence[tuple[Mapping[str, float], float]]) -> dict[str, float]:
    """The point TPE proposes after ``history`` [(point, val_nll), ...] (trials 0..trial-1)."""
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {}
    for p in params:
        lo, hi = _bounds(p)
        dists[p.name] = IntDistribution(int(lo), int(hi)) if p.kind == "int" else FloatDistribution(lo, hi)
    sampler = optuna.samplers.TPESampler(seed=seed * 100_003 + trial, n_startup_trials=TPE_STARTUP)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for point, value in history:
        values = {n: (int(round(point[n])) if isinstance(d, IntDistribution) else float(point[n])) for n, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=values, distributions=dists,
                                                  value=float(value) if np.isfinite(value) else 1e9))
    t = study.ask(dists)
    return {n: float(t.params[n]) for n in dists}
