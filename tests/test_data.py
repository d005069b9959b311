"""harness.data: deterministic materialisation, content hash, clear errors."""

from __future__ import annotations

import pytest

from harness import data
from harness.config import ConfigError


def _bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rebuild_is_byte_identical_with_a_stable_hash(tmp_path):
    a = data.build("toy_blobs", root=tmp_path / "a")
    b = data.build("toy_blobs", root=tmp_path / "b")
    assert _bytes(a) == _bytes(b)  # state.json fingerprints are pinned: DVC's lock stays put
    m = data.manifest("toy_blobs", root=tmp_path / "a")
    assert m["content_hash"] == data.content_hash(a) == data.data_hash("toy_blobs", root=tmp_path / "b")
    assert m["splits"]["train"] == {"rows": 200, "columns": ["x", "label"]}
    dd = data.load_dataset("toy_blobs", root=tmp_path / "a")
    assert dd["test"].num_rows == 100


def test_verify_detects_changed_files(tmp_path):
    folder = data.build("toy_blobs", root=tmp_path)
    assert data.verify("toy_blobs", root=tmp_path)
    arrow = next(folder.rglob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:-8] + b"tampered")
    assert not data.verify("toy_blobs", root=tmp_path)


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="harness data build toy_blobs"):
        data.load_dataset("toy_blobs", root=tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        data.build("nope", root=tmp_path)
