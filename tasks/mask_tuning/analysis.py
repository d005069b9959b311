"""Shape claims (one effect per seed; the core decides) and the task's report figures.

Each claim function receives the long metrics frame of one scale (columns run_id, task, method,
variant, benchmark, seed, scale, status, name, value, ...) and returns a
:class:`harness.api.ClaimEvidence` with one effect per seed. A seed's benchmarks (shot counts and
tasks) share its pre-trained model, so they are averaged within the seed first. No interval,
p-value or verdict is computed here.
"""

from __future__ import annotations

import numpy as np

from harness.api import ClaimEvidence

#: "matches or beats": at most this many points below.
MATCH_MARGIN = 2.0
#: "does not improve": gains less than this many points.
NO_GAIN_MARGIN = 1.0
#: "a little target accuracy": at most this many points.
LITTLE = 2.0
#: "sparse": fewer than this percent of the masked weights zeroed (the paper: 2.56% on average).
SPARSE_PERCENT = 5.0
SIXTEEN = ("-16shot",)


def _values(frame, metric: str, variant: str) -> dict[tuple[str, int], float]:
    """(benchmark, seed) -> the finite value of ``metric`` in ``variant``'s ok runs."""
    if frame is None or not len(frame):
        return {}
    f = frame[(frame["name"] == metric) & (frame["status"] == "ok") & (frame["variant"] == variant)]
    vals = f["value"].astype(float).to_numpy()
    keep = np.isfinite(vals)
    return dict(zip(zip(f["benchmark"][keep], f["seed"][keep].astype(int)), vals[keep].tolist()))


def _per_seed(units: dict[tuple[str, int], float]) -> tuple[dict[int, float], dict[str, float]]:
    """Means of (benchmark, seed) units within each seed, and per benchmark (descriptive)."""
    seeds = sorted({s for _, s in units})
    benches = sorted({b for b, _ in units})
    return ({s: float(np.mean([v for (_, t), v in units.items() if t == s])) for s in seeds},
            {b: float(np.mean([v for (c, _), v in units.items() if c == b])) for b in benches})


def _margin_claim(frame, treatment: str, control: str, margin: float, sign: float = 1.0,
                  only=None, metric: str = "accuracy") -> ClaimEvidence:
    """effect per seed = margin + sign * (treatment - control), averaged over shared benchmarks."""
    t, c = _values(frame, metric, treatment), _values(frame, metric, control)
    diff = {k: t[k] - c[k] for k in t if k in c and (only is None or k[0].endswith(only))}
    per_seed, _ = _per_seed({k: margin + sign * d for k, d in diff.items()})
    return ClaimEvidence(per_seed=per_seed, direction="greater", min_effect=0.0, details={
        "margin_points": margin, f"mean_{treatment}_minus_{control}_by_benchmark": _per_seed(diff)[1]})


def claim_amt_matches_linear_probe(task, frame) -> ClaimEvidence:
    """effect = (AMT - linear probe) + 2 points, per seed over every benchmark both ran."""
    return _margin_claim(frame, "amt", "linear_probe", MATCH_MARGIN)


def claim_amt_matches_coop(task, frame) -> ClaimEvidence:
    """effect = (AMT - CoOp) + 2 points, per seed over every benchmark both ran."""
    return _margin_claim(frame, "amt", "coop", MATCH_MARGIN)


def claim_random_mask_no_gain(task, frame) -> ClaimEvidence:
    """effect = 1 - (random mask - zero-shot) points at 16 shots, per seed."""
    return _margin_claim(frame, "amt_random", "zero_shot", NO_GAIN_MARGIN, sign=-1.0, only=SIXTEEN)


def claim_ramt_costs_little(task, frame) -> ClaimEvidence:
    """effect = 2 - (AMT - R-AMT) points, per seed over every benchmark both ran."""
    return _margin_claim(frame, "ramt", "amt", LITTLE)


def claim_masks_sparse(task, frame) -> ClaimEvidence:
    """effect = 5 - AMT's mask sparsity (%), per seed averaged over its benchmarks."""
    sp = _values(frame, "mask_sparsity", "amt")
    per_seed, _ = _per_seed({k: SPARSE_PERCENT - v for k, v in sp.items()})
    return ClaimEvidence(per_seed=per_seed, direction="greater", min_effect=0.0, details={
        "threshold_percent": SPARSE_PERCENT, "mean_sparsity_by_benchmark": _per_seed(sp)[1]})


