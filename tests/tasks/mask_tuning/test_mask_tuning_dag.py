"""The mask_tuning tiny DAG end to end through snakemake (data through DVC), in a fresh copy of the
checkout: the pre-training run is planned once per seed and every tuning run depends on it (the
random-mask control also on AMT), every planned run succeeds, every claim gets a row, the report
has the task's page and figures, and a second invocation has nothing to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factories import checkout_copy

BIN = Path(sys.executable).parent


def test_tiny_plan_trains_the_dual_encoder_once_per_seed():
    from harness.dag import plan

    runs = plan("tiny", ["mask_tuning"], results_dir="results")
    pre = [k for k, r in runs.items() if r.variant == "pretrain"]
    assert pre == ["results/runs/tiny/mask_tuning/pretrain/pretrain/seed0.json"]
    for key, r in runs.items():
        if r.variant != "pretrain":
            assert pre[0] in r.requires, key
    random = next(r for r in runs.values() if r.variant == "amt_random")
    assert any("/amt/seed0.json" in d for d in random.requires)
    small = plan("small", ["mask_tuning"], results_dir="results")
    assert sum(r.variant == "pretrain" for r in small.values()) == 5  # once per seed, not per benchmark


@pytest.mark.slow
def test_tiny_dag_through_snakemake_and_dvc(tmp_path):
    from harness.dag import plan
    from tasks.mask_tuning import task

    repo = checkout_copy(tmp_path / "checkout")
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_EXTRA_TASKS", "HARNESS_DATA_DIR")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [str(BIN / "snakemake"), "--cores", "2", "--config", "scale=tiny", "tasks=mask_tuning"]
    out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "Running stage 'build@mask_tuning_pretrain_tiny'" in out.stdout + out.stderr  # the data came through DVC

    runs = plan("tiny", ["mask_tuning"], results_dir="results")
    for key in runs:
        rec = json.loads((repo / key).read_text())
        assert rec["status"] == "ok", key
    assert {r.variant for r in runs.values()} == set(task.config.methods)
    tuned = json.loads((repo / "results/runs/tiny/mask_tuning/base2new-2shot/amt_random/seed0.json").read_text())
    pre = json.loads((repo / "results/runs/tiny/mask_tuning/pretrain/pretrain/seed0.json").read_text())
    assert pre["run_id"] in {r["run_id"] for r in tuned["requires"]}
    claims = json.loads((repo / "results" / "claims-tiny.json").read_text())
    ids = {c["id"].split("@")[0] for c in claims if c["task"] == "mask_tuning"}
    assert ids == {c.id for c in task.config.claims}
    page = (repo / "reports" / "task-mask_tuning.html").read_text()
    assert "Accuracy vs shots" in page and "Sparsity per layer" in page

    again = subprocess.run(cmd + ["-n"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert "Nothing to be done" in again.stdout + again.stderr
