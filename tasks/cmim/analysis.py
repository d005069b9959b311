"""Shape claims (functions of the long metrics frame) and the task's report figures.

Every claim function receives the metrics frame of one scale (columns run_id, task, method,
variant, benchmark, seed, scale, status, name, value, higher_is_better), keeps runs with status
``ok`` and a finite value, and returns a :class:`harness.api.ClaimEvidence` with one effect per
seed: each (benchmark, seed) effect is computed first, then a seed's benchmarks are averaged
(they share nothing across seeds, but within a seed they are not independent replicates). The
core (harness/claims.py) turns the per-seed effects into intervals, p-values and a verdict.

Main setting of the comparisons: batch size 256 and w_rec = 1 (README, "loss convention"); the
batch-size claims compare 16 with 256.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.api import ClaimEvidence
from harness.config import variant_name

MAIN_BATCH, SMALL_BATCH = 256, 16
#: Claim 2: cMIM's reconstruction error may exceed MIM's by at most this fraction.
RECON_TOLERANCE = 0.05
#: Claim 5: cMIM's mean posterior sigma may exceed MIM's by at most this fraction.
SIGMA_TOLERANCE = 0.10
#: Claim 4: the encoder-decoders whose informative embeddings are tested.
X_METHODS = ("amim", "cmim", "vae", "infonce")


def variant(method: str, batch_size: int = MAIN_BATCH) -> str:
    """The variant name of ``method`` at ``batch_size`` (its only grid coordinate)."""
    return variant_name(method, {"batch_size": int(batch_size)})


def _table(frame, metric: str) -> dict[tuple[str, str, int], float]:
    """(variant, benchmark, seed) -> value for ok runs with a finite value of ``metric``."""
    if frame is None or not len(frame):
        return {}
    f = frame[(frame["name"] == metric) & (frame["status"] == "ok")]
    out = {}
    for r in f.itertuples():
        v = float(r.value)
        if np.isfinite(v):
            out[(str(r.variant), str(r.benchmark), int(r.seed))] = v
    return out


def _units(*tables: dict) -> list[tuple[str, int]]:
    units = set()
    for t in tables:
        units |= {(b, s) for (_, b, s) in t}
    return sorted(units)


def _per_seed(per_unit: dict[tuple[str, int], float]) -> dict[int, float]:
    by_seed: dict[int, list[float]] = {}
    for (_, seed), v in per_unit.items():
        by_seed.setdefault(int(seed), []).append(float(v))
    return {s: float(np.mean(v)) for s, v in sorted(by_seed.items())}


def _evidence(per_seed: dict[int, float], details: dict[str, Any]) -> ClaimEvidence:
    if not per_seed:
        details = {**details, "reason": "no usable runs (every needed variant, ok, on a common benchmark and seed)"}
    return ClaimEvidence(per_seed=per_seed, direction="greater", min_effect=0.0, details=details)


def _paired_units(tables_variants: list[tuple[dict, str]]) -> list[tuple[str, int]]:
    """Units (benchmark, seed) where every (table, variant) has a value."""
    units = _units(*(t for t, _ in tables_variants))
    return [(b, s) for b, s in units if all((v, b, s) in t for t, v in tables_variants)]


def _benchmark_means(per_unit: dict[tuple[str, int], float]) -> dict[str, float]:
    by_b: dict[str, list[float]] = {}
    for (b, _), v in per_unit.items():
        by_b.setdefault(b, []).append(v)
    return {b: float(np.mean(v)) for b, v in sorted(by_b.items())}


# -- claims ---------------------------------------------------------------------------------

def claim_recon_close_to_mim_better_than_vae(task, frame) -> ClaimEvidence:
    rec = _table(frame, "recon_error")
    c, m, v = variant("cmim"), variant("amim"), variant("vae")
    units = _paired_units([(rec, c), (rec, m), (rec, v)])
    close = {u: RECON_TOLERANCE - (rec[(c, *u)] - rec[(m, *u)]) / rec[(m, *u)] for u in units}
    beat = {u: (rec[(v, *u)] - max(rec[(c, *u)], rec[(m, *u)])) / rec[(v, *u)] for u in units}
    close_s, beat_s = _per_seed(close), _per_seed(beat)
    per_seed = {s: min(close_s[s], beat_s[s]) for s in close_s}
    return _evidence(per_seed, {"close_to_mim_per_seed": close_s, "better_than_vae_per_seed": beat_s,
                                "relative_excess_over_mim_by_benchmark":
                                    {b: RECON_TOLERANCE - x for b, x in _benchmark_means(close).items()},
                                "relative_margin_over_vae_by_benchmark": _benchmark_means(beat),
                                "tolerance": RECON_TOLERANCE})


def _batch_drop(score: dict, method: str, units) -> dict[tuple[str, int], float]:
    hi, lo = variant(method, MAIN_BATCH), variant(method, SMALL_BATCH)
    return {u: score[(hi, *u)] - score[(lo, *u)] for u in units}


def claim_batch_robust_vs_infonce(task, frame) -> ClaimEvidence:
    score = _table(frame, "probe_score")
    need = [(score, variant(m, b)) for m in ("infonce", "cmim") for b in (MAIN_BATCH, SMALL_BATCH)]
    units = _paired_units(need)
    d_inf, d_cmim = _batch_drop(score, "infonce", units), _batch_drop(score, "cmim", units)
    eff = {u: d_inf[u] - d_cmim[u] for u in units}
    return _evidence(_per_seed(eff), {"drop_256_to_16_infonce_by_benchmark": _benchmark_means(d_inf),
                                      "drop_256_to_16_cmim_by_benchmark": _benchmark_means(d_cmim)})


def claim_sum_reintroduces_batch_sensitivity(task, frame) -> ClaimEvidence:
    score = _table(frame, "probe_score")
    need = [(score, variant(m, b)) for m in ("cmim_sum", "cmim") for b in (MAIN_BATCH, SMALL_BATCH)]
    units = _paired_units(need)
    d_sum, d_mean = _batch_drop(score, "cmim_sum", units), _batch_drop(score, "cmim", units)
    eff = {u: abs(d_sum[u]) - abs(d_mean[u]) for u in units}
    return _evidence(_per_seed(eff), {"change_256_minus_16_sum_by_benchmark": _benchmark_means(d_sum),
                                      "change_256_minus_16_mean_by_benchmark": _benchmark_means(d_mean)})


def claim_informative_embeddings_help(task, frame) -> ClaimEvidence:
    mu, x = _table(frame, "probe_score"), _table(frame, "probe_score_x")
    gains: dict[str, dict[int, float]] = {}
    by_benchmark: dict[str, dict[str, float]] = {}
    for m in X_METHODS:
        v = variant(m)
        units = _paired_units([(mu, v), (x, v)])
        g = {u: x[(v, *u)] - mu[(v, *u)] for u in units}
        gains[m] = _per_seed(g)
        by_benchmark[m] = _benchmark_means(g)
    seeds = set.intersection(*(set(g) for g in gains.values())) if gains else set()
    per_seed = {s: min(gains[m][s] for m in X_METHODS) for s in sorted(seeds)}
    return _evidence(per_seed, {"gain_per_seed": gains, "gain_by_benchmark": by_benchmark,
                                "smallest_gain_method_per_seed": {s: min(X_METHODS, key=lambda m: gains[m][s]) for s in per_seed}})


def claim_contrastive_spreads_keeps_sharp(task, frame) -> ClaimEvidence:
    uni, sig = _table(frame, "uniformity"), _table(frame, "mean_sigma")
    c, m = variant("cmim"), variant("amim")
    units = _paired_units([(uni, c), (uni, m), (sig, c), (sig, m)])
    spread = {u: uni[(c, *u)] - uni[(m, *u)] for u in units}
    sharp = {u: SIGMA_TOLERANCE - (sig[(c, *u)] / sig[(m, *u)] - 1.0) for u in units}
    sp, sh = _per_seed(spread), _per_seed(sharp)
    # the sigma margin in percentage points: a sigma within tolerance leaves the uniformity gain
    # as the effect; a sigma more than 10% above MIM's makes the effect negative
    per_seed = {s: min(sp[s], 100.0 * sh[s]) for s in sp}
    return _evidence(per_seed, {"uniformity_gain_per_seed": sp, "sigma_margin_per_seed": sh,
                                "uniformity_gain_by_benchmark": _benchmark_means(spread),
                                "sigma_ratio_minus_1_by_benchmark": {b: SIGMA_TOLERANCE - v for b, v in _benchmark_means(sharp).items()},
                                "sigma_tolerance": SIGMA_TOLERANCE})


# -- figures --------------------------------------------------------------------------------

METHOD_ORDER = ("ae", "vae", "amim", "cmim", "cmim_sum", "infonce", "cvae")


def _run_metrics(runs, scale: str):
    """One row per ok run: benchmark, method, variant, seed, batch_size, w_rec and its metrics
    (copied into ``info['metrics']`` by the run)."""
    import pandas as pd

    if runs is None or not len(runs) or "info" not in runs:
        return pd.DataFrame()
    rows = []
    for r in runs.itertuples():
        if getattr(r, "status", "ok") != "ok" or (hasattr(r, "scale") and r.scale != scale):
            continue
        info = r.info if isinstance(r.info, dict) else {}
        cfg = r.config if isinstance(getattr(r, "config", None), dict) else {}
        metrics = info.get("metrics") or {}
        if not metrics:
            continue
        rows.append({"benchmark": r.benchmark, "method": r.method, "variant": r.variant, "seed": r.seed,
                     "batch_size": int(info.get("batch_size", cfg.get("batch_size", 0)) or 0),
                     "w_rec": float(info.get("w_rec", cfg.get("w_rec", 1.0))), **metrics})
    return pd.DataFrame(rows)


def _svg(fig) -> str:
    from harness.report.plots import figure_to_svg

    return figure_to_svg(fig)


def figures(task, runs, scale: str) -> list[tuple[str, str]]:
    from matplotlib.figure import Figure

    df = _run_metrics(runs, scale)
    if not len(df) or "probe_score" not in df:
        return []
    df = df[(df["w_rec"] == 1.0) & df["method"].isin(METHOD_ORDER)]
    benches = sorted(set(df["benchmark"]))
    out = []

    # 1. probe score vs batch size, per objective
    fig = Figure(figsize=(3.6 * len(benches), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(benches)))
    for ax, b in zip(axes, benches):
        sel = df[df["benchmark"] == b]
        for i, m in enumerate(METHOD_ORDER):
            g = sel[sel["method"] == m].groupby("batch_size")["probe_score"]
            if not len(g):
                continue
            mean, sem = g.mean(), g.sem().fillna(0.0)
            ax.errorbar(mean.index, mean.values, yerr=sem.values, marker="o", lw=1.3, capsize=2, color=f"C{i}", label=m)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("probe score (mu)")
        ax.set_title(b)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    out.append(("Probe score on mu vs batch size per objective (mean +- s.e. over seeds)", _svg(fig)))

    # 2. mu vs informative embedding, batch 256
    main = df[df["batch_size"] == MAIN_BATCH]
    fig = Figure(figsize=(3.6 * len(benches), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(benches)))
    for ax, b in zip(axes, benches):
        sel = main[main["benchmark"] == b]
        methods = [m for m in METHOD_ORDER if m in set(sel["method"])]
        pos = np.arange(len(methods))
        for k, (col, label) in enumerate((("probe_score", "mu"), ("probe_score_x", "mu + decoder (-X)"))):
            vals = [sel[sel["method"] == m][col].mean() for m in methods]
            ax.bar(pos + (k - 0.5) * 0.4, vals, width=0.4, label=label, color=f"C{k}")
        ax.set_xticks(pos, methods, rotation=45, fontsize=7)
        lo = np.nanmin(main[main["benchmark"] == b][["probe_score", "probe_score_x"]].to_numpy()) if len(sel) else 0
        ax.set_ylim(max(0.0, lo - 0.05), None)
        ax.set_title(b)
        ax.set_ylabel("probe score")
    axes[-1].legend(fontsize=7)
    out.append(("Probe score on mu vs the informative embedding mu + pooled decoder states, batch 256 (mean over seeds)", _svg(fig)))

    # 3. reconstruction vs probe
    fig = Figure(figsize=(3.6 * len(benches), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(benches)))
    for ax, b in zip(axes, benches):
        sel = main[main["benchmark"] == b]
        for i, m in enumerate(METHOD_ORDER):
            s = sel[sel["method"] == m]
            if len(s):
                ax.scatter(s["recon_error"], s["probe_score"], s=14, color=f"C{i}", alpha=0.6, label=m)
                ax.scatter([s["recon_error"].mean()], [s["probe_score"].mean()], s=60, marker="x", color=f"C{i}")
        ax.set_xscale("log")
        ax.set_xlabel("reconstruction error (log)")
        ax.set_ylabel("probe score (mu)")
        ax.set_title(b)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    out.append(("Reconstruction error vs probe score, batch 256 (dots: seeds; crosses: means)", _svg(fig)))
    return out
