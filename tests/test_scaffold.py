"""harness new-task: the scaffold validates and its own test passes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.cli import main
from harness.config import ConfigError
from harness.scaffold import new_task


def test_scaffold_validates_and_its_test_passes(tmp_path):
    pkg = tmp_path / "mytasks"
    assert main(["new-task", "demo_paper", "--dest", str(pkg)]) == 0
    (pkg / "__init__.py").write_text("")
    assert {p.name for p in (pkg / "demo_paper").iterdir()} >= {"__init__.py", "task.yaml", "README.md"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "HARNESS_EXTRA_TASKS": "demo_paper=mytasks.demo_paper:task"}
    v = subprocess.run([sys.executable, "-m", "harness", "validate"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert "demo_paper" not in v.stderr, v.stderr
    t = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(tmp_path / "tests" / "tasks" / "demo_paper")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert t.returncode == 0 and "2 passed" in t.stdout, t.stdout + t.stderr
    r = subprocess.run([sys.executable, "-m", "harness", "data", "build", "demo_paper_blobs"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "harness", "run", "demo_paper", "--method", "logistic_best",
                        "--benchmark", "blobs", "--scale", "tiny"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "required run" in r.stderr  # trials first: snakemake orders this


def test_scaffold_refuses_bad_or_existing_names(tmp_path):
    with pytest.raises(ConfigError, match="snake_case"):
        new_task("Bad-Name", tmp_path)
    new_task("ok_name", tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        new_task("ok_name", tmp_path)
