"""Paper scale before a GPU: the GPT-2 BPE path (a tokenizer built here and loaded by
`transformers`, never downloaded), a loud error for a missing one, three seeds, micro-batching
that takes the same step, the estimate's counts, and every paper run taking a real training step
at the paper's dimensions (12 x 768, 12 heads, T = 128 BPE tokens, vocabulary 50,304; the sweep of
every run at 64 wide) on a tiny CodeParrot-format fixture."""

from __future__ import annotations

import json
import math

import pytest
import torch

from factories import covering
from harness.config import ConfigError
from harness.plugins import get_task
from harness.runner import run_one

TASK = get_task("entropy_attention")


def _docs(n=80):
    return [f"def f{i}(x):\n    return x + {i} * {i % 7}\n\nclass C{i}:\n    pass\n" for i in range(n)]


def make_tokenizer(folder):
    """A small byte-level BPE with GPT-2's EOS, saved as transformers saves GPT-2's (no network)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_docs(), trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(str(folder))
    return folder


@pytest.fixture
def paper_data(tmp_path, monkeypatch):
    """CodeParrot-format JSON lines built into a data root, and $EA_TOKENIZER on a local tokenizer."""
    import harness.data as hdata
    from tasks.entropy_attention.data import _CACHE, build_codeparrot

    src = tmp_path / "codeparrot"
    src.mkdir()
    lines = [json.dumps({"repo_name": f"r{i}", "path": f"f{i}.py", "content": d}) for i, d in enumerate(_docs(1600))]
    (src / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("CODEPARROT_SOURCE", str(src))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EA_TOKENIZER", str(make_tokenizer(tmp_path / "tok")))
    monkeypatch.setattr(hdata, "builders", lambda: {"codeparrot": (build_codeparrot, ["entropy_attention"])})
    hdata.build("codeparrot", tmp_path / "data")
    _CACHE.clear()
    yield tmp_path
    _CACHE.clear()


#: Only the schedule shrinks: one step of 4 rows in micro-batches of 2, tiny evaluations.
ONE_STEP = {"steps": 1, "batch_size": 4, "micro_batch": 2, "eval_every": 1000, "checkpoint_every": 1000,
            "eval_sequences": 2, "entropy_sequences": 2, "curve_sequences": 2, "max_eval_tokens": 2000}


def test_paper_scale_has_three_seeds_and_the_bpe_setting():
    paper = TASK.config.scale("paper")
    assert len(paper.seeds) >= 3
    d = paper.defaults
    assert d["tokenizer"] == "gpt2" and d["vocab_size"] >= 50_257 and d["vocab_size"] % 64 == 0
    assert (d["n_layer"], d["n_head"], d["n_embd"], d["context"]) == (12, 12, 768, 128)
    assert d["batch_size"] % d["micro_batch"] == 0
    assert "tokenizer" not in TASK.config.scale("small").defaults  # small scale stays byte-level


def test_a_missing_tokenizer_fails_loudly_naming_the_fix(tmp_path, monkeypatch):
    from tasks.entropy_attention.data import TokenizerUnavailable, load_tokenizer, tokenizer_vocab

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EA_TOKENIZER", str(tmp_path / "nowhere"))
    with pytest.raises(TokenizerUnavailable, match="EA_TOKENIZER.*save_pretrained"):
        load_tokenizer("gpt2")
    assert issubclass(TokenizerUnavailable, ConfigError) and tokenizer_vocab("bytes") == 257


def test_bpe_corpus_joins_documents_with_eos_and_is_cached(paper_data, monkeypatch):
    from tasks.entropy_attention import data as eadata

    tok = eadata.load_tokenizer("gpt2")
    assert tok.eos_token_id is not None and len(tok) <= 400
    corpus = eadata.load_corpus("codeparrot", None, 200, "gpt2")
    assert int(corpus.train.max()) < len(tok) and int((corpus.train == tok.eos_token_id).sum()) > 10
    assert len(corpus.validation) == 200
    cached = sorted((paper_data / "data" / "_tokens").glob("codeparrot-gpt2-*.npy"))
    assert len(cached) == 3
    eadata._CACHE.clear()
    monkeypatch.setattr(eadata, "bpe_tokens", lambda *a: pytest.fail("tokenised twice"))
    assert torch.equal(eadata.load_corpus("codeparrot", None, 200, "gpt2").train, corpus.train)


def test_micro_batches_take_the_same_step(corpus):
    """Two slices of 4 rows give the whole batch's loss and update, the entropy penalty included."""
    from ea_helpers import TINY
    from factories import MemoryContext
    from tasks.entropy_attention.configs import resolve
    from tasks.entropy_attention.train import train

    hp = resolve("ereg_sm_t_scfuffn", {**TINY, "steps": 2, "batch_size": 8, "eval_every": 100,
                                         "checkpoint_every": 100, "ereg_lambda": 1e-3})
    outs = []
    for micro in (0, 4):
        torch.manual_seed(0)
        outs.append(train(corpus, {**hp, "micro_batch": micro}, MemoryContext(), device="cpu"))
    a, b = (o["metrics"]["val_loss"] for o in outs)
    assert math.isfinite(a) and a == pytest.approx(b, rel=1e-5)
    with pytest.raises(ValueError, match="granularity"):
        train(corpus, {**hp, "micro_batch": 4, "ereg_granularity": "head"}, MemoryContext(), device="cpu")


