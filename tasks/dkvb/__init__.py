"""dkvb: Discrete Key-Value Bottleneck (Träuble et al., ICML 2023) in class-incremental learning.

A frozen encoder's embedding is split into C heads by fixed random projections; each head snaps to
its nearest key (keys fitted once by EMA k-means on unlabeled class-disjoint data, then frozen) and
fetches that key's value; the values are the only trained parameters and the default decoder
averages them over codebooks. See README.md for the mapping to the paper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from harness.api import Benchmark, Method, RunContext, RunResult, Task

#: method -> the model it trains (hyperparameters in task.yaml say how).
MODEL_OF = {
    "dkvb": "dkvb", "dkvb_iid": "dkvb", "dkvb_rp": "dkvb", "dkvb_linear_decoder": "dkvb",
    "dkvb_mlp_decoder": "dkvb", "dkvb_ema_keys": "dkvb", "dkvb_few_codebooks": "dkvb", "dkvb_few_pairs": "dkvb",
    "linear_probe": "linear_probe", "linear_probe_iid": "linear_probe", "mlp": "mlp", "mlp_iid": "mlp",
}


class DKVBTask(Task):
    root = Path(__file__).parent

    def datasets(self):
        from .data import BUILDERS

        return dict(BUILDERS)

    def run(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        from .run import run_method

        return run_method(method, benchmark, dict(config), ctx)

    def estimate(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], scale: str):
        from harness.estimate import DEFAULT_GPU, GPUS

        from .estimate import estimate_run

        return estimate_run(MODEL_OF[method.name], config, benchmark.dataset, GPUS[DEFAULT_GPU][0])

    def figures(self, runs, scale: str) -> list[tuple[str, str]]:
        from .analysis import figures

        return figures(self, runs, scale)


task = DKVBTask()
