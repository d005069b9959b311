"""The paper's Penn Treebank language model as an STN (card §4.1), in one readable file.

A 2-layer LSTM (650 units, 650-d embeddings, decoder tied to the embedding) with the AWD-LSTM
regularisers as its hyperparameters, built as the official ``lstm/hyperlstm.py`` builds it:

* every LSTM weight is an STN layer: ``i2h`` and ``h2h`` are :class:`~.stn.STNLinear` maps
  (``y = W x + b + (Vλ) ⊙ (U x) + (Cλ) ⊙ c``, per output unit, no ``elem_scalar``), the same
  λ-gates at every time step;
* the embedding is a plain table plus a λ-gated second table: ``E[w] + (Aλ) ⊙ E_h[w]``;
* the decoder is a plain linear map tied to the elementary table (not gated).

The seven regularisers and how each is applied (per example = its own rate per sequence):

============  ===========================================================  ===========
name          what it does                                                 sample
============  ===========================================================  ===========
dropouti      locked dropout on the embeddings (mask shared over time)     per example
dropouth      locked dropout between the LSTM layers                       per example
dropouto      locked dropout on the last layer's output                    per example
dropoute      drops whole words: one mask over the vocabulary rows         per batch
wdrop         DropConnect on W_hh (both tables, one mask per layer)        per batch
alpha         AR: α · mean(dropped last-layer output²)                     per batch
beta          TAR: β · mean((h_t − h_{t−1})²) of the undropped output      per batch
============  ===========================================================  ===========

Dropout rates reach the masks detached and α, β enter the loss as constants: λ learns only
through the hypernet gates, as in the paper. ``hyper=False`` gives the baselines' plain network
with the same architecture and regularisers.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .stn import HParam, STNLinear, locked_dropout

#: Every regulariser the model knows, in the official ``hdict`` order.
LM_HPARAMS = ("alpha", "beta", "dropouto", "dropouti", "dropouth", "dropoute", "wdrop")
#: Hyperparameters that cannot vary inside a minibatch (one perturbation per batch).
PER_BATCH = ("alpha", "beta", "dropoute", "wdrop")
#: The range random search / TPE draw α and β from (AWD-LSTM's PTB values are α = 2, β = 1).
AR_TAR_SEARCH_MAX = 3.0
#: Dropout rates stay below this (a rate of 1 drops everything).
LM_DROPOUT_MAX = 0.99


def dropconnect_mask(shape, p: float, device) -> torch.Tensor:
    """Inverted DropConnect mask: Bernoulli(1 − p) entries scaled by 1/(1 − p)."""
    keep = max(1.0 - p, 1e-3)
    return (torch.rand(shape, device=device) < keep).float() / keep


class STNEmbedding(nn.Module):
    """``E[w] + (Aλ) ⊙ E_h[w]`` (official ``HyperEmbedding``); embedding dropout drops the same
    vocabulary rows from both tables."""

    def __init__(self, vocab: int, dim: int, num_hparams: int, hyper: bool):
        super().__init__()
        self.hyper = hyper and num_hparams > 0
        self.weight = nn.Parameter(torch.empty(vocab, dim).uniform_(-0.1, 0.1))
        if self.hyper:
            self.hyper_weight = nn.Parameter(torch.empty(vocab, dim).uniform_(-0.1, 0.1))
            self.gates = nn.Linear(num_hparams, dim, bias=False)
            nn.init.normal_(self.gates.weight, std=0.01)

    def forward(self, words: torch.Tensor, hnet: torch.Tensor | None, dropoute: float = 0.0) -> torch.Tensor:
        w = self.weight
        mask = dropconnect_mask((w.shape[0], 1), dropoute, w.device) if self.training and dropoute > 0 else None
        out = F.embedding(words, w if mask is None else w * mask)
        if self.hyper and hnet is not None:
            wh = self.hyper_weight if mask is None else self.hyper_weight * mask
            out = out + self.gates(hnet).unsqueeze(1) * F.embedding(words, wh)
        return out


class STNLSTMLayer(nn.Module):
    """One LSTM layer, batch first, whose gate pre-activations are STN layers of x_t and h_{t-1}."""

    def __init__(self, n_in: int, n_hid: int, num_hparams: int, hyper: bool):
        super().__init__()
        self.n_hid = n_hid
        self.i2h = STNLinear(n_in, 4 * n_hid, num_hparams, hyper, elem_scalar=False)
        self.h2h = STNLinear(n_hid, 4 * n_hid, num_hparams, hyper, elem_scalar=False)

    def forward(self, x: torch.Tensor, state, hnet: torch.Tensor | None, wdrop: float = 0.0):
        """x: (B, T, n_in); state: (h, c), each (B, n_hid). Returns (B, T, n_hid) and the new state."""
        h2h = self.h2h
        mask = dropconnect_mask(h2h.weight.shape, wdrop, x.device) if self.training and wdrop > 0 else None
        w = h2h.weight if mask is None else h2h.weight * mask
        pre_x = self.i2h(x, hnet)  # the input path for every step at once
        bias = h2h.bias
        if h2h.hyper and hnet is not None:
            wh = h2h.hyper_weight if mask is None else h2h.hyper_weight * mask
            g = h2h.gates(hnet)
            gw, gb = g[:, :4 * self.n_hid], g[:, 4 * self.n_hid:]
            bias = bias + gb * h2h.hyper_bias  # (B, 4H): the gated bias, once per sequence
            w_both = torch.cat([w, wh], 0)  # one matmul per step for both tables
        h, c = state
        outs = []
        for t in range(x.shape[1]):
            if h2h.hyper and hnet is not None:
                z = h @ w_both.t()
                rec = z[:, :4 * self.n_hid] + gw * z[:, 4 * self.n_hid:]
            else:
                rec = h @ w.t()
            f, i, o, g_ = (pre_x[:, t] + rec + bias).chunk(4, dim=1)  # official gate order
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g_)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, 1), (h, c)


class STNLanguageModel(nn.Module):
    """Embedding -> LSTM layers -> tied decoder, with the seven regularisers above."""

    def __init__(self, vocab: int, num_hparams: int, hyper: bool = True, emsize: int = 650, nhid: int = 650,
                 nlayers: int = 2):
        super().__init__()
        self.encoder = STNEmbedding(vocab, emsize, num_hparams, hyper)
        # The last layer's width is the embedding size so that the decoder can be tied.
        sizes = [emsize] + [nhid] * (nlayers - 1) + [emsize]
        self.layers = nn.ModuleList(STNLSTMLayer(sizes[i], sizes[i + 1], num_hparams, hyper) for i in range(nlayers))
        self.decoder = nn.Linear(emsize, vocab)
        self.decoder.weight = self.encoder.weight
        nn.init.zeros_(self.decoder.bias)  # as the baseline RNNModel; the same start for STN and baselines

    def init_state(self, batch: int, device=None):
        return [(torch.zeros(batch, layer.n_hid, device=device), torch.zeros(batch, layer.n_hid, device=device))
                for layer in self.layers]

    def forward(self, words: torch.Tensor, state, hnet: torch.Tensor | None = None,
                reg: Mapping[str, Any] | None = None):
        """words: (B, T). ``reg``: name -> value, per-example (B,) tensors for the locked dropouts,
        floats for the per-batch ones; ignored in eval mode. Returns logits (B, T, V), the new
        state, and the AR and TAR terms (before α, β)."""
        r = reg if (reg is not None and self.training) else {}
        x = locked_dropout(self.encoder(words, hnet, float(r.get("dropoute", 0.0))), r.get("dropouti"))
        new_state = []
        for k, layer in enumerate(self.layers):
            x, st = layer(x, state[k], hnet, float(r.get("wdrop", 0.0)))
            new_state.append(st)
            raw = x
            if k < len(self.layers) - 1:
                x = locked_dropout(x, r.get("dropouth"))
        dropped = locked_dropout(raw, r.get("dropouto"))
        ar = dropped.pow(2).mean()
        tar = (raw[:, 1:] - raw[:, :-1]).pow(2).mean() if raw.shape[1] > 1 else raw.new_zeros(())
        return self.decoder(dropped), new_state, ar, tar


def lm_hyperparameters(settings: Mapping[str, Any], hp: Mapping[str, Any]) -> list[HParam]:
    """The tuned subset (``settings['tune']``) with the run's start values: dropouts start at
    ``start_dropout`` (official 0.05), α and β at ``start_ar_tar`` (``--tune_all``: 0.05)."""
    tune = list(settings["tune"])
    unknown = sorted(set(tune) - set(LM_HPARAMS))
    if unknown:
        raise ValueError(f"unknown LSTM hyperparameters {unknown} in the benchmark's 'tune' (known: {list(LM_HPARAMS)})")
    drop0, ar0 = float(hp.get("start_dropout", 0.05)), float(hp.get("start_ar_tar", 0.05))
    out = []
    for name in LM_HPARAMS:  # official order, whatever the order in settings
        if name not in tune:
            continue
        if name in ("alpha", "beta"):
            out.append(HParam(name, "positive", 0.0, AR_TAR_SEARCH_MAX, ar0, per_example=False))
        else:
            out.append(HParam(name, "rate", 0.0, 1.0, drop0, per_example=name not in PER_BATCH))
    return out


def fixed_regularisers(settings: Mapping[str, Any]) -> dict[str, float]:
    """The regularisers a benchmark does not tune, at their fixed values (official defaults:
    dropouts 0.05, α = β = 0)."""
    fixed = {n: (0.0 if n in ("alpha", "beta") else 0.05) for n in LM_HPARAMS}
    fixed.update({k: float(v) for k, v in (settings.get("fixed") or {}).items()})
    return {k: v for k, v in fixed.items() if k not in settings["tune"]}


def hnet_input(u: torch.Tensor, params: list[HParam], constrained: bool) -> torch.Tensor:
    """What the hypernet sees: the unconstrained λ (official default) or, with ``constrained``
    (the official ``--tune_all``), sigmoid for dropout rates and softplus for α, β. ``u`` (B, H)."""
    if not constrained:
        return u
    cols = [torch.sigmoid(u[:, i]) if p.kind == "rate" else F.softplus(u[:, i]) for i, p in enumerate(params)]
    return torch.stack(cols, 1)


def perplexity(nll: float) -> float:
    return math.exp(min(nll, 50.0))
