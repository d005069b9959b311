"""Per-run overhead of the harness over the bare training loop.

Timings of the same run (same task, variant, benchmark, seed), median of --repeats:

  bare        Task.run() called directly, in this (warm) process, with a context that keeps
              nothing (no checkpoint files, no record, no provenance): the training loop itself.
  harness     harness.runner.run_one(..., force=True) in the same process: seeding, data hash,
              code hash, provenance (git), checkpoints, the JSON record.
  job         the whole DAG job as Snakemake runs it, `python -m harness run ...` in a new
              process, three ways:
                worker        HARNESS_WORKER=1 with the warm worker's server already running
                              (every job of a study but the first): the Snakefile's default;
                worker_start  HARNESS_WORKER=1 and no server yet: this job starts it;
                in_process    HARNESS_WORKER=0 (before the worker; a SLURM job): the job
                              imports torch, datasets & co. itself.
              Each against `bare`: what a job costs beyond the training function.

Every timing is taken in wall and in CPU seconds (a job's CPU: its process with what it reaps and,
through the worker, the forked run and the server's share). On a loaded machine a niced benchmark's
wall times stretch with the load while CPU seconds do not, and a 1-thread job's wall time on an idle
machine is its CPU time: `process_s` (the warm-worker job over the bare loop, checked against its
0.2 s goal on the report's performance page) and `study_share` are in CPU seconds.

    python benchmarks/harness_overhead.py --task noisy_labels --method ce \
        --benchmark digits-sym50 --scale small --repeats 3 --label after

Writes benchmarks/results/harness_overhead-<task>.json. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.api import RunContext

HERE = Path(__file__).parent


class BareContext(RunContext):
    """Keeps nothing: what a hand-written training script would do."""

    def __init__(self, seed, out_dir):
        self.seed, self.device, self.scale, self.out_dir = seed, "cpu", "bare", Path(out_dir)

    def log(self, step, curve="train", **metrics):
        pass

    def checkpoint(self, state):
        pass

    def restore(self):
        return None

    def progress(self, iterable, total=None, desc=""):
        return iterable

    def require(self, ref):
        raise RuntimeError("the bare loop supports only runs without requirements")

    def artifact_path(self, ref, name):
        raise RuntimeError("the bare loop supports only runs without requirements")

    def data_dir(self, dataset):
        from harness.data import data_root

        return data_root() / dataset


class Clock:
    """Wall and CPU seconds of a block. CPU time is what the comparison rests on when the machine is
    loaded: a niced benchmark's wall times stretch with the load, its CPU seconds do not."""

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0


def bare_once(task_name, variant, benchmark, seed, scale, threads):
    import torch

    from harness.plugins import get_task
    from harness.runner import seed_everything

    torch.set_num_threads(threads)
    task = get_task(task_name)
    method = task.config.resolve(scale, variant)
    bench = task.config.benchmark(scale, benchmark)
    seed_everything(seed)
    with tempfile.TemporaryDirectory() as tmp, Clock() as clock:
        result = task.run(method, bench, dict(method.hyperparameters), BareContext(seed, tmp))
    return (clock.wall, clock.cpu, clock.wall, clock.cpu), {m.name: m.value for m in result.metrics}


def harness_once(task_name, variant, benchmark, seed, scale, threads, results):
    from harness.runner import run_one

    with Clock() as clock:
        rec = run_one(task_name, variant, benchmark, seed, scale, results_dir=results, threads=threads, force=True)
    return (clock.wall, clock.cpu, *_training(rec)), {m["name"]: m["value"] for m in rec["metrics"]}


