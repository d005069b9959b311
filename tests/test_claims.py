"""harness.claims: verdicts from synthetic runs of a throwaway task."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from factories import make_record, make_task
from harness.api import ClaimEvidence, Task
from harness.claims import evaluate_claims, read_claims, verdict, write_claims
from harness.config import ConfigError
from harness.registry import Registry
from harness.stats import bootstrap_mean_ci, holm, paired_bootstrap_ci

SEEDS = range(5)
BENCHES = ("b1", "b2")
# noise differences, symmetric around ~0, per (benchmark, seed)
NOISE = {"b1": [0.05, -0.05, 0.05, -0.05, 0.0], "b2": [-0.05, 0.05, -0.04, 0.04, 0.01]}


def base_acc(b, s):
    return 0.6 + 0.02 * s + (0.01 if b == "b2" else 0.0)


def study() -> list[dict]:
    """Runs of every variant; 'better' has one diverged run (b2, seed 4)."""
    recs = []
    for b in BENCHES:
        for s in SEEDS:
            a = base_acc(b, s)
            jitter = 0.001 * s
            recs.append(make_record(variant="base", benchmark=b, seed=s, metrics={"acc": a, "loss": 1.0}))
            better = math.nan if (b, s) == ("b2", 4) else a + 0.1 + jitter
            recs.append(make_record(variant="better", benchmark=b, seed=s, metrics={"acc": better, "loss": 0.7}))
            recs.append(make_record(variant="worse", benchmark=b, seed=s, metrics={"acc": a - 0.1 - jitter, "loss": 1.3}))
            recs.append(make_record(variant="noisy", benchmark=b, seed=s, metrics={"acc": a + NOISE[b][s], "loss": 1.0}))
            recs.append(make_record(variant="grid[wd=0.2]", benchmark=b, seed=s, metrics={"acc": a + 0.2, "loss": 1.0}))
    for s in (0, 1):  # only two seeds of this grid point ran
        recs.append(make_record(variant="grid[wd=0.1]", benchmark="b1", seed=s, metrics={"acc": 0.99, "loss": 1.0}))
    recs.append(make_record(variant="grid[wd=0.1]", benchmark="b1", seed=2, status="failed"))
    return recs


@pytest.fixture(scope="module")
def metrics_df(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    reg = Registry(f"sqlite:///{root / 'registry.sqlite'}")   # never a registry named by the environment
    for r in study():
        reg.ingest_record(r)
    reg.ingest_record(make_record(task="other", variant="base"))  # another task: ignored
    df = reg.metrics()
    reg.close()
    return df


class ShapeTask(Task):
    """Function claims of the toy task."""

    def gap_claim(self, frame):
        self.seen_rows = len(frame)
        acc = frame[(frame["name"] == "acc") & (frame["status"] == "ok")]
        per_seed = acc.pivot_table(index="seed", columns="variant", values="value", aggfunc="mean")
        gap = (per_seed["grid[wd=0.2]"] - per_seed["base"]).to_numpy()
        lo, hi = bootstrap_mean_ci(gap, n_boot=2000)
        return ClaimEvidence(effect=float(gap.mean()), ci_low=lo, ci_high=hi, n_seeds=len(gap),
                             direction="greater", min_effect=0.05, details={"gap_by_seed": gap})

    def broken_claim(self, frame):
        raise ValueError("no such column 'k*'")

    def not_evidence(self, frame):
        return {"effect": 1.0}


CLAIMS = [
    {"id": "better_beats_base", "statement": "better > base", "source": "Table 1", "metric": "acc",
     "treatment": "better", "control": "base"},
    {"id": "worse_beats_base", "statement": "worse > base", "source": "Table 1", "metric": "acc",
     "treatment": "worse", "control": "base"},
    {"id": "noisy_beats_base", "statement": "noisy > base", "source": "Table 2", "metric": "acc",
     "treatment": "noisy", "control": "base"},
    {"id": "big_gain", "statement": "better > base by 0.2", "source": "Sec 4", "metric": "acc",
     "treatment": "better", "control": "base", "min_effect": 0.2},
    {"id": "lower_loss", "statement": "better has lower loss", "source": "Fig 2", "metric": "loss",
     "treatment": "better", "control": "base", "direction": "less", "min_effect": 0.1},
    {"id": "few_runs", "statement": "wd=0.1 > base on b1", "source": "Fig 3", "metric": "acc",
     "treatment": "grid[wd=0.1]", "control": "base", "benchmarks": ["b1"]},
    {"id": "ambiguous", "statement": "grid > base", "source": "Fig 3", "metric": "acc",
     "treatment": "grid", "control": "base"},
    {"id": "gap", "statement": "wd=0.2 beats base by a margin", "source": "Fig 4", "function": "gap_claim"},
    {"id": "broken", "statement": "k* shrinks", "source": "Fig 5", "function": "broken_claim"},
    {"id": "wrong_type", "statement": "returns a dict", "source": "Fig 6", "function": "not_evidence"},
]


@pytest.fixture(scope="module")
def results(tmp_path_factory, metrics_df):
    task = make_task(tmp_path_factory.mktemp("task"), CLAIMS, ShapeTask)
    out = evaluate_claims(task, metrics_df, "small", n_boot=2000)
    return task, {r["id"]: r for r in out}, out


def test_clear_positive_effect_reproduced_with_diverged_run_counted(results):
    _, r, _ = results
    c = r["better_beats_base"]
    assert c["verdict"] == "reproduced", c["reason"]
    assert (c["n_pairs"], c["n_seeds"], c["n_missing"]) == (9, 5, 1)
    assert c["details"]["n_diverged"] == 1
    assert c["details"]["missing_pairs"] == [{"benchmark": "b2", "seed": 4}]
    diffs = [0.1 + 0.001 * s for s in SEEDS] + [0.1 + 0.001 * s for s in range(4)]
    assert c["effect"] == pytest.approx(np.mean(diffs))
    assert c["p_value"] == pytest.approx(1 / 2**9)   # exact: 9 positive differences
    assert c["ci_low"] > 0.1 and c["ci_high"] < 0.105
    pairs = c["details"]["pairs"]   # the CI resamples seeds (clusters), not single pairs
    assert (c["ci_low"], c["ci_high"]) == pytest.approx(paired_bootstrap_ci(
        [p["diff"] for p in pairs], clusters=[p["seed"] for p in pairs], n_boot=2000))
    assert (c["ci_low"], c["ci_high"]) != pytest.approx(paired_bootstrap_ci([p["diff"] for p in pairs], n_boot=2000))
    assert c["kind"] == "comparison" and c["direction"] == "greater" and c["task"] == "toy"


def test_clear_negative_effect_refuted(results):
    c = results[1]["worse_beats_base"]
    assert c["verdict"] == "refuted" and c["ci_high"] < 0 and c["p_value"] == pytest.approx(1.0)


def test_noise_is_inconclusive(results):
    c = results[1]["noisy_beats_base"]
    assert c["verdict"] == "inconclusive"
    assert c["ci_low"] < 0 < c["ci_high"] and c["p_value"] > 0.2


def test_min_effect_respected(results):
    c = results[1]["big_gain"]
    assert c["ci_low"] > 0 and c["ci_high"] < 0.2
    assert c["verdict"] == "inconclusive" and "min_effect" in c["reason"]


def test_direction_less(results):
    c = results[1]["lower_loss"]
    assert c["effect"] == pytest.approx(-0.3) and c["verdict"] == "reproduced", c["reason"]


def test_too_few_pairs_inconclusive_and_missing_counted(results):
    c = results[1]["few_runs"]
    assert c["verdict"] == "inconclusive" and "too few successful runs" in c["reason"]
    assert (c["n_pairs"], c["n_missing"]) == (2, 3)   # b1 x 5 seeds expected, seeds 2-4 missing/failed


def test_ambiguous_bare_method_name(results):
    c = results[1]["ambiguous"]
    assert c["verdict"] == "inconclusive" and "several variants" in c["error"]


def test_function_claim(results):
    task, r, _ = results
    c = r["gap"]
    assert c["kind"] == "function" and c["verdict"] == "reproduced", c["reason"]
    assert c["effect"] == pytest.approx(0.2) and c["n_seeds"] == 5 and c["min_effect"] == 0.05
    assert task.seen_rows == 52 * 2   # 52 runs of this task x 2 metrics; the other task's row filtered out
    assert c["p_value"] is None and c["p_adjusted"] is None        # NaN -> None; the CI decided
    assert c["details"]["gap_by_seed"] == pytest.approx([0.2] * 5)


def test_function_claims_that_fail_do_not_stop_others(results):
    _, r, out = results
    assert r["broken"]["verdict"] == "inconclusive"
    assert "ValueError: no such column 'k*'" in r["broken"]["error"]
    assert "claim function raised" in r["broken"]["reason"]
    assert r["wrong_type"]["verdict"] == "inconclusive" and "ClaimEvidence" in r["wrong_type"]["error"]
    assert [c["id"] for c in out] == [c["id"] for c in CLAIMS]


def test_holm_within_task(results):
    out = results[2]
    raw = [math.nan if c["p_value"] is None else c["p_value"] for c in out]
    expected = holm(raw)
    for c, e in zip(out, expected):
        if math.isnan(e):
            assert c["p_adjusted"] is None
        else:
            assert c["p_adjusted"] == pytest.approx(e) and c["p_adjusted"] >= c["p_value"]
    # 'better' has p = 1/512 among 6 p-values: adjusted 6/512
    assert results[1]["better_beats_base"]["p_adjusted"] == pytest.approx(6 / 512)


def test_json_ready_and_required_keys(results):
    out = results[2]
    json.dumps(out, allow_nan=False)
    required = {"task", "id", "statement", "source", "verdict", "effect", "ci_low", "ci_high", "p_value",
                "p_adjusted", "n_seeds", "n_pairs", "n_missing", "metric", "treatment", "control",
                "direction", "min_effect", "kind", "note", "reason", "details"}
    assert all(required <= set(c) for c in out)


@pytest.mark.parametrize("args, expected", [
    ((0.11, 0.2, 0.01, "greater", 0.1, 5), "reproduced"),
    ((0.11, 0.2, 0.06, "greater", 0.1, 5), "inconclusive"),   # CI fine, p too large
    ((0.11, 0.2, math.nan, "greater", 0.1, 5), "reproduced"),  # no p: the CI decides
    ((0.09, 0.2, 0.01, "greater", 0.1, 5), "inconclusive"),   # CI touches min_effect
    ((-0.3, -0.01, 0.9, "greater", 0.0, 5), "refuted"),
    ((0.11, 0.2, 0.01, "greater", 0.1, 2), "inconclusive"),   # too few
    ((-0.3, -0.11, 0.01, "less", 0.1, 3), "reproduced"),
    ((0.01, 0.3, 0.9, "less", 0.1, 3), "refuted"),
    ((-0.3, 0.01, 0.01, "less", 0.0, 3), "inconclusive"),
])
def test_verdict_rule(args, expected):
    assert verdict(*args)[0] == expected


def test_write_and_read_claims(tmp_path, results):
    out = results[2]
    other = [{"task": "alpha", "id": "z", "verdict": "refuted", "effect": math.nan},
             {"task": "alpha", "id": "a", "verdict": "reproduced", "effect": 1.0}]
    path = write_claims(out + other, tmp_path / "claims-small.json")
    back = read_claims(path)
    assert [(c["task"], c["id"]) for c in back][:2] == [("alpha", "z"), ("alpha", "a")]
    assert [c["id"] for c in back[2:]] == [c["id"] for c in CLAIMS]
    assert back[0]["effect"] is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        read_claims(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="not found"):
        read_claims(tmp_path / "missing.json")


def test_no_runs_at_all(tmp_path):
    import pandas as pd

    task = make_task(tmp_path, CLAIMS[:1])
    (c,) = evaluate_claims(task, pd.DataFrame(), "small", n_boot=200)
    assert c["verdict"] == "inconclusive" and c["n_pairs"] == 0 and c["n_missing"] == 10
    assert c["effect"] is None


def test_claim_function_finds_methods_then_the_tasks_analysis_module():
    from harness.plugins import get_task

    toy = get_task("toy")
    with pytest.raises(AttributeError, match="has no claim function 'claim_nope' \\(not a method\\)"):
        toy.claim_function("claim_nope")  # the toy plugin has no analysis module
    from tasks.noisy_labels import analysis, task

    calls = []
    original = analysis.claim_kstar_small
    try:
        analysis.claim_kstar_small = lambda t, frame: calls.append((t, frame)) or "evidence"
        assert task.claim_function("claim_kstar_small")("frame") == "evidence"
    finally:
        analysis.claim_kstar_small = original
    assert calls == [(task, "frame")]  # bound to the task, called with the frame
    with pytest.raises(AttributeError, match="or of tasks.noisy_labels.analysis"):
        task.claim_function("claim_nope")
