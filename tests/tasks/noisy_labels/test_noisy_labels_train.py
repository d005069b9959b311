"""Training pieces: k* selection, small-loss selection, the co-teaching cross update, schedules."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tasks.noisy_labels.models import build_model
from tasks.noisy_labels.train import (SGD, coteach_step, forget_schedule, lr_factor, select_k,
                                      small_loss_indices)


def test_select_k_argmax_and_tie_break_to_smaller_k():
    assert select_k(np.array([0.50, 0.81, 0.80, 0.79])) == 2
    assert select_k(np.array([0.70, 0.90, 0.90, 0.90])) == 2          # exact ties -> smallest k
    assert select_k(np.array([0.90, 0.90 + 0.5e-5])) == 1              # gain below 1e-5 per channel loses
    assert select_k(np.array([0.90, 0.90 + 2e-5])) == 2                # a real gain wins
    # accuracies are fractions: 64 channels cost 6.4e-4, less than one example of 300 (3.3e-3)
    acc = np.full(64, 0.5)
    acc[-1] = 0.5 + 1 / 300
    assert select_k(acc) == 64


def test_small_loss_keeps_exactly_the_smallest_fraction():
    torch.manual_seed(0)
    logits, labels = torch.randn(32, 10), torch.randint(0, 10, (32,))
    losses = F.cross_entropy(logits, labels, reduction="none")
    for forget in (0.0, 0.2, 0.5, 0.8):
        idx = small_loss_indices(logits, labels, forget)
        n_keep = int((1 - forget) * 32)
        assert len(idx) == n_keep == len(set(idx.tolist()))
        kept = losses[idx]
        dropped = losses[[i for i in range(32) if i not in set(idx.tolist())]]
        if len(dropped):
            assert kept.max() <= dropped.min()
        assert torch.equal(torch.sort(kept).values, torch.sort(losses).values[:n_keep])


def _sgd_step(net, x, y, lr):
    opt = SGD(net.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    net.train()
    F.cross_entropy(net(x), y).backward()
    opt.step()


def test_coteach_cross_update_uses_the_peers_selection():
    torch.manual_seed(3)
    # dropout nets: the selection must be made in eval mode (no dropout noise)
    a = build_model("mlp", 6, 4, 8, "dropout", p=0.5)
    b = build_model("mlp", 6, 4, 8, "dropout", p=0.5)
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    x1, y1, x2, y2 = x[:8], y[:8], x[8:], y[8:]
    a.eval(), b.eval()
    with torch.no_grad():
        exp_sel_a = small_loss_indices(a(x1), y1, 0.5)
        exp_sel_b = small_loss_indices(b(x2), y2, 0.5)
        own_sel_a_on_d2 = small_loss_indices(a(x2), y2, 0.5)
    assert set(exp_sel_b.tolist()) != set(own_sel_a_on_d2.tolist())  # the test can tell them apart

    ref_a, ref_b, wrong_a = (build_model("mlp", 6, 4, 8, "dropout", p=0.5) for _ in range(3))
    ref_a.load_state_dict(a.state_dict()), wrong_a.load_state_dict(a.state_dict()), ref_b.load_state_dict(b.state_dict())
    rng = torch.get_rng_state()
    _sgd_step(ref_a, x2[exp_sel_b], y2[exp_sel_b], 0.1)      # A on B's choice
    _sgd_step(ref_b, x1[exp_sel_a], y1[exp_sel_a], 0.1)      # B on A's choice
    torch.set_rng_state(rng)
    _sgd_step(wrong_a, x2[own_sel_a_on_d2], y2[own_sel_a_on_d2], 0.1)

    torch.set_rng_state(rng)
    opt_a = SGD(a.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0)
    opt_b = SGD(b.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0)
    _, _, sel_a, sel_b = coteach_step(a, b, opt_a, opt_b, x, y, 0.5, None, None)
    assert sel_a.tolist() == exp_sel_a.tolist() and sel_b.tolist() == exp_sel_b.tolist()
    assert len(sel_a) == 4
    for p, q in zip(a.classifier.parameters(), ref_a.classifier.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    for p, q in zip(b.classifier.parameters(), ref_b.classifier.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert not torch.allclose(a.classifier.weight, wrong_a.classifier.weight)


def test_coteach_selection_uses_the_current_k():
    torch.manual_seed(0)
    a = build_model("mlp", 6, 4, 8, "nested", sigma=2.0)
    b = build_model("mlp", 6, 4, 8, "nested", sigma=2.0)
    x, y = torch.randn(32, 6), torch.randint(0, 4, (32,))
    with torch.no_grad():
        a.eval()
        exp = small_loss_indices(a(x[:16], 2), y[:16], 0.5)
    opt_a, opt_b = (SGD(n.parameters(), lr=0.0) for n in (a, b))
    _, _, sel_a, _ = coteach_step(a, b, opt_a, opt_b, x, y, 0.5, 2, 3)
    assert sel_a.tolist() == exp.tolist()


def test_forget_rate_ramp():
    r = forget_schedule(15, 0.5, 10)
    assert np.allclose(r[:10], np.linspace(0, 0.5, 10)) and r[0] == 0.0 and r[9] == 0.5
    assert np.all(r[10:] == 0.5)
    assert np.all(forget_schedule(5, 0.2, 0) == 0.2)              # fine-tuning: no ramp
    assert np.allclose(forget_schedule(3, 0.4, 5), [0.0, 0.1, 0.2])  # ramp longer than training


def test_lr_schedule():
    f = lambda it, ep, **kw: lr_factor(it, ep, 1000, **kw)  # noqa: E731
    assert f(0, 0, warmup_iters=200) == pytest.approx(1 / 200)
    assert f(199, 0, warmup_iters=200) == pytest.approx(1.0)
    assert f(500, 89, milestones=[90, 128]) == 1.0
    assert f(500, 90, milestones=[90, 128]) == pytest.approx(0.1)
    assert f(900, 140, milestones=[90, 128]) == pytest.approx(0.01)
    assert f(500, 0, schedule="cosine") == pytest.approx(0.5)
    with pytest.raises(ValueError):
        f(0, 0, schedule="poly")
