"""The statistics behind claims and report tables, written next to the code.

The unit of inference is the **seed**: every claim reduces to one effect per independent
seed ``e_1..e_n`` (a comparison averages its benchmarks within a seed first, because the
benchmarks of one seed share its initialisation, data order and noise draws and are not
independent). On those n numbers:

* **Student-t** (:func:`seed_tests`, :func:`t_interval`): with ``mean`` the sample mean,
  ``sd`` the sample standard deviation (ddof = 1) and ``se = sd / sqrt(n)``::

      95% CI          = mean -+ t_{0.975, n-1} * se
      p(H0: mu <= c)  = P(T_{n-1} >= (mean - c) / se)        (one-sided, "greater")
      p(H0: mu >= c)  = P(T_{n-1} <= (mean - c) / se)        (one-sided, "less")

  exact under normal per-seed effects and close to nominal for symmetric heavy tails (the
  t-test is conservative there). A zero spread gives t = +-inf (p = 0 or 1) when the mean is
  off the null value, and p = 1 on it.
* **Holm** (:func:`holm`): step-down family-wise error control, vectorised over leading
  axes so the calibration simulations run the very code the verdicts use.
* **Exact sign-flip** (:func:`sign_flip_pvalue`): the distribution-free robustness check
  shown beside each verdict (its p has a floor of 2^-n).
* **Design** (:func:`min_detectable_effect`, :func:`seeds_needed`): what n seeds can detect,
  and how many seeds an observed effect needs, for a one-sided t-test at 80% power.

Bootstrap intervals (:func:`bootstrap_mean_ci`, :func:`paired_bootstrap_ci`) are kept for
descriptive plots only: at 3 seeds the percentile bootstrap is about [min, max] of the seed
means and covers the true mean ~74% of the time, so nothing decides with it.

Everything is deterministic: each resampling function takes a ``seed`` and draws from its
own ``numpy.random.Generator``. Non-finite inputs (NaN, +-inf: a missing or diverged seed)
are dropped by every function here; callers that want to count them do so first.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "seed_tests",
    "t_interval",
    "min_detectable_effect",
    "seeds_needed",
    "bootstrap_mean_ci",
    "paired_bootstrap_ci",
    "sign_flip_pvalue",
    "holm",
    "mean_ci",
    "mean_ci_table",
    "tied_with_best",
    "EXACT_MAX_N",
]

#: Up to this many differences, :func:`sign_flip_pvalue` enumerates all 2^n sign patterns.
EXACT_MAX_N = 16

_CHUNK = 2000  # resamples per vectorised batch (bounds memory for large n)


def _finite(x: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=float).ravel()
    return a[np.isfinite(a)]


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


# -- bootstrap -----------------------------------------------------------------------------

def bootstrap_mean_ci(
    x: Iterable[float], level: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Draw ``B = n_boot`` resamples ``x*_b`` of size n from ``x`` with replacement and
    compute ``m_b = mean(x*_b)``. With ``a = 1 - level``::

        CI = ( q_{a/2}(m_1..m_B),  q_{1-a/2}(m_1..m_B) )

    Returns ``(nan, nan)`` when fewer than 2 finite values remain (no spread to
    resample). Deterministic for a given ``seed``.
    """
    _check_level(level)
    a = _finite(x)
    n = a.size
    if n < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        stop = min(n_boot, start + _CHUNK)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = a[idx].mean(axis=1)
    alpha = 1.0 - level
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def paired_bootstrap_ci(
    diffs: Iterable[float],
    clusters: Sequence[Hashable] | None = None,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean paired difference, optionally by cluster.

    Without ``clusters`` this is :func:`bootstrap_mean_ci` of the differences.

    With ``clusters`` (one label per difference, e.g. the seed of each (benchmark,
    seed) pair) whole clusters are resampled: draw G cluster labels with replacement
    from the G distinct clusters, and for resample b compute::

        m_b = sum_{g in draw_b} S_g / sum_{g in draw_b} N_g

    where ``S_g`` is the sum and ``N_g`` the count of differences in cluster g, i.e.
    the mean of every difference of the drawn clusters, all of a cluster together.

    Why: the differences of one seed across benchmarks are not independent (the same
    seed fixes initialisation, data order and label noise draws shared by the
    benchmarks of a study), so treating them as independent would understate the
    variance and give too narrow an interval. Resampling seeds is the resampling unit
    that *is* independent. Returns ``(nan, nan)`` with fewer than 2 clusters.
    """
    _check_level(level)
    d = np.asarray(list(diffs) if not isinstance(diffs, np.ndarray) else diffs, dtype=float).ravel()
    if clusters is None:
        return bootstrap_mean_ci(d, level=level, n_boot=n_boot, seed=seed)
    labels = list(clusters)
    if len(labels) != d.size:
        raise ValueError(f"clusters has {len(labels)} labels for {d.size} differences")
    keep = np.isfinite(d)
    d = d[keep]
    labels = [lab for lab, k in zip(labels, keep) if k]
    uniq: dict[Hashable, int] = {}
    codes = np.array([uniq.setdefault(lab, len(uniq)) for lab in labels], dtype=int)
    g = len(uniq)
    if g < 2:
        return (math.nan, math.nan)
    sums = np.bincount(codes, weights=d, minlength=g)
    counts = np.bincount(codes, minlength=g).astype(float)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        stop = min(n_boot, start + _CHUNK)
        idx = rng.integers(0, g, size=(stop - start, g))
        means[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = 1.0 - level
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


# -- permutation test ----------------------------------------------------------------------

def sign_flip_pvalue(
    diffs: Iterable[float],
    alternative: str = "greater",
    n_perm: int = 20_000,
    seed: int = 0,
    clusters: Sequence[Hashable] | None = None,
) -> float:
    """Paired sign-flip permutation p-value for the mean difference.

    Null hypothesis: each difference is symmetric about 0 (treatment and control are
    exchangeable within a pair), so flipping the sign of any difference gives an equally
    likely data set. Statistic ``T(d) = mean(d)``; for a sign vector ``s in {-1,+1}^n``,
    ``T_s = mean(s * d)``. The observed sign pattern is one of the patterns.

    * ``greater``:   p = P_s( T_s >= T_obs )
    * ``less``:      p = P_s( T_s <= T_obs )
    * ``two-sided``: p = P_s( |T_s| >= |T_obs| )

    For ``n <= 16`` all ``2^n`` patterns are enumerated and p is exact (``d = [1, 2, 3]``,
    greater: only the all-plus pattern reaches 6/3, so p = 1/8). Above that, ``m = n_perm``
    random patterns are drawn and ``p = (b + 1) / (m + 1)``, with b the number of drawn
    patterns at least as extreme: the observed pattern counts as one draw, so p is never
    0 and the test stays valid (Phipson & Smyth 2010). Ties are counted as extreme
    (compared with a relative tolerance of 1e-9 to absorb float rounding).

    ``clusters`` (optional): flip whole clusters together (the cluster sums are the
    flipped units), valid when differences within a cluster are dependent; n is then
    the number of clusters. Returns NaN for no finite differences.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    d = np.asarray(list(diffs) if not isinstance(diffs, np.ndarray) else diffs, dtype=float).ravel()
    if clusters is not None:
        labels = list(clusters)
        if len(labels) != d.size:
            raise ValueError(f"clusters has {len(labels)} labels for {d.size} differences")
        keep = np.isfinite(d)
        uniq: dict[Hashable, int] = {}
        codes = np.array([uniq.setdefault(lab, len(uniq)) for lab, k in zip(labels, keep) if k], dtype=int)
        # The mean of sign-flipped clusters is sum_g s_g S_g / N: flip cluster sums.
        units = np.bincount(codes, weights=d[keep], minlength=len(uniq)) if len(uniq) else np.array([])
    else:
        units = d[np.isfinite(d)]
    n = units.size
    if n == 0:
        return math.nan
    # Work with sums: mean differs by the constant factor 1/N, which does not change ranks.
    t_obs = float(units.sum())
    tol = 1e-9 * max(1.0, float(np.abs(units).sum()))

    def extreme(t: np.ndarray) -> np.ndarray:
        if alternative == "greater":
            return t >= t_obs - tol
        if alternative == "less":
            return t <= t_obs + tol
        return np.abs(t) >= abs(t_obs) - tol

    if n <= EXACT_MAX_N:
        patterns = np.arange(2**n, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((patterns >> np.arange(n)) & 1)  # bit set -> -1
        t = signs @ units
        return float(np.count_nonzero(extreme(t)) / t.size)
    rng = np.random.default_rng(seed)
    b = 0
    for start in range(0, n_perm, _CHUNK):
        stop = min(n_perm, start + _CHUNK)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(stop - start, n))
        b += int(np.count_nonzero(extreme(signs @ units)))
    return float((b + 1) / (n_perm + 1))


# -- seed-level Student-t ------------------------------------------------------------------

def _t_cdf(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    from scipy.special import stdtr

    return stdtr(df, t)


def _t_quantile(q: float, df: np.ndarray) -> np.ndarray:
    from scipy.special import stdtrit

    return stdtrit(df, q)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, mean, sd)`` over the last axis, ignoring non-finite entries (NaN where n < 1 / 2)."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    n = ok.sum(axis=-1)
    filled = np.where(ok, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=-1) / n
        dev = np.where(ok, x - mean[..., None], 0.0)
        sd = np.sqrt((dev ** 2).sum(axis=-1) / (n - 1))
    mean = np.where(n >= 1, mean, np.nan)
    sd = np.where(n >= 2, sd, np.nan)
    return n, mean, sd


def _one_sided_p(mean: np.ndarray, se: np.ndarray, df: np.ndarray, null: np.ndarray | float,
                 upper: bool) -> np.ndarray:
    """P(T_df >= t) (``upper``) or P(T_df <= t) with t = (mean - null) / se; se = 0 handled."""
    diff = mean - null
    with np.errstate(invalid="ignore", divide="ignore"):
        t = diff / se
    # Zero spread: the data sit on one value; off the null value the test is certain, on it
    # nothing is rejected.
    with np.errstate(invalid="ignore"):
        t = np.where(se == 0, np.where(diff == 0, -np.inf if upper else np.inf, np.sign(diff) * np.inf), t)
    p = 1.0 - _t_cdf(t, df) if upper else _t_cdf(t, df)
    # 1 - cdf loses precision far in the tail: use the symmetric form there.
    if upper:
        p = np.where(t > 0, _t_cdf(-t, df), p)
    return np.where(np.isfinite(mean) & (df >= 1), p, np.nan)


def seed_tests(effects: Any, min_effect: Any = 0.0, direction: Any = "greater",
               level: float = 0.95) -> dict[str, np.ndarray]:
    """The two one-sided Student-t tests of a claim on its per-seed effects.

    ``effects``: array (..., n) of per-seed effects, NaN/inf for a seed without one.
    ``min_effect`` (>= 0) and ``direction`` ("greater" | "less", or +1 / -1) broadcast against
    the leading axes (one value per claim). With the effect oriented by the direction,
    ``x = +e`` (greater) or ``x = -e`` (less) and ``m = |min_effect|``::

        p_reproduce = p(H0: mu_x <= m)      reject -> the claimed effect is there
        p_refute    = p(H0: mu_x >= 0)      reject -> the effect is on the wrong side of 0

    Returns arrays over the leading axes: ``n`` (finite seeds), ``effect`` (mean of e),
    ``sd``, ``ci_low``/``ci_high`` (the ``level`` t interval of the mean of e, NaN for n < 2),
    ``p_reproduce``, ``p_refute`` (NaN for n < 2).
    """
    _check_level(level)
    e = np.asarray(effects, dtype=float)
    sign = np.where(np.asarray(direction) == "less", -1.0, 1.0) if np.asarray(direction).dtype.kind in "US" \
        else np.sign(np.asarray(direction, dtype=float))
    m = np.abs(np.asarray(min_effect, dtype=float))
    n, mean, sd = _moments(e)
    df = np.where(n >= 2, n - 1, 0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = sd / np.sqrt(n)
        half = _t_quantile(0.5 + level / 2, np.where(df >= 1, df, np.nan)) * se
    x_mean = sign * mean
    return {
        "n": n,
        "effect": mean,
        "sd": sd,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "p_reproduce": _one_sided_p(x_mean, se, df, m, upper=True),
        "p_refute": _one_sided_p(x_mean, se, df, 0.0, upper=False),
    }


def t_interval(x: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of the finite values of ``x``; (nan, nan) with n < 2.

    ``mean -+ t_{(1+level)/2, n-1} * sd / sqrt(n)``: at n = 3 the 95% half-width is
    4.30 standard errors, which is what it takes to cover 95% of the time.
    """
    r = seed_tests(_finite(x), level=level)
    return (float(r["ci_low"]), float(r["ci_high"]))


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true distance from the null that a one-sided t-test at level ``alpha`` detects
    with probability ``power`` at n seeds with spread ``sd`` (normal approximation of the
    non-central t)::

        MDE = (t_{1-alpha, n-1} + t_{power, n-1}) * sd / sqrt(n)

    NaN when n < 2 or sd is unknown; 0 for a zero spread.
    """
    if n is None or n < 2 or sd is None or not math.isfinite(sd):
        return math.nan
    df = n - 1
    return float((_t_quantile(1 - alpha, df) + _t_quantile(power, df)) * sd / math.sqrt(n))


def seeds_needed(distance: float, sd: float, alpha: float = 0.05, power: float = 0.8,
                 n_min: int = 3, n_max: int = 10_000) -> float:
    """The fewest seeds n >= ``n_min`` whose :func:`min_detectable_effect` is <= ``distance``
    (how far the true effect lies beyond the null it must clear). ``inf`` when the distance is
    not positive or more than ``n_max`` seeds would be needed; NaN when sd is unknown."""
    if sd is None or not math.isfinite(sd) or distance is None or not math.isfinite(distance):
        return math.nan
    if distance <= 0:
        return math.inf
    if sd == 0:
        return float(n_min)
    ns = np.arange(n_min, n_max + 1)
    df = (ns - 1).astype(float)
    mde = (_t_quantile(1 - alpha, df) + _t_quantile(power, df)) * sd / np.sqrt(ns)
    ok = np.flatnonzero(mde <= distance)
    return float(ns[ok[0]]) if ok.size else math.inf


# -- multiple comparisons -----------------------------------------------------------------

def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjustment (controls the family-wise error rate), over the last axis.

    Let ``p_(1) <= ... <= p_(m)`` be the m non-NaN p-values of a family sorted ascending::

        p~_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j))

    The running max makes adjusted values monotone in the raw order; the cap keeps them at
    most 1. NaN entries (hypotheses not tested) pass through and do not count towards m.
    Leading axes are independent families (the calibration tests adjust thousands at once).
    """
    p = np.asarray(list(pvalues) if not isinstance(pvalues, np.ndarray) else pvalues, dtype=float)
    if p.ndim == 0:
        p = p[None]
    order = np.argsort(np.where(np.isnan(p), np.inf, p), axis=-1, kind="stable")
    sorted_p = np.take_along_axis(p, order, axis=-1)
    m = (~np.isnan(p)).sum(axis=-1, keepdims=True)
    rank = np.arange(p.shape[-1])
    scaled = np.where(np.isnan(sorted_p), -np.inf, (m - rank) * sorted_p)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(scaled, axis=-1))
    adjusted_sorted = np.where(np.isnan(sorted_p), np.nan, adjusted_sorted)
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted_sorted, axis=-1)
    return out


# -- report helpers -----------------------------------------------------------------------

def mean_ci(values: Iterable[float], level: float = 0.95) -> dict[str, float | int]:
    """Summary of one cell of a report table.

    Returns ``mean``, ``ci_low``/``ci_high`` (the seed-level Student-t interval,
    :func:`t_interval`, the same interval claims report), ``n`` (finite values used), ``std``
    (sample standard deviation, ddof = 1; NaN when n < 2) and ``n_nonfinite`` (values
    dropped: diverged runs). ``mean`` is NaN when n = 0.
    """
    raw = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float).ravel()
    a = raw[np.isfinite(raw)]
    lo, hi = t_interval(a, level=level)
    return {
        "mean": float(a.mean()) if a.size else math.nan,
        "ci_low": lo,
        "ci_high": hi,
        "n": int(a.size),
        "std": float(a.std(ddof=1)) if a.size >= 2 else math.nan,
        "n_nonfinite": int(raw.size - a.size),
    }


def mean_ci_table(
    frame: Any,
    by: Sequence[str] = ("benchmark", "variant", "name"),
    value: str = "value",
    level: float = 0.95,
):
    """One :func:`mean_ci` row per group of a long frame (e.g. ``Registry.metrics()``).

    Returns a DataFrame with the ``by`` columns then mean, ci_low, ci_high, n, std,
    n_nonfinite; groups in sorted order. An empty input gives an empty frame with
    those columns.
    """
    import pandas as pd

    by = list(by)
    cols = by + ["mean", "ci_low", "ci_high", "n", "std", "n_nonfinite"]
    if len(frame) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object if c in by else ("int64" if c in ("n", "n_nonfinite") else float)) for c in cols})
    rows = []
    for key, grp in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **mean_ci(grp[value].to_numpy(dtype=float), level)})
    return pd.DataFrame(rows, columns=cols)


def tied_with_best(
    per_seed_values: Mapping[str, Mapping[Hashable, float]],
    higher_is_better: bool,
    level: float = 0.95,
) -> set[str]:
    """Variants statistically tied with the best one (for 'best in bold' in reports).

    Rule (non-finite values are dropped first; variants left with no value are never
    tied):

    1. The best variant is the one with the best mean (highest if ``higher_is_better``,
       else lowest); exact ties on the mean go to the first in the mapping's order.
    2. Another variant V is tied with the best B when they are not significantly
       different at the seed level, as claims decide:

       * with >= 2 seeds shared by V and B: the Student-t interval (``level``) of the
         mean paired difference ``d_s = B_s - V_s`` over the shared seeds contains 0
         (a zero spread with a non-zero mean is a real difference);
       * otherwise (no pairing possible): their t intervals of the mean overlap, and a
         variant whose interval is undefined (fewer than 2 values) is tied, since nothing
         says it differs.

    A descriptive mark for tables, not a claim test (claims use harness.claims, with
    multiplicity control). The result always contains the best.
    """
    clean: dict[str, dict[Hashable, float]] = {}
    for variant, per_seed in per_seed_values.items():
        vals = {s: float(v) for s, v in per_seed.items() if v is not None and math.isfinite(float(v))}
        if vals:
            clean[variant] = vals
    if not clean:
        return set()
    means = {v: float(np.mean(list(vals.values()))) for v, vals in clean.items()}
    best = None
    for v, m in means.items():  # first in order wins exact ties
        if best is None or (m > means[best] if higher_is_better else m < means[best]):
            best = v
    tied = {best}
    b_vals = clean[best]
    b_ci = t_interval(list(b_vals.values()), level=level)
    for v, vals in clean.items():
        if v == best:
            continue
        shared = [s for s in b_vals if s in vals]
        if len(shared) >= 2:
            lo, hi = t_interval([b_vals[s] - vals[s] for s in shared], level=level)
            if lo <= 0.0 <= hi:
                tied.add(v)
        else:
            v_ci = t_interval(list(vals.values()), level=level)
            if any(math.isnan(c) for c in (*b_ci, *v_ci)):
                tied.add(v)
            elif v_ci[0] <= b_ci[1] and b_ci[0] <= v_ci[1]:
                tied.add(v)
    return tied
