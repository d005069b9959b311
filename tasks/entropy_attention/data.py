"""Corpora: the shared ``python_stdlib`` builder (tiny/small) and CodeParrot (paper scale).

Both are read as UTF-8 bytes (vocabulary 257 with the document separator), so no tokenizer is
downloaded; the paper's 50K code BPE is a documented difference (README).

Paper scale: ``codeparrot`` is built from ``huggingface-course/codeparrot-ds-train`` and
``-valid`` (the paper's ``codeparrot-ds``) through ``datasets.load_dataset``; set
``CODEPARROT_SOURCE`` to a local copy: a ``save_to_disk`` folder, or a folder/file of JSON
lines or parquet with a ``content`` (or ``text``) column. Validation and test are the two halves
of the validation set, split by file with a fixed seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from harness.config import ConfigError
from tasks._common.stdlib_corpus import EOS, VOCAB_SIZE, build_python_stdlib, byte_tokens  # noqa: F401

CODEPARROT_ENV = "CODEPARROT_SOURCE"
CODEPARROT_HUB = ("huggingface-course/codeparrot-ds-train", "huggingface-course/codeparrot-ds-valid")
SPLIT_SEED = 0


class DatasetUnavailable(ConfigError):
    """The paper-scale corpus cannot be loaded (offline, or a bad local path)."""


def _hint() -> str:
    return (f"Paper scale needs CodeParrot: run with access to the Hugging Face hub ({CODEPARROT_HUB[0]}), or set "
            f"{CODEPARROT_ENV} to a local copy (a save_to_disk folder, or JSON lines / parquet files with a "
            "'content' column).")


def _text_column(ds) -> str:
    for name in ("content", "text"):
        if name in ds.column_names:
            return name
    raise DatasetUnavailable(f"CodeParrot rows need a 'content' or 'text' column, found {ds.column_names}. {_hint()}")


def _load_local(source: str):
    import datasets

    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetUnavailable(f"{CODEPARROT_ENV}={source!r} does not exist. {_hint()}")
    if (path / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(path))
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl", ".parquet"))
    if not files:
        raise DatasetUnavailable(f"{CODEPARROT_ENV}={source!r} holds no .json/.jsonl/.parquet files. {_hint()}")
    fmt = "parquet" if files[0].suffix == ".parquet" else "json"
    return datasets.load_dataset(fmt, data_files=[str(f) for f in files])


def build_codeparrot():
    """DatasetDict train/validation/test of {text}: CodeParrot's train split, its valid split halved."""
    import datasets

    source = os.environ.get(CODEPARROT_ENV)
    try:
        if source:
            dd = _load_local(source)
            if "validation" in dd and "train" in dd:
                train, valid = dd["train"], dd["validation"]
            else:  # one split: hold out 5% of the files (fixed seed)
                full = dd["train"] if "train" in dd else next(iter(dd.values()))
                parts = full.train_test_split(test_size=0.05, seed=SPLIT_SEED)
                train, valid = parts["train"], parts["test"]
        else:
            train = datasets.load_dataset(CODEPARROT_HUB[0], split="train")
            valid = datasets.load_dataset(CODEPARROT_HUB[1], split="validation")
    except DatasetUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - offline / missing data: one clear message
        raise DatasetUnavailable(f"could not load CodeParrot from {source or CODEPARROT_HUB[0]!r} "
                                 f"({type(e).__name__}: {e}). {_hint()}") from None
    halves = valid.train_test_split(test_size=0.5, seed=SPLIT_SEED)

    def only_text(ds):
        col = _text_column(ds)
        return datasets.Dataset.from_dict({"text": list(ds[col])})

    return datasets.DatasetDict({"train": only_text(train), "validation": only_text(halves["train"]),
                                 "test": only_text(halves["test"])})


BUILDERS = {"python_stdlib": build_python_stdlib, "codeparrot": build_codeparrot}


def load_corpus(dataset: str, max_train_tokens: int | None, max_eval_tokens: int | None):
    """Byte tokens of the three splits as int64 torch tensors (cached per process)."""
    key = (dataset, max_train_tokens, max_eval_tokens)
    if key not in _CACHE:
        import torch

        from harness.data import load_dataset

        from .train import Corpus

        dd = load_dataset(dataset)

        def tokens(split, cap):
            return torch.from_numpy(np.ascontiguousarray(byte_tokens(dd[split]["text"], cap)))

        _CACHE[key] = Corpus(train=tokens("train", max_train_tokens), validation=tokens("validation", max_eval_tokens),
                             test=tokens("test", max_eval_tokens))
    return _CACHE[key]


_CACHE: dict = {}
