"""Report plots: matplotlib figures (no GUI backend, no pyplot state) rendered to inline SVG strings.

Every plot is deterministic for the same input: a fixed ``svg.hashsalt``, no date
metadata, no RDF block, and element ids prefixed per figure so that several SVGs can
live in one HTML page without id clashes. Text is drawn as paths, so a page looks the
same on every machine and needs no font.

Drawing is most of a report's time (matplotlib lays out every tick label twice), so within
:func:`figure_cache` the plots reuse the SVG drawn before for equal input: one file per hash of
(plot function, input, this module's source, matplotlib's version), the files a render did not
use removed when it ends. The bytes are those a fresh draw gives.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

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


_CACHE: contextvars.ContextVar[tuple[Path, set[str]] | None] = contextvars.ContextVar("figure_cache", default=None)


@contextlib.contextmanager
def figure_cache(folder: str | Path | None) -> Iterator[None]:
    """Within the block, :func:`effect_plot` and :func:`curve_plot` read and write their SVGs in
    ``folder`` (None: no cache). On a normal exit the folder keeps only the files used in the
    block, so give each site its own folder."""
    if folder is None:
        yield
        return
    folder = Path(folder)
    used: set[str] = set()
    token = _CACHE.set((folder, used))
    try:
        yield
    finally:
        _CACHE.reset(token)
    for old in folder.glob("*.svg") if folder.is_dir() else ():
        if old.name not in used:
            old.unlink(missing_ok=True)


@functools.cache
def _code_version() -> str:
    return hashlib.sha256(Path(__file__).read_bytes() + matplotlib.__version__.encode()).hexdigest()


def _plain(x: Any) -> Any:
    """JSON for the cache key: numpy scalars as numbers; anything else is not cached."""
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", None) == 0:
        return x.item()
    raise TypeError(f"no cache key for {type(x).__name__}")


def cached_text(kind: str, key: Any, compute) -> str | None:
    """``compute()`` (text or None), or the text an earlier call with equal ``(kind, key)`` stored
    in the active :func:`figure_cache` folder. ``key``: JSON-able (numpy scalars allowed); any other
    key, or no active cache, computes without caching. None is never stored."""
    state = _CACHE.get()
    if state is None:
        return compute()
    folder, used = state
    try:
        text = json.dumps([kind, _code_version(), key], sort_keys=True, default=_plain)
    except (TypeError, ValueError):
        return compute()
    name = hashlib.sha256(text.encode()).hexdigest()[:40] + ".svg"
    try:
        value = (folder / name).read_text(encoding="utf-8")
    except OSError:
        value = compute()
        if value is None:
            return None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".svg")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(value)
            os.replace(tmp, folder / name)
        except OSError:  # a read-only results folder: compute every time
            return value
    used.add(name)
    return value


def _cached(fn):
    @functools.wraps(fn)
    def wrapper(*args: Any) -> str | None:
        return cached_text(fn.__name__, args, lambda: fn(*args))

    return wrapper


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


@_cached
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


@_cached
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
