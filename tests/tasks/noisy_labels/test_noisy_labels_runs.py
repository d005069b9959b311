"""Whole runs on tiny digits with an in-memory context: determinism, resume, stage two, DAG edges."""

import pytest
import torch

from harness.api import RunRef
from nl_helpers import FakeCtx, Interrupted
from tasks.noisy_labels import B_SEED_OFFSET, task

CFG = task.config
BENCH = CFG.benchmark("tiny", "digits-sym50")


def variant(name):
    return CFG.resolve("tiny", name)


def run(name, seed, tmp_path, tag="", **ctx_kw):
    m = variant(name)
    ctx = FakeCtx(seed, tmp_path / f"{m.variant}{tag}" / str(seed), **ctx_kw)
    return task.run(m, BENCH, dict(m.hyperparameters), ctx), ctx


def values(result):
    return {m.name: m.value for m in result.metrics}


def state_of(path):
    blob = torch.load(path, weights_only=True)
    return blob.get("state_dict") or blob["A"]["state_dict"]


@pytest.mark.parametrize("name", ["ce[weight_decay=0.0005]", "dropout[p=0.5]", "nested_dropout[sigma=4]"])
def test_stage_one_is_deterministic(name, tmp_path, digits_loaded):
    r1, c1 = run(name, 0, tmp_path, "a")
    torch.manual_seed(999)  # leftover global RNG state must not matter
    r2, c2 = run(name, 0, tmp_path, "b")
    r3, _ = run(name, 1, tmp_path, "c")
    assert r1.status == "ok" and values(r1) == values(r2)
    assert values(r1) != values(r3)
    assert 0 <= values(r1)["test_accuracy"] <= 100
    s1, s2 = state_of(c1.out_dir / "model.pt"), state_of(c2.out_dir / "model.pt")
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert [p["step"] for p in c1.curves["train"]] == [1, 2, 3]
    if name.startswith("nested"):
        K = 64
        assert 1 <= values(r1)["k_star"] <= K and values(r1)["k_star_fraction"] == values(r1)["k_star"] / K
        assert [p["step"] for p in c1.curves["acc_vs_k"]] == list(range(1, K + 1))
        k = int(values(r1)["k_star"])
        assert c1.curves["acc_vs_k"][k - 1]["test"] == pytest.approx(values(r1)["test_accuracy"])
        assert r1.info["acc_vs_k"]["test"][-1] == pytest.approx(values(r1)["test_acc_at_K"], abs=1e-3)


@pytest.mark.parametrize("name", ["dropout[p=0.5]", "nested_dropout[sigma=4]"])
def test_stage_one_resume_is_bit_identical(name, tmp_path, digits_loaded):
    full, c_full = run(name, 0, tmp_path, "full")
    store = {}
    with pytest.raises(Interrupted):
        run(name, 0, tmp_path, "cut", store=store, interrupt_after=1)  # dies after epoch 1
    torch.manual_seed(12345)  # a fresh process would start from another RNG state
    resumed, c_res = run(name, 0, tmp_path, "cut", store=store)
    assert [p["step"] for p in c_res.curves["train"]] == [2, 3]  # really resumed at epoch 2
    assert values(resumed) == values(full)
    s1, s2 = state_of(c_full.out_dir / "model.pt"), state_of(c_res.out_dir / "model.pt")
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


@pytest.fixture
def stage_one(tmp_path, digits_loaded):
    """The nested and dropout grids at seed 0 (network A) and 1000 (network B)."""
    runs = {}
    for name in ("nested_dropout[sigma=4]", "nested_dropout[sigma=8]", "dropout[p=0.5]"):
        for seed in (0, B_SEED_OFFSET):
            _, ctx = run(name, seed, tmp_path)
            runs[(name, seed)] = ctx.out_dir
    selected = {("nested_best", 0): "nested_dropout[sigma=8]", ("dropout_best", 0): "dropout[p=0.5]"}
    return runs, selected


def test_coteaching_from_scratch_is_deterministic(tmp_path, digits_loaded):
    r1, c1 = run("coteaching[forget_ramp_epochs=2]", 0, tmp_path, "a")
    r2, _ = run("coteaching[forget_ramp_epochs=2]", 0, tmp_path, "b")
    r3, _ = run("coteaching[forget_ramp_epochs=2]", 1, tmp_path, "c")
    assert values(r1) == values(r2) != values(r3)
    # forget-rate ramp over 2 epochs towards the realised noise fraction (503 of 1000 labels:
    # round-half-up of 0.5 * n_c per class)
    assert r1.info["forget_rate"] == r1.info["noise_fraction"] == pytest.approx(0.503)
    assert [p["forget_rate"] for p in c1.curves["train"]] == pytest.approx([0.0, 0.503, 0.503])


