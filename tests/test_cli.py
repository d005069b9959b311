"""harness.cli: commands, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from harness.cli import main


def test_tasks_json_lists_methods_benchmarks_claims(capsys):
    main(["tasks", "--json"])
    out = json.loads(capsys.readouterr().out)
    toy = next(t for t in out if t["name"] == "toy")
    assert toy["benchmarks"]["tiny"] == ["toy-a"]
    assert "sgd[lr=0.5]" in toy["variants"]["tiny"]
    assert [c["id"] for c in toy["claims"]] == ["best_beats_fixed", "above_chance"]


def test_run_prints_a_summary_and_bad_input_exits_2(workdir, capsys):
    assert main(["run", "toy", "--method", "sgd[lr=0.1]", "--benchmark", "toy-a", "--seed", "0",
                 "--scale", "tiny", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok ") and "test_accuracy=" in out
    assert main(["run", "toy", "--method", "nope", "--benchmark", "toy-a", "--scale", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: task 'toy' has no method 'nope'") and err.count("\n") == 1


def test_failing_run_exits_1_with_failure_record_path(workdir, capsys):
    assert main(["run", "toy", "--method", "crash", "--benchmark", "toy-a", "--scale", "tiny",
                 "--set", "always=true"]) == 1
    assert "toy crash as asked" in capsys.readouterr().err


def test_validate_reports_bad_yaml(tmp_path, capsys):
    (tmp_path / "task.yaml").write_text("name: x\n")
    assert main(["validate", str(tmp_path)]) == 1
    assert "invalid task.yaml" in capsys.readouterr().err


def test_registry_claims_report_and_reproduce_roundtrip(workdir, capsys):
    for lr in ("0.1", "0.5"):
        for seed in ("0", "1", "2"):
            assert main(["run", "toy", "--method", f"sgd[lr={lr}]", "--benchmark", "toy-a",
                         "--seed", seed, "--scale", "tiny"]) == 0
    for seed in ("0", "1", "2"):
        assert main(["run", "toy", "--method", "sgd_best", "--benchmark", "toy-a", "--seed", seed,
                     "--scale", "tiny"]) == 0
    capsys.readouterr()
    assert main(["registry", "ingest"]) == 0
    assert "ingested 9 new" in capsys.readouterr().out
    assert main(["registry", "ingest"]) == 0
    assert "ingested 0 new, 9 already present" in capsys.readouterr().out
    assert main(["registry", "ls", "--task", "toy"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("toy-a") == 9 and "test_accuracy" in listing
    run_id = json.loads(next((workdir / "results" / "runs").rglob("seed0.json")).read_text())["run_id"]
    assert main(["registry", "show", run_id[:8]]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == run_id
    assert main(["registry", "show", "ffffffffffff"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["claims", "--scale", "tiny", "--task", "toy"]) == 0
    claims = json.loads((workdir / "results" / "claims-tiny.json").read_text())
    assert {c["id"] for c in claims} == {"best_beats_fixed", "above_chance"}
    assert all(c["verdict"] in ("reproduced", "refuted", "inconclusive", "undecidable") for c in claims)
    capsys.readouterr()
    assert main(["claims", "--scale", "tiny", "--task", "toy", "--markdown", "--no-ingest"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("### toy\n\n| claim | verdict |") and "| `best_beats_fixed` |" in md
    assert main(["report", "--scale", "tiny"]) == 0
    assert (workdir / "reports" / "index.html").exists()
    rec = json.loads(next((workdir / "results" / "runs").rglob("seed1.json")).read_text())
    capsys.readouterr()
    assert main(["reproduce", rec["run_id"], "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["identical"] and rep["same_run_id"]


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "new-task" in out.stdout


def test_compare_two_commits_and_export(workdir, capsys, monkeypatch):
    import harness.provenance as prov

    for commit in ("a" * 40, "b" * 40):
        # A new commit that changes the task's code: new run_ids, same variants.
        monkeypatch.setattr(prov, "git_info", lambda cwd=None, c=commit: {"git_commit": c, "git_dirty": False})
        monkeypatch.setattr(prov, "code_hash", lambda folder, c=commit: c[:16])
        for seed in ("0", "1", "2"):
            assert main(["run", "toy", "--method", "sgd[lr=0.1]", "--benchmark", "toy-a", "--seed", seed,
                         "--scale", "tiny"]) == 0
        assert main(["registry", "ingest"]) == 0
    capsys.readouterr()
    assert main(["compare", "a" * 12, "b" * 12, "--task", "toy"]) == 0
    table = capsys.readouterr().out
    assert "test_accuracy" in table and "sgd[lr=0.1]" in table
    from harness.compare import compare_commits

    df = compare_commits("a" * 12, "b" * 12, task="toy").set_index("name")
    # The 'code change' did not change the training: identical metrics on the 3 shared seeds.
    assert df.loc["test_accuracy", "n_shared_seeds"] == 3 and df.loc["test_accuracy", "delta"] == 0.0
    assert main(["registry", "export", "--path", "runs.csv"]) == 0
    assert (workdir / "runs.csv").read_text().count("toy-a") >= 3


def test_validate_passes_on_the_repository():
    """Every installed task.yaml is valid, its DAG plans at every scale, dvc.yaml builds its data."""
    from pathlib import Path

    repo = Path(__file__).parent.parent
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_EXTRA_TASKS"}
    out = subprocess.run([sys.executable, "-m", "harness", "validate"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


def test_bad_input_is_rejected_up_front_with_one_line(workdir, capsys):
    """Issue 14.8: unknown hyperparameters, negative seeds, threads < 1: one error, no record, no variant."""
    base = ["run", "toy", "--benchmark", "toy-a", "--scale", "tiny"]
    cases = [
        (["--method", "sgd[lrr=0.1]"], "no hyperparameter 'lrr'"),
        (["--method", "sgd", "--set", "momentum=0.9"], "no hyperparameter 'momentum'"),
        (["--method", "sgd", "--seed", "-1"], "--seed -1"),
        (["--method", "sgd[lr=0.1]", "--threads", "0"], "--threads 0"),
        (["--method", "sgd[lr=0.1]", "--threads", "-2"], "--threads -2"),
        (["--method", "sgd[lr=0.1]", "--seed", "x"], "invalid int value"),
    ]
    for extra, needle in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, (extra, err)
    assert not (workdir / "results").exists()


def test_a_failure_message_names_only_a_record_that_was_written(workdir, capsys, monkeypatch):
    import harness.plugins

    assert main(["run", "toy", "--method", "crash", "--benchmark", "toy-a", "--scale", "tiny",
                 "--set", "always=true"]) == 1
    err = capsys.readouterr().err
    path = err.split("failure record: ")[1].rstrip(")\n")
    assert (workdir / path).is_file() and json.loads((workdir / path).read_text())["status"] == "failed"
    # A plugin bug raised before the run starts (here in requires()) writes no record: none is named.
    task = harness.plugins.get_task("toy")
    monkeypatch.setattr(type(task), "requires", lambda *a, **k: 1 / 0)
    assert main(["run", "toy", "--method", "sgd[lr=0.1]", "--benchmark", "toy-a", "--scale", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "no failure record was written" in err and "failures/" not in err
    assert err.count("\n") == 1