def _training(rec: dict) -> tuple[float, float]:
    """Wall and CPU seconds the run spent in Task.run, as its record says (timed by the runner)."""
    return rec["timings"]["wall_s"], rec["timings"]["cpu_s"]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _process_cpu(pid: int) -> float:
    """CPU seconds a live process has used (/proc/<pid>/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server(runtime: str) -> tuple[int, Path] | None:
    """The pid and log of the worker server in this runtime folder, if one runs."""
    pid_files = list((Path(runtime) / "harness-worker").glob("*.pid"))
    return (int(pid_files[0].read_text()), pid_files[0].with_suffix(".log")) if pid_files else None


def _run_cpus(log: Path) -> list[float]:
    return [float(c) for c in re.findall(r"\] end \d+: exit 0 \(cpu ([\d.]+) s", log.read_text())]


def job_once(args, results, env: dict) -> tuple[float, float, float, float]:
    """Wall and CPU seconds of `python -m harness run ...` as the Snakefile's run rule starts it, and
    of the training inside it (its record's timings): the difference is the job's overhead, measured
    within one job, so the run-to-run noise of the training itself on a loaded machine cancels.
    CPU: the job's process (and, in process, everything it runs); through the worker also the forked
    run (the server logs each child's CPU when it reaps it) and the server's own share (the request,
    the fork, and its start-up with the imports when this job started it)."""
    cmd = [sys.executable, "-m", "harness", "--results", str(results), "run", args.task, "--method",
           args.method, "--benchmark", args.benchmark, "--seed", str(args.seed), "--scale", args.scale,
           "--threads", str(args.threads), "--force"]
    runtime = env["XDG_RUNTIME_DIR"] if env.get("HARNESS_WORKER") == "1" else None
    before = _server(runtime) if runtime else None
    server_cpu0, runs0 = (_process_cpu(before[0]), len(_run_cpus(before[1]))) if before else (0.0, 0)
    c0, t0 = _children_cpu(), time.perf_counter()
    job = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if "warm worker unavailable" in job.stderr:
        raise RuntimeError(f"the job ran in process, not through the worker: {job.stderr}")
    if runtime:
        pid, log = _server(runtime)
        deadline = time.monotonic() + 30
        while len(_run_cpus(log)) == runs0 and time.monotonic() < deadline:  # reaped just after the job ends
            time.sleep(0.01)
        cpu += _run_cpus(log)[-1] + _process_cpu(pid) - server_cpu0
        if before and pid != before[0]:  # a harness source changed mid-benchmark: this job started a server
            raise ServerRestarted(f"server {before[0]} was replaced by {pid}")
    from harness.record import read_record, run_path

    rec = read_record(run_path(Path(results), args.scale, args.task, args.benchmark, args.method, args.seed))
    return (wall, cpu, *_training(rec))


class ServerRestarted(RuntimeError):
    pass


def _warm_jobs(args, results, env) -> list[tuple[float, ...]]:
    """`repeats` jobs served by a running server; a job that had to start a new one (someone edited
    harness/ meanwhile: a new key) is not a warm job and is done again."""
    out = []
    while len(out) < args.repeats:
        try:
            out.append(job_once(args, results, env))
        except ServerRestarted as e:
            print(f"warm job redone: {e}", file=sys.stderr)
    return out


def _stop_server(runtime: str) -> None:
    from harness.worker import cmd_stop, socket_dir

    with contextlib.redirect_stdout(io.StringIO()):
        cmd_stop(socket_dir({"XDG_RUNTIME_DIR": runtime}), wait=60)


def job_timings(args, results) -> dict[str, list[tuple[float, ...]]]:
    """The job three ways, (wall, cpu, training wall, training cpu) each; the worker's servers are
    private to this benchmark."""
    # A loaded machine may take more than a minute to start a niced server: wait for it, do not fall back.
    base = {**os.environ, "HARNESS_PROGRESS": "0", "HARNESS_EXECUTOR": "snakemake", "HARNESS_WORKER_START_WAIT": "900"}
    times: dict[str, list[tuple[float, ...]]] = {"worker": [], "worker_start": [], "in_process": []}
    with tempfile.TemporaryDirectory(dir="/tmp") as rt:
        for i in range(args.repeats):  # a new runtime folder each time: no server yet
            os.makedirs(f"{rt}/cold{i}", mode=0o700)
            times["worker_start"].append(job_once(args, results, {**base, "HARNESS_WORKER": "1",
                                                                  "XDG_RUNTIME_DIR": f"{rt}/cold{i}"}))
            _stop_server(f"{rt}/cold{i}")
        os.makedirs(f"{rt}/warm", mode=0o700)
        env = {**base, "HARNESS_WORKER": "1", "XDG_RUNTIME_DIR": f"{rt}/warm"}
        job_once(args, results, env)  # starts the server, untimed
        times["worker"] = _warm_jobs(args, results, env)
        _stop_server(f"{rt}/warm")
    env = {**base, "HARNESS_WORKER": "0"}
    times["in_process"] = [job_once(args, results, env) for _ in range(args.repeats)]
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="noisy_labels")
    p.add_argument("--method", default="ce")
    p.add_argument("--benchmark", default="digits-sym50")
    p.add_argument("--scale", default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--study-runs", type=int, default=656, help="runs of the study the share is given for "
                                                                 "(noisy_labels small: 656)")
    p.add_argument("--label", default="", help="e.g. before / after, shown on the report's performance page")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as results:
        bare, harness, metrics = [], [], {}
        # Warm-up, untimed: first-call costs (lazy imports, the dataset's memory map) are
        # paid once per process by either path; the job timings measure them.
        bare_once(args.task, args.method, args.benchmark, args.seed, args.scale, args.threads)
        harness_once(args.task, args.method, args.benchmark, args.seed, args.scale, args.threads, results)
        for _ in range(args.repeats):
            t, metrics["bare"] = bare_once(args.task, args.method, args.benchmark, args.seed, args.scale, args.threads)
            bare.append(t)
            t, metrics["harness"] = harness_once(args.task, args.method, args.benchmark, args.seed, args.scale,
                                                 args.threads, results)
            harness.append(t)
        jobs = job_timings(args, results)
    out = summarise(args, bare, harness, jobs, metrics)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"harness_overhead-{args.task}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{args.task}/{args.benchmark}/{args.method}, {args.repeats} repeats, load {out['machine']['load_avg_1m']:.1f} "
          f"on {out['machine']['cpus']} CPUs; identical metrics: {out['same_metrics']}")
    for kind in ("wall", "cpu"):
        o = out[f"{kind}_overhead_s"]
        print(f"  {kind:<4} bare loop {out[f'{kind}_s']['bare']:.2f} s; outside the training: run_one in process "
              f"+{o['harness_in_process']:.3f} s; job +{o['worker']:.3f} s (worker), +{o['worker_start']:.3f} s "
              f"(starting it), +{o['in_process']:.3f} s (HARNESS_WORKER=0)")
    print(f"  share of a {args.study_runs}-run study of such runs (CPU): " + ", ".join(
        f"{how} {100 * v:.1f}%" for how, v in out["study_share"].items()))
    print(f"wrote {path}")


def summarise(args, bare, harness, jobs, metrics) -> dict:
    """Medians: whole, training (Task.run) and overhead (whole minus training, per run), in wall and CPU
    seconds; the share of a study that the overhead is."""
    med = statistics.median
    series = {"bare": bare, "harness_in_process": harness, **jobs}
    out = {"benchmark": "harness_overhead", "label": args.label, "task": args.task, "method": args.method,
           "benchmark_name": args.benchmark, "scale": args.scale, "threads": args.threads, "repeats": args.repeats,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "load_avg_1m": os.getloadavg()[0]}}
    for i, kind in enumerate(("wall", "cpu")):
        out[f"{kind}_s"] = {name: med(t[i] for t in ts) for name, ts in series.items()}
        out[f"{kind}_training_s"] = {name: med(t[i + 2] for t in ts) for name, ts in series.items()}
        out[f"{kind}_overhead_s"] = {name: med(t[i] - t[i + 2] for t in ts) for name, ts in series.items()
                                     if name != "bare"}
    train, over = out["cpu_s"]["bare"], out["cpu_overhead_s"]
    # The DAG job as the Snakefile runs it (warm worker): what it costs outside the training, in CPU
    # seconds (on an idle machine a 1-thread job's wall time is its CPU time).
    out["process_s"] = {"bare": train, "harness": out["cpu_s"]["worker"], "overhead": over["worker"]}
    out["study_share"] = {how: over[how] / (train + over[how]) for how in jobs}
    out["study_runs"] = args.study_runs
    out["study_overhead_s"] = {how: over[how] * args.study_runs for how in jobs}
    out["goals"] = {"process_s.overhead": {"max": 0.2}, "study_share.worker": {"max": 0.03}}
    out["same_metrics"] = metrics["bare"] == metrics["harness"]
    out["raw"] = {name: [list(t) for t in ts] for name, ts in series.items()}
    return out


if __name__ == "__main__":
    main()
