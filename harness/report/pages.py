"""View models of the per-run pages (``run-<run_id>.html``) and the per-task history pages
(``history-<task>.html``); :mod:`harness.report.render` renders them.

A run page shows what one record holds: metrics, config, provenance, data and code hashes,
curves (small inline SVG drawn here, no matplotlib: a study has thousands of runs), artifacts
and the exact commands that reproduce it. A history page follows each task's primary metric
across the commits that recorded runs, and marks regressions and improvements between
consecutive commits exactly as ``harness compare`` does (:func:`harness.compare.compare_frames`
on the task's metrics of the two commits, its tolerances from task.yaml).
"""

from __future__ import annotations

import itertools
import json
import math
import shlex
from typing import Any, Mapping, Sequence

import pandas as pd
from markupsafe import Markup, escape


def _finite(x: Any) -> bool:
    try:
        return x is not None and not isinstance(x, bool) and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def line_svg(points: Sequence[tuple[float, float]], title: str, width: int = 320, height: int = 140) -> Markup:
    """One curve as a small inline SVG (polyline, min/max labels). Only numbers and escaped text."""
    pts = [(float(x), float(y)) for x, y in points if _finite(x) and _finite(y)]
    if not pts:
        return Markup("")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad_l, pad_r, pad_t, pad_b = 48, 8, 18, 20
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x: float) -> float:
        return pad_l + (w * (x - x0) / (x1 - x0) if x1 > x0 else w / 2)

    def sy(y: float) -> float:
        return pad_t + (h - h * (y - y0) / (y1 - y0) if y1 > y0 else h / 2)

    poly = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2"/>' for x, y in pts) if len(pts) <= 40 else ""
    t = escape(title)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="run-curve" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{t}">'
        f'<title>{t}</title><text x="{pad_l}" y="12" font-size="11">{t}</text>'
        f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>'
        f'<text x="{pad_l - 4}" y="{pad_t + 8}" font-size="9" text-anchor="end">{y1:.4g}</text>'
        f'<text x="{pad_l - 4}" y="{pad_t + h}" font-size="9" text-anchor="end">{y0:.4g}</text>'
        f'<text x="{pad_l}" y="{height - 4}" font-size="9">{x0:.4g}</text>'
        f'<text x="{pad_l + w}" y="{height - 4}" font-size="9" text-anchor="end">{x1:.4g}</text>'
        f'<polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" points="{poly}"/>'
        f'<g fill="#2a6fdb">{dots}</g></svg>')


