# The DAG: data -> runs -> registry -> claims -> report, expanded from the plugin registry.
#
#   snakemake --cores all                                  # small scale (default)
#   snakemake --cores all --config scale=tiny              # CI / tests
#   snakemake --cores all --config scale=paper             # the published setting, on a GPU box
#   snakemake --profile profiles/slurm --config scale=paper
#   snakemake -n --config tasks=noisy_labels               # plan one task only
#   snakemake --cores all --config worker=0                # every run imports in its own process
#
# Each run is one job; Task.requires() gives its input edges. Failed runs write a
# failure record outside the outputs (so they are retried next time) and the `onerror`
# handler still ingests, evaluates claims and renders the report with them listed.
import os
import shlex
import sys

from harness.dag import datasets_of, plan
from harness.dvcstages import plugin_stages_needed, repro_target, static_datasets, write_plugin_stages

SCALE = config.get("scale", "small")
TASKS = [t for t in str(config.get("tasks", "")).split(",") if t] or None
RESULTS = config.get("results", "results")
REPORTS = config.get("reports", "reports")
DATA = os.environ.get("HARNESS_DATA_DIR", "data")
# Data through DVC when this is a DVC repo (the default checkout); `data_via=direct` skips it.
DATA_VIA = config.get("data_via", "dvc" if os.path.isdir(".dvc") else "direct")
HARNESS = f"{shlex.quote(sys.executable)} -m harness --results {shlex.quote(RESULTS)}"
TASK_ARG = f"--task {','.join(TASKS)}" if TASKS else ""
# Jobs (and DVC's stage commands) find this environment's python, harness and dvc first.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
# `harness run` jobs hand their run to a warm worker (harness/worker.py: a fork server with torch and
# datasets imported; ~0.1 s per job instead of ~2 s of imports) unless `--config worker=0`. Never
# inside a SLURM job, where this file is parsed again with SLURM_JOB_ID set (and the client refuses
# too): a server started in one job's cgroup would die with it. Set here, not in the run rule's
# command, so that changing it does not change the rule's code and rerun finished runs.
WORKER = str(config.get("worker", os.environ.get("HARNESS_WORKER", "1"))).lower() not in ("0", "false", "no", "off")
os.environ["HARNESS_WORKER"] = "1" if WORKER and not os.environ.get("SLURM_JOB_ID") else "0"

RUNS = plan(SCALE, TASKS, results_dir=RESULTS)
DATASETS = datasets_of(RUNS)
# Datasets of pip-installed plugins have no line in dvc.yaml: their stages are generated from
# the plugin registry into plugins/dvc.yaml (harness.dvcstages; docs/writing-a-task.md).
# Rewritten only when its content changes; nothing is written while no dataset needs it, and
# when every planned dataset has its stage in dvc.yaml the builders are not even listed.
STATIC_DATASETS = static_datasets()
if DATA_VIA == "dvc" and plugin_stages_needed(DATASETS, STATIC_DATASETS):
    write_plugin_stages()

wildcard_constraints:
    scale="tiny|small|paper",
    seed=r"\d+",

localrules: all, data, registry, claims, report


rule all:
    input:
        f"{RESULTS}/report-{SCALE}.done",


rule data:
    output:
        f"{DATA}/{{dataset}}/manifest.json",
    resources:
        dvc=1,  # one DVC command at a time: they share the repo lock
    params:
        cmd=lambda wc: (f"{shlex.quote(sys.executable)} -m dvc repro --single-item "
                        f"{shlex.quote(repro_target(wc.dataset, STATIC_DATASETS))}" if DATA_VIA == "dvc"
                        else f"{HARNESS} data build {wc.dataset} --force"),
    shell:
        "{params.cmd}"


def _run(wc):
    key = f"{RESULTS}/runs/{wc.scale}/{wc.task}/{wc.benchmark}/{wc.variant}/seed{wc.seed}.json"
    if key not in RUNS:
        raise ValueError(f"{key} is not part of the plan at scale {SCALE!r}")
    return RUNS[key]


rule run:
    input:
        data=lambda wc: f"{DATA}/{_run(wc).dataset}/manifest.json",
        requires=lambda wc: list(_run(wc).requires),
    output:
        f"{RESULTS}/runs/{{scale}}/{{task}}/{{benchmark}}/{{variant}}/seed{{seed}}.json",
    threads: lambda wc: _run(wc).threads
    resources:
        mem_mb=lambda wc: _run(wc).mem_mb,
        runtime=lambda wc: _run(wc).runtime,
        gpu=lambda wc: _run(wc).gpu,
    params:
        variant=lambda wc: shlex.quote(_run(wc).variant),
    shell:
        "HARNESS_EXECUTOR=snakemake {HARNESS} run {wildcards.task} --scale {wildcards.scale} "
        "--method {params.variant} --benchmark {wildcards.benchmark} --seed {wildcards.seed} "
        "--threads {threads}"


rule registry:
    input:
        list(RUNS),
    output:
        f"{RESULTS}/ingested-{SCALE}.json",
    shell:
        "{HARNESS} registry ingest --summary {output}"


rule claims:
    input:
        f"{RESULTS}/ingested-{SCALE}.json",
    output:
        f"{RESULTS}/claims-{SCALE}.json",
    shell:
        "{HARNESS} claims --scale {SCALE} --claims {output} --no-ingest {TASK_ARG}"


# The stamp is the DAG's real target: after a failed invocation `onerror` renders
# reports/index.html, and only a missing stamp makes the next invocation redo it.
rule report:
    input:
        f"{RESULTS}/claims-{SCALE}.json",
    output:
        index=f"{REPORTS}/index.html",
        stamp=f"{RESULTS}/report-{SCALE}.done",
    shell:
        "{HARNESS} report --scale {SCALE} --claims {input} --out {REPORTS} --no-ingest && touch {output.stamp}"


onerror:
    # Some runs failed (keep-going ran everything else). Report what exists, failures
    # listed, without writing any rule's output: claims go to a -partial file, so the
    # next invocation retries the failed runs and redoes claims and report.
    partial = f"{RESULTS}/claims-{SCALE}-partial.json"
    shell(f"{HARNESS} registry ingest || true")
    shell(f"{HARNESS} claims --scale {SCALE} --no-ingest {TASK_ARG} --claims {partial} || true")
    shell(f"{HARNESS} report --scale {SCALE} --claims {partial} --out {REPORTS} --no-ingest || true")
    print(f"Some runs failed; the report at {REPORTS}/index.html lists them. Rerun snakemake to retry them.",
          file=sys.stderr)
