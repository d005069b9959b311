"""Per-codebook top-k nearest-key search with a used-key mask (the DKVB lookup).

    dist, idx = kv_lookup(queries, keys, used=None, k=1)

``queries``: (C, M, D), one D-dimensional head per codebook for each of M inputs. ``keys``: (C, N, D),
N keys per codebook. ``used``: optional (C, N) bool; a key with ``used[c, j] == False`` gets the
distance +inf, so it is only returned when fewer than k used keys exist (the DKVB inference mask:
test points are routed to keys that were selected during training, card §2.1 step 6).
Returns ``dist`` (C, M, k) float32 squared Euclidean distances and ``idx`` (C, M, k) int64, ordered
by increasing distance; **ties go to the smaller key index** (so masked keys, all at +inf, come in
index order after every used key).

Distances use the expansion the official module uses, ``|q|^2 - 2 q.k + |k|^2`` (fp32; the dot
product in IEEE fp32, never TF32), clamped at 0.

Three implementations:

* :func:`kv_lookup_reference`: PyTorch; materialises a (C, chunk, N) distance block per chunk of
  queries, ``argmin`` (first minimum) for k = 1, a stable sort for k > 1.
* :func:`kv_lookup_triton`: one program per (codebook, block of queries) streams the keys in
  blocks; nothing of size M x N is materialised. Selection is k passes of a lexicographic
  arg-min over (distance, index): pass r returns the smallest pair strictly greater than the pair
  of pass r-1, which gives exactly the stable-sort order, ties included.
* :func:`kv_lookup`: the dispatcher: Triton on CUDA, the reference elsewhere (``backend=`` forces one).

Tests run the kernel on CPU under ``TRITON_INTERPRET=1`` (tests/kernels/test_kv_lookup.py);
``benchmarks/kv_lookup.py`` times it against ``torch.cdist`` + ``topk`` on a GPU.
"""

from __future__ import annotations

from functools import lru_cache

import torch

__all__ = ["kv_lookup", "kv_lookup_reference", "kv_lookup_triton", "triton_supported"]

#: Queries per chunk of the reference (bounds its (C, chunk, N) distance block).
REFERENCE_CHUNK = 1024


def _check(queries: torch.Tensor, keys: torch.Tensor, used: torch.Tensor | None, k: int) -> None:
    if queries.dim() != 3 or keys.dim() != 3 or queries.shape[0] != keys.shape[0] or queries.shape[2] != keys.shape[2]:
        raise ValueError(f"expected queries (C, M, D) and keys (C, N, D); got {tuple(queries.shape)} and {tuple(keys.shape)}")
    if used is not None and tuple(used.shape) != tuple(keys.shape[:2]):
        raise ValueError(f"used must be (C, N) = {tuple(keys.shape[:2])}, got {tuple(used.shape)}")
    if not 1 <= k <= keys.shape[1]:
        raise ValueError(f"k must be in 1..N={keys.shape[1]}, got {k}")


# -- PyTorch reference -------------------------------------------------------------------------

