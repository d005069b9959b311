"""The method's equations against hand-computed values on tiny inputs: the straight-through
mask and its threshold, sparsity, the mask L2 term, the distillation loss, gradient dropout's
keep probability and keep rule, Tip-Adapter's logits, InfoNCE."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.mask_tuning import model as M
from tasks.mask_tuning import train as T


def test_binarize_threshold_is_strict_and_init_keeps_every_weight():
    s = torch.tensor([1e-2, 5e-3, 5.0001e-3, 4.9e-3, -1.0])
    assert M.Binarize.apply(s, 5e-3).tolist() == [1.0, 0.0, 1.0, 0.0, 0.0]
    w = {"a": torch.randn(3, 4)}
    scores = M.init_scores(w, ["a"])
    assert torch.equal(scores["a"], torch.full((3, 4), 1e-2))
    assert torch.equal(M.apply_masks(w, scores)["a"], w["a"])  # training starts at zero-shot


def test_straight_through_gradient_is_upstream_gradient_times_weight():
    W = torch.tensor([[2.0, -3.0], [0.5, 4.0]])
    s = torch.tensor([[1e-2, 1e-3], [1e-2, 1e-2]], requires_grad=True)  # one entry masked
    x = torch.tensor([1.0, 2.0])
    out = M.apply_masks({"w": W}, {"w": s})["w"] @ x  # W_used x
    out.sum().backward()
    # dL/dW_used[i, j] = x[j]; dL/ds = dL/dW_used * W, also where the mask is 0 (straight through)
    assert s.grad.tolist() == [[2.0 * 1.0, -3.0 * 2.0], [0.5 * 1.0, 4.0 * 2.0]]
    assert out.tolist() == [2.0 * 1 + 0.0, 0.5 * 1 + 4.0 * 2]  # the masked weight contributes nothing


def test_sparsity_counts_entries_at_or_below_threshold():
    scores = {"a": torch.tensor([1e-2, 5e-3, 0.0, 1e-2]), "b": torch.tensor([1e-2] * 6)}
    total, per = M.sparsity(scores)
    assert per == {"a": 50.0, "b": 0.0}
    assert total == pytest.approx(20.0)  # 2 of 10


def test_mask_l2_is_the_sum_of_unsquared_norms():
    scores = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}
    assert float(T.mask_l2(scores)) == pytest.approx(5.0 + 1.0)


def test_kl_loss_hand_computed():
    student = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (1/4, 3/4)
    teacher = torch.tensor([[math.log(2.0), 0.0]])  # softmax = (2/3, 1/3)
    expected = -(2 / 3 * math.log(1 / 4) + 1 / 3 * math.log(3 / 4))
    assert float(T.kl_loss(student, teacher, T=1.0)) == pytest.approx(expected, rel=1e-6)
    # temperature: T^2 * CE(softmax(z_t / T), log_softmax(z_s / T))
    p = torch.softmax(teacher / 2, -1)
    lq = torch.log_softmax(student / 2, -1)
    assert float(T.kl_loss(student, teacher, T=2.0)) == pytest.approx(float(-4 * (p * lq).sum()), rel=1e-6)
    # alpha = 0: the teacher is the student itself (detached): the loss is the student's entropy
    q = torch.softmax(student, -1)
    assert float(T.kl_loss(student, teacher, alpha=0.0)) == pytest.approx(float(-(q * q.log()).sum()), rel=1e-6)


def test_gdr_keep_probability_hand_computed():
    g_a = torch.tensor([0.2, 0.2, -0.5, 0.3, 0.0])
    g_b = torch.tensor([-0.6, 0.4, -0.1, -0.1, 0.7])
    p = T.gdr_keep_probability(g_a, g_b)
    # conflict: |g_a| / (|g_a| + |g_b|); agreement: 1; g_a = 0: 1/2
    assert p.tolist() == pytest.approx([0.25, 1.0, 1.0, 0.75, 0.5], abs=1e-6)


def test_gdr_gate_keep_rule_and_lambda():
    g_a = torch.tensor([0.2, 0.2, 0.2, -0.5])
    g_b = torch.tensor([-0.6, -0.6, 0.4, 0.1])  # P = 0.25, 0.25, ~1, 0.5/0.6
    u = torch.tensor([0.1, 0.3, 0.99, 0.9])
    # lambda = 1: keep where P > U, drop otherwise
    assert T.gdr_gate(g_a, g_b, 1.0, u).tolist() == pytest.approx([0.2, 0.0, 0.2, 0.0])
    # lambda = 0.3: a dropped component is shrunk to (1 - lambda) g_a
    assert T.gdr_gate(g_a, g_b, 0.3, u).tolist() == pytest.approx([0.2, 0.7 * 0.2, 0.2, 0.7 * -0.5])
    # lambda = 0: plain CE gradient
    assert torch.equal(T.gdr_gate(g_a, g_b, 0.0, u), g_a)
    # the distillation gradient never enters the update: every component is g_a or (1 - lambda) g_a
    gen = torch.Generator().manual_seed(1)
    ga, gb = torch.randn(1000, generator=gen), torch.randn(1000, generator=gen)
    ratio = T.gdr_gate(ga, gb, 0.3, torch.rand(1000, generator=gen)) / ga
    assert {round(r, 5) for r in ratio.tolist()} == {1.0, 0.7}


def test_gdr_keep_frequency_matches_probability():
    g_a = torch.full((20000,), 0.2)
    g_b = torch.full((20000,), -0.6)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    kept = (T.gdr_gate(g_a, g_b, 1.0, u) != 0).float().mean()
    assert float(kept) == pytest.approx(0.25, abs=0.01)


def test_tip_adapter_logits_hand_computed():
    f = torch.tensor([[1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised inside
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = T.tip_logits(f, text, keys, values, scale=10.0, alpha=2.0, beta=3.0)
    # clip: 10 * (1, 0); cache: affinities (1, 0) -> exp(-3 (1 - a)) = (1, e^-3)
    assert out[0].tolist() == pytest.approx([10.0 + 2.0 * 1.0, 0.0 + 2.0 * math.exp(-3.0)], rel=1e-6)


def test_info_nce_is_symmetric_cross_entropy():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    scale = torch.tensor(2.0)
    c = 2 * 2 ** -0.5
    # logits = 2 * cos: [[2, c], [0, c]]
    i2t = (-math.log(math.exp(2) / (math.exp(2) + math.exp(c))) - math.log(math.exp(c) / (1 + math.exp(c)))) / 2
    t2i = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(c) / (2 * math.exp(c)))) / 2
    assert float(M.info_nce(img, txt, scale)) == pytest.approx((i2t + t2i) / 2, rel=1e-6)


def test_adamw_matches_torch_optim():
    torch.manual_seed(0)
    a = torch.randn(5, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    mine = T.AdamW([a], 0.01, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    ref = torch.optim.AdamW([b], 0.01, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    for step in range(5):
        for p in (a, b):
            p.grad = torch.sin(p.detach() * (step + 1))
        mine.step()
        ref.step()
    assert torch.allclose(a, b, atol=1e-7)


def test_cosine_schedule():
    assert T.cosine_lr(1.0, 0, 10, warmup=2) == pytest.approx(0.5)
    assert T.cosine_lr(1.0, 2, 10, warmup=2) == pytest.approx(1.0)
    assert T.cosine_lr(1.0, 6, 10, warmup=2) == pytest.approx(0.5)
    assert T.cosine_lr(1.0, 5, 10) == pytest.approx(0.5)
