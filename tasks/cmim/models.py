"""One encoder-decoder family per data type, shared by every objective.

Every model exposes the same four calls, so training and the informative embeddings never
look at the architecture:

* ``encode(x) -> (mu, logsig)``: the Gaussian posterior q(z|x) (AE / InfoNCE use mu only).
* ``rec_nll(z, x) -> (B,)``: -log p(x|z) per example (summed over pixels / tokens).
* ``decoder_features(z, x) -> (B, H)``: the decoder's hidden states at z, pooled (the "-X" part
  of the informative embeddings; teacher forcing on x for autoregressive decoders).
* ``project(mu)``: the InfoNCE projection head.

Images: MLP 784 -> 512 -> 256 -> (mu, log sigma) and 16 -> 256 -> 512 -> 784 (card §11A),
Bernoulli (MNIST) or Gaussian with sigma 0.1 (digits) likelihood.
SMILES (small): character vocabulary, bi-GRU encoder, GRU decoder conditioned on z (card §11B).
SMILES (paper): MolMIM-style Perceiver encoder (learned queries cross-attending to the tokens,
then self-attention; latent 1 x 512) and a Transformer decoder attending to z (card §5).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import LOG_2PI


class ImageAutoencoder(nn.Module):
    def __init__(self, in_dim: int, latent: int = 16, hidden: tuple[int, int] = (512, 256),
                 likelihood: str = "bernoulli", sigma0: float = 0.1, proj_dim: int = 64):
        super().__init__()
        h1, h2 = hidden
        self.enc = nn.Sequential(nn.Linear(in_dim, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, 2 * latent))
        self.dec1 = nn.Sequential(nn.Linear(latent, h2), nn.ReLU())
        self.dec2 = nn.Sequential(nn.Linear(h2, h1), nn.ReLU())
        self.out = nn.Linear(h1, in_dim)
        self.head = nn.Sequential(nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, proj_dim))
        self.likelihood, self.sigma0, self.latent = likelihood, float(sigma0), latent

    def encode(self, x):
        mu, logsig = self.enc(x).chunk(2, dim=-1)
        return mu, logsig

    def _hidden(self, z):
        a = self.dec1(z)
        b = self.dec2(a)
        return a, b

    def logits(self, z):
        return self.out(self._hidden(z)[1])

    def mean(self, z, x=None):
        return torch.sigmoid(self.logits(z))

    def rec_nll(self, z, x):
        logits = self.logits(z)
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        m = torch.sigmoid(logits)
        return (0.5 * ((x - m) / self.sigma0) ** 2 + math.log(self.sigma0) + 0.5 * LOG_2PI).sum(-1)

    def decoder_features(self, z, x=None):
        a, b = self._hidden(z)
        return torch.cat([a, b], dim=-1)

    def project(self, mu):
        return self.head(mu)


# -- SMILES ---------------------------------------------------------------------------------

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


class CharVocab:
    """Character-level SMILES vocabulary (sorted characters after the four special tokens)."""

    def __init__(self, smiles: list[str]):
        chars = sorted(set("".join(smiles)))
        self.itos = SPECIALS + chars
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, smiles: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, max_len + 1) token ids ``s + <eos>`` padded with <pad>, and their lengths."""
        out = torch.full((len(smiles), max_len + 1), PAD, dtype=torch.long)
        lengths = torch.zeros(len(smiles), dtype=torch.long)
        for i, s in enumerate(smiles):
            ids = [self.stoi.get(c, UNK) for c in s[:max_len]] + [EOS]
            out[i, : len(ids)] = torch.tensor(ids)
            lengths[i] = len(ids)
        return out, lengths


def _shift_right(tokens: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.full_like(tokens[:, :1], BOS), tokens[:, :-1]], dim=1)


def _token_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    nll = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none", ignore_index=PAD)
    return nll.sum(-1)


