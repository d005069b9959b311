"""Training throughput of the self_tuning_networks PTB LSTM: STN vs plain, our loop vs cuDNN.

Three models train on the same random token streams with the paper's optimiser (SGD, LR 30,
gradient clip 0.25) and regularisers:

* ``stn``: :class:`tasks.self_tuning_networks.lstm.STNLanguageModel` with ``hyper=True`` (both
  weight tables and the λ-gates, per-example hypernet input, all seven regularisers);
* ``plain``: the same class with ``hyper=False`` (the baselines' network: the same Python time
  loop, needed for DropConnect on W_hh and per-example locked dropout);
* ``cudnn``: ``torch.nn.LSTM`` with the same sizes and no regularisers — the speed a
  fused kernel reaches, i.e. what the Python time loop costs.

Tokens/s counts training tokens per second after warm-up steps. The paper size (650 units,
batch 40, BPTT 70) is the default; one PTB epoch is 929,589 training tokens.

    .venv/bin/python benchmarks/stn_lstm_throughput.py --steps 3            # CPU, paper size
    .venv/bin/python benchmarks/stn_lstm_throughput.py --device cuda --steps 50

Writes benchmarks/results/stn_lstm_throughput-<device>.{json,md}. A script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.self_tuning_networks.lstm import STNLanguageModel  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PTB_TRAIN_TOKENS = 929_589


class CudnnLM(torch.nn.Module):
    """Embedding -> nn.LSTM -> tied decoder: the fused-kernel reference."""

    def __init__(self, vocab: int, size: int, layers: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, size)
        self.rnn = torch.nn.LSTM(size, size, layers, batch_first=True)
        self.dec = torch.nn.Linear(size, vocab)
        self.dec.weight = self.emb.weight

    def forward(self, x, state):
        out, state = self.rnn(self.emb(x), state)
        return self.dec(out), state


def step_fn(kind: str, model, batch: int, device, hnet_dim: int):
    """One training step's closure for ``kind``: forward, loss, backward, clip, SGD."""
    opt = torch.optim.SGD(model.parameters(), lr=30.0)
    gen = torch.Generator(device="cpu").manual_seed(0)

    if kind == "cudnn":
        state = None
    else:
        state = model.init_state(batch, device)

    def run(x, y):
        nonlocal state
        model.train()
        if kind == "cudnn":
            logits, state = model(x, state)
            state = tuple(s.detach() for s in state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        else:
            hnet = torch.randn(batch, hnet_dim, generator=gen).to(device) if kind == "stn" else None
            reg = {"dropouto": torch.full((batch,), 0.4, device=device), "dropouti": torch.full((batch,), 0.4, device=device),
                   "dropouth": torch.full((batch,), 0.25, device=device), "dropoute": 0.1, "wdrop": 0.5}
            logits, state, ar, tar = model(x, state, hnet, reg)
            state = [(h.detach(), c.detach()) for h, c in state]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)) + 2.0 * ar + 1.0 * tar
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    return run


def measure(kind: str, args, device) -> dict:
    torch.manual_seed(0)
    if kind == "cudnn":
        model = CudnnLM(args.vocab, args.size, args.layers).to(device)
    else:
        model = STNLanguageModel(args.vocab, 7, hyper=kind == "stn", emsize=args.size, nhid=args.size,
                                 nlayers=args.layers).to(device)
    run = step_fn(kind, model, args.batch, device, 7)
    data = torch.randint(0, args.vocab, (args.batch, (args.warmup + args.steps) * args.bptt + 1), device=device)

    def chunk(i):
        s = i * args.bptt
        return data[:, s:s + args.bptt], data[:, s + 1:s + 1 + args.bptt]

    for i in range(args.warmup):
        run(*chunk(i))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        run(*chunk(i))
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens = args.steps * args.batch * args.bptt
    return {"kind": kind, "params": sum(p.numel() for p in model.parameters()), "seconds": dt,
            "tokens_per_s": tokens / dt, "ptb_epoch_s": PTB_TRAIN_TOKENS / (tokens / dt)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=650)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--bptt", type=int, default=70)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [measure(k, args, device) for k in ("cudnn", "plain", "stn")]
    base = {r["kind"]: r["tokens_per_s"] for r in rows}
    for r in rows:
        r["slowdown_vs_cudnn"] = base["cudnn"] / r["tokens_per_s"]
    env = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine(),
           "torch": torch.__version__, "threads": args.threads, "load_average": os.getloadavg()[0]}
    out = {"args": vars(args), "env": env, "rows": rows, "stn_over_plain": base["plain"] / base["stn"]}
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"stn_lstm_throughput-{device.type}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"# STN LSTM throughput ({env['device']}, torch {env['torch']}, {args.threads} threads, "
             f"size {args.size}x{args.layers}, batch {args.batch}, BPTT {args.bptt}, {args.steps} timed steps)", "",
             "| model | params | tokens/s | one PTB epoch | slower than cuDNN-style nn.LSTM |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['kind']} | {r['params'] / 1e6:.1f}M | {r['tokens_per_s']:,.0f} | {r['ptb_epoch_s']:,.0f} s | "
              f"{r['slowdown_vs_cudnn']:.2f}x |" for r in rows]
    lines += ["", f"STN / plain time per token: {out['stn_over_plain']:.2f}x"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
