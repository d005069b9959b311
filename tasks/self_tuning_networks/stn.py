"""Self-Tuning Network building blocks (card §2-3), one readable file.

* :class:`HyperSpace` — hyperparameters in an unconstrained space: rates through a stretched
  sigmoid, positive values through softplus, integers through the floor of a stretched sigmoid;
  per-example Gaussian perturbations with a learned scale ``softplus(s)`` and their entropy.
* :class:`STNLinear`, :class:`STNConv2d` — the structured best-response layers
  ``y = W_elem x + b_elem + (V λ) ⊙ (W_hyper x) + (C λ) ⊙ b_hyper`` (conv: per output channel).
  With ``hyper=False`` they are the plain base layer (the baselines' network).
* per-example dropout (probabilities detached, as in the official code) and tensor augmentations
  (cutout with per-example size and hole count, input scaling, colour jitter) so that paper-scale
  augmentation runs on the GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# -- hyperparameter space -------------------------------------------------------------------

def s_sigmoid(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Stretched sigmoid: R -> (low, high)."""
    return (high - low) * torch.sigmoid(x) + low


def s_logit(v: float, low: float, high: float) -> float:
    """Inverse of :func:`s_sigmoid` for a start value."""
    u = (v - low) / (high - low)
    return math.log(u) - math.log1p(-u)


def inv_softplus(v: float) -> float:
    return v + math.log(-math.expm1(-v))


