"""One run of each method. Which runs a run needs is in ``InfiniteComputeTask.requires``;
here each method reads those records/artifacts and trains or evaluates.

Methods (card §3.2):
  standard_search / regularized_search  one probe of the locally-optimal search (search.py)
  standard / regularized                the certified optimum of a size's search chain
  ensemble_member                       a member with (2x epochs, 1/2 wd, same LR) of the regularized optimum
  single_opt_member                     a member with the single-model optimum itself
  ensemble / ensemble_single_opt        logit-averaged NLL for K = 1..n_members and the A/K^b + C fit
  teacher_samples                       unconditional samples (T=1) pooled from the teachers
  distill / self_distill / synthetic_only   students trained from scratch on real:synthetic mixes
  soup                                  uniform weight average of two independently initialised members
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
import torch

from harness.api import Artifact, Metric, RunResult

from . import search
from .data import load_budget, load_test, study_seed
from .fits import fit_power_law
from .refs import _ref, chain_refs, member_seeds, teacher_seeds
from .model import LlamaLM, ModelConfig
from .train import (TrainConfig, average_weights, ensemble_losses, eval_loss, load_model, save_model,
                    total_steps, train_lm)

LOWER = False  # higher_is_better for losses


# -- shared pieces -----------------------------------------------------------------------------

def model_config(config: Mapping[str, Any], size: str) -> ModelConfig:
    sizes = config["sizes"]
    if size not in sizes:
        raise KeyError(f"size {size!r} is not under 'sizes' in task.yaml (known: {', '.join(sizes)})")
    spec = dict(sizes[size])
    spec.pop("micro_batch", None)  # a training knob kept beside the size it is sized for
    return ModelConfig(vocab_size=int(config["vocab_size"]), max_seq_len=int(config["seq_len"]),
                       n_head=int(spec.pop("n_head", config.get("n_head", 4))), **spec)


def train_config(config: Mapping[str, Any], epochs: float, lr: float, wd: float, syn_weight: float = 0.0) -> TrainConfig:
    return TrainConfig(epochs=float(epochs), lr=float(lr), weight_decay=float(wd), batch_size=int(config["batch_size"]),
                       warmup_frac=float(config["warmup_frac"]), clip=float(config["clip"]), syn_weight=syn_weight,
                       ckpt_every=int(config["ckpt_every"]), log_every=int(config["log_every"]),
                       compile=bool(config.get("compile", False)), micro_batch=int(config.get("micro_batch", 0)),
                       ce_chunk=int(config.get("ce_chunk", 0)))


def eval_kw(config: Mapping[str, Any]) -> dict:
    """Evaluation slicing: ``eval_batch`` windows per forward, ``ce_chunk`` tokens of logits at a time."""
    return {"batch": int(config.get("eval_batch", 64)), "chunk": int(config.get("ce_chunk", 0))}


def train_and_eval(config, size: str, tc: TrainConfig, bench, ctx, syn_windows=None, train_on=None) -> tuple[LlamaLM, dict]:
    """Fresh model of ``size`` (init from the run's seed), trained by ``tc``; val, test and train NLL."""
    train, val = load_budget(bench, ctx.seed, config)
    micro = (config["sizes"].get(size) or {}).get("micro_batch")
    if micro:  # the size's own micro-batch (paper scale); the update is the same as one pass
        tc = dataclasses.replace(tc, micro_batch=int(micro))
    torch.manual_seed(ctx.seed)  # init depends on the seed only, not on leftover RNG state
    model = LlamaLM(model_config(config, size)).to(ctx.device)
    stats = train_lm(model, train if train_on is None else train_on, tc, ctx.seed, ctx.device, ctx,
                     syn_windows=syn_windows)
    ev = eval_kw(config)
    out = {"val_loss": eval_loss(model, val, ctx.device, **ev), "train_loss": eval_loss(model, train, ctx.device, **ev),
           "test_loss": eval_loss(model, load_test(bench, config), ctx.device, **ev),
           "n_params": model.num_params(non_embedding=True), "n_params_total": model.num_params(), **stats}
    return model, out


def loss_metrics(r: Mapping[str, Any], **extra: float) -> tuple[Metric, ...]:
    ms = [Metric("val_loss", r["val_loss"], LOWER), Metric("train_loss", r["train_loss"], LOWER),
          Metric("test_loss", r["test_loss"], LOWER), Metric("n_params", float(r["n_params"]), LOWER)]
    return tuple(ms + [Metric(k, float(v), LOWER) for k, v in extra.items()])


def json_safe(obj):
    """Info must be strict JSON: non-finite floats become None (a failed fit, an off-grid neighbour)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- the search chain ----------------------------------------------------------------------------

def search_space(method_name: str, config: Mapping[str, Any]) -> tuple[dict, dict, dict]:
    """(grids of the tuned axes, start point, fixed values) of a recipe's search."""
    g = config["search_grid"]
    if method_name.startswith("standard"):
        grids = {"epochs": list(g["epochs"]), "lr": list(g["lr"])}
        return grids, dict(config["standard_start"]), {"wd": float(config["standard_wd"])}
    grids = {"epochs": list(g["epochs"]), "lr": list(g["lr"]), "wd": list(g["wd"])}
    return grids, dict(config["regularized_start"]), {}


def evaluated_points(ctx, refs, loss: str = "val_loss") -> list[tuple[dict, float]]:
    """(point, loss) of the chain's trained probes; ``loss`` "test_loss" only to measure, never to select."""
    out = []
    for ref in refs:
        info = ctx.require(ref).get("info") or {}
        if not info.get("noop"):
            out.append((dict(info["point"]), float(info[loss])))
    return out


def run_probe(task, method, bench, config, ctx) -> RunResult:
    size, step = method.grid_point["size"], int(method.grid_point["step"])
    grids, start, fixed = search_space(method.name, config)
    evaluated = evaluated_points(ctx, chain_refs(task, method.name, size, bench, ctx.seed, ctx.scale, before=step))
    point = search.next_probe(evaluated, start, grids)
    if point is None:  # the chain certified its optimum earlier: nothing left to train
        cert = search.certificate(evaluated, grids)
        return RunResult(metrics=(Metric("val_loss", cert["val_loss"], LOWER),),
                         info={"noop": True, "certified": True, "best_point": cert["point"], "size": size})
    hp = {**point, **fixed}
    _, r = train_and_eval(config, size, train_config(config, hp["epochs"], hp["lr"], hp["wd"]), bench, ctx)
    return RunResult(metrics=loss_metrics(r, epochs=hp["epochs"], lr=hp["lr"], wd=hp["wd"]),
                     info={"noop": False, "point": point, "hyperparameters": hp, "val_loss": r["val_loss"],
                           "train_loss": r["train_loss"], "test_loss": r["test_loss"], "n_params": r["n_params"], "size": size,
                           "steps": r["steps"], "tokens": r["tokens"]})


def summarize_search(task, method, bench, config, ctx) -> RunResult:
    """The best probe of the size's chain, whether it is certified, and the U-shape in epochs."""
    size = method.grid_point["size"]
    search_method = f"{method.name}_search"
    grids, _, fixed = search_space(search_method, config)
    refs = chain_refs(task, search_method, size, bench, ctx.seed, ctx.scale)
    evaluated = evaluated_points(ctx, refs)
    cert = search.certificate(evaluated, grids)
    if cert["point"] is None:
        return RunResult(metrics=(Metric("val_loss", math.nan, LOWER),), status="diverged", info={"size": size})
    winner = next(ctx.require(r) for r in refs if not (ctx.require(r).get("info") or {}).get("noop")
                  and search.key(ctx.require(r)["info"]["point"]) == search.key(cert["point"]))
    w = winner["info"]
    lo, hi = search.axis_neighbour_losses(evaluated, cert["point"], grids, "epochs")
    # Depth of the U in epochs: how much worse the nearer side is; 0 when a side is off the grid.
    # On validation it is >= 0 by construction (the optimum was chosen there); on the held-out
    # test set a flat curve gives a depth around 0 either side, so the U-shape claim can fail.
    u_depth = min(lo, hi) - cert["val_loss"] if lo is not None and hi is not None else 0.0
    lo_t, hi_t = search.axis_neighbour_losses(evaluated_points(ctx, refs, "test_loss"), cert["point"], grids, "epochs")
    u_depth_test = min(lo_t, hi_t) - w["test_loss"] if lo_t is not None and hi_t is not None else math.nan
    hp = {**cert["point"], **fixed}
    # An off-grid neighbour leaves the test depth out (a NaN metric would mark the run diverged).
    extra = {"epoch_u_depth_test": u_depth_test} if math.isfinite(u_depth_test) else {}
    metrics = loss_metrics(w, epochs=hp["epochs"], lr=hp["lr"], wd=hp["wd"], certified=float(cert["certified"]),
                           epoch_u_depth=u_depth, n_probes=len(evaluated), **extra)
    return RunResult(metrics=metrics, info={
        "selected": winner["variant"], "selected_run_id": winner["run_id"], "point": cert["point"],
        "hyperparameters": hp, "certified": cert["certified"], "neighbours": cert["neighbours"],
        "size": size, "n_params": w["n_params"], "val_loss": w["val_loss"], "train_loss": w["train_loss"],
        "test_loss": w["test_loss"],
        "probes": [{"point": p, "val_loss": l} for p, l in evaluated]})


# -- ensembles --------------------------------------------------------------------------------

def member_source(method_name: str, config: Mapping[str, Any], size: str | None) -> tuple[str, float, float]:
    """(regularized variant to read, epoch factor, wd factor) of a member method."""
    if method_name == "ensemble_member":
        return f"regularized[size={size}]", float(config["member_epoch_factor"]), float(config["member_wd_factor"])
    return f"regularized[size={config['member_size']}]", 1.0, 1.0


def run_member(task, method, bench, config, ctx) -> RunResult:
    size = method.grid_point.get("size") or config["member_size"]
    source, e_factor, wd_factor = member_source(method.name, config, size)
    opt = ctx.require(_ref(task, task.config.resolve(ctx.scale, source).variant, bench, study_seed(ctx.seed)))["info"]
    hp = dict(opt["hyperparameters"])
    hp = {"epochs": hp["epochs"] * e_factor, "lr": hp["lr"], "wd": hp["wd"] * wd_factor}
    model, r = train_and_eval(config, size, train_config(config, hp["epochs"], hp["lr"], hp["wd"]), bench, ctx)
    save_model(model, ctx.out_dir / "model.pt")
    return RunResult(metrics=loss_metrics(r, epochs=hp["epochs"], lr=hp["lr"], wd=hp["wd"]),
                     artifacts=(Artifact("model", "model.pt"),),
                     info={"size": size, "hyperparameters": hp, "source_optimum": opt["hyperparameters"],
                           "val_loss": r["val_loss"], "test_loss": r["test_loss"], "n_params": r["n_params"],
                           "steps": r["steps"]})


def member_variant(task, method_name: str, config, size: str | None, scale: str) -> str:
    if method_name in ("ensemble", "ensemble_member"):
        return task.config.resolve(scale, f"ensemble_member[size={size}]").variant
    return task.config.resolve(scale, "single_opt_member").variant


def load_members(task, variant: str, bench, seeds, ctx) -> list[LlamaLM]:
    return [load_model(ctx.artifact_path(_ref(task, variant, bench, s), "model"), ctx.device) for s in seeds]


def run_ensemble(task, method, bench, config, ctx) -> RunResult:
    size = method.grid_point.get("size") or config["member_size"]
    variant = member_variant(task, method.name, config, size, ctx.scale)
    seeds = member_seeds(ctx.seed, int(config["n_members"]))
    models = load_members(task, variant, bench, seeds, ctx)
    _, val = load_budget(bench, ctx.seed, config)
    losses = ensemble_losses(models, val, ctx.device, **eval_kw(config))
    test_losses = ensemble_losses(models, load_test(bench, config), ctx.device, **eval_kw(config))
    infos = [ctx.require(_ref(task, variant, bench, s))["info"] for s in seeds]
    singles = [float(i["val_loss"]) for i in infos]
    fit = fit_power_law(np.arange(1, len(losses) + 1), losses)
    extra = {f"val_loss_k{k + 1}": v for k, v in enumerate(losses)}
    extra.update({f"test_loss_k{k + 1}": v for k, v in enumerate(test_losses)})
    extra.update(member_val_loss=float(np.mean(singles)), member_test_loss=float(np.mean([i["test_loss"] for i in infos])),
                 test_loss=test_losses[-1], n_members=len(losses))
    if fit["ok"]:  # a failed fit leaves the metric out rather than marking the run diverged
        extra["ens_asymptote"] = fit["E"]
    metrics = (Metric("val_loss", losses[-1], LOWER), Metric("n_params", float(models[0].num_params(True)), LOWER),
               *(Metric(k, float(v), LOWER) for k, v in extra.items()))
    return RunResult(metrics=metrics, info={"size": size, "losses_by_k": losses, "test_losses_by_k": test_losses,
                                            "member_losses": singles,
                                            "fit": fit, "n_params": models[0].num_params(True),
                                            "member_variant": variant, "member_seeds": seeds})


def run_soup(task, method, bench, config, ctx) -> RunResult:
    variant = member_variant(task, "ensemble", config, config["member_size"], ctx.scale)
    models = load_members(task, variant, bench, member_seeds(ctx.seed, 2), ctx)
    _, val = load_budget(bench, ctx.seed, config)
    ev = eval_kw(config)
    soup_loss = eval_loss(average_weights(models), val, ctx.device, **ev)
    ens = ensemble_losses(models, val, ctx.device, **ev)
    test = load_test(bench, config)
    soup_test = eval_loss(average_weights(models), test, ctx.device, **ev)
    ens_test = ensemble_losses(models, test, ctx.device, **ev)
    return RunResult(metrics=(Metric("val_loss", soup_loss, LOWER), Metric("ens2_val_loss", ens[1], LOWER),
                              Metric("member_val_loss", float(np.mean([ens[0], eval_loss(models[1], val, ctx.device, **ev)])), LOWER),
                              Metric("test_loss", soup_test, LOWER), Metric("ens2_test_loss", ens_test[1], LOWER)),
                     info={"soup_val_loss": soup_loss, "logit_average_val_loss": ens[1],
                           "soup_test_loss": soup_test, "logit_average_test_loss": ens_test[1]})


# -- distillation -------------------------------------------------------------------------------

def separator_id(config: Mapping[str, Any]) -> int:
    """The document separator: the last id of the vocabulary (byte EOS 256 of 257; the tokenizer's
    vocabulary size at paper scale, data.build_dclm appends it after each document)."""
    return int(config["vocab_size"]) - 1


def sample_dtype(vocab_size: int):
    """Smallest integer type holding every token id (int16 overflows a 128K vocabulary)."""
    return np.int16 if vocab_size <= np.iinfo(np.int16).max else np.int32


def run_teacher_samples(task, method, bench, config, ctx) -> RunResult:
    """Pooled unconditional samples: equal shares from each teacher (the paper's 'mix8seeds' set)."""
    source = method.grid_point["source"]
    d = config["distill"]
    variant = member_variant(task, "ensemble", config, config["member_size"], ctx.scale)
    seeds = teacher_seeds(source, ctx.seed, config)
    models = load_members(task, variant, bench, seeds, ctx)
    seq_len = int(config["seq_len"])
    eos = separator_id(config)
    n_total = int(float(d["sample_factor"]) * int(config["train_tokens"])) // seq_len
    shares = [n_total // len(models) + (1 if k < n_total % len(models) else 0) for k in range(len(models))]
    chunks = []
    for k, (model, n) in enumerate(zip(models, shares)):
        gen = torch.Generator(device=ctx.device).manual_seed(int(ctx.seed) * 1009 + k)
        model.eval()
        for i in range(0, n, int(d["sample_batch"])):
            b = min(int(d["sample_batch"]), n - i)
            s = model.sample(b, seq_len, gen, temperature=float(d["temperature"]), bos=eos)
            chunks.append(torch.cat([torch.full((b, 1), eos, dtype=torch.long, device=s.device), s], 1).cpu())
    windows = torch.cat(chunks).numpy().astype(sample_dtype(int(config["vocab_size"])))
    np.save(ctx.out_dir / "samples.npy", windows)
    eos_rate = float((windows[:, 1:] == eos).mean())
    return RunResult(metrics=(Metric("sample_tokens", float(windows[:, 1:].size), True),
                              Metric("sample_eos_rate", eos_rate, LOWER)),
                     artifacts=(Artifact("samples", "samples.npy"),),
                     info={"source": source, "teacher_seeds": seeds, "shares": shares, "teacher_variant": variant})


def run_student(task, method, bench, config, ctx) -> RunResult:
    d = config["distill"]
    source = "ensemble" if method.name == "distill" else "self"
    samples_variant = task.config.resolve(ctx.scale, f"teacher_samples[source={source}]").variant
    syn = np.load(ctx.artifact_path(_ref(task, samples_variant, bench, ctx.seed), "samples")).astype(np.int64)
    size = config["member_size"]
    if method.name == "synthetic_only":
        # Same number of steps and batch as the self-distilled student, every row synthetic.
        mixed = train_config(config, d["real_epochs"], d["lr"], d["wd"], syn_weight=float(d["syn_weight"]))
        n_real = load_budget(bench, ctx.seed, config)[0].shape[0]
        steps = total_steps(n_real, mixed)
        tc = train_config(config, steps * int(config["batch_size"]) / len(syn), d["lr"], d["wd"])
        model, r = train_and_eval(config, size, tc, bench, ctx, train_on=syn)
    else:
        tc = train_config(config, d["real_epochs"], d["lr"], d["wd"], syn_weight=float(d["syn_weight"]))
        model, r = train_and_eval(config, size, tc, bench, ctx, syn_windows=syn)
    return RunResult(metrics=loss_metrics(r), info={"size": size, "source": source, "val_loss": r["val_loss"],
                                                    "test_loss": r["test_loss"],
                                                    "n_params": r["n_params"], "steps": r["steps"],
                                                    "syn_weight": 1.0 if method.name == "synthetic_only" else d["syn_weight"]})


DISPATCH = {
    "standard_search": run_probe, "regularized_search": run_probe,
    "standard": summarize_search, "regularized": summarize_search,
    "ensemble_member": run_member, "single_opt_member": run_member,
    "ensemble": run_ensemble, "ensemble_single_opt": run_ensemble,
    "teacher_samples": run_teacher_samples,
    "distill": run_student, "self_distill": run_student, "synthetic_only": run_student,
    "soup": run_soup,
}


def run_method(task, method, bench, config, ctx) -> RunResult:
    if method.name not in DISPATCH:
        raise KeyError(f"infinite_compute has no implementation of method {method.name!r}")
    result = DISPATCH[method.name](task, method, bench, dict(config), ctx)
    return RunResult(metrics=result.metrics, artifacts=result.artifacts, status=result.status,
                     info=json_safe(dict(result.info)))
