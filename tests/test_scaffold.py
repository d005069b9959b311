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


def test_in_repo_scaffold_prints_the_entry_point_of_its_package(tmp_path, capsys):
    assert main(["new-task", "demo", "--dest", str(tmp_path / "mytasks")]) == 0
    out = capsys.readouterr().out
    assert 'demo = "mytasks.demo:task"' in out and "tasks.demo" not in out.replace("mytasks.demo", "")
    test = (tmp_path / "tests" / "tasks" / "demo" / "test_demo.py").read_text()
    assert "from mytasks.demo import build_blobs, task" in test


def test_scaffold_package_is_pip_installable_with_its_entry_point_and_a_passing_test(tmp_path, capsys):
    """Issue 14.4: `harness new-task NAME --package` writes a plugin package that needs no edit of this repo."""
    import tomllib

    assert main(["new-task", "demo_pkg", "--package", "--dest", str(tmp_path)]) == 0
    root = tmp_path / "demo_pkg"
    out = capsys.readouterr().out
    assert f"pip install -e {root}" in out and 'demo_pkg = "demo_pkg:task"' in out
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert files == {"pyproject.toml", "README.md", "src/demo_pkg/__init__.py", "src/demo_pkg/task.yaml",
                     "tests/test_demo_pkg.py"}
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["harness.tasks"] == {"demo_pkg": "demo_pkg:task"}
    assert meta["tool"]["setuptools"]["package-data"] == {"demo_pkg": ["task.yaml"]}
    assert meta["project"]["name"] == "demo-pkg" and "harness" not in meta["project"]["dependencies"]
    env = {**os.environ, "HARNESS_EXTRA_TASKS": "demo_pkg=demo_pkg:task",
           "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])}
    t = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=300)
    assert t.returncode == 0 and "2 passed" in t.stdout, t.stdout + t.stderr
    v = subprocess.run([sys.executable, "-m", "harness", "validate", str(root / "src" / "demo_pkg")], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert v.returncode == 0, v.stderr
    with pytest.raises(ConfigError, match="already exists"):
        from harness.scaffold import new_package

        new_package("demo_pkg", tmp_path)
