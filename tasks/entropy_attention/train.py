"""Training, the entropy regulariser (Algorithm 1) and the entropy diagnostics of one run.

One run: build the configuration's GPT, train it with AdamW (warmup, linear decay, clip 1.0) on
random T+1-byte windows of the training split, log the layer-wise attention entropy every
``eval_every`` steps, and finish with validation/test loss and the per-head entropy matrix.

A non-finite training loss stops the run: the model is broken (its weights are NaN after the
update), so the run is ``diverged``. That is a result: its losses are NaN, the step is recorded,
and the entropy diagnostics come from the last finite evaluation before the divergence (the
card's "deep-layer entropy -> 0 before divergence").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from kernels.attention_entropy import causal_max_entropy

from .model import GPT, GPTConfig, attention_flops_per_token, ffn_flops_per_token

#: Entropy bins of Fig. 2a, as fractions of the maximum observed head entropy M.
BIN_EDGES = (0.25, 0.5, 0.75)
#: A head counts as "uniform causal attention" within this fraction of (1/T) sum ln i.
NEAR_UNIFORM = 0.95


@dataclass
class Corpus:
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor


# -- the entropy regulariser -----------------------------------------------------------------

def entropy_penalty(row_entropies: list[torch.Tensor], thresholds: torch.Tensor, T: int, tolerance: float,
                    granularity: str = "row") -> torch.Tensor:
    """L_ent of Algorithm 1 (before lambda): a dead-zone squared penalty around theta * ln T.

    ``row_entropies``: one (B, H, T) tensor per layer; ``thresholds``: (L, H), one learnable theta
    per layer and head (the paper; the released HF example shares layer 0's across layers).
    ``granularity``:
      ``row``  as the released code: every (batch, query) row entropy is penalised and the
               penalties are *summed* over batch and positions (lambda then scales with B T);
      ``head`` as Algorithm 1: the query- and batch-averaged head entropy is penalised.
    Both average over heads, then over layers. E_max = ln T, tolerance band = gamma * E_max.
    """
    e_max = math.log(T)
    tol = tolerance * e_max
    total = 0.0
    for layer, ent in enumerate(row_entropies):
        target = thresholds[layer] * e_max  # (H,)
        if granularity == "row":
            dev = ent - target[None, :, None]
        elif granularity == "head":
            dev = ent.mean(dim=(0, 2)) - target
        else:
            raise ValueError(f"ereg_granularity must be row or head, not {granularity!r}")
        pen = torch.where(dev.abs() > tol, dev, torch.zeros_like(dev)).square()
        n_heads = ent.shape[1]
        total = total + (pen.sum() / n_heads if granularity == "row" else pen.mean())
    return total / len(row_entropies)


# -- entropy diagnostics -----------------------------------------------------------------------

@torch.no_grad()
def entropy_matrix(model: GPT, batch: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """(L, H) attention entropy per head, averaged over query rows and the sequences of ``batch``."""
    was_training = model.training
    model.eval()
    sums = None
    for i in range(0, len(batch), chunk):
        x = batch[i:i + chunk, :-1]
        model(x, entropy=True)
        per = torch.stack([e.sum(dim=(0, 2)) for e in model.row_entropies()])  # (L, H)
        sums = per if sums is None else sums + per
    model.train(was_training)
    return (sums / (len(batch) * (batch.shape[1] - 1))).double().cpu().numpy()


def entropy_summary(ent: np.ndarray, T: int) -> dict[str, float]:
    """Scalar diagnostics of an (L, H) entropy matrix (card §3)."""
    L = ent.shape[0]
    deep = max(1, L // 2)
    finite = ent[np.isfinite(ent)]
    M = float(finite.max()) if finite.size else math.nan
    out = {
        "entropy_mean": float(ent.mean()),
        "entropy_early": float(ent[: L - deep].mean()) if L > deep else float(ent.mean()),
        "entropy_deep": float(ent[L - deep:].mean()),
        "entropy_deep_min": float(ent[L - deep:].min()),
        "entropy_max_observed": M,
        "nan_heads": float((~np.isfinite(ent)).sum()),
    }
    for layer in range(L):
        out[f"entropy_l{layer}"] = float(ent[layer].mean())
    edges = [0.0, *(b * M for b in BIN_EDGES)]
    flat = ent.ravel()
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else math.inf
        out[f"frac_bin{i}"] = float(((flat >= lo) & (flat < hi)).mean()) if math.isfinite(M) else math.nan
    out["frac_near_uniform"] = float((flat >= NEAR_UNIFORM * causal_max_entropy(T)).mean())
    return out


# -- data ----------------------------------------------------------------------------------------

def windows(tokens: torch.Tensor, n: int, T: int) -> torch.Tensor:
    """The first ``n`` non-overlapping (T+1)-token windows (fixed evaluation batches)."""
    n = min(n, (len(tokens) - 1) // T)
    if n < 1:
        raise ValueError(f"evaluation split has {len(tokens)} tokens, fewer than one window of {T + 1}")
    return torch.stack([tokens[i * T: i * T + T + 1] for i in range(n)])


def micro_batches(x: torch.Tensor, micro: int):
    """(slice, share of the rows) pairs covering ``x``; the whole batch once when ``micro`` is 0 or >= its rows."""
    if not micro or micro >= len(x):
        yield x, 1.0
        return
    for s in range(0, len(x), micro):
        yield x[s:s + micro], len(x[s:s + micro]) / len(x)


def sample_batch(tokens: torch.Tensor, batch_size: int, T: int) -> torch.Tensor:
    """Random (T+1)-token windows; uses torch's global RNG, which the runner checkpoints."""
    starts = torch.randint(0, len(tokens) - T - 1, (batch_size,))
    return torch.stack([tokens[s: s + T + 1] for s in starts.tolist()])


@torch.no_grad()
def eval_loss(model: GPT, batch: torch.Tensor, chunk: int = 32) -> float:
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(batch), chunk):
        x = batch[i:i + chunk]
        logits = model(x[:, :-1], entropy=False)
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"))
        n += x[:, 1:].numel()
    model.train(was_training)
    return total / n


