"""The regulariser (Algorithm 1), the entropy diagnostics, the schedule and whole training runs:
determinism, divergence as a result, and resume through the harness runner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kernels.attention_entropy import causal_max_entropy
from tasks.entropy_attention.configs import ARCHITECTURES
from tasks.entropy_attention.train import entropy_penalty, entropy_summary, lr_at, train

from factories import MemoryContext


# -- Algorithm 1 ------------------------------------------------------------------------------

def test_penalty_dead_zone_and_row_sum_by_hand():
    T = 16
    e_max = math.log(T)  # 2.7726; tolerance 0.2 * e_max = 0.5545
    theta = torch.tensor([[0.5, 0.5]])  # target 1.3863 for both heads
    ent = torch.tensor([[[1.3863 + 0.3, 1.3863 + 1.0], [1.3863 - 2.0, 1.3863]]])  # (B=1, H=2, T=2)
    pen = entropy_penalty([ent], theta, T, tolerance=0.2, granularity="row")
    # Row level: deviations 0.3 (inside the band), 1.0, -2.0, 0 -> (1.0^2 + 2.0^2) summed, / H, / L.
    assert pen.item() == pytest.approx((1.0 + 4.0) / 2, rel=1e-4)
    head = entropy_penalty([ent], theta, T, tolerance=0.2, granularity="head")
    # Head level: head means +0.65 (outside) and -1.0 -> mean of 0.65^2 and 1.0^2.
    assert head.item() == pytest.approx((0.65 ** 2 + 1.0) / 2, rel=1e-3)


def test_penalty_is_zero_inside_the_band_and_pulls_theta_toward_the_entropy():
    T = 32
    theta = torch.full((2, 3), 0.5, requires_grad=True)
    inside = [torch.full((2, 3, T), 0.5 * math.log(T) + 0.1) for _ in range(2)]
    assert entropy_penalty(inside, theta, T, tolerance=0.2).item() == 0.0
    high = [torch.full((2, 3, T), 0.9 * math.log(T)) for _ in range(2)]
    entropy_penalty(high, theta, T, tolerance=0.2).backward()
    assert (theta.grad < 0).all()  # gradient descent raises theta toward E / E_max


def test_penalty_rejects_unknown_granularity():
    with pytest.raises(ValueError, match="row or head"):
        entropy_penalty([torch.zeros(1, 1, 4)], torch.zeros(1, 1), 4, 0.2, granularity="batch")


# -- diagnostics ------------------------------------------------------------------------------

def test_entropy_summary_bins_relative_to_max_observed_and_near_uniform():
    T = 128
    top = causal_max_entropy(T)
    ent = np.array([[0.1, 1.5, 2.5, top], [top * 0.96, 0.5, 3.0, 0.2]])  # L=2, H=4; M = top
    s = entropy_summary(ent, T)
    assert s["entropy_max_observed"] == pytest.approx(top)
    # bins [0, M/4=0.97), [0.97, 1.94), [1.94, 2.91), [2.91, M]
    assert (s["frac_bin0"], s["frac_bin1"], s["frac_bin2"], s["frac_bin3"]) == (3 / 8, 1 / 8, 1 / 8, 3 / 8)
    assert s["frac_near_uniform"] == 2 / 8
    assert s["entropy_deep"] == pytest.approx(ent[1].mean()) and s["entropy_early"] == pytest.approx(ent[0].mean())
    assert s["entropy_l0"] == pytest.approx(ent[0].mean()) and s["nan_heads"] == 0


def test_lr_schedule_warms_up_then_decays_linearly_to_zero():
    hp = {"steps": 100, "warmup_frac": 0.05, "lr": 1e-3}
    assert lr_at(0, hp) == pytest.approx(2e-4)
    assert lr_at(4, hp) == pytest.approx(1e-3)
    assert lr_at(5, hp) == pytest.approx(1e-3)
    assert lr_at(99, hp) == pytest.approx(1e-3 / 95)
    assert lr_at(52, hp) == pytest.approx(1e-3 * 48 / 95)


# -- whole runs -------------------------------------------------------------------------------

def _run(corpus, hp, method="sm_ln_g", seed=0, **extra):
    torch.manual_seed(seed)
    return train(corpus, {**ARCHITECTURES[method], **hp, **extra}, MemoryContext(seed))


def test_training_learns_and_is_bit_exact_for_a_seed(corpus, tiny_hp):
    a, b = _run(corpus, tiny_hp), _run(corpus, tiny_hp)
    assert a["metrics"] == b["metrics"]
    first_val = a["info"]["entropy_curve"][0]["val_loss"]
    assert a["metrics"]["val_loss"] < first_val - 0.5  # learns the repeated phrase
    assert len(a["info"]["entropy_matrix"]) == 3 and len(a["info"]["entropy_matrix"][0]) == 2
    assert a["metrics"]["causal_max_entropy"] == pytest.approx(causal_max_entropy(32))
    assert [p["step"] for p in a["info"]["entropy_curve"]] == [0, 4, 8, 12]


def test_ereg_run_learns_thresholds_and_temperatures(corpus, tiny_hp):
    out = _run(corpus, tiny_hp, method="ereg_sm_t_scfuffn")
    theta = np.asarray(out["info"]["thresholds"])
    assert theta.shape == (3, 2) and not np.allclose(theta, 0.5)  # thresholds receive gradients
    assert "temperature_geomean" in out["metrics"] and "theta_std_min_layer" in out["metrics"]
    assert math.isfinite(out["metrics"]["test_loss"])


def test_divergence_is_a_result_with_last_finite_entropies(corpus, tiny_hp):
    # An absurd learning rate on the Softmax-only model overflows within a few steps.
    out = _run(corpus, tiny_hp, method="sm", lr=1e4, grad_clip=1e6, eval_every=1)
    m, info = out["metrics"], out["info"]
    assert info["diverged_step"] is not None and m["diverged"] == 1.0
    assert math.isnan(m["test_loss"]) and math.isnan(m["test_ppl"])
    assert m["steps_completed"] == info["diverged_step"] < tiny_hp["steps"]
    assert info["entropy_source"].startswith("last finite evaluation")
    assert math.isfinite(m["entropy_deep"])


def test_harness_run_resumes_bit_exact_and_records_diverged_status(stdlib_data_root, tmp_path, monkeypatch):
    from harness.runner import SimulatedInterrupt, run_one

    monkeypatch.setenv("HARNESS_DATA_DIR", str(stdlib_data_root))
    kw = dict(results_dir=tmp_path / "r1", threads=1)
    full = run_one("entropy_attention", "sm_r", "stdlib-t32", 0, "tiny", **kw)
    monkeypatch.setenv("HARNESS_INTERRUPT_AFTER_CHECKPOINT", "1")
    with pytest.raises(SimulatedInterrupt):
        run_one("entropy_attention", "sm_r", "stdlib-t32", 0, "tiny", results_dir=tmp_path / "r2", threads=1)
    monkeypatch.delenv("HARNESS_INTERRUPT_AFTER_CHECKPOINT")
    resumed = run_one("entropy_attention", "sm_r", "stdlib-t32", 0, "tiny", results_dir=tmp_path / "r2", threads=1)
    assert resumed["timings"]["resumed_from_step"] == 20
    assert resumed["metrics"] == full["metrics"] and resumed["curves"] == full["curves"]
    assert full["status"] == "ok" and full["info"]["entropy_matrix"]
    diverged = run_one("entropy_attention", "sm", "stdlib-t32", 0, "tiny", overrides={"lr": 1e4, "grad_clip": 1e6},
                       results_dir=tmp_path / "r3", threads=1)
    assert diverged["status"] == "diverged"
    assert {m["name"]: m for m in diverged["metrics"]}["diverged"]["value"] == 1.0
