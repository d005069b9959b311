"""The task's tiny DAG through snakemake, in a scratch working directory: data built directly
(no DVC), every run of the tiny plan, registry, claims and the report with the task's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.claims import VERDICTS
from harness.dag import plan
from tasks.cmim import task

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def test_tiny_plan_covers_every_method_and_both_data_types():
    runs = plan("tiny", ["cmim"], results_dir="R")
    assert {r.variant.split("[")[0] for r in runs.values()} == set(task.config.methods)
    assert {r.benchmark for r in runs.values()} == {"digits", "molecules"}
    assert len(runs) <= 24 and all(not r.requires for r in runs.values())


@pytest.mark.slow
def test_tiny_dag_through_snakemake(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_DATA_DIR", "HARNESS_EXTRA_TASKS")}
    env.update({"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                "HARNESS_PROGRESS": "0"})
    out = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "2",
                          "--config", "scale=tiny", "tasks=cmim", "data_via=direct"],
                         env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs" / "tiny" / "cmim").rglob("seed*.json")]
    assert len(records) == len(plan("tiny", ["cmim"], results_dir="R"))
    assert all(r["status"] == "ok" for r in records)
    claims = {c["id"]: c for c in json.loads((tmp_path / "results" / "claims-tiny.json").read_text()) if c["task"] == "cmim"}
    assert set(claims) == {c.id for c in task.config.claim_objects()}
    assert all(c["verdict"] in VERDICTS for c in claims.values())
    # one seed at tiny scale: every claim has evidence but no verdict beyond undecidable
    assert all(c["verdict"] == "undecidable" for c in claims.values())
    assert claims["batch_robust_vs_infonce"]["per_seed"]  # the claim functions found their variants
    page = (tmp_path / "reports" / "task-cmim.html").read_text()
    assert page.count("<svg") >= 3 and "informative embedding" in page
