"""Each objective against a hand-computed value on a tiny batch, the batch-size invariance of
the averaged negatives, and the pieces of the training step (warm-up, floor, batches,
augmentation)."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.cmim import losses as L
from tasks.cmim.train import augment_images, batches


def _lse(*xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def test_contrastive_likelihood_hand_computed():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    tau = 0.5
    r = 1 / math.sqrt(2)
    # cosines: s01 = 0, s02 = s12 = 1/sqrt(2); the positive s_ii = 1
    negs = {0: [0.0, r], 1: [0.0, r], 2: [r, r]}
    want_mean = [1 / tau - _lse(1 / tau, *[s / tau - math.log(2) for s in negs[i]]) for i in range(3)]
    want_sum = [1 / tau - _lse(1 / tau, *[s / tau for s in negs[i]]) for i in range(3)]
    assert L.contrastive_log_pk1(z, tau).tolist() == pytest.approx(want_mean, rel=1e-6)
    assert L.contrastive_log_pk1(z, tau, average_negatives=False).tolist() == pytest.approx(want_sum, rel=1e-6)
    # a batch of one has no negatives: the term is dropped
    assert L.contrastive_log_pk1(z[:1], tau).tolist() == [0.0]


@pytest.mark.parametrize("b", [2, 16, 256])
def test_averaged_negatives_do_not_depend_on_batch_size(b):
    """Orthogonal codes (every s_ij = 0): averaged, log p(k=1) = 1/tau - log(e^(1/tau) + 1) at any B;
    summed, the denominator grows with B - 1."""
    tau = 0.5
    z = torch.eye(256)[:b] * 3.0
    mean = L.contrastive_log_pk1(z, tau)
    summed = L.contrastive_log_pk1(z, tau, average_negatives=False)
    assert mean.tolist() == pytest.approx([1 / tau - math.log(math.exp(1 / tau) + 1)] * b, rel=1e-5)
    assert summed.tolist() == pytest.approx([1 / tau - math.log(math.exp(1 / tau) + b - 1)] * b, rel=1e-5)


def test_averaged_negatives_are_batch_size_invariant_in_expectation():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4096, 16, generator=g)
    tau = 1.0  # negatives carry most of the denominator

    def mean_loss(b, avg):
        return float(torch.stack([-L.contrastive_log_pk1(z[i: i + b], tau, avg).mean()
                                  for i in range(0, 4096, b)]).mean())
    m16, m256 = mean_loss(16, True), mean_loss(256, True)
    s16, s256 = mean_loss(16, False), mean_loss(256, False)
    assert abs(m16 - m256) < 0.02 * abs(m256)             # the averaged term keeps its scale
    # the summed one grows with log(B - 1): log((e + 255 E[e^s]) / (e + 15 E[e^s])) with E[e^s] ~ 1.03
    assert s256 - s16 == pytest.approx(math.log((math.e + 255 * 1.03) / (math.e + 15 * 1.03)), rel=0.03)


def test_positive_gives_no_gradient_only_negatives_do():
    """s_ii = cos(z_i, z_i) = 1 is constant: with one pair the gradient of log p(k=1) on z_0 is
    the negative's repulsion alone (orthogonal to z_0, since a cosine ignores the norm)."""
    z = torch.tensor([[1.0, 0.2], [0.3, 1.0]], requires_grad=True)
    L.contrastive_log_pk1(z, 0.5)[0].backward()
    g = z.grad[0]
    assert float(g @ z[0].detach()) == pytest.approx(0.0, abs=1e-6) and float(g.norm()) > 0


def test_gaussian_log_densities_and_kl_hand_computed():
    mu, logsig = torch.tensor([[0.5, -1.0]]), torch.tensor([[math.log(0.5), 0.0]])
    z = torch.tensor([[1.0, 0.0]])
    lq = (-0.5 * (0.5 / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)) + \
         (-0.5 * 1.0 ** 2 - 0.0 - 0.5 * math.log(2 * math.pi))
    lp = -0.5 * 1.0 - math.log(2 * math.pi)
    assert L.log_normal(z, mu, logsig).item() == pytest.approx(lq, rel=1e-6)
    assert L.log_std_normal(z).item() == pytest.approx(lp, rel=1e-6)
    kl = 0.5 * (0.25 + 0.25 - 1) - math.log(0.5) + 0.5 * (1 + 1 - 1)
    assert L.kl_std_normal(mu, logsig).item() == pytest.approx(kl, rel=1e-6)


def _example():
    mu = torch.tensor([[0.5, -1.0], [0.0, 1.0]])
    logsig = torch.tensor([[math.log(0.5), 0.0], [-1.0, -2.0]])
    z = torch.tensor([[1.0, 0.0], [0.2, 0.9]])
    rec = torch.tensor([3.0, 5.0])
    return mu, logsig, z, rec


