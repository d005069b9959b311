"""Runs through the harness runner: determinism (same seed on CPU -> bit-identical metrics),
every objective once on each data type at tiny scale, and a resumed run equal to an
uninterrupted one."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from harness.api import Benchmark, Method
from tasks.cmim import task


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """cmim_digits and cmim_molecules materialised once, as `harness data build` does."""
    from harness.data import build

    root = tmp_path_factory.mktemp("cmimdata")
    for name in ("cmim_digits", "cmim_molecules"):
        build(name, root)
    return root


@pytest.fixture
def env(monkeypatch, data_root, tmp_path):
    from tasks.cmim import run as run_mod

    monkeypatch.setenv("HARNESS_DATA_DIR", str(data_root))
    monkeypatch.setenv("HARNESS_PROGRESS", "0")
    monkeypatch.setattr(run_mod, "_CACHE", {})
    return tmp_path / "results"


def _metrics(rec):
    return {m["name"]: m["value"] for m in rec["metrics"]}


@pytest.mark.parametrize("variant,benchmark", [("cmim[batch_size=16]", "digits"), ("infonce[batch_size=16]", "molecules")])
def test_same_seed_gives_bit_identical_metrics(env, variant, benchmark):
    from harness.runner import run_one

    a = run_one("cmim", variant, benchmark, 0, "tiny", results_dir=env, threads=1)
    b = run_one("cmim", variant, benchmark, 0, "tiny", results_dir=env, threads=1, force=True)
    assert a["status"] == b["status"] == "ok"
    assert _metrics(a) == _metrics(b)  # exact equality, every metric
    c = run_one("cmim", variant, benchmark, 1, "tiny", results_dir=env, threads=1,
                overrides={"epochs": 1})
    assert _metrics(c)["probe_score"] != _metrics(a)["probe_score"]  # another seed, another model


def test_metrics_of_every_data_type(env):
    from harness.runner import run_one

    img = _metrics(run_one("cmim", "vae[batch_size=256]", "digits", 0, "tiny", results_dir=env, threads=1))
    for k in ("probe_score", "probe_score_x", "knn_cos_acc", "knn_euc_acc", "logreg_acc", "recon_error",
              "mean_sigma", "uniformity", "mean_cos"):
        assert math.isfinite(img[k]), k
    assert img["probe_score"] == pytest.approx((img["knn_cos_acc"] + img["knn_euc_acc"] + img["logreg_acc"]) / 3)
    assert 0.3 < img["probe_score"] <= 1.0  # digits are easy even after one epoch
    mol = _metrics(run_one("cmim", "amim[batch_size=256]", "molecules", 0, "tiny", results_dir=env, threads=1))
    assert mol["probe_score"] == pytest.approx(1 - mol["probe_nrmse"])
    assert set(k for k in mol if k.startswith("rmse_") and not k.endswith("_x")) == {
        f"rmse_freesolv_{s}_{p}" for s in ("random", "scaffold") for p in ("ridge", "svr")}
    ae = _metrics(run_one("cmim", "ae[batch_size=256]", "digits", 0, "tiny", results_dir=env, threads=1))
    assert "mean_sigma" not in ae  # a deterministic encoder has no posterior sigma


class _Ctx:
    def __init__(self, seed, stop_after=None):
        self.seed, self.device, self.scale, self.out_dir = seed, "cpu", "tiny", Path(".")
        self.saved, self.stop_after, self.logged = None, stop_after, []

    def log(self, step, curve="train", **m):
        self.logged.append(step)
        if self.stop_after is not None and step >= self.stop_after:
            raise KeyboardInterrupt

    def checkpoint(self, state):
        self.saved = copy.deepcopy(state)  # as the runner's torch.save: a snapshot, not live tensors

    def restore(self):
        return self.saved


def test_resumed_run_equals_uninterrupted(data_in_memory):
    from tasks.cmim.run import run_method

    bench = Benchmark("digits", "cmim_digits", {"kind": "image", "likelihood": "gaussian", "sigma0": 0.1})
    hp = {"epochs": 3, "lr": 1e-3, "latent": 4, "hidden": [16, 8], "warmup_epochs": 2, "w_rec": 1.0, "tau": 0.1,
          "batch_size": 256, "logreg_max_iter": 50, "checkpoint_every": 1}
    method = Method("cmim", "cmim", hp)
    full = run_method(task, method, bench, dict(hp), _Ctx(0))
    ctx = _Ctx(0, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_method(task, method, bench, dict(hp), ctx)
    ctx.stop_after = None
    resumed = run_method(task, method, bench, dict(hp), ctx)
    # stopped while logging epoch 2, before its checkpoint: epoch 2 is replayed from epoch 1's state
    assert ctx.logged == [1, 2, 2, 3] and resumed.metrics == full.metrics
