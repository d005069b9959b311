"""The bottleneck's core equations against hand-computed values on tiny inputs (card §2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tasks.dkvb.bottleneck import KeyValueBottleneck, Splitter, fetch_values, laplace_smoothing, vote_logits
from tasks.dkvb.train import SGD, Adam


def test_laplace_smoothing_by_hand():
    s = torch.tensor([[3.0, 1.0, 0.0]])
    eps = 0.5  # large so the smoothing shows: (s + .5) / (4 + 1.5) * 4
    torch.testing.assert_close(laplace_smoothing(s, eps), torch.tensor([[3.5, 1.5, 0.5]]) / 5.5 * 4)
    out = laplace_smoothing(s, 1e-5)  # the official eps barely moves used clusters, keeps empty ones > 0
    assert out[0, 2] > 0 and math.isclose(float(out.sum()), 4.0, rel_tol=1e-6)


def test_ema_update_by_hand():
    kv = KeyValueBottleneck(1, 2, 1, 3, decay=0.5, eps=0.0)
    kv.keys = torch.tensor([[[0.0], [10.0]]])
    kv.keys_avg = kv.keys.clone()
    heads = torch.tensor([[[1.0], [2.0], [9.0]]])  # (C=1, B=3, d=1): 1, 2 -> key 0; 9 -> key 1
    before = kv.ema_update(heads)
    assert before[0].tolist() == [0, 0, 1]
    # s = 0.5*0 + 0.5*[2, 1] = [1, 0.5]; S = 0.5*[0, 10] + 0.5*[3, 9] = [1.5, 9.5]; keys = S / s (eps 0)
    torch.testing.assert_close(kv.cluster_size, torch.tensor([[1.0, 0.5]]))
    torch.testing.assert_close(kv.keys_avg, torch.tensor([[[1.5], [9.5]]]))
    torch.testing.assert_close(kv.keys, torch.tensor([[[1.5], [19.0]]]))


def test_dead_keys_restart_from_the_batch():
    kv = KeyValueBottleneck(1, 3, 2, 2, decay=0.9, threshold_dead=0.05, generator=torch.Generator().manual_seed(0))
    kv.keys = torch.tensor([[[0.0, 0.0], [100.0, 100.0], [-100.0, -100.0]]])
    kv.keys_avg = kv.keys.clone()
    heads = torch.tensor([[[0.1, 0.0], [0.0, 0.1], [-0.1, 0.0], [0.0, -0.1]]])
    kv.ema_update(heads, torch.Generator().manual_seed(1))
    # keys 1 and 2 got nothing (EMA size 0 < 0.05): each is now one of the batch's vectors
    for j in (1, 2):
        assert any(torch.equal(kv.keys[0, j], h) for h in heads[0])
    assert kv.cluster_size[0, 0] > 0.05


def test_random_projection_columns_unit_norm_and_chunk_mode():
    sp = Splitter("random_projection", 6, 4, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(sp.proj.norm(dim=1), torch.ones(4, 3))
    z = torch.randn(5, 6)
    torch.testing.assert_close(sp(z)[2], z @ sp.proj[2])
    ch = Splitter("chunk", 6, 2, 3)
    torch.testing.assert_close(ch(z)[1], z[:, 3:6])
    with pytest.raises(ValueError):
        Splitter("chunk", 6, 4, 2)


def test_voting_decoder_sums_topk_and_averages_codebooks():
    values = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # (C=2, N=3, v=2)
    idx = torch.tensor([[[0, 2], [1, 1]]])  # one input: codebook 0 -> keys 0, 2; codebook 1 -> key 1 twice
    # codebook 0: v00 + v02 = [0,1] + [4,5] = [4, 6]; codebook 1: 2 * v11 = 2 * [8, 9] = [16, 18]; mean
    torch.testing.assert_close(vote_logits(values, idx), torch.tensor([[10.0, 12.0]]))
    torch.testing.assert_close(fetch_values(values, idx), torch.tensor([[[4.0, 6.0], [16.0, 18.0]]]))


def test_a_step_touches_only_the_values_of_the_selected_keys():
    values = torch.nn.Parameter(torch.zeros(3, 5, 4))
    idx = torch.tensor([[[1], [0], [4]], [[1], [2], [4]]])  # (B=2, C=3, k=1)
    loss = F.cross_entropy(vote_logits(values, idx), torch.tensor([0, 3]))
    loss.backward()
    touched = values.grad.abs().sum(-1) > 0
    expected = torch.zeros(3, 5, dtype=torch.bool)
    expected[0, 1] = expected[1, 0] = expected[1, 2] = expected[2, 4] = True
    assert torch.equal(touched, expected)


def test_usage_counts_and_masked_routing():
    kv = KeyValueBottleneck(2, 4, 2, 3, generator=torch.Generator().manual_seed(0))
    kv.count(torch.tensor([[[1], [3]], [[1], [0]]]))
    assert kv.counts.tolist() == [[0, 2, 0, 0], [1, 0, 0, 1]]
    assert kv.fraction_unused() == 5 / 8
    heads = torch.randn(2, 50, 2, generator=torch.Generator().manual_seed(1))
    idx = kv.route(heads, masked=True)
    assert (kv.counts[torch.arange(2)[None, :, None], idx] > 0).all()


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizers_equal_torch_optim(kind):
    torch.manual_seed(0)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = SGD(a.parameters(), 0.1) if kind == "sgd" else Adam(a.parameters(), 0.01)
    ref = torch.optim.SGD(b.parameters(), lr=0.1) if kind == "sgd" else torch.optim.Adam(b.parameters(), lr=0.01)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(5):
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
