"""A CLIP-style dual encoder written functionally, plus the binary weight masks of AMT.

The weights live in one flat ``dict[str, Tensor]`` named as OpenAI CLIP / open_clip name them
(``visual.conv1.weight``, ``visual.transformer.resblocks.{i}.attn.in_proj_weight``, ...), and the
forward passes read them from that dict. A masked forward is the same function called with
``{**weights, name: weight * mask}``: nothing is patched, the frozen weights are never written.

* Image tower: a ViT (patch-embedding convolution without bias, class token, positional
  embedding, ``ln_pre``, pre-LN residual blocks of multi-head self-attention and a 4x MLP,
  ``ln_post`` on the class token, a projection). Text tower: a causal transformer over token
  embeddings and positional embeddings, ``ln_final``, pooled at the end-of-text token, projected.
  Logits: ``exp(logit_scale) * cos(image, text)`` (scale clamped at 100, as CLIP).
* Small scale: :func:`init_weights` builds the card's ~0.3M-parameter model (width 64, patch 4,
  3 image layers, 2 text layers, 4 heads). Paper scale: :mod:`.paper` converts real CLIP ViT-B/16
  weights into the same dict.
* :class:`Binarize` is the straight-through threshold of the paper's ``Binarizer``: forward
  ``1[score > t]``, backward the identity, so ``dL/dscore = dL/dW_used * W``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MASK_INIT = 1e-2
MASK_THRESHOLD = 5e-3


@dataclass(frozen=True)
class ClipConfig:
    image_size: int = 16
    patch: int = 4
    width: int = 64
    layers: int = 3
    heads: int = 4
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    context: int = 12
    vocab: int = 40
    embed: int = 64
    mlp_ratio: int = 4
    activation: str = "gelu"  # CLIP ViT-B/16 uses quick_gelu
    eps: float = 1e-5

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2 + 1


def _block_shapes(prefix: str, d: int, ratio: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.ln_1.weight": (d,), f"{prefix}.ln_1.bias": (d,),
        f"{prefix}.attn.in_proj_weight": (3 * d, d), f"{prefix}.attn.in_proj_bias": (3 * d,),
        f"{prefix}.attn.out_proj.weight": (d, d), f"{prefix}.attn.out_proj.bias": (d,),
        f"{prefix}.ln_2.weight": (d,), f"{prefix}.ln_2.bias": (d,),
        f"{prefix}.mlp.c_fc.weight": (ratio * d, d), f"{prefix}.mlp.c_fc.bias": (ratio * d,),
        f"{prefix}.mlp.c_proj.weight": (d, ratio * d), f"{prefix}.mlp.c_proj.bias": (d,),
    }


def weight_shapes(cfg: ClipConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model and its shape (the order is the canonical order)."""
    d, t = cfg.width, cfg.text_width
    out: dict[str, tuple[int, ...]] = {
        "visual.conv1.weight": (d, 3, cfg.patch, cfg.patch),
        "visual.class_embedding": (d,),
        "visual.positional_embedding": (cfg.tokens, d),
        "visual.ln_pre.weight": (d,), "visual.ln_pre.bias": (d,),
    }
    for i in range(cfg.layers):
        out.update(_block_shapes(f"visual.transformer.resblocks.{i}", d, cfg.mlp_ratio))
    out.update({"visual.ln_post.weight": (d,), "visual.ln_post.bias": (d,), "visual.proj": (d, cfg.embed),
                "token_embedding.weight": (cfg.vocab, t), "positional_embedding": (cfg.context, t)})
    for i in range(cfg.text_layers):
        out.update(_block_shapes(f"transformer.resblocks.{i}", t, cfg.mlp_ratio))
    out.update({"ln_final.weight": (t,), "ln_final.bias": (t,), "text_projection": (t, cfg.embed),
                "logit_scale": ()})
    return out


