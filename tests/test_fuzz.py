"""Property-based fuzzing (hypothesis) of the CLI's names and values and of task.yaml.

Properties: every input gives either a result or one clear error line (never a traceback),
and nothing is ever written outside the results root (names cannot traverse paths).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.api import Task
from harness.cli import main
from harness.config import ConfigError, load_task_config
from harness.record import artifact_dir, failure_path, run_path

FIXTURES = Path(__file__).parent / "fixtures"
TOY_YAML = yaml.safe_load((FIXTURES / "toyplugin" / "task.yaml").read_text())

HOSTILE = ["..", "../..", "../../../../tmp/escape", "/etc/passwd", "a/b", "a\\b", ".", "", " ", "x,y", "a=b",
           "[x]", "]", "m[", "\x00", "\n", "é", "…", "~", "$HOME", "*", "-1", "1e-05", "nan", "inf", "true",
           "null", "0x10", "0.1", "2", "2.0", "x" * 300]
names = st.one_of(st.sampled_from(HOSTILE), st.text(min_size=0, max_size=24))
values = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12), st.integers(-10**20, 10**20).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
keys = st.one_of(st.sampled_from(["lr", "epochs", "always", "momentum", "lr ", "", "a/b", ".."]),
                 st.text(max_size=8))


def _tree(root: Path, skip: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts and rel.parts[0] in skip:
            dirnames[:] = []
            continue
        for f in filenames:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.stat().st_mtime_ns
        out[str(rel) + "/"] = 0
    return out


def _call(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue()


def _one_clear_error(rc: int, err: str, argv) -> None:
    assert "Traceback" not in err, (argv, err)
    if rc != 0:
        lines = [x for x in err.splitlines() if x.strip() and not x.startswith("warning: ")]
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)


@pytest.fixture
def sandbox(tmp_path, monkeypatch, toy_data_root):
    """A scratch cwd (toy data built, results/ empty) three folders below a root that must stay
    untouched: a write via ../, ../.. or ../../.. would land there. The root is this test's own, so
    other tests' files (an SQLite checkpoint when an earlier test's engine is collected) never count."""
    work = tmp_path / "outer" / "middle" / "work"
    shutil.copytree(toy_data_root / "toy_blobs", work / "data" / "toy_blobs")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(work / "data"))
    monkeypatch.delenv("HARNESS_REGISTRY_URL", raising=False)
    escape = Path("/tmp/escape")
    existed = escape.exists()
    before = _tree(tmp_path, skip=())
    yield work
    after = _tree(tmp_path, skip=())
    inside = str(Path("outer", "middle", "work"))
    assert {k: v for k, v in after.items() if not k.startswith(inside)} == \
        {k: v for k, v in before.items() if not k.startswith(inside)}
    assert escape.exists() == existed


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=st.one_of(st.sampled_from(["sgd", "sgd_best", "explode", "crash", "pair"]), names),
       point=st.dictionaries(keys, values, max_size=3),
       sets=st.lists(st.tuples(keys, values).map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=2),
       benchmark=st.one_of(st.just("toy-a"), names),
       seed=st.one_of(st.integers(0, 3), st.integers(-5, -1), st.integers(2**63 - 2, 2**64)),
       threads=st.one_of(st.none(), st.integers(-3, 3)))
def test_cli_run_names_and_values(sandbox, method, point, sets, benchmark, seed, threads):
    inner = ",".join(f"{k}={v}" for k, v in point.items())
    variant = f"{method}[{inner}]" if point else method
    argv = ["run", "toy", "--scale", "tiny", "--method", variant, "--benchmark", benchmark, "--seed", str(seed)]
    argv += ["--threads", str(threads)] if threads is not None else []
    for s in sets:
        argv += ["--set", s]
    before = _tree(sandbox, skip=("results", "data"))
    rc, err = _call(argv)
    assert rc in (0, 1, 2), (argv, rc)
    _one_clear_error(rc, err, argv)
    assert _tree(sandbox, skip=("results", "data")) == before, argv  # nothing written beside results/
    results = (sandbox / "results").resolve()
    for p in (sandbox / "results").rglob("*"):
        assert p.resolve().is_relative_to(results)
    if rc == 1:  # a run that failed names its failure record, which exists, inside results/
        assert "failure record: results/failures/" in err or "no failure record was written" in err, err


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(command=st.sampled_from(["data build", "new-task", "new-task --package", "reproduce", "registry show",
                                "data verify"]),
       name=names)
def test_cli_other_names(sandbox, command, name):
    *words, flag = command.split() + [""]
    argv = [*words, name] + ([flag] if flag else [])
    if argv[0] == "new-task":
        argv += ["--dest", str(sandbox / "results" / "scaffold")]
    before = _tree(sandbox, skip=("results", "data"))
    try:
        rc, err = _call(argv)
    except Exception as e:  # noqa: BLE001 - the property: no exception escapes the CLI
        raise AssertionError(f"{argv}: {type(e).__name__}: {e}") from e
    _one_clear_error(rc, err, argv)
    assert _tree(sandbox, skip=("results", "data")) == before, argv


def _set(doc: dict, path: tuple, value) -> None:
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value


MUTABLE = [("name",), ("datasets",), ("scales", "tiny", "seeds"), ("scales", "tiny", "defaults", "lr"),
           ("scales", "tiny", "methods", "sgd", "grid", "lr"), ("scales", "tiny", "methods", "crash", "always"),
           ("methods", "sgd", "hyperparameters"), ("claims", 0, "treatment"), ("claims", 0, "benchmarks"),
           ("paper", "code"), ("metrics", "test_accuracy")]
scalars = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=10), st.integers(-2**70, 2**70), st.none(),
                    st.booleans(), st.floats(allow_nan=True, allow_infinity=True))
yaml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=6)


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.sampled_from(MUTABLE), yaml_values), min_size=1, max_size=3),
       rename=st.one_of(st.none(), st.tuples(st.sampled_from(["bench", "method", "dataset"]), names)))
def test_task_yaml_fuzz(tmp_path_factory, edits, rename):
    root = tmp_path_factory.mktemp("fuzz")
    doc = copy.deepcopy(TOY_YAML)
    for path, value in edits:
        _set(doc, path, value)
    if rename is not None:
        what, new = rename
        tiny = doc["scales"]["tiny"]
        if what == "bench" and isinstance(tiny.get("benchmarks"), dict):
            tiny["benchmarks"] = {new: {"dataset": "toy_blobs"}}
        elif what == "method":
            doc["methods"][new] = {"description": "fuzzed", "hyperparameters": ["lr"]}
            tiny["methods"][new] = {"grid": {"lr": [0.1]}}
        elif what == "dataset":
            doc["datasets"] = [new]
            tiny["benchmarks"] = {"toy-a": {"dataset": new}}
    (root / "task.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    rc, err = _call(["validate", str(root)])
    assert rc in (0, 1) and "Traceback" not in err, err
    try:
        cfg = load_task_config(root / "task.yaml")
    except ConfigError:
        assert rc == 1
        return
    # Accepted: every path its plan can build stays inside the results root, and names are canonical.
    results = root / "results"
    task = type("Fuzzed", (Task,), {"root": root})()
    for scale in cfg.scales:
        for v in cfg.variants(scale):
            assert cfg.resolve(scale, v.variant).variant == v.variant
            for b in cfg.benchmarks(scale):
                for seed in cfg.scale(scale).seeds:
                    for fn in (run_path, failure_path, artifact_dir):
                        p = fn(results, scale, cfg.name, b.name, v.variant, seed)
                        assert os.path.normpath(p).startswith(str(results) + os.sep)
        task.config  # noqa: B018 - loads the same file without error
