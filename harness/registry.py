"""The registry: an SQL index over run records (SQLAlchemy Core 2.x).

Run records (JSON files, see :mod:`harness.record`) are the source of truth; the
registry indexes them so that queries over thousands of runs, across commits, are one
call returning a pandas DataFrame. It can always be rebuilt from the files with
:meth:`Registry.ingest_dir`.

Where it lives (first that is set wins)::

    Registry(url=...)  >  $HARNESS_REGISTRY_URL  >  sqlite:///<results_dir>/registry.sqlite

SQLite runs in WAL mode with a 30 s busy timeout on every connection, so many
Snakemake jobs can ingest at once while a report reads. For a team, point the URL
at PostgreSQL (``postgresql+psycopg://user@host/db``).

Tables (``schema_version`` 3, kept in ``meta``; older registries are migrated forward):

``runs``      one row per finished run (status ok or diverged), keyed by ``run_id``;
              the whole record is kept in ``record_json``.
``metrics``   one row per (run_id, metric name); ``value`` NULL when non-finite, with
              ``nonfinite`` = "nan" | "inf" | "-inf".
``failures``  one row per distinct failure record, keyed by ``failure_id`` (the first
              16 hex digits of the sha256 of the record's canonical JSON), since a
              failing run is retried under the same run_id and may fail again.
``conflicts`` what ``merge`` found under a run_id with other metrics (schema 2).
``ingested_files`` (path, size, mtime_ns) of every record file indexed (schema 3).

Ingest is idempotent and safe under concurrent writers: records are inserted
:data:`INGEST_BATCH` files per transaction with ``ON CONFLICT DO NOTHING``, so a record already
present is left as it was (the first ingested copy of a run_id wins; run records are immutable, so
copies are equal). A file whose (absolute path, size, mtime) is in ``ingested_files`` is counted as
present without being opened (one set lookup): re-ingesting a results folder costs a directory walk
and a stat per file. A file that changes (a rerun replaces it) is read again. A batch's runs, their
metrics and its files' ``ingested_files`` rows commit together: an ingest killed midway leaves a
consistent registry, and the next ingest reads just the files of the batches that did not commit.
Records are parsed and written through orjson when it is installed (the same values as json; see
:func:`_read_record_file`); on SQLite the rows go straight to the driver (one prepared
statement per table and batch).

"Current" runs: a run key is (task, scale, benchmark, variant, seed). Reruns at a new
commit get a new run_id (the code hash is part of it); all of them stay in ``runs``,
and queries with ``current_only=True`` show, per key, the one with the latest
``finished_at`` (ties: latest ``ingested_at``, then ``run_id``), chosen in SQL (a window
function over the key, on ``finished_ts``, the time as seconds since the epoch), from the index
``ix_runs_latest`` alone; only the chosen runs' rows are read.

Snapshots (SQLite only): the current runs and metrics frames of one (task, scale) are kept as
Parquet files, ``<results_dir>/.cache/registry/<scale>/<task>.{runs,metrics}.parquet``, built by
the first query that needs one and read instead of SQL while valid (at 100k runs, a task's 18k
current runs in tens of milliseconds: the sqlite3 driver alone takes 0.35 s to fetch their rows).
Each file records the token it was built at: the (task, scale)'s revision in ``meta``
(``snapshot_rev:<scale>/<task>``, bumped in the transaction of every batch that adds runs to it),
its number of runs and the registry's first run (which registry file), read in one statement
before the rows. Runs are only ever inserted, so an equal token means the same rows, even where
an older harness (which bumps nothing) added some. A query whose token differs, or that cannot
read the file, rebuilds it (to a temporary file, then renamed over it). Other queries
(``current_only=False``, PostgreSQL, ``Registry(snapshots=False)``) go to SQL.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import hashlib
import json
import math
import operator
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from harness.config import NAME_RE, SCALES, ConfigError, _jsonable, canonical_json
from harness.record import SCHEMA_VERSION as RECORD_SCHEMA_VERSION
from harness.record import inside, read_record

try:  # optional: parses and writes records ~5x faster than json (installed with dvc, a dependency)
    import orjson as _orjson
except ImportError:  # pragma: no cover - then the json module does it all
    _orjson = None

#: Version of the registry's table layout (stored in ``meta``); older registries are migrated
#: forward on first use (:data:`MIGRATIONS`).
REGISTRY_SCHEMA_VERSION = 3
ENV_URL = "HARNESS_REGISTRY_URL"
RUN_KEY = ["task", "scale", "benchmark", "variant", "seed"]
SQLITE_BUSY_TIMEOUT_S = 30

metadata = sa.MetaData()

meta_table = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

runs_table = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("task", sa.String(128), nullable=False),
    sa.Column("task_version", sa.String(64)),
    sa.Column("method", sa.String(128)),
    sa.Column("variant", sa.Text, nullable=False),
    sa.Column("benchmark", sa.String(256), nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("scale", sa.String(32), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", sa.String(64)),
    sa.Column("finished_at", sa.String(64)),
    sa.Column("wall_s", sa.Float),
    sa.Column("cpu_s", sa.Float),
    sa.Column("peak_rss_mb", sa.Float),
    sa.Column("peak_gpu_mb", sa.Float),
    sa.Column("device", sa.String(64)),
    sa.Column("git_commit", sa.String(64), index=True),
    sa.Column("git_dirty", sa.Boolean),
    sa.Column("hostname", sa.String(256)),
    sa.Column("executor", sa.String(128)),
    sa.Column("code_hash", sa.String(128)),
    sa.Column("data_hash", sa.Text),
    sa.Column("config_json", sa.Text),
    sa.Column("info_json", sa.Text),
    sa.Column("record_path", sa.Text),
    sa.Column("record_json", sa.Text, nullable=False),
    sa.Column("ingested_at", sa.String(64), nullable=False),
    # Schema 3: finished_at as seconds since the epoch (NULL when missing), so the latest run per
    # key is chosen in SQL whatever the timestamps' offsets.
    sa.Column("finished_ts", sa.Float),
)

# The latest run per key, from the index alone: the run key, then the order that picks the latest
# (:meth:`Registry._runs_query`), then what a query needs of the runs it does not return (status,
# ingested_at). It also serves every query by task (its first column), so it replaces the index on
# ``task`` and the run-key index of schema 3 (:func:`_ensure_indexes` swaps them in older registries).
ix_runs_latest = sa.Index(
    "ix_runs_latest", runs_table.c.task, runs_table.c.scale, runs_table.c.benchmark, runs_table.c.variant,
    runs_table.c.seed, runs_table.c.finished_ts.desc(), runs_table.c.ingested_at.desc(), runs_table.c.run_id.desc(),
    runs_table.c.status,
)
#: Indexes of older layouts that :data:`ix_runs_latest` makes redundant (each is a prefix of it).
_OLD_RUNS_INDEXES = ("ix_runs_key", "ix_runs_task")
#: Revision of the index set (``meta`` key ``indexes``). Indexes are not part of the schema version:
#: an older harness reads a registry with other indexes unchanged, so adding one needs no migration
#: (and no version that older harnesses would refuse); :func:`_ensure_indexes` brings them up to date.
INDEXES_REVISION = "1"

metrics_table = sa.Table(
    "metrics", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("value", sa.Float),
    sa.Column("nonfinite", sa.String(8)),
    sa.Column("higher_is_better", sa.Boolean, nullable=False),
)

failures_table = sa.Table(
    "failures", metadata,
    sa.Column("failure_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), index=True),
    sa.Column("task", sa.String(128), index=True),
    sa.Column("variant", sa.Text),
    sa.Column("method", sa.String(128)),
    sa.Column("benchmark", sa.String(256)),
    sa.Column("seed", sa.BigInteger),
    sa.Column("scale", sa.String(32)),
    sa.Column("error_type", sa.String(256)),
    sa.Column("message", sa.Text),
    sa.Column("traceback", sa.Text),
    sa.Column("started_at", sa.String(64)),
    sa.Column("finished_at", sa.String(64)),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("record_path", sa.Text),
    sa.Column("ingested_at", sa.String(64), nullable=False),
)

# Schema 2: what `harness registry merge` found under one run_id with other metrics than the
# registry holds (the kept copy is the one in `runs`; the incoming one is kept here, whole).
conflicts_table = sa.Table(
    "conflicts", metadata,
    sa.Column("conflict_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("source", sa.Text),
    sa.Column("kept_metrics_json", sa.Text, nullable=False),
    sa.Column("incoming_metrics_json", sa.Text, nullable=False),
    sa.Column("incoming_record_json", sa.Text, nullable=False),
    sa.Column("detected_at", sa.String(64), nullable=False),
)


# Schema 3: the record files already indexed, so a re-ingest skips an unchanged file by a stat
# (path, size, mtime) instead of reading and parsing it again.
files_table = sa.Table(
    "ingested_files", metadata,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
)


def _migrate_1_to_2(conn) -> None:
    """Schema 2 adds the ``conflicts`` table (merge conflicts)."""
    conflicts_table.create(conn, checkfirst=True)


def _migrate_2_to_3(conn) -> None:
    """Schema 3 adds ``runs.finished_ts`` (filled from ``finished_at``), the run-key index and the
    ``ingested_files`` table (empty: the next ingest reads every file once more, then skips them)."""
    conn.execute(sa.text("ALTER TABLE runs ADD COLUMN finished_ts FLOAT"))
    rows = conn.execute(sa.select(runs_table.c.run_id, runs_table.c.finished_at)).all()
    params = [{"rid": r.run_id, "ts": _ts_or_none(r.finished_at)} for r in rows]
    if params:
        conn.execute(runs_table.update().where(runs_table.c.run_id == sa.bindparam("rid"))
                     .values(finished_ts=sa.bindparam("ts")), params)
    for ix in runs_table.indexes:
        ix.create(conn, checkfirst=True)
    files_table.create(conn, checkfirst=True)


#: ``{v: f}``: ``f(conn)`` takes a registry of schema ``v`` to ``v + 1`` inside one transaction.
MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3}


def _ensure_indexes(conn) -> None:
    """Bring the indexes of ``runs`` to :data:`INDEXES_REVISION` (idempotent): drop those that
    :data:`ix_runs_latest` replaces, create the missing ones, record the revision in ``meta``."""
    for name in _OLD_RUNS_INDEXES:
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
    for ix in runs_table.indexes:
        ix.create(conn, checkfirst=True)
    got = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "indexes")).scalar()
    if got is None:
        conn.execute(meta_table.insert().values(key="indexes", value=INDEXES_REVISION))
    elif got != INDEXES_REVISION:
        conn.execute(meta_table.update().where(meta_table.c.key == "indexes").values(value=INDEXES_REVISION))


#: Record files read and parsed per transaction by :meth:`Registry.ingest_dir` (their rows are
#: written with one executemany per table).
INGEST_BATCH = 5000

# Column order and dtypes of the frames (also for empty results).
_RUN_SCALARS = [c.name for c in runs_table.columns
                if c.name not in ("config_json", "info_json", "record_json", "finished_ts")]
_FLOAT_COLS = {"wall_s", "cpu_s", "peak_rss_mb", "peak_gpu_mb", "value"}
RUNS_COLUMNS = _RUN_SCALARS + ["config", "info"]
METRICS_COLUMNS = ["run_id", "task", "method", "variant", "benchmark", "seed", "scale", "status",
                   "name", "value", "nonfinite", "higher_is_better", "git_commit", "finished_at"]
FAILURES_COLUMNS = [c.name for c in failures_table.columns]
CONFLICTS_COLUMNS = ["run_id", "task", "benchmark", "variant", "seed", "scale", "source", "kept", "incoming",
                     "detected_at"]


class IngestSummary(NamedTuple):
    """What :meth:`Registry.ingest_dir` did."""

    n_new: int
    """Records added."""
    n_existing: int
    """Records already present (left untouched)."""
    errors: list[str]
    """One message per file that could not be ingested (corrupt JSON, wrong schema...),
    each naming the file; the other files were ingested regardless."""


class MergeSummary(NamedTuple):
    """What :meth:`Registry.merge` did."""

    n_new: int
    """Records added (runs and failures)."""
    n_existing: int
    """Records already present with the same metrics (nothing to do)."""
    conflicts: list[str]
    """run_ids found with other metrics or status than the registry holds (kept in ``conflicts``)."""
    errors: list[str]
    """Records or sources that could not be read."""


class IngestError(ConfigError):
    """Some record files could not be ingested; the others were. Carries the counts."""

    def __init__(self, errors: list[str], n_new: int, n_existing: int):
        self.errors = list(errors)
        self.n_new = n_new
        self.n_existing = n_existing
        super().__init__(
            f"{len(errors)} run record(s) could not be ingested ({n_new} new, {n_existing} already "
            "present were):\n" + "\n".join(f"  {e}" for e in errors)
        )


def _dtype(col: str) -> Any:
    if col in _FLOAT_COLS:
        return "float64"
    if col == "seed":
        return "int64"
    if col == "higher_is_better":
        return "bool"
    if col == "git_dirty":
        return "boolean"
    return object


def _frame(rows: list[dict[str, Any]], columns: list[str]):
    """A DataFrame with fixed columns and dtypes, whether or not it has rows."""
    import pandas as pd

    data = {}
    for c in columns:
        values = [r.get(c) for r in rows]
        dt = _dtype(c)
        if dt == "float64":
            data[c] = pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
        elif dt == "int64":
            data[c] = pd.Series([int(v) for v in values], dtype="int64")
        elif dt == "bool":
            data[c] = pd.Series([bool(v) for v in values], dtype="bool")
        elif dt == "boolean":
            data[c] = pd.Series([None if v is None else bool(v) for v in values], dtype="boolean")
        else:
            s = pd.Series(values, dtype=object)
            data[c] = s
    return pd.DataFrame(data, columns=columns)


#: The order of a metrics frame: by run key and metric; a key's runs (history) oldest first.
_METRICS_ORDER = ["task", "scale", "benchmark", "variant", "seed", "name", "finished_at", "run_id"]


def _sort_metrics(df):
    return df.sort_values(_METRICS_ORDER, kind="stable", ignore_index=True) if len(df) else df


def _frame_cols(cols: list[list[Any]], names: list[str], extra: Mapping[str, list[Any]] | None = None):
    """:func:`_frame` from column lists (no dict per row): ``cols[i]`` holds ``names[i]``."""
    import pandas as pd

    data = {}
    for c, values in [*zip(names, cols), *(extra or {}).items()]:
        dt = _dtype(c)
        if dt == "float64":
            data[c] = pd.Series(values, dtype="float64")  # None -> NaN
        elif dt == "int64":
            data[c] = pd.Series(values, dtype="int64")
        elif dt == "bool":
            data[c] = pd.Series([bool(v) for v in values], dtype="bool")
        elif dt == "boolean":
            data[c] = pd.Series(values, dtype="boolean")
        else:
            s = pd.Series(values, dtype=object)
            data[c] = s
    return pd.DataFrame(data, columns=[*names, *(extra or {})])


# -- snapshots (see the module docstring) ------------------------------------------------------

#: Layout of the snapshot files; a file of another layout (or other columns) is rebuilt.
SNAPSHOT_FORMAT = 1
#: Where the snapshots live, under the results dir: ``<scale>/<task>.<kind>.parquet``.
SNAPSHOT_DIR = Path(".cache") / "registry"
#: ``meta`` key prefix of a (task, scale)'s revision: ``snapshot_rev:<scale>/<task>``.
SNAPSHOT_REV_PREFIX = "snapshot_rev:"
_SNAPSHOT_KEY = b"harness.registry.snapshot"
#: Columns of each kind of snapshot, and those stored without a dictionary (one value per run:
#: a dictionary would only cost; the others repeat, and are read back through their dictionary).
_SNAPSHOT_COLUMNS = {"runs": _RUN_SCALARS + ["config_json", "info_json"], "metrics": METRICS_COLUMNS}
_SNAPSHOT_PLAIN = {"runs": {"run_id", "started_at", "finished_at", "record_path", "ingested_at", "config_json",
                            "info_json"},
                   "metrics": set()}


def _snapshot_rev_key(task: str, scale: str) -> str:
    return f"{SNAPSHOT_REV_PREFIX}{scale}/{task}"


def _snapshot_table(df, kind: str):
    """A snapshot frame (:func:`_frame_cols` dtypes; for ``runs`` with ``config_json`` and ``info_json``
    text) as an Arrow table. Raises (pyarrow's TypeError or ValueError) for a value that is not of its
    column's type, e.g. a text column holding a number: such a frame is not cached."""
    import pyarrow as pa

    arrays = []
    for c in _SNAPSHOT_COLUMNS[kind]:
        s = df[c]
        if s.dtype == object:
            arrays.append(pa.array(s.tolist(), type=pa.string()))
        elif str(s.dtype) == "boolean":
            arrays.append(pa.array(s.array, type=pa.bool_()))  # <NA> -> null
        else:  # float64 (NaN stays a NaN value, not a null), int64, bool
            arrays.append(pa.array(s.to_numpy()))
    return pa.Table.from_arrays(arrays, names=_SNAPSHOT_COLUMNS[kind])


def _arrow_objects(col) -> Any:
    """A text column of a snapshot as a numpy object array of str and None (as the SQL path gives;
    pandas would make it its ``str`` dtype); a dictionary column makes each distinct value once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for chunk in col.chunks:
        if pa.types.is_dictionary(chunk.type):
            values = chunk.dictionary.to_numpy(zero_copy_only=False)
            idx = chunk.indices
            if idx.null_count:
                values = np.append(values, None)
                idx = pc.fill_null(idx, len(values) - 1)
            parts.append(values[idx.to_numpy(zero_copy_only=False)])
        else:
            parts.append(chunk.to_numpy(zero_copy_only=False))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, dtype=object)


@contextlib.contextmanager
def _gc_paused():
    """The cyclic garbage collector paused while a frame's objects are made: the ~40k dicts of a
    task's config and info at 100k runs would set off dozens of its collections, each walking them
    again, and a full one walking the caller's whole heap (half of a query's time); once resumed,
    one collection of the young objects does that work."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _snapshot_frame(table, kind: str, status: list[str] | None = None, limit: int | None = None):
    """The frame of a snapshot table, as the SQL path returns it: the rows whose ``status`` is in
    ``status`` (when given), the first ``limit`` of them (the order is the SQL order); ``runs``'
    ``config`` and ``info`` parsed (of those rows only)."""
    with _gc_paused():
        return _snapshot_frame_of(table, kind, status, limit)


