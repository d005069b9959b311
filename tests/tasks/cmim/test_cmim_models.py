"""The encoder-decoder families: shapes, likelihoods against hand-computed values, the
informative-embedding features, and the MolMIM-style Perceiver at a tiny size."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.cmim.models import PAD, CharVocab, ImageAutoencoder, PerceiverSmiles, SmilesGRU, n_parameters


def test_image_model_likelihoods_hand_computed():
    torch.manual_seed(0)
    m = ImageAutoencoder(4, latent=2, hidden=(8, 6), likelihood="bernoulli")
    z, x = torch.zeros(1, 2), torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    p = m.mean(z)
    want = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum()
    assert m.rec_nll(z, x).item() == pytest.approx(want.item(), rel=1e-5)
    g = ImageAutoencoder(4, latent=2, hidden=(8, 6), likelihood="gaussian", sigma0=0.1)
    pg = g.mean(z)
    want_g = (0.5 * ((x - pg) / 0.1) ** 2 + math.log(0.1) + 0.5 * math.log(2 * math.pi)).sum()
    assert g.rec_nll(z, x).item() == pytest.approx(want_g.item(), rel=1e-5)
    feats = m.decoder_features(z)
    assert feats.shape == (1, 6 + 8)  # both decoder hidden layers


def test_vocab_and_gru_teacher_forcing():
    v = CharVocab(["CCO", "c1ccccc1"])
    t, lengths = v.encode(["CCO", "CN"], 5)
    assert t.shape == (2, 6) and lengths.tolist() == [4, 3] and t[1, 3].item() == PAD  # N is unknown -> <unk>
    torch.manual_seed(0)
    m = SmilesGRU(len(v), latent=4, hidden=8, emb=5)
    mu, logsig = m.encode(t)
    assert mu.shape == (2, 4) == logsig.shape
    nll = m.rec_nll(mu, t)
    logp = torch.log_softmax(m.logits(mu, t), -1)
    want = -sum(logp[i, j, t[i, j]] for i in range(2) for j in range(6) if t[i, j] != PAD)
    assert nll.sum().item() == pytest.approx(want.item(), rel=1e-5)
    assert m.decoder_features(mu, t).shape == (2, 8)


def test_perceiver_tiny_forward_backward_and_molmim_size():
    v = CharVocab(["CCO", "c1ccccc1O"])
    t, _ = v.encode(["CCO", "c1ccccc1O"], 12)
    torch.manual_seed(0)
    m = PerceiverSmiles(len(v), latent=6, d_model=16, heads=2, ffn=32, enc_layers=1, dec_layers=1, max_len=12)
    mu, logsig = m.encode(t)
    loss = m.rec_nll(mu, t).mean()
    loss.backward()
    assert mu.shape == (2, 6) and torch.isfinite(loss) and m.decoder_features(mu, t).shape == (2, 16)
    # the decoder is causal: changing a later token leaves the earlier positions' states unchanged
    t2 = t.clone()
    t2[1, 5] = 4
    with torch.no_grad():
        h1, h2 = m._decode(mu, t), m._decode(mu, t2)
    assert torch.allclose(h1[1, :6], h2[1, :6], atol=1e-5) and not torch.allclose(h1[1, 6:], h2[1, 6:])
    big = PerceiverSmiles(40, latent=512, d_model=512, heads=8, ffn=2048, enc_layers=6, dec_layers=6, max_len=128)
    assert 45e6 < n_parameters(big) < 70e6  # MolMIM: 65.2M (its larger vocabulary and encoder); ours ~50M
