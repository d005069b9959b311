"""mask_tuning: Regularized Mask Tuning (R-AMT; Zheng, Wu et al., ICCV 2023).

A frozen CLIP-style model is adapted to a few-shot task by learning only binary masks on the
image encoder's attention weights and patch embedding (AMT), optionally with gradient-dropout
regularity toward zero-shot (R-AMT), against zero-shot, linear-probe, CoOp, Tip-Adapter and
full fine-tuning baselines and two mask controls. At small scale the model is a tiny dual encoder
pre-trained in the DAG (method ``pretrain``, once per seed) on procedurally generated
image-caption pairs; every tuning run ``requires`` it. See README.md for the mapping to the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.api import Benchmark, Method, RunContext, RunRef, RunResult, Task


class MaskTuningTask(Task):
    root = Path(__file__).parent

    def datasets(self):
        from .data import BUILDERS
        from .paper import PAPER_BUILDERS

        return {**BUILDERS, **PAPER_BUILDERS}

    def requires(self, method: Method, benchmark: Benchmark, seed: int, scale: str) -> list[RunRef]:
        """Every tuning run needs the seed's pre-trained dual encoder (small and tiny scale; paper
        scale loads CLIP's released weights instead); the random-mask control also needs the AMT run
        whose per-tensor sparsity it matches."""
        refs = list(super().requires(method, benchmark, seed, scale))
        if method.name == "pretrain":
            return refs
        if method.hyperparameters.get("backbone", "pretrain_run") == "pretrain_run":
            refs.append(RunRef(self.name, "pretrain", "pretrain", seed))
        if method.name == "amt_random":
            refs.append(RunRef(self.name, method.hyperparameters.get("sparsity_from", "amt"), benchmark.name, seed))
        return refs

    def run(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        from .run import run_method

        return run_method(self, method, benchmark, dict(config), ctx)

    def estimate(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], scale: str):
        from .paper import estimate_run

        return estimate_run(method, benchmark, dict(config), scale)

    def figures(self, runs, scale: str) -> list[tuple[str, str]]:
        from .analysis import figures

        return figures(self, runs, scale)


task = MaskTuningTask()
