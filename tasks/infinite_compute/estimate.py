"""What a run costs before it runs (``Task.estimate``; ``harness plan --scale paper --estimate``).

FLOPs by the PaLM convention (the one MFU is quoted in): training 6 N + 12 L d T per token, a
forward pass 2 N + 4 L d T, with N the parameters inside matrix multiplies (every block and the
output head; the input embedding is a lookup). A search probe's epochs are not known before its
chain runs, so each probe is counted at the paper's certified optimum of its size and recipe
(card §3.2; the probes sit at E/2, E and 2E around it) and every planned chain step is counted,
although a chain that certifies early makes its later steps no-ops: an upper bound. Members train
2E of the regularized optimum; students the released 16 real epochs at synthetic weight 0.9.

Memory: fp32 weights, gradients and AdamW moments (16 bytes per parameter), activations of one
micro-batch under bf16 autocast without recomputation (about 40 d + 8 d_ff bytes per token and
layer, counted from the tensors the backward keeps: fp32 norms, bf16 q/k/v/rope/SDPA output,
SwiGLU's gate/up/product), and one ``ce_chunk`` slice of fp32 logits with its softmax.
"""

from __future__ import annotations

from typing import Any, Mapping

from harness.api import RunEstimate
from harness.estimate import adamw_training_bytes, checkpoint_bytes

from .model import ModelConfig

#: Certified optima at D = 200M (card §3.2): epochs of the standard (wd 0.1) and regularized recipes.
PAPER_EPOCHS = {"standard": {"150m": 8, "300m": 8, "600m": 4, "1_4b": 4},
                "regularized": {"150m": 16, "300m": 16, "600m": 8, "1_4b": 8}}
#: Decoding one token per step at batch 64 with a Python loop is launch- and memory-bound.
SAMPLING_MFU = 0.02


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters inside matrix multiplies: attention, SwiGLU, and the (untied) output head."""
    hd = cfg.d_model // cfg.n_head
    attn = cfg.d_model * hd * (2 * cfg.n_head + 2 * cfg.kv_heads)
    mlp = 3 * cfg.d_model * cfg.ff_dim
    return cfg.n_layer * (attn + mlp) + cfg.vocab_size * cfg.d_model


def total_params(cfg: ModelConfig) -> int:
    """Every parameter, embeddings and norms included (LlamaLM.num_params)."""
    return matmul_params(cfg) + cfg.vocab_size * cfg.d_model + (2 * cfg.n_layer + 1) * cfg.d_model


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    return 6.0 * matmul_params(cfg) + 12.0 * cfg.n_layer * cfg.d_model * seq_len


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    return 2.0 * matmul_params(cfg) + 4.0 * cfg.n_layer * cfg.d_model * seq_len


def activation_bytes_per_token(cfg: ModelConfig) -> float:
    return cfg.n_layer * (40.0 * cfg.d_model + 8.0 * cfg.ff_dim)


def logits_slice_bytes(cfg: ModelConfig, chunk_tokens: int) -> float:
    """fp32 logits + their softmax + a bf16 copy of one slice of the head's output."""
    return chunk_tokens * cfg.vocab_size * (4 + 4 + 2)


def training_peak_bytes(cfg: ModelConfig, seq_len: int, rows: int, ce_chunk: int) -> float:
    tokens = rows * seq_len
    head = logits_slice_bytes(cfg, ce_chunk) if ce_chunk else tokens * cfg.vocab_size * (2 + 4 + 4)
    return adamw_training_bytes(total_params(cfg)) + tokens * activation_bytes_per_token(cfg) + head


def _size_config(config: Mapping[str, Any], size: str) -> tuple[ModelConfig, int]:
    from .run import model_config

    spec = config["sizes"][size]
    return model_config(config, size), int(spec.get("micro_batch") or config.get("micro_batch") or config["batch_size"])


