"""The PTB LSTM STN (card §4.1): layers, regularisers, the BPTT loop, the LR rule, whole runs."""

import math

import pytest
import torch
from factories import MemoryContext

from harness.runner import run_one
from tasks.self_tuning_networks.lstm import (
    STNLanguageModel, fixed_regularisers, hnet_input, lm_hyperparameters,
)
from tasks.self_tuning_networks.stn import HyperSpace, locked_dropout
from tasks.self_tuning_networks.train import nonmono_trigger
from tasks.self_tuning_networks.train_lm import batchify, chunks, fit_lm

TASK = "self_tuning_networks"
ALL7 = {"tune": ["alpha", "beta", "dropouto", "dropouti", "dropouth", "dropoute", "wdrop"]}


def metrics(rec):
    return {m["name"]: m["value"] for m in rec["metrics"]}


def test_stn_language_model_is_the_plain_model_when_the_gates_are_zero():
    torch.manual_seed(0)
    stn = STNLanguageModel(30, 7, hyper=True, emsize=8, nhid=12, nlayers=2).eval()
    plain = STNLanguageModel(30, 7, hyper=False, emsize=8, nhid=12, nlayers=2).eval()
    missing = plain.load_state_dict(stn.state_dict(), strict=False)
    assert not missing.missing_keys  # every plain weight is an elementary STN weight
    words = torch.randint(0, 30, (3, 9))
    hnet = torch.randn(3, 7)
    with torch.no_grad():
        for m in stn.modules():
            if hasattr(m, "gates"):
                m.gates.weight.zero_()
        a, _, _, _ = stn(words, stn.init_state(3), hnet)
        b, _, _, _ = plain(words, plain.init_state(3))
        assert torch.allclose(a, b, atol=1e-6)
        for m in stn.modules():  # non-zero gates: λ changes the output
            if hasattr(m, "gates"):
                m.gates.weight.normal_(0, 0.1)
        c, _, _, _ = stn(words, stn.init_state(3), hnet)
    assert not torch.allclose(a, c, atol=1e-4)
    assert stn.decoder.weight is stn.encoder.weight  # tied to the elementary embedding


def test_locked_dropout_shares_one_mask_over_time_with_a_rate_per_example():
    torch.manual_seed(0)
    x = torch.ones(2, 40, 5000)
    y = locked_dropout(x, torch.tensor([0.0, 0.3]))
    assert torch.equal(y[0], x[0])
    assert torch.equal(y[1], y[1, :1].expand_as(y[1]))  # the same units dropped at every step
    dropped = float((y[1, 0] == 0).float().mean())
    assert abs(dropped - 0.3) < 0.03 and torch.allclose(y[1, 0][y[1, 0] != 0], torch.tensor(1 / 0.7))


def test_embedding_dropout_drops_whole_words_and_dropconnect_only_in_training():
    torch.manual_seed(0)
    m = STNLanguageModel(20, 2, hyper=True, emsize=6, nhid=6, nlayers=1)
    words = torch.tensor([[3, 3, 3, 5, 5, 5]] * 2)
    m.train()
    emb = m.encoder(words, torch.zeros(2, 2), dropoute=0.5)
    assert torch.equal(emb[:, 0], emb[:, 1]) and torch.equal(emb[:, 3], emb[:, 4])  # a word keeps its fate
    seen = {bool((m.encoder(words, None, 0.5)[0, 0] == 0).all()) for _ in range(40)}
    assert seen == {True, False}  # a new vocabulary mask per minibatch
    m.eval()
    state = m.init_state(2)
    reg = {"wdrop": 0.9, "dropoute": 0.9, "dropouto": torch.tensor([0.9, 0.9])}
    a, _, _, _ = m(words, state, None, reg)
    b, _, _, _ = m(words, state, None, None)
    assert torch.equal(a, b)  # eval mode ignores every regulariser


def test_ar_tar_terms_follow_their_definitions():
    torch.manual_seed(0)
    m = STNLanguageModel(20, 0, hyper=False, emsize=6, nhid=6, nlayers=2).eval()
    words = torch.randint(0, 20, (2, 7))
    state = m.init_state(2)
    _, _, ar, tar = m(words, state)
    # Recompute the last layer's output by hand.
    x = m.encoder(words, None)
    for layer, st in zip(m.layers, state):
        x, _ = layer(x, st, None)
    assert ar.item() == pytest.approx(x.pow(2).mean().item(), rel=1e-6)
    assert tar.item() == pytest.approx((x[:, 1:] - x[:, :-1]).pow(2).mean().item(), rel=1e-6)


