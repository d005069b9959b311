"""The bill of a scale before it runs: ``harness plan --scale paper --estimate``.

Every run of :func:`harness.dag.plan` is resolved exactly as the runner would resolve it
(variant, benchmark defaults) and handed to ``Task.estimate``, which counts its FLOPs, peak
accelerator memory and disk (:class:`harness.api.RunEstimate`). Here they become GPU-hours on
a named GPU at an assumed model-FLOPs utilisation (MFU):

    GPU-hours = FLOPs / (peak dense bf16 FLOP/s of the GPU x MFU) / 3600

The MFU is the task's own for a run when it gives one (a Python time loop, a small CNN reach
far less than a large transformer), else the bill's default (``--mfu``, 0.4). Data disk is
counted once per dataset (the largest a run reports), checkpoint disk per run. Nothing here
knows a task by name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: Dense bf16 tensor-core peak (FLOP/s, no sparsity) and memory (bytes) per GPU, from the vendors' sheets.
GPUS: dict[str, tuple[float, float]] = {
    "H100": (989.4e12, 80e9),     # H100 SXM5
    "H200": (989.4e12, 141e9),    # same compute as H100 SXM, more and faster memory
    "A100": (312e12, 80e9),       # A100 SXM 80GB
    "L40S": (362e12, 48e9),
}
DEFAULT_GPU = "H100"
DEFAULT_MFU = 0.4


@dataclass(frozen=True)
class RunCost:
    """One planned run with its estimate and its GPU-hours."""

    task: str
    variant: str
    benchmark: str
    seed: int
    dataset: str
    flops: float
    gpu_hours: float
    peak_memory_bytes: float
    data_bytes: float
    checkpoint_bytes: float
    mfu: float
    fits: bool
    """Whether the peak memory fits on one GPU of the bill."""
    note: str = ""


@dataclass(frozen=True)
class TaskBill:
    """A task's total at one scale."""

    task: str
    runs: int
    estimated: int
    """Runs with an estimate (the rest are counted as unknown)."""
    flops: float
    gpu_hours: float
    peak_memory_bytes: float
    """The largest single-run peak."""
    data_bytes: float
    checkpoint_bytes: float
    not_fitting: int
    """Runs whose peak memory exceeds one GPU's."""


@dataclass(frozen=True)
class Bill:
    scale: str
    gpu: str
    gpu_flops: float
    gpu_memory_bytes: float
    default_mfu: float
    tasks: tuple[TaskBill, ...]
    runs: tuple[RunCost, ...] = field(repr=False)

    @property
    def total(self) -> TaskBill:
        t = self.tasks
        return TaskBill("total", sum(x.runs for x in t), sum(x.estimated for x in t), sum(x.flops for x in t),
                        sum(x.gpu_hours for x in t), max((x.peak_memory_bytes for x in t), default=0.0),
                        sum(x.data_bytes for x in t), sum(x.checkpoint_bytes for x in t),
                        sum(x.not_fitting for x in t))

    def to_dict(self, with_runs: bool = True) -> dict[str, Any]:
        out = {"scale": self.scale, "gpu": self.gpu, "gpu_bf16_flops": self.gpu_flops,
               "gpu_memory_bytes": self.gpu_memory_bytes, "default_mfu": self.default_mfu,
               "formula": "gpu_hours = flops / (gpu_bf16_flops * mfu) / 3600",
               "tasks": [asdict(t) for t in self.tasks], "total": asdict(self.total)}
        if with_runs:
            out["runs"] = [asdict(r) for r in self.runs]
        return out


def gpu_spec(gpu: str) -> tuple[float, float]:
    from harness.config import ConfigError

    key = gpu.upper()
    if key not in GPUS:
        raise ConfigError(f"unknown GPU {gpu!r} for the estimate: use one of {', '.join(GPUS)}")
    return GPUS[key]


def gpu_hours(flops: float, gpu_flops: float, mfu: float) -> float:
    return flops / (gpu_flops * mfu) / 3600.0


def bill(scale: str = "paper", tasks: list[str] | None = None, gpu: str = DEFAULT_GPU,
         mfu: float | None = None) -> Bill:
    """Every planned run of ``scale`` costed. ``mfu`` given: it overrides the tasks' own assumptions."""
    from harness.config import ConfigError
    from harness.dag import plan
    from harness.plugins import discover

    if mfu is not None and not 0 < mfu <= 1:
        raise ConfigError(f"--mfu {mfu}: give a fraction in (0, 1]")
    peak, memory = gpu_spec(gpu)
    loaded, _ = discover()
    runs = plan(scale, tasks)
    costs: list[RunCost] = []
    per_task: dict[str, list[RunCost | None]] = {}
    for r in runs.values():
        task = loaded[r.task]
        cfg = task.config
        bench = cfg.benchmark(scale, r.benchmark)
        method = cfg.for_benchmark(scale, cfg.resolve(scale, r.variant), bench)
        est = task.estimate(method, bench, dict(method.hyperparameters), scale)
        if est is None:
            per_task.setdefault(r.task, []).append(None)
            continue
        run_mfu = float(mfu if mfu is not None else (est.mfu or DEFAULT_MFU))
        c = RunCost(r.task, r.variant, r.benchmark, r.seed, r.dataset, float(est.flops),
                    gpu_hours(est.flops, peak, run_mfu), float(est.peak_memory_bytes), float(est.data_bytes),
                    float(est.checkpoint_bytes), run_mfu, est.peak_memory_bytes <= memory, est.note)
        costs.append(c)
        per_task.setdefault(r.task, []).append(c)
    bills = []
    for name in sorted(per_task):
        known = [c for c in per_task[name] if c is not None]
        data: dict[str, float] = {}
        for c in known:
            data[c.dataset] = max(data.get(c.dataset, 0.0), c.data_bytes)
        bills.append(TaskBill(name, len(per_task[name]), len(known), sum(c.flops for c in known),
                              sum(c.gpu_hours for c in known), max((c.peak_memory_bytes for c in known), default=0.0),
                              sum(data.values()), sum(c.checkpoint_bytes for c in known),
                              sum(not c.fits for c in known)))
    return Bill(scale, gpu.upper(), peak, memory, DEFAULT_MFU if mfu is None else mfu, tuple(bills), tuple(costs))


