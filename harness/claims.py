"""Claims -> verdicts. The verdict rule lives here and nowhere else.

**The unit of inference is the seed.** Every claim reduces to one effect per independent
seed, ``e_1..e_n``; this module alone turns them into an interval, p-values and a verdict.

Per-seed effects
----------------
Comparison claims (``metric``, ``treatment``, ``control``, ``benchmarks``, ``direction``,
``min_effect``):

* runs are matched on ``variant`` (the claim's names are canonicalised, so ``m[b=1,a=2]``
  matches ``m[a=2,b=1]``; a bare method name whose method has a single variant per
  (benchmark, seed) is accepted too), on the claim's benchmarks (all of the scale when the
  list is empty);
* a pair is a (benchmark, seed) key with both arms, ``d = treatment - control`` (with
  ``relative: true``, ``d = (treatment - control) / |control|``, a unitless effect for claims
  whose benchmarks measure the metric in different units);
* a **diverged** arm (status ``diverged`` or a non-finite value) is evidence: with
  ``diverged: worst`` (the default) it takes the worst finite value of the metric seen on
  that benchmark at this scale in any run of the task, so divergence counts against the
  side that diverged; with ``diverged: exclude`` the pair is dropped. Either way it is counted
  in ``n_diverged``. A failed or absent run is missing (``n_missing``), never evidence;
* ``e_s = mean_b d_(b,s)`` over the benchmarks seed s has (a seed's benchmarks share its
  initialisation, data order and noise and are not independent samples); with
  ``per_benchmark: true`` the claim becomes one claim ``id@benchmark`` per benchmark.

Function claims (``function``): ``task.claim_function(name)(frame)`` receives the long metrics
frame of the task at this scale (every status but failed) and returns a
:class:`harness.api.ClaimEvidence` whose ``per_seed`` maps seed -> effect. Its ``direction``
is authoritative; the threshold is the larger of the evidence's and task.yaml's
``min_effect`` (task.yaml may tighten, never loosen). A function that raises or returns
something else gives ``undecidable`` with the ``error`` text; it never stops the others.

The rule (DESIGN §3, revised)
-----------------------------
With ``x_s = e_s`` (direction ``greater``) or ``x_s = -e_s`` (``less``), ``m = min_effect``,
and the Student-t tests of :func:`harness.stats.seed_tests` on the n finite x_s::

    p_reproduce = p(H0: mu_x <= m)        p_refute = p(H0: mu_x >= 0)

Both p-values of every pre-registered, testable claim of a task form **one Holm family**
(2k hypotheses for k claims): at an effect of exactly 0 with m = 0 both nulls are true, and a
family of the k reproduce tests alone plus one of the k refute tests would let the
family-wise rate of a false verdict reach 2 alpha. Exploratory claims (``exploratory: true``)
form a family of their own and are reported apart. Then::

    n < 3, or the design cannot decide (``undecidable``)   -> undecidable
    Holm-adjusted p_reproduce < alpha                      -> reproduced
    Holm-adjusted p_refute    < alpha                      -> refuted
    otherwise                                              -> inconclusive

Shown with every verdict: ``effect`` (mean of e) and its 95% t interval (``ci_low``,
``ci_high``); ``p_value``/``p_adjusted`` (the reproduce test, raw and Holm) and
``p_refute``/``p_refute_adjusted``; ``sign_flip_p``, the exact sign-flip p over the seeds on
the side the estimate favours (unadjusted; floor 2^-n), with ``fragile: true`` when it does
not reject at alpha although the t-test decided; ``mde``, the minimum detectable distance
beyond the null at this n and the observed spread, and ``seeds_needed`` to decide the
observed effect, both for a one-sided t-test at 80% power at the family's Bonferroni level
alpha / (2k) (a conservative bound for Holm's first step).

Results are JSON-ready dicts (NaN written as None); :func:`write_claims` stores them as
``results/claims-<scale>.json``. The calibration of this rule is held by simulation tests
(tests/test_claims_calibration.py), which run :func:`decide` itself.
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
from harness.stats import holm, min_detectable_effect, seed_tests, seeds_needed, sign_flip_pvalue

VERDICTS = ("reproduced", "refuted", "inconclusive", "undecidable")
#: Seeds with a finite effect below which a claim is undecidable.
MIN_SEEDS = 3
#: The power at which the minimum detectable effect and the seeds needed are stated.
POWER = 0.8
TOO_FEW = "fewer than 3 seeds with a finite effect"

_CODES = {0: "inconclusive", 1: "reproduced", 2: "refuted", 3: "undecidable"}


# -- the vectorised rule --------------------------------------------------------------------

def decide(effects: Any, min_effect: Any, direction: Any, alpha: float = 0.05,
           family: Any = None, undecidable: Any = None) -> dict[str, np.ndarray]:
    """The verdict rule on per-seed effects, vectorised (the simulations call this too).

    ``effects``: array (..., k, n): k claims of one task, n seed slots (NaN = no effect for
    that seed). ``min_effect``, ``direction`` (``"greater"``/``"less"``), ``family`` (int
    label per claim: claims sharing a label share a Holm family; default all one family; -1
    keeps a claim out of every family) and ``undecidable`` (bool per claim: the design cannot
    decide it) are per-claim arrays of length k. Leading axes are independent tasks.

    Returns arrays (..., k): the keys of :func:`harness.stats.seed_tests` (p-values NaN where
    the claim is not testable), plus ``p_reproduce_adjusted``, ``p_refute_adjusted`` and ``verdict`` (codes 0 inconclusive,
    1 reproduced, 2 refuted, 3 undecidable).
    """
    e = np.asarray(effects, dtype=float)
    k = e.shape[-2]
    family = np.zeros(k, dtype=int) if family is None else np.asarray(family, dtype=int)
    undecidable = np.zeros(k, dtype=bool) if undecidable is None else np.asarray(undecidable, dtype=bool)
    r = seed_tests(e, np.asarray(min_effect, dtype=float), np.asarray(direction))
    testable = (r["n"] >= MIN_SEEDS) & ~undecidable
    p_rep = np.where(testable, r["p_reproduce"], np.nan)
    p_ref = np.where(testable, r["p_refute"], np.nan)
    adj_rep = np.full(p_rep.shape, np.nan)
    adj_ref = np.full(p_ref.shape, np.nan)
    for label in np.unique(family[family >= 0]):
        member = family == label
        both = np.concatenate([np.where(member, p_rep, np.nan), np.where(member, p_ref, np.nan)], axis=-1)
        adj = holm(both)
        adj_rep = np.where(member, adj[..., :k], adj_rep)
        adj_ref = np.where(member, adj[..., k:], adj_ref)
    verdict = np.zeros(p_rep.shape, dtype=int)
    verdict = np.where(adj_rep < alpha, 1, verdict)
    verdict = np.where(adj_ref < alpha, 2, verdict)
    verdict = np.where(testable, verdict, 3)
    return {**r, "p_reproduce": p_rep, "p_refute": p_ref, "p_reproduce_adjusted": adj_rep,
            "p_refute_adjusted": adj_ref, "verdict": verdict}


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


def _base(task, claim, scale: str, kind: str, claim_id: str | None = None) -> dict[str, Any]:
    return {
        "task": task.name, "scale": scale, "id": claim_id or claim.id, "statement": claim.statement,
        "source": claim.source, "kind": kind, "metric": claim.metric, "treatment": claim.treatment,
        "control": claim.control, "benchmarks": list(claim.benchmarks), "direction": claim.direction,
        "min_effect": abs(float(claim.min_effect)), "function": claim.function, "note": claim.note,
        "relative": bool(getattr(claim, "relative", False)),
        "exploratory": bool(claim.exploratory), "diverged_policy": claim.diverged if kind == "comparison" else None,
        "verdict": "undecidable", "reason": "", "error": None, "undecidable": claim.undecidable_at(scale),
        "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan,
        "p_value": math.nan, "p_adjusted": math.nan, "p_refute": math.nan, "p_refute_adjusted": math.nan,
        "sign_flip_p": math.nan, "fragile": False, "mde": math.nan, "seeds_needed": math.nan,
        "n_seeds": 0, "n_pairs": None, "n_missing": None, "n_diverged": 0, "per_seed": {}, "details": {},
    }


def _scale_keys(task, scale: str, benchmarks: list[str], arms: list[str]) -> set[tuple[str, int]]:
    """(benchmark, seed) pairs the scale says both arms should have run."""
    try:
        spec = task.config.scale(scale)
    except ConfigError:
        return set()
    allowed = None
    for arm in arms:
        try:
            method = parse_variant(arm)[0]
            mb = set(task.config.method_benchmarks(scale, method))
        except (ConfigError, KeyError):
            continue
        allowed = mb if allowed is None else allowed & mb
    return {(b, int(s)) for b in benchmarks if allowed is None or b in allowed for s in spec.seeds}


def _claim_benchmarks(task, claim, rows, scale: str) -> list[str]:
    if claim.benchmarks:
        return list(claim.benchmarks)
    try:
        benchmarks = list(task.config.scale(scale).benchmarks)
    except ConfigError:
        benchmarks = []
    return list(dict.fromkeys(benchmarks + sorted(set(rows["benchmark"]))))


def _worst_by_benchmark(rows) -> dict[str, float]:
    """The worst finite value of the metric on each benchmark (any run, any variant)."""
    out = {}
    for b, g in rows.groupby("benchmark"):
        vals = g["value"].map(_f)
        vals = vals[np.isfinite(vals.to_numpy(dtype=float))]
        if len(vals):
            higher = bool(g["higher_is_better"].iloc[0]) if "higher_is_better" in g else True
            out[str(b)] = float(vals.min() if higher else vals.max())
    return out


def _arm_values(arm, policy: str, worst: dict[str, float]) -> tuple[dict[tuple[str, int], float], set]:
    """(benchmark, seed) -> value of one arm, and the keys where it diverged."""
    values, diverged = {}, set()
    for r in arm.itertuples(index=False):
        key = (str(r.benchmark), int(r.seed))
        v = _f(r.value)
        if r.status == "ok" and math.isfinite(v):
            values[key] = v
        elif r.status in ("ok", "diverged"):
            diverged.add(key)
            if policy == "worst" and key[0] in worst:
                values[key] = worst[key[0]]
    return values, diverged


def _comparisons(task, claim, frame, scale: str) -> list[dict[str, Any]]:
    """One result dict per tested unit of a comparison claim (one, or one per benchmark)."""
    rows = frame[frame["name"] == claim.metric]
    benchmarks = _claim_benchmarks(task, claim, rows, scale)
    rows = rows[rows["benchmark"].isin(benchmarks)]
    if claim.per_benchmark:
        arms = [claim.treatment, claim.control]
        present = [b for b in benchmarks if b in set(rows["benchmark"]) or _scale_keys(task, scale, [b], arms)]
        return [_comparison(task, claim, rows[rows["benchmark"] == b], scale, [b], f"{claim.id}@{b}")
                for b in present]
    return [_comparison(task, claim, rows, scale, benchmarks, None)]


def _comparison(task, claim, rows, scale: str, benchmarks: list[str], claim_id: str | None) -> dict[str, Any]:
    out = _base(task, claim, scale, "comparison", claim_id)
    out["benchmarks"] = benchmarks
    arms = {}
    for role, name in (("treatment", claim.treatment), ("control", claim.control)):
        arm, problem = _select_arm(rows, name)
        if problem:
            out["error"] = out["reason"] = problem
            return out
        arms[role] = arm
    worst = _worst_by_benchmark(rows)
    t_vals, t_div = _arm_values(arms["treatment"], claim.diverged, worst)
    c_vals, c_div = _arm_values(arms["control"], claim.diverged, worst)
    seen = {(str(r.benchmark), int(r.seed)) for arm in arms.values() for r in arm.itertuples(index=False)}
    expected = _scale_keys(task, scale, benchmarks, [claim.treatment, claim.control]) | seen
    pairs = sorted(set(t_vals) & set(c_vals))

    def diff(key) -> float:
        d = t_vals[key] - c_vals[key]
        if not claim.relative:
            return d
        return d / abs(c_vals[key]) if c_vals[key] != 0 else math.nan
    pairs = [k for k in pairs if math.isfinite(diff(k))]  # relative to a control of 0: undefined
    by_seed: dict[int, list[float]] = {}
    for b, s in pairs:
        by_seed.setdefault(s, []).append(diff((b, s)))
    out["per_seed"] = {s: float(np.mean(v)) for s, v in sorted(by_seed.items())}
    out["n_pairs"] = len(pairs)
    missing = sorted(expected - set(pairs) - (t_div | c_div))
    out["n_missing"] = len(missing)
    out["n_diverged"] = len(t_div | c_div)
    per_bench = {}
    for b in benchmarks:
        bt = [v for k, v in t_vals.items() if k[0] == b]
        bc = [v for k, v in c_vals.items() if k[0] == b]
        bd = [diff(k) for k in pairs if k[0] == b]
        if bt or bc or bd:
            per_bench[b] = {"n_pairs": len(bd), "mean_diff": float(np.mean(bd)) if bd else math.nan,
                            "treatment_mean": float(np.mean(bt)) if bt else math.nan,
                            "control_mean": float(np.mean(bc)) if bc else math.nan}
    out["details"] = {
        "per_benchmark": per_bench,
        "diverged": {"treatment": [{"benchmark": b, "seed": s} for b, s in sorted(t_div)],
                     "control": [{"benchmark": b, "seed": s} for b, s in sorted(c_div)],
                     "policy": claim.diverged,
                     "worst_value_by_benchmark": {b: v for b, v in worst.items() if any(k[0] == b for k in t_div | c_div)}},
        "missing_pairs": [{"benchmark": b, "seed": s} for b, s in missing],
        "treatment_variants": sorted(set(arms["treatment"]["variant"])) if len(arms["treatment"]) else [],
        "control_variants": sorted(set(arms["control"]["variant"])) if len(arms["control"]) else [],
        "pairs": [{"benchmark": b, "seed": s, "diff": diff((b, s))} for b, s in pairs],
    }
    return out


def _function(task, claim, frame, scale: str) -> dict[str, Any]:
    out = _base(task, claim, scale, "function")
    try:
        fn = task.claim_function(claim.function)
        ev = fn(frame.copy())
        if not isinstance(ev, ClaimEvidence):
            raise TypeError(f"claim function {claim.function!r} returned {type(ev).__name__}, "
                            "not a harness.api.ClaimEvidence")
        per_seed = {int(s): _f(v) for s, v in dict(ev.per_seed).items()}
        if ev.direction not in ("greater", "less"):
            raise ValueError(f"ClaimEvidence.direction must be 'greater' or 'less', not {ev.direction!r}")
    except Exception as e:  # noqa: BLE001 - one broken claim never hides the others
        msg = f"{type(e).__name__}: {e}"
        out["error"] = msg
        out["reason"] = f"claim function raised: {msg}"
        out["details"] = {"traceback": traceback.format_exc(limit=8)}
        return out
    details = dict(ev.details or {})
    if ev.direction != claim.direction and claim.direction != "greater":
        details["direction_conflict"] = (f"task.yaml says {claim.direction!r}, the function "
                                         f"{ev.direction!r}; the function's is used")
    out["direction"] = ev.direction
    out["min_effect"] = max(abs(float(claim.min_effect)), abs(float(ev.min_effect)))
    out["undecidable"] = claim.undecidable_at(scale) or ev.undecidable or ""
    out["per_seed"] = dict(sorted(per_seed.items()))
    out["details"] = details
    return out


def _fill(out: dict[str, Any], r: Mapping[str, np.ndarray], i: int, alpha: float, family_size: int) -> None:
    """Copy claim i's statistics into its result and write the verdict and its reason."""
    n = int(r["n"][i])
    out["n_seeds"] = n
    for key, src in (("effect", "effect"), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                     ("p_value", "p_reproduce"), ("p_adjusted", "p_reproduce_adjusted"),
                     ("p_refute", "p_refute"), ("p_refute_adjusted", "p_refute_adjusted")):
        out[key] = float(r[src][i])
    code = int(r["verdict"][i])
    out["verdict"] = _CODES[code]
    if out["error"]:
        return  # reason already says what went wrong; verdict stays undecidable
    sign = -1.0 if out["direction"] == "less" else 1.0
    m = out["min_effect"]
    x = np.array([sign * v for v in out["per_seed"].values() if math.isfinite(v)])
    sd = float(r["sd"][i])
    level = alpha / max(1, 2 * family_size)  # Bonferroni bound of Holm's first step
    out["mde"] = min_detectable_effect(sd, n, level, POWER)
    x_mean = sign * out["effect"] if n else math.nan
    if math.isfinite(x_mean):
        distance = x_mean - m if x_mean > m else (-x_mean if x_mean < 0 else 0.0)
        out["seeds_needed"] = seeds_needed(distance, sd, level, POWER) if n >= 2 else math.nan
    # The distribution-free check on the side the estimate favours.
    favours_reproduce = math.isfinite(x_mean) and x_mean > m / 2
    if x.size:
        out["sign_flip_p"] = (sign_flip_pvalue(x - m, "greater") if favours_reproduce
                              else sign_flip_pvalue(x, "less"))
    if code in (1, 2):
        out["fragile"] = bool(not out["sign_flip_p"] < alpha)
    units = f"{n} seed{'s' if n != 1 else ''}"
    if code == 3:
        out["reason"] = (f"undecidable by design: {out['undecidable']}" if out["undecidable"]
                         else f"{TOO_FEW} ({units}; need {MIN_SEEDS})")
    elif code == 1:
        out["reason"] = (f"t-test over {units}: effect beyond min_effect {m:g} on the {out['direction']} side, "
                         f"p {out['p_value']:.3g} (Holm {out['p_adjusted']:.3g}) < {alpha}")
    elif code == 2:
        out["reason"] = (f"t-test over {units}: effect on the wrong side of 0, "
                         f"p {out['p_refute']:.3g} (Holm {out['p_refute_adjusted']:.3g}) < {alpha}")
    else:
        need = out["seeds_needed"]
        need_txt = ("no number of seeds decides an effect between 0 and min_effect" if need == math.inf
                    else f"about {need:.0f} seeds would decide an effect this size" if math.isfinite(need) else "")
        out["reason"] = (f"neither test rejects after Holm over {units} (p_reproduce {out['p_adjusted']:.3g}, "
                         f"p_refute {out['p_refute_adjusted']:.3g}); detectable at this n: {out['mde']:.3g}"
                         + (f"; {need_txt}" if need_txt else ""))
    if out["fragile"]:
        out["reason"] += f"; fragile: the exact sign-flip p {out['sign_flip_p']:.3g} does not reject"