def _snapshot_frame_of(table, kind: str, status: list[str] | None, limit: int | None):
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    if status is not None:
        keep = pd.Series(_arrow_objects(table.column("status"))).isin(status).to_numpy()
        table = table.filter(pa.array(keep, type=pa.bool_()))
    if limit is not None:
        table = table.slice(0, limit)
    data = {}
    for c in _SNAPSHOT_COLUMNS[kind]:
        col = table.column(c)
        dt = _dtype(c)
        if dt in ("float64", "int64", "bool"):
            values = col.to_numpy() if col.num_chunks else np.empty(0)
            data[c] = pd.Series(np.array(values, dtype=dt), dtype=dt, copy=False)  # (a writable copy)
        elif dt == "boolean":
            col = col.combine_chunks()
            mask = col.is_null().to_numpy(zero_copy_only=False)
            values = col.fill_null(False).to_numpy(zero_copy_only=False)
            data[c] = pd.Series(pd.arrays.BooleanArray(np.array(values, dtype=bool), np.array(mask, dtype=bool)),
                                copy=False)
        elif c not in ("config_json", "info_json"):
            data[c] = pd.Series(_arrow_objects(col), dtype=object, copy=False)
    if kind == "runs":
        for c, name in (("config_json", "config"), ("info_json", "info")):
            data[name] = pd.Series(_json_loads(_json_array(table.column(c))), dtype=object)
        return pd.DataFrame(data, columns=RUNS_COLUMNS, copy=False)
    return pd.DataFrame(data, columns=METRICS_COLUMNS, copy=False)


