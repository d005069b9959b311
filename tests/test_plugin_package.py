"""A third-party plugin, pip-installed from outside the repo, through the whole tiny DAG with DVC.

Issue 14.3: its dataset must be built and DVC-tracked without any edit of this checkout's
dvc.yaml. The package is scaffolded by `harness new-task --package` in a temporary folder,
installed (not editable) into this venv and uninstalled at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from factories import checkout_copy

REPO = Path(__file__).parent.parent
BIN = Path(sys.executable).parent
NAME = "extplug_demo"


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_pip_installed_plugin_runs_through_the_dvc_dag_without_editing_dvc_yaml(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_EXTRA_TASKS", "HARNESS_DATA_DIR")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    made = subprocess.run([sys.executable, "-m", "harness", "new-task", NAME, "--package", "--dest",
                           str(tmp_path / "elsewhere")], env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert _pip("show", "-q", NAME.replace("_", "-")).returncode != 0, "left over from an earlier run"
    inst = _pip("install", "-q", "--no-deps", "--no-build-isolation", str(tmp_path / "elsewhere" / NAME))
    assert inst.returncode == 0, inst.stdout + inst.stderr
    try:
        repo = checkout_copy(tmp_path / "checkout")
        dvc_yaml = (repo / "dvc.yaml").read_bytes()
        found = subprocess.run([sys.executable, "-c", f"import {NAME}; print({NAME}.__file__)"], cwd=repo, env=env,
                               capture_output=True, text=True, timeout=120).stdout
        assert "site-packages" in found  # the installed copy, not the scaffold's folder

        v = subprocess.run([sys.executable, "-m", "harness", "validate"], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=600)
        assert NAME not in v.stderr, v.stderr  # no "add it to dvc.yaml" for an installed plugin

        out = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--config", "scale=tiny", f"tasks={NAME}"],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
        log = out.stdout + out.stderr
        assert out.returncode == 0, log[-5000:]
        assert f"Running stage 'plugins/dvc.yaml:build@{NAME}_blobs'" in log  # DVC built it, from the generated stage
        assert (repo / "dvc.yaml").read_bytes() == dvc_yaml  # this checkout's dvc.yaml untouched

        stages = yaml.safe_load((repo / "plugins" / "dvc.yaml").read_text())["stages"]["build"]
        assert f"{NAME}_blobs" in stages["foreach"]  # (with any other dataset dvc.yaml lacks)
        assert not set(stages["foreach"]) & set(yaml.safe_load(dvc_yaml)["stages"]["build"]["foreach"])
        builder = json.loads((repo / "plugins" / "builders" / f"{NAME}_blobs.json").read_text())
        assert builder["distribution"] == NAME.replace("_", "-") and builder["version"] == "0.1.0"
        assert builder["tasks"] == [NAME] and len(builder["source_sha256"]) == 64
        lock = yaml.safe_load((repo / "plugins" / "dvc.lock").read_text())["stages"][f"build@{NAME}_blobs"]
        assert lock["outs"][0]["path"] == f"data/{NAME}_blobs" and lock["outs"][0]["md5"].endswith(".dir")

        records = [json.loads(p.read_text()) for p in (repo / "results" / "runs" / "tiny" / NAME).rglob("*.json")]
        assert len(records) == 12 and all(r["status"] == "ok" for r in records)  # 4 variants x 3 seeds
        manifest = json.loads((repo / "data" / f"{NAME}_blobs" / "manifest.json").read_text())
        assert {r["data_hashes"][f"{NAME}_blobs"] for r in records} == {manifest["content_hash"]}
        claims = json.loads((repo / "results" / "claims-tiny.json").read_text())
        assert [c["id"] for c in claims if c["task"] == NAME] == ["logistic_beats_mean"]
        assert (repo / "reports" / f"task-{NAME}.html").exists()

        again = subprocess.run([str(BIN / "dvc"), "status", f"plugins/dvc.yaml:build@{NAME}_blobs"], cwd=repo, env=env,
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr
    finally:
        rm = _pip("uninstall", "-y", "-q", NAME.replace("_", "-"))
        assert rm.returncode == 0, rm.stderr