def test_hyperparameters_transforms_and_fixed_values():
    params = lm_hyperparameters(ALL7, {"start_dropout": 0.05, "start_ar_tar": 0.05})
    assert [p.name for p in params] == ["alpha", "beta", "dropouto", "dropouti", "dropouth", "dropoute", "wdrop"]
    assert [p.per_example for p in params] == [False, False, True, True, True, False, False]
    space = HyperSpace(params, init_scale=1.0)
    assert all(v == pytest.approx(0.05) for v in space.values().values())
    u = space.perturb(4)
    vals = space.constrain(u)
    assert torch.all(vals[:, 0] == vals[0, 0]) and torch.all(vals[:, 5] == vals[0, 5])  # one sample per batch
    assert len(set(vals[:, 2].tolist())) == 4  # per example
    h = hnet_input(u, params, constrained=True)
    assert torch.allclose(h[:, 2], torch.sigmoid(u[:, 2])) and torch.allclose(h[:, 0], torch.nn.functional.softplus(u[:, 0]))
    assert torch.equal(hnet_input(u, params, constrained=False), u)
    assert fixed_regularisers({"tune": ["dropouto"], "fixed": {"alpha": 2.0}}) == {
        "alpha": 2.0, "beta": 0.0, "dropouti": 0.05, "dropouth": 0.05, "dropoute": 0.05, "wdrop": 0.05}
    with pytest.raises(ValueError, match="unknown LSTM hyperparameters"):
        lm_hyperparameters({"tune": ["dropoutz"]}, {})


def test_batchify_and_chunks_cover_the_stream_once():
    ids = torch.arange(103)
    s = batchify(ids, 4)
    assert s.shape == (4, 25) and torch.equal(s[1], torch.arange(25, 50))  # contiguous streams
    cs = chunks(s, 7)
    assert cs == [(0, 7), (7, 7), (14, 7), (21, 3)]  # targets shifted by one: 24 predictions per stream
    with pytest.raises(ValueError, match="too short"):
        batchify(torch.arange(5), 4)


def test_nonmono_trigger_is_the_official_rule():
    hist = [5.0, 4.0, 3.0, 3.5, 3.6]
    assert nonmono_trigger(hist, 3.2, 2)  # worse than min(5, 4, 3) = 3
    assert not nonmono_trigger(hist, 2.9, 2)
    assert not nonmono_trigger(hist[:2], 9.0, 2)  # too few epochs
    assert not nonmono_trigger(hist, 9.0, 0)  # disabled


def _toy_text():
    from tasks.self_tuning_networks.data import TextData

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 12, (1200,), generator=g)
    return TextData(ids[:900], ids[900:1050], ids[1050:], [str(i) for i in range(12)])


def _hp(**kw):
    hp = dict(epochs=2, patience=5, batch_size=4, bptt=10, eval_batch_size=2, test_batch_size=1, lr=5.0, clip=0.25,
              hyper_lr=0.05, warmup_steps=10, train_steps=2, valid_steps=1, lr_decay_window=0, checkpoint_every=0)
    return {**hp, **kw}


def test_lambda_moves_only_in_hyper_steps():
    data = _toy_text()
    params = lm_hyperparameters(ALL7, {})
    for warmup, moves in ((10_000, False), (10, True)):
        torch.manual_seed(0)
        space = HyperSpace(params, init_scale=1.0)
        h0 = space.h.detach().clone()
        model = STNLanguageModel(12, len(params), emsize=8, nhid=8)
        out = fit_lm(model, data, _hp(warmup_steps=warmup), MemoryContext(), params, {}, space=space, constrained=True)
        assert (out["hyper_steps"] > 0) == moves
        assert (not torch.equal(space.h.detach(), h0)) == moves
        assert torch.equal(space.s.detach(), HyperSpace(params, init_scale=1.0).s.detach())  # σ fixed at 1
    assert len(out["schedule"]["dropouto"]) == 2 and math.isfinite(out["test_ppl"])


def test_lr_decays_by_the_rule_and_stops_below_min_lr():
    data = _toy_text()
    params = lm_hyperparameters({"tune": ["dropouto"]}, {})
    ctx = MemoryContext()
    torch.manual_seed(0)
    model = STNLanguageModel(12, 1, hyper=False, emsize=8, nhid=8)
    # lr 50 diverges to a flat validation loss; window 1 and factor 1/4 hit min_lr within a few epochs.
    out = fit_lm(model, data, _hp(epochs=30, patience=100, lr=50.0, lr_decay_window=1, lr_decay=0.25, min_lr=1.0),
                 ctx, params, {}, values_fn=lambda e, s: {"dropouto": 0.1})
    lrs = [p["lr"] for p in ctx.curves["train"]]
    assert out["epochs_run"] < 30 and out["final_lr"] < 1.0
    assert all(b in (a, a * 0.25) for a, b in zip(lrs, lrs[1:]))  # only ever divided by 4
    assert lrs[0] == 50.0 and lrs[-1] * 0.25 == pytest.approx(out["final_lr"]) or lrs[-1] == out["final_lr"]