@dataclass(frozen=True)
class HParam:
    """One tuned hyperparameter. ``kind``: ``rate`` (in (low, high)), ``int`` ({low..high}) or
    ``positive`` (softplus). ``per_example=False``: one sample per minibatch (card §3)."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 1.0
    start: float = 0.05
    per_example: bool = True

    def to_unconstrained(self, value: float) -> float:
        if self.kind == "rate":
            return s_logit(min(max(value, self.low + 1e-4), self.high - 1e-4), self.low, self.high)
        if self.kind == "int":
            # floor(s_sigmoid(u, low, high + 1)) = value: aim at the middle of [value, value + 1).
            return s_logit(value + 0.5, self.low, self.high + 1)
        if self.kind == "positive":
            return inv_softplus(max(value, 1e-6))
        raise ValueError(f"unknown hyperparameter kind {self.kind!r}")

    def constrain(self, u: torch.Tensor) -> torch.Tensor:
        if self.kind == "rate":
            return s_sigmoid(u, self.low, self.high)
        if self.kind == "int":
            # Clamp guards the top edge: s_sigmoid(u, low, high+1) < high+1 mathematically, but
            # float rounding can reach high+1 at large u.
            return torch.floor(s_sigmoid(u, self.low, self.high + 1)).clamp(self.low, self.high)
        return F.softplus(u)


class HyperSpace(nn.Module):
    """The tuned hyperparameters λ (unconstrained, ``h``) and perturbation scales (``s``)."""

    def __init__(self, params: list[HParam], init_scale: float = 0.5):
        super().__init__()
        self.params_ = list(params)
        self.names = [p.name for p in params]
        self.h = nn.Parameter(torch.tensor([p.to_unconstrained(p.start) for p in params], dtype=torch.float32))
        self.s = nn.Parameter(torch.full((len(params),), inv_softplus(init_scale), dtype=torch.float32))
        self._shared = torch.tensor([not p.per_example for p in params])

    def __len__(self) -> int:
        return len(self.params_)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def scale(self) -> torch.Tensor:
        return F.softplus(self.s)

    def perturb(self, batch: int, perturb: bool = True) -> torch.Tensor:
        """(B, H) unconstrained samples λ + ε, ε ~ N(0, softplus(s)²), one per example
        (one per minibatch for the hyperparameters that cannot vary inside a batch)."""
        base = self.h.unsqueeze(0).expand(batch, -1)
        if not perturb:
            return base
        eps = torch.randn(batch, len(self), device=self.h.device)
        if self._shared.any():
            shared = self._shared.to(eps.device)
            eps = torch.where(shared, eps[:1].expand_as(eps), eps)
        return base + self.scale() * eps

    def constrain(self, u: torch.Tensor) -> torch.Tensor:
        """(B, H) unconstrained -> (B, H) hyperparameter values (integers as whole floats)."""
        return torch.stack([p.constrain(u[..., i]) for i, p in enumerate(self.params_)], dim=-1)

    def entropy(self) -> torch.Tensor:
        """H[N(0, diag σ²)] = Σ log(σ √(2πe))."""
        return torch.log(self.scale() * math.sqrt(2 * math.pi * math.e)).sum()

    def values(self) -> dict[str, float]:
        with torch.no_grad():
            v = self.constrain(self.h.unsqueeze(0))[0]
        return {n: float(x) for n, x in zip(self.names, v)}

    def scales(self) -> dict[str, float]:
        with torch.no_grad():
            return {n: float(x) for n, x in zip(self.names, self.scale())}


# -- structured best-response layers --------------------------------------------------------

class STNLinear(nn.Module):
    """``y = e·(W_elem x + b_elem) + (V λ) ⊙ (W_hyper x) + (C λ) ⊙ b_hyper``.

    V and C are one bias-free linear map from the ``num_hparams`` hypernet inputs to 2·out
    scalars (init N(0, 0.01²)); ``e`` is the official code's learnable ``elem_scalar`` (init 1,
    not in the paper). ``hyper=False`` gives the plain ``nn.Linear``-equivalent base layer.
    """

    def __init__(self, in_features: int, out_features: int, num_hparams: int = 0, hyper: bool = True,
                 elem_scalar: bool = True):
        super().__init__()
        self.out_features = out_features
        self.hyper = hyper and num_hparams > 0
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        if self.hyper:
            self.hyper_weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
            self.hyper_bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
            self.gates = nn.Linear(num_hparams, 2 * out_features, bias=False)
            nn.init.normal_(self.gates.weight, std=0.01)
            # The official CNN layers scale the elementary path by a learnable scalar; its LSTM
            # layers do not (``elem_scalar=False``).
            self.elem_scalar = nn.Parameter(torch.ones(1)) if elem_scalar else None

    def forward(self, x: torch.Tensor, hnet: torch.Tensor | None = None) -> torch.Tensor:
        if not self.hyper:
            return F.linear(x, self.weight, self.bias)
        out = F.linear(x, self.weight, self.bias)
        if self.elem_scalar is not None:
            out = out * self.elem_scalar
        if hnet is None:
            return out
        g = self.gates(hnet)
        if out.dim() == 3:  # (B, T, F) sequences: one λ per sequence
            g = g.unsqueeze(1)
        gw, gb = g[..., :self.out_features], g[..., self.out_features:]
        return out + gw * F.linear(x, self.hyper_weight) + gb * self.hyper_bias


class STNConv2d(nn.Module):
    """Conv version of :class:`STNLinear`: the λ-gates scale whole output channels."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 num_hparams: int = 0, hyper: bool = True):
        super().__init__()
        self.out_ch, self.stride, self.padding = out_ch, stride, padding
        self.hyper = hyper and num_hparams > 0
        bound = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        shape = (out_ch, in_ch, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_ch).uniform_(-bound, bound))
        if self.hyper:
            self.hyper_weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
            self.hyper_bias = nn.Parameter(torch.empty(out_ch).uniform_(-bound, bound))
            self.gates = nn.Linear(num_hparams, 2 * out_ch, bias=False)
            nn.init.normal_(self.gates.weight, std=0.01)
            self.elem_scalar = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, hnet: torch.Tensor | None = None) -> torch.Tensor:
        out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if not self.hyper:
            return out
        out = out * self.elem_scalar
        if hnet is None:
            return out
        g = self.gates(hnet)[:, :, None, None]
        gw, gb = g[:, :self.out_ch], g[:, self.out_ch:]
        return out + gw * F.conv2d(x, self.hyper_weight, None, self.stride, self.padding) + gb * self.hyper_bias[None, :, None, None]


# -- per-example regularisers on tensors ----------------------------------------------------

