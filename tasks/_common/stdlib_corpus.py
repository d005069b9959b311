"""The Python standard library's sources as an offline code corpus (one builder, many tasks).

Stand-in for CodeParrot / DCLM at small scale. Deterministic: files are listed from
``sysconfig.get_path("stdlib")``, sorted, and split **by file** with a fixed seed, so no
file is in two splits. The corpus depends on the Python version that builds it; its
content hash (recorded in every run) makes that explicit.

Rows: ``path`` (relative to the stdlib root) and ``text`` (UTF-8 source). Tokenise with
:func:`byte_tokens` (bytes 0-255, document separator 256, vocabulary 257).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

SPLIT_SEED = 0
SPLIT_FRACTIONS = {"train": 0.90, "validation": 0.05, "test": 0.05}
EXCLUDE_PARTS = {"site-packages", "dist-packages", "__pycache__"}
MAX_FILE_BYTES = 200_000  # a handful of generated giants would dominate the corpus
EOS = 256
VOCAB_SIZE = 257


def stdlib_files(root: Path | None = None) -> list[Path]:
    root = Path(root or sysconfig.get_path("stdlib"))
    files = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if EXCLUDE_PARTS & set(rel.parts) or not p.is_file():
            continue
        if p.stat().st_size > MAX_FILE_BYTES:
            continue
        files.append(p)
    return files


def build_python_stdlib(root: Path | None = None):
    """DatasetDict train/validation/test of stdlib source files, split by file."""
    import datasets

    root = Path(root or sysconfig.get_path("stdlib"))
    files = stdlib_files(root)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(files))
    n = len(files)
    n_val = int(round(SPLIT_FRACTIONS["validation"] * n))
    n_test = int(round(SPLIT_FRACTIONS["test"] * n))
    parts = {"validation": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    out = {}
    for split in ("train", "validation", "test"):
        idx = sorted(parts[split].tolist())
        rows = {"path": [], "text": []}
        for i in idx:
            rows["path"].append(str(files[i].relative_to(root)))
            rows["text"].append(files[i].read_bytes().decode("utf-8", errors="replace"))
        out[split] = datasets.Dataset.from_dict(rows)
    return datasets.DatasetDict(out)


def byte_tokens(texts, max_tokens: int | None = None) -> np.ndarray:
    """Concatenate documents as UTF-8 bytes, each followed by EOS (256); int64 array."""
    chunks, total = [], 0
    for t in texts:
        b = np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        chunks.append(np.append(b, EOS))
        total += len(b) + 1
        if max_tokens is not None and total >= max_tokens:
            break
    arr = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return arr[:max_tokens] if max_tokens is not None else arr
