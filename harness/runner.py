"""One run: resolve, seed, execute, measure, record.

``run_one`` is what ``harness run`` and every Snakemake job call. In order:

1. resolve the task, the method variant (grid point + overrides) and the benchmark;
2. read the data hash of the benchmark's dataset and the records of required runs;
3. compute the run_id (hash of task, version, variant, benchmark, config, seed, scale,
   data hashes, code hash, required run_ids); an existing record with that run_id is
   returned as is (cached);
4. seed python/numpy/torch, make CPU kernels deterministic, pick the device;
5. call ``Task.run`` (or ``Task.select_best`` for a best-of-sweep method) with a
   :class:`LocalRunContext` that logs curves, checkpoints (with RNG state) and resumes;
6. write the immutable JSON record atomically; a superseded record (other run_id) is
   moved to ``results/history/`` so nothing is lost. NaN/inf metrics make the status
   ``diverged``: a valid, cached result.

An exception writes a failure record under ``results/failures/`` (never a DAG output)
and propagates, so the job exits non-zero and the next invocation retries it,
resuming from the last checkpoint.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness import data as data_mod
from harness.api import Artifact, Benchmark, Method, RunContext, RunRef, RunResult, Task
from harness.config import ConfigError, config_hash
from harness.record import (
    SCHEMA_VERSION, artifact_dir, encode_value, failure_path, read_record, run_path, write_json_atomic,
)

CHECKPOINT = "_checkpoint.pt"


class SimulatedInterrupt(RuntimeError):
    """Raised after the N-th checkpoint when ``HARNESS_INTERRUPT_AFTER_CHECKPOINT=N`` (tests of resume)."""


class RequiredRunMissing(ConfigError):
    """A run this run depends on has no usable record yet."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


# -- seeding --------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {requested} asked for, but torch sees no CUDA device; use --device cpu")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def configure_determinism(device: str) -> bool:
    """Deterministic kernels. True when bit-exact reruns are expected (CPU).

    CPU kernels are deterministic for a fixed thread count (tested), so the CPU path
    skips ``torch.use_deterministic_algorithms``: calling it imports torch's compiler
    stack (~2 s, paid by every job of the DAG). On CUDA it is switched on with
    warn_only, since some ops have no deterministic kernel; the record says False.
    """
    if not device.startswith("cuda"):
        return True
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    return False


# -- the context ----------------------------------------------------------------------

