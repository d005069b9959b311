"""Training and evaluation loops: AdamW (0.9, 0.95), linear warmup + cosine to 0, global clip 1.0.

One loop serves every recipe: ``syn_windows``/``syn_weight`` turn it into the distillation
student's real:synthetic batch mixing (card §3.2 item 6). The batch order is a pure
function of (seed, epoch), so a run resumed from a checkpoint equals an uninterrupted one
bit for bit on CPU. On CUDA the forward runs under bf16 autocast with fp32 master weights
(and optionally ``torch.compile``), as the paper's bf16 compute.

Memory at paper scale (batch 64 x 4096 tokens, vocabulary 128,257): the full logits would be
67 GB in bf16 plus a 134 GB fp32 copy. Two knobs keep them from ever existing: ``micro_batch``
(rows per forward/backward, gradients accumulated over the batch; the update is the same) and
``ce_chunk`` (tokens per slice of the output head in :func:`chunked_cross_entropy`, which
computes the loss and its gradients slice by slice). Evaluation slices the same way. Both 0
(tiny/small scale): the plain path, bit for bit as before.
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
    micro_batch: int = 0
    """Rows per forward/backward pass, gradients accumulated over the batch (0: the whole batch)."""
    ce_chunk: int = 0
    """Tokens per slice of the output head in the loss (0: full logits, the plain path)."""

    def __post_init__(self):
        if self.micro_batch and self.batch_size % self.micro_batch:
            raise ValueError(f"micro_batch {self.micro_batch} must divide batch_size {self.batch_size}")


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


class _ChunkedLinearCE(torch.autograd.Function):
    """Mean cross-entropy of ``h @ W.T`` against ``y``, one slice of ``chunk`` tokens at a time.

    The forward computes each slice's logits (fp32 after a ``dtype`` matmul), its loss and, at
    once, its gradients (softmax - onehot): only one (chunk, V) block is ever alive, and nothing
    of it is kept for the backward, which only scales the stored gradients.
    """

    @staticmethod
    def forward(ctx, h, weight, y, chunk: int, dtype):
        n = h.shape[0]
        acc = torch.promote_types(h.dtype, torch.float32)  # fp32 (fp64 in tests)
        w = weight.to(dtype)
        grad_h = torch.empty(h.shape, dtype=acc, device=h.device)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        total = torch.zeros((), dtype=acc, device=h.device)
        for s in range(0, n, chunk):
            hc, yc = h[s:s + chunk].to(dtype), y[s:s + chunk]
            logits = (hc @ w.t()).to(acc)
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, yc[:, None]).squeeze(1)).sum()
            p = torch.exp(logits - lse[:, None])
            p[torch.arange(len(yc), device=p.device), yc] -= 1.0
            pd = p.to(dtype)
            grad_h[s:s + chunk] = (pd @ w).to(acc)
            grad_w += (pd.t() @ hc).to(acc)
        ctx.save_for_backward(grad_h / n, grad_w / n)
        ctx.dtypes = (h.dtype, weight.dtype)
        return total / n

    @staticmethod
    def backward(ctx, g):
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * g).to(ctx.dtypes[0]), (grad_w * g).to(ctx.dtypes[1]), None, None, None


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean NLL of ``hidden (.., d) @ weight (V, d).T`` against ``targets``, never holding more than
    ``chunk`` rows of logits; ``dtype`` of the matmuls (bf16 on a GPU; default: hidden's)."""
    h = hidden.reshape(-1, hidden.shape[-1])
    return _ChunkedLinearCE.apply(h, weight, targets.reshape(-1), int(chunk), dtype or h.dtype)


def _micro_loss(model, x, y, device: str, ce_chunk: int, head_weight) -> torch.Tensor:
    with autocast_for(device):
        out = model(x, hidden=bool(ce_chunk))
    if not ce_chunk:
        return lm_loss(out, y)
    dtype = torch.bfloat16 if device.startswith("cuda") else out.dtype
    return chunked_cross_entropy(out, head_weight, y, ce_chunk, dtype)


def train_step(model, opt, x: torch.Tensor, y: torch.Tensor, lr: float, clip: float, device: str,
               micro_batch: int = 0, ce_chunk: int = 0, head_weight=None) -> torch.Tensor:
    """One optimizer step; returns the (detached) loss.

    ``micro_batch`` rows per forward/backward with gradients summed (each slice's mean loss
    weighted by its share of the rows: the same gradient as one pass); ``ce_chunk`` tokens per
    slice of the head (``head_weight``: the head's weight, needed because ``model`` may be compiled).
    """
    for g in opt.param_groups:
        g["lr"] = lr
    if ce_chunk and head_weight is None:
        raise ValueError("ce_chunk needs head_weight (the output head's weight)")
    opt.zero_grad(set_to_none=True)
    if not micro_batch or micro_batch >= len(x):
        loss = _micro_loss(model, x, y, device, ce_chunk, head_weight)
        loss.backward()
    else:
        loss = torch.zeros((), device=x.device)
        for s in range(0, len(x), micro_batch):
            part = _micro_loss(model, x[s:s + micro_batch], y[s:s + micro_batch], device, ce_chunk, head_weight)
            share = len(x[s:s + micro_batch]) / len(x)
            (part * share).backward()
            loss = loss + part.detach() * share
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
                          tc.clip, device, tc.micro_batch, tc.ce_chunk, model.head.weight)
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
def iter_logits(model: LlamaLM, windows: np.ndarray, device: str, batch: int = 64,
                chunk: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(fp32 logits (n, V), targets (n,)) per slice, in order: ``batch`` windows at a time, and
    with ``chunk`` > 0 at most ``chunk`` tokens of logits at a time (the head applied per slice)."""
    model.eval()
    data = torch.from_numpy(np.ascontiguousarray(windows))
    for i in range(0, len(data), batch):
        rows = data[i:i + batch].to(device)
        x, y = rows[:, :-1], rows[:, 1:].reshape(-1)
        with autocast_for(device):
            out = model(x, hidden=bool(chunk))
        if not chunk:
            yield out.float().reshape(-1, out.shape[-1]), y
            continue
        h = out.reshape(-1, out.shape[-1])
        for s in range(0, len(h), chunk):
            with autocast_for(device):
                logits = model.head(h[s:s + chunk])
            yield logits.float(), y[s:s + chunk]
    model.train()


def eval_loss(model: LlamaLM, windows: np.ndarray, device: str, batch: int = 64, chunk: int = 0) -> float:
    """Mean per-token NLL (nats) over every predicted token of ``windows``."""
    total, count = 0.0, 0
    for logits, y in iter_logits(model, windows, device, batch, chunk):
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        count += y.numel()
    return total / count


@torch.no_grad()
def ensemble_losses(models: Sequence[LlamaLM], windows: np.ndarray, device: str, batch: int = 64,
                    chunk: int = 0) -> list[float]:
    """NLL of the logit-averaged ensemble of the first K members, for K = 1..len(models).

    The paper's ensemble: softmax of the *mean of member logits* (pre-softmax averaging).
    """
    totals, count = np.zeros(len(models)), 0
    streams = [iter_logits(m, windows, device, batch, chunk) for m in models]
    for chunks in zip(*streams):
        y = chunks[0][1]
        running = torch.zeros_like(chunks[0][0])
        for k, (logits, _) in enumerate(chunks):
            running += logits
            mean = running / (k + 1)
            totals[k] += float(F.cross_entropy(mean, y, reduction="sum"))
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
