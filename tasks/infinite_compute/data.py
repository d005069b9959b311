"""Token budgets: D training tokens, a fixed validation set and a held-out test set, as (n, T+1) windows.

Hyperparameters (the locally-optimal searches, K, the distillation mix) are selected on the
validation set; every claim is measured on the test set, which nothing is selected on.

Small/tiny scale: the shared ``python_stdlib`` corpus (split by file with a fixed seed in
:mod:`tasks._common.stdlib_corpus`), byte-level tokens with EOS=256 (vocabulary 257, no
tokenizer training). The training budget of a run is D tokens taken from the training
files in an order fixed by the *study seed* (``seed % 1000``): the three study seeds see
three different D-token subsets (the card's "data-split seeds"), while the ensemble
members of one study seed (seeds ``s + 1000 k``) all see exactly the same D tokens, as
the paper requires. The validation set is the first ``val_tokens`` tokens of the
validation files in sorted order, and the test set the first ``test_tokens`` (default:
``val_tokens``) of the test files, the same for every run.

Paper scale: ``dclm`` is built by :func:`build_dclm` from a DCLM-style text source read
through ``datasets`` (hub id or local file in ``$IC_DCLM_SOURCE``), tokenised with the
Llama-3 tokenizer (``$IC_TOKENIZER``: a tokenizer.json or a hub id; required, no silent byte
fallback, ``IC_TOKENIZER=bytes`` only on purpose) and materialised with the first
``IC_TRAIN_TOKENS`` training tokens (default 2 x 200M, the largest budget) and a held-out
validation slice. A benchmark's ``train_tokens`` takes the first D of them, so the budgets are
nested prefixes of one stream, as the paper's (the first ``base_train_steps`` batches).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from harness.config import ConfigError
from tasks._common.stdlib_corpus import EOS, VOCAB_SIZE, build_python_stdlib, byte_tokens

#: Member k of study seed s runs at seed s + MEMBER_SEED_STRIDE * k.
MEMBER_SEED_STRIDE = 1000
DCLM_ENV = "IC_DCLM_SOURCE"
DCLM_DEFAULT = "mlfoundations/dclm-baseline-1.0"
TOKENIZER_ENV = "IC_TOKENIZER"


def study_seed(seed: int) -> int:
    return int(seed) % MEMBER_SEED_STRIDE


def windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-overlapping (n, seq_len + 1) windows; consecutive windows share one boundary token."""
    n = (len(tokens) - 1) // seq_len
    if n < 1:
        raise ValueError(f"{len(tokens)} tokens cannot fill one window of {seq_len}+1")
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return tokens[idx]


@lru_cache(maxsize=4)
def _stdlib_split(dataset: str, split: str):
    """The split's ``text`` column, memory-mapped straight from the materialised Arrow files.

    Read with pyarrow rather than ``datasets.load_from_disk``: importing ``datasets`` costs
    seconds of start-up in each of the study's ~270 processes, and the files are the same.
    """
    import pyarrow as pa

    from harness.data import data_root, manifest

    manifest(dataset)  # a clear error naming the build command when the dataset is missing
    files = sorted((data_root() / dataset / split).glob("*.arrow"))
    tables = [pa.ipc.open_stream(pa.memory_map(str(f))).read_all() for f in files]
    return pa.concat_tables(tables).column("text")


def _texts_in_order(column, order):
    """Texts of rows ``order``, read lazily: a run needs only the few files that fill its budget."""
    for i in order:
        item = column[int(i)]
        yield item if isinstance(item, str) else item.as_py()


