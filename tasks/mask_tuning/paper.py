"""Paper scale: CLIP ViT-B/16 (OpenAI weights, loaded through ``transformers``) on the 11 CoOp
few-shot datasets (through ``datasets``), and the bill of every run (:func:`estimate_run`).

Nothing here runs at tiny or small scale; tests exercise it with a tiny randomly initialised
``transformers.CLIPConfig`` and tiny local image folders in the same format. A missing weight
file, tokenizer or dataset raises :class:`harness.config.ConfigError` / ``DatasetUnavailable``
naming the fix (an environment variable or hub access); nothing falls back to something else.

* Weights: ``$HARNESS_MASK_TUNING_CLIP`` (a ``from_pretrained`` folder) or the hub id in the
  ``backbone`` hyperparameter (``openai/clip-vit-base-patch16``), converted by
  :func:`convert_hf_clip` into the functional model's names (q, k, v stacked into ``in_proj``).
* Datasets ``mask_tuning_<name>``: ``$HARNESS_<NAME>_SOURCE`` or the hub id below, with splits
  train / test and columns ``image`` and ``label`` (ClassLabel). The builder keeps the label names,
  writes them into the dataset's CoOp template as the class prompts, and adds a ``retention`` split
  (2,000 ImageNet validation images with ImageNet's prompts: zero-shot accuracy on an unrelated
  dataset after tuning, card §7 claim 4).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np
import torch

from . import model as M

CLIP_ENV = "HARNESS_MASK_TUNING_CLIP"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: name -> (hub id, CoOp template, classes, CoOp test-split size)
PAPER_DATASETS: dict[str, tuple[str, str, int, int]] = {
    "imagenet": ("ILSVRC/imagenet-1k", "a photo of a {}.", 1000, 50000),
    "caltech101": ("dpdl-benchmark/caltech101", "a photo of a {}.", 100, 2465),
    "oxford_pets": ("timm/oxford-iiit-pet", "a photo of a {}, a type of pet.", 37, 3669),
    "stanford_cars": ("tanganke/stanford_cars", "a photo of a {}.", 196, 8041),
    "flowers102": ("nelorth/oxford-flowers", "a photo of a {}, a type of flower.", 102, 2463),
    "food101": ("ethz/food101", "a photo of {}, a type of food.", 101, 30300),
    "fgvc_aircraft": ("HuggingFaceM4/FGVC-Aircraft", "a photo of a {}, a type of aircraft.", 100, 3333),
    "sun397": ("tanganke/sun397", "a photo of a {}.", 397, 19850),
    "dtd": ("tanganke/dtd", "{} texture.", 47, 1692),
    "eurosat": ("tanganke/eurosat", "a centered satellite photo of {}.", 10, 8100),
    "ucf101": ("flwrlabs/ucf101", "a photo of a person doing {}.", 101, 3783),
}
RETENTION_SIZE = 2000
#: Few-shot pool kept per class in the built dataset (16 shots + 4 validation shots + slack).
POOL_PER_CLASS = 24


def _env(name: str) -> str:
    return f"HARNESS_{name.upper()}_SOURCE"


def _split(raw, names=("test", "validation")):
    for n in names:
        if n in raw:
            return raw[n]
    raise KeyError(f"none of the splits {names} in {list(raw)}")


def build_paper_dataset(name: str, imagenet=None):
    """train (a per-class pool of :data:`POOL_PER_CLASS` images), test, retention; labels carry the
    CoOp prompts as their names."""
    import datasets

    from harness.data import load_source

    hub, template, _, _ = PAPER_DATASETS[name]
    raw = load_source(name, _env(name), hub, "splits train and test (or validation); columns image (PIL) and label (ClassLabel)")
    train, test = raw["train"], _split(raw)
    labels = np.asarray(train["label"])
    rng = np.random.default_rng(0)
    pool = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:POOL_PER_CLASS]
                                   for c in np.unique(labels)]))
    names = [template.format(n.replace("_", " ")) for n in train.features["label"].names]
    if imagenet is None:
        imagenet = raw if name == "imagenet" else load_source(
            "imagenet", _env("imagenet"), PAPER_DATASETS["imagenet"][0], "splits train and validation; image, label")
    ret = _split(imagenet, ("validation", "test"))
    ret = ret.select(np.sort(np.random.default_rng(1).permutation(len(ret))[:RETENTION_SIZE]))
    r_names = [PAPER_DATASETS["imagenet"][1].format(n) for n in ret.features["label"].names]

    def relabel(ds, prompts):
        return ds.cast_column("label", datasets.ClassLabel(names=prompts)).select_columns(["image", "label"])

    return datasets.DatasetDict({"train": relabel(train.select(pool), names), "test": relabel(test, names),
                                 "retention": relabel(ret, r_names)})


def _paper_builder(name: str):
    def build():
        return build_paper_dataset(name)

    build.__name__ = f"build_{name}"
    return build


PAPER_BUILDERS = {f"mask_tuning_{n}": _paper_builder(n) for n in PAPER_DATASETS}


# -- CLIP weights -----------------------------------------------------------------------------------------

def config_from_hf(hf) -> M.ClipConfig:
    v, t = hf.vision_config, hf.text_config
    if v.hidden_act != t.hidden_act:
        raise ValueError(f"the towers use different activations ({v.hidden_act}, {t.hidden_act})")
    return M.ClipConfig(image_size=v.image_size, patch=v.patch_size, width=v.hidden_size, layers=v.num_hidden_layers,
                        heads=v.num_attention_heads, text_width=t.hidden_size, text_layers=t.num_hidden_layers,
                        text_heads=t.num_attention_heads, context=t.max_position_embeddings, vocab=t.vocab_size,
                        embed=hf.projection_dim, mlp_ratio=v.intermediate_size // v.hidden_size,
                        activation=v.hidden_act, eps=v.layer_norm_eps)


def convert_hf_clip(state: dict[str, torch.Tensor], cfg: M.ClipConfig) -> dict[str, torch.Tensor]:
    """A ``transformers`` CLIPModel state dict -> the functional model's weights."""
    w: dict[str, torch.Tensor] = {}

    def block(src: str, dst: str):
        w[f"{dst}.ln_1.weight"], w[f"{dst}.ln_1.bias"] = state[f"{src}.layer_norm1.weight"], state[f"{src}.layer_norm1.bias"]
        w[f"{dst}.ln_2.weight"], w[f"{dst}.ln_2.bias"] = state[f"{src}.layer_norm2.weight"], state[f"{src}.layer_norm2.bias"]
        a = f"{src}.self_attn"
        w[f"{dst}.attn.in_proj_weight"] = torch.cat([state[f"{a}.{p}_proj.weight"] for p in "qkv"])
        w[f"{dst}.attn.in_proj_bias"] = torch.cat([state[f"{a}.{p}_proj.bias"] for p in "qkv"])
        w[f"{dst}.attn.out_proj.weight"], w[f"{dst}.attn.out_proj.bias"] = state[f"{a}.out_proj.weight"], state[f"{a}.out_proj.bias"]
        w[f"{dst}.mlp.c_fc.weight"], w[f"{dst}.mlp.c_fc.bias"] = state[f"{src}.mlp.fc1.weight"], state[f"{src}.mlp.fc1.bias"]
        w[f"{dst}.mlp.c_proj.weight"], w[f"{dst}.mlp.c_proj.bias"] = state[f"{src}.mlp.fc2.weight"], state[f"{src}.mlp.fc2.bias"]

    e = "vision_model.embeddings"
    w["visual.conv1.weight"] = state[f"{e}.patch_embedding.weight"]
    w["visual.class_embedding"] = state[f"{e}.class_embedding"]
    w["visual.positional_embedding"] = state[f"{e}.position_embedding.weight"]
    w["visual.ln_pre.weight"], w["visual.ln_pre.bias"] = state["vision_model.pre_layrnorm.weight"], state["vision_model.pre_layrnorm.bias"]
    for i in range(cfg.layers):
        block(f"vision_model.encoder.layers.{i}", f"visual.transformer.resblocks.{i}")
    w["visual.ln_post.weight"], w["visual.ln_post.bias"] = state["vision_model.post_layernorm.weight"], state["vision_model.post_layernorm.bias"]
    w["visual.proj"] = state["visual_projection.weight"].T.contiguous()
    w["token_embedding.weight"] = state["text_model.embeddings.token_embedding.weight"]
    w["positional_embedding"] = state["text_model.embeddings.position_embedding.weight"]
    for i in range(cfg.text_layers):
        block(f"text_model.encoder.layers.{i}", f"transformer.resblocks.{i}")
    w["ln_final.weight"], w["ln_final.bias"] = state["text_model.final_layer_norm.weight"], state["text_model.final_layer_norm.bias"]
    w["text_projection"] = state["text_projection.weight"].T.contiguous()
    w["logit_scale"] = state["logit_scale"].reshape(())
    missing = set(M.weight_shapes(cfg)) - set(w)
    if missing:
        raise KeyError(f"conversion left out {sorted(missing)}")
    return {k: v.detach().float().clone() for k, v in w.items()}