def task_bill(task: str, scale: str = "paper", gpu: str = DEFAULT_GPU) -> TaskBill | None:
    """One task's total (None when it has no run at the scale or gives no estimate)."""
    b = bill(scale, [task], gpu)
    return next((t for t in b.tasks if t.task == task and t.estimated), None)


# -- formatting ---------------------------------------------------------------------------------

def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def human_flops(n: float) -> str:
    if n <= 0:
        return "0"
    exp = int(math.floor(math.log10(n)))
    return f"{n / 10 ** exp:.2f}e{exp}"


def format_bill(b: Bill, per_run: bool = False) -> str:
    lines = [f"{b.scale} scale on one {b.gpu} (bf16 dense peak {b.gpu_flops / 1e12:.0f} TFLOP/s, "
             f"{human_bytes(b.gpu_memory_bytes)}); MFU {b.default_mfu:.2f} unless a task states its own; "
             "GPU-hours = FLOPs / (peak x MFU)"]
    if per_run:
        lines.append(f"{'task':<22}{'benchmark':<18}{'variant':<44}{'seed':>5}{'FLOPs':>11}{'GPU-h':>10}"
                     f"{'peak mem':>11}{'ckpt':>10}{'MFU':>6}")
        for c in b.runs:
            flag = "" if c.fits else "  DOES NOT FIT"
            lines.append(f"{c.task:<22}{c.benchmark:<18}{c.variant:<44}{c.seed:>5}{human_flops(c.flops):>11}"
                         f"{c.gpu_hours:>10.2f}{human_bytes(c.peak_memory_bytes):>11}"
                         f"{human_bytes(c.checkpoint_bytes):>10}{c.mfu:>6.3f}{flag}")
    lines.append(f"{'task':<22}{'runs':>6}{'FLOPs':>11}{'GPU-hours':>11}{'max peak mem':>14}{'data':>10}"
                 f"{'checkpoints':>13}")
    for t in (*b.tasks, b.total):
        unknown = f"  ({t.runs - t.estimated} runs not estimated)" if t.estimated < t.runs else ""
        fit = f"  {t.not_fitting} runs do not fit one {b.gpu}" if t.not_fitting else ""
        lines.append(f"{t.task:<22}{t.runs:>6}{human_flops(t.flops):>11}{t.gpu_hours:>11.1f}"
                     f"{human_bytes(t.peak_memory_bytes):>14}{human_bytes(t.data_bytes):>10}"
                     f"{human_bytes(t.checkpoint_bytes):>13}{unknown}{fit}")
    return "\n".join(lines)


# -- helpers tasks share: counting a transformer and an optimizer ---------------------------------

def adamw_training_bytes(n_params: float, master_bytes: int = 4) -> float:
    """fp32 weights + fp32 gradients + two fp32 AdamW moments: 16 bytes per parameter."""
    return n_params * (master_bytes + 4 + 8)


def checkpoint_bytes(n_params: float, optimizer_moments: int = 2) -> float:
    """A resumable fp32 checkpoint: weights plus the optimizer's moments."""
    return n_params * 4 * (1 + optimizer_moments)


def counted_flops(fn, *args, **kwargs) -> float:
    """FLOPs of ``fn(*args, **kwargs)`` as ``torch.utils.flop_counter`` counts them (matmuls and
    convolutions, 2 per multiply-add; a ``.backward()`` inside ``fn`` is counted too). Works on meta
    tensors, so a model of any size can be counted without memory or time."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return float(counter.get_total_flops())


# -- the saved bill (read by the report) -----------------------------------------------------------

#: Where ``harness plan --estimate --save`` writes the bill and ``harness report`` reads it.
BILL_PATH = "benchmarks/results/paper-bill.json"


def save_bill(b: Bill, path: str | None = None) -> str:
    import json
    from pathlib import Path

    target = Path(path or BILL_PATH)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(b.to_dict(with_runs=False), indent=1) + "\n")
    return str(target)


def saved_task_bill(task: str, path: str | None = None) -> dict | None:
    """A task's line of the saved bill, formatted for the report (None when there is none)."""
    import json
    from pathlib import Path

    target = Path(path or BILL_PATH)
    try:
        data = json.loads(target.read_text())
    except (OSError, ValueError):
        return None
    row = next((t for t in data.get("tasks", []) if t.get("task") == task), None)
    if not row or not row.get("estimated"):
        return None
    return {"scale": data.get("scale"), "gpu": data.get("gpu"), "runs": row["runs"],
            "flops": human_flops(row["flops"]), "gpu_hours": f"{row['gpu_hours']:,.0f}",
            "peak": human_bytes(row["peak_memory_bytes"]), "data": human_bytes(row["data_bytes"]),
            "checkpoints": human_bytes(row["checkpoint_bytes"]), "not_fitting": row.get("not_fitting", 0),
            "default_mfu": data.get("default_mfu")}
