"""Paper scale before a GPU: the paper's bottleneck at its real size (C = 256 codebooks of N = 4,096
keys of d_k = 14, zero-initialised values of the class count) on the real embedding widths (ResNet-50
pooled layer 4: 2,048; CLIP ViT-B/32: 512), built by the paper-scale builder from tiny CIFAR
fixtures in the hub's format and random-weight backbones saved with ``save_pretrained`` (nothing
downloads), taking real training steps through the harness on the full 5 x 2 class-incremental
stream; the estimate's FLOPs are the ones torch's flop counter counts in that very run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import no_shrunk_variants_left

from harness.plugins import get_task
from harness.runner import run_one

TASK = "dkvb"
#: Only the schedule shrinks: one epoch per task, one key-initialisation epoch, an evaluation per epoch.
SHRINK = {"epochs_per_task": 1, "init_epochs": 1, "eval_every": 1}


_no_shrunk_variants_left = no_shrunk_variants_left(TASK)  # tests/factories.py


@pytest.fixture
def paper_data(tmp_path, monkeypatch):
    """CIFAR-10 (20 training, 10 test images) and CIFAR-100 (20 training images: the keys' data) as
    save_to_disk folders in the hub's layout, a ResNet whose pooled output is 2,048-d and a CLIP
    vision tower with 512-d image embeddings, both random and tiny otherwise; the four paper
    datasets are built from them into a data root by the task's own builders."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        ConvNextImageProcessor,
        ResNetConfig,
        ResNetModel,
    )

    import harness.data as hdata
    from tasks.dkvb import run as run_mod
    from tasks.dkvb.data import BUILDERS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    torch.manual_seed(0)
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 16, 2048], depths=[1, 1, 1, 1])
                ).save_pretrained(tmp_path / "rn")
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(tmp_path / "rn")
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, image_size=32, patch_size=16,
                                                   projection_dim=512)).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    save_cifar(tmp_path / "c10", 10, "label", 20, 10)
    save_cifar(tmp_path / "c100", 100, "fine_label", 20, 10)
    for env, sub in (("HARNESS_CIFAR10_SOURCE", "c10"), ("HARNESS_CIFAR100_SOURCE", "c100"),
                     ("HARNESS_DKVB_RESNET50", "rn"), ("HARNESS_DKVB_CLIP", "clip")):
        monkeypatch.setenv(env, str(tmp_path / sub))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    names = [n for n in BUILDERS if n.startswith("dkvb_cifar")]
    monkeypatch.setattr(hdata, "builders", lambda: {n: (BUILDERS[n], [TASK]) for n in names})
    monkeypatch.setattr(run_mod, "_ARRAYS", {})  # the fixture's arrays never reach a later test
    return tmp_path


