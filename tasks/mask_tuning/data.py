"""The procedural image-caption world (card §9) and the task's datasets.

Each image is 16x16 RGB: one shape on a background. Factors: 8 shapes, 8 colours, 2 sizes, 9
positions. A caption follows the card's grammar ``a {size} {colour} {shape} at the {position}``;
in pre-training each optional factor (size, colour, position) is left out of the caption with
probability ``CAPTION_DROP`` (the shape never), so that short class prompts such as ``a circle`` or
``a red circle`` are sentences the text tower has seen (a difference from the card, README).

Renderings:

* ``clean`` (the pre-training distribution): a solid shape on a plain dark background, upright.
* ``shift`` (T1, T3: domain shift): a noisy textured background and colour inversion of the
  whole image with probability 1/2.
* ``mild`` (T2): rotation and textured background, no inversion (colour is part of the label).
* ``full``: the card's list (outline-only strokes, rotation, texture, inversion). Not used: how
  the shift was chosen, on validation images only, is in README.md (with all four the pre-trained
  model is at chance; with rotation no method, full fine-tuning included, learns from 16 shots).

Everything is deterministic from a seed (:func:`render`, :func:`sample_factors`), sub-pixel
supersampled (4x4 per pixel) and stored as uint8.

Datasets (small and tiny scale share them; built once by DVC):

* ``mask_tuning_pretrain``: ``train`` 20,000 clean pairs that never show the 8 held-out
  shape x colour combinations (:data:`HELDOUT`), ``val`` 1,000 clean pairs of the same
  distribution (monitoring only).
* ``mask_tuning_pretrain_tiny``: the same with 2,000 + 200 pairs (tiny scale).
* ``mask_tuning_shift`` (T1): 8-way shape classification under the domain shift, prompts
  ``a {shape}``.
* ``mask_tuning_heldout`` (T2): 16-way shape x colour classification, ``mild`` rendering: each
  shape with its held-out colour and with one seen colour, prompts ``a {colour} {shape}``.
* ``mask_tuning_base2new`` (T3): the 8 shapes under the domain shift; classes 0-3 are the base
  classes tuned on, 4-7 the new classes only evaluated.

Each downstream dataset has splits ``train`` (a pool of :data:`POOL_PER_CLASS` images per class
from which a run draws its k shots and its validation shots, disjointly), ``test`` and
``retention`` (clean pre-training-distribution images labelled by shape x colour among all 64
combinations: the retention probe). The class prompts are the names of the ``label`` ClassLabel.

Paper scale reads the 11 CoOp few-shot datasets instead (:mod:`.paper`).
"""

