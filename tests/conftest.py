"""Shared fixtures: offline hubs, the toy plugin, a scratch working directory."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent

# Fail at once if anything tries to reach a hub; register the toy plugin like a third party.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ["HARNESS_PROGRESS"] = "0"
os.environ["HARNESS_EXTRA_TASKS"] = "toy=toyplugin:task"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FIXTURES), os.environ.get("PYTHONPATH", "")]))
sys.path.insert(0, str(FIXTURES))


@pytest.fixture(scope="session")
def toy_data_root(tmp_path_factory) -> Path:
    """The toy dataset, built once per session."""
    from harness import data

    root = tmp_path_factory.mktemp("data")
    data.build("toy_blobs", root=root)
    return root


@pytest.fixture
def workdir(tmp_path, monkeypatch, toy_data_root) -> Path:
    """A scratch cwd with data/toy_blobs built and results/ empty."""
    shutil.copytree(toy_data_root / "toy_blobs", tmp_path / "data" / "toy_blobs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HARNESS_REGISTRY_URL", raising=False)
    return tmp_path


# --- The tiny DAG, once per session --------------------------------------------------------------
# Running snakemake over a task's tiny DAG costs minutes (every run is a process). The tests that
# check a task end to end through snakemake and DVC all read one shared run, of every task they
# need: the union of their `tiny_dag` marks, or every task when one test is marked without a task.


def pytest_collection_modifyitems(config, items):
    wanted: set[str] = set()
    every = False
    for item in items:
        mark = item.get_closest_marker("tiny_dag")
        if mark is not None:
            every |= not mark.args
            wanted.update(mark.args)
    config.stash[_TINY_DAG_TASKS] = None if every else sorted(wanted)


_TINY_DAG_TASKS = pytest.StashKey[list]()


class TinyDag:
    """A fresh checkout copy after ``snakemake --cores 2 --config scale=tiny [tasks=...]``."""

    def __init__(self, repo: Path, tasks: list[str] | None, env: dict[str, str], output: str):
        #: the checkout the DAG ran in (results/, reports/, dvc.lock)
        self.repo = repo
        #: the tasks it ran; None for every discovered task
        self.tasks = tasks
        #: the environment snakemake ran with (toy plugin and data overrides removed)
        self.env = env
        #: snakemake's stdout and stderr
        self.output = output

    def command(self, *extra: str) -> list[str]:
        bin_dir = Path(sys.executable).parent
        cmd = [str(bin_dir / "snakemake"), "--cores", "2", "--config", "scale=tiny"]
        return cmd + ([f"tasks={','.join(self.tasks)}"] if self.tasks else []) + list(extra)

    def rerun_is_a_no_op(self) -> bool:
        """The same invocation again (dry run) finds nothing to do. Always the same tasks: with other
        tasks the aggregate rules (registry, claims, report) have other inputs and rightly rerun."""
        import subprocess

        again = subprocess.run(self.command("-n"), check=False, cwd=self.repo, env=self.env,
                               capture_output=True, text=True, timeout=600)
        return "Nothing to be done" in again.stdout + again.stderr


@pytest.fixture(scope="session")
def tiny_dag(request, tmp_path_factory) -> TinyDag:
    """The tiny DAG through snakemake and DVC in a fresh copy of the checkout, run once per session
    for the tasks the selected tests are marked with. It must succeed: every test reading it
    asserts on its own task's records."""
    import subprocess

    from factories import checkout_copy

    tasks = request.config.stash.get(_TINY_DAG_TASKS, None)
    repo = checkout_copy(tmp_path_factory.mktemp("tiny_dag") / "checkout")
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_EXTRA_TASKS", "HARNESS_DATA_DIR")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1")
    dag = TinyDag(repo, tasks or None, env, "")
    out = subprocess.run(dag.command(), check=False, cwd=repo, env=env, capture_output=True, text=True,
                         timeout=2400)
    dag.output = out.stdout + out.stderr
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return dag