def example_dropout(x: torch.Tensor, p: torch.Tensor | None, channel: bool = False) -> torch.Tensor:
    """Inverted dropout with one rate per example (``p``: (B,), detached: no gradient to λ).
    ``channel=True`` drops whole feature maps of a (B, C, H, W) tensor."""
    if p is None:
        return x
    p = p.detach().to(x.dtype)
    keep = (1.0 - p).clamp_min(1e-3)
    shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2) if channel else x.shape
    view = (-1,) + (1,) * (len(shape) - 1)
    mask = (torch.rand(shape, device=x.device) < keep.view(view)).to(x.dtype)
    return x * mask / keep.view(view)


def locked_dropout(x: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
    """Variational ("locked") dropout on a (B, T, F) sequence: one mask per sequence, shared over
    time, with one rate per example (``p``: (B,), detached), as the official LSTM's LockedDropout."""
    if p is None:
        return x
    keep = (1.0 - p.detach().to(x.dtype)).clamp_min(1e-3).view(-1, 1, 1)
    mask = (torch.rand(x.shape[0], 1, x.shape[2], device=x.device) < keep).to(x.dtype)
    return x * mask / keep


def cutout(images: torch.Tensor, length: torch.Tensor, holes: torch.Tensor | None = None,
           max_holes: int = 1) -> torch.Tensor:
    """Zero ``holes[i]`` square patches of side ``length[i]`` in image i (B, C, H, W), centres
    uniform over the image and patches clipped at the border (the Cutout code's rule)."""
    b, _, hgt, wid = images.shape
    length = length.detach().round().long()
    holes = torch.ones(b, dtype=torch.long, device=images.device) if holes is None else holes.detach().round().long()
    ys = torch.arange(hgt, device=images.device).view(1, hgt, 1)
    xs = torch.arange(wid, device=images.device).view(1, 1, wid)
    keep = torch.ones(b, hgt, wid, dtype=torch.bool, device=images.device)
    for k in range(max(max_holes, 1)):
        cy = torch.randint(0, hgt, (b,), device=images.device).view(b, 1, 1)
        cx = torch.randint(0, wid, (b,), device=images.device).view(b, 1, 1)
        half = (length // 2).view(b, 1, 1)
        lo_y, lo_x = cy - half, cx - half
        hi_y, hi_x = lo_y + length.view(b, 1, 1), lo_x + length.view(b, 1, 1)
        patch = (ys >= lo_y) & (ys < hi_y) & (xs >= lo_x) & (xs < hi_x)
        active = (holes > k).view(b, 1, 1)
        keep &= ~(patch & active)
    return images * keep.unsqueeze(1).to(images.dtype)


def input_scale(images: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Multiply image i by U(1/(1+s_i), 1+s_i) (the official ``inscale`` noise)."""
    s = s.detach().view(-1, *([1] * (images.dim() - 1)))
    u = torch.rand_like(s)
    return images * ((1 + s) - 1 / (1 + s)) * u + images * (1 / (1 + s))


def colour_jitter(images: torch.Tensor, brightness=None, contrast=None, saturation=None, hue=None) -> torch.Tensor:
    """Per-example colour jitter on (B, 3, H, W) tensors in [0, 1] (torchvision's factors:
    strength j -> factor U(1-j, 1+j); hue shift U(-j, j) turns, by a YIQ rotation)."""
    def factor(j):
        j = j.detach().view(-1, 1, 1, 1)
        return 1 + (2 * torch.rand_like(j) - 1) * j

    x = images
    if brightness is not None:
        x = (x * factor(brightness)).clamp(0, 1)
    if contrast is not None:
        mean = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(dim=(1, 2)).view(-1, 1, 1, 1)
        x = ((x - mean) * factor(contrast) + mean).clamp(0, 1)
    if saturation is not None:
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        x = ((x - grey) * factor(saturation) + grey).clamp(0, 1)
    if hue is not None:
        theta = (2 * torch.rand_like(hue) - 1) * hue.detach() * 2 * math.pi
        yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                           device=x.device, dtype=x.dtype)
        q = torch.einsum("ij,bjhw->bihw", yiq, x)
        c, s = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
        i2, q2 = c * q[:, 1] - s * q[:, 2], s * q[:, 1] + c * q[:, 2]
        q = torch.stack([q[:, 0], i2, q2], dim=1)
        x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(yiq), q).clamp(0, 1)
    return x
