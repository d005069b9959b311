"""The study plan at one scale: every run, its inputs and resources, for the Snakefile.

``plan(scale)`` expands each loadable task's variants x benchmarks x seeds and then
closes the set over ``Task.requires`` (a required run that is not in the grid, e.g. an
extra ensemble member at another seed, is planned too). The Snakefile turns each
:class:`PlannedRun` into one job whose inputs are the dataset manifest and the records
of the runs it requires: one mechanism for every upstream dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.api import RunRef
from harness.config import ConfigError
from harness.record import run_path


@dataclass(frozen=True)
class PlannedRun:
    """One job of the DAG."""

    task: str
    """Task name."""
    variant: str
    """Canonical variant name (passed to ``harness run --method``)."""
    benchmark: str
    """Benchmark name."""
    seed: int
    """Seed."""
    dataset: str
    """Dataset the benchmark reads (a data-rule input)."""
    output: str
    """Record path, relative to the workflow directory."""
    requires: tuple[str, ...] = ()
    """Record paths of the runs this one requires."""
    threads: int = 1
    """Cores for the job."""
    mem_mb: int = 2000
    """Memory for the job (MB)."""
    runtime: int = 30
    """Wall time for the job (minutes)."""
    gpu: int = 0
    """GPUs for the job."""


def plan(scale: str, tasks: list[str] | None = None, results_dir: str = "results") -> dict[str, PlannedRun]:
    """Every run of the scale, keyed by output path."""
    from harness.plugins import discover

    loaded, _broken = discover()
    chosen = tasks or sorted(loaded)
    unknown = [t for t in chosen if t not in loaded]
    if unknown:
        raise ConfigError(f"unknown or broken task(s) {', '.join(unknown)}; see `harness tasks`")
    runs: dict[str, PlannedRun] = {}
    planned: dict[tuple, str] = {}  # (task, benchmark, variant, seed) -> output path, across tasks
    for tname in chosen:
        task = loaded[tname]
        cfg = task.config
        if scale not in cfg.scales:
            continue
        s = cfg.scale(scale)
        variants = {v.variant: v for v in cfg.variants(scale)}
        benches = {b.name: b for b in cfg.benchmarks(scale)}

        def add(ref: RunRef, stack: tuple[str, ...] = ()) -> str:
            key = (ref.task, ref.benchmark, ref.variant, ref.seed)
            if key in planned:  # a run many others require (a search's trials): planned once, its path built once
                return planned[key]
            out = str(run_path(Path(results_dir), scale, ref.task, ref.benchmark, ref.variant, ref.seed))
            if out in runs:
                planned[key] = out
                return out
            if out in stack:
                raise ConfigError(f"dependency cycle through {out}")
            if ref.task != tname:
                other = loaded.get(ref.task)
                if other is None:
                    raise ConfigError(f"{tname} requires a run of unknown task {ref.task!r}")
                v_obj = other.config.resolve(scale, ref.variant)
                b_obj = other.config.benchmark(scale, ref.benchmark)
                req_task = other
            else:
                if ref.variant not in variants:
                    raise ConfigError(f"{tname}: required variant {ref.variant!r} is not planned at scale {scale!r}")
                if ref.benchmark not in benches:
                    raise ConfigError(f"{tname}: required benchmark {ref.benchmark!r} unknown at scale {scale!r}")
                v_obj, b_obj, req_task = variants[ref.variant], benches[ref.benchmark], task
            deps = tuple(add(r, stack + (out,)) for r in req_task.requires(v_obj, b_obj, ref.seed, scale))
            rres = req_task.config.scale(scale).resources
            runs[out] = PlannedRun(task=ref.task, variant=ref.variant, benchmark=ref.benchmark, seed=ref.seed,
                                   dataset=b_obj.dataset, output=out, requires=deps, threads=rres.threads,
                                   mem_mb=rres.mem_mb, runtime=rres.runtime, gpu=rres.gpu)
            planned[key] = out
            return out

        for v in variants.values():
            for bname in cfg.method_benchmarks(scale, v.name):
                for seed in s.seeds:
                    add(RunRef(tname, v.variant, bname, seed))
    return runs


def datasets_of(runs: dict[str, PlannedRun]) -> list[str]:
    return sorted({r.dataset for r in runs.values()})
