"""``harness validate``: every check a task.yaml must pass before it enters the DAG.

Problems are collected, never raised one at a time, so a user sees them all at once:
schema errors, a plugin that does not import, claims naming variants or benchmarks that
do not run, a DAG that cannot be planned (a required run missing at a scale), and a
dataset of a task in this checkout that dvc.yaml does not build (an installed plugin's
datasets get generated stages, see harness.dvcstages).
"""

from __future__ import annotations

from pathlib import Path

from harness.config import ConfigError, load_task_config, parse_variant


def _claim_problems(cfg) -> list[str]:
    out = []
    for c in cfg.claims:
        if c.function:
            continue
        for scale in cfg.scales:
            names = {v.variant for v in cfg.variants(scale)} | {parse_variant(v.variant)[0] for v in cfg.variants(scale)}
            for side in (c.treatment, c.control):
                if side not in names:
                    out.append(f"{cfg.name}: claim {c.id!r}: {side!r} does not run at scale {scale!r}")
        # A claim may list benchmarks of several scales; each scale tests those it has.
        everywhere = {b.name for scale in cfg.scales for b in cfg.benchmarks(scale)}
        for b in c.benchmarks:
            if b not in everywhere:
                out.append(f"{cfg.name}: claim {c.id!r}: benchmark {b!r} is defined at no scale")
    return out


def dvc_datasets(path: Path = Path("dvc.yaml")) -> set[str] | None:
    from harness.dvcstages import static_datasets

    return static_datasets(path)


def _inside_checkout(task) -> bool:
    """True for a task whose folder is in this checkout (its datasets belong in dvc.yaml); a
    plugin installed from elsewhere gets generated stages (harness.dvcstages) instead."""
    try:
        return Path(task.root).resolve().is_relative_to(Path.cwd().resolve())
    except (OSError, TypeError, AttributeError):
        return False


def decidability_notes(paths: list[str]) -> list[str]:
    """Per task and scale: the claims that cannot be decided before anything runs (too few seeds at
    the scale, or undecidable by design), and what the scale's seeds can detect. Warnings, not
    problems: an undecidable claim is a result to report, not a broken task.yaml."""
    from harness.claims import undecidable_by_design

    if paths:
        configs = []
        for p in map(Path, paths):
            try:
                configs.append(load_task_config(p / "task.yaml" if p.is_dir() else p))
            except ConfigError:
                continue  # validate_paths reports it
    else:
        from harness.plugins import discover

        configs = [task.config for _, task in sorted(discover()[0].items())]
    return [line for cfg in configs for scale in cfg.scales for line in undecidable_by_design(cfg, scale)]


def validate_paths(paths: list[str]) -> list[str]:
    problems: list[str] = []
    if paths:  # explicit task.yaml files (or folders holding one)
        for p in map(Path, paths):
            f = p / "task.yaml" if p.is_dir() else p
            try:
                problems += _claim_problems(load_task_config(f))
            except ConfigError as e:
                problems.append(str(e))
        return problems

    from harness import dag
    from harness.plugins import discover

    tasks, broken = discover()
    problems += [f"{b.name}: broken plugin ({b.target}): {b.reason}" for b in broken]
    in_dvc = dvc_datasets()
    for name, task in sorted(tasks.items()):
        cfg = task.config
        problems += _claim_problems(cfg)
        for fn in (c.function for c in cfg.claims if c.function):
            try:
                task.claim_function(fn)
            except AttributeError as e:
                problems.append(f"{name}: {e}")
        provided = set(task.datasets())
        for d in cfg.datasets:
            if d not in provided:
                from harness.data import builders

                if d not in builders():
                    problems.append(f"{name}: dataset {d!r} has no builder (return it from Task.datasets())")
            if in_dvc is not None and d not in in_dvc and _inside_checkout(task):
                problems.append(f"{name}: dataset {d!r} has no stage in dvc.yaml (add it under stages.build.foreach; "
                                "a pip-installed plugin needs no line: `harness data stages` generates its stage)")
        for scale in cfg.scales:
            try:
                dag.plan(scale, [name])
            except ConfigError as e:
                problems.append(f"{name}: scale {scale}: {e}")
    return problems
