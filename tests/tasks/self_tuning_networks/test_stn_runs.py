"""Whole runs through the harness runner at tiny scale: every method and DAG edge, determinism,
resume, claims and figures; paper-scale loaders on tiny local fixtures."""

import json

import numpy as np
import pandas as pd
import pytest

from harness.claims import evaluate_claims
from tasks.self_tuning_networks import task

TASK = "self_tuning_networks"


def metrics(rec):
    return {m["name"]: m["value"] for m in rec["metrics"]}


@pytest.mark.slow
@pytest.mark.tiny_dag(TASK)
def test_tiny_dag_end_to_end(tiny_dag):
    """The task's records from the session's snakemake run of the tiny DAG (tests/conftest.py)."""
    from harness.dag import plan

    runs = plan("tiny", [TASK], results_dir="results")
    by_bench = {"digits": {}, "lm": {}}
    for key, r in runs.items():
        rec = json.loads((tiny_dag.repo / key).read_text())
        assert rec["status"] == "ok", (r.variant, r.benchmark, rec.get("error"))
        by_bench[r.benchmark][r.variant] = rec
    assert {v.split("[")[0] for v in by_bench["digits"]} == set(task.config.scale("tiny").methods)
    assert {v.split("[")[0] for v in by_bench["lm"]} == set(task.config.scale("tiny").methods) - {"ridge_check"}
    for bench, records in by_bench.items():
        stn = records["stn"]
        sched = stn["info"]["schedule"]
        assert len(sched["dropouto" if bench == "lm" else "dropout_h1"]) == stn["info"]["epochs_run"]
        assert [p["step"] for p in stn["curves"]["hparams"]] == list(range(stn["info"]["epochs_run"]))
        assert stn["info"]["hyper_steps"] > 0
        # Replay follows STN's schedule, final holds its last value, jitter uses the grid's winner.
        assert records["stn_final"]["info"]["hparams"] == stn["info"]["final"]
        grid = records["grid_search"]
        assert records["best_fixed_jitter"]["info"]["hparams"] == grid["info"]["hparams"]
        trial_costs = sum(metrics(records[v])["cost_epochs"] for v in records if v.startswith("grid_trial"))
        assert metrics(grid)["cost_epochs"] == pytest.approx(trial_costs) and metrics(grid)["n_trials"] == 2
        assert [r["variant"] for r in records["tpe_trial[trial=1]"]["requires"]] == ["tpe_trial[trial=0]"]
        # A plain training epoch costs 1, an STN epoch with hyper steps about 3.
        assert metrics(stn)["cost_epochs"] > 2 * metrics(records["stn_final"])["cost_epochs"]
    assert all(float(c).is_integer() for c in by_bench["digits"]["stn"]["info"]["schedule"]["cutout"])
    lm = by_bench["lm"]
    assert {metrics(lm[v])["hp_dropouto"] for v in lm if v.startswith("grid_trial")} == {0.0, 0.5}
    assert metrics(lm["stn"])["test_ppl"] < 40  # far below the 40-word uniform guess after 3 epochs
    records = {f"{b}/{v}": r for b, recs in by_bench.items() for v, r in recs.items()}
    # Claims and figures over the recorded runs.
    rows = [{"run_id": r["run_id"], "task": TASK, "method": r["method"], "variant": r["variant"],
             "benchmark": r["benchmark"], "seed": r["seed"], "scale": "tiny", "status": r["status"],
             "name": m["name"], "value": m["value"], "higher_is_better": m["higher_is_better"]}
            for r in records.values() for m in r["metrics"]]
    claims = evaluate_claims(task, pd.DataFrame(rows), "tiny")
    assert len(claims) == 11 and all(c["error"] is None for c in claims), [c["error"] for c in claims]
    assert all(c["verdict"] == "undecidable" and c["n_seeds"] <= 1 for c in claims)  # one seed at tiny scale
    runs_df = pd.DataFrame([{"run_id": r["run_id"], "method": r["method"], "variant": r["variant"],
                             "benchmark": r["benchmark"], "seed": r["seed"], "status": r["status"],
                             "wall_s": r["timings"]["wall_s"], "info": r["info"], "record_json": json.dumps(r)}
                            for r in records.values()])
    figs = task.figures(runs_df, "tiny")
    assert [t.split(":")[0] for t, _ in figs] == ["digits", "digits", "lm", "lm"]
    assert all(svg.startswith("<svg") for _, svg in figs)


def test_stn_run_is_deterministic_and_resumes_bit_exactly(resumed_run):
    resumed_run("digits", {"epochs": 4, "checkpoint_every": 2, "warmup_epochs": 1})