def test_lm_stn_run_is_deterministic_and_resumes_bit_exactly(resumed_run):
    a = resumed_run("lm", {"epochs": 3, "checkpoint_every": 1})
    assert set(a["info"]["schedule"]) == set(ALL7["tune"]) and a["info"]["hyper_steps"] > 0
    assert {"test_ppl", "val_ppl", "hp_wdrop", "hp_alpha"} <= set(metrics(a))
    assert metrics(a)["test_ppl"] == pytest.approx(math.exp(metrics(a)["test_nll"]))


def test_paper_scale_ptb_configs_run_on_a_local_fixture(tmp_path, monkeypatch):
    """The paper's two PTB benchmarks, shrunk by overrides, on a PTB-format fixture."""
    import datasets

    from harness.data import build

    lines = [" the cat sat on the mat ", " a dog ran <unk> away ", " the N dogs sat "] * 40
    datasets.DatasetDict({s: datasets.Dataset.from_dict({"sentence": lines}) for s in ("train", "validation", "test")}
                         ).save_to_disk(str(tmp_path / "ptb"))
    monkeypatch.setenv("HARNESS_PTB_SOURCE", str(tmp_path / "ptb"))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    build("stn_ptb", tmp_path / "data")
    from tasks.self_tuning_networks.data import load_text

    text = load_text("stn_ptb", tmp_path / "data")
    assert text.vocab[:4] == ["the", "cat", "sat", "on"] and "<eos>" in text.vocab and len(text.train) == 40 * 18  # words + <eos> per line
    small = {"emsize": 8, "nhid": 8, "epochs": 2, "bptt": 10, "batch_size": 4, "eval_batch_size": 2,
             "warmup_steps": 5}
    one = run_one(TASK, "stn", "ptb-dropouto", 0, "paper", overrides=small, results_dir=tmp_path / "r")
    assert one["status"] == "ok" and set(one["info"]["schedule"]) == {"dropouto"}
    assert one["info"]["fixed"] == {"alpha": 0.0, "beta": 0.0, "dropouti": 0.05, "dropouth": 0.05, "dropoute": 0.05,
                                    "wdrop": 0.05}
    assert one["config"]["lr"] == 30.0 and one["config"]["bptt"] == 10  # benchmark defaults, then overrides
    grid = run_one(TASK, "grid_trial[point=4]", "ptb-dropouto", 0, "paper", overrides=small, results_dir=tmp_path / "r")
    assert metrics(grid)["hp_dropouto"] == 0.7  # the benchmark's own grid
    full = run_one(TASK, "stn", "ptb", 0, "paper", overrides=small, results_dir=tmp_path / "r")
    assert len(full["info"]["schedule"]) == 7 and full["config"]["val_ar_tar"] is True


def test_docstring_corpus_is_ptb_shaped_split_by_file_and_deterministic(tmp_path, monkeypatch):
    from tasks.self_tuning_networks import data as stn_data

    files = []
    for i in range(10):
        p = tmp_path / f"mod{i}.py"
        p.write_text(f'"""Module {i} parses 42 things.\n\nSecond paragraph, with punctuation (here)."""\n'
                     f'def f():\n    """Return the value of thing{i} twice, zeta{"abcdefghij"[i]}."""\n    return 1\n'
                     'def g():\n    """Short."""\n')  # 2 tokens: dropped
        files.append(p)
    (tmp_path / "test_mod.py").write_text('"""A test module that must be left out."""\n')
    monkeypatch.setattr(stn_data, "DOCS_VOCAB", 19)  # the 19 words every file shares; zeta<x> is rare
    dd = stn_data.build_stn_docstrings(tmp_path)  # (pytest's tmp_path itself has "test_" parts: judged below root)
    assert {k: len(v) for k, v in dd.items()} == {"train": 24, "validation": 3, "test": 3}  # 3 lines a file, 8/1/1 files
    lines = dd["train"]["text"]
    assert lines[0] == " module N parses N things . "
    assert lines[2].startswith(" return the value of thing N twice , <unk> . ")
    assert " second paragraph , with punctuation ( here ) . " in lines
    assert all("short" not in ln and "must be left out" not in ln for split in dd.values() for ln in split["text"])
    words = {w for ln in lines for w in ln.split()}
    assert len(words - {"<unk>"}) == 19 and not any(w.startswith("zeta") for w in words)
    assert stn_data.build_stn_docstrings(tmp_path)["test"]["text"] == dd["test"]["text"]
    with pytest.raises(ValueError, match="no docstrings found"):
        stn_data.build_stn_docstrings(tmp_path / "empty")
