"""The ``harness`` command. One function per sub-command; heavy imports stay inside them.

Errors a user can meet (bad task.yaml, unknown method, missing dataset, corrupt record)
print one line, ``error: ...``, naming the fix, and exit 2. A run that raises exits 1
after its failure record is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.config import ConfigError


def _results(args) -> Path:
    return Path(getattr(args, "results", None) or os.environ.get("HARNESS_RESULTS_DIR", "results"))


# -- tasks / validate -----------------------------------------------------------------

def cmd_tasks(args) -> int:
    from harness.plugins import discover

    tasks, broken = discover()
    if args.json:
        out = []
        for name, t in sorted(tasks.items()):
            cfg = t.config
            out.append({
                "name": name, "version": str(cfg.version), "paper": cfg.paper.model_dump(),
                "methods": {m: s.description for m, s in cfg.methods.items()},
                "benchmarks": {sc: [b.name for b in cfg.benchmarks(sc)] for sc in cfg.scales},
                "variants": {sc: [v.variant for v in cfg.variants(sc)] for sc in cfg.scales},
                "claims": [{"id": c.id, "statement": c.statement, "source": c.source} for c in cfg.claims],
            })
        out += [{"name": b.name, "broken": b.reason} for b in broken]
        print(json.dumps(out, indent=1))
        return 1 if broken else 0
    for name, t in sorted(tasks.items()):
        cfg = t.config
        print(f"{name} (v{cfg.version}): {cfg.paper.title} ({cfg.paper.year})")
        for m, s in cfg.methods.items():
            print(f"  method  {m:<22} {s.description}")
        for sc in cfg.scales:
            print(f"  {sc:<7} benchmarks: {', '.join(b.name for b in cfg.benchmarks(sc))}; "
                  f"{len(cfg.variants(sc))} variants, seeds {cfg.scale(sc).seeds}")
        for c in cfg.claims:
            print(f"  claim   {c.id:<22} {c.statement} [{c.source}]")
    for b in broken:
        print(f"BROKEN {b.name} ({b.target}): {b.reason}", file=sys.stderr)
    return 1 if broken else 0


def cmd_validate(args) -> int:
    from harness.validate import validate_paths

    from harness.validate import decidability_notes

    problems = validate_paths(args.paths)
    for p in problems:
        print(p, file=sys.stderr)
    for note in decidability_notes(args.paths):
        print(f"note: {note}")
    if not problems:
        print("ok: every task.yaml is valid and its DAG plans at every scale")
    return 1 if problems else 0


# -- data -------------------------------------------------------------------------------

def cmd_data(args) -> int:
    from harness import data

    if args.action == "build":
        for name in args.names:
            folder = data.build(name, force=args.force)
            print(f"{name}: {folder} ({data.data_hash(name)})")
    elif args.action == "list":
        for name, (_fn, owners) in sorted(data.builders().items()):
            print(f"{name:<16} tasks: {', '.join(owners)}")
    elif args.action == "stages":
        from harness.dvcstages import write_plugin_stages

        path, names = write_plugin_stages()
        print(f"{path}: {len(names)} plugin dataset stage(s){': ' + ', '.join(names) if names else ''}")
    elif args.action == "verify":
        bad = [n for n in args.names if not data.verify(n)]
        for n in bad:
            print(f"{n}: files changed since build; rebuild with `harness data build {n} --force`", file=sys.stderr)
        return 1 if bad else 0
    return 0


# -- run / reproduce --------------------------------------------------------------------

def cmd_run(args) -> int:
    from harness.config import MAX_SEED, parse_overrides
    from harness.runner import run_one

    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed {args.seed}: a seed is an integer from 0 to {MAX_SEED}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: give at least 1 (default: the scale's resources.threads)")
    overrides = parse_overrides(args.set or [])
    try:
        rec = run_one(args.task, args.method, args.benchmark, args.seed, args.scale, overrides=overrides,
                      results_dir=_results(args), device=args.device, threads=args.threads, force=args.force)
    except ConfigError:
        raise
    except BaseException as e:  # say where the failure record is, if one was written; exit non-zero
        path = getattr(e, "failure_record", None)
        where = (f"failure record: {path}" if path is not None and Path(path).is_file()
                 else "it failed before it started, so no failure record was written")
        msg = " ".join(str(e).split())
        print(f"error: run failed: {type(e).__name__}: {msg} ({where})", file=sys.stderr)
        return 1
    ms = ", ".join(f"{m['name']}={m['value'] if m['value'] is not None else m.get('nonfinite')}"
                   for m in rec["metrics"])
    print(f"{rec['status']} {rec['run_id']} {rec['task']}/{rec['benchmark']}/{rec['variant']}/seed{rec['seed']}: {ms}")
    return 0


def cmd_reproduce(args) -> int:
    from harness.reproduce import format_diff, reproduce

    report = reproduce(args.run_id, results_dir=_results(args), registry_url=args.registry,
                       allow_changed=args.allow_changed)
    print(json.dumps(report, indent=1) if args.json else format_diff(report))
    return 0 if report["identical"] else 1


# -- registry ---------------------------------------------------------------------------

def cmd_registry(args) -> int:
    from harness.registry import Registry

    reg = Registry(url=args.registry, results_dir=_results(args))
    if args.action == "rebuild":
        moved, (n_new, n_old, errors) = reg.rebuild()
        if moved:
            print(f"moved the old registry aside to {moved}")
        print(f"rebuilt {reg!r} from the run records: {n_new} indexed")
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        return 1 if errors else 0
    if args.action == "ingest":
        n_new, n_old, errors = reg.ingest_dir(_results(args))
        print(f"ingested {n_new} new, {n_old} already present")
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        if args.summary:
            from harness.record import write_json_atomic

            write_json_atomic(Path(args.summary), {"new": n_new, "existing": n_old, "errors": errors})
        return 1 if errors else 0
    if args.action == "ls":
        import pandas as pd

        # only the rows printed are made (current runs: cut from the task's snapshot, before config and info
        # are parsed; --all: LIMIT in SQL), and only their metrics are read
        df = reg.runs(task=args.task, scale=args.scale, status=args.status, current_only=not args.all,
                      limit=max(args.limit, 0))
        cols = ["run_id", "task", "benchmark", "variant", "seed", "scale", "status", "wall_s", "git_commit"]
        if not df.empty:
            wide = reg.metric_table(df["run_id"])
            df = df[cols].merge(wide, left_on="run_id", right_index=True, how="left") if len(wide.columns) \
                else df[cols]
        with pd.option_context("display.max_rows", args.limit, "display.width", 200):
            print(df.head(args.limit).to_string(index=False) if not df.empty else "no runs")
        return 0
    if args.action == "show":
        print(json.dumps(reg.record(args.run_id[0]), indent=1, sort_keys=True))
        return 0
    if args.action == "export":
        if args.format == "every_eval_ever":
            from harness.interchange import write_every_eval_ever

            n = write_every_eval_ever(reg, Path(args.path), scale=args.scale, task=args.task,
                                      claims=[Path(c) for c in (args.claims or [])])
            print(f"wrote {args.path} ({n} results, every_eval_ever schema)")
            return 0
        reg.export(args.path, args.format, table=args.table, task=args.task, scale=args.scale,
                   current_only=not args.all)
        print(f"wrote {args.path}")
        return 0
    if args.action == "merge":
        n_new, n_old, conflicts, errors = reg.merge(args.run_id)
        print(f"merged {len(args.run_id)} source(s) into {reg!r}: {n_new} new, {n_old} already present, "
              f"{len(conflicts)} conflict(s)")
        if conflicts:
            df = reg.conflicts()
            df = df[df["run_id"].isin(conflicts)].drop_duplicates("run_id", keep="last")
            for _, c in df.iterrows():
                print(f"conflict: run {c['run_id']} {c['task']}/{c['benchmark']}/{c['variant']}/seed{c['seed']} "
                      f"({c['scale']}): kept {json.dumps(c['kept'], sort_keys=True)}, {c['source']} has "
                      f"{json.dumps(c['incoming'], sort_keys=True)}", file=sys.stderr)
            print("the registry's copies were kept; every incoming record is stored whole in its `conflicts` "
                  "table (Registry.conflicts()). Rerun the run to settle which is right.", file=sys.stderr)
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        return 1 if conflicts or errors else 0
    return 2


# -- claims / report / compare ------------------------------------------------------------

def _claims_path(args) -> Path:
    return Path(args.claims) if getattr(args, "claims", None) else _results(args) / f"claims-{args.scale}.json"


def _ingest_and_warn(reg, args) -> None:
    """Ingest (unless --no-ingest) and warn about every run record that cannot be read: its run is
    left out of claims and tables, and the report lists it among the failures."""
    if args.no_ingest:
        errors = reg.unreadable_records(_results(args))
    else:
        errors = reg.ingest_dir(_results(args)).errors
    for e in errors:
        print(f"warning: left out: {' '.join(str(e).split())}", file=sys.stderr)
    if errors:
        print(f"warning: {len(errors)} run record(s) could not be read; their runs are missing from the claims "
              "(fewer seeds) and listed as failures in the report. Delete each and rerun it (snakemake will).",
              file=sys.stderr)


def cmd_claims(args) -> int:
    from harness.claims import evaluate_claims, write_claims
    from harness.plugins import discover
    from harness.registry import Registry

    reg = Registry(url=args.registry, results_dir=_results(args))
    _ingest_and_warn(reg, args)
    tasks, _ = discover()
    chosen = [t for t in (args.task or "").split(",") if t] or sorted(tasks)
    for t in chosen:
        if t not in tasks:
            raise ConfigError(f"unknown or broken task {t!r}; see `harness tasks`")
    results = []
    metrics = reg.metrics(scale=args.scale)
    for name in chosen:
        results += evaluate_claims(tasks[name], metrics[metrics["task"] == name], args.scale)
    out = _claims_path(args)
    write_claims(results, out)
    for r in results:
        eff = "n/a" if r["effect"] is None else f"{r['effect']:+.3g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]" \
            if r["ci_low"] is not None else f"{r['effect']:+.3g}"
        tests = "" if r["p_adjusted"] is None else \
            f" p_reproduce {r['p_adjusted']:.3g} p_refute {r['p_refute_adjusted']:.3g} (Holm)"
        flags = (" fragile" if r["fragile"] else "") + (" exploratory" if r["exploratory"] else "")
        if not args.markdown:
            print(f"{r['verdict']:<13} {r['task']}/{r['id']:<24} effect {eff} n={r['n_seeds']}{tests}{flags}")
    if args.markdown:
        from harness.publish import verdict_markdown

        for name in chosen:
            print(f"### {name}\n\n{verdict_markdown(results, name, args.scale)}\n")
    print(f"wrote {out}")
    return 0


def cmd_report(args) -> int:
    from harness.registry import Registry
    from harness.report.render import default_benchmarks, render_from_registry

    reg = Registry(url=args.registry, results_dir=_results(args))
    _ingest_and_warn(reg, args)
    # Plots drawn by the last report at this scale are reused where their data did not change.
    cache = _results(args) / ".cache" / "figures" / args.scale
    paths = render_from_registry(reg, Path(args.out), args.scale, _claims_path(args), benchmarks=default_benchmarks(),
                                 figure_cache=cache)
    print(f"wrote {len(paths)} pages to {args.out}/ (open {Path(args.out) / 'index.html'})")
    return 0


def cmd_publish(args) -> int:
    from harness.publish import publish
    from harness.registry import Registry

    reg = Registry(url=args.registry, results_dir=_results(args))
    if not args.no_ingest:
        reg.ingest_dir(_results(args))
    out = Path(args.out or f"reports/{args.scale}")
    done = publish(reg, args.scale, _claims_path(args), out)
    print(f"published {done['n_runs']} runs and {done['n_claims']} claims to {out}/ "
          f"(open {out / 'index.html'}); README tables updated: {', '.join(done['readmes_changed']) or 'none changed'}")
    return 0


def cmd_compare(args) -> int:
    """The regression gate: exit 1 when any (task, benchmark, variant, metric) regressed."""
    from harness.compare import compare_commits, summary, to_json, to_markdown

    df = compare_commits(args.rev_a, args.rev_b, results_dir=_results(args), registry_url=args.registry,
                         task=args.task, scale=args.scale, default_tolerance=args.tolerance, alpha=args.alpha)
    if args.format == "markdown":
        print(to_markdown(df))
    elif args.format == "json":
        print(to_json(df))
    else:
        import pandas as pd

        with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_rows", 10_000):
            print(df.to_string(index=False))
        s = summary(df)
        print(f"{s['regression']} regression(s), {s['improvement']} improvement(s), {s['unchanged']} unchanged, "
              f"{s['missing']} missing")
    return 1 if summary(df)["regression"] else 0


def cmd_plan(args) -> int:
    """The runs of a scale per task; with --estimate their bill (harness/estimate.py)."""
    if args.estimate:
        from harness.estimate import bill, format_bill

        b = bill(args.scale, args.task or None, gpu=args.gpu, mfu=args.mfu)
        print(json.dumps(b.to_dict(with_runs=args.per_run), indent=1) if args.json else format_bill(b, args.per_run))
        if args.save:
            from harness.estimate import save_bill

            print(f"wrote {save_bill(b)} (the report's per-task bill)", file=sys.stderr)
        return 0
    from harness.dag import plan

    runs = plan(args.scale, args.task or None)
    counts: dict[str, int] = {}
    for r in runs.values():
        counts[r.task] = counts.get(r.task, 0) + 1
    for name, n in sorted(counts.items()):
        print(f"{name:<24}{n:>6} runs")
    print(f"{'total':<24}{len(runs):>6} runs")
    return 0


def cmd_new_task(args) -> int:
    from harness.scaffold import new_package, new_task

    if args.package:
        root = new_package(args.name, Path(args.dest or "."))
        print(f"created the plugin package {root} (entry point {args.name} = \"{args.name}:task\" in its "
              f"pyproject.toml). Install it and check it:\n  pip install -e {root}\n  harness validate\n"
              f"  pytest {root / 'tests'}\nIts datasets get DVC stages in plugins/dvc.yaml by themselves "
              "(docs/writing-a-task.md).")
        return 0
    dest = Path(args.dest or "tasks")
    folder, module = new_task(args.name, dest)
    print(f"created {folder}; register it in pyproject.toml under [project.entry-points.\"harness.tasks\"]:\n"
          f"  {args.name} = \"{module}:task\"\nadd its dataset to dvc.yaml (stages.build.foreach), "
          "then `pip install -e .` and `harness validate`")
    return 0


# -- parser -----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other error of the command."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description=__doc__.splitlines()[0])
    p.add_argument("--results", help="results folder (default: $HARNESS_RESULTS_DIR or ./results)")
    p.add_argument("--registry", help="registry URL (default: $HARNESS_REGISTRY_URL or results/registry.sqlite)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("tasks", help="list tasks, methods, benchmarks, claims")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_tasks)

    s = sub.add_parser("validate", help="validate task.yaml files (default: every installed task)")
    s.add_argument("paths", nargs="*")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("data", help="build, list or verify datasets; write the DVC stages of plugin datasets")
    s.add_argument("action", choices=["build", "list", "verify", "stages"])
    s.add_argument("names", nargs="*")
    s.add_argument("--force", action="store_true")
    s.set_defaults(func=cmd_data)

    s = sub.add_parser("run", help="run one method on one benchmark with one seed")
    s.add_argument("task")
    s.add_argument("--method", required=True, help="variant, e.g. 'nested_dropout[sigma=4]'")
    s.add_argument("--benchmark", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scale", default="small", choices=["tiny", "small", "paper"])
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a hyperparameter")
    s.add_argument("--device")
    s.add_argument("--threads", type=int)
    s.add_argument("--force", action="store_true", help="rerun even if a record with this run_id exists")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("reproduce", help="rerun a recorded run and diff its metrics")
    s.add_argument("run_id")
    s.add_argument("--allow-changed", action="store_true",
                   help="rerun even when the task's code or data hash differs from the record's")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(func=cmd_reproduce)

    s = sub.add_parser("registry", help="ingest, list, show, export or merge runs")
    s.add_argument("action", choices=["ingest", "ls", "show", "export", "rebuild", "merge"],
                   help="rebuild: move a damaged SQLite registry aside and index every run record again; merge: "
                        "add other machines' registries (file or URL) or record folders, reporting conflicts")
    s.add_argument("run_id", nargs="*", metavar="RUN_ID|SOURCE", help="show: a run_id; merge: the sources")
    s.add_argument("--task")
    s.add_argument("--scale")
    s.add_argument("--status")
    s.add_argument("--all", action="store_true", help="include superseded history")
    s.add_argument("--limit", type=int, default=200)
    s.add_argument("--summary", help="ingest: also write a JSON summary here")
    s.add_argument("--path", help="export: output file")
    s.add_argument("--format", choices=["csv", "json", "parquet", "every_eval_ever"],
                   help="export: default from the --path suffix (.csv, .json, .parquet)")
    s.add_argument("--table", default="runs", choices=["runs", "metrics", "failures"], help="export: which table")
    s.add_argument("--claims", action="append", help="export --format every_eval_ever: a claims JSON to include "
                                                     "(repeatable)")
    s.set_defaults(func=cmd_registry)

    s = sub.add_parser("claims", help="verdict per claim, with effect and CI")
    s.add_argument("--scale", default="small")
    s.add_argument("--task", help="one task or a comma-separated list (default: all)")
    s.add_argument("--claims", help="output (default results/claims-<scale>.json)")
    s.add_argument("--markdown", action="store_true", help="print each task's verdict table as Markdown")
    s.add_argument("--no-ingest", action="store_true")
    s.set_defaults(func=cmd_claims)

    s = sub.add_parser("report", help="render the HTML report")
    s.add_argument("--scale", default="small")
    s.add_argument("--out", default="reports")
    s.add_argument("--claims", help="claims JSON (default results/claims-<scale>.json)")
    s.add_argument("--no-ingest", action="store_true")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("publish", help="the committed study: reports/<scale>/ (site, claims.json, runs.parquet) "
                                       "and the task READMEs' verdict tables")
    s.add_argument("--scale", default="small")
    s.add_argument("--out", help="default reports/<scale>")
    s.add_argument("--claims", help="claims JSON (default results/claims-<scale>.json)")
    s.add_argument("--no-ingest", action="store_true")
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser("compare", help="the regression gate: what changed between two commits' runs "
                                       "(exit 1 on any regression)")
    s.add_argument("rev_a")
    s.add_argument("rev_b")
    s.add_argument("--task")
    s.add_argument("--scale")
    s.add_argument("--format", default="text", choices=["text", "markdown", "json"])
    s.add_argument("--tolerance", type=float, default=0.0,
                   help="tolerance of metrics whose task.yaml declares none (default 0)")
    s.add_argument("--alpha", type=float, default=0.05, help="level of the Holm-adjusted tests (default 0.05)")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("plan", help="the runs of a scale; --estimate: FLOPs, GPU-hours, memory and disk")
    s.add_argument("--scale", default="paper")
    s.add_argument("--task", action="append", help="only this task (repeatable)")
    s.add_argument("--estimate", action="store_true", help="cost every run (Task.estimate) and total it")
    s.add_argument("--gpu", default="H100", help="GPU of the bill: H100 (default), H200, A100, L40S")
    s.add_argument("--mfu", type=float, help="model-FLOPs utilisation for every run (default: each task's own, "
                                             "else 0.4)")
    s.add_argument("--per-run", action="store_true", help="one line per run")
    s.add_argument("--save", action="store_true", help="write the per-task bill to benchmarks/results/paper-bill.json "
                                                      "(shown on the report's task pages)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("new-task", help="scaffold a task plugin with tests")
    s.add_argument("name")
    s.add_argument("--package", action="store_true",
                   help="a pip-installable plugin package (pyproject.toml with the entry point) in DEST/NAME")
    s.add_argument("--dest", help="in-repo: folder of task packages (default tasks); --package: where to create it "
                                  "(default .)")
    s.set_defaults(func=cmd_new_task)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed as one line
        return e.code if isinstance(e.code, int) else 2
    if args.command == "registry" and args.action == "show" and len(args.run_id) != 1:
        print("error: registry show needs one RUN_ID", file=sys.stderr)
        return 2
    if args.command == "registry" and args.action == "merge" and not args.run_id:
        print("error: registry merge needs at least one SOURCE (a record folder, a registry file or URL)",
              file=sys.stderr)
        return 2
    if args.command == "registry" and args.action == "export" and not args.path:
        print("error: registry export needs --path FILE", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a damaged registry is a user-facing error, not a traceback
        from harness.registry import registry_error

        err = registry_error(e, getattr(args, "registry", None), _results(args))
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
