"""Dispatch of one run: load data, add noise, build or load networks, train, evaluate."""

from __future__ import annotations

from typing import Any

import torch

from harness.api import RunRef, RunResult

from . import data as data_mod
from .train import (DEFAULT_ARCH, STREAM_COTEACH, derive_seed, evaluate_ensemble, make_train_data,
                    net_from_artifact, train_coteach, train_stage_one)

_ARRAYS: dict[str, Any] = {}


def load_arrays(dataset: str) -> data_mod.Arrays:
    """The dataset as arrays (cached per process)."""
    if dataset not in _ARRAYS:
        _ARRAYS[dataset] = data_mod.to_arrays(data_mod.load_dataset_dict(dataset))
    return _ARRAYS[dataset]


def resolve_forget_rate(hp: dict[str, Any], data) -> float:
    """``forget_rate: null`` -> the realised fraction of corrupted training labels (card §9)."""
    fr = hp.get("forget_rate")
    return float(data.noise_fraction if fr is None else fr)


def load_pair(task, method, benchmark, ctx) -> tuple[list, dict[str, Any], str]:
    """Networks A (selected stage-one run at ctx.seed) and B (same grid point at seed + 1000)."""
    from . import B_SEED_OFFSET, STAGE_ONE_SOURCE

    source = STAGE_ONE_SOURCE[method.name]
    ref_a = RunRef(task.name, source, benchmark.name, int(ctx.seed))
    blob_a = torch.load(ctx.artifact_path(ref_a, "model"), map_location="cpu", weights_only=True)
    ref_b = RunRef(task.name, blob_a["variant"], benchmark.name, int(ctx.seed) + B_SEED_OFFSET)
    blob_b = torch.load(ctx.artifact_path(ref_b, "model"), map_location="cpu", weights_only=True)
    if blob_b["variant"] != blob_a["variant"]:
        raise RuntimeError(f"network B is {blob_b['variant']!r}, expected {blob_a['variant']!r}")
    nets = [net_from_artifact(blob_a, ctx.device), net_from_artifact(blob_b, ctx.device)]
    info = {"stage_one": {"A": {"variant": blob_a["variant"], "seed": int(blob_a["seed"]), "k_star": blob_a["k_star"]},
                          "B": {"variant": blob_b["variant"], "seed": int(blob_b["seed"]), "k_star": blob_b["k_star"]}}}
    return nets, info, blob_a["meta"]["arch"]


def run_method(task, method, benchmark, hp: dict[str, Any], ctx) -> RunResult:
    from . import COMPRESSION

    arrays = load_arrays(benchmark.dataset)
    arch = hp.get("arch") or DEFAULT_ARCH[benchmark.dataset]
    data = make_train_data(arrays, benchmark.dataset, benchmark.settings, int(ctx.seed), ctx.device,
                           augment=bool(hp.get("augment", False)))
    name = method.name
    if name in COMPRESSION:
        return train_stage_one(data, hp, COMPRESSION[name], ctx, arch, method.variant)
    if name == "coteaching":
        from .models import build_model

        torch.manual_seed(derive_seed(int(ctx.seed), STREAM_COTEACH))
        nets = [build_model(arch, data.in_dim, data.num_classes, int(hp["feature_dim"]), "none",
                            hidden=int(hp.get("hidden", 256)), channels=int(hp.get("channels", 32))).to(ctx.device)
                for _ in range(2)]
        return train_coteach(data, hp, nets, ctx, finetune=False, variant=method.variant,
                             forget_rate=resolve_forget_rate(hp, data),
                             ramp_epochs=int(hp.get("forget_ramp_epochs", 0)), arch=arch)
    if name in ("dropout_coteach", "nested_coteach"):
        nets, info, arch = load_pair(task, method, benchmark, ctx)
        return train_coteach(data, hp, nets, ctx, finetune=True, variant=method.variant,
                             forget_rate=resolve_forget_rate(hp, data),
                             ramp_epochs=int(hp.get("forget_ramp_epochs", 0)), info_extra=info, arch=arch)
    if name == "ensemble":
        nets, info, arch = load_pair(task, method, benchmark, ctx)
        return evaluate_ensemble(data, nets, ctx, variant=method.variant, arch=arch, hp=hp, info_extra=info)
    raise ValueError(f"noisy_labels has no method {name!r}")
