"""Training steps of one paper-scale run per task, timed against the task's own estimate.

For each task, the paper's model at its real size and the task's real training step on random
data of the paper's shapes (nothing is downloaded):

  infinite_compute      LlamaLM 150M (T 4096, batch 64 in micro-batches, the sliced 128,257 head)
  entropy_attention     GPT-2 12 x 768, T 128 BPE, vocabulary 50,304, batch 512 in micro-batches of 128
  self_tuning_networks  the STN PTB LSTM (2 x 650, vocabulary 10k, batch 40, BPTT 70)
  noisy_labels          CIFAR ResNet-18 with nested dropout, batch 320, crop + flip
  dkvb                  the bottleneck C 256 x N 4,096 x d_k 14 on 2,048-d ResNet-50 embeddings: the key
                        initialisation's EMA step (batch 256, the counted FLOPs) and the stream's
                        training step on cached indices (batch 256, launch-bound), against the estimate
  cmim                  the MolMIM-size Perceiver (512, 8 heads, 6 + 6 layers, latent 512) in cMIM's
                        training loop at batch 256 on ~90-token SMILES batches (fp32)
  mask_tuning           R-AMT's step on CLIP ViT-B/16's image tower (224 px, batch 32, fp32): the masked
                        forward, the distillation and the CE gradients of the mask scores (two backward
                        passes), gradient-dropout gating and the Adam step

Each reports seconds per step, the FLOPs per step the task's estimator counts, the FLOPs
``torch.utils.flop_counter`` counts for the same step (their ratio checks the count), achieved
FLOP/s, the MFU against the device's peak (``--peak-flops``; on a GPU its bf16 dense peak from
harness.estimate.GPUS) next to the MFU the estimate assumes, and the peak memory against the
estimate's (GPU only).

    python benchmarks/paper_steps.py --task infinite_compute --steps 200 --out benchmarks/results/gpu-paper-infinite_compute.json
    python benchmarks/paper_steps.py --dry-run --task all            # CPU, tiny shapes, 1 step: the plumbing
    python benchmarks/paper_steps.py --device cpu --task all --cpu-sizes --steps 2   # CPU at the real widths

A script, not a test (benchmarks/gpu_check.sh runs it; its --dry-run is tested).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TASKS = ("infinite_compute", "entropy_attention", "self_tuning_networks", "noisy_labels", "dkvb", "cmim", "mask_tuning")


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(step, steps: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


class _Ctx:
    """The run context a training loop asks for: curves and checkpoints dropped."""

    seed, scale = 0, "paper"

    def log(self, *a, **k):
        pass

    def checkpoint(self, state):
        pass

    def restore(self):
        return None


def _counted(step) -> float:
    from harness.estimate import counted_flops

    return counted_flops(step)


# -- the tasks ------------------------------------------------------------------------------

def infinite_compute(args, device):
    from harness.plugins import get_task
    from tasks.infinite_compute.estimate import train_flops_per_token, training_peak_bytes, total_params
    from tasks.infinite_compute.model import LlamaLM
    from tasks.infinite_compute.run import model_config
    from tasks.infinite_compute.train import autocast_for, build_optimizer, train_step, TrainConfig  # noqa: F401

    hp = dict(get_task("infinite_compute").config.scale("paper").defaults)
    size = "150m"
    batch, micro, chunk = int(hp["batch_size"]), int(hp["sizes"][size]["micro_batch"]), int(hp["ce_chunk"])
    if args.dry_run:
        hp.update(vocab_size=1000, seq_len=32, sizes={size: dict(d_model=64, d_ff=224, n_layer=2, n_head=4, n_kv_head=4)})
        batch, micro, chunk = 4, 2, 64
    elif args.cpu_sizes:
        hp.update(seq_len=128)
        batch, micro = 4, 2
    cfg = model_config(hp, size)
    T = int(hp["seq_len"])
    torch.manual_seed(0)
    model = LlamaLM(cfg).to(device)
    tc = TrainConfig(epochs=1, lr=3e-3, weight_decay=0.1, batch_size=batch, micro_batch=micro, ce_chunk=chunk)
    opt = build_optimizer(model, tc)
    x = torch.randint(0, cfg.vocab_size, (batch, T + 1), device=device)

    def step():
        return train_step(model, opt, x[:, :-1], x[:, 1:], 3e-3, 1.0, device, micro, chunk, model.head.weight)

    sec = _timed(step, args.steps, 0 if args.dry_run else 1, device)
    est = train_flops_per_token(cfg, T) * batch * T
    return {"model": f"{size}: {total_params(cfg) / 1e6:.0f}M params, T={T}, batch {batch} (micro {micro}), "
                     f"ce_chunk {chunk}", "seconds_per_step": sec, "tokens_per_s": batch * T / sec,
            "estimated_flops_per_step": est, "counted_flops_per_step": _counted(step),
            "estimated_peak_bytes": training_peak_bytes(cfg, T, micro, chunk), "assumed_mfu": 0.4}


def entropy_attention(args, device):
    from harness.plugins import get_task
    from tasks.entropy_attention.configs import resolve
    from tasks.entropy_attention.estimate import MFU, estimate_run, forward_flops_per_token
    from tasks.entropy_attention.train import Corpus, model_config, train

    task = get_task("entropy_attention")
    method = task.config.resolve("paper", "sm_ln_g")
    bench = task.config.benchmark("paper", "codeparrot-t128")
    hp = resolve("sm_ln_g", dict(method.hyperparameters))
    if args.dry_run:
        hp.update(n_layer=2, n_head=2, n_embd=32, vocab_size=512, batch_size=8, micro_batch=4)
    elif args.cpu_sizes:
        hp.update(batch_size=4, micro_batch=2)
    steps = args.steps + 1
    hp.update(steps=steps, eval_every=10**9, checkpoint_every=10**9, log_every=10**9, eval_sequences=4,
              entropy_sequences=2, curve_sequences=2)
    T, V = int(hp["context"]), int(hp["vocab_size"])
    g = torch.Generator().manual_seed(0)
    corpus = Corpus(*(torch.randint(0, V, (n,), generator=g) for n in (200_000, 20_000, 20_000)))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    train(corpus, hp, _Ctx(), device=device)
    _sync(device)
    sec = (time.perf_counter() - t0) / steps  # includes one warm-up step and the tiny evaluations
    cfg = model_config(hp, V)
    est = 3 * forward_flops_per_token(cfg, T) * int(hp["batch_size"]) * T
    from tasks.entropy_attention.model import GPT

    model = GPT(cfg).to(device)
    xb = torch.randint(0, V, (int(hp["micro_batch"]), T + 1), device=device)

    def one_micro():
        logits = model(xb[:, :-1], entropy=False)
        torch.nn.functional.cross_entropy(logits.reshape(-1, V), xb[:, 1:].reshape(-1)).backward()

    counted = _counted(one_micro) * int(hp["batch_size"]) / int(hp["micro_batch"])
    peak = estimate_run(method, bench, {**dict(method.hyperparameters), **{k: hp[k] for k in (
        "batch_size", "micro_batch", "vocab_size", "n_layer", "n_head", "n_embd")}}).peak_memory_bytes
    return {"model": f"GPT {cfg.n_layer}x{cfg.n_embd}, V={V}, T={T}, batch {hp['batch_size']} "
                     f"(micro {hp['micro_batch']})", "seconds_per_step": sec,
            "tokens_per_s": int(hp["batch_size"]) * T / sec, "estimated_flops_per_step": est,
            "counted_flops_per_step": counted, "estimated_peak_bytes": peak, "assumed_mfu": MFU}


def self_tuning_networks(args, device):
    from tasks.self_tuning_networks.estimate import MFU, lstm_per_token

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import stn_lstm_throughput as bench

    ns = argparse.Namespace(size=650, layers=2, vocab=10_000, batch=40, bptt=70, warmup=1, steps=args.steps,
                            threads=torch.get_num_threads())
    if args.dry_run:
        ns.size, ns.vocab, ns.batch, ns.bptt = 16, 100, 4, 5
    elif args.cpu_sizes:
        ns.batch, ns.bptt = 4, 10
    bench.args = ns
    row = bench.measure("stn", ns, torch.device(device))
    fwd, params = lstm_per_token(ns.size, ns.size, ns.layers, ns.vocab, stn=True)
    tokens = ns.batch * ns.bptt
    sec = row["seconds"] / ns.steps
    return {"model": f"STN LSTM {ns.layers}x{ns.size}, vocabulary {ns.vocab}, batch {ns.batch}, BPTT {ns.bptt}",
            "seconds_per_step": sec, "tokens_per_s": tokens / sec, "estimated_flops_per_step": 3 * fwd * tokens,
            "counted_flops_per_step": None, "estimated_peak_bytes": params * 16.0, "assumed_mfu": MFU["lstm"],
            "ptb_epoch_s": row["ptb_epoch_s"]}


def noisy_labels(args, device):
    import torch.nn.functional as F

    from tasks.noisy_labels.estimate import MFU, per_image
    from tasks.noisy_labels.models import build_model, nested_k_probs, sample_k
    from tasks.noisy_labels.train import random_crop_flip

    batch, dim = 320, 512
    if args.dry_run:
        batch = 2
    elif args.cpu_sizes:
        batch = 8
    torch.manual_seed(0)
    net = build_model("resnet18", 3 * 32 * 32, 10, dim, "nested", sigma=10.0).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 32, 32, 3)
    y = torch.randint(0, 10, (batch,), device=device)
    probs = nested_k_probs(net.K, 10.0)

    def step():
        xb = random_crop_flip(x, gen).permute(0, 3, 1, 2).contiguous().to(device)
        loss = F.cross_entropy(net(xb, sample_k(probs, gen)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sec = _timed(step, args.steps, 0 if args.dry_run else 1, device)
    train, _, params, act = per_image("resnet18", 10, dim, "nested")
    return {"model": f"ResNet-18 ({params / 1e6:.1f}M), nested dropout, batch {batch}", "seconds_per_step": sec,
            "images_per_s": batch / sec, "estimated_flops_per_step": train * batch,
            "counted_flops_per_step": _counted(step), "estimated_peak_bytes": params * 12 + batch * act,
            "assumed_mfu": MFU}


def dkvb(args, device):
    import torch.nn.functional as F

    from harness.estimate import counted_flops
    from harness.plugins import get_task
    from tasks.dkvb.estimate import MFU_COMPUTE, STEP_SECONDS, lookup_flops, run_cost
    from tasks.dkvb.train import DKVB, SGD

    hp = dict(get_task("dkvb").config.resolve("paper", "dkvb").hyperparameters)
    m, classes, rows = 2048, 10, 10_000  # ResNet-50 embeddings, one CIFAR-10 task's images
    if args.dry_run:
        hp.update(num_codebooks=4, num_pairs=64)
        m, rows = 32, 64
    C, N, d, bs = int(hp["num_codebooks"]), int(hp["num_pairs"]), int(hp["dim_keys"]), int(hp["batch_size"])
    if args.dry_run or args.cpu_sizes:
        bs = 16
    torch.manual_seed(0)
    model = DKVB(m, classes, hp, 1, device)
    x = torch.randn(rows, m, device=device)
    y = torch.randint(0, classes, (rows,), device=device)
    heads = model.splitter(x[:bs])
    gen = torch.Generator().manual_seed(0)

    def ema_step():  # key initialisation: one EMA k-means step on a batch of projected heads
        model.kv.ema_update(heads, gen)

    sec = _timed(ema_step, args.steps, 0 if args.dry_run else 2, device)
    cpu = DKVB(m, classes, hp, 1, "cpu")  # counted on the reference path (the Triton kernel is opaque to the counter)
    cpu_heads = cpu.splitter(torch.randn(bs, m))
    counted = counted_flops(lambda: cpu.kv.ema_update(cpu_heads, gen))
    model.kv.reset_counts()
    model.cache = torch.randint(0, N, (rows, C, 1), device=device)
    params = model.parameters()
    opt = SGD(params, float(hp["lr"]))
    perm = torch.randperm(rows, device=device)
    state = {"s": 0}

    def train_step():  # the stream: train_run's inner loop on cached key indices
        s = state["s"] % (rows - bs)
        state["s"] += bs
        idx = perm[s:s + bs]
        loss = F.cross_entropy(model.train_logits(x, idx), y[idx], label_smoothing=float(hp["label_smoothing"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, float(hp["grad_clip"]))
        opt.step()

    train_sec = _timed(train_step, args.steps, 0 if args.dry_run else 5, device)
    _, peak, steps, _ = run_cost("dkvb", {**hp, "num_codebooks": 256, "num_pairs": 4096},
                                     50_000, 10_000, 50_000, 10, 2048)
    return {"model": f"DKVB C={C} N={N} d_k={d} on {m}-d embeddings; EMA step and stream step at batch {bs}",
            "seconds_per_step": sec, "estimated_flops_per_step": bs * lookup_flops(C, N, d),
            "counted_flops_per_step": counted, "assumed_mfu": MFU_COMPUTE, "estimated_peak_bytes": peak,
            "train_seconds_per_step": train_sec, "assumed_train_seconds_per_step": STEP_SECONDS,
            "run_minutes_estimated": (steps * STEP_SECONDS) / 60,
            "run_minutes_at_measured_step": (steps * train_sec) / 60}


def cmim(args, device):
    from tasks.cmim.estimate import (
        MFU_COMPUTE,
        SMILES_VOCAB,
        adamw_training_bytes,
        molecule_activation_bytes,
        molecule_step_flops,
        padded_tokens,
    )
    from tasks.cmim.models import PerceiverSmiles, n_parameters
    from tasks.cmim.train import step_loss, train

    dims = {"latent": 512, "d_model": 512, "heads": 8, "ffn": 2048, "enc_layers": 6, "dec_layers": 6}
    batch = 256
    L = round(padded_tokens(batch, 128))
    if args.dry_run:
        dims = {"latent": 16, "d_model": 32, "heads": 2, "ffn": 64, "enc_layers": 1, "dec_layers": 1}
        batch, L = 4, 12
    elif args.cpu_sizes:
        batch, L = 4, 40
    V = SMILES_VOCAB
    torch.manual_seed(0)
    model = PerceiverSmiles(V, max_len=128, **dims).to(device)
    tokens = torch.randint(4, V, (max(args.steps + 1, 2) * batch, L))
    hp = {"epochs": 1, "batch_size": batch, "lr": 1e-3, "tau": 0.1, "w_rec": 1.0, "warmup_epochs": 0}
    t0 = time.perf_counter()
    train(model, "cmim", hp, _Ctx(), (args.steps + 1) * batch, lambda idx, gen: (tokens[idx], None))
    _sync(device)
    sec = (time.perf_counter() - t0) / (args.steps + 1)  # the training loop itself, one warm-up step included
    xb = tokens[:batch].to(device)
    counted = _counted(lambda: step_loss(model, "cmim", xb, hp, 1.0, torch.Generator().manual_seed(0))[0].backward())
    d, f, z = dims["d_model"], dims["ffn"], dims["latent"]
    est = molecule_step_flops("cmim", batch, L, d, f, z, dims["enc_layers"], dims["dec_layers"], V)
    params = n_parameters(model)
    peak = adamw_training_bytes(params) + molecule_activation_bytes("cmim", batch, L, d, f, dims["dec_layers"], V)
    return {"model": f"Perceiver {dims['enc_layers']}+1 / {dims['dec_layers']} x {d} ({params / 1e6:.1f}M), "
                     f"cMIM, batch {batch} x {L} tokens, fp32", "seconds_per_step": sec,
            "tokens_per_s": batch * L / sec, "estimated_flops_per_step": est, "counted_flops_per_step": counted,
            "estimated_peak_bytes": peak, "assumed_mfu": MFU_COMPUTE}


# -- driver ----------------------------------------------------------------------------------------

def peak_flops(device: str, given: float | None) -> tuple[float | None, str]:
    if given:
        return given, "given (--peak-flops)"
    if device.startswith("cuda"):
        from harness.estimate import GPUS

        name = torch.cuda.get_device_name(0)
        for key, (flops, _mem) in GPUS.items():
            if key in name.upper():
                return flops, f"{key} bf16 dense peak"
    return None, "unknown (pass --peak-flops)"


def mask_tuning(args, device):
    import dataclasses

    import torch.nn.functional as F

    from harness.plugins import get_task
    from tasks.mask_tuning import model as M
    from tasks.mask_tuning.paper import MFU, VIT_B16, train_step_flops
    from tasks.mask_tuning.train import AdamW, gdr_gate, kl_loss, mask_l2

    task = get_task("mask_tuning")
    cfg, batch, classes = VIT_B16, 32, 1000
    if args.dry_run:
        cfg, batch, classes = dataclasses.replace(VIT_B16, image_size=32, width=64, layers=2, heads=2, embed=32), 4, 10
    elif args.cpu_sizes:
        batch = 2
    torch.manual_seed(0)
    w = {k: 0.02 * torch.randn(s, device=device) for k, s in M.weight_shapes(cfg).items() if k.startswith("visual.")}
    scores = M.init_scores(w, M.masked_names(cfg, "attn"))
    params = list(scores.values())
    opt = AdamW(params, 8e-5)
    text = F.normalize(torch.randn(classes, cfg.embed, device=device), dim=-1)
    x = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    with torch.no_grad():
        teacher = 100 * F.normalize(M.encode_image(w, x, cfg), dim=-1) @ text.T  # once per image in a run

    def step():
        logits = 100 * F.normalize(M.encode_image(M.apply_masks(w, scores), x, cfg), dim=-1) @ text.T
        g_b = torch.autograd.grad(kl_loss(logits, teacher), params, retain_graph=True)
        g_a = torch.autograd.grad(F.cross_entropy(logits, y) + 1e-4 * mask_l2(scores), params)
        for p, a, b in zip(params, g_a, g_b):
            p.grad = gdr_gate(a, b, 1.0, torch.rand_like(a))
        opt.step()

    sec = _timed(step, args.steps, 0 if args.dry_run else 2, device)
    c = task.config
    bench = c.benchmark("paper", "imagenet-16shot")
    method = c.for_benchmark("paper", c.resolve("paper", "ramt"), bench)
    est = task.estimate(method, bench, dict(method.hyperparameters), "paper")
    return {"model": f"ViT image tower width {cfg.width} x {cfg.layers} layers, {cfg.image_size} px, batch {batch}; "
                     "R-AMT step (masked forward, two backward passes, GDR, Adam on the scores)",
            "seconds_per_step": sec, "estimated_flops_per_step": batch * train_step_flops(cfg, "gdr"),
            "counted_flops_per_step": _counted(step), "assumed_mfu": MFU,
            "estimated_peak_bytes": est.peak_memory_bytes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="all", choices=("all",) + TASKS)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes, 2 steps, on the CPU: the plumbing only")
    ap.add_argument("--cpu-sizes", action="store_true", help="real widths, tiny batches: a CPU measurement")
    ap.add_argument("--peak-flops", type=float, help="the device's peak FLOP/s for the MFU column")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.dry_run:
        args.device, args.steps = "cpu", 1
    torch.set_num_threads(args.threads)
    peak, peak_source = peak_flops(args.device, args.peak_flops)
    results = {}
    for name in (TASKS if args.task == "all" else (args.task,)):
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        r = globals()[name](args, args.device)
        r["achieved_flops_per_s"] = r["estimated_flops_per_step"] / r["seconds_per_step"]
        if r.get("counted_flops_per_step"):
            r["estimated_over_counted_flops"] = r["estimated_flops_per_step"] / r["counted_flops_per_step"]
        if peak:
            r["measured_mfu"] = r["achieved_flops_per_s"] / peak
            # > 1: the estimate (FLOPs / (peak x assumed MFU)) is slower than measured, i.e. conservative
            r["estimated_over_measured_time"] = r["measured_mfu"] / r["assumed_mfu"]
        if args.device.startswith("cuda"):
            r["peak_bytes"] = torch.cuda.max_memory_allocated()
        results[name] = r
        print(name, json.dumps({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    env = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else
           (platform.processor() or platform.machine()), "torch": torch.__version__, "threads": args.threads,
           "peak_flops": peak, "peak_source": peak_source, "dry_run": args.dry_run, "steps": args.steps,
           "load_average": os.getloadavg()[0]}
    out = {"env": env, "tasks": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
