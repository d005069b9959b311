"""Shape claims (one effect per seed; the core decides) and the task's report figures.

Each claim function receives the long metrics frame of one scale (columns run_id, task, method,
variant, benchmark, seed, scale, status, name, value, ...) and returns a
:class:`harness.api.ClaimEvidence` with one effect per seed, oriented so that ``direction="greater"``
past ``min_effect`` reproduces the claim. Benchmarks are averaged within a seed (they share the seed's
class order, projections and keys); a seed missing a benchmark's pair contributes the benchmarks it has.
No interval, p-value or verdict is computed here.
"""

from __future__ import annotations

import numpy as np

from harness.api import ClaimEvidence

#: "about the last task's share": within this many points of it.
COLLAPSE_MARGIN = 10.0
#: "within a few points" of the i.i.d. accuracy.
FEW_POINTS = 5.0
#: Toy claim: DKVB (random projections) beats the MLP by more than this (the toy's last-task share).
TOY_MARGIN = 25.0


def _ok(frame, metric: str):
    if frame is None or not len(frame):
        return None
    f = frame[(frame["name"] == metric) & (frame["status"] == "ok")].copy()
    f["value"] = f["value"].astype(float)
    return f[np.isfinite(f["value"].to_numpy())]


def _values(frame, metric: str, variant: str) -> dict[tuple[str, int], float]:
    """(benchmark, seed) -> value of ``metric`` for ``variant``."""
    f = _ok(frame, metric)
    if f is None or not len(f):
        return {}
    return {(r.benchmark, int(r.seed)): float(r.value) for r in f[f["variant"] == variant].itertuples()}


def _per_seed(units: dict[tuple[str, int], float]) -> tuple[dict[int, float], dict[str, float]]:
    """Average (benchmark, seed) units within each seed; also the mean per benchmark (descriptive)."""
    by_seed: dict[int, list[float]] = {}
    by_bench: dict[str, list[float]] = {}
    for (b, s), v in sorted(units.items()):
        by_seed.setdefault(s, []).append(v)
        by_bench.setdefault(b, []).append(v)
    return ({s: float(np.mean(v)) for s, v in by_seed.items()},
            {b: float(np.mean(v)) for b, v in by_bench.items()})


def _collapse(frame, variant: str) -> ClaimEvidence:
    acc = _values(frame, "test_accuracy", variant)
    share = _values(frame, "last_task_share", variant)
    units = {k: COLLAPSE_MARGIN - (acc[k] - share[k]) for k in acc if k in share}
    per_seed, per_bench = _per_seed(units)
    acc_bench = _per_seed({k: acc[k] for k in units})[1]
    return ClaimEvidence(per_seed=per_seed, direction="greater", min_effect=0.0, details={
        "margin_points": COLLAPSE_MARGIN,
        "mean_accuracy_by_benchmark": acc_bench,
        "mean_margin_left_by_benchmark": per_bench,
        "last_task_share_by_benchmark": _per_seed({k: share[k] for k in units})[1]})


def claim_linear_probe_collapses(task, frame) -> ClaimEvidence:
    """effect = 10 - (LP accuracy - last task's share), per seed averaged over benchmarks."""
    return _collapse(frame, "linear_probe")


def claim_mlp_collapses(task, frame) -> ClaimEvidence:
    """effect = 10 - (MLP accuracy - last task's share), per seed averaged over benchmarks."""
    return _collapse(frame, "mlp")


def claim_dkvb_close_to_iid(task, frame) -> ClaimEvidence:
    """effect = 5 - (dkvb_iid - dkvb) points, per seed averaged over benchmarks."""
    ci = _values(frame, "test_accuracy", "dkvb")
    iid = _values(frame, "test_accuracy", "dkvb_iid")
    gaps = {k: iid[k] - ci[k] for k in ci if k in iid}
    per_seed, _ = _per_seed({k: FEW_POINTS - g for k, g in gaps.items()})
    return ClaimEvidence(per_seed=per_seed, direction="greater", min_effect=0.0, details={
        "few_points": FEW_POINTS, "mean_iid_minus_ci_by_benchmark": _per_seed(gaps)[1]})


def claim_key_sharing_predicts_forgetting(task, frame) -> ClaimEvidence:
    """effect = Pearson r (key sharing with later tasks vs accuracy loss), per seed averaged over benchmarks."""
    r = _values(frame, "share_forgetting_corr", "dkvb")
    per_seed, per_bench = _per_seed(r)
    return ClaimEvidence(per_seed=per_seed, direction="greater", min_effect=0.0,
                         details={"mean_r_by_benchmark": per_bench, "n_runs": len(r)})


def claim_masking_helps(task, frame) -> ClaimEvidence:
    """effect = masked - unmasked test accuracy of the same dkvb run, per seed averaged over benchmarks."""
    masked = _values(frame, "test_accuracy", "dkvb")
    unmasked = _values(frame, "test_accuracy_unmasked", "dkvb")
    unused = _values(frame, "fraction_unused_keys", "dkvb")
    diff = {k: masked[k] - unmasked[k] for k in masked if k in unmasked}
    per_seed, per_bench = _per_seed(diff)
    return ClaimEvidence(per_seed=per_seed, direction="greater", min_effect=0.0, details={
        "mean_gain_by_benchmark": per_bench, "mean_fraction_unused_keys_by_benchmark": _per_seed(unused)[1]})


