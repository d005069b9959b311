"""Claim functions on synthetic metric frames with known answers."""

import pandas as pd
import pytest

from tasks.infinite_compute import task
from tasks.infinite_compute.fits import power_law

SIZES = {"d32": 30_000, "d48": 67_000, "d64": 119_000}


def frame(rows, benchmark="b"):
    return pd.DataFrame([{"run_id": f"r{i}", "task": "infinite_compute", "method": v.split("[")[0], "variant": v,
                          "benchmark": benchmark, "seed": s, "scale": "small", "status": "ok", "name": n, "value": x,
                          "higher_is_better": False} for i, (v, s, n, x) in enumerate(rows)])


def recipe_rows(method, seeds, loss_of_n, wd_of_n=None, train_of_n=None):
    rows = []
    for s in seeds:
        for size, n in SIZES.items():
            v = f"{method}[size={size}]"
            rows += [(v, s, "n_params", n), (v, s, "test_loss", loss_of_n(n) + 0.001 * s)]
            rows.append((v, s, "train_loss", train_of_n(n) if train_of_n else 1.0))
            rows.append((v, s, "wd", wd_of_n(n) if wd_of_n else 0.1))
            rows.append((v, s, "epoch_u_depth_test", 0.02))
    return rows


def ens_rows(method, size, seeds, asym, member=2.5):
    rows = []
    v = f"{method}[size={size}]" if size else method
    for s in seeds:
        rows += [(v, s, f"test_loss_k{k}", power_law(k, 0.3, 1.0, asym) + 0.001 * s) for k in range(1, 6)]
        rows += [(v, s, "n_params", SIZES.get(size, 67_000)), (v, s, "member_test_loss", member)]
    return rows


def test_regularized_claims_recover_the_planted_asymptote():
    seeds = [0, 1, 2]
    reg = lambda n: power_law(n / 1e6, 0.05, 1.0, 2.0)  # noqa: E731
    rows = recipe_rows("regularized", seeds, reg, wd_of_n=lambda n: {30_000: 0.4, 67_000: 1.6, 119_000: 1.6}[n])
    rows += recipe_rows("standard", seeds, lambda n: 2.6 if n < 100_000 else 2.7,
                        train_of_n=lambda n: 2.0 - n / 1e6)
    f = frame(rows)
    ev = task.claim_function("claim_regularized_asymptote_below_standard")(f)
    # each seed's own fit: best standard 2.6 + 0.001 s minus the planted asymptote 2.0 + 0.001 s
    assert ev.per_seed == pytest.approx({s: 0.6 for s in seeds}, abs=1e-4)
    assert "no residual degree of freedom" in ev.undecidable   # 3 sizes, 3 parameters
    mono = task.claim_function("claim_regularized_monotone")(f)
    gaps = [reg(30_000) - reg(67_000), reg(67_000) - reg(119_000)]
    assert mono.per_seed == pytest.approx({s: min(gaps) for s in seeds})
    wd = task.claim_function("claim_wd_grows_with_size")(f)
    assert wd.per_seed == pytest.approx({s: 1.0 for s in seeds})
    rise = task.claim_function("claim_standard_rises_with_size")(f)
    assert rise.per_seed == pytest.approx({s: 0.1 for s in seeds}) and rise.details["train_loss_change_top_two_sizes"][0] < 0
    u = task.claim_function("claim_standard_u_in_epochs")(f)
    assert u.per_seed == pytest.approx({s: 0.02 for s in seeds})
    # A flat curve on the held-out set gives depths either side of 0: the claim can fail.
    flat = f.copy()
    flat.loc[flat["name"] == "epoch_u_depth_test", "value"] = [-0.01 if i % 2 else 0.005
                                                                for i in range((flat["name"] == "epoch_u_depth_test").sum())]
    assert min(task.claim_function("claim_standard_u_in_epochs")(flat).per_seed.values()) < 0


