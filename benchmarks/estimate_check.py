"""The estimator against measured CPU runs: one paper-size training step per task (real widths,
tiny batches), its FLOPs as the estimator counts them and as torch's flop counter counts them, and
its time against what the estimate predicts at the task's stated MFU.

The CPU's peak is measured here (the best of a few 2048^3 fp32 matmuls with the same threads), so

    measured MFU           = estimated FLOPs per step / measured seconds per step / CPU peak
    estimated / measured   = measured MFU / stated MFU   (1: the estimate's time is right; < 1: the
                             run is slower than the estimate says, at this batch on this device)

Tiny CPU batches are not the GPU's operating point, so the time ratio checks the counting and the
order of magnitude, not the GPU MFU itself (benchmarks/gpu_check.sh measures that on a GPU).

    .venv/bin/python benchmarks/estimate_check.py          # writes results/estimate_check-cpu.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def cpu_peak(threads: int, n: int = 2048, reps: int = 5) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    import paper_steps

    threads = int(os.environ.get("THREADS", 2))
    peak = cpu_peak(threads)
    out = HERE / "results" / "estimate_check-cpu.json"
    paper_steps.main(["--device", "cpu", "--cpu-sizes", "--task", "all", "--steps", "2", "--threads", str(threads),
                      "--peak-flops", str(peak), "--out", str(out)])
    data = json.loads(out.read_text())
    data["env"]["cpu_peak_source"] = "measured: best of 5 fp32 2048^3 matmuls"
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{'task':<22}{'est/counted FLOPs':>18}{'measured MFU':>14}{'stated MFU':>12}{'est/measured time':>19}")
    for name, r in data["tasks"].items():
        ratio = r.get("estimated_over_counted_flops")
        print(f"{name:<22}{(f'{ratio:.3f}' if ratio else 'n/a'):>18}{r['measured_mfu']:>14.3f}{r['assumed_mfu']:>12.3f}"
              f"{r['estimated_over_measured_time']:>19.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
