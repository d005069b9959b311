"""Fixtures for the infinite_compute tests: single-threaded torch (2 shared cores) and a small
python-like corpus in the format of the shared python_stdlib dataset, so no test needs data/."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def fake_corpus(n_files: int = 40, seed: int = 0) -> dict[str, list[str]]:
    """{split: [file text]}: small, varied, python-looking files."""
    rng = np.random.default_rng(seed)
    words = ["def", "return", "self", "import", "class", "for", "in", "if", "else", "None", "x", "y", "value"]
    texts = []
    for i in range(n_files):
        lines = [f"def f{i}_{j}({rng.choice(words)}):\n    return {rng.choice(words)} + {j}\n" for j in range(30)]
        texts.append("".join(lines))
    return {"train": texts[: n_files - 8], "validation": texts[n_files - 8: n_files - 4], "test": texts[n_files - 4:]}


@pytest.fixture(scope="session")
def corpus():
    return fake_corpus()


@pytest.fixture
def data_root(tmp_path_factory, corpus):
    """A data root holding a materialised python_stdlib stand-in (train/validation/test with path, text)."""
    import json

    import datasets

    from harness.data import MANIFEST, content_hash, file_sha256

    root = tmp_path_factory.mktemp("icdata")
    folder = root / "python_stdlib"
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"path": [f"{s}{i}.py" for i in range(len(t))], "text": t})
                               for s, t in corpus.items()})
    dd.save_to_disk(str(folder))
    files = {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*.arrow"))}
    (folder / MANIFEST).write_text(json.dumps({"name": "python_stdlib", "content_hash": content_hash(folder),
                                               "splits": {}, "files": files}))
    return root