@pytest.mark.parametrize("w_rec", [0.5, 1.0])
def test_objectives_hand_computed(w_rec):
    mu, logsig, z, rec = _example()
    beta, tau = 0.4, 0.1
    lq = [L.log_normal(z[i:i + 1], mu[i:i + 1], logsig[i:i + 1]).item() for i in range(2)]
    lp = [L.log_std_normal(z[i:i + 1]).item() for i in range(2)]
    kl = [L.kl_std_normal(mu[i:i + 1], logsig[i:i + 1]).item() for i in range(2)]
    c = (1.0 * 0.2 + 0.0 * 0.9) / math.sqrt(0.2 ** 2 + 0.9 ** 2)  # cos(z_0, z_1), |z_0| = 1
    neg = [1 / tau - _lse(1 / tau, c / tau - math.log(1)) for _ in range(2)]  # B - 1 = 1: mean = sum
    kw = dict(rec=rec, mu=mu, logsig=logsig, z=z, beta=beta, w_rec=w_rec, tau=tau)
    amim = [w_rec * rec[i].item() - 0.5 * (beta * lq[i] + lp[i]) for i in range(2)]
    assert L.objective("amim", **kw)["total"].tolist() == pytest.approx(amim, rel=1e-6)
    assert L.objective("cmim", **kw)["total"].tolist() == pytest.approx([amim[i] - neg[i] for i in range(2)], rel=1e-6)
    assert L.objective("cmim_sum", **kw)["total"].tolist() == pytest.approx([amim[i] - neg[i] for i in range(2)], rel=1e-6)
    vae = [rec[i].item() + beta * kl[i] for i in range(2)]
    assert L.objective("vae", **kw)["total"].tolist() == pytest.approx(vae, rel=1e-6)
    assert L.objective("cvae", **kw)["total"].tolist() == pytest.approx([vae[i] - neg[i] for i in range(2)], rel=1e-6)
    assert L.objective("ae", **kw)["total"].tolist() == pytest.approx(rec.tolist())


def test_cmim_sum_differs_from_cmim_beyond_two_examples():
    mu, logsig, _, _ = _example()
    z = torch.tensor([[1.0, 0.0], [0.2, 0.9], [-1.0, 0.3]])
    kw = dict(rec=torch.ones(3), mu=torch.zeros(3, 2), logsig=torch.zeros(3, 2), z=z, tau=0.1)
    d = L.objective("cmim_sum", **kw)["total"] - L.objective("cmim", **kw)["total"]
    assert (d > 0).all()  # the summed denominator is larger: a larger loss


def test_infonce_hand_computed():
    h1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h2 = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    r = 1 / math.sqrt(2)
    # row 0: logits [1, r]; row 1: logits [0, r]; positives on the diagonal; tau = 1
    want = [-(1 - _lse(1, r)), -(r - _lse(0, r))]
    assert L.infonce_loss(h1, h2, 1.0).tolist() == pytest.approx(want, rel=1e-6)
    rec = torch.tensor([2.0, 4.0])
    out = L.objective("infonce", rec=rec, mu=h1, logsig=None, z=None, w_rec=0.5, tau=1.0, h1=h1, h2=h2)
    assert out["total"].tolist() == pytest.approx([1.0 + want[0], 2.0 + want[1]], rel=1e-6)


def test_warmup_floor_and_unknown_objective():
    assert [L.warmup_beta(e, 4) for e in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    assert L.warmup_beta(0, 0) == 1.0
    x = torch.tensor([-10.0, -6.0, -1.0], requires_grad=True)
    y = L.clamp_logsig(x)
    y.sum().backward()
    assert y.tolist() == [-6.0, -6.0, -1.0] and x.grad.tolist()[0] == 0.0 and x.grad.tolist()[2] == 1.0
    with pytest.raises(ValueError, match="unknown objective"):
        L.objective("bogus", rec=torch.ones(1), mu=torch.zeros(1, 1), logsig=None, z=None)


def test_batches_have_exactly_b_examples():
    g = torch.Generator().manual_seed(0)
    bs = batches(10, 4, g)
    assert [len(b) for b in bs] == [4, 4] and len(set(torch.cat(bs).tolist())) == 8
    assert [len(b) for b in batches(10, 256, g)] == [10]


def test_augmentation_shifts_and_stays_in_range():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 36)
    x[0, 2 * 6 + 3] = 1.0  # one lit pixel at (2, 3) of a 6x6 image
    out = augment_images(x, 6, g, max_shift=2, noise=0.0).view(6, 6)
    (r, c), = torch.nonzero(out).tolist()
    assert abs(r - 2) <= 2 and abs(c - 3) <= 2 and out.sum().item() == 1.0
    noisy = augment_images(torch.rand(8, 64), 8, g)
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0 and noisy.shape == (8, 64)
