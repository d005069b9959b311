"""Pre-training of the dual encoder and every few-shot method, on one :class:`Setup`.

A tuning run (:func:`tune`):

1. draws its k shots per tuned class and ``val_shots`` validation shots per class (disjoint) from
   the dataset's pool, by the seed and the benchmark only: every method of a seed sees the same
   images (paired comparisons);
2. trains each of the method's ``candidates`` (the same number for every trained method: the same
   selection budget) and keeps the one with the best validation accuracy (first on ties). The
   test, new-class and retention sets are never read before the choice is made;
3. reports, for the chosen candidate: ``accuracy`` (test images of the tuned classes, among the
   tuned classes), ``new_accuracy`` and ``harmonic_mean`` (base-to-new only: test images of the new
   classes among the new classes, and the harmonic mean with ``accuracy``), ``retention`` (zero-shot
   accuracy, 64 shape x colour prompts, on clean pre-training-distribution images, with the tuned
   image encoder) and, for masks, ``mask_sparsity`` (% of masked weights zeroed) with the per-tensor
   sparsity in ``info``.

The equations (card §2): the straight-through mask (:mod:`.model`), the mask L2 regulariser
(:func:`mask_l2`), the distillation loss toward zero-shot (:func:`kl_loss`), gradient-dropout
regularity (:func:`gdr_keep_probability`, :func:`gdr_gate`), Tip-Adapter's cache logits
(:func:`tip_logits`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import model as M


def derive_seed(seed: int, stream: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:8], "little") & (2**63 - 1)


def generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, stream))


# -- optimisers (own: torch.optim's first import loads torch._dynamo, ~3 s per run) ------------------

class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), the update of ``torch.optim.AdamW``."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decay_mask: list[bool] | None = None):
        self.params = list(params)
        self.lr, self.betas, self.eps, self.wd, self.t = lr, betas, eps, weight_decay, 0
        self.decay = decay_mask or [True] * len(self.params)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.t += 1
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for p, m, v, dec in zip(self.params, self.m, self.v, self.decay):
            if p.grad is None:
                continue
            if self.wd and dec:
                p.mul_(1 - lr * self.wd)
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.addcdiv_(m, (v / bc2).sqrt_().add_(self.eps), value=-lr / bc1)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def cosine_lr(lr: float, step: int, total: int, warmup: int = 0) -> float:
    """Linear warm-up, then cosine decay to 0 (step counts from 0)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# -- the method's equations -----------------------------------------------------------------------------

def mask_l2(scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over masked tensors of the (not squared) L2 norm of the scores (``MASK_LOSS``)."""
    return sum(s.norm(p=2) for s in scores.values())


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, T: float = 1.0, alpha: float = 1.0) -> torch.Tensor:
    """T^2 * mean_i sum_c -softmax(z_t/T)_c log_softmax(z_s/T)_c, with z_t fused as
    alpha * z_t + (1 - alpha) * z_s (the released ``KLLoss``; alpha = 1: the teacher alone)."""
    z_t = alpha * teacher + (1 - alpha) * student.detach()
    return T * T * (-(F.softmax(z_t / T, -1) * F.log_softmax(student / T, -1)).sum(-1)).mean()


def gdr_keep_probability(g_a: torch.Tensor, g_b: torch.Tensor) -> torch.Tensor:
    """P = 1/2 (1 + sign(g_a) (g_a + g_b) / (|g_a| + |g_b| + 1e-8)): ~1 where the classification
    gradient g_a and the distillation gradient g_b agree in sign, |g_a| / (|g_a| + |g_b|) where
    they conflict."""
    return 0.5 * (1 + torch.sign(g_a) * (g_a + g_b) / (g_a.abs() + g_b.abs() + 1e-8))


def gdr_gate(g_a: torch.Tensor, g_b: torch.Tensor, lam: float, u: torch.Tensor) -> torch.Tensor:
    """[(1 - lambda) + lambda 1(P > U)] g_a: the distillation gradient never enters the update,
    it only decides which components of g_a are kept (U ~ Uniform(0, 1), elementwise)."""
    keep = (gdr_keep_probability(g_a, g_b) > u).to(g_a.dtype)
    return ((1 - lam) + lam * keep) * g_a


def tip_logits(features: torch.Tensor, text: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               scale: float, alpha: float, beta: float) -> torch.Tensor:
    """Tip-Adapter (training-free): scale f t^T + alpha exp(-beta (1 - f k^T)) V, all L2-normalised."""
    f = F.normalize(features, dim=-1)
    affinity = f @ F.normalize(keys, dim=-1).T
    return scale * f @ F.normalize(text, dim=-1).T + alpha * torch.exp(-beta * (1 - affinity)) @ values


# -- a run's data and frozen model ------------------------------------------------------------------------

@dataclass
class Setup:
    """Everything a tuning run reads: the frozen model and the few-shot task."""

    cfg: M.ClipConfig
    weights: dict[str, torch.Tensor]
    tokenize: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    prep: Callable[[np.ndarray], torch.Tensor]
    """uint8 images -> normalised float tensor."""
    prompts: list[str]
    """Class prompts of every class of the task (tuned and new)."""
    tuned: list[int]
    """Classes trained on (all, or the base classes)."""
    new: list[int]
    """Classes only evaluated (base-to-new), else empty."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    """Labels in 0..len(tuned)-1 (positions in ``tuned``)."""
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    """Original class ids."""
    x_ret: torch.Tensor
    y_ret: torch.Tensor
    ret_prompts: list[str]
    eval_batch: int = 500
    info: dict[str, Any] = field(default_factory=dict)


def few_shot_indices(labels: np.ndarray, classes: list[int], shots: int, val_shots: int,
                     seed: int, stream: str) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded permutation of its pool: the first ``shots`` train, the next
    ``val_shots`` validate (disjoint)."""
    rng = np.random.default_rng(derive_seed(seed, stream))
    train, val = [], []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) < shots + val_shots:
            raise ValueError(f"class {c} has {len(idx)} pool images, fewer than {shots} shots + {val_shots} validation")
        idx = idx[rng.permutation(len(idx))]
        train.append(idx[:shots])
        val.append(idx[shots:shots + val_shots])
    return np.concatenate(train), np.concatenate(val)


