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
