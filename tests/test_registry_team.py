"""The registry for a team over months (issue 16.3-16.5, 16.7): merge of registries and record
folders from other machines, forward migrations from a v1 database, export and load() for
notebooks, the every_eval_ever interchange."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest
from factories import make_record, write_record

from harness.cli import main
from harness.registry import REGISTRY_SCHEMA_VERSION, Registry, load


def _machine(root, recs):
    for r, history in recs:
        write_record(root, r, history=history)
    reg = Registry(results_dir=root)
    reg.ingest_dir()
    return reg


def test_merge_two_registries_with_an_overlap_and_a_conflict(tmp_path, capsys):
    shared = make_record(seed=0, metrics={"acc": 0.8})
    only_a = make_record(seed=1, metrics={"acc": 0.7})
    old_b = make_record(seed=2, metrics={"acc": 0.6}, commit="c" * 40, finished=5)  # history at an older commit
    new_b = make_record(seed=2, metrics={"acc": 0.65}, commit="d" * 40, finished=50)
    clash_a = make_record(seed=3, metrics={"acc": 0.9})
    clash_b = dict(clash_a, metrics=[{"name": "acc", "value": 0.1, "higher_is_better": True}])  # same run_id
    failed_b = make_record(seed=4, status="failed", finished=60)
    a = _machine(tmp_path / "a", [(shared, False), (only_a, False), (clash_a, False)])
    b = _machine(tmp_path / "b", [(shared, False), (old_b, True), (new_b, False), (clash_b, False), (failed_b, False)])
    a.close(), b.close()
    db_a, db_b = tmp_path / "a" / "registry.sqlite", tmp_path / "b" / "registry.sqlite"

    target = f"sqlite:///{tmp_path / 'team.sqlite'}"
    assert main(["--registry", target, "registry", "merge", str(db_a)]) == 0
    assert "3 new, 0 already present, 0 conflict(s)" in capsys.readouterr().out
    assert main(["--registry", target, "registry", "merge", str(db_b)]) == 1
    out = capsys.readouterr()
    # shared: already present; old_b, new_b, failed_b: new; clash_b: a conflict, reported with both values.
    assert "3 new, 1 already present, 1 conflict(s)" in out.out
    assert f"conflict: run {clash_a['run_id']}" in out.err and '"acc": 0.9' in out.err and '"acc": 0.1' in out.err
    with Registry(url=target) as reg:
        every = reg.runs(current_only=False)
        assert sorted(every["run_id"]) == sorted({r["run_id"] for r in (shared, only_a, old_b, new_b, clash_a)})
        cur = reg.runs().set_index("seed")
        assert cur.loc[2, "run_id"] == new_b["run_id"]  # history kept, newest current
        m = reg.metrics().set_index("seed")
        assert m.loc[3, "value"] == 0.9  # the registry's copy stays...
        c = reg.conflicts()
        assert list(c["run_id"]) == [clash_a["run_id"]] and c.loc[0, "incoming"]["metrics"] == {"acc": 0.1}
        assert c.loc[0, "kept"]["metrics"] == {"acc": 0.9} and c.loc[0, "source"] == str(db_b)
        assert len(reg.failures(unresolved_only=False)) == 1
    # Idempotent: the same sources again add nothing, and the conflict is not stored twice.
    assert main(["--registry", target, "registry", "merge", str(db_a), str(db_b)]) == 1
    assert "0 new, 7 already present, 1 conflict(s)" in capsys.readouterr().out
    with Registry(url=target) as reg:
        assert len(reg.runs(current_only=False)) == 5 and len(reg.conflicts()) == 1
        assert len(reg.failures(unresolved_only=False)) == 1
    # A record folder merges the same way (records are the source of truth).
    target2 = f"sqlite:///{tmp_path / 'team2.sqlite'}"
    assert main(["--registry", target2, "registry", "merge", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "6 new, 1 already present, 1 conflict(s)" in capsys.readouterr().out
    assert main(["--registry", target2, "registry", "merge", str(tmp_path / "nowhere")]) == 1
    assert "neither a record folder" in capsys.readouterr().err


# The v1 layout exactly as harness created it before migrations existed (SQLite DDL).
V1_DDL = """
CREATE TABLE meta ("key" VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE runs (run_id VARCHAR(64) NOT NULL, task VARCHAR(128) NOT NULL, task_version VARCHAR(64),
 method VARCHAR(128), variant TEXT NOT NULL, benchmark VARCHAR(256) NOT NULL, seed BIGINT NOT NULL,
 scale VARCHAR(32) NOT NULL, status VARCHAR(16) NOT NULL, started_at VARCHAR(64), finished_at VARCHAR(64),
 wall_s FLOAT, cpu_s FLOAT, peak_rss_mb FLOAT, peak_gpu_mb FLOAT, device VARCHAR(64), git_commit VARCHAR(64),
 git_dirty BOOLEAN, hostname VARCHAR(256), executor VARCHAR(128), code_hash VARCHAR(128), data_hash TEXT,
 config_json TEXT, info_json TEXT, record_path TEXT, record_json TEXT NOT NULL, ingested_at VARCHAR(64) NOT NULL,
 PRIMARY KEY (run_id));
CREATE INDEX ix_runs_task ON runs (task);
CREATE INDEX ix_runs_git_commit ON runs (git_commit);
CREATE INDEX ix_runs_scale ON runs (scale);
CREATE TABLE metrics (run_id VARCHAR(64) NOT NULL, name VARCHAR(256) NOT NULL, value FLOAT, nonfinite VARCHAR(8),
 higher_is_better BOOLEAN NOT NULL, PRIMARY KEY (run_id, name));
CREATE TABLE failures (failure_id VARCHAR(64) NOT NULL, run_id VARCHAR(64), task VARCHAR(128), variant TEXT,
 method VARCHAR(128), benchmark VARCHAR(256), seed BIGINT, scale VARCHAR(32), error_type VARCHAR(256), message TEXT,
 traceback TEXT, started_at VARCHAR(64), finished_at VARCHAR(64), git_commit VARCHAR(64), record_path TEXT,
 ingested_at VARCHAR(64) NOT NULL, PRIMARY KEY (failure_id));
CREATE INDEX ix_failures_run_id ON failures (run_id);
CREATE INDEX ix_failures_task ON failures (task);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_a_v1_registry_is_migrated_forward_keeping_its_runs(tmp_path):
    from harness.config import canonical_json

    db = tmp_path / "old.sqlite"
    rec = make_record(seed=0, metrics={"acc": 0.75})
    con = sqlite3.connect(db)
    con.executescript(V1_DDL)
    con.execute("INSERT INTO runs (run_id, task, method, variant, benchmark, seed, scale, status, finished_at, "
                "git_commit, record_json, ingested_at, config_json, info_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (rec["run_id"], "toy", "base", "base", "b1", 0, "small", "ok", rec["timings"]["finished_at"],
                 "a" * 40, canonical_json(rec), "2025-01-01T00:00:00+00:00", "{}", "{}"))
    con.execute("INSERT INTO metrics VALUES (?,?,?,?,?)", (rec["run_id"], "acc", 0.75, None, 1))
    con.commit()
    con.close()
    assert REGISTRY_SCHEMA_VERSION == 3
    with Registry(url=f"sqlite:///{db}") as reg:
        assert reg.metrics()["value"].tolist() == [0.75]  # migrated on first use, data intact
        assert len(reg.conflicts()) == 0  # the v2 table exists
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("3",)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"conflicts", "ingested_files"} <= tables  # v2, v3
    assert con.execute("SELECT finished_ts FROM runs").fetchone()[0] is not None  # v3: filled from finished_at
    con.close()
    # A registry from a newer harness is refused with a clear message, not reinterpreted.
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    from harness.config import ConfigError

    with Registry(url=f"sqlite:///{db}") as reg, pytest.raises(ConfigError, match="newer than this harness"):
        reg.runs()


