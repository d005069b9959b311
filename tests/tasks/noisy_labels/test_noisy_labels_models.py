"""Models: nested-dropout k distribution, all-k truncation, the SGD update."""

import numpy as np
import pytest
import torch

from tasks.noisy_labels.models import build_model, nested_k_probs, sample_k
from tasks.noisy_labels.train import SGD, accuracy_per_k, make_train_data
from tasks.noisy_labels.data import Arrays

torch.set_num_threads(1)


def test_nested_k_distribution_has_no_half_factor():
    K, sigma, n = 64, 4.0, 20000
    probs = nested_k_probs(K, sigma)
    gen = torch.Generator().manual_seed(0)
    ks = np.array([sample_k(probs, gen) for _ in range(n)])
    assert ks.min() >= 1 and ks.max() <= K
    hist = np.bincount(ks, minlength=K + 1)[1:] / n
    k = np.arange(1, K + 1)
    expected = np.exp(-((k / sigma) ** 2))
    expected /= expected.sum()
    with_half = np.exp(-0.5 * (k / sigma) ** 2)
    with_half /= with_half.sum()
    assert np.abs(hist - expected).max() < 0.015
    assert np.abs(hist - with_half).max() > 0.05          # the 1/2-factor variant is rejected
    assert hist[0] > hist[1] > hist[2] > hist[3]          # mode at k = 1 (mu = 0)
    assert np.isclose(float(probs.sum()), 1.0)


def test_truncation_cumsum_equals_naive_per_k():
    torch.manual_seed(0)
    net = build_model("mlp", 8, 5, 16, "nested", sigma=3.0)
    net.eval()
    x = torch.randn(7, 8)
    z = net.features(x)
    all_k = net.logits_all_k(z)  # N x K x C
    assert all_k.shape == (7, 16, 5)
    W = net.classifier.weight
    for k in range(1, 17):
        naive = (z * (torch.arange(16) < k).float()) @ W.t()  # the repo's masked features
        assert torch.allclose(all_k[:, k - 1], naive, atol=1e-5)
        assert torch.allclose(net(x, k), naive, atol=1e-5)
    assert torch.allclose(all_k[:, -1], net(x), atol=1e-5)


def test_accuracy_per_k_matches_a_per_k_loop_for_an_ensemble():
    torch.manual_seed(1)
    arr = Arrays(np.random.randn(40, 6).astype(np.float32), np.random.randint(0, 4, 40),
                 np.random.randn(30, 6).astype(np.float32), np.random.randint(0, 4, 30),
                 np.random.randn(30, 6).astype(np.float32), np.random.randint(0, 4, 30), 4, "vector")
    data = make_train_data(arr, "digits", {"noise": "none"}, 0, "cpu")
    nets = [build_model("mlp", 6, 4, 12, "nested", sigma=2.0) for _ in range(2)]
    acc = accuracy_per_k(nets, data, data.x_val, data.y_val, all_k=True)
    for k in range(1, 13):
        logits = (nets[0](data.x_val, k) + nets[1](data.x_val, k)) / 2
        assert acc[k - 1] == pytest.approx((logits.argmax(1) == data.y_val).float().mean().item())
    full = accuracy_per_k(nets, data, data.x_val, data.y_val, all_k=False)
    assert full[0] == pytest.approx(acc[-1])


def test_sgd_matches_torch_sgd():
    torch.manual_seed(0)
    a = build_model("mlp", 8, 3, 4, "none")
    b = build_model("mlp", 8, 3, 4, "none")
    b.load_state_dict(a.state_dict())
    mine = SGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=False)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    for step in range(5):
        for net, opt in ((a, mine), (b, ref)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        mine.param_groups[0]["lr"] = ref.param_groups[0]["lr"] = 0.1 / (step + 2)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_dropout_only_in_training_and_resnet_shape():
    net = build_model("mlp", 8, 3, 16, "dropout", p=0.5)
    x = torch.randn(4, 8)
    net.eval()
    assert torch.equal(net(x), net(x))
    r = build_model("resnet18", 3, 10, 512, "nested", sigma=10.0)
    r.eval()
    assert r.features(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    with pytest.raises(ValueError):
        build_model("mlp", 8, 3, 16, "nested", sigma=0.0)
