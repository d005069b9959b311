"""The warm worker (harness/worker.py) as real processes: a `python -m harness run` client, a fork server
private to each test (its own XDG_RUNTIME_DIR), children that run the toy task. Nothing is mocked."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.worker import server_key, wanted

RUN = ["run", "toy", "--method", "sgd[lr=0.5]", "--benchmark", "toy-a", "--seed", "0", "--scale", "tiny"]
RECORD = Path("runs/tiny/toy/toy-a/sgd__lr=0.5/seed0.json")
ARTIFACTS = Path("artifacts/tiny/toy/toy-a/sgd__lr=0.5/seed0")
# Fields that differ between any two executions of the same run, in process or not.
PER_EXECUTION = ("timings", "memory")


@pytest.fixture
def runtime(tmp_path) -> Path:
    """XDG_RUNTIME_DIR of this test's servers; every server and child left is killed at teardown."""
    folder = tmp_path / "rt"
    folder.mkdir(mode=0o700)
    yield folder
    for pid in _server_pids(folder) + _child_pids(folder):
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _env(runtime: Path, worker: str = "1", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    # A loaded CI machine may take over a minute to start a server: wait, do not fall back in process.
    return {**env, "HARNESS_WORKER": worker, "XDG_RUNTIME_DIR": str(runtime), "HARNESS_WORKER_START_WAIT": "600",
            **extra}


def _harness(cwd: Path, env: dict, *args: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def _popen(cwd: Path, env: dict, *args: str) -> subprocess.Popen:
    """A client that takes Ctrl-C (SIGINT is ignored in a background job, and so in what it starts)."""
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509


def _seed(seed: int, *extra: str) -> list[str]:
    """RUN with another seed."""
    return [*RUN[:-3], str(seed), *RUN[-2:], *extra]


def _logs(runtime: Path) -> str:
    return "".join(p.read_text() for p in sorted((runtime / "harness-worker").glob("*.log")))


def _server_pids(runtime: Path) -> list[int]:
    return [int(p) for p in re.findall(r"\[(\d+)\] serving", _logs(runtime) if (runtime / "harness-worker").exists()
                                       else "")]


def _child_pids(runtime: Path) -> list[int]:
    return [int(p) for p in re.findall(r"\] run (\d+):", _logs(runtime) if (runtime / "harness-worker").exists()
                                       else "")]


def _served_by(runtime: Path, needle: str) -> int:
    """The server that forked the run whose command line holds ``needle``."""
    (pid,) = re.findall(rf"\[(\d+)\] run \d+: .*{re.escape(needle)}", _logs(runtime))
    return int(pid)


def _alive(pid: int) -> bool:
    """Running (a zombie is not): the pid may be a reparented orphan nobody reaps."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_until(predicate, timeout: float = 180.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _checkpointed(workdir: Path, variant_dir: str, seed: int) -> bool:
    return (workdir / "results" / ARTIFACTS.parent.parent / variant_dir / f"seed{seed}" / "_checkpoint.pt").exists()


def _record(path: Path) -> dict:
    return json.loads(path.read_text())


def _same_run(a: dict, b: dict) -> dict:
    """Record fields that differ, other than those that differ between any two executions."""
    return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if k not in PER_EXECUTION and a.get(k) != b.get(k)}


# -- the client's decision and the server key (no processes) ---------------------------------------

def test_only_harness_run_with_the_switch_outside_slurm_goes_to_the_worker():
    on = {"HARNESS_WORKER": "1"}
    assert wanted(["harness", "run", "toy"], on)
    assert wanted(["harness", "--results", "r", "--registry=x", "run", "toy"], on)
    assert not wanted(["harness", "run", "toy"], {"HARNESS_WORKER": "0"})
    assert not wanted(["harness", "run", "toy"], {})
    assert not wanted(["harness", "run", "toy"], {**on, "SLURM_JOB_ID": "7"})
    assert not wanted(["harness", "registry", "ingest"], on)
    assert not wanted(["harness", "--results", "run", "tasks"], on)  # "run" is --results' value here
    assert not wanted(["harness", "run", "--help"], on)


def test_key_changes_with_harness_sources_and_import_time_environment(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 1\n")
    env = {"OMP_NUM_THREADS": "1", "UNRELATED": "1"}
    key = server_key(env, "/w", str(pkg))
    assert server_key(dict(env), "/w", str(pkg)) == key
    assert server_key({**env, "UNRELATED": "2"}, "/w", str(pkg)) == key  # read at run time, in the child
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"")
    assert server_key(env, "/w", str(pkg)) == key
    assert server_key({**env, "OMP_NUM_THREADS": "2"}, "/w", str(pkg)) != key  # read when torch is imported
    assert server_key({**env, "HARNESS_DATA_DIR": "d"}, "/w", str(pkg)) != key
    assert server_key(env, "/elsewhere", str(pkg)) != key
    st = os.stat(pkg / "sub" / "b.py")
    os.utime(pkg / "sub" / "b.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # touched: maybe edited
    assert server_key(env, "/w", str(pkg)) != key


# -- runs through the worker ----------------------------------------------------------------------

def test_a_run_through_the_worker_equals_the_run_in_process(workdir, runtime):
    inproc = _harness(workdir, _env(runtime, "0"), *RUN)
    assert inproc.returncode == 0, inproc.stderr
    assert not (runtime / "harness-worker").exists()  # HARNESS_WORKER=0: no server
    shutil.move(workdir / "results", workdir / "in_process")
    worker = _harness(workdir, _env(runtime), *RUN)
    assert worker.returncode == 0, worker.stderr
    assert len(_child_pids(runtime)) == 1, worker.stderr + _logs(runtime)  # it ran in a forked child
    assert worker.stdout == inproc.stdout  # "ok <run_id> ...: metrics"
    a, b = _record(workdir / "in_process" / RECORD), _record(workdir / "results" / RECORD)
    assert _same_run(a, b) == {}  # run_id, metrics, curves, artifacts' hashes, config, provenance (argv too)
    assert (workdir / "results" / ARTIFACTS / "model.pt").read_bytes() == \
        (workdir / "in_process" / ARTIFACTS / "model.pt").read_bytes()
    # The child's own peak RSS: the pre-imported pages it maps count, as they do in process.
    assert 0.5 * a["memory"]["peak_rss_mb"] < b["memory"]["peak_rss_mb"] < 2 * a["memory"]["peak_rss_mb"]


def test_the_second_run_reuses_the_server_and_the_client_imports_nothing_heavy(workdir, runtime):
    env = _env(runtime)
    first = _harness(workdir, env, *RUN, flags=("-X", "importtime"))
    second = _harness(workdir, env, *_seed(1), flags=("-X", "importtime"))
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-3000:] + second.stderr[-3000:]
    assert (workdir / "results" / RECORD.with_name("seed1.json")).exists()
    servers, children = _server_pids(runtime), _child_pids(runtime)
    assert len(servers) == 1 and len(children) == 2 and _alive(servers[0])
    (pid_file,) = (runtime / "harness-worker").glob("*.pid")
    assert pid_file.read_text().strip() == str(servers[0])
    # The client decided without importing torch & co.; the child found them imported (server).
    for proc in (first, second):
        top = re.findall(r"\|\s*([\w.]+)$", proc.stderr, re.MULTILINE)
        assert "harness.worker" in top
        assert not {"torch", "numpy", "pandas", "datasets", "harness.cli", "harness.runner"} & set(top)


def test_a_failing_run_fails_the_same_way(workdir, runtime):
    crash = ["run", "toy", "--method", "crash", "--benchmark", "toy-a", "--scale", "tiny", "--set", "always=true"]
    inproc = _harness(workdir, _env(runtime, "0"), *crash)
    shutil.move(workdir / "results", workdir / "in_process")
    worker = _harness(workdir, _env(runtime), *crash)
    assert inproc.returncode == worker.returncode == 1
    err = [line for line in worker.stderr.splitlines() if line.startswith("error:")]
    assert err == [line for line in inproc.stderr.splitlines() if line.startswith("error:")]
    assert "toy crash as asked" in err[0] and "failure record: results/failures/" in err[0]  # the child's stderr
    failure = Path("failures/tiny/toy/toy-a/crash__always=true/seed0.json")
    a, b = _record(workdir / "in_process" / failure), _record(workdir / "results" / failure)
    assert a["status"] == "failed" and _same_run(a, b) == {}  # error type, message and traceback too


def test_sigkilled_client_kills_its_run_and_the_rerun_resumes_bit_for_bit(workdir, runtime):
    clean = _harness(workdir, _env(runtime, "0"), "--results", "clean", *RUN)
    assert clean.returncode == 0, clean.stderr
    proc = _popen(workdir, _env(runtime, HARNESS_PAUSE_AFTER_CHECKPOINT="2"), *RUN)
    _wait_until(lambda: (workdir / "results" / ARTIFACTS / "_paused").exists(), what="the second checkpoint")
    (child,) = _child_pids(runtime)
    assert _alive(child)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    _wait_until(lambda: not _alive(child), timeout=10, what="the orphaned run to die")
    assert _alive(_server_pids(runtime)[0])  # the server outlives one of its runs
    assert not (workdir / "results" / RECORD).exists() and (workdir / "results" / ARTIFACTS / "_checkpoint.pt").exists()

    again = _harness(workdir, _env(runtime), *RUN)
    assert again.returncode == 0, again.stderr
    resumed, reference = _record(workdir / "results" / RECORD), _record(workdir / "clean" / RECORD)
    assert resumed["timings"]["resumed_from_step"] == 1
    assert resumed["run_id"] == reference["run_id"]
    assert resumed["metrics"] == reference["metrics"] and resumed["curves"] == reference["curves"]
    assert [a["sha256"] for a in resumed["artifacts"]] == [a["sha256"] for a in reference["artifacts"]]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_client_reaches_the_run(workdir, runtime, signum):
    """SIGTERM kills the run (status -15 both ways); SIGINT is a KeyboardInterrupt in the run: a
    failure record and exit status 1, both ways."""
    procs = {how: _popen(workdir, _env(runtime, worker, HARNESS_PAUSE_AFTER_CHECKPOINT="2"), "--results", how, *RUN)
             for how, worker in (("in_process", "0"), ("worker", "1"))}
    for how, proc in procs.items():
        _wait_until(lambda how=how: (workdir / how / ARTIFACTS / "_paused").exists(),
                    what=f"the second checkpoint ({how})")
    (child,) = _child_pids(runtime)
    for proc in procs.values():
        proc.send_signal(signum)
    status = {how: proc.wait(timeout=60) for how, proc in procs.items()}
    assert status["worker"] == status["in_process"] == (-signal.SIGTERM if signum == signal.SIGTERM else 1)
    _wait_until(lambda: not _alive(child), timeout=10, what="the run to end")
    failure = Path("failures/tiny/toy/toy-a/sgd__lr=0.5/seed0.json")
    if signum == signal.SIGINT:
        errors = {how: _record(workdir / how / failure)["error"]["type"] for how in procs}
        assert errors == {"in_process": "KeyboardInterrupt", "worker": "KeyboardInterrupt"}
    else:
        assert not (workdir / "worker" / failure).exists() and not (workdir / "in_process" / failure).exists()


@pytest.mark.parametrize("extra", [{"SLURM_JOB_ID": "4242"}, {"HARNESS_WORKER": "0"}], ids=["slurm", "switch_off"])
def test_no_server_inside_slurm_or_with_the_switch_off(workdir, runtime, extra):
    proc = _harness(workdir, {**_env(runtime), **extra}, *RUN)
    assert proc.returncode == 0, proc.stderr
    assert not (runtime / "harness-worker").exists()
    executor = _record(workdir / "results" / RECORD)["provenance"]["executor"]
    assert executor == ("slurm" if "SLURM_JOB_ID" in extra else "local")


def test_server_lifecycle_start_once_restart_after_a_kill_idle_exit(workdir, runtime):
    env = _env(runtime, HARNESS_WORKER_IDLE="5")
    # Two clients at once and no server: one starts it, both are served by it.
    procs = [_popen(workdir, env, *_seed(seed)) for seed in (0, 1)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    assert len(_server_pids(runtime)) == 1 and len(_child_pids(runtime)) == 2
    # A run in flight survives its server's death (it reports its own exit status) ...
    proc = _popen(workdir, env, *_seed(2, "--set", "epochs=100"))
    _wait_until(lambda: _checkpointed(workdir, "sgd__epochs=100__lr=0.5", 2), what="the first checkpoint")
    killed = _served_by(runtime, "--seed 2")
    os.kill(killed, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and out.startswith("ok "), err
    # ... and the next client starts a new server, which exits when idle, removing its socket and pid file.
    again = _harness(workdir, env, *RUN, "--force")
    assert again.returncode == 0, again.stderr
    new = _served_by(runtime, "--force")
    assert new != killed and new in _server_pids(runtime)
    _wait_until(lambda: not _alive(new), timeout=120, what="the idle timeout")
    assert re.search(rf"\[{new}\] idle for 5 s: exiting", _logs(runtime))
    assert not list((runtime / "harness-worker").glob("*.sock")) and not list((runtime / "harness-worker").glob("*.pid"))


def test_a_killed_run_leaves_the_other_runs_of_its_server_alone(workdir, runtime):
    env = _env(runtime)
    doomed = _popen(workdir, env, *_seed(3, "--set", "epochs=100000"))
    _wait_until(lambda: _checkpointed(workdir, "sgd__epochs=100000__lr=0.5", 3), what="the doomed run's checkpoint")
    survivor = _popen(workdir, env, *RUN)
    _wait_until(lambda: len(_child_pids(runtime)) == 2, what="the second run to start")
    doomed_child = _child_pids(runtime)[0]
    os.kill(doomed_child, signal.SIGKILL)  # as the OOM killer would
    assert doomed.wait(timeout=60) == 128 + signal.SIGKILL  # as a shell reports it
    err = doomed.stderr.read()
    assert "died of SIGKILL" in err and "HARNESS_WORKER=0" in err
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0 and out.startswith("ok "), err
    assert len(_server_pids(runtime)) == 1 and _alive(_server_pids(runtime)[0])


def test_warm_reads_the_installed_metadata_once_and_gives_what_every_run_read(monkeypatch):
    """The server reads entry points, package versions and the CPU model once before forking
    (its key covers the installed packages); its children use them and read nothing again."""
    from harness import plugins, provenance

    cold_specs, cold = plugins._entry_specs(), provenance.collect()
    monkeypatch.setattr(plugins, "_WARM_ENTRY_POINTS", None)  # restored at teardown: this process stays cold
    monkeypatch.setattr(provenance, "_WARM", None)
    plugins.warm()
    provenance.warm()

    def read_again(*args, **kwargs):
        raise AssertionError("installed metadata read again after warm()")

    monkeypatch.setattr(plugins, "entry_points", read_again)
    monkeypatch.setattr(provenance.metadata, "version", read_again)
    monkeypatch.setattr(provenance, "_cpu_model", read_again)
    assert plugins._entry_specs() == cold_specs and "toy" in cold_specs
    warm = provenance.collect()
    assert warm["packages"] == cold["packages"] and warm["packages"]["torch"]
    assert warm["cpu"] == cold["cpu"]