# -- public API -----------------------------------------------------------------------------

def evaluate_claims(task, metrics_df, scale: str, alpha: float = 0.05) -> list[dict[str, Any]]:
    """Verdicts for every claim of ``task`` (a :class:`harness.api.Task`) at ``scale``.

    ``metrics_df`` is :meth:`harness.registry.Registry.metrics` output (rows of other
    tasks or scales are ignored). Returns one JSON-ready dict per tested claim, in task.yaml
    order (a ``per_benchmark`` claim gives one per benchmark, ``id@benchmark``), with at least:
    task, scale, id, statement, source, kind ("comparison" | "function"), metric, treatment,
    control, benchmarks, direction, min_effect, function, note, exploratory, verdict, reason,
    error, effect, ci_low, ci_high, p_value, p_adjusted, p_refute, p_refute_adjusted,
    sign_flip_p, fragile, mde, seeds_needed, alpha, n_seeds, n_pairs, n_missing, n_diverged,
    per_seed, details.
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
    results: list[dict[str, Any]] = []
    for claim in task.config.claim_objects():
        if claim.function:
            results.append(_function(task, claim, frame, scale))
        else:
            results += _comparisons(task, claim, frame, scale)
    if not results:
        return []
    seeds = sorted({s for r in results for s in r["per_seed"]})
    effects = np.full((len(results), max(1, len(seeds))), np.nan)
    col = {s: j for j, s in enumerate(seeds)}
    for i, r in enumerate(results):
        for s, v in r["per_seed"].items():
            effects[i, col[s]] = v
    family = np.array([-1 if r["error"] else (1 if r["exploratory"] else 0) for r in results])
    decided = decide(effects, [r["min_effect"] for r in results], [r["direction"] for r in results], alpha,
                     family=family, undecidable=[bool(r["undecidable"]) or bool(r["error"]) for r in results])
    for i, r in enumerate(results):
        r["alpha"] = alpha
        size = int(((decided["n"] >= MIN_SEEDS) & (family == family[i]) & (decided["verdict"] != 3)).sum())
        _fill(r, decided, i, alpha, size)
    return [_nan_to_none(r) for r in results]


def undecidable_by_design(task_config, scale: str) -> list[str]:
    """What cannot be decided at a scale before anything runs: every claim when the scale has
    fewer than 3 seeds, and the claims task.yaml declares ``undecidable`` there. Also states the
    minimum detectable effect of the scale's seeds in units of the per-seed standard deviation."""
    try:
        n = len(task_config.scale(scale).seeds)
    except ConfigError:
        return []
    claims = task_config.claim_objects()
    if not claims:
        return []
    name = task_config.name
    if n < MIN_SEEDS:
        return [f"{name}: scale {scale!r}: {n} seed(s), so all {len(claims)} claims are undecidable "
                f"(a verdict needs {MIN_SEEDS})"]
    out = [f"{name}: scale {scale!r}: claim {c.id!r} is undecidable by design: {c.undecidable_at(scale)}"
           for c in claims if c.undecidable_at(scale)]
    k = sum(1 for c in claims if not c.exploratory and not c.undecidable_at(scale)) or 1
    mde = min_detectable_effect(1.0, n, 0.05 / (2 * k), POWER)
    out.append(f"{name}: scale {scale!r}: {n} seeds detect (80% power, Holm over {k} claims) an effect of "
               f"about {mde:.2g} per-seed standard deviations beyond its threshold")
    return out


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