def save_cifar(folder, n_classes, col, n_train, n_test):
    """A CIFAR in the hub's layout (``img``; ``label`` or ``fine_label``), classes in turn."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(n_classes)

    def split(n):
        feats = datasets.Features({"img": datasets.Image(), col: datasets.ClassLabel(num_classes=n_classes)})
        return datasets.Dataset.from_dict({"img": [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
                                                   for _ in range(n)], col: [i % n_classes for i in range(n)]},
                                          features=feats)

    datasets.DatasetDict({"train": split(n_train), "test": split(n_test)}).save_to_disk(str(folder))


def _build(paper_data, *names):
    import harness.data as hdata

    for name in names:
        hdata.build(name, paper_data / "data")


def check(rec, benchmark):
    assert rec["status"] == "ok", rec.get("error")
    cfg, info = rec["config"], rec["info"]
    classes = 100 if benchmark.startswith("cifar100") else 10
    assert len(info["tasks"]) == classes // 2 and sorted(c for t in info["tasks"] for c in t) == list(range(classes))
    if rec["method"].startswith("dkvb"):
        assert (cfg["num_codebooks"], cfg["num_pairs"], cfg["dim_keys"]) in ((256, 4096, 14), (16, 4096, 14),
                                                                             (256, 256, 14), (256, NARROW_PAIRS, 14),
                                                                             (16, NARROW_PAIRS, 14))
        assert cfg["lr"] == 0.3 and cfg["batch_size"] == 256 and cfg["label_smoothing"] == 0.1
    metrics = {m["name"]: m["value"] for m in rec["metrics"]}
    assert 0.0 <= metrics["test_accuracy"] <= 100.0


def test_paper_dkvb_takes_real_steps_and_the_estimate_counts_them(paper_data):
    """The paper's DKVB on 2,048-d ResNet-50 embeddings: EMA keys fitted on CIFAR-100's embeddings,
    the stream's indices cached, five tasks of real SGD steps on the values; the FLOPs torch counts
    in that run are the estimator's for the fixture's sizes (~10 s: every routing searches 1M keys)."""
    from harness.estimate import counted_flops
    from tasks.dkvb.estimate import run_cost
    from tasks.dkvb.run import load_arrays

    _build(paper_data, "dkvb_cifar10_resnet50")
    recs = []
    flops = counted_flops(lambda: recs.append(run_one(TASK, "dkvb", "cifar10-resnet50", 1, "paper", overrides=SHRINK,
                                                      results_dir=paper_data / "r")))
    (rec,) = recs
    check(rec, "cifar10-resnet50")
    a = load_arrays("dkvb_cifar10_resnet50")
    assert a["x_train"].shape == (20, 2048) and a["x_pretrain"].shape == (20, 2048) and a["x_test"].shape == (10, 2048)
    assert rec["info"]["steps"] == 5  # one batch (4 images < 256) per task and epoch
    assert len(rec["info"]["init_quantisation_error"]) == 2
    cfg = get_task(TASK).config
    hp = {**dict(cfg.resolve("paper", "dkvb").hyperparameters), **SHRINK}
    estimated, _, steps, _ = run_cost("dkvb", hp, 20, 10, 20, 10, 2048)
    assert steps == 5 and 0.9 < estimated / flops < 1.2  # the same tolerance as benchmarks/paper_steps.py


def test_paper_baselines_take_real_steps_on_clip_embeddings(paper_data):
    """The linear probe and the MLP on 512-d CLIP embeddings, the same stream (seconds)."""
    _build(paper_data, "dkvb_cifar10_clip")
    for variant in ("linear_probe", "mlp_iid"):
        rec = run_one(TASK, variant, "cifar10-clip", 2, "paper", overrides=SHRINK, results_dir=paper_data / "r")
        check(rec, "cifar10-clip")
        assert rec["config"]["probe_lr"] == 0.001 and rec["config"]["mlp_lr"] == 0.001


def test_the_paper_bill():
    """Every paper run is costed, fits one H100 with room to spare, and the launch-bound time model
    gives the card's 'one to a few minutes per run' (§10)."""
    from harness.estimate import bill

    b = bill("paper", [TASK])
    (t,) = b.tasks
    assert t.runs == t.estimated == 220 and t.not_fitting == 0 and t.peak_memory_bytes < 8e9
    assert t.checkpoint_bytes == 0 and 1e9 < t.data_bytes < 4e9  # four embedding datasets, float32
    minutes = sorted(r.gpu_hours * 60 for r in b.runs)
    assert 0.5 < minutes[0] and minutes[-1] < 10 and 2 < t.gpu_hours < 30
    main = next(r for r in b.runs if r.variant == "dkvb" and r.benchmark == "cifar10-resnet50")
    assert "C=256 N=4096 d_k=14 on 2048-d" in main.note and "400,000 steps" in main.note


#: The sweep's key count: every variant's code path with 512 keys per codebook instead of 4,096 (the
#: 4,096-key routing takes its steps in the test above); ``dkvb_few_pairs`` keeps its 256.
NARROW_PAIRS = 512


@pytest.mark.slow
def test_every_paper_variant_takes_real_steps(paper_data):
    """Every variant on CIFAR-10 (ResNet-50 embeddings), and the DKVB on the 50-task CIFAR-100
    stream, at NARROW_PAIRS keys per codebook."""
    save_cifar(paper_data / "c100", 100, "fine_label", 100, 100)  # every class in both splits: 50 full tasks
    _build(paper_data, "dkvb_cifar10_resnet50", "dkvb_cifar100_clip")
    cfg = get_task(TASK).config
    runs = [(cfg.resolve("paper", "dkvb"), "cifar100-clip")] + [(v, "cifar10-resnet50") for v in cfg.variants("paper")]
    for v, bench in runs:
        narrow = {"num_pairs": NARROW_PAIRS} if v.hyperparameters["num_pairs"] > NARROW_PAIRS else {}
        check(run_one(TASK, v.variant, bench, 1, "paper", overrides={**SHRINK, **narrow},
                      results_dir=paper_data / "r"), bench)
