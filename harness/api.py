"""The plugin contract.

A task is one object, a subclass of :class:`Task`, exposed under the entry-point
group ``harness.tasks``. Everything declarative about it lives in its ``task.yaml``
(validated by :mod:`harness.config`); the Python side only trains and evaluates.

The dataclasses here are frozen: a run's inputs and outputs never change after
they are made, which is what lets the runner hash them and the registry cache them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # pragma: no cover - import cycles only matter for type checkers
    import pandas as pd

    from harness.config import TaskConfig

#: The statuses a finished run can have. ``failed`` is never cached.
STATUSES = ("ok", "diverged", "failed")


@dataclass(frozen=True)
class Metric:
    """One final number of a run."""

    name: str
    """What is measured, e.g. ``test_accuracy``; the same name across methods of a task."""
    value: float
    """The measured value (NaN or inf marks a diverged run)."""
    higher_is_better: bool = True
    """Direction used for 'best in bold' and for claim directions."""


@dataclass(frozen=True)
class Benchmark:
    """A dataset plus a setting, e.g. ``digits-sym50``: digits with 50% symmetric noise."""

    name: str
    """Canonical, path-safe name."""
    dataset: str
    """Name of the dataset builder (see :mod:`harness.data`)."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Task-specific knobs that define the setting (noise type, rate, ...)."""


@dataclass(frozen=True)
class Method:
    """A named training/evaluation procedure, resolved for one scale and grid point."""

    name: str
    """The method as declared in task.yaml, e.g. ``nested_dropout``."""
    variant: str
    """Canonical variant name, ``name`` or ``name[k=v,...]`` for a grid point."""
    hyperparameters: Mapping[str, Any]
    """Fully resolved hyperparameters (scale defaults, method values, grid point, overrides)."""
    description: str = ""
    """One line for reports and ``harness tasks``."""
    grid_point: Mapping[str, Any] = field(default_factory=dict)
    """The grid coordinates of this variant (empty for an un-gridded method)."""
    select: Mapping[str, Any] | None = None
    """For a best-of-sweep method: ``{"from": method, "metric": name, "mode": max|min}``."""


@dataclass(frozen=True)
class RunRef:
    """A pointer to another run: the DAG edge behind ``Task.requires``."""

    task: str
    """Task name (usually the requiring task itself)."""
    variant: str
    """Canonical variant name of the required run."""
    benchmark: str
    """Benchmark name of the required run."""
    seed: int
    """Seed of the required run."""


@dataclass(frozen=True)
class Claim:
    """A falsifiable statement of the paper and how it is tested.

    Every claim reduces to one effect per independent seed; :mod:`harness.claims` alone turns
    those into an interval, p-values and a verdict (DESIGN §3, the verdict rule).
    """

    id: str
    """Short identifier, unique within the task."""
    statement: str
    """The paper's statement, in words."""
    source: str
    """Where the paper makes it (table, figure, section)."""
    metric: str | None = None
    """Metric compared (declarative claims)."""
    treatment: str | None = None
    """Variant expected to differ from the control."""
    control: str | None = None
    """Variant compared against."""
    benchmarks: tuple[str, ...] = ()
    """Benchmarks whose paired differences are averaged within each seed (empty: all of the scale)."""
    direction: str = "greater"
    """``greater``: treatment - control is expected > min_effect; ``less``: < -min_effect."""
    min_effect: float = 0.0
    """Smallest effect (in metric units) that counts as reproducing the claim."""
    function: str | None = None
    """Name of a claim function (``claim_x`` in the task's analysis module) for a shape claim."""
    note: str = ""
    """How the small-scale test maps to the paper's claim."""
    relative: bool = False
    """A comparison's difference divided by the control's magnitude, ``(t - c) / |c|``: a unitless
    effect, for claims whose benchmarks report the metric in different units (nats per image and
    nats per word); ``min_effect`` is then a fraction too."""
    per_benchmark: bool = False
    """A comparison tested on each benchmark on its own (one claim ``id@benchmark`` each, all in
    the Holm family) instead of averaging the benchmarks within a seed."""
    diverged: str = "worst"
    """What a diverged arm of a comparison means: ``worst`` (default: the diverged arm takes the
    worst finite value of the metric seen on that benchmark at this scale, so divergence counts
    against the side that diverged) or ``exclude`` (the pair is dropped, and counted)."""
    exploratory: bool = False
    """A post-hoc claim: reported apart, tested without multiplicity correction, outside the Holm
    family of the pre-registered claims."""
    undecidable: str | Mapping[str, str] = ""
    """Why this design cannot decide the claim at any number of seeds (empty: it can): one reason
    for every scale, or a reason per scale (``{small: "..."}``) when only some scales lack it."""

    def undecidable_at(self, scale: str) -> str:
        """The reason this claim is undecidable by design at ``scale`` ("" when it is not)."""
        if isinstance(self.undecidable, Mapping):
            return str(self.undecidable.get(scale, ""))
        return self.undecidable


