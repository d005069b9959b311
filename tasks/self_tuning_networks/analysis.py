"""Shape claims (functions of the long metrics frame) and the report figures.

Claim functions keep runs with status ``ok`` and finite values, pair them by (benchmark, seed),
and return a :class:`harness.api.ClaimEvidence` oriented so that ``greater`` than 0 reproduces,
with one effect per seed: the mean of that seed's per-benchmark effects (the benchmarks of one
seed are not independent samples). The interval, p-values and verdict come from harness/claims.py.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from harness.api import ClaimEvidence

#: Claim 1a: "small relative error" of w_φ(λ) against the closed-form w*(λ).
RIDGE_REL_ERROR_MAX = 0.10
#: Claim 1b: "matches the argmin" within a quarter decade of λ.
RIDGE_LOG10_GAP_MAX = 0.25
#: Claim 4: "within a small band" of each other (dropout rate units).
CONVERGE_BAND = 0.10
#: Claim 3c: "recovers most of it" = more than this fraction of STN's gain over the best fixed value.
REPLAY_FRACTION = 0.5
TRIAL_RE = re.compile(r"\[trial=(\d+)\]")


def _values(frame, metric: str, variant: str | None = None, method: str | None = None) -> dict[tuple[str, int], float]:
    """{(benchmark, seed): value} of ok runs with a finite value."""
    if frame is None or not len(frame):
        return {}
    f = frame[(frame["name"] == metric) & (frame["status"] == "ok")]
    if variant is not None:
        f = f[f["variant"] == variant]
    if method is not None:
        f = f[f["method"] == method]
    out = {}
    for r in f.itertuples(index=False):
        v = float(r.value)
        if math.isfinite(v):
            out[(str(r.benchmark), int(r.seed))] = v
    return out


def _evidence(units: dict[tuple[str, int], float], details: dict[str, Any]) -> ClaimEvidence:
    """One effect per seed: the mean of the seed's (benchmark, seed) units."""
    keys = sorted(units)
    by_seed: dict[int, list[float]] = {}
    for b, s in keys:
        by_seed.setdefault(s, []).append(float(units[(b, s)]))
    details = {**details, "units": [{"benchmark": b, "seed": s, "effect": float(units[(b, s)])} for b, s in keys]}
    return ClaimEvidence(per_seed={s: float(np.mean(v)) for s, v in by_seed.items()}, direction="greater",
                         min_effect=0.0, details=details)


def claim_ridge_fidelity(task, frame) -> ClaimEvidence:
    err = _values(frame, "ridge_rel_error", method="ridge_check")
    return _evidence({k: RIDGE_REL_ERROR_MAX - v for k, v in err.items()},
                     {"threshold": RIDGE_REL_ERROR_MAX, "mean_rel_error": float(np.mean(list(err.values()))) if err else None})


def claim_ridge_argmin(task, frame) -> ClaimEvidence:
    gap = _values(frame, "ridge_log10_lambda_gap", method="ridge_check")
    return _evidence({k: RIDGE_LOG10_GAP_MAX - v for k, v in gap.items()},
                     {"threshold_decades": RIDGE_LOG10_GAP_MAX,
                      "mean_gap_decades": float(np.mean(list(gap.values()))) if gap else None})


def claim_replay_recovers(task, frame) -> ClaimEvidence:
    """Per (benchmark, seed) where STN beats the grid optimum: ((grid - replay) - 0.5 (grid - STN)) / grid.

    "Recovers most of STN's gain" has no meaning where STN has no gain: such units are left out
    (and counted in the details), not scored. Dividing by the grid's loss makes MLP nats per image
    and LSTM nats per word comparable.
    """
    stn, grid = _values(frame, "test_nll", "stn"), _values(frame, "test_nll", "grid_search")
    replay = _values(frame, "test_nll", "stn_replay")
    keys = sorted(stn.keys() & grid.keys() & replay.keys())
    no_gain = [k for k in keys if not grid[k] - stn[k] > 0 or grid[k] == 0]
    units = {k: ((grid[k] - replay[k]) - REPLAY_FRACTION * (grid[k] - stn[k])) / abs(grid[k])
             for k in keys if k not in no_gain}
    return _evidence(units, {"fraction": REPLAY_FRACTION,
                             "stn_without_gain": [{"benchmark": b, "seed": s} for b, s in no_gain],
                             "mean_gain_stn": float(np.mean([grid[k] - stn[k] for k in keys])) if keys else None,
                             "mean_gain_replay": float(np.mean([grid[k] - replay[k] for k in keys])) if keys else None})


