"""Report plots: matplotlib figures (no GUI backend, no pyplot state) rendered to inline SVG strings.

Every plot is deterministic for the same input: a fixed ``svg.hashsalt``, no date
metadata, no RDF block, and element ids prefixed per figure so that several SVGs can
live in one HTML page without id clashes. Text is drawn as paths, so a page looks the
same on every machine and needs no font.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from typing import Any, Iterable, Mapping, Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

#: rcParams applied around every figure (through ``matplotlib.rc_context``).
RC = {
    "svg.hashsalt": "harness-report",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.6,
    "axes.edgecolor": "#9aa1a9",
    "axes.labelcolor": "#333a41",
    "xtick.color": "#5b636b",
    "ytick.color": "#5b636b",
    "legend.frameon": False,
    "figure.dpi": 100,
}

VERDICT_COLOURS = {
    "reproduced": "#1a7f37",
    "refuted": "#c62828",
    "inconclusive": "#b26a00",
    "undecidable": "#6e7781",
    "not evaluated": "#6e7781",
}

_ID_RE = re.compile(r'id="([^"]+)"')
_XML_HEADER_RE = re.compile(r"^.*?(?=<svg\b)", re.S)
_METADATA_RE = re.compile(r"\s*<metadata>.*?</metadata>", re.S)


def figure_to_svg(fig) -> str:
    """Serialise and clear ``fig``; return an ``<svg>`` element safe to inline in HTML."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": RC["svg.hashsalt"], "svg.fonttype": RC["svg.fonttype"]}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    fig.clear()
    return _inline_svg(buf.getvalue())


def _inline_svg(svg: str) -> str:
    svg = _XML_HEADER_RE.sub("", svg, count=1)
    svg = _METADATA_RE.sub("", svg, count=1)
    # One prefix per distinct figure: ids stay unique when several SVGs share a page.
    prefix = "f" + hashlib.sha1(svg.encode()).hexdigest()[:8] + "-"
    ids = set(_ID_RE.findall(svg))
    if ids:
        def sub(m: re.Match) -> str:
            return m.group(1) + prefix + m.group(2) if m.group(2) in ids else m.group(0)

        svg = re.sub(r'(id="|#)([A-Za-z_][\w.\-]*)(?=["\)])', sub, svg)
    svg = svg.replace("<svg ", '<svg class="plot" role="img" ', 1)
    return svg.strip() + "\n"


def _palette(n: int) -> list:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def effect_plot(claims: Sequence[Mapping[str, Any]]) -> str | None:
    """One row per claim with an estimate: the effect with its 95% CI, a line at 0 and one
    at the signed minimum effect. Each claim gets its own x-axis (claims compare different
    metrics). ``None`` when no claim has an estimate."""
    claims = [c for c in claims if _finite(c.get("effect"))]
    if not claims:
        return None
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(7.2, 0.42 + 0.62 * len(claims)))
        axes = fig.subplots(len(claims), 1, squeeze=False)
        for ax, c in zip(axes[:, 0], claims):
            verdict = c.get("verdict") or "not evaluated"
            colour = VERDICT_COLOURS.get(verdict, VERDICT_COLOURS["not evaluated"])
            min_effect = c.get("min_effect") if _finite(c.get("min_effect")) else 0.0
            threshold = -abs(min_effect) if c.get("direction") == "less" else abs(min_effect)
            eff, lo, hi = c.get("effect"), c.get("ci_low"), c.get("ci_high")
            xs = [0.0, threshold]
            ax.axvline(0.0, color="#57606a", lw=1.0)
            if threshold != 0.0:
                ax.axvline(threshold, color="#57606a", lw=1.0, ls="--")
            xs.append(eff)
            if _finite(lo) and _finite(hi):
                xs += [lo, hi]
                ax.errorbar([eff], [0], xerr=[[eff - lo], [hi - eff]], fmt="o", color=colour,
                            ecolor=colour, elinewidth=2.2, capsize=4, ms=6)
            else:
                ax.plot([eff], [0], "o", color=colour, ms=6)
            lo_x, hi_x = min(xs), max(xs)
            pad = (hi_x - lo_x) * 0.12 or max(abs(hi_x), 1e-3) * 0.5
            ax.set_xlim(lo_x - pad, hi_x + pad)
            ax.set_ylim(-1, 1)
            ax.set_yticks([])
            ax.grid(axis="y", visible=False)
            ax.spines["left"].set_visible(False)
            label = str(c.get("id", "?"))
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9, color="#24292f")
            ax.tick_params(axis="x", labelsize=7.5)
        fig.tight_layout(h_pad=0.6)
        return figure_to_svg(fig)


def curve_plot(series: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]], title: str) -> str | None:
    """Learning curves of one curve name: ``{metric_key: {variant: [(step, mean), ...]}}``.

    One panel per metric key, one line per variant (already averaged over seeds)."""
    keys = [k for k in series if any(series[k].values())]
    if not keys:
        return None
    variants: list[str] = []
    for k in keys:
        for v in series[k]:
            if v not in variants:
                variants.append(v)
    colours = dict(zip(variants, _palette(len(variants))))
    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(3.4 * ncols + 1.6, 2.5 * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i >= len(keys):
                ax.set_visible(False)
                continue
            key = keys[i]
            for v, pts in series[key].items():
                if not pts:
                    continue
                xs, ys = zip(*pts)
                ax.plot(xs, ys, color=colours[v], lw=1.5, label=v,
                        marker="o" if len(xs) <= 1 else None, ms=3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("step")
            ax.set_ylabel(key)
        handles = [Line2D([], [], color=colours[v], lw=2) for v in variants]
        fig.legend(handles, variants, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
        fig.tight_layout()
        return figure_to_svg(fig)


def mean_curves(curves: Iterable[Sequence[Mapping[str, Any]]]) -> dict[str, list[tuple[float, float]]]:
    """Average several runs' curve points by step: ``{metric_key: [(step, mean), ...]}``.

    Non-finite and missing values are skipped; a step counts the seeds that have it."""
    acc: dict[str, dict[float, list[float]]] = {}
    for points in curves:
        for p in points or ():
            step = p.get("step")
            if not _finite(step):
                continue
            for k, val in p.items():
                if k == "step":
                    continue
                if _finite(val):
                    acc.setdefault(k, {}).setdefault(float(step), []).append(float(val))
    return {k: [(s, sum(vs) / len(vs)) for s, vs in sorted(by_step.items())] for k, by_step in acc.items()}
