"""Fixtures for the cmim tests: single-threaded torch (2 shared cores), and the small image and
molecule data built in memory (never from data/), so no test needs the harness data folder."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_dd():
    from tasks.cmim.data import build_digits

    return build_digits()


@pytest.fixture(scope="session")
def molecules_dd():
    from tasks.cmim.data import build_molecules

    return build_molecules()


@pytest.fixture
def data_in_memory(monkeypatch, digits_dd, molecules_dd):
    """Runs read the datasets from memory instead of data/<name>/."""
    from tasks.cmim import data as data_mod
    from tasks.cmim import run as run_mod

    table = {"cmim_digits": digits_dd, "cmim_molecules": molecules_dd}
    monkeypatch.setattr(data_mod, "load_dataset_dict", lambda name: table[name])
    monkeypatch.setattr(run_mod, "_CACHE", {})
    return table
