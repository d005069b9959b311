"""The Llama-style decoder: shapes, causality, KV-cache sampling, parameter counts, a falling loss."""

import pytest
import torch

from tasks.infinite_compute.model import PAPER_PRESETS, LlamaLM, ModelConfig
from tasks.infinite_compute.train import lm_loss, train_step


def small(**kw):
    torch.manual_seed(0)
    return LlamaLM(ModelConfig(d_model=16, n_layer=2, n_head=2, max_seq_len=16, **kw))


def test_shapes_and_untied_head():
    m = small()
    x = torch.randint(0, 257, (3, 16))
    assert m(x).shape == (3, 16, 257)
    assert m.head.weight.data_ptr() != m.embed.weight.data_ptr()
    with pytest.raises(ValueError, match="max_seq_len"):
        m(torch.randint(0, 257, (1, 17)))


def test_causal_future_tokens_do_not_change_the_past():
    m = small()
    x = torch.randint(0, 257, (2, 16))
    y = x.clone()
    y[:, 9:] = (y[:, 9:] + 1) % 257
    a, b = m(x), m(y)
    assert torch.allclose(a[:, :9], b[:, :9], atol=1e-6)
    assert not torch.allclose(a[:, 9:], b[:, 9:], atol=1e-4)


def test_grouped_query_attention_is_causal_too():
    m = small(n_kv_head=1)
    assert m.blocks[0].attn.wk.weight.shape == (8, 16)
    x = torch.randint(0, 257, (1, 16))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 257
    assert torch.allclose(m(x)[:, :-1], m(y)[:, :-1], atol=1e-6)


def test_kv_cache_matches_full_forward_and_sampling_is_seeded():
    m = small()
    s = m.sample(3, 16, torch.Generator().manual_seed(0))
    assert s.shape == (3, 16) and s.dtype == torch.long and int(s.max()) < 257
    assert torch.equal(s, m.sample(3, 16, torch.Generator().manual_seed(0)))
    inputs = torch.cat([torch.full((3, 1), 256), s[:, :-1]], 1)
    caches, tok, outs = [{} for _ in m.blocks], inputs[:, :1], []
    for t in range(16):
        outs.append(m(inputs[:, t:t + 1], caches))
    assert torch.allclose(torch.cat(outs, 1), m(inputs), atol=1e-5)


def test_paper_presets_match_the_card_counts():
    # Card §2: 150M = 154M total of which 131M embeddings + head (vocabulary 128,256).
    cfg = ModelConfig(vocab_size=128_256, max_seq_len=32, **PAPER_PRESETS["150m"])
    with torch.device("meta"):
        m = LlamaLM(cfg)
    total = m.num_params()
    emb = total - m.num_params(non_embedding=True)
    assert abs(total / 1e6 - 154) < 2 and abs(emb / 1e6 - 131) < 1
    with torch.device("meta"):
        big = LlamaLM(ModelConfig(vocab_size=128_256, max_seq_len=32, **PAPER_PRESETS["1_4b"]))
    assert 1.3e9 < big.num_params() < 1.6e9


def test_weight_decay_skips_norms_only():
    m = small()
    decay, no_decay = m.param_groups(0.4)
    assert decay["weight_decay"] == 0.4 and no_decay["weight_decay"] == 0.0
    assert any(p is m.embed.weight for p in decay["params"]) and any(p is m.head.weight for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])


def test_loss_falls_on_a_tiny_batch():
    m = small()
    opt = torch.optim.AdamW(m.param_groups(0.0), lr=1e-2, betas=(0.9, 0.95))
    batch = torch.randint(0, 257, (4, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first = float(lm_loss(m(batch[:, :-1]), batch[:, 1:]))
    for _ in range(60):
        train_step(m, opt, batch[:, :-1], batch[:, 1:], 1e-2, 1.0, "cpu")
    with torch.no_grad():
        last = float(lm_loss(m(batch[:, :-1]), batch[:, 1:]))
    assert first > 5.0 and last < 0.5 * first