def _dropout_names(frame) -> list[str]:
    return sorted({n[3:] for n in set(frame["name"]) if n.startswith("hp_dropout")}) if len(frame) else []


def claim_schedules_converge(task, frame) -> ClaimEvidence:
    names = _dropout_names(frame)
    lows = {n: _values(frame, f"hp_{n}", "stn") for n in names}
    highs = {n: _values(frame, f"hp_{n}", "stn_high_start") for n in names}
    # Each (benchmark, seed) over the dropout layers its model has (an MLP's three, an LSTM's one).
    keys = set().union(*[set(lows[n]) & set(highs[n]) for n in names]) if names else set()
    gaps = {k: float(np.mean([abs(lows[n][k] - highs[n][k]) for n in names if k in lows[n] and k in highs[n]]))
            for k in keys}
    return _evidence({k: CONVERGE_BAND - g for k, g in gaps.items()},
                     {"band": CONVERGE_BAND, "layers": names,
                      "mean_final_gap": float(np.mean(list(gaps.values()))) if gaps else None})


def claim_efficiency(task, frame) -> ClaimEvidence:
    """Random search restricted to the trials (in trial order) whose cumulative cost fits STN's."""
    return _search_at_stn_cost(frame, "random_trial")


def claim_beats_tpe(task, frame) -> ClaimEvidence:
    """Bayesian optimisation (TPE) restricted to the trials (in order) whose cumulative cost fits STN's."""
    return _search_at_stn_cost(frame, "tpe_trial")


def _search_at_stn_cost(frame, trial_method: str) -> ClaimEvidence:
    """Per (benchmark, seed): (best search trial on validation - STN) / best trial, in test NLL,
    the search given the trials, in order, whose cumulative cost_epochs fits STN's."""
    stn_test, stn_cost = _values(frame, "test_nll", "stn"), _values(frame, "cost_epochs", "stn")
    trials: dict[tuple[str, int], list[tuple[int, float, float, float]]] = {}
    ok = frame[(frame["method"] == trial_method) & (frame["status"] == "ok")] if len(frame) else frame
    for (b, s, v), g in (ok.groupby(["benchmark", "seed", "variant"]) if len(ok) else []):
        m = dict(zip(g["name"], g["value"].astype(float)))
        k = TRIAL_RE.search(v)
        if k and all(x in m for x in ("val_nll", "test_nll", "cost_epochs")):
            trials.setdefault((str(b), int(s)), []).append((int(k.group(1)), m["cost_epochs"], m["val_nll"], m["test_nll"]))
    units, used = {}, {}
    for key in stn_test.keys() & stn_cost.keys() & trials.keys():
        run, total = [], 0.0
        for t in sorted(trials[key]):
            if run and total + t[1] > stn_cost[key]:
                break
            run.append(t)
            total += t[1]
        best = min(run, key=lambda t: (t[2], t[0]))
        if best[3] != 0:
            units[key] = (best[3] - stn_test[key]) / abs(best[3])
        used[f"{key[0]}/seed{key[1]}"] = {"trials": len(run), "cost": total, "stn_cost": stn_cost[key],
                                          "best_trial_test_nll": best[3], "stn_test_nll": stn_test[key]}
    return _evidence(units, {"trials_within_stn_cost": used, "search": trial_method})


def claim_discrete_moves(task, frame) -> ClaimEvidence:
    opt = _values(frame, "hp_cutout", "grid_search")
    units = {}
    for variant in ("stn", "stn_high_start"):
        start, final = _values(frame, "start_cutout", variant), _values(frame, "hp_cutout", variant)
        for k in start.keys() & final.keys() & opt.keys():
            if start[k] != opt[k]:
                units.setdefault(k, []).append(abs(start[k] - opt[k]) - abs(final[k] - opt[k]))
    return _evidence({k: float(np.mean(v)) for k, v in units.items()},
                     {"grid_optimum_cutout": {f"{b}/seed{s}": v for (b, s), v in sorted(opt.items())}})


# -- figures --------------------------------------------------------------------------------

def _info(row) -> dict:
    info = row.get("info") if isinstance(row, dict) else getattr(row, "info", None)
    return info if isinstance(info, dict) else {}


