"""What a run costs before it runs (``Task.estimate``; ``harness plan --scale paper --estimate``).

FLOPs: a forward pass per token is the model's own counts (``attention_flops_per_token`` +
``ffn_flops_per_token``) plus the tied output head (2 V d); training is 3x the forward. Every
``eval_every`` steps a run scores ``curve_sequences`` and reads the entropy of
``entropy_sequences`` windows, and it ends with validation and test passes over
``eval_sequences`` windows each. Memory: fp32 weights, gradients and AdamW moments (16 bytes per
parameter), the activations of one micro-batch (about 40 d + 8 d_ff bytes per token and layer
under bf16 autocast, plus the per-head attention row of the entropy reference), and its logits
(bf16, the fp32 copy, the softmax kept for the backward and its gradient).
"""

from __future__ import annotations

from typing import Any, Mapping

from harness.api import RunEstimate
from harness.estimate import adamw_training_bytes, checkpoint_bytes

from . import configs
from .model import GPTConfig, attention_flops_per_token, ffn_flops_per_token

#: A 124M GPT at T = 128 in eager PyTorch (small matmuls, a Triton attention kernel, no torch.compile).
MFU = 0.3
#: Bytes of text per GPT-2 BPE token of Python code (measured on the standard library: ~3.4).
BYTES_PER_TOKEN = 3.4
#: codeparrot-ds train in GPT-2 BPE tokens (one epoch = 32,000 steps x 512 x 128, task.yaml).
CORPUS_TOKENS = 2.1e9


def n_params(cfg: GPTConfig) -> int:
    d, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    ffn = d * d + d if cfg.ffn == "fused" else 2 * cfg.ffn_mult * d * d + cfg.ffn_mult * d + d
    per_layer = 4 * d * d + 4 * d + ffn + (4 * d if cfg.layernorm else 0)
    return V * d + cfg.block_size * d + L * per_layer


def forward_flops_per_token(cfg: GPTConfig, T: int) -> float:
    return float(attention_flops_per_token(cfg, T) + ffn_flops_per_token(cfg) + 2 * cfg.vocab_size * cfg.n_embd)


def estimate_run(method, benchmark, config: Mapping[str, Any]) -> RunEstimate:
    from .train import model_config

    hp = configs.resolve(method.name, {**dict(config), **dict(benchmark.settings)})
    tokenizer = str(hp.get("tokenizer", "bytes"))
    vocab = 257 if tokenizer == "bytes" else int(hp["vocab_size"])
    cfg = model_config(hp, vocab)
    T, steps, batch = int(hp["context"]), int(hp["steps"]), int(hp["batch_size"])
    micro = int(hp.get("micro_batch") or 0) or batch
    fwd = forward_flops_per_token(cfg, T)
    train_tokens = steps * batch * T
    evals = steps // int(hp["eval_every"]) + 1
    eval_tokens = (evals * (int(hp["entropy_sequences"]) + int(hp["curve_sequences"]))
                   + 2 * int(hp["eval_sequences"])) * T
    flops = 3 * fwd * train_tokens + fwd * eval_tokens
    d, f = cfg.n_embd, (cfg.n_embd if cfg.ffn == "fused" else cfg.ffn_mult * cfg.n_embd)
    act = micro * T * cfg.n_layer * (40 * d + 8 * f + 8 * cfg.n_head * T)
    logits = micro * T * vocab * (2 + 4 + 4 + 4)
    params = n_params(cfg)
    corpus_tokens = CORPUS_TOKENS if hp.get("max_train_tokens") is None else int(hp["max_train_tokens"])
    data = corpus_tokens * (BYTES_PER_TOKEN + (4 if tokenizer != "bytes" else 0))  # text + the cached BPE stream
    return RunEstimate(flops=flops, peak_memory_bytes=adamw_training_bytes(params) + act + logits,
                       data_bytes=data, checkpoint_bytes=checkpoint_bytes(params), mfu=MFU,
                       note=f"{params / 1e6:.0f}M params ({cfg.n_layer}x{d}, V={vocab}), {steps} steps x {batch} x "
                            f"{T} tokens = {train_tokens / 1e9:.2f}B, micro-batch {micro}")
