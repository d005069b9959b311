"""Paper scale before a GPU: the data-only PTB source (the Mikolov text files, no loading script),
a loud error naming the fix, and the paper's runs at their real dimensions (AlexNet on 32x32x3
CIFAR-10; the 2 x 650 LSTM with a 10,000-word vocabulary) taking real training steps on tiny
fixtures in the paper's formats."""

from __future__ import annotations

import numpy as np
import pytest

from factories import no_shrunk_variants_left, thin_grids
from harness.plugins import get_task
from harness.runner import run_one

TASK = "self_tuning_networks"
#: PTB's vocabulary: 10,000 words with <unk>, <eos> included.
PTB_VOCAB = 10_000


_no_shrunk_variants_left = no_shrunk_variants_left(TASK)  # tests/factories.py


def write_ptb_files(folder, vocab: int = PTB_VOCAB):
    """ptb.{train,valid,test}.txt as the Mikolov files (a leading space, words, a trailing space); the
    test split carries the rest of a ``vocab``-word dictionary so the decoder has PTB's real size."""
    folder.mkdir(parents=True, exist_ok=True)
    short = [" the cat sat on the mat ", " a dog ran <unk> away ", " the N dogs sat "]
    (folder / "ptb.train.txt").write_text("\n".join(short * 30) + "\n")
    (folder / "ptb.valid.txt").write_text("\n".join(short * 8) + "\n")
    seen = {w for line in short for w in line.split()} | {"<eos>"}
    rest = [f"w{i}" for i in range(vocab - len(seen))]
    (folder / "ptb.test.txt").write_text("\n".join(" " + " ".join(rest[i:i + 50]) + " "
                                                   for i in range(0, len(rest), 50)) + "\n")
    return folder


def test_ptb_from_the_mikolov_text_files(tmp_path, monkeypatch):
    from tasks.self_tuning_networks.data import build_stn_ptb

    monkeypatch.setenv("HARNESS_PTB_SOURCE", str(write_ptb_files(tmp_path / "ptb", vocab=30)))
    dd = build_stn_ptb()
    assert dd["train"]["text"][:2] == [" the cat sat on the mat ", " a dog ran <unk> away "]
    assert {s: len(dd[s]) for s in dd} == {"train": 90, "validation": 24, "test": 1}
    (tmp_path / "ptb" / "ptb.valid.txt").unlink()
    with pytest.raises(Exception, match="lacks ptb.valid.txt.*HARNESS_PTB_SOURCE"):
        build_stn_ptb()


def test_ptb_without_a_source_offline_names_the_fix(monkeypatch):
    from tasks.self_tuning_networks.data import DatasetUnavailable, build_stn_ptb

    monkeypatch.delenv("HARNESS_PTB_SOURCE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetUnavailable, match="ptb.train.txt.*HARNESS_PTB_SOURCE"):
        build_stn_ptb()


@pytest.fixture
def paper_data(tmp_path, monkeypatch):
    """stn_ptb (the text files) and stn_cifar10 (a save_to_disk CIFAR of 20 images) built into a data root."""
    import datasets
    from PIL import Image

    import harness.data as hdata
    from tasks.self_tuning_networks.data import build_stn_cifar10, build_stn_ptb

    rng = np.random.default_rng(0)
    img = lambda: Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))  # noqa: E731
    datasets.DatasetDict({s: datasets.Dataset.from_dict({"img": [img() for _ in range(n)],
                                                         "label": [i % 10 for i in range(n)]})
                          for s, n in (("train", 20), ("test", 8))}).save_to_disk(str(tmp_path / "cifar"))
    monkeypatch.setenv("HARNESS_CIFAR10_SOURCE", str(tmp_path / "cifar"))
    monkeypatch.setenv("HARNESS_PTB_SOURCE", str(write_ptb_files(tmp_path / "ptb")))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(hdata, "builders", lambda: {"stn_cifar10": (build_stn_cifar10, [TASK]),
                                                    "stn_ptb": (build_stn_ptb, [TASK])})
    hdata.build("stn_cifar10", tmp_path / "data")
    hdata.build("stn_ptb", tmp_path / "data")
    return tmp_path


