"""The GPT's Table-1 switches do what the paper's configurations say."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from kernels.attention_entropy import causal_max_entropy
from tasks.entropy_attention.configs import ARCHITECTURES
from tasks.entropy_attention.model import GPT, GPTConfig, ffn_flops_per_token
from tasks.entropy_attention.train import model_config

BASE = dict(n_layer=3, n_head=2, n_embd=32, context=32)


def _gpt(method: str, **extra) -> GPT:
    torch.manual_seed(0)
    return GPT(model_config({**ARCHITECTURES[method], **BASE, **extra}, vocab_size=257))


@pytest.mark.parametrize("method", list(ARCHITECTURES))
def test_every_configuration_trains_one_step_with_finite_loss(method):
    model = _gpt(method)
    x = torch.randint(0, 257, (2, 33))
    logits = model(x[:, :-1], entropy=ARCHITECTURES[method].get("ereg", False))
    loss = nn.functional.cross_entropy(logits.reshape(-1, 257), x[:, 1:].reshape(-1))
    loss.backward()
    assert logits.shape == (2, 32, 257)
    assert math.isfinite(loss.item()) and abs(loss.item() - math.log(257)) < 0.5  # ~uniform at init


def test_layernorm_switch_removes_every_layernorm():
    with_ln = _gpt("sm_ln_g")
    without = _gpt("sm_g")
    count = lambda m: sum(isinstance(x, nn.LayerNorm) for x in m.modules())  # noqa: E731
    assert count(with_ln) == 2 * 3 + 1  # LN1, LN2 per block + final LN
    assert count(without) == 0


def test_fused_ffn_is_one_d_by_d_matrix_with_8x_fewer_flops():
    cfg_fused = GPTConfig(n_embd=32, n_layer=3, ffn="fused")
    cfg_plain = GPTConfig(n_embd=32, n_layer=3, ffn="identity")
    ffn = GPT(cfg_fused).blocks[0].ffn
    assert ffn.c_fc.weight.shape == (32, 32) and ffn.c_proj is None
    assert ffn_flops_per_token(cfg_plain) == 8 * ffn_flops_per_token(cfg_fused)  # card claim 8


def test_identity_ffn_is_linear_and_activations_are_not():
    x, y = torch.randn(4, 32), torch.randn(4, 32)
    for method, linear in (("sm", True), ("sm_r", False), ("sm_g", False)):
        ffn = _gpt(method).blocks[0].ffn
        with torch.no_grad():
            f0 = ffn(torch.zeros_like(x))
            additive = torch.allclose(ffn(x + y) - f0, (ffn(x) - f0) + (ffn(y) - f0), atol=1e-6)
        assert additive == linear, method


def test_ffn_scaling_starts_as_the_unscaled_block_and_scales_with_alpha_beta():
    scaled, plain = _gpt("sm_scfuffn"), _gpt("sm", ffn="fused")
    plain.load_state_dict({k: v for k, v in scaled.state_dict().items() if not k.endswith(("alpha", "beta"))})
    x = torch.randint(0, 257, (2, 16))
    with torch.no_grad():
        assert torch.allclose(scaled(x), plain(x), atol=1e-6)  # alpha = beta = 1 (Eq. 8 init)
        block = scaled.blocks[0]
        h = torch.randn(2, 16, 32)
        attn_out = h + block.attn(h, False)
        block.alpha.fill_(2.0)
        block.beta.fill_(0.5)
        expected = 0.5 * attn_out + block.ffn(attn_out) / 2.0
        assert torch.allclose(block(h, False), expected, atol=1e-6)


def test_weight_and_spectral_norm_wrap_ffn_only_and_keep_init():
    wn, sn = _gpt("sm_wn_ffn"), _gpt("sm_sn_ffn")
    plain = _gpt("sm_scfuffn")  # same seed, same init order; no parametrisation
    assert hasattr(wn.blocks[0].ffn.c_fc, "parametrizations")
    assert not hasattr(wn.blocks[0].attn.c_attn, "parametrizations")
    torch.testing.assert_close(wn.blocks[0].ffn.c_fc.weight, plain.blocks[0].ffn.c_fc.weight)  # w = g v/|v|
    sigma = torch.linalg.matrix_norm(sn.blocks[0].ffn.c_fc.weight.detach(), ord=2)
    assert 0.9 <= sigma.item() <= 1.05  # ~1: one power iteration per forward estimates sigma


def test_temperature_readings_at_paper_init_sharpen_or_flatten():
    """Appendix A with t = 1e-2: dividing scales the logits by 100 (toward one-hot), multiplying by
    1/100 (uniform causal attention, entropy (1/T) sum ln i)."""
    h = torch.randn(2, 32, 32)
    ent = {}
    for reading in ("none", "divide", "multiply"):
        torch.manual_seed(0)
        cfg = GPTConfig(n_embd=32, n_head=2, block_size=32, temperature=reading, temperature_init=0.01)
        attn = GPT(cfg).blocks[0].attn
        with torch.no_grad():
            attn.c_attn.weight.normal_(0.0, 0.3)  # trained-size logits, O(1)
            attn(h, True)
        ent[reading] = attn.row_entropy.mean().item()
    assert ent["multiply"] == pytest.approx(causal_max_entropy(32), abs=1e-3)
    assert ent["divide"] < 0.2 < ent["none"] < ent["multiply"] - 0.1


def test_entropy_path_matches_sdpa_and_returns_row_entropies():
    model = _gpt("sm_ln_g")
    x = torch.randint(0, 257, (2, 32))
    with torch.no_grad():
        fast = model(x, entropy=False)
        slow = model(x, entropy=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    ents = model.row_entropies()
    assert len(ents) == 3 and ents[0].shape == (2, 2, 32)
    assert (ents[0] >= -1e-6).all() and (ents[0][..., -1] <= math.log(32) + 1e-5).all()


def test_no_entropy_recorded_raises_a_clear_error():
    model = _gpt("sm")
    model(torch.randint(0, 257, (1, 8)), entropy=False)
    with pytest.raises(RuntimeError, match="entropy=True"):
        model.row_entropies()


def test_bad_switch_names_the_allowed_values():
    with pytest.raises(ValueError, match="gelu, relu, identity, fused"):
        GPTConfig(ffn="swish")