def test_stage_two_uses_matching_a_and_b_and_resumes(tmp_path, stage_one):
    runs, selected = stage_one
    kw = dict(runs=runs, selected=selected)
    full, c_full = run("nested_coteach", 0, tmp_path, "full", **kw)
    again, _ = run("nested_coteach", 0, tmp_path, "again", **kw)
    assert values(full) == values(again)
    info = full.info["stage_one"]
    assert info["A"] == {**info["A"], "variant": "nested_dropout[sigma=8]", "seed": 0}
    assert info["B"]["variant"] == "nested_dropout[sigma=8]" and info["B"]["seed"] == B_SEED_OFFSET
    assert [p["forget_rate"] for p in c_full.curves["train"]] == pytest.approx([0.503, 0.503])  # no ramp
    assert c_full.curves["val"][0]["step"] == 0  # the starting pair is a candidate
    store = {}
    with pytest.raises(Interrupted):
        run("nested_coteach", 0, tmp_path, "cut", store=store, interrupt_after=1, **kw)
    torch.manual_seed(7)
    resumed, _ = run("nested_coteach", 0, tmp_path, "cut", store=store, **kw)
    assert values(resumed) == values(full)

    d, _ = run("dropout_coteach", 0, tmp_path, **kw)
    assert d.status == "ok" and "k_star" not in values(d)


def test_ensemble_averages_the_pair(tmp_path, stage_one):
    from tasks.noisy_labels.run import load_arrays
    from tasks.noisy_labels.train import accuracy_per_k, make_train_data, net_from_artifact

    runs, selected = stage_one
    res, _ = run("ensemble", 0, tmp_path, runs=runs, selected=selected)
    nets = [net_from_artifact(torch.load(runs[("nested_dropout[sigma=8]", s)] / "model.pt", weights_only=True), "cpu")
            for s in (0, B_SEED_OFFSET)]
    data = make_train_data(load_arrays("digits"), "digits", BENCH.settings, 0, "cpu")
    val = accuracy_per_k(nets, data, data.x_val, data.y_val, all_k=True)
    test = accuracy_per_k(nets, data, data.x_test, data.y_test, all_k=True)
    k = int(values(res)["k_star"])
    assert values(res)["val_accuracy"] == pytest.approx(100 * val[k - 1])
    assert values(res)["test_accuracy"] == pytest.approx(100 * test[k - 1])


def test_divergence_is_a_result(tmp_path, digits_loaded):
    m = variant("ce[weight_decay=0.0005]")
    hp = {**m.hyperparameters, "lr": 1e12, "warmup_iters": 0}
    res = task.run(m, BENCH, hp, FakeCtx(0, tmp_path / "div"))
    assert res.status == "diverged" and not res.is_finite


def test_requires_edges():
    ref = lambda v, s: RunRef("noisy_labels", v, "digits-sym50", s)  # noqa: E731
    assert task.requires(variant("ce[weight_decay=0.0005]"), BENCH, 0, "tiny") == []
    # CE and co-teaching from scratch are tuned on validation like dropout and nested.
    assert task.requires(variant("ce_best"), BENCH, 2, "tiny") == [ref("ce[weight_decay=0.0005]", 2)]
    assert task.requires(variant("coteaching_best"), BENCH, 2, "tiny") == [ref("coteaching[forget_ramp_epochs=2]", 2)]
    assert task.requires(variant("nested_best"), BENCH, 1, "tiny") == [
        ref("nested_dropout[sigma=4]", 1), ref("nested_dropout[sigma=8]", 1)]
    expected = [ref("nested_best", 1), ref("nested_dropout[sigma=4]", 1001), ref("nested_dropout[sigma=8]", 1001)]
    assert task.requires(variant("nested_coteach"), BENCH, 1, "tiny") == expected
    assert task.requires(variant("ensemble"), BENCH, 1, "tiny") == expected
    assert task.requires(variant("dropout_coteach"), BENCH, 0, "tiny") == [
        ref("dropout_best", 0), ref("dropout[p=0.5]", 1000)]
    assert task.requires(variant("coteaching"), BENCH, 0, "tiny") == []


def test_dag_closes_over_b_members():
    from harness.dag import plan

    runs = plan("tiny", ["noisy_labels"])
    keys = {(r.variant, r.seed) for r in runs.values()}
    assert ("nested_dropout[sigma=8]", 1000) in keys and ("dropout[p=0.5]", 1001) in keys
    assert ("nested_best", 1000) not in keys  # B is the trial matching A's choice, not a second selection
    # per seed: ce, ce_best, dropout, dropout_best, 2 nested, nested_best, coteaching, coteaching_best,
    # 3 stage-two runs, and the B members at seed + 1000 (dropout, 2 nested): 15 x 2 seeds
    assert len(runs) == 30
