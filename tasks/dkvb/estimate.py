"""What a run costs before it runs (``Task.estimate``; ``harness plan --scale paper --estimate``).

FLOPs are the ones ``torch.utils.flop_counter`` counts in the run's own code (tested against it):

* the fixed random projection of an embedding to C heads, 2 m C d_k per input;
* the nearest-key search (:func:`kernels.kv_lookup.kv_lookup_reference`'s ``baddbmm``),
  2 C N d_k per input: over the key-initialisation data ``init_epochs`` times plus the quantisation
  error before and after, over the whole training set once (the cached key indices), and over the
  test set at every evaluation (``eval_every`` epochs and after each task, the forgetting probe's
  routing after each task, the final masked and unmasked passes); ``dkvb_ema_keys`` routes every
  training batch afresh instead of caching;
* the decoder: the voting decoder is an ``embedding_bag`` (no matmul: 0 counted FLOPs); a linear or
  MLP decoder on the C x d_v fetched values, and the linear-probe / MLP baselines on the m-d raw
  embeddings, 3x their forward per training example (2x for a first layer whose input is a frozen
  embedding: no input gradient).

Time: a run is tens of thousands to 400,000 tiny optimizer steps (2,000 epochs x 5 tasks x 40
batches of 256 on CIFAR-10; card §10: "dominated by launch overhead"), so its GPU time is modelled
as ``steps x STEP_SECONDS`` (an eager step launches ~35 kernels) plus the counted FLOPs at
``MFU_COMPUTE`` (the key search is IEEE fp32 on CUDA cores, never TF32: an H100's 67 TFLOP/s fp32 is
6.8% of its bf16 peak); the run's MFU is the counted FLOPs over that time at the H100's bf16 peak.
``benchmarks/gpu_check.sh`` times both on a GPU. Memory: the embeddings on the device (stream,
test and key-initialisation data), the projected heads of the key-initialisation data, keys and
their EMA statistics, values and their gradients, the cached indices, and the forgetting probe's
per-task test routes and key counts. Disk: the embeddings (float32 in Arrow, data/<dataset>/); the
CIFAR images and the backbone weights sit in the Hugging Face cache (~0.3 GB and ~0.7 GB, shared by
the four datasets, not counted). A run writes no checkpoint (minutes long).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.api import RunEstimate

#: Seconds of one eager training step on a GPU (launch-bound: ~35 kernels of a few microseconds).
STEP_SECONDS = 5e-4
#: Fraction of the bf16 peak the counted FLOPs reach (IEEE fp32 key search on CUDA cores).
MFU_COMPUTE = 0.03
#: CIFAR: training images (the stream), test images, training images of the other CIFAR (the keys' data).
STREAMS = {"cifar10": (50_000, 10_000, 10), "cifar100": (50_000, 10_000, 100)}
N_PRETRAIN = 50_000
#: Embedding width per backbone (ResNet-50 pooled layer 4; CLIP ViT-B/32 image_embeds).
EMBED_DIM = {"resnet50": 2048, "clip": 512}


def paper_dataset(dataset: str) -> tuple[int, int, int, int, int] | None:
    """(n_train, n_test, n_pretrain, classes, m) of a paper-scale dataset ``dkvb_<stream>_<backbone>``."""
    parts = dataset.split("_")
    if len(parts) != 3 or parts[1] not in STREAMS or parts[2] not in EMBED_DIM:
        return None
    n_train, n_test, classes = STREAMS[parts[1]]
    return n_train, n_test, N_PRETRAIN, classes, EMBED_DIM[parts[2]]


def projection_flops(m: int, C: int, d: int) -> float:
    return 2.0 * m * C * d


def lookup_flops(C: int, N: int, d: int) -> float:
    return 2.0 * C * N * d


def head_flops(kind: str, in_dim: int, classes: int, hidden: int, input_grad: bool) -> tuple[float, float]:
    """(forward, training) FLOPs per example of a linear layer or a 1-hidden-layer MLP on ``in_dim``
    inputs; without ``input_grad`` the first layer's backward computes only its weight gradient."""
    first = 2.0 * in_dim * (classes if kind == "linear" else hidden)
    rest = 0.0 if kind == "linear" else 2.0 * hidden * classes
    return first + rest, first * (3 if input_grad else 2) + 3 * rest


def evals_per_phase(epochs: int, eval_every: int) -> int:
    """Evaluations inside one phase's loop: every ``eval_every`` epochs and after the last."""
    return epochs // eval_every + (1 if epochs % eval_every else 0)


