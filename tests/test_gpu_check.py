"""benchmarks/gpu_check.sh and its parts run on a CPU in --dry-run mode (the GPU run itself is a
benchmark, never a test): every section exits 0 and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.parametrize("task", ["infinite_compute", "dkvb", "cmim"])
def test_paper_steps_dry_run_reports_estimated_and_counted_flops(tmp_path, task):
    import paper_steps

    out = tmp_path / "steps.json"
    assert paper_steps.main(["--dry-run", "--task", task, "--out", str(out)]) == 0
    r = json.loads(out.read_text())["tasks"][task]
    assert r["seconds_per_step"] > 0 and r["achieved_flops_per_s"] > 0
    assert 0.9 < r["estimated_over_counted_flops"] < 1.2  # the estimator's count is the model's


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_section(tmp_path):
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu-check-summary.json").read_text())
    names = [s["section"] for s in summary["sections"]]
    assert summary["dry_run"] is True and all(s["rc"] == 0 for s in summary["sections"])
    assert {"kernel-correctness", "kv_lookup"} <= set(names) and sum(n.startswith("paper-") for n in names) == 6
    assert json.loads((tmp_path / "gpu-kernel_check.json").read_text())["ok"] is True
    for task in ("infinite_compute", "entropy_attention", "self_tuning_networks", "noisy_labels", "dkvb", "cmim"):
        assert task in json.loads((tmp_path / f"gpu-paper-{task}.json").read_text())["tasks"]
    assert not list((ROOT / "benchmarks" / "results").glob("gpu-check-summary.json"))  # a dry run never writes there
