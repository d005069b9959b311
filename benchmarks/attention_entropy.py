"""GPU benchmark of kernels/attention_entropy.py: causal attention that also emits entropies.

For each T in --lengths (default 512..8192), bf16, B x H x T x D = --batch x --heads x T x --dim:

  triton      attention_entropy_triton: output + per-row/per-head entropy, no T x T matrix
  sdpa        torch.nn.functional.scaled_dot_product_attention (flash), output only
  reference   attention_entropy_reference: materialises the T x T matrix (fp32)

timed for the forward pass and for forward+backward (median ms, triton.testing.do_bench), with
the peak memory each allocates. Goals (issue 5): triton >= 0.8x SDPA's speed while emitting
entropy, >= 5x the reference, memory linear in T. A correctness check (bf16 and fp32 against
the reference at T=256) runs first: the CPU tests cover fp32/fp16 under the interpreter only,
whose bf16 tl.dot is wrong.

    python benchmarks/attention_entropy.py [--lengths 512 1024 ...] [--out FILE]

Writes benchmarks/results/attention_entropy.json. Exits 0 with a message when no GPU is present.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _peak_mb(fn) -> float:
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _correctness() -> dict:
    import torch

    from kernels.attention_entropy import attention_entropy_reference, attention_entropy_triton

    out = {}
    for dtype, tol in ((torch.float32, 1e-3), (torch.bfloat16, 3e-2)):
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(2, 4, 256, 64, device="cuda", generator=g).to(dtype).requires_grad_(True)
                   for _ in range(3))
        tri = attention_entropy_triton(q, k, v)
        ref = attention_entropy_reference(q, k, v)
        g_out = torch.randn_like(tri.out, dtype=torch.float32)
        g_ent = torch.randn_like(tri.row_entropy)
        gt = torch.autograd.grad((tri.out.float() * g_out).sum() + (tri.row_entropy * g_ent).sum(), (q, k, v))
        gr = torch.autograd.grad((ref.out.float() * g_out).sum() + (ref.row_entropy * g_ent).sum(), (q, k, v))
        errs = {"out": (tri.out.float() - ref.out.float()).abs().max().item(),
                "row_entropy": (tri.row_entropy - ref.row_entropy).abs().max().item(),
                **{f"d{n}": ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()
                   for n, a, b in zip("qkv", gt, gr)}}
        out[str(dtype).removeprefix("torch.")] = {"max_errors": errs, "tolerance": tol,
                                                   "ok": all(e <= tol for e in errs.values())}
    return out


def _bench_one(T: int, args) -> dict:
    import torch
    import torch.nn.functional as F
    from triton.testing import do_bench

    from kernels.attention_entropy import attention_entropy_reference, attention_entropy_triton

    shape = (args.batch, args.heads, T, args.dim)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    impls = {
        "triton": lambda: attention_entropy_triton(q, k, v, causal=True),
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "reference": lambda: attention_entropy_reference(q, k, v, causal=True),
    }
    row = {"T": T}
    for name, fn in impls.items():
        def fwd_bwd(fn=fn):
            res = fn()
            o = res if isinstance(res, torch.Tensor) else res.out
            loss = o.float().sum() + (0.0 if isinstance(res, torch.Tensor) else res.entropy.sum())
            loss.backward()
        try:
            with torch.no_grad():
                row[f"{name}_fwd_ms"] = do_bench(fn, warmup=args.warmup, rep=args.rep)
                row[f"{name}_fwd_mb"] = _peak_mb(fn)
            row[f"{name}_fwdbwd_ms"] = do_bench(fwd_bwd, warmup=args.warmup, rep=args.rep, grad_to_none=[q, k, v])
            row[f"{name}_fwdbwd_mb"] = _peak_mb(fwd_bwd)
        except torch.cuda.OutOfMemoryError:
            row[f"{name}_error"] = "out of memory"
            torch.cuda.empty_cache()
    for phase in ("fwd", "fwdbwd"):
        t = row.get(f"triton_{phase}_ms")
        if t:
            if row.get(f"sdpa_{phase}_ms"):
                row[f"speed_vs_sdpa_{phase}"] = row[f"sdpa_{phase}_ms"] / t
            if row.get(f"reference_{phase}_ms"):
                row[f"speedup_vs_reference_{phase}"] = row[f"reference_{phase}_ms"] / t
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=25)
    ap.add_argument("--rep", type=int, default=100)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "attention_entropy.json")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("benchmarks/attention_entropy.py: no CUDA device here, nothing to time "
              "(run it on a GPU machine; the CPU tests are in tests/kernels/).")
        return 0
    sys.path.insert(0, str(HERE.parent))
    import triton

    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "python": platform.python_version(), "shape": {"B": args.batch, "H": args.heads, "D": args.dim},
              "dtype": "bfloat16", "causal": True, "correctness": _correctness(), "rows": []}
    print(json.dumps(result["correctness"], indent=1))
    for T in args.lengths:
        row = _bench_one(T, args)
        result["rows"].append(row)
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