def test_estimate_counts_match_the_model():
    from tasks.entropy_attention.estimate import estimate_run, n_params
    from tasks.entropy_attention.model import GPT
    from tasks.entropy_attention.train import model_config

    for variant in ("sm_ln_g", "ereg_sm_t_scfuffn", "sm_wn_ffn"):
        m = TASK.config.resolve("paper", variant)
        bench = TASK.config.benchmark("paper", "codeparrot-t128")
        from tasks.entropy_attention.configs import resolve

        hp = resolve(m.name, dict(m.hyperparameters))
        cfg = model_config(hp, 50_304)
        with torch.device("meta"):
            model = GPT(cfg)
        every = sum(p.numel() for n, p in model.named_parameters()
                    if not n.endswith(("log_t", "reg_threshold_weights", "alpha", "beta", "original0")))
        assert n_params(cfg) == pytest.approx(every, rel=1e-3), variant
        est = estimate_run(m, bench, dict(m.hyperparameters))
        matmul = n_params(cfg) - cfg.block_size * cfg.n_embd  # the tied wte is the head's matmul; wpe a lookup
        assert 6 * matmul * 32_000 * 512 * 128 < est.flops < 1.3 * 6 * matmul * 32_000 * 512 * 128  # + attention, evals
        assert est.peak_memory_bytes < 80e9 and est.mfu


@pytest.mark.parametrize("variant,benchmark", [("ereg_sm_t_scfuffn", "codeparrot-t128")])
def test_paper_runs_take_a_real_step(paper_data, variant, benchmark):
    """The richest configuration (temperature, FFN scaling, the entropy regulariser over micro-batches);
    the whole plan is the slow test below (~15 s of CPU per run)."""
    rec = run_one("entropy_attention", variant, benchmark, 1337, "paper", overrides=ONE_STEP,
                  results_dir=paper_data / "r")
    check_record(rec)


#: The sweep's width: every variant's code path (its attention, FFN, temperature, regulariser) and
#: every benchmark's depth and context at 64 wide in 2 heads; the 768-wide step is the test above.
NARROW = {"n_embd": 64, "n_head": 2}


@pytest.mark.slow
def test_every_paper_run_takes_a_real_step(paper_data):
    """Every variant and every benchmark of the paper plan (a covering set of the pairs: each variant
    at least once, each benchmark at least once), at the paper's depth, context and vocabulary but
    64 wide (NARROW), one step each."""
    cfg = TASK.config
    pairs = [(v.variant, b) for v in cfg.variants("paper") for b in cfg.method_benchmarks("paper", v.name)]
    for variant, bench in covering(pairs):
        rec = run_one("entropy_attention", variant, bench, 1337, "paper", overrides={**ONE_STEP, **NARROW},
                      results_dir=paper_data / "r")
        check_record(rec, variant, bench, width=NARROW)


def check_record(rec, variant="", bench="", width=None):
    assert rec["status"] in ("ok", "diverged"), (variant, bench, rec.get("error"))
    info = rec["info"]
    model = info["model"]
    settings = TASK.config.benchmark("paper", rec["benchmark"]).settings
    expected = width or {"n_embd": 768, "n_head": 12}
    assert model["n_embd"] == expected["n_embd"] and model["n_head"] == expected["n_head"]
    assert model["vocab_size"] == 50_304
    assert model["n_layer"] == settings.get("n_layer", 12) and model["block_size"] == settings.get("context", 128)
    assert info["tokenizer"]["name"] == "gpt2" and info["tokenizer"]["ids"] <= 400
    if width is None:
        assert info["n_params"] > 70e6  # 74M (fused FFN) to 124M (GPT-2)
