"""Registry snapshots: the current runs and metrics frames of each (task, scale), kept as Parquet
under results/.cache/registry/ and read instead of SQL while valid (harness/registry.py)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from factories import make_record, write_record
from harness.registry import SNAPSHOT_DIR, Registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_env_url(monkeypatch):
    monkeypatch.delenv("HARNESS_REGISTRY_URL", raising=False)


def _records() -> list[tuple[dict, bool]]:
    """(record, superseded) of two tasks at two scales: runs rerun at a later commit (the first
    run under history/), a diverged run, a missing git_dirty, big integers and non-ASCII text in
    config and info, a failure."""
    recs = []
    for task, metrics in (("toy", {"acc": 0.5, "loss": 1.0}), ("abc", {"f1": 0.25})):
        for scale in ("small", "tiny"):
            for variant in ("base", "better[lr=0.01]"):
                for bench in ("b1", "b2"):
                    for seed in range(3):
                        m = {k: v + 0.01 * seed for k, v in metrics.items()}
                        recs.append((make_record(task=task, scale=scale, variant=variant, benchmark=bench, seed=seed,
                                                 metrics=m, config={"lr": 0.1, "seed": seed}, info={"n": seed}),
                                     seed == 0))
                        if seed == 0:  # superseded by a rerun at a later commit
                            recs.append((make_record(task=task, scale=scale, variant=variant, benchmark=bench,
                                                     seed=seed, metrics=m, commit="c" * 40, finished=30.0), False))
    odd = make_record(task="toy", variant="base", benchmark="b3", seed=0, metrics={"acc": math.nan, "loss": 2.0},
                      config={"n": 2**70, "name": "naïve 日本"}, info={"big": -(2**65), "x": 1e22})
    del odd["provenance"]["git_dirty"]
    recs.append((odd, False))                                             # diverged, git_dirty unknown
    recs.append((make_record(task="toy", benchmark="b3", seed=1, status="failed"), False))
    return recs


@pytest.fixture
def built(tmp_path):
    """(results dir, registry URL) of a registry holding :func:`_records`."""
    for r, superseded in _records():
        write_record(tmp_path, r, history=superseded)
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    with Registry(url=url, results_dir=tmp_path) as reg:
        s = reg.ingest_dir()
        assert s.n_new == len(_records()) and not s.errors
    return tmp_path, url


@pytest.fixture
def builds(monkeypatch):
    """Every snapshot written, as (kind, task, scale)."""
    seen: list[tuple[str, str, str]] = []
    real = Registry._save_snapshot

    def spy(self, path, table, stamp):
        seen.append((stamp["kind"], stamp["task"], stamp["scale"]))
        return real(self, path, table, stamp)

    monkeypatch.setattr(Registry, "_save_snapshot", spy)
    return seen


def _snap(results: Path, task: str, scale: str, kind: str = "runs") -> Path:
    return results / SNAPSHOT_DIR / scale / f"{task}.{kind}.parquet"


def _equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b)  # same columns, dtypes, order and index


QUERIES = [{}, {"task": "toy"}, {"scale": "tiny"}, {"task": "abc", "scale": "small"}, {"task": "nope"},
           {"task": "toy", "scale": "paper"}]
FILTERS = [{}, {"status": "ok"}, {"status": "diverged"}, {"status": ["ok", "diverged"]}, {"status": []},
           {"limit": 0}, {"limit": 1}, {"limit": 13}, {"limit": 1000}, {"status": "ok", "limit": 30}]


def test_snapshot_frames_equal_the_sql_path(built, builds):
    """runs() and metrics() give the frames SQL gives, on the first call (which builds the
    snapshots) and on later ones (which read them), with every filter and limit."""
    results, url = built
    with Registry(url=url, results_dir=results, snapshots=False) as sql, \
            Registry(url=url, results_dir=results) as reg:
        for q in QUERIES:
            _equal(reg.metrics(**q), sql.metrics(**q))
            for f in FILTERS:
                expected = sql.runs(**q, **f)
                _equal(reg.runs(**q, **f), expected)
                _equal(reg.runs(**q, **f), expected)
            _equal(reg.metrics(**q), sql.metrics(**q))
        # history runs (current_only=False) and negative limits stay in SQL, unchanged; the history
        # metrics join the snapshot's current ones with SQL's superseded ones: the same frame
        _equal(reg.runs(current_only=False), sql.runs(current_only=False))
        for q in QUERIES:
            _equal(reg.metrics(**q, current_only=False), sql.metrics(**q, current_only=False))
        history = sql.metrics("toy", "small", current_only=False)
        assert len(history) > len(sql.metrics("toy", "small"))  # the superseded runs are in it
        full = reg.runs("toy", "small")
        assert full.loc[full["benchmark"] == "b3", "git_dirty"].isna().all()
        odd = full[full["benchmark"] == "b3"].iloc[0]
        assert odd["config"]["n"] == 2**70 and odd["info"] == {"big": -(2**65), "x": 1e22}
        assert odd["status"] == "diverged"
    # one build per (kind, pair), whatever the filters; nothing for pairs without runs
    assert sorted(builds) == sorted({(k, t, s) for k in ("runs", "metrics") for t in ("toy", "abc")
                                     for s in ("small", "tiny")})
    assert sorted(p.relative_to(results / SNAPSHOT_DIR).as_posix()
                  for p in (results / SNAPSHOT_DIR).rglob("*") if p.is_file()) == sorted(
        f"{s}/{t}.{k}.parquet" for k in ("runs", "metrics") for t in ("toy", "abc") for s in ("small", "tiny"))


def test_snapshot_is_reused_until_an_ingest_adds_a_run_to_its_pair(built, builds):
    results, url = built
    reg = Registry(url=url, results_dir=results)
    first = reg.runs("toy", "small")
    path = _snap(results, "toy", "small")
    stamp = path.stat().st_mtime_ns
    assert builds == [("runs", "toy", "small")]
    _equal(reg.runs("toy", "small"), first)                     # read back, not rebuilt
    _equal(Registry(url=url, results_dir=results).runs("toy", "small"), first)   # another process alike
    assert builds == [("runs", "toy", "small")] and path.stat().st_mtime_ns == stamp
    other = reg.runs("abc", "small")

    # a re-ingest that adds nothing, and a new failure, change no frame: nothing rebuilt
    assert reg.ingest_dir().n_new == 0
    reg.ingest_record(make_record(task="toy", benchmark="b1", seed=2, status="failed", error="again"))
    _equal(reg.runs("toy", "small"), first)
    assert builds == [("runs", "toy", "small"), ("runs", "abc", "small")]

    # a newer run of one key: the next query returns it; only that pair is rebuilt
    newer = make_record(task="toy", variant="base", benchmark="b1", seed=1, metrics={"acc": 0.99, "loss": 0.1},
                        commit="d" * 40, finished=60.0)
    write_record(results, newer)
    assert reg.ingest_dir().n_new == 1
    got = reg.runs("toy", "small")
    row = got[(got["benchmark"] == "b1") & (got["variant"] == "base") & (got["seed"] == 1)]
    assert list(row["run_id"]) == [newer["run_id"]] and len(got) == len(first)
    m = reg.metrics("toy", "small")
    assert m.loc[(m["run_id"] == newer["run_id"]) & (m["name"] == "acc"), "value"].tolist() == [0.99]
    _equal(reg.runs("abc", "small"), other)
    assert builds[2:] == [("runs", "toy", "small"), ("metrics", "toy", "small")]
    _equal(got, Registry(url=url, results_dir=results, snapshots=False).runs("toy", "small"))


def test_snapshot_sees_runs_that_bumped_no_revision(built, builds, monkeypatch):
    """Runs added by something that does not bump the revision (an older harness, at another
    checkout, into the same results/registry.sqlite) still change the token: the run count."""
    results, url = built
    reg = Registry(url=url, results_dir=results)
    before = reg.runs("toy", "small")
    monkeypatch.setattr(Registry, "_bump_revisions", lambda self, conn, pairs: None)
    newer = make_record(task="toy", benchmark="b2", seed=2, metrics={"acc": 0.01, "loss": 9.0}, commit="e" * 40,
                        finished=90.0)
    assert reg.ingest_record(newer) is True
    got = reg.runs("toy", "small")
    assert newer["run_id"] in set(got["run_id"]) and len(got) == len(before)
    _equal(got, Registry(url=url, results_dir=results, snapshots=False).runs("toy", "small"))


def test_a_merge_and_a_rebuild_invalidate_snapshots(built, tmp_path_factory):
    results, url = built
    reg = Registry(url=url, results_dir=results)
    reg.runs("abc", "tiny")
    other = tmp_path_factory.mktemp("other")
    newer = make_record(task="abc", scale="tiny", benchmark="b1", seed=0, metrics={"f1": 0.75}, commit="f" * 40,
                        finished=120.0)
    write_record(other, newer)
    assert reg.merge([other]).n_new == 1
    assert newer["run_id"] in set(reg.runs("abc", "tiny")["run_id"])
    cached = reg.runs("abc", "tiny")
    # rebuild: a new registry file (every ingested_at anew) from the records under results/
    moved, summary = reg.rebuild()
    assert moved is not None and not summary.errors
    rebuilt = reg.runs("abc", "tiny")
    assert newer["run_id"] not in set(rebuilt["run_id"])                # merged, never written under results/
    assert not set(rebuilt["ingested_at"]) & set(cached["ingested_at"])
    _equal(rebuilt, Registry(url=url, results_dir=results, snapshots=False).runs("abc", "tiny"))


def test_registries_sharing_a_results_dir_do_not_share_snapshots(built):
    """Two registry files over one results dir (--registry): each query gets its own registry's
    frame (the token names the registry's first run)."""
    results, url = built
    url2 = f"sqlite:///{results / 'second.sqlite'}"
    with Registry(url=url2, results_dir=results) as reg2:
        reg2.ingest_dir()
    for _ in range(2):
        for u in (url, url2):
            with Registry(url=u, results_dir=results) as reg, \
                    Registry(url=u, results_dir=results, snapshots=False) as sql:
                _equal(reg.runs("toy", "small"), sql.runs("toy", "small"))
                _equal(reg.metrics("toy", "small"), sql.metrics("toy", "small"))


DAMAGE = {
    "empty": lambda b: b"",
    "truncated": lambda b: b[: len(b) // 2],
    "garbage": lambda b: os.urandom(len(b)),
    "bytes flipped mid-file": lambda b: b[: len(b) // 2] + bytes(x ^ 0xFF for x in b[len(b) // 2: len(b) // 2 + 64])
    + b[len(b) // 2 + 64:],
    "another pair's file": None,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_snapshot_is_rebuilt_not_an_error(built, builds, damage):
    results, url = built
    reg = Registry(url=url, results_dir=results)
    expected_runs, expected_metrics = reg.runs("toy", "small"), reg.metrics("toy", "small")
    for kind in ("runs", "metrics"):
        path = _snap(results, "toy", "small", kind)
        if DAMAGE[damage] is None:
            reg.runs("abc", "small")
            reg.metrics("abc", "small")
            path.write_bytes(_snap(results, "abc", "small", kind).read_bytes())
        else:
            path.write_bytes(DAMAGE[damage](path.read_bytes()))
    del builds[:]
    _equal(reg.runs("toy", "small"), expected_runs)
    _equal(reg.metrics("toy", "small"), expected_metrics)
    assert builds == [("runs", "toy", "small"), ("metrics", "toy", "small")]
    _equal(reg.runs("toy", "small", limit=5), expected_runs.head(5))        # the rebuilt files serve again
    assert len(builds) == 2


def test_a_snapshot_whose_values_changed_on_disk_is_rebuilt(built, builds):
    """One character of a stored run_id changed in place (the file still decodes): the page
    checksums catch it, and the query answers from a rebuilt file, not with the wrong run_id."""
    results, url = built
    reg = Registry(url=url, results_dir=results)
    expected = reg.runs("toy", "small")
    path = _snap(results, "toy", "small")
    blob = path.read_bytes()
    rid = expected["run_id"].iloc[3].encode()
    at = blob.index(rid)
    swapped = b"0" if rid[:1] != b"0" else b"1"
    path.write_bytes(blob[:at] + swapped + blob[at + 1:])
    _equal(reg.runs("toy", "small"), expected)
    assert builds == [("runs", "toy", "small")] * 2


@pytest.mark.parametrize("existing", [False, True])
def test_a_write_killed_midway_leaves_no_snapshot_that_is_read(built, existing):
    """SIGKILL while a snapshot is written (half of it on disk): the file at the snapshot's path is
    absent or the previous, whole one; the next query answers right and writes it whole."""
    results, url = built
    reg = Registry(url=url, results_dir=results)
    path = _snap(results, "toy", "small")
    if existing:
        reg.runs("toy", "small")
        newer = make_record(task="toy", benchmark="b2", seed=0, metrics={"acc": 0.2, "loss": 0.3}, commit="9" * 40,
                            finished=200.0)
        assert reg.ingest_record(newer) is True
        old = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal
        import pyarrow.parquet as pq
        from harness.registry import Registry

        def killed(table, where, **kw):
            real(table, where, **kw)
            where.flush()
            where.truncate(where.tell() // 2)  # half of the file on disk, then the kill
            os.kill(os.getpid(), signal.SIGKILL)

        real, pq.write_table = pq.write_table, killed
        Registry(url={url!r}, results_dir={str(results)!r}).runs("toy", "small")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert list(path.parent.glob(".tmp-*.parquet"))                    # the half-written file, never renamed
    if existing:
        assert path.read_bytes() == old                                 # the previous file, whole
    else:
        assert not path.exists()
    _equal(reg.runs("toy", "small"), Registry(url=url, results_dir=results, snapshots=False).runs("toy", "small"))
    assert path.is_file() and path.read_bytes() != (old if existing else b"")


def test_names_that_are_no_path_component_are_answered_from_sql(tmp_path, builds):
    """Task and scale names come from the records: a pair whose names could leave the cache folder
    (or an unknown scale) gets no snapshot; its frame comes from SQL, the same."""
    reg = Registry(url=f"sqlite:///{tmp_path / 'r.sqlite'}", results_dir=tmp_path / "results")
    odd = [make_record(task="../../escape", seed=0), make_record(task="toy", scale="../x", seed=0),
           make_record(task="toy", scale="huge", seed=0), make_record(task="Toy/..", seed=0),
           make_record(task="toy", seed=0)]
    for r in odd:
        assert reg.ingest_record(r) is True
    sql = Registry(url=f"sqlite:///{tmp_path / 'r.sqlite'}", results_dir=tmp_path / "results", snapshots=False)
    for q in ({}, {"task": "../../escape"}, {"scale": "../x"}, {"task": "toy"}):
        _equal(reg.runs(**q), sql.runs(**q))
        _equal(reg.metrics(**q), sql.metrics(**q))
    assert sorted(builds) == [("metrics", "toy", "small"), ("runs", "toy", "small")]
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [f"results/.cache/registry/small/toy.{k}.parquet" for k in ("metrics", "runs")]


def test_no_snapshot_without_a_registry_file_or_when_turned_off(tmp_path, builds):
    reg = Registry(url=f"sqlite:///{tmp_path / 'r.sqlite'}", results_dir=tmp_path, snapshots=False)
    reg.ingest_record(make_record())
    reg.runs("toy", "small")
    mem = Registry(url="sqlite://", results_dir=tmp_path)
    mem.ingest_record(make_record())
    assert len(mem.runs("toy", "small")) == 1
    assert builds == [] and not (tmp_path / SNAPSHOT_DIR).exists()
    pg = Registry(url="postgresql+psycopg://user@localhost:1/none", results_dir=tmp_path)  # (never connects)
    assert pg._snapshot_root() is None


def test_a_read_only_results_dir_answers_from_sql(built, monkeypatch):
    results, url = built
    import harness.registry as registry_mod

    def refuse(path, table, stamp):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(registry_mod, "_write_snapshot", refuse)
    reg = Registry(url=url, results_dir=results)
    _equal(reg.runs("toy", status="ok", limit=7),
           Registry(url=url, results_dir=results, snapshots=False).runs("toy", status="ok", limit=7))
    assert not (results / SNAPSHOT_DIR).exists()


def test_revision_counts_the_batches_that_add_runs_to_a_pair(tmp_path):
    reg = Registry(url=f"sqlite:///{tmp_path / 'r.sqlite'}", results_dir=tmp_path)

    def revs():
        with reg.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT key, value FROM meta WHERE key LIKE 'snapshot_rev:%'")).all()
        return {k: v.split(":")[0] for k, v in rows}

    reg.ingest_record(make_record(seed=0))
    reg.ingest_record(make_record(seed=0))                            # already there: no bump
    reg.ingest_record(make_record(seed=1, status="failed"))           # a failure: no run, no bump
    assert revs() == {"snapshot_rev:small/toy": "1"}
    for s in range(3):
        write_record(tmp_path, make_record(seed=s, task="abc", scale="tiny"))
    reg.ingest_dir()                                                   # one batch, one bump
    reg.ingest_record(make_record(seed=5))
    assert revs() == {"snapshot_rev:small/toy": "2", "snapshot_rev:tiny/abc": "1"}


def test_ls_prints_the_same_from_snapshots(built, capsys, monkeypatch, builds):
    from harness.cli import main

    results, url = built
    argvs = [["--task", "toy"], ["--task", "toy", "--scale", "tiny"], ["--status", "diverged"], ["--limit", "7"],
             ["--task", "abc", "--limit", "3"], ["--all", "--task", "abc"], ["--task", "nope"]]

    def ls_all() -> list[str]:
        got = []
        for a in argvs:
            assert main(["--registry", url, "--results", str(results), "registry", "ls", *a]) == 0
            got.append(capsys.readouterr().out)
        return got

    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(Registry, "_snapshot_root", lambda self: None)
        from_sql = ls_all()
    assert builds == []
    assert ls_all() == from_sql                           # building the snapshots
    n = len(builds)
    assert n and ls_all() == from_sql and len(builds) == n  # reading them