def run_curves(curves: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{curve, key, svg}]``: one small plot per (curve name, logged quantity)."""
    out = []
    for cname in sorted(curves or {}):
        points = [p for p in (curves[cname] or []) if isinstance(p, Mapping)]
        keys = sorted({k for p in points for k in p if k != "step"})
        for k in keys:
            series = [(p.get("step", i), p.get(k)) for i, p in enumerate(points)]
            svg = line_svg(series, f"{cname} · {k}")
            if svg:
                out.append({"curve": cname, "key": k, "svg": svg})
    return out


def reproduce_commands(rec: Mapping[str, Any]) -> list[str]:
    """The exact commands that rerun a record: check out its commit, run it at its thread count,
    and (against the recorded metrics) ``harness reproduce``."""
    prov = rec.get("provenance") or {}
    commit = prov.get("git_commit")
    threads = rec.get("threads") or prov.get("torch_threads")
    cmd = ["harness", "run", str(rec.get("task")), "--method", str(rec.get("variant")), "--benchmark",
           str(rec.get("benchmark")), "--seed", str(rec.get("seed")), "--scale", str(rec.get("scale"))]
    if threads:
        cmd += ["--threads", str(int(threads))]
    if rec.get("device") and str(rec.get("device")) != "cpu":
        cmd += ["--device", str(rec["device"])]
    lines = []
    if commit:
        lines.append(f"git checkout {shlex.quote(str(commit))}")
    lines.append(" ".join(shlex.quote(c) for c in cmd))
    lines.append(f"harness reproduce {shlex.quote(str(rec.get('run_id')))}")
    return lines


def _flat(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(d, Mapping):
        out: list[tuple[str, str]] = []
        for k in sorted(d, key=str):
            out += _flat(d[k], f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(d, (list, tuple)) and d and all(isinstance(x, Mapping) for x in d):
        return [(prefix, json.dumps(d, sort_keys=True, default=str))]
    return [(prefix, d if isinstance(d, str) else json.dumps(d, sort_keys=True, default=str))]


def run_context(rec: Mapping[str, Any], row: Mapping[str, Any], task_page: str | None) -> dict[str, Any]:
    metrics = []
    for m in rec.get("metrics") or []:
        v = m.get("value")
        metrics.append({"name": m.get("name"), "value": v, "text": f"{float(v):.6g}" if _finite(v) else
                        (m.get("nonfinite") or "nan"), "direction": "higher" if m.get("higher_is_better", True)
                        else "lower"})
    prov = dict(rec.get("provenance") or {})
    packages = prov.pop("packages", None) or {}
    timings = rec.get("timings") or {}
    memory = rec.get("memory") or {}
    return {
        "rec": rec, "run_id": rec.get("run_id") or row.get("run_id"), "task_page": task_page,
        "summary": [("task", rec.get("task")), ("task version", rec.get("task_version")),
                    ("method", rec.get("method")), ("variant", rec.get("variant")),
                    ("benchmark", rec.get("benchmark")), ("seed", rec.get("seed")), ("scale", rec.get("scale")),
                    ("status", rec.get("status")), ("device", rec.get("device")), ("threads", rec.get("threads")),
                    ("started", timings.get("started_at")), ("finished", timings.get("finished_at")),
                    ("wall time (s)", timings.get("wall_s")), ("CPU time (s)", timings.get("cpu_s")),
                    ("peak RSS (MB)", memory.get("peak_rss_mb")), ("peak GPU (MB)", memory.get("peak_gpu_mb"))],
        "metrics": metrics,
        "config": _flat(rec.get("config") or {}),
        "benchmark_settings": _flat(rec.get("benchmark_settings") or {}),
        "provenance": _flat(prov),
        "packages": sorted((k, v) for k, v in packages.items() if v),
        "data_hashes": sorted((rec.get("data_hashes") or {}).items()),
        "code_hash": rec.get("code_hash"),
        "requires": [{"text": f"{r.get('task')}/{r.get('benchmark')}/{r.get('variant')}/seed{r.get('seed')}",
                      "run_id": r.get("run_id")} for r in rec.get("requires") or [] if isinstance(r, Mapping)],
        "artifacts": [{"name": a.get("name"), "path": a.get("path"), "sha256": a.get("sha256")}
                      for a in rec.get("artifacts") or [] if isinstance(a, Mapping)],
        "curves": run_curves(rec.get("curves") or {}),
        "info": json.dumps(rec.get("info") or {}, indent=1, sort_keys=True, default=str),
        "commands": reproduce_commands(rec),
    }


def history_context(task_name: str, hist: pd.DataFrame, primary: str | None,
                    tolerances: Mapping[str, float], run_pages: set[str]) -> dict[str, Any]:
    """Each (benchmark, variant)'s primary metric per commit (mean over seeds), commits in the
    order their runs finished, with ``harness compare``'s mark between each commit and the
    previous one that has the same (benchmark, variant)."""
    from harness.compare import compare_frames

    h = hist[(hist["task"] == task_name) & hist["git_commit"].notna()].copy() if len(hist) else hist
    if not len(h) or primary is None:
        return {"primary": primary, "commits": [], "rows": [], "n_regressions": 0}
    first = h.groupby("git_commit")["finished_at"].min().sort_values(kind="stable")
    commits = list(first.index)
    by_commit = {c: g.sort_values("finished_at", kind="stable").drop_duplicates(
        ["task", "scale", "benchmark", "variant", "seed", "name"], keep="last") for c, g in h.groupby("git_commit")}
    marks: dict[tuple[str, str, str], str] = {}
    for prev, cur in itertools.pairwise(commits):
        cmp = compare_frames(by_commit[prev], by_commit[cur], {task_name: dict(tolerances)})
        for _, r in cmp[cmp["name"] == primary].iterrows():
            if r["status"] in ("regression", "improvement"):
                marks[(cur, r["benchmark"], r["variant"])] = r["status"]
    prim = h[h["name"] == primary]
    # One groupby for every cell (filtering per (row, commit) cost minutes at thousands of runs):
    # each seed's mean, the non-finite dropped, then their mean and count per (benchmark, variant, commit).
    per_seed = prim.groupby(["benchmark", "variant", "git_commit", "seed"], sort=False)["value"].mean()
    per_seed = per_seed[per_seed.map(_finite)]
    stats = {k: (vals.mean(), len(vals)) for k, vals in per_seed.groupby(level=[0, 1, 2], sort=False)}
    page_of: dict[tuple, str] = {}
    for key in zip(prim["benchmark"], prim["variant"], prim["git_commit"], prim["run_id"]):
        if key[3] in run_pages:
            page_of.setdefault(key[:3], key[3])
    rows = []
    for bench, variant in sorted(set(zip(prim["benchmark"], prim["variant"]))):
        cells = []
        for c in commits:
            mean, n = stats.get((bench, variant, c), (None, 0))
            page = page_of.get((bench, variant, c))
            cells.append({"text": f"{mean:.4g}" if n else "—", "n": n, "value": repr(float(mean)) if n else "",
                          "mark": marks.get((c, bench, variant)), "link": f"run-{page}.html" if page else None})
        rows.append({"benchmark": bench, "variant": variant, "cells": cells})
    return {"primary": primary, "rows": rows, "n_regressions": sum(1 for m in marks.values() if m == "regression"),
            "commits": [{"sha": c, "short": str(c)[:10], "first": str(first[c])[:19]} for c in commits]}