# -- figures ---------------------------------------------------------------------------------------

METHOD_ORDER = ("zero_shot", "linear_probe", "coop", "tip_adapter", "full_ft", "amt", "ramt", "amt_mlp", "amt_random")


def _rows(runs, scale: str):
    keep = np.ones(len(runs), bool)
    for col, value in (("status", "ok"), ("scale", scale)):
        if col in runs:
            keep &= (runs[col] == value).to_numpy()
    return runs[keep]


def _metric(row, name: str) -> float | None:
    """A final metric of a run row, from the copy the run keeps in ``info["metrics"]``."""
    info = row.get("info")
    v = (info.get("metrics") or {}).get(name) if isinstance(info, dict) else None
    return float(v) if isinstance(v, (int, float)) and np.isfinite(v) else None


def _family(bench: str) -> tuple[str, int] | None:
    head, _, tail = bench.rpartition("-")
    if not tail.endswith("shot") or not tail[:-4].isdigit():
        return None
    return head, int(tail[:-4])


def accuracy_vs_shots_figures(rows) -> list[tuple[str, str]]:
    """Mean test accuracy against shots per method (zero-shot, full_ft and the mask controls as
    points where they ran), one figure per task family."""
    from matplotlib.figure import Figure

    from harness.report.plots import figure_to_svg

    out = []
    fams: dict[str, dict[str, dict[int, list[float]]]] = {}
    for r in rows.to_dict("records"):
        fam = _family(str(r.get("benchmark", "")))
        acc = _metric(r, "accuracy")
        if fam is None or acc is None:
            continue
        fams.setdefault(fam[0], {}).setdefault(r["variant"], {}).setdefault(fam[1], []).append(acc)
    for fam, by_method in sorted(fams.items()):
        fig = Figure(figsize=(5.5, 3.4))
        ax = fig.subplots()
        for k, m in enumerate(METHOD_ORDER):
            if m not in by_method:
                continue
            shots = sorted(by_method[m])
            means = [float(np.mean(by_method[m][s])) for s in shots]
            n = min(len(by_method[m][s]) for s in shots)
            ax.plot(shots, means, marker="o", ms=3, color=f"C{k}", ls="--" if m.startswith("amt_") else "-",
                    label=f"{m} ({n} seeds)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{fam}: accuracy vs shots (mean over seeds)")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out.append((f"Accuracy vs shots, {fam}", figure_to_svg(fig)))
    return out


def _short(name: str) -> str:
    name = name.removeprefix("visual.").replace("transformer.resblocks.", "block")
    return name.replace(".weight", "").replace("_weight", "")


def sparsity_per_layer_figure(rows) -> tuple[str, str] | None:
    """Mean % of zeroed weights per masked tensor, per mask method, over runs and seeds."""
    from matplotlib.figure import Figure

    from harness.report.plots import figure_to_svg

    per: dict[str, dict[str, list[float]]] = {}
    for r in rows.to_dict("records"):
        info = r.get("info")
        if r.get("variant") not in ("amt", "ramt", "amt_mlp") or not isinstance(info, dict):
            continue
        for name, v in (info.get("sparsity_per_tensor") or {}).items():
            per.setdefault(r["variant"], {}).setdefault(name, []).append(float(v))
    if not per:
        return None
    fig = Figure(figsize=(6.5, 3.6))
    axes = fig.subplots(1, len(per), squeeze=False)[0]
    for ax, (m, tensors) in zip(axes, sorted(per.items())):
        names = list(tensors)
        ax.barh(range(len(names)), [float(np.mean(tensors[n])) for n in names], color="C0")
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels([_short(n) for n in names], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("% zeroed")
        ax.set_title(m, fontsize=8)
    fig.suptitle("Mask sparsity per tensor (mean over benchmarks and seeds)", fontsize=8)
    fig.tight_layout()
    return ("Sparsity per layer", figure_to_svg(fig))


def figures(task, runs, scale: str) -> list[tuple[str, str]]:
    if runs is None or not len(runs):
        return []
    rows = _rows(runs, scale)
    out = accuracy_vs_shots_figures(rows)
    sp = sparsity_per_layer_figure(rows)
    return out + ([sp] if sp else [])