# -- configuration -------------------------------------------------------------------------------

def model_config(hp: Mapping[str, Any], vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, block_size=int(hp["context"]), n_layer=int(hp["n_layer"]),
                     n_head=int(hp["n_head"]), n_embd=int(hp["n_embd"]), layernorm=bool(hp["layernorm"]),
                     ffn=str(hp["ffn"]), ffn_norm=str(hp.get("ffn_norm", "none")),
                     ffn_scaling=bool(hp.get("ffn_scaling", False)),
                     temperature=str(hp.get("temperature", "none")),
                     temperature_init=float(hp.get("temperature_init", 1.0)),
                     entropy_thresholds=bool(hp.get("ereg", False)),
                     threshold_init=float(hp.get("threshold_init", 0.5)))


def _autocast(hp: Mapping[str, Any], device: str):
    """bf16 autocast on CUDA when ``dtype: bfloat16`` (paper scale); fp32 on CPU (bit-exact reruns)."""
    enabled = str(hp.get("dtype", "float32")) == "bfloat16" and device.startswith("cuda")
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
                          enabled=enabled)


def lr_at(step: int, hp: Mapping[str, Any]) -> float:
    """Linear warmup over warmup_frac of the steps, then linear decay to 0 (card §5)."""
    steps = int(hp["steps"])
    warmup = max(1, int(round(float(hp["warmup_frac"]) * steps)))
    lr = float(hp["lr"])
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * max(0.0, (steps - step) / max(1, steps - warmup))


# -- one run -------------------------------------------------------------------------------------

def train(corpus: Corpus, hp: Mapping[str, Any], ctx, device: str = "cpu") -> dict[str, Any]:
    """Train one configuration; returns metrics (name -> float) and info (JSON-able)."""
    T = int(hp["context"])
    cfg = model_config(hp, vocab_size=int(hp.get("vocab_size", 257)))
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.param_groups(float(hp["weight_decay"])), lr=float(hp["lr"]),
                            betas=(0.9, 0.999), eps=1e-8)
    ereg = bool(hp.get("ereg", False))
    steps, eval_every = int(hp["steps"]), int(hp["eval_every"])
    val_windows = windows(corpus.validation, int(hp["eval_sequences"]), T).to(device)
    test_windows = windows(corpus.test, int(hp["eval_sequences"]), T).to(device)
    ent_batch = val_windows[: int(hp["entropy_sequences"])]
    curve_batch = val_windows[: int(hp["curve_sequences"])]

    state = ctx.restore()
    start, history, diverged_step = 0, [], None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, history = int(state["step"]), list(state["history"])

    train_tokens = corpus.train
    micro = int(hp.get("micro_batch") or 0)
    granularity = str(hp.get("ereg_granularity", "row"))
    if ereg and granularity == "head" and 0 < micro < int(hp["batch_size"]):
        raise ValueError("micro_batch with ereg_granularity 'head' would change the penalty (a batch mean inside "
                         "the dead zone): use granularity 'row' or micro_batch 0")
    model.train()
    for step in range(start, steps):
        if step % eval_every == 0:
            _log_eval(model, step, curve_batch, ent_batch, T, history, ctx)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, hp)
        x = sample_batch(train_tokens, int(hp["batch_size"]), T).to(device)
        opt.zero_grad(set_to_none=True)
        finite, ce, loss, pen = True, None, None, None
        for part, share in micro_batches(x, micro):
            with _autocast(hp, device):
                logits = model(part[:, :-1], entropy=ereg)
            ce_i = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), part[:, 1:].reshape(-1))
            if share != 1.0:
                ce_i = ce_i * share  # each slice's mean weighted by its rows: the batch mean
            loss_i = ce_i
            if ereg:  # row granularity sums over rows: slices add up to the whole batch's penalty
                pen_i = entropy_penalty(model.row_entropies(), model.reg_threshold_weights, T,
                                        float(hp["ereg_tolerance"]), granularity)
                loss_i = ce_i + float(hp["ereg_lambda"]) * pen_i
                pen = pen_i if pen is None else pen + pen_i.detach()
            ce = ce_i if ce is None else ce + ce_i.detach()
            loss = loss_i if loss is None else loss + loss_i.detach()
            if not torch.isfinite(loss_i):
                finite = False
                break
            loss_i.backward()
        if not finite:
            diverged_step = step
            ctx.log(step, curve="train", loss=float(loss.detach()), ce=float(ce.detach()))
            break
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(hp["grad_clip"]))
        if not torch.isfinite(grad_norm):
            diverged_step = step
            ctx.log(step, curve="train", loss=float(loss.detach()), ce=float(ce.detach()), grad_norm=float(grad_norm))
            break
        opt.step()
        if step % int(hp["log_every"]) == 0 or step == steps - 1:
            point = {"loss": float(loss.detach()), "ce": float(ce.detach()), "grad_norm": float(grad_norm)}
            if ereg:
                point["ereg_penalty"] = float(pen.detach())
            ctx.log(step, curve="train", **point)
        if (step + 1) % int(hp["checkpoint_every"]) == 0 and step + 1 < steps:
            ctx.checkpoint({"step": step + 1, "model": model.state_dict(), "opt": opt.state_dict(),
                            "history": history})
    return _finish(model, cfg, hp, steps, diverged_step, val_windows, test_windows, ent_batch, T, history, ctx)