def load_clip(backbone: str):
    """(config, weights, tokenize) of a CLIP checkpoint: ``$HARNESS_MASK_TUNING_CLIP`` or ``backbone``
    (a hub id or a folder), through ``transformers``' own ``from_pretrained``."""
    from harness.config import ConfigError

    source = os.environ.get(CLIP_ENV) or backbone
    try:
        from transformers import CLIPModel, CLIPTokenizer

        hf = CLIPModel.from_pretrained(source)
        tok = CLIPTokenizer.from_pretrained(source)
    except Exception as e:  # noqa: BLE001 - offline, missing library or bad path: one clear message
        raise ConfigError(f"could not load CLIP from {source!r} ({type(e).__name__}: {e}). Paper scale needs the "
                          f"OpenAI ViT-B/16 weights and tokenizer: run with access to the Hugging Face hub "
                          f"({backbone}) or set {CLIP_ENV} to a local CLIPModel.from_pretrained folder "
                          "(pip install transformers).") from None
    cfg = config_from_hf(hf.config)
    return cfg, convert_hf_clip(hf.state_dict(), cfg), hf_tokenize(tok, cfg.context)


def hf_tokenize(tok, context: int):
    """A tokenizer in :class:`model.WordTokenizer`'s interface over a ``transformers`` CLIP tokenizer."""
    def tokenize(texts: list[str], prefix_slots: int = 0):
        rows, eos = [], []
        for t in texts:
            ids = tok(t)["input_ids"]  # <bos> ... <eos>
            ids = ids[:1] + [tok.pad_token_id or 0] * prefix_slots + ids[1:]
            ids = ids[:context - 1] + [ids[-1]] if len(ids) > context else ids
            eos.append(len(ids) - 1)
            rows.append(ids + [tok.pad_token_id or 0] * (context - len(ids)))
        return torch.tensor(rows), torch.tensor(eos)

    return tokenize


