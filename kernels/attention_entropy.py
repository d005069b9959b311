"""Causal attention that also returns the attention entropy of every query row.

    out, entropy, row_entropy = attention_with_entropy(q, k, v, causal=True)

``q, k, v``: (B, H, T, D). ``out``: (B, H, T, D). ``row_entropy``: (B, H, T), the Shannon
entropy (natural log) of each query row of softmax(q k^T * scale), ``-sum_j p_ij ln p_ij``.
``entropy``: (B, H), the row entropy averaged over query rows (the per-head statistic of
Zhai et al. 2023 and of the entropy-guided-attention paper, card §3).

Three implementations:

* :func:`attention_entropy_reference`: PyTorch, materialises the (T x T) attention matrix.
  Entropy as ``H_i = LSE_i - sum_j p_ij s_ij`` (exactly ``-sum p ln p``, with finite
  gradients where p = 0; the paper's ``-sum p ln(p + 1e-9)`` differs by at most T * 1e-9 nats).
* :func:`attention_entropy_triton`: a FlashAttention-2 style Triton forward that never
  materialises the matrix. Per query row it keeps, in fp32, the running max ``m``,
  ``l = sum exp(s - m)``, ``u = sum exp(s - m)(s - m)`` and the output accumulator; when a
  key block raises the max from m to m', ``u <- e^(m-m') (u + (m - m') l)``. At the end
  ``O = acc / l``, ``LSE = m + ln l`` and ``H = ln l - u / l``. The backward is a pair of
  Triton kernels (dK/dV over query blocks, dQ over key blocks) that recompute
  ``p = exp(s - LSE)`` tile by tile: memory stays linear in T in training as well. The
  entropy is differentiable (the entropy regulariser trains through it): with upstream
  gradient ``g_i = dL/dH_i`` the logit gradient is
  ``dS_ij = p_ij (dP_ij - D_i - g_i (s_ij - LSE_i + H_i))``, ``D_i = sum_d dO_id O_id``.
* :func:`attention_with_entropy`: the dispatcher. Triton on CUDA (head dims 16..128, a
  power of two), the reference elsewhere; ``backend=`` forces one.

The per-(batch, head) mean is taken in PyTorch from the (B, H, T) row entropies: a
reduction over B*H*T floats costs nothing beside the attention itself and keeps the
kernel free of atomics (so it is deterministic).

Tests run the Triton kernels on CPU under ``TRITON_INTERPRET=1``
(tests/kernels/test_attention_entropy.py); ``benchmarks/attention_entropy.py`` times them on
a GPU. Kernels are built on first use, per value of ``TRITON_INTERPRET``, so a test can turn
the interpreter on after this module was imported.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import NamedTuple

import torch

__all__ = ["AttentionEntropy", "attention_entropy_reference", "attention_entropy_triton",
           "attention_with_entropy", "causal_max_entropy", "triton_supported"]


class AttentionEntropy(NamedTuple):
    out: torch.Tensor
    """(B, H, T, D) attention output."""
    entropy: torch.Tensor
    """(B, H) row entropy averaged over query rows (nats)."""
    row_entropy: torch.Tensor
    """(B, H, T) entropy of each query row (nats)."""


def causal_max_entropy(T: int) -> float:
    """Largest attainable query-averaged entropy under a causal mask: (1/T) sum_{i=1..T} ln i.

    Row i sees i keys, so uniform causal attention reaches this value, not ln T
    (3.88 nats for T=128 against ln 128 = 4.85).
    """
    return math.lgamma(T + 1) / T


# -- PyTorch reference -------------------------------------------------------------------------

def attention_entropy_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                                sm_scale: float | None = None) -> AttentionEntropy:
    """Materialising attention with row entropies, in fp32; differentiable in q, k, v."""
    _check_shapes(q, k, v)
    T, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if causal:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
        s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    p = torch.exp(s - lse)
    # H = LSE - sum p s: masked logits are -inf with p = 0; zero them so 0 * -inf is not NaN.
    s_finite = s.masked_fill(torch.isinf(s), 0.0) if causal else s
    row_entropy = lse.squeeze(-1) - (p * s_finite).sum(-1)
    out = torch.matmul(p, v.float()).to(q.dtype)
    return AttentionEntropy(out, row_entropy.mean(-1), row_entropy)


def _check_shapes(q, k, v) -> None:
    if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"expected q (B, H, T, D) and k, v (B, H, S, D) with matching B, H, D; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")


# -- Triton kernels (built on first use) ---------------------------------------------------------

def triton_supported(q: torch.Tensor) -> bool:
    """Whether the Triton path handles this input (head dim a power of two in 16..128)."""
    D = q.shape[-1]
    return D in (16, 32, 64, 128) and q.dtype in (torch.float32, torch.float16, torch.bfloat16)


@lru_cache(maxsize=2)
def _kernels(interpret: bool):
    """The jitted kernels; ``interpret`` only keys the cache (Triton reads the env var at jit time)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _fwd(Q, K, V, O, LSE, ENT, sm_scale,
             sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
             H, T, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
             HEAD_DIM: tl.constexpr, IEEE: tl.constexpr):
        start_m = tl.program_id(0)
        bh = tl.program_id(1)
        b, h = bh // H, bh % H
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        row_ok = offs_m < T
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
        # m starts finite so that (m - m_new) * l stays 0 (not NaN) before the first key.
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        u_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        hi = T
        if CAUSAL:
            hi = tl.minimum((start_m + 1) * BLOCK_M, T)
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + offs_n
            col_ok = cols < T
            k = tl.load(K + b * skb + h * skh + cols[:, None] * skt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
            v = tl.load(V + b * svb + h * svh + cols[:, None] * svt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * sm_scale
            else:
                s = tl.dot(q, tl.trans(k)) * sm_scale
            valid = col_ok[None, :]
            if CAUSAL:
                valid = valid & (cols[None, :] <= offs_m[:, None])
            s = tl.where(valid, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            shifted = tl.where(valid, s - m_new[:, None], 0.0)
            u_i = alpha * (u_i + (m_i - m_new) * l_i) + tl.sum(p * shifted, 1)
            l_i = alpha * l_i + tl.sum(p, 1)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        l_safe = tl.where(l_i > 0, l_i, 1.0)  # a fully masked row (never under causal masks): O = 0, H = 0
        out = acc / l_safe[:, None]
        lse = m_i + tl.log(l_safe)
        ent = tl.where(l_i > 0, tl.log(l_safe) - u_i / l_safe, 0.0)
        tl.store(O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :], out.to(O.dtype.element_ty),
                 mask=row_ok[:, None])
        tl.store(LSE + bh * T + offs_m, lse, mask=row_ok)
        tl.store(ENT + bh * T + offs_m, ent, mask=row_ok)

    @triton.jit
    def _bwd_dkdv(Q, K, V, DO, LSE, ENT, DELTA, DENT, DK, DV, sm_scale,
                  sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdob, sdoh, sdot,
                  H, T, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  HEAD_DIM: tl.constexpr, IEEE: tl.constexpr):
        start_n = tl.program_id(0)
        bh = tl.program_id(1)
        b, h = bh // H, bh % H
        cols = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        col_ok = cols < T
        k = tl.load(K + b * skb + h * skh + cols[:, None] * skt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
        v = tl.load(V + b * svb + h * svh + cols[:, None] * svt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
        dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        lo = 0
        if CAUSAL:  # earlier queries never see these keys
            lo = (start_n * BLOCK_N // BLOCK_M) * BLOCK_M
        for start_m in range(lo, T, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            row_ok = offs_m < T
            q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
            do = tl.load(DO + b * sdob + h * sdoh + offs_m[:, None] * sdot + offs_d[None, :], mask=row_ok[:, None],
                         other=0.0)
            lse = tl.load(LSE + bh * T + offs_m, mask=row_ok, other=0.0)
            ent = tl.load(ENT + bh * T + offs_m, mask=row_ok, other=0.0)
            delta = tl.load(DELTA + bh * T + offs_m, mask=row_ok, other=0.0)
            g = tl.load(DENT + bh * T + offs_m, mask=row_ok, other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * sm_scale
            else:
                s = tl.dot(q, tl.trans(k)) * sm_scale
            valid = row_ok[:, None] & col_ok[None, :]
            if CAUSAL:
                valid = valid & (cols[None, :] <= offs_m[:, None])
            log_p = tl.where(valid, s - lse[:, None], 0.0)
            p = tl.where(valid, tl.exp(log_p), 0.0)
            if IEEE:
                dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision="ieee")
                dp = tl.dot(do, tl.trans(v), input_precision="ieee")
            else:
                dv += tl.dot(tl.trans(p.to(do.dtype)), do)
                dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None] - g[:, None] * (log_p + ent[:, None]))
            if IEEE:
                dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision="ieee")
            else:
                dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
        tl.store(DK + bh * T * HEAD_DIM + cols[:, None] * HEAD_DIM + offs_d[None, :], dk * sm_scale,
                 mask=col_ok[:, None])
        tl.store(DV + bh * T * HEAD_DIM + cols[:, None] * HEAD_DIM + offs_d[None, :], dv, mask=col_ok[:, None])

    @triton.jit
    def _bwd_dq(Q, K, V, DO, LSE, ENT, DELTA, DENT, DQ, sm_scale,
                sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdob, sdoh, sdot,
                H, T, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                HEAD_DIM: tl.constexpr, IEEE: tl.constexpr):
        start_m = tl.program_id(0)
        bh = tl.program_id(1)
        b, h = bh // H, bh % H
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        row_ok = offs_m < T
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
        do = tl.load(DO + b * sdob + h * sdoh + offs_m[:, None] * sdot + offs_d[None, :], mask=row_ok[:, None],
                     other=0.0)
        lse = tl.load(LSE + bh * T + offs_m, mask=row_ok, other=0.0)
        ent = tl.load(ENT + bh * T + offs_m, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + bh * T + offs_m, mask=row_ok, other=0.0)
        g = tl.load(DENT + bh * T + offs_m, mask=row_ok, other=0.0)
        dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        hi = T
        if CAUSAL:
            hi = tl.minimum((start_m + 1) * BLOCK_M, T)
        for start_n in range(0, hi, BLOCK_N):
            cols = start_n + offs_n
            col_ok = cols < T
            k = tl.load(K + b * skb + h * skh + cols[:, None] * skt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
            v = tl.load(V + b * svb + h * svh + cols[:, None] * svt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * sm_scale
                dp = tl.dot(do, tl.trans(v), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k)) * sm_scale
                dp = tl.dot(do, tl.trans(v))
            valid = row_ok[:, None] & col_ok[None, :]
            if CAUSAL:
                valid = valid & (cols[None, :] <= offs_m[:, None])
            log_p = tl.where(valid, s - lse[:, None], 0.0)
            p = tl.where(valid, tl.exp(log_p), 0.0)
            ds = p * (dp - delta[:, None] - g[:, None] * (log_p + ent[:, None]))
            if IEEE:
                dq += tl.dot(ds.to(k.dtype), k, input_precision="ieee")
            else:
                dq += tl.dot(ds.to(k.dtype), k)
        tl.store(DQ + bh * T * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :], dq * sm_scale,
                 mask=row_ok[:, None])

    return _fwd, _bwd_dkdv, _bwd_dq


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


class _TritonAttentionEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, sm_scale: float, block_m: int, block_n: int):
        import triton

        # The kernels index the head dim with stride 1.
        q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
        B, H, T, D = q.shape
        fwd, _, _ = _kernels(_interpreting())
        out = torch.empty_like(q)
        lse = torch.empty(B, H, T, device=q.device, dtype=torch.float32)
        ent = torch.empty(B, H, T, device=q.device, dtype=torch.float32)
        ieee = q.dtype == torch.float32
        grid = (triton.cdiv(T, block_m), B * H)
        fwd[grid](q, k, v, out, lse, ent, sm_scale, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
                  H, T, CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=D, IEEE=ieee)
        ctx.save_for_backward(q, k, v, out, lse, ent)
        ctx.args = (causal, sm_scale, block_m, block_n)
        return out, ent

    @staticmethod
    def backward(ctx, d_out, d_ent):
        import triton

        q, k, v, out, lse, ent = ctx.saved_tensors
        causal, sm_scale, block_m, block_n = ctx.args
        B, H, T, D = q.shape
        _, bwd_dkdv, bwd_dq = _kernels(_interpreting())
        d_out = d_out.contiguous() if d_out is not None else torch.zeros_like(out)
        d_ent = (d_ent.float().contiguous() if d_ent is not None
                 else torch.zeros(B, H, T, device=q.device, dtype=torch.float32))
        delta = (d_out.float() * out.float()).sum(-1).contiguous()  # D_i = dO_i . O_i, (B, H, T)
        dq = torch.empty(B, H, T, D, device=q.device, dtype=torch.float32)
        dk = torch.empty_like(dq)
        dv = torch.empty_like(dq)
        ieee = q.dtype == torch.float32
        common = (*_strides(q), *_strides(k), *_strides(v), *_strides(d_out), H, T)
        kw = dict(CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=D, IEEE=ieee)
        bwd_dkdv[(triton.cdiv(T, block_n), B * H)](q, k, v, d_out, lse, ent, delta, d_ent, dk, dv, sm_scale,
                                                    *common, **kw)
        bwd_dq[(triton.cdiv(T, block_m), B * H)](q, k, v, d_out, lse, ent, delta, d_ent, dq, sm_scale, *common, **kw)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def attention_entropy_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                             sm_scale: float | None = None, block_m: int = 64, block_n: int = 64) -> AttentionEntropy:
    """Triton attention with row entropies (no T x T matrix); differentiable in q, k, v.

    Self-attention only (k and v have q's length). Blocks of at least 16 (``tl.dot``).
    """
    _check_shapes(q, k, v)
    if k.shape[-2] != q.shape[-2]:
        raise ValueError("the Triton kernel handles self-attention (same length for q and k); "
                         "use backend='reference' for cross-attention")
    if not triton_supported(q):
        raise ValueError(f"the Triton kernel needs a head dim in (16, 32, 64, 128) and fp32/fp16/bf16; got "
                         f"D={q.shape[-1]}, {q.dtype}: use backend='reference'")
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    out, row_entropy = _TritonAttentionEntropy.apply(q, k, v, bool(causal), scale, int(block_m), int(block_n))
    return AttentionEntropy(out, row_entropy.mean(-1), row_entropy)


def attention_with_entropy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                           sm_scale: float | None = None, backend: str = "auto") -> AttentionEntropy:
    """Attention output plus per-head and per-row entropies.

    ``backend``: ``auto`` (Triton on CUDA when :func:`triton_supported`, else the reference),
    ``triton`` or ``reference``.
    """
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"backend must be auto, triton or reference, not {backend!r}")
    use_triton = backend == "triton" or (backend == "auto" and q.is_cuda and triton_supported(q)
                                         and k.shape[-2] == q.shape[-2])
    if use_triton:
        return attention_entropy_triton(q, k, v, causal=causal, sm_scale=sm_scale)
    return attention_entropy_reference(q, k, v, causal=causal, sm_scale=sm_scale)
