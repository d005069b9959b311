"""Paper scale before a GPU: the MolMIM-size Perceiver (d_model 512, 8 heads, FFN 2,048, 6 + 6
layers, latent 512) pre-trained on ZINC SMILES and probed on ESOL / FreeSolv / Lipophilicity, and the
card's MLP auto-encoder on 28 x 28 MedMNIST, each taking real training steps through the harness on
tiny local fixtures in the hub's formats (built by the task's own paper-scale builders, offline); the
estimate's FLOPs against torch's flop counter, its parameter count against the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import covering, no_shrunk_variants_left

from harness.plugins import get_task
from harness.runner import run_one

TASK = "cmim"
#: Probe molecules: one ring system each (5-fold scaffold splits need >= 5 scaffolds per source).
PROBES = {
    "ESOL": ["c1ccccc1O", "c1ccncc1C", "C1CCCCC1N", "c1ccoc1C", "c1ccsc1CC", "c1cc[nH]c1C(=O)O",
             "c1ccc2ccccc2c1", "C1CCCC1O"],
    "FREESOLV": ["C1CCNCC1", "c1cnccn1", "C1CCOC1", "c1ccc(cc1)-c1ccccc1", "O=C1CCCCC1", "c1ncncn1", "CC1CC1",
                 "OC1CCC1"],
    "LIPOPHILICITY": ["c1ccc2[nH]ccc2c1", "c1ccc2occc2c1", "C1COCCN1", "c1cscn1", "c1ccc2ncccc2c1", "C1CCCCCC1",
                      "c1ccnnc1", "C1CSCCN1"],
}
ZINC = ["CC(=O)Nc1ccc(O)cc1", "CN1CCC[C@H]1c1cccnc1", "O=C(O)c1ccccc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
        "O=C(O)c1ccccc1O", "CCN(CC)CC", "Clc1ccccc1", "COc1ccc(CCN)cc1"]


_no_shrunk_variants_left = no_shrunk_variants_left(TASK)  # tests/factories.py


@pytest.fixture
def paper_data(tmp_path, monkeypatch):
    """ZINC (a train split of SMILES), the three MoleculeNet sets (SMILES, label) and MedMNIST (28x28
    RGB images, label) as save_to_disk folders, built into a data root by the task's builders."""
    import datasets
    from PIL import Image

    import harness.data as hdata
    from tasks.cmim import run as run_mod
    from tasks.cmim.data import BUILDERS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def save(name, splits):
        datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()}).save_to_disk(str(tmp_path / name))
        return str(tmp_path / name)

    rng = np.random.default_rng(0)
    monkeypatch.setenv("HARNESS_ZINC15_SOURCE", save("zinc", {"train": {"smiles": ZINC}}))
    for name, smiles in PROBES.items():
        monkeypatch.setenv(f"HARNESS_{name}_SOURCE", save(name, {"train": {"SMILES": smiles,
                                                                           "label": rng.normal(size=8).tolist()}}))
    img = lambda: Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8))
    monkeypatch.setenv("HARNESS_MEDMNIST_SOURCE", save("med", {
        "train": {"image": [img() for _ in range(40)], "label": [[i % 4] for i in range(40)]},
        "test": {"image": [img() for _ in range(12)], "label": [[i % 4] for i in range(12)]}}))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    names = ("cmim_zinc15", "cmim_moleculenet", "cmim_medmnist")
    monkeypatch.setattr(hdata, "builders", lambda: {n: (BUILDERS[n], [TASK]) for n in names})
    for name in names:
        hdata.build(name, tmp_path / "data")
    monkeypatch.setattr(run_mod, "_CACHE", {})  # the fixture's data never reaches a later test
    return tmp_path


def check(rec, benchmark):
    assert rec["status"] == "ok", rec.get("error")
    cfg, info = rec["config"], rec["info"]
    metrics = {m["name"]: m["value"] for m in rec["metrics"]}
    assert np.isfinite(metrics["final_loss"]) and np.isfinite(metrics["recon_error"])
    if benchmark == "moleculenet":
        assert (cfg["arch"], cfg["d_model"], cfg["heads"], cfg["ffn"], cfg["enc_layers"], cfg["dec_layers"],
                cfg["latent"], cfg["max_len"]) == ("perceiver", 512, 8, 2048, 6, 6, 512, 128)
        assert info["n_pretrain"] == len(ZINC) and info["epochs_done"] == 1
        assert np.isfinite(metrics["probe_nrmse"]) and np.isfinite(metrics["probe_nrmse_x"])
    else:
        assert cfg["latent"] == 16 and info["latent"] == 16
        assert 0.0 <= metrics["probe_score"] <= 1.0 and 0.0 <= metrics["probe_score_x"] <= 1.0