class LazyImages:
    """PIL images preprocessed on access (CLIP's bicubic resize, centre crop, mean/std): a paper-scale
    test split is never held in memory as one tensor."""

    def __init__(self, images, size: int):
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, slice):
            rows = range(*idx.indices(len(self)))
        else:
            rows = [int(i) for i in torch.as_tensor(idx).reshape(-1)]
        return torch.stack([clip_preprocess(self.images[i], self.size) for i in rows])


def clip_preprocess(image, size: int) -> torch.Tensor:
    from PIL import Image

    im = image.convert("RGB")
    scale = size / min(im.size)
    im = im.resize((max(size, round(im.size[0] * scale)), max(size, round(im.size[1] * scale))), Image.BICUBIC)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    x = torch.from_numpy(np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0)
    return (x.permute(2, 0, 1) - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


def paper_setup(benchmark, hp: dict[str, Any], ctx):
    """The :class:`train.Setup` of a paper-scale run: real CLIP, a CoOp dataset's few-shot split."""
    from harness.data import load_dataset

    from .train import Setup, few_shot_indices

    cfg, weights, tokenize = load_clip(str(hp["backbone"]))
    dev = str(getattr(ctx, "device", "cpu") or "cpu")
    weights = {k: v.to(dev) for k, v in weights.items()}
    dsd = load_dataset(benchmark.dataset)
    settings = dict(benchmark.settings)
    prompts = list(dsd["train"].features["label"].names)
    new = list(settings.get("new_classes") or [])
    tuned = [c for c in range(len(prompts)) if c not in new]
    labels = np.asarray(dsd["train"]["label"])
    tr, va = few_shot_indices(labels, tuned, int(settings["shots"]), min(int(settings["shots"]), int(hp.get("val_shots", 4))),
                              int(ctx.seed), f"{benchmark.dataset}:shots")
    pos = {c: i for i, c in enumerate(tuned)}
    size = int(hp.get("image_size", cfg.image_size))
    imgs = dsd["train"]["image"]
    sel = lambda idx: torch.stack([clip_preprocess(imgs[int(i)], size) for i in idx]).to(dev)
    remap = lambda y: torch.tensor([pos[int(v)] for v in y], dtype=torch.long, device=dev)
    n_test = hp.get("test_size")
    test = dsd["test"] if not n_test else dsd["test"].select(range(int(n_test)))
    ret = dsd["retention"]
    return Setup(cfg, weights, tokenize, lambda x: x, prompts, tuned, new, sel(tr), remap(labels[tr]),
                 sel(va), remap(labels[va]), LazyImages(test["image"], size), torch.tensor(test["label"]),
                 LazyImages(ret["image"], size), torch.tensor(ret["label"]), list(ret.features["label"].names),
                 eval_batch=int(hp.get("eval_batch", 100)))


# -- the bill ---------------------------------------------------------------------------------------------

#: The released setting is fp32 (TF32 on Ampere+): the card's ~400 training images/s on an H100 for
#: R-AMT (~5 forward-equivalents of 35 GFLOPs each) is ~7% of the bf16 dense peak the bill divides by.
MFU = 0.1
VIT_B16 = M.ClipConfig(image_size=224, patch=16, width=768, layers=12, heads=12, text_width=512, text_layers=12,
                       text_heads=8, context=77, vocab=49408, embed=512, activation="quick_gelu")


@functools.lru_cache(maxsize=8)
def image_forward_flops(cfg: M.ClipConfig, batch: int = 1) -> float:
    """FLOPs of one image-tower forward (counted on the meta device, once per config: a paper plan
    costs ~1,500 runs)."""
    from harness.estimate import counted_flops

    w = {k: torch.empty(s, device="meta") for k, s in M.weight_shapes(cfg).items()}
    x = torch.empty(batch, 3, cfg.image_size, cfg.image_size, device="meta")
    return counted_flops(M.encode_image, w, x, cfg) / batch


@functools.lru_cache(maxsize=16)
def train_step_flops(cfg: M.ClipConfig, kind: str) -> float:
    """FLOPs of one training step per image, counted on the meta device from the real step: ``mask``
    (masked forward, CE gradient of the scores), ``gdr`` (the same plus the distillation gradient: two
    backward passes) or ``full`` (forward, gradient of every image-tower tensor). A backward pass
    computes the gradients of the trained tensors only, so it costs less than two forwards."""
    import torch.nn.functional as F

    from harness.estimate import counted_flops

    from .train import kl_loss

    w = {k: torch.zeros(s, device="meta") for k, s in M.weight_shapes(cfg).items() if k.startswith("visual.")}
    x = torch.zeros(1, 3, cfg.image_size, cfg.image_size, device="meta")
    text = torch.zeros(10, cfg.embed, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    if kind == "full":
        params = [w[k].requires_grad_(True) for k in w]
    else:
        scores = M.init_scores(w, M.masked_names(cfg, "attn"))
        params = list(scores.values())

    def step():
        used = w if kind == "full" else M.apply_masks(w, scores)
        logits = F.normalize(M.encode_image(used, x, cfg), dim=-1) @ text.T
        if kind == "gdr":
            torch.autograd.grad(kl_loss(logits, logits.detach()), params, retain_graph=True)
        torch.autograd.grad(F.cross_entropy(logits, y), params)

    return counted_flops(step)


def estimate_run(method, benchmark, config: dict[str, Any], scale: str):
    """Paper-scale cost of one run: the counted training step per image (:func:`train_step_flops`;
    R-AMT also the teacher's forward once per image) x steps x batch x candidates, and every evaluation
    pass (validation per candidate, test and the retention probe)."""
    from harness.api import RunEstimate
    from harness.estimate import adamw_training_bytes

    if scale != "paper" or method.name == "pretrain":
        return None
    cfg = VIT_B16
    name = benchmark.dataset.removeprefix("mask_tuning_")
    _, _, classes, test = PAPER_DATASETS[name]
    shots = int(dict(benchmark.settings).get("shots", 16))
    n_train, n_val = shots * classes, min(shots, int(config.get("val_shots", 4))) * classes
    batch = int(config.get("batch_size", 32))
    steps = config.get("steps") or int(config.get("epochs", 30)) * math.ceil(n_train / batch)
    fwd = image_forward_flops(cfg)
    cands = max(1, len(config.get("candidates") or [{}]))
    evals = test + RETENTION_SIZE + n_val * cands
    n_img = sum(v for k, v in ((k, math.prod(s)) for k, s in M.weight_shapes(cfg).items()) if k.startswith("visual."))
    if method.name in ("amt", "amt_mlp", "full_ft"):
        train = cands * steps * batch * train_step_flops(cfg, "full" if method.name == "full_ft" else "mask")
    elif method.name == "ramt":
        train = cands * (steps * batch * train_step_flops(cfg, "gdr") + n_train * fwd)
    elif method.name in ("coop", "linear_probe", "tip_adapter"):
        train = n_train * fwd  # frozen image features once; the text tower's steps are small beside the evals
    else:
        train = 0.0
    trainable = n_img if method.name in ("full_ft", "amt", "ramt", "amt_mlp") else 0
    act = batch * cfg.tokens * cfg.width * 4 * 40 * cfg.layers  # ~40 stored fp32 values per token, layer and width
    return RunEstimate(flops=train + evals * fwd,
                       peak_memory_bytes=4 * n_img * 2 + adamw_training_bytes(trainable) + act,
                       data_bytes=110_000 * (POOL_PER_CLASS * classes + test + RETENTION_SIZE),
                       checkpoint_bytes=trainable / 8 if method.name != "full_ft" else 4 * trainable,
                       mfu=MFU,
                       note=f"ViT-B/16 image tower, {fwd / 1e9:.1f} GFLOPs per image forward; {n_train} training images, "
                            f"{steps} steps x {cands} candidate(s); {test} test + {RETENTION_SIZE} retention images")
