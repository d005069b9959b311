"""A GPT-2 (pre-LN) with a switch for every row of Table 1 of the entropy-guided-attention paper.

    X^ = X + MHA(LN1(X))                     (LN dropped when layernorm=False)
    X_out = X^ + FFN(LN2(X^))                FFN(X) = act(X W_in) W_out, W_in in R^{d x 4d}
    X_out = beta_l X^ + FFN(X^) / alpha_l    ffn_scaling (Eq. 8), alpha, beta learnable, init 1

Switches (``GPTConfig``):

* ``layernorm``: LN1, LN2 and the final LN on or off (all three: the Softmax-only model has none).
* ``ffn``: ``gelu`` | ``relu`` | ``identity`` (two matrices, nothing between) | ``fused`` (the
  identity FFN folded into one d x d matrix W_ffn: nothing nonlinear separates W_in and W_out).
* ``ffn_norm``: ``none`` | ``weight`` | ``spectral``: weight or spectral normalisation of the FFN's
  linear layers (Tables 5-6; the FFN-only placement, the best one there).
* ``ffn_scaling``: the learnable output scaling of Eq. 8.
* ``temperature``: ``none`` | ``divide`` | ``multiply``: a learnable temperature t in R^{H x T} per
  layer, one per head and query position, t = exp(log_t) > 0, initialised to ``temperature_init``.
  ``divide`` is Appendix A read literally, softmax(q.k / (t sqrt(d))); ``multiply`` is
  softmax(t q.k / sqrt(d)). With the paper's init t = 1e-2 the literal reading scales the logits
  by 100 (attention turns one-hot as soon as q.k grows past ~0.01), the other by 1/100 (uniform
  attention); README: what each does in training, and why ``divide`` is used.
* ``entropy_thresholds``: the learnable per-layer, per-head thresholds theta of the entropy
  regulariser (Algorithm 1), init ``threshold_init``; unused unless the training loop adds the
  penalty.

The temperature multiplies the query rows (q_i / t_i or q_i t_i), which is the same as scaling row
i of the logits, so every attention path (SDPA, the Triton kernel, the reference) serves it.

Attention entropy: set ``model.record_entropy = True`` (or call ``forward(..., entropy=True)``)
and each block's attention goes through ``kernels.attention_entropy.attention_with_entropy``
(Triton on CUDA, the materialising reference on CPU) and leaves its (B, H, T) row entropies,
with gradients, in ``block.attn.row_entropy``. Otherwise attention is torch's SDPA.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels.attention_entropy import attention_with_entropy

FFN_KINDS = ("gelu", "relu", "identity", "fused")
FFN_NORMS = ("none", "weight", "spectral")
TEMPERATURES = ("none", "divide", "multiply")


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 257
    block_size: int = 128
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 128
    ffn_mult: int = 4
    layernorm: bool = True
    ffn: str = "gelu"
    ffn_norm: str = "none"
    ffn_scaling: bool = False
    temperature: str = "none"
    temperature_init: float = 1.0
    entropy_thresholds: bool = False
    threshold_init: float = 0.5

    def __post_init__(self):
        for name, allowed in (("ffn", FFN_KINDS), ("ffn_norm", FFN_NORMS), ("temperature", TEMPERATURES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name}={getattr(self, name)!r}: use one of {', '.join(allowed)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")
        if self.temperature != "none" and self.temperature_init <= 0:
            raise ValueError("temperature_init must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


def _normalise(linear: nn.Linear, kind: str) -> nn.Module:
    if kind == "weight":
        return nn.utils.parametrizations.weight_norm(linear)
    if kind == "spectral":
        return nn.utils.parametrizations.spectral_norm(linear)
    return linear


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.temperature = cfg.temperature
        if cfg.temperature != "none":
            self.log_t = nn.Parameter(torch.full((cfg.n_head, cfg.block_size), math.log(cfg.temperature_init)))
        self.row_entropy: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, entropy: bool) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))
        if self.temperature != "none":
            t = self.log_t[:, :T].exp()[None, :, :, None]  # (1, H, T, 1): one t per head and query row
            q = q / t if self.temperature == "divide" else q * t
        if entropy:
            out, _, self.row_entropy = attention_with_entropy(q, k, v, causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            self.row_entropy = None
        return self.c_proj(out.transpose(1, 2).contiguous().view(B, T, C))


class FFN(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.kind = cfg.ffn
        if cfg.ffn == "fused":
            self.c_fc = nn.Linear(cfg.n_embd, cfg.n_embd)
            self.c_proj = None
        else:
            hidden = cfg.ffn_mult * cfg.n_embd
            self.c_fc = nn.Linear(cfg.n_embd, hidden)
            self.c_proj = nn.Linear(hidden, cfg.n_embd)

    def normalise(self, kind: str) -> None:
        """Weight or spectral normalisation of the FFN's linears, from their current weights."""
        self.c_fc = _normalise(self.c_fc, kind)
        if self.c_proj is not None:
            self.c_proj = _normalise(self.c_proj, kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.kind == "gelu":
            h = F.gelu(h)
        elif self.kind == "relu":
            h = F.relu(h)
        return h if self.c_proj is None else self.c_proj(h)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd) if cfg.layernorm else nn.Identity()
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd) if cfg.layernorm else nn.Identity()
        self.ffn = FFN(cfg)
        self.ffn_scaling = cfg.ffn_scaling
        if cfg.ffn_scaling:  # Eq. 8; the paper does not state the init: 1 leaves the block unchanged
            self.alpha = nn.Parameter(torch.ones(()))
            self.beta = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, entropy: bool) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), entropy)
        if self.ffn_scaling:
            return self.beta * x + self.ffn(x) / self.alpha
        return x + self.ffn(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd) if cfg.layernorm else nn.Identity()
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as GPT-2
        if cfg.entropy_thresholds:
            self.reg_threshold_weights = nn.Parameter(torch.full((cfg.n_layer, cfg.n_head), cfg.threshold_init))
        self.record_entropy = False
        self._init_weights()
        for block in self.blocks:  # after init: weight norm's g = ||v|| starts from the GPT-2 weights
            block.ffn.normalise(cfg.ffn_norm)

    def _init_weights(self) -> None:
        """GPT-2 init: N(0, 0.02), residual output projections N(0, 0.02 / sqrt(2 L)), zero biases."""
        resid_std = 0.02 / math.sqrt(2 * self.cfg.n_layer)
        for name, mod in self.named_modules():
            if isinstance(mod, nn.Linear):
                # The fused FFN matrix writes to the residual stream, like the c_proj's.
                resid = name.endswith("c_proj") or (name.endswith("ffn.c_fc") and self.cfg.ffn == "fused")
                nn.init.normal_(mod.weight, 0.0, resid_std if resid else 0.02)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor, entropy: bool | None = None) -> torch.Tensor:
        """Logits (B, T, vocab). With ``entropy`` (default ``self.record_entropy``) every block
        leaves its row entropies in ``block.attn.row_entropy``."""
        entropy = self.record_entropy if entropy is None else entropy
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {self.cfg.block_size}")
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x, entropy)
        return self.lm_head(self.ln_f(x))

    def row_entropies(self) -> list[torch.Tensor]:
        """The (B, H, T) row entropies of the last forward with entropy on, one per layer."""
        ents = [b.attn.row_entropy for b in self.blocks]
        if any(e is None for e in ents):
            raise RuntimeError("no entropies recorded: call forward(..., entropy=True) first")
        return ents

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups as nanoGPT: decay on weight matrices and embeddings; none on biases, LN
        gains, weight norm's g, alpha/beta, temperatures and thresholds (card §5)."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            is_matrix = p.dim() >= 2 and not name.endswith(("log_t", "reg_threshold_weights", "original0"))
            (decay if is_matrix else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def num_params(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if n != "wpe.weight")


def ffn_flops_per_token(cfg: GPTConfig) -> int:
    """Multiply-accumulates x 2 of all FFNs for one token (the PI-cost proxy of Table 3)."""
    d = cfg.n_embd
    per_layer = 2 * d * d if cfg.ffn == "fused" else 2 * 2 * d * cfg.ffn_mult * d
    return cfg.n_layer * per_layer


def attention_flops_per_token(cfg: GPTConfig, T: int) -> int:
    """QKV + output projections + the two T-long products of one query row, all layers."""
    d = cfg.n_embd
    return cfg.n_layer * (2 * 4 * d * d + 2 * 2 * T * d)
