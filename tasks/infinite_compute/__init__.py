"""infinite_compute: Pre-training under infinite compute (Kim, Kotha, Liang, Hashimoto, 2025).

Data-constrained pre-training: a fixed token budget D, recipes compared by the asymptotes of
their scaling laws. Standard (wd 0.1) and regularized (LR/epochs/wd jointly tuned) searches
are chains of cached probe runs; ensemble members, teachers, samples and students are separate
runs linked through ``requires``. See README.md for the mapping to the paper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from harness.api import Benchmark, Method, RunContext, RunRef, RunResult, Task

from .data import MEMBER_SEED_STRIDE, study_seed


class InfiniteComputeTask(Task):
    root = Path(__file__).parent

    def datasets(self):
        from .data import BUILDERS

        return dict(BUILDERS)

    def requires(self, method: Method, benchmark: Benchmark, seed: int, scale: str) -> list[RunRef]:
        """Search step k needs steps 0..k-1 of its chain; a summary needs its whole chain; members
        need the regularized optimum of their study seed; ensembles, samplers and soups need their
        members (seeds s + 1000 k); students need the teacher samples."""
        from .refs import chain_refs, member_seeds, teacher_seeds

        refs = list(super().requires(method, benchmark, seed, scale))
        hp, point, name = method.hyperparameters, method.grid_point, method.name
        cfg = self.config

        def ref(variant: str, s: int) -> RunRef:
            return RunRef(self.name, cfg.resolve(scale, variant).variant, benchmark.name, s)

        if name in ("standard_search", "regularized_search"):
            refs += chain_refs(self, name, point["size"], benchmark, seed, scale, before=int(point["step"]))
        elif name in ("standard", "regularized"):
            refs += chain_refs(self, f"{name}_search", point["size"], benchmark, seed, scale)
        elif name == "ensemble_member":
            refs.append(ref(f"regularized[size={point['size']}]", study_seed(seed)))
        elif name == "single_opt_member":
            refs.append(ref(f"regularized[size={hp['member_size']}]", study_seed(seed)))
        elif name == "ensemble":
            refs += [ref(f"ensemble_member[size={point['size']}]", s) for s in member_seeds(seed, hp["n_members"])]
        elif name == "ensemble_single_opt":
            refs += [ref("single_opt_member", s) for s in member_seeds(seed, hp["n_members"])]
        elif name == "teacher_samples":
            refs += [ref(f"ensemble_member[size={hp['member_size']}]", s)
                     for s in teacher_seeds(point["source"], seed, hp)]
        elif name == "distill":
            refs.append(ref("teacher_samples[source=ensemble]", seed))
        elif name in ("self_distill", "synthetic_only"):
            refs.append(ref("teacher_samples[source=self]", seed))
        elif name == "soup":
            refs += [ref(f"ensemble_member[size={hp['member_size']}]", s) for s in member_seeds(seed, 2)]
        return refs

    def run(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        from .run import run_method

        return run_method(self, method, benchmark, dict(config), ctx)

    def estimate(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], scale: str):
        from .estimate import estimate_run

        return estimate_run(method, benchmark, dict(config))

    # -- figures; the shape claims are analysis.claim_* (found by Task.claim_function) -----------
    def figures(self, runs, scale: str) -> list[tuple[str, str]]:
        from .analysis import figures

        return figures(self, runs, scale)


task = InfiniteComputeTask()
__all__ = ["task", "InfiniteComputeTask", "MEMBER_SEED_STRIDE"]
