"""harness compare as a regression gate (issue 16.1): two real commits of a plugin in a git
repository, a real code change between them, the runs of each, and the gate's verdict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from tests.factories import make_record, write_record

FIXTURES = Path(__file__).parent / "fixtures"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}).stdout.strip()


def _load_plugin_at_head(monkeypatch):
    """Import the repository's plugin afresh (its code changed with the commit)."""
    from harness import plugins

    sys.modules.pop("toycmp", None)
    plugins.clear_cache()


@pytest.fixture
def two_commits(workdir, monkeypatch):
    """workdir as a git repository holding the plugin ``toycmp`` (the toy task): commit A, its runs;
    commit B (a bug that flips the training labels: a real regression), its runs. Provenance reads this repo."""
    import harness.provenance as prov

    repo = workdir
    shutil.copytree(FIXTURES / "toyplugin", repo / "toycmp", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".gitignore").write_text("results/\ndata/\n__pycache__/\n*.csv\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "A")
    real = prov.git_info.__wrapped__  # uncached: the commit changes during the test
    monkeypatch.setattr(prov, "git_info", lambda cwd=None: real(str(repo)))
    monkeypatch.syspath_prepend(str(repo))
    monkeypatch.setenv("HARNESS_EXTRA_TASKS", "toy=toycmp:task")

    def study():
        _load_plugin_at_head(monkeypatch)
        for seed in ("0", "1", "2"):
            assert main(["run", "toy", "--method", "sgd[lr=0.5]", "--benchmark", "toy-a", "--seed", seed,
                         "--scale", "tiny"]) == 0

    study()
    code = repo / "toycmp" / "__init__.py"
    src = code.read_text()
    line = '        ytr = torch.tensor(dd["train"]["label"])\n'
    assert line in src
    code.write_text(src.replace(line, line + "        ytr = 1 - ytr  # the bug commit B brings\n"))
    _git(repo, "commit", "-q", "-am", "B: a bug that flips the training labels")
    study()
    _load_plugin_at_head(monkeypatch)
    return repo


def test_compare_gates_a_real_regression_between_two_commits(two_commits, capsys):
    repo = two_commits
    a, b = _git(repo, "rev-parse", "HEAD~1"), _git(repo, "rev-parse", "HEAD")
    from harness.compare import compare_commits

    df = compare_commits("HEAD~1", "HEAD", task="toy").set_index("name")
    assert df.attrs["commit_a"] == a and df.attrs["commit_b"] == b
    acc = df.loc["test_accuracy"]
    assert acc["n_shared_seeds"] == 3 and acc["variant"] == "sgd[lr=0.5]"
    # The numbers: paired change, its t interval and the direction all from the records themselves.
    recs = {}
    for p in (repo / "results").rglob("seed*.json"):
        r = json.loads(p.read_text())
        recs[r["provenance"]["git_commit"], r["seed"]] = {m["name"]: m["value"] for m in r["metrics"]}
    for p in (repo / "results" / "history").rglob("*.json"):
        r = json.loads(p.read_text())
        recs[r["provenance"]["git_commit"], r["seed"]] = {m["name"]: m["value"] for m in r["metrics"]}
    d = [recs[b, s]["test_accuracy"] - recs[a, s]["test_accuracy"] for s in (0, 1, 2)]
    from harness.stats import t_interval

    assert acc["delta"] == pytest.approx(sum(d) / 3)
    assert (acc["ci_low"], acc["ci_high"]) == pytest.approx(t_interval(d))
    assert acc["status"] == "regression" and acc["delta"] < 0 and acc["p_regression"] < 0.05
    capsys.readouterr()
    assert main(["compare", "HEAD~1", "HEAD", "--task", "toy", "--format", "json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["regression"] >= 1 and out["commit_b"] == b
    assert main(["compare", "HEAD~1", "HEAD", "--format", "markdown"]) == 1
    md = capsys.readouterr().out
    assert "❌" in md and "| **regression** | toy | tiny | toy-a | sgd[lr=0.5] | test_accuracy |" in md
    # Reversed, the same change is an improvement and the gate passes.
    assert main(["compare", "HEAD", "HEAD~1", "--task", "toy"]) == 0
    # A tolerance larger than the drop (declared in task.yaml) makes it unchanged.
    yaml_path = repo / "toycmp" / "task.yaml"
    big = float(df["delta"].abs().max()) + 1.0
    yaml_path.write_text(yaml_path.read_text()
                         + f"tolerances: {{test_accuracy: {big!r}, val_accuracy: {big!r}, weight_norm: 1000000000.0}}\n")
    _load_plugin_at_head(None)
    capsys.readouterr()
    assert main(["compare", "HEAD~1", "HEAD", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"] == {"regression": 0, "improvement": 0,
                                                              "unchanged": 3, "missing": 0}


def test_compare_frames_numbers_direction_divergence_and_missing(tmp_path):
    from harness.compare import compare_frames
    from harness.registry import Registry

    a, b = "a" * 40, "b" * 40
    for seed in range(3):
        write_record(tmp_path, make_record(seed=seed, commit=a, metrics={"acc": (0.90, 0.92, 0.91)[seed], "loss": 1.0},
                                           higher_is_better={"loss": False}, finished=seed))
    # B's records live beside A's in history (a rerun at a new commit supersedes the file).
    for seed, (acc_b, loss_b) in enumerate([(0.81, 1.0), (0.84, 0.9), (0.82, 1.1)]):
        rec = make_record(seed=seed, commit=b, metrics={"acc": acc_b, "loss": loss_b},
                          higher_is_better={"loss": False}, finished=10 + seed)
        write_record(tmp_path, rec, history=True)
    write_record(tmp_path, make_record(variant="only_b", commit=b, finished=20), history=True)
    write_record(tmp_path, make_record(variant="nan_b", commit=a, metrics={"acc": 0.5}), history=True)
    write_record(tmp_path, make_record(variant="nan_b", commit=b, metrics={"acc": float("nan")}, finished=30),
                 history=True)
    with Registry(results_dir=tmp_path) as reg:
        reg.ingest_dir()
        fa, fb = reg.by_commit(a), reg.by_commit(b)
    df = compare_frames(fa, fb).set_index(["variant", "name"])
    acc = df.loc[("base", "acc")]
    assert acc["delta"] == pytest.approx(-0.26 / 3) and acc["status"] == "regression"
    assert (acc["mean_a"], acc["mean_b"]) == pytest.approx((0.91, 0.8233333333))
    loss = df.loc[("base", "loss")]  # lower is better, mean change 0 with spread: unchanged
    assert loss["delta"] == pytest.approx(0.0) and loss["status"] == "unchanged"
    assert df.loc[("only_b", "acc"), "status"] == "missing"
    assert df.loc[("nan_b", "acc"), "status"] == "regression" and df.loc[("nan_b", "acc"), "n_diverged_b"] == 1
    # A 0.1 tolerance on acc: a 0.087 drop is within it.
    df2 = compare_frames(fa, fb, {"toy": {"acc": 0.1}}).set_index(["variant", "name"])
    assert df2.loc[("base", "acc"), "status"] == "unchanged"
    # Lower-is-better: a loss that falls on every seed is an improvement.
    fb2 = fb.copy()
    fb2.loc[(fb2["name"] == "loss"), "value"] = [0.5, 0.6, 0.55]
    assert compare_frames(fa, fb2).set_index(["variant", "name"]).loc[("base", "loss"), "status"] == "improvement"


def test_tolerances_are_validated_and_do_not_change_the_code_hash(tmp_path):
    from harness.config import ConfigError, load_task_config
    from harness.provenance import code_hash

    src = (FIXTURES / "toyplugin" / "task.yaml").read_text()
    (tmp_path / "task.yaml").write_text(src)
    h = code_hash(tmp_path)
    (tmp_path / "task.yaml").write_text(src + "tolerances: {test_accuracy: 0.01}\n")
    assert load_task_config(tmp_path / "task.yaml").tolerances == {"test_accuracy": 0.01}
    assert code_hash(tmp_path) == h
    (tmp_path / "task.yaml").write_text(src + "tolerances: {test_accuracy: -1}\n")
    with pytest.raises((ConfigError, ValueError), match="tolerance"):
        load_task_config(tmp_path / "task.yaml")


def test_reproduce_refuses_a_record_of_other_code_or_data_and_diffs_metrics(two_commits, capsys):
    """Issue 16.2, end to end on the same two commits: HEAD reproduces its own run bit for bit; a run
    of HEAD~1 (other code) is refused with the reason, and rerun with --allow-changed shows the diff."""
    repo = two_commits
    a = _git(repo, "rev-parse", "HEAD~1")
    recs = [json.loads(p.read_text()) for p in (repo / "results").rglob("*.json")
            if p.parent.name != "results" and "registry" not in p.name]
    old = next(r for r in recs if r.get("provenance", {}).get("git_commit") == a and r["seed"] == 1)
    new = json.loads(next((repo / "results" / "runs").rglob("seed1.json")).read_text())
    capsys.readouterr()
    assert main(["reproduce", new["run_id"]]) == 0
    out = capsys.readouterr().out
    assert "identical: every metric equal to the last bit" in out and f"run {new['run_id']}" in out
    assert main(["reproduce", old["run_id"]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing to reproduce run {old['run_id']}") and err.count("\n") == 1
    assert old["code_hash"] in err and f"git checkout {a[:12]}" in err and "--allow-changed" in err
    assert main(["reproduce", old["run_id"], "--allow-changed", "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["changes"]["code"]["recorded"] == old["code_hash"] and not rep["identical"]
    acc = rep["metrics"]["test_accuracy"]
    recorded = next(m["value"] for m in old["metrics"] if m["name"] == "test_accuracy")
    rerun = next(m["value"] for m in new["metrics"] if m["name"] == "test_accuracy")
    assert acc["recorded"] == recorded and acc["rerun"] == rerun and acc["delta"] == pytest.approx(rerun - recorded)
    assert rep["threads"] == old.get("threads", rep["threads"])
    # Data: the record names a dataset hash this checkout does not have -> refused, naming the dataset.
    from harness.record import run_path, write_json_atomic

    path = run_path(repo / "results", new["scale"], "toy", new["benchmark"], new["variant"], new["seed"])
    tampered = dict(new, data_hashes={k: "0" * 16 for k in new["data_hashes"]})
    write_json_atomic(path, tampered)
    assert main(["reproduce", new["run_id"]]) == 2
    err = capsys.readouterr().err
    assert "dataset toy_blobs is" in err and "the record used 0000000000000000" in err and "dvc checkout" in err
