"""Fixtures for the self_tuning_networks tests: single-threaded torch (2 shared cores) and the
small-scale datasets built once per session into a temporary HARNESS_DATA_DIR."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def stn_data_dir(tmp_path_factory):
    from harness.data import build

    root = tmp_path_factory.mktemp("stn-data")
    build("stn_digits", root)
    build("stn_toy_text", root)
    return root


@pytest.fixture
def stn_env(monkeypatch, stn_data_dir):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(stn_data_dir))
    return stn_data_dir
