"""Faults as real processes: SIGKILL a `harness run` after a checkpoint, SIGKILL a whole snakemake.

Nothing here is simulated in-process: each fault is a SIGKILL delivered to a running process
(group), and recovery goes through the same commands a user types.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.record import read_record

REPO = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited ({proc.returncode}) before {what}: {out[-2000:]}{err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _harness(cwd: Path, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_sigkilled_run_resumes_from_its_checkpoint_bit_for_bit(workdir):
    run = ["run", "toy", "--method", "sgd[lr=0.5]", "--benchmark", "toy-a", "--seed", "0", "--scale", "tiny"]
    clean = _harness(workdir, "--results", "clean", *run)
    assert clean.returncode == 0, clean.stderr
    art = workdir / "results" / "artifacts" / "tiny" / "toy" / "toy-a" / "sgd__lr=0.5" / "seed0"
    # A real process, held after its second checkpoint (epochs 0 and 1 saved), then SIGKILLed.
    proc = subprocess.Popen([sys.executable, "-m", "harness", *run], cwd=workdir,
                            env={**os.environ, "HARNESS_PAUSE_AFTER_CHECKPOINT": "2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (art / "_paused").exists(), proc, what="the second checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    record = workdir / "results" / "runs" / "tiny" / "toy" / "toy-a" / "sgd__lr=0.5" / "seed0.json"
    assert not record.exists() and (art / "_checkpoint.pt").exists()

    again = _harness(workdir, *run)
    assert again.returncode == 0, again.stderr
    resumed, reference = read_record(record), read_record(next((workdir / "clean" / "runs").rglob("seed0.json")))
    assert resumed["timings"]["resumed_from_step"] == 1
    assert resumed["run_id"] == reference["run_id"]
    assert resumed["metrics"] == reference["metrics"]  # bit for bit: JSON floats round-trip exactly
    assert resumed["curves"] == reference["curves"]
    ref_model = next((workdir / "clean" / "artifacts").rglob("model.pt")).read_bytes()
    assert [a["sha256"] for a in resumed["artifacts"]] == [a["sha256"] for a in reference["artifacts"]]
    assert (art / "model.pt").read_bytes() == ref_model
    assert not (art / "_checkpoint.pt").exists() and not (art / "_paused").exists()


def _documented_resume() -> list[list[str]]:
    """The commands README.md gives for continuing after a killed snakemake."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## After a crash", 1)
    assert len(section) == 2, "README.md documents how to continue after a killed snakemake"
    block = re.search(r"```\n(.*?)```", section[1], re.S).group(1)
    cmds = [line.split("#", 1)[0].split() for line in block.splitlines() if line.startswith("snakemake")]
    assert cmds and cmds[0][:2] == ["snakemake", "--unlock"], block
    return cmds


@pytest.mark.slow
def test_sigkilled_snakemake_continues_with_the_documented_command(tmp_path):
    cmds = _documented_resume()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("HARNESS_DATA_DIR", None)
    config = ["--config", "scale=tiny", "tasks=toy", "data_via=direct"]
    base = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--workflow-profile", str(REPO / "profiles" / "default")]
    runs = tmp_path / "results" / "runs"
    proc = subprocess.Popen([*base, "--cores", "2", *config], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for(lambda: runs.is_dir() and len(list(runs.rglob("seed*.json"))) >= 4, proc, what="4 run records")
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and every job it started
    proc.wait(timeout=30)
    assert list((tmp_path / ".snakemake" / "locks").iterdir())  # the kill left its lock behind
    done_before = len(list(runs.rglob("seed*.json")))

    for cmd in cmds:  # e.g. `snakemake --unlock`, then the same invocation again
        extra = [] if "--cores" in cmd else ["--cores", "2"]
        argv = [*base, *cmd[1:], *extra, *config]
        out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, (cmd, out.stdout[-3000:] + out.stderr[-3000:])

    from harness.dag import plan

    planned = plan("tiny", ["toy"], results_dir="results")
    records = sorted(runs.rglob("seed*.json"))
    assert len(records) == len(planned) > done_before
    recs = [read_record(p) for p in records]  # every record parses: none is half-written
    assert all(r["status"] in ("ok", "diverged") for r in recs)
    summary = json.loads((tmp_path / "results" / "ingested-tiny.json").read_text())
    assert summary["errors"] == [] and summary["new"] + summary["existing"] == len(planned)
    from harness.registry import Registry

    with Registry(results_dir=tmp_path / "results") as reg:
        df = reg.runs(task="toy", scale="tiny", current_only=False)
        assert len(df) == len(planned) and set(df["run_id"]) == {r["run_id"] for r in recs}
        assert len(reg.failures(task="toy", scale="tiny")) == 0
    assert (tmp_path / "results" / "claims-tiny.json").exists() and (tmp_path / "reports" / "index.html").exists()
