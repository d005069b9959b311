"""Shape claims (functions of the long metrics frame) and the task's report figures.

Plain paired comparisons (GELU vs ReLU, FFN scaling vs normalisation, EReg vs its base) are
declarative claims in task.yaml. The functions here return one effect per seed
(:class:`ClaimEvidence`); harness/claims.py computes the interval, p-values and verdict. Diverged
runs are part of the evidence where the claim is about divergence (claim 1 reads their last
finite entropy); elsewhere only ``ok`` runs count, and the details list the diverged seeds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.api import ClaimEvidence

#: Claim 3 (Table 2): claimed order of PPL at T=128, best first (tested link by link in task.yaml).
PPL_ORDER = ("sm_ln_g", "sm_ln_r", "sm_r", "sm_g", "sm_ln")
#: Claim 1: the deep-layer entropy drop (nats) that counts as collapse toward 0 at small scale.
COLLAPSE_MIN_DROP = 0.5
#: Claim 7: the smallest within-layer std of the learned thresholds that counts as non-uniform
#: (theta is a fraction of ln T; 0.01 is 0.05 nats at T=128; the paper's span 0.2..0.52).
THETA_MIN_STD = 0.01

#: Report order and labels of the configurations (the paper's names).
LABELS = {
    "sm_ln_g": "SM+LN+G", "sm_ln_r": "SM+LN+R", "sm_ln": "SM+LN", "sm_g": "SM+G", "sm_r": "SM+R", "sm": "SM",
    "sm_wn_ffn": "SM+WN(FFN)", "sm_sn_ffn": "SM+SN(FFN)", "sm_scfuffn": "SM+ScFuFFN",
    "sm_t_scfuffn": "SM(t)+ScFuFFN", "ereg_sm_t_scfuffn": "EReg(SM(t)+ScFuFFN)",
    "sm_tmul_scfuffn": "SM(t·)+ScFuFFN", "ereg_sm_tmul_scfuffn": "EReg(SM(t·)+ScFuFFN)",
}


def _values(frame, method: str, metric: str, statuses=("ok",)) -> dict[int, float]:
    # The bare variant: a run with --set overrides (variant "m[k=v]") is not a sample of the claim.
    rows = frame[(frame["variant"] == method) & (frame["name"] == metric) & frame["status"].isin(statuses)]
    return {int(r.seed): float(r.value) for r in rows.itertuples(index=False)
            if r.value is not None and math.isfinite(float(r.value))}


def _status_by_seed(frame, method: str) -> dict[int, str]:
    rows = frame[frame["variant"] == method]
    return {int(r.seed): str(r.status) for r in rows.itertuples(index=False)}


def claim_sm_collapse(task, frame) -> ClaimEvidence:
    """Claim 1: Softmax-only (SM) vs SM+LN (same identity FFN, with LayerNorm): deep-layer entropy
    falls (toward collapse) or the run diverges. Per seed d = entropy_deep(SM) - entropy_deep(SM+LN);
    a diverged SM run enters with the entropy of its last finite evaluation."""
    sm = _values(frame, "sm", "entropy_deep", statuses=("ok", "diverged"))
    ln = _values(frame, "sm_ln", "entropy_deep")
    seeds = sorted(set(sm) & set(ln))
    status = _status_by_seed(frame, "sm")
    details = {"pairs": [{"seed": s, "sm": sm[s], "sm_ln": ln[s], "diff": sm[s] - ln[s]} for s in seeds],
               "sm_diverged_seeds": sorted(s for s, st in status.items() if st == "diverged"),
               "sm_entropy_deep_min": _values(frame, "sm", "entropy_deep_min", ("ok", "diverged"))}
    return ClaimEvidence(per_seed={s: sm[s] - ln[s] for s in seeds}, direction="less",
                         min_effect=COLLAPSE_MIN_DROP, details=details)


def claim_thresholds_nonuniform(task, frame) -> ClaimEvidence:
    """Claim 7: the learned thresholds differ across the heads of every layer. Per EReg run: the
    smallest within-layer std of theta minus THETA_MIN_STD (a std is never negative, so the
    threshold is subtracted for "uniform" to be able to refute)."""
    vals = _values(frame, "ereg_sm_t_scfuffn", "theta_std_min_layer")
    return ClaimEvidence(per_seed={s: v - THETA_MIN_STD for s, v in sorted(vals.items())}, direction="greater",
                         min_effect=0.0, details={"theta_std_min_layer": vals, "threshold": THETA_MIN_STD})


# -- figures ------------------------------------------------------------------------------------

def _order(variants) -> list[str]:
    known = [v for v in LABELS if v in set(variants)]
    return known + sorted(set(variants) - set(known))


def _label(variant: str) -> str:
    return LABELS.get(variant, variant)


def _by_variant(runs, statuses=("ok", "diverged")) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs.itertuples(index=False):
        if r.status in statuses and isinstance(r.info, dict) and r.info.get("entropy_matrix"):
            out.setdefault(r.variant, []).append({"seed": r.seed, "status": r.status, "info": r.info})
    return out


def figures(task, runs, scale: str) -> list[tuple[str, str]]:
    if runs is None or not len(runs):
        return []
    groups = _by_variant(runs)
    if not groups:
        return []
    out = [("Per-head attention entropy (layer x head, nats, mean over seeds; end of training)",
            heatmaps(groups)),
           ("Layer-wise attention entropy over training (mean over seeds)", entropy_curves(groups))]
    table = ppl_table(groups, runs)
    if table:
        out.append(("Test perplexity (bytes), FFN FLOPs and divergences per configuration", table))
    return out


def _mean_matrix(items) -> np.ndarray:
    mats = [np.asarray(it["info"]["entropy_matrix"], dtype=float) for it in items]
    return np.nanmean(np.stack(mats), axis=0)


def heatmaps(groups) -> str:
    from matplotlib.figure import Figure

    from harness.report.plots import RC, figure_to_svg
    import matplotlib

    variants = _order(groups)
    T = None
    for items in groups.values():
        T = T or (items[0]["info"].get("model") or {}).get("block_size")
    vmax = math.lgamma(T + 1) / T if T else None
    ncol = min(4, len(variants))
    nrow = math.ceil(len(variants) / ncol)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(2.6 * ncol, 2.3 * nrow), layout="constrained")
        axes = fig.subplots(nrow, ncol, squeeze=False)
        im = None
        for ax in axes.ravel()[len(variants):]:
            ax.set_visible(False)
        for ax, v in zip(axes.ravel(), variants):
            mat = _mean_matrix(groups[v])
            im = ax.imshow(mat, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
            n_div = sum(it["status"] == "diverged" for it in groups[v])
            ax.set_title(_label(v) + (f" ({n_div} diverged)" if n_div else ""), fontsize=8)
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.set_xticks(range(mat.shape[1]))
            ax.set_yticks(range(mat.shape[0]))
            ax.grid(False)
            for (i, j), val in np.ndenumerate(mat):
                if math.isfinite(val):
                    ax.text(j, i, f"{val:.2f}", ha="center", va="center", fontsize=5.5,
                            color="white" if vmax is None or val < 0.6 * vmax else "black")
        if im is not None:
            cbar = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
            cbar.set_label("entropy (nats); top = (1/T) Σ ln i")
        return figure_to_svg(fig)


def entropy_curves(groups) -> str:
    from matplotlib.figure import Figure

    from harness.report.plots import RC, figure_to_svg
    import matplotlib

    variants = _order(groups)
    ncol = min(4, len(variants))
    nrow = math.ceil(len(variants) / ncol)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(2.8 * ncol, 2.3 * nrow), layout="constrained")
        axes = fig.subplots(nrow, ncol, squeeze=False, sharey=True)
        for ax in axes.ravel()[len(variants):]:
            ax.set_visible(False)
        for ax, v in zip(axes.ravel(), variants):
            curves = [it["info"].get("entropy_curve") or [] for it in groups[v]]
            steps = sorted({p["step"] for c in curves for p in c})
            n_layers = max((len(p["layers"]) for c in curves for p in c), default=0)
            cmap = matplotlib.colormaps["plasma"]
            for layer in range(n_layers):
                ys = []
                for s in steps:
                    vals = [p["layers"][layer] for c in curves for p in c if p["step"] == s
                            and p["layers"][layer] is not None and math.isfinite(p["layers"][layer])]
                    ys.append(float(np.mean(vals)) if vals else math.nan)
                ax.plot(steps, ys, color=cmap(layer / max(1, n_layers)), lw=1.2, label=f"layer {layer}")
            ax.set_title(_label(v), fontsize=8)
            ax.set_xlabel("step")
            ax.set_ylabel("entropy (nats)")
        handles, labels = axes.ravel()[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(8, len(handles)), fontsize=7)
        return figure_to_svg(fig)


def ppl_table(groups, runs) -> str | None:
    """A small table drawn as a figure: test PPL mean ± std, FFN FLOPs, diverged runs."""
    from matplotlib.figure import Figure

    from harness.report.plots import RC, figure_to_svg
    import matplotlib

    rows = []
    for v in _order(runs["variant"].unique()):
        sub = runs[runs["variant"] == v]
        ppl, ffn, n_div = [], None, 0
        for r in sub.itertuples(index=False):
            n_div += r.status == "diverged"
            info = r.info if isinstance(r.info, dict) else {}
            model = info.get("model") or {}
            if model:
                d = model["n_embd"]
                per = 2 * d * d if model["ffn"] == "fused" else 4 * d * model["ffn_mult"] * d
                ffn = model["n_layer"] * per
            ppl_v = info.get("test_ppl")
            if ppl_v is not None and math.isfinite(ppl_v):
                ppl.append(ppl_v)
        cell = f"{np.mean(ppl):.3f} ± {np.std(ppl, ddof=1):.3f}" if len(ppl) > 1 else \
            (f"{ppl[0]:.3f}" if ppl else "—")
        rows.append([_label(v), cell, f"{len(ppl)}", f"{n_div}", f"{ffn / 1e3:.0f}k" if ffn else "—"])
    if not rows:
        return None
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(7.0, 0.3 * (len(rows) + 1) + 0.2))
        ax = fig.subplots()
        ax.axis("off")
        tab = ax.table(cellText=rows, colLabels=["configuration", "test PPL (bytes)", "n ok", "diverged",
                                                 "FFN FLOPs/token"], loc="center", cellLoc="left")
        tab.auto_set_font_size(False)
        tab.set_fontsize(8)
        tab.scale(1, 1.2)
        return figure_to_svg(fig)
