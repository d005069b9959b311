"""Synthetic run records and a throwaway task, for registry and claims tests."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from harness.api import Task
from harness.config import config_hash
from harness.record import encode_value, failure_path, run_path, write_json_atomic

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def stamp(minutes: float) -> str:
    return (T0 + dt.timedelta(minutes=minutes)).isoformat()


def make_record(
    *, task: str = "toy", variant: str = "base", benchmark: str = "b1", seed: int = 0, scale: str = "small",
    metrics: Mapping[str, float] | None = None, status: str = "ok", commit: str = "a" * 40,
    finished: float = 10.0, higher_is_better: Mapping[str, bool] | None = None, config: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None, curves: Mapping[str, Any] | None = None, error: str = "boom",
) -> dict[str, Any]:
    """A schema-1 run record (``finished`` in minutes after T0; the commit enters run_id)."""
    metrics = {"acc": 0.5} if metrics is None else dict(metrics)
    hib = dict(higher_is_better or {})
    method = variant.split("[", 1)[0]
    config = dict(config or {"lr": 0.1})
    code_hash = config_hash({"commit": commit})
    run_id = config_hash({"task": task, "variant": variant, "benchmark": benchmark, "seed": seed, "scale": scale,
                          "config": config, "code": code_hash})
    rec: dict[str, Any] = {
        "schema_version": 1, "run_id": run_id, "task": task, "task_version": "1", "method": method,
        "variant": variant, "benchmark": benchmark, "seed": seed, "scale": scale, "status": status,
        "metrics": [] if status == "failed" else [
            {"name": k, **encode_value(v), "higher_is_better": hib.get(k, True)} for k, v in metrics.items()],
        "curves": dict(curves or {"train": [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}]}),
        "artifacts": [], "info": dict(info or {}), "config": config, "benchmark_settings": {}, "requires": [],
        "timings": {"wall_s": 1.5, "cpu_s": 1.2, "started_at": stamp(finished - 1), "finished_at": stamp(finished),
                    "resumed_from_step": None},
        "memory": {"peak_rss_mb": 100.0, "peak_gpu_mb": None}, "device": "cpu",
        "provenance": {"git_commit": commit, "git_dirty": False, "hostname": "box", "executor": "local"},
        "data_hashes": {"digits": "d" * 16}, "code_hash": code_hash,
    }
    if status == "failed":
        rec["error"] = {"type": "RuntimeError", "message": error, "traceback": f"Traceback...\nRuntimeError: {error}"}
    if any(isinstance(v, float) and not math.isfinite(v) for v in metrics.values()) and status == "ok":
        rec["status"] = "diverged"
    return rec


def write_record(results_dir: Path, rec: Mapping[str, Any], history: bool = False) -> Path:
    """Write where the runner would: runs/..., failures/..., or history/<run_id>.json."""
    args = (rec["scale"], rec["task"], rec["benchmark"], rec["variant"], rec["seed"])
    if history:
        path = Path(results_dir) / "history" / rec["scale"] / rec["task"] / f"{rec['run_id']}.json"
    elif rec["status"] == "failed":
        path = failure_path(Path(results_dir), *args)
    else:
        path = run_path(Path(results_dir), *args)
    write_json_atomic(path, rec)
    return path


TASK_YAML = {
    "name": "toy",
    "version": 1,
    "paper": {"title": "A toy paper", "authors": ["A. Author"], "year": 2024},
    "datasets": ["digits"],
    "metrics": {"acc": "higher", "loss": "lower"},
    "methods": {
        "base": {"description": "control"},
        "better": {"description": "treatment"},
        "worse": {"description": "a worse one"},
        "noisy": {"description": "no effect"},
        "grid": {"description": "a gridded method", "hyperparameters": ["wd"]},
    },
    "scales": {
        "small": {
            "seeds": [0, 1, 2, 3, 4],
            "benchmarks": {"b1": {"dataset": "digits"}, "b2": {"dataset": "digits", "noise": 0.5}},
            "methods": {"base": None, "better": None, "worse": None, "noisy": None, "grid": {"grid": {"wd": [0.1, 0.2]}}},
        }
    },
}


def make_task(tmp_path: Path, claims: list[dict[str, Any]], methods_cls: type[Task] | None = None) -> Task:
    """A Task whose task.yaml (with ``claims``) is written into ``tmp_path``."""
    root = Path(tmp_path) / "toy_task"
    root.mkdir(parents=True, exist_ok=True)
    (root / "task.yaml").write_text(yaml.safe_dump({**TASK_YAML, "claims": claims}, sort_keys=False))
    cls = methods_cls or Task
    task = type("ToyTask", (cls,), {"root": root})()
    return task


class MemoryContext:
    """RunContext stand-in: curves and the last checkpoint in memory."""

    def __init__(self, seed=0):
        self.seed, self.device, self.scale, self.out_dir = seed, "cpu", "tiny", Path(".")
        self.curves, self.saved = {}, None

    def log(self, step, curve="train", **metrics):
        self.curves.setdefault(curve, []).append({"step": step, **metrics})

    def checkpoint(self, state):
        self.saved = state

    def restore(self):
        return None


def checkout_copy(dest: Path, repo: Path | None = None) -> Path:
    """The repository's tracked and untracked-but-not-ignored files, copied into ``dest`` as a new
    git repo (DVC needs one): what a fresh clone of the working tree would hold."""
    import shutil
    import subprocess

    repo = Path(repo or Path(__file__).resolve().parent.parent)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = repo / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def no_shrunk_variants_left(task: str):
    """An autouse fixture for paper-scale tests that may shrink a schedule in place: the task's config
    caches resolved variants, so it is emptied after each test (the fixture is torn down after
    monkeypatch has restored the scale). Use: ``_clean = no_shrunk_variants_left("my_task")``."""
    import pytest

    from harness.plugins import get_task

    @pytest.fixture(autouse=True)
    def _fixture():
        yield
        get_task(task).config._variant_cache.clear()

    return _fixture


def covering(pairs):
    """A subset of (variant, benchmark) pairs, in their order, in which every variant and every
    benchmark occurs at least once: a paper-scale sweep steps each code path (each variant's
    method and hyperparameters, each benchmark's data and model) without the full product."""
    seen_v, seen_b, kept = set(), set(), []
    for v, b in pairs:
        if v not in seen_v or b not in seen_b:
            kept.append((v, b))
            seen_v.add(v)
            seen_b.add(b)
    return kept


def thin_grids(monkeypatch, scale) -> None:
    """Each method's grid in ``scale`` (a loaded ScaleSpec) cut to its first two values, in place
    (restored by monkeypatch): the plan keeps every method, its dependencies (a sequential search's
    trial 1 requires trial 0) and a selection over two trials, at a fraction of the runs. Clear the
    config's variant cache around it."""
    for spec in scale.methods.values():
        grid = spec.get("grid") if isinstance(spec, dict) else None
        for k, values in (grid or {}).items():
            if isinstance(values, list) and len(values) > 2:
                monkeypatch.setitem(grid, k, values[:2])
