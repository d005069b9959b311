"""Fixtures for the dkvb tests: single-threaded torch (2 shared cores) and the tiny-scale datasets
(the toy's test set, digits embeddings) built once per session into a temporary HARNESS_DATA_DIR."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def dkvb_data_dir(tmp_path_factory):
    from harness.data import build

    root = tmp_path_factory.mktemp("dkvb-data")
    build("dkvb_toy2d", root)
    build("dkvb_digits", root)
    return root


@pytest.fixture
def dkvb_env(monkeypatch, dkvb_data_dir):
    from tasks.dkvb import run as run_mod

    monkeypatch.setenv("HARNESS_DATA_DIR", str(dkvb_data_dir))
    monkeypatch.setattr(run_mod, "_ARRAYS", {})
    return dkvb_data_dir

