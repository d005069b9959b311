"""The task's tiny DAG through snakemake (the session's shared run, data through DVC): every run of
the tiny plan, registry, claims and the report with the task's figures."""

from __future__ import annotations

import json

import pytest

from harness.claims import VERDICTS
from harness.dag import plan
from tasks.cmim import task


def test_tiny_plan_covers_every_method_and_both_data_types():
    runs = plan("tiny", ["cmim"], results_dir="R")
    assert {r.variant.split("[")[0] for r in runs.values()} == set(task.config.methods)
    assert {r.benchmark for r in runs.values()} == {"digits", "molecules"}
    assert len(runs) <= 24 and all(not r.requires for r in runs.values())


@pytest.mark.slow
@pytest.mark.tiny_dag("cmim")
def test_tiny_dag_through_snakemake(tiny_dag):
    root = tiny_dag.repo
    records = [json.loads(p.read_text()) for p in (root / "results" / "runs" / "tiny" / "cmim").rglob("seed*.json")]
    assert len(records) == len(plan("tiny", ["cmim"], results_dir="R"))
    assert all(r["status"] == "ok" for r in records)
    claims = {c["id"]: c for c in json.loads((root / "results" / "claims-tiny.json").read_text()) if c["task"] == "cmim"}
    assert set(claims) == {c.id for c in task.config.claim_objects()}
    assert all(c["verdict"] in VERDICTS for c in claims.values())
    # one seed at tiny scale: every claim has evidence but no verdict beyond undecidable
    assert all(c["verdict"] == "undecidable" for c in claims.values())
    assert claims["batch_robust_vs_infonce"]["per_seed"]  # the claim functions found their variants
    page = (root / "reports" / "task-cmim.html").read_text()
    assert page.count("<svg") >= 3 and "informative embedding" in page
