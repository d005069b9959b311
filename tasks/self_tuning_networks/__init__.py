"""self_tuning_networks: Self-Tuning Networks (MacKay, Vicol et al., ICLR 2019).

STN layers gate every hidden unit by the hyperparameters and learn dropout and cutout schedules
online; compared with grid / random / TPE search at recorded compute, with schedule replay and
the fixed / jittered / sinusoidal controls of the paper's Table 1. See README.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from harness.api import Benchmark, Method, Metric, RunContext, RunRef, RunResult, Task

#: Methods that train from another run's record -> the method they read.
READS = {"stn_replay": "stn", "stn_final": "stn", "best_fixed_jitter": "grid_search",
         "best_fixed_sinusoid": "grid_search"}


class SelfTuningNetworksTask(Task):
    root = Path(__file__).parent

    def datasets(self):
        from .data import BUILDERS

        return dict(BUILDERS)

    def requires(self, method: Method, benchmark: Benchmark, seed: int, scale: str) -> list[RunRef]:
        """Search selections need their trials (base class); replay/final need the STN run; the
        jitter/sinusoid controls need the grid selection; TPE trial k needs trials 0..k-1."""
        refs = list(super().requires(method, benchmark, seed, scale))
        if method.name in READS:
            refs.append(RunRef(self.name, READS[method.name], benchmark.name, seed))
        if method.name == "tpe_trial":
            refs += [RunRef(self.name, f"tpe_trial[trial={k}]", benchmark.name, seed)
                     for k in range(int(method.hyperparameters["trial"]))]
        return refs

    def run(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        if method.select:
            return self.select_best(method, benchmark, ctx)
        from .run import run_method

        return run_method(self, method, benchmark, dict(config), ctx)

    def select_best(self, method: Method, benchmark: Benchmark, ctx: RunContext) -> RunResult:
        """Best trial on validation NLL; ``cost_epochs`` becomes the whole search's compute."""
        best = super().select_best(method, benchmark, ctx)
        refs = self.requires(method, benchmark, ctx.seed, ctx.scale)
        cost = 0.0
        for ref in refs:
            rec = ctx.require(ref)
            cost += next((m["value"] for m in rec["metrics"] if m["name"] == "cost_epochs"), 0.0) or 0.0
        metrics = tuple(m for m in best.metrics if m.name != "cost_epochs") + (
            Metric("cost_epochs", cost, False), Metric("n_trials", float(len(refs)), False))
        return RunResult(metrics=metrics, status=best.status, info=dict(best.info))

    # -- report figures; the shape claims are analysis.claim_* (Task.claim_function) --------
    def estimate(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], scale: str):
        from .estimate import estimate_run
        from .run import STN_METHODS

        return estimate_run(method, benchmark, config, stn=method.name in STN_METHODS)

    def figures(self, runs, scale: str) -> list[tuple[str, str]]:
        from .analysis import figures

        return figures(runs, scale)


task = SelfTuningNetworksTask()
