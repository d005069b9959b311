"""Paper scale before a GPU: a tiny randomly initialised CLIP saved in the ``transformers`` format
(weights and a byte-level tokenizer) and two tiny image datasets in the CoOp/HF format go through
the real path - the dataset builder, the weight loader, the few-shot split, an R-AMT step and
every evaluation pass; and the bill of the paper plan."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch


def _byte_chars() -> list[str]:
    """GPT-2 / CLIP's printable stand-in for each of the 256 bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _tiny_tokenizer(folder):
    chars = _byte_chars()
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


@pytest.fixture(scope="module")
def paper_fixture(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    import datasets
    from PIL import Image

    root = tmp_path_factory.mktemp("paper")
    clip_dir = root / "clip"
    clip_dir.mkdir()
    vocab = _tiny_tokenizer(clip_dir)
    transformers.CLIPTokenizer(str(clip_dir / "vocab.json"), str(clip_dir / "merges.txt")).save_pretrained(clip_dir)
    cfg = transformers.CLIPConfig(
        text_config={"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "max_position_embeddings": 40},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                           "image_size": 32, "patch_size": 16}, projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPModel(cfg).save_pretrained(clip_dir)
    rng = np.random.default_rng(0)

    def folder(name, classes, n_train, n_test, test_split="test"):
        img = lambda: Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
        dd = datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"image": [img() for _ in range(n_train)],
                                                 "label": [i % len(classes) for i in range(n_train)]}, features=feats),
            test_split: datasets.Dataset.from_dict({"image": [img() for _ in range(n_test)],
                                                    "label": [i % len(classes) for i in range(n_test)]}, features=feats)})
        dd.save_to_disk(str(root / name))
        return root / name

    return SimpleNamespace(clip=clip_dir, dtd=folder("dtd", ["banded", "dotted", "striped_x"], 30, 6),
                           imagenet=folder("imagenet", ["tench", "goldfish"], 4, 6, "validation"), root=root)


def test_paper_run_smoke(paper_fixture, monkeypatch, tmp_path):
    from harness.api import Method
    from harness.data import build
    from tasks.mask_tuning import task
    from tasks.mask_tuning.paper import CLIP_ENV
    from tasks.mask_tuning.run import run_method

    monkeypatch.setenv(CLIP_ENV, str(paper_fixture.clip))
    monkeypatch.setenv("HARNESS_DTD_SOURCE", str(paper_fixture.dtd))
    monkeypatch.setenv("HARNESS_IMAGENET_SOURCE", str(paper_fixture.imagenet))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    build("mask_tuning_dtd", tmp_path)
    from harness.data import load_dataset

    dd = load_dataset("mask_tuning_dtd")
    assert dd["train"].features["label"].names == ["banded texture.", "dotted texture.", "striped x texture."]
    assert dd["retention"].features["label"].names == ["a photo of a tench.", "a photo of a goldfish."]
    hp = dict(task.config.resolve("paper", "ramt").hyperparameters)
    bench = task.config.benchmark("paper", "dtd-2shot")
    assert hp["lr"] == 8e-5 and hp["epochs"] == 30 and hp["mask_threshold"] == 5e-3
    hp.update(epochs=1, image_size=32, eval_batch=4)
    ctx = SimpleNamespace(seed=1, device="cpu", out_dir=tmp_path, log=lambda *a, **k: None)
    res = run_method(task, Method("ramt", "ramt", hp), bench, hp, ctx)
    m = {x.name: x.value for x in res.metrics}
    assert set(m) >= {"accuracy", "retention", "mask_sparsity", "val_accuracy"}
    assert res.info["train_images"] == 6 and res.info["tuned_classes"] == 3
    assert all(math.isfinite(v) for v in m.values())


def test_paper_bill():
    from harness.estimate import counted_flops
    from tasks.mask_tuning import model as M
    from tasks.mask_tuning import task
    from tasks.mask_tuning.paper import VIT_B16, image_forward_flops, train_step_flops

    n_vis = sum(math.prod(s) for k, s in M.weight_shapes(VIT_B16).items() if k.startswith("visual."))
    assert 85e6 < n_vis < 87e6  # ViT-B/16 image tower: 86M parameters
    fwd = image_forward_flops(VIT_B16)
    assert 33e9 < fwd < 36e9  # ~17.6 GMACs per 224x224 image
    assert counted_flops(lambda: None) == 0
    cfg = task.config
    est = {}
    for v in ("amt", "ramt", "zero_shot"):
        m = cfg.for_benchmark("paper", cfg.resolve("paper", v), cfg.benchmark("paper", "imagenet-16shot"))
        est[v] = task.estimate(m, cfg.benchmark("paper", "imagenet-16shot"), dict(m.hyperparameters), "paper")
    # 16k images, 10 epochs of 500 steps of 32, one candidate; R-AMT adds the teacher's forward once per image
    steps = 10 * 500
    evals = (50000 + 2000 + 4000) * fwd
    assert est["amt"].flops == pytest.approx(steps * 32 * train_step_flops(VIT_B16, "mask") + evals, rel=1e-6)
    assert est["ramt"].flops == pytest.approx(steps * 32 * train_step_flops(VIT_B16, "gdr") + 16000 * fwd + evals, rel=1e-6)
    # a step's backward computes only the trained tensors' gradients: AMT < fwd + 2 fwd, R-AMT < 5 fwd
    assert 2.0 < train_step_flops(VIT_B16, "mask") / fwd < 3.0
    assert train_step_flops(VIT_B16, "mask") < train_step_flops(VIT_B16, "gdr") < 2 * train_step_flops(VIT_B16, "mask")
    assert 2.9 < train_step_flops(VIT_B16, "full") / fwd < 3.1
    assert est["zero_shot"].flops == pytest.approx(evals, rel=1e-6)
    assert est["amt"].peak_memory_bytes < 141e9
    assert task.estimate(cfg.resolve("small", "amt"), cfg.benchmark("small", "shift-16shot"), {}, "small") is None


def test_paper_step_benchmark_dry_run(tmp_path):
    """benchmarks/paper_steps.py's R-AMT step: the estimator's per-step count is the step's counted FLOPs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
    import paper_steps

    out = tmp_path / "steps.json"
    assert paper_steps.main(["--dry-run", "--task", "mask_tuning", "--steps", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["tasks"]["mask_tuning"]
    assert r["seconds_per_step"] > 0 and 0.95 < r["estimated_over_counted_flops"] < 1.05
