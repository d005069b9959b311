"""cmim: contrastive MIM against MIM, VAE and InfoNCE, with informative embeddings (Livne, 2025).

Every objective (AE, VAE, A-MIM, cMIM, its sum-of-negatives ablation, InfoNCE with a decoder,
contrastive VAE) trains the same encoder-decoder of its data type; every run then probes the
frozen posterior means and the training-free informative embeddings (mu + pooled decoder
states). See README.md for the mapping to the paper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from harness.api import Benchmark, Method, RunContext, RunResult, Task


class CmimTask(Task):
    root = Path(__file__).parent

    def datasets(self):
        from .data import BUILDERS

        return dict(BUILDERS)

    def run(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        from .run import run_method

        return run_method(self, method, benchmark, dict(config), ctx)

    def estimate(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], scale: str):
        from harness.estimate import DEFAULT_GPU, GPUS

        from .estimate import estimate_run
        from .run import OBJECTIVE_OF

        return estimate_run(OBJECTIVE_OF.get(method.name, method.name), config, benchmark.dataset,
                            benchmark.settings, GPUS[DEFAULT_GPU][0])

    def figures(self, runs, scale: str) -> list[tuple[str, str]]:
        from .analysis import figures

        return figures(self, runs, scale)


task = CmimTask()