def claim_toy_random_projections_keep_regions(task, frame) -> ClaimEvidence:
    """effect = (dkvb_rp - mlp) on toy2d - 25 points, per seed (the toy only)."""
    rp = _values(frame, "test_accuracy", "dkvb_rp")
    mlp = _values(frame, "test_accuracy", "mlp")
    diff = {k: rp[k] - mlp[k] - TOY_MARGIN for k in rp if k in mlp and k[0] == "toy2d"}
    per_seed, _ = _per_seed(diff)
    return ClaimEvidence(per_seed=per_seed, direction="greater", min_effect=0.0, details={
        "margin_points": TOY_MARGIN,
        "mean_dkvb_rp": float(np.mean([rp[k] for k in diff])) if diff else float("nan"),
        "mean_mlp": float(np.mean([mlp[k] for k in diff])) if diff else float("nan")})


# -- figures ---------------------------------------------------------------------------------------

def _svg(fig, salt: str) -> str:
    import io

    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _rows(runs, scale: str):
    rows = runs
    if "status" in rows:
        rows = rows[rows["status"] == "ok"]
    if "scale" in rows:
        rows = rows[rows["scale"] == scale]
    return rows


def decision_regions_figure(rows) -> tuple[str, str] | None:
    """The toy's predicted class on a grid after each task (first seed), for DKVB and the baselines."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    variants = [v for v in ("linear_probe", "mlp", "dkvb", "dkvb_rp") if v in set(rows["variant"])]
    panels = []
    for v in variants:
        sel = rows[(rows["variant"] == v) & (rows["benchmark"] == "toy2d")].sort_values("seed")
        infos = [i for i in sel["info"] if isinstance(i, dict) and isinstance(i.get("grid"), dict)]
        if infos:
            panels.append((v, int(sel["seed"].iloc[0]), infos[0]))
    if not panels:
        return None
    n_tasks = len(panels[0][2]["grid"]["after_task"])
    fig = Figure(figsize=(2.0 * n_tasks, 2.1 * len(panels)))
    axes = fig.subplots(len(panels), n_tasks, squeeze=False)
    cmap = ListedColormap([f"C{i}" for i in range(8)])
    for r, (v, seed, info) in enumerate(panels):
        g = info["grid"]
        size, lo, hi = int(g["size"]), float(g["lo"]), float(g["hi"])
        means = {int(c): m for c, m in (info.get("toy_means") or {}).items()}
        for t, cells in enumerate(g["after_task"]):
            ax = axes[r][t]
            img = np.array([int(ch) for ch in cells]).reshape(size, size)
            ax.imshow(img, origin="lower", extent=(lo, hi, lo, hi), cmap=cmap, vmin=-0.5, vmax=7.5, interpolation="nearest")
            for c in info["tasks"][t]:
                if c in means:
                    ax.scatter(*means[c], s=18, c=f"C{c}", edgecolors="black", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{v} after task {t + 1}", fontsize=7)
    fig.suptitle("Toy: decision regions after each task (first seed; dots = the task's class means)", fontsize=8)
    fig.tight_layout()
    return ("2-D toy: decision regions after each task (Fig. 2)", _svg(fig, "dkvb-toy"))


def stream_accuracy_figures(rows) -> list[tuple[str, str]]:
    """Accuracy on all classes after each task (mean over seeds), per benchmark."""
    from matplotlib.figure import Figure

    out = []
    styles = {"dkvb": "-", "linear_probe": "--", "mlp": ":", "dkvb_rp": "-.", "dkvb_linear_decoder": "-",
              "dkvb_mlp_decoder": "-", "dkvb_ema_keys": "-"}
    for bench in sorted(set(rows["benchmark"])):
        fig = Figure(figsize=(5.5, 3.4))
        ax = fig.subplots()
        drawn = False
        for k, (variant, style) in enumerate(styles.items()):
            sel = rows[(rows["benchmark"] == bench) & (rows["variant"] == variant)]
            curves = [i["acc_all_after_task"] for i in sel["info"]
                      if isinstance(i, dict) and isinstance(i.get("acc_all_after_task"), list)]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            vals = np.array([c[:n] for c in curves], dtype=float)
            ax.plot(np.arange(1, n + 1), vals.mean(0), style, marker="o", ms=3, color=f"C{k}",
                    label=f"{variant} ({len(curves)} seeds)")
            drawn = True
        for variant, color in (("dkvb_iid", "C0"), ("linear_probe_iid", "C1"), ("mlp_iid", "C2")):
            sel = rows[(rows["benchmark"] == bench) & (rows["variant"] == variant)]
            acc = [float(i["acc_all_after_task"][-1]) for i in sel["info"]
                   if isinstance(i, dict) and i.get("acc_all_after_task")]
            if acc:
                ax.axhline(float(np.mean(acc)), color=color, lw=0.8, alpha=0.6, label=f"{variant} (final)")
        if not drawn:
            continue
        ax.set_xlabel("tasks seen")
        ax.set_ylabel("test accuracy, all classes (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{bench}: accuracy over the class-incremental stream")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out.append((f"Accuracy over the stream, {bench} (mean over seeds)", _svg(fig, f"dkvb-{bench}")))
    return out


def figures(task, runs, scale: str) -> list[tuple[str, str]]:
    if runs is None or not len(runs) or "info" not in runs:
        return []
    rows = _rows(runs, scale)
    out: list[tuple[str, str]] = []
    toy = decision_regions_figure(rows)
    if toy:
        out.append(toy)
    return out + stream_accuracy_figures(rows)

