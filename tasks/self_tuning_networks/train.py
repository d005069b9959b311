"""The training loops: STN's alternating schedule (card §3, Algorithm 1) and plain training with
hyperparameters given per step (search trials, schedule replay, fixed/jittered/sinusoidal controls).

Both loops share the data pipeline, the per-epoch validation, early stopping on validation NLL
(best-validation checkpoint evaluated on test, as the official code), checkpoint/resume and the
compute accounting.

Compute accounting (``cost_epochs``, deterministic, in plain-training epoch equivalents): one
forward+backward of the base network over the training set = 1. An STN training step costs 2
(elementary + hyper path, twice the FLOPs); an STN hyper step costs 4/3 (forward 2, backward
to activations only, no weight gradients, 2 of the base net's 3); a validation pass over N_val
examples costs N_val / (3 N_train) (a forward pass is a third of a training step).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from .data import ImageData
from .stn import HyperSpace, colour_jitter, cutout, input_scale

COST_STN_TRAIN = 2.0
COST_STN_HYPER = 4.0 / 3.0
COST_EVAL = 1.0 / 3.0

ValuesFn = Callable[[int, int], Mapping[str, float]]


def nonmono_trigger(history: list[float], val: float, window: int) -> bool:
    """The official code's LR-decay trigger (AWD-LSTM's non-monotone rule): this epoch's
    validation loss is worse than the best of the epochs older than ``window``. ``history``
    holds the previous epochs' losses; ``window`` 0 disables the rule."""
    return window > 0 and len(history) > window and val > min(history[:-window])


def decay_lr(opt, st: dict, hp: Mapping[str, Any], val: float) -> bool:
    """Apply the non-monotone decay (``lr_decay_window`` epochs, factor ``lr_decay``) after an
    epoch; record the loss; True when the LR fell below ``min_lr`` (the official stopping rule)."""
    if nonmono_trigger(st["val_history"], val, int(hp.get("lr_decay_window", 0))):
        st["lr"] *= float(hp.get("lr_decay", 0.1))
        for group in opt.param_groups:
            group["lr"] = st["lr"]
    st["val_history"].append(val)
    return st["lr"] < float(hp.get("min_lr", 0.0))


def restore_state(ctx, st: dict, model, opt, space: HyperSpace | None, hyper_opts: Mapping[str, Any]) -> dict:
    """Resume from the run's last checkpoint, if any: weights, optimisers, λ and σ, loop state."""
    saved = ctx.restore()
    if saved is None:
        return st
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    if space is not None:
        space.load_state_dict(saved["space"])
    for name, o in hyper_opts.items():
        if o is not None:
            o.load_state_dict(saved[name])
    return saved["loop"]


def end_epoch(st: dict, epoch: int, val_nll: float, model, opt, space: HyperSpace | None,
              hyper_opts: Mapping[str, Any], hp: Mapping[str, Any], ctx) -> bool:
    """What both loops do after an epoch's validation: the curve, the best-validation snapshot
    (weights and λ: the official checkpoint rule), patience, the LR rule, the periodic
    checkpoint. True when training stops."""
    st["epoch"] = epoch
    st["curve"]["cost_epochs"].append(round(st["cost"], 4))
    st["curve"]["val_nll"].append(round(val_nll, 6))
    if st["best"] is None or val_nll < st["best"]["val_nll"]:
        st["best"] = {"val_nll": val_nll, "epoch": epoch, "model": copy.deepcopy(model.state_dict()),
                      "space": copy.deepcopy(space.state_dict()) if space is not None else None}
        st["bad"] = 0
    else:
        st["bad"] += 1
    lr_spent = decay_lr(opt, st, hp, val_nll)
    done = (st["bad"] >= int(hp["patience"]) or epoch + 1 >= int(hp["epochs"]) or not math.isfinite(val_nll)
            or lr_spent)
    every = int(hp.get("checkpoint_every", 50))
    if not done and every > 0 and (epoch + 1) % every == 0:
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "loop": st}
        if space is not None:
            state["space"] = space.state_dict()
        state.update({name: o.state_dict() for name, o in hyper_opts.items() if o is not None})
        ctx.checkpoint(state)
    return done


def load_best(st: dict, model, space: HyperSpace | None) -> dict:
    """Put the best-validation weights (and λ) back; returns the snapshot."""
    best = st["best"]
    model.load_state_dict(best["model"])
    if space is not None:
        space.load_state_dict(best["space"])
    return best


def regularise(x: torch.Tensor, vals: Mapping[str, torch.Tensor], data: ImageData, max_holes: int = 1):
    """Training-time input pipeline with per-example hyperparameter values: colour jitter on [0, 1]
    images, normalisation, cutout, input scaling; returns (inputs, layer dropout rates)."""
    if any(k in vals for k in ("brightness", "contrast", "saturation", "hue")):
        x = colour_jitter(x, vals.get("brightness"), vals.get("contrast"), vals.get("saturation"), vals.get("hue"))
    x = (x - data.mean) / data.std
    if "cutout" in vals:
        x = cutout(x, vals["cutout"], vals.get("holes"), max_holes=max_holes if "holes" in vals else 1)
    if "inscale" in vals:
        x = input_scale(x, vals["inscale"])
    return x, {k: v for k, v in vals.items() if k.startswith("dropout")}


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, data: ImageData, space: HyperSpace | None,
             batch: int = 1000) -> tuple[float, float]:
    """Mean NLL and accuracy (%) in eval mode: no dropout, no augmentation, λ unperturbed."""
    model.eval()
    nll, correct = 0.0, 0
    for i in range(0, len(x), batch):
        xb = (x[i:i + batch] - data.mean) / data.std
        hnet = space.perturb(len(xb), perturb=False) if space is not None else None
        logits = model(xb, hnet)
        nll += float(F.cross_entropy(logits, y[i:i + batch], reduction="sum"))
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    return nll / len(x), 100.0 * correct / len(x)