from __future__ import annotations

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "bar", "star")
COLOURS = {
    "red": (1.0, 0.1, 0.1), "green": (0.1, 0.8, 0.1), "blue": (0.2, 0.35, 1.0), "yellow": (1.0, 0.95, 0.1),
    "magenta": (1.0, 0.1, 1.0), "cyan": (0.1, 0.95, 0.95), "white": (1.0, 1.0, 1.0), "orange": (1.0, 0.55, 0.05),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = {"small": 3.2, "large": 5.2}  # radius in pixels
POSITIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")
CELL = (4.5, 8.0, 11.5)  # pixel centres of the 3x3 position grid
IMAGE = 16
SUPER = 4
#: The 8 shape x colour combinations pre-training never shows: shape i with colour i+3 (mod 8).
HELDOUT = tuple((s, (s + 3) % 8) for s in range(8))
#: T2's seen twin of each held-out combination: shape i with colour i+4 (mod 8).
SEEN_TWIN = tuple((s, (s + 4) % 8) for s in range(8))
CAPTION_DROP = 0.3
POOL_PER_CLASS = 24
PRETRAIN_SIZE = 20_000
PRETRAIN_VAL = 1_000
TEST_SIZE = 1_000
RETENTION_SIZE = 1_000
BASE_CLASSES = (0, 1, 2, 3)
NEW_CLASSES = (4, 5, 6, 7)


# -- shapes -------------------------------------------------------------------------------------

def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of local coordinates (u right, v down, in units of the radius) in ``shape``."""
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= 0.8
    if shape == "triangle":  # pointing up
        return (v <= 0.75) & (v >= -1.0 + 1.75 * au)
    if shape == "diamond":
        return au + av <= 1.0
    if shape == "cross":
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.5 ** 2)
    if shape == "bar":
        return (au <= 1.0) & (av <= 0.3)
    if shape == "star":
        rho, theta = np.sqrt(u * u + v * v), np.arctan2(v, u)
        return rho <= 0.6 + 0.4 * np.cos(5 * theta + np.pi / 2)
    raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")


def caption(shape: int, colour: int, size: int, position: int, keep=(True, True, True)) -> str:
    """The card's grammar; ``keep`` says which of (size, colour, position) are written."""
    words = ["a"]
    if keep[0]:
        words.append(tuple(SIZES)[size])
    if keep[1]:
        words.append(COLOUR_NAMES[colour])
    words.append(SHAPES[shape])
    if keep[2]:
        words += ["at", "the", POSITIONS[position]]
    return " ".join(words)


def vocabulary() -> list[str]:
    """Every word the grammar can write (sorted), the text tower's vocabulary at small scale."""
    words = {"a", "at", "the"} | set(SIZES) | set(COLOUR_NAMES) | set(SHAPES)
    for p in POSITIONS:
        words |= set(p.split())
    return sorted(words)


# -- rendering ------------------------------------------------------------------------------------

def sample_factors(n: int, rng: np.random.Generator, combos=None, exclude=()) -> dict[str, np.ndarray]:
    """n draws of (shape, colour, size, position) uniform over ``combos`` (shape, colour pairs;
    default all 64) minus ``exclude``."""
    pairs = [(s, c) for s in range(8) for c in range(8)] if combos is None else list(combos)
    pairs = [p for p in pairs if p not in set(exclude)]
    pick = rng.integers(0, len(pairs), size=n)
    arr = np.array(pairs, dtype=np.int64)[pick]
    return {"shape": arr[:, 0], "colour": arr[:, 1], "size": rng.integers(0, 2, size=n),
            "position": rng.integers(0, 9, size=n)}


#: Rendering styles -> the shift components they apply.
STYLES = {
    "clean": frozenset(),
    "shift": frozenset({"texture", "invert"}),
    "mild": frozenset({"rotate", "texture"}),
    "full": frozenset({"outline", "rotate", "texture", "invert"}),
}


def render(f: dict[str, np.ndarray], style: str, rng: np.random.Generator) -> np.ndarray:
    """Images (n, 3, 16, 16) uint8 for factors ``f`` in rendering ``style`` (:data:`STYLES`, or a
    '+'-joined list of components: outline, rotate, texture, invert)."""
    parts = STYLES.get(style, frozenset(style.split("+")))
    if not parts <= STYLES["full"]:
        raise ValueError(f"style {style!r}: use {', '.join(STYLES)} or components joined by '+' (outline, rotate, texture, invert)")
    n = len(f["shape"])
    s = IMAGE * SUPER
    grid = (np.arange(s) + 0.5) / SUPER  # sub-pixel centres in pixel units
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    radius = np.array(list(SIZES.values()))[f["size"]]
    cx = np.array(CELL)[f["position"] % 3] + rng.uniform(-0.5, 0.5, n)
    cy = np.array(CELL)[f["position"] // 3] + rng.uniform(-0.5, 0.5, n)
    angle = rng.uniform(0, 2 * np.pi, n) if "rotate" in parts else np.zeros(n)
    invert = rng.random(n) < 0.5 if "invert" in parts else np.zeros(n, bool)
    # background
    if "texture" not in parts:
        bg = rng.uniform(0.02, 0.15, (n, 1, 1, 1)) + 0.02 * rng.standard_normal((n, 3, IMAGE, IMAGE))
    else:
        yy, xx = np.meshgrid(np.arange(IMAGE), np.arange(IMAGE), indexing="ij")
        freq = rng.uniform(0.4, 1.4, (n, 1, 1))
        phi = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        theta = rng.uniform(0, np.pi, (n, 1, 1))
        stripes = np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phi)  # (n, 16, 16)
        tint = rng.uniform(0.0, 1.0, (n, 3, 1, 1))
        bg = (rng.uniform(0.05, 0.3, (n, 1, 1, 1)) + 0.15 * tint * stripes[:, None]
              + 0.08 * rng.standard_normal((n, 3, IMAGE, IMAGE)))
    cover = np.zeros((n, s, s))
    for k in range(n):
        du, dv = (gx - cx[k]) / radius[k], (gy - cy[k]) / radius[k]
        ca, sa = np.cos(angle[k]), np.sin(angle[k])
        u, v = ca * du + sa * dv, -sa * du + ca * dv
        name = SHAPES[f["shape"][k]]
        m = inside(name, u, v)
        if "outline" in parts:  # outline only: the shape minus the shape shrunk by 1.3 px
            shrink = max(radius[k] - 1.3, 0.5) / radius[k]
            m = m & ~inside(name, u / shrink, v / shrink)
        cover[k] = m
    cover = cover.reshape(n, IMAGE, SUPER, IMAGE, SUPER).mean((2, 4))[:, None]  # (n, 1, 16, 16)
    colour = np.array(list(COLOURS.values()))[f["colour"]][:, :, None, None]  # (n, 3, 1, 1)
    img = np.clip(bg * (1 - cover) + colour * cover, 0, 1)
    img[invert] = 1.0 - img[invert]
    return np.round(img * 255).astype(np.uint8)


def pretrain_pairs(n: int, seed: int) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """n clean image-caption pairs without the held-out combinations (and their factors)."""
    rng = np.random.default_rng(seed)
    f = sample_factors(n, rng, exclude=HELDOUT)
    images = render(f, "clean", rng)
    keep = rng.random((n, 3)) >= CAPTION_DROP
    caps = [caption(f["shape"][i], f["colour"][i], f["size"][i], f["position"][i], tuple(keep[i])) for i in range(n)]
    return images, caps, f


# -- downstream tasks ------------------------------------------------------------------------------

def task_classes(kind: str) -> tuple[list[tuple[int, int | None]], list[str], str]:
    """(classes as (shape, colour or None), prompts, rendering style) of a downstream task."""
    if kind in ("shift", "base2new"):
        return [(s, None) for s in range(8)], [f"a {SHAPES[s]}" for s in range(8)], "shift"
    if kind == "heldout":
        classes = [p for pair in zip(HELDOUT, SEEN_TWIN) for p in pair]
        return classes, [f"a {COLOUR_NAMES[c]} {SHAPES[s]}" for s, c in classes], "mild"
    raise ValueError(f"unknown downstream task {kind!r}: use shift, heldout or base2new")


def retention_classes() -> tuple[list[tuple[int, int]], list[str]]:
    """The retention probe's 64 classes (every shape x colour) and their prompts."""
    classes = [(s, c) for s in range(8) for c in range(8)]
    return classes, [f"a {COLOUR_NAMES[c]} {SHAPES[s]}" for s, c in classes]


def labelled(kind: str, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images of the given class labels of downstream task ``kind``."""
    classes, _, style = task_classes(kind)
    shape = np.array([classes[y][0] for y in labels], dtype=np.int64)
    colour = np.array([classes[y][1] if classes[y][1] is not None else -1 for y in labels], dtype=np.int64)
    free = colour < 0
    colour[free] = rng.integers(0, 8, size=int(free.sum()))
    f = {"shape": shape, "colour": colour, "size": rng.integers(0, 2, len(labels)),
         "position": rng.integers(0, 9, len(labels))}
    return render(f, style, rng)


def downstream_splits(kind: str, seed: int, pool_per_class: int = POOL_PER_CLASS, test_size: int = TEST_SIZE,
                      retention_size: int = RETENTION_SIZE) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images uint8 (n, 3, 16, 16), labels)} for train (pool), test and retention."""
    rng = np.random.default_rng(seed)
    classes, _, _ = task_classes(kind)
    y_pool = np.repeat(np.arange(len(classes)), pool_per_class)
    y_test = rng.integers(0, len(classes), size=test_size)
    out = {"train": (labelled(kind, y_pool, rng), y_pool), "test": (labelled(kind, y_test, rng), y_test)}
    fr = sample_factors(retention_size, rng)
    out["retention"] = (render(fr, "clean", rng), fr["shape"] * 8 + fr["colour"])  # = index of (s, c) in retention_classes()
    return out


# -- DatasetDicts ----------------------------------------------------------------------------------

#: Fixed build seeds: the datasets are the same bytes on every machine.
BUILD_SEEDS = {"pretrain": 1001, "shift": 2002, "heldout": 3003, "base2new": 4004}


def _image_features(names: list[str]):
    import datasets

    return datasets.Features({
        "image": datasets.Array3D(shape=(3, IMAGE, IMAGE), dtype="uint8"),
        "label": datasets.ClassLabel(names=names),
    })


def build_pretrain(n: int = PRETRAIN_SIZE, n_val: int = PRETRAIN_VAL):
    import datasets

    feats = datasets.Features({"image": datasets.Array3D(shape=(3, IMAGE, IMAGE), dtype="uint8"),
                               "caption": datasets.Value("string"),
                               "shape": datasets.Value("int64"), "colour": datasets.Value("int64")})
    out = {}
    for split, size, seed in (("train", n, BUILD_SEEDS["pretrain"]), ("val", n_val, BUILD_SEEDS["pretrain"] + 1)):
        images, caps, f = pretrain_pairs(size, seed)
        out[split] = datasets.Dataset.from_dict({"image": images, "caption": caps, "shape": f["shape"],
                                                 "colour": f["colour"]}, features=feats)
    return datasets.DatasetDict(out)


def build_downstream(kind: str, **sizes):
    import datasets

    _, prompts, _ = task_classes(kind)
    _, r_prompts = retention_classes()
    splits = downstream_splits(kind, BUILD_SEEDS[kind], **sizes)
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"image": x, "label": y.tolist()},
                                          features=_image_features(r_prompts if split == "retention" else prompts))
        for split, (x, y) in splits.items()})


