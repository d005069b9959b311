"""The real tasks' tiny DAG end to end, in a fresh copy of the checkout, data through DVC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.claims import VERDICTS
from harness.plugins import discover

REPO = Path(__file__).parent.parent


def _real_tasks() -> list[str]:
    tasks, _ = discover()
    return sorted(t for t in tasks if t != "toy")


@pytest.mark.slow
@pytest.mark.tiny_dag
def test_tiny_dag_of_every_task_through_dvc(tiny_dag):
    repo = tiny_dag.repo
    assert "Running stage 'build@" in tiny_dag.output  # DVC built the data (its stage log)

    claims = json.loads((repo / "results" / "claims-tiny.json").read_text())
    index = (repo / "reports" / "index.html").read_text()
    tasks, _ = discover()
    for name in _real_tasks():
        declared = [c.id for c in tasks[name].config.claims]
        got = {c["id"]: c for c in claims if c["task"] == name}
        assert sorted({cid.split("@")[0] for cid in got}) == sorted(declared), name
        for cid, c in got.items():
            # The seed-level rule: every claim has a verdict of the four, per-seed effects, and
            # p-values wherever it is testable.
            assert c["verdict"] in VERDICTS, cid
            assert isinstance(c["per_seed"], dict) and "mde" in c and "p_refute" in c, cid
            if c["verdict"] != "undecidable":
                assert c["p_value"] is not None and c["p_refute"] is not None, cid
            assert cid.split("@")[0] in index
        assert (repo / "reports" / f"task-{name}.html").exists()

    # dvc.lock pins the data: a rebuild on a fresh checkout gives the committed hashes.
    committed = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    rebuilt = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage, entry in rebuilt.items():
        if stage in committed:
            assert entry["outs"][0]["md5"] == committed[stage]["outs"][0]["md5"], stage
