"""Paper scale before a GPU: the chunked loss and micro-batching are exact, every paper size takes
a real training step (150M and 300M on CPU at their real widths; 600M and 1.4B on the meta
device: shapes, parameter counts against the card, the memory estimate), and the estimate's
counts are the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.plugins import get_task
from tasks.infinite_compute.estimate import (PAPER_EPOCHS, estimate_run, matmul_params, total_params,
                                             training_peak_bytes)
from tasks.infinite_compute.model import LlamaLM, ModelConfig
from tasks.infinite_compute.run import model_config, separator_id, sample_dtype, train_config
from tasks.infinite_compute.train import (TrainConfig, chunked_cross_entropy, ensemble_losses, eval_loss, lm_loss,
                                          train_lm, train_step)

TASK = get_task("infinite_compute")
PAPER = TASK.config.scale("paper")
#: Card §2: approximate total parameters (embeddings and head included).
CARD_PARAMS = {"150m": 154e6, "300m": 300e6, "600m": 600e6, "1_4b": 1.4e9}


def paper_hp():
    return dict(PAPER.defaults)


def tiny_model(seed=0, vocab=301):
    torch.manual_seed(seed)
    return LlamaLM(ModelConfig(vocab_size=vocab, d_model=16, n_layer=2, n_head=2, max_seq_len=16))


def test_chunked_cross_entropy_equals_the_full_logits_loss_and_gradients():
    torch.manual_seed(0)
    h = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 50, (37,))
    full = F.cross_entropy(h @ w.t(), y)
    gh, gw = torch.autograd.grad(full * 3.0, (h, w))
    for chunk in (1, 5, 37, 100):
        loss = chunked_cross_entropy(h, w, y, chunk)
        assert float(loss.detach()) == pytest.approx(float(full), rel=1e-12)
        ch, cw = torch.autograd.grad(loss * 3.0, (h, w))
        assert torch.allclose(ch, gh, atol=1e-12) and torch.allclose(cw, gw, atol=1e-12)


def test_micro_batches_and_chunked_head_take_the_same_step_as_one_pass():
    x = torch.randint(0, 301, (8, 17), generator=torch.Generator().manual_seed(1))
    out = {}
    for micro, chunk in ((0, 0), (2, 0), (4, 24), (1, 7)):
        m = tiny_model().double()
        opt = torch.optim.AdamW(m.param_groups(0.1), lr=1e-2)
        loss = train_step(m, opt, x[:, :-1], x[:, 1:], 1e-2, 1.0, "cpu", micro, chunk, m.head.weight)
        out[(micro, chunk)] = (float(loss), torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    ref_loss, ref_params = out[(0, 0)]
    for key, (loss, grads) in out.items():  # the plain path's loss is fp32 (lm_loss), the rest fp64
        assert loss == pytest.approx(ref_loss, rel=1e-6), key
        assert torch.allclose(grads, ref_params, atol=1e-6), key  # the (clipped) gradient of the step
    with pytest.raises(ValueError, match="divide"):
        TrainConfig(epochs=1, lr=1e-3, weight_decay=0.0, batch_size=6, micro_batch=4)


def test_sliced_evaluation_equals_full_logits():
    models = [tiny_model(s) for s in (0, 1, 2)]
    windows = np.random.default_rng(0).integers(0, 301, (5, 17))
    full = eval_loss(models[0], windows, "cpu", batch=64)
    assert eval_loss(models[0], windows, "cpu", batch=2, chunk=7) == pytest.approx(full, rel=1e-6)
    assert ensemble_losses(models, windows, "cpu", batch=2, chunk=5) == pytest.approx(
        ensemble_losses(models, windows, "cpu"), rel=1e-6)


def test_paper_defaults_slice_the_head_and_samples_fit_the_vocabulary():
    hp = paper_hp()
    assert hp["vocab_size"] == 128_257 and hp["ce_chunk"] and hp["eval_batch"] * hp["seq_len"] <= 64 * 4096
    assert separator_id(hp) == 128_256 and sample_dtype(hp["vocab_size"]) == np.int32
    assert sample_dtype(257) == np.int16  # small scale: the artifacts it always wrote
    benches = {b.name: b for b in TASK.config.benchmarks("paper")}
    d400 = TASK.config.for_benchmark("paper", TASK.config.resolve("paper", "standard[size=150m]"), benches["dclm-400m"])
    assert d400.hyperparameters["train_tokens"] == 2 * hp["train_tokens"]
    assert set(TASK.config.method_benchmarks("paper", "standard_search")) == {"dclm-200m", "dclm-400m"}
    assert TASK.config.method_benchmarks("paper", "distill") == ["dclm-200m"]


@pytest.mark.parametrize("size", ["150m", pytest.param("300m", marks=pytest.mark.slow)])
def test_paper_size_takes_a_real_training_step_on_cpu(size):
    """The real width, depth and 128,257-way head, micro-batching and the sliced loss, on a short window:
    one AdamW step through train_lm changes the weights and gives a finite loss near ln V.
    (~10 s for 150M on an idle core, dominated by AdamW over 154M parameters; 300M is marked slow.)"""
    hp = paper_hp()
    hp["seq_len"] = 32  # the window is the only thing shrunk (memory/time on 2 cores)
    cfg = model_config(hp, size)
    assert (cfg.d_model, cfg.n_layer) == (hp["sizes"][size]["d_model"], hp["sizes"][size]["n_layer"])
    torch.manual_seed(0)
    model = LlamaLM(cfg)
    assert abs(model.num_params() - CARD_PARAMS[size]) / CARD_PARAMS[size] < 0.03
    assert model.num_params() == total_params(cfg)
    tc = train_config(hp, 1.0, 3e-3, 0.1)
    tc = TrainConfig(**{**tc.__dict__, "batch_size": 4, "micro_batch": 2, "compile": False})
    windows = np.random.default_rng(0).integers(0, cfg.vocab_size, (4, 33))
    before = model.head.weight[:3, :3].clone()
    stats = train_lm(model, windows, tc, seed=0, device="cpu")
    assert stats["steps"] == 1 and np.isfinite(stats["final_train_loss"])
    assert abs(stats["final_train_loss"] - np.log(cfg.vocab_size)) < 1.0
    assert not torch.equal(before, model.head.weight[:3, :3])


@pytest.mark.parametrize("size", ["600m", "1_4b"])
def test_billion_scale_sizes_on_the_meta_device(size):
    hp = paper_hp()
    cfg = model_config(hp, size)
    with torch.device("meta"):
        model = LlamaLM(cfg)
        h = model(torch.zeros(2, 16, dtype=torch.long), hidden=True)
        logits = model.head(h)
    assert h.shape == (2, 16, cfg.d_model) and logits.shape == (2, 16, 128_257)
    assert abs(model.num_params() - CARD_PARAMS[size]) / CARD_PARAMS[size] < 0.12
    assert model.num_params() == total_params(cfg)
    blk = model.blocks[0].attn
    assert blk.wk.weight.shape == (cfg.kv_heads * cfg.d_model // cfg.n_head, cfg.d_model)  # grouped-query
    micro = hp["sizes"][size]["micro_batch"]
    assert hp["batch_size"] % micro == 0
    peak = training_peak_bytes(cfg, hp["seq_len"], micro, hp["ce_chunk"])
    assert 16 * model.num_params() < peak < 80e9  # states plus activations, within one 80 GB H100
    # without slicing, the head alone of the full batch would not fit any GPU
    assert training_peak_bytes(cfg, hp["seq_len"], hp["batch_size"], 0) > 141e9


def test_estimate_counts_are_the_models():
    hp = paper_hp()
    cfg = model_config(hp, "300m")
    with torch.device("meta"):
        m = LlamaLM(cfg)
    inside = sum(p.numel() for n, p in m.named_parameters() if p.dim() == 2 and not n.startswith("embed"))
    assert matmul_params(cfg) == inside
    bench = TASK.config.benchmark("paper", "dclm-200m")
    probe = TASK.config.resolve("paper", "regularized_search[size=300m,step=3]")
    est = estimate_run(probe, bench, dict(probe.hyperparameters))
    tokens = PAPER_EPOCHS["regularized"]["300m"] * hp["train_tokens"]
    per_token = 6 * inside + 12 * cfg.n_layer * cfg.d_model * hp["seq_len"]
    assert est.flops == pytest.approx(tokens * per_token, rel=0.03)  # + the final evaluation passes
    assert est.checkpoint_bytes == pytest.approx(12 * m.num_params())
    sampler = TASK.config.resolve("paper", "teacher_samples[source=ensemble]")
    s = estimate_run(sampler, bench, dict(sampler.hyperparameters))
    assert s.mfu is not None and s.checkpoint_bytes == pytest.approx(50 * hp["train_tokens"] * 4)


def test_lm_loss_is_unchanged_for_the_plain_path():
    logits = torch.randn(2, 3, 11)
    y = torch.randint(0, 11, (2, 3))
    assert torch.equal(lm_loss(logits, y), F.cross_entropy(logits.reshape(-1, 11), y.reshape(-1)))
