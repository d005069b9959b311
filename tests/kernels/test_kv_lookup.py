"""kernels/kv_lookup.py: the Triton kernel against the PyTorch reference on CPU under the Triton
interpreter (indices and distances, ties broken the same way), and the reference against
hand-computed values.

The kernel is jitted on first use per value of TRITON_INTERPRET, so setting it here works even when
another module imported kernels.kv_lookup first.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before the kernel is built

import pytest
import torch

from kernels.kv_lookup import kv_lookup, kv_lookup_reference, kv_lookup_triton

torch.set_num_threads(1)


def _inputs(C, M, N, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(C, M, D, generator=g), torch.randn(C, N, D, generator=g), torch.rand(C, N, generator=g) > 0.4


def test_reference_against_hand_computed_values():
    # one codebook, keys on a line: 0, 1, 3 (1-D); query 1.9 -> nearest 1 (d=0.81), then 3 (1.21), then 0 (3.61)
    keys = torch.tensor([[[0.0], [1.0], [3.0]]])
    q = torch.tensor([[[1.9]]])
    d, i = kv_lookup_reference(q, keys, k=3)
    assert i.tolist() == [[[1, 2, 0]]]
    torch.testing.assert_close(d, torch.tensor([[[0.81, 1.21, 3.61]]]))
    # masking key 1 (unused in training) routes the query to key 2; the masked key comes last at +inf
    d, i = kv_lookup_reference(q, keys, torch.tensor([[True, False, True]]), k=3)
    assert i.tolist() == [[[2, 0, 1]]] and torch.isinf(d[0, 0, 2])


def test_reference_ties_go_to_the_smaller_index():
    keys = torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # keys 0 and 3 coincide
    q = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])  # query 0: equidistant to keys 0, 1, 2 (and 3)
    _, i1 = kv_lookup_reference(q, keys, k=1)
    assert i1[0, :, 0].tolist() == [0, 0]
    _, i4 = kv_lookup_reference(q, keys, k=4)
    assert i4[0, 0].tolist() == [0, 1, 2, 3] and i4[0, 1].tolist() == [0, 3, 2, 1]


@pytest.mark.parametrize("C,M,N,D,k,masked,bm,bn", [
    (3, 37, 50, 14, 1, False, 16, 16),    # M, N not multiples of the blocks; D padded to 16
    (2, 40, 64, 8, 1, True, 16, 32),
    (2, 33, 70, 14, 3, True, 16, 16),     # top-k with the mask
    (1, 20, 16, 2, 4, False, 16, 16),     # the toy's 2-D keys, one key block
    (4, 17, 40, 32, 2, True, 32, 16),
])
def test_triton_matches_reference(C, M, N, D, k, masked, bm, bn):
    q, keys, used = _inputs(C, M, N, D, seed=C * 100 + N)
    used = used if masked else None
    d_t, i_t = kv_lookup_triton(q, keys, used, k, block_m=bm, block_n=bn)
    d_r, i_r = kv_lookup_reference(q, keys, used, k)
    assert torch.equal(i_t, i_r)
    torch.testing.assert_close(d_t, d_r, atol=1e-4, rtol=1e-5)
    assert i_t.dtype == torch.int64 and d_t.shape == (C, M, k)


def test_triton_ties_and_masked_tail_equal_the_reference_exactly():
    # integer coordinates: every distance is exact in fp32, so ties are real ties in both paths
    g = torch.Generator().manual_seed(3)
    q = torch.randint(-2, 3, (2, 30, 3), generator=g).float()
    keys = torch.randint(-2, 3, (2, 40, 3), generator=g).float()
    used = torch.rand(2, 40, generator=g) > 0.85  # few used keys: the top-5 runs into masked ones
    for k in (1, 5):
        d_t, i_t = kv_lookup_triton(q, keys, used, k, block_m=16, block_n=16)
        d_r, i_r = kv_lookup_reference(q, keys, used, k)
        assert torch.equal(i_t, i_r) and torch.equal(d_t, d_r)
    assert torch.isinf(d_r).any()  # the masked tail was reached, in index order in both


def test_masked_routing_never_returns_an_unused_key():
    q, keys, used = _inputs(3, 50, 30, 8, seed=9)
    _, i = kv_lookup_triton(q, keys, used, 1, block_m=16, block_n=16)
    assert used.gather(1, i[..., 0]).all()


def test_dispatcher_picks_the_reference_on_cpu():
    q, keys, used = _inputs(2, 10, 12, 4)
    d, i = kv_lookup(q, keys, used, 2)
    d_r, i_r = kv_lookup_reference(q, keys, used, 2)
    assert torch.equal(i, i_r) and torch.equal(d, d_r)
    with pytest.raises(ValueError):
        kv_lookup(q, keys, used, 2, backend="nope")
    with pytest.raises(ValueError):
        kv_lookup(q, keys[:, :, :3], used, 1)