class LocalRunContext(RunContext):
    """RunContext backed by the local results folder."""

    def __init__(self, *, task: str, run_id: str, seed: int, device: str, scale: str, out_dir: Path,
                 results_dir: Path, interrupt_after: int | None = None):
        self.task = task
        self.run_id = run_id
        self.seed = seed
        self.device = device
        self.scale = scale
        self.out_dir = Path(out_dir)
        self.results_dir = Path(results_dir)
        self.curves: dict[str, list[dict[str, Any]]] = {}
        self.resumed_from_step: int | None = None
        self._checkpoints = 0
        self._interrupt_after = interrupt_after
        self.out_dir.mkdir(parents=True, exist_ok=True)

    # curves
    def log(self, step: int, curve: str = "train", **metrics: float) -> None:
        point = {"step": int(step)}
        for k, v in metrics.items():
            point[k] = encode_value(v)["value"] if v is not None else None
        self.curves.setdefault(curve, []).append(point)

    # checkpoint / resume
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        import torch

        _check_checkpoint_state(state)
        blob = {"run_id": self.run_id, "state": dict(state), "curves": self.curves, "rng": rng_state()}
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.checkpoint_path)
        self._checkpoints += 1
        if self._interrupt_after is not None and self._checkpoints >= self._interrupt_after:
            raise SimulatedInterrupt(f"simulated interrupt after checkpoint {self._checkpoints}")
        pause = os.environ.get("HARNESS_PAUSE_AFTER_CHECKPOINT")
        if pause and self._checkpoints == int(pause):  # tests: a real process to SIGKILL here
            (self.out_dir / "_paused").write_text(str(self._checkpoints))
            while True:
                time.sleep(1)

    def restore(self) -> Mapping[str, Any] | None:
        import pickle

        import torch

        if not self.checkpoint_path.exists():
            return None
        try:  # weights_only: a checkpoint holds tensors and plain data, never code to run
            blob = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            if not isinstance(blob, dict):
                raise pickle.UnpicklingError(f"a {type(blob).__name__}, not a checkpoint")
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError) as e:
            print(f"warning: ignoring unusable checkpoint {self.checkpoint_path} ({type(e).__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else ''}); starting this run from scratch", file=sys.stderr)
            self.checkpoint_path.unlink(missing_ok=True)
            return None
        if blob.get("run_id") != self.run_id:  # stale: other code, config or data
            self.checkpoint_path.unlink()
            return None
        self.curves = blob["curves"]
        set_rng_state(blob["rng"])
        state = blob["state"]
        self.resumed_from_step = int(state.get("step", state.get("epoch", -1))) if isinstance(state, dict) else -1
        return state

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = ""):
        if sys.stderr.isatty() and os.environ.get("HARNESS_PROGRESS", "1") != "0":
            from tqdm.auto import tqdm

            return tqdm(iterable, total=total, desc=desc, leave=False)
        return iterable

    # dependencies
    def require(self, ref: RunRef) -> Mapping[str, Any]:
        path = run_path(self.results_dir, self.scale, ref.task, ref.benchmark, ref.variant, ref.seed)
        if not path.exists():
            raise RequiredRunMissing(
                f"required run {ref.task}/{ref.benchmark}/{ref.variant}/seed{ref.seed} has no record at {path}: "
                "run it first (snakemake orders this for you)"
            )
        return read_record(path)

    def artifact_path(self, ref: RunRef, name: str) -> Path:
        rec = self.require(ref)
        for a in rec.get("artifacts", []):
            if a["name"] == name:
                return self.results_dir / a["path"]
        selected = (rec.get("info") or {}).get("selected")
        if selected:  # a best-of-sweep run points at its winning trial
            return self.artifact_path(RunRef(ref.task, selected, ref.benchmark, ref.seed), name)
        raise RequiredRunMissing(f"run {ref} has no artifact {name!r}")

    def data_dir(self, dataset: str) -> Path:
        return data_mod.data_root() / dataset


_PLAIN = (str, int, float, bool, type(None))


def _check_checkpoint_state(state: Any, where: str = "state") -> None:
    """Checkpoints load with ``torch.load(weights_only=True)``: only tensors, numbers, strings,
    None and lists/tuples/dicts of them. Anything else is named here, when it is saved."""
    import torch

    if isinstance(state, (torch.Tensor, *_PLAIN)) or isinstance(state, (torch.Size, torch.dtype, torch.device)):
        return
    if isinstance(state, Mapping):
        for k, v in state.items():
            if not isinstance(k, _PLAIN):
                raise TypeError(f"ctx.checkpoint: key {k!r} at {where} is a {type(k).__name__}; use str or int keys")
            _check_checkpoint_state(v, f"{where}[{k!r}]")
        return
    if isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            _check_checkpoint_state(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"ctx.checkpoint: {where} is a {type(state).__module__}.{type(state).__name__}; a checkpoint holds "
        "tensors, numbers, strings, None, lists and dicts only (it is loaded with weights_only=True): "
        "convert it (e.g. a numpy array with torch.from_numpy, a numpy scalar with float())"
    )


# -- one run --------------------------------------------------------------------------

def resolve(task: Task, variant: str, benchmark: str, scale: str,
            overrides: Mapping[str, Any] | None = None) -> tuple[Method, Benchmark]:
    cfg = task.config
    bench = cfg.benchmark(scale, benchmark)
    return cfg.for_benchmark(scale, cfg.resolve(scale, variant, overrides), bench), bench


