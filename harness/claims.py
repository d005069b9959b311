"""Claims -> verdicts. The verdict rule lives here and nowhere else.

For every claim of a task (in task.yaml order) :func:`evaluate_claims` computes an
effect, its 95% CI and a p-value, Holm-adjusts the p-values within the task, and
turns them into a verdict.

Comparison claims (``metric``, ``treatment``, ``control``, ``benchmarks``,
``direction``, ``min_effect``):

* runs are matched on ``variant`` (the claim's names are canonicalised, so
  ``m[b=1,a=2]`` matches ``m[a=2,b=1]``; a bare method name whose method has a single
  variant per (benchmark, seed) is accepted too);
* only runs with status ``ok`` and a finite value of ``metric`` enter, on the claim's
  benchmarks (all benchmarks of the scale when the list is empty);
* pairs are formed on (benchmark, seed), ``d = treatment - control``;
* ``effect = mean(d)``; ``CI`` = :func:`harness.stats.paired_bootstrap_ci` with the
  seed as the cluster (a seed's differences across benchmarks are resampled together);
  ``p`` = :func:`harness.stats.sign_flip_pvalue` of ``d`` with the claim's direction as
  the alternative (``greater`` or ``less``);
* pairs expected (benchmarks x seeds of the scale, plus any seen in the data) but
  missing, diverged, failed or non-finite are counted in ``n_missing``.

Function claims (``function``): ``task.claim_function(name)(frame)`` receives the long
metrics frame of the task at this scale (:meth:`harness.registry.Registry.metrics`,
every status but failed) and returns a :class:`harness.api.ClaimEvidence`. Its
``direction`` is authoritative (the function orients its own effect); the threshold is
the larger of the evidence's and the task.yaml's ``min_effect`` (task.yaml may tighten,
never loosen). A function that raises, or returns something else, gives an
``inconclusive`` verdict with the ``error`` text; it never stops the other claims.

Holm: the p-values of one task's claims are adjusted together
(:func:`harness.stats.holm`); a claim without a p-value (NaN) is left out of the
family and its ``p_adjusted`` stays NaN.

Verdict, with ``m = min_effect >= 0``, ``alpha`` (default 0.05), and "p ok" meaning
``p_adjusted < alpha``, or the p-value is NaN (then the CI alone decides)::

    n < 3 (pairs; n_seeds for function claims)     -> inconclusive ("too few successful runs")
    CI undefined                                   -> inconclusive
    direction greater:  ci_low  >  m  and p ok     -> reproduced
                        ci_high <  0               -> refuted
    direction less:     ci_high < -m  and p ok     -> reproduced
                        ci_low  >  0               -> refuted
    otherwise                                      -> inconclusive

Results are JSON-ready dicts (NaN written as None); :func:`write_claims` stores them as
``results/claims-<scale>.json``.
"""

from __future__ import annotations

import math
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from harness.api import ClaimEvidence
from harness.config import ConfigError, parse_variant, variant_name
from harness.record import write_json_atomic
from harness.stats import holm, paired_bootstrap_ci, sign_flip_pvalue

VERDICTS = ("reproduced", "refuted", "inconclusive")
MIN_PAIRS = 3
TOO_FEW = "too few successful runs"


# -- the verdict ----------------------------------------------------------------------------

def verdict(ci_low: float, ci_high: float, p_adjusted: float, direction: str, min_effect: float,
            n: int, alpha: float = 0.05) -> tuple[str, str]:
    """``(verdict, reason)`` by the rule in the module docstring."""
    if direction not in ("greater", "less"):
        return "inconclusive", f"unknown direction {direction!r}"
    if n is None or n < MIN_PAIRS:
        return "inconclusive", f"{TOO_FEW} (n={n or 0}, need {MIN_PAIRS})"
    if ci_low is None or ci_high is None or math.isnan(ci_low) or math.isnan(ci_high):
        return "inconclusive", "confidence interval undefined"
    m = abs(float(min_effect))
    p_ok = p_adjusted is None or math.isnan(p_adjusted) or p_adjusted < alpha
    if direction == "greater":
        clears, against = ci_low > m, ci_high < 0
        side = f"ci_low {ci_low:.4g} > min_effect {m:.4g}"
    else:
        clears, against = ci_high < -m, ci_low > 0
        side = f"ci_high {ci_high:.4g} < -min_effect {-m:.4g}"
    if clears and p_ok:
        return "reproduced", side + ("" if p_adjusted is None or math.isnan(p_adjusted)
                                     else f" and p_adjusted {p_adjusted:.3g} < {alpha}")
    if against:
        return "refuted", f"CI [{ci_low:.4g}, {ci_high:.4g}] lies on the other side of 0"
    if clears:
        return "inconclusive", f"CI clears min_effect but p_adjusted {p_adjusted:.3g} >= {alpha}"
    return "inconclusive", f"CI [{ci_low:.4g}, {ci_high:.4g}] does not clear min_effect {m:.4g} on the {direction} side"


# -- helpers --------------------------------------------------------------------------------

