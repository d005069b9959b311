"""Feature extractors, the compression layer and the bias-free classifier (card §2).

    z = f(x) in R^K   ->   compression (none | dropout | nested)   ->   logits = z W^T (no bias)

* ``MLPFeatures``: in -> 256 -> 256 -> K, ReLU after every layer (card §9, digits).
* ``CNN1DFeatures``: three 1-D convolutions, ReLU, global average pool to K (card §9, MNIST-1D).
* ``ResNet18Features``: the CIFAR ResNet-18 (3x3 stem, no max-pool), 512-d pooled output.

Nested dropout (as in the released code): one k per mini-batch from
p(k) ∝ exp(-((k - mu) / sigma)^2), k = 1..K, mu = 0 (no 1/2 factor), keep the first k channels,
no rescaling. All K truncations are evaluated at once: logits_k = sum_{j<k} z_j W_j, a cumsum over
channels of z[:, :, None] * W^T[None] (N x K x C).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# -- feature extractors -------------------------------------------------------------------

class MLPFeatures(nn.Module):
    def __init__(self, in_dim: int, feature_dim: int = 64, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, feature_dim), nn.ReLU(),
        )
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN1DFeatures(nn.Module):
    """Three 1-D convolutions on a length-L signal, global average pooled to K channels."""

    def __init__(self, feature_dim: int = 64, channels: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(1, channels, 5, padding=2), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, feature_dim, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1)).flatten(1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Features(nn.Module):
    """CIFAR ResNet-18 (as the repo's cifar_resnet): 3x3 stem, [2,2,2,2] blocks, 512-d output."""

    def __init__(self, feature_dim: int = 512):
        super().__init__()
        if feature_dim != 512:
            raise ValueError("ResNet-18 features are 512-d")
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._layer(64, 2, 1)
        self.layer2 = self._layer(128, 2, 2)
        self.layer3 = self._layer(256, 2, 2)
        self.layer4 = self._layer(512, 2, 2)
        self.feature_dim = 512

    def _layer(self, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


# -- the whole network --------------------------------------------------------------------

class NoisyLabelNet(nn.Module):
    """Feature extractor -> compression -> bias-free linear classifier."""

    def __init__(self, features: nn.Module, num_classes: int, compression: str = "none",
                 p: float = 0.0, sigma: float = 0.0):
        super().__init__()
        if compression not in ("none", "dropout", "nested"):
            raise ValueError(f"unknown compression {compression!r}")
        self.features = features
        self.K = features.feature_dim
        self.classifier = nn.Linear(self.K, num_classes, bias=False)
        self.compression = compression
        self.p = float(p)
        self.sigma = float(sigma)

    def forward(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Logits. ``k``: keep only the first k feature channels (nested mask / truncation).

        Dropout is applied in training mode only (inverted dropout, scaled by 1/(1-p)).
        """
        z = self.features(x)
        if self.compression == "dropout" and self.p > 0:
            z = F.dropout(z, p=self.p, training=self.training)
        return self.head(z, k)

    def head(self, z: torch.Tensor, k: int | None = None) -> torch.Tensor:
        w = self.classifier.weight  # C x K
        if k is None or k >= self.K:
            return z @ w.t()
        return z[:, :k] @ w[:, :k].t()

    def logits_all_k(self, z: torch.Tensor) -> torch.Tensor:
        """N x K x C: entry [:, k-1] is the logits with the first k channels (one cumsum)."""
        return torch.cumsum(z.unsqueeze(2) * self.classifier.weight.t().unsqueeze(0), dim=1)


def nested_k_probs(K: int, sigma: float, mu: float = 0.0) -> torch.Tensor:
    """p(k) ∝ exp(-((k - mu)/sigma)^2) for k = 1..K (float64)."""
    k = torch.arange(1, K + 1, dtype=torch.float64)
    w = torch.exp(-(((k - mu) / sigma) ** 2))
    return w / w.sum()


def sample_k(probs: torch.Tensor, gen: torch.Generator) -> int:
    """One k in 1..K from ``probs`` using ``gen`` (a CPU generator)."""
    return int(torch.multinomial(probs, 1, generator=gen).item()) + 1


def set_mode(model: nn.Module, train: bool, freeze_bn: bool = False) -> None:
    """Train/eval mode; with ``freeze_bn`` BatchNorm layers stay in eval mode (repo --freeze-bn)."""
    model.train(train)
    if train and freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def build_model(arch: str, in_dim: int, num_classes: int, feature_dim: int, compression: str = "none",
                p: float = 0.0, sigma: float = 0.0, hidden: int = 256, channels: int = 32) -> NoisyLabelNet:
    if arch == "mlp":
        feats: nn.Module = MLPFeatures(in_dim, feature_dim, hidden)
    elif arch == "cnn1d":
        feats = CNN1DFeatures(feature_dim, channels)
    elif arch == "resnet18":
        feats = ResNet18Features(feature_dim)
    else:
        raise ValueError(f"unknown arch {arch!r}: use mlp, cnn1d or resnet18")
    if compression == "nested" and not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError("nested dropout needs sigma > 0")
    if compression == "dropout" and not 0.0 <= p < 1.0:
        raise ValueError("dropout needs 0 <= p < 1")
    net = NoisyLabelNet(feats, num_classes, compression, p, sigma)
    net.arch, net.in_dim, net.hidden, net.channels = arch, int(in_dim), int(hidden), int(channels)
    return net
