"""Fixtures for the mask_tuning tests: single-threaded torch (2 shared cores), a tiny dual
encoder, and a tiny few-shot Setup built from the generator (no dataset on disk)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cfg():
    from tasks.mask_tuning import data as D
    from tasks.mask_tuning import model as M

    return M.ClipConfig(width=16, layers=2, heads=2, text_width=16, text_layers=1, text_heads=2, embed=16,
                        vocab=3 + len(D.vocabulary()))


@pytest.fixture(scope="session")
def tiny_weights(tiny_cfg):
    from tasks.mask_tuning import model as M

    return M.init_weights(tiny_cfg, torch.Generator().manual_seed(0))


@pytest.fixture
def tiny_setup(tiny_cfg, tiny_weights):
    """Base-to-new on 4 + 4 shapes, 2 shots, from the generator."""
    from tasks.mask_tuning import data as D
    from tasks.mask_tuning import model as M
    from tasks.mask_tuning.run import prep
    from tasks.mask_tuning.train import Setup, few_shot_indices

    sp = D.downstream_splits("base2new", 7, pool_per_class=6, test_size=64, retention_size=32)
    _, prompts, _ = D.task_classes("base2new")
    _, r_prompts = D.retention_classes()
    tuned, new = [0, 1, 2, 3], [4, 5, 6, 7]
    tr, va = few_shot_indices(sp["train"][1], tuned, 2, 2, 0, "t")
    x, y = sp["train"]
    return Setup(tiny_cfg, tiny_weights, M.WordTokenizer(D.vocabulary(), tiny_cfg.context), prep, prompts, tuned, new,
                 prep(x[tr]), torch.from_numpy(y[tr]), prep(x[va]), torch.from_numpy(y[va]),
                 prep(sp["test"][0]), torch.from_numpy(sp["test"][1]),
                 prep(sp["retention"][0]), torch.from_numpy(sp["retention"][1]), r_prompts)
