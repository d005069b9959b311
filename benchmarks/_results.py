"""What every benchmark script writes beside its numbers: the machine, and the JSON file itself
(benchmarks/results/<name>.json, read by the report's Performance page)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """CPU count, Python version and the 1-minute load average (None where the OS has none)."""
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        load = None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_1m": load}


def timed(fn):
    """(wall seconds, CPU seconds of this process, ``fn()``). On a loaded machine the wall time is
    mostly waiting for a core; the CPU time is what the step itself costs."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def write_result(path: str | Path, doc: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
