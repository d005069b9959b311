"""Dispatch of one run: load the embeddings, build the stream, train and evaluate."""

from __future__ import annotations

from typing import Any

from harness.api import RunResult

from . import data as data_mod
from .train import make_stream, train_run

_ARRAYS: dict[str, Any] = {}


def load_arrays(dataset: str) -> dict[str, Any]:
    """The dataset as arrays (cached per process)."""
    if dataset not in _ARRAYS:
        _ARRAYS[dataset] = data_mod.to_arrays(data_mod.load_dataset_dict(dataset))
    return _ARRAYS[dataset]


def run_method(method, benchmark, hp: dict[str, Any], ctx) -> RunResult:
    from . import MODEL_OF

    if method.name not in MODEL_OF:
        raise ValueError(f"dkvb has no method {method.name!r} (known: {', '.join(sorted(MODEL_OF))})")
    stream = make_stream(load_arrays(benchmark.dataset), dict(benchmark.settings), hp, int(ctx.seed))
    return train_run(MODEL_OF[method.name], stream, hp, int(ctx.seed), ctx)
