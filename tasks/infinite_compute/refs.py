"""Which runs a run reads: the pure (torch-free) pieces of the DAG edges.

``InfiniteComputeTask.requires`` runs at planning time (``snakemake -n``, ``harness plan``) for
every run of the study; keeping these helpers out of run.py (which imports torch) keeps planning
free of torch's import cost.
"""

from __future__ import annotations

from typing import Any

from harness.api import RunRef

from .data import MEMBER_SEED_STRIDE


def _ref(task, variant: str, bench, seed: int) -> RunRef:
    return RunRef(task.name, variant, bench.name, seed)


def member_seeds(seed: int, n: int) -> list[int]:
    """Seeds of the n members of an ensemble at study seed ``seed`` (member k: seed + 1000 k)."""
    return [seed + MEMBER_SEED_STRIDE * k for k in range(n)]


def teacher_seeds(source: str, seed: int, config: Any) -> list[int]:
    """The teachers whose samples a student reads: every member (ensemble) or the first (self)."""
    return member_seeds(seed, int(config["n_members"]) if source == "ensemble" else 1)


def chain_refs(task, search_method: str, size: str, bench, seed: int, scale: str, before: int | None = None) -> list[RunRef]:
    """The steps of one (recipe, size, seed) chain, in step order (only those < ``before``)."""
    steps = sorted(v.grid_point["step"] for v in task.config.variants(scale, only=search_method)
                   if v.grid_point.get("size") == size)
    refs = []
    for k in steps:
        if before is not None and k >= before:
            continue
        variant = task.config.resolve(scale, f"{search_method}[size={size},step={k}]").variant
        refs.append(_ref(task, variant, bench, seed))
    return refs
