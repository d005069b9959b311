"""Shape claims (functions of the long metrics frame) and the task's report figures.

Every claim function receives the metrics frame of one scale (columns run_id, task, method,
variant, benchmark, seed, scale, status, name, value, higher_is_better), keeps runs with
status ``ok`` and finite values, and returns a :class:`ClaimEvidence` with one effect per
seed, oriented so that ``direction="greater"`` reproduces the claim. Units of independence are
the study seeds (each its own D-token subset, initialisations and data orders). Every effect is
measured on the held-out test set (``test_loss``, ``test_loss_k<K>``): hyperparameters were
selected on validation, so a claim never reads the numbers its runs were chosen by. Asymptotes are
fitted per seed, on that seed's own curve; a fit of A/x^a + E through as many points as it has
parameters (3) interpolates with no residual degree of freedom, so a claim resting on such a fit
is undecidable by design at that scale (``ClaimEvidence.undecidable``). The interval, p-values
and verdict come from harness/claims.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.api import ClaimEvidence
from harness.config import parse_variant

from .fits import fit_power_law, power_law

#: Parameters of the fitted law A / x^alpha + E: a fit needs more points than this to have a residual.
FIT_PARAMETERS = 3


# -- frame helpers ------------------------------------------------------------------------------

def _ok(frame):
    if frame is None or not len(frame):
        return frame.iloc[0:0] if frame is not None else None
    f = frame[frame["status"] == "ok"].copy()
    f["value"] = f["value"].astype(float)
    return f[np.isfinite(f["value"].to_numpy())]


def _scale(task, frame) -> str:
    scales = sorted(set(frame["scale"])) if len(frame) and "scale" in frame else []
    return scales[0] if scales else "small"


def _defaults(task, frame) -> dict:
    scale = _scale(task, frame)
    return dict(task.config.scale(scale).defaults) if scale in task.config.scales else {}


def _primary_benchmark(frame) -> str | None:
    """The data budget D every recipe runs at: the benchmark with the most methods (a second budget,
    paper scale's dclm-400m, runs the standard recipe only). Ties go to the first name."""
    if frame is None or not len(frame) or "benchmark" not in frame:
        return None
    counts = frame.groupby("benchmark")["method"].nunique()
    return str(sorted(counts.index, key=lambda b: (-counts[b], str(b)))[0])


def _table(frame, method: str, benchmark: str | None = None) -> dict[int, dict[str, dict[str, float]]]:
    """seed -> size (or '' when ungridded, or the source) -> {metric: value} for one method's runs
    at ``benchmark`` (default: the primary data budget, :func:`_primary_benchmark`)."""
    f = _ok(frame)
    out: dict[int, dict[str, dict[str, float]]] = {}
    if f is None or not len(f):
        return out
    f = f[f["benchmark"] == (benchmark or _primary_benchmark(frame))] if "benchmark" in f else f
    for r in f[f["method"] == method].itertuples(index=False):
        _, point = parse_variant(r.variant)
        key = str(point.get("size", point.get("source", "")))
        out.setdefault(int(r.seed), {}).setdefault(key, {})[r.name] = float(r.value)
    return out


def _curve(rows: dict[str, dict[str, float]], metric: str = "test_loss") -> list[tuple[float, float]]:
    """[(N, value)] sorted by N for the sizes that have both."""
    pts = [(v["n_params"], v[metric]) for v in rows.values() if "n_params" in v and metric in v]
    return sorted(pts)


def _k_losses(row: dict[str, float], prefix: str = "test_loss_k") -> list[float]:
    """Held-out loss of the logit average of the first K members, K = 1, 2, ..."""
    out, k = [], 1
    while f"{prefix}{k}" in row:
        out.append(row[f"{prefix}{k}"])
        k += 1
    return out


def _per_seed_evidence(units: dict[int, float], details: dict[str, Any], min_effect: float = 0.0,
                       undecidable: str = "") -> ClaimEvidence:
    """One effect per seed (NaN effects, e.g. a failed fit, count as no effect for that seed)."""
    units = {int(s): float(v) for s, v in sorted(units.items())}
    if not units:
        details = {**details, "reason": "no usable runs"}
    return ClaimEvidence(per_seed=units, direction="greater", min_effect=min_effect, details=details,
                         undecidable=undecidable)


def _no_residual(n_points: int, axis: str) -> str:
    """The undecidable-by-design reason when a fit has no residual degree of freedom."""
    if 0 < n_points <= FIT_PARAMETERS:
        return (f"the asymptote comes from fitting A/x^a + E ({FIT_PARAMETERS} parameters) through {n_points} "
                f"{axis}: the fit interpolates, with no residual degree of freedom; a decision needs "
                f"at least {FIT_PARAMETERS + 1} {axis}")
    return ""


def _size_asymptote(curve: list[tuple[float, float]]) -> float:
    """E of A/N^a + E fitted to one seed's (N, loss) curve (N in millions)."""
    return fit_power_law([n / 1e6 for n, _ in curve], [v for _, v in curve])["E"]


def _k_asymptote(losses: list[float]) -> float:
    """E of A/K^a + E fitted to one seed's loss by number of members K = 1..len."""
    return fit_power_law(np.arange(1, len(losses) + 1), losses)["E"]


def _mean_curve(curves: list[list[tuple[float, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Average y over the curves at each x index (all curves share their sizes)."""
    n = min(len(c) for c in curves)
    x = np.array([np.mean([c[i][0] for c in curves]) for i in range(n)])
    y = np.array([np.mean([c[i][1] for c in curves]) for i in range(n)])
    return x, y


def size_asymptote(curves: list[list[tuple[float, float]]]) -> float:
    """E of A/N^a + E fitted to the seed-mean losses (N in millions)."""
    x, y = _mean_curve(curves)
    return fit_power_law(x / 1e6, y)["E"]


def k_asymptote(loss_lists: list[list[float]]) -> float:
    n = min(len(l) for l in loss_lists)
    y = np.mean([l[:n] for l in loss_lists], axis=0)
    return fit_power_law(np.arange(1, n + 1), y)["E"]


# -- claim 1: the standard recipe ------------------------------------------------------------------

def claim_standard_u_in_epochs(task, frame) -> ClaimEvidence:
    """Per seed: how much worse the held-out loss is one epoch-grid step from the validation-chosen
    optimum (the nearer side), averaged over sizes. A flat curve gives about 0 either way; on
    validation the depth would be >= 0 by construction, which is why the test set is used."""
    t = _table(frame, "standard")
    depth = {s: [v["epoch_u_depth_test"] for v in rows.values() if math.isfinite(v.get("epoch_u_depth_test", math.nan))]
             for s, rows in t.items()}
    units = {s: float(np.mean(d)) for s, d in depth.items() if d}
    per_size = {size: [t[s][size].get("epochs") for s in t if size in t[s]] for rows in t.values() for size in rows}
    return _per_seed_evidence(units, {"optimal_epochs_by_size": per_size})


def claim_standard_rises_with_size(task, frame) -> ClaimEvidence:
    t = _table(frame, "standard")
    units, train_change = {}, {}
    for s, rows in t.items():
        val, tr = _curve(rows), _curve(rows, "train_loss")
        if len(val) >= 2:
            units[s] = val[-1][1] - val[-2][1]
            train_change[s] = tr[-1][1] - tr[-2][1] if len(tr) >= 2 else math.nan
    return _per_seed_evidence(units, {"train_loss_change_top_two_sizes": train_change,
                                      "test_loss_by_size": {s: _curve(r) for s, r in t.items()}})


# -- claim 2: the regularized recipe ---------------------------------------------------------------

def claim_regularized_monotone(task, frame) -> ClaimEvidence:
    t = _table(frame, "regularized")
    units = {}
    for s, rows in t.items():
        c = _curve(rows)
        if len(c) >= 2:
            units[s] = min(c[i][1] - c[i + 1][1] for i in range(len(c) - 1))
    return _per_seed_evidence(units, {"test_loss_by_size": {s: _curve(r) for s, r in t.items()}})


def _regularized_and_standard(frame):
    reg, std = _table(frame, "regularized"), _table(frame, "standard")
    per_seed = {}
    for s in sorted(set(reg) & set(std)):
        c, sc = _curve(reg[s]), _curve(std[s])
        if len(c) >= 3 and sc:
            per_seed[s] = (c, min(v for _, v in sc))
    return per_seed


def claim_regularized_asymptote_below_standard(task, frame) -> ClaimEvidence:
    """Per seed: the standard recipe's best loss minus the regularized recipe's fitted asymptote."""
    per_seed = _regularized_and_standard(frame)
    units = {s: best - _size_asymptote(c) for s, (c, best) in per_seed.items()}
    details = {}
    if per_seed:
        x, y = _mean_curve([c for c, _ in per_seed.values()])
        details = {"fit_regularized_seed_mean": fit_power_law(x / 1e6, y), "n_params": x.tolist(),
                   "mean_test_loss": y.tolist(), "best_standard_mean": float(np.mean([b for _, b in per_seed.values()]))}
    sizes = min((len(c) for c, _ in per_seed.values()), default=0)
    return _per_seed_evidence(units, details, undecidable=_no_residual(sizes, "model sizes"))


# -- claim 3: optimal weight decay grows with N -------------------------------------------------------

def claim_wd_grows_with_size(task, frame) -> ClaimEvidence:
    grid = [float(w) for w in _defaults(task, frame).get("search_grid", {}).get("wd", [])]
    t = _table(frame, "regularized")
    units, wd_by_size = {}, {}
    for s, rows in t.items():
        pts = sorted((v["n_params"], v["wd"]) for v in rows.values() if "wd" in v and "n_params" in v)
        wd_by_size[s] = pts
        if len(pts) >= 2 and grid:
            idx = [min(range(len(grid)), key=lambda i: abs(grid[i] - w)) for _, w in pts]
            units[s] = float(idx[-1] - idx[0])
    return _per_seed_evidence(units, {"wd_star_by_size": wd_by_size, "grid": grid,
                                      "non_decreasing_per_seed": {s: all(b[1] >= a[1] for a, b in zip(p, p[1:]))
                                                                  for s, p in wd_by_size.items()}})


# -- claims 4-6: ensembles -------------------------------------------------------------------------

def _member_size(task, frame) -> str:
    return str(_defaults(task, frame).get("member_size", ""))


def claim_ensemble_monotone_in_k(task, frame) -> ClaimEvidence:
    mid = _member_size(task, frame)
    t = _table(frame, "ensemble")
    units, curves = {}, {}
    for s, rows in t.items():
        losses = _k_losses(rows.get(mid, {}))
        curves[s] = losses
        if len(losses) >= 2:
            units[s] = min(losses[k] - losses[k + 1] for k in range(len(losses) - 1))
    return _per_seed_evidence(units, {"member_size": mid, "test_loss_by_k": curves})


def claim_ensemble_below_regularized(task, frame) -> ClaimEvidence:
    """Per seed: the regularized recipe's size asymptote minus the ensemble's K asymptote."""
    mid = _member_size(task, frame)
    reg, ens = _table(frame, "regularized"), _table(frame, "ensemble")
    per_seed = {s: (_curve(reg[s]), _k_losses(ens[s][mid])) for s in sorted(set(reg) & set(ens))
                if mid in ens[s] and len(_curve(reg[s])) >= 3 and len(_k_losses(ens[s][mid])) >= 3}
    units = {s: _size_asymptote(c) - _k_asymptote(k) for s, (c, k) in per_seed.items()}
    details = {"member_size": mid}
    if per_seed:
        details.update(regularized_asymptote_seed_mean=size_asymptote([c for c, _ in per_seed.values()]),
                       ensemble_asymptote_seed_mean=k_asymptote([k for _, k in per_seed.values()]))
    sizes = min((len(c) for c, _ in per_seed.values()), default=0)
    members = min((len(k) for _, k in per_seed.values()), default=0)
    return _per_seed_evidence(units, details, undecidable=_no_residual(sizes, "model sizes")
                              or _no_residual(members, "ensemble sizes K"))


def claim_tuned_members_lower_asymptote(task, frame) -> ClaimEvidence:
    """Per seed: the K asymptote of single-model-optimum members minus that of tuned members."""
    mid = _member_size(task, frame)
    tuned, single = _table(frame, "ensemble"), _table(frame, "ensemble_single_opt")
    per_seed = {s: (_k_losses(tuned[s][mid]), _k_losses(single[s][""])) for s in sorted(set(tuned) & set(single))
                if mid in tuned[s] and "" in single[s] and len(_k_losses(tuned[s][mid])) >= 3}
    units = {s: _k_asymptote(b) - _k_asymptote(a) for s, (a, b) in per_seed.items()}
    details = {"member_size": mid}
    if per_seed:
        details.update(tuned_mean_by_k=np.mean([a for a, _ in per_seed.values()], axis=0).tolist(),
                       single_opt_mean_by_k=np.mean([b for _, b in per_seed.values()], axis=0).tolist())
    members = min((len(a) for a, _ in per_seed.values()), default=0)
    return _per_seed_evidence(units, details, undecidable=_no_residual(members, "ensemble sizes K"))


def claim_tuned_members_individually_worse(task, frame) -> ClaimEvidence:
    mid = _member_size(task, frame)
    tuned, single = _table(frame, "ensemble"), _table(frame, "ensemble_single_opt")
    units = {s: tuned[s][mid]["member_test_loss"] - single[s][""]["member_test_loss"]
             for s in sorted(set(tuned) & set(single))
             if "member_test_loss" in tuned[s].get(mid, {}) and "member_test_loss" in single[s].get("", {})}
    return _per_seed_evidence(units, {"member_size": mid})


def claim_joint_asymptote_lowest(task, frame) -> ClaimEvidence:
    """Per seed: min(regularized asymptote, member-size ensemble asymptote) minus the joint
    asymptote (a size law fitted to that seed's per-size ensemble K asymptotes)."""
    mid = _member_size(task, frame)
    reg, ens = _table(frame, "regularized"), _table(frame, "ensemble")
    units, joint, sizes_seen = {}, {}, []
    for s in sorted(set(reg) & set(ens)):
        sizes = {size: (row["n_params"], _k_losses(row)) for size, row in ens[s].items() if "n_params" in row}
        if len(sizes) < 3 or mid not in sizes or len(_curve(reg[s])) < 3:
            continue
        sizes_seen.append(len(sizes))
        cs = sorted((n, _k_asymptote(losses)) for n, losses in sizes.values())
        finite = all(math.isfinite(c) for _, c in cs)
        joint[s] = fit_power_law([n / 1e6 for n, _ in cs], [c for _, c in cs])["E"] if finite else math.nan
        units[s] = min(_size_asymptote(_curve(reg[s])), _k_asymptote(sizes[mid][1])) - joint[s]
    return _per_seed_evidence(units, {"member_size": mid, "joint_asymptote_by_seed": joint},
                              undecidable=_no_residual(min(sizes_seen, default=0), "model sizes"))


# -- the data-efficiency headline: the recipe at D against the standard recipe at 2D ---------------

def claim_regularized_at_d_beats_standard_at_2d(task, frame) -> ClaimEvidence:
    """Per seed: the best standard-recipe test loss at the 2D budget minus the best regularized-recipe
    test loss at D (both minimised over sizes): > 0 means the recipe's data efficiency exceeds 2x."""
    main = _primary_benchmark(frame)
    others = sorted(set(frame["benchmark"]) - {main}) if main is not None else []
    reg = _table(frame, "regularized", main)
    std2 = {}
    for b in others:
        t = _table(frame, "standard", b)
        if t:
            std2, twice = t, b
            break
    units = {}
    for s in sorted(set(reg) & set(std2)):
        r, d = _curve(reg[s]), _curve(std2[s])
        if r and d:
            units[s] = min(v for _, v in d) - min(v for _, v in r)
    return _per_seed_evidence(units, {"budget_d": main, "budget_2d": twice if std2 else None})


# -- claims 7-9: distillation and soups ----------------------------------------------------------------

def _val(t: dict, s: int, key: str = "", metric: str = "test_loss") -> float:
    return t.get(s, {}).get(key, {}).get(metric, math.nan)


def claim_distill_recovers_ensemble_gain(task, frame) -> ClaimEvidence:
    mid = _member_size(task, frame)
    reg, ens, dist = _table(frame, "regularized"), _table(frame, "ensemble"), _table(frame, "distill")
    units, parts = {}, {}
    for s in sorted(dist):
        l_reg, l_ens, l_st = _val(reg, s, mid), _val(ens, s, mid), _val(dist, s)
        parts[s] = {"regularized": l_reg, "ensemble": l_ens, "student": l_st}
        if all(map(math.isfinite, (l_reg, l_ens, l_st))) and l_reg > l_ens:
            units[s] = (l_reg - l_st) / (l_reg - l_ens) - 0.5
    return _per_seed_evidence(units, {"member_size": mid, "losses": parts,
                                      "note": "effect + 0.5 = share of the ensemble's gain the student keeps"})


def _student_vs_teacher(task, frame, student: str, sign: float) -> ClaimEvidence:
    mid = _member_size(task, frame)
    teacher, st = _table(frame, "ensemble_member"), _table(frame, student)
    units = {}
    for s in sorted(st):
        l_t, l_s = _val(teacher, s, mid), _val(st, s)
        if math.isfinite(l_t) and math.isfinite(l_s):
            units[s] = sign * (l_t - l_s)
    return _per_seed_evidence(units, {"member_size": mid, "teacher": f"ensemble_member[size={mid}] at the same seed",
                                      "teacher_test_loss": {s: _val(teacher, s, mid) for s in st},
                                      "student_test_loss": {s: _val(st, s) for s in st}})


def claim_self_distill_beats_teacher(task, frame) -> ClaimEvidence:
    return _student_vs_teacher(task, frame, "self_distill", +1.0)


def claim_synthetic_only_worse_than_teacher(task, frame) -> ClaimEvidence:
    return _student_vs_teacher(task, frame, "synthetic_only", -1.0)


def claim_soup_worse_than_logit_average(task, frame) -> ClaimEvidence:
    t = _table(frame, "soup")
    units = {s: rows[""]["test_loss"] - rows[""]["ens2_test_loss"] for s, rows in t.items()
             if "test_loss" in rows.get("", {}) and "ens2_test_loss" in rows.get("", {})}
    return _per_seed_evidence(units, {"soup_test_loss": {s: _val(t, s) for s in t},
                                      "logit_average_test_loss": {s: _val(t, s, "", "ens2_test_loss") for s in t}})


# -- figures -------------------------------------------------------------------------------------------

def _runs(runs, scale: str):
    if runs is None or not len(runs) or "info" not in runs:
        return None
    r = runs[runs["status"] == "ok"] if "status" in runs else runs
    if "scale" in r:
        r = r[r["scale"] == scale]
    return r if len(r) else None


def _info_rows(runs, method: str) -> list[dict]:
    rows = runs[runs["method"] == method] if "method" in runs else runs[runs["variant"].str.startswith(method)]
    out = []
    for r in rows.itertuples(index=False):
        info = r.info if isinstance(r.info, dict) else {}
        out.append({"seed": int(r.seed), "variant": r.variant, **info})
    return out


def _group_mean(rows: list[dict], key: str, value: str) -> dict:
    acc: dict = {}
    for r in rows:
        if key in r and value in r and r[value] is not None:
            acc.setdefault(r[key], []).append(float(r[value]))
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in acc.items()}


def figures(task, runs, scale: str) -> list[tuple[str, str]]:
    runs = _runs(runs, scale)
    if runs is None:
        return []
    from matplotlib.figure import Figure

    from harness.report.plots import figure_to_svg

    out = []
    member_size = str(task.config.scale(scale).defaults.get("member_size", "")) if scale in task.config.scales else ""

    # 1. validation loss vs N, with fits
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    drawn = False
    for method, color in (("standard", "tab:red"), ("regularized", "tab:blue")):
        g = _group_mean(_info_rows(runs, method), "n_params", "val_loss")
        if not g:
            continue
        x = np.array(sorted(g))
        y = np.array([g[k][0] for k in x])
        ax.errorbar(x, y, yerr=[g[k][1] for k in x], fmt="o", color=color, label=f"{method} (mean ± sd over seeds)")
        fit = fit_power_law(x / 1e6, y)
        if fit["ok"]:
            xs = np.geomspace(x.min(), x.max() * 8, 60)
            ax.plot(xs, power_law(xs / 1e6, fit["A"], fit["alpha"], fit["E"]), color=color, lw=1,
                    label=f"{method} fit: E = {fit['E']:.3f}")
            ax.axhline(fit["E"], color=color, ls=":", lw=0.8)
        drawn = True
    ens = _info_rows(runs, "ensemble")
    cs = {}
    for r in ens:
        if r.get("fit", {}).get("ok"):
            cs.setdefault(r["n_params"], []).append(r["fit"]["E"])
    if cs:
        x = np.array(sorted(cs))
        y = np.array([np.mean(cs[k]) for k in x])
        ax.plot(x, y, "s", color="tab:green", label="ensemble K→∞ asymptote per N")
        fit = fit_power_law(x / 1e6, y)
        if fit["ok"]:
            xs = np.geomspace(x.min(), x.max() * 8, 60)
            ax.plot(xs, power_law(xs / 1e6, fit["A"], fit["alpha"], fit["E"]), color="tab:green", lw=1,
                    label=f"joint fit: E = {fit['E']:.3f}")
        drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel("validation loss (nats/byte)")
        ax.legend(fontsize=7)
        out.append(("Validation loss vs model size, with A/N^a + E fits", figure_to_svg(fig)))

    # 2. loss vs K
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    drawn = False
    for method in ("ensemble", "ensemble_single_opt"):
        by_size: dict = {}
        for r in _info_rows(runs, method):
            if r.get("losses_by_k"):
                by_size.setdefault(r.get("size", ""), []).append(r["losses_by_k"])
        for size, lists in sorted(by_size.items()):
            n = min(len(l) for l in lists)
            y = np.mean([l[:n] for l in lists], axis=0)
            k = np.arange(1, n + 1)
            label = f"{size} {'2x epochs, 1/2 wd' if method == 'ensemble' else 'single-model optimum'}"
            line, = ax.plot(k, y, "o-" if method == "ensemble" else "s--", label=label)
            fit = fit_power_law(k, y)
            if fit["ok"]:
                ax.axhline(fit["E"], color=line.get_color(), ls=":", lw=0.8)
            drawn = True
    if drawn:
        ax.set_xlabel("ensemble members K")
        ax.set_ylabel("validation loss of the logit average")
        ax.legend(fontsize=7, title="dotted: K→∞ asymptote", title_fontsize=7)
        out.append(("Ensemble loss vs number of members K", figure_to_svg(fig)))

    # 3. distillation bars
    bars = []
    for label, method, key in (("regularized (best single)", "regularized", member_size),
                               ("teacher member (2E, wd/2)", "ensemble_member", member_size),
                               ("ensemble (teacher)", "ensemble", member_size),
                               ("ensemble-distilled student", "distill", None),
                               ("self-distilled student", "self_distill", None),
                               ("synthetic only", "synthetic_only", None),
                               ("weight-average soup", "soup", None)):
        rows = [r for r in _info_rows(runs, method) if key is None or r.get("size") == key]
        vals = []
        for r in rows:
            if r["seed"] >= 1000:
                continue
            v = r.get("soup_val_loss") if method == "soup" else (r.get("losses_by_k") or [None])[-1] \
                if method == "ensemble" else r.get("val_loss")
            if v is not None:
                vals.append(float(v))
        if vals:
            bars.append((label, float(np.mean(vals)), float(np.std(vals))))
    if bars:
        fig = Figure(figsize=(6.5, 3.8))
        ax = fig.add_subplot(1, 1, 1)
        ax.barh([b[0] for b in bars], [b[1] for b in bars], xerr=[b[2] for b in bars], color="tab:purple")
        lo = min(b[1] for b in bars)
        ax.set_xlim(lo - 0.15, max(b[1] for b in bars) + 0.1)
        ax.invert_yaxis()
        ax.set_xlabel(f"validation loss (member size {member_size}; mean ± sd over seeds)")
        out.append(("Distillation: students vs teachers", figure_to_svg(fig)))

    # 4. weight-decay landscape of the regularized search
    probes = [r for r in _info_rows(runs, "regularized_search") if not r.get("noop") and r.get("point")]
    if probes:
        sizes = sorted({r["size"] for r in probes}, key=lambda z: min(p["n_params"] for p in probes if p["size"] == z))
        fig = Figure(figsize=(3.2 * len(sizes), 3.4))
        for i, size in enumerate(sizes):
            ax = fig.add_subplot(1, len(sizes), i + 1)
            pts = [r for r in probes if r["size"] == size]
            groups: dict = {}
            for r in pts:
                groups.setdefault((r["point"]["epochs"], r["point"]["lr"]), []).append((r["point"]["wd"], r["val_loss"]))
            for (e, lr), g in sorted(groups.items()):
                acc: dict = {}
                for w, l in g:
                    acc.setdefault(w, []).append(l)
                ws = sorted(acc)
                ax.plot(ws, [np.mean(acc[w]) for w in ws], "o-", ms=3, lw=0.8, label=f"E={e:g}, lr={lr:g}")
            ax.set_xscale("log")
            ax.set_title(size, fontsize=8)
            ax.set_xlabel("weight decay")
            if i == 0:
                ax.set_ylabel("validation loss")
            ax.legend(fontsize=5)
        out.append(("Weight-decay landscape of the regularized search (probes, mean over seeds)", figure_to_svg(fig)))
    return out