def _masked_mean(h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    mask = (tokens != PAD).to(h.dtype).unsqueeze(-1)
    return (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class SmilesGRU(nn.Module):
    """Bi-GRU encoder -> (mu, log sigma); GRU decoder with z as initial state and as input."""

    def __init__(self, vocab_size: int, latent: int = 32, hidden: int = 128, emb: int = 48, proj_dim: int = 64):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, emb, padding_idx=PAD)
        self.enc_rnn = nn.GRU(emb, hidden, batch_first=True, bidirectional=True)
        self.to_latent = nn.Linear(2 * hidden, 2 * latent)
        self.z_to_h = nn.Linear(latent, hidden)
        self.dec_rnn = nn.GRU(emb + latent, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)
        self.head = nn.Sequential(nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, proj_dim))
        self.latent = latent

    def encode(self, tokens):
        lengths = (tokens != PAD).sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, h = self.enc_rnn(packed)                     # (2, B, H)
        mu, logsig = self.to_latent(torch.cat([h[0], h[1]], dim=-1)).chunk(2, dim=-1)
        return mu, logsig

    def _decode(self, z, tokens):
        inp = self.emb(_shift_right(tokens))
        inp = torch.cat([inp, z.unsqueeze(1).expand(-1, inp.shape[1], -1)], dim=-1)
        h, _ = self.dec_rnn(inp, torch.tanh(self.z_to_h(z)).unsqueeze(0).contiguous())
        return h

    def logits(self, z, tokens):
        return self.out(self._decode(z, tokens))

    def rec_nll(self, z, tokens):
        return _token_nll(self.logits(z, tokens), tokens)

    def decoder_features(self, z, tokens):
        return _masked_mean(self._decode(z, tokens), tokens)

    def project(self, mu):
        return self.head(mu)


class PerceiverSmiles(nn.Module):
    """MolMIM-style: a Perceiver encoder (``n_queries`` learned queries cross-attend to the token
    states, then ``enc_layers`` self-attention layers over the queries, mean over queries ->
    (mu, log sigma)) and a causal Transformer decoder whose memory is z (one slot).
    MolMIM size: d_model 512, 8 heads, FFN 2048, 6 + 6 layers, latent 512, ~65M parameters."""

    def __init__(self, vocab_size: int, latent: int = 512, d_model: int = 512, heads: int = 8, ffn: int = 2048,
                 enc_layers: int = 6, dec_layers: int = 6, n_queries: int = 1, max_len: int = 128,
                 dropout: float = 0.0, proj_dim: int = 128):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.pos = nn.Embedding(max_len + 2, d_model)
        self.token_enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=True), 1)
        self.queries = nn.Parameter(torch.randn(n_queries, d_model) * 0.02)
        self.cross = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.latent_enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=True), enc_layers)
        self.to_latent = nn.Linear(d_model, 2 * latent)
        self.from_latent = nn.Linear(latent, d_model)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=True), dec_layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        self.head = nn.Sequential(nn.Linear(latent, d_model), nn.ReLU(), nn.Linear(d_model, proj_dim))
        self.latent = latent

    def _embed(self, tokens):
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        return self.tok(tokens) + self.pos(pos)[None]

    def encode(self, tokens):
        pad = tokens == PAD
        h = self.token_enc(self._embed(tokens), src_key_padding_mask=pad)
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        q, _ = self.cross(q, h, h, key_padding_mask=pad)
        q = self.latent_enc(q)
        mu, logsig = self.to_latent(q.mean(1)).chunk(2, dim=-1)
        return mu, logsig

    def _decode(self, z, tokens):
        inp = _shift_right(tokens)
        t = inp.shape[1]
        causal = torch.triu(torch.full((t, t), float("-inf"), device=tokens.device), diagonal=1)
        memory = self.from_latent(z).unsqueeze(1)
        return self.norm(self.decoder(self._embed(inp), memory, tgt_mask=causal))

    def rec_nll(self, z, tokens):
        return _token_nll(self.out(self._decode(z, tokens)), tokens)

    def logits(self, z, tokens):
        return self.out(self._decode(z, tokens))

    def decoder_features(self, z, tokens):
        return _masked_mean(self._decode(z, tokens), tokens)

    def project(self, mu):
        return self.head(mu)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
