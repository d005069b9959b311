"""The whole tiny DAG, in process: edges, every method once, caching, claims and figures."""

from __future__ import annotations


import pandas as pd
import pytest

from harness.api import ClaimEvidence
from harness.dag import plan
from tasks.infinite_compute import task
from tasks.infinite_compute import data as ic_data


@pytest.fixture
def tiny_env(tmp_path, monkeypatch, data_root):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_root))
    monkeypatch.setenv("HARNESS_PROGRESS", "0")
    ic_data._stdlib_split.cache_clear()
    yield tmp_path / "results"
    ic_data._stdlib_split.cache_clear()


def _topological(runs):
    done, order = set(), []
    while len(order) < len(runs):
        for out, r in runs.items():
            if out not in done and all(d in done for d in r.requires):
                done.add(out)
                order.append(r)
    return order


def test_tiny_plan_has_every_edge():
    runs = plan("tiny", ["infinite_compute"], results_dir="R")
    by_name = {(r.variant, r.seed): r for r in runs.values()}
    assert len(runs) <= 26
    methods = {r.variant.split("[")[0] for r in runs.values()}
    assert methods == set(task.config.methods)

    def req(variant, seed):
        return {(read_key(p)) for p in by_name[(variant, seed)].requires}

    def read_key(path):
        parts = path.split("/")
        return parts[-2], int(parts[-1][4:-5])

    assert req("regularized_search[size=d16,step=1]", 0) == {("regularized_search__size=d16__step=0", 0)}
    assert req("regularized[size=d16]", 0) == {("regularized_search__size=d16__step=0", 0),
                                               ("regularized_search__size=d16__step=1", 0)}
    assert req("ensemble[size=d24]", 0) == {("ensemble_member__size=d24", 0), ("ensemble_member__size=d24", 1000)}
    assert req("ensemble_member[size=d24]", 1000) == {("regularized__size=d24", 0)}  # same study seed, same D
    assert req("teacher_samples[source=self]", 0) == {("ensemble_member__size=d24", 0)}
    assert req("distill", 0) == {("teacher_samples__source=ensemble", 0)}
    assert req("synthetic_only", 0) == {("teacher_samples__source=self", 0)}
    assert req("soup", 0) == {("ensemble_member__size=d24", 0), ("ensemble_member__size=d24", 1000)}


def test_members_of_one_study_seed_share_the_data_budget(corpus):
    a, va = ic_data.stdlib_budget("x", 0, 2048, 1024, 32, texts=corpus)
    b, vb = ic_data.stdlib_budget("x", 1000, 2048, 1024, 32, texts=corpus)
    c, vc = ic_data.stdlib_budget("x", 1, 2048, 1024, 32, texts=corpus)
    assert (a == b).all() and (va == vc).all() and not (a == c).all()
    assert a.shape == (64, 33) and (a[1:, 0] == a[:-1, -1]).all()  # windows tile the stream
    # the held-out test set: the test files only, the same for every seed, disjoint from validation
    t = ic_data.stdlib_test("x", 1024, 32, texts=corpus)
    test_text = "".join(corpus["test"]).encode()
    assert t.shape == va.shape and bytes(t[0, :32].astype("uint8").tolist()) == test_text[:32]
    assert not (t == va).all() and (ic_data.stdlib_test("x", 1024, 32, texts=corpus) == t).all()


