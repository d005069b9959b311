"""What a run costs before it runs (``Task.estimate``; ``harness plan --scale paper --estimate``).

FLOPs are counted analytically from the model and checked against ``torch.utils.flop_counter``
(tests/tasks/cmim/test_cmim_paper.py, benchmarks/paper_steps.py):

* images (``medmnist``): the card's MLP 784 -> 512 -> 256 -> 2 x latent and latent -> 256 -> 512 ->
  784; a training example is 3x its forward, 2x for the first encoder layer (the pixels need no
  gradient). InfoNCE encodes the two augmented views too and projects them (latent -> 128 -> 64).
* molecules (``moleculenet``): the MolMIM-style Perceiver (one token-level encoder layer over L
  tokens, one learned query cross-attending to them, ``enc_layers`` layers over that query) and a
  causal Transformer decoder of ``dec_layers`` layers over L tokens with z as its one memory slot,
  the character head; training is 3x the forward. Every batch is padded to its longest SMILES, so
  L is the expected maximum of B lengths (ZINC SMILES ~``SMILES_TOKENS`` +- ``SMILES_SD`` characters
  with <eos>: mean + sd x sqrt(2 ln B)), capped at ``max_len`` + 1.
* the contrastive terms add the B x B similarity matrix (6 B^2 x width per step);
* evaluation: the training and test sets (images) or the probe molecules embedded once (encoder
  plus the decoder's hidden states at mu) and the test reconstruction; the probes themselves
  (kNN, logistic regression, ridge, SVR) run on the CPU in scikit-learn and are not counted.

Time: the models train in fp32 (no autocast, no TF32: the CUDA cores' 67 TFLOP/s on an H100 are
6.8% of its bf16 peak), so the counted FLOPs run at ``MFU_COMPUTE``; at batch 16 a step is
launch-bound (the Perceiver's ~40 modules forward and backward and Adam: ``STEP_SECONDS``). A
run's time is ``steps x STEP_SECONDS + FLOPs / (peak x MFU_COMPUTE)`` and its MFU the counted FLOPs
over that time at the H100's bf16 peak. Memory: weights, gradients and Adam's two moments (16 bytes
per parameter), plus one batch of fp32 activations (``ACT_FLOATS`` per token and layer, measured
from the tensors autograd saves). Disk: the dataset (float32 pixels; ZINC SMILES as text) and the
last resumable checkpoint (weights and Adam moments), which a run writes every
``checkpoint_every`` epochs before its last.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from harness.api import RunEstimate
from harness.estimate import adamw_training_bytes, checkpoint_bytes

#: fp32 matmuls on CUDA cores (TF32 off): ~60% of an H100's 67 TFLOP/s fp32, as a fraction of its bf16 peak.
MFU_COMPUTE = 0.04
#: Seconds of one eager training step when launch-bound (forward, backward, Adam).
STEP_SECONDS = {"image": 1e-3, "molecule": 6e-3}
#: MedMNIST 2-D at 28x28: PathMNIST's train and test splits (the largest of the card's three).
MEDMNIST = (89_996, 7_180)
#: ZINC-15 SMILES characters per molecule with <eos> (mean, sd); the character vocabulary.
SMILES_TOKENS, SMILES_SD, SMILES_VOCAB = 50.0, 12.0, 48
#: MoleculeNet probe molecules: ESOL, FreeSolv, Lipophilicity.
PROBE_MOLECULES = 1_128 + 642 + 4_200
#: Bytes per ZINC SMILES on disk (characters + Arrow offsets).
SMILES_BYTES = 56
#: fp32 activations autograd keeps per token and Transformer layer, in units of d_model (9 d) and
#: d_ff (2 f): 34.8 kB at 512 / 2048 against 33.6 kB measured (saved-tensor hooks, CPU).
ACT_FLOATS = (9, 2)
PROJ_HIDDEN, PROJ_DIM = 128, 64


# -- images: the MLP auto-encoder -----------------------------------------------------------------

def image_layers(in_dim: int, latent: int, hidden: tuple[int, int]) -> dict[str, list[tuple[int, int]]]:
    h1, h2 = hidden
    return {"enc": [(in_dim, h1), (h1, h2), (h2, 2 * latent)], "dec": [(latent, h2), (h2, h1), (h1, in_dim)],
            "head": [(latent, PROJ_HIDDEN), (PROJ_HIDDEN, PROJ_DIM)]}


def image_params(in_dim: int, latent: int, hidden: tuple[int, int]) -> int:
    return sum(a * b + b for layers in image_layers(in_dim, latent, hidden).values() for a, b in layers)


def image_flops(method: str, in_dim: int, latent: int, hidden: tuple[int, int], batch: int) -> tuple[float, float]:
    """(training FLOPs of one step of ``batch`` images, forward FLOPs of embedding + reconstructing one)."""
    lay = image_layers(in_dim, latent, hidden)
    fwd = {k: sum(2.0 * a * b for a, b in v) for k, v in lay.items()}
    first = 2.0 * lay["enc"][0][0] * lay["enc"][0][1]
    enc_train = 3 * fwd["enc"] - first  # the pixels need no gradient: no input gradient for layer one
    per_image = enc_train + 3 * fwd["dec"]
    if method == "infonce":
        per_image += 2 * (enc_train + 3 * fwd["head"])
    step = batch * per_image + contrastive_flops(method, batch, latent, PROJ_DIM)
    last = 2.0 * lay["dec"][-1][0] * lay["dec"][-1][1]
    return step, fwd["enc"] + fwd["dec"] - last  # embedding: mu and the decoder's hidden states


def contrastive_flops(method: str, batch: int, latent: int, proj: int) -> float:
    """The B x B cosine-similarity matmul, forward and backward."""
    if method in ("cmim", "cmim_sum", "cvae"):
        return 6.0 * batch * batch * latent
    if method == "infonce":
        return 6.0 * batch * batch * proj
    return 0.0


# -- molecules: the Perceiver encoder and Transformer decoder --------------------------------------

def padded_tokens(batch: int, max_len: int) -> float:
    """Expected length of a batch padded to its longest SMILES (+ <eos>), capped at max_len + 1."""
    return min(max_len + 1.0, SMILES_TOKENS + SMILES_SD * math.sqrt(2 * math.log(max(batch, 2))))


def perceiver_forward(L: float, d: int, f: int, latent: int, enc_layers: int, dec_layers: int, vocab: int,
                      parts: str = "all") -> float:
    """Forward FLOPs of one sequence of L tokens: ``encode`` + ``decode`` + the head (``parts``:
    all | encode | decode, the decoder's hidden states without the head)."""
    layer = L * (8 * d * d + 4 * d * f) + 4 * L * L * d  # self-attention (q, k, v, out) + FFN
    encode = (layer + 4 * d * d + 4 * L * d * d + 4 * L * d  # the token layer; one query cross-attends
              + enc_layers * (8 * d * d + 4 * d * f + 4 * d) + 4 * d * latent)  # layers over the query; to (mu, log s)
    decode = 2 * latent * d + dec_layers * (layer + 4 * L * d * d + 4 * d * d + 4 * L * d)  # + cross to one slot
    head = 2 * L * d * vocab
    return {"all": encode + decode + head, "encode": encode, "decode": decode}[parts]


def perceiver_params(d: int, f: int, latent: int, enc_layers: int, dec_layers: int, vocab: int, max_len: int) -> int:
    attn = 4 * d * d + 4 * d
    enc_layer = attn + 2 * d * f + d + f + 4 * d  # + two LayerNorms
    dec_layer = 2 * attn + 2 * d * f + d + f + 6 * d
    return (vocab * d + (max_len + 2) * d + enc_layer + d + attn + enc_layers * enc_layer
            + d * 2 * latent + 2 * latent + latent * d + d + dec_layers * dec_layer + 2 * d + d * vocab + vocab
            + latent * d + d + d * 128 + 128)


def molecule_step_flops(method: str, batch: int, L: float, d: int, f: int, latent: int, enc_layers: int,
                        dec_layers: int, vocab: int) -> float:
    fwd = perceiver_forward(L, d, f, latent, enc_layers, dec_layers, vocab)
    per = 3 * fwd
    if method == "infonce":  # two more encodings (the randomised SMILES views) and the projection head
        per += 3 * (2 * perceiver_forward(L, d, f, latent, enc_layers, dec_layers, vocab, "encode")
                    + 2 * 2.0 * (latent * d + d * 128))
    return batch * per + contrastive_flops(method, batch, latent, 128)


def molecule_activation_bytes(objective: str, batch: int, L: float, d: int, f: int, dec_layers: int,
                              vocab: int) -> float:
    """fp32 activations of one training step: the token layer and the decoder's layers over L tokens
    (InfoNCE: the two views' token layers too), and the logits with their softmax and gradient."""
    layers = 1 + dec_layers + (2 if objective == "infonce" else 0)
    return batch * L * (4.0 * (ACT_FLOATS[0] * d + ACT_FLOATS[1] * f) * layers + 3 * 4.0 * vocab)


# -- one run --------------------------------------------------------------------------------------

def estimate_run(objective: str, config: Mapping[str, Any], dataset: str, settings: Mapping[str, Any],
                 gpu_flops: float) -> RunEstimate | None:
    """``objective``: the loss a method trains (run.OBJECTIVE_OF); None off the paper datasets."""
    hp = dict(config)
    kind = settings.get("kind", "image")
    batch, epochs = int(hp["batch_size"]), int(hp["epochs"])
    latent = int(hp.get("latent", 16))
    if kind == "image" and dataset == "cmim_medmnist":
        n_train, n_test = MEDMNIST
        hidden = tuple(hp.get("hidden", (512, 256)))
        step, embed = image_flops(objective, 784, latent, hidden, batch)
        steps = epochs * (n_train // batch)
        decoder_last = 2.0 * hidden[0] * 784
        flops = steps * step + (n_train + n_test) * embed + n_test * (decoder_last + 2.0 * latent * hidden[1]
                                                                      + 2.0 * hidden[1] * hidden[0])
        params = image_params(784, latent, hidden)
        act = batch * 4.0 * (3 * 784 + 4 * sum(hidden) + 6 * latent) * (3 if objective == "infonce" else 1)
        data = (n_train + n_test) * (784 * 4 + 8)
        note = f"MLP auto-encoder ({params / 1e6:.2f}M params), {epochs} epochs x {n_train:,} images at batch {batch}"
    elif kind == "molecule" and settings.get("pretrain_dataset") == "cmim_zinc15":
        d, f = int(hp.get("d_model", 512)), int(hp.get("ffn", 2048))
        enc, dec, max_len = int(hp.get("enc_layers", 6)), int(hp.get("dec_layers", 6)), int(hp.get("max_len", 128))
        n_pre = int(hp.get("max_pretrain") or 10_000_000)
        L = padded_tokens(batch, max_len)
        steps = epochs * (n_pre // batch)
        step = molecule_step_flops(objective, batch, L, d, f, latent, enc, dec, SMILES_VOCAB)
        Lp = padded_tokens(512, max_len)  # evaluation chunks of 512 molecules
        embed = (perceiver_forward(Lp, d, f, latent, enc, dec, SMILES_VOCAB, "encode")
                 + 2 * perceiver_forward(Lp, d, f, latent, enc, dec, SMILES_VOCAB, "decode")
                 + 2 * Lp * d * SMILES_VOCAB)  # mu, the decoder's states, the reconstruction's logits
        flops = steps * step + PROBE_MOLECULES * embed
        params = perceiver_params(d, f, latent, enc, dec, SMILES_VOCAB, max_len)
        act = molecule_activation_bytes(objective, batch, L, d, f, dec, SMILES_VOCAB)
        data = n_pre * SMILES_BYTES * (1 + int(hp.get("n_random", 4)))  # the SMILES and their enumerations
        note = (f"Perceiver {enc}+1 / {dec} layers x {d} ({params / 1e6:.1f}M params), {n_pre / 1e6:.0f}M ZINC "
                f"SMILES x {epochs} epoch at batch {batch}, ~{L:.0f} tokens padded")
    else:
        return None
    every = int(hp.get("checkpoint_every", 0) or 0)
    ckpt = checkpoint_bytes(params) if every and epochs > every else 0.0
    seconds = steps * STEP_SECONDS[kind] + flops / (gpu_flops * MFU_COMPUTE)
    return RunEstimate(flops=flops, peak_memory_bytes=adamw_training_bytes(params) + act, data_bytes=data,
                       checkpoint_bytes=ckpt, mfu=flops / (gpu_flops * seconds),
                       note=f"{note}; {steps:,} steps, ~{seconds / 3600:.2f} h")
