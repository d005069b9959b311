"""task.yaml: schema, scales, method grids, overrides and canonical hashing.

A task.yaml is validated into a frozen :class:`TaskConfig`. The resolved
hyperparameters of one run are, in order of precedence (last wins)::

    scales.<scale>.defaults  <  scales.<scale>.benchmarks.<benchmark>.defaults
        <  scales.<scale>.methods.<method>  <  grid point  <  --set overrides

A benchmark's ``defaults`` (optional) let one scale hold benchmarks that train differently (a
language model and an image classifier at paper scale); :meth:`TaskConfig.for_benchmark` applies
them when a run is resolved for its benchmark.

Variant names are canonical: ``method`` or ``method[k=v,...]`` with keys sorted and
values written by :func:`format_value`, so the same point always gets the same name
(and the same run_id), whatever order a user typed it in.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from harness.api import Benchmark, Claim, Method, Published

SCALES = ("tiny", "small", "paper")
#: A task, method or hyperparameter name: snake_case, at most 64 characters (a path component
#: must stay well under the 255-byte limit of a file name).
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
BENCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DATASET_RE = BENCH_RE
#: Largest seed: run records and the registry store seeds as signed 64-bit integers.
MAX_SEED = 2**63 - 1
RESERVED_METHOD_KEYS = {"grid", "benchmarks"}


class ConfigError(ValueError):
    """A user-facing configuration error: one message that names the fix."""


# -- canonical values and hashing ---------------------------------------------------------

def format_value(v: Any) -> str:
    """How a value is written inside a variant name (stable, short, YAML-parsable)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # '2.0' stays distinct from the int '2'
    if v is None:
        return "null"
    return str(v)