#: Only the schedule and the batches shrink; the widths, depth and vocabulary are the paper's.
SHRINK = {
    "cifar10": {"epochs": 1, "batch_size": 8, "warmup_epochs": 0, "checkpoint_every": 100},
    "ptb": {"epochs": 1, "bptt": 10, "batch_size": 4, "eval_batch_size": 4, "test_batch_size": 40,
            "warmup_steps": 2, "checkpoint_every": 100},
}
SHRINK["ptb-dropouto"] = SHRINK["ptb"]
#: The sweep of every run: the LSTM 64 wide as well (every method's code path, PTB's 10k-word
#: decoder kept); the 650-wide LSTM takes its step in the parametrized test above.
NARROW = {b: {**s, "emsize": 64, "nhid": 64} if b.startswith("ptb") else s for b, s in SHRINK.items()}


def check(rec, bench, width=650):
    assert rec["status"] in ("ok", "diverged"), rec.get("error")
    cfg = rec["config"]
    if bench.startswith("ptb"):
        assert (cfg["emsize"], cfg["nhid"], cfg["nlayers"]) == (width, width, 2) and cfg["lr"] == 30.0


@pytest.mark.parametrize("bench", ["cifar10", "ptb"])
def test_stn_paper_runs_take_real_steps(paper_data, bench):
    """The STN on both paper benchmark families at full width (the LSTM's 10k-word decoder included)."""
    from tasks.self_tuning_networks.data import load_text

    assert load_text("stn_ptb", paper_data / "data").vocab_size == PTB_VOCAB
    rec = run_one(TASK, "stn", bench, 0, "paper", overrides=SHRINK[bench], results_dir=paper_data / "r")
    check(rec, bench)
    assert rec["info"]["schedule"] and len(rec["info"]["schedule"]) == (7 if bench == "ptb" else 15)


def shrink_paper_scale(monkeypatch, shrink=SHRINK):
    """``shrink`` written into the loaded paper scale itself (scale and benchmark defaults), so that runs
    keep their canonical variant names and find the runs they require (overrides would rename them)."""
    from harness.plugins import get_task

    cfg = get_task(TASK).config
    # The config caches its resolved variants: none from before the shrunk schedule, and none of
    # the shrunk ones left for later tests (cleared again at the end).
    cfg._variant_cache.clear()
    paper = cfg.scale("paper")
    for bench, spec in paper.benchmarks.items():
        for k, v in shrink[bench].items():
            if k in (spec.get("defaults") or {}):
                monkeypatch.setitem(spec["defaults"], k, v)
            elif k in paper.defaults:
                monkeypatch.setitem(paper.defaults, k, v)


@pytest.mark.slow
def test_every_paper_run_takes_real_steps(paper_data, monkeypatch):
    """Every method of the paper plan for seed 0 on each of its benchmarks, its grids cut to two
    trials, in dependency order (searches read their trials), the LSTM 64 wide (NARROW)."""
    from harness.dag import plan

    shrink_paper_scale(monkeypatch, NARROW)
    thin_grids(monkeypatch, get_task(TASK).config.scale("paper"))  # every method, two trials each
    runs = [r for r in plan("paper", [TASK], results_dir=str(paper_data / "r")).values() if r.seed == 0]
    assert {r.variant.split("[")[0] for r in runs} == set(get_task(TASK).config.scale("paper").methods)
    assert len(runs) > 25
    for r in runs:  # plan() lists a run's requirements before the run
        rec = run_one(TASK, r.variant, r.benchmark, 0, "paper", results_dir=paper_data / "r")
        check(rec, r.benchmark, width=64)
