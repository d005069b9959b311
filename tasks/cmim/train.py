"""One training run of one objective on one data type, then the frozen-embedding evaluation.

Everything random in a run comes from the run's seed: ``torch.manual_seed(seed)`` before the
model is built (initialisation), and one ``torch.Generator`` per epoch seeded from (seed, epoch)
for the batch order, the reparameterisation noise and the augmentations, so a resumed run
replays the same epochs and the same seed gives bit-identical metrics on CPU.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .losses import PROBABILISTIC, clamp_logsig, objective, warmup_beta
from .probes import image_probes, molecule_probes, uniformity


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) * 7919 + 17)


def batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Shuffled mini-batches of exactly ``batch_size`` (the last partial batch is dropped, so the
    contrastive term always sees B - 1 negatives)."""
    perm = torch.randperm(n, generator=gen)
    b = min(int(batch_size), n)
    return [perm[i: i + b] for i in range(0, n - b + 1, b)]


# -- augmentations (InfoNCE positives; images only: molecules use randomised SMILES) ----------

def augment_images(x: torch.Tensor, side: int, gen: torch.Generator, max_shift: int = 2, noise: float = 0.1) -> torch.Tensor:
    """Random shift of up to ``max_shift`` pixels in each direction (zero fill) + Gaussian noise."""
    b = x.shape[0]
    img = x.view(b, side, side)
    pad = torch.nn.functional.pad(img, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(side)[None]).unsqueeze(-1).expand(b, side, side)
    cols = (dx[:, None] + torch.arange(side)[None]).unsqueeze(1).expand(b, side, side)
    out = pad[torch.arange(b)[:, None, None], rows, cols]
    out = out + noise * torch.randn(out.shape, generator=gen)
    return out.clamp(0.0, 1.0).reshape(b, -1)


def step_loss(model, method: str, x, hp: dict[str, Any], beta: float, gen: torch.Generator, views=None):
    """Mean loss of one batch and its mean terms. ``views``: (view1, view2) for InfoNCE."""
    mu, logsig = model.encode(x)
    logsig = clamp_logsig(logsig, float(hp.get("logsig_min", -6.0)))
    if method in PROBABILISTIC:
        z = mu + torch.exp(logsig) * torch.randn(mu.shape, generator=gen).to(mu.device)  # CPU stream: any device
    else:
        z = mu
    rec = model.rec_nll(z, x)
    h1 = h2 = None
    if method == "infonce":
        v1, v2 = views
        h1 = model.project(model.encode(v1)[0])
        h2 = model.project(model.encode(v2)[0])
    terms = objective(method, rec=rec, mu=mu, logsig=logsig, z=z, beta=beta, w_rec=float(hp.get("w_rec", 1.0)),
                      tau=float(hp.get("tau", 0.1)), h1=h1, h2=h2)
    return terms["total"].mean(), {k: float(v.detach().mean()) for k, v in terms.items()}


def train(model, method: str, hp: dict[str, Any], ctx, n: int, get_batch) -> dict[str, Any]:
    """Adam over ``epochs`` epochs; ``get_batch(idx, gen) -> (x, views)``. Returns a summary."""
    opt = torch.optim.Adam(model.parameters(), lr=float(hp.get("lr", 1e-3)))
    epochs, warm = int(hp["epochs"]), int(hp.get("warmup_epochs", 0))
    start, history = 0, []
    state = ctx.restore() if hasattr(ctx, "restore") else None
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, history = int(state["epoch"]), list(state["history"])
    diverged = False
    device = next(model.parameters()).device  # batches are drawn on the CPU and moved to the model
    for epoch in range(start, epochs):
        gen = epoch_generator(ctx.seed, epoch)
        beta = warmup_beta(epoch, warm)
        sums: dict[str, float] = {}
        idx_list = batches(n, int(hp["batch_size"]), gen)
        model.train()
        for idx in idx_list:
            x, views = get_batch(idx, gen)
            x = x.to(device)
            views = tuple(v.to(device) for v in views) if views is not None else None
            loss, terms = step_loss(model, method, x, hp, beta, gen, views)
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
        if diverged:
            break
        means = {k: v / max(len(idx_list), 1) for k, v in sums.items()}
        history.append(means.get("total", math.nan))
        ctx.log(epoch + 1, curve="train", loss=means.get("total", math.nan), beta=beta,
                **{f"term_{k}": v for k, v in means.items() if k != "total"})
        if int(hp.get("checkpoint_every", 0)) and (epoch + 1) % int(hp["checkpoint_every"]) == 0 and epoch + 1 < epochs:
            ctx.checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "history": history})
    return {"diverged": diverged, "final_loss": history[-1] if history else math.nan, "epochs_done": len(history)}


# -- evaluation -----------------------------------------------------------------------------

@torch.no_grad()
def embed(model, x, chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, sigma, decoder features at mu) for every row of ``x`` (tokens or pixels)."""
    model.eval()
    device = next(model.parameters()).device
    mus, sigs, feats = [], [], []
    for i in range(0, x.shape[0], chunk):
        xb = x[i: i + chunk].to(device)
        mu, logsig = model.encode(xb)
        mus.append(mu.cpu())
        sigs.append(torch.exp(clamp_logsig(logsig)).cpu())
        feats.append(model.decoder_features(mu, xb).cpu())
    return torch.cat(mus).numpy(), torch.cat(sigs).numpy(), torch.cat(feats).numpy()


def latent_metrics(method: str, mu: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    u, c = uniformity(mu)
    out = {"uniformity": u, "mean_cos": c}
    if method in PROBABILISTIC:
        out["mean_sigma"] = float(sigma.mean())
    return out


def evaluate_images(model, method: str, x_train, y_train, x_test, y_test, hp) -> dict[str, float]:
    mu_tr, _, f_tr = embed(model, x_train)
    mu_te, sig_te, f_te = embed(model, x_test)
    out = dict(image_probes(mu_tr, y_train, mu_te, y_test, logreg_max_iter=int(hp.get("logreg_max_iter", 300))))
    x_probe = image_probes(np.concatenate([mu_tr, f_tr], 1), y_train, np.concatenate([mu_te, f_te], 1), y_test,
                           logreg_max_iter=int(hp.get("logreg_max_iter", 300)))
    out.update({f"{k}_x": v for k, v in x_probe.items()})
    with torch.no_grad():
        m = model.mean(torch.from_numpy(mu_te).to(next(model.parameters()).device)).cpu()
    out["recon_error"] = float(((m - x_test) ** 2).mean())
    out.update(latent_metrics(method, mu_te, sig_te))
    return out


def evaluate_molecules(model, method: str, tokens, mols, sources) -> dict[str, float]:
    from .models import PAD

    mu, sig, feats = embed(model, tokens)
    out = dict(molecule_probes(mu, mols.target, mols.source, mols.scaffold, sources))
    x_probe = molecule_probes(np.concatenate([mu, feats], 1), mols.target, mols.source, mols.scaffold, sources)
    out.update({f"{k}_x": v for k, v in x_probe.items()})
    with torch.no_grad():
        model.eval()
        device = next(model.parameters()).device
        correct = total = 0
        for i in range(0, tokens.shape[0], 512):
            tb = tokens[i: i + 512]
            pred = model.logits(torch.from_numpy(mu[i: i + 512]).to(device), tb.to(device)).argmax(-1).cpu()
            valid = tb != PAD
            correct += int(((pred == tb) & valid).sum())
            total += int(valid.sum())
    out["recon_error"] = 1.0 - correct / max(total, 1)
    out.update(latent_metrics(method, mu, sig))
    return out
