"""``harness compare REV_A REV_B``: per (task, benchmark, variant, metric), the mean over
seeds at each commit, the difference, and a paired sign-flip p-value over shared seeds.

Revisions are resolved with git (``HEAD~5`` works) and matched against the commit
recorded in each run's provenance; history across commits lives in the registry.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd

from harness.config import ConfigError


def resolve_rev(rev: str) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", rev], capture_output=True, text=True, timeout=10)
    except OSError:
        out = None
    if out is None or out.returncode != 0:
        if len(rev) >= 7 and all(c in "0123456789abcdef" for c in rev.lower()):
            return rev.lower()
        raise ConfigError(f"cannot resolve git revision {rev!r}: give a commit hash or run inside the checkout")
    return out.stdout.strip()


def compare_commits(rev_a: str, rev_b: str, results_dir="results", registry_url=None, task=None, scale=None) -> pd.DataFrame:
    from harness.registry import Registry
    from harness.stats import sign_flip_pvalue

    reg = Registry(url=registry_url, results_dir=results_dir)
    reg.ingest_dir(results_dir)
    a, b = (reg.by_commit(resolve_rev(r), task=task, scale=scale) for r in (rev_a, rev_b))
    keys = ["task", "scale", "benchmark", "variant", "name"]
    rows = []
    if a.empty or b.empty:
        return pd.DataFrame(columns=keys + ["mean_a", "mean_b", "delta", "n_shared_seeds", "p_value"])
    for key, ga in a.groupby(keys):
        gb = b[(b[keys] == pd.Series(key, index=keys)).all(axis=1)]
        if gb.empty:
            continue
        va, vb = ga.groupby("seed")["value"].mean(), gb.groupby("seed")["value"].mean()
        shared = va.index.intersection(vb.index)
        d = (vb[shared] - va[shared]).to_numpy()
        p = sign_flip_pvalue(d, alternative="two-sided") if len(d) else np.nan
        rows.append(dict(zip(keys, key), mean_a=va.mean(), mean_b=vb.mean(), delta=vb.mean() - va.mean(),
                         n_shared_seeds=len(shared), p_value=p))
    return pd.DataFrame(rows)
