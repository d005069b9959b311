"""kernels/attention_entropy.py: the Triton kernels against the materialising reference, on CPU
under the Triton interpreter, and the reference against closed forms.

The kernels are jitted on first use per value of TRITON_INTERPRET, so setting it here works even
when another test module imported the kernel module first.
"""

from __future__ import annotations

import math
import os

os.environ["TRITON_INTERPRET"] = "1"  # before any kernel is built

import pytest
import torch

from kernels.attention_entropy import (attention_entropy_reference, attention_entropy_triton,
                                       attention_with_entropy, causal_max_entropy)

torch.set_num_threads(1)

# (B, H, T, D, causal, block_m, block_n): T not a multiple of the blocks (padded tiles), one tile,
# several tiles, unequal blocks, non-causal.
SHAPES = [
    (1, 2, 40, 16, True, 16, 16),
    (2, 1, 64, 32, True, 32, 16),
    (1, 1, 33, 16, True, 32, 32),
    (1, 2, 17, 16, True, 16, 32),
    (2, 1, 50, 16, False, 16, 16),
    (1, 1, 16, 32, False, 16, 16),
]


def _inputs(B, H, T, D, dtype=torch.float32, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(spread * torch.randn(B, H, T, D, generator=g)).to(dtype).requires_grad_(True) for _ in range(3)]


def _grads(res, q, k, v, g_out, g_ent):
    loss = (res.out.float() * g_out).sum() + (res.row_entropy * g_ent).sum()
    return torch.autograd.grad(loss, (q, k, v))


@pytest.mark.parametrize("B,H,T,D,causal,bm,bn", SHAPES)
def test_triton_matches_reference_fp32(B, H, T, D, causal, bm, bn):
    q, k, v = _inputs(B, H, T, D, spread=1.5)
    tri = attention_entropy_triton(q, k, v, causal=causal, block_m=bm, block_n=bn)
    ref = attention_entropy_reference(q, k, v, causal=causal)
    torch.testing.assert_close(tri.out, ref.out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tri.row_entropy, ref.row_entropy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tri.entropy, ref.entropy, atol=1e-5, rtol=1e-5)
    assert tri.entropy.shape == (B, H) and tri.row_entropy.shape == (B, H, T)
    # Gradients through both outputs: the entropy term is what the regulariser trains through.
    gen = torch.Generator().manual_seed(1)
    g_out, g_ent = torch.randn(B, H, T, D, generator=gen), torch.randn(B, H, T, generator=gen)
    for a, b in zip(_grads(tri, q, k, v, g_out, g_ent), _grads(ref, q, k, v, g_out, g_ent)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_entropy_only_gradient_matches_reference():
    q, k, v = _inputs(1, 2, 48, 16, seed=3, spread=2.0)
    tri = attention_entropy_triton(q, k, v, block_m=16, block_n=16)
    ref = attention_entropy_reference(q, k, v)
    gt = torch.autograd.grad(tri.entropy.sum(), (q, k))
    gr = torch.autograd.grad(ref.entropy.sum(), (q, k))
    for a, b in zip(gt, gr):
        assert b.abs().max() > 1e-3  # the entropy really depends on q and k
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_triton_half_precision_within_tolerance():
    # fp16 here: Triton 3.9's interpreter computes tl.dot on bf16 operands wrongly (a two-line
    # kernel shows it), so bf16 is checked on the GPU by benchmarks/attention_entropy.py.
    q, k, v = _inputs(1, 2, 40, 32, dtype=torch.float16, seed=5)
    tri = attention_entropy_triton(q, k, v, block_m=16, block_n=16)
    ref = attention_entropy_reference(q, k, v)
    assert tri.out.dtype == torch.float16
    torch.testing.assert_close(tri.out.float(), ref.out.float(), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(tri.row_entropy, ref.row_entropy, atol=1e-2, rtol=1e-2)


def test_triton_non_contiguous_inputs():
    # (B, T, H, D) transposed to (B, H, T, D): how a GPT splits heads.
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 24, 2, 16, generator=g).transpose(1, 2) for _ in range(3))
    tri = attention_entropy_triton(q, k, v, block_m=16, block_n=16)
    ref = attention_entropy_reference(q, k, v)
    torch.testing.assert_close(tri.out, ref.out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tri.row_entropy, ref.row_entropy, atol=1e-5, rtol=1e-5)


# -- the reference against closed forms ---------------------------------------------------------

def test_uniform_causal_attention_reaches_causal_max_not_log_t():
    T = 128
    q = torch.zeros(1, 1, T, 16)  # all logits equal: row i is uniform over its i keys
    k, v = torch.randn(1, 1, T, 16), torch.randn(1, 1, T, 16)
    res = attention_entropy_reference(q, k, v, causal=True)
    expected = [math.log(i) for i in range(1, T + 1)]
    torch.testing.assert_close(res.row_entropy[0, 0], torch.tensor(expected), atol=1e-5, rtol=0)
    assert res.entropy.item() == pytest.approx(causal_max_entropy(T), abs=1e-5)
    assert causal_max_entropy(128) == pytest.approx(3.878, abs=1e-3)  # card §3: 3.88 vs ln 128 = 4.85
    non_causal = attention_entropy_reference(q, k, v, causal=False)
    assert non_causal.entropy.item() == pytest.approx(math.log(T), abs=1e-5)


def test_one_hot_attention_has_zero_entropy_and_copies_value():
    T, D = 8, 16
    k = torch.eye(T, D).reshape(1, 1, T, D) * 100.0
    q = k.clone()  # row i attends only to key i (logit 100^2/4 against 0)
    v = torch.randn(1, 1, T, D)
    res = attention_entropy_reference(q, k, v, causal=False)
    assert res.row_entropy.abs().max() < 1e-6
    torch.testing.assert_close(res.out, v, atol=1e-6, rtol=0)


def test_reference_equals_paper_formula_with_epsilon():
    q, k, v = _inputs(2, 2, 20, 16, seed=11, spread=2.0)
    res = attention_entropy_reference(q, k, v)
    s = (q @ k.transpose(-1, -2)) / 4.0
    s = s.masked_fill(~torch.ones(20, 20, dtype=torch.bool).tril(), float("-inf"))
    a = s.softmax(-1)
    paper = -(a * torch.log(a + 1e-9)).sum(-1)  # card §3 / Algorithm 1, epsilon 1e-9
    torch.testing.assert_close(res.row_entropy, paper, atol=2e-5, rtol=0)  # fp32 rounding; epsilon adds < T*1e-9


def test_dispatcher_uses_reference_on_cpu_and_rejects_unknown_backend():
    q, k, v = _inputs(1, 1, 12, 8)
    auto = attention_with_entropy(q, k, v)
    ref = attention_entropy_reference(q, k, v)
    assert torch.equal(auto.out, ref.out) and torch.equal(auto.row_entropy, ref.row_entropy)
    with pytest.raises(ValueError, match="backend"):
        attention_with_entropy(q, k, v, backend="cuda")
    with pytest.raises(ValueError, match="head dim"):
        attention_with_entropy(q, k, v, backend="triton")  # D = 8 is below tl.dot's minimum