@torch.no_grad()
def text_features(s: Setup, w, prompts: list[str]) -> torch.Tensor:
    tokens, eos = s.tokenize(prompts)
    return F.normalize(M.encode_text(w, tokens, eos, s.cfg), dim=-1)


def image_features(s: Setup, w, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
    if grad:
        return F.normalize(M.encode_image(w, x, s.cfg), dim=-1)
    with torch.no_grad():
        return torch.cat([F.normalize(M.encode_image(w, x[i:i + s.eval_batch], s.cfg), dim=-1)
                          for i in range(0, len(x), s.eval_batch)])


def _acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean() * 100) if len(y) else math.nan


# -- a method = how it builds its classifier --------------------------------------------------------------

@dataclass
class Classifier:
    """What evaluation needs from a trained method."""

    weights: dict[str, torch.Tensor]
    """Image-tower weights to use (masked or fine-tuned; the frozen ones otherwise)."""
    head: Callable[[torch.Tensor, list[int]], torch.Tensor]
    """(normalised image features, class ids) -> logits over those classes."""
    info: dict[str, Any] = field(default_factory=dict)


def zero_shot_head(s: Setup) -> Callable[[torch.Tensor, list[int]], torch.Tensor]:
    text = text_features(s, s.weights, s.prompts)
    scale = float(M.logit_scale(s.weights))
    return lambda f, classes: scale * f @ text[classes].T


def evaluate(s: Setup, clf: Classifier, val_only: bool = False) -> dict[str, float]:
    """Validation accuracy; unless ``val_only``, test accuracy, new-class accuracy, harmonic mean
    and retention as well."""
    f_val = image_features(s, clf.weights, s.x_val)
    out = {"val_accuracy": _acc(clf.head(f_val, s.tuned), s.y_val)}
    if val_only:
        return out
    f_test = image_features(s, clf.weights, s.x_test)
    pos = {c: i for i, c in enumerate(s.tuned)}
    tuned_rows = torch.tensor([int(y) in pos for y in s.y_test])
    y_tuned = torch.tensor([pos[int(y)] for y in s.y_test[tuned_rows]], dtype=torch.long)
    out["accuracy"] = _acc(clf.head(f_test[tuned_rows], s.tuned), y_tuned)
    if s.new:
        npos = {c: i for i, c in enumerate(s.new)}
        new_rows = torch.tensor([int(y) in npos for y in s.y_test])
        y_new = torch.tensor([npos[int(y)] for y in s.y_test[new_rows]], dtype=torch.long)
        out["new_accuracy"] = _acc(clf.head(f_test[new_rows], s.new), y_new)
        b, n = out["accuracy"], out["new_accuracy"]
        out["harmonic_mean"] = 2 * b * n / (b + n) if b + n > 0 else 0.0
    ret_text = text_features(s, s.weights, s.ret_prompts)
    f_ret = image_features(s, clf.weights, s.x_ret)
    out["retention"] = _acc(float(M.logit_scale(s.weights)) * f_ret @ ret_text.T, s.y_ret)
    return out


