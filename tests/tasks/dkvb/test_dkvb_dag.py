"""The dkvb tiny DAG end to end through snakemake (data through DVC; the session's shared run in a
fresh copy of the checkout): every planned run succeeds, every claim gets a row, the report has
the task's page and figures, and a second invocation has nothing to do."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
@pytest.mark.tiny_dag("dkvb")
def test_tiny_dag_through_snakemake_and_dvc(tiny_dag):
    from harness.dag import plan
    from tasks.dkvb import task

    repo = tiny_dag.repo
    assert "Running stage 'build@dkvb_digits'" in tiny_dag.output  # the data came through DVC

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
    assert tiny_dag.rerun_is_a_no_op()
