"""A minimal in-memory RunContext for unit tests of the noisy_labels task."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import torch

from harness.api import RunContext, RunRef


class Interrupted(RuntimeError):
    """Raised by FakeCtx.checkpoint after ``interrupt_after`` checkpoints."""


class FakeCtx(RunContext):
    """Curves in memory, checkpoints serialised through torch.save (as the runner does),
    required runs resolved from ``runs`` = {(variant, seed): out_dir}; a best-of-sweep name
    maps through ``selected`` = {(variant, seed): trial variant}."""

    def __init__(self, seed: int, out_dir: Path, *, scale: str = "tiny", store: dict | None = None,
                 interrupt_after: int | None = None, runs: Mapping | None = None,
                 selected: Mapping | None = None):
        self.seed = seed
        self.device = "cpu"
        self.scale = scale
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.curves: dict[str, list[dict[str, Any]]] = {}
        self.store = store if store is not None else {}
        self.interrupt_after = interrupt_after
        self.n_checkpoints = 0
        self.runs = dict(runs or {})
        self.selected = dict(selected or {})

    def log(self, step: int, curve: str = "train", **metrics: float) -> None:
        self.curves.setdefault(curve, []).append({"step": int(step), **metrics})

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(dict(state), buf)
        self.store["ckpt"] = buf.getvalue()
        self.n_checkpoints += 1
        if self.interrupt_after is not None and self.n_checkpoints >= self.interrupt_after:
            raise Interrupted(f"interrupted after checkpoint {self.n_checkpoints}")

    def restore(self):
        if "ckpt" not in self.store:
            return None
        return torch.load(io.BytesIO(self.store["ckpt"]), weights_only=False)

    def progress(self, iterable, total=None, desc=""):
        return iterable

    def require(self, ref: RunRef) -> Mapping[str, Any]:
        key = (ref.variant, ref.seed)
        if key in self.selected:
            return {"status": "ok", "info": {"selected": self.selected[key]}, "artifacts": []}
        return {"status": "ok", "info": {}, "artifacts": [{"name": "model", "path": "model.pt"}]}

    def artifact_path(self, ref: RunRef, name: str) -> Path:
        key = (ref.variant, ref.seed)
        if key in self.selected:
            key = (self.selected[key], ref.seed)
        return Path(self.runs[key]) / "model.pt"

    def data_dir(self, dataset: str) -> Path:  # pragma: no cover - not used
        raise NotImplementedError
