"""One loop for every method: the DKVB (its decoders and key ablations) and the linear-probe / MLP
baselines on the same frozen features, trained on the same class-incremental stream (or i.i.d.).

Per run:

1. Embeddings come precomputed (a dataset); the toy draws its stream from the seed.
2. DKVB only: fixed splitter -> keys fitted by EMA k-means on the unlabeled pre-training split ->
   keys frozen, usage counters reset -> the stream's key indices cached once (a training step is then
   an embedding-bag lookup). The ``dkvb_ema_keys`` ablation keeps updating keys on the stream, so it
   routes every batch afresh.
3. The stream: tasks of ``split_size`` classes in a seeded class order (seeds 0 and 42: ordinal, the
   official rule); ``stream: iid`` trains once on all classes for the same number of epochs per
   example. After each task, test accuracy on all classes (DKVB: routed to used keys only).

Random streams are derived from the seed by name (:func:`derive_seed`), so a DKVB run and its
i.i.d. twin share projections and keys, and every method of a seed sees the same class order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.api import Metric, RunResult

from .bottleneck import KeyValueBottleneck, Splitter, fetch_values, vote_logits
from .data import TOY_TASKS, toy_class_means, toy_sample

#: Toy decision-region grid: GRID x GRID points on [0.05, 0.95]^2 (the notebook's plot limits).
GRID = 50
GRID_LO, GRID_HI = 0.05, 0.95


def derive_seed(seed: int, stream: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:8], "little") & (2**63 - 1)


def generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, stream))


@dataclass
class Stream:
    """What one run trains and tests on."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_pretrain: torch.Tensor | None
    tasks: list[list[int]]
    """Class-incremental tasks in training order."""
    num_classes: int
    toy: bool = False


def class_tasks(num_classes: int, split_size: int, seed: int) -> list[list[int]]:
    """Ordinal for seeds 0 and 42 (official ``train.py``), else a seeded permutation."""
    order = list(range(num_classes))
    if seed not in (0, 42):
        g = generator(seed, "class_order")
        order = torch.randperm(num_classes, generator=g).tolist()
    return [order[i:i + split_size] for i in range(0, num_classes, split_size)]


def make_stream(arrays: dict[str, np.ndarray], settings: dict[str, Any], hp: dict[str, Any], seed: int) -> Stream:
    if settings.get("toy"):
        rng = np.random.default_rng(derive_seed(seed, "toy_stream"))
        xs, ys = zip(*(toy_sample(t, int(hp.get("toy_samples_per_task", 100)), rng) for t in range(len(TOY_TASKS))))
        tasks = [[c for c, _ in pairs] for pairs in TOY_TASKS]
        return Stream(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)),
                      torch.tensor(arrays["x_test"]), torch.tensor(arrays["y_test"]), None, tasks, 8, toy=True)
    num_classes = int(arrays["y_train"].max()) + 1
    return Stream(torch.tensor(arrays["x_train"]), torch.tensor(arrays["y_train"]),
                  torch.tensor(arrays["x_test"]), torch.tensor(arrays["y_test"]),
                  torch.tensor(arrays["x_pretrain"]), class_tasks(num_classes, int(hp.get("split_size", 2)), seed),
                  num_classes)


# -- models ---------------------------------------------------------------------------------------

