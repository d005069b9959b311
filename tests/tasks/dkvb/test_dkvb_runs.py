"""Runs: the stream loop's behaviour and numbers (Fig. 2 on the toy), what is trained and what is
frozen, cached routing, key initialisation, and bit-identical determinism through the harness."""

from __future__ import annotations

import math

import numpy as np
import torch

from tasks.dkvb import data as data_mod
from tasks.dkvb.train import DKVB, class_tasks, make_stream, share_forgetting_corr, train_run



class Ctx:
    """A RunContext stand-in for direct train_run calls (curves are dropped)."""

    def log(self, step, curve="train", **metrics):
        pass

TOY = {"num_codebooks": 1, "num_pairs": 400, "dim_keys": 2, "splitting": "chunk", "threshold_factor": 0.0,
       "init_batches": 1000, "init_batch_size": 100, "values_init": "randn", "optimizer": "adam", "lr": 0.001,
       "batch_size": None, "epochs_per_task": 1000, "eval_every": 500, "label_smoothing": 0.0, "grad_clip": None,
       "head_optimizer": "adam", "probe_lr": 0.01, "mlp_lr": 0.001, "hidden": 32, "head_reset_optimizer": True}


def _toy_stream(seed=0):
    arrays = data_mod.to_arrays(data_mod.build_toy2d())
    return make_stream(arrays, {"toy": True}, TOY, seed)


def _metrics(result):
    return {m.name: m.value for m in result.metrics}


def test_toy_reproduces_figure_2():
    """DKVB (1 x 400 keys, chunk) keeps all 8 regions; LP and MLP keep only the last task's 2 of 8."""
    stream = _toy_stream()
    dkvb = _metrics(train_run("dkvb", stream, TOY, 0, Ctx()))
    lp = _metrics(train_run("linear_probe", stream, TOY, 0, Ctx()))
    mlp = _metrics(train_run("mlp", stream, TOY, 0, Ctx()))
    share = dkvb["last_task_share"]
    assert 20 < share < 30  # the 2 of 8 classes of task 4, drawn uniformly
    assert dkvb["test_accuracy"] > 95 and dkvb["forgetting"] < 3
    for base in (lp, mlp):
        assert base["current_task_accuracy"] > 95  # each task is learnt ...
        assert abs(base["test_accuracy"] - share) < 3 and base["old_task_accuracy"] < 3  # ... and then lost


def test_values_are_the_only_trained_parameters():
    stream = _toy_stream()
    hp = {**TOY, "epochs_per_task": 5, "values_init": "zeros", "init_batches": 50}
    model = DKVB(2, 8, hp, 0)
    model.fit_keys(None, hp, 0, toy=True)
    keys = model.kv.keys.clone()
    assert model.parameters() == [model.values] and torch.equal(model.values, torch.zeros(1, 400, 8))
    assert model.kv.counts.sum() == 0  # counters reset after key initialisation
    # zero-initialised values: every logit is 0 before training
    model.cache_indices(stream.x_train)
    assert torch.equal(model.train_logits(stream.x_train, torch.arange(4)), torch.zeros(4, 8))
    # a stream leaves keys and projections as they were
    run = DKVB(2, 8, hp, 0)
    run.fit_keys(None, hp, 0, toy=True)
    assert torch.equal(run.kv.keys, keys)


def test_cached_indices_equal_on_the_fly_routing(dkvb_env):
    arrays = data_mod.to_arrays(data_mod.load_dataset_dict("dkvb_digits"))
    hp = {"num_codebooks": 6, "num_pairs": 16, "dim_keys": 4, "init_epochs": 2, "threshold_factor": 0.1, "topk": 2}
    model = DKVB(arrays["x_train"].shape[1], 10, hp, 3)
    model.fit_keys(torch.as_tensor(arrays["x_pretrain"]), hp, 3, toy=False)
    x = torch.as_tensor(arrays["x_train"])
    model.cache_indices(x)
    rows = torch.tensor([5, 0, 77, 123])
    heads = model.splitter(x[rows])  # (C, 4, d)
    d = ((heads[:, :, None, :] - model.kv.keys[:, None, :, :]) ** 2).sum(-1)  # brute force, (C, 4, N)
    brute = torch.sort(d, dim=-1, stable=True).indices[..., :2].permute(1, 0, 2)
    assert model.cache.shape == (len(x), 6, 2) and torch.equal(model.cache[rows], brute)


def test_ema_initialisation_lowers_quantisation_error_every_epoch(dkvb_env):
    arrays = data_mod.to_arrays(data_mod.load_dataset_dict("dkvb_digits"))
    hp = {"num_codebooks": 8, "num_pairs": 32, "dim_keys": 4, "init_epochs": 6, "threshold_factor": 0.1,
          "track_init_error": True}
    model = DKVB(arrays["x_train"].shape[1], 10, hp, 0)
    errors = model.fit_keys(torch.as_tensor(arrays["x_pretrain"]), hp, 0, toy=False)
    assert len(errors) == 7 and errors[-1] < 0.3 * errors[0]
    assert all(b <= a for a, b in zip(errors, errors[1:])), errors


def test_class_order_official_rule():
    assert class_tasks(10, 2, 0) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]] == class_tasks(10, 2, 42)
    shuffled = class_tasks(10, 2, 1)
    assert shuffled != class_tasks(10, 2, 0) and sorted(c for t in shuffled for c in t) == list(range(10))
    assert shuffled == class_tasks(10, 2, 1)


def test_share_forgetting_correlation_by_hand():
    # points with more keys shared with later tasks lost their correct answer; the others kept it
    r = share_forgetting_corr([np.array([0.0, 0.0, 1.0, 1.0])], [np.array([0.0, 0.0, 1.0, 1.0])])
    assert math.isclose(r, 1.0)
    assert math.isnan(share_forgetting_corr([np.zeros(4)], [np.array([0.0, 1.0, 0.0, 1.0])]))


def test_run_is_bit_identical_for_a_seed(dkvb_env, tmp_path):
    from harness.runner import run_one

    def metrics(rec):
        return {m["name"]: m["value"] for m in rec["metrics"]}

    a = run_one("dkvb", "dkvb", "digits-5x2", 1, "tiny", results_dir=tmp_path / "a", threads=1)
    b = run_one("dkvb", "dkvb", "digits-5x2", 1, "tiny", results_dir=tmp_path / "b", threads=1)
    c = run_one("dkvb", "dkvb", "digits-5x2", 2, "tiny", results_dir=tmp_path / "c", threads=1)
    assert a["status"] == "ok" and metrics(a) == metrics(b) and a["info"] == b["info"]
    assert metrics(a) != metrics(c)
    assert {"test_accuracy", "test_accuracy_unmasked", "forgetting", "fraction_unused_keys"} <= set(metrics(a))
    toy = run_one("dkvb", "dkvb", "toy2d", 0, "tiny", results_dir=tmp_path / "a", threads=1)
    grid = toy["info"]["grid"]
    assert len(grid["after_task"]) == 4 and all(len(g) == grid["size"] ** 2 for g in grid["after_task"])
