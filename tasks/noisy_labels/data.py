"""Dataset builders (each returns a ``datasets.DatasetDict`` with train/validation/test) and
the loader that turns a materialised DatasetDict into tensors for training.

Small scale never touches the network:

* ``digits``: scikit-learn's 8x8 digits (1797 images), pixel values / 16, stratified split with
  a fixed seed into 1000 train / 300 clean validation / 497 clean test (card §9).
* ``mnist1d``: generated with ``mnist1d.data.make_dataset(get_dataset_args())`` (never the
  download path): 4000 train / 1000 test; 500 clean validation carved stratified from train.

Paper scale (``cifar10``, ``cifar100``): ``datasets.load_dataset(source)`` in the Hugging Face
format (``img`` + ``label`` / ``fine_label``, splits train/test); 10% of each class of the
official train set is held out as the clean validation set (repo protocol, fixed seed).
``source`` defaults to the hub id and is overridden by ``HARNESS_CIFAR10_SOURCE`` /
``HARNESS_CIFAR100_SOURCE`` (a hub id, a folder of parquet files, or a ``save_to_disk`` folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.data import DatasetUnavailable, load_source

#: Seed of every train/validation/test split (fixed: the split is part of the dataset).
SPLIT_SEED = 0

CIFAR_SOURCES = {
    "cifar10": ("HARNESS_CIFAR10_SOURCE", "uoft-cs/cifar10", 10),
    "cifar100": ("HARNESS_CIFAR100_SOURCE", "uoft-cs/cifar100", 100),
}
#: Per-channel normalisation of the repo (nested/train_resnet.py).
CIFAR_NORM = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}


# -- small-scale builders -----------------------------------------------------------------

def _stratified_split(y: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    keep, hold = train_test_split(idx, test_size=n_holdout, stratify=y, random_state=seed)
    return np.sort(keep), np.sort(hold)


def _vector_dict(splits: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int):
    import datasets

    features = datasets.Features({
        "x": datasets.Sequence(datasets.Value("float32")),
        "label": datasets.ClassLabel(names=[str(i) for i in range(num_classes)]),
    })
    return datasets.DatasetDict({
        name: datasets.Dataset.from_dict(
            {"x": x.astype(np.float32).tolist(), "label": y.astype(np.int64).tolist()}, features=features)
        for name, (x, y) in splits.items()
    })


def build_digits():
    """sklearn digits: 1000 train / 300 clean val / 497 clean test, stratified, seed 0."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rest, test = _stratified_split(y, 497, SPLIT_SEED)
    tr_local, val_local = _stratified_split(y[rest], 300, SPLIT_SEED)
    train, val = rest[tr_local], rest[val_local]
    return _vector_dict({"train": (x[train], y[train]), "validation": (x[val], y[val]),
                         "test": (x[test], y[test])}, 10)


def build_mnist1d():
    """MNIST-1D generated procedurally with the package's default arguments (no download)."""
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # make_dataset reseeds numpy's global RNG; leave it as found
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    x, y = np.asarray(d["x"], np.float32), np.asarray(d["y"], np.int64)
    tr, val = _stratified_split(y, 500, SPLIT_SEED)
    return _vector_dict({"train": (x[tr], y[tr]), "validation": (x[val], y[val]),
                         "test": (np.asarray(d["x_test"], np.float32), np.asarray(d["y_test"], np.int64))}, 10)


# -- paper-scale builders -----------------------------------------------------------------

def _load_source(name: str):
    env_var, hub_id, _ = CIFAR_SOURCES[name]
    return load_source(name.upper(), env_var, hub_id, "train/test splits with columns img and label")


def build_cifar(name: str):
    """CIFAR-10/100 in HF format; 10% of each class of train held out as clean validation."""
    import datasets

    _, _, num_classes = CIFAR_SOURCES[name]
    raw = _load_source(name)
    if "train" not in raw or "test" not in raw:
        raise DatasetUnavailable(f"{name}: the source must have train and test splits (found {list(raw)})")
    out = {}
    for split in ("train", "test"):
        ds = raw[split]
        cols = set(ds.column_names)
        if "image" in cols and "img" not in cols:
            ds = ds.rename_column("image", "img")
        label_col = "fine_label" if "fine_label" in cols else "label"
        if label_col not in cols or "img" not in set(ds.column_names):
            raise DatasetUnavailable(f"{name}/{split}: expected columns img and label/fine_label, got {sorted(cols)}")
        if label_col != "label":
            ds = ds.rename_column(label_col, "label")
        ds = ds.remove_columns([c for c in ds.column_names if c not in ("img", "label")])
        if not isinstance(ds.features["label"], datasets.ClassLabel):
            ds = ds.cast_column("label", datasets.ClassLabel(num_classes=num_classes))
        out[split] = ds
    y = np.asarray(out["train"]["label"], dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(SPLIT_SEED))
    val_idx = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        val_idx.extend(rng.permutation(idx)[: int(np.floor(0.1 * len(idx) + 0.5))].tolist())
    val_idx = np.sort(np.asarray(val_idx, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    return datasets.DatasetDict({"train": out["train"].select(train_idx),
                                 "validation": out["train"].select(val_idx),
                                 "test": out["test"]})


def build_cifar10():
    return build_cifar("cifar10")


def build_cifar100():
    return build_cifar("cifar100")


BUILDERS = {"digits": build_digits, "mnist1d": build_mnist1d,
            "cifar10": build_cifar10, "cifar100": build_cifar100}


# -- loading for training -----------------------------------------------------------------

@dataclass
class Arrays:
    """One dataset as numpy arrays (clean labels everywhere)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    kind: str
    """``vector`` (float features) or ``image`` (uint8 NHWC)."""


def load_dataset_dict(name: str):
    """The materialised DatasetDict (through the harness, which reads ``data/<name>/``)."""
    from harness.data import load_dataset

    return load_dataset(name)


def to_arrays(dsd: Any) -> Arrays:
    """DatasetDict -> numpy arrays."""
    feats = dsd["train"].features
    num_classes = feats["label"].num_classes if hasattr(feats["label"], "num_classes") else \
        int(max(max(dsd[s]["label"]) for s in ("train", "validation", "test"))) + 1
    out: dict[str, np.ndarray] = {}
    if "x" in feats:
        kind = "vector"
        for split, key in (("train", "train"), ("validation", "val"), ("test", "test")):
            table = dsd[split].with_format("arrow")[:]  # columnar: no per-row Python formatting
            values = table.column("x").combine_chunks().flatten()
            out[f"x_{key}"] = np.asarray(values, dtype=np.float32).reshape(table.num_rows, -1)
            out[f"y_{key}"] = np.asarray(table.column("label"), dtype=np.int64)
    else:
        kind = "image"
        for split, key in (("train", "train"), ("validation", "val"), ("test", "test")):
            ds = dsd[split]
            imgs = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in ds["img"]]
            out[f"x_{key}"] = np.stack(imgs)
            out[f"y_{key}"] = np.asarray(ds["label"], dtype=np.int64)
    return Arrays(num_classes=int(num_classes), kind=kind, **out)