def init_weights(cfg: ClipConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """CLIP's initialisation (open_clip ``init_parameters``), from ``generator``."""
    w: dict[str, torch.Tensor] = {}
    for name, shape in weight_shapes(cfg).items():
        width = cfg.width if name.startswith("visual.") else cfg.text_width
        layers = cfg.layers if name.startswith("visual.") else cfg.text_layers
        if name == "logit_scale":
            w[name] = torch.tensor(math.log(1 / 0.07))
        elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            w[name] = torch.ones(shape)
        elif name.endswith("bias"):
            w[name] = torch.zeros(shape)
        else:
            if name.endswith(("in_proj_weight", "out_proj.weight", "c_proj.weight")):
                std = width ** -0.5 * (2 * layers) ** -0.5 if not name.endswith("in_proj_weight") else width ** -0.5
            elif name.endswith("c_fc.weight"):
                std = (2 * width) ** -0.5
            elif name in ("visual.proj", "text_projection"):
                std = width ** -0.5
            elif name == "token_embedding.weight":
                std = 0.02
            elif name == "positional_embedding":
                std = 0.01
            else:  # conv1, class / visual positional embedding
                std = width ** -0.5
            w[name] = torch.randn(shape, generator=generator) * std
    return w


# -- forward passes ----------------------------------------------------------------------------------

def _act(x: torch.Tensor, kind: str) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x) if kind == "quick_gelu" else F.gelu(x)


