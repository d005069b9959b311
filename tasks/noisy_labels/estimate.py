"""What a run costs before it runs (``Task.estimate``; ``harness plan --scale paper --estimate``).

FLOPs per image are counted by ``torch.utils.flop_counter`` on the meta device for the run's own
network (a training step: forward + backward; an evaluation: forward). Stage one trains one
network for ``epochs`` over the 45,000 noisy training images and scores the 5,000 clean
validation images every epoch; co-teaching trains two (both forward every batch, each backward on
its partner's small-loss rows: counted as two full trainings, an upper bound); the stage-two
fine-tune runs ``finetune_epochs``; ensembles and best-of-sweep selections only evaluate or read.
Memory: fp32 weights, gradients and momentum (12 bytes per parameter), the dataset on the device
(float32) and one batch of activations (every module output kept for the backward, fp32).
MFU: fp32 weights with TF32 convolutions on 32x32 images at batch 320, augmentation on the device,
reach far less of the bf16 peak than a large transformer: 0.05 is assumed (about 10k training
images/s on an H100, ~4.5 s per 45k-image epoch).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from harness.api import RunEstimate

MFU = 0.05
#: CIFAR-10/100: training images (after the 10% clean holdout), validation, test.
N_TRAIN, N_VAL, N_TEST = 45_000, 5_000, 10_000
CLASSES = {"cifar10": 10, "cifar100": 100}


@lru_cache(maxsize=None)
def per_image(arch: str, num_classes: int, feature_dim: int, compression: str) -> tuple[float, float, int, float]:
    """(training FLOPs, forward FLOPs, parameters, activation bytes) of one 32x32x3 image."""
    import torch

    from harness.estimate import counted_flops

    from .models import build_model

    with torch.device("meta"):
        net = build_model(arch, 3 * 32 * 32, num_classes, feature_dim, compression,
                          p=0.5 if compression == "dropout" else 0.0, sigma=10.0 if compression == "nested" else 0.0)
        x = torch.zeros(2, 3, 32, 32)
        sizes = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel() if torch.is_tensor(o) else 0))
                 for m in net.modules() if not list(m.children())]
        fwd = counted_flops(lambda: net(x))
        for h in hooks:
            h.remove()
        train = counted_flops(lambda: net(x).sum().backward())
    params = sum(p.numel() for p in net.parameters())
    return train / 2, fwd / 2, params, sum(sizes) / 2 * 4 * 2  # per image; outputs and the inputs they keep


def estimate_run(method, benchmark, config: Mapping[str, Any], arch: str, compression: str) -> RunEstimate:
    classes = CLASSES.get(benchmark.dataset, 10)
    train, fwd, params, act = per_image(arch, classes, int(config["feature_dim"]), compression)
    epochs, batch = int(config["epochs"]), int(config["batch_size"])
    name = method.name
    data = (N_TRAIN + N_VAL + N_TEST) * 3 * 32 * 32 * 4.0
    evals = (N_VAL + N_TEST) * fwd
    if method.select or name == "ensemble":  # reads its trials, or evaluates a pair
        flops = 0.0 if method.select else 2 * evals
        return RunEstimate(flops, 2 * params * 4 + data, data, 0.0, mfu=MFU,
                           note="selection of a sweep (no training)" if method.select else "a pair evaluated")
    if name in ("dropout_coteach", "nested_coteach"):
        epochs = int(config["finetune_epochs"])
    nets = 2 if "coteach" in name else 1
    flops = nets * (epochs * (N_TRAIN * train + N_VAL * fwd) + N_TEST * fwd)
    peak = nets * (params * 12 + batch * act) + data
    return RunEstimate(flops, peak, data, checkpoint_bytes=nets * params * 4 * 3, mfu=MFU,
                       note=f"{arch} ({params / 1e6:.1f}M params) x {nets}, {epochs} epochs of {N_TRAIN} images, "
                            f"{train / 1e9:.2f} GFLOP per training image")
