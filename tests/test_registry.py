"""harness.registry: idempotent, concurrent ingest; current runs; failures; queries."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from factories import make_record, write_record
from harness.config import ConfigError
from harness.registry import METRICS_COLUMNS, RUNS_COLUMNS, REGISTRY_SCHEMA_VERSION, IngestError, Registry
from services import require_service


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch):
    monkeypatch.delenv("HARNESS_REGISTRY_URL", raising=False)


def _grid(n_seeds=5, benchmarks=("b1", "b2"), variants=("base", "better"), **kw):
    return [make_record(variant=v, benchmark=b, seed=s, metrics={"acc": 0.5 + 0.01 * s, "loss": 1.0 - 0.1 * s},
                        higher_is_better={"loss": False}, **kw)
            for v in variants for b in benchmarks for s in range(n_seeds)]


def _count(reg: Registry, table: str) -> int:
    with reg.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


# -- location --------------------------------------------------------------------------------

def test_url_precedence_and_sqlite_wal(tmp_path, monkeypatch):
    reg = Registry(results_dir=tmp_path / "res")
    assert reg.url == f"sqlite:///{tmp_path / 'res' / 'registry.sqlite'}"
    reg.ingest_record(make_record())
    with reg.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        version = conn.execute(sa.text("SELECT value FROM meta WHERE key='schema_version'")).scalar()
        assert version == str(REGISTRY_SCHEMA_VERSION)
    reg.close()
    monkeypatch.setenv("HARNESS_REGISTRY_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    assert Registry(results_dir=tmp_path / "res").url.endswith("env.sqlite")
    assert Registry(f"sqlite:///{tmp_path / 'arg.sqlite'}", results_dir=tmp_path).url.endswith("arg.sqlite")
    with pytest.raises(ConfigError, match="only sqlite"):
        Registry("mysql://x/y")


# -- ingest ----------------------------------------------------------------------------------

def test_ingest_twice_no_duplicates(tmp_path):
    recs = _grid(n_seeds=3)                         # 2 variants x 2 benchmarks x 3 seeds = 12 runs
    for r in recs:
        write_record(tmp_path, r)
    write_record(tmp_path, make_record(variant="better", seed=9, status="failed"))
    reg = Registry(results_dir=tmp_path)
    assert reg.ingest_dir() == (13, 0, [])
    assert reg.ingest_dir() == (0, 13, [])
    assert reg.ingest_record(recs[0]) is False
    assert (_count(reg, "runs"), _count(reg, "metrics"), _count(reg, "failures")) == (12, 24, 1)
    # temp files of an atomic writer are not records
    (tmp_path / "runs" / ".tmp-abc.json").write_text("{half")
    assert reg.ingest_dir() == (0, 13, [])


def _ingest_worker(url: str, results_dir: str, q) -> None:
    reg = Registry(url)
    summary = reg.ingest_dir(results_dir)
    q.put((summary.n_new, summary.n_existing, summary.errors))
    reg.close()


def _concurrent_ingest(url: str, results_dir: Path, n_procs: int = 4) -> list[tuple]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ingest_worker, args=(url, str(results_dir), q)) for _ in range(n_procs)]
    for p in procs:
        p.start()
    out = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return out


def test_concurrent_ingest_sqlite(tmp_path):
    for r in _grid(n_seeds=5):                        # 20 records
        write_record(tmp_path, r)
    url = f"sqlite:///{tmp_path / 'fresh' / 'registry.sqlite'}"   # nobody created it yet
    out = _concurrent_ingest(url, tmp_path)
    assert all(errs == [] for _, _, errs in out)
    assert sum(n for n, _, _ in out) == 20
    assert all(new + old == 20 for new, old, _ in out)
    reg = Registry(url)
    assert (_count(reg, "runs"), _count(reg, "metrics")) == (20, 40)


def test_corrupt_record_named_and_others_ingested(tmp_path):
    for r in _grid(n_seeds=2):
        write_record(tmp_path, r)
    bad = tmp_path / "runs" / "small" / "toy" / "b1" / "base" / "seed7.json"
    bad.write_text('{"schema_version": 1, "run_id": ')
    wrong = tmp_path / "runs" / "small" / "toy" / "b1" / "base" / "seed8.json"
    wrong.write_text(json.dumps({"schema_version": 1, "run_id": "x"}))  # lacks task, seed...
    odd = write_record(tmp_path, make_record(seed=3))  # then damaged on disk: the writer refuses such a seed
    odd.write_text(odd.read_text().replace('"seed": 3', '"seed": "three"'))
    odd.rename(tmp_path / "runs" / "small" / "toy" / "b1" / "base" / "seed9.json")
    reg = Registry(results_dir=tmp_path)
    n_new, n_old, errors = reg.ingest_dir()
    assert (n_new, n_old) == (8, 0)
    assert len(errors) == 3
    assert str(bad) in errors[0] and "corrupt run record" in errors[0]
    assert str(wrong) in errors[1] and "lacks task" in errors[1]
    assert "seed9.json: malformed run record" in errors[2]
    with pytest.raises(IngestError) as e:
        reg.ingest_paths([bad, *sorted((tmp_path / "runs").rglob("seed0.json"))])
    assert str(bad) in str(e.value) and e.value.n_existing == 4 and isinstance(e.value, ConfigError)


# -- current runs and history --------------------------------------------------------------------

def test_current_only_picks_latest_and_keeps_history(tmp_path):
    old = make_record(seed=0, commit="a" * 40, finished=10, metrics={"acc": 0.1})
    new = make_record(seed=0, commit="b" * 40, finished=20, metrics={"acc": 0.9})
    other = make_record(seed=1, commit="a" * 40, finished=5, metrics={"acc": 0.3})
    assert old["run_id"] != new["run_id"]
    write_record(tmp_path, old, history=True)
    write_record(tmp_path, new)
    write_record(tmp_path, other)
    reg = Registry(results_dir=tmp_path)
    assert reg.ingest_dir().n_new == 3
    cur = reg.runs(task="toy", scale="small")
    assert list(cur["run_id"]) == [new["run_id"], other["run_id"]]
    assert cur.loc[0, "config"] == {"lr": 0.1} and isinstance(cur.loc[0, "info"], dict)
    assert len(reg.runs(current_only=False)) == 3
    m = reg.metrics(task="toy")
    assert list(m["value"]) == [0.9, 0.3]
    assert list(reg.metrics(current_only=False).sort_values("value")["value"]) == [0.1, 0.3, 0.9]
    # comparing commits: each commit sees its own runs
    assert list(reg.by_commit("aaaa")["value"]) == [0.1, 0.3]
    assert list(reg.by_commit("b" * 40)["value"]) == [0.9]
    assert len(reg.by_commit("c")) == 0


def test_newer_diverged_rerun_hides_older_ok(tmp_path):
    reg = Registry(results_dir=tmp_path)
    reg.ingest_record(make_record(commit="a" * 40, finished=10, metrics={"acc": 0.7}))
    reg.ingest_record(make_record(commit="b" * 40, finished=20, metrics={"acc": math.nan}))
    assert list(reg.runs()["status"]) == ["diverged"]
    assert len(reg.runs(status="ok")) == 0
    m = reg.metrics()
    assert m.loc[0, "status"] == "diverged" and math.isnan(m.loc[0, "value"]) and m.loc[0, "nonfinite"] == "nan"


def test_by_commit_ambiguous_prefix(tmp_path):
    reg = Registry(results_dir=tmp_path)
    reg.ingest_record(make_record(seed=0, commit="ab" + "0" * 38))
    reg.ingest_record(make_record(seed=1, commit="ac" + "0" * 38))
    with pytest.raises(ConfigError, match="ambiguous"):
        reg.by_commit("a")
    assert len(reg.by_commit("ab")) == 1


# -- failures ----------------------------------------------------------------------------------

def test_failures_and_unresolved_logic(tmp_path):
    reg = Registry(results_dir=tmp_path)
    f_fixed = make_record(seed=0, status="failed", finished=5, error="oom")
    f_again = make_record(seed=0, status="failed", finished=30, error="oom again")   # after the ok run
    f_open = make_record(seed=1, status="failed", finished=5, error="bug")
    f_other = make_record(seed=2, variant="better", status="failed", finished=50, error="x")
    for f in (f_fixed, f_again, f_open, f_other):
        assert reg.ingest_record(f) is True
    assert reg.ingest_record(f_open) is False                  # same content: same failure_id
    assert reg.ingest_record(make_record(seed=0, finished=10)) is True
    reg.ingest_record(make_record(seed=2, variant="base", finished=60))   # other variant: no cover
    allf = reg.failures(unresolved_only=False)
    assert len(allf) == 4 and len(set(allf["failure_id"])) == 4
    assert set(allf["failure_id"].str.len()) == {16}
    unresolved = reg.failures()
    assert list(unresolved["message"]) == ["x", "oom again", "bug"]          # newest first
    row = unresolved.iloc[2]
    assert row["error_type"] == "RuntimeError" and "Traceback" in row["traceback"]
    assert len(reg.runs()) == 2 and len(reg.failures(task="nope")) == 0


# -- records, curves, export, empty frames --------------------------------------------------

def test_record_curves_and_missing(tmp_path):
    reg = Registry(results_dir=tmp_path)
    rec = make_record(curves={"val": [{"step": 3, "acc": 0.4}]})
    reg.ingest_record(rec)
    assert reg.record(rec["run_id"]) == rec
    assert reg.record(rec["run_id"][:6]) == rec
    assert reg.curves([rec["run_id"]]) == {rec["run_id"]: {"val": [{"step": 3, "acc": 0.4}]}}
    with pytest.raises(KeyError, match="no run 'feedbeef'"):
        reg.record("feedbeef")
    with pytest.raises(KeyError, match="feedbeef"):
        reg.curves([rec["run_id"], "feedbeef"])


def test_empty_frames_have_stable_columns_and_dtypes(tmp_path):
    reg = Registry(results_dir=tmp_path)
    runs, metrics = reg.runs(), reg.metrics()
    assert list(runs.columns) == RUNS_COLUMNS and len(runs) == 0
    assert list(metrics.columns) == METRICS_COLUMNS
    reg.ingest_record(make_record(metrics={"acc": 1.0, "loss": math.inf}))
    full_runs, full_metrics = reg.runs(), reg.metrics()
    assert dict(runs.dtypes) == dict(full_runs.dtypes)
    assert dict(metrics.dtypes) == dict(full_metrics.dtypes)
    assert full_metrics["value"].dtype == "float64" and full_metrics["seed"].dtype == "int64"
    assert full_metrics.set_index("name").loc["loss", "nonfinite"] == "inf"
    assert list(reg.failures().columns)[:2] == ["failure_id", "run_id"]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export(tmp_path, fmt):
    reg = Registry(results_dir=tmp_path)
    for r in _grid(n_seeds=2, variants=("base",), benchmarks=("b1",)):
        reg.ingest_record(r)
    path = reg.export(tmp_path / f"out.{fmt}")
    back = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[fmt](path)
    assert len(back) == 2
    assert list(back.sort_values("seed")["metric.acc"]) == [0.5, 0.51]
    assert json.loads(back["config"].iloc[0]) == {"lr": 0.1}
    assert len(pd.read_csv(reg.export(tmp_path / "m.csv", table="metrics"))) == 4


# -- PostgreSQL ------------------------------------------------------------------------------

@pytest.mark.service
def test_postgresql_registry(tmp_path):
    url = os.environ.get("HARNESS_TEST_PG_URL")
    if not url:
        require_service("PostgreSQL", "set HARNESS_TEST_PG_URL (e.g. from .ci/start-postgres.sh)")
    schema = f"harness_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    test_url = sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    test_url = test_url.render_as_string(hide_password=False)
    try:
        recs = _grid(n_seeds=5)
        for r in recs:
            write_record(tmp_path, r)
        write_record(tmp_path, make_record(variant="better", seed=7, status="failed"))
        out = _concurrent_ingest(test_url, tmp_path, n_procs=3)
        assert sum(n for n, _, _ in out) == 21 and all(e == [] for _, _, e in out)
        reg = Registry(test_url)
        assert reg.ingest_dir(tmp_path) == (0, 21, [])
        assert (_count(reg, "runs"), _count(reg, "metrics"), _count(reg, "failures")) == (20, 40, 1)
        newer = make_record(variant="base", benchmark="b1", seed=0, commit="f" * 40, finished=99,
                            metrics={"acc": 0.99})
        assert reg.ingest_record(newer) is True
        cur = reg.runs(task="toy", scale="small")
        assert len(cur) == 20 and newer["run_id"] in set(cur["run_id"])
        assert len(reg.runs(current_only=False)) == 21
        assert len(reg.failures()) == 1
        assert reg.record(newer["run_id"]) == newer
        assert list(reg.by_commit("ffff")["value"]) == [0.99]
        reg.close()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


# -- damaged registry, unreadable records (issue 14.6) ---------------------------------------------

def _one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("damage", ["not_a_database", "malformed"])
def test_damaged_registry_names_the_rebuild_and_rebuild_restores_it(workdir, capsys, damage):
    from harness.cli import main

    results = workdir / "results"
    for r in _grid(n_seeds=3, task="toy", scale="tiny"):
        write_record(results, r)
    db = results / "registry.sqlite"
    if damage == "not_a_database":
        db.write_bytes(b"this is no sqlite file\n" * 400)
    else:  # a real database whose pages were overwritten: "database disk image is malformed"
        with Registry(results_dir=results) as reg:
            reg.ingest_dir()
            with reg.engine.begin() as conn:
                conn.execute(sa.text("PRAGMA wal_checkpoint(TRUNCATE)"))
        blob = bytearray(db.read_bytes())
        blob[4096:] = b"\xa5" * (len(blob) - 4096)
        db.write_bytes(bytes(blob))
    for argv in (["registry", "ls"], ["registry", "ingest"], ["claims", "--scale", "tiny", "--task", "toy"],
                 ["report", "--scale", "tiny"]):
        assert main(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert "harness registry rebuild" in line and "source of truth" in line, line
    assert main(["registry", "rebuild"]) == 0
    out = capsys.readouterr().out
    assert "moved the old registry aside" in out and "12 indexed" in out
    assert len([p for p in results.glob("registry.sqlite.damaged-*") if p.name.endswith("Z")]) == 1  # kept
    assert main(["registry", "ls", "--task", "toy"]) == 0
    assert capsys.readouterr().out.count("toy") == 12


def test_unreadable_record_is_warned_about_and_listed_in_the_report(workdir, capsys):
    from harness.cli import main

    for seed in ("0", "1", "2"):
        for lr in ("0.1", "0.5"):
            assert main(["run", "toy", "--method", f"sgd[lr={lr}]", "--benchmark", "toy-a", "--seed", seed,
                         "--scale", "tiny"]) == 0
    bad = workdir / "results" / "runs" / "tiny" / "toy" / "toy-a" / "sgd__lr=0.5" / "seed2.json"
    bad.write_text(bad.read_text()[:200])  # truncated: a disk that filled up, a copy cut short
    capsys.readouterr()
    assert main(["claims", "--scale", "tiny", "--task", "toy"]) == 0
    err = capsys.readouterr().err
    assert str(bad.relative_to(workdir)) in err and "corrupt run record" in err
    assert "1 run record(s) could not be read" in err and "fewer seeds" in err
    assert main(["report", "--scale", "tiny", "--no-ingest"]) == 0  # as the DAG calls it
    assert "1 run record(s) could not be read" in capsys.readouterr().err
    runs_page = (workdir / "reports" / "runs.html").read_text()
    assert "CorruptRecord" in runs_page and "sgd__lr=0.5/seed2.json" in runs_page
    # Rerunning it (snakemake would; here by hand) replaces the file and resolves the listing.
    bad.unlink()
    assert main(["run", "toy", "--method", "sgd[lr=0.5]", "--benchmark", "toy-a", "--seed", "2",
                 "--scale", "tiny"]) == 0
    assert main(["report", "--scale", "tiny"]) == 0
    assert "CorruptRecord" not in (workdir / "reports" / "runs.html").read_text()


# -- scale: batched ingest that skips unchanged files, latest per key in SQL, ls with a LIMIT (issue 15) --

def test_reingest_skips_unchanged_files_and_picks_up_a_changed_one(tmp_path, monkeypatch):
    import harness.registry as registry_mod

    monkeypatch.setattr(registry_mod, "INGEST_BATCH", 3)  # several batches, some with two copies of a run
    recs = _grid(n_seeds=3)                               # 12 runs
    for r in recs:
        write_record(tmp_path, r)
    write_record(tmp_path, recs[0], history=True)         # a second copy of a run_id: present, not new
    write_record(tmp_path, make_record(variant="better", seed=9, status="failed"))
    reads = []
    real_read = registry_mod._read_record_file  # every record file is opened and parsed here
    monkeypatch.setattr(registry_mod, "_read_record_file", lambda p: reads.append(Path(p)) or real_read(p))
    monkeypatch.setattr(registry_mod, "read_record", lambda p: pytest.fail("parsed twice"))
    reg = Registry(results_dir=tmp_path)
    assert reg.ingest_dir() == (13, 1, [])
    assert len(reads) == 14
    assert (_count(reg, "runs"), _count(reg, "metrics"), _count(reg, "failures")) == (12, 24, 1)
    reads.clear()
    assert reg.ingest_dir() == (0, 14, [])                # every file present: none is read again
    assert reads == []
    # a rerun at a new commit replaces one record file: only that file is read, and it is current
    newer = make_record(variant="base", benchmark="b1", seed=0, commit="c" * 40, finished=99, metrics={"acc": 0.99})
    path = write_record(tmp_path, newer)
    assert reg.ingest_dir() == (1, 13, [])
    assert reads == [path]
    cur = reg.runs(task="toy")
    assert len(cur) == 12 and newer["run_id"] in set(cur["run_id"]) and recs[0]["run_id"] not in set(cur["run_id"])
    # the same bytes with a new mtime are read again, and found present
    reads.clear()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert reg.ingest_dir() == (0, 14, []) and reads == [path]
    # what was read is remembered per registry: another registry reads every file
    fresh = Registry(url=f"sqlite:///{tmp_path / 'other.sqlite'}", results_dir=tmp_path)
    assert fresh.ingest_dir().n_new == 14
    # explicit paths are skipped the same way
    reads.clear()
    assert reg.ingest_paths([path]) == (0, 1) and reads == []


def test_latest_per_key_compares_times_not_strings(tmp_path):
    reg = Registry(results_dir=tmp_path)
    older = make_record(commit="a" * 40, metrics={"acc": 0.1})
    newer = make_record(commit="b" * 40, metrics={"acc": 0.9})
    older["timings"]["finished_at"] = "2025-01-01T12:00:00+00:00"
    newer["timings"]["finished_at"] = "2025-01-01T10:00:00-05:00"   # 15:00 UTC: later, though it sorts first
    missing = make_record(commit="c" * 40, metrics={"acc": 0.5})
    missing["timings"]["finished_at"] = None                          # never chosen over a known time
    for r in (older, newer, missing):
        assert reg.ingest_record(r) is True
    assert list(reg.runs()["run_id"]) == [newer["run_id"]]
    assert list(reg.metrics()["value"]) == [0.9]
    assert len(reg.runs(current_only=False)) == 3


def test_ls_prints_the_first_rows_without_loading_all(tmp_path, capsys, monkeypatch):
    from harness.cli import main

    for r in _grid(n_seeds=10):                            # 40 runs
        write_record(tmp_path, r)
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    with Registry(url=url, results_dir=tmp_path) as reg:
        reg.ingest_dir()
        expected = reg.runs().head(5)
    seen = {}
    real_runs, real_metrics = Registry.runs, Registry.metric_table

    def runs_spy(self, *a, **kw):
        df = real_runs(self, *a, **kw)
        seen["runs"] = len(df)
        return df

    def metrics_spy(self, run_ids):
        seen["metric_ids"] = len(list(run_ids))
        return real_metrics(self, run_ids)

    monkeypatch.setattr(Registry, "runs", runs_spy)
    monkeypatch.setattr(Registry, "metric_table", metrics_spy)
    monkeypatch.setattr(Registry, "metrics", lambda *a, **kw: pytest.fail("ls must not load every metric"))
    capsys.readouterr()
    assert main(["--registry", url, "--results", str(tmp_path), "registry", "ls", "--limit", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert seen == {"runs": 5, "metric_ids": 5}             # read from SQL with a LIMIT, not sliced after
    assert len(lines) == 6 and "acc" in lines[0] and "loss" in lines[0]
    assert [ln.split()[0] for ln in lines[1:]] == list(expected["run_id"])
    assert main(["--registry", url, "--results", str(tmp_path), "registry", "ls", "--task", "nope"]) == 0
    assert capsys.readouterr().out.strip() == "no runs"


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_latest_per_key_in_sql_is_the_python_choice_on_ties(tmp_path):
    """The window in SQL (on finished_ts, ingested_at, run_id, from an index) picks what
    _latest_per_key picks in Python: the same instant spelt with two offsets, equal ingested_at
    (then run_id decides), a missing or unparsable finished_at, a newer diverged rerun; with status
    filters and limits."""
    reg = Registry(results_dir=tmp_path)
    recs = []
    for seed, stamps in enumerate([
        ["2025-01-01T12:00:00+00:00", "2025-01-01T07:00:00-05:00"],           # the same instant
        ["2025-01-01T12:00:00+00:00", "2025-01-01T12:00:00+00:00", None],     # an exact tie, and none
        ["not a time", None],                                                 # nothing to compare
        ["2025-01-01T12:00:00Z", "2025-01-01T12:00:01+00:00"],               # the later one wins
    ]):
        for i, stamp in enumerate(stamps):
            rec = make_record(seed=seed, commit=f"{i}{seed}" * 20, metrics={"acc": math.nan if i == 1 else 0.5})
            rec["timings"]["finished_at"] = stamp
            recs.append(rec)
    for r in recs:
        assert reg.ingest_record(r) is True
    with reg.engine.begin() as conn:  # ties on ingested_at too, for half the runs: run_id decides
        conn.execute(sa.text("UPDATE runs SET ingested_at = '2025-06-01T00:00:00.000000+00:00' WHERE seed IN (0, 1)"))
    python_choice = sorted(Registry._latest_per_key(reg._select_runs(None, None)),  # (sorted by run_id)
                           key=lambda r: (r["benchmark"], r["variant"], r["seed"]))
    assert list(reg.runs()["run_id"]) == [r["run_id"] for r in python_choice]
    assert len(python_choice) == 4
    for status in ("ok", "diverged", ["ok", "diverged"]):
        wanted = {status} if isinstance(status, str) else set(status)
        expected = [r["run_id"] for r in python_choice if r["status"] in wanted]
        assert list(reg.runs(status=status)["run_id"]) == expected
        for limit in (0, 1, 2, 10):
            _frames_equal(reg.runs(status=status, limit=limit), reg.runs(status=status).head(limit))
    for limit in (1, 3):
        _frames_equal(reg.runs(current_only=False, limit=limit), reg.runs(current_only=False).head(limit))
    assert list(reg.metrics()["run_id"]) == [r["run_id"] for r in python_choice]


def test_runs_frame_is_the_same_through_orjson_and_json(tmp_path, monkeypatch):
    """Records read through orjson (when installed) and through json give the same frames and
    records: big integers stay exact, non-ASCII text and exponents round-trip; a file with NaN is
    the same malformed record either way."""
    import harness.registry as registry_mod

    rec = make_record(seed=0, config={"lr": 1e-5, "n": 2**70, "name": "naïve ü"}, info={"big": -(2**65), "x": 1e22})
    other = make_record(seed=1, config={"lr": 0.25, "tag": "日本"})
    for r in (rec, other):
        write_record(tmp_path, r)
    nan = write_record(tmp_path, make_record(seed=2))
    nan.write_text(nan.read_text().replace('"cpu_s": 1.2', '"cpu_s": NaN'))
    frames, errors = [], []
    for use_orjson in (True, False):
        if not use_orjson:
            monkeypatch.setattr(registry_mod, "_orjson", None)
        with Registry(url=f"sqlite:///{tmp_path / f'r{use_orjson}.sqlite'}", results_dir=tmp_path) as reg:
            s = reg.ingest_dir()
            assert (s.n_new, len(s.errors)) == (2, 1) and "malformed run record" in s.errors[0]
            errors.append(s.errors[0])
            frames.append(reg.runs().drop(columns=["ingested_at"]))
            assert reg.record(rec["run_id"]) == rec and reg.record(other["run_id"]) == other
            got = reg.runs()
            assert got.loc[0, "config"]["n"] == 2**70 and isinstance(got.loc[0, "config"]["n"], int)
            assert got.loc[0, "info"] == {"big": -(2**65), "x": 1e22}
    _frames_equal(frames[0], frames[1])
    assert errors[0] == errors[1]


def test_reingest_with_a_relative_results_dir_reads_nothing_and_keeps_paths(tmp_path, monkeypatch):
    """The absolute path that marks a file indexed is the same from a relative results dir, an
    absolute one, or one file given by path; record_path stays as the folder was given."""
    import harness.registry as registry_mod

    monkeypatch.chdir(tmp_path)
    for r in _grid(n_seeds=2):
        write_record(tmp_path / "res", r)
    reg = Registry(url=f"sqlite:///{tmp_path / 'r.sqlite'}", results_dir="./res/")
    assert reg.ingest_dir().n_new == 8
    assert all(p.startswith("res/runs/") for p in reg.runs()["record_path"])
    monkeypatch.setattr(registry_mod, "_read_record_file", lambda p: pytest.fail(f"{p} read again"))
    assert reg.ingest_dir(tmp_path / "res") == (0, 8, [])
    assert reg.ingest_dir("res/../res") == (0, 8, [])
    one = next((tmp_path / "res" / "runs").rglob("seed1.json"))
    assert reg.ingest_paths([one, one.relative_to(tmp_path)]) == (0, 2)


def test_a_crash_mid_ingest_leaves_a_registry_that_a_reingest_completes(tmp_path, monkeypatch):
    """Each batch is one transaction holding its runs, their metrics and the files marked indexed:
    a crash between batches loses the unfinished batch whole, and the next ingest reads just its files."""
    import harness.registry as registry_mod

    monkeypatch.setattr(registry_mod, "INGEST_BATCH", 4)
    for r in _grid(n_seeds=3):  # 12 runs: 3 batches
        write_record(tmp_path, r)
    real = Registry._executemany
    calls = []

    def crash_in_second_batch(self, conn, stmt, rows):
        calls.append(len(rows))
        if len(calls) == 3:  # batch 2: its metrics were written, its files are next
            raise KeyboardInterrupt("killed")
        return real(self, conn, stmt, rows)

    monkeypatch.setattr(Registry, "_executemany", crash_in_second_batch)
    reg = Registry(results_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        reg.ingest_dir()
    assert (_count(reg, "runs"), _count(reg, "metrics"), _count(reg, "ingested_files")) == (4, 8, 4)
    monkeypatch.setattr(Registry, "_executemany", real)
    reads = []
    real_read = registry_mod._read_record_file
    monkeypatch.setattr(registry_mod, "_read_record_file", lambda p: reads.append(p) or real_read(p))
    assert reg.ingest_dir() == (8, 4, [])
    assert len(reads) == 8
    assert (_count(reg, "runs"), _count(reg, "metrics"), _count(reg, "ingested_files")) == (12, 24, 12)


def test_an_older_registry_gets_the_latest_run_index_without_a_schema_change(tmp_path, monkeypatch):
    """A schema-3 registry made before ix_runs_latest (run-key and task indexes, no index revision in
    meta) gets the index on first use, loses the two it replaces, keeps schema_version 3 and its
    data; a registry already up to date is opened with one read (no create_all, no write)."""
    import sqlite3

    import harness.registry as registry_mod

    db = tmp_path / "old.sqlite"
    url = f"sqlite:///{db}"
    with Registry(url=url, results_dir=tmp_path) as reg:
        for r in _grid(n_seeds=2):
            reg.ingest_record(r)
        expected = reg.runs()
    con = sqlite3.connect(db)  # back to the layout schema 3 had
    con.executescript("DROP INDEX ix_runs_latest; DELETE FROM meta WHERE key = 'indexes';"
                      "CREATE INDEX ix_runs_key ON runs (task, scale, benchmark, variant, seed);"
                      "CREATE INDEX ix_runs_task ON runs (task);")
    con.close()
    with Registry(url=url, results_dir=tmp_path) as reg:
        _frames_equal(reg.runs(), expected)
    con = sqlite3.connect(db)
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs'"
                                         " AND name NOT LIKE 'sqlite_%'")}
    assert indexes == {"ix_runs_latest", "ix_runs_scale", "ix_runs_git_commit"}
    meta = dict(con.execute("SELECT key, value FROM meta"))
    assert meta.pop("snapshot_rev:small/toy").startswith("8:")  # one bump per ingest that added a run
    assert meta == {"schema_version": str(REGISTRY_SCHEMA_VERSION), "indexes": registry_mod.INDEXES_REVISION}
    plan = " ".join(r[-1] for r in con.execute(
        "EXPLAIN QUERY PLAN SELECT run_id, ingested_at, status, row_number() OVER (PARTITION BY task, scale, "
        "benchmark, variant, seed ORDER BY finished_ts DESC, ingested_at DESC, run_id DESC) FROM runs WHERE task = 'toy'"))
    assert "COVERING INDEX ix_runs_latest" in plan, plan  # the choice reads no table page
    con.close()
    monkeypatch.setattr(registry_mod.metadata, "create_all", lambda *a, **k: pytest.fail("not up to date?"))
    with Registry(url=url, results_dir=tmp_path) as reg:
        _frames_equal(reg.runs(), expected)