def compute_run_id(task: Task, method: Method, bench: Benchmark, seed: int, scale: str,
                   data_hashes: Mapping[str, str], code: str, required: list[str],
                   threads: int | None = None) -> str:
    """The run's identity. ``threads`` (CPU threads change float results) enters the hash when it
    differs from the scale's ``resources.threads``, the count the DAG runs with by default, so the
    run_ids of runs made at that count are the ones they always were."""
    key = {
        "task": task.name, "task_version": task.version, "variant": method.variant,
        "benchmark": bench.name, "benchmark_settings": dict(bench.settings),
        "config": dict(method.hyperparameters), "seed": seed, "scale": scale,
        "data": dict(data_hashes), "code": code, "requires": required,
    }
    if threads is not None and threads != task.config.scale(scale).resources.threads:
        key["threads"] = int(threads)
    return config_hash(key)


def _check_seed_threads(seed: Any, threads: Any) -> None:
    from harness.config import MAX_SEED

    if isinstance(seed, bool) or not hasattr(seed, "__index__") or not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"seed {seed!r}: a seed is an integer from 0 to {MAX_SEED}")
    if threads is not None and (isinstance(threads, bool) or not hasattr(threads, "__index__") or int(threads) < 1):
        raise ConfigError(f"threads {threads!r}: give a thread count of at least 1 (or leave it out: the "
                          "scale's resources.threads)")


def run_one(task_name: str, variant: str, benchmark: str, seed: int, scale: str, *,
            overrides: Mapping[str, Any] | None = None, results_dir: str | Path = "results",
            device: str | None = None, threads: int | None = None, force: bool = False) -> dict[str, Any]:
    """Run (or fetch from cache) one run and return its record."""
    from harness.plugins import get_task
    from harness.provenance import code_hash, collect

    results_dir = Path(results_dir)
    _check_seed_threads(seed, threads)
    task = get_task(task_name)
    method, bench = resolve(task, variant, benchmark, scale, overrides)
    if bench.name not in task.config.method_benchmarks(scale, method.name) and not overrides:
        raise ConfigError(f"method {method.name!r} does not run on benchmark {bench.name!r} at scale {scale!r}")
    threads = int(threads or task.config.scale(scale).resources.threads)
    # The data this run will read must be the data its record names (files hashed once per process).
    data_hashes = {bench.dataset: data_mod.verified_hash(bench.dataset)}
    code = code_hash(Path(task.root))

    refs = task.requires(method, bench, seed, scale)
    ctx_probe = LocalRunContext(task=task.name, run_id="", seed=seed, device="cpu", scale=scale,
                                out_dir=artifact_dir(results_dir, scale, task.name, bench.name, method.variant, seed),
                                results_dir=results_dir)
    required = []
    for ref in refs:
        rec = ctx_probe.require(ref)
        if rec["status"] == "failed":
            raise RequiredRunMissing(f"required run {ref} failed; fix it first")
        required.append({"task": ref.task, "variant": ref.variant, "benchmark": ref.benchmark,
                         "seed": ref.seed, "run_id": rec["run_id"]})
    run_id = compute_run_id(task, method, bench, seed, scale, data_hashes, code, [r["run_id"] for r in required],
                            threads=threads)

    out_path = run_path(results_dir, scale, task.name, bench.name, method.variant, seed)
    if out_path.exists() and not force:
        try:
            old = read_record(out_path)
        except ConfigError:
            old = None  # corrupt: recompute and replace
        if old is not None and old["run_id"] == run_id and old["status"] in ("ok", "diverged"):
            return old

    import torch

    torch.set_num_threads(threads)
    device = pick_device(device)
    deterministic = configure_determinism(device)
    seed_everything(seed)
    interrupt = os.environ.get("HARNESS_INTERRUPT_AFTER_CHECKPOINT")
    ctx = LocalRunContext(task=task.name, run_id=run_id, seed=seed, device=device, scale=scale,
                          out_dir=ctx_probe.out_dir, results_dir=results_dir,
                          interrupt_after=int(interrupt) if interrupt else None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    base = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "task": task.name, "task_version": task.version,
        "method": method.name, "variant": method.variant, "benchmark": bench.name, "seed": seed, "scale": scale,
        "config": dict(method.hyperparameters), "benchmark_settings": dict(bench.settings),
        "requires": required, "device": device, "data_hashes": data_hashes, "code_hash": code,
        "deterministic": deterministic, "threads": threads,
    }
    started, t0, c0 = _now(), time.perf_counter(), time.process_time()
    try:
        if method.select:
            result = task.select_best(method, bench, ctx)
        else:
            result = task.run(method, bench, dict(method.hyperparameters), ctx)
        if not isinstance(result, RunResult):
            raise TypeError(f"{type(task).__name__}.run returned {type(result).__name__}, expected RunResult")
    except BaseException as e:
        rec = {**base, "status": "failed", "metrics": [], "curves": ctx.curves, "artifacts": [], "info": {},
               "timings": _timings(started, t0, c0, ctx), "memory": _memory(device),
               "provenance": collect(device),
               "error": {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}}
        fpath = failure_path(results_dir, scale, task.name, bench.name, method.variant, seed)
        write_json_atomic(fpath, rec)
        try:  # the CLI names this file; an error raised before this point wrote none
            e.failure_record = fpath  # type: ignore[attr-defined]
        except AttributeError:  # pragma: no cover - exceptions with __slots__
            pass
        raise

    status = result.status if result.status in ("ok", "diverged") else "ok"
    if not result.is_finite or not result.metrics:
        status = "diverged"
    rec = {**base, "status": status,
           "metrics": [{"name": m.name, "higher_is_better": bool(m.higher_is_better), **encode_value(m.value)}
                       for m in result.metrics],
           "curves": ctx.curves, "artifacts": _artifacts(result.artifacts, ctx.out_dir, results_dir),
           "info": dict(result.info), "timings": _timings(started, t0, c0, ctx), "memory": _memory(device),
           "provenance": collect(device)}
    _supersede(out_path, results_dir, run_id)
    write_json_atomic(out_path, rec)
    ctx.checkpoint_path.unlink(missing_ok=True)
    (ctx.out_dir / "_paused").unlink(missing_ok=True)
    failure_path(results_dir, scale, task.name, bench.name, method.variant, seed).unlink(missing_ok=True)
    return rec