@dataclass(frozen=True)
class ClaimEvidence:
    """What a shape-claim function returns: one effect per independent seed.

    The function orients each effect so that ``direction`` says which side reproduces; it never
    computes an interval, a p-value or a verdict (the core does, once, for every claim).
    """

    per_seed: Mapping[int, float]
    """Seed -> the claim's effect measured on that seed alone (NaN or a missing seed: no effect;
    such seeds do not count towards n)."""
    direction: str = "greater"
    """Which side of ``min_effect`` reproduces the claim."""
    min_effect: float = 0.0
    """Threshold on the effect (task.yaml may tighten it, never loosen it)."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """Anything the report should show beside the numbers (descriptive only)."""
    undecidable: str = ""
    """Non-empty when the design cannot decide the claim (e.g. a fit with no residual degree of
    freedom): the reason, shown with the verdict ``undecidable``."""


@dataclass(frozen=True)
class Published:
    """One number from the paper, kept apart from our runs."""

    benchmark: str
    """The paper's benchmark name (e.g. ``cifar10-sym50``)."""
    method: str
    """The paper's method name, mapped to ours where one exists."""
    metric: str
    """Metric name, in our naming."""
    value: float
    """The published value, in the paper's units."""
    source: str
    """Table or figure."""
    std: float | None = None
    """Published spread, when reported."""
    note: str = ""
    """Anything that differs in the paper's setting."""


@dataclass(frozen=True)
class Artifact:
    """A file a run produced."""

    name: str
    """Logical name, e.g. ``model``."""
    path: str
    """Path relative to the run's output directory."""
    sha256: str = ""
    """Filled in by the runner."""


@dataclass(frozen=True)
class RunResult:
    """What ``Task.run`` returns."""

    metrics: tuple[Metric, ...]
    """Final metrics."""
    artifacts: tuple[Artifact, ...] = ()
    """Files written under ``ctx.out_dir`` that other runs or the report may read."""
    status: str = "ok"
    """``ok`` or ``diverged``; the runner forces ``diverged`` when a metric is NaN/inf."""
    info: Mapping[str, Any] = field(default_factory=dict)
    """Extra JSON-able facts for the report (chosen k*, selected variant, ...)."""

    def metric(self, name: str) -> float:
        for m in self.metrics:
            if m.name == name:
                return m.value
        raise KeyError(name)

    @property
    def is_finite(self) -> bool:
        return all(math.isfinite(m.value) for m in self.metrics)


@dataclass(frozen=True)
class RunEstimate:
    """What one run costs, as ``Task.estimate`` predicts it before anything runs (``harness plan --estimate``).

    FLOPs are counted, not timed: the harness turns them into GPU-hours on a named GPU at an
    assumed model-FLOPs utilisation (MFU), the task's own ``mfu`` when it gives one.
    """

    flops: float
    """Model FLOPs of the whole run: training (forward + backward) plus every evaluation pass."""
    peak_memory_bytes: float
    """Accelerator memory at the run's peak: weights, gradients, optimizer state, activations."""
    data_bytes: float = 0.0
    """Disk of the dataset the run reads (counted once per dataset in a bill, not per run)."""
    checkpoint_bytes: float = 0.0
    """Disk the run writes: its last resumable checkpoint and its artifacts."""
    mfu: float | None = None
    """The task's MFU assumption for this run (a Python time loop, a small CNN), else the bill's default."""
    note: str = ""
    """How it was counted (model size, tokens, steps), one line for the bill."""