def _json_array(col) -> bytes:
    """``b"[" + b",".join(texts) + b"]"`` of a column of JSON texts (null: ``{}``), joined by Arrow
    (no Python string per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = col.combine_chunks().fill_null("{}").cast(pa.binary())
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts), b",")
    return b"[" + joined[0].as_py() + b"]"


def _read_snapshot(path: Path, kind: str, stamp: dict[str, Any], rows: int | None = None):
    """The table of the snapshot at ``path`` when it was built at ``stamp`` (``rows``: at least its
    first ``rows`` rows, not necessarily all: `registry ls` decodes the pages of its 200 only); None
    when it is missing, of another token, layout or columns, or cannot be read (a damaged file: page
    checksums are verified), so that the caller rebuilds it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path, memory_map=True, page_checksum_verification=True,
                            read_dictionary=[c for c in _SNAPSHOT_COLUMNS[kind]
                                             if c not in _SNAPSHOT_PLAIN[kind] and _dtype(c) is object]) as pf:
            found = (pf.schema_arrow.metadata or {}).get(_SNAPSHOT_KEY)
            if found is None or json.loads(found) != stamp:
                return None
            batches, n = [], 0
            if rows is not None:
                for batch in pf.iter_batches(batch_size=max(rows, 1), use_threads=False):
                    batches.append(batch)
                    n += batch.num_rows
                    if n >= rows:
                        break
            table = pa.Table.from_batches(batches) if batches else pf.read(use_threads=False)
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a damaged or foreign file (pyarrow raises OSError, ArrowInvalid...): rebuilt
        return None
    return table if table.column_names == _SNAPSHOT_COLUMNS[kind] else None


def _write_snapshot(path: Path, table, stamp: dict[str, Any]) -> None:
    """Write a snapshot atomically: to a hidden temporary file in the same folder, then renamed over
    ``path``, so a reader (or a process killed midway) never sees half a file."""
    import pyarrow.parquet as pq

    kind = stamp["kind"]
    table = table.replace_schema_metadata({_SNAPSHOT_KEY: json.dumps(stamp, sort_keys=True).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet")
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f, compression="none", write_page_checksum=True, row_group_size=max(len(table), 1),
                           use_dictionary=[c for c in _SNAPSHOT_COLUMNS[kind]
                                           if c not in _SNAPSHOT_PLAIN[kind] and _dtype(c) is object])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


# canonical_json's encoder, built once (json.dumps builds one per call: a third of its cost on a small dict)
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False, default=_jsonable).encode

_NOT_MAPPINGS = frozenset({str, int, float, bool, list, type(None)})


def _dig(d: Mapping[str, Any] | None, *paths: str) -> Any:
    """The first non-None value among dotted ``paths`` of a nested mapping."""
    for path in paths:
        cur: Any = d
        for part in path.split("."):
            # (type() first: isinstance against typing.Mapping costs a microsecond per call)
            t = type(cur)
            if t is not dict and (t in _NOT_MAPPINGS or not isinstance(cur, Mapping)) or part not in cur:
                cur = None
                break
            cur = cur[part]
        if cur is not None:
            return cur
    return None


