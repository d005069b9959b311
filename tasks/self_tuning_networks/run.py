"""Dispatch of one run: which network, which hyperparameters (tuned, searched, replayed, fixed)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from harness.api import Metric, RunRef, RunResult

from .data import load_images
from .models import DROPOUT_MAX, build_model, hyperparameters
from .search import grid_point, random_point, tpe_point
from .stn import HyperSpace
from .train import fit

STN_METHODS = ("stn", "stn_high_start")


def _metrics(out: Mapping[str, Any], used: Mapping[str, float], extra: Mapping[str, float] | None = None):
    """Test/validation NLL (language model: nats per token, and perplexity; images: and accuracy),
    compute, best epoch, and the hyperparameter values used (``hp_*``)."""
    ms = [Metric("test_nll", out["test_nll"], False), Metric("val_nll", out["val_nll"], False)]
    for k, higher in (("test_accuracy", True), ("val_accuracy", True), ("test_ppl", False), ("val_ppl", False)):
        if k in out:
            ms.append(Metric(k, out[k], higher))
    ms += [Metric("cost_epochs", out["cost_epochs"], False), Metric("best_epoch", float(out["best_epoch"]), False)]
    ms += [Metric(f"hp_{k}", float(v), False) for k, v in used.items()]
    ms += [Metric(k, float(v), False) for k, v in (extra or {}).items()]
    return tuple(ms)


def _stn_record(task, benchmark, ctx) -> Mapping[str, Any]:
    return ctx.require(RunRef(task.name, "stn", benchmark.name, int(ctx.seed)))


def _grid_best(task, benchmark, ctx) -> dict[str, float]:
    rec = ctx.require(RunRef(task.name, "grid_search", benchmark.name, int(ctx.seed)))
    return dict(rec["info"]["hparams"])


def values_fn_for(task, method, benchmark, hp, ctx, params, steps_per_epoch: int, clip: float = DROPOUT_MAX):
    """(values_fn(epoch, step) -> point, info) for every plain-network method; perturbed dropout
    rates are clipped to [0, ``clip``]."""
    name, seed = method.name, int(ctx.seed)
    names = [p.name for p in params]
    if name == "grid_trial":
        point = grid_point(params, hp, benchmark.settings)
        return (lambda e, s: point), {"hparams": point}
    if name == "random_trial":
        point = random_point(params, seed, int(hp["trial"]))
        return (lambda e, s: point), {"hparams": point}
    if name == "tpe_trial":
        history = []
        for k in range(int(hp["trial"])):
            rec = ctx.require(RunRef(task.name, f"tpe_trial[trial={k}]", benchmark.name, seed))
            val = {m["name"]: m["value"] for m in rec["metrics"]}.get("val_nll")
            history.append((rec["info"]["hparams"], float(val) if val is not None else math.inf))
        point = tpe_point(params, seed, int(hp["trial"]), history)
        return (lambda e, s: point), {"hparams": point}
    if name == "stn_replay":
        schedule = _stn_record(task, benchmark, ctx)["info"]["schedule"]
        length = len(next(iter(schedule.values())))

        def replay(e, s):  # the value STN had at the start of epoch e; the last one after its end
            return {k: schedule[k][min(e, length - 1)] for k in names}

        return replay, {"hparams": {k: schedule[k][-1] for k in names}, "schedule_epochs": length}
    if name == "stn_final":
        final = dict(_stn_record(task, benchmark, ctx)["info"]["final"])
        return (lambda e, s: final), {"hparams": final}
    if name in ("best_fixed_jitter", "best_fixed_sinusoid"):
        base = _grid_best(task, benchmark, ctx)
        if name == "best_fixed_jitter":
            std = float(hp["jitter_std"])

            def jitter(e, s):  # Table 1's "p + Gaussian noise": a new draw every minibatch
                noise = torch.randn(len(names)).tolist()
                return {k: min(max(base[k] + std * z, 0.0), clip) if k.startswith("dropout") else base[k]
                        for k, z in zip(names, noise)}

            return jitter, {"hparams": base}
        amp = float(hp["sin_amplitude"])
        # Period in minibatches (the paper's LSTM: 1200) or else in epochs (small scale).
        period = float(hp["sin_period_steps"]) if hp.get("sin_period_steps") else float(hp["sin_period_epochs"]) * steps_per_epoch

        def sinusoid(e, s):
            delta = amp * math.sin(2 * math.pi * s / period)
            return {k: min(max(base[k] + delta, 0.0), clip) if k.startswith("dropout") else base[k] for k in names}

        return sinusoid, {"hparams": base}
    raise ValueError(f"self_tuning_networks has no plain-network method {name!r}")


def run_method(task, method, benchmark, hp: dict[str, Any], ctx) -> RunResult:
    if method.name == "ridge_check":
        from .ridge import run_ridge

        out = run_ridge(hp, int(ctx.seed), ctx)
        return RunResult(metrics=tuple(Metric(k, v, False) for k, v in out.items()))
    settings = benchmark.settings
    if settings["model"] == "lstm":
        return run_language_model(task, method, benchmark, hp, ctx)
    data = load_images(benchmark.dataset, settings).to(ctx.device)
    model_kind = settings["model"]
    params = hyperparameters(model_kind, settings, hp)
    names = [p.name for p in params]
    max_holes = int(settings.get("holes_max", 1))
    if method.name in STN_METHODS:
        space = HyperSpace(params, init_scale=float(hp["init_scale"])).to(ctx.device)
        model = build_model(model_kind, data.shape, data.num_classes, len(params), hyper=True,
                            hidden=int(hp.get("hidden", 256))).to(ctx.device)
        out = fit(model, data, hp, ctx, space=space, max_holes=max_holes)
        start = {p.name: p.constrain(torch.tensor(p.to_unconstrained(p.start))).item() for p in params}
        extra = {"start_dropout": start[names[0]], "start_cutout": start["cutout"]}
        info = {"hparams": out["final"], "final": out["final"], "final_scales": out["final_scales"], "start": start,
                "schedule": out["schedule"], "epochs_run": out["epochs_run"], "hyper_steps": out["hyper_steps"],
                "curve": out["curve"]}
        return RunResult(metrics=_metrics(out, out["final"], extra), info=info)
    steps_per_epoch = math.ceil(len(data.x_train) / int(hp["batch_size"]))
    values_fn, info = values_fn_for(task, method, benchmark, hp, ctx, params, steps_per_epoch)
    model = build_model(model_kind, data.shape, data.num_classes, len(params), hyper=False,
                        hidden=int(hp.get("hidden", 256))).to(ctx.device)
    out = fit(model, data, hp, ctx, values_fn=values_fn, max_holes=max_holes)
    info.update(epochs_run=out["epochs_run"])
    return RunResult(metrics=_metrics(out, info["hparams"]), info=info)


def run_language_model(task, method, benchmark, hp: dict[str, Any], ctx) -> RunResult:
    """The PTB LSTM (card §4.1): the benchmark's ``tune`` list is λ, ``fixed`` the rest."""
    from .data import load_text
    from .lstm import LM_DROPOUT_MAX, STNLanguageModel, fixed_regularisers, lm_hyperparameters
    from .train_lm import batchify, chunks, fit_lm

    settings = benchmark.settings
    data = load_text(benchmark.dataset)
    # Smaller training / validation sets (small scale): regularisation matters sooner, runs are cheaper.
    if settings.get("train_tokens"):
        data.train = data.train[:int(settings["train_tokens"])]
    if settings.get("val_tokens"):
        data.val = data.val[:int(settings["val_tokens"])]
    data = data.to(ctx.device)
    params = lm_hyperparameters(settings, hp)
    fixed = fixed_regularisers(settings)
    constrained = bool(settings.get("hnet_constrained", False))
    stn = method.name in STN_METHODS

    def model(hyper: bool):
        return STNLanguageModel(data.vocab_size, len(params), hyper=hyper, emsize=int(hp["emsize"]),
                                nhid=int(hp["nhid"]), nlayers=int(hp["nlayers"])).to(ctx.device)

    if stn:
        space = HyperSpace(params, init_scale=float(hp["init_scale"])).to(ctx.device)
        out = fit_lm(model(True), data, hp, ctx, params, fixed, space=space, constrained=constrained)
        start = {p.name: p.constrain(torch.tensor(p.to_unconstrained(p.start))).item() for p in params}
        info = {"hparams": out["final"], "final": out["final"], "start": start, "fixed": fixed,
                "schedule": out["schedule"], "epochs_run": out["epochs_run"], "hyper_steps": out["hyper_steps"],
                "curve": out["curve"], "final_lr": out["final_lr"]}
        first_rate = next((p.name for p in params if p.kind == "rate"), None)
        extra = {"start_dropout": start[first_rate]} if first_rate else {}
        return RunResult(metrics=_metrics(out, out["final"], extra), info=info)
    steps = len(chunks(batchify(data.train, int(hp["batch_size"])), int(hp["bptt"])))
    values_fn, info = values_fn_for(task, method, benchmark, hp, ctx, params, steps, clip=LM_DROPOUT_MAX)
    out = fit_lm(model(False), data, hp, ctx, params, fixed, values_fn=values_fn)
    info.update(epochs_run=out["epochs_run"], fixed=fixed, final_lr=out["final_lr"])
    return RunResult(metrics=_metrics(out, info["hparams"]), info=info)