def stdlib_budget(dataset: str, seed: int, train_tokens: int, val_tokens: int,
                  seq_len: int, texts: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train windows, val windows) of byte tokens; ``texts`` overrides the loaded splits (tests)."""
    train_ds = list(texts["train"]) if texts else _stdlib_split(dataset, "train")
    val_ds = list(texts["validation"]) if texts else _stdlib_split(dataset, "validation")
    order = np.random.default_rng(study_seed(seed)).permutation(len(train_ds))
    train = byte_tokens(_texts_in_order(train_ds, order), max_tokens=train_tokens + 1)
    val = byte_tokens(_texts_in_order(val_ds, range(len(val_ds))), max_tokens=val_tokens + 1)
    if len(train) < train_tokens + 1 or len(val) < val_tokens + 1:
        raise ConfigError(f"{dataset} holds fewer tokens than train_tokens={train_tokens} / "
                          f"val_tokens={val_tokens}: lower them in task.yaml")
    return windows(train, seq_len), windows(val, seq_len)


def stdlib_test(dataset: str, test_tokens: int, seq_len: int, texts: dict | None = None) -> np.ndarray:
    """Test windows: the first ``test_tokens`` byte tokens of the test files in sorted order."""
    test_ds = list(texts["test"]) if texts else _stdlib_split(dataset, "test")
    test = byte_tokens(_texts_in_order(test_ds, range(len(test_ds))), max_tokens=test_tokens + 1)
    if len(test) < test_tokens + 1:
        raise ConfigError(f"{dataset} holds fewer test tokens than test_tokens={test_tokens}: lower it in task.yaml")
    return windows(test, seq_len)


def dclm_test(dataset: str, seq_len: int, vocab_size: int | None = None) -> np.ndarray:
    """The test windows of a dataset built by :func:`build_dclm`."""
    from harness.data import load_dataset

    dd = load_dataset(dataset).with_format("numpy")
    if "test" not in dd:
        raise ConfigError(f"{dataset} has no test split: it was built before the held-out test set existed; "
                          "rebuild it (`harness data build dclm --force`)")
    test = np.asarray(dd["test"]["input_ids"])
    if test.shape[1] != seq_len + 1:
        raise ConfigError(f"{dataset} was built with windows of {test.shape[1] - 1} tokens, the run asks "
                          f"for seq_len={seq_len}: rebuild it with IC_SEQ_LEN={seq_len}")
    if vocab_size is not None and int(test.max(initial=0)) >= vocab_size:
        raise ConfigError(f"{dataset} holds a token id beyond vocab_size={vocab_size}: rebuild it with "
                          f"{TOKENIZER_ENV} set to the Llama-3 tokenizer")
    return test.astype(np.int64)


def dclm_budget(dataset: str, seq_len: int, train_tokens: int | None = None,
                vocab_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pre-tokenised windows of a dataset built by :func:`build_dclm`: the first ``train_tokens``
    training tokens (all when None) and the whole validation slice."""
    from harness.data import load_dataset

    dd = load_dataset(dataset).with_format("numpy")
    train, val = np.asarray(dd["train"]["input_ids"]), np.asarray(dd["validation"]["input_ids"])
    if train.shape[1] != seq_len + 1:
        raise ConfigError(f"{dataset} was built with windows of {train.shape[1] - 1} tokens, the run asks "
                          f"for seq_len={seq_len}: rebuild it with IC_SEQ_LEN={seq_len}")
    if train_tokens is not None:
        n = int(train_tokens) // seq_len
        if n > len(train):
            raise ConfigError(f"{dataset} holds {len(train) * seq_len} training tokens, the benchmark asks for "
                              f"train_tokens={train_tokens}: rebuild it with IC_TRAIN_TOKENS={train_tokens} or more "
                              "(`harness data build dclm --force`)")
        train = train[:n]
    top = int(max(train.max(initial=0), val.max(initial=0)))
    if vocab_size is not None and top >= vocab_size:
        raise ConfigError(f"{dataset} holds token id {top}, beyond vocab_size={vocab_size}: it was tokenised with "
                          f"another tokenizer; rebuild it with {TOKENIZER_ENV} set to the Llama-3 tokenizer")
    return train.astype(np.int64), val.astype(np.int64)


def load_test(benchmark, config: dict) -> np.ndarray:
    """The held-out test windows of a benchmark (the same for every run and seed)."""
    if benchmark.dataset == "python_stdlib":
        tokens = int(config.get("test_tokens") or config["val_tokens"])
        return stdlib_test(benchmark.dataset, tokens, int(config["seq_len"]))
    return dclm_test(benchmark.dataset, int(config["seq_len"]), int(config["vocab_size"]))


def load_budget(benchmark, seed: int, config: dict) -> tuple[np.ndarray, np.ndarray]:
    if benchmark.dataset == "python_stdlib":
        return stdlib_budget(benchmark.dataset, seed, int(config["train_tokens"]), int(config["val_tokens"]),
                             int(config["seq_len"]))
    return dclm_budget(benchmark.dataset, int(config["seq_len"]), int(config["train_tokens"]),
                       int(config["vocab_size"]))


# -- paper scale: DCLM-style text through `datasets` ------------------------------------------

def _open_source(source: str):
    import datasets

    path = Path(source)
    try:
        if path.exists():
            kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix, "json")
            files = [str(p) for p in sorted(path.glob("*"))] if path.is_dir() else [str(path)]
            return datasets.load_dataset(kind, data_files=files, split="train", streaming=True)
        return datasets.load_dataset(source, split="train", streaming=True)
    except Exception as e:  # offline hub, bad id: one message naming the env var
        raise ConfigError(f"cannot read the DCLM source {source!r} ({type(e).__name__}: {e}); set {DCLM_ENV} "
                          "to a reachable hub id or a local .jsonl/.parquet file of rows with a 'text' field") from None


