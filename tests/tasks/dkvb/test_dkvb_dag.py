"""The dkvb tiny DAG end to end through snakemake (data through DVC), in a fresh copy of the
checkout: every planned run succeeds, every claim gets a row, the report has the task's page and
figures, and a second invocation has nothing to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factories import checkout_copy

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_tiny_dag_through_snakemake_and_dvc(tmp_path):
    from harness.dag import plan
    from tasks.dkvb import task

    repo = checkout_copy(tmp_path / "checkout")
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_EXTRA_TASKS", "HARNESS_DATA_DIR")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [str(BIN / "snakemake"), "--cores", "2", "--config", "scale=tiny", "tasks=dkvb"]
    out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "Running stage 'build@dkvb_digits'" in out.stdout + out.stderr  # the data came through DVC

    runs = plan("tiny", ["dkvb"], results_dir="results")
    for key in runs:
        rec = json.loads((repo / key).read_text())
        assert rec["status"] == "ok", key
    methods = {r.variant for r in runs.values()}
    assert methods == set(task.config.methods)
    claims = json.loads((repo / "results" / "claims-tiny.json").read_text())
    ids = {c["id"].split("@")[0] for c in claims if c["task"] == "dkvb"}
    assert ids == {c.id for c in task.config.claims}
    page = (repo / "reports" / "task-dkvb.html").read_text()
    assert "decision regions" in page and "Accuracy over the stream" in page

    again = subprocess.run(cmd + ["-n"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert "Nothing to be done" in again.stdout + again.stderr
