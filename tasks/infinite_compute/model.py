"""A Llama-style decoder in one file (nanoGPT style): RMSNorm, SwiGLU, RoPE, untied embeddings.

The paper's models (card §2) are Llama decoders with untied input/output embeddings, no
biases, pre-norm RMSNorm, SwiGLU MLPs and rotary position embeddings; attention uses
PyTorch's fused ``scaled_dot_product_attention`` (FlashAttention on a GPU). Grouped-query
attention (``n_kv_head < n_head``) is supported because the 600M and 1.4B presets use it.

Parameter counts: :meth:`LlamaLM.num_params` counts everything, embeddings and head
included, as the paper does; ``non_embedding=True`` gives the count the small-scale card
uses to name sizes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 257
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_kv_head: int | None = None
    d_ff: int | None = None
    """SwiGLU hidden width; default 3.5 x d_model (the paper's 512 -> 1792 ratio)."""
    max_seq_len: int = 64
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def ff_dim(self) -> int:
        return self.d_ff or int(round(3.5 * self.d_model))

    def to_dict(self) -> dict:
        return asdict(self)


#: The paper's presets (card §2 table; context 4096, Llama-3 vocabulary).
PAPER_PRESETS = {
    "150m": dict(d_model=512, d_ff=1792, n_layer=6, n_head=8, n_kv_head=8),
    "300m": dict(d_model=768, d_ff=2688, n_layer=12, n_head=12, n_kv_head=12),
    "600m": dict(d_model=1024, d_ff=3584, n_layer=24, n_head=16, n_kv_head=8),
    "1_4b": dict(d_model=2048, d_ff=7168, n_layer=16, n_head=16, n_kv_head=8),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 so bf16 autocast does not lose the mean square.
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(head_dim: int, seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (T, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :h], x[..., h:]) (the Llama/HF 'rotate half' layout); x: (B, H, T, hd)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos[: x.shape[-2]].to(x.dtype), sin[: x.shape[-2]].to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.d_model % cfg.n_head == 0 and cfg.n_head % cfg.kv_heads == 0
        self.n_head, self.n_kv = cfg.n_head, cfg.kv_heads
        self.head_dim = cfg.d_model // cfg.n_head
        self.wq = nn.Linear(cfg.d_model, cfg.n_head * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, self.n_kv * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, self.n_kv * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_head * self.head_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """``cache`` (sampling only): {'k', 'v'} of earlier positions; x then holds one new position."""
        B, T, _ = x.shape
        pos = cache["k"].shape[2] if cache is not None and "k" in cache else 0
        q = self.wq(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos[pos:], sin[pos:]), apply_rope(k, cos[pos:], sin[pos:])
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        if self.n_kv != self.n_head:
            rep = self.n_head // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        # With a cache and one new query, every cached key is in its past: no mask needed.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None or pos == 0)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.d_model, cfg.ff_dim, bias=False)
        self.w_up = nn.Linear(cfg.d_model, cfg.ff_dim, bias=False)
        self.w_down = nn.Linear(cfg.ff_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache)
        return x + self.mlp(self.mlp_norm(x))


class LlamaLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)  # untied, as in the paper
        cos, sin = rope_tables(cfg.d_model // cfg.n_head, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        # GPT-2 style: residual output projections scaled down by depth.
        for name, p in self.named_parameters():
            if name.endswith("wo.weight") or name.endswith("w_down.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, caches: list[dict] | None = None, hidden: bool = False) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T); ``caches`` (one dict per block) for sampling.

        ``hidden=True``: the final normed hidden states (B, T, d) instead, for a loss that applies
        the head chunk by chunk (train.chunked_cross_entropy) so the (B, T, V) logits never exist."""
        if idx.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {idx.shape[1]} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        x = self.embed(idx)
        for i, block in enumerate(self.blocks):
            x = block(x, self.rope_cos, self.rope_sin, None if caches is None else caches[i])
        x = self.norm(x)
        return x if hidden else self.head(x)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed.weight.numel() + self.head.weight.numel()
        return n

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on every matrix (embedding, attention, MLP, head); none on norm scales.

        The card lists Levanter's default mask as skipping norms, embeddings and biases "(verify)";
        Levanter's own test of the mask (``test_weight_decay_masking``) applies decay to the
        token embeddings and every Linear weight and skips only LayerNorm scales and biases,
        which is what this does (the model has no biases).
        """
        decay, no_decay = [], []
        for p in self.parameters():
            (decay if p.dim() >= 2 else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    @torch.no_grad()
    def sample(self, n_seqs: int, length: int, generator: torch.Generator, temperature: float = 1.0,
               bos: int = 256) -> torch.Tensor:
        """Unconditional samples (n_seqs, length), started from the document separator ``bos``.

        Ancestral sampling at ``temperature`` with a KV cache; ``length`` <= max_seq_len, so
        ``[bos] + sample`` is one (T+1)-token training window, all a student trains on.
        """
        if length > self.cfg.max_seq_len:
            raise ValueError(f"length {length} exceeds max_seq_len {self.cfg.max_seq_len}")
        caches: list[dict] = [{} for _ in self.blocks]
        tok = torch.full((n_seqs, 1), bos, dtype=torch.long, device=self.embed.weight.device)
        out = []
        for _ in range(length):
            logits = self(tok, caches)[:, -1, :].float() / temperature
            tok = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            out.append(tok)
        return torch.cat(out, dim=1)
