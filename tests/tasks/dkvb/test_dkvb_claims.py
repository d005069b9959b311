"""Claim functions: one effect per seed from a hand-made metrics frame (the core decides), the
declarative claims through the core, and the report figures."""

from __future__ import annotations

import math

import pandas as pd

from tasks.dkvb import analysis, task


def _frame(rows):
    return pd.DataFrame([{"run_id": f"r{i}", "task": "dkvb", "method": v.split("[")[0], "variant": v, "benchmark": b,
                          "seed": s, "scale": "small", "status": "ok", "name": n, "value": x, "higher_is_better": True}
                         for i, (v, b, s, n, x) in enumerate(rows)])


def test_collapse_effect_is_margin_minus_distance_to_the_last_task_share():
    f = _frame([("linear_probe", "mnist-5x2", 0, "test_accuracy", 25.0), ("linear_probe", "mnist-5x2", 0, "last_task_share", 20.0),
                ("linear_probe", "digits-5x2", 0, "test_accuracy", 45.0), ("linear_probe", "digits-5x2", 0, "last_task_share", 20.0),
                ("linear_probe", "mnist-5x2", 1, "test_accuracy", 20.0), ("linear_probe", "mnist-5x2", 1, "last_task_share", 20.0)])
    ev = analysis.claim_linear_probe_collapses(task, f)
    # seed 0: mean of (10 - 5) and (10 - 25) = -5; seed 1: 10 - 0 = 10
    assert ev.per_seed == {0: -5.0, 1: 10.0} and ev.direction == "greater" and ev.min_effect == 0.0
    assert analysis.claim_mlp_collapses(task, f).per_seed == {}


def test_close_to_iid_masking_sharing_and_toy_effects():
    f = _frame([("dkvb", "mnist-5x2", 0, "test_accuracy", 88.0), ("dkvb_iid", "mnist-5x2", 0, "test_accuracy", 90.0),
                ("dkvb", "mnist-5x2", 0, "test_accuracy_unmasked", 87.5), ("dkvb", "mnist-5x2", 0, "share_forgetting_corr", 0.3),
                ("dkvb", "toy2d", 0, "test_accuracy", 99.0), ("dkvb", "toy2d", 0, "test_accuracy_unmasked", 96.0),
                ("dkvb", "toy2d", 0, "share_forgetting_corr", 0.1),
                ("dkvb_rp", "toy2d", 3, "test_accuracy", 99.0), ("mlp", "toy2d", 3, "test_accuracy", 26.0)])
    assert analysis.claim_dkvb_close_to_iid(task, f).per_seed == {0: 3.0}  # 5 - (90 - 88)
    assert analysis.claim_masking_helps(task, f).per_seed == {0: 1.75}  # mean of 0.5 and 3.0
    assert math.isclose(analysis.claim_key_sharing_predicts_forgetting(task, f).per_seed[0], 0.2)
    assert analysis.claim_toy_random_projections_keep_regions(task, f).per_seed == {3: 48.0}  # 99 - 26 - 25


def test_every_claim_evaluates_through_the_core():
    from harness.claims import evaluate_claims

    rows = []
    for s in range(4):
        for b in ("mnist-5x2", "digits-5x2", "docstrings-5x2", "toy2d"):
            for v, acc in (("dkvb", 90 + s), ("dkvb_iid", 91), ("linear_probe", 21), ("mlp", 20 + s % 2),
                           ("linear_probe_iid", 90), ("mlp_iid", 92), ("dkvb_linear_decoder", 20),
                           ("dkvb_mlp_decoder", 21), ("dkvb_ema_keys", 30), ("dkvb_few_codebooks", 80 - s),
                           ("dkvb_few_pairs", 85), ("dkvb_rp", 98)):
                rows.append((v, b, s, "test_accuracy", float(acc)))
                rows.append((v, b, s, "last_task_share", 20.0))
            rows += [("dkvb", b, s, "test_accuracy_unmasked", 89.0 + s), ("dkvb", b, s, "share_forgetting_corr", 0.2 + 0.01 * s)]
    results = {r["id"]: r for r in evaluate_claims(task, _frame(rows), "small")}
    declared = {c.id for c in task.config.claims}
    assert {r.split("@")[0] for r in results} == declared
    assert results["dkvb_beats_linear_probe@mnist-5x2"]["verdict"] == "reproduced"
    assert results["linear_probe_collapses"]["verdict"] == "reproduced"
    assert results["more_codebooks_help"]["verdict"] == "reproduced"
    assert all(r["n_seeds"] == 4 for r in results.values())


def test_figures_draw_toy_regions_and_stream_curves():
    grid = {"size": 4, "lo": 0.05, "hi": 0.95, "after_task": ["0" * 16, "0011" * 4, "01234567" * 2, "7" * 16]}
    info = {"tasks": [[0, 4], [1, 5], [2, 6], [3, 7]], "grid": grid, "toy_means": {"0": [0.25, 0.25]},
            "acc_all_after_task": [25.0, 50.0, 75.0, 99.0]}
    runs = pd.DataFrame([{"variant": v, "benchmark": "toy2d", "seed": 0, "status": "ok", "scale": "small", "info": info}
                         for v in ("dkvb", "linear_probe", "dkvb_iid")])
    figs = analysis.figures(task, runs, "small")
    titles = [t for t, _ in figs]
    assert titles[0].startswith("2-D toy: decision regions") and any("Accuracy over the stream, toy2d" in t for t in titles)
    assert all(svg.lstrip().startswith("<?xml") or "<svg" in svg[:400] for _, svg in figs)