def _block(w, p: str, x: torch.Tensor, heads: int, causal: bool, cfg: ClipConfig) -> torch.Tensor:
    n, t, d = x.shape
    h = F.layer_norm(x, (d,), w[f"{p}.ln_1.weight"], w[f"{p}.ln_1.bias"], cfg.eps)
    qkv = F.linear(h, w[f"{p}.attn.in_proj_weight"], w[f"{p}.attn.in_proj_bias"])
    q, k, v = qkv.view(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    a = a.transpose(1, 2).reshape(n, t, d)
    x = x + F.linear(a, w[f"{p}.attn.out_proj.weight"], w[f"{p}.attn.out_proj.bias"])
    h = F.layer_norm(x, (d,), w[f"{p}.ln_2.weight"], w[f"{p}.ln_2.bias"], cfg.eps)
    h = _act(F.linear(h, w[f"{p}.mlp.c_fc.weight"], w[f"{p}.mlp.c_fc.bias"]), cfg.activation)
    return x + F.linear(h, w[f"{p}.mlp.c_proj.weight"], w[f"{p}.mlp.c_proj.bias"])


def encode_image(w, images: torch.Tensor, cfg: ClipConfig) -> torch.Tensor:
    """Projected (unnormalised) image features of float images (n, 3, H, W)."""
    x = F.conv2d(images, w["visual.conv1.weight"], stride=cfg.patch)  # (n, d, g, g)
    x = x.flatten(2).transpose(1, 2)
    cls = w["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + w["visual.positional_embedding"]
    x = F.layer_norm(x, (cfg.width,), w["visual.ln_pre.weight"], w["visual.ln_pre.bias"], cfg.eps)
    for i in range(cfg.layers):
        x = _block(w, f"visual.transformer.resblocks.{i}", x, cfg.heads, False, cfg)
    x = F.layer_norm(x[:, 0], (cfg.width,), w["visual.ln_post.weight"], w["visual.ln_post.bias"], cfg.eps)
    return x @ w["visual.proj"]


def encode_text_embeddings(w, emb: torch.Tensor, eos: torch.Tensor, cfg: ClipConfig) -> torch.Tensor:
    """Projected text features from token embeddings (n, L, t) pooled at positions ``eos`` (n,)."""
    x = emb + w["positional_embedding"][: emb.shape[1]]
    for i in range(cfg.text_layers):
        x = _block(w, f"transformer.resblocks.{i}", x, cfg.text_heads, True, cfg)
    x = F.layer_norm(x, (cfg.text_width,), w["ln_final.weight"], w["ln_final.bias"], cfg.eps)
    return x[torch.arange(x.shape[0]), eos] @ w["text_projection"]


def encode_text(w, tokens: torch.Tensor, eos: torch.Tensor, cfg: ClipConfig) -> torch.Tensor:
    return encode_text_embeddings(w, F.embedding(tokens, w["token_embedding.weight"]), eos, cfg)


def logit_scale(w) -> torch.Tensor:
    return w["logit_scale"].exp().clamp(max=100.0)


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T


def info_nce(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: the mean of image->text and text->image cross-entropies."""
    logits = clip_logits(image_features, text_features, scale)
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


# -- tokenizer (small scale) ----------------------------------------------------------------------------

PAD, SOS, EOS = "<pad>", "<sos>", "<eos>"


class WordTokenizer:
    """Word-level tokens of the caption grammar: ``<sos> words <eos>``, padded to ``context``."""

    def __init__(self, words: list[str], context: int):
        self.itos = [PAD, SOS, EOS, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.context = context

    def ids(self, text: str) -> list[int]:
        try:
            return [self.stoi[t] for t in text.split()]
        except KeyError as e:
            raise ValueError(f"word {e.args[0]!r} is not in the vocabulary of the caption grammar") from None

    def __call__(self, texts: list[str], prefix_slots: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (n, context), eos positions (n,)); ``prefix_slots`` leaves room after ``<sos>``
        for learned context vectors (CoOp), filled with PAD here."""
        rows, eos = [], []
        for t in texts:
            ids = [self.stoi[SOS]] + [self.stoi[PAD]] * prefix_slots + self.ids(t) + [self.stoi[EOS]]
            if len(ids) > self.context:
                raise ValueError(f"{t!r} needs {len(ids)} tokens, more than the context of {self.context}")
            eos.append(len(ids) - 1)
            rows.append(ids + [self.stoi[PAD]] * (self.context - len(ids)))
        return torch.tensor(rows), torch.tensor(eos)


# -- masks ----------------------------------------------------------------------------------------------

class Binarize(torch.autograd.Function):
    """Forward ``1[score > threshold]``; backward passes the gradient straight through."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, threshold: float) -> torch.Tensor:
        return (scores > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def masked_names(cfg: ClipConfig, target: str) -> list[str]:
    """The image-tower tensors AMT masks: ``attn`` (the paper: patch embedding and every block's
    attention in/out projections) or ``mlp`` (the control: patch embedding and every block's first
    MLP matrix, the same number of weights, 4 d^2 per block)."""
    names = ["visual.conv1.weight"]
    for i in range(cfg.layers):
        p = f"visual.transformer.resblocks.{i}"
        if target == "attn":
            names += [f"{p}.attn.in_proj_weight", f"{p}.attn.out_proj.weight"]
        elif target == "mlp":
            names.append(f"{p}.mlp.c_fc.weight")
        else:
            raise ValueError(f"mask target {target!r}: use attn or mlp")
    return names


def init_scores(weights, names, init: float = MASK_INIT) -> dict[str, torch.Tensor]:
    return {n: torch.full_like(weights[n], init).requires_grad_(True) for n in names}


def apply_masks(weights, scores, threshold: float = MASK_THRESHOLD) -> dict[str, torch.Tensor]:
    """The weights with ``W * 1[score > t]`` in place of every masked tensor (straight-through)."""
    return {**weights, **{n: weights[n] * Binarize.apply(s, threshold) for n, s in scores.items()}}


def sparsity(scores, threshold: float = MASK_THRESHOLD) -> tuple[float, dict[str, float]]:
    """Percent of mask entries at or below the threshold (zeroed weights): overall and per tensor."""
    per = {n: float((s <= threshold).float().mean() * 100) for n, s in scores.items()}
    total = sum(int((s <= threshold).sum()) for s in scores.values())
    count = sum(s.numel() for s in scores.values())
    return (100.0 * total / count if count else 0.0), per