def test_ensemble_claims_compare_asymptotes():
    seeds = [0, 1, 2]
    rows = recipe_rows("regularized", seeds, lambda n: power_law(n / 1e6, 0.05, 1.0, 2.0))
    for size, asym in (("d32", 1.95), ("d48", 1.9), ("d64", 1.87)):
        rows += ens_rows("ensemble", size, seeds, asym, member=2.6)
    rows += ens_rows("ensemble_single_opt", None, seeds, 1.97, member=2.5)
    f = frame(rows)
    below = task.claim_function("claim_ensemble_below_regularized")(f)
    assert below.per_seed == pytest.approx({s: 0.1 for s in seeds}, abs=1e-4)   # 2.0 - 1.9 per seed
    assert "3 model sizes" in below.undecidable
    tuned = task.claim_function("claim_tuned_members_lower_asymptote")(f)
    assert tuned.per_seed == pytest.approx({s: 0.07 for s in seeds}, abs=1e-4)   # 1.97 - 1.9
    assert tuned.undecidable == ""   # K = 1..5: five points for three parameters
    worse = task.claim_function("claim_tuned_members_individually_worse")(f)
    assert worse.per_seed == pytest.approx({s: 0.1 for s in seeds})
    mono = task.claim_function("claim_ensemble_monotone_in_k")(f)
    step = power_law(4, 0.3, 1, 0) - power_law(5, 0.3, 1, 0)
    assert mono.per_seed == pytest.approx({s: step for s in seeds}, abs=1e-9)
    joint = task.claim_function("claim_joint_asymptote_lowest")(f)
    assert all(v > 0 for v in joint.per_seed.values()) and len(joint.per_seed) == 3
    assert all(e < 1.87 + 0.001 * s for s, e in joint.details["joint_asymptote_by_seed"].items())


def test_distillation_and_soup_claims():
    rows = []
    for s in (0, 1, 2):
        rows += [("regularized[size=d48]", s, "test_loss", 2.5), ("ensemble[size=d48]", s, "test_loss", 2.3),
                 ("distill", s, "test_loss", 2.36 + 0.01 * s), ("ensemble_member[size=d48]", s, "test_loss", 2.55),
                 ("self_distill", s, "test_loss", 2.5), ("synthetic_only", s, "test_loss", 2.9),
                 ("soup", s, "test_loss", 5.0), ("soup", s, "ens2_test_loss", 2.4),
                 # validation numbers select, they are never what a claim reads
                 ("distill", s, "val_loss", 9.0), ("soup", s, "ens2_val_loss", 9.0)]
    f = frame(rows)
    d = task.claim_function("claim_distill_recovers_ensemble_gain")(f)
    assert d.per_seed == pytest.approx({s: (2.5 - 2.36 - 0.01 * s) / 0.2 - 0.5 for s in range(3)})

    def per_seed(name):
        return task.claim_function(name)(f).per_seed

    assert per_seed("claim_self_distill_beats_teacher") == pytest.approx({s: 0.05 for s in range(3)})
    assert per_seed("claim_synthetic_only_worse_than_teacher") == pytest.approx({s: 0.35 for s in range(3)})
    assert per_seed("claim_soup_worse_than_logit_average") == pytest.approx({s: 2.6 for s in range(3)})


def test_claims_with_no_runs_give_no_effects_not_errors():
    f = frame([])
    for claim in task.config.claim_objects():
        ev = task.claim_function(claim.function)(f.assign(scale="small") if len(f) else f)
        assert ev.per_seed == {}


def test_a_second_data_budget_is_kept_apart_and_tests_data_efficiency():
    seeds = [0, 1, 2]
    d = recipe_rows("regularized", seeds, lambda n: 2.4) + recipe_rows("standard", seeds, lambda n: 2.6)
    twice = recipe_rows("standard", seeds, lambda n: 2.5)   # the standard recipe at 2D: better than at D
    f = pd.concat([frame(d, "dclm-200m"), frame(twice, "dclm-400m")], ignore_index=True)
    # claims about one budget read the primary budget only (the 2D runs would overwrite its standard rows)
    rise = task.claim_function("claim_standard_rises_with_size")(f)
    assert rise.per_seed == pytest.approx({s: 0.0 for s in seeds})   # 2.6 at every size of dclm-200m
    eff = task.claim_function("claim_regularized_at_d_beats_standard_at_2d")(f)
    assert eff.per_seed == pytest.approx({s: 0.1 for s in seeds})   # 2.5 (standard at 2D) - 2.4 (recipe at D)
    assert eff.details == {"budget_d": "dclm-200m", "budget_2d": "dclm-400m"}
    assert task.claim_function("claim_regularized_at_d_beats_standard_at_2d")(frame(d)).per_seed == {}
