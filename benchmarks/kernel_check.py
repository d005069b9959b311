"""Correctness of the Triton kernels against their PyTorch references, in bf16 and fp32.

attention_entropy: output, per-row entropy and the gradients of q, k, v (a random cotangent on
both outputs) at T in {128, 1000} (a ragged last block), causal. kv_lookup (when
kernels/kv_lookup.py exists): indices equal and distances within tolerance, with queries and keys
rounded through bf16 (the kernel computes in fp32, so bf16-rounded inputs must give the
reference's answer on those inputs).

    python benchmarks/kernel_check.py --out benchmarks/results/gpu-kernel_check.json    # GPU
    python benchmarks/kernel_check.py --dry-run                                         # CPU, TRITON_INTERPRET=1, fp32, tiny

Exits 1 when a check fails (the JSON says which). The CPU interpreter's bf16 tl.dot is wrong, so
the dry run checks fp32 only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOL = {"float32": 2e-3, "bfloat16": 5e-2}


def attention(device: str, dtype_name: str, T: int) -> dict:
    import torch

    from kernels.attention_entropy import attention_entropy_reference, attention_entropy_triton

    dtype = getattr(torch, dtype_name)
    g = torch.Generator(device=device).manual_seed(0)
    B, H, D = (2, 4, 64) if device == "cuda" else (1, 2, 16)
    q, k, v = (torch.randn(B, H, T, D, device=device, generator=g).to(dtype).requires_grad_(True) for _ in range(3))
    tri, ref = attention_entropy_triton(q, k, v), attention_entropy_reference(q, k, v)
    g_out = torch.randn(tri.out.shape, device=device, generator=g)
    g_ent = torch.randn(tri.row_entropy.shape, device=device, generator=g)

    def grads(res):
        return torch.autograd.grad((res.out.float() * g_out).sum() + (res.row_entropy.float() * g_ent).sum(), (q, k, v))

    gt, gr = grads(tri), grads(ref)
    errs = {"out": (tri.out.float() - ref.out.float()).abs().max().item(),
            "row_entropy": (tri.row_entropy.float() - ref.row_entropy.float()).abs().max().item()}
    for name, a, b in zip("qkv", gt, gr):
        scale = b.float().abs().max().item() or 1.0
        errs[f"d{name}_rel"] = (a.float() - b.float()).abs().max().item() / scale
    tol = TOL[dtype_name]
    return {"kernel": "attention_entropy", "dtype": dtype_name, "T": T, "max_errors": errs, "tolerance": tol,
            "ok": all(e <= tol for e in errs.values())}


def kv_lookup(device: str, dtype_name: str) -> dict:
    import torch

    from kernels.kv_lookup import kv_lookup_reference, kv_lookup_triton

    dtype = getattr(torch, dtype_name)
    g = torch.Generator(device=device).manual_seed(0)
    C, M, N, D = (8, 256, 1024, 14) if device == "cuda" else (2, 16, 64, 14)
    q = torch.randn(C, M, D, device=device, generator=g).to(dtype).float()
    keys = torch.randn(C, N, D, device=device, generator=g).to(dtype).float()
    used = torch.rand(C, N, device=device, generator=g) > 0.1
    a, b = kv_lookup_triton(q, keys, used, k=4), kv_lookup_reference(q, keys, used, k=4)
    ia, ib = (x[1] if isinstance(x, tuple) else x.indices for x in (a, b))
    da, db = (x[0] if isinstance(x, tuple) else x.distances for x in (a, b))
    dist_err = (da.float() - db.float()).abs().max().item()
    return {"kernel": "kv_lookup", "dtype": f"{dtype_name} inputs, fp32 compute", "index_mismatches":
            int((ia != ib).sum()), "max_distance_error": dist_err, "ok": bool((ia == ib).all()) and dist_err <= 1e-3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    device = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
    dtypes = ["float32"] if device == "cpu" else ["bfloat16", "float32"]
    lengths = [40] if device == "cpu" else [128, 1000]
    checks = [attention(device, dt, T) for dt in dtypes for T in lengths]
    if importlib.util.find_spec("kernels.kv_lookup") is not None:
        try:
            checks += [kv_lookup(device, dt) for dt in dtypes]
        except Exception as e:  # noqa: BLE001 - another engineer's kernel may still move: report, not crash
            checks.append({"kernel": "kv_lookup", "ok": False, "error": f"{type(e).__name__}: {e}"})
    out = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (TRITON_INTERPRET=1)",
           "checks": checks, "ok": all(c["ok"] for c in checks)}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
