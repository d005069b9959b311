"""The language-model loop (card §4.1): truncated BPTT over a batchified corpus, as the official
``lstm/train.py`` (STN) and ``lstm/train_basic.py`` (fixed, perturbed and replayed baselines).

* The corpus is cut into ``batch_size`` contiguous streams; a minibatch is the next ``bptt``
  tokens of every stream (the last one shorter). The hidden state is carried from one minibatch
  to the next (detached) and reset at the start of each epoch.
* Weights: SGD (LR 30, no momentum, no weight decay), gradient norm clipped at 0.25. LR ÷ 4
  when the epoch's validation loss is worse than the best of the epochs older than 5 (the
  official non-monotone rule, ``train.decay_lr``); stop when the LR is below 3e-4, after 20
  epochs without improvement, or at ``epochs``.
* STN: ``warmup_steps`` best-response steps, then T_train best-response steps alternating with
  T_valid hyper steps. A best-response step samples λ + ε (ε ~ N(0, 1) in the unconstrained
  space, per example for the locked dropouts, per batch for the rest) and never moves λ. A hyper
  step takes the next ``bptt`` tokens of the validation set batchified at ``batch_size`` (its own
  carried hidden state) in eval mode — no dropout, so λ learns only through the hypernet —
  and, as the official code, adds α·AR + β·TAR to the validation loss (``val_ar_tar``).
* Validation at batch ``eval_batch_size`` (10) after every epoch; the best-validation weights
  and λ are evaluated at the end on validation and on test (batch ``test_batch_size``, 1).

Compute accounting as ``train.py``, in plain-training epochs over the training tokens.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from .data import TextData
from .lstm import PER_BATCH, hnet_input
from .stn import HParam, HyperSpace
from .train import COST_EVAL, COST_STN_HYPER, COST_STN_TRAIN, end_epoch, load_best, restore_state

ValuesFn = Callable[[int, int], Mapping[str, float]]


def batchify(ids: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch, N // batch): ``batch`` contiguous streams, the remainder dropped (AWD-LSTM)."""
    n = len(ids) // batch
    if n < 2:
        raise ValueError(f"a corpus of {len(ids)} tokens is too short for batch size {batch}")
    return ids[:n * batch].view(batch, n)


def chunks(streams: torch.Tensor, bptt: int) -> list[tuple[int, int]]:
    """(start, length) of each minibatch: inputs streams[:, s:s+L], targets shifted by one."""
    n = streams.shape[1]
    return [(i, min(bptt, n - 1 - i)) for i in range(0, n - 1, bptt)]


def detach(state):
    return [(h.detach(), c.detach()) for h, c in state]


def regularisers(values: Mapping[str, torch.Tensor], batch: int) -> dict[str, Any]:
    """Model inputs: (B,) tensors for the per-example dropouts, floats for the per-batch ones."""
    out = {}
    for k, v in values.items():
        v = torch.as_tensor(v, dtype=torch.float32)
        out[k] = float(v.reshape(-1)[0]) if k in PER_BATCH else v.expand(batch) if v.dim() == 0 else v
    return out


def lm_loss(model, x, y, state, hnet, reg, with_ar_tar: bool = True):
    logits, state, ar, tar = model(x, state, hnet, reg)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    if with_ar_tar:
        alpha, beta = float(reg.get("alpha", 0.0)), float(reg.get("beta", 0.0))
        if alpha:
            loss = loss + alpha * ar
        if beta:
            loss = loss + beta * tar
    return loss, state


@torch.no_grad()
def evaluate_lm(model, ids: torch.Tensor, batch: int, bptt: int, space: HyperSpace | None,
                params: list[HParam], constrained: bool) -> float:
    """Mean NLL per token (nats) in eval mode with λ unperturbed; hidden state carried."""
    model.eval()
    streams = batchify(ids, batch)
    state = model.init_state(batch, ids.device)
    hnet = hnet_input(space.perturb(batch, perturb=False), params, constrained) if space is not None else None
    total, count = 0.0, 0
    for s, n in chunks(streams, bptt):
        logits, state, _, _ = model(streams[:, s:s + n], state, hnet)
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), streams[:, s + 1:s + 1 + n].reshape(-1),
                                       reduction="sum"))
        count += n * batch
    return total / count


