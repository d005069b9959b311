"""Where and with what a run was made: git, packages, hardware, executor."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "triton", "numpy", "scipy", "scikit-learn", "pandas", "datasets", "evaluate",
            "snakemake", "dvc", "harness")


def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=4)
def git_info(cwd: str | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the code's checkout (the harness source tree)."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent.parent
    commit = _git("rev-parse", "HEAD", cwd=where)
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=where)
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


#: PACKAGES' versions and the CPU model as a warm worker server read them once before forking
#: (:func:`warm`; its key covers the installed packages); None: read by every run (~35 ms).
_WARM: dict[str, Any] | None = None


def _installed() -> dict[str, Any]:
    """PACKAGES' versions and the CPU model."""
    return {"packages": {p: _version(p) for p in PACKAGES}, "cpu": _cpu_model()}


def warm() -> None:
    """Read the package versions and the CPU model once, for the processes forked from this one."""
    global _WARM
    _WARM = _installed()


def executor_info() -> dict[str, Any]:
    """How the run was launched: SLURM job, snakemake job, or a plain process."""
    if os.environ.get("SLURM_JOB_ID"):
        return {"executor": "slurm", "job_id": os.environ["SLURM_JOB_ID"]}
    if os.environ.get("HARNESS_EXECUTOR"):
        return {"executor": os.environ["HARNESS_EXECUTOR"], "job_id": os.environ.get("HARNESS_JOB_ID")}
    return {"executor": "local", "job_id": None}


def collect(device: str = "cpu") -> dict[str, Any]:
    installed = _WARM if _WARM is not None else _installed()
    info: dict[str, Any] = {
        **git_info(),
        "python": platform.python_version(),
        "packages": dict(installed["packages"]),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": installed["cpu"],
        "cpu_count": os.cpu_count(),
        **executor_info(),
        "argv": sys.argv,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.version.cuda
        if device.startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cudnn"] = torch.backends.cudnn.version()
    return info


#: task.yaml keys that cannot change a run's result: editing them must not rerun a study.
RESULT_NEUTRAL_KEYS = ("claims", "published", "paper", "description", "tolerances")


def _hashable_source(p: Path) -> bytes:
    """A source file's bytes; for task.yaml, its canonical JSON without the result-neutral keys
    (claims, published numbers, prose), so a claim threshold or a comment can change freely."""
    if p.name != "task.yaml":
        return p.read_bytes()
    import yaml

    from harness.config import load_yaml

    try:
        raw = load_yaml(p.read_text())
    except yaml.YAMLError:
        return p.read_bytes()  # unparsable: hash the bytes; loading the task reports the error
    if not isinstance(raw, dict):
        return p.read_bytes()
    kept = {k: v for k, v in raw.items() if k not in RESULT_NEUTRAL_KEYS}
    return json.dumps(kept, sort_keys=True, default=str).encode()


def code_hash(folder: Path) -> str:
    """sha256 over the task folder's sources (*.py, *.yaml), so editing a task reruns it.

    The README and tests are excluded: prose and tests do not change results. So are the parts
    of task.yaml that cannot change a run (:data:`RESULT_NEUTRAL_KEYS`) and its formatting.
    """
    h = hashlib.sha256()
    folder = Path(folder)
    for p in sorted(folder.rglob("*")):
        if p.suffix not in (".py", ".yaml") or "__pycache__" in p.parts or p.name.startswith("test_"):
            continue
        h.update(str(p.relative_to(folder)).encode())
        h.update(_hashable_source(p))
    return h.hexdigest()[:16]
