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


@pytest.fixture
def resumed_run(tmp_path, monkeypatch, stn_env):
    """``check(benchmark, overrides) -> record``: an STN run at tiny scale is deterministic (two
    runs, equal metrics) and, interrupted after its first checkpoint, resumes to the same metrics
    and schedule."""
    from harness.runner import run_one

    def metrics(rec):
        return {m["name"]: m["value"] for m in rec["metrics"]}

    def check(benchmark: str, overrides: dict):
        def run(folder):
            return run_one("self_tuning_networks", "stn", benchmark, 0, "tiny", overrides=overrides,
                           results_dir=tmp_path / folder)

        a, b = run("a"), run("b")
        assert a["status"] == "ok" and metrics(a) == metrics(b)
        monkeypatch.setenv("HARNESS_INTERRUPT_AFTER_CHECKPOINT", "1")
        with pytest.raises(Exception, match="simulated interrupt"):
            run("c")
        monkeypatch.delenv("HARNESS_INTERRUPT_AFTER_CHECKPOINT")
        c = run("c")
        assert c["timings"]["resumed_from_step"] is not None
        assert metrics(c) == metrics(a) and c["info"]["schedule"] == a["info"]["schedule"]
        return a

    return check
