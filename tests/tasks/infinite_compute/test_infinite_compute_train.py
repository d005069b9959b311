"""Training loop (schedule, batch mixing, bit-identical resume) and ensembling / soups."""

import io
import math

import numpy as np
import pytest
import torch

from tasks.infinite_compute.model import LlamaLM, ModelConfig
from tasks.infinite_compute.train import (EpochStream, TrainConfig, average_weights, ensemble_losses, eval_loss,
                                          lr_at, rows_per_batch, total_steps, train_lm)

CFG = ModelConfig(d_model=16, n_layer=1, n_head=2, max_seq_len=16)
WINDOWS = np.random.default_rng(0).integers(0, 257, (64, 17))


class Ctx:
    """Checkpoints serialised like the runner's; raises after ``cut`` checkpoints."""

    def __init__(self, store, cut=None):
        self.store, self.cut, self.n, self.curves = store, cut, 0, {}

    def log(self, step, curve="train", **kw):
        self.curves.setdefault(curve, []).append(step)

    def checkpoint(self, state):
        buf = io.BytesIO()
        torch.save(dict(state), buf)
        self.store["ckpt"] = buf.getvalue()
        self.n += 1
        if self.cut and self.n >= self.cut:
            raise KeyboardInterrupt

    def restore(self):
        return torch.load(io.BytesIO(self.store["ckpt"]), weights_only=False) if "ckpt" in self.store else None


def fresh(seed=0):
    torch.manual_seed(seed)
    return LlamaLM(CFG)


def test_cosine_schedule_warms_up_and_ends_at_zero():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.0, abs=1e-12)


def test_steps_and_batch_mixing_follow_the_card():
    # total steps = epochs * real windows / real rows per batch (released: 800 * 16 / (1 - w))
    assert rows_per_batch(16, 0.75) == (4, 12)
    assert total_steps(256, TrainConfig(epochs=16, lr=1e-3, weight_decay=0.1, batch_size=16, syn_weight=0.75)) == 1024
    assert total_steps(256, TrainConfig(epochs=8, lr=1e-3, weight_decay=0.1, batch_size=16)) == 128
    with pytest.raises(ValueError):
        rows_per_batch(4, 1.0)


def test_epoch_stream_visits_every_row_once_per_epoch():
    s = EpochStream(10, seed=3, stream=0)
    rows = s.take(0, 30)
    for e in range(3):
        assert sorted(rows[10 * e:10 * e + 10]) == list(range(10))
    assert not np.array_equal(rows[:10], rows[10:20])
    assert np.array_equal(EpochStream(10, 3, 0).take(7, 5), rows[7:12])


def test_training_is_deterministic_and_resume_is_bit_identical():
    tc = TrainConfig(epochs=4, lr=3e-3, weight_decay=0.1, batch_size=8, ckpt_every=8, log_every=8)
    a = fresh()
    train_lm(a, WINDOWS, tc, 0, "cpu", Ctx({}))
    store = {}
    with pytest.raises(KeyboardInterrupt):
        train_lm(fresh(), WINDOWS, tc, 0, "cpu", Ctx(store, cut=2))
    torch.manual_seed(123)  # another process would start from another RNG state
    resumed, ctx = fresh(), Ctx(store)
    train_lm(resumed, WINDOWS, tc, 0, "cpu", ctx)
    assert ctx.curves["train"] == [24, 32]  # really resumed after step 16
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), resumed.state_dict().values()))
    other = fresh()
    train_lm(other, WINDOWS, tc, 1, "cpu", Ctx({}))  # another seed: another data order
    assert not torch.equal(other.head.weight, a.head.weight)


def test_distillation_batches_mix_real_and_synthetic():
    syn = np.full((40, 17), 7)
    tc = TrainConfig(epochs=1, lr=1e-2, weight_decay=0.0, batch_size=8, syn_weight=0.75)
    m = fresh()
    stats = train_lm(m, WINDOWS, tc, 0, "cpu", syn_windows=syn)
    assert stats["steps"] == 32  # 64 real windows, 2 real rows per batch
    real_only = fresh()
    train_lm(real_only, WINDOWS, TrainConfig(epochs=1, lr=1e-2, weight_decay=0.0, batch_size=8), 0, "cpu")
    const = torch.full((1, 16), 7)
    with torch.no_grad():
        p_mixed = float(torch.softmax(m(const)[0, -1], -1)[7])
        p_real = float(torch.softmax(real_only(const)[0, -1], -1)[7])
    assert p_mixed > 0.2 and p_real < 0.05  # the synthetic rows were learned, and only from them
    with pytest.raises(ValueError, match="syn_windows"):
        train_lm(fresh(), WINDOWS, tc, 0, "cpu")


def test_logit_average_ensemble():
    tc = TrainConfig(epochs=2, lr=1e-2, weight_decay=0.1, batch_size=8)
    members = []
    for seed in (0, 1, 2):
        m = fresh(seed)
        train_lm(m, WINDOWS, tc, seed, "cpu")
        members.append(m)
    val = np.random.default_rng(9).integers(0, 257, (16, 17))
    singles = [eval_loss(m, val, "cpu") for m in members]
    losses = ensemble_losses(members, val, "cpu", batch=5)
    assert losses[0] == pytest.approx(singles[0], rel=1e-6)
    # log-sum-exp is convex: the NLL of averaged logits is at most the members' mean NLL
    for k in range(1, 4):
        assert losses[k - 1] <= np.mean(singles[:k]) + 1e-6
    # averaging a model with itself changes nothing
    assert ensemble_losses([members[0], members[0]], val, "cpu")[1] == pytest.approx(singles[0], rel=1e-6)
    with torch.no_grad():
        by_hand = sum(m(torch.from_numpy(val[:, :-1])) for m in members[:2]) / 2
    nll = torch.nn.functional.cross_entropy(by_hand.reshape(-1, 257), torch.from_numpy(val[:, 1:]).reshape(-1))
    assert losses[1] == pytest.approx(float(nll), rel=1e-5)


def test_soup_of_identical_models_is_the_model():
    m = fresh()
    soup = average_weights([m, m])
    val = WINDOWS[:8]
    assert eval_loss(soup, val, "cpu") == pytest.approx(eval_loss(m, val, "cpu"), rel=1e-6)
    soup2 = average_weights([fresh(0), fresh(1)])
    assert torch.allclose(soup2.head.weight, (fresh(0).head.weight + fresh(1).head.weight) / 2)
    assert math.isfinite(eval_loss(soup2, val, "cpu"))
