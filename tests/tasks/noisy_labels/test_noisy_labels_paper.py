"""Paper scale before a GPU: every paper run (ResNet-18 at its real width, feature_dim 512, on
32x32x3 CIFAR-10/100 in the HF format) takes real training steps on a tiny fixture, in the DAG's
dependency order (stage two loads its stage-one pair), and the estimate counts the network."""

from __future__ import annotations

import numpy as np
import pytest

from factories import no_shrunk_variants_left
from harness.plugins import get_task
from harness.runner import run_one

TASK = "noisy_labels"
#: Only the schedule and the batch shrink (stage two's fine-tune too, in the slow test).
SHRINK = {"epochs": 1, "batch_size": 16, "warmup_iters": 1}
FINETUNE = {"finetune_epochs": 1}


@pytest.fixture
def paper_data(tmp_path, monkeypatch):
    import datasets
    from PIL import Image

    import harness.data as hdata
    from tasks.noisy_labels.data import BUILDERS

    rng = np.random.default_rng(0)
    for name, classes in (("cifar10", 10), ("cifar100", 100)):
        n_train = 4 * classes if classes == 10 else 5 * classes // 2  # x2 below: the 10% holdout keeps a row per class

        def split(n):
            return datasets.Dataset.from_dict({
                "img": [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)],
                ("label" if classes == 10 else "fine_label"): [i % classes for i in range(n)]})

        datasets.DatasetDict({"train": split(n_train * 2), "test": split(20)}).save_to_disk(str(tmp_path / name))
        monkeypatch.setenv(f"HARNESS_{name.upper()}_SOURCE", str(tmp_path / name))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(hdata, "builders", lambda: {n: (BUILDERS[n], [TASK]) for n in ("cifar10", "cifar100")})
    for name in ("cifar10", "cifar100"):
        hdata.build(name, tmp_path / "data")
    return tmp_path


_no_shrunk_variants_left = no_shrunk_variants_left(TASK)  # tests/factories.py


def _runs(paper_data, benchmarks):
    from harness.dag import plan

    return [r for r in plan("paper", [TASK], results_dir=str(paper_data / "r")).values()
            if r.seed in (0, 1000) and r.benchmark in benchmarks]


def _check(rec):
    assert rec["status"] in ("ok", "diverged"), rec.get("error")
    assert rec["config"]["feature_dim"] == 512 and rec["config"]["augment"] is True


@pytest.mark.parametrize("bench", ["cifar10-sym50", pytest.param("cifar100-asym40", marks=pytest.mark.slow)])
def test_stage_one_takes_real_steps(paper_data, bench):
    """Nested dropout (the K=512 evaluation over every k included); CIFAR-100 (500 images) is slow."""
    rec = run_one(TASK, "nested_dropout[sigma=10]", bench, 0, "paper",
                  overrides={**SHRINK, "batch_size": 16 if bench.startswith("cifar10-") else 64},
                  results_dir=paper_data / "r")
    _check(rec)
    assert rec["info"]["arch"] == "resnet18"


@pytest.mark.slow
def test_every_paper_run_of_a_benchmark_takes_real_steps(paper_data, monkeypatch):
    """Every variant of cifar10-sym50 (and its network-B seeds), in the DAG's order."""
    cfg = get_task(TASK).config
    # The config caches its resolved variants: none from before the shrunk schedule, and none of
    # the shrunk ones left for later tests (cleared again at the end).
    cfg._variant_cache.clear()
    paper = cfg.scale("paper")
    for k, v in SHRINK.items():  # in the scale itself: overrides would rename the runs stage two requires
        if k in paper.defaults:
            monkeypatch.setitem(paper.defaults, k, v)
    for spec in paper.methods.values():
        for k, v in FINETUNE.items():
            if spec and k in spec:
                monkeypatch.setitem(spec, k, v)
    runs = _runs(paper_data, {"cifar10-sym50"})
    variants = {r.variant for r in runs}
    assert {"nested_coteach", "dropout_coteach", "ensemble", "coteaching_best"} <= variants
    for r in runs:
        _check(run_one(TASK, r.variant, r.benchmark, r.seed, "paper", results_dir=paper_data / "r"))


def test_estimate_counts_resnet18():
    from tasks.noisy_labels.estimate import N_TRAIN, per_image

    task = get_task(TASK)
    train, fwd, params, _ = per_image("resnet18", 10, 512, "none")
    assert 10.9e6 < params < 11.4e6  # CIFAR ResNet-18 (11.2M)
    assert fwd == pytest.approx(2 * 0.556e9, rel=0.03) and train == pytest.approx(3 * fwd, rel=0.02)
    cfg = task.config
    bench = cfg.benchmark("paper", "cifar10-sym50")
    m = cfg.resolve("paper", "ce[weight_decay=0.0005]")
    est = task.estimate(m, bench, dict(m.hyperparameters), "paper")
    assert est.flops == pytest.approx(350 * N_TRAIN * train, rel=0.05) and est.peak_memory_bytes < 80e9
    pair = cfg.resolve("paper", "nested_coteach")
    two = task.estimate(pair, bench, dict(pair.hyperparameters), "paper")
    assert two.flops == pytest.approx(2 * 100 / 350 * est.flops, rel=0.05)
    best = cfg.resolve("paper", "nested_best")
    assert task.estimate(best, bench, dict(best.hyperparameters), "paper").flops == 0
