"""The statistics behind claims and report tables, written next to the code.

Everything here is deterministic: each resampling function takes a ``seed`` and draws
from its own ``numpy.random.Generator``, so the same inputs give the same interval and
the same p-value on every machine (a claims file does not flicker between runs).

Notation: ``x_1..x_n`` are per-seed values of one variant; ``d_1..d_n`` are paired
differences (treatment - control) sharing a (benchmark, seed) key. ``mean`` is the
arithmetic mean, ``q_a`` the a-quantile (numpy's default, linear interpolation).

Non-finite inputs (NaN, +-inf: a diverged run) are dropped by every function here;
callers that want to count them do so before calling (see :mod:`harness.claims`).
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
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


# -- multiple comparisons -----------------------------------------------------------------

def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjustment (controls the family-wise error rate).

    Let ``p_(1) <= ... <= p_(m)`` be the m non-NaN p-values sorted ascending. Then::

        p~_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j))

    The running max makes adjusted values monotone in the raw order; the cap keeps
    them at most 1. NaN entries (claims without a p-value) are passed through
    untouched and do not count towards m. Returns an array in the input order.
    """
    p = np.asarray(list(pvalues) if not isinstance(pvalues, np.ndarray) else pvalues, dtype=float).ravel()
    out = p.copy()
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        out[i] = min(1.0, running)
    return out


# -- report helpers -----------------------------------------------------------------------

def mean_ci(
    values: Iterable[float], level: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> dict[str, float | int]:
    """Summary of one cell of a report table.

    Returns ``mean``, ``ci_low``/``ci_high`` (:func:`bootstrap_mean_ci`), ``n`` (finite
    values used), ``std`` (sample standard deviation, ddof = 1; NaN when n < 2) and
    ``n_nonfinite`` (values dropped: diverged runs). ``mean`` is NaN when n = 0.
    """
    raw = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float).ravel()
    a = raw[np.isfinite(raw)]
    lo, hi = bootstrap_mean_ci(a, level=level, n_boot=n_boot, seed=seed)
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
    n_boot: int = 10_000,
    seed: int = 0,
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
        rows.append({**dict(zip(by, key)), **mean_ci(grp[value].to_numpy(dtype=float), level, n_boot, seed)})
    return pd.DataFrame(rows, columns=cols)


def tied_with_best(
    per_seed_values: Mapping[str, Mapping[Hashable, float]],
    higher_is_better: bool,
    alpha: float = 0.05,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> set[str]:
    """Variants statistically tied with the best one (for 'best in bold' in reports).

    Rule (non-finite values are dropped first; variants left with no value are never
    tied):

    1. The best variant is the one with the best mean (highest if ``higher_is_better``,
       else lowest); exact ties on the mean go to the first in the mapping's order.
    2. Another variant V is tied with the best B when they are not significantly
       different:

       * with >= 2 seeds shared by V and B: the percentile-bootstrap CI (``level``) of
         the mean paired difference ``d_s = B_s - V_s`` over the shared seeds contains 0;
       * otherwise (no pairing possible): their bootstrap CIs of the mean overlap,
         and a variant whose CI is undefined (fewer than 2 values) is tied, since
         nothing says it differs.

    Why a CI and not the sign-flip test: with n shared seeds the exact test's smallest
    two-sided p-value is ``2 / 2^n``, so with 5 or fewer seeds it could never separate
    two variants and every table would be one big tie. The paired CI does separate
    variants whose differences all share a sign; it is a descriptive mark for tables,
    not a claim test (claims use harness.claims). The result always contains the best.
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
    b_ci = bootstrap_mean_ci(list(b_vals.values()), level=level, n_boot=n_boot, seed=seed)
    for v, vals in clean.items():
        if v == best:
            continue
        shared = [s for s in b_vals if s in vals]
        if len(shared) >= 2:
            d = [b_vals[s] - vals[s] for s in shared]
            lo, hi = paired_bootstrap_ci(d, level=level, n_boot=n_boot, seed=seed)
            if lo <= 0.0 <= hi:
                tied.add(v)
        else:
            v_ci = bootstrap_mean_ci(list(vals.values()), level=level, n_boot=n_boot, seed=seed)
            if any(math.isnan(c) for c in (*b_ci, *v_ci)):
                tied.add(v)
            elif v_ci[0] <= b_ci[1] and b_ci[0] <= v_ci[1]:
                tied.add(v)
    return tied
