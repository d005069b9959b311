"""Dataset builders: the toy's exact means, the pre-training / stream splits of the small benchmarks,
the docstring corpus and its bundled MiniLM encoder (offline), and the paper-scale CIFAR embedding
builder on tiny local fixtures with random-weight backbones loaded by transformers' own code."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tasks.dkvb import data as data_mod
from tasks.dkvb.train import make_stream, train_run


class Ctx:
    device = "cpu"

    def log(self, step, curve="train", **metrics):
        pass


def test_toy_means_and_test_set():
    assert data_mod.toy_class_means() == {0: (0.25, 0.25), 4: (0.75, 0.5), 1: (0.75, 0.25), 5: (0.5, 0.75),
                                          2: (0.75, 0.75), 6: (0.25, 0.5), 3: (0.25, 0.75), 7: (0.5, 0.25)}
    x, y = data_mod.toy_sample(2, 4000, np.random.default_rng(0))
    assert set(y.tolist()) == {2, 6}
    for c, m in ((2, (0.75, 0.75)), (6, (0.25, 0.5))):
        np.testing.assert_allclose(x[y == c].mean(0), m, atol=0.005)
        np.testing.assert_allclose(x[y == c].std(0), [0.035, 0.035], atol=0.003)
    arrays = data_mod.to_arrays(data_mod.build_toy2d())
    assert arrays["x_test"].shape == (2000, 2) and set(arrays["y_test"].tolist()) == set(range(8))


@pytest.mark.parametrize("builder,sizes,dim", [("build_digits", (897, 600, 300), 32), ("build_mnist", (2500, 2000, 500), 64)])
def test_pca_encoder_is_fitted_on_the_pretraining_half_only(builder, sizes, dim):
    a = data_mod.to_arrays(getattr(data_mod, builder)())
    assert tuple(len(a[f"y_{s}"]) for s in ("pretrain", "train", "test")) == sizes
    assert a["x_train"].shape[1] == dim
    np.testing.assert_allclose(a["x_pretrain"].mean(0), 0, atol=1e-4)  # PCA centres its own fitting data
    assert np.abs(a["x_train"].mean(0)).max() > 1e-3  # ... and not the stream's
    assert all(np.bincount(a[f"y_{s}"], minlength=10).min() > 0 for s in ("train", "test"))


def _fake_stdlib(root):
    for pkg, n in (("alpha", 6), ("beta", 6), ("gamma", 4), ("delta", 3)):
        (root / pkg).mkdir()
        body = "".join(f'def f{i}():\n    """{pkg} helper number {i} does {pkg} things."""\n' for i in range(n))
        (root / pkg / "__init__.py").write_text(body)
    (root / "test").mkdir()
    (root / "test" / "x.py").write_text('def t():\n    """a test docstring that is long enough"""\n')


def test_docstring_corpus_labels_by_package_and_fits_keys_on_other_packages(tmp_path):
    _fake_stdlib(tmp_path)
    docs = data_mod.stdlib_docstrings(tmp_path)
    assert sorted(docs) == ["alpha", "beta", "delta", "gamma"] and len(docs["alpha"]) == 6  # test/ left out

    class Encoder:  # a stand-in: the package name's letters as features
        def encode(self, texts, batch_size=64, convert_to_numpy=True):
            return np.array([[t.count(ch) for ch in "abgdelt"] for t in texts], np.float32)

    dd = data_mod.build_docstrings(tmp_path, classes=("alpha", "beta"), per_class=5, test_per_class=2,
                                   pretrain_max=10, encoder=Encoder())
    a = data_mod.to_arrays(dd)
    assert len(a["y_train"]) == 6 and len(a["y_test"]) == 4 and len(a["y_pretrain"]) == 7  # gamma + delta
    assert sorted(np.bincount(a["y_test"]).tolist()) == [2, 2]
    with pytest.raises(ValueError, match="too few docstrings"):
        data_mod.build_docstrings(tmp_path, classes=("alpha", "delta"), per_class=5, encoder=Encoder())


def test_bundled_minilm_loads_offline_and_embeds():
    os.environ["HF_HUB_OFFLINE"] = "1"
    model = data_mod.load_text_encoder()
    e = np.asarray(model.encode(["Return the directory name of a path.", "Return the final component of a path.",
                                 "Send an e-mail message over SMTP."]))
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2]


@pytest.fixture
def cifar_fixture(tmp_path, monkeypatch):
    """Tiny CIFAR-10/100 in the hub's format and random-weight ResNet / CLIP vision towers saved with
    save_pretrained: the paper-scale builder runs end to end, nothing downloads."""
    import datasets
    from PIL import Image
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection,
                              ConvNextImageProcessor, ResNetConfig, ResNetModel)

    torch.manual_seed(0)
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 16], depths=[1, 1, 1, 1])).save_pretrained(tmp_path / "rn")
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(tmp_path / "rn")
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, image_size=32, patch_size=16,
                                                   projection_dim=8)).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    rng = np.random.default_rng(0)

    def cifar(n_classes, col, n_train):
        def split(n):
            feats = datasets.Features({"img": datasets.Image(), col: datasets.ClassLabel(num_classes=n_classes)})
            return datasets.Dataset.from_dict({"img": [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
                                                       for _ in range(n)], col: [i % n_classes for i in range(n)]}, features=feats)
        return datasets.DatasetDict({"train": split(n_train), "test": split(10)})

    cifar(10, "label", 30).save_to_disk(str(tmp_path / "c10"))
    cifar(100, "fine_label", 20).save_to_disk(str(tmp_path / "c100"))
    for env, sub in (("HARNESS_CIFAR10_SOURCE", "c10"), ("HARNESS_CIFAR100_SOURCE", "c100"),
                     ("HARNESS_DKVB_RESNET50", "rn"), ("HARNESS_DKVB_CLIP", "clip")):
        monkeypatch.setenv(env, str(tmp_path / sub))
    return tmp_path


def test_cifar_embeddings_with_random_weight_backbones(cifar_fixture):
    a = data_mod.to_arrays(data_mod.build_cifar_embeddings("cifar10", "resnet50", device="cpu"))
    # ResNet pooled layer-4 features (16-d in this tiny config); keys' data = CIFAR-100's training images
    assert a["x_train"].shape == (30, 16) and a["x_test"].shape == (10, 16) and a["x_pretrain"].shape == (20, 16)
    assert np.isfinite(a["x_train"]).all() and a["y_train"].tolist()[:3] == [0, 1, 2]
    b = data_mod.to_arrays(data_mod.build_cifar_embeddings("cifar100", "clip", device="cpu"))
    assert b["x_train"].shape == (20, 8) and b["x_pretrain"].shape == (30, 8)  # CLIP image_embeds; CIFAR-10 keys
    # a paper-style run on these embeddings (shrunk): the same loop, the full 5 x 2 CIFAR-10 stream
    hp = {"num_codebooks": 4, "num_pairs": 8, "dim_keys": 4, "init_epochs": 2, "init_batch_size": 8,
          "threshold_factor": 0.1, "lr": 0.3, "batch_size": 4, "epochs_per_task": 2, "label_smoothing": 0.1,
          "grad_clip": 1.0}
    result = train_run("dkvb", make_stream(a, {}, hp, 1), hp, 1, Ctx())
    assert len(result.info["tasks"]) == 5 and result.info["steps"] == 5 * 2 * 2


def test_missing_backbone_weights_give_one_clear_error(monkeypatch, tmp_path):
    from harness.config import ConfigError

    monkeypatch.setenv("HARNESS_DKVB_CLIP", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="HARNESS_DKVB_CLIP"):
        data_mod.load_backbone("clip")
