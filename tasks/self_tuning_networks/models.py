"""Classifiers built from STN layers (card §4.2, §8) and the hyperparameters each one tunes.

``hyper=True`` gives the STN (best-response) network; ``hyper=False`` the plain base network
the black-box baselines train. Layer dropouts are applied inside ``forward`` from the per-example
rates in ``drops`` (name -> (B,) tensor); input augmentations are applied by the training loop.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .stn import HParam, STNConv2d, STNLinear, example_dropout

DROPOUT_MAX = 0.95


class STNMLP(nn.Module):
    """in -> hidden -> hidden -> classes, dropout on the input and on both hidden layers."""

    dropouts = ("dropout_in", "dropout_h1", "dropout_h2")

    def __init__(self, in_dim: int, num_classes: int, num_hparams: int, hidden: int = 256, hyper: bool = True):
        super().__init__()
        self.fc1 = STNLinear(in_dim, hidden, num_hparams, hyper)
        self.fc2 = STNLinear(hidden, hidden, num_hparams, hyper)
        self.out = STNLinear(hidden, num_classes, num_hparams, hyper)

    def forward(self, x, hnet=None, drops: Mapping[str, torch.Tensor] | None = None):
        d = drops or {}
        x = example_dropout(x.flatten(1), d.get("dropout_in"))
        x = example_dropout(F.relu(self.fc1(x, hnet)), d.get("dropout_h1"))
        x = example_dropout(F.relu(self.fc2(x, hnet)), d.get("dropout_h2"))
        return self.out(x, hnet)


class STNAlexNet(nn.Module):
    """The official CIFAR-10 AlexNet: conv 3x3 64(stride 2)-192-384-256-256, max-pool after conv
    1, 2, 5; FC 1024-4096-4096-10; channel dropout after each conv, dropout after each hidden FC."""

    dropouts = ("dropout_in", "dropout_c1", "dropout_c2", "dropout_c3", "dropout_c4", "dropout_c5", "dropout_fc1",
                "dropout_fc2")

    def __init__(self, num_classes: int, num_hparams: int, hyper: bool = True, in_ch: int = 3, image_size: int = 32):
        super().__init__()
        chans = [in_ch, 64, 192, 384, 256, 256]
        self.convs = nn.ModuleList(
            STNConv2d(chans[i], chans[i + 1], 3, stride=2 if i == 0 else 1, padding=1, num_hparams=num_hparams, hyper=hyper)
            for i in range(5))
        side = image_size // 2 // 2 // 2 // 2
        flat = 256 * side * side
        self.fc1 = STNLinear(flat, 4096, num_hparams, hyper)
        self.fc2 = STNLinear(4096, 4096, num_hparams, hyper)
        self.out = STNLinear(4096, num_classes, num_hparams, hyper)

    def forward(self, x, hnet=None, drops=None):
        d = drops or {}
        x = example_dropout(x, d.get("dropout_in"))  # pixel dropout (official ``indropout``)
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x, hnet))
            if i in (0, 1, 4):
                x = F.max_pool2d(x, 2)
            x = example_dropout(x, d.get(f"dropout_c{i + 1}"), channel=True)
        x = x.flatten(1)
        x = example_dropout(F.relu(self.fc1(x, hnet)), d.get("dropout_fc1"))
        x = example_dropout(F.relu(self.fc2(x, hnet)), d.get("dropout_fc2"))
        return self.out(x, hnet)


def hyperparameters(model: str, settings: Mapping[str, Any], hp: Mapping[str, Any]) -> list[HParam]:
    """The tuned hyperparameters of a model, with the run's start values (card §4.2, §8)."""
    drop0 = float(hp.get("start_dropout", 0.05))
    cut0 = hp.get("start_cutout", 1)
    cut0 = float(settings["cutout_max"] if cut0 == "max" else cut0)
    if model == "mlp":
        return [HParam(n, "rate", 0.0, DROPOUT_MAX, drop0) for n in STNMLP.dropouts] + [
            HParam("cutout", "int", 0, int(settings["cutout_max"]), cut0)]
    if model == "alexnet":
        jit0 = float(hp.get("start_jitter", 0.05))
        return ([HParam(n, "rate", 0.0, 0.9, drop0) for n in STNAlexNet.dropouts[1:]]
                + [HParam("dropout_in", "rate", 0.0, 1.0, drop0), HParam("inscale", "rate", 0.0, 0.3, jit0),
                   HParam("hue", "rate", 0.0, 0.5, jit0), HParam("contrast", "rate", 0.0, 1.0, jit0),
                   HParam("saturation", "rate", 0.0, 1.0, jit0), HParam("brightness", "rate", 0.0, 1.0, jit0),
                   HParam("cutout", "int", 0, int(settings["cutout_max"]), cut0),
                   HParam("holes", "int", 0, int(settings.get("holes_max", 4)), float(hp.get("start_holes", 1)))])
    raise ValueError(f"unknown model {model!r} (mlp, alexnet)")


def build_model(model: str, in_shape: tuple[int, ...], num_classes: int, num_hparams: int, hyper: bool,
                hidden: int = 256) -> nn.Module:
    if model == "mlp":
        in_dim = 1
        for s in in_shape:
            in_dim *= s
        return STNMLP(in_dim, num_classes, num_hparams, hidden=hidden, hyper=hyper)
    if model == "alexnet":
        return STNAlexNet(num_classes, num_hparams, hyper=hyper, in_ch=in_shape[0], image_size=in_shape[-1])
    raise ValueError(f"unknown model {model!r} (mlp, alexnet)")

