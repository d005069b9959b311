"""The run record: one immutable JSON file per run, the source of truth.

Schema version 1 (a dict, written with sorted keys)::

    schema_version  1
    run_id          16 hex chars: hash of task, task_version, variant, benchmark,
                    canonical config, seed, scale, data hashes, code hash
    task, task_version, method, variant, benchmark, seed, scale
    status          "ok" | "diverged" | "failed"
    metrics         [{name, value, higher_is_better}]   value null when non-finite,
                                                        with "nonfinite": "nan"|"inf"|"-inf"
    curves          {curve_name: [{"step": int, metric: value, ...}, ...]}
    artifacts       [{name, path (relative to the results dir), sha256}]
    info            task-specific facts (selected variant, k*, ...)
    config          resolved hyperparameters
    benchmark_settings  the benchmark's settings
    requires        [{task, variant, benchmark, seed, run_id}]
    timings         {wall_s, cpu_s, started_at, finished_at, resumed_from_step}
    memory          {peak_rss_mb, peak_gpu_mb}
    device          "cpu" | "cuda:0" ...
    provenance      see harness.provenance.collect()
    data_hashes     {dataset: content hash}
    code_hash       hash of the task's source folder
    error           {type, message, traceback}   only when status == "failed"

Paths: ``results/runs/<scale>/<task>/<benchmark>/<variant path-safe>/seed<k>.json`` for
finished runs (the DAG's outputs), ``results/failures/...`` (same layout) for failures,
which are never DAG outputs, so the next invocation retries them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from harness.config import BENCH_RE, MAX_SEED, NAME_RE, SCALES, ConfigError, path_safe

SCHEMA_VERSION = 1


def encode_value(v: float) -> dict[str, Any]:
    v = float(v)
    if math.isfinite(v):
        return {"value": v}
    return {"value": None, "nonfinite": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}


def decode_value(m: Mapping[str, Any]) -> float:
    if m.get("value") is not None:
        return float(m["value"])
    return float(m.get("nonfinite", "nan"))


def record_relpath(scale: str, task: str, benchmark: str, variant: str, seed: int) -> Path:
    """``<scale>/<task>/<benchmark>/<variant path-safe>/seed<k>.json``; every part is checked to
    be one plain path component, so the path cannot leave the folder it is joined to."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}: use one of {', '.join(SCALES)}")
    if not isinstance(task, str) or not NAME_RE.match(task):
        raise ConfigError(f"task name {task!r} must be snake_case (a-z, 0-9, _)")
    if not isinstance(benchmark, str) or not BENCH_RE.match(benchmark):
        raise ConfigError(f"benchmark name {benchmark!r} must be path-safe (letters, digits, _ . -)")
    if isinstance(seed, bool) or not hasattr(seed, "__index__") or not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"seed {seed!r} must be an integer from 0 to {MAX_SEED}")
    return Path(scale) / task / benchmark / path_safe(variant) / f"seed{seed}.json"


def inside(root: Path, path: Path) -> Path:
    """``path``, after checking that it lies inside ``root`` (lexically: ``..`` is resolved,
    symlinks are not followed, so a results folder may itself be a link)."""
    r, p = os.path.normpath(os.path.abspath(root)), os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([r, p]) != r:
        raise ConfigError(f"{path} lies outside {root}: refusing to write there")
    return Path(path)


def run_path(results_dir: Path, scale: str, task: str, benchmark: str, variant: str, seed: int) -> Path:
    root = Path(results_dir) / "runs"
    return inside(root, root / record_relpath(scale, task, benchmark, variant, seed))


def failure_path(results_dir: Path, scale: str, task: str, benchmark: str, variant: str, seed: int) -> Path:
    root = Path(results_dir) / "failures"
    return inside(root, root / record_relpath(scale, task, benchmark, variant, seed))


def artifact_dir(results_dir: Path, scale: str, task: str, benchmark: str, variant: str, seed: int) -> Path:
    root = Path(results_dir) / "artifacts"
    return inside(root, root / record_relpath(scale, task, benchmark, variant, seed).with_suffix(""))


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write then rename, so a reader never sees half a record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(path: Path) -> dict[str, Any]:
    """Load and sanity-check a record; a corrupt one gives one clear error."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: corrupt run record ({e}). Delete it and rerun that run (snakemake will).") from None
    if not isinstance(rec, dict) or rec.get("schema_version") != SCHEMA_VERSION or "run_id" not in rec:
        raise ConfigError(
            f"{path}: not a schema_version {SCHEMA_VERSION} run record. Delete it and rerun that run."
        )
    return rec


def metric_values(rec: Mapping[str, Any]) -> dict[str, float]:
    return {m["name"]: decode_value(m) for m in rec.get("metrics", [])}