def schedule(hp: Mapping[str, Any], n_train: int, classes: int) -> dict[str, float]:
    """Phases, training steps, training examples and test passes of one run (the loop of train.py)."""
    iid = hp.get("stream", "class_incremental") == "iid"
    split = int(hp.get("split_size", 2))
    phases = 1 if iid else math.ceil(classes / split)
    rows = n_train if iid else n_train // classes * split  # CIFAR is class-balanced
    epochs = int(hp["epochs_per_task"])
    bs = int(hp["batch_size"]) if hp.get("batch_size") else rows
    eval_every = int(hp.get("eval_every", max(1, epochs // 4)))
    return {"iid": iid, "phases": phases, "steps": phases * epochs * math.ceil(rows / bs),
            "examples": phases * epochs * rows,
            "test_passes": phases * (evals_per_phase(epochs, eval_every) + 1) + 1}


def run_cost(model_kind: str, config: Mapping[str, Any], n_train: int, n_test: int, n_pre: int, classes: int,
             m: int) -> tuple[float, float, int, str]:
    """(counted FLOPs, peak device bytes, training steps, note) of one run on a class-balanced stream of
    ``n_train`` m-d embeddings, ``n_test`` test and ``n_pre`` key-initialisation embeddings."""
    hp = dict(config)
    s = schedule(hp, n_train, classes)
    hidden = int(hp.get("hidden", 128))
    on_device = (n_train + n_test + n_pre) * (4.0 * m + 8)  # train_run moves every split to the device
    if model_kind == "dkvb":
        C, N, d = int(hp["num_codebooks"]), int(hp["num_pairs"]), int(hp["dim_keys"])
        v, k = int(hp.get("dim_values") or classes), int(hp.get("topk", 1))
        route = projection_flops(m, C, d) + lookup_flops(C, N, d)
        decoder = str(hp.get("decoder", "vote"))
        dec_fwd, dec_train = (0.0, 0.0) if decoder == "vote" else head_flops(
            "linear" if decoder == "linear" else "mlp", C * v, classes, hidden, input_grad=True)
        keys_ema = bool(hp.get("update_keys_in_stream", False))
        init = n_pre * (projection_flops(m, C, d) + (int(hp.get("init_epochs", 10)) + 2) * lookup_flops(C, N, d))
        stream = s["examples"] * route if keys_ema else n_train * route  # routed every step, or cached once
        train = s["examples"] * dec_train
        probe_routes = 0 if s["iid"] else s["phases"]  # the forgetting probe routes the test set after each task
        evals = n_test * ((s["test_passes"] + 1) * (route + dec_fwd) + probe_routes * route)  # + the unmasked pass
        flops = init + stream + train + evals
        params = C * N * v + (0 if decoder == "vote" else (C * v * (classes if decoder == "linear" else hidden)))
        state = 4.0 * C * N * (3 * d + 2) + 8.0 * params  # keys, their EMA sums and an update's; sizes, counts
        cache = 0.0 if keys_ema else 8.0 * n_train * C * k
        probe = 0.0 if s["iid"] else s["phases"] * (8.0 * n_test * C * k + 4.0 * C * N)
        transient = 4.0 * C * max(n_pre, n_train, n_test) * d  # the projected heads of one split
        peak = on_device + state + cache + probe + transient
        note = (f"C={C} N={N} d_k={d} on {m}-d embeddings, {decoder} decoder{', EMA keys' if keys_ema else ''}; "
                f"{s['steps']:,} steps, {s['test_passes'] + 1 + probe_routes} test routings")
    else:
        kind = "linear" if model_kind == "linear_probe" else "mlp"
        fwd, tr = head_flops(kind, m, classes, hidden, input_grad=False)
        flops = s["examples"] * tr + n_test * s["test_passes"] * fwd
        params = m * classes + classes if kind == "linear" else m * hidden + hidden + hidden * classes + classes
        peak = on_device + 8.0 * params + 4.0 * n_test * max(classes, hidden)
        note = f"{model_kind} on {m}-d embeddings ({params:,} params); {s['steps']:,} steps"
    return flops, peak, int(s["steps"]), note


def estimate_run(model_kind: str, config: Mapping[str, Any], dataset: str, gpu_flops: float) -> RunEstimate | None:
    """``model_kind``: dkvb | linear_probe | mlp (``tasks.dkvb.MODEL_OF``); None off the paper datasets."""
    sizes = paper_dataset(dataset)
    if sizes is None:
        return None
    n_train, n_test, n_pre, _, m = sizes
    flops, peak, steps, note = run_cost(model_kind, config, *sizes)
    seconds = steps * STEP_SECONDS + flops / (gpu_flops * MFU_COMPUTE)
    return RunEstimate(flops=flops, peak_memory_bytes=peak, data_bytes=(n_train + n_test + n_pre) * (4.0 * m + 8),
                       checkpoint_bytes=0.0, mfu=flops / (gpu_flops * seconds),
                       note=f"{note}; ~{seconds / 60:.1f} min (launch-bound)")
