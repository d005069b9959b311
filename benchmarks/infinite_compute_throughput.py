"""Training throughput of the infinite_compute task's loop against a bare PyTorch loop.

Both loops train the same Llama-style model (same size, batch, AdamW param groups, LR
schedule and clipping) on the same random windows; the task's loop is
``tasks.infinite_compute.train.train_lm`` (epoch streams, batch mixing, logging hooks),
the bare loop is the textbook ``for step: forward, backward, clip, step``. Each is timed
with and without ``torch.compile``. Tokens/s counts input tokens processed per second,
after warm-up steps (which also absorb compilation).

    .venv/bin/python benchmarks/infinite_compute_throughput.py              # small-scale model, CPU
    .venv/bin/python benchmarks/infinite_compute_throughput.py --preset 150m --seq-len 4096 --batch 16 --device cuda

Writes benchmarks/results/infinite_compute_throughput.{json,md}. A script, not a test:
numbers depend on the machine and on what else runs on it (recorded beside them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.infinite_compute.model import PAPER_PRESETS, LlamaLM, ModelConfig  # noqa: E402
from tasks.infinite_compute.train import (TrainConfig, build_optimizer, lr_at, total_steps, train_lm,  # noqa: E402
                                          train_step)

RESULTS = Path(__file__).resolve().parent / "results"


def make_model(args) -> LlamaLM:
    torch.manual_seed(0)
    if args.preset:
        cfg = ModelConfig(vocab_size=args.vocab, max_seq_len=args.seq_len, **PAPER_PRESETS[args.preset])
    else:
        cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layer=args.n_layer, n_head=args.n_head,
                          max_seq_len=args.seq_len)
    return LlamaLM(cfg).to(args.device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_task_loop(args, windows: np.ndarray, compile_: bool) -> float:
    """Seconds per step of train_lm, measured between warm-up and the end through its on_step hook."""
    model = make_model(args)
    epochs = (args.warmup + args.steps) * args.batch / len(windows)
    tc = TrainConfig(epochs=epochs, lr=3e-3, weight_decay=0.1, batch_size=args.batch, ckpt_every=0,
                     log_every=10**9, compile=compile_)
    assert total_steps(len(windows), tc) == args.warmup + args.steps
    marks = {}

    def on_step(step: int) -> None:
        if step == args.warmup - 1:
            sync(args.device)
            marks["t0"] = time.perf_counter()
    train_lm(model, windows, tc, seed=0, device=args.device, on_step=on_step)
    sync(args.device)
    return (time.perf_counter() - marks["t0"]) / args.steps


def time_bare_loop(args, windows: np.ndarray, compile_: bool) -> float:
    """The same model, optimizer, schedule and clipping in a plain loop over pre-drawn batches."""
    model = make_model(args)
    opt = build_optimizer(model, TrainConfig(epochs=1, lr=3e-3, weight_decay=0.1))
    step_model = torch.compile(model) if compile_ else model
    data = torch.from_numpy(windows).to(args.device)
    n = args.warmup + args.steps
    idx = torch.from_numpy(np.random.default_rng(0).integers(0, len(windows), (n, args.batch))).to(args.device)
    warm = max(1, round(0.01 * n))
    t0 = None
    for step in range(n):
        if step == args.warmup:
            sync(args.device)
            t0 = time.perf_counter()
        batch = data[idx[step]]
        train_step(step_model, opt, batch[:, :-1], batch[:, 1:], lr_at(step, n, 3e-3, warm), 1.0, args.device)
    sync(args.device)
    return (time.perf_counter() - t0) / args.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", choices=sorted(PAPER_PRESETS), default=None)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=257)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings per configuration")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--out", default=str(RESULTS / "infinite_compute_throughput"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    windows = np.random.default_rng(0).integers(0, args.vocab, (max(4 * args.batch, 256), args.seq_len + 1))
    tokens_per_step = args.batch * args.seq_len
    rows = []
    for compile_ in ([False] if args.no_compile else [False, True]):
        for name, fn in (("task loop (train_lm)", time_task_loop), ("bare PyTorch loop", time_bare_loop)):
            best = min(fn(args, windows, compile_) for _ in range(args.repeats))
            rows.append({"loop": name, "compile": compile_, "s_per_step": best, "tokens_per_s": tokens_per_step / best})
            print(f"{name:22s} compile={compile_!s:5s} {tokens_per_step / best:12,.0f} tokens/s", flush=True)
    for compile_ in sorted({r["compile"] for r in rows}):
        task_r = next(r for r in rows if r["compile"] == compile_ and r["loop"].startswith("task"))
        bare_r = next(r for r in rows if r["compile"] == compile_ and r["loop"].startswith("bare"))
        task_r["ratio_to_bare"] = task_r["tokens_per_s"] / bare_r["tokens_per_s"]
    model = make_model(args)
    meta = {"device": args.device, "torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "threads": args.threads,
            "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
            "load_average": os.getloadavg(), "model": model.cfg.to_dict(),
            "params_non_embedding": model.num_params(non_embedding=True), "batch": args.batch,
            "seq_len": args.seq_len, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = ["# infinite_compute training throughput", "",
             f"device {meta['device']} ({meta['gpu'] or meta['cpu']}), torch {meta['torch']}, threads {args.threads}, "
             f"load average at the end {tuple(round(x, 2) for x in meta['load_average'])}",
             f"model d_model={model.cfg.d_model} n_layer={model.cfg.n_layer} ({meta['params_non_embedding']:,} "
             f"non-embedding params), batch {args.batch} x {args.seq_len} tokens, {args.steps} timed steps after "
             f"{args.warmup} warm-up, best of {args.repeats}", "",
             "| loop | torch.compile | tokens/s | task / bare |", "| --- | --- | ---: | ---: |"]
    for r in rows:
        ratio = f"{r['ratio_to_bare']:.3f}" if "ratio_to_bare" in r and math.isfinite(r["ratio_to_bare"]) else ""
        lines.append(f"| {r['loop']} | {'yes' if r['compile'] else 'no'} | {r['tokens_per_s']:,.0f} | {ratio} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
