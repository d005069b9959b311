"""Fixtures for the noisy_labels task tests: the digits dataset built once, loaded without the
harness data folder, and single-threaded torch (2 shared cores)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_dd():
    from tasks.noisy_labels.data import build_digits

    return build_digits()


@pytest.fixture
def digits_loaded(monkeypatch, digits_dd):
    """Runs read the digits DatasetDict from memory instead of data/digits/."""
    from tasks.noisy_labels import data as data_mod
    from tasks.noisy_labels import run as run_mod

    monkeypatch.setattr(data_mod, "load_dataset_dict", lambda name: {"digits": digits_dd}[name])
    monkeypatch.setattr(run_mod, "_ARRAYS", {})
    return digits_dd
