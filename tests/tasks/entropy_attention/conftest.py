"""Fixtures for the entropy_attention tests: single-threaded torch (2 shared cores), a synthetic
byte corpus, the python_stdlib dataset built once into a temporary data folder, and a run
context that keeps curves and checkpoints in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from ea_helpers import TINY  # noqa: E402


@pytest.fixture
def corpus():
    from tasks.entropy_attention.train import Corpus

    g = torch.Generator().manual_seed(0)
    # A learnable byte stream: a repeated phrase with random bytes mixed in.
    phrase = torch.tensor(list(b"def f(x):\n    return x + 1\n"), dtype=torch.long)
    def stream(n):
        s = phrase.repeat(n // len(phrase) + 1)[:n].clone()
        noise = torch.rand(n, generator=g) < 0.1
        s[noise] = torch.randint(0, 256, (int(noise.sum()),), generator=g)
        return s
    return Corpus(train=stream(20000), validation=stream(4000), test=stream(4000))


@pytest.fixture
def tiny_hp():
    return dict(TINY)


@pytest.fixture(scope="session")
def stdlib_data_root(tmp_path_factory) -> Path:
    from harness import data

    root = tmp_path_factory.mktemp("data")
    data.build("python_stdlib", root=root)
    return root