def _downstream_builder(kind: str):
    def build():
        return build_downstream(kind)

    build.__name__ = f"build_{kind}"
    return build


def build_pretrain_tiny():
    """2,000 + 200 pairs of the same distribution (the tiny scale's pipeline check)."""
    return build_pretrain(2000, 200)


BUILDERS = {
    "mask_tuning_pretrain": build_pretrain,
    "mask_tuning_pretrain_tiny": build_pretrain_tiny,
    **{f"mask_tuning_{k}": _downstream_builder(k) for k in ("shift", "heldout", "base2new")},
}


def load_arrays(name: str) -> dict[str, dict]:
    """{split: {"x": uint8 (n, 3, H, W), "y"/"caption": ..., "names": class prompts}} of a built dataset."""
    import json

    import pyarrow as pa

    from harness.data import MANIFEST, dataset_folder, load_dataset, verified_hash

    folder = dataset_folder(name)
    if not (folder / MANIFEST).exists():
        load_dataset(name)  # raises the harness's message naming the fix
    verified_hash(name)  # the Arrow files still hash to the manifest
    out: dict[str, dict] = {}
    # The Arrow files save_to_disk wrote, read with pyarrow: importing `datasets` costs ~2 s a run.
    for split in json.loads((folder / "dataset_dict.json").read_text())["splits"]:
        files = sorted((folder / split).glob("*.arrow"))
        table = pa.concat_tables([pa.ipc.open_stream(pa.memory_map(str(f))).read_all() for f in files])
        features = json.loads((folder / split / "dataset_info.json").read_text())["features"]
        entry: dict = {"x": _image_column(table)}
        if "label" in table.column_names:
            entry["y"] = np.array(table.column("label"), dtype=np.int64)
            entry["names"] = list(features["label"]["names"])
        if "caption" in table.column_names:
            entry["caption"] = table.column("caption").to_pylist()
            entry["shape"] = np.array(table.column("shape"), dtype=np.int64)
            entry["colour"] = np.array(table.column("colour"), dtype=np.int64)
        out[split] = entry
    return out


def _image_column(table) -> np.ndarray:
    """The ``image`` column (Array3D) as one uint8 array, through Arrow's buffers (the row-wise
    conversion costs ~40 s for the 20,000 pre-training images)."""
    import pyarrow as pa

    col = table.column("image").combine_chunks()
    col = getattr(col, "storage", col)
    while pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        col = col.flatten()
    return np.asarray(col, dtype=np.uint8).reshape(table.num_rows, 3, IMAGE, IMAGE).copy()
