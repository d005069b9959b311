"""One run: pre-train the dual encoder (method ``pretrain``), or build a few-shot :class:`Setup`
from a benchmark and the required pre-trained run, then train, select and evaluate a method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api import Artifact, Metric, RunRef, RunResult

from . import data as D
from . import model as M
from .train import (
    Setup,
    derive_seed,
    evaluate,
    few_shot_indices,
    pretrain,
    random_masks,
    tune,
)

#: Normalisation of the small-scale images (uint8 / 255 -> (x - mean) / std).
MEAN, STD = 0.5, 0.25
_ARRAYS: dict[str, Any] = {}

HIGHER = {"accuracy": True, "val_accuracy": True, "new_accuracy": True, "harmonic_mean": True,
          "retention": True, "mask_sparsity": False, "pretrain_loss": False, "pretrain_zero_shot_accuracy": True}


def arrays(dataset: str) -> dict[str, dict]:
    if dataset not in _ARRAYS:
        _ARRAYS[dataset] = D.load_arrays(dataset)
    return _ARRAYS[dataset]


def small_config(hp: dict[str, Any]) -> M.ClipConfig:
    return M.ClipConfig(width=int(hp.get("width", 64)), layers=int(hp.get("layers", 3)),
                        text_width=int(hp.get("width", 64)), text_layers=int(hp.get("text_layers", 2)),
                        embed=int(hp.get("width", 64)), vocab=3 + len(D.vocabulary()))


def prep(x: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.ascontiguousarray(x)).float() / 255.0 - MEAN) / STD


def pretrain_ref(task, seed: int) -> RunRef:
    return RunRef(task.name, "pretrain", "pretrain", seed)


def run_pretrain(hp: dict[str, Any], benchmark, ctx) -> RunResult:
    a = arrays(benchmark.dataset)
    cfg = small_config(hp)
    tok = M.WordTokenizer(D.vocabulary(), cfg.context)
    n = min(int(hp.get("pretrain_size") or len(a["train"]["x"])), len(a["train"]["x"]))
    images = prep(a["train"]["x"][:n])
    tokens, eos = tok(a["train"]["caption"][:n])
    weights, losses = pretrain(cfg, images, tokens, eos, hp, int(ctx.seed), ctx.log)
    # zero-shot accuracy on the clean held-in distribution: 64 shape x colour prompts
    _, r_prompts = D.retention_classes()
    val = a["val"]
    y = torch.from_numpy(val["shape"] * 8 + val["colour"])
    s = Setup(cfg, weights, tok, prep, r_prompts, list(range(64)), [], prep(val["x"][:0]), y[:0],
              prep(val["x"]), y, prep(val["x"][:0]), y[:0], prep(val["x"][:0]), y[:0], r_prompts)
    from .train import Classifier, zero_shot_head

    zs = evaluate(s, Classifier(weights, zero_shot_head(s)), val_only=True)["val_accuracy"]
    out = Path(ctx.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"config": cfg.__dict__, "weights": weights}, out / "clip.pt")
    return RunResult(metrics=(Metric("pretrain_loss", losses[-1], False),
                              Metric("pretrain_zero_shot_accuracy", zs, True)),
                     artifacts=(Artifact("model", "clip.pt"),),
                     info={"loss_curve": losses, "temperature": float(1 / M.logit_scale(weights)),
                           "pairs": n, "parameters": int(sum(v.numel() for v in weights.values()))})


def load_pretrained(task, ctx) -> tuple[M.ClipConfig, dict[str, torch.Tensor]]:
    state = torch.load(ctx.artifact_path(pretrain_ref(task, int(ctx.seed)), "model"), weights_only=True)
    return M.ClipConfig(**state["config"]), state["weights"]


def make_setup(task, benchmark, hp: dict[str, Any], ctx) -> Setup:
    """The frozen model and the benchmark's few-shot split for this seed."""
    settings = dict(benchmark.settings)
    if hp.get("backbone", "pretrain_run") != "pretrain_run":
        from .paper import paper_setup

        return paper_setup(benchmark, hp, ctx)
    cfg, weights = load_pretrained(task, ctx)
    tok = M.WordTokenizer(D.vocabulary(), cfg.context)
    a = arrays(benchmark.dataset)
    prompts = a["train"]["names"]
    new = list(settings.get("new_classes") or [])
    tuned = [c for c in range(len(prompts)) if c not in new]
    shots = int(settings["shots"])
    tr, va = few_shot_indices(a["train"]["y"], tuned, shots, int(hp.get("val_shots", 4)),
                              int(ctx.seed), f"{benchmark.dataset}:shots")
    pos = {c: i for i, c in enumerate(tuned)}
    remap = lambda y: torch.tensor([pos[int(v)] for v in y], dtype=torch.long)
    n_test = int(hp.get("test_size") or len(a["test"]["y"]))
    n_ret = int(hp.get("retention_size") or len(a["retention"]["y"]))
    return Setup(cfg, weights, tok, prep, prompts, tuned, new,
                 prep(a["train"]["x"][tr]), remap(a["train"]["y"][tr]),
                 prep(a["train"]["x"][va]), remap(a["train"]["y"][va]),
                 prep(a["test"]["x"][:n_test]), torch.from_numpy(a["test"]["y"][:n_test]),
                 prep(a["retention"]["x"][:n_ret]), torch.from_numpy(a["retention"]["y"][:n_ret]),
                 a["retention"]["names"])


def run_method(task, method, benchmark, hp: dict[str, Any], ctx) -> RunResult:
    torch.manual_seed(derive_seed(int(ctx.seed), "torch"))
    if method.name == "pretrain":
        return run_pretrain(hp, benchmark, ctx)
    s = make_setup(task, benchmark, hp, ctx)
    if hp.get("steps") is None:  # paper scale: epochs over the few-shot set
        hp["steps"] = int(hp.get("epochs", 30)) * -(-len(s.x_train) // int(hp.get("batch_size", 32)))
    if method.name == "amt_random":
        source = ctx.require(RunRef(task.name, hp.get("sparsity_from", "amt"), benchmark.name, int(ctx.seed)))
        per = (source.get("info") or {}).get("sparsity_per_tensor")
        if not per:
            raise ValueError(f"{hp.get('sparsity_from', 'amt')} run of {benchmark.name} seed {ctx.seed} has no "
                             "per-tensor sparsity to match")
        clf = random_masks(s, per, int(ctx.seed))
        metrics = evaluate(s, clf)
        metrics["mask_sparsity"] = clf.info["mask_sparsity"]
        info = dict(clf.info)
    else:
        metrics, info = tune(method.name, s, hp, int(ctx.seed), ctx.log)
    info.update(shots=int(dict(benchmark.settings).get("shots", 0)), train_images=len(s.x_train),
                tuned_classes=len(s.tuned), new_classes=len(s.new), metrics={k: float(v) for k, v in metrics.items()})
    return RunResult(metrics=tuple(Metric(k, float(v), HIGHER.get(k, True)) for k, v in metrics.items()),
                     info=info)
