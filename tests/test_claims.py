"""harness.claims: verdicts from synthetic runs of a throwaway task."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from factories import make_record, make_task
from harness.api import ClaimEvidence, Task
from harness.claims import VERDICTS, decide, evaluate_claims, read_claims, undecidable_by_design, write_claims
from harness.config import ConfigError
from harness.registry import Registry
from harness.stats import holm, t_interval

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
        gap = per_seed["grid[wd=0.2]"] - per_seed["base"]
        return ClaimEvidence(per_seed=gap.to_dict(), direction="greater", min_effect=0.05,
                             details={"gap_by_seed": gap.to_numpy()})

    def two_seed_claim(self, frame):
        return ClaimEvidence(per_seed={0: 1.0, 1: 2.0, 2: math.nan})

    def by_design_claim(self, frame):
        return ClaimEvidence(per_seed={s: 1.0 + s for s in SEEDS}, undecidable="a 3-point fit has no residual")

    def broken_claim(self, frame):
        raise ValueError("no such column 'k*'")

    def not_evidence(self, frame):
        return {"effect": 1.0}


CLAIMS = [
    {"id": "better_beats_base", "statement": "better > base", "source": "Table 1", "metric": "acc",
     "treatment": "better", "control": "base", "diverged": "exclude"},
    {"id": "better_counting_divergence", "statement": "better > base", "source": "Table 1", "metric": "acc",
     "treatment": "better", "control": "base"},
    {"id": "worse_beats_base", "statement": "worse > base", "source": "Table 1", "metric": "acc",
     "treatment": "worse", "control": "base"},
    {"id": "noisy_beats_base", "statement": "noisy > base", "source": "Table 2", "metric": "acc",
     "treatment": "noisy", "control": "base"},
    {"id": "big_gain", "statement": "better > base by 0.2", "source": "Sec 4", "metric": "acc",
     "treatment": "better", "control": "base", "min_effect": 0.2, "diverged": "exclude"},
    {"id": "lower_loss", "statement": "better has lower loss", "source": "Fig 2", "metric": "loss",
     "treatment": "better", "control": "base", "direction": "less", "min_effect": 0.1},
    {"id": "few_runs", "statement": "wd=0.1 > base on b1", "source": "Fig 3", "metric": "acc",
     "treatment": "grid[wd=0.1]", "control": "base", "benchmarks": ["b1"]},
    {"id": "ambiguous", "statement": "grid > base", "source": "Fig 3", "metric": "acc",
     "treatment": "grid", "control": "base"},
    {"id": "worse_each", "statement": "worse > base on each benchmark", "source": "Table 1", "metric": "acc",
     "treatment": "worse", "control": "base", "per_benchmark": True},
    {"id": "relative_loss", "statement": "better cuts the loss by more than 20%", "source": "Fig 2", "metric": "loss",
     "treatment": "better", "control": "base", "direction": "less", "min_effect": 0.2, "relative": True},
    {"id": "gap", "statement": "wd=0.2 beats base by a margin", "source": "Fig 4", "function": "gap_claim"},
    {"id": "two_seeds", "statement": "only two seeds", "source": "Fig 4", "function": "two_seed_claim"},
    {"id": "by_design", "statement": "an asymptote", "source": "Fig 4", "function": "by_design_claim"},
    {"id": "posthoc", "statement": "noisy < base (seen after the study)", "source": "Fig 7", "metric": "acc",
     "treatment": "noisy", "control": "base", "direction": "less", "exploratory": True},
    {"id": "broken", "statement": "k* shrinks", "source": "Fig 5", "function": "broken_claim"},
    {"id": "wrong_type", "statement": "returns a dict", "source": "Fig 6", "function": "not_evidence"},
]
IDS = [c["id"] for c in CLAIMS if c["id"] != "worse_each"]


@pytest.fixture(scope="module")
def results(tmp_path_factory, metrics_df):
    task = make_task(tmp_path_factory.mktemp("task"), CLAIMS, ShapeTask)
    out = evaluate_claims(task, metrics_df, "small")
    return task, {r["id"]: r for r in out}, out


def t_p(x, null, upper):
    """One-sided one-sample t-test p, written out with scipy.stats."""
    from scipy import stats

    x = np.asarray(x, float)
    t = (x.mean() - null) / (x.std(ddof=1) / math.sqrt(len(x)))
    return stats.t.sf(t, len(x) - 1) if upper else stats.t.cdf(t, len(x) - 1)


def per_seed(c):
    return [c["per_seed"][str(s)] for s in sorted(int(k) for k in c["per_seed"])]


def test_effects_average_benchmarks_within_a_seed_and_the_seed_is_the_unit(results):
    c = results[1]["better_beats_base"]
    assert c["verdict"] == "reproduced", c["reason"]
    # Seeds 0-3 have both benchmarks; seed 4 only b1 (b2 diverged and the claim excludes it).
    assert per_seed(c) == pytest.approx([0.1 + 0.001 * s for s in SEEDS])
    assert (c["n_pairs"], c["n_seeds"], c["n_missing"], c["n_diverged"]) == (9, 5, 0, 1)
    assert c["details"]["diverged"]["treatment"] == [{"benchmark": "b2", "seed": 4}]
    assert c["effect"] == pytest.approx(0.102)
    lo, hi = t_interval(per_seed(c))
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((lo, hi))
    half = 2.7764451 * np.std(per_seed(c), ddof=1) / math.sqrt(5)   # t_{0.975, 4}
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((0.102 - half, 0.102 + half))
    assert c["p_value"] == pytest.approx(t_p(per_seed(c), 0.0, upper=True))
    assert c["p_refute"] == pytest.approx(t_p(per_seed(c), 0.0, upper=False))
    assert c["sign_flip_p"] == pytest.approx(1 / 32) and c["fragile"] is False
    assert c["kind"] == "comparison" and c["direction"] == "greater" and c["task"] == "toy"


def test_a_diverged_arm_counts_against_it_by_default(results):
    c = results[1]["better_counting_divergence"]
    # (b2, 4): the treatment takes the worst acc seen on b2 (worse, seed 0: 0.61 - 0.1 = 0.51)
    # against base 0.69, so seed 4's effect is the mean of +0.104 and -0.18.
    assert c["details"]["diverged"]["worst_value_by_benchmark"] == {"b2": pytest.approx(0.51)}
    assert per_seed(c)[4] == pytest.approx((0.104 - 0.18) / 2)
    assert (c["n_pairs"], c["n_diverged"]) == (10, 1)
    assert c["p_value"] == pytest.approx(t_p(per_seed(c), 0.0, upper=True))
    assert c["verdict"] == "inconclusive" and c["p_value"] < 0.05 < c["p_adjusted"]


def test_clear_negative_effect_refuted_with_a_test(results):
    c = results[1]["worse_beats_base"]
    assert c["verdict"] == "refuted", c["reason"]
    assert c["ci_high"] < 0 and c["p_refute_adjusted"] < 0.05 and c["p_value"] > 0.99


def test_noise_is_inconclusive(results):
    c = results[1]["noisy_beats_base"]
    assert per_seed(c) == pytest.approx([0.0, 0.0, 0.005, -0.005, 0.005])
    assert c["verdict"] == "inconclusive" and c["ci_low"] < 0 < c["ci_high"]
    assert c["p_adjusted"] > 0.05 and c["p_refute_adjusted"] > 0.05
    assert c["mde"] > 0 and math.isfinite(c["mde"])


def test_min_effect_respected_and_no_seed_count_decides_a_gray_effect(results):
    c = results[1]["big_gain"]
    assert c["ci_low"] > 0 and c["ci_high"] < 0.2
    assert c["verdict"] == "inconclusive" and c["seeds_needed"] is None   # inf: 0 < effect < min_effect
    assert "no number of seeds" in c["reason"]
    assert c["p_value"] == pytest.approx(t_p(per_seed(c), 0.2, upper=True))


def test_direction_less_with_zero_spread(results):
    c = results[1]["lower_loss"]
    assert per_seed(c) == pytest.approx([-0.3] * 5)
    assert c["effect"] == pytest.approx(-0.3) and c["verdict"] == "reproduced", c["reason"]
    assert c["p_value"] == 0.0 and c["p_refute"] == 1.0


def test_relative_effect_is_unitless(results):
    c = results[1]["relative_loss"]
    # (0.7 - 1.0) / |1.0| on every pair: -30%, beyond the claimed -20%
    assert c["relative"] is True and per_seed(c) == pytest.approx([-0.3] * 5) and c["verdict"] == "reproduced"


def test_too_few_seeds_is_undecidable_and_missing_counted(results):
    c = results[1]["few_runs"]
    assert c["verdict"] == "undecidable" and "fewer than 3 seeds" in c["reason"]
    assert (c["n_pairs"], c["n_seeds"], c["n_missing"]) == (2, 2, 3)
    assert c["p_value"] is None and c["p_adjusted"] is None
    two = results[1]["two_seeds"]   # a NaN effect is no effect
    assert two["verdict"] == "undecidable" and two["n_seeds"] == 2


def test_undecidable_by_design(results):
    c = results[1]["by_design"]
    assert c["verdict"] == "undecidable" and "a 3-point fit has no residual" in c["reason"]
    assert c["p_adjusted"] is None and c["effect"] == pytest.approx(3.0)


def test_ambiguous_bare_method_name(results):
    c = results[1]["ambiguous"]
    assert c["verdict"] == "undecidable" and "several variants" in c["error"]


def test_per_benchmark_claims(results):
    _, r, out = results
    assert [c["id"] for c in out if c["id"].startswith("worse_each")] == ["worse_each@b1", "worse_each@b2"]
    for b in BENCHES:
        c = r[f"worse_each@{b}"]
        assert c["benchmarks"] == [b] and c["n_pairs"] == 5 and c["verdict"] == "refuted"
        assert per_seed(c) == pytest.approx([-0.1 - 0.001 * s for s in SEEDS])


def test_function_claim(results):
    task, r, _ = results
    c = r["gap"]
    assert c["kind"] == "function" and c["verdict"] == "reproduced", c["reason"]
    assert c["effect"] == pytest.approx(0.2) and c["n_seeds"] == 5 and c["min_effect"] == 0.05
    assert task.seen_rows == 52 * 2   # 52 runs of this task x 2 metrics; the other task's row filtered out
    assert c["details"]["gap_by_seed"] == pytest.approx([0.2] * 5)


def test_function_claims_that_fail_do_not_stop_others(results):
    _, r, out = results
    assert r["broken"]["verdict"] == "undecidable"
    assert "ValueError: no such column 'k*'" in r["broken"]["error"]
    assert "claim function raised" in r["broken"]["reason"]
    assert r["wrong_type"]["verdict"] == "undecidable" and "ClaimEvidence" in r["wrong_type"]["error"]
    assert [c["id"] for c in out if "@" not in c["id"]] == IDS


def test_holm_over_both_directions_of_the_preregistered_claims(results):
    out = results[2]
    family = [c for c in out if not c["exploratory"] and c["p_adjusted"] is not None]
    assert len(family) == 10
    raw = [c["p_value"] for c in family] + [c["p_refute"] for c in family]
    expected = holm(raw)
    assert [c["p_adjusted"] for c in family] == pytest.approx(list(expected[:10]))
    assert [c["p_refute_adjusted"] for c in family] == pytest.approx(list(expected[10:]))
    # The exploratory claim is a family of its own: 2 hypotheses.
    post = results[1]["posthoc"]
    assert post["exploratory"] is True
    assert (post["p_adjusted"], post["p_refute_adjusted"]) == pytest.approx(tuple(holm([post["p_value"], post["p_refute"]])))


def test_every_decided_or_inconclusive_claim_has_p_values(results):
    for c in results[2]:
        if c["verdict"] != "undecidable":
            assert c["p_value"] is not None and c["p_refute"] is not None, c["id"]
            assert c["p_adjusted"] is not None and c["p_refute_adjusted"] is not None, c["id"]


def test_json_ready_and_required_keys(results):
    out = results[2]
    json.dumps(out, allow_nan=False)
    required = {"task", "id", "statement", "source", "verdict", "effect", "ci_low", "ci_high", "p_value",
                "p_adjusted", "p_refute", "p_refute_adjusted", "sign_flip_p", "fragile", "mde", "seeds_needed",
                "n_seeds", "n_pairs", "n_missing", "n_diverged", "metric", "treatment", "control", "per_seed",
                "direction", "min_effect", "kind", "note", "reason", "details", "exploratory"}
    assert all(required <= set(c) for c in out)
    assert {c["verdict"] for c in out} <= set(VERDICTS)


def test_fragile_when_the_sign_flip_cannot_confirm():
    """Three seeds: the t-test can reject, the exact sign-flip p never goes below 1/8."""
    d = decide([[1.0, 1.1, 0.9]], [0.0], ["greater"])
    assert d["verdict"].tolist() == [1]
    import pandas as pd

    class Three(Task):
        def three(self, frame):
            return ClaimEvidence(per_seed={0: 1.0, 1: 1.1, 2: 0.9})

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        task = make_task(tmp, [{"id": "t", "statement": "s", "source": "x", "function": "three"}], Three)
        (c,) = evaluate_claims(task, pd.DataFrame(), "small")
    assert c["verdict"] == "reproduced" and c["sign_flip_p"] == pytest.approx(1 / 8) and c["fragile"] is True
    assert "fragile" in c["reason"]


@pytest.mark.parametrize("effects, m, direction, expected", [
    ([0.3, 0.35, 0.32, 0.31], 0.1, "greater", 1),     # clearly beyond the threshold
    ([0.3, 0.35, 0.32, 0.31], 0.3, "greater", 0),     # beyond 0 but not beyond 0.3
    ([-0.3, -0.35, -0.32, -0.31], 0.0, "greater", 2),
    ([-0.3, -0.35, -0.32, -0.31], 0.1, "less", 1),
    ([0.3, 0.35, 0.32, 0.31], 0.0, "less", 2),
    ([0.3, 0.35, math.nan, math.nan], 0.0, "greater", 3),  # two finite seeds
    ([1.0, -1.0, 0.5, -0.5], 0.0, "greater", 0),
])
def test_decide_rule_single_claim(effects, m, direction, expected):
    assert decide([effects], [m], [direction])["verdict"].tolist() == [expected]


def test_decide_is_vectorised_over_tasks():
    rng = np.random.default_rng(0)
    e = rng.normal(0.5, 1.0, (7, 4, 6))
    batch = decide(e, [0.0] * 4, ["greater"] * 4)["verdict"]
    one_by_one = np.stack([decide(e[i], [0.0] * 4, ["greater"] * 4)["verdict"] for i in range(7)])
    assert batch.shape == (7, 4) and (batch == one_by_one).all()


def test_undecidable_by_design_lists_scales_with_too_few_seeds(tmp_path):
    import pandas as pd

    task = make_task(tmp_path, CLAIMS[:2] + [{**CLAIMS[0], "id": "asym", "undecidable": "3 sizes, 3 parameters"},
                                             {**CLAIMS[0], "id": "paper_only", "undecidable": {"paper": "one size"}}])
    lines = undecidable_by_design(task.config, "small")
    assert any("'asym' is undecidable by design: 3 sizes" in line for line in lines)
    assert not any("paper_only" in line for line in lines)   # undecidable at paper scale only
    # 5 seeds, Holm over 3 decidable claims (6 hypotheses): (t_{1-0.05/6, 4} + t_{0.8, 4}) / sqrt(5)
    assert lines[-1].endswith("5 seeds detect (80% power, Holm over 3 claims) an effect of about 2.2 per-seed "
                              "standard deviations beyond its threshold")
    one_seed = task.config.model_copy(update={"scales": {"small": task.config.scales["small"].model_copy(update={"seeds": [0]})}})
    assert undecidable_by_design(one_seed, "small") == [
        "toy: scale 'small': 1 seed(s), so all 4 claims are undecidable (a verdict needs 3)"]
    (c,) = [c for c in evaluate_claims(task, pd.DataFrame(), "small") if c["id"] == "asym"]
    assert c["verdict"] == "undecidable" and c["reason"] == "undecidable by design: 3 sizes, 3 parameters"


def test_write_and_read_claims(tmp_path, results):
    out = results[2]
    other = [{"task": "alpha", "id": "z", "verdict": "refuted", "effect": math.nan},
             {"task": "alpha", "id": "a", "verdict": "reproduced", "effect": 1.0}]
    path = write_claims(out + other, tmp_path / "claims-small.json")
    back = read_claims(path)
    assert [(c["task"], c["id"]) for c in back][:2] == [("alpha", "z"), ("alpha", "a")]
    assert [c["id"] for c in back[2:] if "@" not in c["id"]] == IDS
    assert back[0]["effect"] is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        read_claims(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="not found"):
        read_claims(tmp_path / "missing.json")


def test_no_runs_at_all(tmp_path):
    import pandas as pd

    task = make_task(tmp_path, CLAIMS[:1])
    (c,) = evaluate_claims(task, pd.DataFrame(), "small")
    assert c["verdict"] == "undecidable" and c["n_pairs"] == 0 and c["n_missing"] == 10
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
