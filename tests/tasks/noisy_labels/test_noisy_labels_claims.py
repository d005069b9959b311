"""task.yaml, the shape-claim functions on a synthetic metrics frame, and the figure."""


import numpy as np
import pandas as pd
import pytest

from tasks.noisy_labels import task

SEEDS = (0, 1, 2)
NOISY = ("digits-sym20", "digits-sym50", "digits-sym80", "digits-asym40")


def frame(values):
    """values: {(variant, benchmark, seed, metric): value} -> the registry's long frame."""
    rows = [{"run_id": f"{v}-{b}-{s}", "task": "noisy_labels", "method": v.split("[")[0], "variant": v,
             "benchmark": b, "seed": s, "scale": "small", "status": "ok", "name": m, "value": x,
             "higher_is_better": True} for (v, b, s, m), x in values.items()]
    return pd.DataFrame(rows)


def test_task_yaml_is_consistent():
    cfg = task.config
    assert cfg.primary_metric == "test_accuracy"
    assert len(cfg.claims) >= 7
    for c in cfg.claims:
        if c.function:
            assert callable(task.claim_function(c.function))
    small = set(cfg.scale("small").benchmarks)
    for c in cfg.claims:
        assert not c.benchmarks or small & set(c.benchmarks) or c.id.endswith("asym"), c.id
    assert len(cfg.scale("small").seeds) >= 8 and cfg.scale("paper").resources.gpu == 1
    pub = {(p.benchmark, p.method) for p in cfg.published}
    assert ("cifar10-sym50", "nested_coteach") in pub and ("clothing1m", "nested_coteach") in pub


def test_gap_grows_with_noise():
    vals = {}
    for s in SEEDS:
        vals[("ce_best", "digits-sym20", s, "test_accuracy")] = 90.0
        vals[("nested_best", "digits-sym20", s, "test_accuracy")] = 91.0 + 0.1 * s
        vals[("ce_best", "digits-sym50", s, "test_accuracy")] = 80.0
        vals[("nested_best", "digits-sym50", s, "test_accuracy")] = 85.0
    ev = task.claim_function("claim_gap_grows_with_noise")(frame(vals))
    # per seed: (85 - 80) - (91 + 0.1 s - 90)
    assert ev.per_seed == pytest.approx({0: 4.0, 1: 3.9, 2: 3.8}) and ev.direction == "greater"
    assert ev.details["mean_gap_nested_minus_ce_by_benchmark"]["digits-sym50"] == pytest.approx(5.0)


def test_clean_cost_and_kstar_and_fall():
    vals = {}
    for s in SEEDS:
        vals[("ce_best", "digits-clean", s, "test_accuracy")] = 97.0
        vals[("nested_best", "digits-clean", s, "test_accuracy")] = 96.5 - 0.1 * s
        vals[("nested_best", "digits-clean", s, "k_star_fraction")] = 0.9  # clean: not part of claim 3
        for i, b in enumerate(NOISY):
            vals[("nested_best", b, s, "k_star_fraction")] = 0.05 + 0.01 * i
            vals[("nested_best", b, s, "test_accuracy")] = 80.0 + s
            vals[("nested_best", b, s, "test_acc_at_K")] = 78.0 + s
    f = frame(vals)
    clean = task.claim_function("claim_clean_cost_small")(f)
    assert clean.per_seed == pytest.approx({0: 0.5, 1: 0.4, 2: 0.3})   # 1 + (96.5 - 0.1 s - 97)
    k = task.claim_function("claim_kstar_small")(f)
    # the four noisy benchmarks (k*/K = 0.05..0.08) averaged within each seed; clean left out
    assert k.per_seed == pytest.approx({s: 0.10 - 0.065 for s in SEEDS})
    fall = task.claim_function("claim_acc_falls_after_kstar")(f)
    assert fall.per_seed == pytest.approx({s: 2.0 for s in SEEDS})


def test_dropout_close_to_nested():
    vals = {}
    for s in SEEDS:
        for b, d in zip(NOISY, (1.0, -2.0, 3.0, 0.0)):
            vals[("nested_best", b, s, "test_accuracy")] = 80.0
            vals[("dropout_best", b, s, "test_accuracy")] = 80.0 + d
    ev = task.claim_function("claim_dropout_close_to_nested")(frame(vals))
    assert ev.per_seed == pytest.approx({s: 4.0 - 1.5 for s in SEEDS})   # 4 - mean |d| within a seed


def test_empty_frame_gives_no_evidence_not_an_error():
    empty = frame({})
    for name in ("claim_kstar_small", "claim_acc_falls_after_kstar", "claim_gap_grows_with_noise",
                 "claim_clean_cost_small", "claim_dropout_close_to_nested"):
        ev = task.claim_function(name)(empty)
        assert ev.per_seed == {} and ev.details["reason"] == "no usable runs"


def test_claims_evaluate_end_to_end():
    from harness.claims import evaluate_claims

    rng = np.random.default_rng(0)
    vals = {}
    for s in SEEDS:
        for b in NOISY + ("digits-clean",):
            for v, base in (("ce_best", 80), ("dropout_best", 82), ("nested_best", 83), ("coteaching_best", 84),
                            ("ensemble", 85), ("dropout_coteach", 86), ("nested_coteach", 87)):
                vals[(v, b, s, "test_accuracy")] = base + rng.normal(0, 0.1)
            vals[("nested_best", b, s, "test_acc_at_K")] = 80.0
            vals[("nested_best", b, s, "k_star_fraction")] = 0.05
    out = {c["id"]: c for c in evaluate_claims(task, frame(vals), "small")}
    assert all(c["error"] is None for c in out.values()), [c["error"] for c in out.values()]
    assert out["nested_beats_ce"]["verdict"] == "reproduced"
    assert out["nested_beats_ce"]["n_pairs"] == 9  # sym20/50/80 x 3 seeds; other scales' names ignored
    assert out["nested_beats_ce"]["per_seed"] == pytest.approx(
        {str(s): np.mean([vals[("nested_best", b, s, "test_accuracy")] - vals[("ce_best", b, s, "test_accuracy")]
                          for b in NOISY[:3]]) for s in SEEDS})
    assert out["kstar_small_fraction"]["verdict"] == "reproduced"


def test_figure_is_svg_and_deterministic():
    curves = [{"val": [50.0, 80.0, 70.0], "test": [48.0, 79.0, 65.0]}, {"val": [52, 81, 69], "test": [47, 78, 66]}]
    runs = pd.DataFrame([{"benchmark": "digits-sym50", "variant": "nested_best", "status": "ok", "scale": "small",
                          "info": {"acc_vs_k": c}} for c in curves]
                        + [{"benchmark": "digits-sym50", "variant": "ce", "status": "ok", "scale": "small", "info": {}}])
    figs = task.figures(runs, "small")
    assert len(figs) == 1 and figs[0][1].lstrip().startswith(("<?xml", "<svg")) and "</svg>" in figs[0][1]
    assert task.figures(runs, "small") == figs
    assert task.figures(runs.iloc[2:], "small") == []