class DKVB:
    """Frozen splitter and keys, trainable values (and, for ablations, a trainable decoder)."""

    def __init__(self, in_dim: int, num_classes: int, hp: dict[str, Any], seed: int, device: str = "cpu"):
        C, N, d = int(hp["num_codebooks"]), int(hp["num_pairs"]), int(hp["dim_keys"])
        self.device = device
        self.splitter = Splitter(hp.get("splitting", "random_projection"), in_dim, C, d,
                                 generator(seed, "splitter")).to(device)
        v = int(hp.get("dim_values") or num_classes)
        self.kv = KeyValueBottleneck(C, N, d, v, decay=float(hp.get("decay", 0.95)), eps=float(hp.get("eps", 1e-5)),
                                     threshold_dead=float(hp.get("threshold_factor", 0.0)) * int(hp.get("init_batch_size", 256)) / N,
                                     topk=int(hp.get("topk", 1)), generator=generator(seed, "keys"), device=device)
        self.decoder_kind = hp.get("decoder", "vote")
        if self.decoder_kind == "vote" and v != num_classes:
            raise ValueError(f"the voting decoder needs dim_values = classes ({num_classes}), got {v}")
        gv = generator(seed, "values")
        if hp.get("values_init", "zeros") == "zeros":
            values = torch.zeros(C, N, v)
        else:
            values = float(hp.get("values_init_scale", 1e-3)) * torch.randn(C, N, v, generator=gv)
        self.values = nn.Parameter(values.to(device))
        torch.manual_seed(derive_seed(seed, "decoder"))
        if self.decoder_kind == "vote":
            self.decoder = None
        elif self.decoder_kind == "linear":
            self.decoder = nn.Linear(C * v, num_classes)
        elif self.decoder_kind == "mlp":
            self.decoder = nn.Sequential(nn.Linear(C * v, int(hp.get("hidden", 128))), nn.ReLU(),
                                         nn.Linear(int(hp.get("hidden", 128)), num_classes))
        else:
            raise ValueError(f"decoder {self.decoder_kind!r}: use vote, linear or mlp")
        if self.decoder is not None:
            self.decoder.to(device)
        self.update_keys = bool(hp.get("update_keys_in_stream", False))
        self.stream_threshold = float(hp.get("threshold_factor", 0.0)) * int(hp.get("batch_size") or 1) / N
        self._gen_restart = generator(seed, "stream_restarts")
        self.cache: torch.Tensor | None = None

    def parameters(self) -> list[nn.Parameter]:
        return [self.values] + (list(self.decoder.parameters()) if self.decoder is not None else [])

    def fit_keys(self, x_pretrain: torch.Tensor | None, hp: dict[str, Any], seed: int, toy: bool) -> list[float]:
        """EMA k-means on unlabeled data, then frozen; returns the quantisation error per epoch."""
        g = generator(seed, "key_init")
        errors = []
        if toy:  # official notebook: 1000 batches of 100 uniform points on the unit square
            for _ in range(int(hp.get("init_batches", 1000))):
                batch = torch.rand(int(hp.get("init_batch_size", 100)), 2, generator=g).to(self.device)
                self.kv.ema_update(self.splitter(batch), g)
            probe = self.splitter(torch.rand(2000, 2, generator=g).to(self.device))
            errors.append(self.kv.quantisation_error(probe))
        else:
            heads = self.splitter(x_pretrain)
            bs = int(hp.get("init_batch_size", 256))
            track = bool(hp.get("track_init_error", False))
            errors.append(self.kv.quantisation_error(heads))
            for _ in range(int(hp.get("init_epochs", 10))):
                perm = torch.randperm(heads.shape[1], generator=g).to(self.device)
                for s in range(0, len(perm), bs):
                    self.kv.ema_update(heads[:, perm[s:s + bs]], g)
                if track:
                    errors.append(self.kv.quantisation_error(heads))
            if not track:
                errors.append(self.kv.quantisation_error(heads))
        self.kv.reset_counts()
        return errors

    def cache_indices(self, x: torch.Tensor) -> None:
        """Route the training stream once (no mask during training, as the official module)."""
        self.cache = self.kv.route(self.splitter(x))

    def _decode(self, idx: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            return vote_logits(self.values, idx)
        return self.decoder(fetch_values(self.values, idx).flatten(1))

    def train_logits(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if self.update_keys:
            # keys keep moving (the VQ-style ablation): as the official forward with update_keys, the
            # batch fetches the values of its nearest keys before the EMA step, with k = 1
            heads = self.splitter(x[rows])
            with torch.no_grad():
                self.kv.threshold_dead = self.stream_threshold
                idx = self.kv.ema_update(heads, self._gen_restart).T[..., None].contiguous()
        else:
            idx = self.cache[rows]
        self.kv.count(idx)
        return self._decode(idx)

    @torch.no_grad()
    def route_test(self, x: torch.Tensor, masked: bool = True) -> torch.Tensor:
        return self.kv.route(self.splitter(x), masked=masked)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, masked: bool = True) -> torch.Tensor:
        return self._decode(self.route_test(x, masked)).argmax(-1)


class Head:
    """Linear probe or MLP on the raw frozen features (the baselines)."""

    def __init__(self, in_dim: int, num_classes: int, hp: dict[str, Any], seed: int, kind: str, device: str = "cpu"):
        torch.manual_seed(derive_seed(seed, "head"))
        if kind == "linear_probe":
            self.net = nn.Linear(in_dim, num_classes)
        else:
            h = int(hp.get("hidden", 128))
            self.net = nn.Sequential(nn.Linear(in_dim, h), nn.ReLU(), nn.Linear(h, num_classes))
        self.net.to(device)

    def parameters(self):
        return list(self.net.parameters())

    def train_logits(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.net(x[rows])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, masked: bool = True) -> torch.Tensor:
        return self.net(x).argmax(-1)


class SGD:
    """Plain SGD (no momentum, no weight decay), equal to ``torch.optim.SGD`` (tested). Built here
    because the first ``torch.optim`` optimizer loads torch._dynamo (~3 s per run)."""

    def __init__(self, params, lr: float):
        self.params, self.lr = list(params), lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


class Adam(SGD):
    """Adam (betas 0.9/0.999, eps 1e-8), the update of ``torch.optim.Adam``'s single-tensor path
    operation by operation (tested equal)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr)
        self.betas, self.eps, self.t = betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.t += 1
        bc1, bc2_sqrt = 1 - b1 ** self.t, (1 - b2 ** self.t) ** 0.5
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(self.eps), value=-(self.lr / bc1))


def make_optimizer(params, kind: str, lr: float):
    if kind == "sgd":
        return SGD(params, lr)
    if kind == "adam":
        return Adam(params, lr)
    raise ValueError(f"optimizer {kind!r}: use sgd or adam")


# -- the loop -------------------------------------------------------------------------------------

def _acc(pred: torch.Tensor, y: torch.Tensor, classes: list[int] | None = None) -> float:
    if classes is not None:
        keep = torch.isin(y, torch.tensor(classes, device=y.device))
        pred, y = pred[keep], y[keep]
    return float((pred == y).float().mean() * 100) if len(y) else math.nan


def _grid_points() -> torch.Tensor:
    xs = torch.linspace(GRID_LO, GRID_HI, GRID)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    return torch.stack([gx.flatten(), gy.flatten()], -1)


def share_forgetting_corr(shares: list[np.ndarray], losses: list[np.ndarray]) -> float:
    """Pearson correlation, over old-task test points, between the fraction of a point's selected
    keys that later tasks also hit and its accuracy loss (1: right after its task, wrong at the end)."""
    s = np.concatenate(shares) if shares else np.zeros(0)
    l = np.concatenate(losses) if losses else np.zeros(0)  # noqa: E741
    if len(s) < 3 or s.std() == 0 or l.std() == 0:
        return math.nan
    return float(np.corrcoef(s, l)[0, 1])


def train_run(model_kind: str, stream: Stream, hp: dict[str, Any], seed: int, ctx) -> RunResult:
    """Train ``model_kind`` (dkvb | linear_probe | mlp) on the stream and evaluate it."""
    iid = hp.get("stream", "class_incremental") == "iid"
    device = str(getattr(ctx, "device", "cpu") or "cpu")
    stream = dataclasses.replace(stream, **{f: getattr(stream, f).to(device) for f in
                                            ("x_train", "y_train", "x_test", "y_test", "x_pretrain")
                                            if getattr(stream, f) is not None})
    in_dim = stream.x_train.shape[1]
    info: dict[str, Any] = {"tasks": stream.tasks}
    if model_kind == "dkvb":
        model = DKVB(in_dim, stream.num_classes, hp, seed, device)
        info["init_quantisation_error"] = model.fit_keys(stream.x_pretrain, hp, seed, stream.toy)
        if not model.update_keys:
            model.cache_indices(stream.x_train)
        opt_kind, lr = hp.get("optimizer", "sgd"), float(hp["lr"])
        reset_per_task = False
        label_smoothing = float(hp.get("label_smoothing", 0.0))
    else:
        model = Head(in_dim, stream.num_classes, hp, seed, model_kind, device)
        opt_kind = hp.get("head_optimizer", "sgd")
        lr = float(hp["probe_lr"] if model_kind == "linear_probe" else hp["mlp_lr"])
        reset_per_task = bool(hp.get("head_reset_optimizer", False))
        label_smoothing = float(hp.get("head_label_smoothing", hp.get("label_smoothing", 0.0)))
    clip = hp.get("grad_clip")
    params = model.parameters()
    g_batches = generator(seed, "batches")
    phases = [sorted(c for t in stream.tasks for c in t)] if iid else stream.tasks
    epochs = int(hp["epochs_per_task"])
    batch_size = hp.get("batch_size")
    eval_every = int(hp.get("eval_every", max(1, epochs // 4)))
    opt = make_optimizer(params, opt_kind, lr)
    acc_after: list[list[float]] = []  # acc_after[p][t]: accuracy on task t's classes after phase p
    acc_all_after: list[float] = []  # accuracy on all classes after each phase
    grids: list[str] = []
    counts_after, routes_after, correct_after = [], [], []
    step = 0
    for p, classes in enumerate(phases):
        if reset_per_task and p > 0:
            opt = make_optimizer(params, opt_kind, lr)
        rows_all = torch.nonzero(torch.isin(stream.y_train, torch.tensor(classes, device=device))).flatten()
        bs = int(batch_size) if batch_size else len(rows_all)
        for epoch in range(epochs):
            perm = rows_all[torch.randperm(len(rows_all), generator=g_batches).to(device)] if bs < len(rows_all) else rows_all
            for s in range(0, len(perm), bs):
                rows = perm[s:s + bs]
                logits = model.train_logits(stream.x_train, rows)
                loss = F.cross_entropy(logits, stream.y_train[rows], label_smoothing=label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(params, float(clip))
                opt.step()
                step += 1
            if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
                pred = model.predict(stream.x_test)
                ctx.log(p * epochs + epoch + 1, curve="test", accuracy=_acc(pred, stream.y_test),
                        loss=float(loss.detach()))
        pred = model.predict(stream.x_test)
        acc_after.append([_acc(pred, stream.y_test, t) for t in stream.tasks])
        acc_all_after.append(_acc(pred, stream.y_test))
        if model_kind == "dkvb" and not iid:
            counts_after.append(model.kv.counts.clone())
            routes_after.append(model.route_test(stream.x_test))
            correct_after.append((pred == stream.y_test).cpu().numpy())
        if stream.toy:
            grids.append("".join(str(int(c)) for c in model.predict(_grid_points().to(device)).tolist()))
    final_pred = model.predict(stream.x_test)
    last = stream.tasks[-1]
    metrics = [Metric("test_accuracy", _acc(final_pred, stream.y_test), True),
               Metric("last_task_share", float(torch.isin(stream.y_test, torch.tensor(last, device=device)).float().mean() * 100), True),
               Metric("old_task_accuracy", _acc(final_pred, stream.y_test, [c for t in stream.tasks[:-1] for c in t]), True)]
    if not iid:
        just_learned = [acc_after[t][t] for t in range(len(stream.tasks))]
        metrics.append(Metric("current_task_accuracy", float(np.mean(just_learned)), True))
        metrics.append(Metric("forgetting", float(np.mean([acc_after[t][t] - acc_after[-1][t]
                                                            for t in range(len(stream.tasks) - 1)])), False))
    if model_kind == "dkvb":
        metrics.append(Metric("test_accuracy_unmasked", _acc(model.predict(stream.x_test, masked=False), stream.y_test), True))
        metrics.append(Metric("fraction_unused_keys", model.kv.fraction_unused(), False))
        if not iid:
            shares, losses = [], []
            final_correct = (final_pred == stream.y_test).cpu().numpy()
            for t in range(len(stream.tasks) - 1):
                mask = torch.isin(stream.y_test, torch.tensor(stream.tasks[t], device=device))
                hit_later = (counts_after[-1] - counts_after[t]) > 0  # (C, N)
                idx = routes_after[t][mask]  # (n_t, C, k)
                C = idx.shape[1]
                hit = hit_later[torch.arange(C, device=device)[None, :, None], idx]
                shares.append(hit.float().mean((1, 2)).cpu().numpy())
                mask = mask.cpu().numpy()
                losses.append(correct_after[t][mask].astype(float) - final_correct[mask].astype(float))
            corr = share_forgetting_corr(shares, losses)
            info["share_forgetting_corr"] = corr if math.isfinite(corr) else None
            info["mean_key_share_old_tasks"] = float(np.mean(np.concatenate(shares))) if shares else None
            if math.isfinite(corr):
                metrics.append(Metric("share_forgetting_corr", corr, True))
    info["acc_after_task"] = acc_after
    info["acc_all_after_task"] = acc_all_after
    if grids:
        info["grid"] = {"size": GRID, "lo": GRID_LO, "hi": GRID_HI, "after_task": grids}
        info["toy_means"] = {str(c): m for c, m in toy_class_means().items()}
    info["steps"] = step
    return RunResult(metrics=tuple(metrics), info=info)
