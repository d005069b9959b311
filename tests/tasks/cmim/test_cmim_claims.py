"""The claim functions on a synthetic metrics frame with known per-seed effects, and the figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.api import ClaimEvidence
from tasks.cmim import task
from tasks.cmim.analysis import variant


def _frame(values):
    """values: {(variant, benchmark, seed, metric): value} -> the long metrics frame."""
    rows = [{"run_id": f"{v}-{b}-{s}", "task": "cmim", "method": v.split("[")[0], "variant": v, "benchmark": b,
             "seed": s, "scale": "small", "status": "ok", "name": m, "value": x, "higher_is_better": True}
            for (v, b, s, m), x in values.items()]
    return pd.DataFrame(rows)


def test_variant_names_match_the_grid():
    names = {v.variant for v in task.config.variants("small")}
    for m in ("ae", "vae", "amim", "cmim", "cmim_sum", "infonce", "cvae"):
        assert variant(m, 16) in names and variant(m, 256) in names
    assert variant("cmim") == "cmim[batch_size=256]"


def test_batch_claims_hand_computed():
    vals = {}
    for s in range(3):
        for b, off in (("digits", 0.0), ("mnist", 0.02)):
            vals[(variant("infonce", 256), b, s, "probe_score")] = 0.90 + off
            vals[(variant("infonce", 16), b, s, "probe_score")] = 0.80 + off - 0.01 * s
            vals[(variant("cmim", 256), b, s, "probe_score")] = 0.85
            vals[(variant("cmim", 16), b, s, "probe_score")] = 0.84
            vals[(variant("cmim_sum", 256), b, s, "probe_score")] = 0.85
            vals[(variant("cmim_sum", 16), b, s, "probe_score")] = 0.88
    f = _frame(vals)
    ev = task.claim_function("claim_batch_robust_vs_infonce")(f)
    assert isinstance(ev, ClaimEvidence) and ev.direction == "greater"
    # (0.10 + 0.01 s) - 0.01 on both benchmarks
    assert ev.per_seed == pytest.approx({0: 0.09, 1: 0.10, 2: 0.11})
    ev6 = task.claim_function("claim_sum_reintroduces_batch_sensitivity")(f)
    assert ev6.per_seed == pytest.approx({0: 0.02, 1: 0.02, 2: 0.02})  # |-0.03| - |0.01|


def test_recon_sharpness_and_informative_claims_hand_computed():
    vals = {}
    for s in range(3):
        vals[(variant("amim"), "digits", s, "recon_error")] = 0.010
        vals[(variant("cmim"), "digits", s, "recon_error")] = 0.0102          # +2% of MIM
        vals[(variant("vae"), "digits", s, "recon_error")] = 0.020
        vals[(variant("amim"), "digits", s, "uniformity")] = 2.0
        vals[(variant("cmim"), "digits", s, "uniformity")] = 2.5 + 0.1 * s
        vals[(variant("amim"), "digits", s, "mean_sigma")] = 0.10
        vals[(variant("cmim"), "digits", s, "mean_sigma")] = 0.10
        for m, gain in (("amim", 0.02), ("cmim", 0.03), ("vae", 0.01 * (s + 1)), ("infonce", 0.05)):
            vals[(variant(m), "digits", s, "probe_score")] = 0.8
            vals[(variant(m), "digits", s, "probe_score_x")] = 0.8 + gain
    f = _frame(vals)
    ev2 = task.claim_function("claim_recon_close_to_mim_better_than_vae")(f)
    # min(0.05 - 0.02, (0.020 - 0.0102) / 0.020 = 0.49) = 0.03
    assert ev2.per_seed == pytest.approx({0: 0.03, 1: 0.03, 2: 0.03})
    ev5 = task.claim_function("claim_contrastive_spreads_keeps_sharp")(f)
    assert ev5.per_seed == pytest.approx({0: 0.5, 1: 0.6, 2: 0.7})      # sigma margin 10 pp is not binding
    ev4 = task.claim_function("claim_informative_embeddings_help")(f)
    assert ev4.per_seed == pytest.approx({0: 0.01, 1: 0.02, 2: 0.02})   # the smallest gain of the four
    assert ev4.details["smallest_gain_method_per_seed"][0] == "vae"


def test_sigma_above_tolerance_makes_claim_5_negative():
    vals = {}
    for s in range(3):
        vals[(variant("amim"), "digits", s, "uniformity")] = 2.0
        vals[(variant("cmim"), "digits", s, "uniformity")] = 3.0
        vals[(variant("amim"), "digits", s, "mean_sigma")] = 0.10
        vals[(variant("cmim"), "digits", s, "mean_sigma")] = 0.13                # 30% larger
    ev = task.claim_function("claim_contrastive_spreads_keeps_sharp")(_frame(vals))
    assert ev.per_seed == pytest.approx({0: -20.0, 1: -20.0, 2: -20.0})


def test_missing_runs_give_no_effect():
    ev = task.claim_function("claim_batch_robust_vs_infonce")(_frame({}))
    assert ev.per_seed == {} and "reason" in ev.details


def test_figures_from_runs_info():
    rows = []
    for s in range(2):
        for m in ("amim", "cmim", "infonce"):
            for bs in (16, 256):
                rows.append({"benchmark": "digits", "method": m, "variant": variant(m, bs), "seed": s, "scale": "small",
                             "status": "ok", "config": {"batch_size": bs},
                             "info": {"batch_size": bs, "w_rec": 1.0, "metrics": {
                                 "probe_score": 0.8 + 0.01 * s, "probe_score_x": 0.85, "recon_error": 0.01 + 0.001 * s}}})
    figs = task.figures(pd.DataFrame(rows), "small")
    assert len(figs) == 3 and all("<svg" in svg for _, svg in figs)
    assert task.figures(pd.DataFrame(), "small") == []