def _batches(n: int, batch: int, steps: int, seed: int):
    """``steps`` index batches: epochs of a seeded permutation (the same for every method of a seed)."""
    g = generator(seed, "batches")
    perm, at = torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if at + batch > n:
            perm, at = torch.randperm(n, generator=g), 0
        yield perm[at:at + batch]
        at += batch


def train_masks(s: Setup, hp: dict[str, Any], seed: int, target: str, gdr: bool, log=None) -> Classifier:
    """AMT (``gdr`` False) or R-AMT (True): Adam on mask scores of the ``target`` tensors only."""
    names = M.masked_names(s.cfg, target)
    scores = M.init_scores(s.weights, names, float(hp.get("mask_init", M.MASK_INIT)))
    thr = float(hp.get("mask_threshold", M.MASK_THRESHOLD))
    opt = AdamW(scores.values(), float(hp["lr"]))
    text = text_features(s, s.weights, [s.prompts[c] for c in s.tuned])
    scale = M.logit_scale(s.weights).detach()
    reg = float(hp.get("mask_l2", 1e-4))
    lam, T = float(hp.get("gdr_lambda", 1.0)), float(hp.get("gdr_t", 1.0))
    steps, batch = int(hp["steps"]), min(int(hp["batch_size"]), len(s.x_train))
    g_u = generator(seed, "gdr")
    teacher = scale * image_features(s, s.weights, s.x_train) @ text.T if gdr else None  # frozen zero-shot CLIP
    kept = []
    for step, rows in enumerate(_batches(len(s.x_train), batch, steps, seed)):
        w = M.apply_masks(s.weights, scores, thr)
        logits = scale * image_features(s, w, s.x_train[rows], grad=True) @ text.T
        ce = F.cross_entropy(logits, s.y_train[rows])
        loss_a = ce + reg * mask_l2(scores) if reg else ce
        params = list(scores.values())
        if gdr:
            g_b = torch.autograd.grad(kl_loss(logits, teacher[rows], T), params, retain_graph=True)
            g_a = torch.autograd.grad(loss_a, params)
            grads = []
            for a, b in zip(g_a, g_b):
                gated = gdr_gate(a, b, lam, torch.rand(a.shape, generator=g_u))
                grads.append(gated)
                kept.append(float((gated == a).float().mean()))
        else:
            grads = torch.autograd.grad(loss_a, params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step(cosine_lr(float(hp["lr"]), step, steps))
        if log and (step + 1) % max(1, steps // 4) == 0:
            log(step + 1, ce=float(ce), sparsity=M.sparsity(scores, thr)[0])
    total, per = M.sparsity({k: v.detach() for k, v in scores.items()}, thr)
    w = M.apply_masks(s.weights, {k: v.detach() for k, v in scores.items()}, thr)
    info = {"sparsity_per_tensor": per, "mask_sparsity": total}
    if gdr:
        info["gdr_fraction_unchanged"] = float(np.mean(kept)) if kept else math.nan
    return Classifier({k: v.detach() for k, v in w.items()}, _fixed_head(s, text_all=None), info)


def _fixed_head(s: Setup, text_all=None):
    """Zero-shot text head (hand prompts) over any classes."""
    text = text_all if text_all is not None else text_features(s, s.weights, s.prompts)
    scale = float(M.logit_scale(s.weights))
    return lambda f, classes: scale * f @ text[classes].T


def train_full(s: Setup, hp: dict[str, Any], seed: int, log=None) -> Classifier:
    """Full fine-tuning of every image-tower tensor with CE against the frozen class prompts."""
    params = {k: v.clone().requires_grad_(True) for k, v in s.weights.items() if k.startswith("visual.")}
    opt = AdamW(params.values(), float(hp["lr"]), weight_decay=float(hp.get("weight_decay", 0.0)))
    text = text_features(s, s.weights, [s.prompts[c] for c in s.tuned])
    scale = M.logit_scale(s.weights).detach()
    steps, batch = int(hp["steps"]), min(int(hp["batch_size"]), len(s.x_train))
    for step, rows in enumerate(_batches(len(s.x_train), batch, steps, seed)):
        w = {**s.weights, **params}
        loss = F.cross_entropy(scale * image_features(s, w, s.x_train[rows], grad=True) @ text.T, s.y_train[rows])
        opt.zero_grad()
        loss.backward()
        opt.step(cosine_lr(float(hp["lr"]), step, steps))
        if log and (step + 1) % max(1, steps // 4) == 0:
            log(step + 1, ce=float(loss))
    return Classifier({**s.weights, **{k: v.detach() for k, v in params.items()}}, _fixed_head(s))


def train_coop(s: Setup, hp: dict[str, Any], seed: int, log=None) -> Classifier:
    """CoOp: ``n_ctx`` learned context vectors (N(0, 0.02), class-shared) before the class words."""
    n_ctx = int(hp.get("n_ctx", 4))
    g = generator(seed, "coop_ctx")
    ctx_vec = (torch.randn(n_ctx, s.cfg.text_width, generator=g) * 0.02).requires_grad_(True)
    names = [p.removeprefix("a ") for p in s.prompts]  # the class words, without the template
    tokens, eos = s.tokenize(names, prefix_slots=n_ctx)
    emb_all = F.embedding(tokens, s.weights["token_embedding.weight"])

    def text_of(classes):
        emb = emb_all[classes].clone()
        emb[:, 1:1 + n_ctx] = ctx_vec
        return F.normalize(M.encode_text_embeddings(s.weights, emb, eos[classes], s.cfg), dim=-1)

    feats = image_features(s, s.weights, s.x_train)
    scale = M.logit_scale(s.weights).detach()
    opt = AdamW([ctx_vec], float(hp["lr"]))
    steps, batch = int(hp["steps"]), min(int(hp["batch_size"]), len(s.x_train))
    for step, rows in enumerate(_batches(len(s.x_train), batch, steps, seed)):
        loss = F.cross_entropy(scale * feats[rows] @ text_of(s.tuned).T, s.y_train[rows])
        opt.zero_grad()
        loss.backward()
        opt.step(cosine_lr(float(hp["lr"]), step, steps))
        if log and (step + 1) % max(1, steps // 4) == 0:
            log(step + 1, ce=float(loss))
    with torch.no_grad():
        text = text_of(list(range(len(s.prompts))))
    sc = float(scale)
    return Classifier(s.weights, lambda f, classes: sc * f @ text[classes].T)


def train_linear_probe(s: Setup, hp: dict[str, Any], seed: int, log=None) -> Classifier:
    """Multinomial logistic regression on frozen normalised features (full batch, Adam, L2 ``lp_l2``).
    New classes have no trained row: they are scored by the zero-shot head (the encoder is frozen)."""
    feats = image_features(s, s.weights, s.x_train)
    k = len(s.tuned)
    W = torch.zeros(k, feats.shape[1], requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    l2, steps = float(hp.get("lp_l2", 0.0)), int(hp.get("lp_steps", 300))
    opt = AdamW([W, b], float(hp.get("lp_lr", 0.05)))
    for step in range(steps):
        loss = F.cross_entropy(feats @ W.T * 10 + b, s.y_train) + l2 * (W * W).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    W, b = W.detach(), b.detach()
    zs = zero_shot_head(s)
    pos = {c: i for i, c in enumerate(s.tuned)}

    def head(f, classes):
        if all(c in pos for c in classes):
            idx = [pos[c] for c in classes]
            return f @ W[idx].T * 10 + b[idx]
        return zs(f, classes)

    return Classifier(s.weights, head)


def tip_adapter(s: Setup, hp: dict[str, Any], seed: int, log=None) -> Classifier:
    """Training-free Tip-Adapter: a key-value cache of the few-shot features (alpha, beta from ``hp``).
    New classes are not in the cache: they are scored zero-shot."""
    keys = image_features(s, s.weights, s.x_train)
    values = F.one_hot(s.y_train, len(s.tuned)).float()
    text = text_features(s, s.weights, s.prompts)
    scale, alpha, beta = float(M.logit_scale(s.weights)), float(hp["tip_alpha"]), float(hp["tip_beta"])
    pos = {c: i for i, c in enumerate(s.tuned)}

    def head(f, classes):
        if all(c in pos for c in classes):
            idx = [pos[c] for c in classes]
            return tip_logits(f, text[classes], keys, values[:, idx], scale, alpha, beta)
        return scale * f @ text[classes].T

    return Classifier(s.weights, head)


def random_masks(s: Setup, per_tensor: dict[str, float], seed: int) -> Classifier:
    """Zero exactly round(p% * numel) weights of each tensor, chosen uniformly at random."""
    g = generator(seed, "random_mask")
    w = dict(s.weights)
    for name in sorted(per_tensor):
        t = w[name]
        k = round(per_tensor[name] / 100 * t.numel())
        keep = torch.ones(t.numel())
        keep[torch.randperm(t.numel(), generator=g)[:k]] = 0
        w[name] = t * keep.view_as(t)
    total = sum(round(per_tensor[n] / 100 * s.weights[n].numel()) for n in per_tensor)
    count = sum(s.weights[n].numel() for n in per_tensor)
    return Classifier(w, _fixed_head(s), {"sparsity_per_tensor": dict(per_tensor),
                                          "mask_sparsity": 100.0 * total / count if count else 0.0})


TRAINERS = {
    "linear_probe": train_linear_probe,
    "coop": train_coop,
    "tip_adapter": tip_adapter,
    "full_ft": train_full,
    "amt": lambda s, hp, seed, log=None: train_masks(s, hp, seed, "attn", False, log),
    "ramt": lambda s, hp, seed, log=None: train_masks(s, hp, seed, "attn", True, log),
    "amt_mlp": lambda s, hp, seed, log=None: train_masks(s, hp, seed, "mlp", False, log),
}


def _candidate_log(log, i: int):
    """``ctx.log`` with the candidate's own curve name (None without a log)."""
    if log is None:
        return None
    return lambda step, **m: log(step, curve=f"candidate{i}", **m)


def tune(method: str, s: Setup, hp: dict[str, Any], seed: int, log=None) -> tuple[dict[str, float], dict[str, Any]]:
    """Train every candidate of ``hp['candidates']`` (a list of hyperparameter overrides), choose
    on validation accuracy, evaluate the choice. Returns (metrics, info)."""
    if method == "zero_shot":
        clf = Classifier(s.weights, zero_shot_head(s))
        return evaluate(s, clf), {}
    candidates = list(hp.get("candidates") or [{}])
    best = None
    tried = []
    for i, cand in enumerate(candidates):
        chp = {**hp, **(cand or {})}
        clf = TRAINERS[method](s, chp, seed, _candidate_log(log, i))
        val = evaluate(s, clf, val_only=True)["val_accuracy"]
        tried.append({"candidate": cand or {}, "val_accuracy": val})
        if best is None or val > best[0]:
            best = (val, i, clf)
    _, chosen, clf = best
    metrics = evaluate(s, clf)
    if "mask_sparsity" in clf.info:
        metrics["mask_sparsity"] = clf.info["mask_sparsity"]
    info = {"candidates": tried, "chosen": chosen, **clf.info}
    return metrics, info


# -- pre-training ------------------------------------------------------------------------------------------

def pretrain(cfg: M.ClipConfig, images: torch.Tensor, tokens: torch.Tensor, eos: torch.Tensor,
             hp: dict[str, Any], seed: int, log=None) -> tuple[dict[str, torch.Tensor], list[float]]:
    """CLIP pre-training: symmetric InfoNCE with the learnable temperature, AdamW (decay on
    matrices only), linear warm-up and cosine decay. Returns (weights, loss per logged step)."""
    w = {k: v.requires_grad_(True) for k, v in M.init_weights(cfg, generator(seed, "clip_init")).items()}
    decay = [v.ndim >= 2 and "embedding" not in k for k, v in w.items()]
    lr, steps = float(hp["pretrain_lr"]), int(hp["pretrain_steps"])
    opt = AdamW(w.values(), lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=float(hp["pretrain_wd"]), decay_mask=decay)
    batch = min(int(hp["pretrain_batch"]), len(images))
    warmup = int(hp.get("pretrain_warmup", steps // 10))
    losses = []
    for step, rows in enumerate(_batches(len(images), batch, steps, derive_seed(seed, "pretrain"))):
        loss = M.info_nce(M.encode_image(w, images[rows], cfg), M.encode_text(w, tokens[rows], eos[rows], cfg),
                          M.logit_scale(w))
        opt.zero_grad()
        loss.backward()
        opt.step(cosine_lr(lr, step, steps, warmup))
        if (step + 1) % max(1, steps // 20) == 0 or step + 1 == steps:
            losses.append(float(loss.detach()))
            if log:
                log(step + 1, curve="pretrain", loss=losses[-1], temperature=float(1 / M.logit_scale(w).detach()))
    return {k: v.detach() for k, v in w.items()}, losses
