"""Paper-scale DCLM loader on a tiny local fixture in the same format (.jsonl rows with 'text')."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.config import ConfigError
from tasks.infinite_compute.data import DCLM_ENV, EOS, build_dclm


def _fixture(path, n_docs=40):
    rng = np.random.default_rng(0)
    docs = [f"def f{i}():\n    return {int(rng.integers(1000))}\n" * int(rng.integers(1, 4)) for i in range(n_docs)]
    path.write_text("".join(json.dumps({"text": d, "url": f"u{i}"}) + "\n" for i, d in enumerate(docs)))
    return docs


def _unwindow(w):
    """Windows share one boundary token: the stream is the first window plus each next one's tail."""
    return np.concatenate([w[0]] + [row[1:] for row in w[1:]])


def test_dclm_builder_windows_the_stream_validation_then_test_then_train(tmp_path, monkeypatch):
    src = tmp_path / "shard.jsonl"
    docs = _fixture(src)
    monkeypatch.setenv("IC_TOKENIZER", "bytes")  # on purpose: unset is an error (test below)
    dd = build_dclm(train_tokens=640, val_tokens=128, seq_len=63, source=str(src))
    val = np.asarray(dd["validation"]["input_ids"])
    train = np.asarray(dd["train"]["input_ids"])
    assert val.shape[1] == train.shape[1] == 64
    stream = np.concatenate([np.append(np.frombuffer(d.encode(), dtype=np.uint8).astype(np.int64), EOS)
                             for d in docs])
    # validation is the head of the stream, byte tokens with EOS between documents
    v = _unwindow(val)
    assert len(v) == 2 * 63 + 1 and np.array_equal(v, stream[:len(v)])
    # the test set starts at a document boundary after validation, train after the test set:
    # no document in two splits
    eos = np.flatnonzero(stream == EOS)
    test_start = int(eos[np.searchsorted(eos, 128)]) + 1
    test = _unwindow(np.asarray(dd["test"]["input_ids"]))
    assert len(test) == 2 * 63 + 1 and np.array_equal(test, stream[test_start:test_start + len(test)])
    start = int(eos[np.searchsorted(eos, test_start + 128)]) + 1
    t = _unwindow(train)
    assert np.array_equal(t, stream[start:start + len(t)])
    assert len(t) == (640 // 63) * 63 + 1


def test_dclm_source_errors_name_the_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("IC_TOKENIZER", "bytes")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=DCLM_ENV):
        build_dclm(train_tokens=64, val_tokens=64, seq_len=31, source="no-such-org/no-such-dataset")
    src = tmp_path / "small.jsonl"
    _fixture(src, n_docs=2)
    with pytest.raises(ConfigError, match="ran out"):
        build_dclm(train_tokens=10_000, val_tokens=16, seq_len=15, source=str(src))


def test_a_missing_tokenizer_fails_loudly_naming_the_fix(tmp_path, monkeypatch):
    """No silent byte fallback with a 128,257 vocabulary: unset or unloadable $IC_TOKENIZER is an error."""
    src = tmp_path / "shard.jsonl"
    _fixture(src, n_docs=4)
    monkeypatch.delenv("IC_TOKENIZER", raising=False)
    with pytest.raises(ConfigError, match="IC_TOKENIZER is not set.*Llama-3 tokenizer"):
        build_dclm(train_tokens=64, val_tokens=64, seq_len=31, source=str(src))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("IC_TOKENIZER", str(tmp_path / "no-such-tokenizer.json"))
    with pytest.raises(ConfigError, match="cannot load the tokenizer.*tokenizer.json"):
        build_dclm(train_tokens=64, val_tokens=64, seq_len=31, source=str(src))


def test_a_local_bpe_tokenizer_builds_nested_budgets(tmp_path, monkeypatch):
    """$IC_TOKENIZER as a tokenizer.json built here (no download); a benchmark's train_tokens takes a
    prefix of the built stream, and ids beyond vocab_size are refused."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    src = tmp_path / "shard.jsonl"
    docs = _fixture(src, n_docs=60)
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    monkeypatch.setenv("IC_TOKENIZER", str(tmp_path / "tokenizer.json"))
    dd = build_dclm(train_tokens=15 * 12, val_tokens=30, seq_len=15, source=str(src))
    sep = tok.get_vocab_size()
    train = np.asarray(dd["train"]["input_ids"])
    assert train.shape == (12, 16) and train.max() <= sep and (train == sep).any()
    assert np.array_equal(_unwindow(np.asarray(dd["validation"]["input_ids"]))[:5],
                          tok.encode(docs[0]).ids[:5])

    from harness.data import MANIFEST  # noqa: F401 - the dataset folder layout the runner reads
    import tasks.infinite_compute.data as icdata

    class _Loaded:
        def __init__(self, dd):
            self.dd = dd

        def with_format(self, _):
            return self.dd

    monkeypatch.setattr("harness.data.load_dataset", lambda name: _Loaded(dd))
    t, v = icdata.dclm_budget("dclm", 15, train_tokens=15 * 5, vocab_size=sep + 1)
    assert np.array_equal(t, train[:5])  # the smaller budget is a prefix of the larger
    assert np.array_equal(icdata.dclm_test("dclm", 15, vocab_size=sep + 1), np.asarray(dd["test"]["input_ids"]))
    with pytest.raises(ConfigError, match="IC_TRAIN_TOKENS"):
        icdata.dclm_budget("dclm", 15, train_tokens=15 * 13, vocab_size=sep + 1)
    with pytest.raises(ConfigError, match="beyond vocab_size"):
        icdata.dclm_budget("dclm", 15, train_tokens=15 * 5, vocab_size=sep)