def test_claim_functions_on_a_synthetic_frame():
    rows = []

    def add(variant, bench, seed, **vals):
        for k, v in vals.items():
            rows.append({"run_id": f"{variant}{bench}{seed}", "task": TASK, "method": variant.split("[")[0],
                         "variant": variant, "benchmark": bench, "seed": seed, "scale": "small", "status": "ok",
                         "name": k, "value": v, "higher_is_better": False})

    for s in (0, 1, 2):
        add("stn", "lm", s, test_nll=5.0)
        add("grid_search", "lm", s, test_nll=4.9)   # STN has no gain on the LM: replay is undefined there
        add("stn_replay", "lm", s, test_nll=5.5)
        add("ridge_check", "digits", s, ridge_rel_error=0.02, ridge_log10_lambda_gap=0.05 * (s + 1))
        add("stn", "digits", s, test_nll=0.10, cost_epochs=30.0, hp_dropout_in=0.2, hp_dropout_h1=0.3,
            hp_cutout=2.0, start_cutout=1.0)
        add("stn_high_start", "digits", s, hp_dropout_in=0.25, hp_dropout_h1=0.3, hp_cutout=3.0, start_cutout=4.0)
        add("stn", "docs", s, hp_dropouto=0.40)  # a language model: one dropout layer of its own
        add("stn_high_start", "docs", s, hp_dropouto=0.46)
        add("grid_search", "digits", s, test_nll=0.14, hp_cutout=2.0)
        add("stn_replay", "digits", s, test_nll=0.11)
        for k in range(4):  # trials cost 12 each: only trials 0 and 1 fit STN's 30
            add(f"random_trial[trial={k}]", "digits", s, val_nll=1.0 - 0.1 * k, test_nll=0.2 - 0.02 * k, cost_epochs=12.0)
    f = pd.DataFrame(rows)
    def per_seed(name):
        return task.claim_function(name)(f).per_seed

    replay = task.claim_function("claim_replay_recovers")(f)
    assert replay.details["stn_without_gain"] == [{"benchmark": "lm", "seed": s} for s in (0, 1, 2)]

    assert per_seed("claim_ridge_fidelity") == pytest.approx({0: 0.08, 1: 0.08, 2: 0.08})
    assert per_seed("claim_ridge_argmin") == pytest.approx({0: 0.2, 1: 0.15, 2: 0.1})   # 0.25 - 0.05 (s + 1)
    # ((0.14 - 0.11) - 0.5 (0.14 - 0.10)) / 0.14: relative to the grid's loss
    assert per_seed("claim_replay_recovers") == pytest.approx({s: (0.03 - 0.02) / 0.14 for s in (0, 1, 2)})
    conv = task.claim_function("claim_schedules_converge")(f)  # digits: mean |gap| 0.025 over 2 layers; docs: 0.06 over 1
    assert conv.per_seed == pytest.approx({s: 0.1 - (0.025 + 0.06) / 2 for s in (0, 1, 2)})   # benchmarks averaged per seed
    assert len(conv.details["units"]) == 6
    eff = task.claim_function("claim_efficiency")(f)
    # best of trials 0-1 on validation is trial 1 (test 0.18): (0.18 - 0.10) / 0.18
    assert eff.per_seed == pytest.approx({s: (0.18 - 0.10) / 0.18 for s in (0, 1, 2)})
    assert eff.details["trials_within_stn_cost"]["digits/seed0"]["trials"] == 2
    assert per_seed("claim_beats_tpe") == {}   # no TPE trials in this frame
    # stn starts at 1 (opt 2, ends at 2): +1; high: 4 -> 3: +1
    assert per_seed("claim_discrete_moves") == pytest.approx({0: 1.0, 1: 1.0, 2: 1.0})


def test_paper_scale_loaders_on_local_fixtures(tmp_path, monkeypatch):
    import datasets
    from PIL import Image

    from tasks.self_tuning_networks.data import DatasetUnavailable, build_stn_cifar10, build_stn_ptb, load_images

    rng = np.random.default_rng(0)
    img = lambda: Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))  # noqa: E731
    cifar = datasets.DatasetDict({s: datasets.Dataset.from_dict({"img": [img() for _ in range(n)], "label": list(range(n))})
                                  for s, n in (("train", 10), ("test", 4))})
    cifar.save_to_disk(str(tmp_path / "cifar"))
    monkeypatch.setenv("HARNESS_CIFAR10_SOURCE", str(tmp_path / "cifar"))
    dd = build_stn_cifar10()
    assert {k: len(v) for k, v in dd.items()} == {"train": 8, "validation": 2, "test": 4}
    assert dd["validation"]["label"] == [8, 9]  # the last 20% of the official train split
    from harness.data import build

    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    import harness.data as hdata

    monkeypatch.setattr(hdata, "builders", lambda: {"stn_cifar10": (build_stn_cifar10, [TASK])})
    build("stn_cifar10", tmp_path / "data")
    data = load_images("stn_cifar10", {"image_size": 32, "channels": 3}, tmp_path / "data")
    assert tuple(data.x_train.shape) == (8, 3, 32, 32) and 0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1
    original = np.asarray(cifar["train"][0]["img"], np.float32) / 255.0
    assert np.allclose(data.x_train[0].permute(1, 2, 0).numpy(), original)

    ptb = datasets.DatasetDict({s: datasets.Dataset.from_dict({"sentence": ["the cat sat", "a dog ran"]})
                                for s in ("train", "validation", "test")})
    ptb.save_to_disk(str(tmp_path / "ptb"))
    monkeypatch.setenv("HARNESS_PTB_SOURCE", str(tmp_path / "ptb"))
    assert build_stn_ptb()["test"]["text"] == ["the cat sat", "a dog ran"]
    monkeypatch.setenv("HARNESS_PTB_SOURCE", str(tmp_path / "missing"))
    with pytest.raises(DatasetUnavailable, match="HARNESS_PTB_SOURCE"):
        build_stn_ptb()
