"""What a run costs before it runs (``Task.estimate``; ``harness plan --scale paper --estimate``).

Epochs: a run stops on its validation rule (patience, LR floor), so its length is not known in
advance; it is counted at the card's expectation (§9: CIFAR ~250 epochs to the stopping rule, PTB
"a few hundred": 300), capped by ``epochs``. FLOPs: the AlexNet's per image by
``torch.utils.flop_counter`` on the meta device (the STN's hypernetwork-modulated layers
included); the LSTM's per token analytically (4 gates x (input + hidden) x hidden x 2 per layer,
the tied 10k-word decoder; the STN's second weight table doubles the recurrent part). Training is
3x a forward; an STN adds its hyper steps on validation batches (``valid_steps`` per
``train_steps``). MFU: a Python time loop over 70 steps at batch 40 is launch-bound (card §9:
~30 s per PTB epoch on an H100, i.e. ~0.3% of the bf16 peak); the AlexNet on 32x32 images in
fp32 with per-example hypernetwork layers and augmentation: 0.02 (card §9: 5-10 s of GPU time per
40k-image epoch).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from harness.api import RunEstimate

EXPECTED_EPOCHS = {"alexnet": 250, "lstm": 300}
MFU = {"alexnet": 0.02, "lstm": 0.003}
#: PTB (Mikolov): training, validation and test words with <eos>.
PTB_TOKENS = (929_589, 73_760, 82_430)
PTB_VOCAB = 10_000
CIFAR = (40_000, 10_000, 10_000)  # the official code's split: 40k train, 10k validation, 10k test


@lru_cache(maxsize=None)
def alexnet_per_image(num_hparams: int, hyper: bool) -> tuple[float, float, int]:
    """(training FLOPs, forward FLOPs, parameters) of one 32x32x3 image."""
    import torch

    from harness.estimate import counted_flops

    from .models import build_model

    with torch.device("meta"):
        net = build_model("alexnet", (3, 32, 32), 10, num_hparams, hyper=hyper)
        x = torch.zeros(2, 3, 32, 32)
        h = torch.zeros(2, num_hparams) if hyper else None
        fwd = counted_flops(lambda: net(x, h))
        train = counted_flops(lambda: net(x, h).sum().backward())
    return train / 2, fwd / 2, sum(p.numel() for p in net.parameters())


def lstm_per_token(emsize: int, nhid: int, nlayers: int, vocab: int, stn: bool) -> tuple[float, int]:
    """(forward FLOPs per token, parameters) of the AWD-LSTM (last layer's width = emsize, tied decoder)."""
    flops, params = 0.0, vocab * emsize
    for layer in range(nlayers):
        inp = emsize if layer == 0 else nhid
        hid = emsize if layer == nlayers - 1 else nhid
        recurrent = 4 * (inp + hid) * hid
        flops += 2 * recurrent * (2 if stn else 1)
        params += recurrent * (2 if stn else 1) + 8 * hid
    return flops + 2 * emsize * vocab, params


def estimate_run(method, benchmark, config: Mapping[str, Any], stn: bool) -> RunEstimate:
    settings = benchmark.settings
    model = settings.get("model")
    if method.select or method.name.endswith("_search"):
        return RunEstimate(0.0, 0.0, 0.0, 0.0, note="selection over trials (no training)")
    if method.name == "ridge_check":
        return RunEstimate(1e12, 1e8, 0.0, 0.0, note="a 2-D ridge regression toy (negligible)")
    epochs = min(int(config["epochs"]), EXPECTED_EPOCHS.get(model, int(config["epochs"])))
    hyper = (float(config.get("valid_steps", 1)) / float(config.get("train_steps", 2))) if stn else 0.0
    if model == "lstm":
        fwd, params = lstm_per_token(int(config["emsize"]), int(config["nhid"]), int(config["nlayers"]), PTB_VOCAB, stn)
        n_train, n_val, n_test = PTB_TOKENS
        flops = epochs * (3 * fwd * n_train * (1 + hyper) + fwd * n_val) + fwd * n_test
        tokens = int(config["batch_size"]) * int(config["bptt"])
        peak = params * 16 + tokens * (int(config["nlayers"]) * 24 * int(config["nhid"]) * 4 + PTB_VOCAB * 12)
        data = sum(PTB_TOKENS) * 8 * 2
    else:
        from .models import hyperparameters

        num_hparams = len(hyperparameters("alexnet", settings, config))  # 8 dropouts, 5 jitters, cutout, holes
        train, fwd, params = alexnet_per_image(num_hparams, stn)
        n_train, n_val, n_test = CIFAR
        flops = epochs * (n_train * train * (1 + hyper) + n_val * fwd) + n_test * fwd
        peak = params * 16 + int(config["batch_size"]) * 4e6 + sum(CIFAR) * 3 * 32 * 32 * 4
        data = sum(CIFAR) * 3 * 32 * 32 * 4.0
    return RunEstimate(flops, peak, data, checkpoint_bytes=params * 4 * 3, mfu=MFU.get(model, 0.05),
                       note=f"{model} ({params / 1e6:.1f}M params{', STN' if stn else ''}), {epochs} epochs expected "
                            "(the stopping rule decides)")