def test_tiny_dag_runs_end_to_end(tiny_env):
    from harness.runner import run_one

    runs = plan("tiny", ["infinite_compute"], results_dir=str(tiny_env))
    records = {}
    for r in _topological(runs):
        rec = run_one("infinite_compute", r.variant, r.benchmark, r.seed, "tiny", results_dir=tiny_env, threads=1)
        assert rec["status"] == "ok", (r.variant, rec.get("error"))
        records[(r.variant, r.seed)] = rec
    # the chain: step 1 probes a neighbour of step 0's point, never the same point
    s0 = records[("regularized_search[size=d16,step=0]", 0)]["info"]
    s1 = records[("regularized_search[size=d16,step=1]", 0)]["info"]
    assert s0["point"] == {"epochs": 1, "lr": 0.01, "wd": 0.1} and s1["point"] != s0["point"]
    summary = records[("regularized[size=d16]", 0)]
    assert summary["info"]["val_loss"] == min(s0["val_loss"], s1["val_loss"])   # selected on validation
    winner = s0 if s0["val_loss"] <= s1["val_loss"] else s1
    assert summary["info"]["test_loss"] == winner["test_loss"] != winner["val_loss"]   # reported on test
    # members: 2x epochs, 1/2 wd of the optimum; distinct seeds give distinct members
    m0, m1 = records[("ensemble_member[size=d24]", 0)], records[("ensemble_member[size=d24]", 1000)]
    opt = records[("regularized[size=d24]", 0)]["info"]["hyperparameters"]
    assert m0["info"]["hyperparameters"] == {"epochs": 2 * opt["epochs"], "lr": opt["lr"], "wd": opt["wd"] / 2}
    assert m0["metrics"][0]["value"] != m1["metrics"][0]["value"]
    ens = records[("ensemble[size=d24]", 0)]["info"]
    assert ens["losses_by_k"][0] == pytest.approx(m0["info"]["val_loss"], rel=1e-6)
    assert ens["losses_by_k"][1] <= sum(ens["member_losses"]) / 2 + 1e-9
    assert ens["test_losses_by_k"][0] == pytest.approx(m0["info"]["test_loss"], rel=1e-6)
    soup = {m["name"]: m["value"] for m in records[("soup", 0)]["metrics"]}
    assert soup["ens2_val_loss"] == pytest.approx(ens["losses_by_k"][1], rel=1e-6)
    assert soup["ens2_test_loss"] == pytest.approx(ens["test_losses_by_k"][1], rel=1e-6)
    samples = records[("teacher_samples[source=ensemble]", 0)]["info"]
    assert samples["teacher_seeds"] == [0, 1000] and sum(samples["shares"]) == 2 * 4096 // 32

    # cached: the same run again returns the same record without training
    again = run_one("infinite_compute", "distill", "stdlib-4k", 0, "tiny", results_dir=tiny_env, threads=1)
    assert again["run_id"] == records[("distill", 0)]["run_id"] and again["timings"] == records[("distill", 0)]["timings"]

    # claims and figures run on the records (1 seed: values, no verdict)
    rows, run_rows = [], []
    for (variant, seed), rec in records.items():
        run_rows.append({"run_id": rec["run_id"], "method": rec["method"], "variant": variant, "seed": seed,
                         "scale": "tiny", "status": rec["status"], "info": rec["info"], "config": rec["config"],
                         "benchmark": rec["benchmark"]})
        for m in rec["metrics"]:
            rows.append({"run_id": rec["run_id"], "task": "infinite_compute", "method": rec["method"],
                         "variant": variant, "benchmark": rec["benchmark"], "seed": seed, "scale": "tiny",
                         "status": rec["status"], "name": m["name"], "value": m["value"],
                         "higher_is_better": m["higher_is_better"]})
    frame = pd.DataFrame(rows)
    for claim in task.config.claim_objects():
        ev = task.claim_function(claim.function)(frame)
        assert isinstance(ev, ClaimEvidence)
        assert set(ev.per_seed) <= {0}   # one study seed at tiny scale: one effect at most
    soup_ev = task.claim_function("claim_soup_worse_than_logit_average")(frame)
    assert soup_ev.per_seed == pytest.approx({0: soup["test_loss"] - soup["ens2_test_loss"]})
    titles = [t for t, svg in task.figures(pd.DataFrame(run_rows), "tiny")]
    assert len(titles) == 4 and all("<svg" in svg for _, svg in task.figures(pd.DataFrame(run_rows), "tiny"))


def test_planning_does_not_import_torch():
    """requires() runs for every run at planning time (snakemake -n): its helpers live in refs.py."""
    import subprocess
    import sys

    code = ("import sys; from harness.dag import plan; runs = plan('small', ['infinite_compute']); "
            "print(len(runs), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, imported = out.stdout.split()
    assert int(n) > 100 and imported == "False"
