"""Training and evaluation: stage one (CE / dropout / nested dropout), co-teaching (from scratch
and the stage-two fine-tuning of two stage-one networks), the A+B ensemble, and the
evaluation of every feature truncation k = 1..K in one pass.

Everything random in a run is drawn from (i) one CPU ``torch.Generator`` owned by the run
(batch order, nested k, crop/flip augmentation) and (ii) torch's global RNG (initialisation,
dropout masks). Both states go into every checkpoint, so a resumed run is bit-identical to an
uninterrupted one on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness.api import Artifact, Metric, RunResult

from .data import CIFAR_NORM, Arrays
from .models import NoisyLabelNet, build_model, nested_k_probs, sample_k, set_mode
from .noise import make_noisy_labels, replicate

#: Tie-break of the k* search: argmax_k acc(k) - K_PENALTY * k, accuracy as a fraction (repo).
K_PENALTY = 1e-5
#: Architecture used for each dataset unless the ``arch`` hyperparameter says otherwise.
DEFAULT_ARCH = {"digits": "mlp", "mnist1d": "cnn1d", "cifar10": "resnet18", "cifar100": "resnet18"}
#: Random streams derived from the run seed.
STREAM_STAGE_ONE, STREAM_COTEACH = 1, 2


def derive_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, dtype=np.uint64)[0] >> 1)


# -- data on the device -------------------------------------------------------------------

@dataclass
class TrainData:
    """Tensors of one benchmark replicate: noisy train labels, clean val/test."""

    dataset: str
    kind: str
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor  # noisy
    y_train_clean: torch.Tensor
    noise_mask: torch.Tensor  # bool, True where the label was corrupted
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    augment: bool = False
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @property
    def in_dim(self) -> int:
        return int(self.x_train.shape[1]) if self.kind == "vector" else 3

    @property
    def noise_fraction(self) -> float:
        return float(self.noise_mask.double().mean().item())

    def prepare(self, x: torch.Tensor, augment: bool = False, gen: torch.Generator | None = None) -> torch.Tensor:
        """Model input from stored examples (images: uint8 NHWC -> normalised NCHW, crop+flip)."""
        if self.kind == "vector":
            return x
        x = x.float().div_(255.0)
        if augment and self.augment:
            x = random_crop_flip(x, gen)
        x = (x - self.mean) / self.std
        return x.permute(0, 3, 1, 2).contiguous()


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """RandomCrop(32, padding=4, zero fill) + RandomHorizontalFlip on an NHWC batch."""
    n, h, w, _ = x.shape
    xp = F.pad(x, (0, 0, pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)[None]
    cols = ox[:, None] + torch.arange(w, device=x.device)[None]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return xp[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]


def make_train_data(arrays: Arrays, dataset: str, settings: Mapping[str, Any], seed: int, device: str,
                    augment: bool = False) -> TrainData:
    noisy, mask = make_noisy_labels(arrays.y_train, settings, arrays.num_classes, replicate(seed), dataset)
    t = lambda a, dt=None: torch.tensor(np.asarray(a), dtype=dt, device=device)  # noqa: E731 (a copy)
    mean = std = None
    if arrays.kind == "image":
        m, s = CIFAR_NORM.get(dataset, ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
        mean, std = t(m, torch.float32), t(s, torch.float32)
    return TrainData(
        dataset=dataset, kind=arrays.kind, num_classes=arrays.num_classes,
        x_train=t(arrays.x_train), y_train=t(noisy, torch.long), y_train_clean=t(arrays.y_train, torch.long),
        noise_mask=t(mask, torch.bool), x_val=t(arrays.x_val), y_val=t(arrays.y_val, torch.long),
        x_test=t(arrays.x_test), y_test=t(arrays.y_test, torch.long), augment=augment, mean=mean, std=std)


# -- schedules and selection --------------------------------------------------------------

def lr_factor(it: int, epoch: int, total_iters: int, warmup_iters: int = 0, schedule: str = "step",
              milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """Linear warm-up over the first ``warmup_iters`` iterations, times a step decay (x gamma from
    each milestone epoch on, 0-based, as MultiStepLR) or a cosine decay over all iterations."""
    f = 1.0
    if warmup_iters > 0 and it < warmup_iters:
        f = (it + 1) / warmup_iters
    if schedule == "step":
        f *= gamma ** sum(epoch >= int(m) for m in milestones)
    elif schedule == "cosine":
        f *= 0.5 * (1.0 + math.cos(math.pi * it / max(1, total_iters)))
    elif schedule != "constant":
        raise ValueError(f"unknown lr_schedule {schedule!r}: use step, cosine or constant")
    return f


def forget_schedule(epochs: int, forget_rate: float, ramp_epochs: int) -> np.ndarray:
    """Co-teaching R(T): linear 0 -> tau over the first ``ramp_epochs`` epochs, then tau."""
    r = np.full(epochs, float(forget_rate))
    if ramp_epochs > 0:
        ramp = np.linspace(0.0, float(forget_rate), ramp_epochs)
        n = min(ramp_epochs, epochs)
        r[:n] = ramp[:n]
    return r


def small_loss_indices(logits: torch.Tensor, labels: torch.Tensor, forget_rate: float) -> torch.Tensor:
    """Indices of the int((1 - forget_rate) * n) smallest-loss examples (repo SampleSelection)."""
    losses = F.cross_entropy(logits, labels, reduction="none")
    n_keep = max(1, int((1.0 - forget_rate) * len(losses)))
    return torch.argsort(losses, stable=True)[:n_keep]


def select_k(acc_per_k: np.ndarray) -> int:
    """k* = argmax_k acc(k) - 1e-5 k over k = 1..K (acc as a fraction); ties go to the smaller k."""
    acc = np.asarray(acc_per_k, dtype=np.float64)
    return int(np.argmax(acc - K_PENALTY * np.arange(1, len(acc) + 1))) + 1


# -- evaluation ---------------------------------------------------------------------------

@torch.no_grad()
def ensemble_logits_all_k(nets: Sequence[NoisyLabelNet], x: torch.Tensor) -> torch.Tensor:
    return sum(n.logits_all_k(n.features(x)) for n in nets) / len(nets)


@torch.no_grad()
def accuracy_per_k(nets: Sequence[NoisyLabelNet], data: TrainData, x: torch.Tensor, y: torch.Tensor,
                   all_k: bool) -> np.ndarray:
    """Accuracy (fraction) of the logit-averaged ``nets`` for every k = 1..K (``all_k``) or at K."""
    for n in nets:
        set_mode(n, False)
    K, C = nets[0].K, nets[0].classifier.weight.shape[0]
    chunk = max(1, min(len(x), (1 << 24) // (K * C) if all_k else 4096))  # <= 16M logits at once
    correct = torch.zeros(K if all_k else 1, dtype=torch.float64, device=y.device)
    for s in range(0, len(x), chunk):
        xb, yb = data.prepare(x[s:s + chunk]), y[s:s + chunk]
        if all_k:
            pred = ensemble_logits_all_k(nets, xb).argmax(2)  # N x K
            correct += (pred == yb[:, None]).sum(0).double()
        else:
            logits = sum(n(xb) for n in nets) / len(nets)
            correct += (logits.argmax(1) == yb).sum().double()
    return (correct / len(x)).cpu().numpy()


@torch.no_grad()
def predictions(nets: Sequence[NoisyLabelNet], data: TrainData, x: torch.Tensor, k: int | None) -> torch.Tensor:
    for n in nets:
        set_mode(n, False)
    out = []
    for s in range(0, len(x), 4096):
        xb = data.prepare(x[s:s + 4096])
        out.append((sum(n(xb, k) for n in nets) / len(nets)).argmax(1))
    return torch.cat(out)


def final_evaluation(nets: Sequence[NoisyLabelNet], data: TrainData, nested: bool, ctx) -> tuple[list[Metric], dict]:
    """Metrics of the selected model(s): test accuracy at k* (nested) or K, and the diagnostics."""
    K = nets[0].K
    val = accuracy_per_k(nets, data, data.x_val, data.y_val, all_k=nested)
    test = accuracy_per_k(nets, data, data.x_test, data.y_test, all_k=nested)
    k_star = select_k(val) if nested else K
    i = k_star - 1 if nested else 0
    metrics = [Metric("test_accuracy", 100.0 * float(test[i]), True),
               Metric("val_accuracy", 100.0 * float(val[i]), True)]
    info: dict[str, Any] = {"K": K}
    if nested:
        for k in range(1, K + 1):
            ctx.log(k, curve="acc_vs_k", val=100.0 * float(val[k - 1]), test=100.0 * float(test[k - 1]))
        metrics += [Metric("k_star", float(k_star), False),
                    Metric("k_star_fraction", k_star / K, False),
                    Metric("test_acc_at_K", 100.0 * float(test[-1]), True),
                    Metric("val_acc_at_K", 100.0 * float(val[-1]), True)]
        info.update(k_star=k_star, test_acc_at_1=100.0 * float(test[0]),
                    test_acc_max_over_k=100.0 * float(test.max()),
                    acc_vs_k={"val": [round(100.0 * float(v), 4) for v in val],
                              "test": [round(100.0 * float(v), 4) for v in test]})
    if bool(data.noise_mask.any()):
        pred = predictions(nets, data, data.x_train, k_star if nested else None)
        m = data.noise_mask
        metrics.append(Metric("memorization", 100.0 * float((pred[m] == data.y_train[m]).float().mean().item()), False))
    return metrics, info


# -- checkpoint helpers -------------------------------------------------------------------

def _clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {"gen": gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator, state: Mapping[str, Any]) -> None:
    gen.set_state(state["gen"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_due(epoch: int, epochs: int) -> bool:
    """Checkpoint about ten times per run (every epoch for short runs) and after the last epoch."""
    every = max(1, epochs // 10)
    return (epoch + 1) % every == 0 or epoch + 1 == epochs


def _diverged(info: Mapping[str, Any]) -> RunResult:
    nan = float("nan")
    return RunResult(metrics=(Metric("test_accuracy", nan, True), Metric("val_accuracy", nan, True)),
                     status="diverged", info=dict(info))


def model_meta(net: NoisyLabelNet) -> dict[str, Any]:
    """What it takes to rebuild ``net`` (stored beside its weights in model.pt)."""
    return {"arch": net.arch, "in_dim": net.in_dim, "num_classes": int(net.classifier.weight.shape[0]), "K": net.K,
            "compression": net.compression, "p": net.p, "sigma": net.sigma, "hidden": net.hidden,
            "channels": net.channels}


def net_from_artifact(blob: Mapping[str, Any], device: str) -> NoisyLabelNet:
    m = blob["meta"]
    net = build_model(m["arch"], m["in_dim"], m["num_classes"], m["K"], m["compression"], m["p"], m["sigma"],
                      hidden=m["hidden"], channels=m["channels"])
    net.load_state_dict(blob["state_dict"])
    return net.to(device)


# -- stage one ----------------------------------------------------------------------------

class SGD:
    """SGD with momentum and L2 weight decay, the update of ``torch.optim.SGD`` (dampening 0,
    no Nesterov)::

        g = grad + wd * p;   buf = g (first step) or momentum * buf + g;   p -= lr * buf

    A plain class because every ``torch.optim.Optimizer`` call imports ``torch._dynamo`` on
    first use (about 2.4 s per process in torch 2.13), which would dominate a small-scale run.
    Same interface subset: ``param_groups[0]["lr"]``, ``zero_grad``, ``step``, ``state_dict``.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"lr": float(lr), "momentum": float(momentum), "weight_decay": float(weight_decay)}]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        lr, mom, wd = g["lr"], g["momentum"], g["weight_decay"]
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d = p.grad.add(p, alpha=wd) if wd else p.grad
            buf = self.buffers[i]
            if buf is None:
                buf = self.buffers[i] = d.detach().clone()
            else:
                buf.mul_(mom).add_(d)
            p.add_(buf, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        return {"param_groups": [dict(g) for g in self.param_groups],
                "buffers": [None if b is None else b.detach().clone() for b in self.buffers]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.param_groups = [dict(g) for g in state["param_groups"]]
        self.buffers = [None if b is None else b.to(p.device).clone() for b, p in zip(state["buffers"], self.params)]


def _sgd(net: torch.nn.Module, hp: Mapping[str, Any], lr: float) -> SGD:
    return SGD(net.parameters(), lr=lr, momentum=float(hp.get("momentum", 0.9)),
               weight_decay=float(hp.get("weight_decay", 5e-4)))


def train_stage_one(data: TrainData, hp: Mapping[str, Any], compression: str, ctx, arch: str,
                    variant: str) -> RunResult:
    """CE / dropout / nested-dropout training on noisy labels; best epoch and k* on clean val."""
    seed = int(ctx.seed)
    epochs, bs, lr = int(hp["epochs"]), int(hp["batch_size"]), float(hp["lr"])
    n = len(data.y_train)
    if n < bs:
        raise ValueError(f"batch_size {bs} exceeds the {n} training examples")
    ipe = n // bs  # drop_last, as the repo's loader
    total = epochs * ipe
    nested = compression == "nested"

    torch.manual_seed(derive_seed(seed, STREAM_STAGE_ONE))
    gen = torch.Generator().manual_seed(derive_seed(seed, STREAM_STAGE_ONE + 100))
    net = build_model(arch, data.in_dim, data.num_classes, int(hp["feature_dim"]), compression,
                      p=float(hp.get("p", 0.0)), sigma=float(hp.get("sigma", 0.0)),
                      hidden=int(hp.get("hidden", 256)), channels=int(hp.get("channels", 32))).to(ctx.device)
    opt = _sgd(net, hp, lr)
    probs = nested_k_probs(net.K, float(hp["sigma"])) if nested else None
    best = {"val": -1.0, "epoch": -1, "k": net.K, "state": _clone_state(net)}
    start = 0

    state = ctx.restore()
    if state is not None and state.get("stage") == "one":
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        best = state["best"]
        start = int(state["epoch"])
        _set_rng_state(gen, state["rng"])

    for epoch in range(start, epochs):
        set_mode(net, True)
        perm = torch.randperm(n, generator=gen).to(ctx.device)
        loss_sum = torch.zeros((), device=ctx.device)
        hits = torch.zeros((), device=ctx.device)
        for b in range(ipe):
            it = epoch * ipe + b
            cur_lr = lr * lr_factor(it, epoch, total, int(hp.get("warmup_iters", 0)), hp.get("lr_schedule", "step"),
                                    hp.get("lr_milestones", ()), float(hp.get("lr_gamma", 0.1)))
            for g in opt.param_groups:
                g["lr"] = cur_lr
            idx = perm[b * bs:(b + 1) * bs]
            xb = data.prepare(data.x_train[idx], augment=True, gen=gen)
            yb = data.y_train[idx]
            k = sample_k(probs, gen) if nested else None
            logits = net(xb, k)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            hits += (logits.detach().argmax(1) == yb).sum()
        train_loss = float(loss_sum.item()) / ipe
        if not math.isfinite(train_loss):
            return _diverged({"diverged_epoch": epoch + 1, "variant": variant})
        val = accuracy_per_k([net], data, data.x_val, data.y_val, all_k=nested)
        k_e = select_k(val) if nested else net.K
        acc_e = float(val[k_e - 1] if nested else val[0])
        ctx.log(epoch + 1, curve="train", loss=train_loss, noisy_label_accuracy=100.0 * float(hits.item()) / (ipe * bs),
                lr=cur_lr)
        ctx.log(epoch + 1, curve="val", accuracy=100.0 * acc_e, **({"k": k_e} if nested else {}))
        if acc_e > best["val"]:
            best = {"val": acc_e, "epoch": epoch + 1, "k": k_e, "state": _clone_state(net)}
        if checkpoint_due(epoch, epochs):
            ctx.checkpoint({"stage": "one", "epoch": epoch + 1, "model": net.state_dict(), "opt": opt.state_dict(),
                            "best": best, "rng": _rng_state(gen)})

    net.load_state_dict(best["state"])
    metrics, info = final_evaluation([net], data, nested, ctx)
    info.update(best_epoch=best["epoch"], variant=variant, noise_fraction=data.noise_fraction, arch=arch)
    k_star = info.get("k_star", net.K)
    torch.save({"state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                "meta": model_meta(net), "variant": variant, "seed": seed, "k_star": k_star},
               ctx.out_dir / "model.pt")
    return RunResult(metrics=tuple(metrics), artifacts=(Artifact("model", "model.pt"),), info=info)


# -- co-teaching --------------------------------------------------------------------------

def coteach_step(net_a: NoisyLabelNet, net_b: NoisyLabelNet, opt_a, opt_b, xb: torch.Tensor, yb: torch.Tensor,
                 forget_rate: float, k_select: int | None, k_train: int | None, freeze_bn: bool = False):
    """One co-teaching update on a mini-batch (repo co_teaching_resnet/train.py + loss.py).

    D1, D2 = the two halves of the batch. In eval mode with features truncated to ``k_select``
    A ranks D1 and B ranks D2 by per-example CE and each keeps its (1 - forget) smallest-loss
    part (sel_a within D1, sel_b within D2). In train mode (nested mask ``k_train``, the same for
    both) A is updated on sel_b (chosen by B) and B on sel_a (chosen by A), each by its own
    optimiser. Returns (loss_a, loss_b) detached, and the selections (indices into D1, D2).
    """
    half = len(yb) // 2
    x1, y1, x2, y2 = xb[:half], yb[:half], xb[half:2 * half], yb[half:2 * half]
    set_mode(net_a, False)
    set_mode(net_b, False)
    with torch.no_grad():
        sel_a = small_loss_indices(net_a(x1, k_select), y1, forget_rate)  # A's choice within D1
        sel_b = small_loss_indices(net_b(x2, k_select), y2, forget_rate)  # B's choice within D2
    set_mode(net_a, True, freeze_bn)
    set_mode(net_b, True, freeze_bn)
    loss_a = F.cross_entropy(net_a(x2[sel_b], k_train), y2[sel_b])  # A learns from B's selection
    loss_b = F.cross_entropy(net_b(x1[sel_a], k_train), y1[sel_a])  # B learns from A's selection
    opt_a.zero_grad(set_to_none=True)
    loss_a.backward()
    opt_a.step()
    opt_b.zero_grad(set_to_none=True)
    loss_b.backward()
    opt_b.step()
    return loss_a.detach(), loss_b.detach(), sel_a, sel_b


def train_coteach(data: TrainData, hp: Mapping[str, Any], nets: Sequence[NoisyLabelNet], ctx, *,
                  finetune: bool, variant: str, forget_rate: float, ramp_epochs: int,
                  info_extra: Mapping[str, Any] | None = None, arch: str = "") -> RunResult:
    """Co-teaching of two networks (card §2.1). Per mini-batch: split into halves D1, D2; in eval
    mode (features truncated to the current k*) A ranks D1 and B ranks D2 by CE; each keeps its
    (1 - forget) smallest-loss fraction; in train mode A is updated on B's selection and B on A's
    (own SGD optimisers; one nested k per batch shared by both). Validation: logits of A and B
    averaged, k* re-chosen; the best pair on clean validation is kept (epoch 0 = the starting pair).
    """
    net_a, net_b = nets
    seed = int(ctx.seed)
    nested = net_a.compression == "nested"
    if finetune:
        epochs, lr = int(hp["finetune_epochs"]), float(hp["finetune_lr"])
        warmup, schedule = 0, "step"
        milestones = hp.get("finetune_lr_milestones", ())
        freeze_bn = bool(hp.get("finetune_freeze_bn", True))
    else:
        epochs, lr = int(hp["epochs"]), float(hp["lr"])
        warmup, schedule = int(hp.get("warmup_iters", 0)), hp.get("lr_schedule", "step")
        milestones = hp.get("lr_milestones", ())
        freeze_bn = False
    gamma = float(hp.get("lr_gamma", 0.1))
    bs = int(hp["batch_size"])
    half = bs // 2
    n = len(data.y_train)
    ipe = n // bs
    total = epochs * ipe
    rates = forget_schedule(epochs, forget_rate, ramp_epochs)
    probs = nested_k_probs(net_a.K, net_a.sigma) if nested else None

    gen = torch.Generator().manual_seed(derive_seed(seed, STREAM_COTEACH + 100))
    opt_a, opt_b = _sgd(net_a, hp, lr), _sgd(net_b, hp, lr)

    def validate() -> tuple[float, int]:
        val = accuracy_per_k([net_a, net_b], data, data.x_val, data.y_val, all_k=nested)
        k = select_k(val) if nested else net_a.K
        return float(val[k - 1] if nested else val[0]), k

    state = ctx.restore()
    if state is not None and state.get("stage") == "coteach":
        net_a.load_state_dict(state["A"])
        net_b.load_state_dict(state["B"])
        opt_a.load_state_dict(state["opt_a"])
        opt_b.load_state_dict(state["opt_b"])
        best, current_k, start = state["best"], int(state["current_k"]), int(state["epoch"])
        _set_rng_state(gen, state["rng"])
    else:
        acc0, current_k = validate()
        ctx.log(0, curve="val", accuracy=100.0 * acc0, **({"k": current_k} if nested else {}))
        best = {"val": acc0, "epoch": 0, "k": current_k, "A": _clone_state(net_a), "B": _clone_state(net_b)}
        start = 0

    for epoch in range(start, epochs):
        tau = float(rates[epoch])
        perm = torch.randperm(n, generator=gen).to(ctx.device)
        loss_sum = torch.zeros((), device=ctx.device)
        kept = 0
        for b in range(ipe):
            it = epoch * ipe + b
            cur_lr = lr * lr_factor(it, epoch, total, warmup, schedule, milestones, gamma)
            for opt in (opt_a, opt_b):
                for g in opt.param_groups:
                    g["lr"] = cur_lr
            idx = perm[b * bs:(b + 1) * bs]
            xb = data.prepare(data.x_train[idx], augment=True, gen=gen)
            yb = data.y_train[idx]
            k = sample_k(probs, gen) if nested else None  # the same k for both networks
            loss_a, loss_b, sel_a, _ = coteach_step(net_a, net_b, opt_a, opt_b, xb, yb, tau,
                                                    current_k if nested else None, k, freeze_bn)
            loss_sum += loss_a + loss_b
            kept += len(sel_a)
        train_loss = float(loss_sum.item()) / (2 * ipe)
        if not math.isfinite(train_loss):
            return _diverged({"diverged_epoch": epoch + 1, "variant": variant})
        acc_e, current_k = validate()
        ctx.log(epoch + 1, curve="train", loss=train_loss, forget_rate=tau, kept_fraction=kept / (ipe * half), lr=cur_lr)
        ctx.log(epoch + 1, curve="val", accuracy=100.0 * acc_e, **({"k": current_k} if nested else {}))
        if acc_e > best["val"]:
            best = {"val": acc_e, "epoch": epoch + 1, "k": current_k, "A": _clone_state(net_a), "B": _clone_state(net_b)}
        if checkpoint_due(epoch, epochs):
            ctx.checkpoint({"stage": "coteach", "epoch": epoch + 1, "A": net_a.state_dict(), "B": net_b.state_dict(),
                            "opt_a": opt_a.state_dict(), "opt_b": opt_b.state_dict(), "best": best,
                            "current_k": current_k, "rng": _rng_state(gen)})

    net_a.load_state_dict(best["A"])
    net_b.load_state_dict(best["B"])
    metrics, info = final_evaluation([net_a, net_b], data, nested, ctx)
    info.update(best_epoch=best["epoch"], variant=variant, forget_rate=forget_rate, forget_ramp_epochs=ramp_epochs,
                noise_fraction=data.noise_fraction, arch=arch, **(info_extra or {}))
    save_pair(ctx, net_a, net_b, variant, info.get("k_star", net_a.K))
    return RunResult(metrics=tuple(metrics), artifacts=(Artifact("model", "model.pt"),), info=info)


def save_pair(ctx, net_a, net_b, variant, k_star) -> None:
    blob = lambda net: {"state_dict": {k: v.cpu() for k, v in net.state_dict().items()},  # noqa: E731
                        "meta": model_meta(net)}
    torch.save({"A": blob(net_a), "B": blob(net_b), "variant": variant, "seed": int(ctx.seed), "k_star": k_star},
               ctx.out_dir / "model.pt")


def evaluate_ensemble(data: TrainData, nets: Sequence[NoisyLabelNet], ctx, *, variant: str, arch: str,
                      hp: Mapping[str, Any], info_extra: Mapping[str, Any] | None = None) -> RunResult:
    """A+B logit ensemble of two stage-one networks, no fine-tuning; k* re-chosen on clean val."""
    nested = nets[0].compression == "nested"
    metrics, info = final_evaluation(list(nets), data, nested, ctx)
    info.update(variant=variant, noise_fraction=data.noise_fraction, **(info_extra or {}))
    save_pair(ctx, nets[0], nets[1], variant, info.get("k_star", nets[0].K))
    return RunResult(metrics=tuple(metrics), artifacts=(Artifact("model", "model.pt"),), info=info)
