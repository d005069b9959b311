"""Claims on synthetic metrics frames (verdicts through harness/claims.py), the figures, and the
paper-scale CodeParrot builder on a local fixture."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.claims import evaluate_claims
from tasks.entropy_attention import task
from tasks.entropy_attention.analysis import PPL_ORDER, figures

SEEDS = (0, 1, 2)


def _frame(values: dict[tuple[str, str], list[float]], status: dict[str, str] | None = None) -> pd.DataFrame:
    """Long metrics frame: (method, metric) -> one value per seed."""
    rows = []
    for (method, metric), vals in values.items():
        for seed, v in zip(SEEDS, vals):
            rows.append({"run_id": f"{method}-{seed}", "task": "entropy_attention", "method": method,
                         "variant": method, "benchmark": "stdlib-t128", "seed": seed, "scale": "small",
                         "status": (status or {}).get(method, "ok"), "name": metric, "value": v,
                         "higher_is_better": False})
    return pd.DataFrame(rows)


def _verdicts(frame) -> dict[str, dict]:
    return {c["id"]: c for c in evaluate_claims(task, frame, "small")}


def test_collapse_reproduced_with_a_diverged_sm_run_counted():
    frame = _frame({("sm", "entropy_deep"): [0.2, 0.4, 0.1], ("sm_ln", "entropy_deep"): [3.0, 2.9, 3.1],
                    ("sm", "entropy_deep_min"): [0.01, 0.02, 0.0]}, status={"sm": "diverged"})
    c = _verdicts(frame)["sm_collapse"]
    assert c["verdict"] == "reproduced" and c["effect"] == pytest.approx(-2.7667, abs=1e-3)
    assert c["per_seed"] == pytest.approx({"0": -2.8, "1": -2.5, "2": -3.0})
    assert c["details"]["sm_diverged_seeds"] == [0, 1, 2]


def test_collapse_refuted_and_small_drop_inconclusive():
    up = _frame({("sm", "entropy_deep"): [3.2, 3.3, 3.4], ("sm_ln", "entropy_deep"): [3.0, 2.9, 3.1]})
    assert _verdicts(up)["sm_collapse"]["verdict"] == "refuted"
    small = _frame({("sm", "entropy_deep"): [2.8, 2.7, 2.9], ("sm_ln", "entropy_deep"): [3.0, 2.9, 3.1]})
    assert _verdicts(small)["sm_collapse"]["verdict"] == "inconclusive"  # drop of 0.2 < min effect 0.5


COMPARISONS = [c for c in task.config.claims if c.metric]


def test_plain_comparisons_are_declarative():
    assert {c.id for c in COMPARISONS} == {"gelu_overload", "gelu_worse_than_relu", "scaled_ffn_beats_wn",
                                           "scaled_ffn_beats_sn", "ereg_lowers_loss", "ereg_less_overload",
                                           "ereg_lowers_loss_tmul", "ppl_order_ln_g_below_ln_r",
                                           "ppl_order_ln_r_below_r", "ppl_order_g_below_ln"}
    assert [c.id for c in task.config.claims if c.exploratory] == ["ereg_lowers_loss_tmul"]


@pytest.mark.parametrize("claim", COMPARISONS, ids=lambda c: c.id)
def test_comparisons_follow_their_direction(claim):
    sign = 1 if claim.direction == "greater" else -1
    good = _frame({(claim.treatment, claim.metric): [1 + sign * 0.1, 1 + sign * 0.2, 1 + sign * 0.15],
                   (claim.control, claim.metric): [1.0, 1.0, 1.0]})
    bad = _frame({(claim.treatment, claim.metric): [1 - sign * 0.1, 1 - sign * 0.2, 1 - sign * 0.15],
                  (claim.control, claim.metric): [1.0, 1.0, 1.0]})
    assert _verdicts(good)[claim.id]["verdict"] == "reproduced"
    assert _verdicts(bad)[claim.id]["verdict"] == "refuted"


def test_a_diverged_arm_counts_against_it_and_bins_of_a_diverged_run_are_left_out():
    frame = _frame({("sm_g", "test_loss"): [float("nan")] * 3, ("sm_r", "test_loss"): [2.0, 2.0, 2.0],
                    ("sm_ln", "test_loss"): [3.0, 3.1, 2.9],
                    ("sm_g", "frac_bin3"): [float("nan")] * 3, ("sm_r", "frac_bin3"): [0.2, 0.3, 0.25]},
                   status={"sm_g": "diverged"})
    out = _verdicts(frame)
    c = out["gelu_worse_than_relu"]   # GELU diverged on every seed: it takes the worst loss seen (3.1)
    assert c["n_diverged"] == 3 and c["per_seed"] == pytest.approx({"0": 1.1, "1": 1.1, "2": 1.1})
    assert c["verdict"] == "reproduced"
    bins = out["gelu_overload"]        # diverged: exclude
    assert bins["n_diverged"] == 3 and bins["n_seeds"] == 0 and bins["verdict"] == "undecidable"


def test_ppl_order_is_tested_link_by_link():
    links = [(c.treatment, c.control) for c in task.config.claims if c.id.startswith("ppl_order_")]
    # with gelu_worse_than_relu (SM+R < SM+G) the links chain the claimed order end to end
    chain = links[:2] + [("sm_r", "sm_g")] + links[2:]
    assert [a for a, _ in chain] + [chain[-1][1]] == list(PPL_ORDER)
    base = {m: 2.0 + 0.1 * i for i, m in enumerate(PPL_ORDER)}
    ordered = _verdicts(_frame({(m, "test_loss"): [v, v + 0.01, v - 0.01] for m, v in base.items()}))
    assert all(ordered[c]["verdict"] == "reproduced" for c in ("ppl_order_ln_g_below_ln_r", "ppl_order_ln_r_below_r",
                                                                 "ppl_order_g_below_ln", "gelu_worse_than_relu"))
    # swap SM+LN+R and SM+R: the second link is refuted, the others still hold
    swapped = dict(base, sm_ln_r=base["sm_r"], sm_r=base["sm_ln_r"])
    out = _verdicts(_frame({(m, "test_loss"): [v, v + 0.01, v - 0.01] for m, v in swapped.items()}))
    assert out["ppl_order_ln_r_below_r"]["verdict"] == "refuted"
    assert out["ppl_order_g_below_ln"]["verdict"] == "reproduced"


def test_thresholds_nonuniform_needs_spread_in_every_layer():
    spread = _frame({("ereg_sm_t_scfuffn", "theta_std_min_layer"): [0.05, 0.08, 0.06]})
    flat = _frame({("ereg_sm_t_scfuffn", "theta_std_min_layer"): [1e-7, 2e-7, 1e-7]})
    assert _verdicts(spread)["thresholds_nonuniform"]["verdict"] == "reproduced"
    assert _verdicts(flat)["thresholds_nonuniform"]["verdict"] == "refuted"


def _runs_frame():
    rows = []
    for i, v in enumerate(("sm_ln_g", "sm", "ereg_sm_t_scfuffn")):
        for seed in SEEDS:
            diverged = v == "sm" and seed == 2
            info = {"entropy_matrix": [[1.0 + i, 2.0], [0.1 * seed, 3.5]],
                    "entropy_curve": [{"step": s, "layers": [1.0 + 0.01 * s, 2.0], "val_loss": 3.0} for s in (0, 50)],
                    "model": {"block_size": 128, "n_embd": 64, "ffn": "gelu", "ffn_mult": 4, "n_layer": 2},
                    "test_ppl": None if diverged else 9.0 + i}
            rows.append({"run_id": f"{v}{seed}", "variant": v, "benchmark": "stdlib-t128", "seed": seed,
                         "status": "diverged" if diverged else "ok", "info": info})
    return pd.DataFrame(rows)


def test_figures_are_three_deterministic_svgs():
    a, b = figures(task, _runs_frame(), "small"), figures(task, _runs_frame(), "small")
    assert [t for t, _ in a] == [t for t, _ in b] and len(a) == 3
    assert all(svg.lstrip().startswith("<svg") for _, svg in a)
    assert a == b
    assert figures(task, _runs_frame().iloc[0:0], "small") == []


# -- paper-scale data ----------------------------------------------------------------------

def test_codeparrot_builder_reads_a_local_fixture(tmp_path, monkeypatch):
    from tasks.entropy_attention.data import build_codeparrot

    src = tmp_path / "codeparrot"
    src.mkdir()
    lines = [json.dumps({"repo_name": f"r{i}", "path": f"f{i}.py", "content": f"x = {i}\n"}) for i in range(60)]
    (src / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("CODEPARROT_SOURCE", str(src))
    dd = build_codeparrot()
    assert set(dd) == {"train", "validation", "test"} and dd["train"].column_names == ["text"]
    assert sum(len(dd[s]) for s in dd) == 60 and len(dd["validation"]) + len(dd["test"]) == 3
    texts = [t for s in dd for t in dd[s]["text"]]
    assert sorted(texts) == sorted(f"x = {i}\n" for i in range(60))


def test_codeparrot_offline_or_missing_names_the_env_var(tmp_path, monkeypatch):
    from tasks.entropy_attention.data import DatasetUnavailable, build_codeparrot

    monkeypatch.setenv("CODEPARROT_SOURCE", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetUnavailable, match="CODEPARROT_SOURCE"):
        build_codeparrot()
    monkeypatch.delenv("CODEPARROT_SOURCE")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetUnavailable, match="CODEPARROT_SOURCE"):
        build_codeparrot()
