"""The procedural generator: determinism from a seed, the caption grammar, the held-out
combinations, the downstream tasks' classes and splits."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.mask_tuning import data as D


def test_generator_is_deterministic_from_its_seed():
    x1, c1, f1 = D.pretrain_pairs(64, 5)
    x2, c2, f2 = D.pretrain_pairs(64, 5)
    x3, c3, _ = D.pretrain_pairs(64, 6)
    assert np.array_equal(x1, x2) and c1 == c2 and all(np.array_equal(f1[k], f2[k]) for k in f1)
    assert not np.array_equal(x1, x3) and c1 != c3
    a = D.downstream_splits("shift", 3, pool_per_class=2, test_size=16, retention_size=8)
    b = D.downstream_splits("shift", 3, pool_per_class=2, test_size=16, retention_size=8)
    assert all(np.array_equal(a[s][i], b[s][i]) for s in a for i in (0, 1))


def test_pretraining_never_shows_held_out_combinations():
    _, caps, f = D.pretrain_pairs(3000, 0)
    seen = set(zip(f["shape"].tolist(), f["colour"].tolist()))
    assert not seen & set(D.HELDOUT)
    assert len(seen) == 64 - 8  # every other combination appears
    for cap, s, c in zip(caps[:200], f["shape"], f["colour"]):
        words = cap.split()
        assert words[0] == "a" and D.SHAPES[s] in words
        assert D.COLOUR_NAMES[c] in words or not any(w in D.COLOURS for w in words)


def test_caption_grammar():
    assert D.caption(0, 0, 1, 8) == "a large red circle at the bottom right"
    assert D.caption(7, 5, 0, 4, keep=(False, True, False)) == "a cyan star"
    assert set(" ".join(D.caption(s, c, z, p) for s in range(8) for c in range(8) for z in range(2)
                        for p in range(9)).split()) == set(D.vocabulary())


def test_render_clean_draws_the_colour_on_a_dark_background():
    f = {"shape": np.array([1]), "colour": np.array([0]), "size": np.array([1]), "position": np.array([4])}
    img = D.render(f, "clean", np.random.default_rng(0))[0].astype(float) / 255  # a large red square, centre
    centre, corner = img[:, 7:9, 7:9].mean((1, 2)), img[:, 0:2, 0:2].mean((1, 2))
    assert centre == pytest.approx(D.COLOURS["red"], abs=0.05)
    assert corner.max() < 0.25
    inv = D.render(f, "invert", np.random.default_rng(3))  # inverted with probability 1/2
    assert inv.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="style"):
        D.render(f, "sideways", np.random.default_rng(0))


def test_downstream_tasks():
    classes, prompts, style = D.task_classes("heldout")
    assert len(classes) == 16 and style == "mild"
    assert set(classes) == set(D.HELDOUT) | set(D.SEEN_TWIN)
    assert prompts[0] == f"a {D.COLOUR_NAMES[D.HELDOUT[0][1]]} {D.SHAPES[0]}"
    sp = D.downstream_splits("base2new", 1, pool_per_class=3, test_size=40, retention_size=20)
    assert sp["train"][1].tolist() == [c for c in range(8) for _ in range(3)]
    assert sp["retention"][1].max() < 64 and sp["test"][0].dtype == np.uint8
    _, r_prompts = D.retention_classes()
    assert r_prompts[3 * 8 + 2] == "a blue diamond"  # label = shape * 8 + colour


def test_load_arrays_reads_back_a_built_dataset(tmp_path, monkeypatch):
    """Built by the harness (what the DVC stage runs), read back through pyarrow: the same bytes."""
    from harness.data import build

    monkeypatch.setitem(D.BUILDERS, "mask_tuning_heldout",
                        lambda: D.build_downstream("heldout", pool_per_class=2, test_size=5, retention_size=3))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    build("mask_tuning_heldout", tmp_path)
    a = D.load_arrays("mask_tuning_heldout")
    ref = D.downstream_splits("heldout", D.BUILD_SEEDS["heldout"], pool_per_class=2, test_size=5, retention_size=3)
    assert np.array_equal(a["train"]["x"], ref["train"][0]) and a["train"]["y"].tolist() == ref["train"][1].tolist()
    assert np.array_equal(a["retention"]["x"], ref["retention"][0])
    assert a["train"]["names"] == D.task_classes("heldout")[1] and len(a["retention"]["names"]) == 64
