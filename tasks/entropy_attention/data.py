"""Corpora: the shared ``python_stdlib`` builder (tiny/small) and CodeParrot (paper scale).

Tokens: ``tokenizer: bytes`` (tiny/small: UTF-8 bytes, vocabulary 257 with the document
separator, nothing downloaded) or, at paper scale, a BPE tokenizer loaded by ``transformers``
(``tokenizer: gpt2``: ``$EA_TOKENIZER`` names a local folder or file the library reads, else the
hub id ``gpt2``), so that T = 128 counts BPE tokens as the paper's does. A tokenizer that cannot
be loaded is an error naming the fix, never a fallback to bytes. Documents are joined with the
tokenizer's EOS id; the token streams are cached per (dataset, tokenizer, split, cap) next to the
data (``_tokens/``), so a study tokenises CodeParrot once.

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
TOKENIZER_ENV = "EA_TOKENIZER"
TOKENIZER_HUB = {"gpt2": "gpt2"}
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


class TokenizerUnavailable(ConfigError):
    """The BPE tokenizer a paper-scale run asks for cannot be loaded."""


def load_tokenizer(name: str):
    """A ``transformers`` tokenizer: ``$EA_TOKENIZER`` (a local folder or tokenizer.json) or the hub id of
    ``name``. Anything unloadable raises :class:`TokenizerUnavailable` naming the fix."""
    local = os.environ.get(TOKENIZER_ENV)
    source = local or TOKENIZER_HUB.get(name, name)
    hint = (f"tokenizer {name!r}: set {TOKENIZER_ENV} to a local copy (a folder written by "
            f"`AutoTokenizer.from_pretrained({TOKENIZER_HUB.get(name, name)!r}).save_pretrained(DIR)`, or its "
            "tokenizer.json), or run where the Hugging Face hub is reachable; tiny/small scale use "
            "`tokenizer: bytes` and need none")
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
    except ImportError:
        raise TokenizerUnavailable(f"the `transformers` package is missing: pip install transformers; {hint}") from None
    try:
        if local and Path(local).is_file():
            tok = PreTrainedTokenizerFast(tokenizer_file=str(local))
        else:
            tok = AutoTokenizer.from_pretrained(source, local_files_only=bool(local))
    except Exception as e:  # noqa: BLE001 - offline hub, missing path: one message naming the fix
        raise TokenizerUnavailable(f"cannot load {source!r} ({type(e).__name__}: {e}). {hint}") from None
    if tok.eos_token_id is None:
        raise TokenizerUnavailable(f"{source!r} has no EOS token to separate documents: give it one "
                                   f"(eos_token='<|endoftext|>'). {hint}")
    return tok


def tokenizer_vocab(tokenizer: str) -> int:
    """Vocabulary of a tokenizer setting (every id it can emit, the separator included)."""
    return VOCAB_SIZE if tokenizer == "bytes" else len(load_tokenizer(tokenizer))


def bpe_tokens(tok, texts, cap: int | None) -> np.ndarray:
    """Documents encoded and joined with the EOS id, cut at ``cap`` tokens (None: all)."""
    out, total = [], 0
    texts = list(texts)
    for i in range(0, len(texts), 256):
        for ids in tok(texts[i:i + 256], add_special_tokens=False)["input_ids"]:
            out.append(np.asarray(ids + [tok.eos_token_id], dtype=np.int64))
            total += len(ids) + 1
        if cap is not None and total >= cap:
            break
    arr = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    return arr[:cap] if cap is not None else arr


def _cached_tokens(dataset: str, split: str, tokenizer: str, tok, texts, cap: int | None) -> np.ndarray:
    """BPE tokens of a split, cached as .npy beside the dataset (keyed by the tokenizer's vocabulary hash)."""
    import hashlib
    import json

    from harness.data import data_root

    vocab = hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest()[:12]
    path = data_root() / "_tokens" / f"{dataset}-{tokenizer}-{vocab}-{split}-{cap}.npy"
    if path.exists():
        return np.load(path)
    arr = bpe_tokens(tok, texts, cap)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr.astype(np.int32))
    os.replace(tmp, path)
    return arr


def load_corpus(dataset: str, max_train_tokens: int | None, max_eval_tokens: int | None, tokenizer: str = "bytes"):
    """Tokens of the three splits as int64 torch tensors (cached per process; BPE streams on disk too)."""
    key = (dataset, max_train_tokens, max_eval_tokens, tokenizer)
    if key not in _CACHE:
        import torch

        from harness.data import load_dataset

        from .train import Corpus

        tok = None if tokenizer == "bytes" else load_tokenizer(tokenizer)  # before the data: fail fast
        dd = load_dataset(dataset)

        def tokens(split, cap):
            if tok is None:
                arr = byte_tokens(dd[split]["text"], cap)
            else:
                arr = _cached_tokens(dataset, split, tokenizer, tok, dd[split]["text"], cap)
            return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))

        _CACHE[key] = Corpus(train=tokens("train", max_train_tokens), validation=tokens("validation", max_eval_tokens),
                             test=tokens("test", max_eval_tokens))
    return _CACHE[key]


_CACHE: dict = {}
