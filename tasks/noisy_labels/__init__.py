"""noisy_labels: Compressing Features for Learning with Noisy Labels (Chen et al., TNNLS 2022).

Stage one trains CE / Dropout / Nested-Dropout networks on noisy labels; stage two fine-tunes
two stage-one networks A and B with Co-teaching. See README.md for the mapping to the paper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from harness.api import Benchmark, Method, RunContext, RunRef, RunResult, Task

#: Stage-two methods -> the best-of-sweep stage-one method whose networks they start from.
STAGE_ONE_SOURCE = {"dropout_coteach": "dropout_best", "nested_coteach": "nested_best", "ensemble": "nested_best"}
#: Network B of a pair is trained with seed + B_SEED_OFFSET (same noisy labels, other init/order).
B_SEED_OFFSET = 1000
#: Stage-one methods -> compression layer.
COMPRESSION = {"ce": "none", "dropout": "dropout", "nested_dropout": "nested"}


class NoisyLabelsTask(Task):
    root = Path(__file__).parent

    def datasets(self):
        from .data import BUILDERS

        return dict(BUILDERS)

    def requires(self, method: Method, benchmark: Benchmark, seed: int, scale: str) -> list[RunRef]:
        """Best-of-sweep trials (base class), plus for stage two: network A = the selected
        stage-one run at ``seed``; network B = the same grid point at ``seed + 1000``, so A and B
        share every hyperparameter and the noisy labels, and differ in initialisation and batch
        order. Every grid point at ``seed + 1000`` is required because which one matches A is
        only known once A's selection has run."""
        refs = list(super().requires(method, benchmark, seed, scale))
        source = STAGE_ONE_SOURCE.get(method.name)
        if source:
            refs.append(RunRef(self.name, source, benchmark.name, seed))
            select = self.config.methods[source].select
            grid_method = select["from"] if select else source
            refs += [RunRef(self.name, v.variant, benchmark.name, seed + B_SEED_OFFSET)
                     for v in self.config.variants(scale, only=grid_method)]
        return refs

    def run(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        if method.select:
            return self.select_best(method, benchmark, ctx)
        from .run import run_method

        return run_method(self, method, benchmark, dict(config), ctx)

    # -- the task's own figure; the shape claims are analysis.claim_* (Task.claim_function) ---
    def estimate(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], scale: str):
        from .estimate import estimate_run
        from .train import DEFAULT_ARCH

        arch = config.get("arch") or DEFAULT_ARCH[benchmark.dataset]
        return estimate_run(method, benchmark, config, arch, COMPRESSION.get(method.name, "none"))

    def figures(self, runs, scale: str) -> list[tuple[str, str]]:
        from .analysis import figures

        return figures(self, runs, scale)


task = NoisyLabelsTask()
