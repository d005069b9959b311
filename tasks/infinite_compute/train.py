"""Training and evaluation loops: AdamW (0.9, 0.95), linear warmup + cosine to 0, global clip 1.0.

One loop serves every recipe: ``syn_windows``/``syn_weight`` turn it into the distillation
student's real:synthetic batch mixing (card §3.2 item 6). The batch order is a pure
function of (seed, epoch), so a run resumed from a checkpoint equals an uninterrupted one
bit for bit on CPU. On CUDA the forward runs under bf16 autocast with fp32 master weights
(and optionally ``torch.compile``), as the paper's bf16 compute.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .model import LlamaLM, ModelConfig


@dataclass(frozen=True)
class TrainConfig:
    epochs: float
    """Passes over the real training tokens (total steps = epochs * real windows / real rows per batch)."""
    lr: float
    weight_decay: float
    batch_size: int = 16
    warmup_frac: float = 0.01
    clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    syn_weight: float = 0.0
    """Share of each batch's rows drawn from the synthetic (teacher) windows."""
    ckpt_every: int = 256
    log_every: int = 32
    compile: bool = False


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, progress)))


def rows_per_batch(batch_size: int, syn_weight: float) -> tuple[int, int]:
    """(real rows, synthetic rows) of a batch."""
    n_syn = int(round(syn_weight * batch_size))
    if syn_weight > 0 and n_syn == batch_size:
        raise ValueError(f"syn_weight {syn_weight} leaves no real row in a batch of {batch_size}")
    return batch_size - n_syn, n_syn


def total_steps(n_real: int, tc: TrainConfig) -> int:
    real_rows, syn_rows = rows_per_batch(tc.batch_size, tc.syn_weight)
    if real_rows == 0:  # synthetic only: 'epochs' counts the same number of steps as real-only training would
        return max(1, int(round(tc.epochs * n_real / tc.batch_size)))
    return max(1, int(round(tc.epochs * n_real / real_rows)))


