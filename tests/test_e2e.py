"""The DAG end to end with snakemake: failures isolated, retried, reported; SLURM profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services import require_service

REPO = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


def _snakemake(cwd: Path, *args: str, env_extra: dict | None = None, timeout: int = 900):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env_extra or {})}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--workflow-profile",
           str(REPO / "profiles" / "default"), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _started(results: Path) -> dict[str, str]:
    return {str(p.relative_to(results)): json.loads(p.read_text())["timings"]["started_at"]
            for p in (results / "runs").rglob("*.json")}


@pytest.mark.slow
def test_failed_runs_do_not_stop_the_dag_and_are_retried(tmp_path):
    cfg = ["--config", "scale=tiny", "tasks=toy", "data_via=direct"]
    first = _snakemake(tmp_path, *cfg, env_extra={"TOY_CRASH": "1"})
    assert first.returncode != 0  # a failure is reported as one...
    results = tmp_path / "results"
    runs = _started(results)
    assert len(runs) == 21 - 3  # ...but every other run finished (keep-going)
    failures = list((results / "failures").rglob("*.json"))
    assert len(failures) == 3 and all("crash" in str(p) for p in failures)
    index = (tmp_path / "reports" / "index.html").read_text()
    runs_page = (tmp_path / "reports" / "runs.html").read_text()
    assert "toy crash as asked" in runs_page and "crash" in index
    claims = json.loads((results / "claims-tiny-partial.json").read_text())
    assert {c["id"] for c in claims} == {"best_beats_fixed", "above_chance"}

    second = _snakemake(tmp_path, *cfg)
    assert second.returncode == 0, second.stderr[-3000:]
    after = _started(results)
    assert len(after) == 21
    assert all(after[k] == v for k, v in runs.items())  # finished runs were not recomputed
    assert not list((results / "failures").rglob("*.json"))
    assert "toy crash as asked" not in (tmp_path / "reports" / "runs.html").read_text()
    assert {c["id"] for c in json.loads((results / "claims-tiny.json").read_text())} == {
        "best_beats_fixed", "above_chance"}
    third = _snakemake(tmp_path, *cfg)
    assert third.returncode == 0 and "Nothing to be done" in third.stdout + third.stderr


@pytest.mark.slow
def test_dry_run_plans_every_scale_of_every_task(tmp_path):
    for scale in ("tiny", "small", "paper"):
        out = _snakemake(tmp_path, "-n", "--config", f"scale={scale}", "data_via=direct")
        assert out.returncode == 0, out.stderr[-3000:]
        assert "rule run" in out.stdout or "run" in out.stdout


def _slurm_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True)
    return out.returncode == 0 and "up" in out.stdout


@pytest.mark.slow
@pytest.mark.service
def test_slurm_profile_runs_jobs_on_slurm(tmp_path):
    if not _slurm_up():
        require_service("SLURM", "no running cluster (sinfo); start one with .ci/start-slurm.sh")
    profile = tmp_path / "profile"
    shutil.copytree(REPO / "profiles" / "slurm", profile)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--profile", str(profile),
           "--jobs", "2", "--config", "scale=small", "tasks=toy", "data_via=direct"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").rglob("*.json")]
    assert len(recs) == 9
    assert all(r["provenance"]["executor"] == "slurm" and r["provenance"]["job_id"] for r in recs)
    assert (tmp_path / "reports" / "index.html").exists()