def _nan_to_none(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        seq = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [_nan_to_none(v) for v in seq]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.ndarray):
        return _nan_to_none(obj.tolist())
    return str(obj)


def _f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _canonical(name: str) -> str:
    try:
        method, args = parse_variant(name)
    except ConfigError:
        return name
    return variant_name(method, args)


def _select_arm(frame, name: str) -> tuple[Any, str | None]:
    """Rows of one arm of a comparison, or (empty, problem)."""
    canon = _canonical(name)
    rows = frame[frame["variant"] == canon]
    if len(rows) or "[" in canon:
        return rows, None
    rows = frame[frame["method"] == canon]
    if not len(rows):
        return rows, None
    per_key = rows.groupby(["benchmark", "seed"])["variant"].nunique()
    if (per_key > 1).any():
        variants = sorted(rows["variant"].unique())
        return rows.iloc[0:0], (f"{name!r} matches several variants ({', '.join(variants)}): "
                                "name one in task.yaml")
    return rows, None


def _base(task, claim, scale: str, kind: str) -> dict[str, Any]:
    return {
        "task": task.name, "scale": scale, "id": claim.id, "statement": claim.statement, "source": claim.source,
        "kind": kind, "metric": claim.metric, "treatment": claim.treatment, "control": claim.control,
        "benchmarks": list(claim.benchmarks), "direction": claim.direction, "min_effect": float(claim.min_effect),
        "function": claim.function, "note": claim.note,
        "verdict": "inconclusive", "reason": "", "error": None,
        "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan,
        "p_value": math.nan, "p_adjusted": math.nan,
        "n_seeds": 0, "n_pairs": 0, "n_missing": 0, "details": {},
    }


def _scale_keys(task, scale: str, benchmarks: list[str], arms: list[str]) -> set[tuple[str, int]]:
    """(benchmark, seed) pairs the scale says both arms should have run."""
    try:
        spec = task.config.scale(scale)
    except ConfigError:
        return set()
    keys = set()
    allowed = None
    for arm in arms:
        try:
            method = parse_variant(arm)[0]
            mb = set(task.config.method_benchmarks(scale, method))
        except (ConfigError, KeyError):
            continue
        allowed = mb if allowed is None else allowed & mb
    for b in benchmarks:
        if allowed is not None and b not in allowed:
            continue
        for s in spec.seeds:
            keys.add((b, int(s)))
    return keys


def _comparison(task, claim, frame, scale: str, out: dict[str, Any], n_boot: int, seed: int) -> None:
    rows = frame[frame["name"] == claim.metric]
    if claim.benchmarks:
        benchmarks = list(claim.benchmarks)
    else:
        try:
            benchmarks = list(task.config.scale(scale).benchmarks)
        except ConfigError:
            benchmarks = []
        benchmarks = list(dict.fromkeys(benchmarks + sorted(set(rows["benchmark"]))))
    rows = rows[rows["benchmark"].isin(benchmarks)]
    arms = {}
    for role, name in (("treatment", claim.treatment), ("control", claim.control)):
        arm, problem = _select_arm(rows, name)
        if problem:
            out["reason"] = problem
            out["error"] = problem
            return
        arms[role] = arm
    def usable(arm) -> dict[tuple[str, int], float]:
        good = {}
        for r in arm.itertuples(index=False):
            v = _f(r.value)
            if r.status == "ok" and math.isfinite(v):
                good[(r.benchmark, int(r.seed))] = v
        return good
    t_ok, c_ok = usable(arms["treatment"]), usable(arms["control"])
    seen = {(r.benchmark, int(r.seed)) for arm in arms.values() for r in arm.itertuples(index=False)}
    expected = _scale_keys(task, scale, benchmarks, [claim.treatment, claim.control]) | seen
    pairs = sorted(set(t_ok) & set(c_ok), key=lambda k: (k[0], k[1]))
    d = np.array([t_ok[k] - c_ok[k] for k in pairs], dtype=float)
    seeds = [k[1] for k in pairs]
    n_diverged = sum(1 for arm in arms.values() for r in arm.itertuples(index=False)
                     if r.status == "diverged" or not math.isfinite(_f(r.value)))
    missing = sorted(expected - set(pairs))
    out["n_pairs"] = len(pairs)
    out["n_seeds"] = len(set(seeds))
    out["n_missing"] = len(missing)
    if len(pairs):
        out["effect"] = float(d.mean())
        out["ci_low"], out["ci_high"] = paired_bootstrap_ci(d, clusters=seeds, n_boot=n_boot, seed=seed)
        out["p_value"] = sign_flip_pvalue(d, alternative=claim.direction, seed=seed)
    per_bench = {}
    for b in benchmarks:
        idx = [i for i, k in enumerate(pairs) if k[0] == b]
        t_vals = [v for k, v in t_ok.items() if k[0] == b]
        c_vals = [v for k, v in c_ok.items() if k[0] == b]
        if not (idx or t_vals or c_vals):
            continue
        per_bench[b] = {
            "n_pairs": len(idx),
            "mean_diff": float(d[idx].mean()) if idx else math.nan,
            "treatment_mean": float(np.mean(t_vals)) if t_vals else math.nan,
            "control_mean": float(np.mean(c_vals)) if c_vals else math.nan,
        }
    out["details"] = {
        "per_benchmark": per_bench,
        "n_diverged": n_diverged,
        "missing_pairs": [{"benchmark": b, "seed": s} for b, s in missing],
        "treatment_variants": sorted(set(arms["treatment"]["variant"])) if len(arms["treatment"]) else [],
        "control_variants": sorted(set(arms["control"]["variant"])) if len(arms["control"]) else [],
        "pairs": [{"benchmark": b, "seed": s, "diff": float(x)} for (b, s), x in zip(pairs, d)],
    }


