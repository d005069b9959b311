"""STN layers, the hyperparameter space, the gradient routing of Algorithm 1, augmentations."""

import math

import pytest
import torch
import torch.nn.functional as F

from tasks.self_tuning_networks.models import STNAlexNet, STNMLP, hyperparameters
from tasks.self_tuning_networks.stn import (HParam, HyperSpace, STNConv2d, STNLinear, cutout, example_dropout,
                                            colour_jitter)


def test_linear_equals_base_layer_when_gates_are_zero():
    torch.manual_seed(0)
    layer = STNLinear(7, 5, num_hparams=3)
    x, h = torch.randn(4, 7), torch.randn(4, 3)
    base = F.linear(x, layer.weight, layer.bias)
    assert not torch.allclose(layer(x, h), base)  # the random V, C gate the output
    with torch.no_grad():
        layer.gates.weight.zero_()
    assert torch.equal(layer(x, h), base)
    # V λ scales row j of W_hyper: the forward pass equals the materialised per-example weight.
    with torch.no_grad():
        layer.gates.weight.normal_()
    g = layer.gates(h)
    w = layer.weight.unsqueeze(0) + g[:, :5, None] * layer.hyper_weight.unsqueeze(0)
    b = layer.bias + g[:, 5:] * layer.hyper_bias
    assert torch.allclose(layer(x, h), torch.einsum("boi,bi->bo", w, x) + b, atol=1e-5)


def test_conv_equals_base_layer_when_gates_are_zero():
    torch.manual_seed(0)
    conv = STNConv2d(3, 6, 3, stride=2, padding=1, num_hparams=2)
    x, h = torch.randn(2, 3, 8, 8), torch.randn(2, 2)
    with torch.no_grad():
        conv.gates.weight.zero_()
    assert torch.equal(conv(x, h), F.conv2d(x, conv.weight, conv.bias, 2, 1))
    plain = STNConv2d(3, 6, 3, num_hparams=2, hyper=False)
    assert not hasattr(plain, "hyper_weight") and plain(x).shape == (2, 6, 6, 6)


def test_integer_hyperparameter_stays_integer_and_in_range():
    p = HParam("cutout", "int", 0, 4, start=1)
    space = HyperSpace([p], init_scale=3.0)
    assert space.values()["cutout"] == 1.0
    torch.manual_seed(0)
    v = space.constrain(space.perturb(5000))[:, 0]
    assert torch.equal(v, v.round()) and v.min() == 0 and v.max() == 4
    assert set(v.unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    for start in range(5):
        assert HParam("c", "int", 0, 4, start=start).constrain(torch.tensor(HParam("c", "int", 0, 4, start=start)
                                                                            .to_unconstrained(start))) == start


def test_rates_and_entropy():
    p = HParam("d", "rate", 0.0, 0.95, start=0.05)
    assert p.constrain(torch.tensor(p.to_unconstrained(0.05))).item() == pytest.approx(0.05, abs=1e-6)
    assert 0 < p.constrain(torch.tensor(-50.0)) < p.constrain(torch.tensor(50.0)) <= 0.95
    space = HyperSpace([p, HParam("a", "positive", start=2.0)], init_scale=0.5)
    assert space.values()["a"] == pytest.approx(2.0, rel=1e-5)
    assert space.scales()["d"] == pytest.approx(0.5, rel=1e-5)
    assert space.entropy().item() == pytest.approx(2 * math.log(0.5 * math.sqrt(2 * math.pi * math.e)), rel=1e-5)


def test_lambda_gets_gradient_only_from_the_validation_step():
    torch.manual_seed(0)
    params = hyperparameters("mlp", {"cutout_max": 4}, {})
    space = HyperSpace(params)
    model = STNMLP(64, 10, len(params), hidden=16)
    x, y = torch.randn(8, 64), torch.randint(0, 10, (8,))
    # Best-response step as in train.fit: perturbed λ detached, regularisers from detached rates.
    model.train()
    u = space.perturb(8).detach()
    vals = dict(zip(space.names, space.constrain(u).unbind(1)))
    F.cross_entropy(model(x, u, {k: v for k, v in vals.items() if k.startswith("dropout")}), y).backward()
    assert space.h.grad is None and space.s.grad is None
    assert model.fc1.gates.weight.grad is not None
    # Hyper step: eval mode, the gradient reaches λ (and σ) through the hypernet only.
    model.eval()
    u = space.perturb(8)
    gh, gs = torch.autograd.grad(F.cross_entropy(model(x, u), y), [space.h, space.s])
    assert gh.abs().sum() > 0 and gs.abs().sum() > 0
    # Dropout rates carry no gradient (probabilities detached, as in the official code).
    p = torch.full((8,), 0.3, requires_grad=True)
    out = example_dropout(torch.ones(8, 5, requires_grad=True), p)
    out.sum().backward()
    assert p.grad is None


def test_example_dropout_and_cutout_per_example():
    torch.manual_seed(0)
    x = torch.ones(4, 10000)
    out = example_dropout(x, torch.tensor([0.0, 0.25, 0.5, 0.9]))
    kept = (out > 0).float().mean(1)
    assert kept[0] == 1 and abs(kept[1] - 0.75) < 0.02 and abs(kept[2] - 0.5) < 0.02 and abs(kept[3] - 0.1) < 0.02
    assert out[1][out[1] > 0].unique().item() == pytest.approx(1 / 0.75)
    img = torch.ones(3, 1, 8, 8)
    cut = cutout(img, torch.tensor([0.0, 2.0, 4.0]))
    zeros = (cut == 0).sum(dim=(1, 2, 3))
    assert zeros[0] == 0 and 0 < zeros[1] <= 4 and 0 < zeros[2] <= 16
    holes = cutout(torch.ones(2, 1, 32, 32), torch.tensor([4.0, 4.0]), torch.tensor([0.0, 3.0]), max_holes=4)
    assert (holes[0] == 0).sum() == 0 and (holes[1] == 0).sum() > 0
    rgb = torch.rand(2, 3, 8, 8)
    same = colour_jitter(rgb, torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2))
    assert torch.allclose(same, rgb, atol=1e-5)


def test_alexnet_shapes_and_plain_variant():
    torch.manual_seed(0)
    params = hyperparameters("alexnet", {"cutout_max": 24, "holes_max": 4}, {"start_cutout": 4})
    assert len(params) == 15 and [p.name for p in params if p.kind == "int"] == ["cutout", "holes"]
    net = STNAlexNet(10, len(params))
    x = torch.randn(2, 3, 32, 32)
    drops = {n: torch.full((2,), 0.1) for n in STNAlexNet.dropouts}
    assert net(x, torch.randn(2, 15), drops).shape == (2, 10)
    plain = STNAlexNet(10, len(params), hyper=False)
    n_plain, n_stn = (sum(p.numel() for p in m.parameters()) for m in (plain, net))
    assert 1.9 < n_stn / n_plain < 2.1  # ~2x parameters, as the card says
