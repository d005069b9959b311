"""``harness compare REV_A REV_B``: the regression gate between two commits' runs.

Per (task, scale, benchmark, variant, metric), the paired change ``d_s = b_s - a_s`` over
the seeds both commits ran, with the seed-level Student-t interval of its mean and one-sided
t tests from the verdict engine (:func:`harness.stats.seed_tests`; no statistics of its own).
The change is oriented by the metric's ``higher_is_better`` (``x_s = +d_s`` or ``-d_s``, so
``x > 0`` is better) and tested against the metric's tolerance ``tol`` (task.yaml
``tolerances: {metric: value}``, in the metric's units; default 0)::

    p_regression  = p(H0: mean x >= -tol)     reject -> worse by more than the tolerance
    p_improvement = p(H0: mean x <=  tol)     reject -> better by more than the tolerance

Each family (every row's regression test; every row's improvement test) is Holm-adjusted
over the comparison, so a gate over many metrics does not fail by chance. A row is a
``regression`` when its adjusted p_regression < alpha (0.05), an ``improvement`` when its
adjusted p_improvement < alpha, else ``unchanged``. Special cases:

- a seed that diverged (non-finite value) at B but not at A makes the row a ``regression``
  (at A but not at B: an ``improvement``), whatever the finite seeds say;
- one shared seed: no test is possible; the point change is set against the tolerance
  (``|x| > tol`` decides), and the row says ``n_shared_seeds = 1``;
- a row with no shared seed (a variant, benchmark or metric only one commit has) is
  ``missing``: listed, never a failure.

Revisions are resolved with git (``HEAD~5`` works) and matched against the commit recorded
in each run's provenance; within a commit the latest run per key counts (the registry keeps
history across commits). ``harness compare`` exits 1 when any row is a regression.
"""

from __future__ import annotations

import json
import math
import subprocess
from typing import Any

import numpy as np
import pandas as pd

from harness.config import ConfigError

KEYS = ["task", "scale", "benchmark", "variant", "name"]
COLUMNS = KEYS + ["higher_is_better", "tolerance", "n_shared_seeds", "mean_a", "mean_b", "delta", "ci_low",
                  "ci_high", "p_regression", "p_improvement", "n_diverged_a", "n_diverged_b", "status"]
STATUSES = ("regression", "improvement", "unchanged", "missing")


def resolve_rev(rev: str) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True, text=True,
                             timeout=10, check=False)
    except OSError:
        out = None
    if out is None or out.returncode != 0:
        if len(rev) >= 7 and all(c in "0123456789abcdef" for c in rev.lower()):
            return rev.lower()
        raise ConfigError(f"cannot resolve git revision {rev!r}: give a commit hash or run inside the checkout")
    return out.stdout.strip()


def tolerances_of(task: str) -> dict[str, float]:
    """The ``tolerances`` of an installed task's task.yaml ({} when it is not installed here)."""
    from harness.plugins import discover

    tasks, _ = discover()
    t = tasks.get(task)
    return dict(t.config.tolerances) if t is not None else {}


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, tolerances: dict[str, dict[str, float]] | None = None,
                   default_tolerance: float = 0.0, alpha: float = 0.05) -> pd.DataFrame:
    """The comparison table (columns :data:`COLUMNS`) of two metrics frames (as
    :meth:`harness.registry.Registry.metrics`). ``tolerances``: ``{task: {metric: tol}}``."""
    from harness.stats import holm, seed_tests

    tolerances = tolerances or {}
    rows: list[dict[str, Any]] = []
    ga = {k: g for k, g in a.groupby(KEYS, sort=True)} if len(a) else {}
    gb = {k: g for k, g in b.groupby(KEYS, sort=True)} if len(b) else {}
    for key in sorted(set(ga) | set(gb)):
        row: dict[str, Any] = dict(zip(KEYS, key))
        either = ga.get(key) if key in ga else gb[key]
        hib = bool(either["higher_is_better"].iloc[0])
        tol = float(tolerances.get(row["task"], {}).get(row["name"], default_tolerance))
        row.update(higher_is_better=hib, tolerance=tol, status="unchanged")
        if key not in ga or key not in gb:
            rows.append({**row, "n_shared_seeds": 0, "status": "missing"})
            continue
        va = ga[key].groupby("seed")["value"].mean()
        vb = gb[key].groupby("seed")["value"].mean()
        shared = va.index.intersection(vb.index)
        xa, xb = va[shared].to_numpy(float), vb[shared].to_numpy(float)
        fa, fb = np.isfinite(xa), np.isfinite(xb)
        both = fa & fb
        d = xb[both] - xa[both]
        sign = 1.0 if hib else -1.0
        x = sign * d
        st = seed_tests(x, min_effect=tol, direction="greater")
        worse = seed_tests(x, min_effect=tol, direction="less")
        ci = seed_tests(d)
        row.update(
            n_shared_seeds=len(shared), mean_a=float(xa[both].mean()) if both.any() else math.nan,
            mean_b=float(xb[both].mean()) if both.any() else math.nan,
            delta=float(d.mean()) if len(d) else math.nan,
            ci_low=float(ci["ci_low"]), ci_high=float(ci["ci_high"]),
            p_regression=float(worse["p_reproduce"]), p_improvement=float(st["p_reproduce"]),
            n_diverged_a=int((~fa).sum()), n_diverged_b=int((~fb).sum()),
            _new_div=int((~fb & fa).sum()), _fixed_div=int((fb & ~fa).sum()), _n=int(both.sum()),
        )
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows)
    for c in ("p_regression", "p_improvement"):
        if c not in df:
            df[c] = np.nan
        df[c] = holm(df[c].to_numpy(float)) if len(df) else df[c]
    for i, r in df.iterrows():
        if r["status"] == "missing":
            continue
        status = "unchanged"
        if r["_new_div"] > 0:
            status = "regression"
        elif r["_fixed_div"] > 0:
            status = "improvement"
        elif r["_n"] == 1:
            x = (1.0 if r["higher_is_better"] else -1.0) * r["delta"]
            status = "regression" if x < -r["tolerance"] else "improvement" if x > r["tolerance"] else "unchanged"
        elif r["p_regression"] < alpha:
            status = "regression"
        elif r["p_improvement"] < alpha:
            status = "improvement"
        df.at[i, "status"] = status
    for c in COLUMNS:
        if c not in df:
            df[c] = np.nan
    return df[COLUMNS].reset_index(drop=True)


