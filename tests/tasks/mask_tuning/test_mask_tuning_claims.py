"""The claim functions on a hand-made metrics frame (one effect per seed, benchmarks averaged
within a seed) and the task's figures on a hand-made runs frame."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.mask_tuning import analysis as A
from tasks.mask_tuning import task


def _frame(rows):
    return pd.DataFrame([{"run_id": f"r{i}", "task": "mask_tuning", "scale": "small", "status": "ok",
                          "method": v.split("[")[0], "variant": v, "benchmark": b, "seed": s, "name": n, "value": x}
                         for i, (v, b, s, n, x) in enumerate(rows)])


def test_margin_claims_average_benchmarks_within_a_seed():
    rows = [("amt", "shift-1shot", 0, "accuracy", 40.0), ("linear_probe", "shift-1shot", 0, "accuracy", 45.0),
            ("amt", "shift-16shot", 0, "accuracy", 60.0), ("linear_probe", "shift-16shot", 0, "accuracy", 55.0),
            ("amt", "shift-16shot", 1, "accuracy", 50.0), ("linear_probe", "shift-16shot", 1, "accuracy", 51.0),
            ("amt", "heldout-16shot", 1, "accuracy", 70.0)]  # no linear probe there: not paired, left out
    ev = A.claim_amt_matches_linear_probe(task, _frame(rows))
    # seed 0: mean(-5, +5) + 2 = 2; seed 1: -1 + 2 = 1
    assert ev.per_seed == {0: pytest.approx(2.0), 1: pytest.approx(1.0)}
    assert ev.direction == "greater" and ev.min_effect == 0.0


def test_random_mask_claim_uses_sixteen_shots_and_flips_the_sign():
    rows = [("amt_random", "shift-16shot", 0, "accuracy", 30.0), ("zero_shot", "shift-16shot", 0, "accuracy", 29.0),
            ("amt_random", "shift-4shot", 0, "accuracy", 90.0), ("zero_shot", "shift-4shot", 0, "accuracy", 10.0),
            ("amt_random", "shift-16shot", 1, "accuracy", 20.0), ("zero_shot", "shift-16shot", 1, "accuracy", 29.0)]
    ev = A.claim_random_mask_no_gain(task, _frame(rows))
    assert ev.per_seed == {0: pytest.approx(0.0), 1: pytest.approx(10.0)}  # 1 - (+1), 1 - (-9)


def test_sparsity_and_cost_claims():
    rows = [("amt", "a-16shot", 0, "mask_sparsity", 3.0), ("amt", "b-16shot", 0, "mask_sparsity", 9.0),
            ("ramt", "a-16shot", 0, "accuracy", 50.0), ("amt", "a-16shot", 0, "accuracy", 53.0),
            ("amt", "a-16shot", 1, "mask_sparsity", float("nan"))]  # a non-finite value: no effect
    f = _frame(rows)
    assert A.claim_masks_sparse(task, f).per_seed == {0: pytest.approx(-1.0)}  # 5 - mean(3, 9)
    assert A.claim_ramt_costs_little(task, f).per_seed == {0: pytest.approx(-1.0)}  # 2 - (53 - 50)


def test_every_function_claim_exists_and_the_comparisons_name_known_methods():
    cfg = task.config
    for c in cfg.claims:
        if c.function:
            assert callable(task.claim_function(c.function))
        else:
            assert c.treatment in cfg.methods and c.control in cfg.methods


def test_figures_accuracy_vs_shots_and_sparsity_per_layer():
    runs = []
    for seed in (0, 1):
        for shots in (1, 16):
            for v, acc in (("amt", 50.0 + shots), ("zero_shot", 40.0)):
                info = {"metrics": {"accuracy": acc}}
                if v == "amt":
                    info["sparsity_per_tensor"] = {"visual.conv1.weight": 1.0, "visual.transformer.resblocks.0.attn.in_proj_weight": 3.0}
                runs.append({"task": "mask_tuning", "scale": "small", "status": "ok", "variant": v,
                             "benchmark": f"shift-{shots}shot", "seed": seed, "info": info})
    figs = A.figures(task, pd.DataFrame(runs), "small")
    titles = [t for t, _ in figs]
    assert titles == ["Accuracy vs shots, shift", "Sparsity per layer"]
    assert "<svg" in figs[0][1] and "amt (2 seeds)" in figs[0][1] and "block0.attn.in_proj" in figs[1][1]
    assert A.figures(task, pd.DataFrame(runs), "paper") == []
