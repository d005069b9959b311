"""Claim 1 on a problem with a closed-form best response: ridge regression (card §6.1, §8).

Data: n = 200 train and 200 validation rows, d = 50, y = X w_true + noise (drawn from the run's
seed). Training loss L_T(w, λ) = (1/2n)(||X w - y||² + λ ||w||²), so
w*(λ) = (XᵀX + λI)⁻¹ Xᵀy exactly (the card's formula). The hyperparameter is u = log λ
(unconstrained); the STN is one :class:`STNLinear` layer d -> 1 (biases fixed at 0), whose
effective weight w_φ(u) = e·W_elem + (V u + ...)·W_hyper is trained with per-example u + ε,
ε ~ N(0, σ²) (σ fixed), alternating with Adam steps on u against the validation loss
½ mean (x w_φ(u) - y)², exactly Algorithm 1 with full batches.

Reported: the relative error ||w_φ(u) - w*(e^u)|| / ||w*(e^u)|| averaged over u ∈ u_final ± σ,
and |log10 λ_STN - log10 λ_grid|, λ_grid the argmin of the closed-form validation loss over a
dense log grid (2001 points, 1e-3 .. 1e5).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

from .stn import STNLinear


def make_problem(seed: int, n: int = 200, n_val: int = 200, d: int = 50, noise: float = 3.0):
    rng = np.random.default_rng([seed, 4242])
    w_true = rng.normal(size=d) / math.sqrt(d) * 3.0
    x, xv = rng.normal(size=(n, d)), rng.normal(size=(n_val, d))
    y, yv = x @ w_true + noise * rng.normal(size=n), xv @ w_true + noise * rng.normal(size=n_val)
    return x, y, xv, yv


def closed_form(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def grid_argmin(x, y, xv, yv, lo: float = -3.0, hi: float = 5.0, points: int = 2001) -> tuple[float, np.ndarray]:
    """λ minimising the validation loss of the closed-form solution over a dense log10 grid."""
    evals, evecs = np.linalg.eigh(x.T @ x)
    xty = evecs.T @ (x.T @ y)
    lams = np.logspace(lo, hi, points)
    losses = []
    for lam in lams:
        w = evecs @ (xty / (evals + lam))
        losses.append(0.5 * np.mean((xv @ w - yv) ** 2))
    losses = np.array(losses)
    return float(lams[int(np.argmin(losses))]), losses


def effective_weight(layer: STNLinear, u: torch.Tensor) -> torch.Tensor:
    """(B, d) weights of the d -> 1 STN layer at hypernet inputs u (B, 1)."""
    gw = layer.gates(u)[:, :1]
    return layer.weight * layer.elem_scalar + gw * layer.hyper_weight


def run_ridge(hp: Mapping[str, Any], seed: int, ctx=None) -> dict[str, float]:
    x, y, xv, yv = make_problem(seed)
    lam_grid, _ = grid_argmin(x, y, xv, yv)
    n, d = x.shape
    X, Y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    XV, YV = torch.tensor(xv, dtype=torch.float32), torch.tensor(yv, dtype=torch.float32)
    layer = STNLinear(d, 1, num_hparams=1)
    with torch.no_grad():
        layer.bias.zero_()
        layer.hyper_bias.zero_()
    layer.bias.requires_grad_(False)
    layer.hyper_bias.requires_grad_(False)
    sigma = float(hp["ridge_sigma"])
    u = torch.tensor([math.log(float(hp["ridge_start_lambda"]))], requires_grad=True)
    opt = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=float(hp["ridge_lr"]))
    hopt = torch.optim.Adam([u], lr=float(hp["ridge_hyper_lr"]))

    def train_step():
        uu = (u.detach() + sigma * torch.randn(n)).unsqueeze(1)
        w = effective_weight(layer, uu)
        resid = (X * w).sum(1) - Y
        loss = (0.5 * resid ** 2 + torch.exp(uu[:, 0]) * (w ** 2).sum(1) / (2 * n)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(int(hp["ridge_warmup"])):
        train_step()
    t_train, t_valid = int(hp.get("train_steps", 2)), int(hp.get("valid_steps", 1))
    for cycle in range(int(hp["ridge_cycles"])):
        for _ in range(t_train):
            train_step()
        for _ in range(t_valid):
            uu = (u + sigma * torch.randn(len(XV))).unsqueeze(1)
            w = effective_weight(layer, uu)
            lv = (0.5 * ((XV * w).sum(1) - YV) ** 2).mean()
            hopt.zero_grad()
            u.grad, = torch.autograd.grad(lv, [u])
            hopt.step()
        if ctx is not None and cycle % 100 == 0:
            ctx.log(cycle, curve="ridge", log10_lambda=float(u.detach()) / math.log(10))

    u0 = float(u.detach())
    rel = []
    with torch.no_grad():
        for du in np.linspace(-sigma, sigma, 21):
            w_phi = effective_weight(layer, torch.tensor([[u0 + du]], dtype=torch.float32))[0].double().numpy()
            w_star = closed_form(x, y, math.exp(u0 + du))
            rel.append(np.linalg.norm(w_phi - w_star) / np.linalg.norm(w_star))
    lam_stn = math.exp(u0)
    w_stn, w_best = closed_form(x, y, lam_stn), closed_form(x, y, lam_grid)
    val = lambda w: 0.5 * float(np.mean((xv @ w - yv) ** 2))  # noqa: E731
    return {"ridge_rel_error": float(np.mean(rel)), "ridge_rel_error_max": float(np.max(rel)),
            "ridge_log10_lambda_gap": abs(math.log10(lam_stn) - math.log10(lam_grid)),
            "ridge_log10_lambda_stn": math.log10(lam_stn), "ridge_log10_lambda_grid": math.log10(lam_grid),
            "ridge_val_excess": val(w_stn) - val(w_best)}
