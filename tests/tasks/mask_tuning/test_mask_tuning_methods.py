"""Every method on a tiny base-to-new Setup: what each must equal at its boundary (no training =
zero-shot; lambda = 0 = AMT), the random control's exact sparsity, disjoint few-shot draws, and
selection on validation only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tasks.mask_tuning import model as M
from tasks.mask_tuning import train as T

HP = {"steps": 3, "batch_size": 4, "lr": 1e-3, "mask_l2": 1e-4, "gdr_lambda": 1.0, "lp_lr": 0.05, "lp_steps": 20,
      "n_ctx": 2, "tip_alpha": 1.0, "tip_beta": 5.5}


def test_few_shot_draws_are_disjoint_balanced_and_seeded():
    labels = np.repeat(np.arange(4), 10)
    tr, va = T.few_shot_indices(labels, [0, 2], 3, 4, seed=1, stream="s")
    assert not set(tr) & set(va)
    assert np.bincount(labels[tr]).tolist() == [3, 0, 3] and np.bincount(labels[va]).tolist() == [4, 0, 4]
    assert np.array_equal(tr, T.few_shot_indices(labels, [0, 2], 3, 4, seed=1, stream="s")[0])
    assert not np.array_equal(tr, T.few_shot_indices(labels, [0, 2], 3, 4, seed=2, stream="s")[0])
    with pytest.raises(ValueError, match="fewer than"):
        T.few_shot_indices(labels, [0], 8, 4, seed=1, stream="s")


def test_zero_shot_metrics_and_base_to_new(tiny_setup):
    m, _ = T.tune("zero_shot", tiny_setup, HP, 0)
    assert set(m) == {"val_accuracy", "accuracy", "new_accuracy", "harmonic_mean", "retention"}
    b, n = m["accuracy"], m["new_accuracy"]
    assert m["harmonic_mean"] == pytest.approx(2 * b * n / (b + n))
    # by hand: base images among the 4 base prompts
    s = tiny_setup
    text = T.text_features(s, s.weights, s.prompts)
    f = T.image_features(s, s.weights, s.x_test)
    base = s.y_test < 4
    pred = (f[base] @ text[:4].T).argmax(-1)
    assert b == pytest.approx(float((pred == s.y_test[base]).float().mean() * 100))


def test_masks_with_zero_learning_rate_are_zero_shot(tiny_setup):
    zs, _ = T.tune("zero_shot", tiny_setup, HP, 0)
    for method in ("amt", "ramt", "amt_mlp"):
        m, info = T.tune(method, tiny_setup, {**HP, "lr": 0.0, "mask_l2": 0.0}, 0)
        assert m["mask_sparsity"] == 0.0 and info["mask_sparsity"] == 0.0
        for k in zs:
            assert m[k] == pytest.approx(zs[k]), (method, k)


def test_amt_trains_and_ramt_with_lambda_zero_is_amt(tiny_setup):
    hp = {**HP, "lr": 3e-3}
    amt, info = T.tune("amt", tiny_setup, hp, 0)
    assert info["mask_sparsity"] > 0  # Adam moves scores by ~lr a step: some cross 5e-3
    assert set(info["sparsity_per_tensor"]) == set(M.masked_names(tiny_setup.cfg, "attn"))
    r0, info0 = T.tune("ramt", tiny_setup, {**hp, "gdr_lambda": 0.0}, 0)
    assert r0 == amt and info0["sparsity_per_tensor"] == info["sparsity_per_tensor"]
    _r1, info1 = T.tune("ramt", tiny_setup, hp, 0)
    assert 0 < info1["gdr_fraction_unchanged"] < 1  # some conflicting components were dropped


def test_random_mask_reaches_the_requested_sparsity_exactly(tiny_setup):
    names = M.masked_names(tiny_setup.cfg, "attn")
    per = {names[0]: 25.0, names[1]: 10.0}
    clf = T.random_masks(tiny_setup, per, seed=0)
    for n, p in per.items():
        zeroed = (clf.weights[n] == 0) & (tiny_setup.weights[n] != 0)
        assert int(zeroed.sum()) == round(p / 100 * tiny_setup.weights[n].numel())
    assert torch.equal(clf.weights[names[2]], tiny_setup.weights[names[2]])


def test_every_trained_method_runs_and_reports(tiny_setup):
    for method in ("linear_probe", "coop", "tip_adapter", "full_ft"):
        m, info = T.tune(method, tiny_setup, {**HP, "candidates": [{}, {"lr": 1e-2, "lp_l2": 1e-3}]}, 0)
        assert 0 <= m["accuracy"] <= 100 and np.isfinite(m["retention"]) and len(info["candidates"]) == 2
    # frozen-encoder methods keep zero-shot retention
    zs, _ = T.tune("zero_shot", tiny_setup, HP, 0)
    for method in ("linear_probe", "coop", "tip_adapter"):
        assert T.tune(method, tiny_setup, HP, 0)[0]["retention"] == zs["retention"]


def test_selection_reads_validation_only(tiny_setup, monkeypatch):
    """Scrambling the test and retention labels cannot change which candidate is chosen."""
    hp = {**HP, "candidates": [{"lr": 1e-4}, {"lr": 1e-2}]}
    _, info = T.tune("amt", tiny_setup, hp, 0)
    g = torch.Generator().manual_seed(3)
    other = dataclasses.replace(tiny_setup, y_test=tiny_setup.y_test[torch.randperm(len(tiny_setup.y_test), generator=g)],
                                y_ret=tiny_setup.y_ret[torch.randperm(len(tiny_setup.y_ret), generator=g)])
    _, info2 = T.tune("amt", other, hp, 0)
    assert info2["chosen"] == info["chosen"] and info2["candidates"] == info["candidates"]
