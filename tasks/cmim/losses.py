"""The objectives (card §2-3), per example, as plain functions of tensors.

Notation: ``mu``, ``logsig`` (B x d) from the encoder, ``z = mu + exp(logsig) * eps``, ``rec`` (B,)
= -log p(x|z) per example (summed over pixels / tokens), ``beta`` the warm-up coefficient.

* AE:        rec(x | mu)
* VAE:       rec + beta * KL(q(z|x) || N(0, I))                      (analytic KL)
* A-MIM:     w_rec * rec - 1/2 [beta * log q(z|x) + log P(z)]        (beta multiplies the encoder term)
* cMIM:      A-MIM - log p(k=1 | z_i, x_i)                            (negatives averaged)
* cMIM-sum:  A-MIM - log p_sum(k=1 | z_i, x_i)                        (negatives summed: ablation)
* cVAE:      VAE - log p(k=1 | z_i, x_i)
* InfoNCE:   w_rec * rec(x | mu) + InfoNCE(h(mu(aug1 x)), h(mu(aug2 x)))

log p(k=1 | z_i) = s_ii/tau - logsumexp([s_ii/tau, s_ij/tau - log(B-1) for j != i]), s = cosine.
With ``average_negatives=False`` the ``- log(B-1)`` is dropped (InfoNCE-style normalisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2.0 * math.pi)
#: Floor on log sigma (NeMo / MolMIM posterior transform; the NVIDIA follow-up clamps at -6).
LOGSIG_MIN = -6.0


def clamp_logsig(logsig: torch.Tensor, floor: float = LOGSIG_MIN) -> torch.Tensor:
    """The log-variance floor: log sigma >= floor (gradients pass above the floor)."""
    return torch.clamp(logsig, min=floor)


def reparameterise(mu: torch.Tensor, logsig: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(logsig) * eps


def log_normal(z: torch.Tensor, mu: torch.Tensor, logsig: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logsig)^2)), summed over the latent dimensions -> (B,)."""
    return (-0.5 * ((z - mu) / torch.exp(logsig)) ** 2 - logsig - 0.5 * LOG_2PI).sum(-1)


def log_std_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over dimensions -> (B,)."""
    return (-0.5 * z ** 2 - 0.5 * LOG_2PI).sum(-1)


def kl_std_normal(mu: torch.Tensor, logsig: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over dimensions -> (B,)."""
    return (0.5 * (mu ** 2 + torch.exp(2 * logsig) - 1.0) - logsig).sum(-1)


def warmup_beta(epoch: int, warmup_epochs: int) -> float:
    """Linear 0 -> 1 over the first ``warmup_epochs`` epochs (MIM reference code); 1 after."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, float(epoch) / float(warmup_epochs))


def contrastive_log_pk1(z: torch.Tensor, tau: float, average_negatives: bool = True) -> torch.Tensor:
    """log p(k=1 | z_i, x_i) per example (B,): the sample is its own positive (s_ii = 1).

    Averaged negatives: the denominator is exp(s_ii/tau) + mean_{j!=i} exp(s_ij/tau), so its
    scale does not grow with B. Summed (``average_negatives=False``): + sum_{j!=i}.
    """
    b = z.shape[0]
    if b < 2:
        return torch.zeros(b, dtype=z.dtype, device=z.device)
    zn = F.normalize(z, dim=-1)
    s = zn @ zn.T / tau
    pos = torch.diagonal(s)
    off = ~torch.eye(b, dtype=torch.bool, device=z.device)
    neg = s[off].view(b, b - 1)
    if average_negatives:
        neg = neg - math.log(b - 1)
    return pos - torch.logsumexp(torch.cat([pos[:, None], neg], dim=1), dim=1)


def infonce_loss(h1: torch.Tensor, h2: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-example InfoNCE (B,): cross-entropy of view 1 against all of view 2, cosine / tau
    (the positive h2_i against the B-1 summed negatives h2_j, j != i)."""
    s = F.normalize(h1, dim=-1) @ F.normalize(h2, dim=-1).T / tau
    return F.cross_entropy(s, torch.arange(h1.shape[0], device=h1.device), reduction="none")


def objective(method: str, *, rec: torch.Tensor, mu: torch.Tensor, logsig: torch.Tensor | None,
              z: torch.Tensor | None, beta: float = 1.0, w_rec: float = 1.0, tau: float = 0.1,
              h1: torch.Tensor | None = None, h2: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-example loss terms and the total (B,) of ``method``; the caller takes the mean."""
    terms: dict[str, torch.Tensor] = {"rec": rec}
    if method == "ae":
        total = rec
    elif method in ("vae", "cvae"):
        kl = kl_std_normal(mu, logsig)
        terms["kl"] = kl
        total = rec + beta * kl
        if method == "cvae":
            terms["contrastive"] = -contrastive_log_pk1(z, tau, True)
            total = total + terms["contrastive"]
    elif method in ("amim", "cmim", "cmim_sum"):
        log_q = log_normal(z, mu, logsig)
        log_p = log_std_normal(z)
        terms["log_q"], terms["log_p"] = log_q, log_p
        total = w_rec * rec - 0.5 * (beta * log_q + log_p)
        if method != "amim":
            terms["contrastive"] = -contrastive_log_pk1(z, tau, average_negatives=(method == "cmim"))
            total = total + terms["contrastive"]
    elif method == "infonce":
        terms["infonce"] = infonce_loss(h1, h2, tau)
        total = w_rec * rec + terms["infonce"]
    else:
        raise ValueError(f"unknown objective {method!r}")
    terms["total"] = total
    return terms


#: Objectives whose encoder is Gaussian (sampled z, a posterior sigma to report).
PROBABILISTIC = ("vae", "cvae", "amim", "cmim", "cmim_sum")
OBJECTIVES = ("ae", "vae", "amim", "cmim", "cmim_sum", "infonce", "cvae")