def estimate_run(method, benchmark, config: Mapping[str, Any]) -> RunEstimate:
    T = int(config["seq_len"])
    D = int(config["train_tokens"])
    val = int(config["val_tokens"])
    chunk = int(config.get("ce_chunk", 0))
    name, point = method.name, method.grid_point
    size = point.get("size") or config["member_size"]
    cfg, micro = _size_config(config, size)
    n_total = total_params(cfg)
    data = 2 * D * 4 + val * 4 if benchmark.dataset == "dclm" else (D + val) * 2  # int32 windows of the built stream
    eval_tokens = D + val  # every trained model is evaluated on its training tokens and the validation set
    fwd, trn = forward_flops_per_token(cfg, T), train_flops_per_token(cfg, T)
    k = int(config["n_members"])

    def trained(tokens: float, note: str, extra_ckpt: float = 0.0) -> RunEstimate:
        return RunEstimate(flops=tokens * trn + eval_tokens * fwd,
                           peak_memory_bytes=training_peak_bytes(cfg, T, micro, chunk),
                           data_bytes=data, checkpoint_bytes=checkpoint_bytes(n_total) + extra_ckpt,
                           note=f"{size} ({n_total / 1e6:.0f}M params), {tokens / 1e9:.2f}B training tokens; {note}")

    recipe = "standard" if name.startswith("standard") else "regularized"
    if name in ("standard_search", "regularized_search"):
        e = PAPER_EPOCHS[recipe][size]
        return trained(e * D, f"a probe counted at the paper's optimum, {e} epochs (upper bound: every chain step)")
    if name in ("standard", "regularized"):  # reads its chain's records
        return RunEstimate(0.0, 0.0, data, 0.0, note="summary of the search chain (no training)")
    if name in ("ensemble_member", "single_opt_member"):
        e = PAPER_EPOCHS["regularized"][size] * (2 if name == "ensemble_member" else 1)
        return trained(e * D, f"member at {e} epochs", extra_ckpt=4.0 * n_total)
    if name in ("ensemble", "ensemble_single_opt", "soup"):
        models = 2 if name == "soup" else k
        passes = 4 if name == "soup" else models  # soup: the soup, a 2-ensemble, member 2 (member 1 shared)
        peak = models * n_total * 4 + eval_rows_bytes(cfg, config, T)
        return RunEstimate(passes * val * fwd, peak, data, 0.0,
                           note=f"{models} x {size}: forward passes over the {val / 1e6:.1f}M validation tokens")
    d = config["distill"]
    if name == "teacher_samples":
        sampled = float(d["sample_factor"]) * D
        avg_ctx = T / 2  # a KV cache: position t attends to t earlier positions
        flops = sampled * (2.0 * matmul_params(cfg) + 4.0 * cfg.n_layer * cfg.d_model * avg_ctx)
        models = k if point.get("source") == "ensemble" else 1
        batch = int(d["sample_batch"])
        kv = 2 * batch * T * cfg.n_layer * cfg.d_model // cfg.n_head * cfg.kv_heads * 2
        peak = models * n_total * 4 + kv + batch * cfg.vocab_size * 4 * 2
        return RunEstimate(flops, peak, data, sampled * 4.0, mfu=SAMPLING_MFU,
                           note=f"{sampled / 1e9:.1f}B sampled tokens, one token per step at batch {batch} "
                                f"(decoding is launch/memory bound: MFU {SAMPLING_MFU})")
    if name in ("distill", "self_distill", "synthetic_only"):
        w = float(d["syn_weight"])
        real_rows = int(config["batch_size"]) - int(round(w * int(config["batch_size"])))
        steps = float(d["real_epochs"]) * (D // T) / real_rows
        tokens = steps * int(config["batch_size"]) * T
        return trained(tokens, f"student: {steps:,.0f} steps at synthetic weight {w}")
    raise KeyError(f"no estimate for method {name!r}")


def eval_rows_bytes(cfg: ModelConfig, config: Mapping[str, Any], T: int) -> float:
    """Evaluation holds one ``eval_batch`` of hidden states and one logits slice per model."""
    rows = int(config.get("eval_batch", 64))
    chunk = int(config.get("ce_chunk", 0)) or rows * T
    return rows * T * cfg.d_model * 4 * 2 + logits_slice_bytes(cfg, chunk) * 2