def _float(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _time_key(s: Any) -> float:
    """Seconds since the epoch of an ISO timestamp; -inf when missing or unparsable."""
    if not s:
        return -math.inf
    try:
        t = _dt.datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    except ValueError:
        return -math.inf
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def _ts_or_none(s: Any) -> float | None:
    t = _time_key(s)
    return None if t == -math.inf else t


_REQUIRED = ("run_id", "task", "variant", "benchmark", "seed", "scale", "status")


def _check_record(rec: Any, where: str) -> None:
    if not (type(rec) is dict or isinstance(rec, Mapping)):
        raise ConfigError(f"{where}: a run record must be a JSON object")
    if rec.get("schema_version") != RECORD_SCHEMA_VERSION:
        raise ConfigError(f"{where}: not a schema_version {RECORD_SCHEMA_VERSION} run record")
    missing = [k for k in _REQUIRED if rec.get(k) is None]
    if missing:
        raise ConfigError(f"{where}: run record lacks {', '.join(missing)}. Delete it and rerun that run.")
    if rec["status"] not in ("ok", "diverged", "failed"):
        raise ConfigError(f"{where}: unknown status {rec['status']!r} (ok, diverged or failed)")


def _provenance_fields(rec: Mapping[str, Any]) -> dict[str, Any]:
    prov = rec.get("provenance") or {}
    executor = _dig(prov, "executor.name", "executor.kind", "executor")
    dirty = _dig(prov, "git_dirty", "git.dirty", "dirty")
    return {
        "git_commit": _dig(prov, "git_commit", "git.commit", "commit"),
        "git_dirty": None if dirty is None else bool(dirty),
        "hostname": _dig(prov, "hostname", "host.hostname", "host"),
        "executor": executor if isinstance(executor, str) else (None if executor is None else str(executor)),
    }


def failure_id(rec: Mapping[str, Any]) -> str:
    """Content id of a failure record: sha256 of its canonical JSON, first 16 hex digits."""
    return hashlib.sha256(canonical_json(rec).encode()).hexdigest()[:16]


# orjson reads an integer beyond 64 bits as a float (json: an exact int): text with 19 digits in a row
# (anywhere, strings included: rare, and only slower) is read by json. A translate to digit / other and
# a find: a tenth of what a regex costs on a record.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_19_DIGITS = b"0" * 19


def _orjson_safe(data: bytes) -> bool:
    return _orjson is not None and data.translate(_DIGITS_ONLY).find(_19_DIGITS) < 0


def _json_loads(text: str | bytes) -> Any:
    """``json.loads(text)``, through orjson when it gives the same value (orjson refuses NaN and
    Infinity, which json reads: those texts go to json, as does any text orjson refuses)."""
    data = text.encode() if isinstance(text, str) else text
    if _orjson_safe(data):
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _read_record_file(path: str) -> tuple[dict[str, Any], str | None]:
    """A record file's record (as :func:`harness.record.read_record` reads it, with its errors), and
    its compact JSON with sorted keys for ``record_json`` when that came cheap (None: the caller
    serialises the record with :func:`canonical_json`). Through orjson when installed: it cannot
    hold NaN or infinities (orjson refuses them, so such a file goes the json way and
    :func:`canonical_json` rejects it as before); it may spell numbers (``1e-5``) and non-ASCII
    text differently from json, with the same meaning: ``record_json`` is read back by parsing, never
    compared as bytes."""
    fd = os.open(path, os.O_RDONLY)  # (a third of what open() + read() cost, per small file)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if _orjson_safe(data):
        try:
            rec = _orjson.loads(data)
        except _orjson.JSONDecodeError:
            rec = None
        if type(rec) is dict and rec.get("schema_version") == RECORD_SCHEMA_VERSION and "run_id" in rec:
            try:
                return rec, _orjson.dumps(rec, option=_orjson.OPT_SORT_KEYS).decode()
            except _orjson.JSONEncodeError:  # pragma: no cover - nested deeper than orjson writes
                return rec, None
    return read_record(Path(path)), None  # json: the same record, or read_record's error


class Registry:
    """The run index. Cheap to create; tables are made on first use.

    ``Registry(url=None, results_dir="results")``: see the module docstring for the URL
    precedence. Use as a context manager (or call :meth:`close`) to release connections.
    ``snapshots=False`` answers every query from SQL (no snapshot is read or written).
    """

    def __init__(self, url: str | None = None, results_dir: str | Path = "results", *, snapshots: bool = True):
        self.results_dir = Path(results_dir)
        self.snapshots = snapshots
        self.url = url or os.environ.get(ENV_URL) or f"sqlite:///{self.results_dir / 'registry.sqlite'}"
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"registry URL {parsed.render_as_string(hide_password=True)!r}: only sqlite:/// and "
                "postgresql+psycopg:// are supported"
            )
        kwargs: dict[str, Any] = {"future": True}
        if self.dialect == "sqlite":
            db = parsed.database
            if db and db != ":memory:" and not db.startswith("file:"):
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
        self._ready = False

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({make_url(self.url).render_as_string(hide_password=True)!r})"

    def _ensure(self) -> None:
        """Create tables and the meta row, once; safe when several processes race."""
        if self._ready:
            return
        if self._up_to_date():
            self._ready = True
            return
        last: Exception | None = None
        for attempt in range(8):
            try:
                with self.engine.begin() as conn:
                    if self.dialect == "postgresql":
                        # Serialise concurrent CREATE TABLEs and migrations across processes.
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7236143061)"))
                    found = None
                    if sa.inspect(conn).has_table("meta"):
                        found = conn.execute(sa.select(meta_table.c.value).where(
                            meta_table.c.key == "schema_version")).scalar()
                    if found is not None and int(found) > REGISTRY_SCHEMA_VERSION:
                        raise ConfigError(
                            f"{self!r} has registry schema_version {found}, newer than this harness reads "
                            f"({REGISTRY_SCHEMA_VERSION}): upgrade harness, or index the run records into another "
                            "registry (`--registry`)")
                    if found is not None:
                        for v in range(int(found), REGISTRY_SCHEMA_VERSION):
                            MIGRATIONS[v](conn)  # forward, one version at a time, in this transaction
                        if int(found) != REGISTRY_SCHEMA_VERSION:
                            conn.execute(meta_table.update().where(meta_table.c.key == "schema_version")
                                         .values(value=str(REGISTRY_SCHEMA_VERSION)))
                    metadata.create_all(conn, checkfirst=True)
                    conn.execute(self._insert(meta_table).values(
                        key="schema_version", value=str(REGISTRY_SCHEMA_VERSION)).on_conflict_do_nothing())
                    _ensure_indexes(conn)
                self._ready = True
                return
            except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError) as e:
                # Another process created a table between our check and our CREATE.
                last = e
                time.sleep(0.05 * (attempt + 1))
        raise ConfigError(f"{self!r}: cannot create the registry tables: {last}") from last

    def _up_to_date(self) -> bool:
        """Whether the registry exists at this schema version and index revision (one read, no
        write: opening a registry to query it takes no write lock). ``meta`` gets its rows in the
        transaction that creates or migrates the tables, so they say the tables are there."""
        try:
            with self.engine.connect() as conn:
                got = dict(conn.execute(sa.select(meta_table.c.key, meta_table.c.value).where(
                    meta_table.c.key.in_(["schema_version", "indexes"]))).tuples().all())
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # no meta table yet
            return False
        return got.get("schema_version") == str(REGISTRY_SCHEMA_VERSION) and got.get("indexes") == INDEXES_REVISION

    def _insert(self, table: sa.Table):
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    # -- ingest ---------------------------------------------------------------------------
    def ingest_record(self, rec: Mapping[str, Any], path: str | Path | None = None) -> bool:
        """Index one record; True when it was new, False when already present.

        Finished runs (ok, diverged) go to ``runs`` + ``metrics``; failed ones to
        ``failures``. Raises ConfigError (naming ``path``) for a malformed record.
        """
        where = str(path) if path is not None else f"record {rec.get('run_id', '?') if isinstance(rec, Mapping) else '?'}"
        _check_record(rec, where)
        try:
            rows = self._rows(rec, path)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{where}: malformed run record ({type(e).__name__}: {e}). "
                              "Delete it and rerun that run.") from None
        self._ensure()
        return self._write_batch([(rec["status"], rows)], [])[0]

    def _write_batch(self, items: list[tuple[str, tuple]], files: list[dict[str, Any]]) -> list[bool]:
        """Insert the rows of many records (``(status, rows)``, :meth:`_rows`) in one transaction
        (``ON CONFLICT DO NOTHING``) and mark ``files`` ({path, size, mtime_ns}) as indexed.
        Returns, per item, whether it was new (the first copy of a run_id or failure_id)."""
        run_rows = [rows[0] for status, rows in items if status != "failed"]
        fail_rows = [rows[0] for status, rows in items if status == "failed"]
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    new_runs = self._insert_new(conn, runs_table, run_rows, "run_id")
                    new_fails = self._insert_new(conn, failures_table, fail_rows, "failure_id")
                    flags, metric_rows, changed = [], [], set()
                    for status, (row, mrows) in items:
                        pending = new_fails if status == "failed" else new_runs
                        key = row["failure_id"] if status == "failed" else row["run_id"]
                        new = key in pending
                        pending.discard(key)  # a second copy in the same batch is not new
                        flags.append(new)
                        if new:
                            metric_rows.extend(mrows)
                            if status != "failed":
                                changed.add((row["task"], row["scale"]))
                    if changed and self.dialect == "sqlite":
                        self._bump_revisions(conn, changed)
                    if metric_rows:
                        # in primary-key order: each index page is visited once per batch
                        metric_rows.sort(key=lambda m: (m["run_id"], m["name"]))
                        self._executemany(conn, self._insert(metrics_table).on_conflict_do_nothing(), metric_rows)
                    if files:
                        ins = self._insert(files_table)
                        self._executemany(conn, ins.on_conflict_do_update(
                            index_elements=[files_table.c.path],
                            set_={"size": ins.excluded.size, "mtime_ns": ins.excluded.mtime_ns}), files)
                    return flags
            except sa.exc.OperationalError as e:  # a deadlock between two PostgreSQL writers: retry
                if attempt == 4 or "deadlock" not in str(e).lower():
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _bump_revisions(self, conn, pairs: Iterable[tuple[str, str]]) -> None:
        """Add one to the snapshot revision (``meta``) of each (task, scale) in ``pairs``, in the
        transaction that adds their runs: their snapshots are rebuilt by the next query."""
        # "<n>:<16 random hex digits>": a counter, and a nonce so that two copies of one registry file
        # (sharing a results dir) that each gain a run never hold the same revision
        f = sa.func
        stmt = self._insert(meta_table).on_conflict_do_update(index_elements=[meta_table.c.key], set_={
            "value": f.printf("%d:%s", sa.cast(meta_table.c.value, sa.Integer) + 1, f.lower(f.hex(f.randomblob(8))))})
        conn.execute(stmt, [{"key": _snapshot_rev_key(t, s), "value": f"1:{secrets.token_hex(8)}"}
                            for t, s in sorted(pairs)])

    @staticmethod
    def _driver_sql(conn, stmt, row: Mapping[str, Any]) -> tuple[str, list[str] | None]:
        """``stmt`` (an insert of ``row``'s keys) compiled once for this connection's dialect:
        (SQL text, parameter names in positional order; None for a named paramstyle)."""
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(row))
        return compiled.string, (list(compiled.positiontup) if compiled.positional else None)

    def _executemany(self, conn, stmt, rows: list[dict[str, Any]]) -> None:
        """``conn.execute(stmt, rows)``; on SQLite straight through the driver's executemany, the
        statement compiled once and each row a tuple (SQLAlchemy would build and type-process
        every row's parameters in Python: most of an ingest's time, at 100k records). The values
        are plain str / int / float / bool / None, which sqlite3 binds as SQLAlchemy would."""
        if self.dialect != "sqlite":
            conn.execute(stmt, rows)
            return
        sql, names = self._driver_sql(conn, stmt, rows[0])
        cur = conn.connection.cursor()  # the DBAPI connection of this transaction
        try:
            cur.executemany(sql, [tuple([r[n] for n in names]) for r in rows])
        finally:
            cur.close()

    def _insert_new(self, conn, table: sa.Table, rows: list[dict[str, Any]], key: str) -> set[str]:
        """Insert ``rows`` with ``ON CONFLICT DO NOTHING``; the ``key`` values of those inserted (a
        row already present, or a second copy in ``rows``, is not)."""
        if not rows:
            return set()
        stmt = self._insert(table).on_conflict_do_nothing()
        if self.dialect != "sqlite":
            # RETURNING yields a row only when it was inserted (rowcount is -1 under psycopg 3 for
            # an executemany, so it cannot tell new from existing); batched by SQLAlchemy.
            return set(conn.execute(stmt.returning(table.c[key]), rows).scalars())
        # SQLite: one prepared statement, executed row by row by the driver; its rowcount (changes())
        # says whether that row was inserted. The transaction holds the write lock from the first row.
        sql, names = self._driver_sql(conn, stmt, rows[0])
        new: set[str] = set()
        cur = conn.connection.cursor()
        try:
            for r in rows:
                cur.execute(sql, tuple([r[n] for n in names]))
                if cur.rowcount == 1:
                    new.add(r[key])
        finally:
            cur.close()
        return new

    @staticmethod
    def _rows(rec: Mapping[str, Any], path: str | Path | None,
              record_json: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The table rows of one record: (failure row, []) or (runs row, metric rows).
        ``record_json``: the record as compact sorted-key JSON already (:func:`_read_record_file`);
        then ``config_json`` and ``info_json`` are written the same way (both are only parsed)."""
        now = _now()
        timings = rec.get("timings") or {}
        prov = _provenance_fields(rec)
        path_s = None if path is None else str(path)
        if rec["status"] == "failed":
            err = rec.get("error") or {}
            row = {
                "failure_id": failure_id(rec),
                "run_id": str(rec["run_id"]),
                "task": rec["task"], "variant": rec["variant"], "method": rec.get("method"),
                "benchmark": rec["benchmark"], "seed": int(rec["seed"]), "scale": rec["scale"],
                "error_type": err.get("type"), "message": err.get("message"), "traceback": err.get("traceback"),
                "started_at": timings.get("started_at"), "finished_at": timings.get("finished_at"),
                "git_commit": prov["git_commit"], "record_path": path_s, "ingested_at": now,
            }
            return row, []
        memory = rec.get("memory") or {}
        row = {
            "run_id": str(rec["run_id"]),
            "task": rec["task"], "task_version": None if rec.get("task_version") is None else str(rec["task_version"]),
            "method": rec.get("method"), "variant": rec["variant"], "benchmark": rec["benchmark"],
            "seed": int(rec["seed"]), "scale": rec["scale"], "status": rec["status"],
            "started_at": timings.get("started_at"), "finished_at": timings.get("finished_at"),
            "finished_ts": _ts_or_none(timings.get("finished_at")),
            "wall_s": _float(timings.get("wall_s")), "cpu_s": _float(timings.get("cpu_s")),
            "peak_rss_mb": _float(memory.get("peak_rss_mb")), "peak_gpu_mb": _float(memory.get("peak_gpu_mb")),
            "device": rec.get("device"), **prov,
            "code_hash": rec.get("code_hash"),
            "data_hash": _canonical(rec.get("data_hashes") or {}),  # a frame column: canonical_json's bytes
            "record_path": path_s,
            "ingested_at": now,
        }
        if record_json is not None:
            dumps = _orjson.dumps
            row["config_json"] = dumps(rec.get("config") or {}, option=_orjson.OPT_SORT_KEYS).decode()
            row["info_json"] = dumps(rec.get("info") or {}, option=_orjson.OPT_SORT_KEYS).decode()
            row["record_json"] = record_json
        else:
            row["config_json"] = canonical_json(rec.get("config") or {})
            row["info_json"] = canonical_json(rec.get("info") or {})
            row["record_json"] = canonical_json(rec)
        metric_rows = []
        seen = set()
        for m in rec.get("metrics") or []:
            if m.get("name") in seen:
                continue
            seen.add(m.get("name"))
            value = m.get("value")
            nonfinite = m.get("nonfinite")
            # (an un-encoded NaN/inf never gets here: canonical_json above rejects it)
            if value is None and nonfinite is None:
                nonfinite = "nan"
            metric_rows.append({"run_id": row["run_id"], "name": str(m["name"]),
                                "value": None if value is None else float(value), "nonfinite": nonfinite,
                                "higher_is_better": bool(m.get("higher_is_better", True))})
        return row, metric_rows

    def _seen_files(self, keys: list[str] | None) -> set[tuple[str, int, int]]:
        """``(path, size, mtime_ns)`` of the indexed files (all, or those at ``keys``)."""
        q = sa.select(files_table.c.path, files_table.c.size, files_table.c.mtime_ns)
        with self.engine.connect() as conn:
            if keys is None:  # (plain tuples: hashing 100k Row objects costs a second)
                return set(map(tuple, conn.execute(q).all()))
            out: set[tuple[str, int, int]] = set()
            for i in range(0, len(keys), 500):
                out.update(map(tuple, conn.execute(q.where(files_table.c.path.in_(keys[i:i + 500]))).all()))
        return out

    def _ingest_files(self, files: list[tuple[str, str, int, int]], all_seen: bool = False) -> IngestSummary:
        """Index record files, :data:`INGEST_BATCH` per transaction. ``files``: (path as given,
        absolute path, size, mtime_ns; size -1 when unknown). A file indexed before with the same
        (absolute path, size, mtime) is counted as present without being opened (one set lookup)."""
        self._ensure()
        seen = self._seen_files(None if all_seen else [f[1] for f in files])
        n_new = n_existing = 0
        errors: list[str] = []
        # (status, rows) only: a parsed record is freed as soon as its rows are built (holding a batch
        # of them made the garbage collector walk them all, again and again: +150% parse time)
        items: list[tuple[str, tuple]] = []
        done: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal n_new, n_existing
            if items or done:
                flags = self._write_batch(items, done)
                n_new += sum(flags)
                n_existing += len(flags) - sum(flags)
            items.clear()
            done.clear()

        for path, key, size, mtime_ns in files:
            if size >= 0 and (key, size, mtime_ns) in seen:
                n_existing += 1
                continue
            try:
                rec, blob = _read_record_file(path)
            except FileNotFoundError:
                continue  # replaced or removed while we scanned: nothing to index
            except ConfigError as e:
                errors.append(str(e))
                self._index_unreadable(Path(path), str(e))
                continue
            try:
                _check_record(rec, path)
                try:
                    rows = self._rows(rec, path, blob)
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    raise ConfigError(f"{path}: malformed run record ({type(e).__name__}: {e}). "
                                      "Delete it and rerun that run.") from None
            except ConfigError as e:
                errors.append(str(e))
                self._index_unreadable(Path(path), str(e))
                continue
            items.append((rec["status"], rows))
            if size >= 0:
                done.append({"path": key, "size": size, "mtime_ns": mtime_ns})
            if len(items) >= INGEST_BATCH:
                flush()
        flush()
        return IngestSummary(n_new, n_existing, errors)

    def _index_unreadable(self, path: Path, message: str) -> None:
        """A record under ``runs/`` that cannot be read is its run's failure: index it as one
        (``error_type`` CorruptRecord), so reports list it until a rerun replaces the file."""
        key = _run_key_of_path(path)
        if key is None:
            return
        try:
            blob, mtime = path.read_bytes(), path.stat().st_mtime
        except OSError:
            return
        when = _dt.datetime.fromtimestamp(mtime, _dt.timezone.utc).isoformat(timespec="microseconds")
        row = {"failure_id": hashlib.sha256(str(path).encode() + b"\0" + blob).hexdigest()[:16], "run_id": None,
               **key, "method": key["variant"].split("[", 1)[0], "error_type": "CorruptRecord",
               "message": message, "traceback": None, "started_at": when, "finished_at": when,
               "git_commit": None, "record_path": str(path), "ingested_at": _now()}
        self._ensure()
        with self.engine.begin() as conn:
            conn.execute(self._insert(failures_table).values(**row).on_conflict_do_nothing())

    def unreadable_records(self, results_dir: str | Path | None = None) -> list[str]:
        """One message per record file under ``results_dir`` that cannot be read (nothing is indexed)."""
        errors = []
        for p in _record_files(Path(results_dir) if results_dir is not None else self.results_dir):
            try:
                read_record(p)
            except FileNotFoundError:
                continue
            except ConfigError as e:
                errors.append(str(e))
        return errors

    def rebuild(self) -> tuple[Path | None, IngestSummary]:
        """Rebuild an SQLite registry from the run records (the source of truth): the old file
        (damaged, or from another schema) is moved aside, never deleted. Returns where it went."""
        if self.dialect != "sqlite":
            raise ConfigError(
                f"{self!r}: `harness registry rebuild` recreates SQLite registries only; a shared PostgreSQL "
                "registry holds other machines' runs, so ingest into it (`harness registry ingest`) instead"
            )
        db = make_url(self.url).database
        if not db or db == ":memory:" or db.startswith("file:"):
            raise ConfigError(f"{self!r}: not a registry file")
        self.close()
        path = Path(db).expanduser()
        moved = None
        root = self._snapshot_root()
        if root is not None:  # the old file's snapshots (they would be rebuilt anyway: other tokens)
            import shutil

            shutil.rmtree(root, ignore_errors=True)
        if path.exists():
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            moved = path.with_name(f"{path.name}.damaged-{stamp}")
            os.replace(path, moved)
            for suffix in ("-wal", "-shm", "-journal"):
                side = path.with_name(path.name + suffix)
                if side.exists():
                    os.replace(side, moved.with_name(moved.name + suffix))
        self._ready = False
        return moved, self.ingest_dir()

    def ingest_paths(self, paths: Iterable[str | Path]) -> tuple[int, int]:
        """Ingest record files; returns ``(n_new, n_existing)``.

        Every readable file is ingested; if any could not be, an :class:`IngestError`
        (a ConfigError naming each bad file, with the counts attached) is raised at the end.
        """
        files = []
        for p in paths:
            p = Path(p)
            try:
                st = p.stat()
                size, mtime_ns = st.st_size, st.st_mtime_ns
            except OSError:
                size = mtime_ns = -1
            files.append((str(p), os.path.abspath(p), size, mtime_ns))
        s = self._ingest_files(files)
        if s.errors:
            raise IngestError(s.errors, s.n_new, s.n_existing)
        return s.n_new, s.n_existing

    def ingest_dir(self, results_dir: str | Path | None = None) -> IngestSummary:
        """Ingest every record under ``results_dir`` (default: this registry's).

        Scans ``runs/**/*.json``, ``history/**/*.json`` (records superseded by a rerun)
        and ``failures/**/*.json``, skipping hidden files (a writer's temporary file).
        Returns ``IngestSummary(n_new, n_existing, errors)``: a corrupt file does not
        stop the others; its message (naming the file) is in ``errors`` and the caller
        decides how loudly to report it.
        """
        root = Path(results_dir) if results_dir is not None else self.results_dir
        return self._ingest_files(_record_files_stat(root), all_seen=True)

    # -- merge ----------------------------------------------------------------------------
    def _stored_metrics(self, conn, run_id: str) -> dict[str, Any] | None:
        got = conn.execute(sa.select(runs_table.c.status).where(runs_table.c.run_id == run_id)).first()
        if got is None:
            return None
        ms = conn.execute(sa.select(metrics_table).where(metrics_table.c.run_id == run_id)).all()
        return {"status": got.status, "metrics": {m.name: (m.value if m.value is not None else m.nonfinite)
                                                  for m in ms}}

    @staticmethod
    def _incoming_metrics(rec: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for m in rec.get("metrics") or []:
            if m.get("name") in out:
                continue
            v = m.get("value")
            out[str(m["name"])] = float(v) if v is not None else (m.get("nonfinite") or "nan")
        return {"status": rec["status"], "metrics": out}

    def merge_record(self, rec: Mapping[str, Any], source: str, path: str | Path | None = None) -> str:
        """Merge one record from another machine: ``"new"``, ``"existing"`` (same run_id, same
        status and metrics: nothing to do) or ``"conflict"`` (same run_id, other metrics or status:
        the registry's copy stays, the incoming record is kept in ``conflicts``)."""
        where = str(path) if path is not None else f"{source}: record {rec.get('run_id', '?')}"
        _check_record(rec, where)
        if rec["status"] == "failed":
            return "new" if self.ingest_record(rec, path) else "existing"
        if self.ingest_record(rec, path):
            return "new"
        incoming = self._incoming_metrics(rec)
        with self.engine.begin() as conn:
            kept = self._stored_metrics(conn, str(rec["run_id"]))
            if kept is None or kept == incoming:
                return "existing"
            blob = canonical_json(rec)
            row = {"conflict_id": hashlib.sha256((str(rec["run_id"]) + "\0" + blob).encode()).hexdigest()[:16],
                   "run_id": str(rec["run_id"]), "source": source, "kept_metrics_json": canonical_json(kept),
                   "incoming_metrics_json": canonical_json(incoming), "incoming_record_json": blob,
                   "detected_at": _now()}
            conn.execute(self._insert(conflicts_table).values(**row).on_conflict_do_nothing())
        return "conflict"

    def merge(self, sources: Iterable[str | Path]) -> "MergeSummary":
        """Merge other registries or record folders (from other machines) into this one.

        A source is a record folder (holding ``runs/``, ``history/`` or ``failures/``, as
        ``results/`` does), an SQLite registry file, or a registry URL. Every run of a source
        is added, superseded ones included (history is kept: ``current_only`` queries still show
        the newest per key). Idempotent: merging the same source twice adds nothing. A run_id
        already here with other metrics or status is a conflict: the copy here stays, the
        incoming record is stored in ``conflicts`` and reported (:meth:`conflicts`).
        """
        counts = {"new": 0, "existing": 0, "conflict": 0}
        errors: list[str] = []
        conflict_ids: list[str] = []
        self._ensure()
        for src in sources:
            label = str(src)
            for rec, path in _source_records(src, errors):
                try:
                    what = self.merge_record(rec, label, path)
                except ConfigError as e:
                    errors.append(str(e))
                    continue
                counts[what] += 1
                if what == "conflict":
                    conflict_ids.append(str(rec["run_id"]))
        return MergeSummary(counts["new"], counts["existing"], conflict_ids, errors)

    def conflicts(self):
        """Merge conflicts, one row per incoming record that disagreed with the registry's copy:
        run key, source, ``kept`` and ``incoming`` ({status, metrics}), detected_at."""
        self._ensure()
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(sa.select(conflicts_table)
                                                           .order_by(conflicts_table.c.detected_at))]
        out = []
        for r in rows:
            rec = json.loads(r["incoming_record_json"])
            out.append({**{k: rec.get(k) for k in RUN_KEY}, "run_id": r["run_id"], "source": r["source"],
                        "kept": json.loads(r["kept_metrics_json"]), "incoming": json.loads(r["incoming_metrics_json"]),
                        "detected_at": r["detected_at"]})
        return _frame(out, CONFLICTS_COLUMNS)

    # -- queries --------------------------------------------------------------------------
    def _select_runs(self, task: str | None, scale: str | None, extra=None) -> list[dict[str, Any]]:
        self._ensure()
        cols = [runs_table.c[c] for c in _RUN_SCALARS] + [runs_table.c.config_json, runs_table.c.info_json]
        q = sa.select(*cols)
        if task is not None:
            q = q.where(runs_table.c.task == task)
        if scale is not None:
            q = q.where(runs_table.c.scale == scale)
        if extra is not None:
            q = q.where(extra)
        q = q.order_by(runs_table.c.run_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    @staticmethod
    def _latest_per_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        best: dict[tuple, dict[str, Any]] = {}
        for r in rows:
            k = tuple(r[c] for c in RUN_KEY)
            rank = (_time_key(r.get("finished_at")), _time_key(r.get("ingested_at")), r["run_id"])
            if k not in best or rank > best[k][0]:
                best[k] = (rank, r)
        return sorted((v[1] for v in best.values()), key=lambda r: r["run_id"])

    def _runs_query(self, task, scale, status, current_only, with_json: bool = True, limit: int | None = None):
        """The SELECT of :meth:`runs`, sorted by key: the latest run per key chosen in SQL (a window
        over the run key ordered by finished_ts, ingested_at, run_id, as :meth:`_latest_per_key`
        does) before the status filter (a newer diverged rerun hides an older ok one).

        The choice, the status filter, the order and ``limit`` run on :data:`ix_runs_latest` alone
        (every column they need is in it, in the window's order: no sort); only the chosen runs' rows
        are then read (by run_id): a query reads the rows it returns, not their superseded ones."""
        t = runs_table
        cols = [t.c[c] for c in _RUN_SCALARS]
        if with_json:
            cols += [t.c.config_json, t.c.info_json]
        conds = []
        if task is not None:
            conds.append(t.c.task == task)
        if scale is not None:
            conds.append(t.c.scale == scale)
        wanted = None if status is None else ([status] if isinstance(status, str) else list(status))
        if not current_only:
            q = sa.select(*cols).where(*conds)
            if wanted is not None:
                q = q.where(t.c.status.in_(wanted))
            q = q.order_by(*[t.c[c] for c in RUN_KEY], t.c.finished_at, t.c.run_id)
            return q if limit is None else q.limit(limit)
        key = [t.c[c] for c in RUN_KEY]
        rank = sa.func.row_number().over(
            partition_by=key,
            order_by=[t.c.finished_ts.desc().nulls_last(), t.c.ingested_at.desc(), t.c.run_id.desc()]).label("rank_in_key")
        # (SQLite's window costs per column carried: only what the filter and the order need)
        ranked = sa.select(t.c.run_id, *key, *([t.c.status] if wanted is not None else []), rank).where(
            *conds).subquery("ranked")
        pick = sa.select(ranked.c.run_id, *[ranked.c[c] for c in RUN_KEY]).where(ranked.c.rank_in_key == 1)
        if wanted is not None:
            pick = pick.where(ranked.c.status.in_(wanted))
        if limit is not None:
            pick = pick.order_by(*[ranked.c[c] for c in RUN_KEY]).limit(limit)
        chosen = pick.subquery("chosen")
        # one run per key: the key alone orders them (as key, finished_at, run_id did)
        return (sa.select(*cols).select_from(chosen.join(t, t.c.run_id == chosen.c.run_id))
                .order_by(*[chosen.c[c] for c in RUN_KEY]))

    def _runs_rows(self, task, scale, status, current_only, with_json: bool = False,
                   limit: int | None = None) -> list[dict[str, Any]]:
        self._ensure()
        with self.engine.connect() as conn:
            res = conn.execute(self._runs_query(task, scale, status, current_only, with_json, limit))
            keys = list(res.keys())
            return [dict(zip(keys, r)) for r in res]

    def runs(self, task: str | None = None, scale: str | None = None, status: str | Iterable[str] | None = None,
             current_only: bool = True, limit: int | None = None):
        """One row per run: the scalar columns of ``runs`` plus ``config`` and ``info`` (dicts).

        ``current_only`` keeps, per (task, scale, benchmark, variant, seed), the run that
        finished last; older ones (other commits) stay queryable with ``current_only=False``.
        ``status`` filters after that choice. Sorted by task, scale, benchmark, variant, seed;
        ``limit`` keeps the first rows of that order.

        Current runs come from the (task, scale) snapshots (module docstring), filtered and cut there
        (``config`` and ``info`` are parsed for the rows returned only); the rest from SQL (a window
        and the ``limit`` on :data:`ix_runs_latest`). Both give the same frame.
        """
        wanted = None if status is None else ([status] if isinstance(status, str) else list(status))
        if current_only and (limit is None or limit >= 0):
            df = self._current_frame("runs", task, scale, wanted, limit)
            if df is not None:
                return df
        return self._runs_sql(task, scale, wanted, current_only, limit)

    def _runs_sql(self, task, scale, status, current_only: bool, limit: int | None, raw_json: bool = False):
        """:meth:`runs` from SQL; ``raw_json``: with ``config_json`` and ``info_json`` (text) in
        place of ``config`` and ``info`` (a snapshot's columns)."""
        self._ensure()
        with self.engine.connect() as conn:
            rows = conn.execute(self._runs_query(task, scale, status, current_only, True, limit)).all()
        n = len(_RUN_SCALARS)
        cols = list(zip(*rows)) if rows else [() for _ in range(n + 2)]
        if raw_json:
            return _frame_cols(cols[:n], _RUN_SCALARS, {"config_json": cols[n], "info_json": cols[n + 1]})
        # config and info of every row in two parses, not two per row
        configs = _json_loads("[" + ",".join([c or "{}" for c in cols[n]]) + "]")
        infos = _json_loads("[" + ",".join([c or "{}" for c in cols[n + 1]]) + "]")
        return _frame_cols(cols[:n], _RUN_SCALARS, {"config": configs, "info": infos})

    # -- snapshots --------------------------------------------------------------------------
    def _snapshot_root(self) -> Path | None:
        """The snapshots' folder; None where there are none: PostgreSQL (a team registry is written
        from many machines, each with its own results dir), an in-memory SQLite, ``snapshots=False``,
        or no pyarrow."""
        if not self.snapshots or self.dialect != "sqlite":
            return None
        db = make_url(self.url).database
        if not db or db == ":memory:" or db.startswith("file:"):
            return None
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:  # pragma: no cover - pyarrow comes with pandas 3 / datasets
            return None
        return self.results_dir / SNAPSHOT_DIR

    def _snapshot_path(self, root: Path, kind: str, task: str, scale: str) -> Path | None:
        """``<root>/<scale>/<task>.<kind>.parquet``; None (no snapshot: SQL) unless the scale is a
        known one and the task name a plain path component (as run record paths are checked)."""
        if scale not in SCALES or not isinstance(task, str) or not NAME_RE.match(task):
            return None
        try:
            return inside(root, root / scale / f"{task}.{kind}.parquet")
        except ConfigError:  # pragma: no cover - NAME_RE and SCALES allow no separator or ".."
            return None

    def _snapshot_tokens(self, task: str | None, scale: str | None) -> list[tuple[str, str, list[Any]]]:
        """``(task, scale, token)`` of every (task, scale) with runs (among those asked), in the
        frames' order. The token, read in one statement (one state of the database) on the covering
        :data:`ix_runs_latest`: the revision in ``meta``, the number of runs (superseded ones
        included), and the registry's first run (``ingested_at`` and run_id: which registry file)."""
        first = "(SELECT ingested_at || ' ' || run_id FROM runs ORDER BY rowid LIMIT 1)"
        params: dict[str, Any] = {"prefix": SNAPSHOT_REV_PREFIX}
        if task is not None and scale is not None:  # one pair: no GROUP BY (a third of the time)
            params.update(task=task, scale=scale, key=_snapshot_rev_key(task, scale))
            sql = (f"SELECT :task, :scale, count(*), (SELECT value FROM meta WHERE key = :key), {first} "
                   "FROM runs WHERE task = :task AND scale = :scale")
        else:
            conds = []
            if task is not None:
                conds.append("task = :task")
                params["task"] = task
            if scale is not None:  # (unary +: not the index on scale alone, then every row's task)
                conds.append("+scale = :scale")
                params["scale"] = scale
            where = f" WHERE {' AND '.join(conds)}" if conds else ""
            rev = "(SELECT value FROM meta WHERE key = :prefix || scale || '/' || task)"
            sql = f"SELECT task, scale, count(*), {rev}, {first} FROM runs{where} GROUP BY task, scale"
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(sql), params).all()
        return sorted((r[0], r[1], [r[3] or "0", int(r[2]), r[4]]) for r in rows if r[2])

    def _current_frame(self, kind: str, task: str | None, scale: str | None, status: list[str] | None = None,
                       limit: int | None = None):
        """The current ``kind`` ("runs" or "metrics") frame of (task, scale), each ``None`` meaning
        all, from each pair's snapshot (built or rebuilt when missing, stale or unreadable), joined in
        the frames' order; ``status`` and ``limit`` as :meth:`runs`. None when snapshots cannot serve
        the query (:meth:`_snapshot_root`, or no runs at all: the caller's SQL gives the empty frame)."""
        root = self._snapshot_root()
        if root is None:
            return None
        self._ensure()
        pairs = self._snapshot_tokens(task, scale)
        if not pairs:
            return None
        frames = []
        left = limit
        for t, s, token in pairs:
            df = self._pair_frame(root, kind, t, s, token, status, left)
            frames.append(df)
            if left is not None:
                left -= len(df)
                if left <= 0:
                    break
        if len(frames) == 1:
            return frames[0]
        import pandas as pd

        full = [f for f in frames if len(f)]
        return pd.concat(full, ignore_index=True) if len(full) > 1 else (full or frames)[0].reset_index(drop=True)

    def _pair_frame(self, root: Path, kind: str, task: str, scale: str, token: list[Any],
                    status: list[str] | None, limit: int | None):
        """One (task, scale)'s current ``kind`` frame: from its snapshot when the file was built at
        ``token``; else from SQL, saving the snapshot for the next query (the frame returned is then
        read from the table just written, as the next query will read it)."""
        import pyarrow as pa

        path = self._snapshot_path(root, kind, task, scale)
        if path is None:  # names that are no path component: this pair is always answered from SQL
            if kind == "runs":
                return self._runs_sql(task, scale, status, True, limit)
            return self._metrics_for(self._runs_rows(task, scale, None, True))
        stamp = {"format": SNAPSHOT_FORMAT, "kind": kind, "task": task, "scale": scale, "token": token,
                 "columns": _SNAPSHOT_COLUMNS[kind]}
        table = _read_snapshot(path, kind, stamp, limit if status is None else None)
        if table is not None:
            try:
                return _snapshot_frame(table, kind, status, limit)
            except Exception:  # noqa: BLE001 - a file that reads but does not decode: rebuilt below
                pass
        if kind == "runs":
            full = self._runs_sql(task, scale, None, True, None, raw_json=True)
        else:
            full = self._metrics_for(self._runs_rows(task, scale, None, True))
        try:
            table = _snapshot_table(full, kind)
        except (pa.ArrowException, TypeError, ValueError):  # a value of another type than its column's: no cache
            return self._runs_sql(task, scale, status, True, limit) if kind == "runs" else full
        try:
            self._save_snapshot(path, table, stamp)
        except OSError:  # a read-only results dir: answered from SQL, every time
            pass
        return _snapshot_frame(table, kind, status, limit)

    def _save_snapshot(self, path: Path, table, stamp: dict[str, Any]) -> None:
        """:func:`_write_snapshot` (a method, so tests can count the builds)."""
        _write_snapshot(path, table, stamp)

    def _metrics_for(self, rows: list[dict[str, Any]]):
        by_id = {r["run_id"]: r for r in rows}
        ids = list(by_id)
        own = ("name", "value", "nonfinite", "higher_is_better")  # the metric row's; the rest are its run's
        cols: dict[str, list[Any]] = {c: [] for c in METRICS_COLUMNS}
        from_run = [(cols[c], c) for c in METRICS_COLUMNS if c not in own and c != "run_id"]
        m = metrics_table.c
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                q = sa.select(m.run_id, m.name, m.value, m.nonfinite, m.higher_is_better).where(
                    m.run_id.in_(ids[i:i + 500]))
                got = conn.execute(q).all()
                if not got:
                    continue
                # Column lists, not a dict per (run, metric): ~70k rows at 10k runs.
                run_ids, names, values, nonfinite, hib = zip(*got)
                for c, v in (("run_id", run_ids), ("name", names), ("value", values), ("nonfinite", nonfinite),
                             ("higher_is_better", hib)):
                    cols[c].extend(v)
                runs = [by_id[r] for r in run_ids]
                for out, c in from_run:
                    out.extend([r.get(c) for r in runs])
        return _sort_metrics(_frame_cols([cols[c] for c in METRICS_COLUMNS], METRICS_COLUMNS))

    def metric_table(self, run_ids: Iterable[str]):
        """Wide frame of the given runs' metrics: index ``run_id``, one column per metric name
        (NaN when non-finite or absent)."""
        import pandas as pd

        self._ensure()
        ids = list(dict.fromkeys(str(r) for r in run_ids))
        out: list[tuple] = []
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                q = sa.select(metrics_table.c.run_id, metrics_table.c.name, metrics_table.c.value).where(
                    metrics_table.c.run_id.in_(ids[i:i + 500]))
                out.extend(tuple(r) for r in conn.execute(q))
        long = pd.DataFrame(out, columns=["run_id", "name", "value"]).astype({"value": "float64"})
        if long.empty:
            return pd.DataFrame(index=pd.Index([], name="run_id"))
        return long.pivot_table(index="run_id", columns="name", values="value", aggfunc="first", dropna=False)

    def metrics(self, task: str | None = None, scale: str | None = None, current_only: bool = True):
        """Long frame, one row per (run, metric).

        Columns: run_id, task, method, variant, benchmark, seed, scale, status, name,
        value (NaN when non-finite), nonfinite ("nan"/"inf"/"-inf" or None),
        higher_is_better, git_commit, finished_at. Runs of every status but ``failed``.
        Current runs' metrics come from the (task, scale) snapshots, as :meth:`runs`.
        """
        current = self._current_frame("metrics", task, scale)
        if current is None:
            return self._metrics_for(self._runs_rows(task, scale, None, current_only))
        if current_only:
            return current
        # History: the current runs' metrics from the snapshots, SQL only for the superseded runs
        # (a tenth of a registry, typically), in the order _metrics_for gives the whole.
        import pandas as pd

        older = self._metrics_for(self._rows_by_id(self._run_ids(task, scale) - set(current["run_id"])))
        if not len(older):
            return current
        return _sort_metrics(pd.concat([current, older], ignore_index=True))

    def by_commit(self, commit_prefix: str, task: str | None = None, scale: str | None = None):
        """The metrics frame (as :meth:`metrics`) of the runs recorded at one commit.

        ``commit_prefix`` is a full SHA or a unique prefix of one (resolve refs such as
        ``HEAD~5`` with git first). Within the commit, the latest run per key is kept.
        Raises ConfigError when the prefix matches several commits.
        """
        prefix = str(commit_prefix).strip().lower()
        if not prefix:
            raise ConfigError("by_commit needs a commit SHA or prefix")
        cond = runs_table.c.git_commit.like(prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",
                                            escape="\\")
        rows = self._select_runs(task, scale, cond)
        commits = sorted({r["git_commit"] for r in rows})
        if len(commits) > 1:
            raise ConfigError(f"commit prefix {commit_prefix!r} is ambiguous: matches {', '.join(commits)}")
        return self._metrics_for(self._latest_per_key(rows))

    def failures(self, task: str | None = None, scale: str | None = None, unresolved_only: bool = True):
        """Failure records (columns of ``failures``), newest first.

        ``unresolved_only`` hides a failure when an ok or diverged run of the same
        (task, scale, benchmark, variant, seed) finished after it (the retry worked).
        """
        self._ensure()
        q = sa.select(failures_table)
        if task is not None:
            q = q.where(failures_table.c.task == task)
        if scale is not None:
            q = q.where(failures_table.c.scale == scale)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        if unresolved_only and rows:
            latest_ok: dict[tuple, float] = {}
            for r in self._finish_times({f["variant"] for f in rows}, task, scale):
                k = tuple(r[:-1])
                latest_ok[k] = max(latest_ok.get(k, -math.inf), _time_key(r[-1]))
            def resolved(f: dict[str, Any]) -> bool:
                k = tuple(f[c] for c in RUN_KEY)
                when = _time_key(f.get("finished_at") or f.get("started_at"))
                return k in latest_ok and latest_ok[k] > when
            rows = [f for f in rows if not resolved(f)]
        rows.sort(key=lambda f: (_time_key(f.get("finished_at") or f.get("started_at")), f["failure_id"]),
                  reverse=True)
        return _frame(rows, FAILURES_COLUMNS)

    def _run_ids(self, task: str | None, scale: str | None) -> set[str]:
        """Every run_id of (task, scale), superseded runs included (one column, no row dicts)."""
        q = sa.select(runs_table.c.run_id)
        if task is not None:
            q = q.where(runs_table.c.task == task)
        if scale is not None:
            q = q.where(runs_table.c.scale == scale)
        with self.engine.connect() as conn:
            return set(conn.execute(q).scalars())

    def _rows_by_id(self, run_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The scalar columns of the given runs, 500 run_ids per query, in run_id order."""
        ids = sorted(run_ids)
        cols = [runs_table.c[c] for c in _RUN_SCALARS]
        out: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                res = conn.execute(sa.select(*cols).where(runs_table.c.run_id.in_(ids[i:i + 500])))
                keys = list(res.keys())
                out.extend(dict(zip(keys, r)) for r in res)
        return out

    def _finish_times(self, variants: set[str], task: str | None, scale: str | None) -> list[tuple]:
        """(*RUN_KEY, finished_at) of every run of ``variants`` (in ``task`` and ``scale`` when
        given): the runs a failure could have been retried by, not every run's row."""
        cols = [runs_table.c[c] for c in RUN_KEY] + [runs_table.c.finished_at]
        names = sorted(variants)
        out: list[tuple] = []
        with self.engine.connect() as conn:
            for i in range(0, len(names), 500):
                q = sa.select(*cols).where(runs_table.c.variant.in_(names[i:i + 500]))
                if task is not None:
                    q = q.where(runs_table.c.task == task)
                if scale is not None:
                    q = q.where(runs_table.c.scale == scale)
                out.extend(tuple(r) for r in conn.execute(q))
        return out

    def record(self, run_id: str) -> dict[str, Any]:
        """The full record of a run (a failed run's latest failure record if it never finished).

        ``run_id`` may be a unique prefix. Raises KeyError when nothing (or more than one
        run) matches.
        """
        self._ensure()
        rid = str(run_id).strip()
        with self.engine.connect() as conn:
            got = conn.execute(sa.select(runs_table.c.run_id, runs_table.c.record_json)
                               .where(runs_table.c.run_id == rid)).first()
            if got is None and rid:
                like = rid.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                many = conn.execute(sa.select(runs_table.c.run_id, runs_table.c.record_json)
                                    .where(runs_table.c.run_id.like(like, escape="\\")).limit(2)).all()
                if len(many) > 1:
                    raise KeyError(f"run_id prefix {rid!r} is ambiguous in {self!r}; give more characters")
                got = many[0] if many else None
            if got is not None:
                return json.loads(got.record_json)
            fails = conn.execute(sa.select(failures_table.c.record_path, failures_table.c.finished_at)
                                 .where(failures_table.c.run_id == rid)).all()
        for f in sorted(fails, key=lambda f: _time_key(f.finished_at), reverse=True):
            if f.record_path and Path(f.record_path).is_file():
                return read_record(Path(f.record_path))
        raise KeyError(
            f"no run {rid!r} in {self!r}. List runs with `harness registry ls`; if its record "
            "file exists, index it with `harness registry ingest`."
        )

    def curves(self, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``{run_id: curves}`` from the stored records (``{}`` for a run without curves).

        Raises KeyError naming the run_ids that are not in the registry.
        """
        self._ensure()
        ids = list(dict.fromkeys(str(r) for r in run_ids))
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                q = sa.select(runs_table.c.run_id, runs_table.c.record_json).where(
                    runs_table.c.run_id.in_(ids[i:i + 500]))
                for r in conn.execute(q):
                    out[r.run_id] = json.loads(r.record_json).get("curves") or {}
        missing = [r for r in ids if r not in out]
        if missing:
            raise KeyError(f"runs not in {self!r}: {', '.join(missing)}")
        return {r: out[r] for r in ids}

    def export(self, path: str | Path, fmt: str | None = None, table: str = "runs",
               task: str | None = None, scale: str | None = None, current_only: bool = True) -> Path:
        """Write a table to ``path`` as csv, json (records) or parquet; returns the path.

        ``fmt`` defaults to the file suffix. ``table``: ``runs`` (with one ``metric.<name>``
        column per metric; config/info as JSON text), ``metrics`` (the long frame) or
        ``failures`` (unresolved and resolved).
        """
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".")).lower()
        if fmt not in ("csv", "json", "parquet"):
            raise ConfigError(f"export format {fmt!r}: use csv, json or parquet")
        if table == "runs":
            df = self.runs(task, scale, current_only=current_only)
            long = self.metrics(task, scale, current_only=current_only)
            if len(long):
                wide = long.pivot(index="run_id", columns="name", values="value")
                wide.columns = [f"metric.{c}" for c in wide.columns]
                df = df.merge(wide, left_on="run_id", right_index=True, how="left")
            for c in ("config", "info"):
                df[c] = df[c].map(canonical_json).astype(object)
        elif table == "metrics":
            df = self.metrics(task, scale, current_only=current_only)
        elif table == "failures":
            df = self.failures(task, scale, unresolved_only=False)
        else:
            raise ConfigError(f"export table {table!r}: use runs, metrics or failures")
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            df.to_csv(path, index=False)
        elif fmt == "json":
            df.to_json(path, orient="records", indent=1)
        else:
            try:
                import pyarrow  # noqa: F401
            except ImportError:  # pragma: no cover - pyarrow comes with `datasets`
                raise ConfigError("parquet export needs pyarrow: pip install pyarrow") from None
            df.to_parquet(path, index=False)
        return path


def _source_records(src: str | Path, errors: list[str]):
    """``(record, path)`` pairs of a merge source: a record folder, an SQLite file or a registry URL."""
    text = str(src)
    p = Path(text).expanduser()
    if "://" not in text and p.is_dir():
        files = _record_files(p)
        if not files:
            errors.append(f"{text}: no run records (runs/, history/ or failures/) in this folder")
        for f in files:
            try:
                yield read_record(f), f
            except FileNotFoundError:
                continue
            except ConfigError as e:
                errors.append(str(e))
        return
    if "://" not in text:
        if not p.is_file():
            errors.append(f"{text}: neither a record folder, a registry file nor a registry URL")
            return
        text = f"sqlite:///{p.resolve()}"
    other = Registry(url=text)
    try:
        other._ensure()
        with other.engine.connect() as conn:
            for r in conn.execute(sa.select(runs_table.c.record_json, runs_table.c.record_path)
                                  .order_by(runs_table.c.run_id)):
                yield json.loads(r.record_json), r.record_path
            fails = [dict(r._mapping) for r in conn.execute(sa.select(failures_table))]
    finally:
        other.close()
    for f in fails:  # failure records may live on the other machine only: rebuild them from the row
        if f["record_path"] and Path(f["record_path"]).is_file():
            try:
                yield read_record(Path(f["record_path"])), f["record_path"]
                continue
            except ConfigError:
                pass
        if f["run_id"] is None:
            continue  # an unreadable record of the other machine: nothing to merge
        yield ({"schema_version": RECORD_SCHEMA_VERSION, "run_id": f["run_id"], "task": f["task"],
                "variant": f["variant"], "method": f["method"], "benchmark": f["benchmark"], "seed": f["seed"],
                "scale": f["scale"], "status": "failed",
                "error": {"type": f["error_type"], "message": f["message"], "traceback": f["traceback"]},
                "timings": {"started_at": f["started_at"], "finished_at": f["finished_at"]},
                "provenance": {"git_commit": f["git_commit"]}}, f["record_path"])


def _record_files(root: Path) -> list[Path]:
    """Record files under ``runs/``, ``history/`` and ``failures/``, skipping hidden files (a
    writer's temporary file)."""
    files: list[Path] = []
    for sub in ("runs", "history", "failures"):
        base = Path(root) / sub
        if base.is_dir():
            files.extend(sorted(p for p in base.rglob("*.json") if p.is_file() and not p.name.startswith(".")))
    return files


def _record_files_stat(root: Path) -> list[tuple[str, str, int, int]]:
    """``(path, absolute path, size, mtime_ns)`` of the files :func:`_record_files` lists, in the
    same order and spelt as ``str()`` of those paths, from one directory walk (one stat per file,
    no Path object per file)."""
    base = str(Path(root))  # as Path spells it: no trailing or doubled separators, no "./"
    prefix = "" if base == "." else os.path.join(base, "")
    abs_prefix = os.path.join(os.path.abspath(base), "")  # + the part below base = os.path.abspath(path)
    cut = len(prefix)
    out: list[tuple[str, str, int, int]] = []

    def walk(d: str) -> None:
        # Each folder's entries by name, a subfolder's files where its name sorts: the order of
        # sorted(Path), which compares paths part by part.
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=_ENTRY_NAME)
        except (FileNotFoundError, NotADirectoryError):
            return
        for e in entries:
            name = e.name
            if e.is_dir():
                walk(e.path)
            elif name.endswith(".json") and not name.startswith(".") and e.is_file():
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                path = e.path
                out.append((path, abs_prefix + path[cut:], st.st_size, st.st_mtime_ns))

    for sub in ("runs", "history", "failures"):
        walk(prefix + sub)
    return out


_ENTRY_NAME = operator.attrgetter("name")


def _run_key_of_path(path: Path) -> dict[str, Any] | None:
    """(task, scale, benchmark, variant, seed) of ``.../runs/<scale>/<task>/<benchmark>/<variant>/seed<k>.json``."""
    parts = Path(path).parts
    if len(parts) < 6 or parts[-6] != "runs" or not parts[-1].startswith("seed") or not parts[-1].endswith(".json"):
        return None
    scale, task, benchmark, vpath, fname = parts[-5:]
    try:
        seed = int(fname[len("seed"):-len(".json")])
    except ValueError:
        return None
    name, *pairs = vpath.split("__")
    variant = f"{name}[{','.join(pairs)}]" if pairs else name
    return {"task": task, "scale": scale, "benchmark": benchmark, "variant": variant, "seed": seed}


def registry_error(exc: BaseException, url: str | None, results_dir: Path) -> ConfigError | None:
    """One clear message for a database error of the registry (damaged file, wrong URL); None when
    ``exc`` is not one. The run records are the source of truth, so the fix is a rebuild."""
    import sqlite3

    if not isinstance(exc, (sa.exc.DBAPIError, sa.exc.DatabaseError, sqlite3.DatabaseError)):
        return None
    where = url or os.environ.get(ENV_URL) or f"sqlite:///{Path(results_dir) / 'registry.sqlite'}"
    detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
    damaged = any(s in detail.lower() for s in ("not a database", "malformed", "corrupt", "disk i/o error"))
    if damaged:
        return ConfigError(
            f"the registry {where} is damaged ({detail}). The run records under {results_dir}/ are the source "
            "of truth and the registry is only their index: rebuild it with `harness registry rebuild` "
            "(moves the damaged file aside, then indexes every record)"
        )
    return ConfigError(f"the registry {where} cannot be used ({detail}): check HARNESS_REGISTRY_URL / --registry, "
                       "or rebuild a local one from the run records with `harness registry rebuild`")


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        for attempt in range(50):
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                break
            except Exception as e:  # noqa: BLE001 - sqlite3.OperationalError: database is locked
                if "locked" not in str(e) or attempt == 49:
                    raise
                time.sleep(0.1)
        # With WAL, a power cut may lose the last committed batches, never consistency (and their files are
        # not marked indexed with them, so the next ingest reads them again).
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA cache_size=-65536")     # 64 MiB (default 2): a 100k-run registry's indexes fit
        cur.execute("PRAGMA mmap_size=268435456")   # reads without a copy per page
        cur.execute("PRAGMA temp_store=MEMORY")     # sorts of the latest-per-key queries
    finally:
        cur.close()


class Frames(NamedTuple):
    """What :func:`load` returns: pandas DataFrames of one registry."""

    runs: Any
    """One row per run (:meth:`Registry.runs`), with one ``metric.<name>`` column per metric."""
    metrics: Any
    """One row per (run, metric) (:meth:`Registry.metrics`)."""
    failures: Any
    """Failure records, resolved ones included (:meth:`Registry.failures`)."""
    conflicts: Any
    """Merge conflicts (:meth:`Registry.conflicts`)."""


def load(url: str | None = None, results_dir: str | Path = "results", task: str | None = None,
         scale: str | None = None, current_only: bool = True, ingest: bool = False) -> Frames:
    """The registry as pandas frames, for notebooks::

        from harness.registry import load
        f = load(scale="small")          # f.runs, f.metrics, f.failures, f.conflicts
        f.metrics.groupby(["task", "benchmark", "variant", "name"])["value"].mean()

    ``url``/``results_dir`` as :class:`Registry`; ``ingest`` indexes ``results_dir``'s records
    first; ``current_only=False`` includes runs superseded at later commits (history).
    """
    with Registry(url=url, results_dir=results_dir) as reg:
        if ingest:
            reg.ingest_dir()
        runs = reg.runs(task, scale, current_only=current_only)
        metrics = reg.metrics(task, scale, current_only=current_only)
        if len(metrics) and len(runs):
            wide = metrics.pivot_table(index="run_id", columns="name", values="value", aggfunc="first")
            wide.columns = [f"metric.{c}" for c in wide.columns]
            runs = runs.merge(wide, left_on="run_id", right_index=True, how="left")
        failures = reg.failures(task, scale, unresolved_only=False)
        conflicts = reg.conflicts()
        if task is not None and len(conflicts):
            conflicts = conflicts[conflicts["task"] == task].reset_index(drop=True)
        return Frames(runs, metrics, failures, conflicts)
