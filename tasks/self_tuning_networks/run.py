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
    ms = [Metric("test_nll", out["test_nll"], False), Metric("test_accuracy", out["test_accuracy"], True),
          Metric("val_nll", out["val_nll"], False), Metric("val_accuracy", out["val_accuracy"], True),
          Metric("cost_epochs", out["cost_epochs"], False), Metric("best_epoch", float(out["best_epoch"]), False)]
    ms += [Metric(f"hp_{k}", float(v), False) for k, v in used.items()]
    ms += [Metric(k, float(v), False) for k, v in (extra or {}).items()]
    return tuple(ms)


def _stn_record(task, benchmark, ctx) -> Mapping[str, Any]:
    return ctx.require(RunRef(task.name, "stn", benchmark.name, int(ctx.seed)))


def _grid_best(task, benchmark, ctx) -> dict[str, float]:
    rec = ctx.require(RunRef(task.name, "grid_search", benchmark.name, int(ctx.seed)))
    return dict(rec["info"]["hparams"])


def values_fn_for(task, method, benchmark, hp, ctx, params, steps_per_epoch: int):
    """(values_fn(epoch, step) -> point, info) for every plain-network method."""
    name, seed = method.name, int(ctx.seed)
    names = [p.name for p in params]
    cut_max = int(benchmark.settings["cutout_max"])
    if name == "grid_trial":
        point = grid_point(names, hp, cut_max)
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
                return {k: min(max(base[k] + std * z, 0.0), DROPOUT_MAX) if k.startswith("dropout") else base[k]
                        for k, z in zip(names, noise)}

            return jitter, {"hparams": base}
        amp, period = float(hp["sin_amplitude"]), float(hp["sin_period_epochs"]) * steps_per_epoch

        def sinusoid(e, s):
            delta = amp * math.sin(2 * math.pi * s / period)
            return {k: min(max(base[k] + delta, 0.0), DROPOUT_MAX) if k.startswith("dropout") else base[k] for k in names}

        return sinusoid, {"hparams": base}
    raise ValueError(f"self_tuning_networks has no plain-network method {name!r}")


def run_method(task, method, benchmark, hp: dict[str, Any], ctx) -> RunResult:
    if method.name == "ridge_check":
        from .ridge import run_ridge

        out = run_ridge(hp, int(ctx.seed), ctx)
        return RunResult(metrics=tuple(Metric(k, v, False) for k, v in out.items()))
    settings = benchmark.settings
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