def fit(model, data: ImageData, hp: Mapping[str, Any], ctx, *, space: HyperSpace | None = None,
        values_fn: ValuesFn | None = None, max_holes: int = 1) -> dict[str, Any]:
    """Train ``model``. With ``space``: the STN (alternating best-response / hyper steps). Otherwise
    plain training with hyperparameters ``values_fn(epoch, step)`` (one value per minibatch)."""
    stn = space is not None
    n, bs = len(data.x_train), int(hp["batch_size"])
    steps_per_epoch = math.ceil(n / bs)
    t_train, t_valid = int(hp.get("train_steps", 2)), int(hp.get("valid_steps", 1))
    warmup, tune_scales = int(hp.get("warmup_epochs", 5)), bool(hp.get("tune_scales", True))
    tau = float(hp.get("entropy_weight", 1e-3))
    opt = torch.optim.SGD(model.parameters(), lr=float(hp["lr"]), momentum=float(hp.get("momentum", 0.9)))
    hopt = torch.optim.Adam([space.h], lr=float(hp["hyper_lr"])) if stn else None
    sopt = torch.optim.Adam([space.s], lr=float(hp["scale_lr"])) if stn else None

    st = {"epoch": -1, "step": 0, "cost": 0.0, "bad": 0, "best": None, "schedule": [], "val_perm": None, "val_pos": 0,
          "hyper_steps": 0, "curve": {"cost_epochs": [], "val_nll": []}, "lr": float(hp["lr"]), "val_history": []}
    hyper_opts = {"hopt": hopt, "sopt": sopt}
    st = restore_state(ctx, st, model, opt, space, hyper_opts)

    def next_val_batch():
        if st["val_perm"] is None or st["val_pos"] + bs > len(data.x_val):
            st["val_perm"], st["val_pos"] = torch.randperm(len(data.x_val), device=data.x_val.device), 0
        idx = st["val_perm"][st["val_pos"]:st["val_pos"] + bs]
        st["val_pos"] += bs
        return data.x_val[idx], data.y_val[idx]

    def hyper_step():
        model.eval()  # L_V without dropout or augmentation: λ learns only through the hypernet
        xv, yv = next_val_batch()
        u = space.perturb(len(xv), perturb=tune_scales)
        loss = F.cross_entropy(model((xv - data.mean) / data.std, u), yv)
        if tune_scales:
            loss = loss - tau * space.entropy()
        gh, gs = torch.autograd.grad(loss, [space.h, space.s], allow_unused=True)
        hopt.zero_grad()
        sopt.zero_grad()
        space.h.grad = gh
        hopt.step()
        if tune_scales and gs is not None:
            space.s.grad = gs
            sopt.step()
        st["hyper_steps"] += 1
        st["cost"] += COST_STN_HYPER * len(xv) / n

    for epoch in range(st["epoch"] + 1, int(hp["epochs"])):
        model.train()
        if stn:
            now = space.values()
            st["schedule"].append(now)
            ctx.log(epoch, curve="hparams", **now, **{f"{k}_scale": v for k, v in space.scales().items()})
        perm = torch.randperm(n, device=data.x_train.device)
        train_loss = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            xb, yb = data.x_train[idx], data.y_train[idx]
            model.train()
            if stn:
                u = space.perturb(len(idx)).detach()  # the best-response step never moves λ
                vals = dict(zip(space.names, space.constrain(u).unbind(1)))
                hnet = u
            else:
                point = values_fn(epoch, st["step"])
                vals = {k: torch.full((len(idx),), float(v), device=xb.device) for k, v in point.items()}
                hnet = None
            x_in, drops = regularise(xb, vals, data, max_holes)
            loss = F.cross_entropy(model(x_in, hnet, drops), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            train_loss += float(loss.detach()) * len(idx)
            st["step"] += 1
            st["cost"] += (COST_STN_TRAIN if stn else 1.0) * len(idx) / n
            if stn and epoch >= warmup and st["step"] % t_train == 0:
                for _ in range(t_valid):
                    hyper_step()
        val_nll, val_acc = evaluate(model, data.x_val, data.y_val, data, space)
        st["cost"] += COST_EVAL * len(data.x_val) / n
        ctx.log(epoch, curve="train", train_loss=train_loss / n, val_nll=val_nll, val_accuracy=val_acc,
                cost_epochs=st["cost"])
        if end_epoch(st, epoch, val_nll, model, opt, space, hyper_opts, hp, ctx):
            break

    best = load_best(st, model, space)
    val_nll, val_acc = evaluate(model, data.x_val, data.y_val, data, space)
    test_nll, test_acc = evaluate(model, data.x_test, data.y_test, data, space)
    out = {"val_nll": val_nll, "val_accuracy": val_acc, "test_nll": test_nll, "test_accuracy": test_acc,
           "cost_epochs": st["cost"], "epochs_run": st["epoch"] + 1, "best_epoch": best["epoch"],
           "hyper_steps": st["hyper_steps"], "curve": st["curve"]}
    if stn:
        out["final"] = space.values()
        out["final_scales"] = space.scales()
        out["schedule"] = {k: [round(s[k], 6) for s in st["schedule"]] for k in space.names}
    return out