TOKENIZER_HINT = (f"set {TOKENIZER_ENV} to the Llama-3 tokenizer: the path of its tokenizer.json (e.g. from "
                  "meta-llama/Meta-Llama-3-8B, 128,256 tokens; vocab_size 128,257 with the separator) or a hub id "
                  f"the `tokenizers` library can fetch; {TOKENIZER_ENV}=bytes tokenises bytes on purpose (vocabulary "
                  "257: set vocab_size: 257 too)")


def _tokenizer():
    """Encode function and vocabulary size: $IC_TOKENIZER (a tokenizer.json or hub id, via `tokenizers`),
    or bytes when it says ``bytes``. Unset or unloadable: a ConfigError naming the fix, never a fallback."""
    name = os.environ.get(TOKENIZER_ENV)
    if not name:
        raise ConfigError(f"building dclm needs a tokenizer and {TOKENIZER_ENV} is not set: {TOKENIZER_HINT}")
    if name == "bytes":
        return (lambda text: np.append(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64), EOS),
                VOCAB_SIZE)
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(f"{TOKENIZER_ENV}={name} needs the `tokenizers` package: pip install tokenizers") from None
    try:
        tok = Tokenizer.from_file(name) if Path(name).exists() else Tokenizer.from_pretrained(name)
    except Exception as e:  # noqa: BLE001 - offline hub, bad path: one message naming the fix
        raise ConfigError(f"cannot load the tokenizer {TOKENIZER_ENV}={name!r} ({type(e).__name__}: {e}); "
                          f"{TOKENIZER_HINT}") from None
    eos = tok.get_vocab_size()  # one extra id as document separator

    def encode(text: str) -> np.ndarray:
        return np.append(np.asarray(tok.encode(text).ids, dtype=np.int64), eos)
    return encode, eos + 1


def build_dclm(train_tokens: int | None = None, val_tokens: int | None = None, seq_len: int | None = None,
               source: str | None = None):
    """DatasetDict of (seq_len+1)-token windows: validation = the first ``val_tokens`` of the
    stream, test = the next ``test_tokens`` (default ``val_tokens``), train = the next D tokens
    (disjoint documents throughout). Sizes from the env for the DVC stage."""
    import datasets

    train_tokens = int(train_tokens or os.environ.get("IC_TRAIN_TOKENS", 2 * 209_715_200))
    val_tokens = int(val_tokens or os.environ.get("IC_VAL_TOKENS", 1024 * 4096))
    test_tokens = int(os.environ.get("IC_TEST_TOKENS", val_tokens))
    seq_len = int(seq_len or os.environ.get("IC_SEQ_LEN", 4096))
    encode, vocab = _tokenizer()  # first: a missing tokenizer fails before any download
    stream = _open_source(source or os.environ.get(DCLM_ENV, DCLM_DEFAULT))
    need = {"validation": val_tokens + 1, "test": test_tokens + 1, "train": train_tokens + 1}
    order = ["validation", "test", "train"]  # held-out sets first: a fixed head of the stream
    out, buf, split, total = {}, [], order[0], 0
    for row in stream:
        ids = encode(row["text"])
        buf.append(ids)
        total += len(ids)
        if total >= need[split]:
            arr = np.concatenate(buf)[: need[split]]
            out[split] = windows(arr, seq_len).astype(np.int32)
            buf, total = [], 0  # the rest of this document is dropped: no document in both splits
            if split == "train":
                break
            split = order[order.index(split) + 1]
    if "train" not in out:
        raise ConfigError(f"the DCLM source ran out before {train_tokens} training tokens")
    return datasets.DatasetDict({s: _windows_dataset(out[s]) for s in ("train", "validation", "test")})


def _windows_dataset(arr: np.ndarray):
    """(n, T+1) int32 windows as a Dataset straight from Arrow (a Python list of 400M ints would need ~30 GB)."""
    import datasets
    import pyarrow as pa

    col = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(arr).reshape(-1)), arr.shape[1])
    return datasets.Dataset(pa.table({"input_ids": col}))

BUILDERS = {"python_stdlib": build_python_stdlib, "dclm": build_dclm}
__all__ = ["BUILDERS", "VOCAB_SIZE", "EOS", "load_budget", "load_test", "stdlib_budget", "stdlib_test", "windows", "study_seed",
           "MEMBER_SEED_STRIDE"]
