"""The discrete key-value bottleneck, as the official module defines it (card §2).

* :class:`Splitter`: per-codebook fixed random projections (``random_projection``: R_c ∈ R^{m×d_k},
  i.i.d. N(0, 1) entries, each column L2-normalised over the m input dimensions; h_c = R_c^T z) or
  ``chunk`` (h_c = the c-th contiguous slice of z; needs m = C·d_k).
* :class:`KeyValueBottleneck`: keys (C, N, d_k) are buffers, initialised ~ N(0, I) and fitted by
  EMA k-means (:meth:`KeyValueBottleneck.ema_update`, hard k = 1 assignment, decay γ, Laplace
  smoothing ε, dead-key restarts from the current batch), then frozen. A usage counter, reset after
  key initialisation and updated only by supervised training steps, gives the inference mask.
  Routing is :func:`kernels.kv_lookup.kv_lookup` (Triton on CUDA, PyTorch elsewhere).
* :func:`vote_logits`: the non-parametric decoder: top-k values summed (weights 1), averaged over
  codebooks, computed as one ``embedding_bag`` over cached key indices.

Everything random takes an explicit ``torch.Generator``, so a run is a function of its seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.kv_lookup import kv_lookup


class Splitter:
    """Fixed (never trained) map from embeddings (B, m) to heads (C, B, d_k)."""

    def __init__(self, mode: str, in_dim: int, num_codebooks: int, dim_keys: int,
                 generator: torch.Generator | None = None):
        if mode not in ("random_projection", "chunk"):
            raise ValueError(f"splitting mode {mode!r}: use random_projection or chunk")
        self.mode, self.in_dim, self.C, self.d = mode, in_dim, num_codebooks, dim_keys
        if mode == "chunk":
            if in_dim != num_codebooks * dim_keys:
                raise ValueError(f"chunk splitting needs in_dim = C * d_k, got {in_dim} != {num_codebooks} * {dim_keys}")
            self.proj = None
        else:
            proj = torch.randn(num_codebooks, in_dim, dim_keys, generator=generator)
            self.proj = F.normalize(proj, p=2, dim=1)  # each column unit norm over the m inputs

    def to(self, device) -> "Splitter":
        if self.proj is not None:
            self.proj = self.proj.to(device)
        return self

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        z = z.float()
        if self.proj is None:
            return z.reshape(z.shape[0], self.C, self.d).transpose(0, 1).contiguous()
        return torch.einsum("bm,cmd->cbd", z, self.proj).contiguous()


def laplace_smoothing(cluster_size: torch.Tensor, eps: float) -> torch.Tensor:
    """(s_j + ε) / (Σ_l s_l + N ε) · Σ_l s_l, per codebook (the last axis holds the N keys)."""
    n = cluster_size.shape[-1]
    total = cluster_size.sum(-1, keepdim=True)
    return (cluster_size + eps) / (total + n * eps) * total


class KeyValueBottleneck:
    """Keys, EMA statistics, usage counts and values of C codebooks with N pairs each."""

    def __init__(self, num_codebooks: int, num_pairs: int, dim_keys: int, dim_values: int, *,
                 decay: float = 0.95, eps: float = 1e-5, threshold_dead: float = 0.0, topk: int = 1,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        self.C, self.N, self.d, self.v = num_codebooks, num_pairs, dim_keys, dim_values
        self.decay, self.eps, self.threshold_dead, self.topk = decay, eps, threshold_dead, topk
        # init_mode "random" (drawn on the CPU generator, so a seed gives the same keys on any device)
        self.keys = torch.randn(num_codebooks, num_pairs, dim_keys, generator=generator).to(device)
        self.keys_avg = self.keys.clone()
        self.cluster_size = torch.zeros(num_codebooks, num_pairs, device=device)
        self.counts = torch.zeros(num_codebooks, num_pairs, device=device)

    # -- key initialisation (unsupervised, then frozen) -----------------------------------
    def ema_update(self, heads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One EMA k-means step on a batch of heads (C, B, d_k): hard k = 1 assignment,
        s ← γ s + (1-γ) n, S ← γ S + (1-γ) Σ h, k ← S / laplace(s), then dead-key restarts.
        Returns the (C, B) assignment made *before* the update (what the official forward fetches)."""
        g = self.decay
        _, idx = kv_lookup(heads, self.keys, None, 1)
        idx = idx[..., 0]  # (C, B): the nearest key of each head (k = 1 always, as the official update)
        dev = heads.device
        sizes = torch.zeros(self.C, self.N, device=dev).scatter_add_(1, idx, torch.ones(idx.shape, device=dev))
        sums = torch.zeros(self.C, self.N, self.d, device=dev).scatter_add_(1, idx[..., None].expand(-1, -1, self.d), heads)
        self.cluster_size.mul_(g).add_(sizes, alpha=1 - g)
        self.keys_avg.mul_(g).add_(sums, alpha=1 - g)
        smoothed = laplace_smoothing(self.cluster_size, self.eps)
        self.keys = self.keys_avg / smoothed[..., None]
        self.restart_dead_keys(heads, generator)
        return idx

    def restart_dead_keys(self, heads: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Keys whose EMA cluster size is below the threshold become random vectors of the batch
        (one independent draw per key, as the official ``sample_vectors``); 0 disables."""
        if self.threshold_dead <= 0:
            return
        dead = self.cluster_size < self.threshold_dead
        if not bool(dead.any()):
            return
        pick = torch.randint(0, heads.shape[1], (self.C, self.N), generator=generator).to(heads.device)
        samples = torch.gather(heads, 1, pick[..., None].expand(-1, -1, self.d))
        self.keys = torch.where(dead[..., None], samples, self.keys)

    def quantisation_error(self, heads: torch.Tensor) -> float:
        """Mean squared distance of heads to their nearest key (over codebooks and inputs)."""
        d, _ = kv_lookup(heads, self.keys, None, 1)
        return float(d.mean())

    def reset_counts(self) -> None:
        self.counts.zero_()

    # -- routing -------------------------------------------------------------------------
    def route(self, heads: torch.Tensor, masked: bool = False, k: int | None = None) -> torch.Tensor:
        """(B, C, k) indices of the k nearest keys; ``masked``: only keys used in training."""
        used = self.counts > 0 if masked else None
        _, idx = kv_lookup(heads, self.keys, used, k or self.topk)
        return idx.permute(1, 0, 2).contiguous()

    def count(self, idx: torch.Tensor) -> None:
        """Add a training batch's selected keys (B, C, k) to the usage counters."""
        flat = (idx + torch.arange(self.C, device=idx.device)[None, :, None] * self.N).reshape(-1)
        self.counts.view(-1).index_add_(0, flat, torch.ones(flat.numel(), device=idx.device))

    def fraction_unused(self) -> float:
        return float((self.counts == 0).float().mean())


def flat_index(idx: torch.Tensor, num_pairs: int) -> torch.Tensor:
    """(B, C, k) per-codebook indices -> (B, C*k) rows of the (C*N, v) value table."""
    B, C, k = idx.shape
    return (idx + torch.arange(C, device=idx.device)[None, :, None] * num_pairs).reshape(B, C * k)


def fetch_values(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, C, v): per codebook the sum of its top-k fetched values (weights 1)."""
    C, N, v = values.shape
    B, _, k = idx.shape
    flat = flat_index(idx, N).reshape(B * C, k)
    return F.embedding_bag(flat, values.reshape(C * N, v), mode="sum").reshape(B, C, v)


def vote_logits(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The non-parametric decoder: logits = (1/C) Σ_c Σ_topk v_{c, j}; one embedding bag."""
    C, N, v = values.shape
    return F.embedding_bag(flat_index(idx, N), values.reshape(C * N, v), mode="sum") / C