def compare_commits(rev_a: str, rev_b: str, results_dir="results", registry_url=None, task=None, scale=None,
                    default_tolerance: float = 0.0, alpha: float = 0.05, ingest: bool = True) -> pd.DataFrame:
    """Compare the runs recorded at two revisions (see the module docstring). Raises
    ConfigError when either commit has no runs in the registry."""
    from harness.registry import Registry

    reg = Registry(url=registry_url, results_dir=results_dir)
    try:
        if ingest:
            reg.ingest_dir(results_dir)
        commits = [resolve_rev(r) for r in (rev_a, rev_b)]
        a, b = (reg.by_commit(c, task=task, scale=scale) for c in commits)
    finally:
        reg.close()
    for rev, c, f in zip((rev_a, rev_b), commits, (a, b)):
        if f.empty:
            raise ConfigError(f"no runs recorded at {rev} ({c[:12]}){' for task ' + task if task else ''}"
                              f"{' at scale ' + scale if scale else ''}: run the study at that commit and ingest "
                              "its records (`harness registry ingest` or `harness registry merge`)")
    tol = {t: tolerances_of(t) for t in sorted(set(a["task"]) | set(b["task"]))}
    df = compare_frames(a, b, tol, default_tolerance=default_tolerance, alpha=alpha)
    df.attrs.update(commit_a=commits[0], commit_b=commits[1], rev_a=rev_a, rev_b=rev_b, alpha=alpha)
    return df


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summary(df: pd.DataFrame) -> dict[str, int]:
    return {s: int((df["status"] == s).sum()) for s in STATUSES}


def to_markdown(df: pd.DataFrame) -> str:
    """A Markdown comment for CI: a one-line verdict, then the table (regressions first)."""
    s = summary(df)
    a, b = df.attrs.get("commit_a", "A"), df.attrs.get("commit_b", "B")
    head = (f"**harness compare** `{a[:12]}` → `{b[:12]}`: "
            f"{'❌' if s['regression'] else '✅'} {s['regression']} regression(s), {s['improvement']} improvement(s), "
            f"{s['unchanged']} unchanged, {s['missing']} missing")
    order = {k: i for i, k in enumerate(STATUSES)}
    rows = df.assign(_o=df["status"].map(order)).sort_values(["_o"] + KEYS, kind="stable")
    cols = ["status", "task", "scale", "benchmark", "variant", "name", "mean_a", "mean_b", "delta", "ci_low",
            "ci_high", "p_regression", "p_improvement", "tolerance", "n_shared_seeds"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in rows.iterrows():
        lines.append("| " + " | ".join(("**regression**" if c == "status" and r[c] == "regression" else _fmt(r[c]))
                                       .replace("|", "\\|") for c in cols) + " |")
    lines.append("")
    lines.append("delta = mean over shared seeds of (B − A) with its 95% seed-level t interval; p: one-sided t "
                 "tests against the tolerance, Holm-adjusted over the comparison.")
    return "\n".join(lines)


def to_json(df: pd.DataFrame) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, (np.floating, float)):
            return float(v) if math.isfinite(v) else None
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, np.bool_):
            return bool(v)
        return v

    rows = [{k: clean(v) for k, v in r.items()} for r in df.to_dict(orient="records")]
    return json.dumps({"commit_a": df.attrs.get("commit_a"), "commit_b": df.attrs.get("commit_b"),
                       "alpha": df.attrs.get("alpha"), "summary": summary(df), "rows": rows}, indent=1)