def test_perceiver_cmim_pretrains_on_zinc_and_probes_moleculenet(paper_data):
    """cMIM at B = 256 (the fixture's 8 molecules make one batch): a real Adam step of the 50M-parameter
    Perceiver, then the ridge/SVR probes on mu and the informative embedding over random and
    scaffold folds of the three sets (~5 s)."""
    rec = run_one(TASK, "cmim[batch_size=256]", "moleculenet", 0, "paper", results_dir=paper_data / "r")
    check(rec, "moleculenet")
    assert rec["info"]["objective"] == "cmim" and rec["info"]["batch_size"] == 256


def test_medmnist_infonce_trains_and_checkpoints(paper_data):
    """InfoNCE (two augmented views and the projection head) on 28x28 MedMNIST in the hub's format;
    12 epochs cross the paper's checkpoint_every = 10."""
    rec = run_one(TASK, "infonce[batch_size=2048]", "medmnist", 1, "paper", overrides={"epochs": 12},
                  results_dir=paper_data / "r")
    check(rec, "medmnist")
    assert rec["info"]["epochs_done"] == 12 and rec["config"]["logreg_max_iter"] == 1000


def test_estimate_counts_are_the_models():
    """Parameters exactly; a training step's FLOPs within the paper_steps tolerance of torch's count
    (the Perceiver at its real width on two SMILES, cMIM and InfoNCE; the image MLP)."""
    from harness.estimate import counted_flops
    from tasks.cmim.estimate import (
        image_flops,
        image_params,
        molecule_step_flops,
        perceiver_params,
    )
    from tasks.cmim.models import (
        CharVocab,
        ImageAutoencoder,
        PerceiverSmiles,
        n_parameters,
    )
    from tasks.cmim.train import step_loss

    vocab = CharVocab(ZINC)
    with torch.device("meta"):
        big = PerceiverSmiles(len(vocab), latent=512, d_model=512, heads=8, ffn=2048, enc_layers=6, dec_layers=6,
                              max_len=128)
    assert n_parameters(big) == perceiver_params(512, 2048, 512, 6, 6, len(vocab), 128)
    assert 45e6 < n_parameters(big) < 70e6  # MolMIM: 65.2M (card §5)
    assert n_parameters(ImageAutoencoder(784)) == image_params(784, 16, (512, 256))
    torch.manual_seed(0)
    model = PerceiverSmiles(len(vocab), latent=512, d_model=512, heads=8, ffn=2048, enc_layers=6, dec_layers=6,
                            max_len=128)
    x = vocab.encode(ZINC[:2], 128)[0]
    x = x[:, : int((x != 0).sum(1).max())]
    hp = {"tau": 0.1, "w_rec": 1.0}
    for method in ("cmim", "infonce"):
        counted = counted_flops(lambda m=method: step_loss(model, m, x, hp, 1.0, torch.Generator().manual_seed(0),
                                                           (x, x))[0].backward())
        est = molecule_step_flops(method, 2, x.shape[1], 512, 2048, 512, 6, 6, len(vocab))
        assert 0.9 < est / counted < 1.2, method
    img = ImageAutoencoder(784)
    xb = torch.rand(16, 784)
    for method in ("cmim", "infonce"):
        counted = counted_flops(lambda m=method: step_loss(img, m, xb, hp, 1.0, torch.Generator().manual_seed(0),
                                                           (xb, xb))[0].backward())
        assert 0.9 < image_flops(method, 784, 16, (512, 256), 16)[0] / counted < 1.2, method


def test_the_paper_bill():
    """Every paper run is costed; the largest (InfoNCE at B = 2048: three encodings of ~97-token
    batches) fits one 80 GB H100; a ZINC pass is ~1-2 GPU-hours, an image run minutes."""
    from harness.estimate import bill

    b = bill("paper", [TASK])
    (t,) = b.tasks
    assert t.runs == t.estimated == 138 and t.not_fitting == 0
    biggest = max(b.runs, key=lambda r: r.peak_memory_bytes)
    assert biggest.benchmark == "moleculenet" and biggest.variant == "infonce[batch_size=2048]"
    assert 30e9 < biggest.peak_memory_bytes < 80e9
    mol = [r for r in b.runs if r.benchmark == "moleculenet"]
    img = [r for r in b.runs if r.benchmark == "medmnist"]
    assert all(0.5 < r.gpu_hours < 4 for r in mol) and all(r.gpu_hours < 0.5 for r in img)
    assert all(r.checkpoint_bytes == 0 for r in mol) and all(r.checkpoint_bytes > 0 for r in img)


@pytest.mark.slow
def test_every_paper_run_takes_real_steps(paper_data):
    """Every variant and every benchmark of the paper plan for one seed (a covering set of the pairs:
    each variant at least once, each benchmark at least once); MedMNIST for 2 epochs."""
    cfg = get_task(TASK).config
    pairs = [(v.variant, b) for v in cfg.variants("paper") for b in cfg.method_benchmarks("paper", v.name)]
    for variant, bench in covering(pairs):
        over = {"epochs": 2} if bench == "medmnist" else None
        check(run_one(TASK, variant, bench, 0, "paper", overrides=over, results_dir=paper_data / "r"), bench)
