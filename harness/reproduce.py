"""``harness reproduce RUN_ID``: rerun a recorded run in a scratch folder and diff its metrics.

The rerun uses the record's task, variant, benchmark, seed, scale and config; the
records of the runs it required (and their artifacts) are linked into the scratch
folder, so only this run is recomputed. On CPU a faithful rerun is identical to the
last bit at the recorded thread count (which the rerun uses); the report also says whether
code or data changed since (run_id differs).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.config import ConfigError
from harness.record import artifact_dir, metric_values, read_record, run_path


def find_record(run_id: str, results_dir: Path, registry_url: str | None = None) -> dict[str, Any]:
    for p in list((results_dir / "runs").rglob("*.json")) + list((results_dir / "history").rglob("*.json")):
        try:
            rec = read_record(p)
        except ConfigError:
            continue
        if rec["run_id"] == run_id or (len(run_id) >= 6 and rec["run_id"].startswith(run_id)):
            return rec
    try:
        from harness.registry import Registry

        return Registry(url=registry_url, results_dir=results_dir).record(run_id)
    except (KeyError, ImportError):
        raise ConfigError(f"no run record with run_id {run_id!r} under {results_dir}; see `harness registry ls`") from None


def _link_required(rec: dict[str, Any], src: Path, dst: Path) -> None:
    for req in rec.get("requires", []):
        args = (rec["scale"], req["task"], req["benchmark"], req["variant"], req["seed"])
        p = run_path(src, *args)
        q = run_path(dst, *args)
        q.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, q)
        a_src, a_dst = artifact_dir(src, *args), artifact_dir(dst, *args)
        if a_src.exists() and not a_dst.exists():
            a_dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(a_src.resolve(), a_dst)
        _link_required(read_record(p), src, dst)


def recorded_threads(rec: dict[str, Any]) -> int | None:
    """The CPU thread count a record was made with (float results depend on it): the record's
    ``threads``, or for records older than that field the count its provenance saw."""
    n = rec.get("threads") or (rec.get("provenance") or {}).get("torch_threads")
    return int(n) if n else None


def reproduce(run_id: str, results_dir: str | Path = "results", registry_url: str | None = None,
              device: str | None = None) -> dict[str, Any]:
    from harness.plugins import get_task
    from harness.runner import run_one

    results_dir = Path(results_dir)
    rec = find_record(run_id, results_dir, registry_url)
    task = get_task(rec["task"])
    cfg = task.config
    base = cfg.for_benchmark(rec["scale"], cfg.resolve(rec["scale"], rec["variant"]),
                             cfg.benchmark(rec["scale"], rec["benchmark"])).hyperparameters
    overrides = {k: v for k, v in rec["config"].items() if base.get(k) != v}
    with tempfile.TemporaryDirectory(prefix="harness-reproduce-") as tmp:
        _link_required(rec, results_dir, Path(tmp))
        new = run_one(rec["task"], rec["variant"], rec["benchmark"], rec["seed"], rec["scale"],
                      overrides=overrides or None, results_dir=tmp, device=device or rec.get("device"), force=True,
                      threads=recorded_threads(rec))
    old_m, new_m = metric_values(rec), metric_values(new)
    diffs = {}
    for name in sorted(set(old_m) | set(new_m)):
        a, b = old_m.get(name, math.nan), new_m.get(name, math.nan)
        same = (a == b) or (math.isnan(a) and math.isnan(b))
        diffs[name] = {"recorded": a, "rerun": b, "identical": same, "delta": None if same else b - a}
    return {"run_id": rec["run_id"], "rerun_run_id": new["run_id"], "same_run_id": new["run_id"] == rec["run_id"],
            "threads": new.get("threads"),
            "identical": all(d["identical"] for d in diffs.values()) and rec["status"] == new["status"],
            "status": {"recorded": rec["status"], "rerun": new["status"]}, "metrics": diffs}
