"""Per-run overhead of the harness over the bare training loop.

Three timings of the same run (same task, variant, benchmark, seed), median of --repeats:

  bare        Task.run() called directly with a context that keeps nothing (no
              checkpoint files, no record, no provenance): the training loop itself.
  harness     harness.runner.run_one(..., force=True) in the same process: seeding,
              data hash, code hash, provenance (git), checkpoints, the JSON record.
  process     `python -m harness run ...` as a DAG job runs it, a new process each time,
              against `python -c <bare>` in a new process (so interpreter and torch
              start-up, paid by both, cancel out of the difference).

    python benchmarks/harness_overhead.py --task noisy_labels --method ce \
        --benchmark digits-sym50 --scale small --repeats 3

Writes benchmarks/results/harness_overhead-<task>.json. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
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


def bare_once(task_name, variant, benchmark, seed, scale, threads):
    import torch

    from harness.plugins import get_task
    from harness.runner import seed_everything

    torch.set_num_threads(threads)
    task = get_task(task_name)
    method = task.config.resolve(scale, variant)
    bench = task.config.benchmark(scale, benchmark)
    seed_everything(seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = task.run(method, bench, dict(method.hyperparameters), BareContext(seed, tmp))
        return time.perf_counter() - t0, {m.name: m.value for m in result.metrics}


def harness_once(task_name, variant, benchmark, seed, scale, threads, results):
    from harness.runner import run_one

    t0 = time.perf_counter()
    rec = run_one(task_name, variant, benchmark, seed, scale, results_dir=results, threads=threads, force=True)
    return time.perf_counter() - t0, {m["name"]: m["value"] for m in rec["metrics"]}


def process_once(args, results, bare: bool) -> float:
    if bare:
        code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); from harness_overhead import bare_once; "
                f"bare_once({args.task!r}, {args.method!r}, {args.benchmark!r}, {args.seed}, {args.scale!r}, "
                f"{args.threads})")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "harness", "--results", str(results), "run", args.task, "--method",
               args.method, "--benchmark", args.benchmark, "--seed", str(args.seed), "--scale", args.scale,
               "--threads", str(args.threads), "--force"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "HARNESS_PROGRESS": "0"})
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="noisy_labels")
    p.add_argument("--method", default="ce")
    p.add_argument("--benchmark", default="digits-sym50")
    p.add_argument("--scale", default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as results:
        bare, harness, metrics = [], [], {}
        # Warm-up, untimed: first-call costs (lazy imports, the dataset's memory map) are
        # paid once per process by either path and are measured by the process timings.
        bare_once(args.task, args.method, args.benchmark, args.seed, args.scale, args.threads)
        harness_once(args.task, args.method, args.benchmark, args.seed, args.scale, args.threads, results)
        for _ in range(args.repeats):
            t, metrics["bare"] = bare_once(args.task, args.method, args.benchmark, args.seed, args.scale, args.threads)
            bare.append(t)
            t, metrics["harness"] = harness_once(args.task, args.method, args.benchmark, args.seed, args.scale,
                                                 args.threads, results)
            harness.append(t)
        proc_bare = [process_once(args, results, bare=True) for _ in range(args.repeats)]
        proc_harness = [process_once(args, results, bare=False) for _ in range(args.repeats)]
    med = statistics.median
    out = {
        "task": args.task, "method": args.method, "benchmark": args.benchmark, "scale": args.scale,
        "threads": args.threads, "repeats": args.repeats,
        "in_process_s": {"bare": med(bare), "harness": med(harness), "overhead": med(harness) - med(bare)},
        "process_s": {"bare": med(proc_bare), "harness": med(proc_harness),
                      "overhead": med(proc_harness) - med(proc_bare)},
        "same_metrics": metrics["bare"] == metrics["harness"],
        "raw": {"bare": bare, "harness": harness, "process_bare": proc_bare, "process_harness": proc_harness},
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"harness_overhead-{args.task}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    ip, pr = out["in_process_s"], out["process_s"]
    print(f"{args.task}/{args.benchmark}/{args.method}: bare loop {ip['bare']:.2f} s, through the harness "
          f"{ip['harness']:.2f} s (+{ip['overhead']:.2f} s in process); as a job: {pr['harness']:.2f} s vs a bare "
          f"script {pr['bare']:.2f} s (+{pr['overhead']:.2f} s); identical metrics: {out['same_metrics']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
