"""The Performance page (``performance.html``): the harness's own costs as the benchmarks in
``benchmarks/`` measured them, read from their committed ``benchmarks/results/*.json``.

Two shapes of result file are understood, so a new benchmark needs no code here:

* **growth**: ``"results": [{"n_records": 1000, "ingest_s": 1.6, ...}, ...]``: one row per size.
  The size axis is the first of :data:`SIZE_KEYS` a row has; every other numeric field whose name
  ends in ``_s`` (seconds) or ``_mb`` (megabytes) is a series over it, drawn log-log.
* **goals** (optional, any file): ``"goals": {"ingest_s": {"at": 100000, "max": 15}, ...}``: the
  page checks the measured value at that size (growth files; ``"at": "all"``: the largest value over
  every size) or the top-level number of that name (any file; dotted paths reach into objects, e.g.
  ``"process_s.overhead"``) against the bound. A list of such objects bounds one field at several
  sizes: ``"report_cpu_s": [{"at": 10000, "max": 5}, {"at": 100000, "max": 30}]``.

Every other top-level number (nested objects flattened with dots) is listed in a table, so a
scalar benchmark (e.g. the per-run overhead) shows up too. Only numbers and escaped text reach the
SVG; the page depends on nothing but the files, so the same files give the same bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from markupsafe import Markup, escape

SIZE_KEYS = ("n_records", "n_runs", "n_jobs", "n")
SERIES_SUFFIXES = ("_s", "_mb")
PALETTE = ("#2a6fdb", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d")


@dataclass(frozen=True)
class Series:
    name: str
    """The result field, e.g. ``ingest_s``."""
    points: tuple[tuple[float, float], ...]
    """(size, value) pairs, sizes ascending."""


@dataclass(frozen=True)
class GoalCheck:
    metric: str
    """The field the goal bounds (``ingest_s``, ``process_s.overhead``)."""
    at: float | None
    """The size it applies at (growth files), or None for a scalar or for every size."""
    measured: float | None
    """What the file holds there (None: not measured at that size)."""
    bound: float
    """The goal: measured must be at most this."""

    @property
    def met(self) -> bool | None:
        return None if self.measured is None else self.measured <= self.bound


@dataclass(frozen=True)
class BenchmarkResult:
    name: str
    """The file's stem, e.g. ``registry_scale``."""
    label: str
    """The file's ``label`` (e.g. before/after) or ''."""
    machine: str
    """The machine as the file describes it (cpus, load), or ''."""
    size_key: str | None
    """The growth axis, or None for a scalar file."""
    series: tuple[Series, ...] = ()
    scalars: tuple[tuple[str, float], ...] = ()
    """Top-level numbers, dotted names, in file order."""
    goals: tuple[GoalCheck, ...] = field(default=())


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(float(x)) else None


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and k not in ("goals", "machine"):
            out.extend(_flatten(v, name + "."))
        elif (n := _number(v)) is not None:
            out.append((name, n))
    return out


