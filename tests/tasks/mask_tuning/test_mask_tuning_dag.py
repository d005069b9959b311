"""The mask_tuning tiny DAG end to end through snakemake (data through DVC; the session's shared run
in a fresh copy of the checkout): the pre-training run is planned once per seed and every tuning run depends on it (the
random-mask control also on AMT), every planned run succeeds, every claim gets a row, the report
has the task's page and figures, and a second invocation has nothing to do."""

from __future__ import annotations

import json

import pytest


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
@pytest.mark.tiny_dag("mask_tuning")
def test_tiny_dag_through_snakemake_and_dvc(tiny_dag):
    from harness.dag import plan
    from tasks.mask_tuning import task

    repo = tiny_dag.repo
    assert "Running stage 'build@mask_tuning_pretrain_tiny'" in tiny_dag.output  # the data came through DVC

    runs = plan("tiny", ["mask_tuning"], results_dir="results")
    for key in runs:
        rec = json.loads((repo / key).read_text())
        assert rec["status"] == "ok", key
    assert {r.variant for r in runs.values()} == set(task.config.methods)
    tuned = json.loads((repo / "results/runs/tiny/mask_tuning/base2new-2shot/amt_random/seed0.json").read_text())
    pre = json.loads((repo / "results/runs/tiny/mask_tuning/pretrain/pretrain/seed0.json").read_text())
    amt = json.loads((repo / "results/runs/tiny/mask_tuning/base2new-2shot/amt/seed0.json").read_text())
    assert {r["run_id"] for r in tuned["requires"]} == {pre["run_id"], amt["run_id"]}
    claims = json.loads((repo / "results" / "claims-tiny.json").read_text())
    ids = {c["id"].split("@")[0] for c in claims if c["task"] == "mask_tuning"}
    assert ids == {c.id for c in task.config.claims}
    page = (repo / "reports" / "task-mask_tuning.html").read_text()
    assert "Accuracy vs shots" in page and "Sparsity per layer" in page
    assert tiny_dag.rerun_is_a_no_op()
