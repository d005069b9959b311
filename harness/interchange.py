"""Results in the every_eval_ever schema (EvalEval Coalition, ``eval.schema.json`` v0.2.1), so
our runs, the papers' published numbers and our claim verdicts travel to other leaderboards.

That schema stores one object per evaluated model; here a "model" is a method variant of a
task (``model_info.id`` = ``<task>/<variant>``). Each object carries:

- ``source_metadata.source_type``: ``evaluation_run`` for our runs (and claims, which are
  computed from them), ``documentation`` for a paper's published numbers;
- ``evaluation_results``: one entry per (benchmark, metric): ``evaluation_name``
  ``<benchmark>/<metric>``, ``source_data`` (the dataset, ``source_type: other``),
  ``metric_config.lower_is_better``, ``score_details.score`` and ``uncertainty`` (for runs: the
  mean over seeds with the seed-level 95% Student-t interval, sd and ``num_samples`` = seeds; for
  published numbers: the paper's std where it gives one). A claim is an entry named
  ``claim:<id>`` whose score is the per-seed effect with its t interval; its verdict and
  p-values are in ``score_details.details`` (strings, as the schema asks).

The output file is a JSON list of such objects (the schema's own repository stores one object
per file; split the list to contribute there).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = "0.2.1"


def _s(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _uncertainty(ci_low: Any, ci_high: Any, sd: Any, n: Any, method: str) -> dict[str, Any]:
    u: dict[str, Any] = {}
    lo, hi = _num(ci_low), _num(ci_high)
    if lo is not None and hi is not None:
        u["confidence_interval"] = {"lower": lo, "upper": hi, "confidence_level": 0.95, "method": method}
    sdv = _num(sd)
    if sdv is not None:
        u["standard_deviation"] = sdv
        if n:
            u["standard_error"] = {"value": sdv / math.sqrt(int(n)), "method": "analytic"}
    if n is not None:
        u["num_samples"] = int(n)
    return u


def _model(task: str, variant: str, developer: str) -> dict[str, Any]:
    return {"name": variant, "id": f"{task}/{variant}", "developer": developer,
            "additional_details": {"task": task, "method": variant.split("[", 1)[0]}}


def _eval_object(task: str, variant: str, source_type: str, source_name: str, organisation: str, scale: str | None,
                 results: list[dict[str, Any]], now: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    kind = "run" if source_type == "evaluation_run" else "paper"
    return {
        "schema_version": SCHEMA_VERSION,
        "evaluation_id": f"{task}/{variant}/{kind}/{scale or 'published'}/{now}",
        "retrieved_timestamp": now,
        "source_metadata": {"source_name": source_name, "source_type": source_type,
                            "source_organization_name": organisation, "evaluator_relationship": "third_party",
                            "additional_details": {"source": kind, **({"scale": scale} if scale else {}),
                                                   **(extra or {})}},
        "model_info": _model(task, variant, organisation if kind == "paper" else "harness"),
        "eval_library": {"name": "harness", "version": _version()},
        "evaluation_results": results,
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("harness")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def _source_data(dataset: str | None, benchmark: str, task: str) -> dict[str, Any]:
    return {"dataset_name": dataset or benchmark, "source_type": "other",
            "additional_details": {"benchmark": benchmark, "task": task}}


def every_eval_ever(metrics, scale: str, tasks: dict[str, Any] | None = None,
                    claims: Iterable[dict[str, Any]] = (), now: str | None = None) -> list[dict[str, Any]]:
    """every_eval_ever objects for the runs of ``metrics`` (a registry metrics frame, one scale),
    the installed ``tasks``' published numbers, and ``claims`` (results of ``harness claims``)."""
    from harness.stats import mean_ci

    now = now or str(int(_dt.datetime.now(_dt.timezone.utc).timestamp()))
    tasks = tasks or {}
    out: list[dict[str, Any]] = []
    m = metrics[metrics["scale"] == scale] if len(metrics) else metrics
    by_model: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (task, variant, bench, name), g in (m.groupby(["task", "variant", "benchmark", "name"], sort=True)
                                           if len(m) else []):
        per_seed = g.groupby("seed")["value"].mean()
        c = mean_ci(per_seed.to_numpy(float))
        if c["n"] == 0:
            continue
        dataset = None
        t = tasks.get(task)
        if t is not None:
            try:
                dataset = t.config.benchmark(scale, bench).dataset
            except Exception:  # noqa: BLE001 - a benchmark no longer declared: name it by itself
                dataset = None
        by_model.setdefault((task, variant), []).append({
            "evaluation_name": f"{bench}/{name}",
            "source_data": _source_data(dataset, bench, task),
            "metric_config": {"evaluation_description": name, "lower_is_better": not bool(g["higher_is_better"].iloc[0])},
            "score_details": {"score": c["mean"],
                              "uncertainty": _uncertainty(c["ci_low"], c["ci_high"], c["std"], c["n"],
                                                          "Student-t over seeds"),
                              "details": {"n_seeds": _s(c["n"]), "n_diverged": _s(c["n_nonfinite"]),
                                          "commits": _s(sorted({str(x) for x in g["git_commit"].dropna()}))}},
        })
    for (task, variant), results in sorted(by_model.items()):
        out.append(_eval_object(task, variant, "evaluation_run", f"harness study ({scale} scale)", "harness", scale,
                                results, now))
    claims_by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in claims:
        variant = c.get("treatment") or c.get("method") or "claims"
        claims_by.setdefault((c["task"], variant), []).append({
            "evaluation_name": f"claim:{c['id']}",
            "source_data": _source_data(None, ",".join(c.get("benchmarks") or []) or "claim", c["task"]),
            "metric_config": {"evaluation_description": c.get("statement", ""), "lower_is_better": False},
            "score_details": {"score": _num(c.get("effect")) if _num(c.get("effect")) is not None else math.nan,
                              "uncertainty": _uncertainty(c.get("ci_low"), c.get("ci_high"), None, c.get("n_seeds"),
                                                          "Student-t over per-seed effects"),
                              "details": {k: _s(c.get(k)) for k in ("verdict", "p_adjusted", "p_refute_adjusted",
                                                                     "control", "metric", "source", "min_effect")
                                          if c.get(k) is not None}},
        })
    for (task, variant), results in sorted(claims_by.items()):
        results = [r for r in results if r["score_details"]["score"] == r["score_details"]["score"]]  # no NaN
        if results:
            out.append(_eval_object(task, variant, "evaluation_run", f"harness claims ({scale} scale)", "harness",
                                    scale, results, now, {"kind": "claims"}))
    for name, t in sorted(tasks.items()):
        cfg = t.config
        pubs: dict[str, list[dict[str, Any]]] = {}
        hib = {k: v == "higher" for k, v in (cfg.metrics or {}).items()}
        for p in cfg.published:
            unc = _uncertainty(None, None, p.std, None, "as published") if p.std is not None else {}
            pubs.setdefault(p.method, []).append({
                "evaluation_name": f"{p.benchmark}/{p.metric}",
                "source_data": _source_data(None, p.benchmark, name),
                "metric_config": {"evaluation_description": p.metric, "lower_is_better": not hib.get(p.metric, True)},
                "score_details": {"score": float(p.value), **({"uncertainty": unc} if unc else {}),
                                  "details": {"source": p.source, **({"note": p.note} if p.note else {})}},
            })
        authors = list(cfg.paper.authors or [])
        org = (authors[0] + (" et al." if len(authors) > 1 else "")) if authors else cfg.paper.title
        for method, results in sorted(pubs.items()):
            out.append(_eval_object(name, method, "documentation", f"{cfg.paper.title} ({cfg.paper.year})", org,
                                    None, results, now))
    return out


def write_every_eval_ever(reg, path: Path, scale: str | None = None, task: str | None = None,
                          claims: Iterable[Path] = ()) -> int:
    """Write runs (current ones, ``scale`` default small), published numbers and the claims files
    given as every_eval_ever objects to ``path`` (a JSON list); returns the number of objects."""
    from harness.plugins import discover
    from harness.record import write_json_atomic

    scale = scale or "small"
    tasks, _ = discover()
    if task:
        tasks = {k: v for k, v in tasks.items() if k == task}
    metrics = reg.metrics(task=task, scale=scale)
    cl: list[dict[str, Any]] = []
    for p in claims:
        rows = json.loads(Path(p).read_text())
        cl += [c for c in rows if not task or c.get("task") == task]
    objs = every_eval_ever(metrics, scale, tasks, cl)
    write_json_atomic(Path(path), objs)
    return len(objs)
