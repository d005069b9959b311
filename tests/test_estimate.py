"""`harness plan --estimate`: every planned run costed through Task.estimate, totalled per task."""

from __future__ import annotations

import json

import pytest

from harness.api import RunEstimate
from harness.cli import main
from harness.config import ConfigError
from harness.estimate import GPUS, bill, format_bill, gpu_hours
from harness.plugins import get_task


@pytest.fixture
def toy_estimates(monkeypatch):
    """The toy task (small scale: sgd[lr=0.1], sgd[lr=0.5], sgd_best x 3 seeds) estimates each run
    as 1e18 FLOPs per unit of lr x 10 (sgd_best: none at all, it only selects)."""
    task = get_task("toy")
    seen = []

    def estimate(method, benchmark, config, scale):
        seen.append((method.variant, benchmark.name, scale, config["epochs"]))
        if method.select:
            return RunEstimate(flops=0.0, peak_memory_bytes=0.0, data_bytes=5e9)
        mfu = 0.1 if config["lr"] == 0.5 else None
        return RunEstimate(flops=config["lr"] * 10 * 1e18, peak_memory_bytes=90e9 if config["lr"] == 0.5 else 1e9,
                           data_bytes=2e9, checkpoint_bytes=1e6, mfu=mfu, note="toy")

    monkeypatch.setattr(type(task), "estimate", lambda self, *a: estimate(*a), raising=False)
    return seen


def test_bill_costs_every_planned_run_at_the_stated_mfu(toy_estimates):
    b = bill("small", ["toy"], gpu="H100")
    assert len(b.runs) == 9 and {s for (_, _, s, _) in toy_estimates} == {"small"}
    assert {e for (*_, e) in toy_estimates} == {5}  # the run's resolved config (scale defaults) reaches the task
    peak, memory = GPUS["H100"]
    by = {(r.variant, r.seed): r for r in b.runs}
    r = by[("sgd[lr=0.1]", 0)]
    assert r.mfu == 0.4 and r.gpu_hours == pytest.approx(1e18 / (peak * 0.4) / 3600) and r.fits
    slow = by[("sgd[lr=0.5]", 1)]
    assert slow.mfu == 0.1 and slow.gpu_hours == pytest.approx(5e18 / (peak * 0.1) / 3600) and not slow.fits
    (t,) = b.tasks
    assert t.runs == t.estimated == 9 and t.flops == pytest.approx(3 * 6e18)
    assert t.gpu_hours == pytest.approx(3 * (r.gpu_hours + slow.gpu_hours))
    assert t.data_bytes == 5e9  # one dataset, counted once (its largest report), not per run
    assert t.checkpoint_bytes == pytest.approx(6e6) and t.not_fitting == 3 and t.peak_memory_bytes == 90e9
    assert b.total.gpu_hours == pytest.approx(t.gpu_hours)
    forced = bill("small", ["toy"], gpu="a100", mfu=0.5)  # --mfu overrides every run's own
    assert {r.mfu for r in forced.runs} == {0.5} and forced.gpu == "A100"
    assert forced.total.gpu_hours == pytest.approx(3 * 6e18 / (GPUS["A100"][0] * 0.5) / 3600)
    text = format_bill(b, per_run=True)
    assert "DOES NOT FIT" in text and "MFU 0.40" in text and "toy" in text


def test_bill_errors_and_tasks_without_estimates(monkeypatch):
    with pytest.raises(ConfigError, match="unknown GPU"):
        bill("small", ["toy"], gpu="TPUv9")
    with pytest.raises(ConfigError, match="--mfu"):
        bill("small", ["toy"], mfu=1.5)
    b = bill("small", ["toy"])  # the base class estimates nothing: counted, not costed
    assert b.tasks[0].runs == 9 and b.tasks[0].estimated == 0 and b.total.gpu_hours == 0
    assert gpu_hours(3600 * 1e12, 1e12, 1.0) == 1.0


def test_cli_plan_prints_the_bill_and_json(toy_estimates, capsys):
    assert main(["plan", "--scale", "small", "--task", "toy"]) == 0
    assert "toy" in capsys.readouterr().out
    assert main(["plan", "--scale", "small", "--task", "toy", "--estimate", "--gpu", "H200", "--json",
                 "--per-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpu"] == "H200" and out["default_mfu"] == 0.4 and len(out["runs"]) == 9
    assert out["total"]["flops"] == pytest.approx(1.8e19) and "formula" in out
    assert main(["plan", "--scale", "small", "--task", "toy", "--estimate", "--gpu", "nope"]) == 2


def test_saved_bill_feeds_the_report(toy_estimates, tmp_path, monkeypatch):
    import harness.estimate as est
    from harness.report.render import _paper_bill

    monkeypatch.setattr(est, "BILL_PATH", str(tmp_path / "paper-bill.json"))
    assert _paper_bill("toy") is None  # no bill saved: the task page shows none
    est.save_bill(bill("small", ["toy"]))
    row = _paper_bill("toy")
    assert row["runs"] == 9 and row["gpu"] == "H100" and row["not_fitting"] == 3 and row["data"] == "5.0 GB"
    assert _paper_bill("no_such_task") is None
    (tmp_path / "paper-bill.json").write_text("{not json")
    assert _paper_bill("toy") is None