def test_export_infers_the_format_from_the_suffix_honours_task_and_load_gives_frames(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed in range(3):
        write_record(tmp_path / "results", make_record(seed=seed, metrics={"acc": 0.5 + seed / 10}))
        write_record(tmp_path / "results", make_record(task="other", seed=seed, metrics={"acc": 0.1}))
    assert main(["registry", "ingest"]) == 0
    assert main(["registry", "export", "--path", "x.parquet", "--task", "toy"]) == 0
    assert (tmp_path / "x.parquet").read_bytes()[:4] == b"PAR1"
    df = pd.read_parquet(tmp_path / "x.parquet")
    assert set(df["task"]) == {"toy"} and sorted(df["metric.acc"]) == pytest.approx([0.5, 0.6, 0.7])
    assert main(["registry", "export", "--path", "m.json", "--table", "metrics", "--scale", "small"]) == 0
    assert len(json.loads((tmp_path / "m.json").read_text())) == 6
    f = load(results_dir=tmp_path / "results", task="toy")
    assert isinstance(f.runs, pd.DataFrame) and len(f.runs) == 3 and set(f.metrics["task"]) == {"toy"}
    assert sorted(f.runs["metric.acc"]) == pytest.approx([0.5, 0.6, 0.7]) and f.failures.empty


def test_every_eval_ever_export_of_runs_published_numbers_and_claims(workdir, capsys):
    """Runs (mean over seeds, seed-level t interval), the paper's published numbers (source: paper)
    and claim verdicts, in the every_eval_ever v0.2.1 field names."""
    from harness.stats import mean_ci

    for seed in ("0", "1", "2"):
        assert main(["run", "toy", "--method", "sgd[lr=0.1]", "--benchmark", "toy-a", "--seed", seed,
                     "--scale", "tiny"]) == 0
    assert main(["registry", "ingest"]) == 0
    claims = [{"task": "toy", "id": "c1", "statement": "s", "treatment": "sgd_best", "control": "sgd[lr=0.1]",
               "effect": 0.5, "ci_low": 0.1, "ci_high": 0.9, "n_seeds": 3, "verdict": "reproduced",
               "p_adjusted": 0.01, "benchmarks": ["toy-a"], "source": "Table 1"}]
    (workdir / "claims.json").write_text(json.dumps(claims))
    assert main(["registry", "export", "--format", "every_eval_ever", "--path", "eee.json", "--scale", "tiny",
                 "--task", "toy", "--claims", "claims.json"]) == 0
    objs = json.loads((workdir / "eee.json").read_text())
    required = {"schema_version", "evaluation_id", "retrieved_timestamp", "source_metadata", "model_info",
                "eval_library", "evaluation_results"}
    for o in objs:
        assert required <= set(o) and {"name", "id"} <= set(o["model_info"])
        assert o["source_metadata"]["source_type"] in ("evaluation_run", "documentation")
        for r in o["evaluation_results"]:
            assert {"evaluation_name", "source_data", "metric_config", "score_details"} <= set(r)
            assert isinstance(r["metric_config"]["lower_is_better"], bool) and "score" in r["score_details"]
            assert all(isinstance(v, str) for v in r["score_details"].get("details", {}).values())
    run = next(o for o in objs if o["model_info"]["id"] == "toy/sgd[lr=0.1]"
               and o["source_metadata"]["additional_details"]["source"] == "run")
    acc = next(r for r in run["evaluation_results"] if r["evaluation_name"] == "toy-a/test_accuracy")
    vals = [json.loads(p.read_text()) for p in (workdir / "results" / "runs").rglob("seed*.json")]
    want = mean_ci([next(m["value"] for m in v["metrics"] if m["name"] == "test_accuracy") for v in vals])
    assert acc["score_details"]["score"] == pytest.approx(want["mean"])
    ci = acc["score_details"]["uncertainty"]["confidence_interval"]
    assert (ci["lower"], ci["upper"]) == pytest.approx((want["ci_low"], want["ci_high"]))
    assert acc["score_details"]["uncertainty"]["num_samples"] == 3
    paper = next(o for o in objs if o["source_metadata"]["source_type"] == "documentation")
    assert paper["model_info"]["id"] == "toy/sgd_best" and paper["source_metadata"]["additional_details"]["source"] == "paper"
    assert paper["evaluation_results"][0]["score_details"]["score"] == 90.0
    claim = next(o for o in objs if o["source_metadata"]["additional_details"].get("kind") == "claims")
    res = claim["evaluation_results"][0]
    assert res["evaluation_name"] == "claim:c1" and res["score_details"]["details"]["verdict"] == "reproduced"
    assert res["score_details"]["uncertainty"]["confidence_interval"]["lower"] == 0.1
