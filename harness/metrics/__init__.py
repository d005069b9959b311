"""Standard metrics as local ``evaluate`` modules, loaded by path (the Hub is unreachable).

Each metric is a folder ``harness/metrics/<name>/<name>.py`` holding an
``evaluate.Metric``; ``compute("accuracy", predictions=..., references=...)`` returns
the metric's float. Modules are loaded once per process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent
AVAILABLE = tuple(sorted(p.name for p in HERE.iterdir() if (p / f"{p.name}.py").exists()))


@lru_cache(maxsize=None)
def load(name: str):
    if name not in AVAILABLE:
        raise KeyError(f"unknown metric {name!r} (local modules: {', '.join(AVAILABLE)})")
    import evaluate

    return evaluate.load(str(HERE / name))


def compute(name: str, **kwargs) -> float:
    """Compute metric ``name`` and return its single value."""
    out = load(name).compute(**kwargs)
    return float(out[name])