_EXP_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_value(text: str) -> Any:
    """Parse a CLI/variant value as YAML scalar (``0.3`` -> float, ``true`` -> bool).

    ``1e-05`` (how Python writes small floats, a string to YAML 1.1) reads as a float, so a
    variant name always reads back as the grid point it was made from. Cached: planning parses
    the same few values thousands of times (a list or mapping comes back as a fresh copy).
    """
    if not isinstance(text, str):
        return _parse_value_cached.__wrapped__(text)
    value = _parse_value_cached(text)
    return copy.deepcopy(value) if isinstance(value, (list, dict)) else value


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` through libyaml when PyYAML has it: the same documents, ~10x faster (every
    run process parses its task.yaml, so this is part of the per-run overhead)."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader (C or pure Python)


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=65536)
def _parse_value_cached(text: str) -> Any:
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _EXP_FLOAT_RE.match(value.strip()):
        return float(value)
    return value


#: Characters a variant's keys and values may not hold: path separators, the variant syntax
#: itself (``m[k=v,k2=v2]``) and control characters. Names become one path component.
_UNSAFE_IN_NAME = set("/\\,=[]") | {chr(c) for c in range(32)} | {chr(127)}
HP_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_VARIANT_BYTES = 200


def check_point(method: str, point: Mapping[str, Any], where: str = "") -> None:
    """Raise ConfigError unless ``method[point]`` is a safe, canonical variant name: keys are
    identifiers, values are finite scalars written without path separators or the variant
    syntax, each value reads back as itself, and the name fits in one path component."""
    at = f"{where}: " if where else ""
    for k, v in point.items():
        if not isinstance(k, str) or not HP_KEY_RE.match(k):
            raise ConfigError(f"{at}hyperparameter name {k!r} must be an identifier (letters, digits, _)")
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise ConfigError(f"{at}{k}={v!r}: a variant value must be a number, a string, true/false or null")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{at}{k}={v!r}: a variant value must be finite")
        text = format_value(v)
        bad = sorted({c for c in text if c in _UNSAFE_IN_NAME})
        if not text.strip() or bad or text != text.strip():
            raise ConfigError(
                f"{at}{k}={text!r}: a variant value may not be empty, hold {' '.join(map(repr, bad)) or 'spaces at its ends'}"
                " (it becomes part of a file name under results/): pick a plain value"
            )
        back = parse_value(text)
        if type(back) is not type(v) or back != v:
            raise ConfigError(
                f"{at}{k}={text!r} would read back as {back!r} ({type(back).__name__}), not the "
                f"{type(v).__name__} {v!r}: pick a value that reads as itself"
            )
    name = variant_name(method, point)
    if len(path_safe_unchecked(method, point).encode()) > MAX_VARIANT_BYTES:
        raise ConfigError(f"{at}variant {name[:60]!r}... is too long for a file name (over {MAX_VARIANT_BYTES} bytes)")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; NaN is rejected so hashes stay portable."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_jsonable)


def _jsonable(o: Any) -> Any:
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalar
        return o.item()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def config_hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


def variant_name(method: str, point: Mapping[str, Any]) -> str:
    if not point:
        return method
    inner = ",".join(f"{k}={format_value(point[k])}" for k in sorted(point))
    return f"{method}[{inner}]"


VARIANT_RE = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)(\[(?P<args>[^\]]*)\])?$")


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``'nested_dropout[sigma=4]'`` -> ``('nested_dropout', {'sigma': 4})``."""
    m = VARIANT_RE.match(text.strip())
    if not m:
        raise ConfigError(f"cannot parse method {text!r}: write NAME or NAME[key=value,...]")
    args: dict[str, Any] = {}
    if m.group("args"):
        for part in m.group("args").split(","):
            if "=" not in part:
                raise ConfigError(f"cannot parse {part!r} in {text!r}: write key=value")
            k, v = part.split("=", 1)
            args[k.strip()] = parse_value(v.strip())
    return m.group("name"), args


def path_safe_unchecked(name: str, args: Mapping[str, Any]) -> str:
    return name + "".join(f"__{k}={format_value(args[k])}" for k in sorted(args))


def path_safe(variant: str) -> str:
    """Variant name as a single path component: ``m[a=1,b=x]`` -> ``m__a=1__b=x``.

    Raises ConfigError for a name that could leave its folder (``/``, ``..``) or that is not
    canonical: every path built from a name stays inside its root.
    """
    name, args = parse_variant(variant)
    if not args:
        return name
    check_point(name, args, where=f"method {variant!r}")
    return path_safe_unchecked(name, args)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write key=value (e.g. --set lr=0.01)")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


# -- the schema ---------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PaperSpec(_Strict):
    title: str
    authors: list[str]
    year: int
    venue: str = ""
    arxiv: str = ""
    code: str = ""


class MethodSpec(_Strict):
    description: str
    hyperparameters: list[str] = Field(default_factory=list)
    """Names of the hyperparameters the method reads (documentation and validation)."""
    select: dict[str, Any] | None = None
    """Best-of-sweep: {from: <method with a grid>, metric: <validation metric>, mode: max|min}."""

    @field_validator("select")
    @classmethod
    def _check_select(cls, v):
        if v is None:
            return v
        unknown = set(v) - {"from", "metric", "mode"}
        if unknown or "from" not in v or "metric" not in v:
            raise ValueError("select needs {from: METHOD, metric: METRIC, mode: max|min}")
        if v.get("mode", "max") not in ("max", "min"):
            raise ValueError("select.mode must be max or min")
        return v


class ResourceSpec(_Strict):
    threads: int = 1
    mem_mb: int = 2000
    runtime: int = 30
    """Minutes (SLURM wall time)."""
    gpu: int = 0


class ScaleSpec(_Strict):
    seeds: list[int]
    benchmarks: dict[str, dict[str, Any]]
    """name -> {dataset: NAME, ...settings}."""
    defaults: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, dict[str, Any] | None]
    """Methods run at this scale -> hyperparameters, optional ``grid`` and ``benchmarks``."""
    time_budget_s: float | None = None
    resources: ResourceSpec = Field(default_factory=ResourceSpec)

    @field_validator("benchmarks")
    @classmethod
    def _check_benchmarks(cls, v):
        for name, spec in v.items():
            if not BENCH_RE.match(name):
                raise ValueError(f"benchmark name {name!r} must be path-safe (letters, digits, _ . -)")
            if not isinstance(spec, dict) or "dataset" not in spec:
                raise ValueError(f"benchmark {name!r} needs a 'dataset' key")
            if not isinstance(spec.get("defaults", {}), dict):
                raise ValueError(f"benchmark {name!r}: 'defaults' must map hyperparameter names to values")
        return v

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v):
        if not v or len(set(v)) != len(v):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        if any(s < 0 or s > MAX_SEED for s in v):
            raise ValueError(f"seeds must be integers from 0 to {MAX_SEED}")
        return v


class ClaimSpec(_Strict):
    id: str
    statement: str
    source: str
    metric: str | None = None
    treatment: str | None = None
    control: str | None = None
    benchmarks: list[str] = Field(default_factory=list)
    direction: Literal["greater", "less"] = "greater"
    min_effect: float = 0.0
    function: str | None = None
    note: str = ""
    per_benchmark: bool = False
    """A comparison tested per benchmark (claims ``id@benchmark``) instead of averaged per seed."""
    relative: bool = False
    """A comparison's difference as a fraction of the control, (t - c) / |c| (unitless)."""
    diverged: Literal["worst", "exclude"] = "worst"
    """A diverged arm takes the worst value seen on its benchmark (``worst``) or drops the pair."""
    exploratory: bool = False
    """Post-hoc: reported apart, outside the Holm family of the pre-registered claims."""
    undecidable: str | dict[Literal["tiny", "small", "paper"], str] = ""
    """Why the design cannot decide the claim at any n (its verdict is then ``undecidable``): one
    reason, or one per scale where only some scales lack the design."""

    @model_validator(mode="after")
    def _kind(self):
        declarative = self.metric and self.treatment and self.control
        if bool(declarative) == bool(self.function):
            raise ValueError(
                f"claim {self.id!r}: give either metric+treatment+control (a comparison) "
                "or function (a shape claim computed by the task), not both or neither"
            )
        if (self.per_benchmark or self.relative) and self.function:
            raise ValueError(f"claim {self.id!r}: per_benchmark and relative apply to comparisons; a "
                             "function returns its own per-seed effects")
        if self.min_effect < 0:
            raise ValueError(f"claim {self.id!r}: min_effect is a magnitude (>= 0); the direction gives its side")
        return self


class PublishedSpec(_Strict):
    benchmark: str
    method: str
    metric: str
    value: float
    source: str
    std: float | None = None
    note: str = ""


class TaskConfig(_Strict):
    name: str
    version: str | int
    description: str = ""
    paper: PaperSpec
    datasets: list[str]
    methods: dict[str, MethodSpec]
    scales: dict[Literal["tiny", "small", "paper"], ScaleSpec]
    claims: list[ClaimSpec] = Field(default_factory=list)
    published: list[PublishedSpec] = Field(default_factory=list)
    metrics: dict[str, Literal["higher", "lower"]] = Field(default_factory=dict)
    """Direction of each metric the task reports (for tables and claims)."""
    primary_metric: str | None = None
    """Metric shown first in tables."""
    tolerances: dict[str, float] = Field(default_factory=dict)
    """Per metric, the smallest change between two commits that ``harness compare`` counts as a
    regression or an improvement, in the metric's own units (>= 0). Metrics not listed: 0 (any
    change the seeds show at the 5% level, Holm-adjusted over the comparison, counts)."""
    _variant_cache: dict = PrivateAttr(default_factory=dict)
    """``{(scale, only): [Method]}``: each expansion once (planning resolves variants thousands of times)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, v):
        if not NAME_RE.match(v):
            raise ValueError("name must be snake_case (a-z, 0-9, _), starting with a letter, at most 64 characters")
        return v

    @field_validator("tolerances")
    @classmethod
    def _check_tolerances(cls, v):
        for k, x in v.items():
            if not (x >= 0 and x != float("inf")):
                raise ValueError(f"tolerances.{k} = {x}: a tolerance is a finite magnitude (>= 0) in the metric's units")
        return v

    @field_validator("datasets")
    @classmethod
    def _check_datasets(cls, v):
        for d in v:
            if not DATASET_RE.match(d):
                raise ValueError(f"dataset name {d!r} must be path-safe (letters, digits, _ . -, starting "
                                 "with a letter or digit): it names the folder data/<dataset>/")
        return v

    @model_validator(mode="after")
    def _cross_checks(self):
        for m, spec in self.methods.items():
            if not NAME_RE.match(m):
                raise ValueError(f"method name {m!r} must be snake_case, at most 64 characters")
            if spec.select and spec.select["from"] not in self.methods:
                raise ValueError(f"method {m!r} selects from unknown method {spec.select['from']!r}")
        for scale, s in self.scales.items():
            for m, params in s.methods.items():
                if m not in self.methods:
                    raise ValueError(
                        f"scales.{scale}.methods names {m!r}, which is not under 'methods' "
                        f"(known: {', '.join(sorted(self.methods))})"
                    )
                params = params or {}
                grid = params.get("grid", {})
                if not isinstance(grid, dict) or any(not isinstance(x, list) or not x for x in grid.values()):
                    raise ValueError(f"scales.{scale}.methods.{m}.grid must map names to non-empty lists")
                for k, values in grid.items():
                    for x in values:  # each grid point names a variant, and a folder under results/
                        try:
                            check_point(m, {k: x})
                        except ConfigError as e:
                            raise ValueError(f"scales.{scale}.methods.{m}.grid: {e}") from None
                for b in params.get("benchmarks", []) or []:
                    if b not in s.benchmarks:
                        raise ValueError(f"scales.{scale}.methods.{m}.benchmarks names unknown benchmark {b!r}")
                sel = self.methods[m].select
                if sel and sel["from"] not in s.methods:
                    raise ValueError(f"scales.{scale}: {m!r} selects from {sel['from']!r}, which does not run at this scale")
            for b, spec in s.benchmarks.items():
                if spec["dataset"] not in self.datasets:
                    raise ValueError(f"scales.{scale}.benchmarks.{b} uses dataset {spec['dataset']!r} not listed under 'datasets'")
        ids = [c.id for c in self.claims]
        if len(ids) != len(set(ids)):
            raise ValueError("claim ids must be unique")
        for c in self.claims:
            for attr in ("treatment", "control"):
                v = getattr(c, attr)
                if v and parse_variant(v)[0] not in self.methods:
                    raise ValueError(f"claim {c.id!r}: {attr} {v!r} is not a method")
        return self

    # -- resolution ----------------------------------------------------------------------
    def scale(self, scale: str) -> ScaleSpec:
        if scale not in SCALES:
            raise ConfigError(f"unknown scale {scale!r}: use one of {', '.join(SCALES)}")
        if scale not in self.scales:
            raise ConfigError(f"task {self.name!r} defines no {scale!r} scale in task.yaml")
        return self.scales[scale]

    def benchmarks(self, scale: str) -> list[Benchmark]:
        s = self.scale(scale)
        out = []
        for name, spec in s.benchmarks.items():
            settings = {k: v for k, v in spec.items() if k != "dataset"}
            out.append(Benchmark(name=name, dataset=spec["dataset"], settings=settings))
        return out

    def benchmark(self, scale: str, name: str) -> Benchmark:
        for b in self.benchmarks(scale):
            if b.name == name:
                return b
        raise ConfigError(
            f"task {self.name!r} has no benchmark {name!r} at scale {scale!r} "
            f"(known: {', '.join(b.name for b in self.benchmarks(scale))}); see `harness tasks`"
        )

    def variants(self, scale: str, only: str | None = None) -> list[Method]:
        """Every method variant of the scale, grids expanded in declaration order."""
        return [_copy_method(m) for m in self._variant_templates(scale, only)]

    def _variant_templates(self, scale: str, only: str | None) -> list[Method]:
        """The expansion of :meth:`variants`, cached; never handed out (callers get copies)."""
        key = (scale, only)
        got = self._variant_cache.get(key)
        if got is None:
            got = self._variant_cache[key] = self._expand_variants(scale, only)
        return got

    def _expand_variants(self, scale: str, only: str | None) -> list[Method]:
        s = self.scale(scale)
        out = []
        for m, params in s.methods.items():
            if only is not None and m != only:
                continue
            params = dict(params or {})
            grid = params.pop("grid", {}) or {}
            params.pop("benchmarks", None)
            keys = list(grid)
            points = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))] or [{}]
            for point in points:
                hp = {**s.defaults, **params, **point}
                spec = self.methods[m]
                out.append(Method(name=m, variant=variant_name(m, point), hyperparameters=hp,
                                  description=spec.description, grid_point=point, select=spec.select))
        return out

    def method_benchmarks(self, scale: str, method: str) -> list[str]:
        """Benchmarks a method runs on at this scale (all unless restricted)."""
        s = self.scale(scale)
        restricted = (s.methods.get(method) or {}).get("benchmarks")
        return list(restricted) if restricted else list(s.benchmarks)

    def for_benchmark(self, scale: str, method: Method, benchmark: Benchmark) -> Method:
        """``method`` with the benchmark's ``defaults`` slotted in above the scale's defaults and
        below the method's own values, its grid point and overrides (module docstring)."""
        bench_defaults = benchmark.settings.get("defaults") or {}
        if not bench_defaults:
            return method
        s = self.scale(scale)
        params = dict(s.methods.get(method.name) or {})
        params.pop("grid", None)
        params.pop("benchmarks", None)
        hp = {**s.defaults, **bench_defaults, **params, **method.grid_point}
        return Method(name=method.name, variant=method.variant, hyperparameters=hp, description=method.description,
                      grid_point=method.grid_point, select=method.select)

    def resolve(self, scale: str, variant: str, overrides: Mapping[str, Any] | None = None) -> Method:
        """A variant by name, with overrides. Unknown grid coordinates act as overrides."""
        name, args = parse_variant(variant)
        if name not in self.methods:
            raise ConfigError(
                f"task {self.name!r} has no method {name!r} (known: {', '.join(sorted(self.methods))}); "
                "see `harness tasks`"
            )
        s = self.scale(scale)
        if name not in s.methods:
            raise ConfigError(f"method {name!r} does not run at scale {scale!r}: add it under scales.{scale}.methods")
        if not overrides:
            for v in self._variant_templates(scale, name):
                if v.grid_point == args:
                    return _copy_method(v)
        # Not a declared grid point: base hyperparameters plus the given values.
        params = dict(s.methods[name] or {})
        grid = params.pop("grid", None) or {}
        params.pop("benchmarks", None)
        point = {**args, **(overrides or {})}
        known = (set(self.methods[name].hyperparameters) | set(s.defaults) | set(params) | set(grid)
                 | {k for b in s.benchmarks.values() for k in (b.get("defaults") or {})})
        unknown = sorted(str(k) for k in set(point) - known)
        if unknown:
            raise ConfigError(
                f"method {name!r} has no hyperparameter {', '.join(map(repr, unknown))} at scale {scale!r} "
                f"(it takes: {', '.join(sorted(known)) or 'none'}): fix the name, or declare it under "
                f"methods.{name}.hyperparameters in task.yaml"
            )
        check_point(name, point, where=f"method {variant!r}")
        base = {**s.defaults, **params}
        for k, v in point.items():
            old = base.get(k)
            if isinstance(old, (int, float)) and not isinstance(old, bool) and not (
                    isinstance(v, (int, float)) and not isinstance(v, bool)):
                raise ConfigError(f"{k}={format_value(v)!r}: method {name!r} takes a number for {k} "
                                  f"(default {old!r})")
        hp = {**s.defaults, **params, **point}
        spec = self.methods[name]
        return Method(name=name, variant=variant_name(name, point), hyperparameters=hp,
                      description=spec.description, grid_point=point, select=spec.select)

    def claim_objects(self) -> list[Claim]:
        return [Claim(id=c.id, statement=c.statement, source=c.source, metric=c.metric,
                      treatment=c.treatment, control=c.control, benchmarks=tuple(c.benchmarks),
                      direction=c.direction, min_effect=c.min_effect, function=c.function, note=c.note,
                      per_benchmark=c.per_benchmark, relative=c.relative, diverged=c.diverged, exploratory=c.exploratory,
                      undecidable=c.undecidable)
                for c in self.claims]

    def published_objects(self) -> list[Published]:
        return [Published(**p.model_dump()) for p in self.published]

    def higher_is_better(self, metric: str) -> bool:
        return self.metrics.get(metric, "higher") == "higher"


def _copy_method(m: Method) -> Method:
    """A Method whose mappings the caller may change without touching the cached one."""
    return Method(name=m.name, variant=m.variant, hyperparameters=dict(m.hyperparameters),
                  description=m.description, grid_point=dict(m.grid_point), select=m.select)


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return f"{path}: invalid task.yaml\n" + "\n".join(lines) + "\nFix the fields above (schema: harness/config.py)."


def load_task_config(path: str | Path) -> TaskConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: every task folder needs a task.yaml (see `harness new-task`)")
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: task.yaml must be a mapping at the top level")
    try:
        return TaskConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(path, e)) from None


def finite_or_none(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