class RunContext:
    """Everything a run may ask of the harness. Built by :mod:`harness.runner`.

    Tasks call:
      ``ctx.log(step, curve="train", **metrics)``  a point of the learning curve ``curve``
      ``ctx.checkpoint(state)``          save resumable state (torch-serialisable dict)
      ``ctx.restore()``                  the last checkpoint, or None
      ``ctx.progress(iterable, total)``  a progress bar on a terminal, plain iteration elsewhere
      ``ctx.require(ref)``               the run record (dict) of a required run
      ``ctx.artifact_path(ref, name)``   absolute path of a required run's artifact
      ``ctx.data_dir(dataset)``          the materialised dataset folder
    """

    seed: int
    device: str
    scale: str
    out_dir: Path

    def log(self, step: int, curve: str = "train", **metrics: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def checkpoint(self, state: Mapping[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError

    def restore(self) -> Mapping[str, Any] | None:  # pragma: no cover
        raise NotImplementedError

    def progress(self, iterable, total: int | None = None, desc: str = ""):  # pragma: no cover
        raise NotImplementedError

    def require(self, ref: RunRef) -> Mapping[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def artifact_path(self, ref: RunRef, name: str) -> Path:  # pragma: no cover
        raise NotImplementedError

    def data_dir(self, dataset: str) -> Path:  # pragma: no cover
        raise NotImplementedError


class Task:
    """Base class of a task plugin.

    A subclass sets ``root`` (the folder holding ``task.yaml``) and implements
    ``run``. ``requires`` defaults to the needs of best-of-sweep methods; override it
    and call ``super().requires`` to add a task's own edges.
    """

    #: Folder holding task.yaml (set by the subclass, usually ``Path(__file__).parent``).
    root: Path

    def __init__(self) -> None:
        self._config: TaskConfig | None = None

    # -- declarative side -------------------------------------------------------------
    @property
    def config(self) -> "TaskConfig":
        """The validated task.yaml (loaded on first use)."""
        if self._config is None:
            from harness.config import load_task_config

            self._config = load_task_config(Path(self.root) / "task.yaml")
        return self._config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> str:
        return str(self.config.version)

    def datasets(self) -> dict[str, Callable[..., Any]]:
        """Dataset builders this task contributes: name -> builder (see harness.data)."""
        return {}

    # -- procedural side --------------------------------------------------------------
    def requires(self, method: Method, benchmark: Benchmark, seed: int, scale: str) -> list[RunRef]:
        """Runs that must exist before this one (DAG edges)."""
        if method.select:
            return [
                RunRef(self.name, v.variant, benchmark.name, seed)
                for v in self.config.variants(scale, only=method.select["from"])
            ]
        return []

    def run(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any], ctx: RunContext) -> RunResult:
        """Train and evaluate once. Raise on failure; return status ``diverged`` for NaN."""
        raise NotImplementedError

    def select_best(self, method: Method, benchmark: Benchmark, ctx: RunContext) -> RunResult:
        """Default best-of-sweep: pick the trial with the best validation metric.

        Ties go to the first variant in grid order, so the choice is deterministic.
        The returned metrics are the chosen trial's; ``info`` names the winner.
        """
        sel = method.select or {}
        metric = sel["metric"]
        higher = sel.get("mode", "max") == "max"
        best = None
        for ref in self.requires(method, benchmark, ctx.seed, ctx.scale):
            record = ctx.require(ref)
            if record.get("status") != "ok":
                continue
            values = {m["name"]: m for m in record["metrics"]}
            if metric not in values:
                raise KeyError(f"trial {ref.variant} has no metric {metric!r} to select on")
            v = values[metric]["value"]
            if best is None or (v > best[0] if higher else v < best[0]):
                best = (v, ref, record)
        if best is None:
            return RunResult(metrics=(), status="diverged", info={"selected": None})
        _, ref, record = best
        metrics = tuple(Metric(m["name"], m["value"], m["higher_is_better"]) for m in record["metrics"])
        return RunResult(metrics=metrics, info={"selected": ref.variant, "selected_run_id": record["run_id"],
                                                 **record.get("info", {})})

    # -- claims -----------------------------------------------------------------------
    #: Module (relative to the task's package) holding functions ``claim_x(task, frame)``;
    #: imported only when a claim is evaluated, so importing the task stays cheap.
    analysis_module: str | None = "analysis"

    def claim_function(self, name: str) -> Callable[["pd.DataFrame"], ClaimEvidence]:
        """``name`` as a method of the task, else ``<task package>.<analysis_module>.name``
        bound to the task (called as ``fn(task, frame)``)."""
        fn = getattr(self, name, None)
        if callable(fn):
            return fn
        module = self._analysis()
        fn = getattr(module, name, None) if module is not None else None
        if not callable(fn):
            where = f" or of {module.__name__}" if module is not None else ""
            raise AttributeError(f"task {self.name!r} has no claim function {name!r} (not a method{where})")
        return lambda frame: fn(self, frame)

    def _analysis(self):
        """The task's analysis module, or None when it has none."""
        import importlib
        import sys

        package = sys.modules[type(self).__module__].__package__
        if not self.analysis_module or not package:
            return None
        target = f"{package}.{self.analysis_module}"
        try:
            return importlib.import_module(target)
        except ModuleNotFoundError as e:
            if e.name == target:
                return None
            raise

    def estimate(self, method: Method, benchmark: Benchmark, config: Mapping[str, Any],
                 scale: str) -> RunEstimate | None:
        """The cost of one run (FLOPs, peak memory, disk), predicted from its resolved config
        without running it; None when the task does not estimate (``harness plan --estimate``)."""
        return None

    def figures(self, runs: "pd.DataFrame", scale: str) -> list[tuple[str, str]]:
        """Task-specific report figures: a list of (title, inline SVG)."""
        return []