class EpochStream:
    """Row indices of an endless sequence of epochs, each a fresh permutation from (seed, stream, epoch)."""

    def __init__(self, n: int, seed: int, stream: int):
        self.n, self.seed, self.stream = n, seed, stream
        self._cache: dict[int, np.ndarray] = {}

    def perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {epoch: np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.n)}
        return self._cache[epoch]

    def take(self, start: int, count: int) -> np.ndarray:
        out = np.empty(count, dtype=np.int64)
        for j in range(count):
            g = start + j
            out[j] = self.perm(g // self.n)[g % self.n]
        return out


def build_optimizer(model: LlamaLM, tc: TrainConfig) -> torch.optim.AdamW:
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(model.param_groups(tc.weight_decay), lr=tc.lr, betas=tc.betas, eps=tc.eps,
                             fused=fused or None)


def autocast_for(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_step(model, opt, x: torch.Tensor, y: torch.Tensor, lr: float, clip: float, device: str) -> torch.Tensor:
    """One optimizer step; returns the (detached) loss."""
    for g in opt.param_groups:
        g["lr"] = lr
    with autocast_for(device):
        logits = model(x)
    loss = lm_loss(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.detach()


def train_lm(model: LlamaLM, train_windows: np.ndarray, tc: TrainConfig, seed: int, device: str, ctx=None,
             syn_windows: np.ndarray | None = None, on_step: Callable[[int], None] | None = None) -> dict:
    """Train in place; returns {steps, tokens, final_train_loss}. Checkpoints through ``ctx`` if given."""
    real_rows, syn_rows = rows_per_batch(tc.batch_size, tc.syn_weight)
    if syn_rows and syn_windows is None:
        raise ValueError("syn_weight > 0 needs syn_windows")
    n_steps = total_steps(len(train_windows), tc)
    warmup = max(1, int(round(tc.warmup_frac * n_steps)))
    real = torch.from_numpy(np.ascontiguousarray(train_windows)).to(device)
    syn = torch.from_numpy(np.ascontiguousarray(syn_windows)).to(device) if syn_rows else None
    real_stream = EpochStream(len(train_windows), seed, 0)
    syn_stream = EpochStream(len(syn_windows), seed, 1) if syn_rows else None
    opt = build_optimizer(model, tc)
    step_model = torch.compile(model) if tc.compile else model
    start, running = 0, []
    state = ctx.restore() if ctx is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, running = int(state["step"]), list(state["running"])
    loss = torch.tensor(float("nan"))
    for step in range(start, n_steps):
        parts = []
        if real_rows:
            parts.append(real[torch.from_numpy(real_stream.take(step * real_rows, real_rows)).to(device)])
        if syn_rows:
            parts.append(syn[torch.from_numpy(syn_stream.take(step * syn_rows, syn_rows)).to(device)])
        batch = torch.cat(parts) if len(parts) > 1 else parts[0]
        loss = train_step(step_model, opt, batch[:, :-1], batch[:, 1:], lr_at(step, n_steps, tc.lr, warmup),
                          tc.clip, device)
        running.append(loss)  # a tensor: no host sync per step on a GPU
        if on_step is not None:
            on_step(step)
        if ctx is not None and ((step + 1) % tc.log_every == 0 or step + 1 == n_steps):
            ctx.log(step + 1, curve="train", loss=float(torch.stack(running).float().mean()),
                    lr=lr_at(step, n_steps, tc.lr, warmup))
            running = []
        if ctx is not None and tc.ckpt_every and (step + 1) % tc.ckpt_every == 0 and step + 1 < n_steps:
            ctx.checkpoint({"step": step + 1, "model": model.state_dict(), "opt": opt.state_dict(), "running": running})
    return {"steps": n_steps, "tokens": n_steps * tc.batch_size * (train_windows.shape[1] - 1),
            "final_train_loss": float(loss)}


# -- evaluation -----------------------------------------------------------------------------

@torch.no_grad()
def iter_logits(model: LlamaLM, windows: np.ndarray, device: str, batch: int = 64) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(fp32 logits, targets) per chunk of windows, in order."""
    model.eval()
    data = torch.from_numpy(np.ascontiguousarray(windows))
    for i in range(0, len(data), batch):
        chunk = data[i:i + batch].to(device)
        with autocast_for(device):
            logits = model(chunk[:, :-1])
        yield logits.float(), chunk[:, 1:]
    model.train()


def eval_loss(model: LlamaLM, windows: np.ndarray, device: str, batch: int = 64) -> float:
    """Mean per-token NLL (nats) over every predicted token of ``windows``."""
    total, count = 0.0, 0
    for logits, y in iter_logits(model, windows, device, batch):
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
        count += y.numel()
    return total / count


@torch.no_grad()
def ensemble_losses(models: Sequence[LlamaLM], windows: np.ndarray, device: str, batch: int = 64) -> list[float]:
    """NLL of the logit-averaged ensemble of the first K members, for K = 1..len(models).

    The paper's ensemble: softmax of the *mean of member logits* (pre-softmax averaging).
    """
    totals, count = np.zeros(len(models)), 0
    streams = [iter_logits(m, windows, device, batch) for m in models]
    for chunks in zip(*streams):
        y = chunks[0][1]
        running = torch.zeros_like(chunks[0][0])
        for k, (logits, _) in enumerate(chunks):
            running += logits
            mean = running / (k + 1)
            totals[k] += float(F.cross_entropy(mean.reshape(-1, mean.shape[-1]), y.reshape(-1), reduction="sum"))
        count += y.numel()
    return (totals / count).tolist()


def average_weights(models: Sequence[LlamaLM]) -> LlamaLM:
    """Uniform weight average ("model soup") of models of one configuration."""
    soup = LlamaLM(models[0].cfg).to(next(models[0].parameters()).device)
    states = [m.state_dict() for m in models]
    soup.load_state_dict({k: sum(s[k].float() for s in states) / len(states) for k in states[0]})
    return soup


# -- checkpoints of finished models -----------------------------------------------------------

def save_model(model: LlamaLM, path) -> None:
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict()}, path)


def load_model(path, device: str = "cpu") -> LlamaLM:
    blob = torch.load(path, map_location=device, weights_only=True)
    model = LlamaLM(ModelConfig(**blob["config"])).to(device)
    model.load_state_dict(blob["state_dict"])
    return model
