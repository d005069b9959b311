"""Planning cost: `snakemake -n` at each scale, as a user pays it (a whole process), split into
what the harness adds (the Snakefile's module: plan + plugin discovery + DVC stage generation,
measured in process) and the rest (snakemake's import and its DAG over the planned jobs).

    python benchmarks/dag_plan.py --scales small paper --repeats 3

Writes benchmarks/results/dag_plan.json. A benchmark, not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _results import machine, write_result  # benchmarks/ is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]
# Issue 15's goal for `snakemake -n` (seconds, an idle 2-core machine).
GOALS = {"dry_run_s": {"at": "all", "max": 1.5}}


def dry_run(scale: str) -> tuple[float, int]:
    """Wall seconds of `snakemake -n` and the number of jobs it planned."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--config", f"scale={scale}"], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    m = re.search(r"^total\s+(\d+)", out.stdout, re.MULTILINE)
    return wall, int(m.group(1)) if m else -1


def harness_plan(scale: str) -> float:
    """Seconds of what the Snakefile itself runs (a fresh process: imports included)."""
    code = ("import time,sys; t=time.perf_counter();"
            "from harness.dag import plan, datasets_of; from harness.dvcstages import static_datasets, "
            "write_plugin_stages; r=plan(sys.argv[1]); datasets_of(r); static_datasets(); write_plugin_stages();"
            "print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code, scale], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", nargs="+", default=["small", "paper"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dag_plan.json"))
    ap.add_argument("--label", default="")
    args = ap.parse_args(argv)
    results = []
    for scale in args.scales:
        runs = [dry_run(scale) for _ in range(args.repeats)]
        plans = [harness_plan(scale) for _ in range(args.repeats)]
        row = {"scale": scale, "n_jobs": runs[0][1], "dry_run_s": round(statistics.median(w for w, _ in runs), 3),
               "dry_run_all_s": [round(w, 3) for w, _ in runs],
               "harness_plan_s": round(statistics.median(plans), 3), "harness_plan_all_s": [round(p, 3) for p in plans]}
        print(json.dumps(row), flush=True)
        results.append(row)
    write_result(args.out, {"benchmark": "dag_plan", "label": args.label, "machine": machine(),
                            "repeats": args.repeats, "results": results, "goals": GOALS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