def squared_distances(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(C, M, N) squared distances by the expansion |q|^2 - 2 q.k + |k|^2, clamped at 0 (fp32)."""
    q, kk = queries.float(), keys.float()
    norms = (q * q).sum(-1)[:, :, None] + (kk * kk).sum(-1)[:, None, :]
    return torch.baddbmm(norms, q, kk.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)


def kv_lookup_reference(queries: torch.Tensor, keys: torch.Tensor, used: torch.Tensor | None = None,
                        k: int = 1, chunk: int = REFERENCE_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k nearest keys per codebook (ties: smaller index first); see the module docstring."""
    _check(queries, keys, used, k)
    C, M, _ = queries.shape
    out_d = torch.empty(C, M, k, dtype=torch.float32, device=queries.device)
    out_i = torch.empty(C, M, k, dtype=torch.int64, device=queries.device)
    for s in range(0, M, chunk):
        d = squared_distances(queries[:, s:s + chunk], keys)
        if used is not None:
            d.masked_fill_(~used.bool()[:, None, :], float("inf"))
        if k == 1:
            i = d.argmin(-1, keepdim=True)  # the first minimum: ties to the smaller index
            out_i[:, s:s + chunk] = i
            out_d[:, s:s + chunk] = d.gather(-1, i)
        else:
            sd, si = torch.sort(d, dim=-1, stable=True)
            out_i[:, s:s + chunk] = si[..., :k]
            out_d[:, s:s + chunk] = sd[..., :k]
    return out_d, out_i


# -- Triton kernel -----------------------------------------------------------------------------

def triton_supported(queries: torch.Tensor, keys: torch.Tensor) -> bool:
    """Whether the Triton path handles this input (float dtypes, D <= 128)."""
    return queries.dtype in (torch.float32, torch.float16, torch.bfloat16) and queries.shape[-1] <= 128


@lru_cache(maxsize=2)
def _kernel(interpret: bool):
    """The jitted kernel; ``interpret`` only keys the cache (Triton reads the env var at jit time)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _lookup(Q, K, U, OD, OI, M, N, D,
                sqc, sqm, skc, skn, suc, soc, som,
                K_TOP: tl.constexpr, HAS_MASK: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        pid_m = tl.program_id(0)
        c = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        row_ok = offs_m < M
        q = tl.load(Q + c * sqc + offs_m[:, None] * sqm + offs_d[None, :],
                    mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0).to(tl.float32)
        qq = tl.sum(q * q, 1)
        big = 2147483647
        prev_d = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
        prev_i = tl.zeros([BLOCK_M], dtype=tl.int32) - 1
        for r in range(K_TOP):
            best_d = tl.zeros([BLOCK_M], dtype=tl.float32) + float("inf")
            best_i = tl.zeros([BLOCK_M], dtype=tl.int32) + big
            for start_n in range(0, N, BLOCK_N):
                cols = start_n + tl.arange(0, BLOCK_N)
                col_ok = cols < N
                kb = tl.load(K + c * skc + cols[:, None] * skn + offs_d[None, :],
                             mask=col_ok[:, None] & (offs_d[None, :] < D), other=0.0).to(tl.float32)
                kk = tl.sum(kb * kb, 1)
                dot = tl.dot(q, tl.trans(kb), input_precision="ieee")
                d = qq[:, None] - 2.0 * dot + kk[None, :]
                d = tl.maximum(d, 0.0)
                if HAS_MASK:
                    u = tl.load(U + c * suc + cols, mask=col_ok, other=0)
                    d = tl.where(u[None, :] != 0, d, float("inf"))
                j = cols[None, :] + tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
                # candidates: (d, j) lexicographically after the previous pass's pair
                cand = (d > prev_d[:, None]) | ((d == prev_d[:, None]) & (j > prev_i[:, None]))
                cand = cand & col_ok[None, :]
                dc = tl.where(cand, d, float("inf"))
                m = tl.min(dc, 1)
                at_min = cand & (dc == m[:, None])
                jm = tl.min(tl.where(at_min, j, big), 1)
                better = (m < best_d) | ((m == best_d) & (jm < best_i))
                best_d = tl.where(better, m, best_d)
                best_i = tl.where(better, jm, best_i)
            tl.store(OD + c * soc + offs_m * som + r, best_d, mask=row_ok)
            tl.store(OI + c * soc + offs_m * som + r, best_i.to(tl.int64), mask=row_ok)
            prev_d = best_d
            prev_i = best_i

    return _lookup


def kv_lookup_triton(queries: torch.Tensor, keys: torch.Tensor, used: torch.Tensor | None = None,
                     k: int = 1, block_m: int = 64, block_n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel (CUDA, or CPU under ``TRITON_INTERPRET=1``); same contract as the reference."""
    import os

    import triton

    _check(queries, keys, used, k)
    C, M, D = queries.shape
    N = keys.shape[1]
    q = queries.contiguous()
    kk = keys.contiguous()
    block_d = max(16, triton.next_power_of_2(D))
    u = used.to(torch.int8).contiguous() if used is not None else torch.zeros(1, dtype=torch.int8, device=q.device)
    od = torch.empty(C, M, k, dtype=torch.float32, device=q.device)
    oi = torch.empty(C, M, k, dtype=torch.int64, device=q.device)
    grid = (triton.cdiv(M, block_m), C)
    kernel = _kernel(os.environ.get("TRITON_INTERPRET") == "1")
    kernel[grid](q, kk, u, od, oi, M, N, D,
                 q.stride(0), q.stride(1), kk.stride(0), kk.stride(1), u.stride(0) if used is not None else 0,
                 od.stride(0), od.stride(1),
                 K_TOP=k, HAS_MASK=used is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d)
    return od, oi


# -- dispatcher --------------------------------------------------------------------------------

def kv_lookup(queries: torch.Tensor, keys: torch.Tensor, used: torch.Tensor | None = None, k: int = 1,
              backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton on CUDA (when supported), the PyTorch reference elsewhere; ``backend`` forces
    ``"triton"`` or ``"reference"``."""
    if backend is None:
        backend = "triton" if queries.is_cuda and triton_supported(queries, keys) else "reference"
    if backend == "triton":
        return kv_lookup_triton(queries, keys, used, k)
    if backend == "reference":
        return kv_lookup_reference(queries, keys, used, k)
    raise ValueError(f"unknown backend {backend!r}: use 'triton' or 'reference'")