def _function(task, claim, frame, out: dict[str, Any]) -> None:
    try:
        fn = task.claim_function(claim.function)
        ev = fn(frame.copy())
        if not isinstance(ev, ClaimEvidence):
            raise TypeError(f"claim function {claim.function!r} returned {type(ev).__name__}, "
                            "not a harness.api.ClaimEvidence")
    except Exception as e:  # noqa: BLE001 - one broken claim never hides the others
        msg = f"{type(e).__name__}: {e}"
        out["error"] = msg
        out["reason"] = f"claim function raised: {msg}"
        out["details"] = {"traceback": traceback.format_exc(limit=8)}
        return
    out["effect"], out["ci_low"], out["ci_high"] = _f(ev.effect), _f(ev.ci_low), _f(ev.ci_high)
    out["p_value"] = _f(ev.p_value)
    out["n_seeds"] = int(ev.n_seeds)
    out["n_pairs"] = None
    out["n_missing"] = None
    details = dict(ev.details or {})
    if ev.direction != claim.direction and claim.direction != "greater":
        details["direction_conflict"] = (f"task.yaml says {claim.direction!r}, the function "
                                         f"{ev.direction!r}; the function's is used")
    out["direction"] = ev.direction
    out["min_effect"] = max(abs(float(claim.min_effect)), abs(float(ev.min_effect)))
    out["details"] = details


# -- public API -----------------------------------------------------------------------------

def evaluate_claims(task, metrics_df, scale: str, alpha: float = 0.05, n_boot: int = 10_000,
                    seed: int = 0) -> list[dict[str, Any]]:
    """Verdicts for every claim of ``task`` (a :class:`harness.api.Task`) at ``scale``.

    ``metrics_df`` is :meth:`harness.registry.Registry.metrics` output (rows of other
    tasks or scales are ignored). Returns one JSON-ready dict per claim, in task.yaml
    order, with: task, scale, id, statement, source, kind ("comparison" | "function"),
    metric, treatment, control, benchmarks, direction, min_effect, function, note,
    verdict, reason, error, effect, ci_low, ci_high, p_value, p_adjusted, alpha,
    n_seeds, n_pairs, n_missing (None for function claims), details.
    """
    frame = metrics_df
    if len(frame):
        if "task" in frame.columns:
            frame = frame[frame["task"] == task.name]
        if "scale" in frame.columns:
            frame = frame[frame["scale"] == scale]
        if "seed" in frame.columns and scale in task.config.scales:
            # Only the study's seeds: runs at other seeds exist as dependencies (e.g. the
            # second member of an ensemble) and are not samples of the claim.
            frame = frame[frame["seed"].isin(task.config.scale(scale).seeds)]
    frame = frame.reset_index(drop=True)
    if not len(frame):  # a column-less empty frame is fine too
        from harness.registry import METRICS_COLUMNS, _frame

        frame = _frame([], METRICS_COLUMNS)
    results = []
    for claim in task.config.claim_objects():
        if claim.function:
            out = _base(task, claim, scale, "function")
            _function(task, claim, frame, out)
        else:
            out = _base(task, claim, scale, "comparison")
            _comparison(task, claim, frame, scale, out, n_boot, seed)
        results.append(out)
    adjusted = holm([r["p_value"] for r in results])
    for r, p_adj in zip(results, adjusted):
        r["p_adjusted"] = float(p_adj)
        r["alpha"] = alpha
        if r["error"]:  # reason already says what went wrong
            r["verdict"] = "inconclusive"
            continue
        n = r["n_seeds"] if r["kind"] == "function" else r["n_pairs"]
        r["verdict"], r["reason"] = verdict(r["ci_low"], r["ci_high"], r["p_adjusted"], r["direction"],
                                            r["min_effect"], n, alpha)
    return [_nan_to_none(r) for r in results]


def write_claims(results: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write results as a JSON list, atomically: sorted by task, claims in task.yaml order."""
    results = list(results)
    ordered = sorted(results, key=lambda r: str(r.get("task", "")))  # stable: keeps claim order
    path = Path(path)
    write_json_atomic(path, _nan_to_none(ordered))
    return path


def read_claims(path: str | Path) -> list[dict[str, Any]]:
    """Load a claims file written by :func:`write_claims`; ConfigError when unreadable."""
    import json

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run `harness claims --scale SCALE` first")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: corrupt claims file ({e}); rerun `harness claims`") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(f"{path}: a claims file is a JSON list of objects; rerun `harness claims`")
    return data