def fit_lm(model, data: TextData, hp: Mapping[str, Any], ctx, params: list[HParam], fixed: Mapping[str, float], *,
           space: HyperSpace | None = None, values_fn: ValuesFn | None = None, constrained: bool = False
           ) -> dict[str, Any]:
    """Train the language model: the STN (with ``space``) or the plain network with the tuned
    hyperparameters ``values_fn(epoch, step)`` per minibatch; ``fixed`` holds the others."""
    stn = space is not None
    bs, bptt = int(hp["batch_size"]), int(hp["bptt"])
    train = batchify(data.train, bs)
    hyper_val = batchify(data.val, bs)
    train_chunks, val_chunks = chunks(train, bptt), chunks(hyper_val, bptt)
    n_tokens = train.numel()
    t_train, t_valid = int(hp.get("train_steps", 2)), int(hp.get("valid_steps", 1))
    warmup = int(hp.get("warmup_steps", len(train_chunks)))
    tune_scales, tau = bool(hp.get("tune_scales", False)), float(hp.get("entropy_weight", 0.0))
    val_ar_tar = bool(hp.get("val_ar_tar", True))
    eval_bs, test_bs = int(hp.get("eval_batch_size", 10)), int(hp.get("test_batch_size", 1))
    opt = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]), momentum=float(hp.get("momentum", 0.0)),
                          weight_decay=float(hp.get("weight_decay", 0.0)))
    hopt = torch.optim.Adam([space.h], lr=float(hp["hyper_lr"])) if stn else None
    sopt = torch.optim.Adam([space.s], lr=float(hp["scale_lr"])) if stn and tune_scales else None
    device = data.train.device

    st = {"epoch": -1, "step": 0, "cost": 0.0, "bad": 0, "best": None, "schedule": [], "hyper_steps": 0,
          "val_pos": 0, "val_state": None, "lr": float(hp["lr"]), "val_history": [],
          "curve": {"cost_epochs": [], "val_nll": []}}
    hyper_opts = {"hopt": hopt, "sopt": sopt}
    st = restore_state(ctx, st, model, opt, space, hyper_opts)

    def hyper_values(u: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(space.names, space.constrain(u).unbind(1)))

    def hyper_step():
        model.eval()  # L_V without dropout: λ learns only through the hypernet
        if st["val_pos"] >= len(val_chunks) or st["val_state"] is None:
            st["val_pos"], st["val_state"] = 0, model.init_state(bs, device)
        s, n = val_chunks[st["val_pos"]]
        st["val_pos"] += 1
        u = space.perturb(bs, perturb=tune_scales)
        reg = {**fixed, **{k: float(v[0].detach()) for k, v in hyper_values(u).items() if k in ("alpha", "beta")}}
        loss, new_state = lm_loss(model, hyper_val[:, s:s + n], hyper_val[:, s + 1:s + 1 + n], st["val_state"],
                                  hnet_input(u, params, constrained), reg, with_ar_tar=val_ar_tar)
        st["val_state"] = detach(new_state)
        if tune_scales:
            loss = loss - tau * space.entropy()
        gh, gs = torch.autograd.grad(loss, [space.h, space.s], allow_unused=True)
        hopt.zero_grad()
        space.h.grad = gh
        hopt.step()
        if sopt is not None and gs is not None:
            sopt.zero_grad()
            space.s.grad = gs
            sopt.step()
        st["hyper_steps"] += 1
        st["cost"] += COST_STN_HYPER * n * bs / n_tokens

    for epoch in range(st["epoch"] + 1, int(hp["epochs"])):
        if stn:
            now = space.values()
            st["schedule"].append(now)
            ctx.log(epoch, curve="hparams", **now)
        state = model.init_state(bs, device)
        train_loss, seen = 0.0, 0
        for s, n in train_chunks:
            model.train()
            x, y = train[:, s:s + n], train[:, s + 1:s + 1 + n]
            if stn:
                u = space.perturb(bs).detach()  # the best-response step never moves λ
                reg = {**regularisers(fixed, bs), **regularisers(hyper_values(u), bs)}
                hnet = hnet_input(u, params, constrained)
            else:
                reg = regularisers({**fixed, **values_fn(epoch, st["step"])}, bs)
                hnet = None
            loss, state = lm_loss(model, x, y, state, hnet, reg)
            state = detach(state)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(hp.get("clip", 0.25)))
            opt.step()
            train_loss += float(loss.detach()) * n
            seen += n
            st["step"] += 1
            st["cost"] += (COST_STN_TRAIN if stn else 1.0) * n * bs / n_tokens
            if stn and st["step"] > warmup and st["step"] % t_train == 0:
                for _ in range(t_valid):
                    hyper_step()
        val_nll = evaluate_lm(model, data.val, eval_bs, bptt, space, params, constrained)
        st["cost"] += COST_EVAL * len(data.val) / n_tokens
        ctx.log(epoch, curve="train", train_loss=train_loss / max(seen, 1), val_nll=val_nll,
                val_ppl=math.exp(min(val_nll, 50.0)), cost_epochs=st["cost"], lr=st["lr"])
        if end_epoch(st, epoch, val_nll, model, opt, space, hyper_opts, hp, ctx):
            break

    best = load_best(st, model, space)
    val_nll = evaluate_lm(model, data.val, eval_bs, bptt, space, params, constrained)
    test_nll = evaluate_lm(model, data.test, test_bs, bptt, space, params, constrained)
    out = {"val_nll": val_nll, "test_nll": test_nll, "val_ppl": math.exp(min(val_nll, 50.0)),
           "test_ppl": math.exp(min(test_nll, 50.0)), "cost_epochs": st["cost"], "epochs_run": st["epoch"] + 1,
           "best_epoch": best["epoch"], "hyper_steps": st["hyper_steps"], "curve": st["curve"],
           "final_lr": st["lr"]}
    if stn:
        out["final"] = space.values()
        out["schedule"] = {k: [round(v[k], 6) for v in st["schedule"]] for k in space.names}
    return out
