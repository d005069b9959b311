"""``harness reproduce RUN_ID``: rerun a recorded run in a scratch folder and diff its metrics.

The rerun uses the record's task, variant, benchmark, seed, scale and config; the
records of the runs it required (and their artifacts) are linked into the scratch
folder, so only this run is recomputed. On CPU a faithful rerun is identical to the
last bit at the recorded thread count (which the rerun uses). A rerun whose task code or
data hash differs from the record's would not test the record, so it is refused with a message
naming what changed and how to restore it (``allow_changed`` / ``--allow-changed`` reruns anyway
and lists the changes in the report).
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


class ReproduceRefused(ConfigError):
    """The code or data a record was made with is not what is here now; ``changes`` says what."""

    def __init__(self, message: str, changes: dict[str, Any]):
        super().__init__(message)
        self.changes = changes


def changes_since(rec: dict[str, Any], task) -> dict[str, Any]:
    """What differs between the record's code and data and this checkout's:
    ``{"code": {"recorded", "now"}, "data": {dataset: {"recorded", "now"}}}`` (empty parts left out).
    A dataset that is missing here, or whose files no longer match its manifest, counts as changed."""
    from harness import data as data_mod
    from harness.provenance import code_hash

    out: dict[str, Any] = {}
    now = code_hash(Path(task.root))
    if rec.get("code_hash") and rec["code_hash"] != now:
        out["code"] = {"recorded": rec["code_hash"], "now": now}
    data: dict[str, Any] = {}
    for name, recorded in sorted((rec.get("data_hashes") or {}).items()):
        try:
            current: str | None = data_mod.verified_hash(name)
        except (ConfigError, FileNotFoundError, OSError, KeyError) as e:
            current = None
            data[name] = {"recorded": recorded, "now": None, "problem": " ".join(str(e).split())[:300]}
            continue
        if current != recorded:
            data[name] = {"recorded": recorded, "now": current}
    if data:
        out["data"] = data
    return out


def _refusal(rec: dict[str, Any], changes: dict[str, Any]) -> str:
    commit = ((rec.get("provenance") or {}).get("git_commit") or "")[:12] or "unknown"
    parts = []
    if "code" in changes:
        parts.append(f"the task's code hashes to {changes['code']['now']} here, the record was made with "
                     f"{changes['code']['recorded']} (commit {commit}): check that commit out (`git checkout {commit}`)")
    for name, d in (changes.get("data") or {}).items():
        now = d["now"] or f"unusable ({d.get('problem', 'missing')})"
        parts.append(f"dataset {name} is {now} here, the record used {d['recorded']}: restore it "
                     f"(`dvc checkout data/{name}` at commit {commit}, or `harness data build {name} --force`)")
    return (f"refusing to reproduce run {rec['run_id']}: a rerun would not test this record, since "
            + "; ".join(parts) + ". Pass --allow-changed to rerun anyway and see what the change does.")


def reproduce(run_id: str, results_dir: str | Path = "results", registry_url: str | None = None,
              device: str | None = None, allow_changed: bool = False) -> dict[str, Any]:
    """Rerun a recorded run and diff its metrics. Refuses (:class:`ReproduceRefused`) when the
    task's code hash or a dataset's hash differs from the record's, unless ``allow_changed``;
    the report's ``changes`` lists what differed (empty for a faithful rerun)."""
    from harness.plugins import get_task
    from harness.runner import run_one

    results_dir = Path(results_dir)
    rec = find_record(run_id, results_dir, registry_url)
    task = get_task(rec["task"])
    changes = changes_since(rec, task)
    if changes and not allow_changed:
        raise ReproduceRefused(_refusal(rec, changes), changes)
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
            "threads": new.get("threads"), "changes": changes,
            "identical": all(d["identical"] for d in diffs.values()) and rec["status"] == new["status"],
            "status": {"recorded": rec["status"], "rerun": new["status"]}, "metrics": diffs}


def format_diff(report: dict[str, Any]) -> str:
    """The metric diff as text: one line per metric, then the verdict."""
    lines = [f"run {report['run_id']} rerun as {report['rerun_run_id']} at {report['threads']} thread(s)"]
    for what, d in (report.get("changes") or {}).items():
        if what == "code":
            lines.append(f"  changed: code {d['recorded']} -> {d['now']}")
        else:
            for name, x in d.items():
                lines.append(f"  changed: dataset {name} {x['recorded']} -> {x['now']}")
    w = max([len(n) for n in report["metrics"]] + [6])
    lines.append(f"  {'metric':<{w}}  {'recorded':>14}  {'rerun':>14}  {'delta':>12}")
    for name, d in report["metrics"].items():
        delta = "identical" if d["identical"] else f"{d['delta']:+.6g}"
        lines.append(f"  {name:<{w}}  {d['recorded']:>14.8g}  {d['rerun']:>14.8g}  {delta:>12}")
    st = report["status"]
    if st["recorded"] != st["rerun"]:
        lines.append(f"  status: {st['recorded']} -> {st['rerun']}")
    lines.append("identical: every metric equal to the last bit" if report["identical"]
                 else "DIFFERENT: the rerun does not reproduce the record")
    return "\n".join(lines)
