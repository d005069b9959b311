"""Dispatch of one run: load the benchmark's data, build its encoder-decoder, train the method's
objective, evaluate the frozen embeddings (mu and the informative embedding)."""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.api import Metric, RunResult

from . import data as data_mod
from .losses import OBJECTIVES
from .train import augment_images, evaluate_images, evaluate_molecules, train

#: Direction of every metric a run reports (also in task.yaml's ``metrics``).
HIGHER = {"uniformity": True, "mean_cos": False, "mean_sigma": False, "recon_error": False,
          "final_loss": False, "probe_nrmse": False, "probe_nrmse_x": False}

#: Methods that run another method's objective with other fixed hyperparameters (task.yaml).
OBJECTIVE_OF = {"amim_wrec_half": "amim", "cmim_wrec_half": "cmim"}

_CACHE: dict[Any, Any] = {}


def _cached(key, fn):
    if key not in _CACHE:
        _CACHE[key] = fn()
    return _CACHE[key]


def higher_is_better(name: str) -> bool:
    if name in HIGHER:
        return HIGHER[name]
    if name.startswith("rmse_"):
        return False
    return True


def random_smiles(smiles: list[str], n: int, max_len: int, seed: int = data_mod.SPLIT_SEED) -> list[list[str]]:
    """``n`` randomised SMILES per molecule (RDKit, fixed seed: the same enumeration for every
    method and run); one longer than ``max_len`` falls back to the canonical string."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    out = []
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        rs = list(Chem.MolToRandomSmilesVect(mol, n, randomSeed=seed + i)) if (mol is not None and n > 0) else []
        out.append([r if len(r) <= max_len else s for r in rs])
    return out


def run_method(task, method, benchmark, hp: dict[str, Any], ctx) -> RunResult:
    name = OBJECTIVE_OF.get(method.name, method.name)
    if name not in OBJECTIVES:
        raise ValueError(f"cmim has no method {name!r} (objectives: {', '.join(OBJECTIVES)})")
    kind = benchmark.settings.get("kind", "image")
    torch.manual_seed(int(ctx.seed))
    if kind == "image":
        metrics, info = run_images(name, benchmark, hp, ctx)
    elif kind == "molecule":
        metrics, info = run_molecules(name, benchmark, hp, ctx)
    else:
        raise ValueError(f"benchmark {benchmark.name}: unknown kind {kind!r} (image or molecule)")
    result = tuple(Metric(k, float(v), higher_is_better(k)) for k, v in sorted(metrics.items()))
    status = "diverged" if info.get("diverged") or not all(math.isfinite(m.value) for m in result) else "ok"
    info = {**info, "objective": name, "batch_size": int(hp["batch_size"]), "w_rec": float(hp.get("w_rec", 1.0)),
            "metrics": {m.name: m.value for m in result}}  # copied for the task's figures (the runs frame has no metrics)
    return RunResult(metrics=result, status=status, info=info)


def run_images(name: str, benchmark, hp: dict[str, Any], ctx):
    from .models import ImageAutoencoder

    arrays = _cached(("images", benchmark.dataset),
                     lambda: data_mod.to_images(data_mod.load_dataset_dict(benchmark.dataset)))
    x_train = torch.from_numpy(arrays.x_train.copy())
    x_test = torch.from_numpy(arrays.x_test.copy())
    d = x_train.shape[1]
    side = int(round(math.sqrt(d)))
    s = benchmark.settings
    model = ImageAutoencoder(d, latent=int(hp.get("latent", 16)), hidden=tuple(hp.get("hidden", (512, 256))),
                             likelihood=str(s.get("likelihood", "bernoulli")), sigma0=float(s.get("sigma0", 0.1))).to(ctx.device)

    def get_batch(idx, gen):
        x = x_train[idx]
        views = (augment_images(x, side, gen), augment_images(x, side, gen)) if name == "infonce" else None
        return x, views

    summary = train(model, name, hp, ctx, x_train.shape[0], get_batch)
    if summary["diverged"]:
        return {"probe_score": math.nan}, {"diverged": True, **summary}
    metrics = evaluate_images(model, name, x_train, arrays.y_train, x_test, arrays.y_test, hp)
    metrics["final_loss"] = summary["final_loss"]
    return metrics, {"epochs_done": summary["epochs_done"], "latent": int(hp.get("latent", 16))}


def run_molecules(name: str, benchmark, hp: dict[str, Any], ctx):
    from .models import CharVocab, PerceiverSmiles, SmilesGRU

    s = benchmark.settings
    max_len = int(hp.get("max_len", 100))
    n_random = int(hp.get("n_random", 4))

    def load():
        dsd = data_mod.load_dataset_dict(benchmark.dataset)
        pre = data_mod.load_dataset_dict(s["pretrain_dataset"]) if s.get("pretrain_dataset") else None
        mols = data_mod.to_molecules(dsd, pre, hp.get("max_pretrain"))
        return mols, random_smiles(mols.pretrain, n_random, max_len)

    mols, enumerations = _cached(("molecules", benchmark.dataset, s.get("pretrain_dataset"), max_len, n_random,
                                  hp.get("max_pretrain")), load)
    vocab = CharVocab(mols.pretrain + mols.smiles + [r for rs in enumerations for r in rs])
    # views[k][i]: the k-th string of molecule i (k = 0 canonical, 1.. randomised)
    strings = [[m] + rs for m, rs in zip(mols.pretrain, enumerations)]
    n_views = 1 + n_random
    tokens = torch.stack([vocab.encode([st[k] for st in strings], max_len)[0] for k in range(n_views)])  # (V, N, L+1)
    arch = str(hp.get("arch", "gru"))
    if arch == "gru":
        model = SmilesGRU(len(vocab), latent=int(hp.get("latent", 32)), hidden=int(hp.get("hidden", 128)),
                          emb=int(hp.get("emb", 48)))
    elif arch == "perceiver":
        model = PerceiverSmiles(len(vocab), latent=int(hp.get("latent", 512)), d_model=int(hp.get("d_model", 512)),
                                heads=int(hp.get("heads", 8)), ffn=int(hp.get("ffn", 2048)),
                                enc_layers=int(hp.get("enc_layers", 6)), dec_layers=int(hp.get("dec_layers", 6)),
                                max_len=max_len)
    else:
        raise ValueError(f"unknown molecular architecture {arch!r} (gru or perceiver)")
    model = model.to(ctx.device)

    def trim(t):
        return t[:, : int((t != 0).sum(1).max())]

    def get_batch(idx, gen):
        pick = torch.randint(0, n_views, (len(idx),), generator=gen)
        x = trim(tokens[pick, idx])
        views = None
        if name == "infonce":
            other = (pick + 1 + torch.randint(0, n_views - 1, (len(idx),), generator=gen)) % n_views
            both = trim(torch.cat([tokens[pick, idx], tokens[other, idx]]))
            views = (both[: len(idx)], both[len(idx):])
        return x, views

    summary = train(model, name, hp, ctx, tokens.shape[1], get_batch)
    if summary["diverged"]:
        return {"probe_score": math.nan}, {"diverged": True, **summary}
    probe_tokens = trim(vocab.encode(mols.smiles, max_len)[0])
    sources = tuple(s.get("sources", sorted(set(mols.source.tolist()))))
    metrics = evaluate_molecules(model, name, probe_tokens, mols, sources)
    metrics["final_loss"] = summary["final_loss"]
    return metrics, {"epochs_done": summary["epochs_done"], "n_pretrain": len(mols.pretrain), "vocab": len(vocab)}
