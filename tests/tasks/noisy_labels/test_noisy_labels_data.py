"""Dataset builders: digits and MNIST-1D splits (no network), CIFAR from a local HF-format fixture."""

import numpy as np
import pytest

from tasks.noisy_labels import data as data_mod
from tasks.noisy_labels.data import DatasetUnavailable, build_cifar10, build_cifar100, to_arrays


def test_digits_splits(digits_dd):
    assert {s: digits_dd[s].num_rows for s in digits_dd} == {"train": 1000, "validation": 300, "test": 497}
    arr = to_arrays(digits_dd)
    assert arr.kind == "vector" and arr.num_classes == 10 and arr.x_train.shape == (1000, 64)
    assert 0.0 <= arr.x_train.min() and arr.x_train.max() <= 1.0
    from sklearn.datasets import load_digits

    full = np.bincount(load_digits().target, minlength=10)
    for y, n in ((arr.y_train, 1000), (arr.y_val, 300), (arr.y_test, 497)):
        counts = np.bincount(y, minlength=10)
        assert counts.sum() == n
        assert np.abs(counts - n * full / full.sum()).max() <= 1.5  # stratified
    again = to_arrays(data_mod.build_digits())
    assert np.array_equal(arr.x_val, again.x_val) and np.array_equal(arr.y_train, again.y_train)


def test_mnist1d_is_generated_offline(monkeypatch):
    import requests

    def no_network(*a, **k):
        raise AssertionError("the MNIST-1D builder must not download")

    monkeypatch.setattr(requests, "get", no_network)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    dd = data_mod.build_mnist1d()
    assert np.array_equal(np.random.get_state()[1], before)  # global RNG left as found
    assert {s: dd[s].num_rows for s in dd} == {"train": 3500, "validation": 500, "test": 1000}
    arr = to_arrays(dd)
    assert arr.x_train.shape == (3500, 40) and np.bincount(arr.y_val, minlength=10).min() >= 49


def _image_split(n_per_class, classes, num_classes, label_cols, seed):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = {"img": [], **{c: [] for c in label_cols}}
    for c in classes:
        for _ in range(n_per_class):
            rows["img"].append(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
            for col in label_cols:
                rows[col].append(c if col != "coarse_label" else c // 5)
    feats = {"img": datasets.Image(), **{c: datasets.ClassLabel(num_classes=num_classes if c != "coarse_label" else 20)
                                         for c in label_cols}}
    return datasets.Dataset.from_dict(rows, features=datasets.Features(feats))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def test_cifar10_from_local_parquet(tmp_path, monkeypatch, hf_cache):
    src = tmp_path / "cifar10"
    src.mkdir()
    _image_split(10, range(10), 10, ["label"], 0).to_parquet(str(src / "train-00000-of-00001.parquet"))
    _image_split(3, range(10), 10, ["label"], 1).to_parquet(str(src / "test-00000-of-00001.parquet"))
    monkeypatch.setenv("HARNESS_CIFAR10_SOURCE", str(src))
    dd = build_cifar10()
    assert {s: dd[s].num_rows for s in dd} == {"train": 90, "validation": 10, "test": 30}
    assert dd["train"].column_names == ["img", "label"]
    assert np.bincount(dd["validation"]["label"], minlength=10).tolist() == [1] * 10  # 10% of each class
    arr = to_arrays(dd)
    assert arr.kind == "image" and arr.x_train.shape == (90, 32, 32, 3) and arr.x_train.dtype == np.uint8
    assert arr.num_classes == 10
    again = build_cifar10()
    assert again["validation"]["label"] == dd["validation"]["label"]


def test_cifar100_from_save_to_disk_with_fine_labels(tmp_path, monkeypatch):
    import datasets

    cols = ["fine_label", "coarse_label"]
    dd = datasets.DatasetDict({"train": _image_split(10, range(0, 100, 10), 100, cols, 0),
                               "test": _image_split(2, range(0, 100, 10), 100, cols, 1)})
    dd.save_to_disk(str(tmp_path / "c100"))
    monkeypatch.setenv("HARNESS_CIFAR100_SOURCE", str(tmp_path / "c100"))
    out = build_cifar100()
    assert out["train"].column_names == ["img", "label"]
    assert {s: out[s].num_rows for s in out} == {"train": 90, "validation": 10, "test": 20}
    assert to_arrays(out).num_classes == 100


def test_cifar_offline_gives_one_clear_error(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HARNESS_CIFAR10_SOURCE", str(tmp_path / "missing"))
    with pytest.raises(DatasetUnavailable, match="HARNESS_CIFAR10_SOURCE"):
        build_cifar10()

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'uoft-cs/cifar100' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.delenv("HARNESS_CIFAR100_SOURCE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetUnavailable, match="network access.*HARNESS_CIFAR100_SOURCE"):
        build_cifar100()