def _machine(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return ", ".join(f"{k} {v}" for k, v in obj.items() if isinstance(v, (str, int, float)))
    return str(obj) if obj else ""


def _growth(rows: Sequence[Any]) -> tuple[str | None, tuple[Series, ...]]:
    rows = [r for r in rows if isinstance(r, Mapping)]
    size_key = next((k for k in SIZE_KEYS if rows and all(_number(r.get(k)) is not None for r in rows)), None)
    if size_key is None:
        return None, ()
    names: list[str] = []
    for r in rows:
        names += [k for k, v in r.items() if k != size_key and k.endswith(SERIES_SUFFIXES)
                  and _number(v) is not None and k not in names]
    series = []
    for name in names:
        pts = sorted((float(r[size_key]), float(r[name])) for r in rows if _number(r.get(name)) is not None)
        series.append(Series(name, tuple(pts)))
    return size_key, tuple(series)


def _goal_checks(goals: Any, size_key: str | None, series: Sequence[Series],
                 scalars: Sequence[tuple[str, float]]) -> tuple[GoalCheck, ...]:
    if not isinstance(goals, Mapping):
        return ()
    by_name = {s.name: dict(s.points) for s in series}
    flat = dict(scalars)
    checks = []
    pairs = [(metric, g) for metric, gs in goals.items() for g in (gs if isinstance(gs, list) else [gs])]
    for metric, g in pairs:
        if not isinstance(g, Mapping) or _number(g.get("max")) is None:
            continue
        at = _number(g.get("at"))
        if g.get("at") == "all" and size_key is not None:  # every size: the worst one decides
            values = list(by_name.get(metric, {}).values())
            measured = max(values) if values else None
        elif at is not None and size_key is not None:
            measured = by_name.get(metric, {}).get(at)
        else:
            measured, at = flat.get(metric), None
        checks.append(GoalCheck(str(metric), at, measured, float(g["max"])))
    return tuple(checks)


def load_results(folder: str | Path) -> list[BenchmarkResult]:
    """Every readable ``*.json`` in ``folder`` (sorted by name); files that are not JSON objects
    are skipped (a benchmark's other outputs, e.g. Markdown tables, live there too)."""
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(obj, Mapping):
            continue
        size_key, series = _growth(obj.get("results") or [])
        scalars = tuple(_flatten({k: v for k, v in obj.items() if k not in ("results", "raw")}))
        out.append(BenchmarkResult(
            name=path.stem, label=str(obj.get("label") or ""), machine=_machine(obj.get("machine")),
            size_key=size_key, series=series, scalars=scalars,
            goals=_goal_checks(obj.get("goals"), size_key, series, scalars)))
    return out


def growth_svg(series: Sequence[Series], title: str, x_label: str, width: int = 520, height: int = 260) -> Markup:
    """Several series on log-log axes with a legend: how each cost grows with the size."""
    pts = [(x, y) for s in series for x, y in s.points if x > 0 and y > 0]
    if not pts:
        return Markup("")
    lx = [math.log10(x) for x, _ in pts]
    ly = [math.log10(y) for _, y in pts]
    x0, x1 = math.floor(min(lx)), math.ceil(max(lx))
    y0, y1 = math.floor(min(ly)), math.ceil(max(ly))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    pad_l, pad_r, pad_t, pad_b, legend_w = 52, 10, 22, 34, 150
    w, h = width - pad_l - pad_r - legend_w, height - pad_t - pad_b

    def sx(x: float) -> float:
        return pad_l + w * (math.log10(x) - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return pad_t + h - h * (math.log10(y) - y0) / (y1 - y0)

    t = escape(title)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="growth" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{t}"><title>{t}</title>',
             f'<text x="{pad_l}" y="14" font-size="12">{t}</text>',
             f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>']
    for e in range(x0, x1 + 1):  # decade grid lines, labelled 10^e
        x = pad_l + w * (e - x0) / (x1 - x0)
        parts.append(f'<line x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{pad_t + h}" stroke="#eee"/>'
                     f'<text x="{x:.1f}" y="{pad_t + h + 13}" font-size="10" text-anchor="middle">{10.0 ** e:g}</text>')
    for e in range(y0, y1 + 1):
        y = pad_t + h - h * (e - y0) / (y1 - y0)
        parts.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{pad_l + w}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{pad_l - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{10.0 ** e:g}</text>')
    parts.append(f'<text x="{pad_l + w / 2:.1f}" y="{height - 4}" font-size="10" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        spts = [(x, y) for x, y in s.points if x > 0 and y > 0]
        if not spts:
            continue
        poly = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in spts)
        dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5"/>' for x, y in spts)
        ly_ = pad_t + 12 + 16 * i
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{poly}"/>'
                     f'<g fill="{color}">{dots}</g>'
                     f'<line x1="{width - legend_w + 6}" y1="{ly_ - 4}" x2="{width - legend_w + 22}" y2="{ly_ - 4}" '
                     f'stroke="{color}" stroke-width="2"/>'
                     f'<text x="{width - legend_w + 26}" y="{ly_}" font-size="10">{escape(s.name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def performance_context(folder: str | Path | None) -> dict[str, Any]:
    """The page's view model: one section per result file, the goal checks first."""
    results = load_results(folder) if folder is not None and Path(folder).is_dir() else []
    sections = []
    for r in results:
        sizes = sorted({x for s in r.series for x, _ in s.points})
        table = [{"size": n, "cells": [dict(s.points).get(n) for s in r.series]} for n in sizes]
        sections.append({
            "name": r.name, "label": r.label, "machine": r.machine, "size_key": r.size_key,
            "series": [s.name for s in r.series], "table": table,
            "plot": growth_svg(r.series, r.name, r.size_key or "") if r.series else Markup(""),
            "scalars": list(r.scalars), "goals": list(r.goals),
        })
    goals = [(s["name"], g) for s in sections for g in s["goals"]]
    return {"sections": sections, "goals": goals}
