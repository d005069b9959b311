"""harness.runner: records, determinism, resume, failures, divergence, selection, requires."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import ConfigError
from harness.record import failure_path, read_record, run_path
from harness.runner import RequiredRunMissing, SimulatedInterrupt, run_one


def _metrics(rec):
    return {m["name"]: m["value"] for m in rec["metrics"]}


def test_run_writes_complete_record(workdir):
    rec = run_one("toy", "sgd[lr=0.1]", "toy-a", 0, "tiny")
    path = run_path(Path("results"), "tiny", "toy", "toy-a", "sgd[lr=0.1]", 0)
    assert path == Path("results/runs/tiny/toy/toy-a/sgd__lr=0.1/seed0.json")
    on_disk = read_record(path)
    assert on_disk == json.loads(json.dumps(rec))
    assert rec["status"] == "ok" and rec["scale"] == "tiny" and rec["seed"] == 0
    assert set(_metrics(rec)) == {"val_accuracy", "test_accuracy", "weight_norm"}
    assert [p["step"] for p in rec["curves"]["train"]] == [0, 1, 2]
    art = rec["artifacts"][0]
    assert art["name"] == "model" and len(art["sha256"]) == 64 and Path("results", art["path"]).exists()
    assert rec["config"] == {"lr": 0.1, "epochs": 3}
    assert rec["data_hashes"]["toy_blobs"] and rec["code_hash"]
    assert {"git_commit", "git_dirty", "python", "torch", "hostname", "cpu", "executor"} <= set(rec["provenance"])
    assert rec["timings"]["wall_s"] > 0 and rec["memory"]["peak_rss_mb"] > 0
    assert not Path("results/artifacts/tiny/toy/toy-a/sgd__lr=0.1/seed0/_checkpoint.pt").exists()


def test_same_seed_same_metrics_bit_for_bit(workdir):
    a = run_one("toy", "sgd[lr=0.5]", "toy-a", 1, "tiny", results_dir="r1")
    b = run_one("toy", "sgd[lr=0.5]", "toy-a", 1, "tiny", results_dir="r2")
    c = run_one("toy", "sgd[lr=0.5]", "toy-a", 2, "tiny", results_dir="r2")
    assert a["run_id"] == b["run_id"] != c["run_id"]
    assert _metrics(a) == _metrics(b)
    assert a["curves"] == b["curves"]
    assert a["curves"] != c["curves"]


def test_cached_run_is_not_recomputed(workdir):
    a = run_one("toy", "sgd[lr=0.1]", "toy-a", 0, "tiny")
    b = run_one("toy", "sgd[lr=0.1]", "toy-a", 0, "tiny")
    assert a["timings"]["started_at"] == b["timings"]["started_at"]
    c = run_one("toy", "sgd[lr=0.1]", "toy-a", 0, "tiny", force=True)
    assert c["timings"]["started_at"] != a["timings"]["started_at"]


def test_interrupted_run_resumes_to_the_same_result(workdir, monkeypatch):
    clean = run_one("toy", "sgd[lr=0.5]", "toy-a", 0, "tiny", results_dir="clean")
    monkeypatch.setenv("HARNESS_INTERRUPT_AFTER_CHECKPOINT", "2")
    with pytest.raises(SimulatedInterrupt):
        run_one("toy", "sgd[lr=0.5]", "toy-a", 0, "tiny")
    fail = failure_path(Path("results"), "tiny", "toy", "toy-a", "sgd[lr=0.5]", 0)
    assert read_record(fail)["status"] == "failed"
    assert not run_path(Path("results"), "tiny", "toy", "toy-a", "sgd[lr=0.5]", 0).exists()
    monkeypatch.delenv("HARNESS_INTERRUPT_AFTER_CHECKPOINT")
    resumed = run_one("toy", "sgd[lr=0.5]", "toy-a", 0, "tiny")
    assert resumed["timings"]["resumed_from_step"] == 1  # epochs 0 and 1 were checkpointed
    assert _metrics(resumed) == _metrics(clean)
    assert resumed["curves"] == clean["curves"]
    assert not fail.exists()


def test_exception_becomes_failure_record_and_is_not_cached(workdir):
    with pytest.raises(RuntimeError, match="toy crash"):
        run_one("toy", "crash", "toy-a", 0, "tiny", overrides={"always": True})
    fail = failure_path(Path("results"), "tiny", "toy", "toy-a", "crash[always=true]", 0)
    rec = read_record(fail)
    assert rec["status"] == "failed"
    assert rec["error"]["type"] == "RuntimeError" and "toy crash as asked" in rec["error"]["message"]
    assert "Traceback" in rec["error"]["traceback"]
    assert not run_path(Path("results"), "tiny", "toy", "toy-a", "crash[always=true]", 0).exists()


def test_nan_is_a_diverged_cached_result(workdir):
    rec = run_one("toy", "explode", "toy-a", 0, "tiny")
    assert rec["status"] == "diverged"
    m = {x["name"]: x for x in rec["metrics"]}
    assert m["weight_norm"]["value"] is None and m["weight_norm"]["nonfinite"] == "nan"
    again = run_one("toy", "explode", "toy-a", 0, "tiny")
    assert again["timings"]["started_at"] == rec["timings"]["started_at"]


def test_best_of_sweep_selects_on_validation(workdir):
    trials = {lr: run_one("toy", f"sgd[lr={lr}]", "toy-a", 0, "tiny") for lr in (0.1, 0.5)}
    best = run_one("toy", "sgd_best", "toy-a", 0, "tiny")
    vals = {lr: _metrics(r)["val_accuracy"] for lr, r in trials.items()}
    winner = max(vals, key=lambda lr: (vals[lr], -lr))  # ties go to the first grid point
    assert best["info"]["selected"] == f"sgd[lr={winner}]"
    assert _metrics(best) == _metrics(trials[winner])
    assert {r["variant"] for r in best["requires"]} == {"sgd[lr=0.1]", "sgd[lr=0.5]"}


def test_required_runs_must_exist_and_feed_artifacts(workdir):
    with pytest.raises(RequiredRunMissing, match="run it first"):
        run_one("toy", "pair", "toy-a", 0, "tiny")
    for s in (0, 1000):
        run_one("toy", "sgd[lr=0.1]", "toy-a", s, "tiny")
    rec = run_one("toy", "pair", "toy-a", 0, "tiny")
    assert rec["status"] == "ok" and rec["info"]["members"] == 2
    assert [r["seed"] for r in rec["requires"]] == [0, 1000]


def test_bit_identical_upstream_rerun_keeps_downstream_cached(workdir):
    for s in (0, 1000):
        run_one("toy", "sgd[lr=0.1]", "toy-a", s, "tiny")
    a = run_one("toy", "pair", "toy-a", 0, "tiny")
    run_one("toy", "sgd[lr=0.1]", "toy-a", 1000, "tiny", force=True, threads=1)
    b = run_one("toy", "pair", "toy-a", 0, "tiny")
    # The member rerun is bit-identical, so its run_id (and ours) stays: cached.
    assert a["run_id"] == b["run_id"]


def test_superseded_record_moves_to_history(workdir, monkeypatch):
    old = run_one("toy", "sgd[lr=0.1]", "toy-a", 0, "tiny")
    monkeypatch.setattr("harness.provenance.code_hash", lambda folder: "0123456789abcdef")
    new = run_one("toy", "sgd[lr=0.1]", "toy-a", 0, "tiny")
    assert new["run_id"] != old["run_id"]
    assert read_record(Path("results/history") / f"{old['run_id']}.json")["run_id"] == old["run_id"]


def test_unknown_names_give_one_clear_error(workdir):
    with pytest.raises(ConfigError, match="no method 'nope'.*harness tasks"):
        run_one("toy", "nope", "toy-a", 0, "tiny")
    with pytest.raises(ConfigError, match="no benchmark 'toy-z'"):
        run_one("toy", "sgd", "toy-z", 0, "tiny")
    with pytest.raises(ConfigError, match="unknown task 'nosuch'"):
        run_one("nosuch", "sgd", "toy-a", 0, "tiny")


def test_missing_dataset_names_the_build_command(workdir, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="harness data build toy_blobs"):
        run_one("toy", "sgd[lr=0.1]", "toy-a", 0, "tiny")


def test_code_hash_ignores_claims_published_and_prose_but_not_run_settings(tmp_path):
    import shutil

    import yaml

    from harness.provenance import code_hash

    src = Path(__file__).parent / "fixtures" / "toyplugin"
    folder = tmp_path / "toy"
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("__pycache__"))
    base = code_hash(folder)
    yml = folder / "task.yaml"
    raw = yaml.safe_load(yml.read_text())

    def with_edit(edit) -> str:
        data = yaml.safe_load(yml.read_text())
        edit(data)
        yml.write_text("# a comment\n" + yaml.safe_dump(data, sort_keys=False))
        try:
            return code_hash(folder)
        finally:
            yml.write_text(yaml.safe_dump(raw, sort_keys=False))

    assert code_hash(folder) == base  # re-dumped YAML, same content: formatting does not count
    assert with_edit(lambda d: d["claims"][0].update(statement="reworded", min_effect=9.0)) == base
    assert with_edit(lambda d: d["published"][0].update(value=1.0)) == base
    assert with_edit(lambda d: d.update(description="new prose")) == base
    assert with_edit(lambda d: d["scales"]["tiny"]["defaults"].update(epochs=4)) != base
    assert with_edit(lambda d: d.update(version=d["version"] + 1)) != base
    (folder / "extra.py").write_text("X = 1\n")
    assert code_hash(folder) != base


# -- issue 14: verified data, contained paths, threads, weights-only checkpoints -------------------

def _tamper_labels(folder: Path) -> None:
    """Change every training label, keeping valid Arrow (what a bad sync or a hostile edit does)."""
    import datasets

    train = datasets.load_from_disk(str(folder / "train"))
    flipped = train.map(lambda r: {"label": 1 - r["label"]}, keep_in_memory=True)
    arrow = next((folder / "train").glob("*.arrow"))
    tmp = folder.parent / "flipped"
    flipped.save_to_disk(str(tmp))
    arrow.write_bytes(next(tmp.glob("*.arrow")).read_bytes())


def test_a_run_refuses_data_that_differ_from_the_hash_it_records(workdir, capsys):
    from harness.cli import main

    argv = ["run", "toy", "--method", "sgd[lr=0.1]", "--benchmark", "toy-a", "--seed", "0", "--scale", "tiny"]
    assert main(argv) == 0
    record = next(Path("results/runs").rglob("seed0.json"))
    before = record.read_bytes()
    _tamper_labels(workdir / "data" / "toy_blobs")
    import harness.data

    harness.data._VERIFIED.clear()  # a new process: nothing verified yet
    for extra in ([], ["--force"]):  # the cached record is not served, and nothing retrains on it
        capsys.readouterr()
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "toy_blobs" in err and "train/" in err and "changed" in err
        assert "dvc checkout data/toy_blobs" in err and "harness data build toy_blobs --force" in err
    assert record.read_bytes() == before
    assert not Path("results/failures").exists()


@pytest.mark.parametrize("argv", [
    ["--method", "sgd[lr=../../../../escaped]"],
    ["--method", "sgd[lr=0.1]", "--set", "lr=../../../../escaped"],
    ["--method", "sgd", "--set", "lr=/tmp/escaped"],
    ["--method", "sgd[epochs=..]"],
    ["--method", "sgd[lr=a\\b]"],
])
def test_names_from_the_cli_cannot_leave_the_results_root(workdir, capsys, argv):
    from harness.cli import main

    rc = main(["run", "toy", "--benchmark", "toy-a", "--scale", "tiny", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "file name" in err or "read back" in err or "takes a number" in err
    outside = [p for p in workdir.parent.rglob("*escaped*")] + list(Path("/tmp").glob("escaped*"))
    assert outside == [] and not Path("results/runs").exists()


def test_grid_values_that_are_paths_fail_validation(tmp_path):
    import yaml

    from harness.cli import main

    src = Path(__file__).parent / "fixtures" / "toyplugin" / "task.yaml"
    for bad in ("../../x", "a/b", "x,y", "true", " padded"):
        raw = yaml.safe_load(src.read_text())
        raw["scales"]["tiny"]["methods"]["sgd"] = {"grid": {"lr": [0.1, bad]}}
        (tmp_path / "task.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match="grid"):
            from harness.config import load_task_config

            load_task_config(tmp_path / "task.yaml")
        assert main(["validate", str(tmp_path)]) == 1


def test_thread_count_is_part_of_the_run_id_and_reproduce_uses_it(workdir):
    import torch

    from harness.reproduce import reproduce

    one = run_one("toy", "sgd[lr=0.5]", "toy-a", 0, "tiny", results_dir="r1", threads=1)
    two = run_one("toy", "sgd[lr=0.5]", "toy-a", 0, "tiny", results_dir="r2", threads=2)
    default = run_one("toy", "sgd[lr=0.5]", "toy-a", 0, "tiny", results_dir="r3")  # the scale's resources.threads
    assert one["run_id"] != two["run_id"]
    assert default["run_id"] == one["run_id"] and default["threads"] == one["threads"] == 1
    assert two["threads"] == 2 and two["provenance"]["torch_threads"] == 2
    torch.set_num_threads(1)  # whatever this process uses now, reproduce uses the recorded count
    rep = reproduce(two["run_id"], results_dir="r2")
    assert rep["same_run_id"] and rep["identical"] and rep["threads"] == 2


def test_checkpoints_load_weights_only(workdir, capsys):
    """A checkpoint never runs code on load: a pickle that would is refused and the run starts over."""
    import pickle

    clean = run_one("toy", "sgd[lr=0.5]", "toy-a", 0, "tiny", results_dir="clean")
    ckpt = Path("results/artifacts/tiny/toy/toy-a/sgd__lr=0.5/seed0/_checkpoint.pt")
    ckpt.parent.mkdir(parents=True)
    pwned = workdir / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (pwned,))

    with open(ckpt, "wb") as f:
        pickle.dump({"run_id": clean["run_id"], "state": Evil(), "curves": {}, "rng": {}}, f)
    rec = run_one("toy", "sgd[lr=0.5]", "toy-a", 0, "tiny")
    assert not pwned.exists()
    assert "ignoring unusable checkpoint" in capsys.readouterr().err
    assert rec["timings"]["resumed_from_step"] is None and _metrics(rec) == _metrics(clean)


def test_checkpoint_state_that_cannot_load_weights_only_is_named_when_saved(workdir):
    import numpy as np

    from harness.runner import LocalRunContext

    ctx = LocalRunContext(task="toy", run_id="x", seed=0, device="cpu", scale="tiny", out_dir=workdir / "o",
                          results_dir=workdir)
    ctx.checkpoint({"step": 1, "w": __import__("torch").zeros(2), "hist": [1.0, {"a": "b"}]})
    assert ctx.restore()["hist"] == [1.0, {"a": "b"}]
    with pytest.raises(TypeError, match=r"state\['best'\]\['arr'\] is a numpy.ndarray.*weights_only"):
        ctx.checkpoint({"best": {"arr": np.zeros(3)}})