def schedule_figure(runs, benchmark: str) -> str | None:
    from matplotlib.figure import Figure

    from harness.report.plots import RC, figure_to_svg
    import matplotlib

    rows = [r for r in runs.to_dict("records") if r.get("benchmark") == benchmark
            and r.get("method") in ("stn", "stn_high_start") and r.get("status") == "ok" and _info(r).get("schedule")]
    if not rows:
        return None
    names = list(_info(rows[0])["schedule"])
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(2.6 * len(names), 2.4))
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        colours = ["#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700"]
        for r in sorted(rows, key=lambda r: (r["method"], int(r["seed"]))):
            sched = _info(r)["schedule"]
            for ax, n in zip(axes, names):
                ax.plot(range(len(sched[n])), sched[n], color=colours[int(r["seed"]) % len(colours)],
                        linestyle="-" if r["method"] == "stn" else "--", linewidth=1.0,
                        label=f"{r['method']} seed {r['seed']}")
        for ax, n in zip(axes, names):
            ax.set_title(n)
            ax.set_xlabel("epoch")
        axes[0].legend(fontsize=6)
        return figure_to_svg(fig)


def search_figure(runs, benchmark: str) -> str | None:
    """Best validation NLL so far against cumulative wall time: search trials vs STN."""
    import matplotlib
    from matplotlib.figure import Figure

    from harness.report.plots import RC, figure_to_svg

    recs = [r for r in runs.to_dict("records") if r.get("benchmark") == benchmark and r.get("status") == "ok"]
    if not recs:
        return None

    def val_nll(r):
        for m in (r.get("metrics") or []):
            if m.get("name") == "val_nll":
                return m.get("value")
        rec = r.get("record_json")
        if isinstance(rec, str) and rec:
            import json

            for m in json.loads(rec).get("metrics", []):
                if m["name"] == "val_nll":
                    return m["value"]
        return None

    colours = {"grid_trial": "#8250df", "random_trial": "#bf8700", "tpe_trial": "#1a7f37"}
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(5.2, 3.2))
        ax = fig.subplots()
        drawn = False
        for method, colour in colours.items():
            for i, seed in enumerate(sorted({int(r["seed"]) for r in recs if r["method"] == method})):
                trials = [r for r in recs if r["method"] == method and int(r["seed"]) == seed]
                order = sorted(trials, key=lambda r: _trial_index(r["variant"]))
                t, best, xs, ys = 0.0, math.inf, [], []
                for r in order:
                    v = val_nll(r)
                    t += float(r.get("wall_s") or 0.0)
                    if v is not None and math.isfinite(float(v)):
                        best = min(best, float(v))
                    xs.append(t)
                    ys.append(best)
                ax.step(xs, ys, where="post", color=colour, linewidth=1.0, alpha=0.8,
                        label=method.replace("_trial", " search") if i == 0 else None)
                drawn = True
        for r in recs:
            if r["method"] != "stn":
                continue
            curve = _info(r).get("curve") or {}
            cost, vals = curve.get("cost_epochs") or [], curve.get("val_nll") or []
            if not cost:
                continue
            wall = float(r.get("wall_s") or 0.0)
            xs = [wall * c / cost[-1] for c in cost]
            ax.plot(xs, np.minimum.accumulate(vals), color="#1f6feb", linewidth=1.2,
                    label="STN" if int(r["seed"]) == min(int(x["seed"]) for x in recs if x["method"] == "stn") else None)
            drawn = True
        if not drawn:
            return None
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("cumulative wall time (s)")
        ax.set_ylabel("best validation NLL so far")
        ax.legend(fontsize=7)
        return figure_to_svg(fig)


def _trial_index(variant: str) -> tuple[int, str]:
    m = TRIAL_RE.search(variant or "")
    return (int(m.group(1)), variant) if m else (0, variant or "")


def figures(runs, scale: str) -> list[tuple[str, str]]:
    out = []
    if runs is None or not len(runs):
        return out
    for b in sorted(set(runs["benchmark"])):
        svg = schedule_figure(runs, b)
        if svg:
            out.append((f"{b}: STN hyperparameter schedules (solid: start 0.05; dashed: start 0.5 / max cutout; one colour per seed)", svg))
        svg = search_figure(runs, b)
        if svg:
            out.append((f"{b}: best validation NLL so far vs cumulative wall time (search trials in order) beside STN", svg))
    return out