def _supersede(out_path: Path, results_dir: Path, run_id: str) -> None:
    """Keep an older record of the same run key in results/history/ (history across commits)."""
    if not out_path.exists():
        return
    try:
        old = read_record(out_path)
    except ConfigError:
        return
    if old["run_id"] != run_id:
        hist = results_dir / "history" / f"{old['run_id']}.json"
        write_json_atomic(hist, old)


def _timings(started: str, t0: float, c0: float, ctx: LocalRunContext) -> dict[str, Any]:
    return {"started_at": started, "finished_at": _now(), "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0, "resumed_from_step": ctx.resumed_from_step}


def _peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM of /proc/self/status where there is one. ru_maxrss is
    not this program's own: Linux keeps the high-water mark across fork and exec, so a run started
    by a large process (a pytest session of several GB) reported its parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _memory(device: str) -> dict[str, Any]:
    # Through the warm worker (harness/worker.py) this process is a fork of a server that imported
    # torch & co.: its high-water mark counts the imported pages the run touches, as in process, but
    # not those it never maps: it can read lower (the toy run: ~390 vs ~480 MB). CPU time
    # (process_time) also restarts at the fork; both are taken as differences over the run anyway.
    peak_rss_mb = _peak_rss_mb()
    peak_gpu_mb = None
    if device.startswith("cuda"):
        import torch

        peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    return {"peak_rss_mb": peak_rss_mb, "peak_gpu_mb": peak_gpu_mb}


def _artifacts(artifacts: Iterable[Artifact], out_dir: Path, results_dir: Path) -> list[dict[str, str]]:
    from harness.record import inside

    out = []
    for a in artifacts:
        p = inside(out_dir, Path(out_dir) / a.path)
        if not p.exists():
            raise FileNotFoundError(f"artifact {a.name!r} declared at {p} but not written")
        out.append({"name": a.name, "path": str(p.relative_to(results_dir)), "sha256": data_mod.file_sha256(p)})
    return out