def _log_eval(model, step, curve_batch, ent_batch, T, history, ctx) -> None:
    ent = entropy_matrix(model, ent_batch)
    val = eval_loss(model, curve_batch)
    layer_means = [float(x) for x in ent.mean(axis=1)]
    ctx.log(step, curve="val", loss=val)
    ctx.log(step, curve="entropy", **{f"l{i}": v for i, v in enumerate(layer_means)})
    history.append({"step": step, "val_loss": val, "layers": layer_means, "heads": ent.tolist()})


def _finish(model, cfg: GPTConfig, hp, steps, diverged_step, val_windows, test_windows, ent_batch, T, history,
            ctx) -> dict[str, Any]:
    if diverged_step is None:
        _log_eval(model, steps, val_windows[: int(hp["curve_sequences"])], ent_batch, T, history, ctx)
        val, test = eval_loss(model, val_windows), eval_loss(model, test_windows)
        ent = np.asarray(history[-1]["heads"])
        source = "final"
    else:
        val = test = math.nan
        finite = [h for h in history if np.isfinite(np.asarray(h["heads"])).all()]
        ent = np.asarray(finite[-1]["heads"]) if finite else np.full((cfg.n_layer, cfg.n_head), math.nan)
        source = f"last finite evaluation, step {finite[-1]['step']}" if finite else "none"
    metrics = {
        "val_loss": val, "test_loss": test,
        "val_ppl": math.exp(val) if math.isfinite(val) else math.nan,
        "test_ppl": math.exp(test) if math.isfinite(test) else math.nan,
        "diverged": float(diverged_step is not None),
        "steps_completed": float(steps if diverged_step is None else diverged_step),
        "ffn_flops_per_token": float(ffn_flops_per_token(cfg)),
        "attn_flops_per_token": float(attention_flops_per_token(cfg, T)),
        "causal_max_entropy": causal_max_entropy(T),
        "log_context": math.log(T),
        **entropy_summary(ent, T),
    }
    info: dict[str, Any] = {
        "entropy_matrix": np.round(ent, 5).tolist(), "entropy_source": source,
        "entropy_curve": [{"step": h["step"], "layers": [round(x, 5) for x in h["layers"]],
                           "val_loss": round(h["val_loss"], 5)} for h in history],
        "diverged_step": diverged_step, "n_params": model.num_params(), "model": cfg.to_dict(),
        # for the report's table (the runs frame carries info, not metrics); None when diverged
        "test_ppl": metrics["test_ppl"] if math.isfinite(metrics["test_ppl"]) else None,
        "test_loss": metrics["test_loss"] if math.isfinite(metrics["test_loss"]) else None,
    }
    if cfg.entropy_thresholds:
        theta = model.reg_threshold_weights.detach().double().cpu().numpy()
        info["thresholds"] = np.round(theta, 5).tolist()
        metrics["theta_mean"] = float(theta.mean())
        metrics["theta_std_min_layer"] = float(theta.std(axis=1).min())  # claim 7: non-uniform in every layer
    if cfg.temperature != "none":
        t = torch.stack([b.attn.log_t.detach().exp() for b in model.blocks]).double().cpu().numpy()  # (L, H, T)
        metrics["temperature_geomean"] = float(np.exp(np.log(t).mean()))
        info["temperature_per_head"] = np.round(np.exp(np.log(t).mean(axis=2)), 5).tolist()
    return {"metrics": metrics, "info": info}
